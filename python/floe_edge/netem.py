"""A userspace TCP proxy that makes network faults, for tests and benchmarks (this machine has no `tc netem`).

    with NetemProxy(upstream=("127.0.0.1", 8765), profile=PROFILES["lte"]) as p:
        client = FloeCloudBackend(p.url(), ...)          # every byte now crosses the emulated network
        p.set_profile(replace(p.profile, blackhole=True)) # change it live, existing connections included
        p.outage(2.0)                                     # or schedule an outage starting now

Each direction of a connection is a FIFO of chunks with release times, so delays never reorder bytes:
release = max(previous release, arrival + rtt/2 + jitter) (+ an RTO for a "lost" segment: TCP retransmits, so loss
is delay, never missing bytes), then serialized at the bandwidth cap. Drip-feed cuts chunks into small pieces sent
`drip_interval_ms` apart. Faults: `drop` (accept and close), `blackhole` (read, never forward), `reset_after_bytes`
(an RST to the client after N bytes downstream, as a connection reset mid-answer), and outage windows (seconds
from proxy start, or `outage()` from now) that blackhole, reset or refuse. Only loopback addresses are accepted: this
tool never touches a real network.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import random
import socket
import struct
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Any, Optional


@dataclass(frozen=True)
class Profile:
    rtt_ms: float = 0.0               # added round-trip time, half per direction
    jitter_ms: float = 0.0            # uniform in [-j, +j] per chunk (never reorders)
    bandwidth_kbps: float = 0.0       # per direction; 0 = unlimited
    loss: float = 0.0                 # probability a chunk is "lost" and retransmitted after an RTO
    drip_bytes: int = 0               # > 0: forward in pieces of this many bytes ...
    drip_interval_ms: float = 0.0     # ... this far apart
    reset_after_bytes: int = 0        # > 0: reset the client connection after this many bytes downstream
    blackhole: bool = False           # read everything, forward nothing
    drop: bool = False                # accept, then close at once
    outages: tuple[tuple[float, float], ...] = ()  # (start_s, end_s) after the proxy started
    outage_mode: str = "blackhole"    # during an outage: "blackhole" | "reset" | "refuse"
    seed: int = 0

    def __post_init__(self) -> None:
        if min(self.rtt_ms, self.jitter_ms, self.bandwidth_kbps, self.drip_interval_ms) < 0 or \
                min(self.drip_bytes, self.reset_after_bytes) < 0:
            raise ValueError("netem profile values must be >= 0")
        if not 0 <= self.loss < 1:
            raise ValueError("loss must be in [0, 1)")
        if self.outage_mode not in ("blackhole", "reset", "refuse"):
            raise ValueError("outage_mode must be blackhole, reset or refuse")

    @property
    def rto_ms(self) -> float:
        return max(200.0, 2 * self.rtt_ms)  # Linux's minimum RTO is 200 ms


# Typical figures of each kind of link (not measurements).
PROFILES: dict[str, Profile] = {
    "lan": Profile(rtt_ms=2),
    "wifi": Profile(rtt_ms=10, jitter_ms=3),
    "4g": Profile(rtt_ms=30, jitter_ms=8),
    "lte": Profile(rtt_ms=80, jitter_ms=20, loss=0.01),
    "3g": Profile(rtt_ms=250, jitter_ms=50, bandwidth_kbps=1000),
    "satellite": Profile(rtt_ms=600, jitter_ms=30, bandwidth_kbps=5000),
}


def check_loopback(host: str) -> None:
    """ValueError unless every address `host` resolves to is a loopback address."""
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except socket.gaierror as e:
        raise ValueError(f"cannot resolve {host!r}: {e}") from None
    bad = [i[4][0] for i in infos if not ipaddress.ip_address(i[4][0].split("%")[0]).is_loopback]
    if bad or not infos:
        raise ValueError(f"netem only works on loopback addresses; {host!r} is {', '.join(bad) or 'nothing'}")


@dataclass
class Counters:
    connections: int = 0
    bytes_up: int = 0
    bytes_down: int = 0
    resets: int = 0


def _rst(writer: asyncio.StreamWriter) -> None:
    """Close with an RST (SO_LINGER 0), as a peer that crashed or a middlebox that gave up."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class NetemProxy:
    def __init__(self, upstream: tuple[str, int], profile: Profile = Profile(),
                 listen: tuple[str, int] = ("127.0.0.1", 0)) -> None:
        check_loopback(upstream[0])
        check_loopback(listen[0])
        self.upstream, self.listen_at, self.profile = upstream, listen, profile
        self.counters = Counters()
        self._rng = random.Random(profile.seed)
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._thread: Optional[threading.Thread] = None
        self._server: Optional[asyncio.base_events.Server] = None
        self._conns: set[asyncio.Task[None]] = set()
        self._t0 = 0.0
        self._extra_outage: Optional[tuple[float, float]] = None
        self.port = 0

    # -- control -------------------------------------------------------------------------------------------------
    def start(self) -> "NetemProxy":
        ready = threading.Event()
        self._loop = asyncio.new_event_loop()

        def run() -> None:
            asyncio.set_event_loop(self._loop)
            self._loop.run_until_complete(self._serve(ready))
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name="floe-netem", daemon=True)
        self._thread.start()
        if not ready.wait(10) or not self.port:
            self.close()
            raise RuntimeError("netem proxy failed to start")
        return self

    async def _serve(self, ready: threading.Event) -> None:
        try:
            self._server = await asyncio.start_server(self._handle, self.listen_at[0], self.listen_at[1])
            self.port = self._server.sockets[0].getsockname()[1]
            self._t0 = time.monotonic()
        finally:
            ready.set()

    def close(self) -> None:
        loop, self._loop = self._loop, None
        if loop is None:
            return

        async def stop() -> None:
            if self._server is not None:
                self._server.close()
            for t in list(self._conns):
                t.cancel()
            await asyncio.gather(*self._conns, return_exceptions=True)
            if self._server is not None:
                await self._server.wait_closed()

        if self._thread is not None and self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(stop(), loop).result(10)
            loop.call_soon_threadsafe(loop.stop)
            self._thread.join(10)
        # the loop is stopped: finish what is left on this thread, so every socket is closed before it goes
        async def drain() -> None:
            leftovers = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in leftovers:
                t.cancel()
            await asyncio.gather(*leftovers, return_exceptions=True)
            await asyncio.sleep(0)  # transports' connection_lost callbacks close the sockets

        loop.run_until_complete(drain())
        loop.close()

    def __enter__(self) -> "NetemProxy":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def address(self) -> tuple[str, int]:
        return self.listen_at[0], self.port

    def url(self, scheme: str = "http") -> str:
        return f"{scheme}://{self.listen_at[0]}:{self.port}"

    def set_profile(self, profile: Profile) -> None:
        """Applies at once, to existing connections too."""
        self.profile = profile

    def outage(self, seconds: float) -> None:
        """An outage from now on, `seconds` long, in the profile's outage mode."""
        now = time.monotonic() - self._t0
        self._extra_outage = (now, now + seconds)

    def in_outage(self) -> bool:
        t = time.monotonic() - self._t0
        windows = list(self.profile.outages) + ([self._extra_outage] if self._extra_outage else [])
        return any(a <= t < b for a, b in windows)

    # -- the data path -------------------------------------------------------------------------------------------
    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._conns.add(task)
        self.counters.connections += 1
        up_w: Optional[asyncio.StreamWriter] = None
        try:
            p = self.profile
            if p.drop or (self.in_outage() and p.outage_mode == "refuse"):
                _rst(writer)
                return
            up_r, up_w = await asyncio.open_connection(*self.upstream)
            pumps = [asyncio.create_task(self._pump(reader, up_w, writer, down=False)),
                     asyncio.create_task(self._pump(up_r, writer, writer, down=True))]
            try:
                done, _ = await asyncio.wait(pumps, return_when=asyncio.FIRST_EXCEPTION)
                for d in done:
                    d.result()
                await asyncio.gather(*pumps)
            finally:
                for t in pumps:
                    t.cancel()
                await asyncio.gather(*pumps, return_exceptions=True)
        except (ConnectionError, OSError, _Reset):
            _rst(writer)
        except asyncio.CancelledError:
            _rst(writer)
        finally:
            for w in (writer, up_w):
                if w is not None and not w.transport.is_closing():
                    w.close()
            self._conns.discard(task)

    async def _pump(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, client: asyncio.StreamWriter,
                    down: bool) -> None:
        """src -> dst with the profile's delays; chunks queue with release times so reading never waits."""
        queue: asyncio.Queue[Optional[tuple[float, bytes]]] = asyncio.Queue()
        sender = asyncio.create_task(self._send(queue, dst, client, down))
        last_release = link_free = 0.0
        try:
            while True:
                data = await src.read(65536)
                p = self.profile
                if not data:
                    break
                if p.blackhole or (self.in_outage() and p.outage_mode == "blackhole"):
                    continue  # swallowed: the other side sees silence
                if self.in_outage() and p.outage_mode == "reset":
                    raise _Reset()
                now = time.monotonic()
                size = p.drip_bytes or len(data)
                for i in range(0, len(data), size):
                    piece = data[i: i + size]
                    delay = p.rtt_ms / 2 + (self._rng.uniform(-p.jitter_ms, p.jitter_ms) if p.jitter_ms else 0.0)
                    if p.loss and self._rng.random() < p.loss:
                        delay += p.rto_ms
                    release = max(last_release, now + max(delay, 0.0) / 1e3)
                    if p.drip_bytes and i:
                        release = max(release, last_release + p.drip_interval_ms / 1e3)
                    if p.bandwidth_kbps:
                        link_free = max(link_free, release) + len(piece) * 8 / (p.bandwidth_kbps * 1e3)
                        release = link_free
                    last_release = release
                    await queue.put((release, piece))
            await queue.put(None)
            await sender
        finally:
            sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)

    async def _send(self, queue: "asyncio.Queue[Optional[tuple[float, bytes]]]", dst: asyncio.StreamWriter,
                    client: asyncio.StreamWriter, down: bool) -> None:
        sent = 0
        while (item := await queue.get()) is not None:
            release, piece = item
            if (wait := release - time.monotonic()) > 0:
                await asyncio.sleep(wait)
            limit = self.profile.reset_after_bytes
            if down and limit and sent + len(piece) >= limit:
                dst.write(piece[: max(limit - sent, 0)])
                with contextlib.suppress(ConnectionError, OSError):
                    await dst.drain()
                self.counters.resets += 1
                _rst(client)  # now, not when the upstream next sends something
                raise _Reset()
            dst.write(piece)
            await dst.drain()
            sent += len(piece)
            if down:
                self.counters.bytes_down += len(piece)
            else:
                self.counters.bytes_up += len(piece)
        if not down and dst.can_write_eof():
            with contextlib.suppress(OSError):
                dst.write_eof()


class _Reset(Exception):
    """Reset the client connection."""


# -- CLI ---------------------------------------------------------------------------------------------------------

def _hostport(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


def _window(text: str) -> tuple[float, float]:
    a, _, b = text.partition(":")
    try:
        return float(a), float(b)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected START_S:END_S, got {text!r}") from None


def _cmd(args: argparse.Namespace) -> int:
    base = PROFILES[args.profile] if args.profile else Profile()
    changes: dict[str, Any] = {k: v for k, v in (
        ("rtt_ms", args.rtt_ms), ("jitter_ms", args.jitter_ms), ("loss", args.loss),
        ("bandwidth_kbps", args.bandwidth_kbps), ("drip_bytes", args.drip_bytes),
        ("drip_interval_ms", args.drip_interval_ms), ("reset_after_bytes", args.reset_after_bytes),
        ("outage_mode", args.outage_mode)) if v is not None}
    if args.blackhole:
        changes["blackhole"] = True
    if args.outage:
        changes["outages"] = tuple(args.outage)
    profile = replace(base, **changes)
    with NetemProxy(upstream=args.upstream, profile=profile, listen=args.listen) as p:
        print(f"floe netem: {p.url('tcp')} -> {args.upstream[0]}:{args.upstream[1]} with {profile}", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            print(f"floe netem: {p.counters}")
    return 0


def register_cli(sub: Any) -> None:
    p = sub.add_parser("netem", help="a userspace TCP proxy that adds latency, jitter, loss, caps and outages")
    p.add_argument("--listen", type=_hostport, default=("127.0.0.1", 0), help="HOST:PORT (loopback only)")
    p.add_argument("--upstream", type=_hostport, required=True, help="HOST:PORT (loopback only)")
    p.add_argument("--profile", choices=sorted(PROFILES), help="a named starting point, changed by the flags below")
    p.add_argument("--rtt-ms", type=float)
    p.add_argument("--jitter-ms", type=float)
    p.add_argument("--loss", type=float)
    p.add_argument("--bandwidth-kbps", type=float)
    p.add_argument("--drip-bytes", type=int)
    p.add_argument("--drip-interval-ms", type=float)
    p.add_argument("--reset-after-bytes", type=int)
    p.add_argument("--blackhole", action="store_true")
    p.add_argument("--outage", type=_window, action="append", metavar="START_S:END_S")
    p.add_argument("--outage-mode", choices=("blackhole", "reset", "refuse"))
    p.set_defaults(func=_cmd)

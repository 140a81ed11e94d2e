"""A userspace TCP fault-injection proxy for tests and benchmarks (this machine has no `tc netem`).

    with NetemProxy(upstream=("127.0.0.1", 8765), profile="lte") as p:
        client = FloeCloudBackend(p.url(), ...)            # every byte now crosses a slow, lossy link
        p.set_profile(replace(p.profile, rtt_ms=250))      # live, existing connections included
        p.outage(2.0)                                      # the link goes dead for two seconds, from now

Each connection is two pipes (client->upstream "up", upstream->client "down"). A pipe is a delay line
(chunks stamped with a release time, in order) followed by a shaper (token bucket, drip-feed, reset).
The proxy works on a byte stream, not on packets, so it emulates what TCP shows an application:
- latency: half of `rtt_ms` per direction, plus jitter; a chunk never leaves before the one read before
  it (release = max(previous release, now + delay)), so jitter never reorders bytes, as with real TCP;
- loss: TCP never loses bytes, it retransmits them, so a "lost" segment is a chunk delayed by one
  retransmission timeout (max(200 ms, 2 * rtt)), holding back everything behind it (head-of-line);
- outages and blackholes stall the bytes (as TCP retransmitting into a dead link) and let them through
  when the link comes back; "reset" and "refuse" outages send real RSTs (SO_LINGER 0).
Loopback only: the proxy refuses to listen on or forward to any other address.

`capture_up=N` (opt-in) keeps the first N bytes the clients sent, per connection in accept order (`captured_up()`):
what a device really sent upstream, for checking that nothing private was among it (`floe demo`).
"""

from __future__ import annotations

import asyncio
import ipaddress
import math
import random
import socket
import struct
import threading
import time
from dataclasses import dataclass, field, fields, replace
from typing import Literal, Optional, Union

__all__ = ["PROFILES", "NetemProxy", "NetemStats", "Profile", "UpCapture", "get_profile"]

OutageMode = Literal["blackhole", "reset", "refuse"]
OUTAGE_MODES = ("blackhole", "reset", "refuse")
MIN_RTO_MS = 200.0  # Linux's minimum TCP retransmission timeout (TCP_RTO_MIN)
MSS = 1448  # bytes of payload per segment on a 1500-byte MTU: loss is drawn per segment
CHUNK = 64 * 1024  # largest read; a chunk is the unit of delay
QUEUE_CHUNKS = 64  # chunks held per pipe before we stop reading, so TCP backpressure still reaches the sender


@dataclass(frozen=True)
class Profile:
    """The faults of a link. Zero means "off" for every number.

    jitter_ms: each direction adds uniform(-jitter/2, +jitter/2) ms ("uniform": a round trip stays within
    +-jitter_ms) or normal(0, sigma=jitter/2) ms ("normal"); delays are clamped at 0 and never reorder bytes.
    loss: probability that a segment is lost; costs the chunk holding it one RTO of delay (see module doc).
    bandwidth_kbps: per direction, token bucket (kilobits per second, 1 kbit = 1000 bit).
    drip_bytes / drip_interval_ms: forward in pieces of at most drip_bytes, one every drip_interval_ms.
    reset_after_bytes: send the client an RST after this many bytes downstream, per connection.
    blackhole: accept, read, never answer (bytes are held; they flow if the profile is changed back).
    drop: accept then close at once (a FIN; the kernel makes it an RST if the client's bytes already came).
    outages: (start_s, end_s) windows, relative to proxy start, during which `outage_mode` applies:
      "blackhole": new and existing connections stall, then carry on when the window ends;
      "reset": connections open at the start, and new ones, get an RST;
      "refuse": new connections get an RST right after accept (a userspace proxy cannot refuse the SYN
      without giving up its port), existing ones carry on.
    seed: seeds the jitter and loss RNG, so a run can be repeated (None: a fresh RNG each time).
    """

    rtt_ms: float = 0.0
    jitter_ms: float = 0.0
    jitter_dist: Literal["uniform", "normal"] = "uniform"
    bandwidth_kbps: float = 0.0
    drip_bytes: int = 0
    drip_interval_ms: float = 0.0
    loss: float = 0.0
    reset_after_bytes: int = 0
    blackhole: bool = False
    drop: bool = False
    outages: tuple[tuple[float, float], ...] = ()
    outage_mode: OutageMode = "blackhole"
    seed: Optional[int] = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "outages", tuple((float(s), float(e)) for s, e in self.outages))
        numbers = ("rtt_ms", "jitter_ms", "bandwidth_kbps", "drip_bytes", "drip_interval_ms", "reset_after_bytes")
        if any(getattr(self, n) < 0 for n in numbers):
            raise ValueError(f"netem: {', '.join(numbers)} must be >= 0")
        if not 0.0 <= self.loss <= 1.0:
            raise ValueError(f"netem: loss must be a probability, got {self.loss}")
        if self.jitter_dist not in ("uniform", "normal"):
            raise ValueError(f"netem: jitter_dist must be uniform or normal, got {self.jitter_dist!r}")
        if self.outage_mode not in OUTAGE_MODES:
            raise ValueError(f"netem: outage_mode must be one of {OUTAGE_MODES}, got {self.outage_mode!r}")
        if any(not 0 <= s < e for s, e in self.outages):
            raise ValueError(f"netem: outage windows need 0 <= start < end, got {self.outages}")

    @property
    def rto_ms(self) -> float:
        """The extra delay of a lost segment: one retransmission timeout."""
        return max(MIN_RTO_MS, 2 * self.rtt_ms)

    def describe(self) -> str:
        """The non-default settings, for humans: 'rtt_ms=80, jitter_ms=20, loss=0.01'."""
        changed = [f"{f.name}={getattr(self, f.name)}" for f in fields(self) if getattr(self, f.name) != f.default]
        return ", ".join(changed) or "no faults"


# Typical figures for each kind of link (from common published ranges), not measurements of any network.
PROFILES: dict[str, Profile] = {
    "lan": Profile(rtt_ms=2),
    "wifi": Profile(rtt_ms=10, jitter_ms=3),
    "4g": Profile(rtt_ms=30, jitter_ms=8),
    "lte": Profile(rtt_ms=80, jitter_ms=20, loss=0.01),
    "3g": Profile(rtt_ms=250, jitter_ms=50, bandwidth_kbps=1000),
    "satellite": Profile(rtt_ms=600, jitter_ms=30, bandwidth_kbps=5000),  # geostationary
    "offline": Profile(blackhole=True),
}


def get_profile(name: str, **overrides: object) -> Profile:
    """A named profile, with some fields replaced: get_profile("lte", loss=0.05)."""
    try:
        return replace(PROFILES[name], **overrides)  # type: ignore[arg-type]
    except KeyError:
        raise ValueError(f"netem: unknown profile {name!r}; known: {', '.join(PROFILES)}") from None


def _loopback(host: str, port: int) -> tuple[str, int]:
    """Resolve host to a loopback IP, or raise ValueError: this tool must never touch a real network."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise ValueError(f"netem: cannot resolve {host!r}: {e}") from None
    ips = [str(info[4][0]) for info in infos]  # an address string (typeshed also allows int)
    # Every address must be loopback: a name resolving to both could be dialled on either.
    outside = [ip for ip in ips if not ipaddress.ip_address(ip.split("%")[0]).is_loopback]
    if not ips or outside:
        raise ValueError(f"netem: {host!r} is not loopback ({', '.join(outside)}); only 127.0.0.0/8 and ::1 allowed")
    return ips[0], port


@dataclass
class NetemStats:
    bytes_up: int = 0  # delivered to the upstream
    bytes_down: int = 0  # delivered to clients
    connections: int = 0  # accepted
    resets: int = 0  # RSTs sent to clients


@dataclass(frozen=True)
class UpCapture:
    """What clients sent upstream: one bytes per connection (accept order), and how many bytes did not fit."""

    connections: tuple[bytes, ...]
    dropped: int  # bytes sent beyond the capture's limit: not kept, so not checked

    @property
    def total(self) -> int:
        return sum(map(len, self.connections)) + self.dropped


class _Capture:
    """Upstream bytes kept up to `limit` in all (a bound: a long session cannot grow it without end)."""

    def __init__(self, limit: int) -> None:
        self.limit, self.kept, self.dropped = limit, 0, 0
        self.buffers: list[bytearray] = []

    def connection(self) -> bytearray:
        buf = bytearray()
        self.buffers.append(buf)
        return buf

    def add(self, buf: bytearray, data: bytes) -> None:
        room = max(0, self.limit - self.kept)
        buf += data[:room]
        self.kept += min(room, len(data))
        self.dropped += max(0, len(data) - room)


class _TokenBucket:
    """Pacing at `rate` bytes/s with bursts up to 20 ms worth; debt is paid by sleeping."""

    def __init__(self) -> None:
        self.tokens = math.inf  # starts full (capped at the burst on first use)
        self.stamp = time.monotonic()

    @staticmethod
    def burst(rate: float) -> int:
        return max(MSS, int(rate * 0.02))

    async def take(self, n: int, rate: float) -> None:
        now = time.monotonic()
        self.tokens = min(self.burst(rate), self.tokens + (now - self.stamp) * rate) - n
        self.stamp = now
        if self.tokens < 0:
            await asyncio.sleep(-self.tokens / rate)


def _send_rst(writer: asyncio.StreamWriter) -> None:
    """Close with SO_LINGER 0: the kernel sends a real RST instead of a FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None and not writer.transport.is_closing():
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


@dataclass(eq=False)
class _Pipe:
    """One direction of one connection: a delay line (queue of timed chunks), then a shaper."""

    proxy: "NetemProxy"
    down: bool  # upstream -> client
    queue: "asyncio.Queue[tuple[float, bytes]]" = field(default_factory=lambda: asyncio.Queue(QUEUE_CHUNKS))
    release: float = 0.0  # release time of the last chunk queued; later chunks never leave before it
    sent: int = 0
    next_drip: float = 0.0  # earliest time of the next drip piece
    bucket: _TokenBucket = field(default_factory=_TokenBucket)

    async def pump_in(self, reader: asyncio.StreamReader) -> None:
        capture = self.proxy._capture if not self.down else None
        kept = capture.connection() if capture is not None else None
        while True:
            data = await reader.read(CHUNK)
            if capture is not None and kept is not None:
                capture.add(kept, data)  # as the client sent it: bytes that never get through went up too
            self.release = max(self.release, time.monotonic() + self.proxy._one_way_delay(len(data)))
            await self.queue.put((self.release, data))  # b"" is EOF, delayed like data
            if not data:
                return

    async def pump_out(self, writer: asyncio.StreamWriter, link: "_Link") -> None:
        while True:
            at, data = await self.queue.get()
            await asyncio.sleep(max(0.0, at - time.monotonic()))
            if not data:
                await self.proxy._until_up()
                if writer.can_write_eof():
                    writer.write_eof()
                return
            view = memoryview(data)
            while view:
                p = self.proxy.profile  # read per piece: set_profile applies to bytes already queued
                size = len(view)
                if p.drip_bytes:
                    size = min(size, p.drip_bytes)
                    await asyncio.sleep(max(0.0, self.next_drip - time.monotonic()))
                rate = p.bandwidth_kbps * 125  # bytes/s
                if rate:
                    size = min(size, _TokenBucket.burst(rate))
                    await self.bucket.take(size, rate)
                limit = p.reset_after_bytes if self.down else 0
                if limit and self.sent + size >= limit:
                    size = max(0, limit - self.sent)
                await self._write(writer, view[:size])
                if limit and self.sent >= limit:
                    link.reset()
                    return
                view = view[size:]
                self.next_drip = time.monotonic() + p.drip_interval_ms / 1000

    async def _write(self, writer: asyncio.StreamWriter, piece: memoryview) -> None:
        await self.proxy._until_up()
        self.sent += len(piece)
        stats = self.proxy._stats  # counted first, so whoever has received the bytes sees them counted
        if self.down:
            stats.bytes_down += len(piece)
        else:
            stats.bytes_up += len(piece)
        writer.write(piece)
        await writer.drain()  # write buffer limit 0: returns once the kernel has the bytes


class _Link:
    """One proxied connection: the client's socket, the upstream's, and the four pumps between them."""

    def __init__(self, proxy: "NetemProxy", reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.proxy, self.client_r, self.client_w = proxy, reader, writer
        self.upstream_w: Optional[asyncio.StreamWriter] = None
        self.tasks: list[asyncio.Task[None]] = []
        self.done = False

    async def run(self) -> None:
        proxy = self.proxy
        up, down = _Pipe(proxy, down=False), _Pipe(proxy, down=True)
        self.client_w.transport.set_write_buffer_limits(0)
        self.tasks.append(asyncio.create_task(up.pump_in(self.client_r)))
        try:
            await proxy._until_up()  # a blackholed link accepts and reads, but never reaches the upstream
            if self.done:
                return
            try:
                ur, self.upstream_w = await asyncio.open_connection(*proxy.upstream)
            except OSError:
                self.reset()  # the upstream refused: the client sees its connection reset
                return
            self.upstream_w.transport.set_write_buffer_limits(0)
            self.tasks += [
                asyncio.create_task(up.pump_out(self.upstream_w, self)),
                asyncio.create_task(down.pump_in(ur)),
                asyncio.create_task(down.pump_out(self.client_w, self)),
            ]
            finished, _ = await asyncio.wait(self.tasks, return_when=asyncio.FIRST_EXCEPTION)
            if any(not t.cancelled() and t.exception() for t in finished):
                self.reset()  # a side died: pass it on as an RST, as a router losing state would
        finally:
            self.close()

    def reset(self) -> None:
        if not self.done:
            self.proxy._stats.resets += 1
            _send_rst(self.client_w)
        self.close()

    def close(self) -> None:
        self.done = True
        for task in self.tasks:
            if task.done() and not task.cancelled():
                task.exception()  # seen: a pump that died of a reset is not worth a warning at exit
            task.cancel()
        for w in (self.client_w, self.upstream_w):
            if w is not None:
                w.transport.abort()


class NetemProxy:
    """A TCP proxy on loopback adding `profile`'s faults between its clients and `upstream`.

    Runs its own asyncio loop in a background thread, so sync tests and async code can both use it.
    `close()` closes every socket and joins the thread.
    """

    def __init__(
        self,
        upstream: tuple[str, int],
        profile: Union[Profile, str] = Profile(),
        listen: tuple[str, int] = ("127.0.0.1", 0),
        capture_up: int = 0,
    ) -> None:
        if capture_up < 0:
            raise ValueError(f"netem: capture_up is a number of bytes >= 0, got {capture_up}")
        self.upstream = _loopback(*upstream)
        self._capture = _Capture(capture_up) if capture_up else None
        self._listen = _loopback(*listen)
        self._profile = get_profile(profile) if isinstance(profile, str) else profile
        self._rng = random.Random(self._profile.seed)
        self._stats = NetemStats()
        self._port = 0
        self._t0 = time.monotonic()
        self._thread: Optional[threading.Thread] = None
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._stop: Optional[asyncio.Event] = None
        self._wake: Optional[asyncio.Event] = None  # set (and replaced) whenever the faults change
        self._links: set[_Link] = set()
        self._timers: list[asyncio.TimerHandle] = []

    # -- public API ------------------------------------------------------------------------------------------

    def start(self) -> "NetemProxy":
        if self._thread is not None:
            raise RuntimeError("netem: proxy already started")
        ready = threading.Event()
        errors: list[BaseException] = []
        self._thread = threading.Thread(target=self._run, args=(ready, errors), name="floe-netem", daemon=True)
        self._thread.start()
        ready.wait()
        if errors:
            self._thread.join()
            self._thread = None
            raise errors[0]
        return self

    def close(self) -> None:
        thread, loop, stop = self._thread, self._loop, self._stop
        if thread is None:
            return
        if loop is not None and stop is not None:
            try:
                loop.call_soon_threadsafe(stop.set)
            except RuntimeError:
                pass  # loop already closed
        thread.join()
        self._thread = None

    def __enter__(self) -> "NetemProxy":
        return self if self._thread is not None else self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def port(self) -> int:
        return self._port

    @property
    def address(self) -> tuple[str, int]:
        return self._listen[0], self._port

    def url(self, scheme: str = "http") -> str:
        host = self._listen[0]
        return f"{scheme}://{f'[{host}]' if ':' in host else host}:{self._port}"

    @property
    def profile(self) -> Profile:
        return self._profile

    @profile.setter
    def profile(self, profile: Profile) -> None:
        self.set_profile(profile)

    @property
    def stats(self) -> NetemStats:
        return replace(self._stats)  # a snapshot

    def captured_up(self) -> UpCapture:
        """The bytes clients sent upstream so far (needs `capture_up`: a ValueError otherwise)."""
        if self._capture is None:
            raise ValueError("netem: nothing captured: create the proxy with capture_up=<bytes>")
        c = self._capture
        return UpCapture(tuple(bytes(b) for b in c.buffers), c.dropped)

    def set_profile(self, profile: Union[Profile, str]) -> None:
        """Change the faults now, for new and existing connections (bytes already queued included)."""
        new = get_profile(profile) if isinstance(profile, str) else profile
        if new.seed is not None and new.seed != self._profile.seed:
            self._rng = random.Random(new.seed)
        self._profile = new
        if self._loop is not None:
            try:
                self._loop.call_soon_threadsafe(self._on_change)
            except RuntimeError:
                pass  # closed meanwhile

    def outage(self, seconds: float, mode: Optional[OutageMode] = None) -> None:
        """Start an outage now, lasting `seconds` (in `mode`, default the profile's outage_mode)."""
        p, t = self._profile, self.elapsed()
        self.set_profile(replace(p, outages=p.outages + ((t, t + seconds),), outage_mode=mode or p.outage_mode))

    def elapsed(self) -> float:
        """Seconds since start: the clock of `Profile.outages`."""
        return time.monotonic() - self._t0

    # -- the loop thread ------------------------------------------------------------------------------------

    def _run(self, ready: threading.Event, errors: list[BaseException]) -> None:
        try:
            asyncio.run(self._main(ready))
        except BaseException as e:  # surfaced by start() if it happened before ready
            errors.append(e)
        finally:
            ready.set()

    async def _main(self, ready: threading.Event) -> None:
        self._loop, self._stop, self._wake = asyncio.get_running_loop(), asyncio.Event(), asyncio.Event()
        server = await asyncio.start_server(self._accept, *self._listen)
        self._port = server.sockets[0].getsockname()[1]
        self._t0 = time.monotonic()
        self._on_change()
        ready.set()
        try:
            await self._stop.wait()
        finally:
            server.close()
            for timer in self._timers:
                timer.cancel()
            for link in list(self._links):
                link.close()
            await server.wait_closed()
            for _ in range(3):  # let aborted transports run connection_lost, which closes their sockets
                await asyncio.sleep(0)
            self._loop = None

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._stats.connections += 1
        link = _Link(self, reader, writer)
        p = self._profile
        if p.drop:
            writer.close()
            return
        if self._outage_now() in ("reset", "refuse"):
            link.reset()
            return
        self._links.add(link)
        try:
            await link.run()
        finally:
            self._links.discard(link)

    def _one_way_delay(self, nbytes: int) -> float:
        """Seconds one chunk of nbytes spends on the wire, one way."""
        p, rng = self._profile, self._rng
        ms, half = p.rtt_ms / 2, p.jitter_ms / 2
        if half:
            ms += rng.uniform(-half, half) if p.jitter_dist == "uniform" else rng.gauss(0, half)
        # P(at least one of the chunk's segments is lost); TCP resends it after one RTO.
        if p.loss and nbytes and rng.random() < 1 - (1 - p.loss) ** math.ceil(nbytes / MSS):
            ms += p.rto_ms
        return max(ms, 0.0) / 1000

    def _outage_now(self) -> Optional[str]:
        t = self.elapsed()
        return self._profile.outage_mode if any(s <= t < e for s, e in self._profile.outages) else None

    def _stall(self) -> float:
        """Seconds until the link carries bytes again (inf: until the profile changes)."""
        p = self._profile
        if p.blackhole:
            return math.inf
        if p.outage_mode != "blackhole":
            return 0.0
        t = self.elapsed()
        return max((e - t for s, e in p.outages if s <= t < e), default=0.0)

    async def _until_up(self) -> None:
        while (wait := self._stall()) > 0:
            assert self._wake is not None
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=min(wait, 3600.0))
            except asyncio.TimeoutError:
                pass

    def _on_change(self) -> None:
        """The faults changed (set_profile, or an outage window opened): apply them to live connections."""
        if self._loop is None or self._wake is None:
            return  # not started yet, or shutting down
        self._wake.set()  # wake stalled pumps to re-check
        self._wake = asyncio.Event()
        if self._outage_now() == "reset":
            for link in list(self._links):
                link.reset()
        for timer in self._timers:
            timer.cancel()
        t = self.elapsed()
        self._timers = [self._loop.call_later(s - t, self._on_change) for s, _ in self._profile.outages if s > t]

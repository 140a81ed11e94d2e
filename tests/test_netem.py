"""floe_edge.netem: each fault measured through the proxy against a tiny echo server on loopback.

Every socket has a timeout, so no test can hang; bounds on times are generous because this machine's two cores
are shared.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import struct
import threading
import time
from dataclasses import replace
from typing import Iterator

import pytest

from floe_edge.cli.netem import profile_from_args
from floe_edge.cli.netem import register as register_cli
from floe_edge.netem import PROFILES, NetemProxy, Profile, get_profile

SLACK = 0.25  # seconds a busy machine may add to a round trip


class Echo:
    """An asyncio echo server on 127.0.0.1 in its own thread; close() closes every socket it opened."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.writers: set[asyncio.StreamWriter] = set()
        self.server = self.loop.run_until_complete(asyncio.start_server(self._echo, "127.0.0.1", 0))
        self.address = self.server.sockets[0].getsockname()[:2]
        self.thread = threading.Thread(target=self.loop.run_forever, name="test-echo", daemon=True)
        self.thread.start()

    async def _echo(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.add(writer)
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()
            self.writers.discard(writer)

    def close(self) -> None:
        def stop() -> None:
            self.server.close()
            for w in self.writers:
                w.transport.abort()
            self.loop.stop()

        self.loop.call_soon_threadsafe(stop)
        self.thread.join(5)
        self.loop.run_until_complete(asyncio.sleep(0.01))  # connection_lost callbacks close the sockets
        self.loop.close()


@pytest.fixture
def echo() -> Iterator[Echo]:
    e = Echo()
    yield e
    e.close()


def connect(p: NetemProxy, timeout: float = 5.0) -> socket.socket:
    s = socket.create_connection(p.address, timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def recv_exactly(s: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n and (chunk := s.recv(n - len(buf))):
        buf += chunk
    return bytes(buf)


def round_trip(s: socket.socket, payload: bytes = b"ping") -> float:
    t = time.perf_counter()
    s.sendall(payload)
    assert recv_exactly(s, len(payload)) == payload
    return time.perf_counter() - t


def echo_through(s: socket.socket, payload: bytes) -> tuple[bytes, float]:
    """Send (from a thread) and read back at once, so neither side waits on full buffers."""
    t = time.perf_counter()
    sender = threading.Thread(target=s.sendall, args=(payload,))
    sender.start()
    got = recv_exactly(s, len(payload))
    sender.join(5)
    return got, time.perf_counter() - t


def test_profiles_resolve_and_validate() -> None:
    assert {"lan", "wifi", "lte", "3g", "satellite"} <= set(PROFILES)
    lte = get_profile("lte")
    assert (lte.rtt_ms, lte.jitter_ms, lte.loss) == (80, 20, 0.01)
    assert get_profile("3g").bandwidth_kbps == 1000
    assert get_profile("lte", loss=0.05).loss == 0.05
    assert lte.rto_ms == 200 and get_profile("satellite").rto_ms == 1200  # max(200 ms, 2 * rtt)
    with pytest.raises(ValueError, match="unknown profile"):
        get_profile("dialup")
    for bad in ({"rtt_ms": -1}, {"loss": 1.5}, {"outage_mode": "melt"}, {"outages": ((2, 1),)}, {"jitter_dist": "x"}):
        with pytest.raises(ValueError):
            Profile(**bad)  # type: ignore[arg-type]
    assert Profile(outages=[[0, 1]]).outages == ((0.0, 1.0),)  # type: ignore[arg-type]


def test_refuses_non_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    for upstream in (("10.1.2.3", 80), ("8.8.8.8", 53), ("0.0.0.0", 80)):
        with pytest.raises(ValueError, match="loopback"):
            NetemProxy(upstream)
    with pytest.raises(ValueError, match="loopback"):
        NetemProxy(("127.0.0.1", 80), listen=("0.0.0.0", 0))
    NetemProxy(("localhost", 80), listen=("127.0.0.2", 0))  # loopback by name or by any 127/8 address: fine

    real = socket.getaddrinfo

    def fake(host: str, *a: object, **kw: object) -> list:  # a name that resolves to a real network
        if host == "cloud.example":
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", 443))]
        return real(host, *a, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(socket, "getaddrinfo", fake)
    with pytest.raises(ValueError, match="93.184.216.34"):
        NetemProxy(("cloud.example", 443))


def test_rtt_is_added_and_changes_live(echo: Echo) -> None:
    with NetemProxy(echo.address, Profile(rtt_ms=120)) as p, connect(p) as s:
        for _ in range(3):
            assert 0.12 <= round_trip(s) < 0.12 + SLACK
        p.set_profile(Profile())  # applies to the open connection
        assert round_trip(s) < SLACK
        p.set_profile("wifi")
        assert 0.01 - 0.003 <= round_trip(s) < 0.013 + SLACK
        assert p.stats.connections == 1 and p.stats.bytes_up == p.stats.bytes_down == 20


@pytest.mark.parametrize("dist", ["uniform", "normal"])
def test_jitter_never_reorders(echo: Echo, dist: str) -> None:
    # one-way delays spread over 0..60 ms while messages leave 1 ms apart: without the max() rule they would cross
    n = 150
    with NetemProxy(echo.address, Profile(rtt_ms=60, jitter_ms=60, jitter_dist=dist, seed=7)) as p, connect(p) as s:
        for i in range(n):
            s.sendall(struct.pack("!I", i))
            time.sleep(0.001)
        got = recv_exactly(s, 4 * n)
    assert list(struct.unpack(f"!{n}I", got)) == list(range(n))


def test_jitter_is_seeded() -> None:
    def delays(seed: int) -> list[float]:
        p = NetemProxy(("127.0.0.1", 9), Profile(rtt_ms=100, jitter_ms=40, seed=seed))
        return [p._one_way_delay(100) for _ in range(50)]

    a = delays(1)
    assert a == delays(1) and a != delays(2)
    assert all(0.030 <= d <= 0.070 for d in a) and max(a) - min(a) > 0.02  # 50 ms +- 20 ms, one way


def test_loss_costs_a_retransmission_timeout_never_bytes(echo: Echo) -> None:
    with NetemProxy(echo.address, Profile(rtt_ms=10, loss=1.0)) as p, connect(p) as s:
        # every chunk "lost" once each way: 10 ms + 2 RTOs of 200 ms, and every byte still arrives
        assert 0.41 <= round_trip(s, b"x" * 5000) < 0.41 + SLACK


def test_bandwidth_cap(echo: Echo) -> None:
    payload = os.urandom(50_000)
    with NetemProxy(echo.address, Profile(bandwidth_kbps=800)) as p, connect(p) as s:  # 100 kB/s each way
        got, elapsed = echo_through(s, payload)
    assert got == payload
    assert 0.4 <= elapsed < 0.5 + 1.0  # 0.5 s at the cap (both ways pipelined), minus one 2 kB burst


def test_drip_feed(echo: Echo) -> None:
    with NetemProxy(echo.address, Profile(drip_bytes=8, drip_interval_ms=30)) as p, connect(p) as s:
        t = time.perf_counter()
        s.sendall(bytes(range(64)))
        sizes, got = [], b""
        while len(got) < 64:
            got += (chunk := s.recv(64))
            sizes.append(len(chunk))
        elapsed = time.perf_counter() - t
    assert got == bytes(range(64))
    assert elapsed >= 7 * 0.03  # 8 pieces, 30 ms apart
    assert len(sizes) >= 5 and sorted(sizes)[len(sizes) // 2] <= 8  # mostly tiny pieces (a late reader may merge two)


def test_reset_mid_stream(echo: Echo) -> None:
    with NetemProxy(echo.address, Profile(reset_after_bytes=3000)) as p, connect(p) as s:
        s.sendall(os.urandom(10_000))
        got = 0
        with pytest.raises(ConnectionResetError):
            while chunk := s.recv(65536):
                got += len(chunk)
        assert got == 3000  # Linux hands over the bytes that came before the RST, then the error
        assert p.stats.resets == 1 and p.stats.bytes_down == 3000


def test_blackhole_then_back_and_drop(echo: Echo) -> None:
    with NetemProxy(echo.address, Profile(blackhole=True)) as p, connect(p) as s:
        s.sendall(b"hello")
        s.settimeout(0.3)
        with pytest.raises(TimeoutError):
            s.recv(10)
        p.set_profile(Profile())  # the link comes back: the held bytes go through, as TCP would retransmit them
        s.settimeout(5)
        assert recv_exactly(s, 5) == b"hello"
    with NetemProxy(echo.address, Profile(drop=True)) as p, connect(p) as s:
        assert s.recv(10) == b""  # accepted, then closed at once
        assert p.stats.connections == 1


def test_outage_blackhole_stalls_then_delivers(echo: Echo) -> None:
    with NetemProxy(echo.address, Profile()) as p, connect(p) as a:
        round_trip(a)
        p.outage(0.6)  # default mode: blackhole
        end = time.perf_counter() + 0.6
        a.sendall(b"during")
        a.settimeout(0.3)
        with pytest.raises(TimeoutError):
            a.recv(10)
        with connect(p) as b:  # a new connection is accepted but gets no answer either
            b.sendall(b"new")
            b.settimeout(0.1)
            with pytest.raises(TimeoutError):
                b.recv(10)
            b.settimeout(5)
            a.settimeout(5)
            assert recv_exactly(a, 6) == b"during" and recv_exactly(b, 3) == b"new"  # delivered after the window
            assert time.perf_counter() >= end - 0.02
        assert round_trip(a) < SLACK


def test_outage_reset_scheduled_window(echo: Echo) -> None:
    with NetemProxy(echo.address, Profile(outages=((0.4, 0.8),), outage_mode="reset")) as p, connect(p) as a:
        round_trip(a)
        with pytest.raises(ConnectionResetError):
            a.recv(10)  # idle, and reset when the window opens
        assert 0.35 <= p.elapsed() < 0.8
        with pytest.raises((ConnectionResetError, BrokenPipeError)), connect(p) as b:  # reset at once
            b.sendall(b"x")
            b.recv(10)
        time.sleep(max(0.0, 0.85 - p.elapsed()))
        with connect(p) as c:  # after the window: fine again
            assert round_trip(c) < SLACK
        assert p.stats.resets == 2 and p.stats.connections == 3


def test_outage_refuse_keeps_existing(echo: Echo) -> None:
    with NetemProxy(echo.address, Profile()) as p, connect(p) as a:
        round_trip(a)  # accepted by the proxy before the window
        p.outage(0.5, mode="refuse")
        with pytest.raises((ConnectionResetError, BrokenPipeError)), connect(p) as b:
            b.sendall(b"x")
            b.recv(10)
        assert round_trip(a) < SLACK  # the open connection carries on


def test_ipv6_loopback(echo: Echo) -> None:
    try:
        p = NetemProxy(echo.address, listen=("::1", 0)).start()
    except OSError:
        pytest.skip("no IPv6 loopback here")
    with p, socket.create_connection(p.address, timeout=5) as s:
        assert p.url() == f"http://[::1]:{p.port}"
        assert round_trip(s) < SLACK


def fds() -> list[str]:
    return sorted(os.listdir("/proc/self/fd"))


def test_nothing_left_behind(echo: Echo) -> None:
    threads, before = set(threading.enumerate()), fds()
    p = NetemProxy(echo.address, Profile(rtt_ms=20)).start()
    open_one, stalled = connect(p), connect(p)
    round_trip(open_one)
    p.set_profile(Profile(outages=((0, 60),)))  # the second one is mid-outage when the proxy closes
    stalled.sendall(b"stuck")
    open_one.sendall(b"in flight")
    time.sleep(0.05)
    p.close()
    # every socket of the proxy is gone: its clients see the end at once
    for s in (open_one, stalled):
        try:
            assert s.recv(10) == b""
        except ConnectionResetError:
            pass
        s.close()
    deadline = time.monotonic() + 3  # the echo server closes its ends when it sees ours closed
    while (fds() != before or set(threading.enumerate()) != threads) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert set(threading.enumerate()) == threads
    assert fds() == before, [os.readlink(f"/proc/self/fd/{f}") for f in set(fds()) - set(before)]
    p.close()  # twice is fine


def cli(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="floe")
    register_cli(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["netem", *argv])


def test_cli_parser() -> None:
    args = cli("--upstream", "127.0.0.1:8765", "--profile", "lte", "--rtt-ms", "50", "--outage", "1:2.5",
               "--outage-mode", "reset", "--seed", "3")  # fmt: skip
    assert args.listen == ("127.0.0.1", 0) and args.upstream == ("127.0.0.1", 8765)
    prof = profile_from_args(args)
    assert prof == replace(PROFILES["lte"], rtt_ms=50, outages=((1, 2.5),), outage_mode="reset", seed=3)
    assert profile_from_args(cli("--upstream", "[::1]:80", "--blackhole")) == Profile(blackhole=True)
    assert cli("--upstream", "9000").upstream == ("127.0.0.1", 9000)
    assert callable(args.func)
    for bad in (["--upstream", "host:port"], ["--upstream", "1:1", "--profile", "dialup"], []):
        with pytest.raises(SystemExit):
            cli(*bad)


def test_cli_runs_then_stops(echo: Echo, capsys: pytest.CaptureFixture[str]) -> None:
    upstream = f"127.0.0.1:{echo.address[1]}"
    args = cli("--upstream", upstream, "--profile", "lan", "--duration", "0.6", "--stats-interval", "0.1")
    codes: list[object] = []

    def run() -> None:
        try:
            codes.append(args.func(args))
        except BaseException as e:  # shown by the assertion below
            codes.append(e)

    runner = threading.Thread(target=run)
    runner.start()
    out, deadline = "", time.monotonic() + 5
    while " -> " not in out and time.monotonic() < deadline:  # the first line says where it listens
        time.sleep(0.02)
        out += capsys.readouterr().out
    port = int(out.split(" -> ")[0].rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        assert round_trip(s) < SLACK
    runner.join(5)
    assert codes == [0]
    out += capsys.readouterr().out
    assert f"netem: 127.0.0.1:{port} -> {upstream}, profile lan: rtt_ms=2" in out and "bytes_up=4" in out
    bad = cli("--upstream", "10.0.0.1:80")
    assert bad.func(bad) == 1 and "loopback" in capsys.readouterr().err


def test_capture_keeps_what_clients_sent_up_per_connection_and_is_bounded(echo: Echo) -> None:
    """capture_up keeps the upstream bytes (not the echoed ones) per connection in accept order, up to its bound in
    all; what did not fit is counted, not kept."""
    with NetemProxy(upstream=echo.address, capture_up=100) as p:
        a, b = connect(p), connect(p)
        try:
            assert round_trip(a, b"first connection") >= 0
            payload = bytes(range(256)) * 2
            got, _ = echo_through(b, payload)
            assert got == payload  # the bound never holds bytes back
        finally:
            a.close()
            b.close()
        c = p.captured_up()
    assert c.connections == (b"first connection", payload[:100 - len(b"first connection")])
    assert c.dropped == len(payload) - (100 - len(b"first connection"))
    assert c.total == len(b"first connection") + len(payload)


def test_capture_is_opt_in(echo: Echo) -> None:
    with NetemProxy(upstream=echo.address) as p:
        with pytest.raises(ValueError, match="capture_up"):
            p.captured_up()
    with pytest.raises(ValueError, match="capture_up"):
        NetemProxy(upstream=echo.address, capture_up=-1)

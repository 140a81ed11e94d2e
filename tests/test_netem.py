"""floe_edge.netem: each fault measured against a tiny echo server on loopback, every test bounded in time."""

from __future__ import annotations

import argparse
import os
import socket
import threading
import time
from dataclasses import replace

import pytest

from floe_edge.netem import PROFILES, NetemProxy, Profile, check_loopback, register_cli


class Echo:
    """A threaded TCP echo server on 127.0.0.1 (optionally answering `burst` bytes to any input)."""

    def __init__(self, burst: int = 0) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.burst = burst
        self.threads: list[threading.Thread] = []
        self.alive = True
        t = threading.Thread(target=self._accept, daemon=True)
        t.start()
        self.threads.append(t)

    def _accept(self) -> None:
        while self.alive:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            t = threading.Thread(target=self._serve, args=(c,), daemon=True)
            t.start()
            self.threads.append(t)

    def _serve(self, c: socket.socket) -> None:
        with c:
            try:
                while data := c.recv(65536):
                    c.sendall(bytes(self.burst) if self.burst else data)
            except OSError:
                pass

    def close(self) -> None:
        self.alive = False
        self.sock.close()
        for t in self.threads:
            t.join(2)


@pytest.fixture
def echo():
    e = Echo()
    yield e
    e.close()


def connect(p: NetemProxy, timeout: float = 5.0) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", p.port), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def recv_exactly(s: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            break
        buf += chunk
    return buf


def round_trip_ms(p: NetemProxy, payload: bytes = b"ping") -> float:
    with connect(p) as s:
        t = time.perf_counter()
        s.sendall(payload)
        assert recv_exactly(s, len(payload)) == payload
        return (time.perf_counter() - t) * 1e3


def test_rtt_is_added(echo) -> None:
    with NetemProxy(("127.0.0.1", echo.port), Profile(rtt_ms=60)) as p:
        times = [round_trip_ms(p) for _ in range(3)]
    assert 58 <= min(times) and max(times) < 300


def test_jitter_never_reorders(echo) -> None:
    with NetemProxy(("127.0.0.1", echo.port), Profile(rtt_ms=10, jitter_ms=8, seed=3)) as p, connect(p) as s:
        sent = b""
        for i in range(200):
            piece = f"{i:05d},".encode()
            s.sendall(piece)
            sent += piece
            if i % 20 == 0:
                time.sleep(0.002)
        assert recv_exactly(s, len(sent)) == sent


def test_bandwidth_cap() -> None:
    e = Echo(burst=20000)  # 20 kB down per request
    try:
        with NetemProxy(("127.0.0.1", e.port), Profile(bandwidth_kbps=800)) as p, connect(p) as s:
            t = time.perf_counter()
            s.sendall(b"x")
            assert len(recv_exactly(s, 20000)) == 20000
            elapsed = time.perf_counter() - t
        assert 0.18 <= elapsed < 1.0  # 20 kB at 800 kbit/s = 0.2 s
    finally:
        e.close()


def test_drip_feed_delivers_in_small_pieces() -> None:
    e = Echo(burst=400)
    try:
        with NetemProxy(("127.0.0.1", e.port), Profile(drip_bytes=50, drip_interval_ms=20)) as p, connect(p) as s:
            s.sendall(b"x")
            t = time.perf_counter()
            sizes = []
            got = 0
            while got < 400:
                chunk = s.recv(4096)
                assert chunk
                sizes.append(len(chunk))
                got += len(chunk)
            elapsed = time.perf_counter() - t
        assert max(sizes) <= 100 and elapsed >= 0.12  # 8 pieces, 20 ms apart
    finally:
        e.close()


def test_loss_is_a_retransmission_delay(echo) -> None:
    with NetemProxy(("127.0.0.1", echo.port), Profile(rtt_ms=2, loss=0.999, seed=1)) as p:
        assert round_trip_ms(p) >= 2 * 200 - 5  # both directions "lost" once: an RTO each


def test_reset_mid_stream() -> None:
    e = Echo(burst=10000)
    try:
        with NetemProxy(("127.0.0.1", e.port), Profile(reset_after_bytes=3000)) as p, connect(p) as s:
            s.sendall(b"x")
            got = 0
            with pytest.raises(ConnectionResetError):
                while True:
                    chunk = s.recv(65536)
                    if not chunk:
                        raise AssertionError("orderly close instead of a reset")
                    got += len(chunk)
            assert got <= 3000
            assert p.counters.resets == 1
    finally:
        e.close()


def test_blackhole_and_drop(echo) -> None:
    with NetemProxy(("127.0.0.1", echo.port), Profile(blackhole=True)) as p, connect(p, timeout=0.3) as s:
        s.sendall(b"hello")
        with pytest.raises(socket.timeout):
            s.recv(10)
    with NetemProxy(("127.0.0.1", echo.port), Profile(drop=True)) as p, connect(p) as s:
        try:
            s.sendall(b"hello")
            assert s.recv(10) == b""
        except ConnectionResetError:
            pass


@pytest.mark.parametrize("mode", ["blackhole", "reset", "refuse"])
def test_outage_window_then_recovery(echo, mode) -> None:
    with NetemProxy(("127.0.0.1", echo.port), Profile(outage_mode=mode)) as p:
        assert round_trip_ms(p) < 100
        p.outage(0.4)
        with pytest.raises((socket.timeout, ConnectionError)):
            with connect(p, timeout=0.2) as s:
                s.sendall(b"ping")
                if not s.recv(4):
                    raise ConnectionResetError("closed")
        time.sleep(0.45)
        assert round_trip_ms(p) < 100


def test_live_profile_change_applies_to_open_connections(echo) -> None:
    with NetemProxy(("127.0.0.1", echo.port), Profile()) as p, connect(p) as s:
        s.sendall(b"a")
        assert s.recv(1) == b"a"
        p.set_profile(replace(p.profile, rtt_ms=100))
        t = time.perf_counter()
        s.sendall(b"b")
        assert s.recv(1) == b"b"
        assert (time.perf_counter() - t) * 1e3 >= 95


def test_loopback_only() -> None:
    check_loopback("127.0.0.1")
    check_loopback("localhost")
    for host in ("8.8.8.8", "10.0.0.1", "192.168.1.1"):
        with pytest.raises(ValueError, match="loopback"):
            NetemProxy((host, 80))
    with pytest.raises(ValueError, match="loopback"):
        NetemProxy(("127.0.0.1", 80), listen=("0.0.0.0", 0))


def test_bad_profiles() -> None:
    for bad in ({"rtt_ms": -1}, {"loss": 1.0}, {"outage_mode": "nope"}, {"drip_bytes": -5}):
        with pytest.raises(ValueError):
            Profile(**bad)
    assert PROFILES["lte"].rtt_ms == 80 and PROFILES["lte"].loss > 0


def test_nothing_left_behind(echo) -> None:
    fds = len(os.listdir("/proc/self/fd"))
    for _ in range(3):
        with NetemProxy(("127.0.0.1", echo.port), Profile(rtt_ms=5)) as p:
            round_trip_ms(p)
            s = connect(p)  # left open by the client: the proxy must still shut down cleanly
        s.close()
    end = time.monotonic() + 3  # the echo server's threads close their ends when they see ours closed
    while time.monotonic() < end and len(os.listdir("/proc/self/fd")) > fds:
        time.sleep(0.05)
    assert len(os.listdir("/proc/self/fd")) <= fds
    assert not any(t.name == "floe-netem" for t in threading.enumerate())


def test_cli_parser() -> None:
    ap = argparse.ArgumentParser()
    register_cli(ap.add_subparsers(dest="cmd"))
    args = ap.parse_args(["netem", "--upstream", "127.0.0.1:8765", "--profile", "lte", "--rtt-ms", "30",
                          "--outage", "1:3"])
    assert args.upstream == ("127.0.0.1", 8765) and args.rtt_ms == 30 and args.outage == [(1.0, 3.0)]
    with pytest.raises(SystemExit):
        ap.parse_args(["netem", "--upstream", "nohost"])

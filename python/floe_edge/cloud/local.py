"""A local `floe cloud serve` in its own process, pinned to its own core: the demo's and the benchmarks' cloud.

A separate process, not a thread, so the cloud model neither shares the edge's GIL nor its core (DESIGN.md 7: edge on
core 0, cloud on core 1)."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from typing import IO, Optional, Sequence, Union

import httpx


def other_core(avoid: int = 0) -> Optional[int]:
    """A core other than `avoid` this process may run on, or None on a single-core machine."""
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    rest = [c for c in cores if c != avoid]
    return rest[0] if rest else None


def _die_with_parent(parent: int) -> None:
    """In the child before exec (Linux): SIGTERM when the thread that started it exits, so a parent killed
    without cleanup (SIGKILL, OOM) leaves no cloud server behind holding a core and its model."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    PR_SET_PDEATHSIG = 1
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


class LocalCloud:
    """`with LocalCloud(gguf_path, core=1) as c: c.url, c.api_key` -- started, healthy, and stopped on exit."""

    def __init__(self, model: Union[str, os.PathLike], *, core: Optional[int] = None, threads: int = 1,
                 n_ctx: int = 1024, api_key: Optional[str] = None, start_timeout_s: float = 120.0,
                 extra_args: Sequence[str] = ()) -> None:
        self.model, self.core, self.threads, self.n_ctx = str(model), core, threads, n_ctx
        self.extra_args = list(extra_args)  # more `floe cloud serve` flags, e.g. limits
        self.api_key = api_key or secrets.token_hex(16)
        self.start_timeout_s = start_timeout_s
        self.url = ""
        self.info: dict[str, object] = {}
        self._proc: Optional[subprocess.Popen[str]] = None

    def start(self) -> "LocalCloud":
        cmd = [sys.executable, "-m", "floe_edge.cli", "cloud", "serve", "--model", self.model, "--port", "0",
               "--threads", str(self.threads), "--ctx", str(self.n_ctx), "--json", *self.extra_args]
        env = dict(os.environ, FLOE_API_KEY=self.api_key)  # not on the command line, where `ps` shows it
        core, parent = self.core, os.getpid()

        def pin() -> None:
            if core is not None and hasattr(os, "sched_setaffinity"):
                os.sched_setaffinity(0, {core})
            _die_with_parent(parent)

        self._proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                                      preexec_fn=pin)
        try:
            self.info = json.loads(self._read_line(self._proc.stdout))
            self.url = str(self.info["url"])
            self._wait_healthy()
        except BaseException:
            self.close()
            raise
        return self

    def _read_line(self, stream: Optional[IO[str]]) -> str:
        import selectors

        assert stream is not None and self._proc is not None
        sel = selectors.DefaultSelector()
        sel.register(stream, selectors.EVENT_READ)
        end = time.monotonic() + self.start_timeout_s
        while time.monotonic() < end:
            if sel.select(timeout=0.5):
                line = stream.readline()
                if line.strip():
                    return line
            if self._proc.poll() is not None:
                err = self._proc.stderr.read() if self._proc.stderr else ""
                raise RuntimeError(f"the local cloud exited ({self._proc.returncode}): {err.strip()[-500:]}")
        raise TimeoutError(f"the local cloud did not start within {self.start_timeout_s:.0f} s")

    def _wait_healthy(self) -> None:
        end = time.monotonic() + 10
        while time.monotonic() < end:
            try:
                if httpx.get(self.url + "/health", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise TimeoutError("the local cloud does not answer /health")

    @property
    def address(self) -> tuple[str, int]:
        u = httpx.URL(self.url)
        return u.host, int(u.port or 80)

    def close(self) -> None:
        p, self._proc = self._proc, None
        if p is None:
            return
        if p.poll() is None:
            p.send_signal(signal.SIGINT)
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for s in (p.stdout, p.stderr):
            if s:
                s.close()

    def __enter__(self) -> "LocalCloud":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

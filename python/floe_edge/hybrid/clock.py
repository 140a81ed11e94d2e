"""Time and IO for the generator: a `Clock` and an `IOLoop`, real here, virtual in the policy tests.

The generator reads time, waits for an answer and runs the cloud link's coroutines only through these two, so a
test can drive it on a virtual clock with a scripted cloud (tests/scripted.py) and check its decisions exactly,
without a model, a network or a wall clock.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from typing import Any, Coroutine, Optional, Protocol, TypeVar

__all__ = ["Clock", "IOLoop", "LoopThread", "RealClock"]

T = TypeVar("T")


class Clock(Protocol):
    def now(self) -> float:
        """Seconds, monotonic."""

    def wait(self, future: "concurrent.futures.Future[Any]", timeout: float) -> None:
        """Return when `future` is done or `timeout` seconds have passed, whichever is first."""

    def link_deadline(self, seconds: float) -> float:
        """An absolute deadline `seconds` from now on the clock the cloud link uses (`CloudBackend.step`)."""


class IOLoop(Protocol):
    def submit(self, coro: Coroutine[Any, Any, T]) -> "concurrent.futures.Future[T]": ...
    def run(self, coro: Coroutine[Any, Any, T], timeout: Optional[float] = None) -> T: ...
    def close(self) -> None: ...


class RealClock:
    def now(self) -> float:
        return time.perf_counter()

    def wait(self, future: "concurrent.futures.Future[Any]", timeout: float) -> None:
        try:
            future.exception(timeout=max(timeout, 0.0))
        except (concurrent.futures.TimeoutError, concurrent.futures.CancelledError):
            pass

    def link_deadline(self, seconds: float) -> float:
        return time.monotonic() + seconds


class LoopThread:
    """An asyncio loop on a daemon thread: the cloud link's IO runs there while the edge computes here."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="floe-cloud-io", daemon=True)
        self._thread.start()

    def submit(self, coro: Coroutine[Any, Any, T]) -> "concurrent.futures.Future[T]":
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run(self, coro: Coroutine[Any, Any, T], timeout: Optional[float] = None) -> T:
        return self.submit(coro).result(timeout)

    def close(self) -> None:
        if self._thread.is_alive():
            try:  # the executor's threads (asyncio.to_thread) end with the loop, not after it
                self.submit(self.loop.shutdown_default_executor()).result(5)
            except Exception:
                pass
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(5)
        if not self.loop.is_running():
            self.loop.close()

"""The server's model worker: model calls run on one thread (llama contexts are not thread-safe, and one context
shared by the sessions is what makes prefix reuse work), so the event loop only parses, checks and frames."""

from __future__ import annotations

import asyncio
import functools
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

from .api_error import ApiError

__all__ = ["Worker"]

log = logging.getLogger(__name__)


class Worker:
    """Runs model calls one at a time off the event loop; 503 when too many are waiting."""

    def __init__(self, max_queue: int) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="floe-cloud-model")
        self.max_queue = max_queue
        self.pending = 0

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        if self.pending >= self.max_queue:
            raise ApiError(503, "overloaded", "the model is busy; retry later")
        self.pending += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, functools.partial(fn, *args))
        except ApiError:
            raise
        except Exception as exc:  # the type only: a message could carry request content
            log.error("model call failed: %s", type(exc).__name__)
            raise ApiError(500, "model_error", f"the model failed ({type(exc).__name__})") from None
        finally:
            self.pending -= 1

    def close(self) -> None:
        self._pool.shutdown(wait=True)

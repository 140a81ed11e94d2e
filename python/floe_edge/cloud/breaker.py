"""A circuit breaker for the cloud link: stop paying round trips (and deadlines) for a cloud that is down.

    closed ──(failure_threshold consecutive failures)──► open ──(cooldown elapsed)──► half-open
      ▲                                                    ▲                              │ one probe request
      └────────────────────(probe succeeds)────────────────┼──────────────────────────────┘
                                                           └──(probe fails: cooldown doubles, up to max_cooldown_s)

While open, `allow()` refuses at once (the caller raises `CloudUnavailable` without touching the network). After the
cooldown the next request is the probe; requests arriving while it is in flight are refused too. A success anywhere
closes the breaker and resets the cooldown. A probe that is cancelled (its caller gave up, not the cloud) is
released with `release()`: the next request probes again.
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field
from typing import Callable

__all__ = ["BreakerState", "CircuitBreaker"]


class BreakerState(str, enum.Enum):
    CLOSED = "closed"        # requests flow
    OPEN = "open"            # refusing until the cooldown ends
    HALF_OPEN = "half_open"  # cooldown over: one probe may go (or is in flight)


@dataclass
class CircuitBreaker:
    failure_threshold: int = 3
    cooldown_s: float = 1.0
    max_cooldown_s: float = 4.0  # a device wants to see the cloud back within seconds; a probe is cheap
    clock: Callable[[], float] = time.monotonic
    _state: BreakerState = field(default=BreakerState.CLOSED, init=False)
    _failures: int = field(default=0, init=False)
    _opened_at: float = field(default=0.0, init=False)
    _cooldown: float = field(default=0.0, init=False)
    _probing: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        if self.failure_threshold < 1 or self.cooldown_s <= 0 or self.max_cooldown_s < self.cooldown_s:
            raise ValueError("need failure_threshold >= 1 and 0 < cooldown_s <= max_cooldown_s")
        self._cooldown = self.cooldown_s

    @property
    def state(self) -> BreakerState:
        if self._state is BreakerState.OPEN and self.retry_in() == 0.0:
            return BreakerState.HALF_OPEN  # shown as half-open; the transition happens in allow()
        return self._state

    @property
    def consecutive_failures(self) -> int:
        return self._failures

    @property
    def cooldown(self) -> float:
        """The current cooldown (doubles while probes fail)."""
        return self._cooldown

    def retry_in(self) -> float:
        """Seconds until a request would be let through (0 if one would be now)."""
        if self._state is BreakerState.OPEN:
            return max(self._opened_at + self._cooldown - self.clock(), 0.0)
        if self._state is BreakerState.HALF_OPEN and self._probing:
            return self._cooldown  # unknown: the probe decides; a cooldown is the honest order of magnitude
        return 0.0

    def would_allow(self) -> bool:
        """Whether allow() would say yes now (no side effect)."""
        return self.retry_in() == 0.0

    def allow(self) -> bool:
        """May a request go now? In half-open state a yes makes the caller the probe: it must then call
        record_success, record_failure or release."""
        if self._state is BreakerState.CLOSED:
            return True
        if not self.would_allow():
            return False
        self._state, self._probing = BreakerState.HALF_OPEN, True
        return True

    def record_success(self) -> None:
        self._state, self._failures, self._cooldown, self._probing = BreakerState.CLOSED, 0, self.cooldown_s, False

    def record_failure(self) -> None:
        if self._state is BreakerState.HALF_OPEN:  # the probe failed: wait longer this time
            self._cooldown = min(self._cooldown * 2, self.max_cooldown_s)
            self._open()
        elif self._state is BreakerState.CLOSED:
            self._failures += 1
            if self._failures >= self.failure_threshold:
                self._open()
        # OPEN: a request let through before the breaker opened failed late; nothing new to learn

    def release(self) -> None:
        """A probe ended without a verdict (cancelled by its caller)."""
        self._probing = False

    def _open(self) -> None:
        self._state, self._opened_at, self._probing = BreakerState.OPEN, self.clock(), False

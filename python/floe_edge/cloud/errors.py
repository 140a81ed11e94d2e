"""What can go wrong on the cloud link. Every failure of a step is a `CloudError` subclass, never anything else from
the network; bad arguments are ValueError. The scheduler goes on without the cloud on any of them."""

from __future__ import annotations

__all__ = ["CloudConnectionError", "CloudError", "CloudHTTPError", "CloudProtocolError", "CloudTimeout",
           "CloudUnavailable", "SessionExpired"]


class CloudError(Exception):
    """Anything that kept the cloud from answering a step. The scheduler goes on without the cloud."""

    counts = True  # a failure for the circuit breaker

    def __init__(self, message: str, *, maybe_delivered: bool = False, response_started: bool = False) -> None:
        super().__init__(message)
        self.maybe_delivered = maybe_delivered    # the server may have received (and applied) the request
        self.response_started = response_started  # the failure came after the response began


class CloudTimeout(CloudError):
    """The deadline passed before the answer was complete (the request was abandoned)."""


class CloudUnavailable(CloudError):
    """The circuit breaker is open: refused without a round trip."""

    def __init__(self, message: str, retry_in: float) -> None:
        super().__init__(message)
        self.retry_in = retry_in


class CloudConnectionError(CloudError):
    """Could not connect, or the connection broke."""


class CloudProtocolError(CloudError):
    """A malformed or inconsistent answer (wrong content type, bad frame, ids out of range, NaN log-probs...)."""


class CloudHTTPError(CloudError):
    """An error status with the server's {"error": {"code", "message"}}."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"HTTP {status} {code}: {message}")
        self.status, self.code, self.message = status, code, message


class SessionExpired(CloudHTTPError):
    """404 on a session: expired or unknown. Handled inside the link (reopened), a proper answer for the breaker."""

    counts = False

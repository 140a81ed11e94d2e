"""The error answer of the cloud API: an HTTP status with {"error": {"code": str, "message": str}}."""

from __future__ import annotations

import json

__all__ = ["ApiError", "error_body"]


class ApiError(Exception):
    """An error answered as {"error": {"code", "message"}} with an HTTP status."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def error_body(code: str, message: str) -> bytes:
    return json.dumps({"error": {"code": code, "message": message}}).encode()

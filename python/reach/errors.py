"""The exceptions reach raises. Vendor errors carry the vendor's own code and HTTP status."""

from __future__ import annotations

# JPush v3 error table (seed 001): code -> HTTP status.
JPUSH_HTTP_STATUS: dict[int, int] = {
    1000: 500,
    1001: 405,
    1002: 400,
    1003: 400,
    1004: 401,
    1005: 400,
    1008: 400,
    1009: 400,
    1011: 400,
    1020: 404,
    1030: 503,
    2002: 429,
    2003: 403,
    2004: 403,
    2005: 403,
}


class PushError(ValueError):
    """A refused push request: the JPush error ``code``, its ``http_status`` and a ``message``.

    >>> e = PushError(1011, "no push target")
    >>> (e.code, e.http_status, e.message)
    (1011, 400, 'no push target')
    """

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"[{code}] {message}")
        self.code = code
        self.message = message
        self.http_status = JPUSH_HTTP_STATUS.get(code, 400)

    def to_json(self) -> dict[str, dict[str, object]]:
        """The vendor's error body: ``{"error": {"code", "message"}}``."""
        return {"error": {"code": self.code, "message": self.message}}


class SnapshotError(ValueError):
    """A snapshot file that is corrupt, truncated or not a reach snapshot."""


class LoadError(ValueError):
    """A bulk load refused (bad line or bad arrays); nothing of it was applied."""

"""Errors a bucket raises: one class per kind of failure, all under :class:`BucketError`.

A server error carries the server's OpenAI-style envelope: ``message``, ``status`` (the HTTP
status), ``code`` and ``param``.
"""

from __future__ import annotations

from typing import Any, Dict, Optional


class BucketError(Exception):
    """Anything that went wrong talking to Model Bucket."""

    def __init__(
        self,
        message: str,
        status: Optional[int] = None,
        code: Optional[str] = None,
        param: Optional[str] = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.param = param


class ServerDownError(BucketError):
    """No server answered at the bucket's URL (and none could be started)."""


class BadRequestError(BucketError):
    """400: the request was malformed or a parameter out of range (see ``param``)."""


class AuthenticationError(BucketError):
    """401: the API key is missing or wrong (set ``EDEN_API_KEY`` or pass ``api_key``)."""


class PermissionDeniedError(BucketError):
    """403: the server refused the caller (e.g. adding a file from a non-loopback client)."""


class NotFoundError(BucketError):
    """404: no such model (or endpoint)."""


class RateLimitError(BucketError):
    """429: too many requests from this client, or too many pulls at once."""


class InsufficientMemoryError(BucketError):
    """507: the model is larger than the server's whole RAM budget."""


class UnavailableError(BucketError):
    """503: the model cannot run now (no memory free yet, failed, or the server is stopping)."""


class WorkerError(BucketError):
    """502 or a 5xx while serving: the model's worker failed or exited mid-request."""


_BY_STATUS = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    405: BadRequestError,
    413: BadRequestError,
    415: BadRequestError,
    422: BadRequestError,
    429: RateLimitError,
    502: WorkerError,
    503: UnavailableError,
    507: InsufficientMemoryError,
}


_BY_CODE = {
    "model_not_found": NotFoundError,
    "insufficient_memory": InsufficientMemoryError,
    "invalid_api_key": AuthenticationError,
}


def from_envelope(status: Optional[int], body: Any) -> BucketError:
    """The error for an HTTP ``status`` (``None``: an error event inside a stream) and the
    server's body (its ``{"error": {...}}`` envelope, or anything else)."""
    err: Dict[str, Any] = {}
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        err = body["error"]
    message = str(err.get("message") or body or f"HTTP {status}")
    cls = _BY_STATUS.get(status or 0) or _BY_CODE.get(str(err.get("code")))
    if cls is None and status is None and err.get("type") == "invalid_request_error":
        cls = BadRequestError
    if cls is None:
        cls = WorkerError if status is None or status >= 500 else BucketError
    return cls(message, status=status, code=err.get("code"), param=err.get("param"))

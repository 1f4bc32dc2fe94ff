"""Python client for Model Bucket, the local LLM server for a folder of GGUF models.

    from model_bucket import get_bucket
    bucket = get_bucket()
    info = bucket.add_model("/path/to/mistral-7b.gguf")
    bucket.load_model(info.model_id)
    print(bucket.generate(prompt="Write a poem about consciousness", max_tokens=200))

Only the standard library is used.
"""

from __future__ import annotations

import os
from typing import List, Optional

from .bucket import Bucket
from .errors import (
    AuthenticationError,
    BadRequestError,
    BucketError,
    InsufficientMemoryError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    ServerDownError,
    UnavailableError,
    WorkerError,
)
from .server import LocalServer, answers
from .types import ModelInfo, PullProgress

__all__ = [
    "get_bucket",
    "Bucket",
    "ModelInfo",
    "PullProgress",
    "LocalServer",
    "BucketError",
    "ServerDownError",
    "BadRequestError",
    "AuthenticationError",
    "PermissionDeniedError",
    "NotFoundError",
    "RateLimitError",
    "InsufficientMemoryError",
    "UnavailableError",
    "WorkerError",
]

DEFAULT_URL = "http://127.0.0.1:8080"

#: Servers this session started, by URL (one each).
_started = {}


def get_bucket(
    url: Optional[str] = None,
    api_key: Optional[str] = None,
    start: bool = True,
    serve_args: Optional[List[str]] = None,
    timeout: float = 600.0,
) -> Bucket:
    """The bucket at ``url`` (default ``$EDEN_URL``, else ``http://127.0.0.1:8080``), with
    ``api_key`` (default ``$EDEN_API_KEY``).

    When no server answers there and ``start`` is true, ``model-bucket serve`` (with
    ``serve_args``) is started in the background for the rest of this Python session, which
    needs a loopback URL and the binary (on ``PATH``, or ``$EDEN_BUCKET_BIN``). Otherwise
    :class:`ServerDownError` is raised.
    """
    url = (url or os.environ.get("EDEN_URL") or DEFAULT_URL).rstrip("/")
    key = api_key if api_key is not None else os.environ.get("EDEN_API_KEY")
    if not answers(url):
        if not start:
            raise ServerDownError(f"no Model Bucket server answers at {url}")
        if url not in _started:
            _started[url] = LocalServer(url, serve_args)
    return Bucket(url, key, timeout)

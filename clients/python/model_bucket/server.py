"""Starting a local server for this Python session when none answers."""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import tempfile
import time
import urllib.parse
from pathlib import Path
from typing import List, Optional

from ._http import Transport
from .errors import BucketError, ServerDownError

#: Environment variable naming the ``model-bucket`` binary to start.
BIN_ENV = "EDEN_BUCKET_BIN"


def find_binary() -> Optional[str]:
    """``$EDEN_BUCKET_BIN``, else ``model-bucket`` on ``PATH``, else a checkout's release build
    in the current folder or one above it."""
    explicit = os.environ.get(BIN_ENV)
    if explicit:
        return explicit
    found = shutil.which("model-bucket")
    if found:
        return found
    here = Path.cwd()
    for d in [here, *here.parents]:
        candidate = d / "target" / "release" / "model-bucket"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def answers(url: str, timeout: float = 2.0) -> bool:
    """Whether a Model Bucket server answers ``GET /health`` at ``url``."""
    try:
        return Transport(url, None, timeout).json("GET", "/health").get("status") == "ok"
    except BucketError:
        return False


class LocalServer:
    """A ``model-bucket serve`` started for this session; stopped (SIGTERM, then waited for)
    when the session ends or :meth:`stop` is called. Its log is in ``log_path``."""

    def __init__(self, url: str, args: Optional[List[str]] = None, wait: float = 120.0) -> None:
        parsed = urllib.parse.urlparse(url)
        host = parsed.hostname or "127.0.0.1"
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise ServerDownError(f"no server answers at {url}, and only a loopback server can be started")
        binary = find_binary()
        if binary is None:
            raise ServerDownError(
                f"no server answers at {url}, and no model-bucket binary was found to start one "
                f"(put it on PATH or set {BIN_ENV})"
            )
        port = str(parsed.port or 8080)
        fd, self.log_path = tempfile.mkstemp(prefix="model-bucket-", suffix=".log")
        cmd = [binary, "serve", "--host", "127.0.0.1" if host == "localhost" else host, "--port", port, *(args or [])]
        with os.fdopen(fd, "wb") as log:
            self.process = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        atexit.register(self.stop)
        deadline = time.monotonic() + wait
        while not answers(url, timeout=1.0):
            if self.process.poll() is not None:
                raise ServerDownError(
                    f"model-bucket serve exited ({self.process.returncode}); its log: {self.log_path}"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise ServerDownError(f"model-bucket serve did not answer within {wait:.0f} s; log: {self.log_path}")
            time.sleep(0.1)

    def stop(self) -> None:
        """Stops the server (its workers drain) and waits for it."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

"""The HTTP side of a bucket: JSON requests and server-sent event streams over the standard
library, with the server's error envelopes turned into :mod:`model_bucket.errors`."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from typing import Any, Dict, Iterator, Optional

from .errors import BucketError, ServerDownError, from_envelope


class Transport:
    """Requests to one server. ``timeout`` (seconds) bounds connecting and each read; a stream
    may last longer as long as data keeps coming."""

    def __init__(self, url: str, api_key: Optional[str], timeout: float) -> None:
        self.url = url.rstrip("/")
        self.api_key = api_key
        self.timeout = timeout

    def _request(self, method: str, path: str, body: Optional[Dict[str, Any]]) -> urllib.request.Request:
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        return urllib.request.Request(self.url + path, data=data, method=method, headers=headers)

    def _open(self, method: str, path: str, body: Optional[Dict[str, Any]]):
        try:
            return urllib.request.urlopen(self._request(method, path, body), timeout=self.timeout)
        except urllib.error.HTTPError as e:
            raw = e.read()
            try:
                parsed: Any = json.loads(raw)
            except ValueError:
                parsed = raw.decode(errors="replace")
            raise from_envelope(e.code, parsed) from None
        except urllib.error.URLError as e:
            raise ServerDownError(f"no Model Bucket server answers at {self.url}: {e.reason}") from None
        except (ConnectionError, socket.timeout) as e:
            raise ServerDownError(f"no Model Bucket server answers at {self.url}: {e}") from None

    def json(self, method: str, path: str, body: Optional[Dict[str, Any]] = None) -> Any:
        """One request; the JSON answer."""
        with self._open(method, path, body) as resp:
            raw = resp.read()
        try:
            return json.loads(raw)
        except ValueError:
            raise BucketError(f"the server answered {path} with something other than JSON") from None

    def events(self, path: str, body: Dict[str, Any]) -> Iterator[Any]:
        """POSTs ``body`` now (so that a refused request raises here) and returns an iterator of
        each server-sent event's data, parsed, until ``[DONE]`` or the end. An error event
        raises when it is reached."""
        return self._read_events(self._open("POST", path, body))

    @staticmethod
    def _read_events(resp: Any) -> Iterator[Any]:
        with resp:
            for line in resp:
                line = line.rstrip(b"\r\n")
                if not line.startswith(b"data:"):
                    continue
                data = line[5:].strip()
                if data == b"[DONE]":
                    return
                try:
                    event = json.loads(data)
                except ValueError:
                    raise BucketError(f"the server sent an event that is not JSON: {data[:200]!r}") from None
                if isinstance(event, dict) and "error" in event and event.get("status") in (None, "error"):
                    raise from_envelope(None, event)
                yield event

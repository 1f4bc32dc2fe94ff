"""A handle on one Model Bucket server: its models, loading and unloading them, and text
generation, streamed or whole."""

from __future__ import annotations

import os
import time
from typing import Any, Callable, Dict, Iterator, List, Optional, Union
from urllib.parse import quote

from ._http import Transport
from .errors import BucketError
from .types import ModelInfo, PullProgress

Message = Dict[str, Any]


class Bucket:
    """A Model Bucket server at ``url`` (see :func:`model_bucket.get_bucket`).

    ``model`` is the model :meth:`generate` and :meth:`chat` use when none is named: the last one
    added, loaded or pulled through this handle, else the only model in the bucket.
    """

    def __init__(self, url: str, api_key: Optional[str] = None, timeout: float = 600.0) -> None:
        self.url = url.rstrip("/")
        self.model: Optional[str] = None
        self._http = Transport(self.url, api_key, timeout)

    def __repr__(self) -> str:
        return f"Bucket({self.url!r})"

    # Models.

    def list_models(self) -> List[ModelInfo]:
        """Every model of the bucket with its current state (tasks are left out)."""
        data = self._http.json("GET", "/v1/models")["data"]
        return [ModelInfo.from_json(m) for m in data if "task" not in m]

    def get_model(self, model_id: str) -> ModelInfo:
        """One model by ID or alias. Raises :class:`~model_bucket.errors.NotFoundError`."""
        return ModelInfo.from_json(self._http.json("GET", f"/v1/models/{quote(model_id, safe='')}"))

    def add_model(self, path: Union[str, os.PathLike], id: Optional[str] = None) -> ModelInfo:
        """Adds the GGUF file at ``path`` (on the server's machine) to the bucket, as
        ``model-bucket add`` does: hard-linked (or copied) into the models folder, hashed and
        listed. ``id`` adds a custom ID (1-128 characters of ``[A-Za-z0-9._:-]``). Adding a file
        already in the bucket returns it. Only loopback or admin-key callers may add files."""
        body: Dict[str, Any] = {"path": os.path.abspath(os.fspath(path))}
        if id is not None:
            body["id"] = id
        info = ModelInfo.from_json(self._http.json("POST", "/admin/models", body))
        self.model = info.model_id
        return info

    def load_model(self, model_id: str) -> ModelInfo:
        """Starts the model's worker and waits until it is ready (or raises why it cannot)."""
        self._http.json("POST", f"/admin/models/{quote(model_id, safe='')}/load")
        info = self.get_model(model_id)
        self.model = info.model_id
        return info

    def unload_model(self, model_id: str, wait: float = 60.0) -> str:
        """Drains the model's worker (requests in flight finish) and stops it; waits up to
        ``wait`` seconds for it to be gone and returns the state it is left in
        (``unloaded``, or ``draining`` if it is still finishing requests)."""
        v = self._http.json("POST", f"/admin/models/{quote(model_id, safe='')}/unload")
        state = str(v.get("state"))
        deadline = time.monotonic() + wait
        while state == "draining" and time.monotonic() < deadline:
            time.sleep(0.05)
            state = str(self.get_model(model_id).state)
        return state

    def pull(
        self,
        name_or_repo: str,
        file: Optional[str] = None,
        progress: Optional[Callable[[PullProgress], None]] = None,
    ) -> ModelInfo:
        """Downloads a model into the bucket: a recommended name (``smollm2``), or a Hugging
        Face repo (``owner/name``) with a ``file`` (or a quantization picked for you).
        ``progress`` is called with each :class:`PullProgress` step."""
        body: Dict[str, Any] = {"model": name_or_repo}
        if file is not None:
            body["file"] = file
        total: Optional[int] = None
        name: Optional[str] = None
        for ev in self._http.events("/admin/pull", body):
            status = ev.get("status")
            total = ev.get("total", total)
            name = ev.get("file", name)
            if status == "success":
                info = ModelInfo.from_json(ev["model"])
                if progress:
                    progress(PullProgress("success", completed=total, total=total, file=name))
                self.model = info.model_id
                return info
            if progress:
                progress(PullProgress(str(status), completed=ev.get("completed"), total=total, file=name))
        raise BucketError("the pull ended without a result")

    # Generation.

    def _model(self, model: Optional[str]) -> str:
        if model:
            return model
        if self.model:
            return self.model
        models = self.list_models()
        if len(models) == 1:
            return models[0].model_id
        raise BucketError(
            f"name a model: the bucket holds {len(models)} and none was added or loaded through this handle"
        )

    def generate(
        self,
        prompt: str,
        max_tokens: Optional[int] = None,
        stream: bool = False,
        model: Optional[str] = None,
        raw: bool = False,
        **sampling: Any,
    ) -> Union[str, Iterator[str]]:
        """The model's answer to ``prompt``: the whole text, or with ``stream=True`` an iterator
        of pieces as they are generated.

        A model that can chat gets the prompt as one user message (its chat template applies);
        ``raw=True``, or a model that cannot chat, continues the text as it is.
        ``max_tokens=None`` lets it run to its end or its context's. ``sampling`` takes the
        OpenAI parameters and the server's own (``temperature``, ``top_p``, ``top_k``,
        ``min_p``, ``seed``, ``stop``, ``repeat_penalty``, ``response_format``, ...).
        """
        name = self._model(model)
        if not raw:
            caps = self.get_model(name).capabilities
            if "chat" in caps:
                return self.chat([{"role": "user", "content": prompt}], max_tokens, stream, name, **sampling)
        body = self._body(name, max_tokens, stream, sampling)
        body["prompt"] = prompt
        return self._run("/v1/completions", body, stream, lambda c: c.get("text"))

    def chat(
        self,
        messages: List[Message],
        max_tokens: Optional[int] = None,
        stream: bool = False,
        model: Optional[str] = None,
        **sampling: Any,
    ) -> Union[str, Iterator[str]]:
        """The assistant's reply to ``messages`` (OpenAI chat messages): the whole text, or with
        ``stream=True`` an iterator of pieces. ``sampling`` as for :meth:`generate`."""
        body = self._body(self._model(model), max_tokens, stream, sampling)
        body["messages"] = messages
        return self._run("/v1/chat/completions", body, stream, lambda c: (c.get("delta") or {}).get("content"))

    def _body(self, model: str, max_tokens: Optional[int], stream: bool, sampling: Dict[str, Any]) -> Dict[str, Any]:
        body: Dict[str, Any] = {"model": model, "stream": stream}
        if max_tokens is not None:
            body["max_tokens"] = max_tokens
        body.update(sampling)
        return body

    def _run(
        self, path: str, body: Dict[str, Any], stream: bool, piece: Callable[[Dict[str, Any]], Optional[str]]
    ) -> Union[str, Iterator[str]]:
        if stream:
            return self._pieces(path, body, piece)
        choice = self._http.json("POST", path, body)["choices"][0]
        if "message" in choice:
            return choice["message"].get("content") or ""
        return choice.get("text") or ""

    def _pieces(
        self, path: str, body: Dict[str, Any], piece: Callable[[Dict[str, Any]], Optional[str]]
    ) -> Iterator[str]:
        events = self._http.events(path, body)

        def pieces() -> Iterator[str]:
            for chunk in events:
                for c in chunk.get("choices") or []:
                    text = piece(c)
                    if text:
                        yield text

        return pieces()

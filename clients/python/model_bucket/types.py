"""What a bucket returns: models and pull progress, as plain dataclasses."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional


@dataclass(frozen=True)
class ModelInfo:
    """One model of the bucket.

    ``model_id`` is the stable ID (``eden_<family>_<size>_<hash6>``); ``context_length`` is the
    training context in tokens; ``size_bytes`` the file's size; ``state`` the worker's state
    (``unloaded``, ``loading``, ``ready``, ``draining``, ``failed``) when the server said.
    """

    model_id: str
    aliases: List[str] = field(default_factory=list)
    capabilities: List[str] = field(default_factory=list)
    context_length: Optional[int] = None
    quantization: Optional[str] = None
    parameters: Optional[str] = None
    size_bytes: Optional[int] = None
    architecture: Optional[str] = None
    state: Optional[str] = None
    #: The server's whole JSON object for the model.
    raw: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, v: Dict[str, Any]) -> "ModelInfo":
        """From a ``/v1/models`` entry or a catalog entry (``add``, ``pull``)."""
        return cls(
            model_id=v["id"],
            aliases=list(v.get("aliases") or []),
            capabilities=list(v.get("capabilities") or []),
            context_length=v.get("context_length"),
            quantization=v.get("quantization"),
            parameters=v.get("parameters"),
            size_bytes=v.get("size_bytes"),
            architecture=v.get("architecture"),
            state=v.get("state"),
            raw=v,
        )


@dataclass(frozen=True)
class PullProgress:
    """One step of a pull: ``status`` is ``pulling``, ``downloading``, ``verifying`` or
    ``success``; ``completed`` and ``total`` count bytes when known."""

    status: str
    completed: Optional[int] = None
    total: Optional[int] = None
    file: Optional[str] = None

    @property
    def fraction(self) -> Optional[float]:
        """``completed / total`` (0–1) when both are known."""
        if self.completed is None or not self.total:
            return None
        return min(1.0, self.completed / self.total)

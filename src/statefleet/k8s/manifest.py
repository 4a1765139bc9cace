"""One rendered Kubernetes object."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Manifest:
    """A Kubernetes object as a plain mapping; ``routing`` marks those that carry the canary weights."""

    body: dict[str, Any]
    routing: bool = False

    @property
    def api_version(self) -> str:
        return str(self.body["apiVersion"])

    @property
    def kind(self) -> str:
        return str(self.body["kind"])

    @property
    def name(self) -> str:
        return str(self.body["metadata"]["name"])

    @property
    def namespace(self) -> str | None:
        namespace = self.body["metadata"].get("namespace")
        return None if namespace is None else str(namespace)


def manifest(api_version: str, kind: str, metadata: dict[str, Any], routing: bool = False,
             **fields: Any) -> Manifest:
    """An object with ``apiVersion``, ``kind`` and ``metadata`` first, then ``fields`` in the order given."""
    return Manifest({"apiVersion": api_version, "kind": kind, "metadata": metadata, **fields}, routing=routing)

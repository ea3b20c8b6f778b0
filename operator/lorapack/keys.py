"""Keys of namespaced objects: "namespace/name", built and split in one place.

Pools, adapters and pods are keyed this way in indexes, plans and messages. A leaf module.
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["HasMeta", "key_of", "object_key", "split_key"]


def object_key(namespace: str, name: str) -> str:
    """ "namespace/name"."""
    return f"{namespace}/{name}"


def split_key(key: str) -> tuple[str, str]:
    """(namespace, name) of a "namespace/name" key."""
    namespace, _, name = key.partition("/")
    return namespace, name


class _Meta(Protocol):
    @property
    def namespace(self) -> str: ...
    @property
    def name(self) -> str: ...


class HasMeta(Protocol):
    """Anything with `metadata.namespace` and `metadata.name` (the API models)."""

    @property
    def metadata(self) -> _Meta: ...


def key_of(obj: HasMeta) -> str:
    """ "namespace/name" of an API object."""
    return object_key(obj.metadata.namespace, obj.metadata.name)

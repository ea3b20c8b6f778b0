"""The small interfaces reconcilers need from the outside world, defined where they are consumed.

Handlers implement them over `lorapack.clients` (the real cluster, S3); component tests implement
them with in-memory fakes that record calls. Each port has one to four methods.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol

from lorapack.api.basemodelpool import BaseModelPool
from lorapack.api.loraadapter import ArtifactObject, LoraAdapter

__all__ = ["ArtifactStore", "ObjectInfo", "Presigner", "SecretReader", "Writer"]


class ObjectInfo(Protocol):
    """One listed S3 object (lorapack.clients.s3.ObjectInfo satisfies it)."""

    @property
    def key(self) -> str: ...
    @property
    def size(self) -> int: ...
    @property
    def etag(self) -> str: ...
    @property
    def version_id(self) -> str | None: ...


class ArtifactStore(Protocol):
    """Read access to an adapter's S3 prefix, with the adapter's (or pool's) credentials."""

    async def list_prefix(
        self, adapter: LoraAdapter, pool: BaseModelPool, bucket: str, prefix: str
    ) -> Sequence[ObjectInfo]:
        """The objects under the prefix; may stop after MAX_ADAPTER_FILES + 1 of them (the
        caller refuses that many)."""
        ...

    async def get_bytes(
        self,
        adapter: LoraAdapter,
        pool: BaseModelPool,
        bucket: str,
        key: str,
        version_id: str | None,
    ) -> bytes: ...

    async def get_range(
        self,
        adapter: LoraAdapter,
        pool: BaseModelPool,
        bucket: str,
        key: str,
        version_id: str | None,
        start: int,
        length: int,
    ) -> bytes:
        """At most `length` bytes of the object from `start` (one ranged GET): the
        safetensors header, without downloading the weights."""
        ...


class Presigner(Protocol):
    """Presigned GET URLs for an adapter's files (team credentials never leave the operator)."""

    async def presign(
        self,
        adapter: LoraAdapter,
        pool: BaseModelPool,
        bucket: str,
        objects: Sequence[tuple[str, ArtifactObject]],
        ttl_seconds: int,
    ) -> tuple[list[str], datetime]:
        """URLs for (key, object) pairs, in order, and when they expire."""
        ...


class SecretReader(Protocol):
    """Reads one Secret's decoded data (None if it does not exist)."""

    async def read_secret(self, namespace: str, name: str) -> Mapping[str, str] | None: ...


class Writer(Protocol):
    """Writes to the cluster: create, server-side apply, deletes, status patches (and the one
    read a write needs: who owns a same-named object)."""

    async def apply(self, obj: Mapping[str, Any]) -> None: ...

    async def create(self, obj: Mapping[str, Any]) -> None:
        """Create; ApiConflict when an object of that name exists."""
        ...

    async def get(
        self, api_version: str, kind: str, namespace: str, name: str
    ) -> Mapping[str, Any] | None: ...

    async def delete(self, api_version: str, kind: str, namespace: str, name: str) -> None: ...

    async def patch_status(
        self, api_version: str, kind: str, namespace: str, name: str, status: Mapping[str, Any]
    ) -> None: ...

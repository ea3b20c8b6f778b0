"""An in-memory ArtifactStore (reconcilers.ports) holding S3 objects as bytes, recording every
request, for the pre-flight component tests and the hostile-input corpus runner."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from lorapack.api import conditions
from lorapack.api.basemodelpool import BaseModelPool
from lorapack.api.loraadapter import LoraAdapter
from lorapack.errors import AccessDenied, ArtifactNotFound, ArtifactRejected, LorapackError
from lorapack.planning.artifact import MAX_ADAPTER_FILES


@dataclass(frozen=True)
class StoredObject:
    """One object as ports.ObjectInfo describes it."""

    key: str
    size: int
    etag: str
    version_id: str | None = None


class MemoryStore:
    """ArtifactStore over a dict of bucket/key -> bytes. `sizes` fakes objects too large to
    hold (listed with that size; reads return zeros). Like S3Access, the listing stops after
    MAX_ADAPTER_FILES + 1 objects."""

    def __init__(
        self,
        objects: Mapping[str, bytes] | None = None,
        *,
        sizes: Mapping[str, int] | None = None,
        denied: bool = False,
        fail: LorapackError | None = None,
    ) -> None:
        self.objects = dict(objects or {})
        self.sizes = dict(sizes or {})
        self.denied = denied
        self.fail = fail
        self.calls: list[tuple[str, str, int, int]] = []
        """(method, "bucket/key", start, length)."""

    def put(self, uri: str, files: Mapping[str, bytes]) -> None:
        """Files under an s3://bucket/prefix/ URI."""
        base = uri.removeprefix("s3://")
        for name, data in files.items():
            self.objects[base + name] = data

    def _check(self, where: str) -> None:
        if self.fail is not None:
            raise self.fail
        if self.denied:
            raise AccessDenied(f"S3 refused access to s3://{where} (AccessDenied)")

    def _size(self, key: str) -> int:
        return self.sizes.get(key, len(self.objects.get(key, b"")))

    async def list_prefix(
        self, adapter: LoraAdapter, pool: BaseModelPool, bucket: str, prefix: str
    ) -> Sequence[StoredObject]:
        where = f"{bucket}/{prefix}"
        self.calls.append(("list", where, 0, 0))
        self._check(where)
        keys = sorted(k for k in {*self.objects, *self.sizes} if k.startswith(where))
        if not keys and not any(k.startswith(f"{bucket}/") for k in self.objects):
            raise ArtifactNotFound(f"no such bucket at s3://{bucket}/ (NoSuchBucket)")
        return [
            StoredObject(
                k.removeprefix(f"{bucket}/"),
                self._size(k),
                hashlib.md5(self.objects.get(k, b"")).hexdigest(),
            )
            for k in keys[: MAX_ADAPTER_FILES + 1]
        ]

    def _read(self, bucket: str, key: str) -> bytes:
        where = f"{bucket}/{key}"
        self._check(where)
        if where in self.sizes and where not in self.objects:
            return b"\0" * min(self.sizes[where], 1 << 20)
        if where not in self.objects:
            raise ArtifactNotFound(f"no such object at s3://{where} (NoSuchKey)")
        return self.objects[where]

    async def get_bytes(
        self,
        adapter: LoraAdapter,
        pool: BaseModelPool,
        bucket: str,
        key: str,
        version_id: str | None,
    ) -> bytes:
        self.calls.append(("get", f"{bucket}/{key}", 0, 0))
        data = self._read(bucket, key)
        if self._size(f"{bucket}/{key}") > 1 << 20:  # as S3Client.get_bytes refuses
            raise ArtifactRejected(
                f"s3://{bucket}/{key} is {len(data)} bytes, more than the {1 << 20} bytes "
                "lorapack reads for this file; is it the right file?",
                reason=conditions.UNSUPPORTED_ADAPTER,
            )
        return data

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
        self.calls.append(("range", f"{bucket}/{key}", start, length))
        return self._read(bucket, key)[start : start + length]

    @property
    def bytes_read(self) -> int:
        return sum(length for method, _, _, length in self.calls if method == "range")

"""The reconcilers' ports, implemented over the real clients (the composition root's wiring).

`KubeWriter` applies with lorapack's field manager; `S3Access` resolves which S3 endpoint and
credentials an adapter uses (its own Secret, else the pool's, else the operator's ambient
identity) and serves listing, reads and presigning through cached `S3Client`s.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from lorapack import labels
from lorapack.api.basemodelpool import BaseModelPool
from lorapack.api.conditions import CREDENTIALS_NOT_FOUND
from lorapack.api.loraadapter import ArtifactObject, LoraAdapter
from lorapack.api.meta import parse_s3_uri
from lorapack.clients import kube as k
from lorapack.clients.s3 import ObjectInfo, S3Client, S3Settings
from lorapack.errors import InvalidSpec
from lorapack.planning.artifact import MAX_ADAPTER_FILES
from lorapack.planning.s3access import S3Target, effective_target

__all__ = ["KubeWriter", "S3Access"]


class KubeWriter:
    """Writer port: server-side apply, delete and status patches."""

    def __init__(self, kube: k.KubeClient) -> None:
        self._kube = kube
        self.writes = 0

    async def apply(self, obj: Mapping[str, Any]) -> None:
        self.writes += 1
        await self._kube.apply(obj, field_manager=labels.FIELD_MANAGER)

    async def create(self, obj: Mapping[str, Any]) -> None:
        self.writes += 1
        await self._kube.create(obj, field_manager=labels.FIELD_MANAGER)

    async def get(
        self, api_version: str, kind: str, namespace: str, name: str
    ) -> Mapping[str, Any] | None:
        rt = k.resource_for({"apiVersion": api_version, "kind": kind})
        return await self._kube.get(rt, namespace, name)

    async def delete(self, api_version: str, kind: str, namespace: str, name: str) -> None:
        self.writes += 1
        rt = k.resource_for({"apiVersion": api_version, "kind": kind})
        await self._kube.delete(rt, namespace, name)

    async def patch_status(
        self, api_version: str, kind: str, namespace: str, name: str, status: Mapping[str, Any]
    ) -> None:
        self.writes += 1
        rt = k.resource_for({"apiVersion": api_version, "kind": kind})
        # lorapack is the only writer of these statuses: a merge patch of the whole block.
        await self._kube.patch(
            rt,
            namespace,
            name,
            {"status": dict(status)},
            kind="merge",
            subresource="status",
            field_manager=labels.FIELD_MANAGER,
        )


#: How long a read credentials Secret is reused: a rotated key is picked up within this time.
SECRET_TTL_SECONDS = 5.0


class S3Access:
    """ArtifactStore, Presigner and SecretReader ports over S3 and Kubernetes Secrets."""

    def __init__(self, kube: k.KubeClient, *, secret_ttl: float = SECRET_TTL_SECONDS) -> None:
        self._kube = kube
        self._clients: dict[S3Settings, S3Client] = {}
        self._secret_ttl = secret_ttl
        self._secrets: dict[tuple[str, str], tuple[float, Mapping[str, str]]] = {}
        self._reading: dict[tuple[str, str], asyncio.Future[Mapping[str, str] | None]] = {}

    async def read_secret(self, namespace: str, name: str) -> Mapping[str, str] | None:
        """The Secret's decoded data, read at most once per `secret_ttl` seconds.

        A validation reads the credentials for its listing and again for adapter_config.json,
        and adapters of one team share one Secret: without the cache, 100 adapters applied at
        once cost 200 GETs of the same object. Concurrent readers share one GET. A missing
        Secret is not cached, so creating it is noticed on the next attempt.
        """
        key = (namespace, name)
        cached = self._secrets.get(key)
        if cached is not None and time.monotonic() - cached[0] < self._secret_ttl:
            return cached[1]
        pending = self._reading.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[Mapping[str, str] | None] = (
            asyncio.get_running_loop().create_future()
        )
        self._reading[key] = future
        try:
            secret = await self._kube.get(k.SECRET, namespace, name)
            data = None
            if secret is not None:
                raw = secret.get("data") or {}
                data = {field: base64.b64decode(value).decode() for field, value in raw.items()}
                self._secrets[key] = (time.monotonic(), data)
            else:
                self._secrets.pop(key, None)
            future.set_result(data)
            return data
        except BaseException as err:
            future.set_exception(err)
            future.exception()  # retrieved: no "never retrieved" warning without waiters
            raise
        finally:
            del self._reading[key]

    async def settings_for(self, adapter: LoraAdapter, pool: BaseModelPool) -> S3Settings:
        """Endpoint, region and credentials for the adapter's files."""
        source = adapter.spec.source.s3
        target = effective_target(
            source.endpoint, source.region, source.addressing_style,
            pool.spec.s3.endpoint, pool.spec.s3.region, pool.spec.s3.addressing_style,
        )  # fmt: skip
        ref: tuple[str, str, str] | None
        if source.credentials_secret_ref is not None:
            ref = (
                adapter.metadata.namespace,
                source.credentials_secret_ref.name,
                "spec.source.s3.credentialsSecretRef",
            )
        else:
            ref = self._pool_secret(pool)
        return await self._settings(target, ref)

    async def base_model_settings(self, pool: BaseModelPool) -> S3Settings:
        """Endpoint, region and credentials for the pool's base-model files: the source's own
        Secret, else the pool's (the same the pods' fetch-model container uses)."""
        source = pool.spec.base_model.source.s3
        assert source is not None  # callers check the pool has an S3 model source
        target = effective_target(
            source.endpoint, source.region, None,
            pool.spec.s3.endpoint, pool.spec.s3.region, pool.spec.s3.addressing_style,
        )  # fmt: skip
        ref = self._pool_secret(pool)
        if source.credentials_secret_ref is not None:
            ref = (
                pool.metadata.namespace,
                source.credentials_secret_ref.name,
                "spec.baseModel.source.s3.credentialsSecretRef",
            )
        return await self._settings(target, ref)

    @staticmethod
    def _pool_secret(pool: BaseModelPool) -> tuple[str, str, str] | None:
        if pool.spec.s3.credentials_secret_ref is None:
            return None
        return (
            pool.metadata.namespace,
            pool.spec.s3.credentials_secret_ref.name,
            f"the pool {pool.metadata.namespace}/{pool.metadata.name}'s "
            "spec.s3.credentialsSecretRef",
        )

    async def _settings(self, target: S3Target, ref: tuple[str, str, str] | None) -> S3Settings:
        common: dict[str, Any] = {
            "endpoint": target.endpoint,
            "region": target.region,
            "addressing_style": target.addressing_style,
        }
        if ref is None:
            return S3Settings(**common)
        namespace, name, field = ref
        data = await self.read_secret(namespace, name)
        if data is None:
            raise InvalidSpec(
                f"Secret {namespace}/{name} named by {field} does not exist: create it with keys "
                "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
                reason=CREDENTIALS_NOT_FOUND,
            )
        try:
            return S3Settings.from_secret_data(data, **common)
        except InvalidSpec as err:
            raise InvalidSpec(
                f"Secret {namespace}/{name} named by {field}: {err.message}",
                reason=CREDENTIALS_NOT_FOUND,
            ) from err

    async def list_base_model(self, pool: BaseModelPool) -> list[str]:
        """Object keys under the pool's base-model URI."""
        source = pool.spec.base_model.source.s3
        assert source is not None
        bucket, prefix = parse_s3_uri(source.uri)
        client = self._client(await self.base_model_settings(pool))
        return [o.key for o in await client.list_prefix(bucket, prefix)]

    async def read_base_model_file(self, pool: BaseModelPool, name: str) -> bytes:
        """One file of the pool's base-model folder (e.g. config.json)."""
        source = pool.spec.base_model.source.s3
        assert source is not None
        bucket, prefix = parse_s3_uri(source.uri)
        client = self._client(await self.base_model_settings(pool))
        return await client.get_bytes(bucket, prefix + name, version_id=None)

    def _client(self, settings: S3Settings) -> S3Client:
        if settings not in self._clients:
            self._clients[settings] = S3Client(settings)
        return self._clients[settings]

    async def list_prefix(
        self, adapter: LoraAdapter, pool: BaseModelPool, bucket: str, prefix: str
    ) -> Sequence[ObjectInfo]:
        client = self._client(await self.settings_for(adapter, pool))
        # One more than an adapter may have: enough to refuse a folder of thousands.
        return await client.list_prefix(bucket, prefix, limit=MAX_ADAPTER_FILES + 1)

    async def get_bytes(
        self,
        adapter: LoraAdapter,
        pool: BaseModelPool,
        bucket: str,
        key: str,
        version_id: str | None,
    ) -> bytes:
        client = self._client(await self.settings_for(adapter, pool))
        return await client.get_bytes(bucket, key, version_id=version_id)

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
        client = self._client(await self.settings_for(adapter, pool))
        return await client.get_range(bucket, key, start, length, version_id=version_id)

    async def presign(
        self,
        adapter: LoraAdapter,
        pool: BaseModelPool,
        bucket: str,
        objects: Sequence[tuple[str, ArtifactObject]],
        ttl_seconds: int,
    ) -> tuple[list[str], datetime]:
        client = self._client(await self.settings_for(adapter, pool))
        expires = datetime.now(UTC) + timedelta(seconds=ttl_seconds)
        urls = [
            client.presign_get(bucket, key, version_id=o.version_id, expires_in=ttl_seconds)
            for key, o in objects
        ]
        return urls, expires

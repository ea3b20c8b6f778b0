"""AdapterCache against the real loopback S3 server: pool and presigned access, verification
failures, quota, concurrency and GC, as the agent drives them."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from lorapack.agent.cache import AdapterCache
from lorapack.api.podstate import DesiredAdapter, FileSpec, S3Location
from lorapack.clients.s3 import ObjectInfo, S3Client
from lorapack.errors import ArtifactRejected, CapacityExceeded, StorageUnavailable
from lorapack_testworld.faultproxy import Fault, FaultProxy
from lorapack_testworld.s3server import S3Server

pytestmark = pytest.mark.s3

MiB = 2**20
CONFIG = b'{"r": 8, "lora_alpha": 16, "target_modules": ["q_proj", "v_proj"]}'


@pytest.fixture
def client(s3_server: S3Server) -> Iterator[S3Client]:
    c = S3Client(s3_server.settings())
    yield c
    c.close()


def upload_adapter(
    s3_server: S3Server, bucket: str, prefix: str, tmp_path: Path, files: dict[str, bytes]
) -> list[ObjectInfo]:
    folder = tmp_path / "src" / prefix
    for name, blob in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(blob)
    return s3_server.upload_folder(bucket, prefix, folder)


def desired(
    objects: list[ObjectInfo],
    bucket: str,
    prefix: str,
    *,
    client: S3Client | None = None,
    sha256: dict[str, bytes] | None = None,
    name: str = "team-a/bot",
) -> DesiredAdapter:
    """What the operator would publish for these objects (presigned when `client` is given)."""
    files = []
    for o in objects:
        rel = o.key[len(prefix) :]
        blob = (sha256 or {}).get(rel)
        files.append(
            FileSpec(
                path=rel,
                size=o.size,
                etag=o.etag,
                version_id=o.version_id,
                sha256="sha256:" + hashlib.sha256(blob).hexdigest() if blob is not None else None,
                key=None if client else o.key,
                url=client.presign_get(bucket, o.key) if client else None,
            )
        )
    manifest = "|".join(f"{o.key}:{o.size}:{o.etag}:{o.version_id}" for o in objects)
    return DesiredAdapter(
        served_name=name.split("/")[-1],
        adapter=name,
        digest="sha256:" + hashlib.sha256(manifest.encode()).hexdigest(),
        files=files,
        access="presigned" if client else "pool",
        s3=None if client else S3Location(bucket=bucket, prefix=prefix),
    )


async def test_pool_access_fetches_a_multipart_adapter_and_verifies_it(
    s3_server: S3Server, s3_bucket: str, client: S3Client, tmp_path: Path
) -> None:
    weights = os.urandom(20 * MiB + 3)
    files = {
        "adapter_config.json": CONFIG,
        "adapter_model.safetensors": weights,
        "README.md": b"",
    }
    objects = upload_adapter(s3_server, s3_bucket, "team-a/bot/", tmp_path, files)
    assert any(o.etag.endswith("-3") for o in objects)  # 8 MiB parts
    adapter = desired(
        objects, s3_bucket, "team-a/bot/", sha256={"adapter_model.safetensors": weights}
    )
    cache = AdapterCache(tmp_path / "cache")

    path = await cache.ensure(adapter, s3=client, allow_pickle=False)

    assert (path / "adapter_model.safetensors").read_bytes() == weights
    assert (path / "adapter_config.json").read_bytes() == CONFIG
    assert (path / "README.md").read_bytes() == b""
    assert AdapterCache(tmp_path / "cache").is_verified(adapter.digest)  # after a restart


async def test_presigned_access_fetches_without_pool_credentials(
    s3_server: S3Server, s3_bucket: str, client: S3Client, tmp_path: Path
) -> None:
    files = {"adapter_config.json": CONFIG, "adapter_model.safetensors": os.urandom(3 * MiB)}
    objects = upload_adapter(s3_server, s3_bucket, "team-b/p/", tmp_path, files)
    adapter = desired(objects, s3_bucket, "team-b/p/", client=client)
    cache = AdapterCache(tmp_path / "cache")

    path = await cache.ensure(adapter, s3=None, allow_pickle=False)

    assert (path / "adapter_model.safetensors").read_bytes() == files["adapter_model.safetensors"]


async def test_pinned_version_is_what_lands_in_the_cache(
    s3_server: S3Server, client: S3Client, tmp_path: Path
) -> None:
    bucket = f"v-{os.urandom(4).hex()}"
    s3_server.create_bucket(bucket, versioned=True)
    config = s3_server.put_bytes(bucket, "bot/adapter_config.json", CONFIG)
    old = s3_server.put_bytes(bucket, "bot/adapter_model.safetensors", b"old weights")
    s3_server.put_bytes(bucket, "bot/adapter_model.safetensors", b"new weights!")
    adapter = desired([config, old], bucket, "bot/")
    cache = AdapterCache(tmp_path / "cache")

    path = await cache.ensure(adapter, s3=client, allow_pickle=False)

    assert (path / "adapter_model.safetensors").read_bytes() == b"old weights"


async def test_etag_mismatch_of_a_single_part_object_is_detected(
    s3_server: S3Server, s3_bucket: str, client: S3Client, tmp_path: Path
) -> None:
    files = {"adapter_config.json": CONFIG, "adapter_model.safetensors": b"weights v1"}
    objects = upload_adapter(s3_server, s3_bucket, "c/", tmp_path, files)
    adapter = desired(objects, s3_bucket, "c/")
    # Replaced after the operator listed it, with the same size: only the ETag tells, and
    # If-Match on the single GET refuses it before a byte is written.
    s3_server.put_bytes(s3_bucket, "c/adapter_model.safetensors", b"weights v2")
    cache = AdapterCache(tmp_path / "cache")

    with pytest.raises(StorageUnavailable) as caught:
        await cache.ensure(adapter, s3=client, allow_pickle=False)

    assert caught.value.reason == "ObjectChanged"
    assert "changed since it was listed" in caught.value.message
    assert cache.digests() == set()


async def test_sha256_mismatch_is_detected(
    s3_server: S3Server, s3_bucket: str, client: S3Client, tmp_path: Path
) -> None:
    files = {"adapter_config.json": CONFIG, "adapter_model.safetensors": b"real weights"}
    objects = upload_adapter(s3_server, s3_bucket, "d/", tmp_path, files)
    adapter = desired(
        objects, s3_bucket, "d/", sha256={"adapter_model.safetensors": b"other weights"}
    )
    cache = AdapterCache(tmp_path / "cache")

    with pytest.raises(ArtifactRejected, match="has sha256"):
        await cache.ensure(adapter, s3=client, allow_pickle=False)


async def test_quota_exceeded_names_the_numbers(
    s3_server: S3Server, s3_bucket: str, client: S3Client, tmp_path: Path
) -> None:
    files = {"adapter_config.json": CONFIG, "adapter_model.safetensors": os.urandom(2 * MiB)}
    objects = upload_adapter(s3_server, s3_bucket, "q/", tmp_path, files)
    cache = AdapterCache(tmp_path / "cache", quota_bytes=1 * MiB)

    with pytest.raises(CapacityExceeded) as caught:
        await cache.ensure(desired(objects, s3_bucket, "q/"), s3=client, allow_pickle=False)

    assert "2.0 MiB" in caught.value.message
    assert "1.0 MiB quota" in caught.value.message
    assert "spec.adapters.cacheSize" in caught.value.message


async def test_concurrent_ensure_downloads_each_file_once(
    s3_server: S3Server, s3_bucket: str, s3_fault_proxy: FaultProxy, tmp_path: Path
) -> None:
    files = {"adapter_config.json": CONFIG, "adapter_model.safetensors": os.urandom(1 * MiB)}
    objects = upload_adapter(s3_server, s3_bucket, "cc/", tmp_path, files)
    adapter = desired(objects, s3_bucket, "cc/")
    # Slow GETs keep the first download in flight while the others arrive.
    s3_fault_proxy.add(Fault(status=0, latency=0.3, times=None, method="GET"))
    proxied = S3Client(s3_server.settings(endpoint=s3_fault_proxy.endpoint))
    cache = AdapterCache(tmp_path / "cache")
    try:
        paths = await asyncio.gather(
            *(cache.ensure(adapter, s3=proxied, allow_pickle=False) for _ in range(4))
        )
    finally:
        proxied.close()
    assert len(set(paths)) == 1
    gets = [r for r in s3_fault_proxy.requests if r.method == "GET"]
    assert len(gets) == 2


async def test_throttled_download_recovers_and_persistent_throttling_is_retryable(
    s3_server: S3Server, s3_bucket: str, s3_fault_proxy: FaultProxy, tmp_path: Path
) -> None:
    files = {"adapter_config.json": CONFIG, "adapter_model.safetensors": b"w" * 1000}
    objects = upload_adapter(s3_server, s3_bucket, "t/", tmp_path, files)
    adapter = desired(objects, s3_bucket, "t/")
    proxied = S3Client(s3_server.settings(endpoint=s3_fault_proxy.endpoint, max_attempts=3))
    cache = AdapterCache(tmp_path / "cache")
    try:
        with (
            s3_fault_proxy.faults(Fault(status=503, code="SlowDown", times=None)),
            pytest.raises(StorageUnavailable),
        ):
            await cache.ensure(adapter, s3=proxied, allow_pickle=False)
        assert list((tmp_path / "cache").iterdir()) == []  # nothing half-written stays
        with s3_fault_proxy.faults(Fault(status=503, code="SlowDown", times=2)):
            path = await cache.ensure(adapter, s3=proxied, allow_pickle=False)
        assert (path / "adapter_model.safetensors").read_bytes() == b"w" * 1000
    finally:
        proxied.close()


async def test_gc_removes_versions_no_longer_assigned(
    s3_server: S3Server, s3_bucket: str, client: S3Client, tmp_path: Path
) -> None:
    cache = AdapterCache(tmp_path / "cache")
    digests = []
    for version in (b"v1", b"v2"):
        files = {"adapter_config.json": CONFIG, "adapter_model.safetensors": version}
        prefix = f"gc/{version.decode()}/"
        objects = upload_adapter(s3_server, s3_bucket, prefix, tmp_path, files)
        adapter = desired(objects, s3_bucket, prefix)
        await cache.ensure(adapter, s3=client, allow_pickle=False)
        digests.append(adapter.digest)

    assert cache.remove_unused(keep={digests[1]}) == [digests[0]]
    assert cache.digests() == {digests[1]}

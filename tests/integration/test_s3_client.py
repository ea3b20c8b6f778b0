"""lorapack.clients.s3 against the real loopback S3 server (SeaweedFS), with the fault proxy
for throttling and failures the server does not produce by itself."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from lorapack.clients.s3 import (
    DownloadItem,
    PresignedItem,
    S3Client,
    S3Settings,
    download_presigned,
)
from lorapack.errors import (
    AccessDenied,
    ArtifactNotFound,
    ArtifactRejected,
    StorageUnavailable,
)
from lorapack_testworld.faultproxy import Fault, FaultProxy
from lorapack_testworld.s3server import READER_BUCKET, S3Server

pytestmark = pytest.mark.s3

MiB = 2**20


@pytest.fixture
def client(s3_server: S3Server) -> Iterator[S3Client]:
    c = S3Client(s3_server.settings())
    yield c
    c.close()


def _proxied(s3_server: S3Server, proxy: FaultProxy, **kw: object) -> S3Client:
    return S3Client(s3_server.settings(endpoint=proxy.endpoint, **kw))


# -- listing and small reads --------------------------------------------------------------------


async def test_list_prefix_pages_through_every_object(
    s3_server: S3Server, s3_bucket: str, client: S3Client
) -> None:
    for i in range(5):
        s3_server.put_bytes(s3_bucket, f"team-a/bot/file-{i}.txt", b"x" * i)
    s3_server.put_bytes(s3_bucket, "team-a/bot-v2/other.txt", b"elsewhere")
    s3_server.put_bytes(s3_bucket, "team-a/bot/sub/", b"")  # a folder marker

    found = await client.list_prefix(s3_bucket, "team-a/bot/", page_size=2)

    assert [o.key for o in found] == [f"team-a/bot/file-{i}.txt" for i in range(5)]
    assert [o.size for o in found] == [0, 1, 2, 3, 4]
    assert found[1].etag == hashlib.md5(b"x").hexdigest()
    assert all(o.version_id is None for o in found)


async def test_list_prefix_with_versions_gives_the_current_version(
    s3_server: S3Server, client: S3Client
) -> None:
    bucket = f"v-{os.urandom(4).hex()}"
    s3_server.create_bucket(bucket, versioned=True)
    s3_server.put_bytes(bucket, "a/f.bin", b"one")
    newest = s3_server.put_bytes(bucket, "a/f.bin", b"two!")

    found = await client.list_prefix(bucket, "a/", with_versions=True)

    assert [(o.key, o.size, o.version_id) for o in found] == [("a/f.bin", 4, newest.version_id)]
    assert newest.version_id is not None


async def test_get_bytes_reads_small_objects_and_refuses_big_ones(
    s3_server: S3Server, s3_bucket: str, client: S3Client
) -> None:
    s3_server.put_bytes(s3_bucket, "cfg/adapter_config.json", b'{"r": 8}')
    s3_server.put_bytes(s3_bucket, "cfg/huge.json", b"0" * 2048)

    assert await client.get_bytes(s3_bucket, "cfg/adapter_config.json") == b'{"r": 8}'
    with pytest.raises(ArtifactRejected, match="2048 bytes"):
        await client.get_bytes(s3_bucket, "cfg/huge.json", max_bytes=1024)


async def test_head_reports_size_and_etag(
    s3_server: S3Server, s3_bucket: str, client: S3Client
) -> None:
    put = s3_server.put_bytes(s3_bucket, "h/x", b"hello")
    head = await client.head(s3_bucket, "h/x")
    assert (head.size, head.etag) == (5, put.etag)


# -- credentials and missing things -------------------------------------------------------------


@pytest.mark.parametrize(
    ("access_key", "secret_key", "want_code"),
    [
        pytest.param("lorapackadmin", "not-the-secret", "SignatureDoesNotMatch", id="wrong-secret"),
        pytest.param("NOSUCHKEY0000", "whatever", "InvalidAccessKeyId", id="unknown-key"),
    ],
)
async def test_wrong_credentials_are_access_denied(
    s3_server: S3Server, s3_bucket: str, access_key: str, secret_key: str, want_code: str
) -> None:
    s3_server.put_bytes(s3_bucket, "k", b"data")
    bad = S3Client(s3_server.settings(access_key_id=access_key, secret_access_key=secret_key))
    try:
        with pytest.raises(AccessDenied) as caught:
            await bad.list_prefix(s3_bucket, "")
        assert want_code in caught.value.message
        assert "credentialsSecretRef" in caught.value.message
        assert caught.value.reason == "AccessDenied"
        with pytest.raises(AccessDenied):
            await bad.get_bytes(s3_bucket, "k")
    finally:
        bad.close()


async def test_valid_key_without_permission_is_access_denied(
    s3_server: S3Server, s3_bucket: str
) -> None:
    s3_server.put_bytes(s3_bucket, "secret.txt", b"no")
    s3_server.put_bytes(READER_BUCKET, "open.txt", b"yes")
    reader = S3Client(
        s3_server.settings(
            access_key_id=s3_server.reader_access_key,
            secret_access_key=s3_server.reader_secret_key,
        )
    )
    try:
        assert await reader.get_bytes(READER_BUCKET, "open.txt") == b"yes"
        with pytest.raises(AccessDenied, match=rf"s3://{s3_bucket}/secret.txt"):
            await reader.get_bytes(s3_bucket, "secret.txt")
    finally:
        reader.close()


async def test_missing_bucket_and_key_are_artifact_not_found(
    s3_bucket: str, client: S3Client, tmp_path: Path
) -> None:
    with pytest.raises(ArtifactNotFound, match=r"no such bucket at s3://no-such-bucket-x/k"):
        await client.get_bytes("no-such-bucket-x", "k")
    with pytest.raises(ArtifactNotFound, match=r"spec\.source\.s3\.uri"):
        await client.get_bytes(s3_bucket, "missing/adapter_config.json")
    with pytest.raises(ArtifactNotFound, match=rf"s3://{s3_bucket}/missing/w"):
        await client.download([DownloadItem(s3_bucket, "missing/w", None, tmp_path / "w", 10)])
    with pytest.raises(ArtifactNotFound):
        await client.head(s3_bucket, "missing/w")


# -- downloads ----------------------------------------------------------------------------------


async def test_large_multipart_object_downloads_intact(
    s3_server: S3Server, s3_bucket: str, client: S3Client, tmp_path: Path
) -> None:
    src = tmp_path / "src" / "adapter_model.safetensors"
    src.parent.mkdir()
    data = os.urandom(72 * MiB + 12345)
    src.write_bytes(data)
    [obj] = s3_server.upload_folder(s3_bucket, "big/", src.parent)
    assert obj.etag.endswith("-10")  # uploaded in 8 MiB parts: a multipart ETag

    dest = tmp_path / "out" / "w.safetensors"
    await client.download([DownloadItem(s3_bucket, obj.key, None, dest, obj.size, obj.etag)])

    assert hashlib.sha256(dest.read_bytes()).digest() == hashlib.sha256(data).digest()


async def test_many_small_objects_download_concurrently(
    s3_server: S3Server, s3_bucket: str, client: S3Client, tmp_path: Path
) -> None:
    blobs = {f"many/{i:03d}.json": os.urandom(100 + i) for i in range(40)}
    for key, blob in blobs.items():
        s3_server.put_bytes(s3_bucket, key, blob)
    items = [
        DownloadItem(s3_bucket, key, None, tmp_path / key, len(blob)) for key, blob in blobs.items()
    ]
    await client.download(items)
    assert all((tmp_path / key).read_bytes() == blob for key, blob in blobs.items())


async def test_empty_object_downloads_as_empty_file(
    s3_server: S3Server, s3_bucket: str, client: S3Client, tmp_path: Path
) -> None:
    s3_server.put_bytes(s3_bucket, "e/README.md", b"")
    await client.download([DownloadItem(s3_bucket, "e/README.md", None, tmp_path / "r.md", 0)])
    assert (tmp_path / "r.md").read_bytes() == b""


async def test_pinned_old_version_is_downloaded(
    s3_server: S3Server, client: S3Client, tmp_path: Path
) -> None:
    bucket = f"v-{os.urandom(4).hex()}"
    s3_server.create_bucket(bucket, versioned=True)
    old = s3_server.put_bytes(bucket, "a/w.bin", b"version one")
    s3_server.put_bytes(bucket, "a/w.bin", b"version two, longer")

    dest = tmp_path / "w.bin"
    await client.download([DownloadItem(bucket, "a/w.bin", old.version_id, dest, old.size)])

    assert dest.read_bytes() == b"version one"
    assert await client.get_bytes(bucket, "a/w.bin", version_id=old.version_id) == b"version one"


async def test_object_replaced_since_listing_fails_as_object_changed(
    s3_server: S3Server, s3_bucket: str, tmp_path: Path
) -> None:
    # Ranged GETs carry If-Match with the listed ETag: a replaced object cannot be mixed in.
    small = S3Client(s3_server.settings(multipart_threshold=1 * MiB, multipart_chunksize=1 * MiB))
    try:
        listed = s3_server.put_bytes(s3_bucket, "c/w.bin", os.urandom(3 * MiB))
        s3_server.put_bytes(s3_bucket, "c/w.bin", os.urandom(3 * MiB))
        with pytest.raises(StorageUnavailable) as caught:
            await small.download(
                [DownloadItem(s3_bucket, "c/w.bin", None, tmp_path / "w", listed.size, listed.etag)]
            )
        assert caught.value.reason == "ObjectChanged"
    finally:
        small.close()


async def test_presigned_urls_download_with_ranges(
    s3_server: S3Server, s3_bucket: str, client: S3Client, tmp_path: Path
) -> None:
    data = os.urandom(3 * MiB + 7)
    s3_server.put_bytes(s3_bucket, "p/w.bin", data)
    s3_server.put_bytes(s3_bucket, "p/c.json", b"{}")
    items = [
        PresignedItem(client.presign_get(s3_bucket, "p/w.bin"), tmp_path / "w.bin", len(data)),
        PresignedItem(client.presign_get(s3_bucket, "p/c.json"), tmp_path / "c.json", 2),
    ]
    await download_presigned(items, part_size=1 * MiB, concurrency=4)
    assert (tmp_path / "w.bin").read_bytes() == data
    assert (tmp_path / "c.json").read_bytes() == b"{}"


async def test_expired_presigned_url_is_retryable(
    s3_server: S3Server, s3_bucket: str, client: S3Client, tmp_path: Path
) -> None:
    s3_server.put_bytes(s3_bucket, "p/x", b"late")
    url = client.presign_get(s3_bucket, "p/x", expires_in=1)
    await asyncio.sleep(2.1)
    with pytest.raises(StorageUnavailable) as caught:
        await download_presigned([PresignedItem(url, tmp_path / "x", 4)])
    assert caught.value.reason == "PresignedUrlExpired"
    assert "X-Amz-Signature" not in caught.value.message  # the signature is a credential


async def test_presigned_url_for_missing_object_is_not_found(
    s3_bucket: str, client: S3Client, tmp_path: Path
) -> None:
    url = client.presign_get(s3_bucket, "p/absent")
    with pytest.raises(ArtifactNotFound, match=rf"/{s3_bucket}/p/absent"):
        await download_presigned([PresignedItem(url, tmp_path / "x", 4)])


# -- throttling and failures (fault proxy) ------------------------------------------------------


async def test_slowdown_is_retried_then_succeeds(
    s3_server: S3Server, s3_bucket: str, s3_fault_proxy: FaultProxy, tmp_path: Path
) -> None:
    s3_server.put_bytes(s3_bucket, "t/w.bin", b"payload")
    slow = s3_fault_proxy.add(Fault(status=503, code="SlowDown", times=2, method="GET"))
    client = _proxied(s3_server, s3_fault_proxy, max_attempts=5)
    try:
        await client.download([DownloadItem(s3_bucket, "t/w.bin", None, tmp_path / "w", 7)])
        assert (tmp_path / "w").read_bytes() == b"payload"
        assert slow.hits == 2
        listed = await client.list_prefix(s3_bucket, "t/")
        assert [o.key for o in listed] == ["t/w.bin"]
    finally:
        client.close()


async def test_persistent_slowdown_becomes_storage_unavailable(
    s3_server: S3Server, s3_bucket: str, s3_fault_proxy: FaultProxy, tmp_path: Path
) -> None:
    s3_server.put_bytes(s3_bucket, "t/w.bin", b"payload")
    s3_fault_proxy.add(Fault(status=503, code="SlowDown", times=None))
    client = _proxied(s3_server, s3_fault_proxy, max_attempts=2)
    try:
        with pytest.raises(StorageUnavailable) as caught:
            await client.download([DownloadItem(s3_bucket, "t/w.bin", None, tmp_path / "w", 7)])
        assert "throttled" in caught.value.message
        assert "503" in caught.value.message
        assert caught.value.reason == "StorageUnavailable"
        with pytest.raises(StorageUnavailable):
            await client.list_prefix(s3_bucket, "t/")
    finally:
        client.close()
    assert len(s3_fault_proxy.requests) >= 4  # 2 attempts each


async def test_internal_errors_are_retried(
    s3_server: S3Server, s3_bucket: str, s3_fault_proxy: FaultProxy
) -> None:
    s3_server.put_bytes(s3_bucket, "t/c.json", b"{}")
    s3_fault_proxy.add(Fault(status=500, code="InternalError", times=2))
    client = _proxied(s3_server, s3_fault_proxy, max_attempts=3)
    try:
        assert await client.get_bytes(s3_bucket, "t/c.json") == b"{}"
    finally:
        client.close()


async def test_connection_cut_mid_body_is_resumed(
    s3_server: S3Server, s3_bucket: str, s3_fault_proxy: FaultProxy, tmp_path: Path
) -> None:
    data = os.urandom(2 * MiB)
    s3_server.put_bytes(s3_bucket, "t/cut.bin", data)
    cut = s3_fault_proxy.add(Fault(status=0, cut_after_bytes=300_000, times=1, method="GET"))
    client = _proxied(s3_server, s3_fault_proxy)
    try:
        dest = tmp_path / "cut.bin"
        await client.download([DownloadItem(s3_bucket, "t/cut.bin", None, dest, len(data))])
        assert dest.read_bytes() == data
        assert cut.hits == 1
    finally:
        client.close()


async def test_presigned_download_retries_throttling(
    s3_server: S3Server, s3_bucket: str, s3_fault_proxy: FaultProxy, tmp_path: Path
) -> None:
    data = os.urandom(300_000)
    s3_server.put_bytes(s3_bucket, "t/p.bin", data)
    client = _proxied(s3_server, s3_fault_proxy)
    try:
        url = client.presign_get(s3_bucket, "t/p.bin")
    finally:
        client.close()
    s3_fault_proxy.add(Fault(status=503, code="SlowDown", times=2))
    s3_fault_proxy.add(Fault(status=0, cut_after_bytes=50_000, times=1))
    await download_presigned([PresignedItem(url, tmp_path / "p.bin", len(data))], backoff_base=0.01)
    assert (tmp_path / "p.bin").read_bytes() == data
    assert [r.fault for r in s3_fault_proxy.requests] == [
        "503 SlowDown",
        "503 SlowDown",
        "cut@50000",
        "",
    ]


async def test_presigned_download_gives_up_on_persistent_503(
    s3_server: S3Server, s3_bucket: str, s3_fault_proxy: FaultProxy, tmp_path: Path
) -> None:
    s3_server.put_bytes(s3_bucket, "t/q.bin", b"q")
    client = _proxied(s3_server, s3_fault_proxy)
    try:
        url = client.presign_get(s3_bucket, "t/q.bin")
    finally:
        client.close()
    s3_fault_proxy.add(Fault(status=503, code="SlowDown", times=None))
    with pytest.raises(StorageUnavailable, match="failed 3 times"):
        await download_presigned(
            [PresignedItem(url, tmp_path / "q", 1)], max_attempts=3, backoff_base=0.01
        )


def test_settings_reach_the_server_with_path_style(s3_server: S3Server) -> None:
    settings = S3Settings.from_secret_data(
        {
            "AWS_ACCESS_KEY_ID": s3_server.access_key + "\n",
            "AWS_SECRET_ACCESS_KEY": s3_server.secret_key + "\n",
        },
        endpoint=s3_server.endpoint,
        region=s3_server.region,
        addressing_style="path",
    )
    client = S3Client(settings)
    try:
        assert client.boto3_client.list_buckets()["Buckets"]
    finally:
        client.close()

"""The pre-flight's S3 reads against the real loopback S3 server (SeaweedFS): a ranged GET
returns exactly the bytes asked for (never the object), If-Match pins the version listed, and a
bounded listing stops early."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from lorapack.clients.s3 import S3Client
from lorapack.errors import StorageUnavailable
from lorapack_testworld.s3server import S3Server

pytestmark = pytest.mark.s3


@pytest.fixture
def client(s3_server: S3Server) -> Iterator[S3Client]:
    c = S3Client(s3_server.settings())
    yield c
    c.close()


async def test_a_ranged_get_returns_only_the_range(
    s3_server: S3Server, s3_bucket: str, client: S3Client
) -> None:
    data = bytes(range(256)) * 4096  # 1 MiB
    s3_server.put_bytes(s3_bucket, "team-a/bot/adapter_model.safetensors", data)
    key = "team-a/bot/adapter_model.safetensors"
    assert await client.get_range(s3_bucket, key, 0, 8) == data[:8]
    assert await client.get_range(s3_bucket, key, 1000, 4096) == data[1000:5096]
    # Past the end: what there is, no more.
    assert await client.get_range(s3_bucket, key, len(data) - 5, 100) == data[-5:]


async def test_if_match_refuses_an_object_replaced_since_it_was_listed(
    s3_server: S3Server, s3_bucket: str, client: S3Client
) -> None:
    key = "team-a/bot/adapter_model.safetensors"
    s3_server.put_bytes(s3_bucket, key, b"first version")
    [listed] = await client.list_prefix(s3_bucket, "team-a/bot/")
    assert await client.get_range(s3_bucket, key, 0, 5, etag=listed.etag) == b"first"
    s3_server.put_bytes(s3_bucket, key, b"swapped after validation")
    with pytest.raises(StorageUnavailable) as err:
        await client.get_range(s3_bucket, key, 0, 5, etag=listed.etag)
    assert err.value.reason == "ObjectChanged"


async def test_a_bounded_listing_stops_after_the_limit(
    s3_server: S3Server, s3_bucket: str, client: S3Client
) -> None:
    for i in range(40):
        s3_server.put_bytes(s3_bucket, f"team-a/many/f{i:03}", b"")
    found = await client.list_prefix(s3_bucket, "team-a/many/", page_size=10, limit=25)
    assert len(found) == 25
    assert len(await client.list_prefix(s3_bucket, "team-a/many/")) == 40

"""Listing an adapter's prefix: every object under it, or every current version.

Blocking boto3 calls, run by lorapack.clients.s3.client.S3Client.list_prefix in a worker thread
(the caller maps failures to lorapack errors). Folder markers (keys ending in "/") are skipped.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lorapack.clients.s3.settings import ObjectInfo

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client as Boto3S3Client

__all__ = ["list_objects", "version_of"]


def list_objects(
    client: Boto3S3Client,
    bucket: str,
    prefix: str,
    with_versions: bool,
    page_size: int,
    limit: int | None,
) -> list[ObjectInfo]:
    """Every object under `prefix` (all pages, at most about `limit` entries), sorted by key;
    with `with_versions` the current version of each key instead."""
    paging: Any = {"PageSize": min(page_size, limit) if limit else page_size}
    if limit is not None:
        paging["MaxItems"] = limit
    found = _list_versions(client, bucket, prefix, paging) if with_versions else []
    if not with_versions:
        pages = client.get_paginator("list_objects_v2").paginate(
            Bucket=bucket, Prefix=prefix, PaginationConfig=paging
        )
        for page in pages:
            for o in page.get("Contents", []):
                key = o.get("Key", "")
                if key and not key.endswith("/"):
                    etag = o.get("ETag", "").strip('"')
                    found.append(ObjectInfo(key, int(o.get("Size", 0)), etag, None))
    return sorted(found, key=lambda o: o.key)


def _list_versions(
    client: Boto3S3Client, bucket: str, prefix: str, paging: Any
) -> list[ObjectInfo]:
    found: list[ObjectInfo] = []
    pages = client.get_paginator("list_object_versions").paginate(
        Bucket=bucket, Prefix=prefix, PaginationConfig=paging
    )
    for page in pages:
        for v in page.get("Versions", []):
            key = v.get("Key", "")
            # A key whose newest entry is a delete marker has no IsLatest version: skipped.
            if v.get("IsLatest") and key and not key.endswith("/"):
                etag = v.get("ETag", "").strip('"')
                version = version_of(v.get("VersionId"))
                found.append(ObjectInfo(key, int(v.get("Size", 0)), etag, version))
    return found


def version_of(value: str | None) -> str | None:
    """A version id as S3 reports it, None where there is none."""
    # Unversioned buckets report the version id "null".
    return None if value in (None, "", "null") else value

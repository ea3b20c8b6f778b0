"""Reading one object: its HEAD, a small object whole, or a byte range of a large one.

Blocking boto3 calls, run by lorapack.clients.s3.client.S3Client (head, get_bytes, get_range)
in a worker thread; the caller maps failures to lorapack errors. Every read is bounded: a small
read refuses objects above its cap, a ranged read never returns more than it asked for.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from lorapack.api import conditions
from lorapack.clients.s3.listing import version_of
from lorapack.clients.s3.settings import ObjectInfo
from lorapack.errors import ArtifactRejected

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client as Boto3S3Client

__all__ = ["head_object", "read_range", "read_small"]


def head_object(client: Boto3S3Client, bucket: str, key: str, version_id: str | None) -> ObjectInfo:
    """One object's size, ETag, version and server-side encryption."""
    args: dict[str, Any] = {"Bucket": bucket, "Key": key}
    if version_id:
        args["VersionId"] = version_id
    r = client.head_object(**args)
    return ObjectInfo(
        key=key,
        size=int(r.get("ContentLength", 0)),
        etag=r.get("ETag", "").strip('"'),
        version_id=version_of(r.get("VersionId")),
        server_side_encryption=_encryption(r),
    )


def read_small(
    client: Boto3S3Client, bucket: str, key: str, version_id: str | None, max_bytes: int
) -> bytes:
    """A small object's content; ArtifactRejected above max_bytes (refused from its
    Content-Length without reading it, or after max_bytes + 1 bytes when it has none)."""
    args: dict[str, Any] = {"Bucket": bucket, "Key": key}
    if version_id:
        args["VersionId"] = version_id
    r = client.get_object(**args)
    body = r["Body"]
    try:
        size = int(r.get("ContentLength", 0))
        if size > max_bytes:
            raise ArtifactRejected(
                f"s3://{bucket}/{key} is {size} bytes, more than the {max_bytes} bytes "
                "lorapack reads for this file; is it the right file?",
                reason=conditions.UNSUPPORTED_ADAPTER,
            )
        data = body.read(max_bytes + 1)
    finally:
        body.close()
    if len(data) > max_bytes:  # a server that sent no Content-Length
        raise ArtifactRejected(
            f"s3://{bucket}/{key} is larger than {max_bytes} bytes",
            reason=conditions.UNSUPPORTED_ADAPTER,
        )
    return data


def read_range(
    client: Boto3S3Client,
    bucket: str,
    key: str,
    start: int,
    length: int,
    version_id: str | None,
    etag: str | None,
) -> bytes:
    """Bytes [start, start + length) in one ranged GET whose body is read up to `length`
    bytes; `etag` pins the version read (If-Match)."""
    args: dict[str, Any] = {
        "Bucket": bucket,
        "Key": key,
        "Range": f"bytes={start}-{start + length - 1}",
    }
    if version_id:
        args["VersionId"] = version_id
    if etag:
        args["IfMatch"] = f'"{etag.strip(chr(34))}"'
    r = client.get_object(**args)
    body = r["Body"]
    try:
        return bytes(body.read(length))
    finally:
        body.close()


def _encryption(head: Mapping[str, Any]) -> str | None:
    if head.get("SSECustomerAlgorithm"):
        return "SSE-C"
    value = head.get("ServerSideEncryption")
    return str(value) if value else None

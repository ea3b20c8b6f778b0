"""`S3Uploader`: uploads local files to S3 with end-to-end checksums, skipping unchanged ones.

Used by `lorapack model push` to stage base-model weights (tens of GB in a handful of files).
Every object goes up with its Content-MD5 (S3 and every S3-compatible store check it) and, where
the server supports S3's additional checksums, with x-amz-checksum-sha256 too (per part for
multipart uploads, which S3 combines into a composite checksum). After the upload the object is
read back with HEAD and its size, ETag (the MD5, or the MD5 of the part MD5s) and SHA-256 are
compared with what was sent. Each object also carries its file's SHA-256 as metadata
(`x-amz-meta-sha256`), so a second push skips files that are already there unchanged (a push
cut short resumes where it stopped).

Checksum modes: "sha256" (fail if the server refuses SHA-256), "md5" (Content-MD5 only), "auto"
(SHA-256, falling back to MD5 once for the whole run when the server answers that it does not
implement it). botocore's own default checksums (CRC32 with aws-chunked trailers, which several
S3-compatible stores refuse) are off: the checksums are the ones chosen here.

Large files go up as multipart uploads, their parts sent `concurrency` at a time (memory: about
concurrency x part size). boto3 blocks, so `upload` runs its work in threads.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError, NoCredentialsError, PartialCredentialsError

from lorapack.api import conditions
from lorapack.clients.s3.errors import map_s3_error
from lorapack.clients.s3.settings import MiB, S3Settings
from lorapack.errors import (
    AccessDenied,
    ArtifactNotFound,
    InvalidSpec,
    LorapackError,
    StorageUnavailable,
)

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client as Boto3S3Client

__all__ = ["ChecksumMode", "S3Uploader", "UploadItem", "UploadResult", "part_layout"]

ChecksumMode = Literal["auto", "sha256", "md5"]
_MAX_PARTS = 10_000  # S3's limit per multipart upload
_MIN_PART = 5 * MiB  # S3's smallest part (but the last)
# Error codes with which servers say "I do not implement additional checksums".
_UNSUPPORTED = frozenset({"NotImplemented", "InvalidRequest", "InvalidArgument", "Unsupported"})


@dataclass(frozen=True)
class UploadItem:
    """One local file to upload to s3://bucket/key."""

    path: Path
    bucket: str
    key: str
    size: int


@dataclass(frozen=True)
class UploadResult:
    """What became of one file."""

    key: str
    size: int
    sha256: str
    """Hex SHA-256 of the file (also the object's x-amz-meta-sha256)."""
    checksum: Literal["SHA256", "MD5"]
    """The checksums the server verified on upload (MD5 is always among them)."""
    etag: str
    skipped: bool = False
    """Already there with the same size and SHA-256: not uploaded again."""


@dataclass
class _Digests:
    sha256: str
    md5s: list[bytes] = field(default_factory=list)
    sha256s: list[bytes] = field(default_factory=list)


def part_layout(size: int, part_size: int) -> list[tuple[int, int]]:
    """(offset, length) of each part: one part up to part_size, else parts of part_size (made
    larger when the file needs more than S3's 10,000 parts), the last one shorter."""
    if size <= part_size:
        return [(0, size)]
    chosen = max(part_size, _MIN_PART, -(-size // _MAX_PARTS))
    return [(offset, min(chosen, size - offset)) for offset in range(0, size, chosen)]


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode()


def _read(path: Path, offset: int, length: int) -> bytes:
    with path.open("rb") as f:
        f.seek(offset)
        return f.read(length)


def _digests(path: Path, layout: list[tuple[int, int]]) -> _Digests:
    whole = hashlib.sha256()
    found = _Digests("")
    with path.open("rb") as f:
        for _, length in layout:
            data = f.read(length)
            whole.update(data)
            found.md5s.append(hashlib.md5(data).digest())
            found.sha256s.append(hashlib.sha256(data).digest())
    found.sha256 = whole.hexdigest()
    return found


def _expected_etag(digests: _Digests) -> str:
    if len(digests.md5s) == 1:
        return digests.md5s[0].hex()
    return f"{hashlib.md5(b''.join(digests.md5s)).hexdigest()}-{len(digests.md5s)}"


def _expected_sha256(digests: _Digests) -> str:
    if len(digests.sha256s) == 1:
        return _b64(digests.sha256s[0])
    return f"{_b64(hashlib.sha256(b''.join(digests.sha256s)).digest())}-{len(digests.sha256s)}"


def _error(exc: BaseException, item: UploadItem) -> LorapackError:
    """Upload failures worded for the person running the upload (not a pool's spec)."""
    where = f"s3://{item.bucket}/{item.key}"
    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return AccessDenied(
            f"no S3 credentials to write {where}: set AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY (or AWS_PROFILE, or run where a cloud identity applies)",
            reason=conditions.CREDENTIALS_NOT_FOUND,
        )
    if isinstance(exc, ClientError):
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code == "NoSuchBucket":
            return ArtifactNotFound(
                f"bucket {item.bucket} does not exist: create it first (for example "
                f"`aws s3 mb s3://{item.bucket}`) or check the destination URI",
                reason=conditions.ARTIFACT_NOT_FOUND,
            )
        if code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "403"):
            return AccessDenied(
                f"S3 refused to write {where} ({code}): the credentials need s3:PutObject and "
                "s3:GetObject on the prefix (and s3:ListBucket on the bucket)",
                reason=conditions.ACCESS_DENIED,
            )
        if code == "BadDigest":
            return StorageUnavailable(
                f"{where} arrived corrupted (the server's checksum differs from the file's): "
                "run the upload again",
                reason="UploadCorrupted",
            )
    return map_s3_error(exc, item.bucket, item.key)


class S3Uploader:
    """Uploads files to one endpoint with one credential set; safe to reuse for many files."""

    def __init__(
        self,
        settings: S3Settings,
        *,
        checksum: ChecksumMode = "auto",
        part_size: int = 64 * MiB,
        concurrency: int = 4,
    ) -> None:
        if part_size < _MIN_PART:
            raise ValueError(f"part size {part_size} is below S3's minimum of 5 MiB")
        self.settings = settings
        self.checksum: ChecksumMode = checksum
        self.part_size = part_size
        self.concurrency = max(1, concurrency)
        session = boto3.session.Session(
            aws_access_key_id=settings.access_key_id,
            aws_secret_access_key=settings.secret_access_key,
            aws_session_token=settings.session_token,
            region_name=settings.region,
        )
        config = Config(
            region_name=settings.region,
            signature_version="s3v4",
            s3={"addressing_style": settings.addressing_style},
            retries={"mode": settings.retry_mode, "total_max_attempts": settings.max_attempts},
            connect_timeout=settings.connect_timeout,
            read_timeout=settings.read_timeout,
            max_pool_connections=self.concurrency + 2,
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        self._client: Boto3S3Client = session.client(
            "s3", endpoint_url=settings.endpoint, config=config
        )
        self._pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="s3-upload")

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._client.close()

    async def upload(
        self,
        items: Sequence[UploadItem],
        *,
        skip_unchanged: bool = True,
        on_done: Callable[[UploadResult], None] | None = None,
    ) -> list[UploadResult]:
        """Upload `items` one file after another (each file's parts concurrently); the first
        failure stops the run. Returns one result per item, in order."""
        results: list[UploadResult] = []
        for item in items:
            result = await asyncio.to_thread(self._one, item, skip_unchanged)
            results.append(result)
            if on_done is not None:
                on_done(result)
        return results

    # -- one file (in a worker thread) ---------------------------------------------------------

    def _one(self, item: UploadItem, skip_unchanged: bool) -> UploadResult:
        layout = part_layout(item.size, self.part_size)
        try:
            digests = _digests(item.path, layout)
            if skip_unchanged:
                found = self._unchanged(item, digests)
                if found is not None:
                    return found
            try:
                return self._send(item, layout, digests, sha256=self.checksum != "md5")
            except ClientError as exc:
                code = str(exc.response.get("Error", {}).get("Code", ""))
                if code in _UNSUPPORTED and self.checksum == "sha256":
                    raise InvalidSpec(
                        f"the S3 server refused a SHA-256 checksum for s3://{item.bucket}/"
                        f"{item.key} ({code}): it does not implement them; use --checksum auto "
                        "or md5 (Content-MD5 is checked by every S3 store)"
                    ) from exc
                if self.checksum != "auto" or code not in _UNSUPPORTED:
                    raise
                self.checksum = "md5"  # this server has no SHA-256 checksums: MD5 from now on
                return self._send(item, layout, digests, sha256=False)
        except LorapackError:
            raise
        except Exception as exc:
            raise _error(exc, item) from exc

    def _unchanged(self, item: UploadItem, digests: _Digests) -> UploadResult | None:
        try:
            head = self._client.head_object(Bucket=item.bucket, Key=item.key)
        except ClientError as exc:
            if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404:
                return None
            raise
        same = (
            int(head.get("ContentLength", -1)) == item.size
            and head.get("Metadata", {}).get("sha256") == digests.sha256
        )
        if not same:
            return None
        checksum: Literal["SHA256", "MD5"] = "SHA256" if head.get("ChecksumSHA256") else "MD5"
        etag = head.get("ETag", "").strip('"')
        return UploadResult(item.key, item.size, digests.sha256, checksum, etag, skipped=True)

    def _send(
        self, item: UploadItem, layout: list[tuple[int, int]], digests: _Digests, *, sha256: bool
    ) -> UploadResult:
        common: dict[str, Any] = {"Bucket": item.bucket, "Key": item.key}
        metadata = {"sha256": digests.sha256}
        if len(layout) == 1:
            extra: dict[str, Any] = {"ChecksumSHA256": _b64(digests.sha256s[0])} if sha256 else {}
            self._client.put_object(
                **common,
                Body=_read(item.path, 0, item.size),
                ContentMD5=_b64(digests.md5s[0]),
                Metadata=metadata,
                **extra,
            )
        else:
            self._multipart(item, layout, digests, sha256=sha256, metadata=metadata)
        return self._verify(item, digests, sha256=sha256)

    def _multipart(
        self,
        item: UploadItem,
        layout: list[tuple[int, int]],
        digests: _Digests,
        *,
        sha256: bool,
        metadata: dict[str, str],
    ) -> None:
        common: dict[str, Any] = {"Bucket": item.bucket, "Key": item.key}
        extra: dict[str, Any] = {"ChecksumAlgorithm": "SHA256"} if sha256 else {}
        upload_id = self._client.create_multipart_upload(**common, Metadata=metadata, **extra)[
            "UploadId"
        ]

        def part(number: int) -> dict[str, Any]:
            offset, length = layout[number - 1]
            checks: dict[str, Any] = (
                {"ChecksumSHA256": _b64(digests.sha256s[number - 1])} if sha256 else {}
            )
            r = self._client.upload_part(
                **common,
                UploadId=upload_id,
                PartNumber=number,
                Body=_read(item.path, offset, length),
                ContentMD5=_b64(digests.md5s[number - 1]),
                **checks,
            )
            return {"PartNumber": number, "ETag": r["ETag"], **checks}

        try:
            parts: list[Any] = list(self._pool.map(part, range(1, len(layout) + 1)))
            self._client.complete_multipart_upload(
                **common, UploadId=upload_id, MultipartUpload={"Parts": parts}
            )
        except BaseException:
            # Parts already stored cost money until the upload is aborted; the original error
            # is the one to report.
            with contextlib.suppress(Exception):
                self._client.abort_multipart_upload(**common, UploadId=upload_id)
            raise

    def _verify(self, item: UploadItem, digests: _Digests, *, sha256: bool) -> UploadResult:
        head = self._client.head_object(Bucket=item.bucket, Key=item.key, ChecksumMode="ENABLED")
        where = f"s3://{item.bucket}/{item.key}"
        size = int(head.get("ContentLength", -1))
        etag = head.get("ETag", "").strip('"')
        problems = []
        if size != item.size:
            problems.append(f"size {size} instead of {item.size}")
        # SSE-KMS and SSE-C objects have ETags that are not MD5s.
        md5_etag = head.get("ServerSideEncryption") != "aws:kms" and not head.get(
            "SSECustomerAlgorithm"
        )
        if md5_etag and etag != _expected_etag(digests):
            problems.append(f"ETag {etag} instead of {_expected_etag(digests)}")
        stored = head.get("ChecksumSHA256")
        if sha256 and stored and stored != _expected_sha256(digests):
            problems.append(f"SHA-256 {stored} instead of {_expected_sha256(digests)}")
        if problems:
            raise StorageUnavailable(
                f"{where} does not read back as uploaded ({'; '.join(problems)}): run the upload "
                "again",
                reason="UploadCorrupted",
            )
        checksum: Literal["SHA256", "MD5"] = "SHA256" if sha256 and stored else "MD5"
        return UploadResult(item.key, item.size, digests.sha256, checksum, etag)

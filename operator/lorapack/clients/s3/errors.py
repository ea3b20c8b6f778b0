"""Translation of botocore / s3transfer failures into lorapack errors a user can act on.

`map_s3_error` names the object (s3://bucket/key) and the fix: not found -> ArtifactNotFound,
refused -> AccessDenied, no credentials -> AccessDenied (CredentialsNotFound), wrong region or
endpoint -> InvalidSpec, throttling, 5xx and network failures -> StorageUnavailable, an object
changed mid-download -> StorageUnavailable (ObjectChanged); `map_disk_error` turns a full cache
volume into CapacityExceeded. Called by `client` (every S3 call) and by the agent's cache.
"""

from __future__ import annotations

import errno
from typing import Final

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionError,
    CredentialRetrievalError,
    HTTPClientError,
    IncompleteReadError,
    NoCredentialsError,
    ParamValidationError,
    PartialCredentialsError,
    ResponseStreamingError,
)
from s3transfer.exceptions import RetriesExceededError, S3DownloadFailedError

from lorapack.api import conditions
from lorapack.errors import (
    AccessDenied,
    ArtifactNotFound,
    CapacityExceeded,
    InvalidSpec,
    LorapackError,
    StorageUnavailable,
)

__all__ = ["map_disk_error", "map_s3_error"]

_NOT_FOUND: Final = frozenset({"NoSuchBucket", "NoSuchKey", "NoSuchVersion", "NotFound", "404"})
_DENIED: Final = frozenset(
    {
        "AccessDenied",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "InvalidToken",
        "TokenRefreshRequired",
        "AllAccessDisabled",
        "AccountProblem",
        "403",
    }
)
_WRONG_PLACE: Final = frozenset(
    {"PermanentRedirect", "AuthorizationHeaderMalformed", "InvalidBucketName", "301"}
)
_THROTTLED: Final = frozenset(
    {"SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded", "503", "429"}
)


def _where(bucket: str | None, key: str | None) -> str:
    if bucket is None:
        return "S3"
    return f"s3://{bucket}/{key or ''}"


def map_s3_error(exc: BaseException, bucket: str | None, key: str | None = None) -> LorapackError:
    """Translate a botocore / s3transfer exception into the lorapack error a user can act on."""
    where = _where(bucket, key)
    if isinstance(exc, LorapackError):
        return exc
    if isinstance(exc, RetriesExceededError) and exc.last_exception is not None:
        return StorageUnavailable(
            f"reading {where} kept failing ({exc.last_exception}); will retry",
            reason=conditions.STORAGE_UNAVAILABLE,
        )
    if isinstance(exc, S3DownloadFailedError):
        return StorageUnavailable(
            f"{where} changed since it was listed or while it was being downloaded (its ETag "
            "no longer matches the listing); the adapter is listed again and fetched anew",
            reason=conditions.OBJECT_CHANGED,
            retry_after=1.0,
        )
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        message = str(error.get("Message", "") or code)
        if code in _NOT_FOUND or status == 404:
            what = "bucket" if code == "NoSuchBucket" else "object"
            return ArtifactNotFound(
                f"no such {what} at {where} ({code or status}); check spec.source.s3.uri",
                reason=conditions.ARTIFACT_NOT_FOUND,
            )
        if code in _DENIED or status == 403:
            return AccessDenied(
                f"S3 refused access to {where} ({code or status}: {message}); check the "
                "credentials Secret (spec.source.s3.credentialsSecretRef) and the bucket policy",
                reason=conditions.ACCESS_DENIED,
            )
        if code in _WRONG_PLACE or status == 301:
            return InvalidSpec(
                f"S3 answered {code or status} for {where} ({message}); check the bucket name, "
                "the region and the endpoint (spec.source.s3 / the pool's s3 settings)"
            )
        if code == "PreconditionFailed" or status == 412:
            return StorageUnavailable(
                f"{where} changed since it was listed; it is listed again and fetched anew",
                reason=conditions.OBJECT_CHANGED,
                retry_after=1.0,
            )
        what = "throttled" if code in _THROTTLED or status in (429, 503) else "failed"
        return StorageUnavailable(
            f"S3 {what} requests for {where} ({code or status}: {message}) and retries did not "
            "help; will retry later",
            reason=conditions.STORAGE_UNAVAILABLE,
        )
    if isinstance(exc, NoCredentialsError | PartialCredentialsError | CredentialRetrievalError):
        return AccessDenied(
            f"no usable S3 credentials for {where} ({exc}); set "
            "spec.source.s3.credentialsSecretRef, or give the pool's ServiceAccount an identity "
            "(IRSA / EKS pod identity) that can read the bucket",
            reason=conditions.CREDENTIALS_NOT_FOUND,
        )
    if isinstance(exc, ParamValidationError):
        return InvalidSpec(f"invalid S3 request for {where}: {exc}; check spec.source.s3.uri")
    if isinstance(
        exc, ConnectionError | HTTPClientError | ResponseStreamingError | IncompleteReadError
    ):
        return StorageUnavailable(
            f"could not reach S3 for {where} ({exc}); will retry",
            reason=conditions.STORAGE_UNAVAILABLE,
        )
    if isinstance(exc, OSError):
        return map_disk_error(exc, where)
    if isinstance(exc, BotoCoreError):
        return StorageUnavailable(
            f"S3 request for {where} failed ({exc}); will retry",
            reason=conditions.STORAGE_UNAVAILABLE,
        )
    return StorageUnavailable(
        f"unexpected failure reading {where} ({type(exc).__name__}: {exc}); will retry",
        reason=conditions.STORAGE_UNAVAILABLE,
    )


def map_disk_error(exc: OSError, where: str) -> LorapackError:
    """A local write failure while saving `where`: a full volume is a capacity problem."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return CapacityExceeded(
            f"the adapter cache volume is full while writing {where} ({exc.strerror}); raise "
            "spec.adapters.cacheSize on the pool or place fewer adapters per pod"
        )
    return StorageUnavailable(
        f"writing {where} to the local disk failed ({exc}); will retry",
        reason=conditions.STORAGE_UNAVAILABLE,
    )

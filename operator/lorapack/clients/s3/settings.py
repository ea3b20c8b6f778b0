"""How to reach an S3 endpoint (`S3Settings`) and the values the S3 client deals in.

`S3Settings` validates the endpoint, addressing style, credentials and transfer tuning (every
error names the setting and the fix) and never prints secrets; `from_secret_data` reads a
credentials Secret. `ObjectInfo` is one listed object, `DownloadItem` one object to download,
`PresignedItem` one presigned URL to download. Used by the operator and the agent (through
`lorapack.clients.s3`), by `client` and `presigned`, and by the loopback S3 server for tests.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Final, Literal

from lorapack.errors import InvalidSpec

__all__ = ["DownloadItem", "MiB", "ObjectInfo", "PresignedItem", "S3Settings"]

MiB: Final = 2**20
_SECRET_KEYS: Final = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")


@dataclass(frozen=True)
class S3Settings:
    """How to reach one S3 (or S3-compatible) endpoint. All credentials None means boto3's
    default chain: environment, IRSA / EKS pod identity web-identity tokens, instance profile."""

    endpoint: str | None = None
    """Endpoint URL for MinIO/Ceph/SeaweedFS and friends; None means AWS."""
    region: str | None = None
    addressing_style: Literal["auto", "path", "virtual"] = "auto"
    """"path" for most S3-compatible stores (bucket in the path, not the host name)."""
    access_key_id: str | None = None
    secret_access_key: str | None = None
    session_token: str | None = None
    max_attempts: int = 5
    """Attempts per request, first one included (botocore retry config)."""
    max_concurrency: int = 8
    """Concurrent GETs of one download() call, ranged parts included."""
    multipart_threshold: int = 8 * MiB
    """Objects at least this large are fetched as concurrent ranged GETs."""
    multipart_chunksize: int = 8 * MiB
    retry_mode: Literal["standard", "adaptive"] = "standard"
    """botocore retry mode; "adaptive" adds client-side rate limiting after throttling."""
    connect_timeout: float = 10.0
    read_timeout: float = 60.0

    def __post_init__(self) -> None:
        if self.endpoint is not None and not self.endpoint.startswith(("http://", "https://")):
            raise InvalidSpec(
                f"S3 endpoint {self.endpoint!r} must start with http:// or https:// "
                "(for example https://minio.storage.svc:9000)"
            )
        if self.addressing_style not in ("auto", "path", "virtual"):
            raise InvalidSpec(
                f"S3 addressingStyle {self.addressing_style!r} must be auto, path or virtual"
            )
        if (self.access_key_id is None) != (self.secret_access_key is None):
            raise InvalidSpec(
                "S3 credentials need both an access key id and a secret access key; "
                "set both, or neither to use the pod's identity (IRSA / pod identity)"
            )
        if self.session_token is not None and self.access_key_id is None:
            raise InvalidSpec("an S3 session token needs an access key id and secret key too")
        for name in ("max_attempts", "max_concurrency"):
            if getattr(self, name) < 1:
                raise InvalidSpec(f"S3 setting {name} must be >= 1, got {getattr(self, name)}")
        for name in ("multipart_threshold", "multipart_chunksize"):
            if getattr(self, name) < 64 * 1024:
                raise InvalidSpec(
                    f"S3 setting {name} must be >= 65536 bytes, got {getattr(self, name)}"
                )

    @classmethod
    def from_secret_data(cls, data: Mapping[str, str], **kw: Any) -> S3Settings:
        """Settings from a credentials Secret's (already base64-decoded) data.

        AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY are required, AWS_SESSION_TOKEN optional.
        Values are stripped: a Secret made with `echo key | base64` carries a newline that
        would otherwise surface much later as SignatureDoesNotMatch.
        """
        values = {k: (data.get(k) or "").strip() for k in _SECRET_KEYS}
        for key in _SECRET_KEYS[:2]:
            if not values[key]:
                present = ", ".join(sorted(data)) or "none"
                raise InvalidSpec(
                    f"the credentials Secret (spec.source.s3.credentialsSecretRef) has no "
                    f"non-empty key {key} (keys present: {present}); add {key}, or remove "
                    "credentialsSecretRef to use the pool's identity"
                )
        return cls(
            access_key_id=values["AWS_ACCESS_KEY_ID"],
            secret_access_key=values["AWS_SECRET_ACCESS_KEY"],
            session_token=values["AWS_SESSION_TOKEN"] or None,
            **kw,
        )

    def __repr__(self) -> str:
        # Never print secrets (settings end up in logs and exception reports).
        shown = replace(
            self,
            secret_access_key="***" if self.secret_access_key else None,
            session_token="***" if self.session_token else None,
        )
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(shown).items())
        return f"S3Settings({fields})"


@dataclass(frozen=True)
class ObjectInfo:
    """One object from a listing."""

    key: str
    size: int
    etag: str
    """Quotes stripped. Single-part uploads: the MD5 hex of the content (unless SSE-KMS/SSE-C);
    multipart uploads: "<md5 of part md5s>-<parts>"."""
    version_id: str | None
    server_side_encryption: str | None = None
    """Only from head(): "AES256", "aws:kms", ... (SSE-KMS ETags are not content MD5s)."""


@dataclass(frozen=True)
class DownloadItem:
    """One object to download to `dest` (its folder is created)."""

    bucket: str
    key: str
    version_id: str | None
    dest: Path
    size: int
    etag: str | None = None
    """The listing's ETag: saves a HEAD per object and makes every GET (ranged or whole)
    If-Match it, so an object replaced after validation or mid-download fails (ObjectChanged)
    instead of being written or mixing two versions."""


@dataclass(frozen=True)
class PresignedItem:
    """One presigned GET URL to download to `dest`."""

    url: str
    dest: Path
    size: int
    etag: str = ""
    """The listing's ETag: every GET sends If-Match with it, so an object replaced after
    validation fails (ObjectChanged) instead of being written (whatever its size)."""

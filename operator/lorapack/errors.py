"""The domain error vocabulary, classified once at the handler boundary.

    LorapackError(reason, message)           any failure lorapack explains to a user
    ├── RetryableError(retry_after)           transient: back off and try again
    │   ├── EngineUnavailable                 vLLM not healthy, timed out or 5xx
    │   ├── StorageUnavailable                S3 throttled, 5xx or unreachable
    │   └── ApiConflict                       a Kubernetes write lost a resourceVersion race
    └── PermanentError                        the user must change something
        ├── InvalidSpec                       a field is wrong (names the field and the fix)
        ├── ArtifactNotFound                  no object at the S3 URI / missing adapter_config.json
        ├── ArtifactRejected                  adapter files not servable (rank, DoRA, pickle...)
        ├── AccessDenied                      credentials refused by S3
        └── CapacityExceeded                  a disk quota or size limit would be exceeded

Each error carries a PascalCase `reason` (used verbatim as a condition reason and Event reason)
and a human `message` saying what to change. Handlers map RetryableError to
kopf.TemporaryError(delay=retry_after) and PermanentError to a Stalled condition.
"""

from __future__ import annotations

__all__ = [
    "AccessDenied",
    "ApiConflict",
    "ArtifactNotFound",
    "ArtifactRejected",
    "CapacityExceeded",
    "EngineUnavailable",
    "InvalidSpec",
    "LorapackError",
    "PermanentError",
    "RetryableError",
    "StorageUnavailable",
]


class LorapackError(Exception):
    """Base of every error lorapack reports to users."""

    default_reason = "Error"

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason or self.default_reason


class RetryableError(LorapackError):
    """A transient failure: the same action may succeed later."""

    default_reason = "Retrying"

    def __init__(
        self, message: str, *, reason: str | None = None, retry_after: float = 5.0
    ) -> None:
        super().__init__(message, reason=reason)
        self.retry_after = retry_after


class EngineUnavailable(RetryableError):
    """The vLLM engine did not answer, answered 5xx while unhealthy, or timed out."""

    default_reason = "EngineUnavailable"


class StorageUnavailable(RetryableError):
    """S3 throttled the request, failed with 5xx, or could not be reached."""

    default_reason = "StorageUnavailable"


class ApiConflict(RetryableError):
    """A Kubernetes write was based on a stale resourceVersion."""

    default_reason = "Conflict"


class PermanentError(LorapackError):
    """Retrying without a change by the user cannot help."""

    default_reason = "Invalid"


class InvalidSpec(PermanentError):
    """A spec field is wrong; the message names the field and the fix."""

    default_reason = "InvalidSpec"


class ArtifactNotFound(PermanentError):
    """The S3 URI holds no adapter (no objects, or no adapter_config.json)."""

    default_reason = "ArtifactNotFound"


class ArtifactRejected(PermanentError):
    """The adapter's files cannot be served by the pool's engine."""

    default_reason = "ArtifactRejected"


class AccessDenied(PermanentError):
    """S3 refused the credentials (wrong keys, or no permission on the bucket)."""

    default_reason = "AccessDenied"


class CapacityExceeded(PermanentError):
    """A size limit or the cache's disk quota would be exceeded."""

    default_reason = "CapacityExceeded"

"""Condition types and reasons, as constants next to the models.

Both kinds carry the three kstatus conditions, so `kubectl wait --for=condition=Ready`, Flux's
health checks and Argo CD read them unchanged:

* `Ready`: True when the object does what it was asked (an adapter is served by at least
  `replicas.min` pods; a pool has its desired pods ready).
* `Reconciling`: True while lorapack is still converging (downloading, loading, scaling).
* `Stalled`: True when progress needs a change from a person; the reason and message say which.

Reasons are PascalCase and stable: alerts and runbooks may match on them.
"""

from typing import Final

READY: Final = "Ready"
RECONCILING: Final = "Reconciling"
STALLED: Final = "Stalled"

# Reasons shared by both kinds.
AS_EXPECTED: Final = "AsExpected"
PROGRESSING: Final = "Progressing"
INVALID_SPEC: Final = "InvalidSpec"
DELETING: Final = "Deleting"
INVALID_NAME: Final = "InvalidName"
WRITE_REFUSED: Final = "WriteRefused"
"""The cluster refused a write lorapack needed (the message quotes the API server)."""
SERVICE_IPS_EXHAUSTED: Final = "ServiceIPsExhausted"
OWNED_OBJECT_CONFLICT: Final = "OwnedObjectConflict"
S3_LOCATION_NOT_ALLOWED: Final = "S3LocationNotAllowed"

# LoraAdapter reasons.
LOADED: Final = "Loaded"
PARTIALLY_LOADED: Final = "PartiallyLoaded"
PENDING_PLACEMENT: Final = "PendingPlacement"
DOWNLOADING: Final = "Downloading"
LOADING: Final = "Loading"
ROLLING_OUT: Final = "RollingOut"
NO_POOL: Final = "NoPoolForBaseModel"
NAMESPACE_NOT_ALLOWED: Final = "NamespaceNotAllowed"
POOL_NOT_FOUND: Final = "PoolNotFound"
RANK_TOO_LARGE: Final = "RankTooLarge"
BASE_MODEL_MISMATCH: Final = "BaseModelMismatch"
UNSUPPORTED_ADAPTER: Final = "UnsupportedAdapter"
PICKLE_NOT_ALLOWED: Final = "PickleNotAllowed"
NO_WEIGHTS: Final = "NoWeightFiles"
ADAPTER_TOO_LARGE: Final = "AdapterTooLarge"
DIGEST_MISMATCH: Final = "DigestMismatch"
RANK_MISMATCH: Final = "DeclaredRankMismatch"
ARTIFACT_NOT_FOUND: Final = "ArtifactNotFound"
ACCESS_DENIED: Final = "AccessDenied"
CREDENTIALS_NOT_FOUND: Final = "CredentialsNotFound"
STORAGE_UNAVAILABLE: Final = "StorageUnavailable"
SERVED_NAME_CONFLICT: Final = "ServedNameConflict"
POOL_AT_MAX_REPLICAS: Final = "PoolAtMaxReplicas"
LOAD_FAILED: Final = "LoadFailed"
UNLOAD_TIMEOUT: Final = "UnloadTimedOut"
CORRUPT_WEIGHTS: Final = "CorruptWeights"
"""adapter_model.safetensors is not a well-formed safetensors file (header length, JSON,
dtypes, offsets) or lacks a tensor PEFT writes (lora_B next to lora_A)."""
WEIGHTS_DO_NOT_FIT: Final = "WeightsDoNotFitBaseModel"
"""The tensors' shapes, layers or modules do not fit the pool's base model (its config.json)."""
TOO_MANY_FILES: Final = "TooManyFiles"
"""More objects under the adapter's prefix than lorapack lists and downloads for one adapter."""
UNSAFE_PATH: Final = "UnsafeFilePath"
"""An object name that cannot be a file in the pods' cache ("..", absolute, backslash...)."""
OBJECT_CHANGED: Final = "ObjectChanged"
"""An object was replaced between its listing and its download (its ETag no longer matches):
retried at once with a fresh listing (a StorageUnavailable kind of wait)."""

# BaseModelPool reasons.
PODS_STARTING: Final = "PodsStarting"
SCALING: Final = "Scaling"
UNSCHEDULABLE: Final = "Unschedulable"
ADAPTERS_ATTACHED: Final = "AdaptersAttached"
BASE_MODEL_NOT_FOUND: Final = "BaseModelNotFound"
"""Nothing under spec.baseModel.source.s3.uri (wrong URI, or the model was never staged)."""
BASE_MODEL_INCOMPLETE: Final = "BaseModelIncomplete"
"""The base-model folder lacks a file vLLM needs (config.json, a tokenizer, safetensors)."""
INVALID_BASE_CONFIG: Final = "InvalidBaseModelConfig"
"""The base model's config.json cannot be read as a Hugging Face transformer config."""
MODEL_DOES_NOT_FIT: Final = "ModelDoesNotFit"
"""Weights + LoRA slot buffers + the smallest KV cache exceed what vLLM may use of the pool's
GPUs (the sizing model, `lorapack size`)."""

# States of one adapter on one pod (LoraAdapter.status.placements[].state).
PLACEMENT_STATES: Final = ("Pending", "Downloading", "Loading", "Loaded", "Unloading", "Failed")

"""Parts of a pool's pod template that come from the platform fields of its spec.

* `engine_resources`: the vllm container's CPU/memory (spec.engine.resources, else
  DEFAULT_ENGINE_RESOURCES) plus the GPUs of spec.gpu;
* `fetch_model_env`: the S3 location and credentials of the `fetch-model` init container,
  spec.baseModel.source.s3 first and the pool's spec.s3 for what it leaves unset (so a pool
  whose keys are in spec.s3.credentialsSecretRef fetches its weights with them);
* `apply_model_volume`: where the downloaded weights live (spec.baseModel.volume): an emptyDir
  (with sizeLimit), a generic ephemeral volume, a per-pod PersistentVolumeClaim
  (volumeClaimTemplates) or a node folder (hostPath); on the two kinds that outlive a pod the
  weights are fetched once per base-model URI, into a folder of their own that MODEL_DIR links
  to, so a restarted or moved pod starts without downloading them again;
* `agent_env`: settings the operator hands its agents (LORAPACK_DRAIN_TIMEOUT_SECONDS).

Called by `manifests.pool.statefulset`; pure.
"""

from __future__ import annotations

import hashlib
from typing import Any

from lorapack.api.basemodelpool import (
    DEFAULT_ENGINE_RESOURCES,
    BaseModelPool,
    BaseModelPoolSpec,
    ModelVolume,
)

__all__ = [
    "COMPLETE_MARKER",
    "MODEL_DIR",
    "MODEL_VOLUME",
    "agent_env",
    "apply_model_volume",
    "aws_credentials_env",
    "engine_resources",
    "fetch_model_env",
    "model_folder_key",
    "with_annotations",
]

Obj = dict[str, Any]

MODEL_VOLUME = "model"
"""Name of the pod volume (or claim template) holding the base model."""
MODEL_ROOT = "/models"
"""Where the model volume is mounted."""
MODEL_DIR = f"{MODEL_ROOT}/base"
"""The folder vLLM serves (`vllm serve /models/base`)."""
FETCH_CONTAINER = "fetch-model"
COMPLETE_MARKER = ".lorapack-complete"
"""Written into a kept volume's model folder once the whole model is there."""
_KEPT = ("PersistentVolumeClaim", "HostPath")


def engine_resources(spec: BaseModelPoolSpec) -> Obj:
    """The vllm container's resources: CPU/memory from spec.engine.resources (or the
    defaults), GPUs from spec.gpu in both requests and limits (extended resources must be
    equal in both)."""
    gpus = {spec.gpu.resource_name: str(spec.gpu.count)}
    chosen = spec.engine.resources
    requests = dict(DEFAULT_ENGINE_RESOURCES["requests"]) if chosen is None else chosen.requests
    limits = {} if chosen is None else chosen.limits
    return {"limits": {**limits, **gpus}, "requests": {**requests, **gpus}}


def aws_credentials_env(secret: str | None) -> list[Obj]:
    """Environment variables taking the S3 keys from the Secret `secret` (None: none, so boto3
    falls back to the pod's cloud identity)."""
    if secret is None:
        return []
    return [
        {
            "name": key,
            "valueFrom": {"secretKeyRef": {"name": secret, "key": key, "optional": optional}},
        }
        for key, optional in (
            ("AWS_ACCESS_KEY_ID", False),
            ("AWS_SECRET_ACCESS_KEY", False),
            ("AWS_SESSION_TOKEN", True),
        )
    ]


def fetch_model_env(spec: BaseModelPoolSpec, bucket: str, prefix: str) -> list[Obj]:
    """Environment of the fetch-model init container: the model's S3 location, endpoint,
    region, addressing style and keys, each from source.s3 or else from the pool's spec.s3
    (no keys anywhere: the pod's cloud identity, through boto3's default chain)."""
    source = spec.base_model.source.s3
    assert source is not None  # only S3 sources are fetched
    env: list[Obj] = [
        {"name": "LORAPACK_MODEL_BUCKET", "value": bucket},
        {"name": "LORAPACK_MODEL_PREFIX", "value": prefix},
    ]
    endpoint = source.endpoint or spec.s3.endpoint
    region = source.region or spec.s3.region
    if endpoint:
        env.append({"name": "LORAPACK_S3_ENDPOINT", "value": endpoint})
    if region:
        env.append({"name": "AWS_REGION", "value": region})
    if spec.s3.addressing_style != "auto":
        env.append({"name": "LORAPACK_S3_ADDRESSING_STYLE", "value": spec.s3.addressing_style})
    secret = source.credentials_secret_ref or spec.s3.credentials_secret_ref
    return env + aws_credentials_env(secret.name if secret is not None else None)


def model_folder_key(uri: str) -> str:
    """The folder of a kept model volume that holds the weights of `uri`."""
    return "model-" + hashlib.sha256(uri.encode()).hexdigest()[:16]


def _kept_fetch_script(key: str, *, own_volume: bool) -> str:
    """The fetch-model init container's shell script for a kept volume (one that outlives the
    pod): fetch `key`'s folder once (a marker says it is complete), point MODEL_DIR at it.

    Each URI gets its own folder, so a pool that changes its URI never serves a mix of two
    models' files; a half-finished download (pod killed) is never marked complete. On a
    per-pod claim the other models' folders are removed; a node folder is shared by the
    node's pool pods, so nothing there is removed (docs/platform.md says how to clean it).
    """
    folder = f"{MODEL_ROOT}/{key}"
    lines = [
        "set -eu",
        f'if [ ! -f "{folder}/{COMPLETE_MARKER}" ]; then',
        f'  partial="{folder}.partial.$(hostname)"',
        '  rm -rf "$partial"',
        '  lorapack agent --fetch-model "$partial"',
        f'  touch "$partial/{COMPLETE_MARKER}"',
        # Another pod on the node may have finished first: then keep its copy.
        f'  mv -T "$partial" "{folder}" 2>/dev/null || rm -rf "$partial"',
        "fi",
    ]
    if own_volume:
        lines.append(
            f"find {MODEL_ROOT} -mindepth 1 -maxdepth 1 -name 'model-*' ! -name '{key}' "
            "-exec rm -rf {} +"
        )
    lines.append(f"ln -sfn {key} {MODEL_DIR}")
    return "\n".join(lines)


def _claim_spec(size: str, storage_class: str | None) -> Obj:
    claim: Obj = {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": size}}}
    if storage_class is not None:
        claim["storageClassName"] = storage_class
    return claim


def _volume_entry(volume: ModelVolume, labels: dict[str, str]) -> Obj | None:
    """The pod volume for `volume` (None for PersistentVolumeClaim: a claim template)."""
    if volume.type == "EmptyDir":
        return {"name": MODEL_VOLUME, "emptyDir": {"sizeLimit": volume.size} if volume.size else {}}
    if volume.type == "HostPath":
        # "Directory", not "DirectoryOrCreate": kubelet would create it owned by root, where
        # the init container (uid 65532) cannot write; the pod then says the folder is missing.
        return {"name": MODEL_VOLUME, "hostPath": {"path": volume.host_path, "type": "Directory"}}
    assert volume.size is not None  # the model validator requires it for claims
    claim = {
        "metadata": {"labels": labels},
        "spec": _claim_spec(volume.size, volume.storage_class_name),
    }
    if volume.type == "Ephemeral":
        return {"name": MODEL_VOLUME, "ephemeral": {"volumeClaimTemplate": claim}}
    return None


def apply_model_volume(pool: BaseModelPool, sts: Obj) -> Obj:
    """Give the StatefulSet `sts` the base-model volume spec.baseModel.volume asks for (in
    place; returns it). Without a volume, or with a PVC source, `sts` is left as it is."""
    volume = pool.spec.base_model.volume
    source = pool.spec.base_model.source.s3
    if volume is None or source is None:
        return sts
    pod = sts["spec"]["template"]["spec"]
    labels = dict(sts["metadata"]["labels"])
    entry = _volume_entry(volume, labels)
    pod["volumes"] = [v for v in pod["volumes"] if v["name"] != MODEL_VOLUME]
    if entry is not None:
        pod["volumes"].insert(0, entry)
    if volume.type == "PersistentVolumeClaim":
        assert volume.size is not None
        sts["spec"]["volumeClaimTemplates"] = [
            {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": {"name": MODEL_VOLUME, "labels": labels},
                "spec": _claim_spec(volume.size, volume.storage_class_name),
            }
        ]
        # Kept while the pool lives (a pod scaled in and out again finds its weights), deleted
        # with it (the StatefulSet goes with the pool by garbage collection).
        sts["spec"]["persistentVolumeClaimRetentionPolicy"] = {
            "whenDeleted": "Delete",
            "whenScaled": "Retain",
        }
    if volume.type in _KEPT:
        script = _kept_fetch_script(
            model_folder_key(source.uri), own_volume=volume.type == "PersistentVolumeClaim"
        )
        for init in pod.get("initContainers", []):
            if init["name"] == FETCH_CONTAINER:
                init["command"] = ["/bin/sh", "-c", script]
    return sts


def agent_env(drain_timeout_seconds: float | None) -> list[Obj]:
    """Operator settings the agents need: how long they drain an adapter before unloading it
    (the operator's LORAPACK_DRAIN_TIMEOUT_SECONDS, chart value config.drainTimeoutSeconds)."""
    if drain_timeout_seconds is None:
        return []
    return [{"name": "LORAPACK_DRAIN_TIMEOUT_SECONDS", "value": f"{drain_timeout_seconds:g}"}]


def with_annotations(meta: Obj, annotations: dict[str, str]) -> Obj:
    """`meta` with `annotations` added (none: unchanged, no empty map)."""
    if annotations:
        meta = {**meta, "annotations": {**meta.get("annotations", {}), **annotations}}
    return meta

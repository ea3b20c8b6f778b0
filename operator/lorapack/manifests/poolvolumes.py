"""The volumes of a pool's pods: the base model, the adapter cache and the engine's scratch.

Called by `manifests.pool.statefulset`. The base model comes from a PVC (mounted straight at
MODEL_DIR) or from S3 (an emptyDir the `fetch-model` init container fills before vLLM starts;
`podspec.apply_model_volume` may swap it for a volume that outlives the pod). The adapter cache
is an emptyDir whose sizeLimit is spec.adapters.cacheSize, shared by the agent (read-write) and
the engine (read-only). Pure.
"""

from __future__ import annotations

from typing import Any

from lorapack.api.basemodelpool import BaseModelPool
from lorapack.api.meta import parse_quantity, parse_s3_uri
from lorapack.manifests import network, podspec
from lorapack.manifests.poolcontainers import MODEL_DIR, restricted_security_context

__all__ = ["engine_model_mount", "model_volume", "pod_volumes"]

Obj = dict[str, Any]


def engine_model_mount(pool: BaseModelPool) -> Obj:
    """Where the vllm container sees the model volume. A PVC source is the model itself
    (pvc.subPath inside it), mounted straight at MODEL_DIR, the folder vLLM serves; S3 sources
    fill the volume's `base` folder (or a link to a kept folder) and mount it above."""
    pvc = pool.spec.base_model.source.pvc
    if pvc is None:
        return {"name": "model", "mountPath": "/models", "readOnly": True}
    mount: Obj = {"name": "model", "mountPath": MODEL_DIR, "readOnly": True}
    if pvc.sub_path:
        mount["subPath"] = pvc.sub_path
    return mount


def model_volume(pool: BaseModelPool) -> tuple[Obj, list[Obj]]:
    """The base-model volume, and the init containers that fill it."""
    source = pool.spec.base_model.source
    if source.pvc is not None:
        return {
            "name": "model",
            "persistentVolumeClaim": {"claimName": source.pvc.claim_name, "readOnly": True},
        }, []
    assert source.s3 is not None  # the model validator guarantees exactly one source
    bucket, prefix = parse_s3_uri(source.s3.uri)
    # Location and keys from source.s3, else from the pool's spec.s3.
    env = podspec.fetch_model_env(pool.spec, bucket, prefix)
    return {"name": "model", "emptyDir": {}}, [
        {
            "name": "fetch-model",
            "image": "",  # filled by statefulset() with the agent image
            "command": ["lorapack", "agent", "--fetch-model", MODEL_DIR],
            "env": env,
            "volumeMounts": [{"name": "model", "mountPath": "/models"}],
            "securityContext": restricted_security_context(),
        }
    ]


def pod_volumes(pool: BaseModelPool, model: Obj) -> list[Obj]:
    """Every volume of the pod template, the base-model volume `model` first."""
    cache_bytes = parse_quantity(pool.spec.adapters.cache_size)
    return [
        model,
        {"name": "adapter-cache", "emptyDir": {"sizeLimit": str(cache_bytes)}},
        {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": "8Gi"}},
        {"name": "engine-tmp", "emptyDir": {"sizeLimit": "4Gi"}},
        network.service_account_volume(),
    ]

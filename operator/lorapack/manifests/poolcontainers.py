"""The containers of a pool's pods: the vLLM engine and the lorapack agent.

Called by `manifests.pool.statefulset`, which puts them in the pod template next to the
volumes of `manifests.poolvolumes`. Every container runs under Pod Security `restricted`
(`restricted_security_context`): non-root as RUN_AS, no privilege escalation, a read-only
root filesystem, no capabilities. Pure.
"""

from __future__ import annotations

from typing import Any

from lorapack import labels
from lorapack.api.basemodelpool import BaseModelPool
from lorapack.manifests import network, podspec

__all__ = [
    "CACHE_DIR",
    "ENGINE_TMP",
    "MODEL_DIR",
    "RUN_AS",
    "agent_container",
    "engine_args",
    "engine_container",
    "pod_security_context",
    "restricted_security_context",
]

Obj = dict[str, Any]

MODEL_DIR = "/models/base"
CACHE_DIR = "/var/cache/lorapack"
ENGINE_TMP = "/tmp"
"""The engine's writable folder (an emptyDir) and its HOME: vLLM, Hugging Face, Triton and
torch write caches under HOME and /tmp, and the root filesystem is read-only."""
RUN_AS = 65532
"""uid and gid of every container (the lorapack image's user)."""


def engine_args(pool: BaseModelPool) -> list[str]:
    """`vllm serve` arguments (vllm-lora-contract.md section 12's launch contract)."""
    spec = pool.spec
    engine = spec.engine
    args = [
        "serve",
        MODEL_DIR,
        "--served-model-name",
        spec.base_model.name,
        "--host",
        "0.0.0.0",
        "--port",
        str(labels.ENGINE_PORT),
        "--enable-lora",
        "--max-loras",
        str(engine.max_loras),
        "--max-lora-rank",
        str(engine.max_lora_rank),
        "--max-cpu-loras",
        str(engine.cpu_loras),
        "--dtype",
        engine.dtype,
        "--gpu-memory-utilization",
        engine.gpu_memory_utilization,
        "--tensor-parallel-size",
        str(spec.gpu.count),
        # Runtime LoRA updating refuses more than one API server (contract section 3.1).
        "--api-server-count",
        "1",
    ]
    if engine.max_model_len is not None:
        args += ["--max-model-len", str(engine.max_model_len)]
    return args + list(engine.extra_args)


def engine_container(pool: BaseModelPool, engine_key_secret: str, model_mount: Obj) -> Obj:
    """The vllm container: the engine, serving the base model (mounted by `model_mount`) and
    the adapters the agent loads from the shared cache (read-only here)."""
    spec = pool.spec
    return {
        "name": "vllm",
        "image": spec.engine.image,
        "command": ["vllm"],
        "args": engine_args(pool),
        "env": [
            {"name": "VLLM_ALLOW_RUNTIME_LORA_UPDATING", "value": "true"},
            {"name": "HF_HUB_OFFLINE", "value": "1"},
            {"name": "HOME", "value": ENGINE_TMP},
            # In the env, not as --api-key: arguments are visible to every reader of the pod.
            network.engine_key_env(engine_key_secret),
        ],
        "ports": [{"name": "http", "containerPort": labels.ENGINE_PORT}],
        "resources": podspec.engine_resources(spec),
        "volumeMounts": [
            model_mount,
            {"name": "adapter-cache", "mountPath": CACHE_DIR, "readOnly": True},
            {"name": "shm", "mountPath": "/dev/shm"},
            {"name": "engine-tmp", "mountPath": ENGINE_TMP},
        ],
        # The engine runs restricted too (it was root): Pod Security `restricted` admits the pod.
        "securityContext": restricted_security_context(),
        # vLLM loads the weights before /health answers: a startup probe with a long budget,
        # then readiness. Liveness stays off: a busy engine must not be killed.
        "startupProbe": {
            "httpGet": {"path": "/health", "port": "http"},
            "periodSeconds": 10,
            "failureThreshold": 180,
        },
        "readinessProbe": {"httpGet": {"path": "/health", "port": "http"}, "periodSeconds": 5},
    }


def agent_container(
    pool: BaseModelPool,
    agent_image: str,
    engine_key_secret: str,
    drain_timeout_seconds: float | None,
) -> Obj:
    """The lorapack-agent container: syncs the adapter cache, loads adapters into the engine
    and reports on its Pod; the only container with an API token."""
    spec = pool.spec
    return {
        "name": "lorapack-agent",
        "image": agent_image,
        "command": ["lorapack", "agent"],
        "env": [
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {
                "name": "POD_NAMESPACE",
                "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}},
            },
            {"name": "LORAPACK_POOL_NAME", "value": pool.metadata.name},
            {"name": "LORAPACK_ENGINE_URL", "value": f"http://127.0.0.1:{labels.ENGINE_PORT}"},
            {"name": "LORAPACK_CACHE_DIR", "value": CACHE_DIR},
            network.engine_key_env(engine_key_secret),
            *([{"name": "AWS_REGION", "value": spec.s3.region}] if spec.s3.region else []),
            *podspec.aws_credentials_env(
                spec.s3.credentials_secret_ref.name if spec.s3.credentials_secret_ref else None
            ),
            *podspec.agent_env(drain_timeout_seconds),
        ],
        "resources": {
            "requests": {"cpu": "50m", "memory": "128Mi"},
            "limits": {"memory": "512Mi"},
        },
        "volumeMounts": [
            {"name": "adapter-cache", "mountPath": CACHE_DIR},
            # Only the agent talks to the API server: the token is mounted here alone.
            network.service_account_mount(),
        ],
        "securityContext": restricted_security_context(),
    }


def restricted_security_context() -> Obj:
    """Pod Security `restricted` for one container. runAsGroup too: the CRI sets only the uid,
    so without it the processes run with gid 0 (found on a real node)."""
    return {
        "runAsNonRoot": True,
        "runAsUser": RUN_AS,
        "runAsGroup": RUN_AS,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def pod_security_context() -> Obj:
    """The pod's security context: every container runs as RUN_AS, and the volumes are
    group-owned by it (fsGroup) so the agent can write the adapter cache."""
    return {
        "runAsNonRoot": True,
        "runAsUser": RUN_AS,
        "runAsGroup": RUN_AS,
        "fsGroup": RUN_AS,
        "seccompProfile": {"type": "RuntimeDefault"},
    }

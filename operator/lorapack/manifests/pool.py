"""Pure builders of the objects a BaseModelPool owns.

Called by the pool reconciler, which server-side applies what these return. Every object carries
lorapack's labels and a controller owner reference to the pool, so deleting the pool deletes them
(Kubernetes garbage collection) and `kubectl get all -l lorapack.io/pool=<name>` finds them.

Objects: the agent's ServiceAccount + Role + RoleBinding (least privilege: read only this pool's
desired-state Secrets, patch only this pool's pods), a headless Service (StatefulSet identity), a
pool Service (base-model traffic), a PodDisruptionBudget, the StatefulSet of vLLM pods, and one
desired-state Secret per pod.
The engine key Secret and the NetworkPolicy closing the engine port are built by
`manifests.network`; the pods read the key (VLLM_API_KEY) from the Secret named here.
"""

from __future__ import annotations

import base64
from typing import Any

from lorapack import labels
from lorapack.api.basemodelpool import BaseModelPool
from lorapack.api.meta import parse_quantity, parse_s3_uri
from lorapack.api.podstate import DesiredState
from lorapack.manifests import network, podspec
from lorapack.manifests.poolmeta import owner_reference, pool_labels, pool_meta

__all__ = [
    "CACHE_DIR",
    "MODEL_DIR",
    "PoolNames",
    "agent_rbac",
    "desired_secret",
    "engine_args",
    "headless_service",
    "owner_reference",
    "pod_disruption_budget",
    "pool_labels",
    "pool_service",
    "statefulset",
]

Obj = dict[str, Any]

MODEL_DIR = "/models/base"
CACHE_DIR = "/var/cache/lorapack"
ENGINE_TMP = "/tmp"
"""The engine's writable folder (an emptyDir) and its HOME: vLLM, Hugging Face, Triton and
torch write caches under HOME and /tmp, and the root filesystem is read-only."""
RUN_AS = 65532
"""uid and gid of every container (the lorapack image's user)."""


class PoolNames:
    """Names of everything derived from one pool (kept in one place so they never drift)."""

    def __init__(self, pool: str) -> None:
        self.pool = pool
        self.statefulset = pool
        self.headless = f"{pool}-pods"
        self.service = pool
        self.pdb = pool
        self.agent = f"{pool}-agent"
        self.engine_key = network.engine_key_secret_name(pool)
        self.network_policy = network.network_policy_name(pool)

    def pod(self, ordinal: int) -> str:
        return f"{self.pool}-{ordinal}"

    def desired_secret(self, ordinal: int) -> str:
        return f"{self.pod(ordinal)}-adapters"


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


def agent_rbac(pool: BaseModelPool) -> list[Obj]:
    """ServiceAccount, Role and RoleBinding of the pool's agents.

    The Role names every pod and desired-state Secret the pool can ever have (ordinals below
    replicas.max), so an agent can read no other Secret and patch no other pod, and grants only
    the verbs the agent uses: it watches its Secret by name (a list and a watch with a
    metadata.name field selector, which RBAC checks against resourceNames) and patches its pod's
    annotation and readiness condition.

    All pods of a StatefulSet share one ServiceAccount and RBAC cannot tell their tokens apart,
    so each agent can also read its siblings' desired states (presigned URLs of the adapters
    placed there): docs/security.md ("Agents read their siblings' desired states") says why that
    waits and what bounds it.
    """
    names = PoolNames(pool.metadata.name)
    ordinals = range(pool.spec.replicas.max)
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": pool_meta(pool, names.agent),
        "rules": [
            {
                "apiGroups": [""],
                "resources": ["secrets"],
                "verbs": ["list", "watch"],
                "resourceNames": [names.desired_secret(i) for i in ordinals],
            },
            {
                "apiGroups": [""],
                "resources": ["pods", "pods/status"],
                "verbs": ["patch"],
                "resourceNames": [names.pod(i) for i in ordinals],
            },
        ],
    }
    return [
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            # spec.agent.serviceAccountAnnotations: IRSA / Workload Identity for the agents.
            "metadata": podspec.with_annotations(
                pool_meta(pool, names.agent), pool.spec.agent.service_account_annotations
            ),
        },
        role,
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": pool_meta(pool, names.agent),
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Role",
                "name": names.agent,
            },
            "subjects": [
                {
                    "kind": "ServiceAccount",
                    "name": names.agent,
                    "namespace": pool.metadata.namespace,
                }
            ],
        },
    ]


def headless_service(pool: BaseModelPool) -> Obj:
    """The StatefulSet's governing Service (stable pod DNS names)."""
    names = PoolNames(pool.metadata.name)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": pool_meta(pool, names.headless),
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": {labels.POOL_LABEL: pool.metadata.name},
            "ports": [{"name": "http", "port": labels.ENGINE_PORT, "targetPort": "http"}],
        },
    }


def pool_service(pool: BaseModelPool) -> Obj:
    """ClusterIP Service over all ready pods, for base-model (no adapter) traffic."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": pool_meta(pool, PoolNames(pool.metadata.name).service),
        "spec": {
            "selector": {labels.POOL_LABEL: pool.metadata.name},
            "ports": [{"name": "http", "port": labels.ENGINE_PORT, "targetPort": "http"}],
        },
    }


def pod_disruption_budget(pool: BaseModelPool) -> Obj:
    """At most one pool pod voluntarily disrupted at a time (drains, node upgrades)."""
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": pool_meta(pool, PoolNames(pool.metadata.name).pdb),
        "spec": {
            "maxUnavailable": 1,
            "selector": {"matchLabels": {labels.POOL_LABEL: pool.metadata.name}},
        },
    }


def _engine_model_mount(pool: BaseModelPool) -> Obj:
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


def _model_volume(pool: BaseModelPool) -> tuple[Obj, list[Obj]]:
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
            "securityContext": _restricted_security_context(),
        }
    ]


def _restricted_security_context() -> Obj:
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


def statefulset(
    pool: BaseModelPool,
    *,
    replicas: int,
    agent_image: str,
    drain_timeout_seconds: float | None = None,
) -> Obj:
    """The pool's pods: vLLM engine + lorapack agent sharing the adapter cache volume.

    `drain_timeout_seconds` (the operator's setting) reaches the agents as
    LORAPACK_DRAIN_TIMEOUT_SECONDS; None leaves the agents' default (30 s).
    """
    spec = pool.spec
    names = PoolNames(pool.metadata.name)
    model_volume, init_containers = _model_volume(pool)
    for init in init_containers:
        init["image"] = agent_image
    pod_labels = {**pool_labels(pool), labels.COMPONENT_LABEL: labels.ROLE_ENGINE}
    cache_bytes = parse_quantity(spec.adapters.cache_size)
    engine = {
        "name": "vllm",
        "image": spec.engine.image,
        "command": ["vllm"],
        "args": engine_args(pool),
        "env": [
            {"name": "VLLM_ALLOW_RUNTIME_LORA_UPDATING", "value": "true"},
            {"name": "HF_HUB_OFFLINE", "value": "1"},
            {"name": "HOME", "value": ENGINE_TMP},
            # In the env, not as --api-key: arguments are visible to every reader of the pod.
            network.engine_key_env(names.engine_key),
        ],
        "ports": [{"name": "http", "containerPort": labels.ENGINE_PORT}],
        "resources": podspec.engine_resources(spec),
        "volumeMounts": [
            _engine_model_mount(pool),
            {"name": "adapter-cache", "mountPath": CACHE_DIR, "readOnly": True},
            {"name": "shm", "mountPath": "/dev/shm"},
            {"name": "engine-tmp", "mountPath": ENGINE_TMP},
        ],
        # The engine runs restricted too (it was root): Pod Security `restricted` admits the pod.
        "securityContext": _restricted_security_context(),
        # vLLM loads the weights before /health answers: a startup probe with a long budget,
        # then readiness. Liveness stays off: a busy engine must not be killed.
        "startupProbe": {
            "httpGet": {"path": "/health", "port": "http"},
            "periodSeconds": 10,
            "failureThreshold": 180,
        },
        "readinessProbe": {"httpGet": {"path": "/health", "port": "http"}, "periodSeconds": 5},
    }
    agent = {
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
            network.engine_key_env(names.engine_key),
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
        "securityContext": _restricted_security_context(),
    }
    pod_spec: Obj = {
        "serviceAccountName": names.agent,
        # No token in the vllm container (whatever runs there cannot act as the agent); the
        # agent mounts the same projected volume kubelet would, itself.
        "automountServiceAccountToken": False,
        "readinessGates": [{"conditionType": labels.SYNCED_CONDITION}],
        "terminationGracePeriodSeconds": 60,
        "nodeSelector": dict(spec.gpu.node_selector),
        "tolerations": [t.wire() for t in spec.gpu.tolerations],
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUN_AS,
            "runAsGroup": RUN_AS,
            "fsGroup": RUN_AS,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "initContainers": init_containers,
        "containers": [engine, agent],
        "volumes": [
            model_volume,
            {"name": "adapter-cache", "emptyDir": {"sizeLimit": str(cache_bytes)}},
            {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": "8Gi"}},
            {"name": "engine-tmp", "emptyDir": {"sizeLimit": "4Gi"}},
            network.service_account_volume(),
        ],
    }
    if not init_containers:
        del pod_spec["initContainers"]
    sts = {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": pool_meta(pool, names.statefulset),
        "spec": {
            "replicas": replicas,
            "serviceName": names.headless,
            # Pods are independent engines: start and stop them all at once.
            "podManagementPolicy": "Parallel",
            "selector": {"matchLabels": {labels.POOL_LABEL: pool.metadata.name}},
            "template": {"metadata": {"labels": pod_labels}, "spec": pod_spec},
        },
    }
    # spec.baseModel.volume: emptyDir size, ephemeral claim, per-pod claim or node folder.
    return podspec.apply_model_volume(pool, sts)


def desired_secret(pool: BaseModelPool, ordinal: int, state: DesiredState) -> Obj:
    """The Secret carrying one pod's desired adapters (it may hold presigned URLs)."""
    names = PoolNames(pool.metadata.name)
    payload = state.model_dump_json(by_alias=True, exclude_none=True).encode()
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": pool_meta(
            pool,
            names.desired_secret(ordinal),
            {labels.ROLE_LABEL: labels.ROLE_DESIRED, labels.POD_LABEL: names.pod(ordinal)},
        ),
        "data": {labels.DESIRED_KEY: base64.b64encode(payload).decode()},
    }

"""Pure builders of the objects a BaseModelPool owns.

Called by the pool reconciler, which server-side applies what these return. Every object carries
lorapack's labels and a controller owner reference to the pool, so deleting the pool deletes them
(Kubernetes garbage collection) and `kubectl get all -l lorapack.io/pool=<name>` finds them.

Objects: the agent's ServiceAccount + Role + RoleBinding (least privilege: read only this pool's
desired-state Secrets, patch only this pool's pods), a headless Service (StatefulSet identity), a
pool Service (base-model traffic), a PodDisruptionBudget, the StatefulSet of vLLM pods, and one
desired-state Secret per pod.
The engine key Secret and the NetworkPolicy closing the engine port are built by
`manifests.network`; the pods read the key (VLLM_API_KEY) from the Secret named here. The pod
template's containers are built by `manifests.poolcontainers` and its volumes by
`manifests.poolvolumes`; MODEL_DIR, CACHE_DIR and engine_args stay importable from here,
where tests import them.
"""

from __future__ import annotations

import base64
from typing import Any

from lorapack import labels
from lorapack.api.basemodelpool import BaseModelPool
from lorapack.api.podstate import DesiredState
from lorapack.manifests import network, podspec, poolcontainers, poolvolumes
from lorapack.manifests.poolcontainers import CACHE_DIR, MODEL_DIR, engine_args
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
    model_volume, init_containers = poolvolumes.model_volume(pool)
    for init in init_containers:
        init["image"] = agent_image
    pod_labels = {**pool_labels(pool), labels.COMPONENT_LABEL: labels.ROLE_ENGINE}
    engine = poolcontainers.engine_container(
        pool, names.engine_key, poolvolumes.engine_model_mount(pool)
    )
    agent = poolcontainers.agent_container(
        pool, agent_image, names.engine_key, drain_timeout_seconds
    )
    pod_spec: Obj = {
        "serviceAccountName": names.agent,
        # No token in the vllm container (whatever runs there cannot act as the agent); the
        # agent mounts the same projected volume kubelet would, itself.
        "automountServiceAccountToken": False,
        "readinessGates": [{"conditionType": labels.SYNCED_CONDITION}],
        "terminationGracePeriodSeconds": 60,
        "nodeSelector": dict(spec.gpu.node_selector),
        "tolerations": [t.wire() for t in spec.gpu.tolerations],
        "securityContext": poolcontainers.pod_security_context(),
        "initContainers": init_containers,
        "containers": [engine, agent],
        "volumes": poolvolumes.pod_volumes(pool, model_volume),
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

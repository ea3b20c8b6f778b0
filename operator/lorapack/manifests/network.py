"""Pure builders of who may reach a pool's engine and the Kubernetes API from its pods.

Called by the pool reconciler, which applies what these return next to the objects of
`manifests.pool` (same labels and controller owner reference, `manifests.poolmeta`), and by
`manifests.pool` itself for the pod template's parts:

* `api_key_secret(pool, key)`: the Secret `<pool>-engine-key`. vLLM reads it as VLLM_API_KEY
  (`engine_key_env`) and then refuses every `/v1/...` request without `Authorization: Bearer
  <key>` (its AuthenticationMiddleware); the agent reads the same Secret and sends the key. The
  pass creates it once with a random key (`secrets.token_urlsafe(API_KEY_BYTES)`: randomness
  stays with the caller) when `needs_api_key(existing data)` says so, and never writes it again:
  a new key reaches a pod only when its containers restart, so rewriting it would leave the
  engine and agent of one pod disagreeing after a restart of just one of them. The Secret is
  immutable, so no edit rotates it by accident; deleting it is the rotation (the next pass
  creates a new one, pods pick it up as they restart).
* `engine_network_policy(pool, ...)`: ingress to the pool's pods on the engine port only, from
  the pool's own pods and the routing layer (gateway namespaces; optionally the namespaces the
  pool admits adapters from). The key alone does not close the engine: vLLM 0.32 also serves
  `POST /adapters` and `DELETE /adapters/{name}` (SageMaker routes that load and unload LoRA
  adapters) and `/invocations` outside `/v1`, without the key (docs/security.md; proven by
  tests/contract/test_api_key.py), so only the network keeps callers away from them.
* `service_account_volume()` / `service_account_mount()`: the API token, projected into the
  agent container only (the pod sets automountServiceAccountToken: false).

A Service cannot filter paths (it forwards TCP), so keeping callers to inference paths is the
gateway's job: docs/security.md says what it must allow, strip and add.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any, Final

from lorapack import labels
from lorapack.api.basemodelpool import BaseModelPool
from lorapack.errors import InvalidSpec
from lorapack.manifests.poolmeta import pool_meta

__all__ = [
    "API_KEY_BYTES",
    "ENGINE_KEY_ENV",
    "ENGINE_KEY_FIELD",
    "NAMESPACE_NAME_LABEL",
    "ROLE_API_KEY",
    "SERVICE_ACCOUNT_DIR",
    "api_key_secret",
    "engine_key_env",
    "engine_key_secret_name",
    "engine_network_policy",
    "needs_api_key",
    "network_policy_name",
    "parse_namespace_selector",
    "service_account_mount",
    "service_account_volume",
]

Obj = dict[str, Any]

#: Entropy of a generated key (43 URL-safe characters from secrets.token_urlsafe).
API_KEY_BYTES: Final = 32
#: Shortest key accepted as present (a hand-made Secret holding "x" is no key).
_MIN_KEY_CHARS: Final = 32
#: The key Secret's data field, and the variable vLLM (with no --api-key) and the agent read.
ENGINE_KEY_FIELD: Final = "api-key"
ENGINE_KEY_ENV: Final = "VLLM_API_KEY"
#: Value of lorapack.io/role on the key Secret (desired-state Secrets say desired-adapters).
ROLE_API_KEY: Final = "engine-api-key"
#: Set by Kubernetes on every namespace (1.22+): selects namespaces by name.
NAMESPACE_NAME_LABEL: Final = "kubernetes.io/metadata.name"
#: Where the kube client's in-cluster config reads the token and CA (kubernetes_asyncio
#: SERVICE_TOKEN_FILENAME / SERVICE_CERT_FILENAME): the agent's projected volume goes there.
SERVICE_ACCOUNT_DIR: Final = "/var/run/secrets/kubernetes.io/serviceaccount"


def engine_key_secret_name(pool_name: str) -> str:
    """`<pool>-engine-key` (pool names have at most 52 characters)."""
    return f"{pool_name}-engine-key"


def network_policy_name(pool_name: str) -> str:
    return f"{pool_name}-engine"


def api_key_secret(pool: BaseModelPool, key: str) -> Obj:
    """The pool's engine key Secret (immutable: see the module docstring)."""
    if len(key) < _MIN_KEY_CHARS:
        raise InvalidSpec(
            f"engine API key for pool {pool.metadata.name}: {len(key)} characters, want at "
            f"least {_MIN_KEY_CHARS}; generate it with secrets.token_urlsafe({API_KEY_BYTES})"
        )
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "immutable": True,
        "metadata": pool_meta(
            pool, engine_key_secret_name(pool.metadata.name), {labels.ROLE_LABEL: ROLE_API_KEY}
        ),
        "data": {ENGINE_KEY_FIELD: base64.b64encode(key.encode()).decode()},
    }


def needs_api_key(existing_secret_data: Mapping[str, str] | None) -> bool:
    """Whether the pass must write the key Secret: True when it does not exist (None) or holds
    no usable key (field missing, not base64, under 32 characters: the pass then deletes and
    recreates it, the Secret being immutable). A usable key is never replaced."""
    if existing_secret_data is None:
        return True
    encoded = existing_secret_data.get(ENGINE_KEY_FIELD)
    if not encoded:
        return True
    try:
        key = base64.b64decode(encoded, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return True
    return len(key.strip()) < _MIN_KEY_CHARS


def engine_key_env(secret_name: str) -> Obj:
    """The env entry giving a container the pool's key. Not optional: without the Secret the
    pod waits (CreateContainerConfigError) instead of starting an engine that takes no key."""
    return {
        "name": ENGINE_KEY_ENV,
        "valueFrom": {"secretKeyRef": {"name": secret_name, "key": ENGINE_KEY_FIELD}},
    }


def service_account_volume() -> Obj:
    """What kubelet's automount would project (token, cluster CA, namespace), for the agent."""
    return {
        "name": "kube-api-access",
        "projected": {
            "defaultMode": 0o644,  # kubelet's own automount mode
            "sources": [
                # kubelet renews the token before it expires; the kube client re-reads the file.
                {"serviceAccountToken": {"path": "token", "expirationSeconds": 3607}},
                {
                    "configMap": {
                        "name": "kube-root-ca.crt",
                        "items": [{"key": "ca.crt", "path": "ca.crt"}],
                    }
                },
                {
                    "downwardAPI": {
                        "items": [
                            {"path": "namespace", "fieldRef": {"fieldPath": "metadata.namespace"}}
                        ]
                    }
                },
            ],
        },
    }


def service_account_mount() -> Obj:
    return {"name": "kube-api-access", "mountPath": SERVICE_ACCOUNT_DIR, "readOnly": True}


def _team_peers(pool: BaseModelPool) -> list[Obj]:
    allowed = list(pool.spec.adapters.allowed_namespaces)
    if allowed == ["*"]:
        return [{"namespaceSelector": {}}]
    # Empty allowedNamespaces admits adapters of the pool's own namespace only.
    names = sorted(set(allowed or [pool.metadata.namespace]))
    expression = {"key": NAMESPACE_NAME_LABEL, "operator": "In", "values": names}
    return [{"namespaceSelector": {"matchExpressions": [expression]}}]


def engine_network_policy(
    pool: BaseModelPool,
    *,
    gateway_namespaces: Mapping[str, str] | None = None,
    allow_team_namespaces: bool = False,
) -> Obj:
    """Ingress to the pool's pods: the engine port only, from the pool's own pods, from the
    namespaces whose labels match `gateway_namespaces` (None: no gateway), and, with
    `allow_team_namespaces`, from the namespaces in `spec.adapters.allowedNamespaces`.

    kube-proxy keeps the client's source address when it forwards a Service's traffic, so a
    policy on the pods sees the calling pod: admitting team namespaces is what lets teams' pods
    call the per-adapter Services directly. It is off by default because those pods then reach
    vLLM's unauthenticated SageMaker routes too (load or unload any adapter of the pool), and
    their /v1 calls need the key anyway: turn it on only for teams that hold the key. The
    kubelet's probes come from the node, which Kubernetes always admits to an isolated pod.
    """
    peers: list[Obj] = [{"podSelector": {"matchLabels": {labels.POOL_LABEL: pool.metadata.name}}}]
    if gateway_namespaces is not None:
        peers.append({"namespaceSelector": {"matchLabels": dict(gateway_namespaces)}})
    if allow_team_namespaces:
        peers += _team_peers(pool)
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": pool_meta(pool, network_policy_name(pool.metadata.name)),
        "spec": {
            "podSelector": {"matchLabels": {labels.POOL_LABEL: pool.metadata.name}},
            # Ingress only: agents need egress to the API server and S3, engines none, and
            # egress rules would have to know the cluster's API server and S3 addresses.
            "policyTypes": ["Ingress"],
            "ingress": [
                {"from": peers, "ports": [{"protocol": "TCP", "port": labels.ENGINE_PORT}]}
            ],
        },
    }


def parse_namespace_selector(text: str, *, what: str) -> dict[str, str] | None:
    """`key=value,key=value` (namespace labels, as a setting) -> labels; blank -> None (no
    gateway). `what` names the setting in the error."""
    if not text.strip():
        return None
    selector: dict[str, str] = {}
    for part in text.split(","):
        key, sep, value = (s.strip() for s in part.partition("="))
        if not sep or not key or not value:
            raise InvalidSpec(
                f"{what}: {part.strip()!r} is not key=value; write namespace labels as "
                f"key=value pairs separated by commas, e.g. {NAMESPACE_NAME_LABEL}=gateway-system"
            )
        selector[key] = value
    return selector

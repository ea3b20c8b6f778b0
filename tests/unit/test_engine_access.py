"""Who reaches a pool's engine and the API server from its pods (manifests.network, and the
parts of manifests.pool's StatefulSet that use it): the engine key Secret and when to write it,
the NetworkPolicy's peers, the key in both containers' env, and the API token in the agent only.
"""

from __future__ import annotations

import base64
from typing import Any

import pytest
from kubernetes_asyncio.config import incluster_config

from lorapack import labels
from lorapack.api.basemodelpool import BaseModelPool
from lorapack.errors import InvalidSpec
from lorapack.manifests import network
from lorapack.manifests import pool as pool_manifests
from tests.builders import make_pool

KEY = "k" * 43


def pool(**spec: Any) -> BaseModelPool:
    body = make_pool(**spec)
    body["metadata"]["uid"] = "uid-1"
    return BaseModelPool.model_validate(body)


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


# ---------------------------------------------------------------------------- the key Secret


def test_key_secret_is_immutable_owned_and_labelled() -> None:
    secret = network.api_key_secret(pool(), KEY)
    assert secret["metadata"]["name"] == "llama3-8b-engine-key"
    assert secret["metadata"]["namespace"] == "ml-platform"
    assert secret["immutable"] is True
    assert secret["metadata"]["labels"][labels.ROLE_LABEL] == network.ROLE_API_KEY
    assert secret["metadata"]["labels"][labels.POOL_LABEL] == "llama3-8b"
    assert secret["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    assert base64.b64decode(secret["data"][network.ENGINE_KEY_FIELD]).decode() == KEY
    assert pool_manifests.PoolNames("llama3-8b").engine_key == secret["metadata"]["name"]


def test_short_key_is_refused_with_the_fix() -> None:
    with pytest.raises(InvalidSpec, match=r"want at least 32; generate it with secrets"):
        network.api_key_secret(pool(), "short")


@pytest.mark.parametrize(
    ("data", "want"),
    [
        (None, True),
        ({}, True),
        ({network.ENGINE_KEY_FIELD: ""}, True),
        ({network.ENGINE_KEY_FIELD: "not base64!"}, True),
        ({network.ENGINE_KEY_FIELD: b64("x")}, True),
        ({network.ENGINE_KEY_FIELD: base64.b64encode(b"\xff" * 40).decode()}, True),
        ({network.ENGINE_KEY_FIELD: b64(KEY)}, False),
        ({network.ENGINE_KEY_FIELD: b64("another usable key, never rotated: " + KEY)}, False),
    ],
    ids=[
        "missing-secret",
        "no-data",
        "empty-key",
        "not-base64",
        "too-short",
        "not-utf8",
        "usable",
        "any-usable-value-is-kept",
    ],
)
def test_needs_api_key(data: dict[str, str] | None, want: bool) -> None:
    assert network.needs_api_key(data) is want


# ------------------------------------------------------------------------- the NetworkPolicy


def _peers(policy: dict[str, Any]) -> list[dict[str, Any]]:
    [rule] = policy["spec"]["ingress"]
    assert rule["ports"] == [{"protocol": "TCP", "port": labels.ENGINE_PORT}]
    peers: list[dict[str, Any]] = rule["from"]
    return peers


POOL_PODS = {"podSelector": {"matchLabels": {labels.POOL_LABEL: "llama3-8b"}}}


def test_policy_selects_the_pools_pods_and_admits_only_them_by_default() -> None:
    policy = network.engine_network_policy(pool())
    assert policy["metadata"]["name"] == "llama3-8b-engine"
    assert policy["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    assert policy["spec"]["podSelector"] == {"matchLabels": {labels.POOL_LABEL: "llama3-8b"}}
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    assert _peers(policy) == [POOL_PODS]


def test_policy_admits_the_gateway_namespaces() -> None:
    gateway = {network.NAMESPACE_NAME_LABEL: "gateway-system"}
    policy = network.engine_network_policy(pool(), gateway_namespaces=gateway)
    assert _peers(policy) == [POOL_PODS, {"namespaceSelector": {"matchLabels": gateway}}]


@pytest.mark.parametrize(
    ("allowed", "want"),
    [
        (
            ["team-b", "team-a"],
            {"matchExpressions": [{"key": network.NAMESPACE_NAME_LABEL, "operator": "In",
                                   "values": ["team-a", "team-b"]}]},
        ),
        (
            [],
            {"matchExpressions": [{"key": network.NAMESPACE_NAME_LABEL, "operator": "In",
                                   "values": ["ml-platform"]}]},
        ),
        (["*"], {}),
    ],
    ids=["listed-namespaces", "empty-means-the-pools-own", "star-means-every-namespace"],
)  # fmt: skip
def test_policy_admits_the_allowed_team_namespaces_on_request(
    allowed: list[str], want: dict[str, Any]
) -> None:
    p = pool(adapters={"allowedNamespaces": allowed, "s3Access": []})
    policy = network.engine_network_policy(p, allow_team_namespaces=True)
    assert _peers(policy) == [POOL_PODS, {"namespaceSelector": want}]


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("", None),
        ("  ", None),
        ("kubernetes.io/metadata.name=gw", {"kubernetes.io/metadata.name": "gw"}),
        (" a = 1 , b=2", {"a": "1", "b": "2"}),
    ],
)
def test_parse_namespace_selector(text: str, want: dict[str, str] | None) -> None:
    assert network.parse_namespace_selector(text, what="LORAPACK_X") == want


@pytest.mark.parametrize("text", ["gateway", "a=1,b", "=x", "a="])
def test_bad_namespace_selector_names_the_setting_and_the_form(text: str) -> None:
    with pytest.raises(InvalidSpec, match=r"^LORAPACK_X: .* is not key=value; write namespace"):
        network.parse_namespace_selector(text, what="LORAPACK_X")


# ---------------------------------------------------------------------- the pods' template


def _pod(**spec: Any) -> dict[str, Any]:
    sts = pool_manifests.statefulset(pool(**spec), replicas=1, agent_image="img:1")
    result: dict[str, Any] = sts["spec"]["template"]["spec"]
    return result


def _container(pod: dict[str, Any], name: str) -> dict[str, Any]:
    return next(c for c in pod["containers"] if c["name"] == name)


def test_engine_and_agent_read_the_key_from_the_secret_not_from_arguments() -> None:
    pod = _pod()
    want = {
        "name": "VLLM_API_KEY",
        "valueFrom": {"secretKeyRef": {"name": "llama3-8b-engine-key", "key": "api-key"}},
    }
    for name in ("vllm", "lorapack-agent"):
        container = _container(pod, name)
        assert want in container["env"], name
        assert not [a for a in container.get("args", []) if "api-key" in a], name


def test_only_the_agent_container_gets_an_api_token() -> None:
    pod = _pod()
    assert pod["automountServiceAccountToken"] is False
    [volume] = [v for v in pod["volumes"] if "projected" in v]
    sources = volume["projected"]["sources"]
    assert {"serviceAccountToken": {"path": "token", "expirationSeconds": 3607}} in sources
    mounts = {
        c["name"]: [m["mountPath"] for m in c["volumeMounts"] if m["name"] == "kube-api-access"]
        for c in [*pod["containers"], *pod.get("initContainers", [])]
    }
    assert mounts == {
        "vllm": [],
        "lorapack-agent": [network.SERVICE_ACCOUNT_DIR],
        "fetch-model": [],
    }


def test_token_mount_is_where_the_kube_client_looks() -> None:
    """The agent's KubeClient.connect uses kubernetes_asyncio's in-cluster config."""
    token = f"{network.SERVICE_ACCOUNT_DIR}/token"
    assert token == incluster_config.SERVICE_TOKEN_FILENAME
    assert f"{network.SERVICE_ACCOUNT_DIR}/ca.crt" == incluster_config.SERVICE_CERT_FILENAME
    [volume] = [v for v in _pod()["volumes"] if "projected" in v]
    paths = [
        item.get("path") or source.get("serviceAccountToken", {}).get("path")
        for source in volume["projected"]["sources"]
        for item in (
            source.get("configMap", source.get("downwardAPI", {})).get("items") or [source]
        )
    ]
    assert sorted(p for p in paths if p) == ["ca.crt", "namespace", "token"]

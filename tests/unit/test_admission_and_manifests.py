"""Admission rules and the builders of owned objects."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from lorapack import labels
from lorapack.api import conditions as c
from lorapack.api.basemodelpool import BaseModelPool
from lorapack.api.loraadapter import LoraAdapter
from lorapack.api.podstate import DesiredState
from lorapack.manifests import pool as m
from lorapack.manifests.routing import adapter_service, endpoint_slice, slice_name
from lorapack.planning.admission import candidate_pools, served_name_conflict
from lorapack.planning.rollout import Endpoint
from tests.builders import make_adapter, make_pool


def pool(name: str = "llama3-8b", namespace: str = "ml-platform", **spec: Any) -> BaseModelPool:
    body = make_pool(name, namespace, **spec)
    body["metadata"]["uid"] = f"uid-{name}"
    return BaseModelPool.model_validate(body)


def lora(
    name: str = "chat",
    namespace: str = "team-a",
    created: str = "2026-01-01T00:00:00Z",
    **spec: Any,
) -> LoraAdapter:
    body = make_adapter(name, namespace, **spec)
    body["metadata"]["creationTimestamp"] = created
    body["metadata"]["uid"] = f"uid-{namespace}-{name}"
    return LoraAdapter.model_validate(body)


@pytest.mark.parametrize(
    ("case", "adapter", "pools", "want_reason", "want_text"),
    [
        (
            "no pool",
            lora(baseModel="qwen/Qwen2.5-7B"),
            [pool()],
            c.NO_POOL,
            "pools serve: meta-llama",
        ),
        (
            "namespace refused",
            lora(namespace="team-z"),
            [pool()],
            c.NAMESPACE_NOT_ALLOWED,
            "allowedNamespaces",
        ),
        (
            "pinned missing",
            lora(poolRef={"name": "nope", "namespace": "ml-platform"}),
            [pool()],
            c.POOL_NOT_FOUND,
            "spec.poolRef",
        ),
        (
            "pinned other base",
            lora(poolRef={"name": "q", "namespace": "ml-platform"}),
            [pool("q", baseModel={"name": "qwen/Qwen2.5-7B"})],
            c.BASE_MODEL_MISMATCH,
            "serves qwen/Qwen2.5-7B",
        ),
    ],
)
def test_refusals(
    case: str, adapter: LoraAdapter, pools: list[BaseModelPool], want_reason: str, want_text: str
) -> None:
    found, refusal = candidate_pools(adapter, pools)
    assert found == []
    assert refusal is not None
    assert refusal.reason == want_reason
    assert want_text in refusal.message


def test_candidates_sorted_and_own_namespace_always_allowed() -> None:
    pools = [pool("b"), pool("a"), pool("own", "team-a", adapters={"allowedNamespaces": []})]
    found, refusal = candidate_pools(lora(), pools)
    assert refusal is None
    assert [p.metadata.name for p in found] == ["a", "b", "own"]


def test_star_admits_every_namespace() -> None:
    found, _ = candidate_pools(
        lora(namespace="anyone"), [pool(adapters={"allowedNamespaces": ["*"]})]
    )
    assert len(found) == 1


def test_served_name_first_come_keeps_it() -> None:
    first = lora("a", "team-a", "2026-01-01T00:00:00Z", servedName="shared")
    second = lora("b", "team-b", "2026-01-02T00:00:00Z", servedName="shared")
    assert served_name_conflict(first, [first, second], []) is None
    conflict = served_name_conflict(second, [first, second], [])
    assert conflict is not None
    assert conflict.reason == c.SERVED_NAME_CONFLICT
    assert "team-a/a" in conflict.message
    base = served_name_conflict(lora(servedName="base"), [], ["base"])
    assert base is not None
    assert "base model" in base.message


def test_engine_args_follow_the_launch_contract() -> None:
    args = m.engine_args(
        pool(
            engine={
                "maxLoras": 4,
                "maxLoraRank": 32,
                "maxCpuLoras": 16,
                "maxModelLen": 8192,
                "extraArgs": ["--enforce-eager"],
            }
        )
    )
    joined = " ".join(args)
    for want in (
        "--enable-lora",
        "--max-loras 4",
        "--max-lora-rank 32",
        "--max-cpu-loras 16",
        "--api-server-count 1",
        "--max-model-len 8192",
        "--served-model-name meta-llama/Meta-Llama-3-8B",
    ):
        assert want in joined
    assert args[-1] == "--enforce-eager"


def test_statefulset_shape() -> None:
    sts = m.statefulset(
        pool(
            gpu={
                "type": "L20",
                "count": 2,
                "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-L20"},
            }
        ),
        replicas=3,
        agent_image="img:1",
    )
    spec = sts["spec"]
    assert spec["replicas"] == 3
    assert spec["podManagementPolicy"] == "Parallel"
    pod = spec["template"]["spec"]
    assert pod["readinessGates"] == [{"conditionType": labels.SYNCED_CONDITION}]
    vllm = next(c for c in pod["containers"] if c["name"] == "vllm")
    assert vllm["resources"]["limits"] == {"nvidia.com/gpu": "2"}
    assert {"name": "VLLM_ALLOW_RUNTIME_LORA_UPDATING", "value": "true"} in vllm["env"]
    agent = next(c for c in pod["containers"] if c["name"] == "lorapack-agent")
    assert agent["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["initContainers"][0]["command"][-2:] == ["--fetch-model", m.MODEL_DIR]
    assert sts["metadata"]["ownerReferences"][0]["uid"] == "uid-llama3-8b"


def _pod(**spec: Any) -> dict[str, Any]:
    pod: dict[str, Any] = m.statefulset(pool(**spec), replicas=1, agent_image="img:1")["spec"][
        "template"
    ]["spec"]
    return pod


@pytest.mark.parametrize(
    "source",
    [
        {"s3": {"uri": "s3://models/llama-3-8b/"}},
        {"pvc": {"claimName": "weights", "subPath": "llama-3-8b"}},
    ],
)
def test_every_container_meets_pod_security_restricted(source: dict[str, Any]) -> None:
    # The real node (tests/realnode) runs this spec in a namespace enforcing `restricted`;
    # these are that profile's container rules, plus the gid: the CRI sets gid 0 unless told.
    pod = _pod(baseModel={"source": {"s3": None, "pvc": None, **source}})
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    containers = pod.get("initContainers", []) + pod["containers"]
    assert {c["name"] for c in pod["containers"]} == {"vllm", "lorapack-agent"}
    for container in containers:
        ctx = container.get("securityContext") or {}
        assert ctx.get("runAsNonRoot") is True, container["name"]
        assert (ctx.get("runAsUser"), ctx.get("runAsGroup")) == (65532, 65532), container["name"]
        assert ctx.get("allowPrivilegeEscalation") is False, container["name"]
        assert ctx.get("capabilities") == {"drop": ["ALL"]}, container["name"]
        assert ctx.get("readOnlyRootFilesystem") is True, container["name"]


def test_engine_home_and_tmp_are_writable_with_a_read_only_root() -> None:
    pod = _pod()
    vllm = next(c for c in pod["containers"] if c["name"] == "vllm")
    home = next(e["value"] for e in vllm["env"] if e["name"] == "HOME")
    mounts = {v["mountPath"]: v for v in vllm["volumeMounts"]}
    assert home == "/tmp" and not mounts["/tmp"].get("readOnly")
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]["name"]]


@pytest.mark.parametrize(("sub_path", "want"), [("llama-3-8b", "llama-3-8b"), ("", None)])
def test_pvc_model_is_mounted_where_vllm_serves_with_its_sub_path(
    sub_path: str, want: str | None
) -> None:
    pod = _pod(baseModel={"source": {"s3": None, "pvc": {"claimName": "w", "subPath": sub_path}}})
    vllm = next(c for c in pod["containers"] if c["name"] == "vllm")
    (mount,) = [v for v in vllm["volumeMounts"] if v["name"] == "model"]
    assert mount["mountPath"] == m.MODEL_DIR == m.engine_args(pool())[1]
    assert mount.get("subPath") == want and mount["readOnly"] is True
    assert "initContainers" not in pod
    (volume,) = [v for v in pod["volumes"] if v["name"] == "model"]
    assert volume["persistentVolumeClaim"] == {"claimName": "w", "readOnly": True}


def test_s3_model_is_served_from_the_folder_fetch_model_fills() -> None:
    pod = _pod()
    vllm = next(c for c in pod["containers"] if c["name"] == "vllm")
    (mount,) = [v for v in vllm["volumeMounts"] if v["name"] == "model"]
    (fetch,) = pod["initContainers"]
    assert fetch["command"][-1] == m.MODEL_DIR
    assert m.MODEL_DIR.startswith(mount["mountPath"] + "/") and "subPath" not in mount


def test_agent_role_names_only_this_pools_pods_and_secrets() -> None:
    sa, role, binding = m.agent_rbac(pool(replicas={"min": 1, "max": 3}))
    rules = {tuple(r["resources"]): r for r in role["rules"]}
    assert rules[("secrets",)]["resourceNames"] == [f"llama3-8b-{i}-adapters" for i in range(3)]
    # Only what the agent uses: a watch of its Secret by name, patches of its pod.
    assert rules[("secrets",)]["verbs"] == ["list", "watch"]
    assert rules[("pods", "pods/status")]["verbs"] == ["patch"]
    assert binding["subjects"][0]["name"] == sa["metadata"]["name"] == "llama3-8b-agent"


def test_desired_secret_round_trip() -> None:
    state = DesiredState(pool="ml-platform/llama3-8b", pod="llama3-8b-0", revision=4)
    secret = m.desired_secret(pool(), 0, state)
    decoded = json.loads(base64.b64decode(secret["data"][labels.DESIRED_KEY]))
    assert decoded["revision"] == 4
    assert decoded["pod"] == "llama3-8b-0"
    assert secret["metadata"]["labels"][labels.ROLE_LABEL] == labels.ROLE_DESIRED


def test_routing_objects() -> None:
    adapter = lora()
    svc = adapter_service(adapter, 8000)
    assert "selector" not in svc["spec"]
    eps = endpoint_slice(
        adapter,
        "ml-platform",
        "llama3-8b",
        [
            Endpoint("198.51.100.11", "llama3-8b-1", "ml-platform"),
            Endpoint("198.51.100.10", "llama3-8b-0", "ml-platform"),
        ],
    )
    assert eps["metadata"]["labels"][labels.SERVICE_NAME_LABEL] == "chat"
    assert [e["addresses"][0] for e in eps["endpoints"]] == ["198.51.100.10", "198.51.100.11"]
    assert len(slice_name("a" * 250, "pool")) <= 253

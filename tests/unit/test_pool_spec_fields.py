"""The pool spec fields real clusters need, rendered into the pool's objects (issue 14, item 5):
engine CPU/memory, the base-model volume, agent ServiceAccount annotations, the pool's S3
credentials for the base-model fetch, and the operator's drain timeout reaching the agents."""

from __future__ import annotations

import re
from typing import Any

import pytest
from pydantic import ValidationError

from lorapack.api.basemodelpool import DEFAULT_ENGINE_RESOURCES, BaseModelPool
from lorapack.manifests import podspec
from lorapack.manifests import pool as pool_manifests
from tests.builders import make_pool

POOL_KEYS = {"name": "s3-credentials"}


def pool_of(**spec: Any) -> BaseModelPool:
    obj = make_pool(**spec)
    obj["metadata"]["uid"] = "uid-1"
    return BaseModelPool.model_validate(obj)


def sts_of(pool: BaseModelPool, **kw: Any) -> dict[str, Any]:
    return pool_manifests.statefulset(pool, replicas=1, agent_image="agent:1", **kw)


def container(sts: dict[str, Any], name: str) -> dict[str, Any]:
    pod = sts["spec"]["template"]["spec"]
    found = [c for c in [*pod.get("initContainers", []), *pod["containers"]] if c["name"] == name]
    assert len(found) == 1, name
    return found[0]


def env_of(c: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in c["env"]}


def volume(sts: dict[str, Any], name: str = "model") -> dict[str, Any] | None:
    found = [v for v in sts["spec"]["template"]["spec"]["volumes"] if v["name"] == name]
    return found[0] if found else None


# ------------------------------------------------------------------------- engine resources


def test_engine_resources_default_to_cpu_and_memory_requests_plus_the_gpus() -> None:
    resources = container(sts_of(pool_of()), "vllm")["resources"]
    assert resources == {
        "requests": {**DEFAULT_ENGINE_RESOURCES["requests"], "nvidia.com/gpu": "1"},
        "limits": {"nvidia.com/gpu": "1"},
    }


def test_engine_resources_from_the_spec_keep_the_gpus_from_spec_gpu() -> None:
    pool = pool_of(
        engine={
            "resources": {"requests": {"cpu": "8", "memory": "64Gi"}, "limits": {"memory": "64Gi"}}
        },
        gpu={"count": 2, "resourceName": "nvidia.com/mig-3g.40gb"},
    )
    resources = container(sts_of(pool), "vllm")["resources"]
    assert resources["requests"] == {"cpu": "8", "memory": "64Gi", "nvidia.com/mig-3g.40gb": "2"}
    assert resources["limits"] == {"memory": "64Gi", "nvidia.com/mig-3g.40gb": "2"}


def test_limits_only_leaves_requests_to_kubernetes_defaulting() -> None:
    pool = pool_of(engine={"resources": {"limits": {"cpu": "500m", "memory": "24Gi"}}})
    resources = container(sts_of(pool), "vllm")["resources"]
    assert resources["requests"] == {"nvidia.com/gpu": "1"}  # core/v1: requests = limits
    assert resources["limits"]["cpu"] == "500m"


@pytest.mark.parametrize("where", ["requests", "limits"])
def test_gpus_cannot_be_set_in_engine_resources(where: str) -> None:
    with pytest.raises(ValidationError, match=rf"engine.resources.{where}.nvidia.com/gpu"):
        pool_of(engine={"resources": {where: {"nvidia.com/gpu": "1"}}})


# ---------------------------------------------------------------------- base-model volume


def test_no_volume_keeps_an_unbounded_emptydir() -> None:
    assert volume(sts_of(pool_of())) == {"name": "model", "emptyDir": {}}


def test_emptydir_size_limit() -> None:
    sts = sts_of(pool_of(baseModel={"volume": {"size": "40Gi"}}))
    assert volume(sts) == {"name": "model", "emptyDir": {"sizeLimit": "40Gi"}}
    assert container(sts, "fetch-model")["command"] == [
        "lorapack",
        "agent",
        "--fetch-model",
        podspec.MODEL_DIR,
    ]


def test_ephemeral_volume_is_a_claim_for_the_pod_lifetime() -> None:
    sts = sts_of(
        pool_of(
            baseModel={"volume": {"type": "Ephemeral", "size": "100Gi", "storageClassName": "nvme"}}
        )
    )
    claim = volume(sts)["ephemeral"]["volumeClaimTemplate"]  # type: ignore[index]
    assert claim["spec"] == {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": "100Gi"}},
        "storageClassName": "nvme",
    }
    assert claim["metadata"]["labels"]["lorapack.io/pool"] == "llama3-8b"
    assert "volumeClaimTemplates" not in sts["spec"]


def test_persistent_volume_claim_per_pod_outlives_the_pod() -> None:
    uri = "s3://models/llama-3-8b/"
    sts = sts_of(pool_of(baseModel={"volume": {"type": "PersistentVolumeClaim", "size": "40Gi"}}))
    assert volume(sts) is None  # the StatefulSet controller makes one claim per ordinal
    (template,) = sts["spec"]["volumeClaimTemplates"]
    assert template["metadata"]["name"] == "model"
    assert template["spec"]["resources"] == {"requests": {"storage": "40Gi"}}
    assert "storageClassName" not in template["spec"]
    assert sts["spec"]["persistentVolumeClaimRetentionPolicy"] == {
        "whenDeleted": "Delete",
        "whenScaled": "Retain",
    }
    command = container(sts, "fetch-model")["command"]
    assert command[:2] == ["/bin/sh", "-c"]
    script = command[2]
    key = podspec.model_folder_key(uri)
    assert f'if [ ! -f "/models/{key}/.lorapack-complete" ]' in script
    assert f"ln -sfn {key} /models/base" in script
    assert "find /models" in script  # a per-pod claim drops other models' folders
    # Both containers still mount the volume where the script and vLLM expect it.
    assert {"name": "model", "mountPath": "/models"} in container(sts, "fetch-model")[
        "volumeMounts"
    ]
    assert container(sts, "vllm")["args"][1] == podspec.MODEL_DIR


def test_host_path_is_a_node_folder_never_cleaned_by_one_pod() -> None:
    sts = sts_of(
        pool_of(baseModel={"volume": {"type": "HostPath", "hostPath": "/var/lib/lorapack/models"}})
    )
    assert volume(sts) == {
        "name": "model",
        "hostPath": {"path": "/var/lib/lorapack/models", "type": "Directory"},
    }
    script = container(sts, "fetch-model")["command"][2]
    assert "find /models" not in script  # shared by the node's pool pods
    assert "mv -T" in script


def test_another_uri_gets_another_folder() -> None:
    a = podspec.model_folder_key("s3://models/llama-3-8b/")
    b = podspec.model_folder_key("s3://models/llama-3.1-8b/")
    assert a != b
    assert a.startswith("model-")


def test_model_dir_is_the_one_vllm_serves() -> None:
    assert podspec.MODEL_DIR == pool_manifests.MODEL_DIR


@pytest.mark.parametrize(
    ("volume_spec", "message"),
    [
        ({"type": "PersistentVolumeClaim"}, "baseModel.volume.size is required"),
        ({"type": "Ephemeral"}, "baseModel.volume.size is required"),
        ({"type": "HostPath"}, "baseModel.volume.hostPath is required"),
        ({"hostPath": "/x"}, "only allowed with it"),
        ({"storageClassName": "gp3"}, "storageClassName is only used"),
    ],
)
def test_volume_field_combinations_name_the_field(
    volume_spec: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValidationError, match=re.escape(message)):
        pool_of(baseModel={"volume": volume_spec})


def test_volume_with_a_pvc_source_is_refused() -> None:
    wanted = re.escape("baseModel.volume is only used with source.s3")
    with pytest.raises(ValidationError, match=wanted):
        pool_of(baseModel={"source": {"s3": None, "pvc": {"claimName": "w"}}, "volume": {}})


# ------------------------------------------------------- S3 of the base-model fetch, agents


def test_fetch_uses_the_pools_s3_settings_when_the_source_names_none() -> None:
    pool = pool_of(
        s3={
            "endpoint": "http://seaweedfs.storage:8333",
            "region": "eu-west-1",
            "addressingStyle": "path",
            "credentialsSecretRef": POOL_KEYS,
        }
    )
    env = env_of(container(sts_of(pool), "fetch-model"))
    assert env["LORAPACK_MODEL_BUCKET"] == "models"
    assert env["LORAPACK_MODEL_PREFIX"] == "llama-3-8b/"
    assert env["LORAPACK_S3_ENDPOINT"] == "http://seaweedfs.storage:8333"
    assert env["AWS_REGION"] == "eu-west-1"
    assert env["LORAPACK_S3_ADDRESSING_STYLE"] == "path"
    assert env["AWS_ACCESS_KEY_ID"]["secretKeyRef"]["name"] == "s3-credentials"
    assert env["AWS_SECRET_ACCESS_KEY"]["secretKeyRef"]["name"] == "s3-credentials"


def test_fetch_prefers_the_sources_own_settings() -> None:
    pool = pool_of(
        baseModel={
            "source": {
                "s3": {
                    "uri": "s3://models/llama-3-8b/",
                    "endpoint": "https://models.example",
                    "region": "us-west-2",
                    "credentialsSecretRef": {"name": "model-keys"},
                }
            }
        },
        s3={"endpoint": "http://pool", "region": "eu-west-1", "credentialsSecretRef": POOL_KEYS},
    )
    env = env_of(container(sts_of(pool), "fetch-model"))
    assert env["LORAPACK_S3_ENDPOINT"] == "https://models.example"
    assert env["AWS_REGION"] == "us-west-2"
    assert env["AWS_ACCESS_KEY_ID"]["secretKeyRef"]["name"] == "model-keys"


def test_fetch_without_keys_anywhere_uses_the_pod_identity() -> None:
    env = env_of(container(sts_of(pool_of()), "fetch-model"))
    assert "AWS_ACCESS_KEY_ID" not in env
    assert "LORAPACK_S3_ADDRESSING_STYLE" not in env  # auto: boto3's own choice


def test_drain_timeout_reaches_the_agents() -> None:
    env = env_of(container(sts_of(pool_of(), drain_timeout_seconds=90.0), "lorapack-agent"))
    assert env["LORAPACK_DRAIN_TIMEOUT_SECONDS"] == "90"
    default = env_of(container(sts_of(pool_of()), "lorapack-agent"))
    assert "LORAPACK_DRAIN_TIMEOUT_SECONDS" not in default


def test_drain_timeout_env_is_what_the_agent_config_reads() -> None:
    from lorapack.config import AgentConfig

    env = {e["name"]: e["value"] for e in podspec.agent_env(12.5)}
    env |= {"POD_NAME": "p-0", "POD_NAMESPACE": "ns", "LORAPACK_POOL_NAME": "p"}
    assert AgentConfig.from_env(env).drain_timeout_seconds == 12.5


def test_agent_service_account_annotations() -> None:
    annotations = {"eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/lorapack-models"}
    objs = pool_manifests.agent_rbac(pool_of(agent={"serviceAccountAnnotations": annotations}))
    (sa,) = [o for o in objs if o["kind"] == "ServiceAccount"]
    assert sa["metadata"]["annotations"] == annotations
    (plain,) = [o for o in pool_manifests.agent_rbac(pool_of()) if o["kind"] == "ServiceAccount"]
    assert "annotations" not in plain["metadata"]

"""Every new BaseModelPool field (issue 14, item 5) is accepted by the real API server through the
CRD, and the objects lorapack renders from it are accepted too: engine resources, the four
base-model volume kinds, agent ServiceAccount annotations and the pool's S3 keys for the fetch.
The CEL rules refuse the bad combinations with a message naming the field, and a per-pod claim
cannot change once the pool exists (StatefulSet volumeClaimTemplates are immutable).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from lorapack.api.basemodelpool import BaseModelPool
from lorapack.manifests import pool as pool_manifests
from lorapack_testworld.devcluster import DevCluster
from tests.builders import deep_merge, make_pool

pytestmark = pytest.mark.integration

ALL_FIELDS: dict[str, Any] = {
    "engine": {
        "resources": {
            "requests": {"cpu": "4", "memory": "32Gi", "ephemeral-storage": "1Gi"},
            "limits": {"cpu": "8000m", "memory": "32Gi", "hugepages-2Mi": "0"},
        }
    },
    "agent": {
        "serviceAccountAnnotations": {
            "eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/lorapack-models"
        }
    },
    "s3": {
        "endpoint": "http://seaweedfs.storage:8333",
        "region": "us-east-1",
        "addressingStyle": "path",
        "credentialsSecretRef": {"name": "s3-credentials"},
    },
}

VOLUMES = {
    "emptydir": {"size": "40Gi"},
    "ephemeral": {"type": "Ephemeral", "size": "60Gi", "storageClassName": "standard"},
    "claim": {"type": "PersistentVolumeClaim", "size": "40Gi"},
    "hostpath": {"type": "HostPath", "hostPath": "/var/lib/lorapack/models"},
}


def kubectl_json(cluster: DevCluster, *args: str, obj: Any) -> Any:
    result = cluster.kubectl(*args, "-f", "-", "-o", "json", input=json.dumps(obj), check=False)
    assert result.returncode == 0, f"kubectl {' '.join(args)} refused it: {result.stderr}"
    return json.loads(result.stdout)


def stored_pool(cluster: DevCluster, namespace: str, name: str, volume: dict[str, Any]) -> Any:
    obj = make_pool(name=name, namespace=namespace, **ALL_FIELDS)
    obj = deep_merge(obj, {"spec": {"baseModel": {"volume": volume}}})
    return kubectl_json(cluster, "create", obj=obj)


@pytest.mark.parametrize("kind", list(VOLUMES))
def test_new_fields_are_admitted_and_what_they_render_is_admitted(
    devcluster: DevCluster, lorapack_crds: Path, namespace: str, kind: str
) -> None:
    stored = stored_pool(devcluster, namespace, f"pool-{kind}", VOLUMES[kind])
    # The server kept every field (none pruned) and defaulted the volume type.
    spec = stored["spec"]
    assert spec["engine"]["resources"] == ALL_FIELDS["engine"]["resources"]
    assert spec["agent"] == ALL_FIELDS["agent"]
    assert spec["baseModel"]["volume"] == {"type": "EmptyDir", **VOLUMES[kind]}
    pool = BaseModelPool.model_validate(stored)
    sts = pool_manifests.statefulset(
        pool, replicas=1, agent_image="agent:1", drain_timeout_seconds=45
    )
    # The test session's operator may already have made this pool's StatefulSet: dry-run a copy
    # under another name, so the server admits what lorapack renders, not "AlreadyExists".
    sts["metadata"]["name"] = f"{sts['metadata']['name']}-render"
    admitted = kubectl_json(devcluster, "create", "--dry-run=server", obj=sts)
    pod = admitted["spec"]["template"]["spec"]
    vllm = next(c for c in pod["containers"] if c["name"] == "vllm")
    assert vllm["resources"]["requests"]["memory"] == "32Gi"
    assert vllm["resources"]["limits"]["nvidia.com/gpu"] == "1"
    agent = next(c for c in pod["containers"] if c["name"] == "lorapack-agent")
    assert {"name": "LORAPACK_DRAIN_TIMEOUT_SECONDS", "value": "45"} in agent["env"]
    fetch = pod["initContainers"][0]
    keys = {e["name"]: e for e in fetch["env"]}
    assert keys["AWS_ACCESS_KEY_ID"]["valueFrom"]["secretKeyRef"]["name"] == "s3-credentials"
    if kind == "claim":
        assert admitted["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "model"
    else:
        assert any(v["name"] == "model" for v in pod["volumes"])
    for obj in pool_manifests.agent_rbac(pool):
        obj["metadata"]["name"] = f"{obj['metadata']['name']}-render"
        kubectl_json(devcluster, "create", "--dry-run=server", obj=obj)


def test_per_pod_claim_is_made_by_the_statefulset_controller(
    devcluster: DevCluster, lorapack_crds: Path, namespace: str
) -> None:
    pool = BaseModelPool.model_validate(
        stored_pool(devcluster, namespace, "llama3-8b", VOLUMES["claim"])
    )
    sts = pool_manifests.statefulset(pool, replicas=1, agent_image="agent:1")
    # The test session's operator may have made it first, from the same template: either way the
    # StatefulSet controller makes the claim from what lorapack renders.
    made = devcluster.kubectl("create", "-f", "-", input=json.dumps(sts), check=False)
    assert made.returncode == 0 or "AlreadyExists" in made.stderr, made.stderr
    deadline = time.monotonic() + 30
    while True:
        found = devcluster.kubectl(
            "get", "pvc", "model-llama3-8b-0", "-n", namespace, "-o", "json", check=False
        )
        if found.returncode == 0:
            break
        assert time.monotonic() < deadline, "no PersistentVolumeClaim model-llama3-8b-0 after 30 s"
        time.sleep(0.25)
    claim = json.loads(found.stdout)
    assert claim["spec"]["resources"]["requests"]["storage"] == "40Gi"
    assert claim["metadata"]["labels"]["lorapack.io/pool"] == "llama3-8b"


BAD_VOLUMES = [
    pytest.param(
        {"type": "PersistentVolumeClaim"}, "baseModel.volume.size is required", id="claim-no-size"
    ),
    pytest.param(
        {"type": "Ephemeral"}, "baseModel.volume.size is required", id="ephemeral-no-size"
    ),
    pytest.param(
        {"type": "HostPath"}, "hostPath is required with type HostPath", id="no-host-path"
    ),
    pytest.param({"hostPath": "/srv"}, "only allowed with it", id="host-path-on-emptydir"),
    pytest.param(
        {"storageClassName": "gp3"}, "storageClassName is only used", id="class-on-emptydir"
    ),
    pytest.param({"type": "Tmpfs"}, 'Unsupported value: "Tmpfs"', id="type-enum"),
    pytest.param({"size": "lots"}, "spec.baseModel.volume.size", id="size-pattern"),
    pytest.param(
        {"type": "HostPath", "hostPath": "relative/dir"},
        "spec.baseModel.volume.hostPath",
        id="host-path-absolute",
    ),
]


@pytest.mark.parametrize(("volume", "message"), BAD_VOLUMES)
def test_cel_refuses_bad_volumes_naming_the_field(
    devcluster: DevCluster, lorapack_crds: Path, namespace: str, volume: Any, message: str
) -> None:
    obj = make_pool(namespace=namespace, baseModel={"volume": volume})
    result = devcluster.kubectl("create", "-f", "-", input=json.dumps(obj), check=False)
    assert result.returncode != 0, "the API server accepted an invalid volume"
    assert message in result.stderr, result.stderr


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        pytest.param(
            {"engine": {"resources": {"limits": {"nvidia.com/gpu": "1"}}}},
            "the GPUs come from spec.gpu",
            id="gpu-in-engine-resources",
        ),
        pytest.param(
            {"engine": {"resources": {"requests": {"memory": "16 GiB"}}}},
            "spec.engine.resources.requests.memory",
            id="resource-quantity-pattern",
        ),
        pytest.param(
            {"baseModel": {"source": {"s3": None, "pvc": {"claimName": "w"}}, "volume": {}}},
            "baseModel.volume is only used with source.s3",
            id="volume-with-pvc-source",
        ),
    ],
)
def test_cel_refuses_other_bad_fields(
    devcluster: DevCluster,
    lorapack_crds: Path,
    namespace: str,
    changes: dict[str, Any],
    message: str,
) -> None:
    obj = make_pool(namespace=namespace, **changes)
    result = devcluster.kubectl("create", "-f", "-", input=json.dumps(obj), check=False)
    assert result.returncode != 0, "the API server accepted an invalid pool"
    assert message in result.stderr, result.stderr


def test_per_pod_claim_cannot_change_once_the_pool_exists(
    devcluster: DevCluster, lorapack_crds: Path, namespace: str
) -> None:
    stored_pool(devcluster, namespace, "llama3-8b", VOLUMES["claim"])

    def patch(changes: dict[str, Any]) -> Any:
        args = ("patch", "bmp", "llama3-8b", "-n", namespace, "--type=merge", "-p")
        return devcluster.kubectl(*args, json.dumps({"spec": changes}), check=False)

    for changes in (
        {"baseModel": {"volume": {"size": "80Gi"}}},
        {"baseModel": {"volume": {"type": "EmptyDir"}}},
    ):
        result = patch(changes)
        assert result.returncode != 0, f"the API server accepted {changes}"
        assert "cannot change once the pool exists" in result.stderr, result.stderr
    # Other fields still change freely.
    assert patch({"engine": {"maxLoras": 4}}).returncode == 0

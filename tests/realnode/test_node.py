"""The real-node tier: lorapack's images and pod specs under a real kubelet + containerd + runc.

Runs with `make test-realnode` (inside hack/realnode/in-netns.sh's namespaces).
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

import lorapack
from lorapack_testworld.devcluster import DevCluster
from lorapack_testworld.realnode.images import PRODUCT, image_ref
from lorapack_testworld.realnode.node import NODE_NAME, REAL_NODE_LABEL, RealNode

pytestmark = [pytest.mark.realnode, pytest.mark.slow]


def _wait_pod(cluster: DevCluster, ns: str, name: str, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    pod: dict[str, Any] = {}
    while time.monotonic() < deadline:
        pod = cluster.get_json("pod", name, "-n", ns)
        if (pod.get("status") or {}).get("phase") in ("Running", "Succeeded", "Failed"):
            return pod
        time.sleep(1)
    pytest.fail(f"pod {ns}/{name} did not run within {timeout:.0f} s: {json.dumps(pod)[-2000:]}")


def test_node_joins_with_l20_labels_and_a_gpu(real_node: RealNode, devcluster: DevCluster) -> None:
    node = devcluster.get_json("node", NODE_NAME)
    labels = node["metadata"]["labels"]
    assert labels["nvidia.com/gpu.product"] == "NVIDIA-L20"
    assert labels[REAL_NODE_LABEL] == "true"
    assert node["status"]["allocatable"]["nvidia.com/gpu"] == "1"
    info = node["status"]["nodeInfo"]
    assert info["containerRuntimeVersion"].startswith("containerd://2.")
    assert info["kubeletVersion"] == "v1.37.2"


def test_image_runs_under_restricted_pod_security_as_65532(
    real_node: RealNode, devcluster: DevCluster, namespace: str
) -> None:
    devcluster.kubectl(
        "label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted"
    )
    restricted = {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "image-check", "namespace": namespace},
        "spec": {
            "nodeSelector": {REAL_NODE_LABEL: "true"},
            "restartPolicy": "Never",
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": 65532,
                "runAsGroup": 65532,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [
                {
                    "name": "lorapack",
                    "image": image_ref(PRODUCT, lorapack.__version__),
                    "imagePullPolicy": "Never",
                    "command": [
                        "sh",
                        "-c",
                        "id -u; id -g; lorapack version | tail -1;"
                        " if touch /x 2>/dev/null; then echo writable; else echo read-only; fi",
                    ],
                    "securityContext": restricted,
                }
            ],
        },
    }
    devcluster.apply_objects([pod])
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        phase = _wait_pod(devcluster, namespace, "image-check")["status"]["phase"]
        if phase != "Running":
            break
        time.sleep(1)
    assert phase == "Succeeded", devcluster.get_json("pod", "image-check", "-n", namespace)
    logs = devcluster.kubectl("logs", "image-check", "-n", namespace).stdout.split("\n")
    assert logs[:2] == ["65532", "65532"], logs
    assert lorapack.__version__ in logs[2]
    assert logs[3] == "read-only", logs

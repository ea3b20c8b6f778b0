"""The objects of the scale bench (bench/scale.py): layout, pools, adapters, operator identity.

Not a benchmark itself (the leading underscore keeps `make bench` from running it).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from lorapack.clients.kube import KubeClient
from lorapack_testworld.basemodels import MODEL_BUCKET
from lorapack_testworld.devcluster import DevCluster
from lorapack_testworld.s3server import S3Server

BUCKET = "scale-adapters"
BASE_MODEL = "lorapack/tiny-llama"
POOL_NS = "lorapack-pools"
OPERATOR_NS = "lorapack-system"
OPERATOR_SA = "lorapack-bench-operator"
# Folder -> test artifact. "-b" folders hold the same files at another URI, so swapping an
# adapter's source between them is a new version (the digest covers the URI).
SOURCES = {"r8/": "r8", "r16/": "r16", "r8-b/": "r8", "r16-b/": "r16"}


@dataclass(frozen=True)
class Layout:
    """Where adapter i lives and what it asks for."""

    n: int
    pools: int

    @property
    def replicas(self) -> int:
        return max(2, self.n // 10 // self.pools)  # 2: room for the replicas.min = 2 ones

    @property
    def pods(self) -> int:
        return self.replicas * self.pools

    @property
    def teams(self) -> int:
        return max(1, self.n // 200)

    def namespaces(self) -> list[str]:
        return [f"team-{t:02d}" for t in range(self.teams)]

    def key(self, i: int) -> str:
        return f"team-{i % self.teams:02d}/a-{i:05d}"

    def min2(self, i: int) -> bool:
        return i % 10 == 0

    def base_model(self, i: int) -> str:
        # The test adapters' adapter_config.json names this model, and pre-flight refuses a
        # pool serving another name: every pool serves it, so the planner places each adapter
        # over all pools (the heaviest case of decision 10).
        del i
        return BASE_MODEL

    def uri(self, i: int, alternate: bool = False) -> str:
        folder = ("r8", "r16")[i % 2] + ("-b" if alternate else "")
        return f"s3://{BUCKET}/{folder}/"

    def alternate_uri(self, i: int, generation: int) -> str:
        """The source after the next change: generations alternate between the two folders."""
        return self.uri(i, alternate=generation % 2 == 1)


def adapter_body(layout: Layout, i: int) -> dict[str, Any]:
    namespace, name = layout.key(i).split("/")
    spec: dict[str, Any] = {
        "baseModel": layout.base_model(i),
        "servedName": f"{namespace}-{name}",
        "source": {"s3": {"uri": layout.uri(i)}},
    }
    if layout.min2(i):
        spec["replicas"] = {"min": 2, "max": 2}
    return {
        "apiVersion": "lorapack.io/v1alpha1",
        "kind": "LoraAdapter",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def pool_bodies(layout: Layout, s3: S3Server) -> list[dict[str, Any]]:
    """The pools' S3 Secret and the pools (all of one base model)."""
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "pool-s3", "namespace": POOL_NS},
        "stringData": {"AWS_ACCESS_KEY_ID": s3.access_key, "AWS_SECRET_ACCESS_KEY": s3.secret_key},
    }
    pools = []
    for p in range(layout.pools):
        pools.append(
            {
                "apiVersion": "lorapack.io/v1alpha1",
                "kind": "BaseModelPool",
                "metadata": {"name": f"pool-{p:02d}", "namespace": POOL_NS},
                "spec": {
                    "baseModel": {
                        "name": BASE_MODEL,
                        "source": {"s3": {"uri": f"s3://{MODEL_BUCKET}/tiny-llama/"}},
                    },
                    "engine": {"maxLoras": 8, "maxLoraRank": 64, "maxCpuLoras": 64},
                    "gpu": {
                        "type": "L20",
                        "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-L20"},
                    },
                    "replicas": {"min": layout.replicas, "max": layout.replicas},
                    "adapters": {
                        "maxPerReplica": 64,
                        "allowedNamespaces": ["*"],
                        "s3Access": [{"namespaces": ["*"], "uriPrefixes": [f"s3://{BUCKET}/"]}],
                    },
                    "s3": {
                        "endpoint": s3.endpoint,
                        "region": s3.region,
                        "addressingStyle": "path",
                        "credentialsSecretRef": {"name": "pool-s3"},
                    },
                },
            }
        )
    return [secret, *pools]


async def operator_identity(
    kube: KubeClient, cluster: DevCluster, work: Path, flow_schema: str, priority_level: str
) -> Path:
    """A ServiceAccount for the operator (cluster-admin: the bench measures load, not RBAC), a
    FlowSchema matching only it (so the API server counts its requests apart), and a
    kubeconfig with its token. Returns the kubeconfig's path."""
    subject = {"kind": "ServiceAccount", "name": OPERATOR_SA, "namespace": OPERATOR_NS}
    cluster.apply_objects(
        [
            {
                "apiVersion": "v1",
                "kind": "ServiceAccount",
                "metadata": {"name": OPERATOR_SA, "namespace": OPERATOR_NS},
            },
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRoleBinding",
                "metadata": {"name": OPERATOR_SA},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "ClusterRole",
                    "name": "cluster-admin",
                },
                "subjects": [subject],
            },
            {
                "apiVersion": "flowcontrol.apiserver.k8s.io/v1",
                "kind": "FlowSchema",
                "metadata": {"name": flow_schema},
                "spec": {
                    # workload-low: where a ServiceAccount's requests land by default (the
                    # "service-accounts" FlowSchema; the chart ships no FlowSchema of its own).
                    "priorityLevelConfiguration": {"name": priority_level},
                    "matchingPrecedence": 500,
                    "distinguisherMethod": {"type": "ByUser"},
                    "rules": [
                        {
                            "subjects": [
                                {
                                    "kind": "ServiceAccount",
                                    "serviceAccount": {
                                        "name": OPERATOR_SA,
                                        "namespace": OPERATOR_NS,
                                    },
                                }
                            ],
                            "resourceRules": [
                                {
                                    "verbs": ["*"],
                                    "apiGroups": ["*"],
                                    "resources": ["*"],
                                    "clusterScope": True,
                                    "namespaces": ["*"],
                                }
                            ],
                            "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}],
                        }
                    ],
                },
            },
        ]
    )
    token = await kube.create_token(OPERATOR_NS, OPERATOR_SA, seconds=6 * 3600)
    admin = yaml.safe_load(cluster.kubeconfig.read_text())
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": admin["clusters"],
        "users": [{"name": OPERATOR_SA, "user": {"token": token}}],
        "contexts": [
            {
                "name": OPERATOR_SA,
                "context": {"cluster": admin["clusters"][0]["name"], "user": OPERATOR_SA},
            }
        ],
        "current-context": OPERATOR_SA,
    }
    path = work / "operator.kubeconfig"
    path.write_text(json.dumps(config))
    return path

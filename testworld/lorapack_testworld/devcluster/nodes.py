"""Simulated GPU node shapes and the Node objects built from them.

Pure code: `NodeShape` describes one kind of fake node (GPU model, count, labels as NVIDIA's
GPU feature discovery would set them), `parse_node_spec` reads the `--nodes l20:4,h100:2`
syntax, and `node_manifests` turns shapes into Node dicts that kwok then keeps Ready. Used by
`devcluster.cluster` and the `python -m lorapack_testworld.devcluster` command line.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Sequence
from typing import Any, Final

__all__ = [
    "DEFAULT_NODES",
    "GPU_RESOURCE",
    "KWOK_NODE_ANNOTATION",
    "PRESETS",
    "NodeShape",
    "node_manifests",
    "parse_node_spec",
]

GPU_RESOURCE: Final = "nvidia.com/gpu"
# kwok runs with --manage-nodes-with-annotation-selector on this annotation, so it manages only
# the nodes this module creates and never touches a Node someone adds by hand.
KWOK_NODE_ANNOTATION: Final = ("kwok.x-k8s.io/node", "fake")
_NAME_RE: Final = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


@dataclasses.dataclass(frozen=True)
class NodeShape:
    """One kind of simulated GPU node, `count` of them.

    Labels follow NVIDIA GPU feature discovery (`nvidia.com/gpu.product`, `.memory` in MiB,
    `.count`, `.family`, `.present`), which is what pools select on.
    """

    name: str
    """Node name prefix: nodes are called `<name>-0`, `<name>-1`, ..."""
    product: str
    """`nvidia.com/gpu.product` label, e.g. NVIDIA-L20."""
    gpu_memory_mib: int
    """`nvidia.com/gpu.memory` label: memory of one GPU in MiB."""
    family: str
    """`nvidia.com/gpu.family` label, e.g. ada-lovelace or hopper."""
    gpus: int = 1
    """GPUs per node: the node's `nvidia.com/gpu` capacity and `nvidia.com/gpu.count` label."""
    count: int = 1
    """How many nodes of this shape."""
    cpu: str = "32"
    memory: str = "256Gi"
    max_pods: int = 110
    extra_labels: tuple[tuple[str, str], ...] = ()
    """More labels, as (key, value) pairs (a tuple keeps the shape hashable)."""

    def __post_init__(self) -> None:
        if not _NAME_RE.match(self.name) or len(self.name) > 50:
            raise ValueError(
                f"NodeShape.name {self.name!r} must be a DNS label prefix (lowercase letters, "
                "digits and '-', at most 50 characters), e.g. 'l20'"
            )
        for field in ("gpus", "count", "gpu_memory_mib", "max_pods"):
            value = getattr(self, field)
            if value < 0 or (field != "count" and value == 0):
                raise ValueError(f"NodeShape.{field} must be positive, got {value}")

    def with_count(self, count: int) -> NodeShape:
        """The same shape, `count` nodes."""
        return dataclasses.replace(self, count=count)

    def labels(self, node_name: str) -> dict[str, str]:
        """The labels of one node of this shape."""
        out = {
            "kubernetes.io/hostname": node_name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
            "type": "kwok",
            "nvidia.com/gpu.present": "true",
            "nvidia.com/gpu.product": self.product,
            "nvidia.com/gpu.memory": str(self.gpu_memory_mib),
            "nvidia.com/gpu.count": str(self.gpus),
            "nvidia.com/gpu.family": self.family,
        }
        out.update(dict(self.extra_labels))
        return out


L20: Final = NodeShape(
    name="l20", product="NVIDIA-L20", gpu_memory_mib=46068, family="ada-lovelace", gpus=1
)
H100: Final = NodeShape(
    name="h100",
    product="NVIDIA-H100-80GB-HBM3",
    gpu_memory_mib=81559,
    family="hopper",
    gpus=8,
    cpu="192",
    memory="2Ti",
)
PRESETS: Final[dict[str, NodeShape]] = {"l20": L20, "h100": H100}
DEFAULT_NODES: Final[tuple[NodeShape, ...]] = (L20.with_count(4), H100.with_count(2))


def parse_node_spec(spec: str) -> list[NodeShape]:
    """Parse `NAME:COUNT[:GPUS],...`, e.g. `l20:4,h100:2` or `l20:2:4` (2 nodes of 4 L20s).

    NAME is a preset (see PRESETS). Raises ValueError naming the bad part and the fix.
    """
    shapes: list[NodeShape] = []
    parts = [p.strip() for p in spec.split(",") if p.strip()]
    if not parts:
        raise ValueError("--nodes is empty: give NAME:COUNT[:GPUS] pairs, e.g. l20:4,h100:2")
    for part in parts:
        fields = part.split(":")
        if len(fields) not in (2, 3):
            raise ValueError(
                f"--nodes entry {part!r} must be NAME:COUNT or NAME:COUNT:GPUS, e.g. l20:4"
            )
        name, count_text = fields[0], fields[1]
        if name not in PRESETS:
            raise ValueError(
                f"--nodes entry {part!r}: unknown node shape {name!r}; "
                f"known shapes: {', '.join(sorted(PRESETS))}"
            )
        shape = PRESETS[name]
        count = _non_negative(part, "COUNT", count_text)
        shape = shape.with_count(count)
        if len(fields) == 3:
            gpus = _non_negative(part, "GPUS", fields[2])
            if gpus == 0:
                raise ValueError(f"--nodes entry {part!r}: GPUS must be at least 1")
            shape = dataclasses.replace(shape, gpus=gpus)
        shapes.append(shape)
    names = [s.name for s in shapes]
    if len(set(names)) != len(names):
        raise ValueError(f"--nodes {spec!r} names a shape twice: give each shape once")
    return shapes


def _non_negative(part: str, what: str, text: str) -> int:
    if not text.isdigit():
        raise ValueError(f"--nodes entry {part!r}: {what} must be a whole number, got {text!r}")
    return int(text)


def node_manifests(
    shapes: Iterable[NodeShape],
    existing: Sequence[str] = (),
    *,
    kubelet_port: int,
    kubelet_version: str = "",
) -> list[dict[str, Any]]:
    """Node objects for `shapes`, numbered after the names in `existing`.

    Status is set on create (the API server accepts it for Nodes): capacity and allocatable
    carry the GPUs so the scheduler does real GPU accounting. The only address is the Hostname
    `localhost` and the kubelet port is kwok's server on 127.0.0.1, so when the API server
    proxies `kubectl logs` / `exec` to a "kubelet" it reaches kwok on loopback: no InternalIP
    and no DNS lookup of a node name ever leaves the host.
    """
    taken = set(existing)
    out: list[dict[str, Any]] = []
    for shape in shapes:
        index = 0
        for _ in range(shape.count):
            while f"{shape.name}-{index}" in taken:
                index += 1
            name = f"{shape.name}-{index}"
            taken.add(name)
            resources = {
                "cpu": shape.cpu,
                "memory": shape.memory,
                "pods": str(shape.max_pods),
                "ephemeral-storage": "1Ti",
                GPU_RESOURCE: str(shape.gpus),
            }
            out.append(
                {
                    "apiVersion": "v1",
                    "kind": "Node",
                    "metadata": {
                        "name": name,
                        "labels": shape.labels(name),
                        "annotations": {
                            KWOK_NODE_ANNOTATION[0]: KWOK_NODE_ANNOTATION[1],
                            "node.alpha.kubernetes.io/ttl": "0",
                        },
                    },
                    "spec": {},
                    "status": {
                        "capacity": resources,
                        "allocatable": dict(resources),
                        "addresses": [{"type": "Hostname", "address": "localhost"}],
                        "daemonEndpoints": {"kubeletEndpoint": {"Port": kubelet_port}},
                        "nodeInfo": {
                            "architecture": "amd64",
                            "operatingSystem": "linux",
                            "osImage": "kwok simulated GPU node",
                            "kernelVersion": "",
                            "containerRuntimeVersion": "kwok://simulated",
                            "kubeletVersion": kubelet_version,
                            "kubeProxyVersion": "",
                            "machineID": "",
                            "systemUUID": "",
                            "bootID": "",
                        },
                    },
                }
            )
    return out

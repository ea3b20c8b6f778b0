"""A real local Kubernetes control plane (etcd, apiserver, controller-manager, scheduler, kwok)
with simulated GPU nodes, for the integration tier and the demo.

    DevCluster.start(workdir=None, nodes=DEFAULT_NODES, crds_dir=<repo>/crds) -> DevCluster
    python -m lorapack_testworld.devcluster up|down|status [--nodes l20:4,h100:2] [--workdir DIR]

Modules: cluster (DevCluster), client (kubectl and helm against it: ClusterClient,
ClusterError), components (the components' command lines), nodes (NodeShape, presets, --nodes
parsing, Node objects), pki (certificates, kubeconfigs), processes (spawn, stop, socket audit),
tools (where the binaries built by hack/build-tools.sh are), and kwok stage files (*.yaml) next
to them.
"""

from lorapack_testworld.devcluster.cluster import (
    DEFAULT_CRDS_DIR,
    POD_CIDR,
    SERVICE_CIDR,
    ClusterError,
    DevCluster,
)
from lorapack_testworld.devcluster.nodes import DEFAULT_NODES, PRESETS, NodeShape, parse_node_spec
from lorapack_testworld.devcluster.tools import Tools, ToolsMissing

__all__ = [
    "DEFAULT_CRDS_DIR",
    "DEFAULT_NODES",
    "POD_CIDR",
    "PRESETS",
    "SERVICE_CIDR",
    "ClusterError",
    "DevCluster",
    "NodeShape",
    "Tools",
    "ToolsMissing",
    "parse_node_spec",
]

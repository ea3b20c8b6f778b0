"""A fake node's kubelet going down and coming back, for fault tests.

kwok keeps renewing a node's Lease whatever its annotations say, so a fake node never turns
`Unknown` by itself. `KubeletDown` plays what a cluster shows when a node's kubelet loses its
container runtime: the node and its pods carry `KUBELET_DOWN` (the devcluster's kwok stages then
leave them alone: no heartbeat, no re-initialisation, no pod readiness flips); the node's Ready
condition is False (`KubeletNotReady`, re-posted every second while down, as such a kubelet keeps
reporting, which also overrides a heartbeat kwok had scheduled before); its pods' Ready is False
(what the node lifecycle controller does to the pods of a node that stopped being Ready), so they
leave every EndpointSlice; the controller-manager taints the node by itself. On exit the marks
go: kwok re-initialises the node (Ready again, the taint is lifted) and flips its pods' Ready back
where their readiness gates hold, as a restarted kubelet would. Bounded: the refresher thread
stops when the block ends.
"""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime
from typing import Any, Protocol

__all__ = ["KUBELET_DOWN", "KubeletDown"]

KUBELET_DOWN = "devcluster.lorapack.io/kubelet-down"


class Kubectl(Protocol):
    """What KubeletDown needs of DevCluster."""

    def kubectl(self, *args: str, check: bool = True) -> Any: ...

    def get_json(self, *args: str) -> Any: ...


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class KubeletDown:
    """`with KubeletDown(cluster, node) as down:` the node is NotReady inside the block."""

    def __init__(self, cluster: Kubectl, node: str, period: float = 1.0) -> None:
        self.cluster, self.node, self.period = cluster, node, period
        self.pods: list[tuple[str, str]] = []
        self._since = _now()
        """When the kubelet went down: the pods' re-posted condition is the same each round,
        so the API server takes it as a no-op (no pod event every second)."""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._refresh, daemon=True)

    def __enter__(self) -> KubeletDown:
        self._since = _now()
        listed = self.cluster.get_json("pods", "-A", f"--field-selector=spec.nodeName={self.node}")
        self.pods = [(p["metadata"]["namespace"], p["metadata"]["name"]) for p in listed["items"]]
        self.cluster.kubectl("annotate", "--overwrite", "node", self.node, f"{KUBELET_DOWN}=true")
        for namespace, name in self.pods:
            self.cluster.kubectl("annotate", "--overwrite", "pod", name, "-n", namespace,
                                 f"{KUBELET_DOWN}=true")  # fmt: skip
        self._post()
        self._thread.start()
        return self

    def _post(self) -> None:
        now = _now()
        node = {"type": "Ready", "status": "False", "reason": "KubeletNotReady",
                "message": "container runtime is down (devcluster fault)",
                "lastHeartbeatTime": now, "lastTransitionTime": now}  # fmt: skip
        ready = self.cluster.get_json("node", self.node)["status"].get("conditions", [])
        if any(c["type"] == "Ready" and c["status"] != "False" for c in ready):
            self.cluster.kubectl("patch", "node", self.node, "--subresource=status",
                                 "--type=strategic", "-p",
                                 json.dumps({"status": {"conditions": [node]}}))  # fmt: skip
        for namespace, name in self.pods:
            pod = {"type": "Ready", "status": "False", "reason": "NodeNotReady",
                   "lastTransitionTime": self._since}  # fmt: skip
            self.cluster.kubectl("patch", "pod", name, "-n", namespace, "--subresource=status",
                                 "--type=strategic", "-p",
                                 json.dumps({"status": {"conditions": [pod]}}),
                                 check=False)  # fmt: skip

    def _refresh(self) -> None:
        while not self._stop.wait(self.period):
            try:
                self._post()
            except Exception:  # a refused patch is retried on the next round
                continue

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        self.cluster.kubectl("annotate", "node", self.node, f"{KUBELET_DOWN}-", check=False)
        for namespace, name in self.pods:
            self.cluster.kubectl("annotate", "pod", name, "-n", namespace, f"{KUBELET_DOWN}-",
                                 check=False)  # fmt: skip

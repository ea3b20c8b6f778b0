"""The command lines of the dev cluster's control-plane components.

Used by `DevCluster._boot` (lorapack_testworld.devcluster.cluster), which starts them in this
order and waits for each: etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok.
Every listener is on 127.0.0.1 at a port chosen at runtime (`Ports`), every file in the work
folder. Pure: paths and ports in, argv out.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

from lorapack_testworld.devcluster.nodes import KWOK_NODE_ANNOTATION
from lorapack_testworld.devcluster.pki import Pki
from lorapack_testworld.devcluster.processes import free_port
from lorapack_testworld.devcluster.tools import Tools

__all__ = [
    "Ports",
    "apiserver_argv",
    "controller_manager_argv",
    "etcd_argv",
    "kwok_argv",
    "scheduler_argv",
]


@dataclasses.dataclass(frozen=True)
class Ports:
    """The loopback ports of one cluster's components."""

    etcd: int
    etcd_peer: int
    api: int
    controller_manager: int
    scheduler: int
    kwok: int
    """kwok's kubelet-like server: the kubelet port of every fake node."""

    @classmethod
    def allocate(cls) -> Ports:
        """Six ports the kernel just handed out."""
        etcd, peer, api, kcm, sched, kwok = (free_port() for _ in range(6))
        return cls(etcd, peer, api, kcm, sched, kwok)

    @property
    def etcd_url(self) -> str:
        return f"http://127.0.0.1:{self.etcd}"


def etcd_argv(tools: Tools, work: Path, ports: Ports) -> list[str]:
    """One etcd member, its data in `work`/etcd."""
    etcd_url = ports.etcd_url
    peer_url = f"http://127.0.0.1:{ports.etcd_peer}"
    return [
        str(tools.etcd),
        "--name=devcluster",
        f"--data-dir={work / 'etcd'}",
        f"--listen-client-urls={etcd_url}",
        f"--advertise-client-urls={etcd_url}",
        f"--listen-peer-urls={peer_url}",
        f"--initial-advertise-peer-urls={peer_url}",
        f"--initial-cluster=devcluster={peer_url}",
        "--unsafe-no-fsync=true",  # throwaway data: durability buys nothing here
        "--log-level=warn",
    ]


def apiserver_argv(tools: Tools, pki: Pki, ports: Ports, service_cidr: str) -> list[str]:
    """The API server on https://127.0.0.1:<api>, Node and RBAC authorization."""
    return [
        str(tools.kube_apiserver),
        f"--etcd-servers={ports.etcd_url}",
        "--bind-address=127.0.0.1",
        f"--secure-port={ports.api}",
        # Without it the API server advertises the default-route address; the
        # `kubernetes` Endpoints reconciler would then reject 127.0.0.1, so it is off.
        "--advertise-address=127.0.0.1",
        "--endpoint-reconciler-type=none",
        f"--tls-cert-file={pki.serving_cert}",
        f"--tls-private-key-file={pki.serving_key}",
        f"--client-ca-file={pki.ca_cert}",
        "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
        f"--service-account-key-file={pki.sa_public}",
        f"--service-account-signing-key-file={pki.sa_private}",
        f"--service-cluster-ip-range={service_cidr}",
        "--authorization-mode=Node,RBAC",
        # The aggregation layer's request-header authentication, as kubeadm configures
        # it; without it every component that delegates authentication logs errors.
        f"--requestheader-client-ca-file={pki.front_proxy_ca}",
        "--requestheader-allowed-names=front-proxy-client",
        "--requestheader-username-headers=X-Remote-User",
        "--requestheader-group-headers=X-Remote-Group",
        "--requestheader-extra-headers-prefix=X-Remote-Extra-",
        f"--proxy-client-cert-file={pki.front_proxy_client.cert}",
        f"--proxy-client-key-file={pki.front_proxy_client.key}",
        "--allow-privileged=true",
        "--profiling=false",
    ]


def controller_manager_argv(
    tools: Tools, work: Path, pki: Pki, kubeconfig: Path, ports: Ports
) -> list[str]:
    """kube-controller-manager, each controller as its own service account."""
    return [
        str(tools.kube_controller_manager),
        f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        "--bind-address=127.0.0.1",
        f"--secure-port={ports.controller_manager}",
        f"--cert-dir={work / 'controller-manager'}",
        "--leader-elect=false",
        # Each controller acts as its own service account, bound by bootstrap RBAC.
        "--use-service-account-credentials=true",
        f"--service-account-private-key-file={pki.sa_private}",
        f"--root-ca-file={pki.ca_cert}",
        f"--cluster-signing-cert-file={pki.ca_cert}",
        f"--cluster-signing-key-file={pki.ca_key}",
    ]


def scheduler_argv(tools: Tools, work: Path, kubeconfig: Path, ports: Ports) -> list[str]:
    """kube-scheduler."""
    return [
        str(tools.kube_scheduler),
        f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        "--bind-address=127.0.0.1",
        f"--secure-port={ports.scheduler}",
        f"--cert-dir={work / 'scheduler'}",
        "--leader-elect=false",
    ]


def kwok_argv(
    tools: Tools,
    kubeconfig: Path,
    pki: Pki,
    ports: Ports,
    stages: Sequence[Path],
    pod_cidr: str,
) -> list[str]:
    """kwok with lorapack's `stages`, managing only the nodes devcluster.nodes creates."""
    return [
        str(tools.kwok),
        f"--kubeconfig={kubeconfig}",
        f"--config={','.join(str(s) for s in stages)}",
        # Only the nodes devcluster.nodes creates (they carry the annotation).
        "--manage-all-nodes=false",
        f"--manage-nodes-with-annotation-selector={'='.join(KWOK_NODE_ANNOTATION)}",
        f"--cidr={pod_cidr}",
        "--node-lease-duration-seconds=40",
        # kwok's kubelet-like server (logs, exec, port-forward) on loopback: the API
        # server reaches it through each node's Hostname "localhost" and kubelet port.
        # No --node-ip: nodes get no InternalIP, so nothing outside loopback is dialled.
        f"--server-address=127.0.0.1:{ports.kwok}",
        f"--tls-cert-file={pki.kwok_serving_cert}",
        f"--tls-private-key-file={pki.kwok_serving_key}",
    ]

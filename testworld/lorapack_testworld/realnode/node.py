"""A real Kubernetes node next to the local control plane: containerd + runc + CNI bridge,
kubelet and kube-proxy (binaries from hack/realnode/build-node.sh, runc/CNI from Debian).

Runs only inside the namespaces of hack/realnode/in-netns.sh (LORAPACK_REALNODE_NETNS=1): the
node address lives on that namespace's loopback, pods get addresses on a bridge there, and no
masquerade or route leads off the machine. Every file (containerd's root and state, the
kubelet's root, pod logs, CNI config) is under one work folder; images are imported from the
OCI archives `make image` wrote, never pulled. `stop()` ends the processes it started (by PID)
and removes the pods' mounts; the namespace's end removes the rest.

The node carries the L20 labels of the kwok GPU nodes plus `lorapack.io/real-node=true`, and
advertises `nvidia.com/gpu` through a node-status patch (an extended resource the kubelet keeps).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from lorapack_testworld.devcluster import SERVICE_CIDR, DevCluster
from lorapack_testworld.devcluster.processes import free_port
from lorapack_testworld.devcluster.tools import cache_root
from lorapack_testworld.paths import REPO_ROOT

__all__ = ["NODE_NAME", "POD_SUBNET", "RealNode", "RealNodeError", "node_tools_dir"]

NODE_NAME = os.environ.get("LORAPACK_REALNODE_NODE_NAME", "realnode-0")
POD_SUBNET = "10.250.0.0/24"
REAL_NODE_LABEL = "lorapack.io/real-node"
GPU_LABELS = {"nvidia.com/gpu.product": "NVIDIA-L20", "nvidia.com/gpu.memory": "49140"}
PAUSE_REF = "localhost/lorapack-pause:1"


class RealNodeError(RuntimeError):
    """The node could not start; the message names the component and its log."""


def node_tools_dir(name: str) -> Path:
    """The cache folder hack/realnode/build-node.sh builds `name` (k8s-node|containerd) into."""
    out = subprocess.run(
        [str(REPO_ROOT / "hack" / "realnode" / "build-node.sh"), "--print-dir", name],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    path = Path(out)
    if not (path / ".complete").exists():
        raise RealNodeError(f"{path} is not built: run `make node-tools`")
    return path


class RealNode:
    """One kubelet node; build with `start()`."""

    def __init__(self, cluster: DevCluster, workdir: Path) -> None:
        if os.environ.get("LORAPACK_REALNODE_NETNS") != "1":
            raise RealNodeError("run inside hack/realnode/in-netns.sh (make test-realnode)")
        self.cluster = cluster
        self.workdir = workdir
        self.node_ip = os.environ.get("LORAPACK_REALNODE_NODE_IP", "10.250.255.1")
        self.cgroup_root = "/" + os.environ.get(
            "LORAPACK_REALNODE_CGROUP_ROOT", "lorapack-realnode"
        )
        self.k8s = node_tools_dir("k8s-node")
        self.ctd = node_tools_dir("containerd")
        self.socket = workdir / "containerd" / "containerd.sock"
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self._args: dict[str, list[str]] = {}

    # ------------------------------------------------------------------ processes

    def _spawn(self, name: str, argv: list[str]) -> None:
        env = {**os.environ, "PATH": f"{self.ctd}:{os.environ.get('PATH', '')}"}
        with (self.workdir / "logs" / f"{name}.log").open("ab") as log:
            self.procs[name] = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        self._args[name] = argv

    def log_tail(self, name: str, lines: int = 40) -> str:
        path = self.workdir / "logs" / f"{name}.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def _wait(self, what: str, check: object, timeout: float, log: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            proc = self.procs.get(log)
            if proc is not None and proc.poll() is not None:
                raise RealNodeError(f"{log} exited {proc.returncode}:\n{self.log_tail(log)}")
            if callable(check) and check():
                return
            time.sleep(0.5)
        raise RealNodeError(f"{what}: not within {timeout:.0f} s\n{self.log_tail(log)}")

    def stop_process(self, name: str, sig: int = signal.SIGTERM, timeout: float = 20) -> None:
        proc = self.procs.pop(name, None)
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)

    def restart(self, name: str) -> None:
        """Stop `name` (kubelet, kube-proxy) and start it again with the same arguments."""
        argv = self._args[name]
        self.stop_process(name)
        self._spawn(name, argv)

    # ------------------------------------------------------------------ start

    @classmethod
    def start(cls, cluster: DevCluster, workdir: Path, archives: list[Path]) -> RealNode:
        node = cls(cluster, workdir)
        try:
            node._start(archives)
        except BaseException:
            node.stop()
            raise
        return node

    def _start(self, archives: list[Path]) -> None:
        for sub in ("logs", "containerd", "cni", "kubelet", "pod-logs"):
            (self.workdir / sub).mkdir(parents=True, exist_ok=True)
        self._write_containerd_config()
        self._spawn(
            "containerd",
            [str(self.ctd / "containerd"), "--config", str(self.workdir / "containerd.toml")],
        )
        self._wait("containerd socket", self.socket.exists, 30, "containerd")
        self.import_image(self._pause_archive())
        for archive in archives:
            self.import_image(archive)
        self._start_kubelet()
        self._wait("node registered", self._node_exists, 90, "kubelet")
        self._advertise_gpu()
        # A route for the Service range (the namespace has no default route): connect() needs
        # one before kube-proxy's DNAT in OUTPUT sends the packet to a pod on the bridge.
        subprocess.run(
            ["ip", "route", "replace", SERVICE_CIDR, "dev", "lo"], check=True, capture_output=True
        )
        self._start_kube_proxy()
        self._wait("node Ready", self._node_ready, 120, "kubelet")

    def ctr(self, *args: str, timeout: float = 300) -> str:
        result = subprocess.run(
            [str(self.ctd / "ctr"), "--address", str(self.socket), "-n", "k8s.io", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if result.returncode != 0:
            raise RealNodeError(f"ctr {' '.join(args)}: {result.stderr[-2000:]}")
        return result.stdout

    def import_image(self, archive: Path) -> None:
        # Images stay: the kubelet's image GC is off (imageGCHighThresholdPercent 100).
        self.ctr("images", "import", "--no-unpack=false", str(archive))

    def _pause_archive(self) -> Path:
        """A pause image (static catatonit, FROM scratch), made once into the image cache."""
        out = cache_root() / "images" / "lorapack-pause-1.oci.tar"
        if out.exists():
            return out
        from lorapack_testworld.realnode.images import Podman

        ctx = self.workdir / "pause"
        ctx.mkdir(exist_ok=True)
        shutil.copy("/usr/bin/catatonit", ctx / "pause")
        (ctx / "Containerfile").write_text(
            'FROM scratch\nCOPY pause /pause\nUSER 65535:65535\nENTRYPOINT ["/pause", "-P"]\n'
        )
        podman = Podman(self.workdir / "podman-pause")
        try:
            podman("build", "--quiet", "--network=none", "-t", PAUSE_REF, str(ctx))
            tmp = out.with_suffix(".tmp")
            podman("save", "--quiet", "--format", "oci-archive", "-o", str(tmp), PAUSE_REF)
            tmp.rename(out)
        finally:
            podman.close()
        return out

    def _write_containerd_config(self) -> None:
        w = self.workdir
        (w / "cni" / "10-bridge.conflist").write_text(
            json.dumps(
                {
                    "cniVersion": "1.0.0",
                    "name": "realnode",
                    "plugins": [
                        {
                            "type": "bridge",
                            "bridge": "cni0",
                            "isGateway": True,
                            # No masquerade: pod traffic never leaves this namespace.
                            "ipMasq": False,
                            "hairpinMode": True,
                            "ipam": {
                                "type": "host-local",
                                "ranges": [[{"subnet": POD_SUBNET}]],
                                "routes": [{"dst": "0.0.0.0/0"}],
                                "dataDir": str(w / "cni" / "ipam"),
                            },
                        },
                        {"type": "loopback"},
                    ],
                }
            )
        )
        cri = 'plugins."io.containerd.cri.v1.runtime"'
        (w / "containerd.toml").write_text(
            f"""version = 3
root = "{w}/containerd/root"
state = "{w}/containerd/state"
[grpc]
  address = "{self.socket}"
[ttrpc]
  address = "{self.socket}.ttrpc"
[plugins."io.containerd.grpc.v1.cri"]
  disable_tcp_service = true
[{cri}]
  enable_selinux = false
  # Root here cannot lower oom_score_adj (no CAP_SYS_RESOURCE).
  restrict_oom_score_adj = true
  # Pod network namespaces under the state folder, not the host's /var/run/netns.
  netns_mounts_under_state_dir = true
  disable_hugetlb_controller = true
  tolerate_missing_hugetlb_controller = true
  [{cri}.containerd]
    default_runtime_name = "runc"
    [{cri}.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [{cri}.containerd.runtimes.runc.options]
        BinaryName = "/usr/sbin/runc"
        SystemdCgroup = false
  [{cri}.cni]
    bin_dirs = ["/usr/lib/cni"]
    conf_dir = "{w}/cni"
[plugins."io.containerd.cri.v1.images"]
  [plugins."io.containerd.cri.v1.images".pinned_images]
    sandbox = "{PAUSE_REF}"
"""
        )

    def _start_kubelet(self) -> None:
        w = self.workdir
        resolv = w / "resolv.conf"
        resolv.write_text("")  # no DNS in this namespace; tests use IPs
        config = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "failCgroupV1": False,  # this host is cgroup v1 (hybrid)
            "cgroupDriver": "cgroupfs",
            "cgroupRoot": self.cgroup_root,
            "containerRuntimeEndpoint": f"unix://{self.socket}",
            "address": self.node_ip,
            "port": free_port(),
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": free_port(),
            "authentication": {"anonymous": {"enabled": True}, "webhook": {"enabled": False}},
            "authorization": {"mode": "AlwaysAllow"},
            "podLogsDir": str(w / "pod-logs"),
            "resolvConf": str(resolv),
            "failSwapOn": False,
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "evictionHard": {
                "memory.available": "100Mi",
                "nodefs.available": "1%",
                "imagefs.available": "1%",
            },
            "serializeImagePulls": False,
            "syncFrequency": "5s",
            "nodeStatusUpdateFrequency": "5s",
            "fileCheckFrequency": "5s",
            "maxPods": 20,
        }
        (w / "kubelet.yaml").write_text(json.dumps(config))
        labels = {**GPU_LABELS, REAL_NODE_LABEL: "true"}
        self._spawn(
            "kubelet",
            [
                str(self.k8s / "kubelet"),
                f"--config={w / 'kubelet.yaml'}",
                f"--kubeconfig={self.cluster.kubeconfig}",
                f"--root-dir={w / 'kubelet'}",
                f"--hostname-override={NODE_NAME}",
                f"--node-ip={self.node_ip}",
                "--node-labels=" + ",".join(f"{k}={v}" for k, v in labels.items()),
                "--v=1",
            ],
        )

    def _start_kube_proxy(self) -> None:
        w = self.workdir
        config = {
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
            "kind": "KubeProxyConfiguration",
            "mode": "iptables",
            "clientConnection": {"kubeconfig": str(self.cluster.kubeconfig)},
            "hostnameOverride": NODE_NAME,
            "bindAddress": self.node_ip,
            "clusterCIDR": POD_SUBNET,
            "healthzBindAddress": f"127.0.0.1:{free_port()}",
            "metricsBindAddress": f"127.0.0.1:{free_port()}",
            # 0: leave the host-wide conntrack sysctls alone.
            "conntrack": {"maxPerCore": 0, "min": 0},
        }
        (w / "kube-proxy.yaml").write_text(json.dumps(config))
        self._spawn(
            "kube-proxy", [str(self.k8s / "kube-proxy"), f"--config={w / 'kube-proxy.yaml'}"]
        )

    # ------------------------------------------------------------------ node object

    def _node(self) -> dict[str, object] | None:
        result = self.cluster.kubectl("get", "node", NODE_NAME, "-o", "json", check=False)
        return json.loads(result.stdout) if result.returncode == 0 else None

    def _node_exists(self) -> bool:
        return self._node() is not None

    def _node_ready(self) -> bool:
        node = self._node() or {}
        status = node.get("status") or {}
        assert isinstance(status, dict)
        return any(
            c.get("type") == "Ready" and c.get("status") == "True"
            for c in status.get("conditions") or []
        )

    def _advertise_gpu(self) -> None:
        # Capacity is what is patched; the kubelet derives allocatable from it on its next
        # status update (the documented way to advertise an extended resource).
        patch = {"status": {"capacity": {"nvidia.com/gpu": "1"}}}
        self.cluster.kubectl(
            "patch", "node", NODE_NAME, "--subresource=status", "--type=merge", "-p",
            json.dumps(patch),
        )  # fmt: skip

        def allocatable() -> bool:
            status = (self._node() or {}).get("status") or {}
            assert isinstance(status, dict)
            return (status.get("allocatable") or {}).get("nvidia.com/gpu") == "1"

        self._wait("nvidia.com/gpu allocatable", allocatable, 60, "kubelet")

    # ------------------------------------------------------------------ stop

    def stop(self) -> None:
        """Delete the node's pods' containers, then stop kube-proxy, kubelet and containerd."""
        for name in ("kube-proxy", "kubelet"):
            self.stop_process(name)
        if "containerd" in self.procs:
            with contextlib.suppress(RealNodeError, subprocess.TimeoutExpired):
                for task in self.ctr("tasks", "ls", "-q", timeout=30).split():
                    self.ctr("tasks", "kill", "-s", "SIGKILL", task, timeout=30)
        self.stop_process("containerd")
        # Mounts of pods (overlay rootfs, shm, volumes) die with the mount namespace; unmount
        # what is under the work folder now so the folder can be removed while it lives.
        mounts = [
            line.split()[1]
            for line in Path("/proc/self/mounts").read_text().splitlines()
            if line.split()[1].startswith(str(self.workdir))
        ]
        for mount in sorted(mounts, key=len, reverse=True):
            subprocess.run(["umount", "-l", mount], check=False, capture_output=True)

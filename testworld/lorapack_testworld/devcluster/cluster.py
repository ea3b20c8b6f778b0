"""`DevCluster`: a real Kubernetes control plane on loopback with simulated GPU nodes.

`DevCluster.start()` runs etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok
as child processes (binaries from hack/build-tools.sh), every listener on 127.0.0.1 at a port
chosen at runtime, all state in one work folder. It writes certificates and an admin kubeconfig,
installs lorapack's CRDs and creates fake GPU nodes that kwok keeps Ready and whose pods kwok
runs through lorapack's own stages (*.yaml next to this module). `stop()` sends SIGTERM, then
SIGKILL, to exactly the processes it started and checks that none of their ports still listens.

Used by the pytest fixtures (tests/fixtures/cluster.py), `python -m lorapack_testworld.devcluster`
(`make cluster-up` / `make cluster-down`) and the demo. The components' command lines are in
`lorapack_testworld.devcluster.components`, kubectl and helm against it in
`lorapack_testworld.devcluster.client` (ClusterClient, which DevCluster extends).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Final

from lorapack_testworld.devcluster.client import ClusterClient, ClusterError
from lorapack_testworld.devcluster.components import (
    Ports,
    apiserver_argv,
    controller_manager_argv,
    etcd_argv,
    kwok_argv,
    scheduler_argv,
)
from lorapack_testworld.devcluster.nodes import DEFAULT_NODES, NodeShape
from lorapack_testworld.devcluster.pki import Pki, write_kubeconfig
from lorapack_testworld.devcluster.processes import (
    ProcessRecord,
    listening_sockets,
    spawn,
    stop_processes,
)
from lorapack_testworld.devcluster.tools import REPO_ROOT, Tools

__all__ = [
    "DEFAULT_CRDS_DIR",
    "POD_CIDR",
    "SERVICE_CIDR",
    "ClusterError",
    "DevCluster",
]

log = logging.getLogger("lorapack_testworld.devcluster")

DEFAULT_CRDS_DIR: Final = REPO_ROOT / "crds"
# Documentation ranges (RFC 5737) that are neither loopback (EndpointSlices reject 127/8) nor
# 192.0.2.0/24 (the CI hosts' real subnet). Nothing ever dials them: there is no data plane.
POD_CIDR: Final = "198.51.100.0/24"
# Services: a /16 (65,534 cluster IPs) from 198.18.0.0/15, the range RFC 2544 sets aside for
# benchmarks, so the scale bench's thousands of adapters (ClusterIP opt-in) never fill it; a test
# that wants a full range passes `service_cidr` (tests/integration/test_service_range.py).
SERVICE_CIDR: Final = "198.18.0.0/16"
STAGES_DIR: Final = Path(__file__).resolve().parent
STATE_FILE: Final = "cluster.json"
_START_TIMEOUT: Final = 120.0


class DevCluster(ClusterClient):
    """A running local control plane. Build one with `start()` (or `attach()` to a running one)."""

    def __init__(
        self,
        workdir: Path,
        tools: Tools,
        server: str,
        processes: Sequence[ProcessRecord],
        *,
        owns_workdir: bool,
        kubelet_port: int = 0,
        popens: dict[int, subprocess.Popen[bytes]] | None = None,
    ) -> None:
        self.workdir = workdir
        self.tools = tools
        self.server = server
        self.kubelet_port = kubelet_port
        """kwok's kubelet-like server on 127.0.0.1, the kubelet port of every fake node."""
        self.kubeconfig = workdir / "kubeconfig"
        self.processes = list(processes)
        self._owns_workdir = owns_workdir
        self._popens = popens or {}
        # name -> (argv, env, ports): what `restart` starts again; name -> its readiness check.
        self._launch: dict[str, tuple[list[str], dict[str, str], tuple[int, ...]]] = {}
        self._ready: dict[str, Callable[[], bool]] = {}

    # ----------------------------------------------------------------------------- start / stop

    @classmethod
    def start(
        cls,
        workdir: Path | None = None,
        nodes: Sequence[NodeShape] = DEFAULT_NODES,
        crds_dir: Path | None = DEFAULT_CRDS_DIR,
        *,
        detach: bool = False,
        tools: Tools | None = None,
        service_cidr: str = SERVICE_CIDR,
    ) -> DevCluster:
        """Start etcd, the API server, controller-manager, scheduler and kwok; install the CRDs
        from `crds_dir` (None: none) and create `nodes`. Returns once nodes are Ready.

        `workdir` None makes a temporary folder that `stop()` deletes; a given folder is kept
        (logs stay for debugging) except etcd's data. `detach=True` lets the processes outlive
        this Python process (the `up` command); otherwise they die with it. `service_cidr` is
        the Service cluster IP range.
        Raises ToolsMissing if the binaries are not built, ClusterError if a component fails.
        """
        tools = tools or Tools.locate()
        owns_workdir = workdir is None
        if workdir is None:
            workdir = Path(tempfile.mkdtemp(prefix="lorapack-devcluster-"))
        workdir = workdir.resolve()
        _prepare_workdir(workdir)
        began = time.monotonic()
        cluster = cls(workdir, tools, "", [], owns_workdir=owns_workdir)
        try:
            cluster._boot(nodes, crds_dir, detach=detach, service_cidr=service_cidr)
        except BaseException:
            # Never leave half a cluster behind (including on Ctrl-C), but keep the work
            # folder: the error names a log file in it.
            cluster._owns_workdir = False
            with contextlib.suppress(ClusterError):
                cluster.stop()
            log.error("devcluster failed to start; component logs kept in %s", workdir / "logs")
            raise
        log.info("devcluster ready in %.1f s: %s", time.monotonic() - began, cluster.server)
        return cluster

    def _boot(
        self,
        nodes: Sequence[NodeShape],
        crds_dir: Path | None,
        *,
        detach: bool,
        service_cidr: str = SERVICE_CIDR,
    ) -> None:
        tools, work = self.tools, self.workdir
        pki = Pki.create(work / "pki")
        ports = Ports.allocate()
        self.kubelet_port = ports.kwok

        etcd_health = f"{ports.etcd_url}/health"
        self._spawn("etcd", etcd_argv(tools, work, ports), (ports.etcd, ports.etcd_peer), detach)
        self._wait("etcd", lambda: _http_ok(etcd_health))
        self._ready["etcd"] = lambda: _http_ok(etcd_health)

        self.server = f"https://127.0.0.1:{ports.api}"
        argv = apiserver_argv(tools, pki, ports, service_cidr)
        self._spawn("kube-apiserver", argv, (ports.api,), detach)
        ca = ssl.create_default_context(cafile=str(pki.ca_cert))
        self._wait("kube-apiserver", lambda: _http_ok(f"{self.server}/readyz", ca))
        self._ready["kube-apiserver"] = lambda: _http_ok(f"{self.server}/readyz", ca)

        write_kubeconfig(self.kubeconfig, self.server, pki.ca_cert, pki.admin)
        kcm_config = write_kubeconfig(
            work / "controller-manager.kubeconfig", self.server, pki.ca_cert, pki.controller_manager
        )
        sched_config = write_kubeconfig(
            work / "scheduler.kubeconfig", self.server, pki.ca_cert, pki.scheduler
        )
        argv = controller_manager_argv(tools, work, pki, kcm_config, ports)
        self._spawn("kube-controller-manager", argv, (ports.controller_manager,), detach)
        argv = scheduler_argv(tools, work, sched_config, ports)
        self._spawn("kube-scheduler", argv, (ports.scheduler,), detach)
        stages = sorted(STAGES_DIR.glob("*.yaml"))
        argv = kwok_argv(tools, self.kubeconfig, pki, ports, stages, POD_CIDR)
        self._spawn("kwok", argv, (ports.kwok,), detach)
        insecure = ssl.create_default_context()
        insecure.check_hostname = False
        insecure.verify_mode = ssl.CERT_NONE  # self-signed loopback health endpoints
        self._wait(
            "kube-controller-manager",
            lambda: _http_ok(f"https://127.0.0.1:{ports.controller_manager}/healthz", insecure),
        )
        self._wait(
            "kube-scheduler",
            lambda: _http_ok(f"https://127.0.0.1:{ports.scheduler}/healthz", insecure),
        )
        self._wait("kwok", lambda: _http_ok(f"https://127.0.0.1:{ports.kwok}/healthz", ca))
        # The service-account controller runs: pods can be created in fresh namespaces.
        self._wait(
            "kube-controller-manager",
            lambda: self.kubectl("get", "serviceaccount", "default", check=False).returncode == 0,
        )
        if crds_dir is not None:
            self.install_crds(crds_dir)
        self.add_nodes(nodes)

    def _spawn(self, name: str, argv: list[str], ports: tuple[int, ...], detach: bool) -> None:
        """Start one component with a minimal environment, and record how (for `restart`)."""
        work = self.workdir
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(work),  # kwok and friends read ~/.kwok, ~/.kube: keep them inside
            "KWOK_WORKDIR": str(work / "kwok"),
        }
        self._launch[name] = (list(argv), env, ports)
        popen, record = spawn(name, argv, work / "logs", env=env, ports=ports, detach=detach)
        self._popens[record.pid] = popen
        self.processes.append(record)
        self._save_state()
        log.info("started %s (pid %d) %s", name, record.pid, _ports_text(ports))

    def restart(self, name: str, *, down_seconds: float = 0.0) -> float:
        """Stop one component (SIGTERM, as a node reboot or an upgrade would) and start it again
        with the same flags, ports and data; returns the seconds until it was ready again.
        Only components this process started (not an attached cluster's)."""
        if name not in self._launch:
            raise ClusterError(f"restart {name}: not started by this process")
        argv, env, ports = self._launch[name]
        index = next(i for i, r in enumerate(self.processes) if r.name == name)
        began = time.monotonic()
        # A killed process counts as stopped here (the API server may hold its watches past
        # the grace period); anything else is a problem.
        problems = [
            p
            for p in stop_processes([self.processes[index]], self._popens, grace=20.0)
            if "sent SIGKILL" not in p
        ]
        if problems:
            raise ClusterError(f"restart {name}: " + "; ".join(problems))
        old = self._popens.pop(self.processes[index].pid, None)
        if old is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                old.wait(timeout=10)  # reap it
        time.sleep(down_seconds)
        popen, record = spawn(name, argv, self.workdir / "logs", env=env, ports=ports)
        self._popens[record.pid] = popen
        self.processes[index] = record
        self._save_state()
        ready = self._ready.get(name)
        if ready is not None:
            self._wait(name, ready)
        return time.monotonic() - began

    def stop(self) -> None:
        """Stop every process this cluster started (kwok first, etcd last) and check that none
        of their ports still listens. Raises ClusterError listing anything left behind."""
        problems = stop_processes(list(reversed(self.processes)), self._popens)
        ports = {p for record in self.processes for p in record.ports}
        left = sorted({f"{addr}:{port}" for _, addr, port in listening_sockets() if port in ports})
        if left:
            problems.append(f"ports still listening after stop: {', '.join(left)}")
        for popen in self._popens.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                popen.wait(timeout=1)
        self._popens.clear()
        if self._owns_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
        else:
            shutil.rmtree(self.workdir / "etcd", ignore_errors=True)
            with contextlib.suppress(FileNotFoundError):
                (self.workdir / STATE_FILE).unlink()
        log.info("devcluster stopped")
        if problems:
            raise ClusterError("devcluster stop: " + "; ".join(problems))

    def __enter__(self) -> DevCluster:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ------------------------------------------------------------------------- state on disk

    def _save_state(self) -> None:
        state = {
            "server": self.server,
            "kubeconfig": str(self.kubeconfig),
            "ownsWorkdir": self._owns_workdir,
            "kubeletPort": self.kubelet_port,
            "processes": [p.to_json() for p in self.processes],
        }
        path = self.workdir / STATE_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2))
        tmp.replace(path)

    @classmethod
    def attach(cls, workdir: Path, tools: Tools | None = None) -> DevCluster:
        """The cluster a (possibly other) Python process started in `workdir`."""
        data = json.loads((workdir / STATE_FILE).read_text())
        return cls(
            workdir,
            tools or Tools.locate(),
            str(data["server"]),
            [ProcessRecord.from_json(p) for p in data["processes"]],
            owns_workdir=bool(data.get("ownsWorkdir", False)),
            kubelet_port=int(data.get("kubeletPort", 0)),
        )

    def alive(self) -> dict[str, bool]:
        """Component name -> whether its process still runs."""
        return {p.name: p.alive() for p in self.processes}

    def listening(self) -> list[tuple[int | None, str, int]]:
        """(pid, address, port) of every listening socket of the cluster's processes."""
        return listening_sockets(p.pid for p in self.processes)

    # ----------------------------------------------------------------------------- internals

    def _wait(self, name: str, ready: Callable[[], bool], timeout: float = _START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while True:
            for record in self.processes:
                if not record.alive():
                    raise ClusterError(
                        f"{record.name} exited while waiting for {name}; "
                        f"last log lines of {record.log}:\n{_tail(Path(record.log))}"
                    )
            if ready():
                return
            if time.monotonic() > deadline:
                logs = [r.log for r in self.processes if r.name == name]
                tail = _tail(Path(logs[0])) if logs else ""
                raise ClusterError(f"{name} not ready after {timeout:.0f} s:\n{tail}")
            time.sleep(0.2)


def _prepare_workdir(workdir: Path) -> None:
    state = workdir / STATE_FILE
    if state.exists():
        try:
            data = json.loads(state.read_text())
            records = [ProcessRecord.from_json(p) for p in data["processes"]]
        except (ValueError, KeyError, TypeError):
            records = []  # a state file we cannot read describes no process we could stop
        if any(r.alive() for r in records):
            raise ClusterError(
                f"a devcluster is already running in {workdir}: stop it first "
                "(python -m lorapack_testworld.devcluster down)"
            )
        state.unlink()
    for stale in ("etcd", "pki", "logs", "kwok", "controller-manager", "scheduler"):
        shutil.rmtree(workdir / stale, ignore_errors=True)
    (workdir / "logs").mkdir(parents=True, exist_ok=True)


def _http_ok(url: str, context: ssl.SSLContext | None = None) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2, context=context) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"(no log at {path})"


def _ports_text(ports: Iterable[int]) -> str:
    listed = ", ".join(f"127.0.0.1:{p}" for p in ports)
    return f"on {listed}" if listed else "(no listener)"

"""What the scale bench (bench/scale.py) watches and measures: adapter statuses, EndpointSlices
(zero-replica moments), placements (the simulator's desired states), and the operator process
(CPU, peak RSS, its /metrics, API requests counted by the API server's Priority and Fairness,
a py-spy profile).

Not a benchmark itself (the leading underscore keeps `make bench` from running it).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from lorapack.clients.kube import ADAPTER, KubeClient
from lorapack.clients.kube.resources import ENDPOINTSLICE
from lorapack_testworld.devcluster import DevCluster
from lorapack_testworld.paths import REPO_ROOT

FLOW_SCHEMA = "lorapack-bench-operator"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# ---------------------------------------------------------------------------- what we watch


@dataclass
class AdapterView:
    generation: int = 0
    observed: int = -1
    ready: bool = False
    digest: str = ""
    updated: int = 0
    reason: str = ""
    """Ready condition's reason and message (for the diagnosis of a timeout)."""


class Adapters:
    """Every adapter's status as the watch delivers it; waiters are woken on each event."""

    def __init__(self, kube: KubeClient) -> None:
        self.kube = kube
        self.views: dict[str, AdapterView] = {}
        self.changed = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    async def follow(self) -> None:
        async for event in self.kube.watch(ADAPTER, None):
            meta, status = event.object["metadata"], event.object.get("status") or {}
            key = f"{meta['namespace']}/{meta['name']}"
            if event.type == "DELETED":
                self.views.pop(key, None)
                continue
            conds = status.get("conditions") or []
            self.views[key] = AdapterView(
                generation=int(meta.get("generation") or 0),
                observed=int(status.get("observedGeneration") or -1),
                ready=any(c["type"] == "Ready" and c["status"] == "True" for c in conds),
                digest=str((status.get("artifact") or {}).get("digest") or ""),
                updated=int(status.get("updatedReplicas") or 0),
                reason=next(
                    (f"{c.get('reason')}: {c.get('message', '')[:160]}" for c in conds
                     if c["type"] == "Ready"),
                    "no status",
                ),
            )  # fmt: skip
            self.changed.set()

    def diagnose(self, keys: Iterable[str]) -> str:
        """The most common reasons of the adapters not Ready."""
        reasons = Counter(
            v.reason if (v := self.views.get(k)) is not None else "not seen"
            for k in keys
            if not ((v := self.views.get(k)) is not None and v.ready)
        )
        return "; ".join(f"{n} x {r}" for r, n in reasons.most_common(3))

    def ready_count(self, keys: Iterable[str]) -> int:
        return sum(1 for k in keys if (v := self.views.get(k)) is not None and v.ready)

    async def until(self, done: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not done():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), min(left, 1.0))
        return True


@dataclass
class Slices:
    """Ready endpoints per adapter Service, and zero-replica moments of the watched ones."""

    kube: KubeClient
    watched: set[str]
    """Adapters (namespace/name) with replicas.min >= 2."""
    per_slice: dict[str, tuple[str, int]] = field(default_factory=dict)
    counting: bool = False
    zero_moments: int = 0
    zero_adapters: set[str] = field(default_factory=set)

    def ready(self, service: str) -> int:
        return sum(n for s, n in self.per_slice.values() if s == service)

    async def follow(self) -> None:
        async for event in self.kube.watch(ENDPOINTSLICE, None):
            meta = event.object["metadata"]
            service = (meta.get("labels") or {}).get("kubernetes.io/service-name")
            if not service:
                continue
            key, svc = f"{meta['namespace']}/{meta['name']}", f"{meta['namespace']}/{service}"
            before = self.ready(svc)
            if event.type == "DELETED":
                self.per_slice.pop(key, None)
            else:
                endpoints = event.object.get("endpoints") or []
                n = sum(1 for e in endpoints if (e.get("conditions") or {}).get("ready", True))
                self.per_slice[key] = (svc, n)
            if self.counting and svc in self.watched and before > 0 and self.ready(svc) == 0:
                self.zero_moments += 1
                self.zero_adapters.add(svc)


@dataclass
class Assignments:
    """adapter -> pods holding it, from the simulator's view of the desired-state Secrets."""

    holders: dict[str, set[str]] = field(default_factory=dict)
    by_pod: dict[str, set[str]] = field(default_factory=dict)
    moved: set[str] | None = None
    """While not None: adapters whose set of pods changed."""

    def update(self, pod: str, adapters: set[str]) -> None:
        old = self.by_pod.get(pod, set())
        self.by_pod[pod] = adapters
        for adapter in old ^ adapters:
            pods = self.holders.setdefault(adapter, set())
            (pods.add if adapter in adapters else pods.discard)(pod)
            if self.moved is not None:
                self.moved.add(adapter)


# --------------------------------------------------------------------------- the operator


@dataclass
class Operator:
    workdir: Path
    kubeconfig: Path
    process: subprocess.Popen[bytes] | None = None
    metrics_port: int = 0
    starts: int = 0

    def start(self) -> float:
        self.metrics_port = free_port()
        self.starts += 1
        env = {k: v for k, v in os.environ.items() if not k.startswith(("LORAPACK_", "AWS_"))}
        env |= {
            "PYTHONPATH": str(REPO_ROOT / "operator"),
            "KUBECONFIG": str(self.kubeconfig),
            "LORAPACK_METRICS_PORT": str(self.metrics_port),
            "LORAPACK_METRICS_HOST": "127.0.0.1",
            "LORAPACK_AGENT_IMAGE": "ghcr.io/lorapack/lorapack:local",
        }
        log = (self.workdir / f"operator-{self.starts}.log").open("ab")
        began = time.monotonic()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "lorapack.cli", "run", "--standalone"],
            env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        log.close()
        return began

    def proc(self) -> tuple[float, int]:
        """(CPU seconds, peak RSS bytes) of the running operator."""
        assert self.process is not None
        pid = self.process.pid
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        cpu = (int(fields[11]) + int(fields[12])) / ticks
        hwm = 0
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                hwm = int(line.split()[1]) * 1024
        return cpu, hwm

    def metric(self, name: str, *labels: str) -> float:
        """Sum of the operator's own metric `name` over the series with all `labels`."""
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5
            ) as resp:
                text = resp.read().decode()
        except OSError:
            return 0.0
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith((name + "{", name + " ")) and all(label in line for label in labels)
        )

    def reconciled(self, kind: str = "LoraAdapter") -> float:
        return self.metric("lorapack_reconcile_total", f'kind="{kind}"')

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def throttled(self) -> float:
        """429 answers the operator retried (its own counter)."""
        return self.metric("lorapack_api_throttled_requests")

    def throttled_lines(self) -> int:
        return sum(
            line.lower().count("throttl")
            for log in self.workdir.glob("operator-*.log")
            for line in log.read_text(errors="replace").splitlines()
        )


def start_profile(pid: int, out: Path, seconds: int = 30) -> subprocess.Popen[bytes]:
    """py-spy (dev extra) samples the operator for `seconds` into `out` (collapsed stacks)."""
    py_spy = Path(sys.executable).parent / "py-spy"
    argv = [str(py_spy), "record", "-d", str(seconds), "-r", "50", "-f", "raw", "-o", str(out)]
    return subprocess.Popen(
        [*argv, "-p", str(pid)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def profile_summary(path: Path, top: int = 15) -> list[str]:
    """The lorapack functions taking most of the busy samples (inclusive; idle thread-pool
    workers and the selector are left out)."""
    inclusive: Counter[str] = Counter()
    busy = 0

    def frame(text: str) -> str:
        name, _, where = text.partition(" (")
        return f"{name} ({where.split(':')[0]})" if where else name

    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = [frame(f) for f in stack.split(";")]
        if frames[-1].startswith(("_worker (", "_PollLikeSelector.select", "BaseSelectorEvent")):
            continue
        busy += int(count)
        for name in set(frames):
            if "lorapack/" in name:
                inclusive[name] += int(count)
    return [f"{100 * n / max(1, busy):5.1f}%  {name}" for name, n in inclusive.most_common(top)]


def apf(cluster: DevCluster) -> dict[str, float]:
    """The operator's FlowSchema counters: dispatched, rejected, queue wait (sum, count)."""
    text = cluster.kubectl("get", "--raw", "/metrics").stdout
    out = {"dispatched": 0.0, "rejected": 0.0, "wait_sum": 0.0, "wait_count": 0.0}
    names = {
        "apiserver_flowcontrol_dispatched_requests_total{": "dispatched",
        "apiserver_flowcontrol_rejected_requests_total{": "rejected",
        "apiserver_flowcontrol_request_wait_duration_seconds_sum{": "wait_sum",
        "apiserver_flowcontrol_request_wait_duration_seconds_count{": "wait_count",
    }
    for line in text.splitlines():
        for prefix, key in names.items():
            if line.startswith(prefix) and f'flow_schema="{FLOW_SCHEMA}"' in line:
                out[key] += float(line.rsplit(" ", 1)[1])
    return out


@dataclass
class Window:
    """Operator CPU and API requests over one phase."""

    seconds: float
    cpu: float
    requests: float
    rejected: float
    wait_ms: float

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else float("nan")


class Meter:
    def __init__(self, cluster: DevCluster, operator: Operator) -> None:
        self.cluster, self.operator = cluster, operator
        self.t0, self.cpu0, self.apf0 = 0.0, 0.0, apf(cluster)

    def begin(self, t0: float | None = None, cpu0: float | None = None) -> None:
        self.t0 = time.monotonic() if t0 is None else t0
        self.cpu0 = self.operator.proc()[0] if cpu0 is None else cpu0
        self.apf0 = apf(self.cluster)

    def end(self) -> Window:
        now, counters = time.monotonic(), apf(self.cluster)
        d = {k: counters[k] - self.apf0[k] for k in counters}
        wait = d["wait_sum"] / d["wait_count"] * 1000 if d["wait_count"] else 0.0
        return Window(
            now - self.t0, self.operator.proc()[0] - self.cpu0, d["dispatched"], d["rejected"], wait
        )

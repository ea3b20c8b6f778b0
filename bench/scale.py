"""Benchmark: the operator at 1k / 3k / 10k LoraAdapters on kwok, agents simulated.

    .venv/bin/python bench/scale.py [--sizes 1000,3000] [--pools 10] [--change-rate 20]

Per size N, a fresh dev cluster (kwok GPU nodes, 8 GPUs each), the S3 server with the base
model staged and four real small adapters, N/10 pool pods (at least 2 per pool) in `--pools`
pools (all of the one base model the test adapters fit), N LoraAdapters in N/200 team
namespaces (every 10th with replicas.min = 2) all pointing at those four folders under
distinct names, and `lorapack_testworld.scalesim` playing
every pod's agent in this process (instant loads, the real agent's report patches). Measured:

* scratch: operator start -> every adapter Ready (pods created by the StatefulSet controller
  of the dev cluster's kube-controller-manager are part of it, and reported separately);
* restart: operator SIGTERM, N/100 adapters created while it is down, start -> those Ready and
  the operator's own counter `lorapack_reconcile_total{kind="LoraAdapter"}` >= N (every
  adapter passed once); adapters whose placement changed across the restart;
* steady: `--change-rate` spec changes per second for `--change-seconds` (source swapped to a
  folder with other files): patch -> status at the new generation, Ready, a new artifact
  digest and at least one pod on it (p50/p99);
* API requests/s issued by the operator: the API server's Priority and Fairness counters for a
  FlowSchema matching only the operator's ServiceAccount (the operator runs with that token;
  the simulator and the bench run as cluster admin, which APF exempts), plus APF rejections and
  queue wait (the server-side throttling). The operator (kopf, kubernetes_asyncio) has no
  client-side rate limiter; its log is searched for throttling messages anyway;
* operator peak RSS (VmHWM) and CPU seconds (utime+stime) per 1,000 adapters;
* P6 churn: one pool pod deleted; adapters whose set of pods changed at any moment until the
  world settles vs the adapters that pod held, and "zero-replica moments" (an adapter with
  replicas.min >= 2 whose EndpointSlices list no ready endpoint), from an EndpointSlice watch.

Everything (operator, API server, etcd, kwok, S3, simulator) shares this machine's cores: the
figures are for a 2-core box. Prints a table with a column per N.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes_asyncio.client import ApiClient, Configuration
from kubernetes_asyncio.config import load_kube_config

from lorapack.clients.kube import ADAPTER, POD, KubeClient
from lorapack.clients.kube.resources import ENDPOINTSLICE
from lorapack_testworld.artifacts import load_index
from lorapack_testworld.basemodels import stage_base_models
from lorapack_testworld.devcluster import DEFAULT_CRDS_DIR, DevCluster
from lorapack_testworld.devcluster.nodes import NodeShape
from lorapack_testworld.paths import REPO_ROOT
from lorapack_testworld.s3server import S3Server, start_s3_server
from lorapack_testworld.scalesim import ScaleSim

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _scale_world import (  # a sibling module of this script
    BUCKET,
    OPERATOR_NS,
    POOL_NS,
    SOURCES,
    Layout,
    adapter_body,
    operator_identity,
    pool_bodies,
)

FLOW_SCHEMA = "lorapack-bench-operator"


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def connect(kubeconfig: Path, pool: int = 64) -> KubeClient:
    configuration = Configuration()
    await load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)
    configuration.connection_pool_maxsize = pool
    return KubeClient(ApiClient(configuration))


async def bounded(jobs: Iterable[Callable[[], Awaitable[Any]]], limit: int = 32) -> None:
    gate = asyncio.Semaphore(limit)

    async def one(job: Callable[[], Awaitable[Any]]) -> None:
        async with gate:
            await job()

    await asyncio.gather(*(one(j) for j in jobs))


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

    def reconciled(self, kind: str = "LoraAdapter") -> float:
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
            if line.startswith("lorapack_reconcile_total{") and f'kind="{kind}"' in line
        )

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def throttled_lines(self) -> int:
        return sum(
            line.lower().count("throttl")
            for log in self.workdir.glob("operator-*.log")
            for line in log.read_text(errors="replace").splitlines()
        )


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


# ------------------------------------------------------------------------------ one size


@dataclass
class Result:
    n: int
    pods: int
    figures: dict[str, str] = field(default_factory=dict)


def stage_adapters(s3: S3Server) -> None:
    index = load_index()
    s3.create_bucket(BUCKET)
    for prefix, artifact in SOURCES.items():
        s3.upload_folder(BUCKET, prefix, index.adapter(artifact).path)


async def create_world(kube: KubeClient, layout: Layout, s3: S3Server) -> None:
    namespaces = [POOL_NS, OPERATOR_NS, *layout.namespaces()]
    await bounded(
        lambda ns=ns: kube.create(  # type: ignore[misc]
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}
        )
        for ns in namespaces
    )
    pools = pool_bodies(layout, s3)
    await bounded(lambda o=o: kube.create(o) for o in pools)  # type: ignore[misc]


async def create_adapters(kube: KubeClient, layout: Layout, indexes: Iterable[int]) -> None:
    bodies = [adapter_body(layout, i) for i in indexes]
    await bounded(lambda b=b: kube.create(b) for b in bodies)  # type: ignore[misc]


async def steady_changes(
    kube: KubeClient, adapters: Adapters, layout: Layout, rate: float, seconds: float
) -> list[float]:
    """Patch `rate` adapters' sources per second; seconds from each patch to its status."""
    keys = [layout.key(i) for i in range(layout.n)]
    random.Random(7).shuffle(keys)
    count = int(rate * seconds)
    latencies: list[float] = []
    pending: list[asyncio.Task[None]] = []

    async def change(i: int, key: str) -> None:
        ns, name = key.split("/")
        view = adapters.views[key]
        old_digest, gen = view.digest, view.generation
        index = int(name.rsplit("-", 1)[1])
        new_uri = layout.alternate_uri(index, gen)
        started = time.monotonic()
        patched = await kube.patch(
            ADAPTER, ns, name, {"spec": {"source": {"s3": {"uri": new_uri}}}}, kind="merge"
        )
        assert patched is not None
        target = int(patched["metadata"]["generation"])

        def done() -> bool:
            v = adapters.views.get(key)
            return (
                v is not None and v.observed >= target and v.ready
                and v.digest not in ("", old_digest) and v.updated >= 1
            )  # fmt: skip

        if await adapters.until(done, 120):
            latencies.append(time.monotonic() - started)

    began = time.monotonic()
    for i, key in enumerate(keys[:count]):
        await asyncio.sleep(max(0.0, began + i / rate - time.monotonic()))
        pending.append(asyncio.ensure_future(change(i, key)))
    await asyncio.gather(*pending)
    if len(latencies) < count:
        print(f"    {count - len(latencies)} of {count} changes not in status within 120 s")
    return latencies


async def churn(
    kube: KubeClient, adapters: Adapters, slices: Slices, assign: Assignments, layout: Layout
) -> tuple[int, int, int, float]:
    """Delete the pod holding most adapters; (held, moved, zero moments, settle seconds)."""
    pod_key, held = max(assign.by_pod.items(), key=lambda kv: len(kv[1]))
    ns, name = pod_key.split("/")
    assign.moved = set()
    slices.counting = True
    began = time.monotonic()
    await kube.delete(POD, ns, name)
    keys = [layout.key(i) for i in range(layout.n)]
    quiet_since, last_moved = time.monotonic(), 0
    deadline = began + 240
    # Settled: every adapter Ready and no assignment change for 10 s (or 240 s in all).
    while time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        if len(assign.moved) != last_moved or adapters.ready_count(keys) < len(keys):
            quiet_since, last_moved = time.monotonic(), len(assign.moved)
        elif time.monotonic() - quiet_since >= 10 and time.monotonic() - began >= 20:
            break
    slices.counting = False
    moved = len(assign.moved)
    assign.moved = None
    return len(held), moved, slices.zero_moments, quiet_since - began


async def run_size(n: int, args: argparse.Namespace) -> Result:
    layout = Layout(n=n, pools=args.pools)
    work = Path(tempfile.mkdtemp(prefix=f"lorapack-bench-scale-{n}-"))
    result = Result(n, layout.pods)
    gpus = 8
    shape = NodeShape(
        name="l20x8", product="NVIDIA-L20", gpu_memory_mib=46068, family="ada-lovelace",
        gpus=gpus, count=math.ceil(layout.pods / gpus) + 1, cpu="1024", memory="16Ti",
    )  # fmt: skip
    print(f"== N={n}: {layout.pods} pods in {layout.pools} pools, {layout.teams} namespaces")
    cluster = DevCluster.start(work / "cluster", nodes=[shape], crds_dir=DEFAULT_CRDS_DIR)
    s3 = start_s3_server(work / "s3")
    operator: Operator | None = None
    stop = asyncio.Event()
    tasks: list[asyncio.Task[Any]] = []
    kube = await connect(cluster.kubeconfig)
    try:
        stage_base_models(s3)
        stage_adapters(s3)
        await create_world(kube, layout, s3)
        token_config = await operator_identity(kube, cluster, work, FLOW_SCHEMA)
        t = time.monotonic()
        await create_adapters(kube, layout, range(n))
        print(f"    created {n} adapters in {time.monotonic() - t:.1f} s (parallel, 32 at once)")
        sim = ScaleSim(kube, workers=16, heartbeat_seconds=30)
        assign = Assignments()
        sim.on_desired = lambda pod, state: assign.update(
            pod, {a.adapter for a in state.adapters} if state is not None else set()
        )
        adapters = Adapters(kube)
        slices = Slices(kube, {layout.key(i) for i in range(n) if layout.min2(i)})
        tasks = [
            asyncio.ensure_future(sim.run(stop)),
            asyncio.ensure_future(adapters.follow()),
            asyncio.ensure_future(slices.follow()),
        ]
        operator = Operator(work, token_config)
        meter = Meter(cluster, operator)
        began = operator.start()
        meter.begin(began, 0.0)
        keys = [layout.key(i) for i in range(n)]
        timeout = args.ready_timeout or 180 + n * 0.12
        pods_at: list[float] = []

        def all_ready() -> bool:
            if not pods_at and sim.pods >= layout.pods:
                pods_at.append(time.monotonic() - began)
            return adapters.ready_count(keys) == n

        ok = await adapters.until(all_ready, timeout)
        scratch = meter.end()
        hwm = operator.proc()[1]
        f = result.figures
        f["scratch: start -> all Ready (s)"] = (
            f"{scratch.seconds:.1f}" if ok else f">{timeout:.0f} ({adapters.ready_count(keys)})"
        )
        f["  of which: all pods running (s)"] = f"{pods_at[0]:.1f}" if pods_at else "-"
        f["scratch: API req/s (operator)"] = f"{scratch.rps:.0f} ({scratch.requests:.0f})"
        f["scratch: APF rejected / wait ms"] = f"{scratch.rejected:.0f} / {scratch.wait_ms:.1f}"
        f["scratch: CPU s per 1k adapters"] = f"{scratch.cpu / (n / 1000):.1f}"
        f["peak RSS MB (scratch)"] = f"{hwm / 2**20:.0f}"
        print(f"    scratch: {f['scratch: start -> all Ready (s)']} s", flush=True)
        if not ok:
            print(f"    not Ready: {adapters.diagnose(keys)}", flush=True)
            return result
        await asyncio.sleep(5)

        meter.begin()
        latencies = await steady_changes(
            kube, adapters, layout, args.change_rate, args.change_seconds
        )
        steady = meter.end()
        f[f"steady {args.change_rate:g}/s: p50 / p99 (s)"] = (
            f"{pct(latencies, 50):.2f} / {pct(latencies, 99):.2f}"
        )
        f["steady: API req/s (operator)"] = f"{steady.rps:.0f}"
        f["steady: CPU s per s (operator)"] = f"{steady.cpu / steady.seconds:.2f}"
        print(f"    steady: {f[f'steady {args.change_rate:g}/s: p50 / p99 (s)']}", flush=True)

        held, moved, zeros, settle = await churn(kube, adapters, slices, assign, layout)
        f["P6: adapters held / moved"] = f"{held} / {moved}"
        f["P6: zero-replica moments (min>=2)"] = str(zeros)
        f["P6: settled after (s)"] = f"{settle:.1f}"
        print(f"    churn: held {held}, moved {moved}, zero moments {zeros}", flush=True)

        # Restart: stop, create 1% more adapters while down, start, wait for them and for the
        # operator's own counter to pass every adapter once.
        operator.stop()
        extra = range(n, n + max(1, n // 100))
        await create_adapters(kube, layout, extra)
        every = [layout.key(i) for i in range(n + len(extra))]
        assign.moved = set()
        meter = Meter(cluster, operator)
        began = operator.start()
        meter.begin(began, 0.0)
        ok = await adapters.until(
            lambda: (
                adapters.ready_count(every) == len(every) and operator.reconciled() >= len(every)
            ),
            timeout,
        )
        restart = meter.end()
        hwm = operator.proc()[1]
        f["restart: start -> all reconciled (s)"] = (
            f"{restart.seconds:.1f}" if ok else f">{timeout:.0f} ({operator.reconciled():.0f})"
        )
        f["restart: adapters moved"] = str(len(assign.moved) - len(extra))
        f["restart: API req/s (operator)"] = f"{restart.rps:.0f} ({restart.requests:.0f})"
        f["restart: CPU s per 1k adapters"] = f"{restart.cpu / (n / 1000):.1f}"
        f["peak RSS MB (restart)"] = f"{hwm / 2**20:.0f}"
        f["client-side throttling (log)"] = str(operator.throttled_lines())
        f["simulator report patches"] = str(sim.patches)
        print(f"    restart: {f['restart: start -> all reconciled (s)']} s", flush=True)
    finally:
        stop.set()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if operator is not None:
            operator.stop()
        await kube.close()
        s3.stop()
        cluster.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"    kept {work}")
    return result


async def guarded(work: Awaitable[Result]) -> Result:
    """Run `work`, cancelled (so its clean-up runs) on SIGTERM or SIGINT."""
    task = asyncio.ensure_future(work)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)
    return await task


def print_table(results: list[Result]) -> None:
    labels = list(dict.fromkeys(k for r in results for k in r.figures))
    head = f"{'':<38}" + "".join(f"{f'N={r.n} ({r.pods} pods)':>22}" for r in results)
    print("\n" + head)
    for label in labels:
        print(f"{label:<38}" + "".join(f"{r.figures.get(label, '-'):>22}" for r in results))
    print(
        "\nTargets (issue 15, at 10k): scratch and restart <= 60 s, steady p99 <= 1 s, RSS <= 300"
        " MB, moved <= held, zero-replica moments 0. API requests: APF FlowSchema"
        f" {FLOW_SCHEMA!r} (the operator's ServiceAccount only)."
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1000,3000", help="comma-separated N, e.g. 1000,3000")
    parser.add_argument("--pools", type=int, default=10)
    parser.add_argument("--change-rate", type=float, default=20.0)
    parser.add_argument("--change-seconds", type=float, default=15.0)
    parser.add_argument(
        "--ready-timeout", type=float, default=0, help="seconds (0: 180 + 0.12 per adapter)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the work folders")
    args = parser.parse_args()
    results = []
    for n in [int(x) for x in args.sizes.split(",") if x.strip()]:
        results.append(asyncio.run(guarded(run_size(n, args))))
        print_table(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())

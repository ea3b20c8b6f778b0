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
  queue wait (the server-side throttling). That FlowSchema sends them to `--priority-level`,
  workload-low by default: where a ServiceAccount's requests land in a real cluster (the chart
  ships no FlowSchema); `exempt` takes APF out of the picture. The operator (kopf,
  kubernetes_asyncio) has no client-side rate limiter; its log is searched for throttling
  messages anyway;
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
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes_asyncio.client import ApiClient, Configuration
from kubernetes_asyncio.config import load_kube_config

from lorapack.clients.kube import ADAPTER, POD, KubeClient
from lorapack_testworld.artifacts import load_index
from lorapack_testworld.basemodels import stage_base_models
from lorapack_testworld.devcluster import DEFAULT_CRDS_DIR, DevCluster
from lorapack_testworld.devcluster.nodes import NodeShape
from lorapack_testworld.s3server import S3Server, start_s3_server
from lorapack_testworld.scalesim import ScaleSim

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _scale_probes import (  # a sibling module of this script
    FLOW_SCHEMA,
    Adapters,
    Assignments,
    Meter,
    Operator,
    Slices,
    profile_summary,
    start_profile,
)
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


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


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
        token_config = await operator_identity(
            kube, cluster, work, FLOW_SCHEMA, args.priority_level
        )
        t = time.monotonic()
        await create_adapters(kube, layout, range(n))
        print(f"    created {n} adapters in {time.monotonic() - t:.1f} s (parallel, 32 at once)")
        sim = ScaleSim(kube, workers=16, heartbeat_seconds=args.heartbeat_seconds)
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
        assert operator.process is not None
        pid = operator.process.pid

        async def profile_later() -> subprocess.Popen[bytes]:
            await asyncio.sleep(args.profile_at)
            return start_profile(pid, work / "profile.txt")

        profiler = (
            asyncio.ensure_future(profile_later())
            if args.profile and not args.profile_steady
            else None
        )
        keys = [layout.key(i) for i in range(n)]
        timeout = args.ready_timeout or 180 + n * 0.12
        pods_at: list[float] = []

        def all_ready() -> bool:
            if not pods_at and sim.pods >= layout.pods:
                pods_at.append(time.monotonic() - began)
            return adapters.ready_count(keys) == n

        ok = await adapters.until(all_ready, timeout)
        scratch = meter.end()
        if profiler is not None and profiler.done():
            profiler.result().wait(60)
            print(
                f"    profile of the operator, 30 s from {args.profile_at:g} s (py-spy, inclusive):"
            )
            for row in profile_summary(work / "profile.txt"):
                print(f"      {row}")
        hwm = operator.proc()[1]
        f = result.figures
        f["scratch: start -> all Ready (s)"] = (
            f"{scratch.seconds:.1f}" if ok else f">{timeout:.0f} ({adapters.ready_count(keys)})"
        )
        f["  of which: all pods running (s)"] = f"{pods_at[0]:.1f}" if pods_at else "-"
        f["scratch: API req/s (operator)"] = f"{scratch.rps:.0f} ({scratch.requests:.0f})"
        f["scratch: APF rejected / wait ms"] = f"{scratch.rejected:.0f} / {scratch.wait_ms:.1f}"
        f["scratch: 429s retried by the operator"] = f"{operator.throttled():.0f}"
        f["scratch: CPU s per 1k adapters"] = f"{scratch.cpu / (n / 1000):.1f}"
        f["peak RSS MB (scratch)"] = f"{hwm / 2**20:.0f}"
        passes = operator.reconciled("BaseModelPool")
        adapter_s = operator.metric("lorapack_reconcile_duration_seconds_sum", "LoraAdapter")
        f["scratch: pool passes / adapter passes"] = f"{passes:.0f} / {operator.reconciled():.0f}"
        f["scratch: adapter pass mean (ms)"] = (
            f"{adapter_s / max(1.0, operator.reconciled()) * 1000:.0f}"
        )
        print(f"    scratch: {f['scratch: start -> all Ready (s)']} s", flush=True)
        if not ok:
            print(f"    not Ready: {adapters.diagnose(keys)}", flush=True)
            return result
        await asyncio.sleep(5)

        meter.begin()
        steady_profile = (
            start_profile(pid, work / "profile-steady.txt") if args.profile_steady else None
        )
        latencies = await steady_changes(
            kube, adapters, layout, args.change_rate, args.change_seconds
        )
        steady = meter.end()
        if steady_profile is not None:
            steady_profile.wait(60)
            print("    profile of the operator, the first 30 s of the steady phase:")
            for row in profile_summary(work / "profile-steady.txt"):
                print(f"      {row}")
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
        f["429s retried by the operator (restart)"] = f"{operator.throttled():.0f}"
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
    parser.add_argument(
        "--priority-level",
        default="workload-low",
        help="APF priority level of the operator's requests (exempt: never queued or refused)",
    )
    parser.add_argument(
        "--heartbeat-seconds",
        type=float,
        default=30.0,
        help="simulated agents re-report this often, as the agent's resync does (0: never)",
    )
    parser.add_argument("--profile", action="store_true", help="py-spy the operator for 30 s")
    parser.add_argument("--profile-at", type=float, default=60.0, help="seconds after its start")
    parser.add_argument(
        "--profile-steady", action="store_true", help="py-spy the first 30 s of the steady phase"
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

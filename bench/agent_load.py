"""Benchmark: the agent's reaction time, from a desired-state change to "Loaded" in its report.

Runs the real agent loop (lorapack.agent.loop.Agent) with the real adapter cache downloading
from the loopback SeaweedFS server and the engine double over HTTP, and measures for each new
adapter: desired state handed to the agent -> the agent's report shows it Loaded (verified in
/v1/models). The agent's own download_ms is subtracted, leaving the agent's overhead plus the
engine's load call. Also reports a version swap (same served name, new files) and an engine
restart (everything re-loaded from the cache, nothing downloaded).

Target (issue 6): desired-state change to loaded in the engine double, minus download time,
<= 100 ms p50. Exits 1 when missed.

    .venv/bin/python bench/agent_load.py [--adapters 40]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

from lorapack.agent.cache import AdapterCache
from lorapack.agent.loop import Agent
from lorapack.api.podstate import DesiredAdapter, DesiredState, FileSpec, ObservedState, S3Location
from lorapack.clients.engine import EngineClient
from lorapack.clients.s3 import S3Client
from lorapack.planning.artifact import ArtifactFile, manifest_digest
from lorapack_testworld.artifacts import load_index
from lorapack_testworld.enginedouble import EngineDouble
from lorapack_testworld.s3server import start_s3_server

BUCKET = "agent-bench"


class Clock:
    """Reporter that timestamps when each (served name, digest) is first reported Loaded."""

    def __init__(self) -> None:
        self.loaded: dict[tuple[str, str], float] = {}
        self.last: ObservedState | None = None
        self.changed = asyncio.Event()

    async def report(self, state: ObservedState, synced: bool, message: str) -> None:
        now = time.monotonic()
        for adapter in state.adapters:
            if adapter.state == "Loaded":
                self.loaded.setdefault((adapter.served_name, adapter.digest), now)
        self.last = state
        self.changed.set()


async def until_loaded(clock: Clock, name: str, digest: str, timeout: float = 30.0) -> float:
    async with asyncio.timeout(timeout):
        while (name, digest) not in clock.loaded:
            clock.changed.clear()
            await clock.changed.wait()
    return clock.loaded[(name, digest)]


def entry(
    name: str, prefix: str, objects: list[tuple[str, int, str]], endpoint: str
) -> DesiredAdapter:
    digest = manifest_digest(ArtifactFile(path=p, size=s, etag=e) for p, s, e in objects)
    return DesiredAdapter(
        served_name=name,
        adapter=f"bench/{name}",
        digest=digest,
        files=[FileSpec(path=p, size=s, etag=e, key=prefix + p) for p, s, e in objects],
        access="pool",
        s3=S3Location(bucket=BUCKET, prefix=prefix, endpoint=endpoint, addressing_style="path"),
    )


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


async def run(args: argparse.Namespace, workdir: Path) -> int:
    index = load_index()
    s3 = start_s3_server(workdir / "s3")
    double = EngineDouble(
        str(index.model.path), served_model_name=index.served_name, max_loras=8,
        max_lora_rank=64, max_cpu_loras=256,
    )  # fmt: skip
    try:
        s3.create_bucket(BUCKET)
        entries = []
        for i in range(args.adapters):
            source = index.adapter(("r8", "r16", "r64")[i % 3]).path
            infos = s3.upload_folder(BUCKET, f"a{i}/", source)
            objects = [(o.key.removeprefix(f"a{i}/"), o.size, o.etag) for o in infos]
            entries.append(entry(f"a{i}", f"a{i}/", objects, s3.endpoint))
        await double.start()
        clock = Clock()
        s3_client = S3Client(s3.settings(addressing_style="path"))
        engine = EngineClient(double.url)
        agent = Agent(
            engine=engine,
            cache=AdapterCache(workdir / "cache"),
            reporter=clock,
            s3_factory=lambda _: s3_client,
            poll_seconds=2.0,
            resync_seconds=60,
        )
        stop = asyncio.Event()
        runner = asyncio.ensure_future(agent.run(stop))
        agent.set_desired(DesiredState(pool="bench/p", pod="p-0", revision=0))
        await asyncio.sleep(0.3)

        reaction: list[float] = []
        downloads: list[float] = []
        totals: list[float] = []
        held: list[DesiredAdapter] = []
        for revision, item in enumerate(entries, start=1):
            held.append(item)
            t0 = time.monotonic()
            agent.set_desired(
                DesiredState(pool="bench/p", pod="p-0", revision=revision, adapters=list(held))
            )
            t1 = await until_loaded(clock, item.served_name, item.digest)
            assert clock.last is not None
            seen = next(a for a in clock.last.adapters if a.served_name == item.served_name)
            download = (seen.download_ms or 0) / 1000
            totals.append(t1 - t0)
            downloads.append(download)
            reaction.append(t1 - t0 - download)

        # A new version of a served name: drain, unload the old path, load the new one.
        swap_times = []
        for i in range(min(10, len(held))):
            old = held[i]
            new = entries[(i + 1) % len(entries)].model_copy(
                update={"served_name": old.served_name, "adapter": old.adapter}
            )
            if new.digest == old.digest:
                continue
            held[i] = new
            t0 = time.monotonic()
            agent.set_desired(
                DesiredState(pool="bench/p", pod="p-0", revision=1000 + i, adapters=list(held))
            )
            swap_times.append(await until_loaded(clock, new.served_name, new.digest) - t0)

        # An engine restart: everything comes back from the cache.
        restarts_before = clock.last.engine_restarts if clock.last else 0
        t0 = time.monotonic()
        double.restart()
        async with asyncio.timeout(60):
            while True:
                last = clock.last
                if (
                    last is not None
                    and last.engine_restarts > restarts_before
                    and len(last.loaded()) == len(held)
                ):
                    break
                clock.changed.clear()
                await clock.changed.wait()
        restore = time.monotonic() - t0

        stop.set()
        await runner
        await engine.aclose()
    finally:
        await double.stop()
        s3.stop()

    def row(label: str, values: list[float]) -> str:
        ms = [v * 1000 for v in values]
        return (
            f"{label:<44} {pct(ms, 50):8.1f} {pct(ms, 90):8.1f} {max(ms):8.1f} "
            f"{statistics.mean(ms):8.1f}"
        )

    print(f"\nAgent: desired-state change -> reported Loaded, ms (n={len(totals)}, engine double)")
    print(f"{'':<44} {'p50':>8} {'p90':>8} {'max':>8} {'mean':>8}")
    print(row("total (download + load + agent)", totals))
    print(row("  download from loopback S3 (agent's download_ms)", downloads))
    print(row("  minus download: agent + engine load", reaction))
    if swap_times:
        print(row("version swap (drain, unload, load new path)", swap_times))
    print(
        f"engine restart: {len(held)} adapters re-loaded from the cache in {restore * 1000:.0f} ms"
    )
    print("(adapters made from the same files share one cache folder: content addressing)")
    ok = pct(reaction, 50) <= 0.100
    print(
        f"\nTarget: p50 of (change -> loaded) minus download <= 100 ms: {'met' if ok else 'MISSED'}"
    )
    return 0 if ok else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--adapters", type=int, default=40)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="lorapack-bench-agent-") as folder:
        return asyncio.run(run(args, Path(folder)))


if __name__ == "__main__":
    sys.exit(main())

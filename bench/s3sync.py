"""Benchmark: adapter sync (AdapterCache.ensure over lorapack.clients.s3) from the loopback S3
server against plain downloads of the same objects, measured in the same run.

    .venv/bin/python bench/s3sync.py [--large-mb 300] [--small-count 200] [--repeats 3]

Cases and targets (issues 6 and 15):
* one 300 MB adapter (multipart-uploaded weights): sync >= 0.9x the throughput of a plain
  s3transfer TransferManager download of the same objects (same concurrency and part size);
* 200 small adapters: sync >= 3x the throughput of a sequential boto3 `download_file` loop
  on loopback, >= 8x where S3 is tens of milliseconds away.

Networks: loopback (every request costs CPU only, and 2 cores cap parallelism), then through
`lorapack_testworld.faultproxy` (its own process) with 20 ms added to every request (real S3
is that far away), and 20 ms plus a per-connection bandwidth cap (`--cap-mbps`, what one S3
connection gets). The proxy opens a fresh upstream connection per request and answers
`Connection: close`, so both sides reconnect for every request (no keep-alive advantage for
either); the added latency is per request, not per connection set-up.

"sync" is everything the agent waits for: download, size/ETag (MD5) verification, fsync,
read-only sealing and the atomic rename. An informational row adds sha256 verification (when
the adapter's spec.digests are given). Each measurement is the median of --repeats runs, the
baseline and the sync alternating which goes first, into fresh folders. Exits 1 when a
target is missed.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
from boto3.s3.transfer import TransferConfig as Boto3TransferConfig
from s3transfer.manager import TransferConfig, TransferManager

from lorapack.agent.cache import AdapterCache
from lorapack.api.podstate import DesiredAdapter, FileSpec, S3Location
from lorapack.clients.s3 import ObjectInfo, S3Client, S3Settings
from lorapack_testworld.s3server import S3Server, start_s3_server

MiB = 2**20
CONFIG = b'{"r": 16, "lora_alpha": 32, "target_modules": ["q_proj", "k_proj", "v_proj"]}'


@dataclass
class Row:
    case: str
    baseline: str
    timing: Timing
    nbytes: int
    target: float | None
    net: str = "loopback"

    @property
    def ratio(self) -> float:
        return self.timing.ratio

    def ok(self) -> bool:
        return self.target is None or self.ratio >= self.target


def adapter_for(
    objects: list[ObjectInfo], bucket: str, prefix: str, blobs: dict[str, bytes] | None = None
) -> DesiredAdapter:
    manifest = "|".join(f"{o.key}:{o.size}:{o.etag}" for o in objects)
    return DesiredAdapter(
        served_name=prefix.strip("/").replace("/", "-"),
        adapter=prefix.strip("/"),
        digest="sha256:" + hashlib.sha256(manifest.encode()).hexdigest(),
        files=[
            FileSpec(
                path=o.key[len(prefix) :],
                size=o.size,
                etag=o.etag,
                key=o.key,
                sha256=(
                    "sha256:" + hashlib.sha256(blobs[o.key]).hexdigest()
                    if blobs is not None
                    else None
                ),
            )
            for o in objects
        ],
        access="pool",
        s3=S3Location(bucket=bucket, prefix=prefix),
    )


def upload(
    server: S3Server, bucket: str, prefix: str, files: dict[str, bytes], work: Path
) -> list[ObjectInfo]:
    folder = work / "upload" / prefix
    for name, blob in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(blob)
    objects = server.upload_folder(bucket, prefix, folder)
    shutil.rmtree(folder)
    return objects


def fresh(path: Path) -> Path:
    if path.exists():
        for folder, dirs, _ in os.walk(path):  # sealed cache folders are read-only
            for d in [folder, *(os.path.join(folder, x) for x in dirs)]:
                os.chmod(d, 0o755)
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


@dataclass(frozen=True)
class Timing:
    base_s: float
    """Median baseline time."""
    sync_s: float
    """Median sync time."""
    ratio: float
    """Median over rounds of baseline time / sync time (= sync throughput / baseline
    throughput): each round runs both back to back, so load from other work on the machine
    hits both sides of one ratio alike."""


def measure(
    repeats: int,
    baseline: Callable[[Path], float],
    sync: Callable[[Path], float],
    work: Path,
) -> Timing:
    base_times, sync_times = [], []
    for round_ in range(repeats):
        # Alternate which goes first: a warm server cache or a burst of other work on the
        # machine favours neither side across rounds.
        if round_ % 2 == 0:
            base_times.append(baseline(fresh(work / "base")))
            sync_times.append(sync(fresh(work / "sync")))
        else:
            sync_times.append(sync(fresh(work / "sync")))
            base_times.append(baseline(fresh(work / "base")))
    fresh(work / "base")
    fresh(work / "sync")
    ratios = [b / s for b, s in zip(base_times, sync_times, strict=True)]
    return Timing(
        statistics.median(base_times), statistics.median(sync_times), statistics.median(ratios)
    )


@dataclass(frozen=True)
class Net:
    """How the clients reach the S3 server."""

    label: str
    endpoint: str
    small_target: float

    def boto3(self, server: S3Server) -> Any:
        """A plain boto3 client for this endpoint, with S3Server.client's configuration."""
        if self.endpoint == server.endpoint:
            return server.client()
        session = boto3.session.Session(
            aws_access_key_id=server.access_key,
            aws_secret_access_key=server.secret_key,
            region_name=server.region,
        )
        config = server.client().meta.config
        return session.client("s3", endpoint_url=self.endpoint, config=config)

    def settings(self, server: S3Server) -> S3Settings:
        return server.settings(endpoint=self.endpoint)


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def run_async(make: Callable[[], Awaitable[object]]) -> float:
    async def go() -> float:
        start = time.perf_counter()
        await make()
        return time.perf_counter() - start

    return asyncio.run(go())


def stage_large(
    server: S3Server, bucket: str, work: Path, mb: int
) -> tuple[list[ObjectInfo], dict[str, bytes]]:
    weights = os.urandom(mb * 10**6)
    files = {"adapter_config.json": CONFIG, "adapter_model.safetensors": weights}
    return upload(server, bucket, "large/", files, work), files


def large_case(
    server: S3Server,
    bucket: str,
    work: Path,
    staged: tuple[list[ObjectInfo], dict[str, bytes]],
    repeats: int,
    net: Net,
    digests: bool,
) -> list[Row]:
    objects, files = staged
    mb = round(len(files["adapter_model.safetensors"]) / 1e6)
    settings = net.settings(server)
    plain_client = net.boto3(server)
    config = TransferConfig(
        multipart_threshold=settings.multipart_threshold,
        multipart_chunksize=settings.multipart_chunksize,
        max_request_concurrency=settings.max_concurrency,
    )

    def baseline(dest: Path) -> float:
        manager = TransferManager(plain_client, config)
        try:
            return timed(
                lambda: [
                    f.result()
                    for f in [
                        manager.download(bucket, o.key, str(dest / o.key.split("/")[-1]))
                        for o in objects
                    ]
                ]
            )
        finally:
            manager.shutdown()

    def sync_with(adapter: DesiredAdapter) -> Callable[[Path], float]:
        def sync(dest: Path) -> float:
            client = S3Client(settings)
            try:
                cache = AdapterCache(dest)
                return run_async(lambda: cache.ensure(adapter, s3=client, allow_pickle=False))
            finally:
                client.close()

        return sync

    nbytes = sum(o.size for o in objects)
    plain = adapter_for(objects, bucket, "large/")
    timing = measure(repeats, baseline, sync_with(plain), work)
    rows = [Row(f"{mb} MB adapter", "s3transfer", timing, nbytes, 0.9, net.label)]
    if digests:
        blobs = {o.key: files[o.key.split("/")[-1]] for o in objects}
        with_sha = adapter_for(objects, bucket, "large/", blobs)
        timing = measure(repeats, baseline, sync_with(with_sha), work)
        rows.append(Row(f"{mb} MB adapter + sha256", "s3transfer", timing, nbytes, None, net.label))
    return rows


def stage_small(
    server: S3Server, bucket: str, work: Path, count: int, kib: int
) -> tuple[list[DesiredAdapter], list[ObjectInfo]]:
    adapters = []
    objects_all: list[ObjectInfo] = []
    for i in range(count):
        prefix = f"small/a{i:03d}/"
        files = {"adapter_config.json": CONFIG, "adapter_model.safetensors": os.urandom(kib << 10)}
        objects = upload(server, bucket, prefix, files, work)
        objects_all.extend(objects)
        adapters.append(adapter_for(objects, bucket, prefix))
    return adapters, objects_all


def small_case(
    server: S3Server,
    bucket: str,
    work: Path,
    staged: tuple[list[DesiredAdapter], list[ObjectInfo]],
    kib: int,
    repeats: int,
    net: Net,
) -> Row:
    adapters, objects_all = staged
    count = len(adapters)
    plain_client = net.boto3(server)
    boto3_config = Boto3TransferConfig()  # what a script calling download_file gets

    def baseline(dest: Path) -> float:
        def loop() -> None:
            for o in objects_all:
                target = dest / o.key
                target.parent.mkdir(parents=True, exist_ok=True)
                plain_client.download_file(bucket, o.key, str(target), Config=boto3_config)

        return timed(loop)

    def sync(dest: Path) -> float:
        client = S3Client(net.settings(server))
        try:
            cache = AdapterCache(dest)
            return run_async(
                lambda: asyncio.gather(
                    *(cache.ensure(a, s3=client, allow_pickle=False) for a in adapters)
                )
            )
        finally:
            client.close()

    timing = measure(repeats, baseline, sync, work)
    nbytes = sum(o.size for o in objects_all)
    return Row(
        f"{count} small adapters ({kib} KiB)",
        "boto3 download_file loop",
        timing,
        nbytes,
        net.small_target,
        net.label,
    )


def print_table(rows: list[Row]) -> None:
    head = (
        f"{'network':<26} {'case':<30} {'baseline':<26} {'baseline':>16} {'sync':>16} {'ratio':>7} "
    )
    print(head + f"{'target':>7}  ok")
    for r in rows:
        mbps = r.nbytes / 1e6
        t = r.timing
        base = f"{t.base_s:6.2f}s {mbps / t.base_s:5.0f}MB/s"
        sync = f"{t.sync_s:6.2f}s {mbps / t.sync_s:5.0f}MB/s"
        target = f">={r.target:.1f}x" if r.target else "info"
        verdict = "yes" if r.ok() else "NO"
        if r.target is None:
            verdict = "-"
        print(
            f"{r.net:<26} {r.case:<30} {r.baseline:<26} {base:>16} {sync:>16} {r.ratio:6.2f}x "
            f"{target:>7}  {verdict}"
        )


def networks(
    server: S3Server, args: argparse.Namespace
) -> Iterator[tuple[Net, subprocess.Popen[bytes] | None]]:
    """Loopback, then +latency, then +latency and a per-connection bandwidth cap. The proxy is
    a process of its own: in this one it would take the GIL from the sync (which is CPU-bound)
    and not from the sequential baseline (which waits), skewing the ratio."""
    yield Net("loopback", server.endpoint, 3.0), None
    ms = args.latency_ms
    shapes: list[tuple[str, float]] = [(f"+{ms:g} ms/request", 0.0)]
    if args.cap_mbps:
        shapes.append((f"+{ms:g} ms, {args.cap_mbps:g} MB/s/conn", args.cap_mbps * 1e6))
    for label, cap in shapes:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        proxy = subprocess.Popen(
            [
                sys.executable, "-m", "lorapack_testworld.faultproxy",
                "--upstream", server.endpoint, "--port", str(port),
                "--latency", str(ms / 1000), "--bandwidth", str(cap), "--every-method",
            ],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 20
        while True:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if time.monotonic() > deadline or proxy.poll() is not None:
                proxy.kill()
                raise RuntimeError(f"the fault proxy did not listen on {port}")
            time.sleep(0.1)
        yield Net(label, f"http://127.0.0.1:{port}", 8.0), proxy


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--large-mb", type=int, default=300)
    parser.add_argument("--small-count", type=int, default=200)
    parser.add_argument("--small-kib", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--cap-mbps", type=float, default=25.0, help="0: no capped run")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="lorapack-bench-s3-"))
    server = start_s3_server(work / "server")
    try:
        server.create_bucket("bench")
        print(
            f"S3 server: SeaweedFS on {server.endpoint}; CPUs: {os.cpu_count()}; load average "
            f"before: {os.getloadavg()[0]:.1f}",
            flush=True,
        )
        large = stage_large(server, "bench", work, args.large_mb)
        staged = stage_small(server, "bench", work, args.small_count, args.small_kib)
        rows = []
        for net, proxy in networks(server, args):
            try:
                print(f"  {net.label} ...", flush=True)
                rows += large_case(
                    server, "bench", work, large, args.repeats, net, net.small_target == 3
                )
                rows.append(
                    small_case(server, "bench", work, staged, args.small_kib, args.repeats, net)
                )
            finally:
                if proxy is not None:
                    proxy.terminate()
                    proxy.wait(10)
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    print(f"load average after: {os.getloadavg()[0]:.1f} (other work on the machine skews ratios)")
    print_table(rows)
    missed = [r.case for r in rows if not r.ok()]
    if missed:
        print(f"target missed: {', '.join(missed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

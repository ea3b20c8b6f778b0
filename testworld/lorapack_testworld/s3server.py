"""The loopback S3 server of the test world: SeaweedFS (`weed server -s3`) on 127.0.0.1.

Used by the pytest fixtures (tests/fixtures/s3.py), the demo and the benchmarks; run it by hand
with `python -m lorapack_testworld.s3server` (prints the endpoint and credentials to export).

The `weed` binary is built from the Go module proxy by hack/build-tools.sh (wrapper module
hack/tools/seaweedfs) into $LORAPACK_CACHE/bin/seaweedfs-<version>-<go.sum hash>/; set
LORAPACK_WEED to use another binary. docs/dev/s3-server.md says why SeaweedFS and not MinIO
(AGPL) or moto. Finding the binary and its command line are in `lorapack_testworld.weed`.

The server checks credentials for real (an identities file, as SeaweedFS's `-s3.config`):

    admin   read/write/list everything       (`S3Server.access_key` / `secret_key`)
    reader  read and list bucket "public"    (a valid key without access elsewhere)
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from lorapack.clients.s3 import ObjectInfo, S3Settings
from lorapack_testworld.weed import (
    find_weed,
    free_ports,
    spawn_weed,
    weed_command,
    write_identities,
)

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client as Boto3S3Client

__all__ = [
    "READER_BUCKET",
    "S3Server",
    "start_s3_server",
]

REGION: Final = "us-east-1"
READER_BUCKET: Final = "public"
_ADMIN = ("lorapackadmin", "lorapack-admin-secret-key-for-tests")
_READER = ("lorapackreader", "lorapack-reader-secret-key-for-tests")
MiB: Final = 2**20


@dataclass
class S3Server:
    """A running server; stop() (or the context manager) ends it and deletes its data."""

    endpoint: str
    access_key: str
    secret_key: str
    region: str
    data_dir: Path
    log_path: Path
    reader_access_key: str = _READER[0]
    reader_secret_key: str = _READER[1]
    _process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _owns_dir: bool = field(default=False, repr=False)
    _admin: Boto3S3Client | None = field(default=None, repr=False)

    # -- clients and settings -------------------------------------------------------------------

    def settings(self, **overrides: Any) -> S3Settings:
        """lorapack S3Settings for this server with the admin credentials (path-style)."""
        values: dict[str, Any] = {
            "endpoint": self.endpoint,
            "region": self.region,
            "addressing_style": "path",
            "access_key_id": self.access_key,
            "secret_access_key": self.secret_key,
        }
        values.update(overrides)
        return S3Settings(**values)

    def client(
        self, *, access_key: str | None = None, secret_key: str | None = None
    ) -> Boto3S3Client:
        """A plain boto3 client (admin credentials unless given), for setting up test data."""
        if access_key is None and secret_key is None and self._admin is not None:
            return self._admin  # boto3 clients are thread-safe; making one costs ~0.1-0.3 s
        session = boto3.session.Session(
            aws_access_key_id=access_key or self.access_key,
            aws_secret_access_key=secret_key or self.secret_key,
            region_name=self.region,
        )
        client = session.client(
            "s3",
            endpoint_url=self.endpoint,
            config=Config(
                s3={"addressing_style": "path"},
                retries={"mode": "standard", "total_max_attempts": 3},
                max_pool_connections=16,
            ),
        )
        if access_key is None and secret_key is None:
            self._admin = client
        return client

    # -- test data ------------------------------------------------------------------------------

    def create_bucket(self, name: str, *, versioned: bool = False) -> None:
        """Create a bucket (no error if it exists), optionally with versioning enabled."""
        client = self.client()
        try:
            client.create_bucket(Bucket=name)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in (
                "BucketAlreadyOwnedByYou",
                "BucketAlreadyExists",
            ):
                raise
        if versioned:
            client.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})

    def put_bytes(self, bucket: str, key: str, data: bytes) -> ObjectInfo:
        """Upload one object in a single PUT; returns what a listing would say about it."""
        r = self.client().put_object(Bucket=bucket, Key=key, Body=data)
        version = r.get("VersionId")
        return ObjectInfo(
            key=key,
            size=len(data),
            etag=r.get("ETag", "").strip('"'),
            version_id=None if version in (None, "null") else version,
        )

    def upload_folder(
        self,
        bucket: str,
        prefix: str,
        folder: Path,
        *,
        multipart_threshold: int = 8 * MiB,
        multipart_chunksize: int = 8 * MiB,
    ) -> list[ObjectInfo]:
        """Upload every file under `folder` to `prefix` + its relative path (files at least
        multipart_threshold large as multipart uploads, as the AWS CLI does); returns the
        objects as listed afterwards, sorted by key."""
        client = self.client()
        config = TransferConfig(
            multipart_threshold=multipart_threshold,
            multipart_chunksize=multipart_chunksize,
            max_concurrency=8,
        )
        root = Path(folder)
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            key = prefix + path.relative_to(root).as_posix()
            client.upload_file(str(path), bucket, key, Config=config)
        found: list[ObjectInfo] = []
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for o in page.get("Contents", []):
                etag = o.get("ETag", "").strip('"')
                found.append(ObjectInfo(o.get("Key", ""), int(o.get("Size", 0)), etag, None))
        return sorted(found, key=lambda o: o.key)

    # -- lifecycle ------------------------------------------------------------------------------

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            # The process leads its own session (start_new_session): signal it alone, by pid.
            process.send_signal(signal.SIGTERM)
            try:
                # weed's graceful stop can hang on reconnect loops; the data is disposable.
                process.wait(3)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(3)
        if self._owns_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> S3Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_s3_server(
    workdir: Path | None = None, *, port: int = 0, startup_timeout: float = 60.0
) -> S3Server:
    """Start SeaweedFS on 127.0.0.1 (S3 on `port`, or a free one) and wait until it stores
    and serves an object. Data lives in `workdir` (a fresh temporary folder if None, deleted
    on stop)."""
    weed = find_weed()
    owns = workdir is None
    base = Path(tempfile.mkdtemp(prefix="lorapack-s3-")) if workdir is None else Path(workdir)
    data = base / "data"
    data.mkdir(parents=True, exist_ok=True)
    config_path = write_identities(base, admin=_ADMIN, reader=_READER, bucket=READER_BUCKET)
    ports = free_ports(8)
    s3_port = port or ports[0]
    log_path = base / "weed.log"
    process = spawn_weed(weed_command(weed, data, config_path, s3_port, ports), base, log_path)
    server = S3Server(
        endpoint=f"http://127.0.0.1:{s3_port}",
        access_key=_ADMIN[0],
        secret_key=_ADMIN[1],
        region=REGION,
        data_dir=base,
        log_path=log_path,
        _process=process,
        _owns_dir=owns,
    )
    atexit.register(server.stop)
    try:
        _wait_ready(server, process, startup_timeout)
        server.create_bucket(READER_BUCKET)
    except BaseException:
        server.stop()
        raise
    return server


def _wait_ready(server: S3Server, process: subprocess.Popen[bytes], timeout: float) -> None:
    """Until a PUT and a GET succeed: S3 answers before the filer has volumes to write to."""
    deadline = time.monotonic() + timeout
    client = server.client()
    last = "no answer yet"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"SeaweedFS exited with {process.returncode} while starting; its log "
                f"{server.log_path} ends with:\n{_tail(server.log_path)}"
            )
        try:
            server.create_bucket("lorapack-ready")
            client.put_object(Bucket="lorapack-ready", Key="probe", Body=b"ok")
            if client.get_object(Bucket="lorapack-ready", Key="probe")["Body"].read() == b"ok":
                return
        except (BotoCoreError, ClientError) as exc:
            last = str(exc)
        time.sleep(0.2)
    raise TimeoutError(
        f"SeaweedFS did not serve S3 on {server.endpoint} within {timeout:.0f}s ({last}); "
        f"log {server.log_path}:\n{_tail(server.log_path)}"
    )


def _tail(path: Path, lines: int = 20) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return ""


@contextlib.contextmanager
def running_s3_server(workdir: Path | None = None) -> Iterator[S3Server]:
    """start_s3_server as a context manager."""
    server = start_s3_server(workdir)
    try:
        yield server
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m lorapack_testworld.s3server",
        description="Run the loopback S3 server (SeaweedFS) until Ctrl-C.",
    )
    parser.add_argument("--port", type=int, default=8333, help="S3 port (0: any free port)")
    parser.add_argument("--dir", type=Path, default=None, help="data folder (default: temp)")
    parser.add_argument("--bucket", action="append", default=[], help="bucket to create")
    parser.add_argument("--versioned", action="store_true", help="enable versioning on them")
    parser.add_argument(
        "--upload",
        action="append",
        default=[],
        metavar="BUCKET/PREFIX=FOLDER",
        help="upload FOLDER's files under s3://BUCKET/PREFIX",
    )
    args = parser.parse_args(argv)
    server = start_s3_server(args.dir, port=args.port)
    for bucket in args.bucket:
        server.create_bucket(bucket, versioned=args.versioned)
    for spec in args.upload:
        target, _, folder = spec.partition("=")
        bucket, _, prefix = target.partition("/")
        server.create_bucket(bucket, versioned=args.versioned)
        objects = server.upload_folder(bucket, prefix, Path(folder))
        print(f"uploaded {len(objects)} files to s3://{bucket}/{prefix}")
    print(
        f"export AWS_ENDPOINT_URL={server.endpoint}\n"
        f"export AWS_ACCESS_KEY_ID={server.access_key}\n"
        f"export AWS_SECRET_ACCESS_KEY={server.secret_key}\n"
        f"export AWS_REGION={server.region}\n"
        f"# SeaweedFS log: {server.log_path}; Ctrl-C stops the server",
        flush=True,
    )
    try:
        while server._process is not None and server._process.poll() is None:
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


if __name__ == "__main__":
    main()

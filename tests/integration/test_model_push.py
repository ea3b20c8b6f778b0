"""`lorapack model push` and its uploader against the real S3 server (SeaweedFS on loopback).

What a platform engineer relies on: the staged prefix passes the same check the pool runs
(planning.basemodel on the S3 listing) and downloads back byte for byte; every object was
verified on upload with SHA-256 (per part for multipart uploads) and MD5, and carries its file's
SHA-256; a second push uploads nothing; `--checksum md5` works where SHA-256 is not wanted; a
missing bucket, wrong keys and a corrupted object read back are reported as what they are.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest

from lorapack.cli import main
from lorapack.clients.s3 import S3Client, S3Uploader, UploadItem
from lorapack.clients.s3.settings import MiB
from lorapack.errors import AccessDenied, InvalidSpec, StorageUnavailable
from lorapack.planning.basemodel import check_base_model_files
from lorapack_testworld.artifacts import ArtifactIndex
from lorapack_testworld.faultproxy import Fault, FaultProxy
from lorapack_testworld.s3server import S3Server

pytestmark = pytest.mark.s3


@pytest.fixture
def s3_env(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The CLI reads credentials like the AWS CLI does: from the environment."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret_key)
    monkeypatch.setenv("AWS_REGION", s3_server.region)
    return ["--endpoint", s3_server.endpoint, "--addressing-style", "path"]


def push(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, object]:
    assert main(["model", "push", *argv, "-o", "json"]) == 0, capsys.readouterr().err
    data: dict[str, object] = json.loads(capsys.readouterr().out)
    return data


def test_push_stages_a_model_the_pool_check_accepts_and_that_downloads_back(
    s3_server: S3Server,
    s3_bucket: str,
    s3_env: list[str],
    artifacts: ArtifactIndex,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    source = artifacts.model.path
    uri = f"s3://{s3_bucket}/tiny-llama/"
    data = push(capsys, str(source), uri, *s3_env, "--name", "lorapack/tiny-llama")
    files = {f["path"]: f for f in data["files"]}  # type: ignore[attr-defined]
    assert set(files) == {p.name for p in source.iterdir()}
    assert {f["state"] for f in files.values()} == {"uploaded"}
    assert {f["checksum"] for f in files.values()} == {"SHA256"}  # SeaweedFS verifies SHA-256
    fragment = data["baseModel"]["spec"]["baseModel"]  # type: ignore[index]
    assert fragment["name"] == "lorapack/tiny-llama"
    assert fragment["source"]["s3"] == {"uri": uri, "endpoint": s3_server.endpoint}
    client = S3Client(s3_server.settings())
    try:
        listing = asyncio.run(client.list_prefix(s3_bucket, "tiny-llama/"))
        # The check the pool runs before it starts pods passes on what was staged.
        assert check_base_model_files([o.key for o in listing], uri) == []
        head = s3_server.client().head_object(Bucket=s3_bucket, Key="tiny-llama/config.json")
        config_sha = hashlib.sha256((source / "config.json").read_bytes()).hexdigest()
        assert head["Metadata"]["sha256"] == config_sha
        assert files["config.json"]["sha256"] == config_sha
        # What the pods' fetch-model init container downloads is what was pushed.
        from lorapack.clients.s3 import DownloadItem

        dest = tmp_path / "fetched"
        items = [
            DownloadItem(s3_bucket, o.key, None, dest / o.key.split("/", 1)[1], o.size)
            for o in listing
        ]
        asyncio.run(client.download(items))
        for path in source.iterdir():
            assert (dest / path.name).read_bytes() == path.read_bytes(), path.name
    finally:
        client.close()


def test_second_push_uploads_nothing_and_force_uploads_again(
    s3_bucket: str,
    s3_env: list[str],
    artifacts: ArtifactIndex,
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = [str(artifacts.model.path), f"s3://{s3_bucket}/m/", *s3_env]
    push(capsys, *argv)
    again = push(capsys, *argv)
    assert {f["state"] for f in again["files"]} == {"unchanged"}  # type: ignore[attr-defined]
    forced = push(capsys, *argv, "--force")
    assert {f["state"] for f in forced["files"]} == {"uploaded"}  # type: ignore[attr-defined]


def test_a_changed_file_is_uploaded_again(
    s3_bucket: str,
    s3_env: list[str],
    artifacts: ArtifactIndex,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    source = tmp_path / "model"
    shutil.copytree(artifacts.model.path, source)
    argv = [str(source), f"s3://{s3_bucket}/m/", *s3_env]
    push(capsys, *argv)
    config = json.loads((source / "config.json").read_text())
    (source / "config.json").write_text(json.dumps({**config, "comment": "retrained"}))
    states = {f["path"]: f["state"] for f in push(capsys, *argv)["files"]}  # type: ignore[attr-defined]
    assert states.pop("config.json") == "uploaded"
    assert set(states.values()) == {"unchanged"}


def big_file(tmp_path: Path, size: int) -> Path:
    path = tmp_path / "model-00001-of-00001.safetensors"
    path.write_bytes(os.urandom(size))
    return path


@pytest.mark.parametrize("checksum", ["sha256", "md5"])
def test_multipart_upload_is_verified_part_by_part(
    s3_server: S3Server, s3_bucket: str, tmp_path: Path, checksum: str
) -> None:
    path = big_file(tmp_path, 11 * MiB + 123)
    uploader = S3Uploader(
        s3_server.settings(),
        checksum=checksum,
        part_size=5 * MiB,
        concurrency=3,  # type: ignore[arg-type]
    )
    try:
        item = UploadItem(path, s3_bucket, "big/w.safetensors", path.stat().st_size)
        (result,) = asyncio.run(uploader.upload([item]))
    finally:
        uploader.close()
    data = path.read_bytes()
    assert result.sha256 == hashlib.sha256(data).hexdigest()
    assert result.checksum == checksum.upper()
    parts = [data[i : i + 5 * MiB] for i in range(0, len(data), 5 * MiB)]
    md5s = b"".join(hashlib.md5(p).digest() for p in parts)
    assert result.etag == f"{hashlib.md5(md5s).hexdigest()}-3"
    head = s3_server.client().head_object(
        Bucket=s3_bucket, Key="big/w.safetensors", ChecksumMode="ENABLED"
    )
    if checksum == "sha256":
        shas = b"".join(hashlib.sha256(p).digest() for p in parts)
        assert (
            head["ChecksumSHA256"]
            == base64.b64encode(hashlib.sha256(shas).digest()).decode() + "-3"
        )
    else:
        assert "ChecksumSHA256" not in head
    got = s3_server.client().get_object(Bucket=s3_bucket, Key="big/w.safetensors")["Body"].read()
    assert got == data


@pytest.mark.parametrize(
    ("keys", "bucket"),
    [
        pytest.param(("nobody", "wrong"), "public", id="unknown-keys"),
        pytest.param("reader", "elsewhere", id="read-only-keys"),
    ],
)
def test_keys_that_cannot_write_say_which_rights_are_needed(
    s3_server: S3Server, tmp_path: Path, keys: object, bucket: str
) -> None:
    path = big_file(tmp_path, 1000)
    if keys == "reader":
        keys = (s3_server.reader_access_key, s3_server.reader_secret_key)
    access, secret = keys  # type: ignore[misc]
    uploader = S3Uploader(s3_server.settings(access_key_id=access, secret_access_key=secret))
    try:
        with pytest.raises(AccessDenied, match="s3:PutObject"):
            asyncio.run(uploader.upload([UploadItem(path, bucket, "x", 1000)]))
    finally:
        uploader.close()


def test_an_object_that_reads_back_differently_is_refused(
    s3_server: S3Server, s3_bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The read-back check is real: an object replaced between the upload and the HEAD (here
    by another client) fails the run instead of passing as uploaded."""
    path = big_file(tmp_path, 2000)
    uploader = S3Uploader(s3_server.settings(), checksum="md5")
    send = uploader._send

    def send_then_overwrite(item: UploadItem, *args: object, **kw: object) -> object:
        original_verify = uploader._verify

        def overwrite_then_verify(*a: object, **k: object) -> object:
            s3_server.client().put_object(Bucket=item.bucket, Key=item.key, Body=b"other bytes")
            return original_verify(*a, **k)  # type: ignore[arg-type]

        monkeypatch.setattr(uploader, "_verify", overwrite_then_verify)
        return send(item, *args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(uploader, "_send", send_then_overwrite)
    try:
        with pytest.raises(StorageUnavailable, match="does not read back as uploaded"):
            asyncio.run(uploader.upload([UploadItem(path, s3_bucket, "w", 2000)]))
    finally:
        uploader.close()


def test_auto_falls_back_to_md5_when_the_server_has_no_sha256(
    s3_server: S3Server, s3_fault_proxy: FaultProxy, s3_bucket: str, artifacts: ArtifactIndex
) -> None:
    """A store without S3's additional checksums answers NotImplemented to the first upload
    that carries one; "auto" then sends Content-MD5 only, for that file and the rest."""
    s3_fault_proxy.add(Fault(status=501, code="NotImplemented", method="PUT", times=1))
    source = artifacts.model.path
    items = [
        UploadItem(p, s3_bucket, f"m/{p.name}", p.stat().st_size) for p in sorted(source.iterdir())
    ]
    uploader = S3Uploader(s3_server.settings(endpoint=s3_fault_proxy.endpoint))
    try:
        results = asyncio.run(uploader.upload(items))
    finally:
        uploader.close()
    assert [r.checksum for r in results] == ["MD5"] * len(items)
    assert uploader.checksum == "md5"
    assert [r.fault for r in s3_fault_proxy.requests].count("501 NotImplemented") == 1
    for item in items:
        got = s3_server.client().get_object(Bucket=s3_bucket, Key=item.key)["Body"].read()
        assert got == item.path.read_bytes()


def test_sha256_mode_does_not_fall_back(
    s3_server: S3Server, s3_fault_proxy: FaultProxy, s3_bucket: str, tmp_path: Path
) -> None:
    s3_fault_proxy.add(Fault(status=501, code="NotImplemented", method="PUT", times=1))
    path = big_file(tmp_path, 100)
    settings = s3_server.settings(endpoint=s3_fault_proxy.endpoint)
    uploader = S3Uploader(settings, checksum="sha256")
    try:
        with pytest.raises(InvalidSpec, match="use --checksum auto or md5"):
            asyncio.run(uploader.upload([UploadItem(path, s3_bucket, "w", 100)]))
    finally:
        uploader.close()

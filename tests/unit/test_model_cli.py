"""`lorapack model check` and the local half of `lorapack model push`: which folder, which files,
which name and catalog key, the pool fragment, and refusing a folder vLLM cannot serve before any
upload. The uploads themselves run against the real S3 server
(tests/integration/test_model_push.py)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import yaml
from botocore.exceptions import ClientError, NoCredentialsError

from lorapack.cli import main
from lorapack.clients.s3.upload import UploadItem, part_layout
from lorapack.clients.s3.upload import _error as upload_error
from lorapack.commands import model
from lorapack.errors import AccessDenied, ArtifactNotFound, InvalidSpec, StorageUnavailable

LLAMA3_8B = {
    "_name_or_path": "meta-llama/Meta-Llama-3-8B",
    "architectures": ["LlamaForCausalLM"],
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "max_position_embeddings": 8192,
    "model_type": "llama",
    "num_attention_heads": 32,
    "num_hidden_layers": 32,
    "num_key_value_heads": 8,
    "vocab_size": 128256,
}


def write_model(root: Path, config: dict[str, object] | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.json").write_text(json.dumps(config or {"architectures": ["X"]}))
    (root / "tokenizer.json").write_text("{}")
    (root / "model.safetensors").write_bytes(b"\0" * 64)
    return root


def hf_cache(tmp_path: Path) -> Path:
    """A Hugging Face hub cache entry: snapshot files are links into blobs/."""
    repo = tmp_path / "hub" / "models--meta-llama--Meta-Llama-3-8B"
    blobs = repo / "blobs"
    blobs.mkdir(parents=True)
    snap = repo / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    for name, data in {
        "config.json": json.dumps(LLAMA3_8B).encode(),
        "tokenizer.json": b"{}",
        "model.safetensors.index.json": b"{}",
        "model-00001-of-00002.safetensors": b"\1" * 32,
        "model-00002-of-00002.safetensors": b"\2" * 32,
        "original/consolidated.00.pth": b"pickle",
    }.items():
        blob = blobs / name.replace("/", "_")
        blob.write_bytes(data)
        link = snap / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(blob)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123\n")
    return repo


def test_hf_cache_folder_resolves_to_its_main_snapshot(tmp_path: Path) -> None:
    folder = model.read_folder(hf_cache(tmp_path), [])
    assert folder.root.name == "abc123"
    assert folder.hf_name == "meta-llama/Meta-Llama-3-8B"
    assert "model-00002-of-00002.safetensors" in folder.files  # read through the links


def test_hidden_files_and_excludes_are_skipped(tmp_path: Path) -> None:
    root = write_model(tmp_path / "m")
    (root / ".cache" / "huggingface").mkdir(parents=True)
    (root / ".cache" / "huggingface" / "download.lock").write_text("")
    (root / ".gitattributes").write_text("")
    (root / "original").mkdir()
    (root / "original" / "consolidated.00.pth").write_bytes(b"x")
    assert model.read_folder(root, []).files == (
        "config.json",
        "model.safetensors",
        "original/consolidated.00.pth",
        "tokenizer.json",
    )
    assert "original/consolidated.00.pth" not in model.read_folder(root, ["original/*"]).files


def test_a_folder_without_config_json_is_refused_before_any_walk(tmp_path: Path) -> None:
    (tmp_path / "deep" / "tree").mkdir(parents=True)
    with pytest.raises(InvalidSpec, match=r"has no config\.json: pass the model folder"):
        model.read_folder(tmp_path, [])
    with pytest.raises(InvalidSpec, match="is not a folder"):
        model.read_folder(tmp_path / "missing", [])


def test_served_name_and_catalog_key(tmp_path: Path) -> None:
    folder = model.read_folder(hf_cache(tmp_path), [])
    config = json.loads((folder.root / "config.json").read_text())
    name = model.served_name(folder, config)
    assert name == "meta-llama/Meta-Llama-3-8B"
    assert model.catalog_key(name, config) == "llama-3-8b"
    # A fine-tune with its own name but Llama-3-8B's shapes is sized as Llama-3-8B.
    assert model.catalog_key("acme/support-llama", {**config, "_name_or_path": "x"}) == "llama-3-8b"
    assert model.catalog_key("acme/unknown", {"architectures": ["Phi3ForCausalLM"]}) is None


def test_served_name_from_config_or_folder(tmp_path: Path) -> None:
    root = write_model(tmp_path / "my-model", {"_name_or_path": "acme/model-7b"})
    folder = model.read_folder(root, [])
    assert model.served_name(folder, {"_name_or_path": "acme/model-7b"}) == "acme/model-7b"
    assert model.served_name(folder, {"_name_or_path": "/tmp/out"}) == "my-model"


def test_pool_fragment_is_a_basemodelpool_spec_fragment() -> None:
    args = argparse.Namespace(endpoint="http://minio:9000", region="eu-west-1")
    text = model.pool_fragment("meta-llama/Meta-Llama-3-8B", "llama-3-8b", "s3://m/l/", args)
    assert yaml.safe_load(text) == {
        "spec": {
            "baseModel": {
                "name": "meta-llama/Meta-Llama-3-8B",
                "architecture": "llama-3-8b",
                "source": {
                    "s3": {
                        "uri": "s3://m/l/",
                        "endpoint": "http://minio:9000",
                        "region": "eu-west-1",
                    }
                },
            }
        }
    }
    unknown = model.pool_fragment("acme/x", None, "s3://m/x/", argparse.Namespace())
    assert "lorapack size --config" in unknown


def test_check_cli_passes_a_complete_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["model", "check", str(hf_cache(tmp_path))]) == 0
    out = capsys.readouterr().out
    assert "ready for vLLM" in out
    assert "pickle files vLLM does not load" in out  # original/*.pth


def test_check_cli_names_what_is_missing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = write_model(tmp_path / "m")
    (root / "tokenizer.json").unlink()
    assert main(["model", "check", str(root), "-o", "json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert [i["reason"] for i in data["issues"]] == ["BaseModelIncomplete"]
    assert "no tokenizer" in data["issues"][0]["message"]
    assert "huggingface-cli download" in data["issues"][0]["message"]


def test_push_refuses_an_incomplete_folder_before_uploading(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = write_model(tmp_path / "m")
    (root / "model.safetensors").unlink()
    # No endpoint answers at this address: the refusal must come before any S3 call.
    argv = ["model", "push", str(root), "s3://models/m/", "--endpoint", "http://127.0.0.1:1"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "no *.safetensors weights" in err
    assert "nothing uploaded" in err


def test_push_dry_run_lists_and_prints_the_fragment(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["model", "push", str(hf_cache(tmp_path)), "s3://models/llama-3-8b", "--dry-run"]
    assert main([*argv, "--exclude", "original/*", "-o", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["uri"] == "s3://models/llama-3-8b/"  # the trailing slash is added
    assert [f["path"] for f in data["files"]] == [
        "config.json",
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
        "model.safetensors.index.json",
        "tokenizer.json",
    ]
    assert data["baseModel"]["spec"]["baseModel"]["architecture"] == "llama-3-8b"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["s3:/models/x/"], "is not an S3 URI"),
        (["s3://models/x/", "--part-size", "big"], "is not a quantity"),
    ],
)
def test_push_usage_errors_say_what_to_write(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    root = write_model(tmp_path / "m")
    assert main(["model", "push", str(root), *argv]) == 1
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    ("size", "part", "want"),
    [
        (10, 64, [(0, 10)]),
        (64, 64, [(0, 64)]),
        (0, 64, [(0, 0)]),
        (12 * 2**20, 5 * 2**20, [(0, 5 * 2**20), (5 * 2**20, 5 * 2**20), (10 * 2**20, 2 * 2**20)]),
    ],
)
def test_part_layout(size: int, part: int, want: list[tuple[int, int]]) -> None:
    assert part_layout(size, part) == want


def test_part_layout_stays_within_10000_parts() -> None:
    size = 1 << 40  # 1 TiB at 64 MiB parts would be 16,384 parts
    layout = part_layout(size, 64 * 2**20)
    assert len(layout) <= 10_000
    assert sum(length for _, length in layout) == size


@pytest.mark.parametrize(
    ("exc", "kind", "words"),
    [
        pytest.param(
            ClientError({"Error": {"Code": "NoSuchBucket"}}, "PutObject"),
            ArtifactNotFound,
            "bucket models does not exist: create it first",
            id="no-bucket",
        ),
        pytest.param(
            ClientError({"Error": {"Code": "BadDigest"}}, "PutObject"),
            StorageUnavailable,
            "arrived corrupted",
            id="bad-digest",
        ),
        pytest.param(
            NoCredentialsError(), AccessDenied, "set AWS_ACCESS_KEY_ID", id="no-credentials"
        ),
    ],
)
def test_upload_errors_are_worded_for_the_person_uploading(
    exc: Exception, kind: type[Exception], words: str
) -> None:
    item = UploadItem(Path("w"), "models", "llama/w", 1)
    error = upload_error(exc, item)
    assert isinstance(error, kind)
    assert words in error.message

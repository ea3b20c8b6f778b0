"""`lorapack model`: stage a base model's weights in S3 for a BaseModelPool.

    lorapack model check FOLDER              does FOLDER hold what vLLM needs?
    lorapack model push FOLDER s3://b/p/     check, upload with checksums, print the pool fragment

FOLDER is a model folder (config.json, tokenizer, *.safetensors), such as
`huggingface-cli download <model> --local-dir FOLDER` writes, or a Hugging Face cache folder
(`~/.cache/huggingface/hub/models--<org>--<name>`, whose `refs/main` snapshot is used; its files
are links into the cache's blobs and are read through them). Hidden files and folders
(`.cache/`, `.gitattributes`) are never uploaded; `--exclude` skips more.

The check is the one the pool runs on its S3 prefix (`planning.basemodel`), so a folder that
passes here starts a pod. The upload (`clients.s3.upload`) sends Content-MD5 and, where the
server supports it, SHA-256 checksums, reads every object back, and skips files already there
unchanged, so an interrupted push is resumed by running it again. S3 credentials come from the
environment as for the AWS CLI (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or the
machine's cloud identity); `--endpoint` names an S3-compatible store.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from lorapack.api import conditions
from lorapack.api.meta import parse_quantity, parse_s3_uri
from lorapack.commands.output import add_output_flag, emit, render_table
from lorapack.errors import InvalidSpec, LorapackError
from lorapack.issues import Issue
from lorapack.planning.basemodel import PICKLE_PATTERNS, check_base_model_files
from lorapack.sizing.catalog import MODELS, lookup_model, model_from_config

if TYPE_CHECKING:  # imported in the functions that use it: boto3 is not needed for --help
    from lorapack.clients.s3 import UploadItem

HELP = "stage a base model in S3 for a BaseModelPool (check, push)"

_SHAPE = (
    "architecture",
    "hidden_size",
    "num_layers",
    "num_heads",
    "num_kv_heads",
    "head_dim",
    "intermediate_size",
    "vocab_size",
    "max_position_embeddings",
)


@dataclass(frozen=True)
class ModelFolder:
    """A local model folder: its files (relative paths) and what it says about itself."""

    root: Path
    files: tuple[str, ...]
    hf_name: str | None
    """org/name when the folder is a Hugging Face cache snapshot."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    subs = parser.add_subparsers(dest="model_command", metavar="ACTION", required=True)
    check = subs.add_parser("check", help="check that a model folder holds what vLLM needs")
    check.add_argument("source", type=Path, help="model folder or Hugging Face cache folder")
    _add_selection(check)
    add_output_flag(check)
    push = subs.add_parser("push", help="upload a model folder to S3 and print the pool fragment")
    push.add_argument("source", type=Path, help="model folder or Hugging Face cache folder")
    push.add_argument("destination", help="s3://bucket/prefix/ (the pool's baseModel URI)")
    _add_selection(push)
    s3 = push.add_argument_group("S3")
    s3.add_argument("--endpoint", help="endpoint URL of an S3-compatible store (unset: AWS)")
    s3.add_argument("--region", help="S3 region (unset: AWS_REGION or the SDK default)")
    s3.add_argument(
        "--addressing-style",
        choices=["auto", "path", "virtual"],
        default="auto",
        help='bucket addressing; "path" for MinIO, Ceph and SeaweedFS (default: auto)',
    )
    s3.add_argument(
        "--checksum",
        choices=["auto", "sha256", "md5"],
        default="auto",
        help="auto: SHA-256 where the server supports it, else Content-MD5 (default: auto)",
    )
    s3.add_argument("--concurrency", type=int, default=4, help="parts in flight (default: 4)")
    s3.add_argument("--part-size", default="64Mi", help="multipart part size (default: 64Mi)")
    s3.add_argument("--force", action="store_true", help="upload files already there unchanged")
    push.add_argument("--name", help="served model name for the fragment (default: from FOLDER)")
    push.add_argument("--dry-run", action="store_true", help="check and list, upload nothing")
    add_output_flag(push)


def _add_selection(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--exclude",
        action="append",
        default=[],
        metavar="PATTERN",
        help="skip files matching PATTERN (relative path, shell-style; repeatable), e.g. "
        "'original/*'",
    )


# -- the local folder ---------------------------------------------------------------------------


def _hf_name(path: Path) -> str | None:
    for part in reversed(path.resolve().parts):
        if part.startswith("models--") and part.count("--") >= 2:
            return part[len("models--") :].replace("--", "/", 1)
    return None


def resolve_folder(source: Path) -> Path:
    """The folder holding config.json: `source` itself, or the snapshot a Hugging Face cache
    folder's refs/main names (its only snapshot when there is no refs/main)."""
    if (source / "config.json").is_file():
        return source
    snapshots = source / "snapshots"
    if snapshots.is_dir():
        ref = source / "refs" / "main"
        if ref.is_file():
            chosen = snapshots / ref.read_text(encoding="utf-8").strip()
            if chosen.is_dir():
                return chosen
        found = sorted(p for p in snapshots.iterdir() if p.is_dir())
        if len(found) == 1:
            return found[0]
    what = "is not a folder" if not source.is_dir() else "has no config.json"
    raise InvalidSpec(
        f"{source} {what}: pass the model folder (the one holding config.json, the tokenizer "
        "and the *.safetensors weights), or a Hugging Face cache folder models--<org>--<name>",
        reason=conditions.BASE_MODEL_INCOMPLETE,
    )


def read_folder(source: Path, exclude: list[str]) -> ModelFolder:
    """The files of the model folder `source` (hidden ones and `exclude` matches skipped)."""
    root = resolve_folder(source)
    files = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if any(part.startswith(".") for part in rel.split("/")):
            continue
        if path.is_file() and not any(fnmatch(rel, pattern) for pattern in exclude):
            files.append(rel)
    return ModelFolder(root, tuple(files), _hf_name(root))


def _config(folder: ModelFolder) -> dict[str, Any]:
    try:
        data = json.loads((folder.root / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def served_name(folder: ModelFolder, config: dict[str, Any]) -> str:
    """The name adapters will use: the Hugging Face repository, else config.json's
    _name_or_path when it looks like one, else the folder's name."""
    named = config.get("_name_or_path")
    if folder.hf_name:
        return folder.hf_name
    if isinstance(named, str) and named.count("/") == 1 and not named.startswith((".", "/")):
        return named
    return folder.root.resolve().name


def catalog_key(name: str, config: dict[str, Any]) -> str | None:
    """The sizing catalog's key for the model: by name, else by identical shapes."""
    try:
        return lookup_model(name).key
    except InvalidSpec:
        pass
    try:
        arch = model_from_config(config, name)
    except InvalidSpec:
        return None
    for key, known in MODELS.items():
        if all(getattr(known, f) == getattr(arch, f) for f in _SHAPE):
            return key
    return None


def _notes(folder: ModelFolder) -> list[str]:
    top = [f for f in folder.files if "/" not in f]
    pickles = [f for f in folder.files if any(fnmatch(f, p) for p in PICKLE_PATTERNS)]
    notes = []
    if pickles and any(f.endswith(".safetensors") for f in top):
        shown = ", ".join(pickles[:3]) + (" ..." if len(pickles) > 3 else "")
        notes.append(
            f"note: {shown}: pickle files vLLM does not load (it reads the safetensors); "
            "skip them with --exclude (e.g. --exclude 'original/*' --exclude '*.bin')"
        )
    return notes


# -- output ---------------------------------------------------------------------------------------


def _size(value: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if value >= scale:
            return f"{value / scale:.2f} {unit}"
    return f"{value} B"


def pool_fragment(name: str, key: str | None, uri: str, args: argparse.Namespace) -> str:
    """The spec.baseModel of a BaseModelPool serving the staged model, as YAML."""
    s3: dict[str, Any] = {"uri": uri}
    if getattr(args, "endpoint", None):
        s3["endpoint"] = args.endpoint
    if getattr(args, "region", None):
        s3["region"] = args.region
    base: dict[str, Any] = {"name": name}
    if key is not None:
        base["architecture"] = key
    base["source"] = {"s3": s3}
    text = yaml.safe_dump({"spec": {"baseModel": base}}, sort_keys=False)
    if key is None:
        text += "# not in lorapack's sizing catalog: size it with `lorapack size --config`\n"
    return text


def _issues_text(issues: list[Issue]) -> str:
    return "\n".join(f"error: {i.reason}: {i.message}" for i in issues)


def _check(folder: ModelFolder, label: str) -> list[Issue]:
    fix = (
        "fix the folder first: download the whole model again (`huggingface-cli download "
        "<model> --local-dir <folder>`, without --include filters that drop these files)"
    )
    return check_base_model_files(list(folder.files), label, fix=fix)


def _run_check(args: argparse.Namespace) -> int:
    folder = read_folder(args.source, args.exclude)
    issues = _check(folder, str(folder.root))
    sizes = {f: (folder.root / f).stat().st_size for f in folder.files}
    data = {
        "folder": str(folder.root),
        "files": [{"path": f, "size": sizes[f]} for f in folder.files],
        "issues": [{"reason": i.reason, "message": i.message} for i in issues],
    }
    rows = [[f, _size(sizes[f])] for f in folder.files]
    lines = [render_table(["FILE", "SIZE"], rows), *_notes(folder)]
    verdict = _issues_text(issues) if issues else f"{folder.root}: ready for vLLM"
    emit(data, args.output, "\n".join([*lines, verdict]))
    return 1 if issues else 0


def _run_push(args: argparse.Namespace) -> int:
    from lorapack.clients.s3 import UploadItem

    try:
        bucket, prefix = parse_s3_uri(args.destination)
        part_size = parse_quantity(args.part_size)
    except ValueError as err:
        raise InvalidSpec(str(err)) from None
    uri = f"s3://{bucket}/{prefix}"
    folder = read_folder(args.source, args.exclude)
    issues = _check(folder, str(folder.root))
    if issues:
        print(_issues_text(issues), file=sys.stderr)
        print(f"nothing uploaded: fix {folder.root} first", file=sys.stderr)
        return 1
    for note in _notes(folder):
        print(note, file=sys.stderr)
    config = _config(folder)
    name = args.name or served_name(folder, config)
    key = catalog_key(name, config)
    items = [
        UploadItem(folder.root / f, bucket, prefix + f, (folder.root / f).stat().st_size)
        for f in folder.files
    ]
    if not args.dry_run:
        rows, results = _upload(args, items, prefix, part_size)
    else:
        rows = [[i.key[len(prefix) :], _size(i.size), "", "", "dry run"] for i in items]
        results = [
            {"path": i.key[len(prefix) :], "size": i.size, "state": "dry run"} for i in items
        ]
    total = sum(i.size for i in items)
    fragment = pool_fragment(name, key, uri, args)
    data = {
        "uri": uri,
        "files": results,
        "totalBytes": total,
        "baseModel": yaml.safe_load(fragment),
    }
    summary = f"{len(items)} files, {_size(total)} in {uri}" + (
        " (dry run)" if args.dry_run else ""
    )
    table = "\n".join(
        [
            render_table(["FILE", "SIZE", "SHA256", "CHECKSUM", "STATUS"], rows),
            summary,
            "",
            "Add to your BaseModelPool:",
            "",
            fragment.rstrip(),
        ]
    )
    emit(data, args.output, table)
    return 0


def _upload(
    args: argparse.Namespace, items: list[UploadItem], prefix: str, part_size: int
) -> tuple[list[list[Any]], list[dict[str, Any]]]:
    """Upload the items (printing each as it finishes); the table rows and the JSON entries."""
    from lorapack.clients.s3 import S3Settings, S3Uploader

    settings = S3Settings(
        endpoint=args.endpoint, region=args.region, addressing_style=args.addressing_style
    )
    uploader = S3Uploader(
        settings, checksum=args.checksum, part_size=part_size, concurrency=args.concurrency
    )

    def done(r: Any) -> None:
        state = "unchanged" if r.skipped else "uploaded"
        print(f"{state} {r.key} ({_size(r.size)})", file=sys.stderr, flush=True)

    try:
        uploaded = asyncio.run(uploader.upload(items, skip_unchanged=not args.force, on_done=done))
    finally:
        uploader.close()
    rows: list[list[Any]] = []
    results: list[dict[str, Any]] = []
    for r in uploaded:
        state = "unchanged" if r.skipped else "uploaded"
        rows.append([r.key[len(prefix) :], _size(r.size), r.sha256[:12], r.checksum, state])
        results.append(
            {
                "path": r.key[len(prefix) :],
                "size": r.size,
                "sha256": r.sha256,
                "checksum": r.checksum,
                "state": state,
            }
        )
    return rows, results


def run(args: argparse.Namespace) -> int:
    try:
        return _run_check(args) if args.model_command == "check" else _run_push(args)
    except OSError as err:
        raise InvalidSpec(f"cannot read {err.filename}: {err.strerror}") from None
    except LorapackError:
        raise

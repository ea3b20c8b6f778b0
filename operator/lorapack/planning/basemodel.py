"""Does a base-model folder hold what vLLM needs to start? Checked before any pod is created.

The pool pods run vLLM offline (`HF_HUB_OFFLINE=1`) on the folder the `fetch-model` init
container downloads from `spec.baseModel.source.s3.uri`, so a missing file would otherwise show
as a crash-looping pod minutes after the download. vLLM needs, in that folder:

* `config.json` (the architecture and shapes);
* a tokenizer: `tokenizer.json` (fast tokenizers), `tokenizer.model` (SentencePiece),
  `vocab.json` + `merges.txt` (byte-level BPE), `vocab.txt` (WordPiece) or `*.tiktoken`;
* the weights as safetensors: `model.safetensors`, or shards `model-00001-of-0000N.safetensors`
  (every one of the N) with their `model.safetensors.index.json`. Pickle-only checkpoints
  (`*.bin`, `*.pt`, `*.pth`) are refused: they can run code when loaded, and lorapack refuses
  pickle adapters for the same reason.

`check_base_model_files(paths, uri)` returns one Issue per missing piece (reasons in
lorapack.api.conditions), each saying how to fix it with `lorapack model push`. Called by
`lorapack model push` on the local folder before uploading, and meant for the pool reconciler on
the listing of the S3 prefix before it creates the StatefulSet.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from fnmatch import fnmatch

from lorapack.api import conditions
from lorapack.issues import Issue

__all__ = [
    "PICKLE_PATTERNS",
    "TOKENIZER_FILES",
    "check_base_model_files",
    "relative_paths",
    "shard_names",
]

TOKENIZER_FILES: tuple[tuple[str, ...], ...] = (
    ("tokenizer.json",),
    ("tokenizer.model",),
    ("vocab.json", "merges.txt"),
    ("vocab.txt",),
)
"""File sets any one of which is a tokenizer transformers can load (plus `*.tiktoken`)."""
PICKLE_PATTERNS = ("*.bin", "*.pt", "*.pth")

_SHARD = re.compile(r"^(?P<stem>.+)-(?P<index>\d{5})-of-(?P<count>\d{5})\.safetensors$")


def relative_paths(paths: Iterable[str], uri: str) -> list[str]:
    """`paths` relative to the model folder: object keys under the URI's prefix lose it, paths
    that are already relative stay; folder markers are dropped."""
    prefix = uri.removeprefix("s3://").partition("/")[2]
    found = []
    for path in paths:
        rel = path[len(prefix) :] if prefix and path.startswith(prefix) else path
        rel = rel.lstrip("/")
        if rel and not rel.endswith("/"):
            found.append(rel)
    return found


def shard_names(stem: str, count: int) -> list[str]:
    """The file names of a `count`-shard safetensors checkpoint, as transformers saves them."""
    return [f"{stem}-{i:05d}-of-{count:05d}.safetensors" for i in range(1, count + 1)]


def _missing_shards(top: Sequence[str]) -> list[str]:
    present = set(top)
    missing: list[str] = []
    groups = {(m["stem"], int(m["count"])) for name in top if (m := _SHARD.match(name))}
    for stem, count in sorted(groups):
        missing += [n for n in shard_names(stem, count) if n not in present]
    return missing


def _weights_issue(top: Sequence[str], uri: str, push: str) -> Issue | None:
    safetensors = [n for n in top if n.endswith(".safetensors")]
    indexes = [n for n in top if n.endswith(".safetensors.index.json")]
    if not safetensors:
        pickles = [n for n in top if any(fnmatch(n, p) for p in PICKLE_PATTERNS)]
        if pickles:
            return Issue(
                conditions.BASE_MODEL_INCOMPLETE,
                f"{uri} holds only pickle weights ({', '.join(sorted(pickles)[:3])}): lorapack "
                "serves safetensors only (pickle can run code when loaded). Convert the "
                "checkpoint (transformers: save_pretrained(..., safe_serialization=True)) and "
                f"upload it again: {push}",
            )
        named = f" (found {', '.join(indexes)} without its shards)" if indexes else ""
        return Issue(
            conditions.BASE_MODEL_INCOMPLETE,
            f"{uri} has no *.safetensors weights{named}: upload the whole model folder "
            f"(model.safetensors or every model-0000k-of-0000N.safetensors shard): {push}",
        )
    missing = _missing_shards(top)
    if missing:
        shown = ", ".join(missing[:3]) + (
            f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        )
        return Issue(
            conditions.BASE_MODEL_INCOMPLETE,
            f"{uri} lacks weight shards {shown}: the upload was cut short; upload the folder "
            f"again (unchanged files are skipped): {push}",
        )
    sharded = any(_SHARD.match(n) for n in safetensors)
    if sharded and not indexes:
        return Issue(
            conditions.BASE_MODEL_INCOMPLETE,
            f"{uri} has sharded safetensors weights but no model.safetensors.index.json (vLLM "
            f"needs it to map tensors to shards): upload it with the shards: {push}",
        )
    return None


def _has_tokenizer(top: Sequence[str]) -> bool:
    present = set(top)
    if any(name.endswith(".tiktoken") for name in top):
        return True
    return any(all(f in present for f in files) for files in TOKENIZER_FILES)


def check_base_model_files(
    paths: Sequence[str], uri: str, *, fix: str | None = None
) -> list[Issue]:
    """What the base-model folder `uri` lacks for vLLM to start, as Issues (empty: complete).

    `paths` are the folder's files, relative to it or as full object keys under the URI's
    prefix (an S3 listing). Only the folder's top level counts: vLLM reads config.json, the
    tokenizer and the weights from there. Each message ends with how to fix it: `fix`, or by
    default the `lorapack model push` command that stages the model at `uri`.
    """
    push = fix or f"`lorapack model push <model folder> {uri}`"
    files = relative_paths(paths, uri)
    if not files:
        return [
            Issue(
                conditions.BASE_MODEL_NOT_FOUND,
                f"no objects under {uri}: check spec.baseModel.source.s3.uri, or stage the "
                f"model there first: {push}",
            )
        ]
    top = [f for f in files if "/" not in f]
    issues: list[Issue] = []
    if "config.json" not in top:
        nested = sorted((f for f in files if f.endswith("/config.json")), key=len)
        if nested:
            # The model is one folder down (a snapshot folder uploaded whole): the URI is the
            # fix, and the other files are probably next to that config.json.
            folder = nested[0][: -len("config.json")]
            return [
                Issue(
                    conditions.BASE_MODEL_INCOMPLETE,
                    f"{uri} has no config.json, but {folder} under it has one: point "
                    f"spec.baseModel.source.s3.uri at {uri.rstrip('/')}/{folder}",
                )
            ]
        issues.append(
            Issue(
                conditions.BASE_MODEL_INCOMPLETE,
                f"{uri} has no config.json: the URI must be the model folder, the one holding "
                f"config.json, the tokenizer and the weights: {push}",
            )
        )
    if not _has_tokenizer(top):
        issues.append(
            Issue(
                conditions.BASE_MODEL_INCOMPLETE,
                f"{uri} has no tokenizer (tokenizer.json, tokenizer.model, vocab.json + "
                f"merges.txt, vocab.txt or *.tiktoken): upload the tokenizer files published "
                f"with the model: {push}",
            )
        )
    weights = _weights_issue(top, uri, push)
    if weights is not None:
        issues.append(weights)
    return issues

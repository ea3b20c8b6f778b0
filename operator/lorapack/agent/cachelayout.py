"""Where things lie in the agent's adapter cache, and the blocking file work on them.

Layout, under the cache root (an emptyDir shared with the vLLM container):

    sha256-<hex>/            one verified adapter version, named by DesiredAdapter.digest
        adapter_config.json  ... the adapter's files, read-only
        .lorapack-verified.json   what was verified (written last, before the rename)
    .tmp-<random>/           a download in progress (or left over by a crash: GC removes it)

Used by lorapack.agent.cache (the AdapterCache) and its sealing step (lorapack.agent.cacheseal).
Every function here blocks on the disk: the cache calls them from worker threads.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import stat
from pathlib import Path
from typing import Final

__all__ = [
    "DIGEST",
    "DIR_PREFIX",
    "MANIFEST_NAME",
    "TMP_PREFIX",
    "read_manifest",
    "remove_tree",
    "tree_size",
]

MANIFEST_NAME: Final = ".lorapack-verified.json"
TMP_PREFIX: Final = ".tmp-"
DIR_PREFIX: Final = "sha256-"
DIGEST: Final = re.compile(r"^sha256:([0-9a-f]{64})$")


def read_manifest(folder: Path) -> dict[str, int] | None:
    """The verified files (relative name -> size) of a version folder, or None when its
    manifest is missing or unreadable (the folder then counts as not verified)."""
    try:
        data = json.loads((folder / MANIFEST_NAME).read_text())
        files = data["files"]
        if not isinstance(files, dict):
            return None
        return {str(k): int(v) for k, v in files.items()}
    except (OSError, ValueError, KeyError, TypeError):
        return None


def tree_size(path: Path) -> int:
    """Bytes of every file below `path` (files vanishing meanwhile count as 0)."""
    total = 0
    for folder, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(folder, name)).st_size
    return total


def remove_tree(path: Path) -> None:
    """rmtree of a sealed folder: give back the write permission its folders lack first
    (unlinking a file needs write access to its folder; root does not care, agents do)."""
    for folder, dirs, _files in os.walk(path):
        with contextlib.suppress(OSError):
            os.chmod(folder, stat.S_IRWXU)
        for d in dirs:
            with contextlib.suppress(OSError):
                os.chmod(os.path.join(folder, d), stat.S_IRWXU)
    with contextlib.suppress(FileNotFoundError):
        shutil.rmtree(path)

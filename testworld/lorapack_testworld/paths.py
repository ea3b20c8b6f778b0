"""Where the lorapack checkout is: the one place the test world finds the repository root.

The test world runs only from a checkout (it drives `hack/` scripts, reads `crds/`, `examples/`
and the Go module files), so the root is found by walking up from this file to the folder that
holds both `pyproject.toml` and `operator/lorapack`. `LORAPACK_REPO_ROOT` overrides it (for a
test world installed outside the checkout).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final

__all__ = ["REPO_ROOT", "find_repo_root"]


def find_repo_root(start: Path | None = None) -> Path:
    """The checkout's root folder; RuntimeError naming LORAPACK_REPO_ROOT when there is none."""
    override = os.environ.get("LORAPACK_REPO_ROOT")
    if override:
        return Path(override).resolve()
    here = (start or Path(__file__)).resolve()
    for folder in here.parents:
        if (folder / "pyproject.toml").is_file() and (folder / "operator" / "lorapack").is_dir():
            return folder
    raise RuntimeError(
        f"{here} is not inside a lorapack checkout: set LORAPACK_REPO_ROOT to the repository root"
    )


REPO_ROOT: Final = find_repo_root()

"""Fixtures of the image and real-node tiers: the built images loaded into a private podman.

* `product_archive` / `testworld_archive` (session): the OCI archives `make image` /
  `make testworld-image` wrote. Missing archives skip, unless LORAPACK_REQUIRE_CLUSTER is set
  (CI, `make test`), which fails instead.
* `podman` (session): podman with a storage of its own holding the product image.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

import lorapack
from lorapack_testworld.realnode.images import PRODUCT, ImageMissing, Podman, image_archive


def _required() -> bool:
    return os.environ.get("LORAPACK_REQUIRE_CLUSTER", "") not in ("", "0", "false")


@pytest.fixture(scope="session")
def product_archive() -> Path:
    try:
        return image_archive(PRODUCT, lorapack.__version__)
    except ImageMissing as exc:
        if _required():
            pytest.fail(f"LORAPACK_REQUIRE_CLUSTER is set, but {exc}", pytrace=False)
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def podman(product_archive: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Podman]:
    try:
        runner = Podman(tmp_path_factory.mktemp("podman"))
    except ImageMissing as exc:
        if _required():
            pytest.fail(str(exc), pytrace=False)
        pytest.skip(str(exc))
    try:
        runner.load(product_archive)
        yield runner
    finally:
        runner.close()

"""Fixtures of the image and real-node tiers: the built images loaded into a private podman.

* `product_archive` / `testworld_archive` (session): the OCI archives `make image` /
  `make testworld-image` wrote. Missing archives skip, unless LORAPACK_REQUIRE_CLUSTER is set
  (CI, `make test`), which fails instead.
* `podman` (session): podman with a storage of its own holding the product image.
* `real_node` (session): a kubelet node (containerd, runc, CNI bridge, kube-proxy) joined to the
  local control plane, inside the namespaces of hack/realnode/in-netns.sh; skipped outside
  them (`make test-realnode` runs this folder there).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

import lorapack
from lorapack_testworld.devcluster import DevCluster
from lorapack_testworld.realnode.images import (
    PRODUCT,
    TESTWORLD,
    ImageMissing,
    Podman,
    image_archive,
)
from lorapack_testworld.realnode.node import RealNode


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


# ------------------------------------------------------------------------ the real node


def _in_netns() -> bool:
    return os.environ.get("LORAPACK_REALNODE_NETNS") == "1"


@pytest.fixture(scope="session")
def real_node(
    devcluster: DevCluster, lorapack_crds: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RealNode]:
    """containerd + kubelet + kube-proxy joined to `devcluster`, with both images imported."""
    if not _in_netns():
        if os.environ.get("LORAPACK_REALNODE", "") not in ("", "0"):
            pytest.fail("LORAPACK_REALNODE is set: run through hack/realnode/in-netns.sh")
        pytest.skip("the real-node tier runs with `make test-realnode` (its own network namespace)")
    try:
        archives = [
            image_archive(PRODUCT, lorapack.__version__),
            image_archive(TESTWORLD, lorapack.__version__),
        ]
    except ImageMissing as exc:
        pytest.fail(str(exc), pytrace=False)
    node = RealNode.start(devcluster, tmp_path_factory.mktemp("realnode"), archives)
    try:
        yield node
    finally:
        node.stop()

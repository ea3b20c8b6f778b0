"""Teams manage their LoraAdapters with the namespace roles they already have (issue 14, item 6).

The chart's aggregated ClusterRoles (`rbac.aggregateToDefaultRoles`) are applied to the real API
server; the controller-manager's aggregation controller folds them into the built-in `view`,
`edit` and `admin` ClusterRoles; then `kubectl auth can-i --as` answers for users who hold only
a RoleBinding to one of those in a team namespace. docs/platform.md ("Team permissions") shows
the same answers.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from lorapack_testworld.devcluster import DevCluster

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
ADAPTERS = "loraadapters.lorapack.io"
POOLS = "basemodelpools.lorapack.io"

# (role held in the namespace, verb, resource, allowed)
MATRIX = [
    ("view", "get", ADAPTERS, True),
    ("view", "list", ADAPTERS, True),
    ("view", "watch", ADAPTERS, True),
    ("view", "create", ADAPTERS, False),
    ("view", "delete", ADAPTERS, False),
    ("view", "get", POOLS, True),
    ("edit", "create", ADAPTERS, True),
    ("edit", "update", ADAPTERS, True),
    ("edit", "patch", ADAPTERS, True),
    ("edit", "delete", ADAPTERS, True),
    ("edit", "get", ADAPTERS, True),
    ("edit", "list", POOLS, True),
    ("edit", "create", POOLS, False),  # pools are the platform team's
    ("edit", "patch", f"{ADAPTERS}:status", False),  # the operator is the only status writer
    ("admin", "create", ADAPTERS, True),
    ("admin", "delete", POOLS, False),
]


@pytest.fixture(scope="module")
def team_roles(devcluster: DevCluster, lorapack_crds: Path) -> Iterator[list[str]]:
    """The chart's aggregated ClusterRoles, applied; deleted afterwards (they are cluster-wide)."""
    release = f"roles-{uuid.uuid4().hex[:6]}"
    rendered = devcluster.helm(
        "template", release, str(ROOT / "charts" / "lorapack"), "-n", "lorapack-system"
    ).stdout
    roles = [
        doc
        for doc in yaml.safe_load_all(rendered)
        if doc
        and doc["kind"] == "ClusterRole"
        and any(
            key.startswith("rbac.authorization.k8s.io/aggregate-to-")
            for key in doc["metadata"].get("labels", {})
        )
    ]
    assert roles, "the chart renders no aggregated ClusterRole (rbac.aggregateToDefaultRoles)"
    devcluster.kubectl(
        "apply", "-f", "-", input=json.dumps({"kind": "List", "apiVersion": "v1", "items": roles})
    )
    names = [r["metadata"]["name"] for r in roles]
    try:
        yield names
    finally:
        devcluster.kubectl("delete", "clusterrole", *names, "--ignore-not-found")


def can_i(cluster: DevCluster, user: str, verb: str, resource: str, namespace: str) -> bool:
    """`kubectl auth can-i`; "resource:sub" asks about a subresource (resource/NAME would be an
    object name to kubectl)."""
    resource, _, sub = resource.partition(":")
    extra = ["--subresource", sub] if sub else []
    result = cluster.kubectl(
        "auth", "can-i", verb, resource, *extra, "-n", namespace, "--as", user, check=False
    )
    answer = result.stdout.strip()
    assert answer in ("yes", "no"), result.stderr
    return answer == "yes"


def test_namespace_roles_cover_lora_adapters(
    devcluster: DevCluster, team_roles: list[str], namespace: str
) -> None:
    for role in ("view", "edit", "admin"):
        devcluster.kubectl(
            "create",
            "rolebinding",
            f"team-{role}",
            f"--clusterrole={role}",
            f"--user={role}-user",
            "-n",
            namespace,
        )
    # The aggregation controller updates view/edit/admin asynchronously.
    deadline = time.monotonic() + 30
    while not can_i(devcluster, "edit-user", "create", ADAPTERS, namespace):
        assert time.monotonic() < deadline, "edit did not gain the LoraAdapter rights in 30 s"
        time.sleep(0.5)
    wrong = [
        f"{role} {verb} {resource}: want {'yes' if allowed else 'no'}"
        for role, verb, resource, allowed in MATRIX
        if can_i(devcluster, f"{role}-user", verb, resource, namespace) != allowed
    ]
    assert not wrong, wrong
    # Only in that namespace: the same user holds nothing elsewhere.
    assert not can_i(devcluster, "edit-user", "create", ADAPTERS, "default")

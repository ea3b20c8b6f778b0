"""Access matrix: what each identity may do, as the real API server's authorizer answers it.

The chart is installed both ways (namespaced, its default, and clusterWide) into the local control
plane; the agents' ServiceAccount, Role and RoleBinding are applied exactly as the operator
builds them (manifests.pool.agent_rbac); a team's ServiceAccount is bound to the built-in `edit`
role in its namespace. Then every cell of verbs x resources x namespaces is asked for the
operator's, the agent's and the team's ServiceAccount, and the allowed cells must be exactly the
ones written down below: the security contract of docs/security.md, written by hand, not derived
from the chart (so a rule added to the chart fails here until the contract says so too).

Questions go to the authorizer as SubjectAccessReviews (one `kubectl create` of a List: the
question `kubectl auth can-i --as` asks, thousands of times in seconds), and a sample of cells is
asked again with `kubectl auth can-i --as <ServiceAccount>` itself to show the two agree. The
number of cells is printed (`-s`) and recorded in docs/security.md.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from lorapack.api.basemodelpool import BaseModelPool
from lorapack.manifests import pool as pool_manifests
from lorapack_testworld.devcluster import DevCluster
from tests.builders import make_pool

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "lorapack"
POOL = "llama3-8b"
CREDENTIALS = "s3-creds"
VERBS = ("get", "list", "watch", "create", "update", "patch", "delete", "deletecollection")
LP, RBAC, KOPF = "lorapack.io", "rbac.authorization.k8s.io", "kopf.dev"


@dataclass(frozen=True)
class Res:
    """A resource (or subresource, or one object of it) a question is about."""

    group: str
    resource: str
    sub: str = ""
    name: str = ""

    @property
    def label(self) -> str:
        path = "/".join(p for p in (self.group, self.resource, self.sub) if p)
        return f"{path}@{self.name}" if self.name else path

    def unnamed(self) -> Res:
        return Res(self.group, self.resource, self.sub)


def res(label: str) -> Res:
    """Res("group/resource/sub@name") from its label (core resources have no group)."""
    path, _, name = label.partition("@")
    parts = path.split("/")
    if "." not in parts[0] and parts[0] not in ("apps", "policy"):
        parts.insert(0, "")  # a core resource
    group, resource, *sub = parts
    return Res(group, resource, sub[0] if sub else "", name)


def rights(*lines: str) -> set[tuple[str, str]]:
    """{(verb, label)} from lines "label: verb verb ..."."""
    out: set[tuple[str, str]] = set()
    for line in lines:
        label, _, verbs = line.partition(":")
        out |= {(v, res(label.strip()).label) for v in verbs.split()}
    return out


def rows(peering: str) -> list[Res]:
    """The namespaced resources asked about in every namespace."""
    return [
        res(label)
        for label in (
            "secrets", f"secrets@{CREDENTIALS}", f"secrets@{POOL}-0-adapters",
            f"secrets@{POOL}-1-adapters", f"secrets@{POOL}-engine-key", "pods", f"pods@{POOL}-0",
            "pods/status", f"pods/status@{POOL}-0", "pods/exec", "pods/log", "services",
            "discovery.k8s.io/endpointslices", "apps/statefulsets", "apps/deployments",
            "policy/poddisruptionbudgets", "serviceaccounts", "serviceaccounts/token",
            f"{RBAC}/roles", f"{RBAC}/rolebindings", "networking.k8s.io/networkpolicies",
            "events", "configmaps", f"{LP}/basemodelpools", f"{LP}/basemodelpools/status",
            f"{LP}/basemodelpools/finalizers", f"{LP}/loraadapters", f"{LP}/loraadapters/status",
            f"{LP}/loraadapters/finalizers", f"{KOPF}/kopfpeerings",
            f"{KOPF}/kopfpeerings@{peering}",
        )
    ]  # fmt: skip


def cluster_rows(peering: str) -> list[Res]:
    """Cluster-scoped resources, and namespaced ones asked about in all namespaces at once."""
    return [
        res(label)
        for label in (
            "namespaces", "nodes", "apiextensions.k8s.io/customresourcedefinitions",
            f"{RBAC}/clusterroles", f"{RBAC}/clusterrolebindings", f"{KOPF}/clusterkopfpeerings",
            f"{KOPF}/clusterkopfpeerings@{peering}", "secrets", "pods", "services",
            "apps/statefulsets", f"{LP}/loraadapters", f"{LP}/loraadapters/status",
        )
    ]  # fmt: skip


# ------------------------------------------------------------------- the contract, by hand


def operator_served(peering: str | None) -> set[tuple[str, str]]:
    """In every namespace the operator serves: kopf's watches, statuses, adapters' routing."""
    served = rights(
        f"{LP}/basemodelpools: list watch patch",
        f"{LP}/loraadapters: list watch patch",
        f"{LP}/basemodelpools/status: patch",
        f"{LP}/loraadapters/status: patch",
        f"{LP}/loraadapters/finalizers: update",
        "pods: list watch",
        "services: get list watch create patch delete",
        "discovery.k8s.io/endpointslices: get list watch create patch delete",
        "events: create",
    )
    if peering:  # namespaced: a KopfPeering per served namespace
        served |= rights(
            f"{KOPF}/kopfpeerings: list watch", f"{KOPF}/kopfpeerings@{peering}: patch"
        )
    return served


OPERATOR_POOLS = rights(
    "apps/statefulsets: get create patch",
    "policy/poddisruptionbudgets: get create patch",
    "serviceaccounts: get create patch",
    f"{RBAC}/roles: get create patch",
    f"{RBAC}/rolebindings: get create patch",
    "networking.k8s.io/networkpolicies: get create patch",
    "secrets: get list watch create patch delete",
    "pods: patch",
    "pods/status: patch",
    f"{LP}/basemodelpools/finalizers: update",
)
AGENT = rights(
    f"secrets@{POOL}-0-adapters: list watch",
    # Known and written up (docs/security.md): one ServiceAccount for every pod of the pool.
    f"secrets@{POOL}-1-adapters: list watch",
    f"pods@{POOL}-0: patch",
    f"pods/status@{POOL}-0: patch",
)
TEAM_OWN = rights(
    f"{LP}/loraadapters: get list watch create update patch delete",
    f"{LP}/basemodelpools: get list watch",
)


@dataclass
class World:
    """One installed release and the namespaces of its matrix."""

    mode: str
    release_ns: str
    pool_ns: str
    team_ns: str
    other_team_ns: str
    unserved_ns: str
    peering: str
    operator: str
    agent: str
    team: str

    @property
    def namespaces(self) -> list[str]:
        return [self.pool_ns, self.team_ns, self.other_team_ns, self.unserved_ns, self.release_ns]


def expected(world: World, subject: str, namespace: str | None) -> set[tuple[str, str]]:
    """The allowed (verb, label) cells of `subject` in `namespace` (None: cluster scope)."""
    clusterwide = world.mode == "clusterwide"
    if subject == world.operator:
        everywhere = (
            operator_served(None) | OPERATOR_POOLS | rights("secrets: get")
            if clusterwide
            else set()
        )
        if namespace is None:
            crds = rights("apiextensions.k8s.io/customresourcedefinitions: list watch")
            if not clusterwide:
                return crds | rights("namespaces: list watch")
            peering = rights(
                f"{KOPF}/clusterkopfpeerings: list watch",
                f"{KOPF}/clusterkopfpeerings@{world.peering}: patch",
            )
            return crds | peering | everywhere
        if clusterwide:
            return everywhere
        if namespace == world.pool_ns:
            return operator_served(world.peering) | OPERATOR_POOLS
        if namespace in (world.team_ns, world.other_team_ns):
            return operator_served(world.peering) | rights(f"secrets@{CREDENTIALS}: get")
        return set()
    if subject == world.agent:
        return AGENT if namespace == world.pool_ns else set()
    assert subject == world.team
    return TEAM_OWN if namespace == world.team_ns else set()


def with_names(allowed: set[tuple[str, str]], cells: list[Res]) -> set[tuple[str, str]]:
    """A rule without resourceNames also answers for every named object."""
    by_label = {c.label: c for c in cells}
    return allowed | {
        (verb, c.label)
        for c in by_label.values()
        if c.name
        for verb in VERBS
        if (verb, c.unnamed().label) in allowed
    }


# ----------------------------------------------------------------- asking the authorizer


def _review(subject: str, namespace: str | None, cell: Res, verb: str) -> dict[str, Any]:
    _, _, ns, _ = subject.split(":")  # system:serviceaccount:<ns>:<name>
    attributes = {"verb": verb, "group": cell.group, "resource": cell.resource}
    if cell.sub:
        attributes["subresource"] = cell.sub
    if cell.name:
        attributes["name"] = cell.name
    if namespace:
        attributes["namespace"] = namespace
    return {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SubjectAccessReview",
        # What the API server's impersonation adds for `--as system:serviceaccount:...`.
        "spec": {
            "user": subject,
            "groups": ["system:serviceaccounts", f"system:serviceaccounts:{ns}",
                       "system:authenticated"],
            "resourceAttributes": attributes,
        },
    }  # fmt: skip


Question = tuple[str, str | None, Res, str]


def ask(cluster: DevCluster, questions: list[Question]) -> dict[Question, bool]:
    """The authorizer's answers, in one kubectl run."""
    doc = {"apiVersion": "v1", "kind": "List", "items": [_review(*q) for q in questions]}
    result = cluster.kubectl("create", "-f", "-", "-o", "json", input=json.dumps(doc), timeout=300)
    # kubectl prints one JSON document per created object, in order.
    decoder, text, at, items = json.JSONDecoder(), result.stdout, 0, []
    while text[at:].strip():
        item, at = decoder.raw_decode(text, len(text) - len(text[at:].lstrip()))
        items.append(item)
    assert len(items) == len(questions)
    return {
        q: bool(item["status"].get("allowed")) for q, item in zip(questions, items, strict=True)
    }


def can_i(cluster: DevCluster, question: Question) -> bool:
    subject, namespace, cell, verb = question
    target = "/".join(p for p in (cell.resource + (f".{cell.group}" if cell.group else ""),
                                  cell.name) if p)  # fmt: skip
    args = ["auth", "can-i", verb, target, "--as", subject]
    if cell.sub:
        args += ["--subresource", cell.sub]
    args += ["-n", namespace] if namespace else ["--all-namespaces"]
    return cluster.kubectl(*args, check=False).stdout.strip() == "yes"


# ------------------------------------------------------------------------------ the worlds


def _wait_for_aggregation(cluster: DevCluster, world: World) -> None:
    """The controller-manager folds the chart's -view/-edit roles into edit asynchronously."""
    cell = (world.team, world.team_ns, res(f"{LP}/loraadapters"), "create")
    for _ in range(120):
        if ask(cluster, [cell])[cell]:
            return
        cluster.kubectl("get", "clusterrole", "edit", "-o", "name")  # a short, bounded pause
    pytest.fail("the built-in edit role never aggregated the chart's LoraAdapter rules")


@pytest.fixture(scope="module", params=["namespaced", "clusterwide"])
def world(
    request: pytest.FixtureRequest, devcluster: DevCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    mode = request.param
    suffix = uuid.uuid4().hex[:5]
    release = f"am-{suffix}"
    names = {k: f"{k}-{suffix}" for k in ("lorapack", "ml-platform", "team-a", "team-b", "other")}
    w = World(
        mode=mode,
        release_ns=names["lorapack"],
        pool_ns=names["ml-platform"],
        team_ns=names["team-a"],
        other_team_ns=names["team-b"],
        unserved_ns=names["other"],
        peering=f"peering-{suffix}",
        operator=f"system:serviceaccount:{names['lorapack']}:{release}-lorapack",
        agent=f"system:serviceaccount:{names['ml-platform']}:{POOL}-agent",
        team=f"system:serviceaccount:{names['team-a']}:bot",
    )
    for ns in w.namespaces:
        devcluster.kubectl("create", "namespace", ns)
    values: dict[str, Any] = {"peering": {"name": w.peering}}
    if mode == "namespaced":
        values |= {
            "poolNamespaces": [w.pool_ns],
            "teamNamespaces": [w.team_ns, w.other_team_ns],
            "credentialsSecrets": [CREDENTIALS],
        }
    else:
        values |= {"clusterWide": True}
    values_file = tmp_path_factory.mktemp("access-matrix") / "values.yaml"
    values_file.write_text(yaml.safe_dump(values))
    devcluster.helm(
        "install", release, str(CHART), "-n", w.release_ns, "-f", str(values_file), timeout=180
    )
    try:
        pool = BaseModelPool.model_validate(
            make_pool(name=POOL, namespace=w.pool_ns, replicas={"min": 1, "max": 2})
        )
        agent_objects = pool_manifests.agent_rbac(pool)
        for obj in agent_objects:  # no owner: the garbage collector would delete orphans
            obj["metadata"].pop("ownerReferences", None)
        devcluster.apply_objects(agent_objects)
        devcluster.kubectl("create", "serviceaccount", "bot", "-n", w.team_ns)
        devcluster.kubectl(
            "create", "rolebinding", "bot-edit", "--clusterrole=edit",
            f"--serviceaccount={w.team_ns}:bot", "-n", w.team_ns,
        )  # fmt: skip
        _wait_for_aggregation(devcluster, w)
        yield w
    finally:
        devcluster.helm("uninstall", release, "-n", w.release_ns, check=False, timeout=120)
        for ns in w.namespaces:
            devcluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)


def _questions(world: World) -> list[Question]:
    questions: list[Question] = []
    for subject in (world.operator, world.agent, world.team):
        for namespace in world.namespaces:
            cells = rows(world.peering)
            if subject == world.team and namespace == world.team_ns:
                # In its own namespace a team holds the built-in `edit` rights (its Secrets,
                # pods...): only lorapack's kinds belong to this contract there.
                cells = [c for c in cells if c.group == LP]
            questions += [(subject, namespace, c, v) for c in cells for v in VERBS]
        questions += [(subject, None, c, v) for c in cluster_rows(world.peering) for v in VERBS]
    return questions


def test_access_matrix_is_exactly_the_contract(
    devcluster: DevCluster, world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    questions = _questions(world)
    answers = ask(devcluster, questions)
    wrong: list[str] = []
    for (subject, namespace, cell, verb), allowed in answers.items():
        cells = cluster_rows(world.peering) if namespace is None else rows(world.peering)
        want = (verb, cell.label) in with_names(expected(world, subject, namespace), cells)
        if allowed != want:
            wrong.append(
                f"{'ALLOWED' if allowed else 'DENIED '} {subject.rsplit(':', 1)[-1]} {verb} "
                f"{cell.label} in {namespace or '(cluster / all namespaces)'}"
            )
    allowed_count = sum(answers.values())
    with capsys.disabled():
        print(
            f"\naccess matrix ({world.mode}): {len(answers)} cells, {allowed_count} allowed, "
            f"{len(answers) - allowed_count} denied"
        )
    assert wrong == [], "\n".join(sorted(wrong))


def test_kubectl_auth_can_i_agrees_with_the_reviews(devcluster: DevCluster, world: World) -> None:
    """A sample, per identity and namespace: the first allowed and the first denied cell."""
    questions = _questions(world)
    answers = ask(devcluster, questions)
    sample: dict[tuple[str, str | None, bool], Question] = {}
    for q, allowed in answers.items():
        sample.setdefault((q[0], q[1], allowed), q)
    assert len(sample) >= 12
    mismatches = [q for q in sample.values() if can_i(devcluster, q) != answers[q]]
    assert mismatches == []


def test_a_team_reads_neither_pool_secrets_nor_other_teams_adapters(
    devcluster: DevCluster, world: World
) -> None:
    """The two promises of docs/security.md, asked through `kubectl auth can-i` directly."""
    checks: list[tuple[Question, bool]] = [
        ((world.team, world.pool_ns, res(f"secrets@{POOL}-0-adapters"), "get"), False),
        ((world.team, world.pool_ns, res(f"secrets@{POOL}-engine-key"), "get"), False),
        ((world.team, world.pool_ns, res("secrets"), "list"), False),
        ((world.team, world.other_team_ns, res(f"{LP}/loraadapters"), "get"), False),
        ((world.team, world.other_team_ns, res(f"{LP}/loraadapters"), "list"), False),
        ((world.team, world.other_team_ns, res(f"{LP}/loraadapters/status"), "get"), False),
        ((world.team, world.team_ns, res(f"{LP}/loraadapters"), "create"), True),
        ((world.team, world.team_ns, res(f"{LP}/loraadapters/status"), "patch"), False),
    ]
    assert [(q[2].label, q[3], can_i(devcluster, q)) for q, _ in checks] == [
        (q[2].label, q[3], want) for q, want in checks
    ]

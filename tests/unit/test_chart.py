"""The Helm chart charts/lorapack, rendered by the real helm binary (no cluster needed).

* `helm lint --strict` for every value set below;
* snapshot tests: `helm template` output equals tests/snapshots/chart/<case>.yaml. After an
  intended chart change refresh them with
      LORAPACK_UPDATE_SNAPSHOTS=1 .venv/bin/pytest tests/unit/test_chart.py
  and review the diff like code;
* semantic checks that a snapshot refresh cannot wave through: the hardened security context,
  RBAC derived from what the operator's code writes (and what it grants the agents), Secrets
  granted only where the chosen namespaces need them (namespaced by default: nothing outside the
  pool and team namespaces, no list or watch of Secrets outside pool namespaces), every RBAC rule
  and every value documented in the chart's README, the Deployment's env and arguments accepted
  by the operator's own config and command line, alerts and dashboard reading only metrics the
  operator exports;
* schema and cross-field checks: bad values are refused with a message naming the field.

helm comes from hack/build-tools.sh through devcluster.Tools; without it these tests
skip (or fail when LORAPACK_REQUIRE_CLUSTER is set, as in CI).
"""

from __future__ import annotations

import difflib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from lorapack.api.basemodelpool import BaseModelPool
from lorapack.api.loraadapter import LoraAdapter
from lorapack.api.podstate import DesiredState
from lorapack.cli import build_parser
from lorapack.clients.kube import resource_for
from lorapack.config import OperatorConfig
from lorapack.handlers import metrics
from lorapack.manifests import network, routing
from lorapack.manifests import pool as pool_manifests
from lorapack_testworld.devcluster import Tools, ToolsMissing
from tests.builders import make_adapter, make_pool

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "lorapack"
SNAPSHOTS = ROOT / "tests" / "snapshots" / "chart"
RELEASE, RELEASE_NS = "lorapack", "lorapack-system"
SA = f"system:serviceaccount:{RELEASE_NS}:{RELEASE}"

# Value sets rendered, linted and snapshotted. Namespaces of the namespaced case:
POOLS = ["ml-platform"]
TEAMS = ["team-a", "team-b"]
WATCHED = POOLS + TEAMS
CASES: dict[str, dict[str, Any]] = {
    "default": {},
    "namespaced": {
        "poolNamespaces": POOLS,
        "teamNamespaces": TEAMS,
        "credentialsSecrets": ["s3-creds"],
    },
    "clusterwide": {"clusterWide": True},
    "standalone": {
        "replicaCount": 1,
        "peering": {"enabled": False},
        "metrics": {"enabled": False},
        "rbac": {"aggregateToDefaultRoles": False},
    },
    "monitoring": {
        "image": {"digest": "sha256:" + "a" * 64},
        "agent": {"image": "registry.example/lorapack-agent:0.1.0"},
        "metrics": {
            "serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}},
            "prometheusRule": {"enabled": True, "labels": {"release": "prometheus"}},
        },
        "grafanaDashboard": {"enabled": True, "namespace": "monitoring"},
    },
}


# ------------------------------------------------------------------------------------ helm


class Helm:
    """The built helm binary with its caches in a temporary folder."""

    def __init__(self, binary: Path, home: Path) -> None:
        self.binary = binary
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("HELM_")}
        for kind in ("CACHE", "CONFIG", "DATA"):
            self.env[f"HELM_{kind}_HOME"] = str(home / kind.lower())
        self.home = home
        self._count = 0

    def run(
        self, *args: str, values: dict[str, Any] | None = None
    ) -> subprocess.CompletedProcess[str]:
        argv = [str(self.binary), *args]
        if values is not None:
            self._count += 1
            path = self.home / f"values-{self._count}.yaml"
            path.write_text(yaml.safe_dump(values))
            argv += ["-f", str(path)]
        return subprocess.run(
            argv, capture_output=True, text=True, env=self.env, timeout=60, check=False
        )

    def template(self, values: dict[str, Any]) -> str:
        result = self.run("template", RELEASE, str(CHART), "-n", RELEASE_NS, values=values)
        assert result.returncode == 0, result.stderr
        return result.stdout


@pytest.fixture(scope="session")
def helm(tmp_path_factory: pytest.TempPathFactory) -> Helm:
    try:
        tools = Tools.locate()
    except ToolsMissing as exc:
        if os.environ.get("LORAPACK_REQUIRE_CLUSTER"):
            pytest.fail(f"LORAPACK_REQUIRE_CLUSTER is set, but {exc}", pytrace=False)
        pytest.skip(f"helm unavailable: {exc}")
    return Helm(tools.helm, tmp_path_factory.mktemp("helm"))


@pytest.fixture(scope="session")
def rendered(helm: Helm) -> dict[str, str]:
    """case -> `helm template` output (rendered once per session)."""
    return {name: helm.template(values) for name, values in CASES.items()}


def served(case: str) -> list[str]:
    """LORAPACK_NAMESPACES of a case: the pool and team namespaces ([] = all namespaces)."""
    values = CASES[case]
    if values.get("clusterWide"):
        return []
    return [*(values.get("poolNamespaces") or [RELEASE_NS]), *values.get("teamNamespaces", [])]


def docs_of(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d]


def only(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and name in (None, d["metadata"]["name"])]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    deployment = only(docs, "Deployment")
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    result: dict[str, Any] = containers[0]
    return result


# ------------------------------------------------------------------------ lint and snapshots


@pytest.mark.parametrize("case", sorted(CASES))
def test_helm_lint_strict_passes(helm: Helm, case: str) -> None:
    result = helm.run("lint", "--strict", str(CHART), "-n", RELEASE_NS, values=CASES[case])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout
    assert "[WARNING]" not in result.stdout and "[ERROR]" not in result.stdout, result.stdout


@pytest.mark.parametrize("case", sorted(CASES))
def test_template_matches_snapshot(rendered: dict[str, str], case: str) -> None:
    path = SNAPSHOTS / f"{case}.yaml"
    got = rendered[case]
    if os.environ.get("LORAPACK_UPDATE_SNAPSHOTS"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(got)
        return
    assert path.exists(), f"{path} missing: run with LORAPACK_UPDATE_SNAPSHOTS=1 to create it"
    want = path.read_text()
    if got != want:
        diff = "".join(
            difflib.unified_diff(
                want.splitlines(keepends=True), got.splitlines(keepends=True), str(path), "helm"
            )
        )
        pytest.fail(
            f"`helm template` differs from {path.name}; if the change is intended, refresh "
            f"with LORAPACK_UPDATE_SNAPSHOTS=1 and review:\n{diff[:6000]}"
        )


def test_snapshots_have_no_stale_files() -> None:
    assert sorted(p.stem for p in SNAPSHOTS.glob("*.yaml")) == sorted(CASES)


@pytest.mark.parametrize("case", sorted(CASES))
def test_notes_render(helm: Helm, tmp_path: Path, case: str) -> None:
    """`helm template` skips NOTES.txt; render it as a template of a copy of the chart."""
    copy = tmp_path / "lorapack"
    shutil.copytree(CHART, copy)
    notes = (copy / "templates" / "NOTES.txt").read_text()
    (copy / "templates" / "NOTES.txt").unlink()
    (copy / "templates" / "notes-test.yaml").write_text(
        '{{- define "test.notes" -}}\n' + notes + "\n{{- end -}}\n"
        'notes: {{ include "test.notes" . | toJson }}\n'
    )
    result = helm.run(
        "template", RELEASE, str(copy), "-n", RELEASE_NS,
        "--show-only", "templates/notes-test.yaml", values=CASES[case],
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    text = yaml.safe_load(result.stdout)["notes"]
    assert f"is installed as release {RELEASE} in namespace {RELEASE_NS}" in text
    assert f"rollout status deployment/{RELEASE}" in text
    assert "delete every LoraAdapter and BaseModelPool first" in text
    if served(case):
        pools = CASES[case].get("poolNamespaces") or [RELEASE_NS]
        assert f"Serving: BaseModelPools in {', '.join(pools)};" in text
        assert "Nothing is granted in other namespaces" in text
    else:
        assert "Serving: all namespaces (cluster-wide RBAC" in text


# ---------------------------------------------------------------------------- the Deployment


@pytest.mark.parametrize("case", sorted(CASES))
def test_operator_runs_non_root_read_only_without_escalation(
    rendered: dict[str, str], case: str
) -> None:
    docs = docs_of(rendered[case])
    pod = only(docs, "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 65532
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    ctx = container(docs)["securityContext"]
    assert ctx == {
        "runAsNonRoot": True,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert "hostNetwork" not in pod and "hostPID" not in pod
    assert container(docs)["resources"]["limits"]["memory"]


@pytest.mark.parametrize(
    ("case", "want_replicas", "want_peering", "want_strategy", "want_pdb"),
    [
        ("default", 2, True, "RollingUpdate", True),
        ("namespaced", 2, True, "RollingUpdate", True),
        ("clusterwide", 2, True, "RollingUpdate", True),
        ("standalone", 1, False, "Recreate", False),
    ],
    ids=["default", "namespaced", "clusterwide", "standalone"],
)
def test_replicas_peering_and_rollout(
    rendered: dict[str, str],
    case: str,
    want_replicas: int,
    want_peering: bool,
    want_strategy: str,
    want_pdb: bool,
) -> None:
    docs = docs_of(rendered[case])
    spec = only(docs, "Deployment")["spec"]
    assert spec["replicas"] == want_replicas
    assert spec["strategy"]["type"] == want_strategy
    assert any(d["kind"] == "PodDisruptionBudget" for d in docs) is want_pdb
    args = _operator_args(container(docs))
    assert ("--peering" in args) is want_peering
    assert ("--standalone" in args) is not want_peering
    env = {e["name"]: e for e in container(docs)["env"]}
    # kopf names each replica in the peering object after POD_ID.
    assert env["POD_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"


def _operator_args(c: dict[str, Any]) -> list[str]:
    """The `lorapack ...` argv the container runs (the shell wrapper's priority drawn as 7)."""
    argv = [*c.get("command", []), *c.get("args", [])]
    if argv[:2] == ["/bin/sh", "-c"]:
        script = argv[2]
        assert script.startswith("exec lorapack ")
        # The shell substitutes a random priority here; the rest must parse as-is.
        script = re.sub(r"\"\$\(python -c '.*?'\)\"", "7", script)
        argv = shlex.split(script)[1:]
    assert argv[0] == "lorapack", argv
    return argv[1:]


@pytest.mark.parametrize("case", sorted(CASES))
def test_operator_arguments_parse_with_the_lorapack_cli(
    rendered: dict[str, str], case: str
) -> None:
    args = build_parser().parse_args(_operator_args(container(docs_of(rendered[case]))))
    assert args.command == "run"
    assert args.liveness == "http://0.0.0.0:8081/healthz"
    if args.peering:
        assert args.peering == "lorapack" and args.priority == 7
    else:
        assert args.standalone is True


def test_priority_draw_is_valid_shell_and_python(rendered: dict[str, str]) -> None:
    """The peering replicas' priority: the shell snippet the chart runs, run here."""
    script = container(docs_of(rendered["default"]))["args"][0]
    draw = re.search(r'"(\$\(python -c .*?\))"', script)
    assert draw is not None, script
    venv_bin = str(Path(sys.executable).parent)
    env = {"PATH": f"{venv_bin}:{os.environ.get('PATH', '')}"}
    values = {
        int(subprocess.run(
            ["/bin/sh", "-c", f"echo {draw.group(1)}"], env=env, capture_output=True, text=True,
            check=True,
        ).stdout)
        for _ in range(3)
    }  # fmt: skip
    assert all(1 <= v <= 999_999_999 for v in values)
    assert len(values) > 1, "three draws gave one priority: replicas would pause each other"


@pytest.mark.parametrize("case", sorted(CASES))
def test_env_is_exactly_what_operator_config_reads(rendered: dict[str, str], case: str) -> None:
    env = {e["name"]: e.get("value") for e in container(docs_of(rendered[case]))["env"]}
    lorapack_env = {k: v for k, v in env.items() if k.startswith("LORAPACK_")}
    fields = {f"LORAPACK_{name.upper()}" for name in OperatorConfig.model_fields}
    assert set(lorapack_env) == fields, "every operator setting is set by the chart, no other"
    config = OperatorConfig.from_env({k: str(v) for k, v in lorapack_env.items()})
    want = CASES[case]
    assert config.namespace_list == served(case)
    assert config.metrics_port == (8080 if want.get("metrics", {}).get("enabled", True) else 0)
    if case == "monitoring":
        assert config.agent_image == "registry.example/lorapack-agent:0.1.0"
        assert container(docs_of(rendered[case]))["image"].endswith("@sha256:" + "a" * 64)
    else:
        assert config.agent_image == "ghcr.io/lorapack/lorapack:0.1.0"


def test_large_integer_settings_render_as_integers(helm: Helm) -> None:
    """Helm reads numbers as floats; 1e+06 would not parse as the operator's int setting."""
    docs = docs_of(helm.template({"config": {"presignTtlSeconds": 604800}}))
    env = {e["name"]: e.get("value") for e in container(docs)["env"]}
    assert env["LORAPACK_PRESIGN_TTL_SECONDS"] == "604800"
    assert OperatorConfig.from_env({"LORAPACK_PRESIGN_TTL_SECONDS": "604800"})


# --------------------------------------------------------------------------------- RBAC


def _roles(docs: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    return {d["metadata"]["name"]: d["rules"] for d in docs if d["kind"] == "ClusterRole"}


def _granted(docs: list[dict[str, Any]], namespace: str | None) -> list[dict[str, Any]]:
    """Rules the operator's ServiceAccount holds in `namespace`: its ClusterRoleBindings', plus
    its RoleBindings' there (None: the cluster-wide ones only)."""
    roles = _roles(docs)
    rules: list[dict[str, Any]] = []
    for d in docs:
        if d["kind"] not in ("ClusterRoleBinding", "RoleBinding"):
            continue
        if d["kind"] == "RoleBinding" and d["metadata"]["namespace"] != namespace:
            continue
        subjects = [f"system:serviceaccount:{s['namespace']}:{s['name']}" for s in d["subjects"]]
        if SA in subjects:
            rules += roles[d["roleRef"]["name"]]
    return rules


def _allows(
    rules: list[dict[str, Any]], group: str, resource: str, verb: str, name: str | None = None
) -> bool:
    """Whether the rules allow `verb` on `resource` (any object, or the object `name`)."""
    return any(
        group in r["apiGroups"]
        and resource in r["resources"]
        and verb in r["verbs"]
        and (not r.get("resourceNames") or (name is not None and name in r["resourceNames"]))
        for r in rules
    )


def _sample_objects() -> tuple[
    BaseModelPool, LoraAdapter, list[dict[str, Any]], list[dict[str, Any]]
]:
    """A pool and an adapter, and everything the operator applies for them (manifests.*)."""
    pool = BaseModelPool.model_validate(
        {**make_pool(), "metadata": {"name": "llama3-8b", "namespace": "ml-platform", "uid": "u1"}}
    )
    adapter = LoraAdapter.model_validate(
        {**make_adapter(), "metadata": {"name": "support-bot", "namespace": "team-a", "uid": "u2"}}
    )
    state = DesiredState(
        pool="ml-platform/llama3-8b",
        pod="llama3-8b-0",
        revision=1,
        max_lora_rank=64,
        allow_pickle=False,
        cache_quota_bytes=1,
        adapters=[],
    )
    in_pool_namespace = [
        *pool_manifests.agent_rbac(pool),
        pool_manifests.headless_service(pool),
        pool_manifests.pool_service(pool),
        pool_manifests.pod_disruption_budget(pool),
        pool_manifests.statefulset(pool, replicas=1, agent_image="img"),
        pool_manifests.desired_secret(pool, 0, state),
        network.api_key_secret(pool, "k" * 43),
        network.engine_network_policy(pool),
    ]
    in_adapter_namespace = [
        routing.adapter_service(adapter, 8000),
        routing.endpoint_slice(adapter, "ml-platform", "llama3-8b", []),
    ]
    return pool, adapter, in_pool_namespace, in_adapter_namespace


def _group(api_version: str) -> str:
    return api_version.rpartition("/")[0]


# What the operator does besides create-or-take-then-apply (create, get, patch) of the objects
# above, from handlers/* (every kopf index in handlers/indexes.py), reconcilers/* and kopf
# (finalizers, events). (group, resource, verbs, where): "served" = every namespace it serves,
# "teams" = team namespaces, "pools" = pool namespaces.
OPERATOR_CALLS = [
    ("lorapack.io", "basemodelpools", ("list", "watch", "patch"), "served"),
    ("lorapack.io", "loraadapters", ("list", "watch", "patch"), "served"),
    ("lorapack.io", "basemodelpools/status", ("patch",), "served"),
    ("lorapack.io", "loraadapters/status", ("patch",), "served"),
    ("", "pods", ("list", "watch"), "served"),
    ("", "services", ("list", "watch", "delete"), "served"),
    ("discovery.k8s.io", "endpointslices", ("list", "watch", "delete"), "served"),
    ("", "events", ("create",), "served"),
    ("", "secrets", ("get",), "teams"),  # credentials Secrets named by adapters
    ("", "secrets", ("get", "list", "delete"), "pools"),  # desired states, the pool's own keys
]


def _where(case: str, where: str) -> list[str | None]:
    """The namespaces `where` means in a case (None: cluster-wide bindings alone)."""
    if case == "clusterwide":
        return [None]
    values = CASES[case]
    return {"served": WATCHED, "teams": values["teamNamespaces"], "pools": POOLS}[where]


@pytest.mark.parametrize("case", ["namespaced", "clusterwide"])
def test_rbac_covers_everything_the_operator_reads_and_writes(
    rendered: dict[str, str], case: str
) -> None:
    docs = docs_of(rendered[case])
    _, _, pool_objs, adapter_objs = _sample_objects()
    needs: list[tuple[str, str, str, str, str | None]] = []
    verbs = ("create", "get", "patch")
    for where, objs in (("pools", pool_objs), ("served", adapter_objs)):
        for obj in objs:
            rt = resource_for(obj)
            needs += [(_group(rt.api_version), rt.plural, v, where, None) for v in verbs]
    for group, resource, call_verbs, where in OPERATOR_CALLS:
        # Credentials Secrets may be limited to the listed names.
        name = "s3-creds" if (resource, where) == ("secrets", "teams") else None
        needs += [(group, resource, v, where, name) for v in call_verbs]
    # Owner references with blockOwnerDeletion (OwnerReferencesPermissionEnforcement).
    needs.append(("lorapack.io", "basemodelpools/finalizers", "update", "pools", None))
    needs.append(("lorapack.io", "loraadapters/finalizers", "update", "served", None))
    missing = [
        f"{verb} {group or 'core'}/{resource} in {ns or 'every namespace'}"
        for group, resource, verb, where, name in needs
        for ns in _where(case, where)
        if not _allows(_granted(docs, ns), group, resource, verb, name)
    ]
    assert missing == []


@pytest.mark.parametrize("case", ["default", "namespaced", "clusterwide"])
def test_operator_holds_every_right_it_grants_the_agents(
    rendered: dict[str, str], case: str
) -> None:
    """RBAC refuses to create a Role granting more than its creator holds."""
    docs = docs_of(rendered[case])
    pool, _, _, _ = _sample_objects()
    role = next(o for o in pool_manifests.agent_rbac(pool) if o["kind"] == "Role")
    pool_ns = {"default": RELEASE_NS, "namespaced": "ml-platform", "clusterwide": None}[case]
    held = _granted(docs, pool_ns)
    for rule in role["rules"]:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    assert _allows(held, group, resource, verb), (group, resource, verb)


def _secret_rights(docs: list[dict[str, Any]], namespace: str | None) -> set[str]:
    return {
        verb
        for verb in ("get", "list", "watch", "create", "patch", "update", "delete")
        if _allows(_granted(docs, namespace), "", "secrets", verb, name="s3-creds")
    }


def test_namespaced_mode_grants_nothing_outside_the_chosen_namespaces(
    rendered: dict[str, str],
) -> None:
    docs = docs_of(rendered["namespaced"])
    cluster_wide = _granted(docs, None)
    namespaced_resources = {"secrets", "pods", "services", "endpointslices", "statefulsets"}
    assert not [r for r in cluster_wide if namespaced_resources & set(r["resources"])]
    assert not [r for r in cluster_wide if "lorapack.io" in r["apiGroups"]]
    assert _granted(docs, "elsewhere") == cluster_wide
    bindings = sorted(
        (d["metadata"]["namespace"], d["roleRef"]["name"])
        for d in docs
        if d["kind"] == "RoleBinding"
    )
    assert bindings == sorted(
        [(ns, RELEASE) for ns in WATCHED]
        + [(ns, f"{RELEASE}-credentials") for ns in TEAMS]
        + [(ns, f"{RELEASE}-pools") for ns in POOLS]
    )
    # Secrets: listed and written only in pool namespaces; in team namespaces only `get`, and
    # only of the listed credentials Secrets.
    assert _secret_rights(docs, "ml-platform") == {"get", "list", "watch", "create", "patch",
                                                   "delete"}  # fmt: skip
    for team in TEAMS:
        assert _secret_rights(docs, team) == {"get"}
        assert not _allows(_granted(docs, team), "", "secrets", "get", name="other-secret")
        assert not _allows(_granted(docs, team), "apps", "statefulsets", "create")
        assert not _allows(_granted(docs, team), "rbac.authorization.k8s.io", "roles", "create")
        assert not _allows(_granted(docs, team), "", "pods", "patch")
    assert _secret_rights(docs, "elsewhere") == set()


def test_default_install_serves_only_the_release_namespace(rendered: dict[str, str]) -> None:
    docs = docs_of(rendered["default"])
    assert not [d for d in docs if d["kind"] == "ClusterRoleBinding" and
                d["roleRef"]["name"] != f"{RELEASE}-cluster"]  # fmt: skip
    bindings = sorted(
        (d["metadata"]["namespace"], d["roleRef"]["name"])
        for d in docs
        if d["kind"] == "RoleBinding"
    )
    assert bindings == [(RELEASE_NS, RELEASE), (RELEASE_NS, f"{RELEASE}-pools")]
    assert _secret_rights(docs, "team-a") == set()
    env = {e["name"]: e.get("value") for e in container(docs)["env"]}
    assert env["LORAPACK_NAMESPACES"] == RELEASE_NS


def test_clusterwide_mode_binds_cluster_roles(rendered: dict[str, str]) -> None:
    docs = docs_of(rendered["clusterwide"])
    assert not [d for d in docs if d["kind"] == "RoleBinding"]
    everywhere = _granted(docs, None)
    assert _allows(everywhere, "", "secrets", "list")  # the documented price
    assert _allows(everywhere, "kopf.dev", "clusterkopfpeerings", "watch")


def test_clusterwide_mode_with_pool_namespaces_keeps_pool_rights_there(helm: Helm) -> None:
    docs = docs_of(helm.template({"clusterWide": True, "poolNamespaces": POOLS}))
    assert sorted(
        (d["metadata"]["namespace"], d["roleRef"]["name"])
        for d in docs
        if d["kind"] == "RoleBinding"
    ) == [("ml-platform", f"{RELEASE}-pools")]
    assert _secret_rights(docs, None) == {"get"}
    assert _secret_rights(docs, "ml-platform") == {"get", "list", "watch", "create", "patch",
                                                   "delete"}  # fmt: skip
    assert not _allows(_granted(docs, "team-a"), "apps", "statefulsets", "create")
    assert _allows(_granted(docs, "team-a"), "discovery.k8s.io", "endpointslices", "create")


def test_deprecated_watch_namespaces_render_like_pool_and_team_namespaces(helm: Helm) -> None:
    def rbac_and_env(values: dict[str, Any]) -> list[Any]:
        docs = docs_of(helm.template(values))
        keep = [d for d in docs if d["kind"] in ("RoleBinding", "ClusterRoleBinding",
                                                 "KopfPeering")]  # fmt: skip
        return [*keep, container(docs)["env"]]

    legacy = {"watchNamespaces": WATCHED, "poolNamespaces": POOLS}
    assert rbac_and_env(legacy) == rbac_and_env({"poolNamespaces": POOLS, "teamNamespaces": TEAMS})
    # Without poolNamespaces every watched namespace was a pool namespace, and still is.
    assert rbac_and_env({"watchNamespaces": WATCHED}) == rbac_and_env({"poolNamespaces": WATCHED})


def test_aggregated_roles_let_teams_manage_adapters_but_never_status(
    rendered: dict[str, str],
) -> None:
    docs = docs_of(rendered["default"])
    roles = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ClusterRole"}
    view, edit = roles[f"{RELEASE}-view"], roles[f"{RELEASE}-edit"]
    assert view["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-view"] == "true"
    assert edit["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-edit"] == "true"
    assert edit["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-admin"] == "true"
    team = view["rules"] + edit["rules"]
    for verb in ("get", "list", "watch", "create", "update", "patch", "delete"):
        assert _allows(team, "lorapack.io", "loraadapters", verb)
    for verb in ("create", "update", "patch", "delete"):
        assert not _allows(team, "lorapack.io", "basemodelpools", verb)
    assert not [r for r in team if any(res.endswith("/status") for res in r["resources"])]
    # No binding names them: they only flow into the built-in roles.
    for d in docs:
        if d["kind"] in ("RoleBinding", "ClusterRoleBinding"):
            assert d["roleRef"]["name"] not in roles or not d["roleRef"]["name"].endswith(
                ("-view", "-edit")
            )
    standalone = {d["metadata"]["name"] for d in docs_of(rendered["standalone"])}
    assert f"{RELEASE}-view" not in standalone and f"{RELEASE}-edit" not in standalone


@pytest.mark.parametrize("case", sorted(CASES))
def test_rbac_has_no_wildcards_and_no_dangerous_verbs(rendered: dict[str, str], case: str) -> None:
    for name, rules in _roles(docs_of(rendered[case])).items():
        for rule in rules:
            fields = [*rule["apiGroups"], *rule["resources"], *rule["verbs"]]
            assert "*" not in fields, (name, rule)
            assert not {"escalate", "bind", "impersonate", "deletecollection"} & set(rule["verbs"])
            assert "nodes" not in rule["resources"]
            # By name: only this release's peering object (patch) and the credentials Secrets
            # the values list (get).
            if rule.get("resourceNames"):
                allowed = [
                    (["lorapack"], ["patch"]),
                    (CASES[case].get("credentialsSecrets"), ["get"]),
                ]
                assert (rule["resourceNames"], rule["verbs"]) in allowed, (name, rule)


def test_every_rbac_rule_is_documented_in_the_chart_readme(rendered: dict[str, str]) -> None:
    readme = (CHART / "README.md").read_text()
    table = [line for line in readme.splitlines() if line.startswith("| `")]
    for case in ("namespaced", "clusterwide"):
        for role, rules in _roles(docs_of(rendered[case])).items():
            name = f"`<fullname>{role.removeprefix(RELEASE)}`"
            for rule in rules:
                for resource in rule["resources"]:
                    verbs = ", ".join(rule["verbs"])
                    row = [
                        line
                        for line in table
                        if f"`{resource}`" in line and f"`{verbs}`" in line and name in line
                    ]
                    assert row, f"README.md has no RBAC row for {name} {resource} ({verbs})"


# ------------------------------------------------------------------------ peering and CRDs


def test_peering_objects_match_the_mode_and_the_crds(rendered: dict[str, str]) -> None:
    crds = {
        d["spec"]["names"]["kind"]: d
        for d in yaml.safe_load_all((CHART / "crds" / "kopf.dev_peerings.yaml").read_text())
    }
    assert crds["ClusterKopfPeering"]["spec"]["scope"] == "Cluster"
    assert crds["KopfPeering"]["spec"]["scope"] == "Namespaced"
    cluster = [d for d in docs_of(rendered["clusterwide"]) if d["kind"].endswith("KopfPeering")]
    assert [(d["kind"], d["metadata"]["name"]) for d in cluster] == [
        ("ClusterKopfPeering", "lorapack")
    ]
    for case in ("namespaced", "default"):
        namespaced = [d for d in docs_of(rendered[case]) if d["kind"].endswith("KopfPeering")]
        assert sorted(d["metadata"]["namespace"] for d in namespaced) == sorted(served(case))
        assert {d["kind"] for d in namespaced} == {"KopfPeering"}
    assert not [d for d in docs_of(rendered["standalone"]) if d["kind"].endswith("KopfPeering")]
    for crd in crds.values():
        assert crd["metadata"]["name"] == f"{crd['spec']['names']['plural']}.kopf.dev"
        version = crd["spec"]["versions"][0]
        assert version["name"] == "v1" and version["served"] and version["storage"]
        # kopf merge-patches `status` on the main resource: no status subresource.
        assert "subresources" not in version


def test_chart_crds_include_lorapack_crds() -> None:
    names = sorted(p.name for p in (CHART / "crds").glob("*.yaml"))
    assert names == sorted(
        [
            "kopf.dev_peerings.yaml",
            "lorapack.io_basemodelpools.yaml",
            "lorapack.io_loraadapters.yaml",
        ]
    )


# ------------------------------------------------------------------- metrics, alerts, dashboard


def _exported_metrics() -> set[str]:
    names: set[str] = set()
    for collector in (
        metrics.RECONCILES, metrics.RECONCILE_SECONDS, metrics.VALIDATIONS, metrics.ADAPTERS,
        metrics.POOL_SLOTS, metrics.POOL_REPLICAS, metrics.ADAPTER_READY_SECONDS,
    ):  # fmt: skip
        for family in collector.describe():
            for suffix in ("", "_total", "_bucket", "_count", "_sum"):
                names.add(family.name + suffix)
    return names


def test_alerts_and_dashboard_read_only_exported_metrics(rendered: dict[str, str]) -> None:
    docs = docs_of(rendered["monitoring"])
    rule = only(docs, "PrometheusRule")
    exprs = [r["expr"] for g in rule["spec"]["groups"] for r in g["rules"]]
    dashboard = json.loads(only(docs, "ConfigMap")["data"]["lorapack.json"])
    exprs += [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    used = {m for e in exprs for m in re.findall(r"\blorapack_[a-z_]+", e)}
    assert used, "no lorapack metric referenced"
    assert used <= _exported_metrics(), used - _exported_metrics()
    # Every alert has a severity, a summary and a description; names are unique.
    alerts = [r for g in rule["spec"]["groups"] for r in g["rules"]]
    assert len({a["alert"] for a in alerts}) == len(alerts)
    for alert in alerts:
        assert alert["labels"]["severity"] in ("critical", "warning", "info")
        assert alert["annotations"]["summary"] and alert["annotations"]["description"]
        # Pinned to this release's metrics (not another install's).
        assert 'job="lorapack-metrics"' in alert["expr"], alert["alert"]


def test_monitoring_objects_target_the_metrics_service(rendered: dict[str, str]) -> None:
    docs = docs_of(rendered["monitoring"])
    service = only(docs, "Service", f"{RELEASE}-metrics")
    monitor = only(docs, "ServiceMonitor")
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    assert monitor["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"]
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    pod_labels = only(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    dashboard = only(docs, "ConfigMap")
    assert dashboard["metadata"]["namespace"] == "monitoring"
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    # Off by default: the Prometheus Operator CRDs may not exist.
    defaults = {d["kind"] for d in docs_of(rendered["default"])}
    assert not defaults & {"ServiceMonitor", "PrometheusRule", "ConfigMap"}


# ------------------------------------------------------------------- values and their schema


def _documented_paths(
    values: dict[str, Any], schema: dict[str, Any], prefix: str = ""
) -> Iterator[tuple[str, dict[str, Any]]]:
    """(dotted path, schema node) of every value; free-form maps (no schema properties, such as
    resources or labels) count as one value."""
    for key, value in values.items():
        path = f"{prefix}{key}"
        assert key in schema.get("properties", {}), f"{path} is not in values.schema.json"
        node = schema["properties"][key]
        if isinstance(value, dict) and "properties" in node:
            yield from _documented_paths(value, node, f"{path}.")
        else:
            yield path, node


def test_every_value_is_in_the_schema_and_documented() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    schema = json.loads((CHART / "values.schema.json").read_text())
    readme = (CHART / "README.md").read_text()
    paths = list(_documented_paths(values, schema))
    assert len(paths) > 30
    for path, node in paths:
        assert node.get("description"), f"{path} has no description in values.schema.json"
        assert f"`{path}`" in readme, f"{path} is not documented in charts/lorapack/README.md"

    # And the schema describes nothing values.yaml lacks (a default for every setting).
    def schema_paths(node: dict[str, Any], prefix: str = "") -> Iterator[str]:
        for key, child in node.get("properties", {}).items():
            if "properties" in child:
                yield from schema_paths(child, f"{prefix}{key}.")
            else:
                yield f"{prefix}{key}"

    assert set(schema_paths(schema)) - {"global"} == {p for p, _ in paths}


@pytest.mark.parametrize(
    ("values", "want_error"),
    [
        ({"replicaCount": "two"}, "at '/replicaCount': got string, want integer"),
        ({"replicaCount": 0}, "at '/replicaCount'"),
        ({"watchNamespaces": "team-a"}, "at '/watchNamespaces': got string, want array"),
        ({"watchNamespaces": ["Team_A"]}, "at '/watchNamespaces/0'"),
        ({"config": {"presignTtlSeconds": 10}}, "at '/config/presignTtlSeconds'"),
        ({"config": {"resyncSecond": 5}}, "additional properties 'resyncSecond' not allowed"),
        ({"replicas": 2}, "additional properties 'replicas' not allowed"),
        ({"image": {"pullPolicy": "Sometimes"}}, "at '/image/pullPolicy'"),
        ({"image": {"digest": "latest"}}, "at '/image/digest'"),
        ({"logLevel": "TRACE"}, "at '/logLevel'"),
        ({"metrics": {"prometheusRule": {"poolFullRatio": 1.5}}}, "poolFullRatio"),
        ({"peering": {"enabled": False}}, "replicaCount is 2 but peering.enabled is false"),
        (
            {"watchNamespaces": ["team-a"], "poolNamespaces": ["ml-platform"]},
            'poolNamespaces contains "ml-platform", which is not in watchNamespaces',
        ),
        ({"watchNamespaces": ["a", "a"]}, "watchNamespaces [a a] lists a name twice"),
        ({"teamNamespaces": ["a", "a"]}, "teamNamespaces [a a] lists a name twice"),
        (
            {"poolNamespaces": ["a"], "teamNamespaces": ["a"]},
            '"a" is in both poolNamespaces and teamNamespaces',
        ),
        ({"clusterWide": True, "teamNamespaces": ["a"]}, "clusterWide is true but teamNamespaces"),
        ({"clusterWide": "yes"}, "at '/clusterWide': got string, want boolean"),
        ({"credentialsSecrets": ["S3_Creds"]}, "at '/credentialsSecrets/0'"),
        ({"teamNamespaces": ["Team_A"]}, "at '/teamNamespaces/0'"),
        ({"metrics": {"port": 8081}}, "metrics.port and probes.port are both 8081"),
        (
            {"metrics": {"enabled": False, "serviceMonitor": {"enabled": True}}},
            "metrics.serviceMonitor.enabled is true but metrics.enabled is false",
        ),
        ({"serviceAccount": {"create": False}}, "serviceAccount.name is required"),
    ],
    ids=[
        "replicas-not-a-number",
        "replicas-zero",
        "namespaces-not-a-list",
        "namespace-not-dns-label",
        "presign-ttl-too-short",
        "config-typo",
        "top-level-typo",
        "bad-pull-policy",
        "digest-not-sha256",
        "unknown-log-level",
        "ratio-above-one",
        "two-replicas-without-peering",
        "pool-namespace-not-served",
        "duplicate-namespace",
        "duplicate-team-namespace",
        "namespace-both-pool-and-team",
        "clusterwide-with-team-list",
        "clusterwide-not-a-boolean",
        "secret-name-not-dns",
        "team-namespace-not-dns-label",
        "metrics-port-clash",
        "servicemonitor-without-metrics",
        "own-service-account-unnamed",
    ],
)
def test_bad_values_are_refused_with_the_field_named(
    helm: Helm, values: dict[str, Any], want_error: str
) -> None:
    result = helm.run("template", RELEASE, str(CHART), "-n", RELEASE_NS, values=values)
    assert result.returncode != 0, f"accepted: {values}"
    assert want_error in result.stderr, result.stderr


# -------------------------------------------------------------------------- shipped files


def test_containerfile_runs_lorapack_as_uid_65532() -> None:
    # The image itself is built and run by tests/realnode/test_image.py; this pins the file the
    # release workflow builds with docker (the default base: Python 3.11 slim, pinned by digest).
    text = (ROOT / "hack" / "image" / "Containerfile").read_text()
    assert re.search(
        r"^ARG BASE=docker\.io/library/python:3\.11-slim\S*@sha256:[0-9a-f]{64}$", text, re.M
    )
    assert re.search(r"^USER 65532:65532$", text, re.M)
    assert re.search(r'^ENTRYPOINT \["lorapack"\]$', text, re.M)
    assert "pip install --no-index" in text and "requirements.lock" in text

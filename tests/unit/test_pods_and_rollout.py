"""Pure pod parsing, lost-pod rules, version rollout and routing."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from lorapack import labels
from lorapack.planning.pods import is_lost, observe_pod
from lorapack.planning.rollout import AdapterVersion, choose_digests, endpoints_by_adapter
from tests.podbuilders import make_pod, observed

D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64
NOW = datetime(2026, 11, 25, 0, 10, tzinfo=UTC)


def pods_with(*reports):  # type: ignore[no-untyped-def]
    out = {}
    for ordinal, report in enumerate(reports):
        pod = observe_pod(make_pod(ordinal=ordinal, report=report))
        assert pod is not None
        out[ordinal] = pod
    return out


def test_observe_pod_reads_ordinal_node_ip_and_report() -> None:
    pod = observe_pod(make_pod(ordinal=3, report=observed(("chat", D1, "Loaded"))))
    assert pod is not None
    assert (pod.ordinal, pod.node, pod.ip) == (3, "gpu-l20-0", "198.51.100.13")
    assert pod.engine_up
    assert pod.loaded() == {"chat": D1}


def test_observe_pod_without_report_or_pool_label() -> None:
    pod = observe_pod(make_pod())
    assert pod is not None
    assert pod.observed is None
    assert not pod.engine_up
    assert pod.loaded() == {}
    stray = make_pod()
    del stray["metadata"]["labels"][labels.POOL_LABEL]
    assert observe_pod(stray) is None


def test_unreadable_report_is_flagged_not_fatal() -> None:
    pod_dict = make_pod()
    pod_dict["metadata"]["annotations"][labels.OBSERVED_ANNOTATION] = "{not json"
    pod = observe_pod(pod_dict)
    assert pod is not None
    assert pod.observed is None
    assert pod.report_error is not None
    assert labels.OBSERVED_ANNOTATION in pod.report_error


def test_unhealthy_engine_serves_nothing() -> None:
    pod = observe_pod(make_pod(report=observed(("chat", D1, "Loaded"), healthy=False)))
    assert pod is not None
    assert pod.loaded() == {}


@pytest.mark.parametrize(
    ("case", "pod_kwargs", "want"),
    [
        ("missing pod waits for re-creation", None, False),
        ("running pod", {}, False),
        ("failed pod", {"phase": "Failed"}, True),
        (
            "unschedulable briefly",
            {"unschedulable": "0/6 nodes", "created": "2026-11-25T00:09:00Z"},
            False,
        ),
        ("unschedulable for long", {"unschedulable": "0/6 nodes"}, True),
    ],
)
def test_is_lost(case: str, pod_kwargs: dict | None, want: bool) -> None:  # type: ignore[type-arg]
    pod = observe_pod(make_pod(**pod_kwargs)) if pod_kwargs is not None else None
    assert is_lost(pod, now=NOW, lost_after=120) is want


V1 = {"a/chat": AdapterVersion("a/chat", "chat", D1, 2)}
V2 = {"a/chat": AdapterVersion("a/chat", "chat", D2, 2)}


def test_new_copies_get_the_current_digest() -> None:
    out = choose_digests({0: frozenset({"a/chat"}), 1: frozenset()}, V1, {}, pods_with(None, None))
    assert out == {0: {"a/chat": D1}, 1: {}}


def test_unvalidated_adapters_are_skipped() -> None:
    out = choose_digests({0: frozenset({"a/other"})}, V1, {}, pods_with(None))
    assert out == {0: {}}


def test_rollout_switches_one_pod_at_a_time_and_keeps_one_serving() -> None:
    assignment = {0: frozenset({"a/chat"}), 1: frozenset({"a/chat"})}
    before = {0: {"a/chat": D1}, 1: {"a/chat": D1}}
    serving_old = pods_with(observed(("chat", D1, "Loaded")), observed(("chat", D1, "Loaded")))
    step1 = choose_digests(assignment, V2, before, serving_old)
    assert step1 == {0: {"a/chat": D2}, 1: {"a/chat": D1}}
    # Pod 0 is switching (not yet loaded D2): pod 1 must wait.
    switching = pods_with(observed(("chat", D1, "Unloading")), observed(("chat", D1, "Loaded")))
    assert choose_digests(assignment, V2, step1, switching) == step1
    # Pod 0 serves D2: now pod 1 may switch.
    done0 = pods_with(observed(("chat", D2, "Loaded")), observed(("chat", D1, "Loaded")))
    assert choose_digests(assignment, V2, step1, done0) == {0: {"a/chat": D2}, 1: {"a/chat": D2}}


def test_rollout_waits_when_no_other_pod_serves() -> None:
    assignment = {0: frozenset({"a/chat"}), 1: frozenset({"a/chat"})}
    before = {0: {"a/chat": D1}, 1: {"a/chat": D1}}
    nobody = pods_with(observed(), observed())
    assert choose_digests(assignment, V2, before, nobody) == before


def test_single_copy_rolls_at_once() -> None:
    assignment = {0: frozenset({"a/chat"})}
    out = choose_digests(
        assignment, V2, {0: {"a/chat": D1}}, pods_with(observed(("chat", D1, "Loaded")))
    )
    assert out == {0: {"a/chat": D2}}


def test_endpoints_only_pods_holding_the_wanted_digest() -> None:
    pods = pods_with(
        observed(("chat", D2, "Loaded")),
        observed(("chat", D1, "Loaded")),  # still old, asked for D2: out of routing
        observed(("chat", D2, "Loading")),
    )
    desired = {0: {"a/chat": D2}, 1: {"a/chat": D2}, 2: {"a/chat": D2}}
    eps = endpoints_by_adapter(desired, V2, pods)
    assert [e.pod for e in eps["a/chat"]] == ["llama3-8b-0"]
    # A pod no longer asked to hold the adapter leaves routing at once, even though loaded.
    eps = endpoints_by_adapter({0: {}, 1: {}, 2: {}}, V2, pods)
    assert eps.get("a/chat", []) == []


def _with_ready(pod: dict, status: str, reason: str | None) -> dict:  # type: ignore[type-arg]
    for condition in pod["status"]["conditions"]:
        if condition["type"] == "Ready":
            condition["status"] = status
            if reason is not None:
                condition["reason"] = reason
    return pod


@pytest.mark.parametrize(
    ("status", "reason", "routed"),
    [
        ("True", None, True),
        # The agent's gate is False while it syncs a new desired state: the adapters it already
        # serves stay routed.
        ("False", "ReadinessGatesNotReady", True),
        # The node lifecycle controller flips `status` of a NotReady node's pods, no reason.
        ("False", None, False),
        ("False", "ContainersNotReady", False),
        ("Unknown", None, False),
    ],
)
def test_routing_follows_the_pods_ready_condition_except_its_gate(
    status: str, reason: str | None, routed: bool
) -> None:
    raw = _with_ready(make_pod(report=observed(("chat", D2, "Loaded"))), status, reason)
    pod = observe_pod(raw)
    assert pod is not None
    assert pod.reachable is routed
    eps = endpoints_by_adapter({0: {"a/chat": D2}}, V2, {0: pod})
    assert [e.pod for e in eps["a/chat"]] == (["llama3-8b-0"] if routed else [])


def test_rollout_never_switches_the_last_reachable_copy() -> None:
    """Two copies of D1, one on a node that is not Ready: switching the reachable one would
    leave no copy anyone can reach."""
    assignment = {0: frozenset({"a/chat"}), 1: frozenset({"a/chat"})}
    before = {0: {"a/chat": D1}, 1: {"a/chat": D1}}
    raws = [make_pod(ordinal=o, report=observed(("chat", D1, "Loaded"))) for o in (0, 1)]
    _with_ready(raws[1], "False", None)
    pods = {o: p for o, raw in enumerate(raws) if (p := observe_pod(raw)) is not None}
    out = choose_digests(assignment, V2, before, pods)
    assert out == before

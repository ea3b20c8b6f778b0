"""Pure status derivation: adapter and pool verdicts, kstatus conditions, transition times."""

from __future__ import annotations

from typing import Any

import pytest

from lorapack.api import conditions as c
from lorapack.api.basemodelpool import BaseModelPool
from lorapack.api.loraadapter import ArtifactStatus, LoraAdapter
from lorapack.api.meta import Condition
from lorapack.issues import Issue
from lorapack.planning.pods import observe_pod
from lorapack.status.adapter import AdapterFacts, compute_adapter_status
from lorapack.status.conditions import Verdict, kstatus_conditions, set_condition
from lorapack.status.pool import PoolFacts, compute_pool_status
from tests.builders import make_adapter, make_pool
from tests.podbuilders import make_pod, observed

D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64
NOW = "2026-11-25T01:00:00Z"


def adapter(**spec: Any) -> LoraAdapter:
    body = make_adapter("chat", "team-a", **spec)
    body["metadata"]["generation"] = 3
    return LoraAdapter.model_validate(body)


def facts(**kw: Any) -> AdapterFacts:
    pods = {}
    for ordinal, report in enumerate(kw.pop("reports", [])):
        pod = observe_pod(make_pod(ordinal=ordinal, report=report))
        assert pod is not None
        pods[pod.name] = pod
    base: dict[str, Any] = {
        "artifact": ArtifactStatus(rank=16, digest=D1, validated_generation=3),
        "validated": True,
        "problems": [],
        "pool": "ml-platform/llama3-8b",
        "unplaceable": None,
        "desired": {},
        "pods": pods,
        "serving": [],
        "endpoint": "http://chat.team-a.svc:8000/v1",
    }
    base.update(kw)
    return AdapterFacts(**base)


def conditions_of(status: Any) -> dict[str, tuple[str, str]]:
    return {x.type: (x.status, x.reason) for x in status.conditions}


CASES = [
    (
        "loaded on min replicas",
        {},
        {
            "desired": {"llama3-8b-0": D1},
            "serving": ["llama3-8b-0"],
            "reports": [observed(("chat", D1, "Loaded"))],
        },
        ("True", c.LOADED),
        ("False", c.AS_EXPECTED),
        ("False", c.AS_EXPECTED),
    ),
    (
        "rank problem stalls",
        {},
        {"problems": [Issue(c.RANK_TOO_LARGE, "adapter rank 128 is above 64")], "artifact": None},
        ("False", c.RANK_TOO_LARGE),
        ("False", c.AS_EXPECTED),
        ("True", c.RANK_TOO_LARGE),
    ),
    (
        "not validated yet",
        {},
        {"validated": False, "artifact": None},
        ("False", c.PROGRESSING),
        ("True", c.PROGRESSING),
        ("False", c.AS_EXPECTED),
    ),
    (
        "unplaceable stalls",
        {},
        {"unplaceable": Issue(c.POOL_AT_MAX_REPLICAS, "pool at max")},
        ("False", c.POOL_AT_MAX_REPLICAS),
        ("False", c.AS_EXPECTED),
        ("True", c.POOL_AT_MAX_REPLICAS),
    ),
    (
        "downloading",
        {},
        {"desired": {"llama3-8b-0": D1}, "reports": [observed(("chat", D1, "Downloading"))]},
        ("False", c.DOWNLOADING),
        ("True", c.DOWNLOADING),
        ("False", c.AS_EXPECTED),
    ),
    (
        "all pods failed",
        {},
        {"desired": {"llama3-8b-0": D1}, "reports": [observed(("chat", D1, "Failed"))]},
        ("False", c.LOAD_FAILED),
        ("False", c.AS_EXPECTED),
        ("True", c.LOAD_FAILED),
    ),
    (
        "rolling out keeps serving",
        {"replicas": {"min": 2, "max": 2}},
        {
            "artifact": ArtifactStatus(rank=16, digest=D2, validated_generation=3),
            "desired": {"llama3-8b-0": D2, "llama3-8b-1": D1},
            "serving": ["llama3-8b-1"],
            "reports": [observed(("chat", D1, "Loading")), observed(("chat", D1, "Loaded"))],
        },
        ("False", c.ROLLING_OUT),
        ("True", c.ROLLING_OUT),
        ("False", c.AS_EXPECTED),
    ),
    (
        "fewer than min serving",
        {"replicas": {"min": 2, "max": 2}},
        {
            "desired": {"llama3-8b-0": D1, "llama3-8b-1": D1},
            "serving": ["llama3-8b-0"],
            "reports": [observed(("chat", D1, "Loaded")), observed(("chat", D1, "Loading"))],
        },
        ("False", c.PARTIALLY_LOADED),
        ("True", c.PARTIALLY_LOADED),
        ("False", c.AS_EXPECTED),
    ),
]


@pytest.mark.parametrize(
    ("case", "spec", "kw", "want_ready", "want_reconciling", "want_stalled"),
    CASES,
    ids=[x[0] for x in CASES],
)
def test_adapter_verdicts(
    case: str,
    spec: dict[str, Any],
    kw: dict[str, Any],
    want_ready: tuple[str, str],
    want_reconciling: tuple[str, str],
    want_stalled: tuple[str, str],
) -> None:
    status = compute_adapter_status(adapter(**spec), facts(**kw), NOW)
    got = conditions_of(status)
    assert got[c.READY] == want_ready
    assert got[c.RECONCILING] == want_reconciling
    assert got[c.STALLED] == want_stalled
    assert all(x.observed_generation == 3 for x in status.conditions)


def test_placements_come_from_reports_not_from_requests() -> None:
    status = compute_adapter_status(
        adapter(),
        facts(
            desired={"llama3-8b-0": D1, "llama3-8b-1": D1},
            serving=["llama3-8b-0"],
            reports=[observed(("chat", D1, "Loaded")), observed()],
        ),
        NOW,
    )
    by_pod = {p.pod: p for p in status.placements}
    assert by_pod["llama3-8b-0"].state == "Loaded"
    assert by_pod["llama3-8b-1"].state == "Pending"
    assert "agent" in by_pod["llama3-8b-1"].message
    assert status.ready_replicas == 1
    assert status.updated_replicas == 1
    assert status.endpoint == "http://chat.team-a.svc:8000/v1"


def test_recomputing_an_unchanged_status_is_identical() -> None:
    a = adapter()
    f = facts(
        desired={"llama3-8b-0": D1},
        serving=["llama3-8b-0"],
        reports=[observed(("chat", D1, "Loaded"))],
    )
    first = compute_adapter_status(a, f, NOW)
    a2 = a.model_copy(update={"status": first})
    second = compute_adapter_status(a2, f, "2026-11-25T02:00:00Z")
    assert second.wire() == first.wire()


def test_set_condition_keeps_transition_time_when_status_unchanged() -> None:
    old = Condition(type="Ready", status="True", reason="A", last_transition_time="T0")
    same = Condition(type="Ready", status="True", reason="B", last_transition_time="x")
    flipped = Condition(type="Ready", status="False", reason="C", last_transition_time="x")
    assert set_condition([old], same, "T1")[0].last_transition_time == "T0"
    assert set_condition([old], flipped, "T1")[0].last_transition_time == "T1"


def test_kstatus_triple_is_complete_and_ordered() -> None:
    conds = kstatus_conditions([], Verdict("stalled", "RankTooLarge", "m" * 5000), 7, NOW)
    assert [x.type for x in conds] == [c.READY, c.RECONCILING, c.STALLED]
    assert len(conds[2].message) <= 1024


def pool(**spec: Any) -> BaseModelPool:
    body = make_pool(**spec)
    body["metadata"]["generation"] = 2
    return BaseModelPool.model_validate(body)


def test_pool_unschedulable_is_stalled_with_the_schedulers_message() -> None:
    pods = [
        observe_pod(make_pod(ordinal=0, report=observed())),
        observe_pod(
            make_pod(
                ordinal=1, unschedulable="0/6 nodes are available: 6 Insufficient nvidia.com/gpu."
            )
        ),
    ]
    status = compute_pool_status(
        pool(),
        PoolFacts(
            pods=[p for p in pods if p],
            desired_replicas=2,
            slots_used=3,
            adapters_placed=3,
            adapters_pending=0,
        ),
        NOW,
    )
    got = conditions_of(status)
    assert got[c.STALLED] == ("True", c.UNSCHEDULABLE)
    stalled = next(x for x in status.conditions if x.type == c.STALLED)
    assert "Insufficient nvidia.com/gpu" in stalled.message
    assert "llama3-8b-1" in stalled.message
    assert status.capacity.slots_total == 2 * 32
    assert status.capacity.slots_used == 3


def test_pool_ready_when_all_desired_pods_ready() -> None:
    pods = [observe_pod(make_pod(ordinal=i, report=observed())) for i in range(2)]
    status = compute_pool_status(
        pool(),
        PoolFacts(
            pods=[p for p in pods if p],
            desired_replicas=2,
            slots_used=0,
            adapters_placed=0,
            adapters_pending=0,
        ),
        NOW,
    )
    assert conditions_of(status)[c.READY] == ("True", c.AS_EXPECTED)
    assert (status.replicas, status.ready_replicas, status.desired_replicas) == (2, 2, 2)
    assert status.selector == "lorapack.io/pool=llama3-8b"


def test_pool_scaling_is_progressing() -> None:
    pods = [observe_pod(make_pod(ordinal=0, report=observed()))]
    status = compute_pool_status(
        pool(),
        PoolFacts(
            pods=[p for p in pods if p],
            desired_replicas=3,
            slots_used=0,
            adapters_placed=0,
            adapters_pending=0,
        ),
        NOW,
    )
    assert conditions_of(status)[c.RECONCILING] == ("True", c.SCALING)


def test_transient_storage_trouble_is_visible_not_silent() -> None:
    status = compute_adapter_status(
        adapter(),
        facts(
            validated=False,
            artifact=None,
            waiting=Issue(c.STORAGE_UNAVAILABLE, "S3 down (retrying)"),
        ),
        NOW,
    )
    got = conditions_of(status)
    assert got[c.RECONCILING] == ("True", c.STORAGE_UNAVAILABLE)
    assert got[c.STALLED] == ("False", c.AS_EXPECTED)


def test_unplaceable_because_the_pool_cannot_schedule_says_so() -> None:
    pod = observe_pod(
        make_pod(unschedulable="0/6 nodes are available: 6 Insufficient nvidia.com/gpu.")
    )
    assert pod is not None
    status = compute_adapter_status(
        adapter(),
        facts(unplaceable=Issue(c.POOL_AT_MAX_REPLICAS, "pool full"), pods={pod.name: pod}),
        NOW,
    )
    stalled = next(x for x in status.conditions if x.type == c.STALLED)
    assert (stalled.status, stalled.reason) == ("True", c.UNSCHEDULABLE)
    assert "Insufficient nvidia.com/gpu;" in stalled.message


def test_loaded_copy_on_a_not_ready_pod_says_it_is_out_of_routing() -> None:
    raw = make_pod(ordinal=0, report=observed(("chat", D1, "Loaded")))
    for condition in raw["status"]["conditions"]:
        if condition["type"] == "Ready":
            condition["status"] = "False"  # the node lifecycle controller's mark, no reason
    pod = observe_pod(raw)
    assert pod is not None
    status = compute_adapter_status(
        adapter(), facts(desired={pod.name: D1}, pods={pod.name: pod}), NOW
    )
    ready = next(x for x in status.conditions if x.type == c.READY)
    assert (ready.status, ready.reason) == ("False", c.LOADING)
    assert "out of routing while pod(s) llama3-8b-0 are not ready" in ready.message
    assert "NodeNotReady on node gpu-l20-0" in status.placements[0].message

"""The pool loops' shared group view (`handlers.state.GroupViews`) and the shared plan.

Sibling pool loops of one base model used to each solve the whole group's placement on every
wake (10 pools x 10,000 adapters). A view is reused while its inputs are unchanged; when they
changed it stays usable for a short window, and the pass that used it is told to run again
when the window closes, so no change goes unplanned. The plan a sibling computed must give
this pool exactly the decision it would have computed itself.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest

from lorapack.api.basemodelpool import BaseModelPool
from lorapack.api.loraadapter import ArtifactStatus, LoraAdapter, LoraAdapterStatus
from lorapack.handlers.state import GroupView, GroupViews
from lorapack.reconcilers.poolplan import decide, ordered_actions, plan_group
from lorapack.reconcilers.poolworld import PoolSettings, PoolWorld
from tests.builders import make_adapter, make_pool

GROUP = ("ml/a", "ml/b")


def _view(token: tuple[object, ...], at: float, cost: float = 0.0) -> GroupView:
    return GroupView(token=token, made_at=at, adapters=[], deleting=frozenset(), cost=cost)


def test_same_inputs_reuse_the_view_until_it_is_too_old() -> None:
    views = GroupViews()
    view = _view((0,), at=100.0)
    views.store("llama", GROUP, view)
    assert views.usable("llama", GROUP, (0,), 100.5) is view
    assert views.usable("llama", GROUP, (0,), 100.0 + GroupViews.MAX_AGE) is None
    assert views.usable("llama", ("ml/a",), (0,), 100.5) is None  # another set of pools
    assert views.usable("qwen", GROUP, (0,), 100.5) is None
    assert views.stale_for(view, (0,), 100.5) is None


@pytest.mark.parametrize(
    ("cost", "window"), [(0.0, 0.5), (0.1, 0.5), (0.2, 0.8), (0.7, 2.0), (5.0, 2.0)]
)
def test_changed_inputs_keep_the_view_for_its_window_then_ask_for_a_new_pass(
    cost: float, window: float
) -> None:
    views = GroupViews()
    view = _view((0,), at=100.0, cost=cost)
    views.store("llama", GROUP, view)
    assert views.window(view) == pytest.approx(window)
    inside = 100.0 + window / 2
    assert views.usable("llama", GROUP, (1,), inside) is view
    # The pass that used it runs again when the window closes...
    assert views.stale_for(view, (1,), inside) == pytest.approx(window / 2)
    # ...and then gets a new view (the outdated one is refused).
    assert views.usable("llama", GROUP, (1,), 100.0 + window + 1e-9) is None


def test_a_changed_pool_group_drops_the_old_groups_view() -> None:
    views = GroupViews()
    views.store("llama", GROUP, _view((0,), at=100.0))
    views.store("qwen", GROUP, _view((0,), at=100.0))
    views.store("llama", ("ml/a",), _view((0,), at=100.1))
    assert views.usable("llama", GROUP, (0,), 100.2) is None
    assert views.usable("qwen", GROUP, (0,), 100.2) is not None


def test_touch_counts_changes_per_base_model() -> None:
    views = GroupViews()
    views.touch("llama")
    views.touch("llama")
    views.touch("qwen")
    assert (views.epoch("llama"), views.epoch("qwen"), views.epoch("other")) == (2, 1, 0)


def _adapter(i: int) -> LoraAdapter:
    body = make_adapter(f"a{i}", replicas={"min": 1 + i % 2, "max": 2})
    body["metadata"].update({"uid": f"uid-{i}", "generation": 1})
    status = LoraAdapterStatus(
        artifact=ArtifactStatus(rank=16, size_bytes=10_000, digest=f"sha256:{i:064x}")
    )
    return LoraAdapter.model_validate(body).model_copy(update={"status": status})


def test_a_siblings_plan_gives_each_pool_the_decision_it_would_compute() -> None:
    pools = [
        BaseModelPool.model_validate(make_pool(n, adapters={"maxPerReplica": 4}))
        for n in ("a", "b", "c")
    ]
    adapters = [_adapter(i) for i in range(30)]
    settings = PoolSettings(agent_image="lorapack:test")
    first = PoolWorld(
        pool=pools[0], group=pools, adapters=adapters, deleting=frozenset({"team-a/a3"}),
        pods={}, desired={}, slices={}, statefulset_replicas=None,
        owned_applied_generation=None, now=datetime(2026, 12, 3, tzinfo=UTC),
    )  # fmt: skip
    shared = plan_group(first, settings)
    placed = set()
    for pool in pools:
        own = replace(first, pool=pool)
        alone = decide(own, settings)
        with_shared = decide(replace(own, shared=shared), settings)
        assert with_shared == alone
        assert (
            ordered_actions(replace(own, shared=shared), settings)[1]
            == (ordered_actions(own, settings)[1])
        )
        placed |= alone.mine
    assert "team-a/a3" not in placed and len(placed) == 29

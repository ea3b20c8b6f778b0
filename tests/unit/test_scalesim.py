"""The scale simulator's pure part: the report an instantly-loading agent writes."""

from __future__ import annotations

from lorapack.api.podstate import DesiredAdapter, DesiredState
from lorapack_testworld.scalesim import report_for


def _desired(revision: int, **digests: str) -> DesiredState:
    return DesiredState(
        pool="p/pool",
        pod="pool-0",
        revision=revision,
        adapters=[
            DesiredAdapter(served_name=name, adapter=f"t/{name}", digest=d, files=[])
            for name, d in digests.items()
        ],
    )


def test_without_desired_state_the_engine_is_healthy_and_nothing_is_held() -> None:
    report = report_for(None, {}, "2026-12-03T00:00:00Z")
    assert report.synced is False
    assert report.state.engine_healthy is True
    assert report.state.revision == -1
    assert report.state.adapters == []


def test_every_desired_adapter_is_loaded_at_its_digest_and_the_revision_is_echoed() -> None:
    report = report_for(_desired(7, b="sha256:2", a="sha256:1"), {}, "t1")
    assert report.synced is True
    assert report.state.revision == 7
    assert report.state.loaded() == {"a": "sha256:1", "b": "sha256:2"}
    assert [a.served_name for a in report.state.adapters] == ["a", "b"]


def test_since_stays_until_the_digest_changes_and_dropped_names_are_forgotten() -> None:
    since: dict[str, tuple[str, str]] = {}
    report_for(_desired(1, a="sha256:1", b="sha256:2"), since, "t1")
    second = report_for(_desired(2, a="sha256:1", b="sha256:3"), since, "t2")
    by_name = {a.served_name: a.since for a in second.state.adapters}
    assert by_name == {"a": "t1", "b": "t2"}
    report_for(_desired(3, a="sha256:1"), since, "t3")
    assert set(since) == {"a"}


def test_reports_differing_only_in_time_have_one_key() -> None:
    one = report_for(_desired(1, a="sha256:1"), {}, "t1")
    two = report_for(_desired(1, a="sha256:1"), {"a": ("sha256:1", "t1")}, "t2")
    assert one.key() == two.key()
    assert one.key() != report_for(_desired(2, a="sha256:1"), {}, "t1").key()

"""The hostile-input corpus itself: enough cases, every case names its layer, the words its
refusal must contain and (below the API server) the reason; ids are unique; every recipe builds."""

from __future__ import annotations

from collections import Counter

from lorapack.api import conditions
from tests.hostile import LAYERS, adapter_files, api_object, load_cases

# Reasons below the API server: conditions constants, and the agent's error reasons.
KNOWN_REASONS = {v for k, v in vars(conditions).items() if k.isupper() and isinstance(v, str)} | {
    "ObjectChanged",
    "CapacityExceeded",
}


def test_the_corpus_has_at_least_60_cases_on_every_layer() -> None:
    cases = load_cases()
    by_layer = Counter(c.layer for c in cases)
    assert len(cases) >= 60, by_layer
    assert set(by_layer) == set(LAYERS), by_layer
    print("hostile corpus:", dict(by_layer), "total", len(cases))


def test_every_case_is_well_formed() -> None:
    cases = load_cases()
    ids = Counter(c.id for c in cases)
    assert [i for i, n in ids.items() if n > 1] == []
    for case in cases:
        assert case.layer in LAYERS, case
        assert case.words, f"{case.id}: no words"
        if case.layer != "apiserver":
            assert case.reason in KNOWN_REASONS, f"{case.id}: reason {case.reason!r}"


def test_every_recipe_builds() -> None:
    for case in load_cases("preflight"):
        files, sizes = adapter_files(case)
        assert files or sizes or case.id == "files-empty-folder", case.id
    for case in load_cases("apiserver"):
        obj = api_object(case, "ns")
        assert obj["kind"] in ("LoraAdapter", "BaseModelPool")

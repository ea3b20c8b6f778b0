"""The Argo CD health check charts/lorapack/files/argocd-health.lua, run by a real Lua.

Argo CD evaluates health scripts with gopher-lua (Lua 5.1): the object is the global `obj` and
the chunk returns {status, message}. `lupa` embeds the reference Lua interpreters; every case
runs on Lua 5.1 (Argo CD's dialect) and on 5.4 (so nothing depends on one version's quirks).
Sample statuses come both hand-written and from lorapack's own status builder
(`lorapack.status.conditions.kstatus_conditions`), so the script and the operator agree.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path
from typing import Any

import pytest

from lorapack.status.conditions import Verdict, kstatus_conditions

lupa = pytest.importorskip("lupa", reason="lupa (Lua for Python) is a dev dependency")

SCRIPT = (
    Path(__file__).resolve().parents[2] / "charts" / "lorapack" / "files" / "argocd-health.lua"
).read_text()
RUNTIMES = ["lua51", "lua54"]
NOW = "2026-01-01T00:00:00Z"


def _to_lua(lua: Any, value: Any) -> Any:
    """Python JSON -> Lua values as Argo CD builds them (objects and arrays become tables)."""
    if isinstance(value, dict):
        return lua.table_from({k: _to_lua(lua, v) for k, v in value.items()})
    if isinstance(value, list):
        return lua.table_from([_to_lua(lua, v) for v in value])
    return value


def health(obj: dict[str, Any], runtime: str = "lua51") -> tuple[str, str]:
    module = importlib.import_module(f"lupa.{runtime}")
    lua = module.LuaRuntime(unpack_returned_tuples=True)
    lua.globals().obj = _to_lua(lua, obj)
    result = lua.execute(SCRIPT)
    return str(result["status"]), str(result["message"])


def condition(
    kind: str, status: str, reason: str, message: str = "", gen: int = 2
) -> dict[str, Any]:
    return {
        "type": kind,
        "status": status,
        "reason": reason,
        "message": message,
        "observedGeneration": gen,
        "lastTransitionTime": NOW,
    }


def lora(generation: int = 2, status: dict[str, Any] | None = None, **meta: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": "lorapack.io/v1alpha1",
        "kind": "LoraAdapter",
        "metadata": {
            "name": "support-bot",
            "namespace": "team-a",
            "generation": generation,
            **meta,
        },
        "spec": {"baseModel": "meta-llama/Meta-Llama-3-8B"},
    }
    if status is not None:
        obj["status"] = status
    return obj


def triple(state: str, reason: str, message: str, gen: int = 2) -> list[dict[str, Any]]:
    return [
        condition("Ready", "True" if state == "ready" else "False", reason, message, gen),
        condition(
            "Reconciling",
            "True" if state == "progressing" else "False",
            reason if state == "progressing" else "AsExpected",
            message if state == "progressing" else "",
            gen,
        ),
        condition(
            "Stalled",
            "True" if state == "stalled" else "False",
            reason if state == "stalled" else "AsExpected",
            message if state == "stalled" else "",
            gen,
        ),
    ]


CASES = [
    pytest.param(
        lora(status=None), "Progressing", "Waiting for the lorapack operator", id="no-status"
    ),
    pytest.param(
        lora(status={"conditions": []}),
        "Progressing",
        "Waiting for the lorapack operator",
        id="status-without-observed-generation",
    ),
    pytest.param(
        lora(status={"observedGeneration": 2, "conditions": triple("ready", "Loaded", "served")}),
        "Healthy",
        "Loaded: served",
        id="ready",
    ),
    pytest.param(
        lora(
            status={
                "observedGeneration": 2,
                "conditions": triple("progressing", "Downloading", "1/2 pods"),
            }
        ),
        "Progressing",
        "Downloading: 1/2 pods",
        id="reconciling",
    ),
    pytest.param(
        lora(
            status={
                "observedGeneration": 2,
                "conditions": triple(
                    "stalled",
                    "RankTooLarge",
                    "adapter rank 128 is above the pool's engine.maxLoraRank 64",
                ),
            }
        ),
        "Degraded",
        "RankTooLarge: adapter rank 128 is above the pool's engine.maxLoraRank 64",
        id="stalled",
    ),
    pytest.param(
        lora(
            generation=3,
            status={"observedGeneration": 2, "conditions": triple("ready", "Loaded", "ok")},
        ),
        "Progressing",
        "observe generation 3 (status is for generation 2)",
        id="stale-observed-generation-even-if-ready",
    ),
    pytest.param(
        lora(
            generation=3,
            status={"observedGeneration": 2, "conditions": triple("stalled", "InvalidSpec", "x")},
        ),
        "Progressing",
        "observe generation 3",
        id="stale-observed-generation-even-if-stalled",
    ),
    pytest.param(
        lora(
            generation=3,
            status={"observedGeneration": 3, "conditions": triple("ready", "Loaded", "ok", gen=2)},
        ),
        "Progressing",
        "Ready was computed for generation 2; waiting for 3",
        id="stale-ready-condition",
    ),
    pytest.param(
        lora(
            status={
                "observedGeneration": 2,
                "conditions": [condition("Ready", "False", "PendingPlacement", "no pod yet")],
            }
        ),
        "Progressing",
        "PendingPlacement: no pod yet",
        id="ready-false-without-kstatus-siblings",
    ),
    pytest.param(
        lora(status={"observedGeneration": 2, "conditions": []}),
        "Progressing",
        "Waiting for the Ready condition",
        id="observed-but-no-conditions",
    ),
    pytest.param(
        lora(
            deletionTimestamp=NOW,
            status={"observedGeneration": 2, "conditions": triple("ready", "Loaded", "ok")},
        ),
        "Progressing",
        "Deleting",
        id="deleting",
    ),
    pytest.param(
        {
            **lora(
                status={
                    "observedGeneration": 1,
                    "conditions": triple("ready", "AsExpected", "2/2 pods ready", gen=1),
                }
            ),
            "kind": "BaseModelPool",
            "metadata": {"name": "llama3-8b", "namespace": "ml-platform", "generation": 1},
        },
        "Healthy",
        "AsExpected: 2/2 pods ready",
        id="pool-ready",
    ),
]


@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize(("obj", "want_status", "want_message"), CASES)
def test_health_of_sample_statuses(
    obj: dict[str, Any], want_status: str, want_message: str, runtime: str
) -> None:
    status, message = health(obj, runtime)
    assert status == want_status
    assert want_message in message


@pytest.mark.parametrize(
    ("state", "want"),
    [("ready", "Healthy"), ("progressing", "Progressing"), ("stalled", "Degraded")],
    ids=["ready", "progressing", "stalled"],
)
@pytest.mark.parametrize("kind", ["LoraAdapter", "BaseModelPool"])
def test_agrees_with_lorapacks_status_builder(state: str, want: str, kind: str) -> None:
    """What the operator writes for each verdict is read back as the matching Argo CD health."""
    previous = kstatus_conditions([], Verdict("progressing", "Downloading", "starting"), 4, NOW)
    conditions = kstatus_conditions(
        previous, Verdict(state, "SomeReason", "what to change"), 5, NOW
    )
    obj = lora(
        generation=5,
        status={"observedGeneration": 5, "conditions": [c.wire() for c in conditions]},
    )
    obj["kind"] = kind
    status, message = health(obj)
    assert status == want
    assert message == "SomeReason: what to change"


def test_docs_show_the_shipped_script() -> None:
    """docs/gitops.md embeds the script verbatim; a stale copy would mislead whoever pastes it."""
    doc = (Path(__file__).resolve().parents[2] / "docs" / "gitops.md").read_text()
    blocks = re.findall(r"```lua\n(.*?)```", doc, re.S)
    assert blocks == [SCRIPT]

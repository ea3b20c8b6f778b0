"""The agent's desired-state watch survives a non-retryable error (issue 11): a 403 or any
other failure restarts the watch with backoff, is reported on the Pod (and cleared once the
watch works again), and the agent keeps serving its last desired state meanwhile."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from typing import Any

from lorapack import labels
from lorapack.agent.main import WATCH_PROBLEM_ANNOTATION, _follow_desired
from lorapack.api.podstate import DesiredState
from lorapack.clients.kube import WatchEvent
from lorapack.config import AgentConfig
from lorapack.errors import PermanentError


def secret(revision: int) -> dict[str, Any]:
    state = DesiredState(pool="ml/p", pod="p-0", revision=revision)
    raw = state.model_dump_json(by_alias=True).encode()
    return {
        "metadata": {"name": "p-0-desired"},
        "data": {labels.DESIRED_KEY: base64.b64encode(raw).decode()},
    }


class ScriptedKube:
    """Each watch() call plays the next script step: an exception to raise, or events to
    yield before the stream stays open (until the test cancels it)."""

    def __init__(self, steps: list[Exception | list[WatchEvent]]) -> None:
        self.steps = steps
        self.watches = 0
        self.annotations: list[str | None] = []
        self.patch_fails = 0

    async def watch(self, rt: Any, namespace: str, **kw: Any) -> AsyncIterator[WatchEvent]:
        self.watches += 1
        step = self.steps.pop(0) if self.steps else []
        if isinstance(step, Exception):
            raise step
        for event in step:
            yield event
        if not self.steps:
            await asyncio.Event().wait()  # open until cancelled

    async def patch(self, rt: Any, namespace: str, name: str, body: Any, **kw: Any) -> None:
        if self.patch_fails:
            self.patch_fails -= 1
            raise RuntimeError("apiserver down")
        self.annotations.append(body["metadata"]["annotations"][WATCH_PROBLEM_ANNOTATION])


class RecordingAgent:
    def __init__(self) -> None:
        self.states: list[DesiredState | None] = []

    def set_desired(self, state: DesiredState | None) -> None:
        self.states.append(state)


def config() -> AgentConfig:
    return AgentConfig(pod_name="p-0", pod_namespace="ml", pool_name="p")


async def follow(kube: ScriptedKube, agent: RecordingAgent, until: int) -> None:
    task = asyncio.create_task(
        _follow_desired(kube, config(), agent, first_delay=0.01, max_delay=0.05)  # type: ignore[arg-type]
    )
    try:
        for _ in range(500):
            if len(agent.states) >= until and not kube.steps:
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
        assert not task.done(), task  # never crashed
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_403_restarts_the_watch_and_is_reported_then_cleared() -> None:
    forbidden = PermanentError("get secrets p-0-desired: forbidden", reason="Forbidden")
    kube = ScriptedKube(
        [
            [WatchEvent("ADDED", secret(1))],
            forbidden,
            forbidden,
            RuntimeError("connection reset"),
            [WatchEvent("MODIFIED", secret(2))],
        ]
    )
    agent = RecordingAgent()
    await follow(kube, agent, until=2)
    assert [s.revision if s else None for s in agent.states] == [1, 2]
    assert kube.watches == 5
    problems = [a for a in kube.annotations if a is not None]
    assert any("Forbidden" in a for a in problems), problems
    assert all("get/list/watch" in a for a in problems)
    assert kube.annotations[-1] is None  # cleared once events flow again


async def test_a_failing_report_does_not_stop_the_retries() -> None:
    kube = ScriptedKube(
        [PermanentError("forbidden", reason="Forbidden"), [WatchEvent("ADDED", secret(3))]]
    )
    kube.patch_fails = 5
    agent = RecordingAgent()
    await follow(kube, agent, until=1)
    assert [s.revision if s else None for s in agent.states] == [3]


async def test_a_deleted_secret_empties_the_desired_state() -> None:
    kube = ScriptedKube([[WatchEvent("ADDED", secret(1)), WatchEvent("DELETED", secret(1))]])
    agent = RecordingAgent()
    await follow(kube, agent, until=2)
    assert agent.states[0] is not None and agent.states[1] is None

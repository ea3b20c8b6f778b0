"""Writes the agent's report on its own Pod: the observed-state annotation and the condition
behind the pods' readiness gate. The only Kubernetes writes the agent makes.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

from lorapack import labels
from lorapack.api.podstate import ObservedState
from lorapack.clients.kube import POD, KubeClient

__all__ = ["PodReporter"]


class PodReporter:
    """Patches `lorapack.io/observed` and the `lorapack.io/adapters-synced` condition."""

    def __init__(self, kube: KubeClient, namespace: str, pod: str) -> None:
        self._kube = kube
        self._namespace = namespace
        self._pod = pod
        self._synced: bool | None = None

    async def report(self, state: ObservedState, synced: bool, message: str) -> None:
        payload = state.model_dump_json(by_alias=True, exclude_none=True)
        await self._kube.patch(
            POD,
            self._namespace,
            self._pod,
            {"metadata": {"annotations": {labels.OBSERVED_ANNOTATION: payload}}},
            kind="merge",
            field_manager=labels.AGENT_FIELD_MANAGER,
        )
        if synced == self._synced:
            return
        condition = {
            "type": labels.SYNCED_CONDITION,
            "status": "True" if synced else "False",
            "reason": "Synced" if synced else "Syncing",
            "message": message,
            "lastTransitionTime": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        # Strategic merge keys pod conditions by type: the kubelet's (or kwok's) own conditions
        # are left alone.
        await self._kube.patch(
            POD,
            self._namespace,
            self._pod,
            {"status": {"conditions": [condition]}},
            kind="strategic",
            subresource="status",
            field_manager=labels.AGENT_FIELD_MANAGER,
        )
        self._synced = synced


def decode_observed(raw: str) -> ObservedState:
    """Parse the annotation (for tools and tests)."""
    return ObservedState.model_validate(json.loads(raw))

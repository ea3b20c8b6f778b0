"""Which version of each adapter every pod should hold, and which pods may receive traffic.

The placement engine decides *where* adapters go (by adapter key). This module decides *which
version* (digest) each placed copy should be, and derives routing:

* A new copy gets the adapter's current digest.
* When an adapter's digest changes (its S3 files changed), copies roll one pod at a time: a pod
  switches only when no other pod of that adapter is mid-switch and at least one other pod still
  serves it, so the adapter never has zero serving replicas (the agent drains, unloads the old
  path and loads the new one; each version lives in its own cache folder).
* A pod receives an adapter's traffic only while its agent reports the adapter Loaded at exactly
  the digest the pod is asked to hold. A pod that is about to switch version or lose the adapter
  leaves the EndpointSlice in the same pass that changes its desired state, and the reconciler
  writes routing before desired state: traffic stops first, then the agent drains and unloads.

Pure: called by the pool reconciler with the plan, the previous desired states and the pods.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from lorapack.planning.pods import PodObservation

__all__ = ["AdapterVersion", "Endpoint", "choose_digests", "endpoints_by_adapter", "serving_pods"]


@dataclass(frozen=True, order=True)
class Endpoint:
    """One pool pod serving an adapter (an EndpointSlice entry)."""

    ip: str
    pod: str
    namespace: str
    node: str | None = None


@dataclass(frozen=True)
class AdapterVersion:
    """The version of an adapter the operator validated last."""

    key: str
    """namespace/name"""
    served_name: str
    digest: str
    min_replicas: int


Digests = Mapping[int, Mapping[str, str]]  # ordinal -> adapter key -> digest


def _holds(pod: PodObservation | None, served_name: str, digest: str | None = None) -> bool:
    """The pod serves that version and can be sent traffic (a copy on a node that is not
    Ready does not count: switching the last reachable copy would leave none)."""
    if pod is None or not pod.reachable:
        return False
    loaded = pod.loaded().get(served_name)
    return loaded is not None and (digest is None or loaded == digest)


def choose_digests(
    assignment: Mapping[int, frozenset[str]],
    versions: Mapping[str, AdapterVersion],
    previous: Digests,
    pods: Mapping[int, PodObservation],
) -> dict[int, dict[str, str]]:
    """ordinal -> adapter key -> digest the pod should hold, applying the one-pod-at-a-time rule.

    `assignment` is the placement plan; `previous` what each pod was asked to hold before;
    adapters without a version in `versions` are skipped (not validated yet).
    """
    out: dict[int, dict[str, str]] = {ordinal: {} for ordinal in assignment}
    holders: dict[str, list[int]] = {}
    for ordinal, keys in sorted(assignment.items()):
        for key in sorted(keys):
            if key in versions:
                holders.setdefault(key, []).append(ordinal)
    for key, ordinals in holders.items():
        version = versions[key]
        target = version.digest
        stale: list[int] = []
        for ordinal in ordinals:
            before = previous.get(ordinal, {}).get(key)
            if before is None or before == target:
                out[ordinal][key] = target
            else:
                out[ordinal][key] = before
                stale.append(ordinal)
        if not stale:
            continue
        switching = [
            o
            for o in ordinals
            if o not in stale and not _holds(pods.get(o), version.served_name, target)
        ]
        if switching:
            continue  # one pod at a time: wait until the switching pod serves the new version
        candidate = stale[0]
        others_serving = [
            o for o in ordinals if o != candidate and _holds(pods.get(o), version.served_name)
        ]
        if others_serving or len(ordinals) == 1:
            out[candidate][key] = target
    return out


def serving_pods(
    desired: Digests,
    versions: Mapping[str, AdapterVersion],
    pods: Mapping[int, PodObservation],
) -> dict[str, list[PodObservation]]:
    """adapter key -> pods that may receive its traffic now, for the adapters some pod of
    `desired` is asked to hold (an adapter no pod is asked for has no routing here: its slice
    goes away; `versions` holds every adapter of the base model, thousands)."""
    out: dict[str, list[PodObservation]] = {
        key: [] for wanted in desired.values() for key in wanted if key in versions
    }
    for ordinal, wanted in sorted(desired.items()):
        pod = pods.get(ordinal)
        if pod is None or not pod.ip or not pod.engine_up:
            continue
        for key, digest in wanted.items():
            version = versions.get(key)
            if version is not None and _holds(pod, version.served_name, digest):
                out[key].append(pod)
    return out


def endpoints_by_adapter(
    desired: Digests,
    versions: Mapping[str, AdapterVersion],
    pods: Mapping[int, PodObservation],
) -> dict[str, list[Endpoint]]:
    """adapter key -> EndpointSlice entries (pods from `serving_pods`)."""
    return {
        key: [Endpoint(ip=str(p.ip), pod=p.name, namespace=p.namespace, node=p.node) for p in ps]
        for key, ps in serving_pods(desired, versions, pods).items()
    }

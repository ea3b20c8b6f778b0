"""LoraAdapter handlers: events onto the adapter work queue, the queue's pass, and deletion.

kopf events only translate: an adapter event records what placement reads of the adapter (and
wakes its base model's pool loops when that changed) and queues the adapter's pass; the pass
(`adapter_work`) gathers an `AdapterWorld` from the indexes and stores and runs
`reconcilers.adapter.reconcile_adapter`, which writes through the ports. Deletion holds kopf's
finalizer until every agent confirmed the unload.
"""

from __future__ import annotations

import datetime
import logging
import random
import time
from typing import Any, cast

import kopf

from lorapack import labels
from lorapack.api import conditions as c
from lorapack.api.basemodelpool import BaseModelPool
from lorapack.api.loraadapter import LoraAdapter, LoraAdapterStatus
from lorapack.errors import LorapackError
from lorapack.handlers import metrics
from lorapack.handlers.adapters_io import KubeWriter
from lorapack.handlers.indexes import InvalidObject
from lorapack.handlers.runtime import Runtime
from lorapack.keys import object_key
from lorapack.manifests.routing import endpoint_url
from lorapack.planning.baseconfig import BaseConfig, base_config_of
from lorapack.reconcilers.adapter import AdapterOutcome, AdapterWorld, reconcile_adapter
from lorapack.reconcilers.validation import ValidationResult
from lorapack.status.conditions import Verdict, kstatus_conditions, now_rfc3339

__all__ = ["adapter_changed", "adapter_deleted", "adapter_work"]

log = logging.getLogger(__name__)


def _values(index: Any, key: str) -> list[Any]:
    return list(index[key]) if index is not None and key in index else []


def _one(index: Any, key: str) -> Any:
    values = _values(index, key)
    return values[0] if values else None


def fingerprint(adapter: LoraAdapter) -> tuple[Any, ...]:
    """What placement reads of an adapter: a change here wakes its pool loops."""
    artifact = adapter.status.artifact if adapter.status else None
    spec = adapter.spec  # its changes bump the generation
    return (
        adapter.metadata.uid,
        adapter.metadata.generation,
        adapter.metadata.deletion_timestamp is not None,
        artifact.digest if artifact else None,
        adapter.status.served_name if adapter.status else None,
        spec.served_name,
    )


@kopf.on.event(labels.GROUP, labels.VERSION, labels.ADAPTER_PLURAL)
async def adapter_changed(
    body: kopf.Body, namespace: str | None, name: str, memo: kopf.Memo, **kwargs: Any
) -> None:
    """Queue the adapter's pass; wake its pools if what they read changed."""
    rt: Runtime | None = getattr(memo, "runtime", None)
    if rt is None:
        return
    rt.capture(kwargs)
    key = object_key(namespace or "", name)
    base = (body.get("spec") or {}).get("baseModel")
    if isinstance(base, str):
        rt.group_views.touch(base)  # the pool loops' shared view reads every adapter
    if kwargs.get("type") == "DELETED":
        rt.fingerprints.pop(key, None)
        spec = body.get("spec") or {}
        if isinstance(spec.get("baseModel"), str):
            _recheck_rivals(rt, key, spec["baseModel"], {str(spec.get("servedName") or name)})
        return
    adapter = _one(rt.indexes.adapters, key)
    generation = int((body.get("metadata") or {}).get("generation") or 0)
    last = rt.validations.get(key)
    rt.validations.seen(key, new_generation=last is not None and last.generation != generation)
    if isinstance(adapter, LoraAdapter):
        mark = fingerprint(adapter)
        before = rt.fingerprints.get(key)
        if before != mark:
            rt.fingerprints[key] = mark
            rt.wake_pools(rt.pools_of_base(adapter.spec.base_model))
            rt.wake_adapters([key])
            names = {adapter.served_name} | ({str(before[-1] or name)} if before else set())
            _recheck_rivals(rt, key, adapter.spec.base_model, names)
        elif last is None or last.generation != generation:
            rt.wake_adapters([key])
    else:
        rt.wake_adapters([key])


def _recheck_rivals(rt: Runtime, key: str, base: str, names: set[str]) -> None:
    """An adapter took, changed or left a served name: the adapters refused that name are
    checked again now (one of them may own it now), not at their next revalidation."""
    rivals = []
    for served in names:
        for other in rt.claimants(base, served):
            last = rt.validations.get(other)
            if (
                other != key
                and last is not None
                and any(p.reason == c.SERVED_NAME_CONFLICT for p in last.problems)
            ):
                rt.validations.forget(other)
                rivals.append(other)
    rt.wake_adapters(rivals)


def _gather(rt: Runtime, adapter: LoraAdapter) -> AdapterWorld:
    key = object_key(adapter.metadata.namespace, adapter.metadata.name)
    pools = [
        p for p in _values(rt.indexes.pools, adapter.spec.base_model)
        if p.metadata.deletion_timestamp is None
    ]  # fmt: skip
    if not pools:  # refusals name the base models that are served
        pools = [p for bucket in rt.indexes.pools for p in rt.indexes.pools[bucket]]
    # Only the adapters claiming the same served name matter for its ownership.
    others = [
        a
        for k in rt.claimants(adapter.spec.base_model, adapter.served_name)
        if isinstance(a := _one(rt.indexes.adapters, k), LoraAdapter)
    ]
    placement = rt.placements.get(key)
    pods_by_pool = {
        f"{p.metadata.namespace}/{p.metadata.name}": _values(
            rt.indexes.pods, f"{p.metadata.namespace}/{p.metadata.name}"
        )
        for p in pools
    }
    headless = rt.config.adapter_service_type == "Headless"
    last = rt.validations.get(key)
    base_configs = _base_configs(rt, pools)
    # Accepted before a pool's base config.json was read: check the shapes now.
    unchecked = (
        last is not None
        and last.artifact is not None
        and bool(set(base_configs) & set(last.pools) - set(last.shapes_checked))
    )
    return AdapterWorld(
        adapter=adapter,
        pools=pools,
        others=others,
        last=last,
        check_due=unchecked
        or rt.validations.due(
            key, adapter.metadata.generation, rt.pools_version, rt.config.revalidate_seconds
        ),
        placement=placement,
        pods_by_pool=pods_by_pool,
        endpoint=endpoint_url(adapter, rt.config.service_port, headless=headless),
        now=now_rfc3339(),
        base_configs=base_configs,
        last_written=rt.adapter_statuses.get(key),
    )


def _base_configs(rt: Runtime, pools: list[BaseModelPool]) -> dict[str, BaseConfig]:
    """The parsed base config.json of each pool whose loop has read one."""
    found: dict[str, BaseConfig] = {}
    for pool in pools:
        key = object_key(pool.metadata.namespace, pool.metadata.name)
        state = rt.pools.get(key)
        config = base_config_of(state.base_config) if state and state.base_config else None
        if config is not None:
            found[key] = config
    return found


async def adapter_work(rt: Runtime, key: str) -> float | None:
    """One adapter pass (the work queue's handler); returns when to run it again."""
    await rt.indexes.ready.wait()
    found = _one(rt.indexes.adapters, key)
    if found is None:
        rt.validations.forget(key)
        rt.placements.forget(key)
        rt.adapter_statuses.forget(key)
        if rt.queue is not None:
            rt.queue.forget(key)
        return None
    started = time.monotonic()
    try:
        if isinstance(found, InvalidObject):
            await _write_invalid(rt, found)
            delay: float | None = rt.config.adapter_resync_seconds
        else:
            delay = await _pass(rt, key, found)
        metrics.RECONCILES.labels("LoraAdapter", "ok").inc()
    except LorapackError as err:
        metrics.RECONCILES.labels("LoraAdapter", "error").inc()
        log.warning("Adapter %s: pass will be retried: %s: %s", key, err.reason, err.message)
        delay = 5.0
    metrics.RECONCILE_SECONDS.labels("LoraAdapter").observe(time.monotonic() - started)
    return delay


def _seed_from_status(rt: Runtime, key: str, adapter: LoraAdapter) -> None:
    """After a restart, trust the persisted validation of the current generation instead of
    reading every adapter's files again at once (10,000 adapters were 30,000 S3 requests before
    the first status): it is re-checked at a random point of the revalidation period."""
    if rt.validations.get(key) is not None or adapter.status is None:
        return
    artifact = adapter.status.artifact
    stalled = any(x.type == c.STALLED and x.status == "True" for x in adapter.status.conditions)
    if (
        stalled  # a refusal is found again by checking
        or artifact is None
        or not artifact.digest
        or artifact.validated_generation != adapter.metadata.generation
    ):
        return
    age = random.uniform(0, rt.config.revalidate_seconds)
    result = ValidationResult(adapter.metadata.generation, artifact, ())
    rt.validations.record(key, result, rt.pools_version, age=age)


async def _pass(rt: Runtime, key: str, adapter: LoraAdapter) -> float:
    _seed_from_status(rt, key, adapter)
    world = _gather(rt, adapter)
    outcome: AdapterOutcome = await reconcile_adapter(world, rt.s3, KubeWriter(rt.kube))
    if outcome.written:
        rt.adapter_statuses.record(key, outcome.status.wire())
    if outcome.checked:
        old = world.last
        rt.validations.record(key, outcome.validation, rt.pools_version)
        rt.group_views.touch(adapter.spec.base_model)  # placement reads fresh validations
        _announce(adapter, outcome, old)
    if outcome.new_artifact or (outcome.checked and world.last is None):
        # Placement reads fresh validations from memory (pools.gather_world): wake it now.
        rt.wake_pools(rt.pools_of_base(adapter.spec.base_model))
    if outcome.became_ready:
        first = rt.validations.first_seen.get(key)
        if first is not None:
            metrics.ADAPTER_READY_SECONDS.observe(time.monotonic() - first)
    if outcome.waiting is not None:
        return min(outcome.waiting.retry_after * 2, 60.0)
    # The periodic pass is only a safety net (events drive everything): spread it out.
    period = rt.config.adapter_resync_seconds
    return period * (0.75 + random.random() / 2)


def _announce(adapter: LoraAdapter, outcome: AdapterOutcome, old: Any) -> None:
    """Events: a new refusal, or a newly validated version."""
    result = outcome.validation
    metrics.VALIDATIONS.labels(result.problems[0].reason if result.problems else "valid").inc()
    body: dict[str, Any] = {
        "apiVersion": labels.API_VERSION,
        "kind": labels.ADAPTER_KIND,
        "metadata": {
            "name": adapter.metadata.name,
            "namespace": adapter.metadata.namespace,
            "uid": adapter.metadata.uid,
        },
    }
    if result.problems and (old is None or old.problems != result.problems):
        first = result.problems[0]
        kopf.warn(cast(kopf.Body, body), reason=first.reason, message=first.message)
    if outcome.new_artifact and result.artifact is not None:
        kopf.info(
            cast(kopf.Body, body),
            reason="Validated",
            message=f"adapter files validated ({result.artifact.digest})",
        )


async def _write_invalid(rt: Runtime, obj: InvalidObject) -> None:
    status = LoraAdapterStatus.model_validate(obj.status)
    new = status.model_copy(
        update={
            "observed_generation": obj.generation,
            "conditions": kstatus_conditions(
                status.conditions,
                Verdict("stalled", c.INVALID_SPEC, obj.message),
                obj.generation,
                now_rfc3339(),
            ),
        }
    )
    if new.wire() != status.wire():
        await KubeWriter(rt.kube).patch_status(
            labels.API_VERSION, labels.ADAPTER_KIND, obj.namespace, obj.name, new.wire()
        )


@kopf.on.delete(labels.GROUP, labels.VERSION, labels.ADAPTER_PLURAL)
async def adapter_deleted(
    body: kopf.Body,
    namespace: str | None,
    name: str,
    memo: kopf.Memo,
    runtime: datetime.timedelta,
    **kwargs: Any,
) -> None:
    """Routing first, then unload everywhere: wait until no pod reports the adapter.

    The pool loops drop a deleting adapter from EndpointSlices and desired states at once; this
    handler holds the finalizer until every agent confirmed the unload, or gives up after
    LORAPACK_DELETE_TIMEOUT_SECONDS with a Warning naming the pods that never answered.
    """
    rt: Runtime = memo.runtime
    rt.capture(kwargs)
    key = object_key(namespace or "", name)
    spec = body.get("spec") or {}
    base = spec.get("baseModel")
    served = spec.get("servedName") or name
    pools = rt.pools_of_base(base) if isinstance(base, str) else []
    rt.wake_pools(pools)
    holders = sorted(
        pod.name
        for pool in pools
        for pod in _values(rt.indexes.pods, pool)
        if pod.observed
        and any(a.served_name == served for a in pod.observed.adapters)
        and not pod.deleting
    )
    if not holders:
        rt.placements.forget(key)
        rt.validations.forget(key)
        return
    if runtime.total_seconds() >= rt.config.delete_timeout_seconds:
        kopf.warn(
            body,
            reason=c.UNLOAD_TIMEOUT,
            message=f"pods {', '.join(holders)} did not confirm unloading {served} within "
            f"{rt.config.delete_timeout_seconds:.0f} s; deleting anyway (their agents unload it "
            "when they see their desired state)",
        )
        rt.placements.forget(key)
        return
    raise kopf.TemporaryError(f"waiting for {', '.join(holders)} to unload {served}", delay=1.0)

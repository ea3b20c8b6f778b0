"""LoraAdapter handlers: the per-adapter loop (validation, Service, status) and deletion.

The loop validates the adapter whenever its generation, the pools, or the revalidation period
changes (`reconcilers.validation.validate_adapter`, which reads S3 but writes nothing), keeps the
adapter's Service, and writes the status derived by `status.adapter.compute_adapter_status`
from the validation, the pool loop's placement and the agents' reports. It is the only writer of
the adapter's status. Placement itself belongs to the pool loops, which it wakes when a new
version is validated.
"""

from __future__ import annotations

import datetime
import time
from typing import Any

import kopf
from pydantic import ValidationError

from lorapack import labels
from lorapack.api import conditions as c
from lorapack.api.loraadapter import ArtifactStatus, LoraAdapter, LoraAdapterStatus
from lorapack.api.meta import format_validation_error
from lorapack.clients import kube as k
from lorapack.errors import ApiConflict, LorapackError, RetryableError
from lorapack.handlers import metrics
from lorapack.handlers.adapters_io import KubeWriter
from lorapack.handlers.pools import Index, _values
from lorapack.handlers.runtime import Runtime
from lorapack.issues import Issue
from lorapack.manifests.routing import adapter_service, endpoint_url
from lorapack.planning.admission import candidate_pools, pool_key
from lorapack.reconcilers.validation import ValidationResult, validate_adapter
from lorapack.status.adapter import AdapterFacts, compute_adapter_status
from lorapack.status.conditions import Verdict, kstatus_conditions, now_rfc3339


def _key(namespace: str, name: str) -> str:
    return f"{namespace}/{name}"


async def _ensure_service(rt: Runtime, adapter: LoraAdapter) -> Issue | None:
    """Create the adapter's Service, unless a Service of that name belongs to someone else.

    Create first and look only on a conflict: the common case (a new adapter) then costs one
    request instead of a GET and an apply, which counts when 100 adapters arrive at once.
    """
    key = _key(adapter.metadata.namespace, adapter.metadata.name)
    if rt.services.get(key) == adapter.metadata.uid:
        return None
    service = adapter_service(adapter, rt.config.service_port)
    try:
        await rt.kube.create(service, field_manager=labels.FIELD_MANAGER)
    except ApiConflict:
        existing = await rt.kube.get(k.SERVICE, adapter.metadata.namespace, adapter.metadata.name)
        if existing is None:
            raise  # deleted meanwhile: the retry creates it
        owners = existing.get("metadata", {}).get("ownerReferences") or []
        if not any(o.get("uid") == adapter.metadata.uid for o in owners):
            return Issue(
                c.SERVICE_NAME_CONFLICT,
                f"Service {key} already exists and is not lorapack's: rename the LoraAdapter "
                "(its Service takes its name) or remove that Service",
            )
        await KubeWriter(rt.kube).apply(service)  # ours, perhaps from an older operator
    rt.services[key] = adapter.metadata.uid
    return None


def _needs_validation(rt: Runtime, key: str, adapter: LoraAdapter, pools_seen: int) -> bool:
    last = rt.validations.get(key)
    if last is None or last.generation != adapter.metadata.generation:
        return True
    if rt.validated_at.get(f"{key}#pools") != pools_seen:
        return True
    return time.monotonic() - rt.validated_at.get(key, 0.0) >= rt.config.revalidate_seconds


async def adapter_pass(
    body: kopf.Body,
    rt: Runtime,
    lorapack_pools: Index,
    lorapack_adapters: Index,
    lorapack_pods: Index,
) -> None:
    """Validate if needed, keep the Service, write the status if it changed."""
    meta = body["metadata"]
    key = _key(meta["namespace"], meta["name"])
    writer = KubeWriter(rt.kube)
    try:
        adapter = LoraAdapter.model_validate(dict(body))
    except ValidationError as err:
        await _write_invalid(rt, body, format_validation_error(err))
        return
    rt.served_names[key] = adapter.served_name
    base = adapter.spec.base_model
    pools = list(_values(lorapack_pools, base))
    # Admission refusals need the pools of every base model (to say which exist).
    all_pools = [p for bucket in lorapack_pools for p in lorapack_pools[bucket]]
    others = list(_values(lorapack_adapters, base))
    previous_artifact = adapter.status.artifact if adapter.status else None
    pools_seen = rt.pools_version
    waiting: RetryableError | None = None
    if _needs_validation(rt, key, adapter, pools_seen):
        try:
            result = await validate_adapter(adapter, pools or all_pools, others, rt.s3)
        except RetryableError as err:
            # Say so in the status (and retry after it is written) instead of leaving none.
            waiting = err
            result = rt.validations.get(key) or ValidationResult(-1, None, ())
            rt.validations[key] = result
        else:
            await _record_validation(rt, body, key, result, previous_artifact, pools_seen)
            if result.artifact is not None and (
                previous_artifact is None or previous_artifact.digest != result.artifact.digest
            ):
                # Placement reads this validation from memory (pools.gather_world): wake it
                # now, in parallel with the status write below (the only wake for a new
                # artifact; after a restart the persisted status already holds it).
                rt.wake_pools([pool_key(p) for p in pools])
    result = rt.validations[key]
    artifact = result.artifact or previous_artifact
    problems = list(result.problems)
    if artifact is not None and not any(p.reason == c.SERVICE_NAME_CONFLICT for p in problems):
        conflict = await _ensure_service(rt, adapter)
        if conflict is not None:
            problems.append(conflict)
    placement = rt.placements.get(key)
    chosen = placement.pool if placement else None
    candidates, _ = candidate_pools(adapter, pools)
    pool_for_pods = chosen or (pool_key(candidates[0]) if candidates else None)
    pods = {p.name: p for p in _values(lorapack_pods, pool_for_pods)} if pool_for_pods else {}
    facts = AdapterFacts(
        artifact=artifact,
        validated=result.generation == adapter.metadata.generation,
        problems=problems,
        pool=chosen,
        unplaceable=placement.unplaceable if placement else None,
        desired=dict(placement.desired) if placement else {},
        pods=pods,
        serving=list(placement.serving) if placement else [],
        endpoint=endpoint_url(adapter, rt.config.service_port),
        waiting=Issue(waiting.reason, f"{waiting.message} (retrying)") if waiting else None,
    )
    status = compute_adapter_status(adapter, facts, now_rfc3339())
    current = LoraAdapterStatus.model_validate(body.get("status") or {})
    if status.wire() != current.wire():
        await writer.patch_status(
            labels.API_VERSION,
            labels.ADAPTER_KIND,
            adapter.metadata.namespace,
            adapter.metadata.name,
            status.wire(),
        )
        was_ready = any(x.type == c.READY and x.status == "True" for x in current.conditions)
        now_ready = any(x.type == c.READY and x.status == "True" for x in status.conditions)
        if now_ready and not was_ready:
            started = rt.validated_at.get(f"{key}#first-seen")
            if started is not None:
                metrics.ADAPTER_READY_SECONDS.observe(time.monotonic() - started)
    if waiting is not None:
        raise waiting  # the loop backs off, then validates again


async def _record_validation(
    rt: Runtime,
    body: kopf.Body,
    key: str,
    result: ValidationResult,
    previous: ArtifactStatus | None,
    pools_seen: int,
) -> None:
    """Keep a validation result; post an Event when the verdict changed."""
    old = rt.validations.get(key)
    rt.validations[key] = result
    rt.validated_at[key] = time.monotonic()
    rt.validated_at[f"{key}#pools"] = pools_seen
    metrics.VALIDATIONS.labels(result.problems[0].reason if result.problems else "valid").inc()
    if result.problems and (old is None or old.problems != result.problems):
        first = result.problems[0]
        kopf.warn(body, reason=first.reason, message=first.message)
    new_digest = result.artifact.digest if result.artifact else None
    if new_digest and (previous is None or previous.digest != new_digest):
        kopf.info(body, reason="Validated", message=f"adapter files validated ({new_digest})")


async def _write_invalid(rt: Runtime, body: kopf.Body, message: str) -> None:
    status = LoraAdapterStatus.model_validate(body.get("status") or {})
    generation = int(body["metadata"].get("generation") or 0)
    new = status.model_copy(
        update={
            "observed_generation": generation,
            "conditions": kstatus_conditions(
                status.conditions,
                Verdict("stalled", c.INVALID_SPEC, message),
                generation,
                now_rfc3339(),
            ),
        }
    )
    if new.wire() != status.wire():
        await KubeWriter(rt.kube).patch_status(
            labels.API_VERSION,
            labels.ADAPTER_KIND,
            body["metadata"]["namespace"],
            body["metadata"]["name"],
            new.wire(),
        )


@kopf.daemon(
    labels.GROUP,
    labels.VERSION,
    labels.ADAPTER_PLURAL,
    cancellation_backoff=1.0,
    cancellation_timeout=10.0,
)
async def adapter_loop(
    body: kopf.Body,
    namespace: str | None,
    name: str,
    memo: kopf.Memo,
    stopped: kopf.DaemonStopped,
    logger: kopf.Logger,
    **indexes: Any,
) -> None:
    """Validation, Service and status of one adapter; woken by the pool loop and pod reports."""
    rt: Runtime = memo.runtime
    key = _key(namespace or "", name)
    rt.validated_at.setdefault(f"{key}#first-seen", time.monotonic())
    waker = rt.adapter_waker(key)
    backoff = 1.0
    while not stopped:
        waker.clear()
        started = time.monotonic()
        delay = rt.config.resync_seconds
        try:
            await adapter_pass(
                body,
                rt,
                indexes["lorapack_pools"],
                indexes["lorapack_adapters"],
                indexes["lorapack_pods"],
            )
            metrics.RECONCILES.labels("LoraAdapter", "ok").inc()
            backoff = 1.0
        except RetryableError as err:
            metrics.RECONCILES.labels("LoraAdapter", "retry").inc()
            logger.warning("Adapter pass will be retried: %s", err.message)
            delay, backoff = min(backoff, err.retry_after), min(backoff * 2, 60.0)
        except LorapackError as err:
            metrics.RECONCILES.labels("LoraAdapter", "error").inc()
            logger.error("Adapter pass failed: %s: %s", err.reason, err.message)
        except Exception:
            metrics.RECONCILES.labels("LoraAdapter", "error").inc()
            logger.exception("Adapter pass crashed")
            delay, backoff = backoff, min(backoff * 2, 60.0)
        metrics.RECONCILE_SECONDS.labels("LoraAdapter").observe(time.monotonic() - started)
        await waker.wait(delay)


@kopf.on.update(labels.GROUP, labels.VERSION, labels.ADAPTER_PLURAL, field="spec")
def adapter_spec_changed(namespace: str | None, name: str, memo: kopf.Memo, **_: Any) -> None:
    """A new generation: validate it now."""
    rt: Runtime = memo.runtime
    key = _key(namespace or "", name)
    rt.validated_at[f"{key}#first-seen"] = time.monotonic()
    rt.adapter_waker(key).set()


@kopf.on.delete(labels.GROUP, labels.VERSION, labels.ADAPTER_PLURAL)
async def adapter_deleted(
    body: kopf.Body,
    namespace: str | None,
    name: str,
    memo: kopf.Memo,
    runtime: datetime.timedelta,
    **indexes: Any,
) -> None:
    """Routing first, then unload everywhere: wait until no pod reports the adapter.

    The pool loops drop a deleting adapter from EndpointSlices and desired states at once; this
    handler holds the finalizer until every agent confirmed the unload, or gives up after
    LORAPACK_DELETE_TIMEOUT_SECONDS with a Warning naming the pods that never answered.
    """
    rt: Runtime = memo.runtime
    key = _key(namespace or "", name)
    try:
        adapter = LoraAdapter.model_validate(dict(body))
    except ValidationError:
        return  # never validated, never placed: nothing to unload
    lorapack_pods = indexes["lorapack_pods"]
    pools = list(_values(indexes["lorapack_pools"], adapter.spec.base_model))
    rt.wake_pools([pool_key(p) for p in pools])
    served = adapter.served_name
    holders = sorted(
        pod.name
        for p in pools
        for pod in _values(lorapack_pods, pool_key(p))
        if pod.observed
        and any(a.served_name == served for a in pod.observed.adapters)
        and not pod.deleting
    )
    if not holders:
        rt.placements.pop(key, None)
        rt.validations.pop(key, None)
        rt.services.pop(key, None)
        rt.adapter_wakers.pop(key, None)
        return
    elapsed = runtime.total_seconds()
    if elapsed >= rt.config.delete_timeout_seconds:
        kopf.warn(
            body,
            reason=c.UNLOAD_TIMEOUT,
            message=f"pods {', '.join(holders)} did not confirm unloading {served} within "
            f"{rt.config.delete_timeout_seconds:.0f} s; deleting anyway (their agents unload it "
            "when they see their desired state)",
        )
        rt.placements.pop(key, None)
        return
    raise kopf.TemporaryError(f"waiting for {', '.join(holders)} to unload {served}", delay=1.0)

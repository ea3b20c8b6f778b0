"""Can a pool's engine start on its GPUs at all? The sizing model applied to a BaseModelPool spec.

vLLM refuses to start when the weights and the LoRA slot buffers do not fit what it may use of
the pod's GPUs (`gpu.count` x the GPU's memory x `engine.gpuMemoryUtilization`), when nothing is
left for the KV cache, or when the KV cache cannot hold one `maxModelLen` sequence; it also
refuses flags the model does not allow (a tensor-parallel size that does not divide the heads).
On real GPUs each of these is a pod that crash-loops minutes after the weights downloaded.
`pool_fit_issue(spec)` says so before any pod starts, with the same arithmetic and messages as
`lorapack size` (docs/sizing.md).

Pure; meant for the pool reconciler's status (a Stalled condition) and `lorapack plan`. A model
or GPU type the catalog does not know gives None: lorapack cannot size it, and says so
elsewhere (spec.baseModel.architecture, `lorapack size --config`).
"""

from __future__ import annotations

from lorapack.api import conditions
from lorapack.api.basemodelpool import BaseModelPoolSpec
from lorapack.errors import InvalidSpec
from lorapack.issues import Issue
from lorapack.sizing.memory import estimate
from lorapack.sizing.poolspec import read_pool_spec

__all__ = ["UNSIZEABLE_REASONS", "pool_fit_issue"]

UNSIZEABLE_REASONS = frozenset({"UnknownModel", "UnknownGpu", "InvalidModelConfig"})
"""Sizing errors that mean "cannot size this pool", not "this pool cannot start"."""

# Report flags that repeat a vLLM start-up refusal (sizing.flags): the engine would not start.
_START_FAILURES = ("NoKvCacheMemory", "MaxModelLenTooLong")


def pool_fit_issue(spec: BaseModelPoolSpec) -> Issue | None:
    """Why the pool's vLLM engine cannot start on its GPUs, or None if it can (or if the model
    or GPU type is not in the catalog, so it cannot be sized)."""
    try:
        model, gpu, settings = read_pool_spec(spec)
        report = estimate(model, gpu, settings)
    except InvalidSpec as err:
        if err.reason in UNSIZEABLE_REASONS:
            return None
        if err.reason == conditions.MODEL_DOES_NOT_FIT:
            return Issue(conditions.MODEL_DOES_NOT_FIT, f"spec.gpu: {err.message}")
        # A flag vLLM refuses for this model (tensor-parallel size, max_model_len, ...).
        return Issue(conditions.INVALID_SPEC, f"vLLM would refuse to start: {err.message}")
    for flag in report.flags:
        if flag.severity == "error" and flag.code in _START_FAILURES:
            return Issue(
                conditions.MODEL_DOES_NOT_FIT,
                f"{model.name} on {settings.tensor_parallel} x {gpu.key}: {flag.message}",
            )
    return None

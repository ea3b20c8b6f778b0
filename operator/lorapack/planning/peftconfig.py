"""The adapter_config.json rules vLLM enforces when it loads a LoRA adapter.

Used by lorapack.planning.artifact (inspect_artifact): the rank (r and rank_pattern), the
target modules, and the PEFT settings vLLM 0.33.0 refuses (PEFTHelper.validate_legal;
reference/vllm-lora-contract.md §5.2, §5.3). Each problem is an UnsupportedAdapter Issue whose
message names the field and the fix. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lorapack.api import conditions
from lorapack.issues import Issue

__all__ = ["config_rank", "config_refusals", "config_target_modules", "unsupported"]

# PEFT initialisations that rewrite the base weights; vLLM refuses them (§5.2).
_REFUSED_INIT = ("pissa", "olora", "corda", "loftq")


def config_target_modules(config: Mapping[str, Any], problems: list[Issue]) -> tuple[str, ...]:
    """target_modules as a sorted tuple (one string: a regular expression, kept as is); ()
    when missing (reported by the caller) or malformed (reported here)."""
    raw = config.get("target_modules")
    if raw is None:
        return ()  # reported as missing
    if isinstance(raw, str):
        return (raw,)
    if isinstance(raw, list) and all(isinstance(t, str) for t in raw) and len(raw) <= 1024:
        return tuple(sorted(raw))
    problems.append(
        unsupported(
            f"adapter_config.json target_modules is {_short(raw)}: it must be a list of module "
            "names (or one regular expression string); re-save the adapter with PEFT's "
            "save_pretrained"
        )
    )
    return ()


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def unsupported(message: str) -> Issue:
    """An UnsupportedAdapter problem."""
    return Issue(conditions.UNSUPPORTED_ADAPTER, message)


def _positive_int(value: object) -> int | None:
    # vLLM accepts only a true int (not 16.0, not True) for r and rank_pattern values.
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        return None
    return value


def config_rank(config: Mapping[str, Any], problems: list[Issue]) -> int | None:
    """max(r, rank_pattern values), or None (with a problem) when they are not ranks."""
    raw = config.get("r")
    rank = _positive_int(raw)
    if rank is None:
        problems.append(
            unsupported(
                f"adapter_config.json r is {_short(raw)}: a LoRA rank must be a positive integer; "
                "re-save the adapter with PEFT's save_pretrained"
            )
        )
        return None
    pattern = config.get("rank_pattern") or {}
    if not isinstance(pattern, Mapping):
        problems.append(
            unsupported(
                "adapter_config.json rank_pattern must map module names to ranks: re-save the "
                "adapter with PEFT's save_pretrained"
            )
        )
        return None
    for module, value in sorted(pattern.items()):
        other = _positive_int(value)
        if other is None:
            problems.append(
                unsupported(
                    f"adapter_config.json rank_pattern[{_short(module)}] is {_short(value)}: "
                    "ranks must be positive integers"
                )
            )
            return None
        rank = max(rank, other)
    return rank


def config_refusals(config: Mapping[str, Any]) -> list[Issue]:
    """The adapter_config.json settings vLLM cannot serve (§5.2, §5.3)."""
    problems: list[Issue] = []
    peft_type = config.get("peft_type")
    if peft_type is not None and str(peft_type).upper() != "LORA":
        problems.append(
            unsupported(
                f"peft_type is {_short(peft_type)}: vLLM serves only LoRA adapters; "
                "train the adapter with peft.LoraConfig (peft_type LORA)"
            )
        )
    if config.get("use_dora"):
        problems.append(
            unsupported(
                "use_dora is true: vLLM cannot serve DoRA adapters; retrain with use_dora=False"
            )
        )
    bias = config.get("bias", "none")
    if bias not in (None, "none"):
        problems.append(
            unsupported(
                f"bias is {_short(bias)}: vLLM serves only adapters without bias weights; "
                "retrain with bias='none'"
            )
        )
    if config.get("lora_bias"):
        problems.append(
            unsupported(
                "lora_bias is true: vLLM does not support LoRA bias; retrain with lora_bias=False"
            )
        )
    to_save = config.get("modules_to_save")
    if to_save:
        problems.append(
            unsupported(
                f"modules_to_save is {_short(to_save)}: vLLM cannot serve fully trained "
                "extra modules of a causal LM; retrain with modules_to_save=None"
            )
        )
    init = config.get("init_lora_weights")
    if isinstance(init, str) and init.lower().startswith(_REFUSED_INIT):
        problems.append(
            unsupported(
                f"init_lora_weights is {_short(init)}: vLLM cannot serve PiSSA, OLoRA, "
                "CorDA or LoftQ adapters (they change the base weights); retrain with "
                "init_lora_weights=True"
            )
        )
    refused = (
        ("alora_invocation_tokens", "Activated LoRA (aLoRA)", "alora_invocation_tokens=None"),
        ("layer_replication", "layer_replication", "layer_replication=None"),
        ("use_bdlora", "block-diagonal LoRA (BD-LoRA)", "use_bdlora=False"),
        ("use_qalora", "QALoRA", "use_qalora=False"),
    )
    for field, what, fix in refused:
        if config.get(field):
            problems.append(
                unsupported(f"{field} is set: vLLM does not support {what}; retrain with {fix}")
            )
    return problems

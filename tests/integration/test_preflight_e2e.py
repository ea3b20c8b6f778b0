"""Pre-flight beyond the config file, through the real operator (issue 11, finding 0b).

Broken adapters next to healthy ones on one pool: a corrupt safetensors header, tensors of a
wider model under the pool's model name, a target module the architecture lacks, a declared r
that disagrees with the shapes (vLLM would serve that one, scaled wrongly), and inputs that
used to crash the adapter pass (a deep config, target_modules 5, a folder of 300 objects). Each
is Stalled with its reason before any pod hears of it; the healthy ones become Ready and answer.
The hostile-input corpus's sample for the real operator (preflight cases marked `e2e: true`) is
applied on the same pool.
"""

from __future__ import annotations

import base64
import functools
import json
from pathlib import Path
from typing import Any

import pytest

from lorapack_testworld.artifacts import ArtifactIndex
from lorapack_testworld.safetensors import raw_safetensors
from tests.hostile import adapter_files, adapter_spec, load_cases
from tests.integration.conftest import BASE_MODEL, E2E

pytestmark = [pytest.mark.integration, pytest.mark.timeout(420)]


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


def _config(folder: Path, **changes: Any) -> bytes:
    config = json.loads((folder / "adapter_config.json").read_bytes())
    config.update(changes)
    return json.dumps(config).encode()


def broken_adapters(artifacts: ArtifactIndex) -> dict[str, tuple[dict[str, bytes], str, str]]:
    """folder name -> (files, the Stalled reason, words of the message)."""
    r8, r16 = artifacts.adapters["r8"].path, artifacts.adapters["r16"].path
    wide = artifacts.adapters["wrong-base-shapes"].path
    fancy = artifacts.adapters["unexpected-module"].path
    weights = (r8 / "adapter_model.safetensors").read_bytes()
    modules = ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"]
    return {
        "pf-corrupt": (
            _files(r8) | {"adapter_model.safetensors": raw_safetensors(b'{"x": [', weights[8:])},
            "CorruptWeights",
            "adapter_model.safetensors has a header that is not JSON",
        ),
        "pf-wide": (
            _files(wide)
            | {"adapter_config.json": _config(wide, base_model_name_or_path=BASE_MODEL)},
            "WeightsDoNotFitBaseModel",
            "of lorapack/tiny-llama has 128 input features",
        ),
        "pf-fancy": (
            _files(fancy)
            | {"adapter_config.json": _config(fancy, target_modules=[*modules, "fancy_proj"])},
            "WeightsDoNotFitBaseModel",
            "fancy_proj, which lorapack/tiny-llama",
        ),
        "pf-rank": (
            _files(r16) | {"adapter_config.json": _config(r16, r=8, lora_alpha=16)},
            "DeclaredRankMismatch",
            "declares r=8",
        ),
        "pf-deep": (
            _files(r8) | {"adapter_config.json": b'{"a":' * 5000 + b"1" + b"}" * 5000},
            "UnsupportedAdapter",
            "nests too deeply",
        ),
        "pf-targets5": (
            _files(r8) | {"adapter_config.json": _config(r8, target_modules=5)},
            "UnsupportedAdapter",
            "target_modules is 5",
        ),
        "pf-many": (
            _files(r8) | {f"checkpoint-{i:03}.json": b"{}" for i in range(300)},
            "TooManyFiles",
            "more than 256 objects",
        ),
    }


def stalled(e: E2E, name: str, reason: str) -> dict[str, Any]:
    """The adapter once it is Stalled with `reason`."""

    def check() -> dict[str, Any] | None:
        obj = e.try_get("lora", name)
        return obj if obj and e.condition(obj, "Stalled").get("reason") == reason else None

    found: dict[str, Any] = e.wait(f"{name} Stalled with {reason}", check, timeout=120)
    return found


def _desired_adapters(e: E2E) -> str:
    """Everything the pods' desired-state Secrets of the namespace say, decoded."""
    secrets = e.cluster.get_json(
        "secrets", "-n", e.namespace, "-l", "lorapack.io/role=desired-adapters"
    )
    return " ".join(
        base64.b64decode(v).decode(errors="replace")
        for s in secrets["items"]
        for v in (s.get("data") or {}).values()
    )


def test_broken_weights_are_refused_before_any_pod_and_healthy_adapters_serve(
    e2e: E2E, artifacts: ArtifactIndex
) -> None:
    e = e2e
    broken = broken_adapters(artifacts)
    for folder, (files, _, _) in broken.items():
        prefix = f"{e.namespace}/{folder}/"
        for name, data in files.items():
            e.s3.put_bytes(e.bucket, prefix + name, data)
    corpus = [c for c in load_cases("preflight") if c.raw.get("e2e")]
    sample: dict[str, tuple[dict[str, bytes], str, str]] = {}
    for case in corpus:
        files, _ = adapter_files(case)
        for name, data in files.items():
            e.s3.put_bytes(e.bucket, f"{e.namespace}/h-{case.id}/{name}", data)
        sample[f"h-{case.id}"] = (files, str(case.reason), case.words[-1])
    e.apply(e.pool("preflight", adapters={"maxPerReplica": 8, "allowedNamespaces": [e.namespace]}))
    healthy = {"good-a": "r8", "good-b": "r16"}
    for name, artifact in healthy.items():
        e.apply(e.adapter(name, artifact))
    for folder in broken:
        e.apply(e.adapter(folder, f"{e.namespace}/{folder}"))
    for case in corpus:
        e.apply(e.adapter(f"h-{case.id}", f"{e.namespace}/h-{case.id}", **adapter_spec(case)))
    broken |= sample

    for folder, (_, reason, words) in broken.items():
        obj = stalled(e, folder, reason)
        message = e.condition(obj, "Ready")["message"]
        assert words in message, message
        assert not (obj.get("status") or {}).get("placements")
    for name in healthy:
        e.wait(f"{name} Ready", functools.partial(e.ready, name), timeout=150)
        reply = e.chat(name)
        assert reply.status_code == 200, reply.text
        assert f"adapter={name}" in reply.json()["choices"][0]["message"]["content"]
    desired = _desired_adapters(e)
    assert "good-a" in desired  # the decoding sees adapter names...
    for folder in broken:  # ...and no pod was ever asked to fetch a broken one
        assert folder not in desired
    assert e.operator.process is not None and e.operator.process.poll() is None

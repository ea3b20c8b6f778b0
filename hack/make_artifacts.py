"""Build the test artifacts: a tiny random Llama and real PEFT adapters, good and broken.

Run with the vLLM venv's python (it has torch, transformers, peft and tokenizers; lorapack's own
.venv does not):

    $(hack/vllm-env.sh --path)/bin/python hack/make_artifacts.py [--out DIR] [--force]

Called by `make artifacts` and by lorapack_testworld.artifacts.artifacts_dir() when the cache is
empty. Without --out it writes to ${LORAPACK_CACHE:-~/.cache/lorapack}/artifacts/<hash>/ where
<hash> is the first 16 hex digits of this file's sha256, so editing the generator makes a new
folder and never mixes old and new files. Everything is built in a temporary sibling folder and
renamed into place at the end (atomic); an existing complete folder is left alone (idempotent).
Seeds are fixed, so two builds produce the same tensors.

Layout (all paths relative to the output folder; index.json lists every entry):

    model/                  tiny LlamaForCausalLM + byte-level BPE tokenizer, fp32 safetensors
    adapters/<name>/        PEFT LoRA adapters for that model
    adapters/churn-<i>/     eight more good adapters (ranks 8-64), distinct weights for churn tests
    other-model/            a second tiny Llama with other shapes (only for the wrong-base adapter)

The model follows vllm-lora-contract.md section 11.1: hidden 64, 4 heads, 2 KV heads, head_dim 32
set explicitly (the CPU attention has no kernel for head_dim 16, section 11.8), intermediate 128,
2 layers, a vocabulary of about 500 trained offline (no hub download). No lorapack imports: this
runs outside lorapack's venv.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

SERVED_NAME = "lorapack/tiny-llama"
OTHER_SERVED_NAME = "lorapack/tiny-llama-wide"
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
GOOD_RANKS = (8, 16, 64, 128)
CHURN_ADAPTERS = 8
CHURN_RANKS = (8, 16, 32, 64)
SEED = 20261125

# A few plain sentences are enough for a BPE that tokenizes the test prompts into several tokens.
CORPUS = [
    "The capital of France is Paris.",
    "Teams fine-tune one base model for many business scenarios.",
    "A shared pool of GPU pods serves every team's adapter.",
    "Hello, how can I help you today?",
    "The quick brown fox jumps over the lazy dog.",
    "Adapters are loaded at runtime and routed by name.",
    "Support bots answer questions about orders and refunds.",
    "Numbers: 0 1 2 3 4 5 6 7 8 9 10 100 1000.",
    "user: hi\nassistant: hello there!",
    "Summarize the following text in one sentence.",
]

# Minimal chat template so /v1/chat/completions works (transformers has no default template).
CHAT_TEMPLATE = (
    "{% for message in messages %}{{ message['role'] }}: {{ message['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)


def default_out() -> Path:
    """The folder lorapack_testworld.artifacts expects for this version of the generator."""
    cache = os.environ.get("LORAPACK_CACHE") or str(
        Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "lorapack"
    )
    digest = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16]
    return Path(cache) / "artifacts" / digest


def sha256_file(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def build_tokenizer(out: Path) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=512,
        special_tokens=["<unk>", "<s>", "</s>", "<pad>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS * 20, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(out)
    return fast


def build_model(
    out: Path, *, vocab: int, hidden: int, intermediate: int, name: str, seed: int
) -> Any:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=32,
        max_position_embeddings=512,
        initializer_range=0.1,
        tie_word_embeddings=False,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=3,
        torch_dtype="float32",
    )
    model = LlamaForCausalLM(config).to(torch.float32).eval()
    # PEFT copies name_or_path into adapter_config.json's base_model_name_or_path; a stable
    # served name (not a temp path) keeps the adapters byte-identical between builds.
    model.name_or_path = name
    model.config._name_or_path = name
    model.save_pretrained(out, safe_serialization=True)
    return model


def make_lora(model: Any, seed: int, **config: Any) -> Any:
    """Wrap a fresh copy of `model` with a LoRA whose A and B are both random (non-zero)."""
    import copy

    import torch
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    lora_config = LoraConfig(
        target_modules=list(TARGETS), lora_dropout=0.0, task_type="CAUSAL_LM", **config
    )
    peft_model = get_peft_model(copy.deepcopy(model), lora_config)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_A" in name or "lora_B" in name:
                # B is zero after PEFT's init; randomize both so every adapter changes outputs.
                param.copy_(torch.randn_like(param) * 0.1)
    return peft_model


def save_adapter(peft_model: Any, folder: Path, *, safe: bool = True) -> None:
    peft_model.save_pretrained(folder, safe_serialization=safe, save_embedding_layers=False)
    # The model card embeds nothing stable-worth-keeping; drop it so folders hold only what
    # vLLM reads (and what lorapack syncs).
    (folder / "README.md").unlink(missing_ok=True)
    # PEFT keeps target_modules in a set, so its order changes between runs: sort it to make
    # the files (and their digests) reproducible.
    config_path = folder / "adapter_config.json"
    config = json.loads(config_path.read_text())
    if isinstance(config.get("target_modules"), list):
        config["target_modules"] = sorted(config["target_modules"])
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def weight_file(folder: Path) -> Path | None:
    for candidate in ("adapter_model.safetensors", "adapter_model.bin", "adapter_model.pt"):
        if (folder / candidate).is_file():
            return folder / candidate
    return None


def adapter_entry(
    root: Path, name: str, *, rank: int | None, engine: str, engine_detail: str, notes: str
) -> dict[str, Any]:
    folder = root / "adapters" / name
    weights = weight_file(folder)
    config_path = folder / "adapter_config.json"
    base = None
    if config_path.is_file():
        base = json.loads(config_path.read_text()).get("base_model_name_or_path")
    return {
        "name": name,
        "path": f"adapters/{name}",
        "rank": rank,
        "base_model": base,
        "weight_file": weights.name if weights else None,
        "digest": sha256_file(weights) if weights else None,
        "size_bytes": sum(p.stat().st_size for p in folder.iterdir() if p.is_file()),
        # What vLLM (and the engine double) answers when loading this folder into a server
        # with --max-lora-rank 64: "loads", "not_found" (404), "invalid" (500).
        "engine_outcome_at_rank_64": engine,
        "engine_detail": engine_detail,
        "notes": notes,
    }


def build(out: Path) -> None:
    import torch

    model_dir = out / "model"
    tokenizer = build_tokenizer(model_dir)
    vocab = len(tokenizer)
    model = build_model(
        model_dir, vocab=vocab, hidden=64, intermediate=128, name=SERVED_NAME, seed=SEED
    )
    adapters = out / "adapters"
    entries: list[dict[str, Any]] = []

    for i, rank in enumerate(GOOD_RANKS):
        name = f"r{rank}"
        save_adapter(make_lora(model, SEED + 100 + i, r=rank, lora_alpha=2 * rank), adapters / name)
        outcome = "loads" if rank <= 64 else "invalid"
        detail = "" if rank <= 64 else f"LoRA rank {rank} is greater than max_lora_rank 64."
        entries.append(
            adapter_entry(out, name, rank=rank, engine=outcome, engine_detail=detail, notes="")
        )

    # DoRA: PEFT also saves lora_magnitude_vector tensors; vLLM rejects it from the config.
    save_adapter(make_lora(model, SEED + 200, r=8, lora_alpha=16, use_dora=True), adapters / "dora")
    entries.append(
        adapter_entry(
            out,
            "dora",
            rank=8,
            engine="invalid",
            engine_detail="vLLM does not yet support DoRA.",
            notes="use_dora: true",
        )
    )

    # Pickle only: vLLM still loads it (torch.load weights_only=True); lorapack refuses pickle.
    save_adapter(
        make_lora(model, SEED + 201, r=8, lora_alpha=16), adapters / "pickle-only", safe=False
    )
    entries.append(
        adapter_entry(
            out,
            "pickle-only",
            rank=8,
            engine="loads",
            engine_detail="",
            notes="adapter_model.bin only (torch pickle); lorapack rejects it before the engine",
        )
    )

    # Missing adapter_config.json: the engine answers 404 like a missing folder.
    folder = adapters / "missing-config"
    save_adapter(make_lora(model, SEED + 202, r=8, lora_alpha=16), folder)
    (folder / "adapter_config.json").unlink()
    entries.append(
        adapter_entry(
            out,
            "missing-config",
            rank=None,
            engine="not_found",
            engine_detail="No adapter found for",
            notes="weights without adapter_config.json",
        )
    )

    # Config but no weight file.
    folder = adapters / "no-weights"
    save_adapter(make_lora(model, SEED + 203, r=8, lora_alpha=16), folder)
    (folder / "adapter_model.safetensors").unlink()
    entries.append(
        adapter_entry(
            out,
            "no-weights",
            rank=8,
            engine="invalid",
            engine_detail="doesn't contain tensors",
            notes="adapter_config.json only",
        )
    )

    # bias="all": vLLM refuses adapter biases from the config.
    save_adapter(
        make_lora(model, SEED + 204, r=8, lora_alpha=16, bias="all"), adapters / "bias-all"
    )
    entries.append(
        adapter_entry(
            out,
            "bias-all",
            rank=8,
            engine="invalid",
            engine_detail="Adapter bias is not supported.",
            notes='bias: "all"',
        )
    )

    # rank_pattern pushes one module above the limit although r itself is small.
    save_adapter(
        make_lora(model, SEED + 205, r=8, lora_alpha=16, rank_pattern={"q_proj": 128}),
        adapters / "rank-pattern-128",
    )
    entries.append(
        adapter_entry(
            out,
            "rank-pattern-128",
            rank=128,
            engine="invalid",
            engine_detail="LoRA rank 128 is greater than max_lora_rank 64.",
            notes="r 8 with rank_pattern {q_proj: 128}",
        )
    )

    # A weight for a module the Llama family has no LoRA wrapper for.
    folder = adapters / "unexpected-module"
    save_adapter(make_lora(model, SEED + 206, r=8, lora_alpha=16), folder)
    _rename_tensors(folder, "mlp.down_proj", "mlp.fancy_proj")
    entries.append(
        adapter_entry(
            out,
            "unexpected-module",
            rank=8,
            engine="invalid",
            engine_detail="expected target modules in",
            notes="down_proj tensors renamed to fancy_proj",
        )
    )

    # Same shapes, other base name: vLLM does not read base_model_name_or_path, so it loads
    # (silently wrong in production); lorapack must catch it from the config.
    peft_model = make_lora(model, SEED + 207, r=8, lora_alpha=16)
    peft_model.peft_config["default"].base_model_name_or_path = "other-org/other-model"
    save_adapter(peft_model, adapters / "wrong-base-name")
    entries.append(
        adapter_entry(
            out,
            "wrong-base-name",
            rank=8,
            engine="loads",
            engine_detail="",
            notes="base_model_name_or_path other-org/other-model, shapes fit",
        )
    )

    # Trained on a wider model: other base name and tensor shapes that do not fit.
    other = build_model(
        out / "other-model",
        vocab=vocab,
        hidden=128,
        intermediate=256,
        name=OTHER_SERVED_NAME,
        seed=SEED + 1,
    )
    save_adapter(make_lora(other, SEED + 208, r=8, lora_alpha=16), adapters / "wrong-base-shapes")
    entries.append(
        adapter_entry(
            out,
            "wrong-base-shapes",
            rank=8,
            engine="invalid",
            engine_detail="The size of tensor a (64) must match the size of tensor b (128)",
            notes=f"trained on {OTHER_SERVED_NAME} (hidden 128, intermediate 256)",
        )
    )

    # Churn adapters (tests/contract/test_churn.py): more distinct weights than any test engine's
    # CPU cache holds, so that greedy completions tell every one of them apart while adapters are
    # loaded, unloaded and swapped; ranks vary so that swaps change the slot's shape as well.
    for i in range(CHURN_ADAPTERS):
        name, rank = f"churn-{i}", CHURN_RANKS[i % len(CHURN_RANKS)]
        save_adapter(make_lora(model, SEED + 300 + i, r=rank, lora_alpha=2 * rank), adapters / name)
        entries.append(
            adapter_entry(
                out, name, rank=rank, engine="loads", engine_detail="", notes="churn weights"
            )
        )

    index = {
        "format": 1,
        "served_name": SERVED_NAME,
        "model": {
            "path": "model",
            "vocab_size": vocab,
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "head_dim": 32,
            "max_position_embeddings": 512,
            "parameters": sum(p.numel() for p in model.parameters()),
            "torch": torch.__version__,
        },
        "adapters": entries,
    }
    (out / "index.json").write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")


def _rename_tensors(folder: Path, old: str, new: str) -> None:
    from safetensors.torch import load_file, save_file

    path = folder / "adapter_model.safetensors"
    tensors = load_file(path)
    save_file({k.replace(old, new): v for k, v in tensors.items()}, path, metadata={"format": "pt"})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: cache)")
    parser.add_argument("--force", action="store_true", help="rebuild even if complete")
    args = parser.parse_args(argv)
    out: Path = (args.out or default_out()).resolve()
    if (out / "index.json").is_file() and not args.force:
        print(out)
        return 0
    out.parent.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        build(tmp)
        if out.exists():
            # --force, or a folder a killed run left without index.json (never renamed into
            # place, so it cannot be half-written; still, replace it whole).
            shutil.rmtree(out)
        try:
            tmp.rename(out)
        except OSError:
            # Another build finished first; its result is identical (fixed seeds).
            if not (out / "index.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

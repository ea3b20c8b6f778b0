"""Starting, identifying and stopping the control plane's processes, and auditing their sockets.

`spawn` starts a program with its output in a log file; `ProcessRecord` remembers a PID together
with the kernel's start time so a later `stop` (possibly from another Python process, through the
state file) signals exactly the processes it started and never a recycled PID. `listening_sockets`
reads /proc to list what a set of PIDs listens on, which is how the cluster proves everything is
on 127.0.0.1 and that nothing is left behind. Used by `lorapack_testworld.devcluster.cluster`.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "ProcessRecord",
    "free_port",
    "listening_sockets",
    "spawn",
    "stop_processes",
]

_PR_SET_PDEATHSIG = 1


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (chosen by the kernel)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclasses.dataclass(frozen=True)
class ProcessRecord:
    """A started process: enough to find it again from another process and stop only it."""

    name: str
    pid: int
    start_ticks: int
    """Field 22 of /proc/<pid>/stat: with the PID it identifies the process uniquely."""
    log: str
    ports: tuple[int, ...] = ()

    def alive(self) -> bool:
        """True while this very process (not a later one reusing the PID) still runs."""
        return _start_ticks(self.pid) == self.start_ticks

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ProcessRecord:
        return cls(
            name=str(data["name"]),
            pid=int(data["pid"]),
            start_ticks=int(data["start_ticks"]),
            log=str(data["log"]),
            ports=tuple(int(p) for p in data.get("ports", ())),
        )


def _start_ticks(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its last ')'.
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] == "Z":  # a zombie has exited; only its exit status is left to collect
        return None
    return int(fields[19])


def _die_with_parent() -> None:
    # Runs in the child between fork and exec: if the test run that started the cluster is
    # killed, the kernel sends SIGTERM to the cluster too, so nothing is left running.
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def spawn(
    name: str,
    argv: Sequence[str],
    log_dir: Path,
    *,
    env: Mapping[str, str] | None = None,
    ports: Iterable[int] = (),
    detach: bool = False,
) -> tuple[subprocess.Popen[bytes], ProcessRecord]:
    """Start `argv` with stdout and stderr in `log_dir/<name>.log`.

    `detach=True` (the `up` command) lets the process outlive this Python process; otherwise
    it gets SIGTERM when its parent dies. Either way it runs in its own session, so a Ctrl-C
    in the terminal reaches only the Python process, which then stops the cluster in order.
    """
    log = log_dir / f"{name}.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            start_new_session=True,
            preexec_fn=None if detach else _die_with_parent,
        )
    ticks = _start_ticks(proc.pid)
    if ticks is None:
        proc.wait()
        raise RuntimeError(f"{name} exited at once (exit {proc.returncode}); see {log}")
    return proc, ProcessRecord(name, proc.pid, ticks, str(log), tuple(ports))


def stop_processes(
    records: Sequence[ProcessRecord],
    popens: Mapping[int, subprocess.Popen[bytes]] | None = None,
    grace: float = 10.0,
) -> list[str]:
    """SIGTERM each live process (in the given order), then SIGKILL what is left after `grace`.

    Returns problems found (empty when everything stopped). Only processes whose PID and start
    time still match are signalled. Children of this process are reaped through `popens`.
    """
    popens = popens or {}
    problems: list[str] = []
    for record in records:
        if record.alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(record.pid, signal.SIGTERM)
            _wait_gone(record, popens.get(record.pid), grace)
    for record in records:
        if record.alive():
            problems.append(f"{record.name} (pid {record.pid}) ignored SIGTERM; sent SIGKILL")
            with contextlib.suppress(ProcessLookupError):
                os.kill(record.pid, signal.SIGKILL)
            _wait_gone(record, popens.get(record.pid), 5.0)
        if record.alive():
            problems.append(f"{record.name} (pid {record.pid}) is still running after SIGKILL")
    return problems


def _wait_gone(
    record: ProcessRecord, popen: subprocess.Popen[bytes] | None, timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if popen is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                popen.wait(timeout=0.1)
        else:
            time.sleep(0.1)
        if not record.alive():
            return


def listening_sockets(pids: Iterable[int] | None = None) -> list[tuple[int | None, str, int]]:
    """(pid, address, port) of every listening TCP socket, optionally only those of `pids`.

    Reads /proc/net/tcp{,6} for sockets in LISTEN state and /proc/<pid>/fd to attribute them;
    the pid is None for a socket no given process holds (only when `pids` is None).
    """
    listening: dict[int, tuple[str, int]] = {}
    for table, v6 in (("/proc/net/tcp", False), ("/proc/net/tcp6", True)):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if fields[3] != "0A":  # TCP_LISTEN
                    continue
                address, port = _decode_address(fields[1], v6)
                listening[int(fields[9])] = (address, port)
    if pids is None:
        return [(None, address, port) for address, port in listening.values()]
    out: list[tuple[int | None, str, int]] = []
    for pid in pids:
        with contextlib.suppress(OSError):
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                with contextlib.suppress(OSError):
                    target = os.readlink(fd)
                    if target.startswith("socket:["):
                        inode = int(target[8:-1])
                        if inode in listening:
                            out.append((pid, *listening[inode]))
    return out


def _decode_address(text: str, v6: bool) -> tuple[str, int]:
    host_hex, port_hex = text.split(":")
    raw = bytes.fromhex(host_hex)
    # /proc prints each 32-bit word of the address in host (little-endian) order.
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    if v6:
        return str(socket.inet_ntop(socket.AF_INET6, words)), int(port_hex, 16)
    return socket.inet_ntoa(words), int(port_hex, 16)

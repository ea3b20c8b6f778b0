"""A loopback HTTP fault proxy that sits in front of the test S3 server.

Real S3 throttles (503 SlowDown), fails (500 InternalError) and stalls; the loopback server does
none of that on demand, so tests put this proxy between the client and the server and script the
failures. Used by tests/fixtures/s3.py (`s3_fault_proxy`), the S3 client and cache tests, and by
hand: `python -m lorapack_testworld.faultproxy --upstream http://127.0.0.1:8333 --slowdown 3`.

How it works: it reads each request's head, decides from the scripted `Fault`s, and either
answers with the fault itself or forwards the request unchanged (the Host header stays as the
client signed it, so SigV4 signatures and presigned URLs remain valid) and pipes the answer
back. Every forwarded request is sent with `Connection: close`, so each request arrives on a
fresh upstream connection and the proxy never has to parse bodies to find request boundaries;
clients simply reconnect for their next request.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from urllib.parse import urlsplit

__all__ = ["Fault", "FaultProxy", "ProxiedRequest"]

_MAX_HEAD = 64 * 1024
_PIPE_CHUNK = 256 * 1024
_BANDWIDTH_CHUNK = 64 * 1024  # smaller reads when pacing, so the rate is smooth

_REASONS = {
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


@dataclass
class Fault:
    """One scripted failure, matched against each request in the order faults were added.

    `times` is how many matching requests it hits (None: every one, until removed).
    """

    status: int = 503
    """HTTP status to answer with (0: forward the request, only adding `latency`,
    `cut_after_bytes` or `bandwidth`)."""
    code: str = "SlowDown"
    """S3 error code put in the XML body."""
    times: int | None = 1
    method: str | None = None
    """Only requests with this method (e.g. "GET")."""
    path_contains: str | None = None
    """Only requests whose path (with query) contains this text."""
    latency: float = 0.0
    """Seconds to wait before answering or forwarding."""
    cut_after_bytes: int | None = None
    """Forward, but close the connection after this many bytes of the upstream answer
    (headers included): a connection reset in the middle of a body."""
    bandwidth: float | None = None
    """Forward, piping the upstream answer at most this many bytes per second (per request,
    i.e. per connection: what one S3 connection gets over a real network)."""
    hits: int = field(default=0, init=False)

    def matches(self, method: str, target: str) -> bool:
        if self.times is not None and self.hits >= self.times:
            return False
        if self.method is not None and self.method.upper() != method:
            return False
        return self.path_contains is None or self.path_contains in target


@dataclass(frozen=True)
class ProxiedRequest:
    """What the proxy saw and did, for assertions."""

    method: str
    target: str
    fault: str
    """"" when forwarded untouched, else e.g. "503 SlowDown", "cut@1024", "latency"."""


class FaultProxy:
    """A threaded asyncio proxy on 127.0.0.1; start() returns once it accepts connections."""

    def __init__(self, upstream: str, *, host: str = "127.0.0.1", port: int = 0) -> None:
        parts = urlsplit(upstream)
        if parts.scheme != "http" or not parts.hostname or parts.port is None:
            raise ValueError(f"upstream {upstream!r} must look like http://127.0.0.1:8333")
        self._upstream = (parts.hostname, parts.port)
        self._bind = (host, port)
        self._faults: list[Fault] = []
        self._log: list[ProxiedRequest] = []
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._thread: threading.Thread | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self._port = 0

    # -- control, from any thread -------------------------------------------------------------

    @property
    def endpoint(self) -> str:
        if not self._port:
            raise RuntimeError("the fault proxy is not started")
        return f"http://{self._bind[0]}:{self._port}"

    def add(self, fault: Fault) -> Fault:
        """Script a fault; returns it so a test can read `hits` afterwards."""
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear(self) -> None:
        """Drop every scripted fault and the request log."""
        with self._lock:
            self._faults.clear()
            self._log.clear()

    @property
    def requests(self) -> list[ProxiedRequest]:
        with self._lock:
            return list(self._log)

    @contextlib.contextmanager
    def faults(self, *faults: Fault) -> Iterator[list[Fault]]:
        """Script faults for the duration of a with-block, then clear them."""
        for fault in faults:
            self.add(fault)
        try:
            yield list(faults)
        finally:
            self.clear()

    def start(self) -> FaultProxy:
        started = threading.Event()
        errors: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                self._server = loop.run_until_complete(
                    asyncio.start_server(self._handle, self._bind[0], self._bind[1])
                )
                self._port = self._server.sockets[0].getsockname()[1]
            except OSError as exc:
                errors.append(exc)
                started.set()
                loop.close()
                return
            started.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(self._shutdown())
                loop.close()

        self._thread = threading.Thread(target=run, name="s3-fault-proxy", daemon=True)
        self._thread.start()
        started.wait(10)
        if errors:
            raise errors[0]
        return self

    def stop(self) -> None:
        """Stop accepting, end open connections (clients keep idle keep-alive ones), join."""
        if self._loop is not None and self._thread is not None:
            loop = self._loop
            with contextlib.suppress(RuntimeError):  # already closed
                loop.call_soon_threadsafe(loop.stop)
            self._thread.join(10)
        self._loop = None
        self._thread = None
        self._port = 0

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- the proxy itself (runs on the proxy's loop) -----------------------------------------

    def _pick(self, method: str, target: str) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.matches(method, target):
                    fault.hits += 1
                    return fault
            return None

    def _record(self, method: str, target: str, what: str) -> None:
        with self._lock:
            self._log.append(ProxiedRequest(method, target, what))

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        handlers = [t for t in self._handlers if not t.done()]
        for task in handlers:
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
        await asyncio.sleep(0)  # let the closed transports finish closing

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            await self._serve(head, reader, writer)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass  # the client went away
        finally:
            if task is not None:
                self._handlers.discard(task)
            writer.close()

    async def _serve(
        self, head: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        request_line, _, rest = head.partition(b"\r\n")
        try:
            method, target, _version = request_line.decode("latin-1").split(" ", 2)
        except ValueError:
            writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
            return
        fault = self._pick(method, target)
        if fault is not None and fault.latency:
            await asyncio.sleep(fault.latency)
        if fault is not None and fault.status:
            self._record(method, target, f"{fault.status} {fault.code}")
            # Read (and drop) a declared body, so the client is not reset while still sending.
            length = _content_length(rest)
            if length:
                with contextlib.suppress(asyncio.IncompleteReadError):
                    await reader.readexactly(length)
            writer.write(_error_response(fault.status, fault.code, target))
            await writer.drain()
            return
        what = ""
        if fault is not None:
            what = (
                f"cut@{fault.cut_after_bytes}"
                if fault.cut_after_bytes is not None
                else f"bandwidth@{fault.bandwidth:.0f}"
                if fault.bandwidth
                else "latency"
            )
        self._record(method, target, what)
        await self._forward(request_line, rest, reader, writer, fault)

    async def _forward(
        self,
        request_line: bytes,
        rest: bytes,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        fault: Fault | None,
    ) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self._upstream)
        headers = [
            line
            for line in rest.split(b"\r\n")
            if line and not line.lower().startswith((b"connection:", b"keep-alive:"))
        ]
        up_writer.write(request_line + b"\r\n" + b"\r\n".join([*headers, b"Connection: close"]))
        up_writer.write(b"\r\n\r\n")

        async def upload() -> None:
            # The request body, if any, streams through as-is until the client half-closes or
            # the upstream answer is complete (then this task is cancelled).
            while chunk := await reader.read(_PIPE_CHUNK):
                up_writer.write(chunk)
                await up_writer.drain()

        sender = asyncio.create_task(upload())
        budget = fault.cut_after_bytes if fault is not None else None
        rate = fault.bandwidth if fault is not None else None
        began, sent = time.monotonic(), 0
        try:
            while chunk := await up_reader.read(_BANDWIDTH_CHUNK if rate else _PIPE_CHUNK):
                if budget is not None:
                    chunk = chunk[:budget]
                    budget -= len(chunk)
                writer.write(chunk)
                await writer.drain()
                sent += len(chunk)
                if rate:  # pace: never ahead of `rate` bytes per second since the first byte
                    await asyncio.sleep(max(0.0, began + sent / rate - time.monotonic()))
                if budget == 0:
                    # Abort rather than close: the client must see a reset, not a clean end.
                    writer.transport.abort()
                    return
        finally:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                await sender
            up_writer.close()
            with contextlib.suppress(ConnectionError):
                await up_writer.wait_closed()


def _content_length(header_block: bytes) -> int:
    for line in header_block.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value.strip() or b"0")
    return 0


def _error_response(status: int, code: str, target: str) -> bytes:
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>Injected by the lorapack fault proxy</Message>"
        f"<Resource>{target.split('?')[0]}</Resource><RequestId>faultproxy</RequestId></Error>"
    ).encode()
    reason = _REASONS.get(status, "Error")
    head = (
        f"HTTP/1.1 {status} {reason}\r\n"
        "Content-Type: application/xml\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    return head + body


def main(argv: list[str] | None = None) -> None:
    """Run the proxy by hand: every GET answers 503 SlowDown `--slowdown` times first."""
    parser = argparse.ArgumentParser(prog="python -m lorapack_testworld.faultproxy")
    parser.add_argument("--upstream", required=True, help="e.g. http://127.0.0.1:8333")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--slowdown", type=int, default=0, help="503 SlowDown this many GETs")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added to each GET")
    parser.add_argument(
        "--bandwidth", type=float, default=0.0, help="bytes/s per answer to a GET (0: no cap)"
    )
    parser.add_argument(
        "--every-method",
        action="store_true",
        help="--latency and --bandwidth apply to every request (HEAD, PUT, ...), not only GETs",
    )
    args = parser.parse_args(argv)
    proxy = FaultProxy(args.upstream, port=args.port).start()
    if args.slowdown:
        proxy.add(Fault(status=503, code="SlowDown", times=args.slowdown, method="GET"))
    if args.latency or args.bandwidth:
        proxy.add(
            Fault(
                status=0,
                latency=args.latency,
                bandwidth=args.bandwidth or None,
                times=None,
                method=None if args.every_method else "GET",
            )
        )
    print(f"fault proxy on {proxy.endpoint} -> {args.upstream} (Ctrl-C stops it)", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        proxy.stop()


if __name__ == "__main__":
    main()

"""The fault proxy's bandwidth cap: answers arrive whole, never faster than the cap."""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from lorapack_testworld.faultproxy import Fault, FaultProxy

BODY = bytes(range(256)) * 1000  # 256 kB


class _Blob(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        self.wfile.write(BODY)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def proxy() -> Iterator[FaultProxy]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Blob)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    with FaultProxy(f"http://127.0.0.1:{server.server_address[1]}") as p:
        yield p
    server.shutdown()
    server.server_close()


def test_a_capped_answer_is_whole_and_paced(proxy: FaultProxy) -> None:
    proxy.add(Fault(status=0, times=None, bandwidth=1e6))
    started = time.monotonic()
    body = httpx.get(f"{proxy.endpoint}/blob", timeout=30).content
    elapsed = time.monotonic() - started
    assert body == BODY
    # 256 kB at 1 MB/s: the last chunk cannot leave before ~0.19 s (headers are not paced
    # ahead of the body, so the bound is the body's bytes minus one read).
    assert elapsed >= (len(BODY) - 64 * 1024) / 1e6
    assert proxy.requests[-1].fault == "bandwidth@1000000"


def test_without_a_cap_nothing_is_paced(proxy: FaultProxy) -> None:
    proxy.add(Fault(status=0, times=None, latency=0.0))
    assert httpx.get(f"{proxy.endpoint}/blob", timeout=30).content == BODY
    assert proxy.requests[-1].fault == "latency"

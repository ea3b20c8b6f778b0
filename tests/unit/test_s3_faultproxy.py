"""The fault proxy in front of a tiny loopback HTTP server: which requests a fault hits, what
the client sees, and that everything else passes through untouched."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator

import httpx
import pytest

from lorapack_testworld.faultproxy import Fault, FaultProxy


class _Echo(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = (f"{self.path}|{self.headers.get('Host')}|" + "x" * 5000).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_PUT(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length)
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def upstream() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def proxy(upstream: str) -> Iterator[FaultProxy]:
    with FaultProxy(upstream) as p:
        yield p


@pytest.fixture(scope="module")
def web() -> Iterator[httpx.Client]:
    with httpx.Client() as client:  # one client: building an SSL context per call is slow
        yield client


def test_requests_pass_through_with_the_client_host_header(
    proxy: FaultProxy, web: httpx.Client
) -> None:
    r = web.get(f"{proxy.endpoint}/bucket/key?versionId=1")
    path, host, _ = r.text.split("|")
    assert r.status_code == 200
    assert path == "/bucket/key?versionId=1"
    assert host == proxy.endpoint.removeprefix("http://")  # as signed by the client
    assert [(q.method, q.target, q.fault) for q in proxy.requests] == [
        ("GET", "/bucket/key?versionId=1", "")
    ]


def test_request_bodies_are_forwarded(proxy: FaultProxy, web: httpx.Client) -> None:
    r = web.put(f"{proxy.endpoint}/b/k", content=b"payload" * 1000)
    assert r.content == b"payload" * 1000


def test_a_fault_hits_its_count_then_requests_pass(proxy: FaultProxy, web: httpx.Client) -> None:
    fault = proxy.add(Fault(status=503, code="SlowDown", times=2))
    answers = [web.get(f"{proxy.endpoint}/b/k") for _ in range(3)]
    assert [a.status_code for a in answers] == [503, 503, 200]
    assert "<Code>SlowDown</Code>" in answers[0].text
    assert fault.hits == 2


@pytest.mark.parametrize(
    ("fault", "want_status"),
    [
        pytest.param(Fault(status=500, code="InternalError", method="PUT"), 200, id="other-method"),
        pytest.param(Fault(status=500, path_contains="/other/"), 200, id="other-path"),
        pytest.param(Fault(status=500, path_contains="/b/"), 500, id="matching-path"),
        pytest.param(Fault(status=429, code="SlowDown", method="get"), 429, id="method-any-case"),
    ],
)
def test_faults_match_method_and_path(
    proxy: FaultProxy, web: httpx.Client, fault: Fault, want_status: int
) -> None:
    proxy.add(fault)
    assert web.get(f"{proxy.endpoint}/b/k").status_code == want_status


def test_cut_responses_end_early(proxy: FaultProxy, web: httpx.Client) -> None:
    proxy.add(Fault(status=0, cut_after_bytes=200))
    with pytest.raises(httpx.HTTPError):
        web.get(f"{proxy.endpoint}/b/k")
    assert web.get(f"{proxy.endpoint}/b/k").status_code == 200
    assert [q.fault for q in proxy.requests] == ["cut@200", ""]


def test_faults_context_clears_afterwards(proxy: FaultProxy, web: httpx.Client) -> None:
    with proxy.faults(Fault(status=503, times=None)):
        assert web.get(f"{proxy.endpoint}/b/k").status_code == 503
    assert web.get(f"{proxy.endpoint}/b/k").status_code == 200


def test_upstream_must_be_a_plain_http_address() -> None:
    with pytest.raises(ValueError, match=r"http://127\.0\.0\.1:8333"):
        FaultProxy("https://s3.amazonaws.com")

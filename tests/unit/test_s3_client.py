"""lorapack.clients.s3 without a server: settings validation, error mapping, and presigned
downloads over httpx.MockTransport (retries, ranges, refusals)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from botocore.exceptions import (
    ClientError,
    EndpointConnectionError,
    NoCredentialsError,
    ReadTimeoutError,
)
from hypothesis import given
from hypothesis import strategies as st
from s3transfer.exceptions import RetriesExceededError, S3DownloadFailedError

from lorapack.clients.s3 import (
    PresignedItem,
    S3Settings,
    _plan_ranges,
    download_presigned,
    map_s3_error,
)
from lorapack.errors import (
    AccessDenied,
    ArtifactNotFound,
    ArtifactRejected,
    InvalidSpec,
    LorapackError,
    StorageUnavailable,
)

# -- settings -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "want_message"),
    [
        pytest.param({"endpoint": "minio:9000"}, "must start with http", id="endpoint-no-scheme"),
        pytest.param({"access_key_id": "AK"}, "both an access key id", id="key-without-secret"),
        pytest.param({"secret_access_key": "S"}, "both an access key id", id="secret-without-key"),
        pytest.param({"session_token": "T"}, "session token", id="token-alone"),
        pytest.param({"max_attempts": 0}, "max_attempts must be >= 1", id="no-attempts"),
        pytest.param({"max_concurrency": 0}, "max_concurrency", id="no-concurrency"),
        pytest.param({"multipart_chunksize": 1024}, "multipart_chunksize", id="tiny-chunks"),
        pytest.param({"addressing_style": "sideways"}, "addressingStyle", id="bad-style"),
    ],
)
def test_settings_refuse_bad_values(kwargs: dict[str, Any], want_message: str) -> None:
    with pytest.raises(InvalidSpec, match=want_message):
        S3Settings(**kwargs)


def test_settings_default_to_the_ambient_identity() -> None:
    s = S3Settings()
    assert (s.access_key_id, s.secret_access_key, s.session_token) == (None, None, None)


@pytest.mark.parametrize(
    ("data", "want_missing"),
    [
        pytest.param({}, "AWS_ACCESS_KEY_ID", id="empty"),
        pytest.param({"AWS_ACCESS_KEY_ID": "AK"}, "AWS_SECRET_ACCESS_KEY", id="no-secret"),
        pytest.param(
            {"AWS_ACCESS_KEY_ID": " \n", "AWS_SECRET_ACCESS_KEY": "S"},
            "AWS_ACCESS_KEY_ID",
            id="blank-key",
        ),
        pytest.param(
            {"aws_access_key_id": "AK", "aws_secret_access_key": "S"},
            "AWS_ACCESS_KEY_ID",
            id="lowercase-keys",
        ),
    ],
)
def test_secret_data_missing_keys_name_the_key(data: dict[str, str], want_missing: str) -> None:
    with pytest.raises(InvalidSpec) as caught:
        S3Settings.from_secret_data(data)
    assert f"no non-empty key {want_missing}" in caught.value.message
    assert "credentialsSecretRef" in caught.value.message


def test_secret_data_is_stripped_and_merged_with_other_settings() -> None:
    s = S3Settings.from_secret_data(
        {"AWS_ACCESS_KEY_ID": "AK\n", "AWS_SECRET_ACCESS_KEY": " S \n", "AWS_SESSION_TOKEN": ""},
        endpoint="http://minio:9000",
        addressing_style="path",
    )
    assert (s.access_key_id, s.secret_access_key, s.session_token) == ("AK", "S", None)
    assert (s.endpoint, s.addressing_style) == ("http://minio:9000", "path")


def test_settings_repr_hides_secrets() -> None:
    s = S3Settings(access_key_id="AK", secret_access_key="hunter2", session_token="tok")
    text = repr(s)
    assert "hunter2" not in text
    assert "tok'" not in text
    assert "AK" in text


# -- error mapping ------------------------------------------------------------------------------


def client_error(code: str, status: int, message: str = "msg") -> ClientError:
    return ClientError(
        {
            "Error": {"Code": code, "Message": message},
            "ResponseMetadata": {"HTTPStatusCode": status},
        },
        "GetObject",
    )


@pytest.mark.parametrize(
    ("exc", "want_type", "want_reason", "want_text"),
    [
        pytest.param(
            client_error("NoSuchKey", 404),
            ArtifactNotFound,
            "ArtifactNotFound",
            "no such object at s3://b/k",
            id="no-such-key",
        ),
        pytest.param(
            client_error("NoSuchBucket", 404),
            ArtifactNotFound,
            "ArtifactNotFound",
            "no such bucket",
            id="no-such-bucket",
        ),
        pytest.param(
            client_error("404", 404),
            ArtifactNotFound,
            "ArtifactNotFound",
            "spec.source.s3.uri",
            id="head-404",
        ),
        pytest.param(
            client_error("AccessDenied", 403),
            AccessDenied,
            "AccessDenied",
            "bucket policy",
            id="access-denied",
        ),
        pytest.param(
            client_error("InvalidAccessKeyId", 403),
            AccessDenied,
            "AccessDenied",
            "credentialsSecretRef",
            id="unknown-key",
        ),
        pytest.param(
            client_error("SignatureDoesNotMatch", 403),
            AccessDenied,
            "AccessDenied",
            "SignatureDoesNotMatch",
            id="wrong-secret",
        ),
        pytest.param(
            client_error("403", 403), AccessDenied, "AccessDenied", "s3://b/k", id="head-403"
        ),
        pytest.param(
            client_error("SlowDown", 503),
            StorageUnavailable,
            "StorageUnavailable",
            "throttled",
            id="slowdown",
        ),
        pytest.param(
            client_error("InternalError", 500),
            StorageUnavailable,
            "StorageUnavailable",
            "failed",
            id="internal-error",
        ),
        pytest.param(
            client_error("PreconditionFailed", 412),
            StorageUnavailable,
            "ObjectChanged",
            "changed since it was listed",
            id="if-match-failed",
        ),
        pytest.param(
            client_error("PermanentRedirect", 301),
            InvalidSpec,
            "InvalidSpec",
            "region",
            id="wrong-region",
        ),
        pytest.param(
            S3DownloadFailedError("etag"),
            StorageUnavailable,
            "ObjectChanged",
            "changed since it was listed or while it was being downloaded",
            id="s3transfer-etag",
        ),
        pytest.param(
            RetriesExceededError(ReadTimeoutError(endpoint_url="http://x")),
            StorageUnavailable,
            "StorageUnavailable",
            "kept failing",
            id="stream-retries-exhausted",
        ),
        pytest.param(
            EndpointConnectionError(endpoint_url="http://x"),
            StorageUnavailable,
            "StorageUnavailable",
            "could not reach S3",
            id="unreachable",
        ),
        pytest.param(
            NoCredentialsError(),
            AccessDenied,
            "CredentialsNotFound",
            "IRSA",
            id="no-credentials",
        ),
        pytest.param(
            OSError(28, "No space left on device"),
            LorapackError,
            "CapacityExceeded",
            "cacheSize",
            id="disk-full",
        ),
    ],
)
def test_errors_map_to_what_a_user_can_act_on(
    exc: BaseException, want_type: type[LorapackError], want_reason: str, want_text: str
) -> None:
    mapped = map_s3_error(exc, "b", "k")
    assert isinstance(mapped, want_type)
    assert mapped.reason == want_reason
    assert want_text in mapped.message


def test_lorapack_errors_pass_through() -> None:
    original = ArtifactRejected("already explained")
    assert map_s3_error(original, "b", "k") is original


# -- presigned downloads ------------------------------------------------------------------------


@given(st.integers(0, 10_000), st.integers(1, 3000))
def test_ranges_cover_the_object_exactly_once(size: int, part: int) -> None:
    ranges = _plan_ranges(size, part)
    covered = [b for start, end in ranges for b in range(start, end + 1)]
    assert covered == list(range(size))
    assert all(1 <= end - start + 1 <= part for start, end in ranges)


class Server:
    """A scripted presigned-URL server: answers pop from `script` before serving the data."""

    def __init__(self, data: bytes, script: list[httpx.Response] | None = None) -> None:
        self.data = data
        self.script = list(script or [])
        self.requests: list[httpx.Request] = []
        self.honour_range = True

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.script:
            return self.script.pop(0)
        header = request.headers.get("range")
        if header and self.honour_range:
            m = re.fullmatch(r"bytes=(\d+)-(\d+)", header)
            assert m is not None
            start, end = int(m.group(1)), int(m.group(2))
            return httpx.Response(
                206,
                content=self.data[start : end + 1],
                headers={"content-range": f"bytes {start}-{end}/{len(self.data)}"},
            )
        return httpx.Response(200, content=self.data)


URL = "https://bucket.s3.test/team-a/bot/w.bin?X-Amz-Signature=topsecret"


async def fetch(server: Server, dest: Path, size: int, **kw: Any) -> None:
    await download_presigned(
        [PresignedItem(URL, dest, size)],
        transport=httpx.MockTransport(server),
        backoff_base=0.001,
        **kw,
    )


async def test_ranged_parts_reassemble(tmp_path: Path) -> None:
    data = bytes(range(256)) * 40
    server = Server(data)
    await fetch(server, tmp_path / "w", len(data), part_size=1000, concurrency=3)
    assert (tmp_path / "w").read_bytes() == data
    assert len(server.requests) == 11
    assert all("range" in r.headers for r in server.requests)


async def test_small_object_is_one_plain_get(tmp_path: Path) -> None:
    server = Server(b"{}")
    await fetch(server, tmp_path / "c.json", 2)
    assert (tmp_path / "c.json").read_bytes() == b"{}"
    assert [r.headers.get("range") for r in server.requests] == [None]


async def test_empty_object_needs_no_request(tmp_path: Path) -> None:
    server = Server(b"")
    await fetch(server, tmp_path / "e", 0)
    assert (tmp_path / "e").read_bytes() == b""
    assert server.requests == []


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504])
async def test_transient_statuses_are_retried(tmp_path: Path, status: int) -> None:
    server = Server(b"payload", [httpx.Response(status), httpx.Response(status)])
    await fetch(server, tmp_path / "w", 7)
    assert (tmp_path / "w").read_bytes() == b"payload"
    assert len(server.requests) == 3


async def test_connection_errors_are_retried(tmp_path: Path) -> None:
    calls = 0

    def flaky(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise httpx.ConnectError("refused", request=request)
        return httpx.Response(200, content=b"ok")

    await download_presigned(
        [PresignedItem(URL, tmp_path / "w", 2)],
        transport=httpx.MockTransport(flaky),
        backoff_base=0.001,
    )
    assert (tmp_path / "w").read_bytes() == b"ok"


async def test_persistent_throttling_gives_up_without_leaking_the_signature(
    tmp_path: Path,
) -> None:
    server = Server(b"x", [httpx.Response(503)] * 10)
    with pytest.raises(StorageUnavailable) as caught:
        await fetch(server, tmp_path / "w", 1, max_attempts=4)
    assert len(server.requests) == 4
    assert "failed 4 times" in caught.value.message
    assert "topsecret" not in caught.value.message
    assert "https://bucket.s3.test/team-a/bot/w.bin" in caught.value.message


@pytest.mark.parametrize(
    ("response", "want_type", "want_reason"),
    [
        pytest.param(httpx.Response(404), ArtifactNotFound, "ArtifactNotFound", id="404"),
        pytest.param(
            httpx.Response(403, text="<Code>AccessDenied</Code>"),
            AccessDenied,
            "AccessDenied",
            id="403",
        ),
        pytest.param(
            httpx.Response(403, text="<Message>Request has expired</Message>"),
            StorageUnavailable,
            "PresignedUrlExpired",
            id="403-expired",
        ),
        pytest.param(httpx.Response(400), StorageUnavailable, "StorageUnavailable", id="400"),
    ],
)
async def test_refusals_are_not_retried(
    tmp_path: Path, response: httpx.Response, want_type: type[LorapackError], want_reason: str
) -> None:
    server = Server(b"x", [response])
    with pytest.raises(want_type) as caught:
        await fetch(server, tmp_path / "w", 1)
    assert caught.value.reason == want_reason
    assert len(server.requests) == 1
    assert "topsecret" not in caught.value.message


async def test_a_server_ignoring_ranges_is_an_error(tmp_path: Path) -> None:
    server = Server(b"y" * 3000)
    server.honour_range = False
    with pytest.raises(StorageUnavailable, match="ranged GET"):
        await fetch(server, tmp_path / "w", 3000, part_size=1000)


async def test_an_object_larger_than_listed_is_rejected(tmp_path: Path) -> None:
    server = Server(b"z" * 50)
    with pytest.raises(ArtifactRejected, match="larger than the 10 bytes listed"):
        await fetch(server, tmp_path / "w", 10)


async def test_a_short_body_is_retried(tmp_path: Path) -> None:
    server = Server(b"complete", [httpx.Response(200, content=b"comp")])
    await fetch(server, tmp_path / "w", 8)
    assert (tmp_path / "w").read_bytes() == b"complete"
    assert len(server.requests) == 2


async def test_bad_arguments_are_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidSpec):
        await download_presigned([PresignedItem(URL, tmp_path / "w", 1)], concurrency=0)

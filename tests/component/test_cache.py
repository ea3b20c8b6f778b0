"""AdapterCache end to end over a fake presigned fetcher (no network): download, verification,
atomic publication, restart, concurrency, quota and garbage collection.

The fake serves bytes from a dict keyed by URL and records every call, so tests can say how
many downloads happened; tests/integration/test_s3_cache.py repeats the core paths against the
real S3 server.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import stat
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from lorapack.agent.cache import AdapterCache
from lorapack.agent.cachelayout import MANIFEST_NAME
from lorapack.api.podstate import DesiredAdapter, FileSpec, S3Location
from lorapack.clients.s3 import DownloadItem, ObjectInfo, PresignedItem
from lorapack.errors import (
    ArtifactNotFound,
    ArtifactRejected,
    CapacityExceeded,
    InvalidSpec,
    StorageUnavailable,
)

CONFIG = b'{"r": 8, "lora_alpha": 16, "target_modules": ["q_proj"]}'


class FakeStore:
    """Presigned URLs served from memory; `gate` (when set) holds downloads until released."""

    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}
        self.calls: list[list[str]] = []
        self.gate: asyncio.Event | None = None
        self.fail_with: BaseException | None = None

    async def fetch(self, items: Sequence[PresignedItem]) -> None:
        self.calls.append([i.url for i in items])
        if self.gate is not None:
            await self.gate.wait()
        if self.fail_with is not None:
            raise self.fail_with
        for item in items:
            item.dest.parent.mkdir(parents=True, exist_ok=True)
            item.dest.write_bytes(self.blobs[item.url])


def make_adapter(
    store: FakeStore,
    files: dict[str, bytes],
    *,
    name: str = "team-a/bot",
    etags: bool = True,
    sha256: dict[str, str] | None = None,
    digest: str | None = None,
    sizes: dict[str, int] | None = None,
) -> DesiredAdapter:
    specs = []
    for path, blob in files.items():
        url = f"https://s3.test/{name}/{path}?X-Amz-Signature=secret"
        store.blobs[url] = blob
        specs.append(
            FileSpec(
                path=path,
                size=(sizes or {}).get(path, len(blob)),
                etag=hashlib.md5(blob).hexdigest() if etags else "",
                sha256=(sha256 or {}).get(path),
                url=url,
            )
        )
    manifest = json.dumps(sorted(files)).encode() + b"".join(files[k] for k in sorted(files))
    return DesiredAdapter(
        served_name=name.split("/")[-1],
        adapter=name,
        digest=digest or "sha256:" + hashlib.sha256(name.encode() + manifest).hexdigest(),
        files=specs,
        access="presigned",
    )


async def until(condition: Callable[[], bool], what: str) -> None:
    """Wait (briefly yielding) until `condition` holds; ensure() hops through threads, so the
    test cannot know how many loop turns that takes on a loaded machine."""
    for _ in range(5000):
        if condition():
            return
        await asyncio.sleep(0.001)
    raise AssertionError(f"timed out waiting until {what}")


def adapter_files(weights: bytes = b"W" * 1000) -> dict[str, bytes]:
    return {"adapter_config.json": CONFIG, "adapter_model.safetensors": weights}


@pytest.fixture
def store() -> FakeStore:
    return FakeStore()


@pytest.fixture
def cache(tmp_path: Path, store: FakeStore) -> AdapterCache:
    return AdapterCache(tmp_path / "cache", fetch_presigned=store.fetch)


def leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.name.startswith(".tmp-"))


# -- the happy path -----------------------------------------------------------------------------


async def test_ensure_downloads_verifies_and_publishes_read_only(
    cache: AdapterCache, store: FakeStore
) -> None:
    files = adapter_files()
    adapter = make_adapter(store, files)

    path = await cache.ensure(adapter, s3=None, allow_pickle=False)

    assert path == cache.path_for(adapter.digest)
    assert path.name == "sha256-" + adapter.digest.removeprefix("sha256:")
    assert {p.name: p.read_bytes() for p in path.iterdir() if p.name != MANIFEST_NAME} == files
    assert cache.is_verified(adapter.digest)
    assert cache.digests() == {adapter.digest}
    assert leftovers(cache.root) == []
    # Read-only: the engine may re-read these files at any time; nothing may rewrite them.
    assert stat.S_IMODE(path.stat().st_mode) & 0o222 == 0
    assert all(stat.S_IMODE(p.stat().st_mode) & 0o222 == 0 for p in path.iterdir())
    assert cache.usage_bytes() >= sum(len(b) for b in files.values())


async def test_second_ensure_and_agent_restart_reuse_the_folder(
    cache: AdapterCache, store: FakeStore
) -> None:
    adapter = make_adapter(store, adapter_files())
    first = await cache.ensure(adapter, s3=None, allow_pickle=False)
    again = await cache.ensure(adapter, s3=None, allow_pickle=False)

    restarted = AdapterCache(cache.root, fetch_presigned=store.fetch)
    assert restarted.is_verified(adapter.digest)
    after_restart = await restarted.ensure(adapter, s3=None, allow_pickle=False)

    assert first == again == after_restart
    assert len(store.calls) == 1


async def test_nested_file_paths_are_created(cache: AdapterCache, store: FakeStore) -> None:
    files = {**adapter_files(), "tokenizer/tokenizer.json": b"{}"}
    path = await cache.ensure(make_adapter(store, files), s3=None, allow_pickle=False)
    assert (path / "tokenizer" / "tokenizer.json").read_bytes() == b"{}"


async def test_sha256_from_the_spec_is_checked(cache: AdapterCache, store: FakeStore) -> None:
    weights = os.urandom(5000)
    good = "sha256:" + hashlib.sha256(weights).hexdigest()
    adapter = make_adapter(
        store, adapter_files(weights), sha256={"adapter_model.safetensors": good}
    )
    assert (await cache.ensure(adapter, s3=None, allow_pickle=False)).is_dir()


async def test_multipart_etags_verify_size_only(cache: AdapterCache, store: FakeStore) -> None:
    adapter = make_adapter(store, adapter_files())
    files = [
        f.model_copy(update={"etag": "0123456789abcdef0123456789abcdef-3"}) for f in adapter.files
    ]
    adapter = adapter.model_copy(update={"files": files})
    assert cache.is_verified(adapter.digest) is False
    assert (await cache.ensure(adapter, s3=None, allow_pickle=False)).is_dir()


# -- verification failures ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "want_message"),
    [
        pytest.param(
            {"etag": "0" * 32}, "differs from its ETag", id="single-part-etag-md5-mismatch"
        ),
        pytest.param(
            {"sha256": "sha256:" + "0" * 64}, "expected " + "0" * 64, id="sha256-mismatch"
        ),
        pytest.param({"size": 999}, "is 1000 bytes, expected 999", id="size-mismatch"),
    ],
)
async def test_mismatches_are_rejected_and_leave_nothing(
    cache: AdapterCache, store: FakeStore, change: dict[str, object], want_message: str
) -> None:
    adapter = make_adapter(store, adapter_files())
    files = [
        f.model_copy(update=change) if f.path == "adapter_model.safetensors" else f
        for f in adapter.files
    ]
    adapter = adapter.model_copy(update={"files": files})

    with pytest.raises(ArtifactRejected) as caught:
        await cache.ensure(adapter, s3=None, allow_pickle=False)

    assert caught.value.reason == "DigestMismatch"
    assert want_message in caught.value.message
    assert "adapter_model.safetensors" in caught.value.message
    assert not cache.path_for(adapter.digest).exists()
    assert leftovers(cache.root) == []


async def test_download_failure_leaves_no_temporary_folder(
    cache: AdapterCache, store: FakeStore
) -> None:
    store.fail_with = StorageUnavailable("throttled")
    adapter = make_adapter(store, adapter_files())
    with pytest.raises(StorageUnavailable):
        await cache.ensure(adapter, s3=None, allow_pickle=False)
    assert leftovers(cache.root) == []
    assert cache.digests() == set()


async def test_damaged_folder_is_not_verified_and_is_replaced(
    cache: AdapterCache, store: FakeStore
) -> None:
    adapter = make_adapter(store, adapter_files())
    path = await cache.ensure(adapter, s3=None, allow_pickle=False)
    weights = path / "adapter_model.safetensors"
    path.chmod(0o755)
    weights.chmod(0o644)
    weights.write_bytes(b"truncated")  # someone wrote behind the agent's back

    assert not cache.is_verified(adapter.digest)
    again = await cache.ensure(adapter, s3=None, allow_pickle=False)
    assert (again / "adapter_model.safetensors").read_bytes() == b"W" * 1000
    assert len(store.calls) == 2


# -- refusals before any download ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("files", "allow_pickle", "want_error", "want_reason"),
    [
        pytest.param(
            {"adapter_config.json": CONFIG, "adapter_model.bin": b"pickle"},
            False,
            ArtifactRejected,
            "PickleNotAllowed",
            id="pickle-only-refused",
        ),
        pytest.param(
            {"adapter_config.json": CONFIG, "adapter_model.pt": b"pickle"},
            False,
            ArtifactRejected,
            "PickleNotAllowed",
            id="pt-only-refused",
        ),
        pytest.param(
            {"adapter_config.json": CONFIG, "README.md": b"hi"},
            True,
            ArtifactRejected,
            "NoWeightFiles",
            id="no-weights",
        ),
        pytest.param(
            {"adapter_model.safetensors": b"w"},
            False,
            ArtifactNotFound,
            "ArtifactNotFound",
            id="no-adapter-config",
        ),
        pytest.param(
            {"adapter_config.json": CONFIG, "../../etc/passwd": b"x"},
            False,
            ArtifactRejected,
            "UnsafeFilePath",
            id="path-traversal",
        ),
        pytest.param(
            {"adapter_config.json": CONFIG, "/etc/cron.d/x": b"x"},
            False,
            ArtifactRejected,
            "UnsafeFilePath",
            id="absolute-path",
        ),
        pytest.param(
            {"adapter_config.json": CONFIG, "a\\..\\..\\x": b"x"},
            False,
            ArtifactRejected,
            "UnsafeFilePath",
            id="backslashes",
        ),
        pytest.param(
            {"adapter_config.json": CONFIG, MANIFEST_NAME: b"{}"},
            False,
            ArtifactRejected,
            "UnsafeFilePath",
            id="reserved-manifest-name",
        ),
    ],
)
async def test_refused_before_downloading(
    cache: AdapterCache,
    store: FakeStore,
    files: dict[str, bytes],
    allow_pickle: bool,
    want_error: type[Exception],
    want_reason: str,
) -> None:
    adapter = make_adapter(store, files)
    with pytest.raises(want_error) as caught:
        await cache.ensure(adapter, s3=None, allow_pickle=allow_pickle)
    assert getattr(caught.value, "reason", None) == want_reason
    assert store.calls == []
    assert list(cache.root.iterdir()) == []


async def test_pickle_weights_accepted_when_the_pool_allows(
    cache: AdapterCache, store: FakeStore
) -> None:
    files = {"adapter_config.json": CONFIG, "adapter_model.bin": b"pickle"}
    path = await cache.ensure(make_adapter(store, files), s3=None, allow_pickle=True)
    assert (path / "adapter_model.bin").read_bytes() == b"pickle"


async def test_safetensors_next_to_training_pickles_is_fine(
    cache: AdapterCache, store: FakeStore
) -> None:
    # vLLM reads adapter_model.safetensors first; a training_args.bin beside it is never loaded.
    files = {**adapter_files(), "training_args.bin": b"pickle"}
    assert (await cache.ensure(make_adapter(store, files), s3=None, allow_pickle=False)).is_dir()


async def test_pool_access_without_client_or_location_is_invalid(
    cache: AdapterCache, store: FakeStore
) -> None:
    adapter = make_adapter(store, adapter_files()).model_copy(update={"access": "pool"})
    with pytest.raises(InvalidSpec, match="pool access needs an S3 location"):
        await cache.ensure(adapter, s3=None, allow_pickle=False)


@pytest.mark.parametrize("digest", ["sha256:XYZ", "md5:" + "0" * 32, "sha256:" + "A" * 64, ""])
def test_malformed_digests_are_refused(cache: AdapterCache, digest: str) -> None:
    with pytest.raises(InvalidSpec, match="64 lowercase hex"):
        cache.path_for(digest)


# -- concurrency --------------------------------------------------------------------------------


async def test_concurrent_ensure_of_one_digest_downloads_once(
    cache: AdapterCache, store: FakeStore
) -> None:
    adapter = make_adapter(store, adapter_files())
    store.gate = asyncio.Event()
    tasks = [
        asyncio.create_task(cache.ensure(adapter, s3=None, allow_pickle=False)) for _ in range(5)
    ]
    await until(lambda: len(store.calls) == 1, "the first download started")
    await asyncio.sleep(0.01)  # the other four had every chance to start their own
    store.gate.set()
    paths = await asyncio.gather(*tasks)
    assert len(set(paths)) == 1
    assert len(store.calls) == 1


async def test_waiters_share_the_owner_failure(cache: AdapterCache, store: FakeStore) -> None:
    adapter = make_adapter(store, adapter_files())
    store.gate = asyncio.Event()
    store.fail_with = StorageUnavailable("503 SlowDown")
    tasks = [
        asyncio.create_task(cache.ensure(adapter, s3=None, allow_pickle=False)) for _ in range(3)
    ]
    await until(lambda: len(store.calls) == 1, "the first download started")
    await asyncio.sleep(0.01)
    store.gate.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(r, StorageUnavailable) for r in results)
    assert len(store.calls) == 1


async def test_a_waiter_takes_over_when_the_owner_is_cancelled(
    cache: AdapterCache, store: FakeStore
) -> None:
    adapter = make_adapter(store, adapter_files())
    store.gate = asyncio.Event()
    owner = asyncio.create_task(cache.ensure(adapter, s3=None, allow_pickle=False))
    await until(lambda: len(store.calls) == 1, "the owner's download started")
    waiter = asyncio.create_task(cache.ensure(adapter, s3=None, allow_pickle=False))
    await asyncio.sleep(0.01)  # the waiter is now waiting on the owner
    owner.cancel()
    await until(lambda: len(store.calls) == 2, "the waiter's own download started")
    store.gate.set()
    path = await waiter
    assert owner.cancelled()
    assert cache.is_verified(adapter.digest)
    assert path.is_dir()
    assert len(store.calls) == 2
    assert leftovers(cache.root) == []


# -- quota --------------------------------------------------------------------------------------


async def test_quota_is_checked_before_downloading(tmp_path: Path, store: FakeStore) -> None:
    cache = AdapterCache(tmp_path / "c", quota_bytes=1500, fetch_presigned=store.fetch)
    first = make_adapter(store, adapter_files(b"a" * 1000), name="team-a/one")
    await cache.ensure(first, s3=None, allow_pickle=False)
    second = make_adapter(store, adapter_files(b"b" * 1000), name="team-a/two")

    with pytest.raises(CapacityExceeded) as caught:
        await cache.ensure(second, s3=None, allow_pickle=False)

    message = caught.value.message
    need = 1000 + len(CONFIG)
    assert f"({need} bytes)" in message
    assert "spec.adapters.cacheSize" in message
    assert "team-a/two" in message
    assert len(store.calls) == 1

    # After the first version is collected there is room again.
    assert cache.remove_unused(keep={second.digest}) == [first.digest]
    assert (await cache.ensure(second, s3=None, allow_pickle=False)).is_dir()


async def test_quota_counts_downloads_in_flight(tmp_path: Path, store: FakeStore) -> None:
    cache = AdapterCache(tmp_path / "c", quota_bytes=2500, fetch_presigned=store.fetch)
    store.gate = asyncio.Event()
    one = make_adapter(store, adapter_files(b"a" * 1000), name="team-a/one")
    two = make_adapter(store, adapter_files(b"b" * 1000), name="team-a/two")
    three = make_adapter(store, adapter_files(b"c" * 1000), name="team-a/three")
    running = [
        asyncio.create_task(cache.ensure(a, s3=None, allow_pickle=False)) for a in (one, two)
    ]
    await until(lambda: len(store.calls) == 2, "both downloads started")
    with pytest.raises(CapacityExceeded, match="promised to downloads in flight"):
        await cache.ensure(three, s3=None, allow_pickle=False)
    store.gate.set()
    await asyncio.gather(*running)


def test_negative_quota_is_invalid(tmp_path: Path) -> None:
    with pytest.raises(InvalidSpec, match="quota"):
        AdapterCache(tmp_path, quota_bytes=-1)


# -- garbage collection -------------------------------------------------------------------------


async def test_remove_unused_keeps_what_is_listed_and_clears_leftovers(
    cache: AdapterCache, store: FakeStore
) -> None:
    kept = make_adapter(store, adapter_files(b"k" * 10), name="team-a/kept")
    old = make_adapter(store, adapter_files(b"o" * 10), name="team-a/old")
    for adapter in (kept, old):
        await cache.ensure(adapter, s3=None, allow_pickle=False)
    stale = cache.root / ".tmp-deadbeef"  # a download interrupted by a crash
    (stale / "sub").mkdir(parents=True)
    (stale / "sub" / "part").write_bytes(b"x" * 100)
    (stale / "sub").chmod(0o555)
    unrelated = cache.root / "lost+found"
    unrelated.mkdir()

    removed = cache.remove_unused(keep={kept.digest})

    assert removed == [old.digest]
    assert cache.digests() == {kept.digest}
    assert not stale.exists()
    assert unrelated.exists()  # not the cache's to delete
    assert cache.remove_unused(keep={kept.digest}) == []


async def test_remove_unused_spares_downloads_in_flight(
    cache: AdapterCache, store: FakeStore
) -> None:
    adapter = make_adapter(store, adapter_files())
    store.gate = asyncio.Event()
    task = asyncio.create_task(cache.ensure(adapter, s3=None, allow_pickle=False))
    await until(lambda: len(store.calls) == 1, "the download started")
    assert leftovers(cache.root)  # the download's temporary folder exists ...
    assert cache.remove_unused(keep=set()) == []
    assert leftovers(cache.root)  # ... and survives GC
    store.gate.set()
    await task
    assert cache.is_verified(adapter.digest)


# -- pool access over a fake S3 client ----------------------------------------------------------


class FakeS3:
    """The two S3Client methods the cache uses for access=pool, over in-memory objects."""

    def __init__(self, objects: dict[str, bytes], encryption: str | None = None) -> None:
        self.objects = objects
        self.encryption = encryption
        self.downloads: list[list[str]] = []
        self.heads: list[str] = []

    async def download(self, items: Sequence[DownloadItem], *, create_folders: bool = True) -> None:
        self.downloads.append([i.key for i in items])
        for item in items:
            item.dest.parent.mkdir(parents=True, exist_ok=True)
            item.dest.write_bytes(self.objects[item.key])

    async def head(self, bucket: str, key: str, *, version_id: str | None = None) -> ObjectInfo:
        self.heads.append(key)
        blob = self.objects[key]
        return ObjectInfo(key, len(blob), "kms-etag", version_id, self.encryption)


def pool_adapter(objects: dict[str, bytes], etags: dict[str, str]) -> DesiredAdapter:
    return DesiredAdapter(
        served_name="bot",
        adapter="team-a/bot",
        digest="sha256:" + hashlib.sha256(repr(sorted(etags.items())).encode()).hexdigest(),
        files=[
            FileSpec(path=key.removeprefix("p/"), size=len(blob), etag=etags[key], key=key)
            for key, blob in objects.items()
        ],
        access="pool",
        s3=S3Location(bucket="adapters", prefix="p/"),
    )


async def test_pool_access_downloads_by_key_into_validated_paths(tmp_path: Path) -> None:
    objects = {"p/adapter_config.json": CONFIG, "p/adapter_model.safetensors": b"w" * 10}
    etags = {k: hashlib.md5(v).hexdigest() for k, v in objects.items()}
    s3 = FakeS3(objects)
    cache = AdapterCache(tmp_path / "c")
    path = await cache.ensure(pool_adapter(objects, etags), s3=s3, allow_pickle=False)  # type: ignore[arg-type]
    assert (path / "adapter_model.safetensors").read_bytes() == b"w" * 10
    assert [sorted(keys) for keys in s3.downloads] == [sorted(objects)]  # one batch
    assert s3.heads == []  # ETags matched: no extra request


@pytest.mark.parametrize(
    ("encryption", "want_ok"),
    [
        pytest.param("aws:kms", True, id="sse-kms-etag-is-not-md5"),
        pytest.param("SSE-C", True, id="sse-c-etag-is-not-md5"),
        pytest.param("AES256", False, id="sse-s3-etag-is-md5"),
        pytest.param(None, False, id="plain-etag-is-md5"),
    ],
)
async def test_md5_mismatch_is_excused_only_for_kms_and_sse_c(
    tmp_path: Path, encryption: str | None, want_ok: bool
) -> None:
    objects = {"p/adapter_config.json": CONFIG, "p/adapter_model.safetensors": b"w" * 10}
    etags = {k: "f" * 32 for k in objects}  # 32 hex digits, but not the content's MD5
    s3 = FakeS3(objects, encryption)
    cache = AdapterCache(tmp_path / "c")
    adapter = pool_adapter(objects, etags)
    if want_ok:
        assert (await cache.ensure(adapter, s3=s3, allow_pickle=False)).is_dir()  # type: ignore[arg-type]
        assert sorted(s3.heads) == sorted(objects)
    else:
        with pytest.raises(ArtifactRejected, match="differs from its ETag"):
            await cache.ensure(adapter, s3=s3, allow_pickle=False)  # type: ignore[arg-type]


async def test_the_quota_keeps_headroom_below_the_volume_limit(
    tmp_path: Path, store: FakeStore
) -> None:
    # The quota is the emptyDir's sizeLimit: filling it exactly (files take whole disk blocks)
    # gets the GPU pod evicted, so an adapter as large as the quota is refused.
    adapter = make_adapter(store, adapter_files(b"a" * 1000), name="team-a/exact")
    need = 1000 + len(CONFIG)
    cache = AdapterCache(tmp_path / "c", quota_bytes=need, fetch_presigned=store.fetch)
    with pytest.raises(CapacityExceeded, match="kept free"):
        await cache.ensure(adapter, s3=None, allow_pickle=False)
    roomy = AdapterCache(
        tmp_path / "d", quota_bytes=need * 17 // 16 + 16, fetch_presigned=store.fetch
    )
    assert (await roomy.ensure(adapter, s3=None, allow_pickle=False)).is_dir()

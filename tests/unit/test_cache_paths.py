"""validate_file_path: adapter file names are never trusted as paths."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lorapack.agent.cachefiles import validate_file_path
from lorapack.agent.cachelayout import MANIFEST_NAME
from lorapack.errors import ArtifactRejected


@pytest.mark.parametrize(
    ("path", "want"),
    [
        pytest.param("adapter_model.safetensors", "adapter_model.safetensors", id="plain"),
        pytest.param("tokenizer/vocab.json", "tokenizer/vocab.json", id="nested"),
        pytest.param("..hidden", "..hidden", id="dots-inside-a-name"),
        pytest.param("a..b/c", "a..b/c", id="dots-in-the-middle"),
        pytest.param("weights:v2", "weights:v2", id="colon-not-a-drive"),
    ],
)
def test_accepted(path: str, want: str) -> None:
    assert str(validate_file_path(path)) == want


@pytest.mark.parametrize(
    ("path", "want_why"),
    [
        pytest.param("", "is empty", id="empty"),
        pytest.param("../x", "'..'", id="parent"),
        pytest.param("a/../../x", "'..'", id="parent-inside"),
        pytest.param("..", "'..'", id="only-parent"),
        pytest.param("/etc/passwd", "is absolute", id="absolute"),
        pytest.param("C:x", "is absolute", id="drive-letter"),
        pytest.param("a\\..\\x", "backslash", id="backslash"),
        pytest.param("a//b", "empty", id="empty-component"),
        pytest.param("./a", "'.'", id="dot"),
        pytest.param("a/", "empty", id="trailing-slash"),
        pytest.param("a\x00b", "control character", id="nul"),
        pytest.param("a\nb", "control character", id="newline"),
        pytest.param("x" * 256, "255 bytes", id="long-component"),
        pytest.param(MANIFEST_NAME, "reserved", id="manifest-name"),
    ],
)
def test_refused_with_a_message_naming_the_file(path: str, want_why: str) -> None:
    with pytest.raises(ArtifactRejected) as caught:
        validate_file_path(path, adapter="team-a/bot")
    assert caught.value.reason == "UnsafeFilePath"
    assert want_why in caught.value.message
    assert "team-a/bot" in caught.value.message
    assert "spec.source.s3.uri" in caught.value.message


@given(st.text(alphabet=st.sampled_from(list("ab./\\:\x00 ")), min_size=0, max_size=12))
def test_every_accepted_path_stays_inside_the_folder(path: str) -> None:
    root = Path("/cache/.tmp-x")
    try:
        rel = validate_file_path(path)
    except ArtifactRejected:
        return
    resolved = Path(os.path.normpath(root / rel))
    assert resolved.is_relative_to(root)
    assert resolved != root

"""Stages the tiny test model as a platform engineer stages a base model: in S3, before pools.

Every pool of the test world names `s3://models/tiny-llama/` (or `s3://models/tiny/`), and the
operator checks that folder before it starts a pool's pods (config.json, tokenizer,
safetensors). The pytest `s3_server` fixture and `Stack.start` call `stage_base_models` once.
"""

from __future__ import annotations

from lorapack_testworld.artifacts import ArtifactIndex, load_index
from lorapack_testworld.s3server import S3Server

__all__ = ["MODEL_BUCKET", "MODEL_PREFIXES", "stage_base_models"]

MODEL_BUCKET = "models"
MODEL_PREFIXES = ("tiny-llama/", "tiny/")


def stage_base_models(server: S3Server, index: ArtifactIndex | None = None) -> None:
    """Upload the tiny model under every prefix the test world's pools use."""
    found = index or load_index()
    server.create_bucket(MODEL_BUCKET)
    for prefix in MODEL_PREFIXES:
        server.upload_folder(MODEL_BUCKET, prefix, found.model.path)

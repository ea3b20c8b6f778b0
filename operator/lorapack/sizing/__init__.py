"""Sizing: what vLLM will do with a base model on a GPU (pure arithmetic, no I/O)."""

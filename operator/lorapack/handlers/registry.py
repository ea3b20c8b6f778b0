"""Imports every handler module so their kopf decorators register (and nothing else)."""

from lorapack.handlers import adapters, indexes, pods, pools, startup

__all__ = ["adapters", "indexes", "pods", "pools", "startup"]

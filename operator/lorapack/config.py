"""Operator and agent settings read from the environment (being built)."""

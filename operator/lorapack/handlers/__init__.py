"""Handlers: the only modules that import kopf; the operator's composition root."""

"""Imports every handler module so their kopf decorators register (being built)."""

"""Client for engine (being built)."""

"""Client for s3 (being built)."""

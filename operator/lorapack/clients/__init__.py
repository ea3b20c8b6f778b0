"""Clients: the only modules that talk to Kubernetes, S3 or vLLM."""

"""Manifests: pure builders of the Kubernetes objects lorapack owns."""

"""Client for kube (being built)."""

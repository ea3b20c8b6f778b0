"""Test-world parts shipped with the package: the vLLM engine double, the pod simulator."""

"""lorapack's test world: everything the tests, benchmarks and `make demo` run around the product.

A separate, dev-only distribution (`testworld/pyproject.toml`, installed editable by `make venv`):
the local control plane (`devcluster`), the S3 server and fault proxy, the vLLM engine double and
the real-vLLM launcher, the pod simulator and gateway, test artifacts, the demo and the benchmark
stack. The product package `lorapack` never imports it (an import-linter contract), and neither
the product wheel nor the image contains it.
"""

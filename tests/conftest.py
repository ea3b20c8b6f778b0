"""Root pytest configuration: fixture plugins shared by every tier.

Each plugin module owns one part of the test world:
* tests.fixtures.artifacts: the tiny Llama and PEFT adapters (built once, cached outside the repo)
* tests.fixtures.engines: the vLLM engine double and the real vLLM CPU engine
* tests.fixtures.s3: the loopback S3 server
* tests.fixtures.cluster: the local control plane with simulated GPU nodes
"""

pytest_plugins = [
    "tests.fixtures.artifacts",
    "tests.fixtures.engines",
    "tests.fixtures.s3",
    "tests.fixtures.cluster",
]

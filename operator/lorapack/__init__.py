"""lorapack: pack many teams' LoRA adapters onto shared vLLM GPU pools on Kubernetes.

Importing the package registers nothing (no kopf handlers); `lorapack.main` does that.
"""

__version__ = "0.1.0"

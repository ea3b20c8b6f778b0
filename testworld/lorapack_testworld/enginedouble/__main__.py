"""`python -m lorapack_testworld.enginedouble serve MODEL ...`: run the double like `vllm serve`.

Run by the pod simulator and the component tests as a subprocess; see `cli` for the flags.
"""

from __future__ import annotations

import sys

from lorapack_testworld.enginedouble.cli import main

__all__: list[str] = []

if __name__ == "__main__":
    sys.exit(main())

"""Entry point for `kopf run -m lorapack.main`: importing it registers every handler."""

import lorapack.handlers.registry  # noqa: F401  (registers the kopf handlers by import)

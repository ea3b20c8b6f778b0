"""Reconcilers: async orchestration over small Protocol ports; free of kopf and concrete clients."""

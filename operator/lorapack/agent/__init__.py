"""The in-pod agent: makes its engine hold exactly the adapters assigned to its pod."""

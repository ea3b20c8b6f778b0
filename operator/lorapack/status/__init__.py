"""Status: pure derivation of conditions and status blocks from observed state."""

"""statefleet."""

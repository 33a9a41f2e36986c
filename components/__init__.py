"""facegate components."""

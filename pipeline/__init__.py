"""facegate pipeline."""

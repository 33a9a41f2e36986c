"""facegate export."""

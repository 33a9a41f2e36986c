"""facegate serving."""

"""vla/data."""

"""vla/rth."""

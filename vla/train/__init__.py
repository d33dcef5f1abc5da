"""vla/train."""

"""vla/model."""

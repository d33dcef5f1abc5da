"""vla/vgps."""

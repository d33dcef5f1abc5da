"""hardware.widowx."""

"""hardware.franka."""

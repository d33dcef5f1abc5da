"""hardware.dynamixel."""

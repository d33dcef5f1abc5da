"""Fixtures for hardware tests: an emulated WidowX 250 servo chain on a pseudo-terminal."""
from __future__ import annotations

import pytest
from dynamixel_emulator import EmulatorProcess
from emulated_widowx import widowx_specs


@pytest.fixture
def emulator():
    """A configured wx250s chain; yields the EmulatorProcess (its `.port` is the pty path)."""
    with EmulatorProcess(widowx_specs()) as emu:
        yield emu

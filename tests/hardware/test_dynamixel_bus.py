"""DynamixelBus (official dynamixel-sdk) against the emulated chain on a pseudo-terminal."""
from __future__ import annotations

import pytest

from emulated_widowx import TEST_MARGIN_MS

from hardware.dynamixel.bus import DynamixelBus
from hardware.dynamixel.tables import MODELS, XL430_W250, XM430_W350
from hardware.errors import CommunicationError, PortError, ServoMissingError


@pytest.fixture
def bus(emulator):
    b = DynamixelBus(emulator.port, 1_000_000, timeout_margin_ms=TEST_MARGIN_MS)
    yield b
    b.close()


def test_ping_reports_each_model(bus):
    assert bus.ping(1) == XM430_W350.number
    assert bus.ping(9) == XL430_W250.number


def test_missing_servo_is_named(bus):
    with pytest.raises(ServoMissingError, match="id 42"):
        bus.ping(42)


def test_write_then_read_a_register(bus):
    reg = XM430_W350.register("profile_velocity")
    bus.write(1, reg, 77)
    assert bus.read(1, reg) == 77


def test_eeprom_write_with_torque_on_is_a_typed_error(bus):
    bus.write(1, XM430_W350.register("torque_enable"), 1)
    with pytest.raises(CommunicationError, match="access error"):
        bus.write(1, XM430_W350.register("operating_mode"), 16)


def test_sync_read_decodes_each_model(bus, emulator):
    emulator.set(8, "present_temperature", 51)
    models = {i: MODELS["XM430-W350"] for i in range(1, 8)} | {8: XL430_W250, 9: XL430_W250}
    state = bus.sync_read_block(models, "hardware_error_status", "present_temperature")
    assert sorted(state) == list(range(1, 10))
    assert state[8]["present_temperature"] == 51
    assert "present_load" in state[9] and "present_current" in state[1]
    assert state[1]["present_input_voltage"] == 121


def test_sync_read_names_a_servo_that_stopped_answering(bus, emulator):
    emulator.unplug(7)
    models = {i: XM430_W350 for i in range(1, 8)}
    with pytest.raises(ServoMissingError, match=r"\[7\]"):
        bus.sync_read_block(models, "present_position", "present_position")


def test_sync_write_reaches_every_servo(bus, emulator):
    reg = XM430_W350.register("profile_velocity")
    bus.sync_write(reg, {1: 11, 4: 44, 6: 66})
    assert [emulator.get(i, "profile_velocity") for i in (1, 4, 6)] == [11, 44, 66]


def test_reboot_clears_a_transient_fault(bus, emulator):
    emulator.fault(6, 0x20)
    reg = XM430_W350.register("hardware_error_status")
    assert bus.read(6, reg) == 0x20 and 6 in bus.alerts
    bus.reboot(6)
    assert bus.read(6, reg) == 0 and 6 not in bus.alerts


def test_missing_port_says_what_to_check(tmp_path):
    with pytest.raises(PortError, match="U2D2"):
        DynamixelBus(str(tmp_path / "ttyUSB9"))


def test_unsupported_baud_is_refused():
    with pytest.raises(PortError, match="baud 12345"):
        DynamixelBus("/dev/null", 12345)

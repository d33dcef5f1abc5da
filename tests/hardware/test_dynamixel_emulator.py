"""The emulator itself speaks Protocol 2.0: CRC, stuffing, status packets, shadows, EEPROM rules."""
from __future__ import annotations

import dynamixel_sdk as sdk
import pytest
from dynamixel_emulator import (
    ERR_ACCESS, ERR_CRC, PING, READ, SYNC_WRITE, WRITE, EmulatedBus, ServoSpec, crc16, instruction_packet,
    status_packet, stuff, unstuff,
)

from hardware.dynamixel.tables import ALERT_BIT, XM430_W350


def test_crc_matches_the_official_sdk_table():
    handler = sdk.PacketHandler(2.0)
    for payload in (b"", b"\xff\xff\xfd\x00\x01\x03\x00\x01", bytes(range(256))):
        assert crc16(payload) == handler.updateCRC(0, list(payload), len(payload))


def test_e_manual_ping_example_crc():
    # e-Manual Protocol 2.0, "Ping" example: instruction to id 1 is FF FF FD 00 01 03 00 01 19 4E
    assert instruction_packet(1, PING) == bytes.fromhex("FFFFFD0001030001194E")


def test_stuffing_round_trips_and_inserts_after_header_pattern():
    body = bytes([0x55, 0x00, 0xFF, 0xFF, 0xFD, 0x07])
    stuffed = stuff(body)
    assert stuffed == bytes([0x55, 0x00, 0xFF, 0xFF, 0xFD, 0xFD, 0x07])
    assert unstuff(stuffed) == body


def _bus() -> EmulatedBus:
    return EmulatedBus([ServoSpec(2, "XM430-W350"), ServoSpec(3, "XM430-W350", config=(("secondary_id", 2),))])


def _params(address: int, *values: int) -> bytes:
    return bytes([address & 0xFF, address >> 8, *values])


def test_read_returns_memory_in_a_status_packet():
    bus = _bus()
    (reply,) = bus.feed(instruction_packet(2, READ, _params(0, 2, 0)))
    assert reply == status_packet(2, 0, (1020).to_bytes(2, "little"))


def test_corrupt_crc_gets_a_crc_error_status():
    packet = bytearray(instruction_packet(2, PING))
    packet[-1] ^= 0xFF
    (reply,) = _bus().feed(bytes(packet))
    assert reply[8] == ERR_CRC


def test_shadow_takes_writes_to_its_master_silently():
    bus = _bus()
    replies = bus.feed(instruction_packet(2, WRITE, _params(116, *(3000).to_bytes(4, "little"))))
    assert len(replies) == 1 and replies[0][4] == 2  # only the master answers
    assert bus.servos[3].get("goal_position") == 3000


def test_eeprom_write_with_torque_on_is_refused():
    bus = _bus()
    bus.feed(instruction_packet(2, WRITE, _params(64, 1)))
    (reply,) = bus.feed(instruction_packet(2, WRITE, _params(11, 16)))
    assert reply[8] == ERR_ACCESS
    assert bus.servos[2].get("operating_mode") == 3


def test_sync_write_moves_servos_toward_goals_at_profile_velocity():
    bus = _bus()
    bus.feed(instruction_packet(2, WRITE, _params(64, 1)))
    bus.feed(instruction_packet(3, WRITE, _params(64, 1)))
    bus.feed(instruction_packet(0xFE, SYNC_WRITE, _params(116, 4, 0, 2, *(2148).to_bytes(4, "little"))))
    bus.advance(0.01)
    moved = bus.servos[2].get("present_position") - 2048
    speed = XM430_W350.defaults["velocity_limit"] * 0.229 / 60 * 4096  # counts/s
    assert moved == pytest.approx(speed * 0.01, abs=1)
    for _ in range(100):
        bus.advance(0.01)
    assert bus.servos[2].get("present_position") == 2148 == bus.servos[3].get("present_position")


def test_fault_sets_alert_bit_until_reboot():
    bus = _bus()
    bus.servos[2].inject_fault(0x04, persistent=False)
    (reply,) = bus.feed(instruction_packet(2, PING))
    assert reply[8] & ALERT_BIT
    bus.feed(instruction_packet(2, 0x08))
    (reply,) = bus.feed(instruction_packet(2, PING))
    assert not reply[8] & ALERT_BIT

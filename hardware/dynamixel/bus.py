"""A Dynamixel Protocol 2.0 bus over the official `dynamixel-sdk`: typed reads, writes and syncs.

Registers are addressed by name through `hardware.dynamixel.tables`; every call checks the
communication result and the status packet's error byte, and reads are retried once after a
timeout because a USB (or pty) round trip can take tens of milliseconds on a loaded computer.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

import dynamixel_sdk as sdk
import serial

from hardware.dynamixel.tables import ALERT_BIT, STATUS_ERRORS, Register, ServoModel
from hardware.errors import CommunicationError, PortError, ServoMissingError

log = logging.getLogger(__name__)

PROTOCOL_VERSION = 2.0
READ_ATTEMPTS = 2  # one retry after a timeout before a servo is declared missing
SUPPORTED_BAUDS = (9_600, 57_600, 115_200, 1_000_000, 2_000_000, 3_000_000, 4_000_000)


def to_unsigned(value: int, size: int) -> int:
    """Two's-complement encode `value` into `size` bytes."""
    return value & ((1 << (8 * size)) - 1)


def to_signed(raw: int, size: int) -> int:
    """Decode a `size`-byte two's-complement integer."""
    bits = 8 * size
    return raw - (1 << bits) if raw & (1 << (bits - 1)) else raw


def decode(reg: Register, raw: int) -> int:
    """A raw register value as the integer it means (sign applied)."""
    return to_signed(raw, reg.size) if reg.signed else raw


def le_bytes(value: int, size: int) -> list[int]:
    """Little-endian byte list of an unsigned value."""
    return list(to_unsigned(value, size).to_bytes(size, "little"))


class _Port(sdk.PortHandler):
    """The SDK's port with a configurable margin on its packet timeout (~34 ms by default)."""

    def __init__(self, port_name: str, margin_ms: float):
        super().__init__(port_name)
        self.margin_ms = margin_ms

    def setPacketTimeout(self, packet_length):  # noqa: N802 (SDK name)
        super().setPacketTimeout(packet_length)
        self.packet_timeout += self.margin_ms


class DynamixelBus:
    """One serial port with Protocol 2.0 servos behind it."""

    def __init__(self, port: str, baud: int = 1_000_000, timeout_margin_ms: float = 0.0):
        if baud not in SUPPORTED_BAUDS:
            raise PortError(f"baud {baud} is not one the Dynamixel SDK can set; use one of {SUPPORTED_BAUDS}")
        if timeout_margin_ms < 0:
            raise PortError(f"timeout_margin_ms must be >= 0, got {timeout_margin_ms}")
        self.port_name, self.baud = port, baud
        self._port = _Port(port, timeout_margin_ms)
        self._packet = sdk.PacketHandler(PROTOCOL_VERSION)
        self.alerts: set[int] = set()  # ids whose last status packet carried the hardware alert bit
        try:
            opened = self._port.openPort() and self._port.setBaudRate(baud)
        except (serial.SerialException, OSError) as e:
            raise PortError(
                f"cannot open serial port {port!r}: {e}. Check the U2D2 is plugged in (ls /dev/ttyUSB* "
                "/dev/serial/by-id), pass its path with --port, and make sure this user may open it "
                "(group dialout)") from e
        if not opened:
            raise PortError(f"cannot open serial port {port!r} at {baud} baud; check the path and the baud")
        log.info("opened %s at %d baud", port, baud)

    def close(self) -> None:
        """Close the serial port (idempotent)."""
        if self._port.is_open:
            self._port.closePort()

    # -- checking ------------------------------------------------------------------------------
    def _check(self, what: str, servo_id: int, result: int, error: int) -> None:
        if result != sdk.COMM_SUCCESS:
            if result == sdk.COMM_RX_TIMEOUT:
                raise ServoMissingError(
                    f"servo id {servo_id} on {self.port_name} did not answer {what}: check its cable, power "
                    f"(12 V), id and baud ({self.baud})")
            raise CommunicationError(f"{what} to servo id {servo_id}: {self._packet.getTxRxResult(result)}")
        self._note_error(servo_id, error, what)

    def _note_error(self, servo_id: int, error: int, what: str) -> None:
        if error & ALERT_BIT:
            self.alerts.add(servo_id)
        else:
            self.alerts.discard(servo_id)
        number = error & ~ALERT_BIT
        if number:
            meaning = STATUS_ERRORS.get(number, f"unknown error {number}")
            raise CommunicationError(f"servo id {servo_id} rejected {what}: {meaning}")

    # -- single servo --------------------------------------------------------------------------
    def ping(self, servo_id: int) -> int:
        """Model number of `servo_id`; retried once, then ServoMissingError."""
        for attempt in range(READ_ATTEMPTS):
            model, result, error = self._packet.ping(self._port, servo_id)
            if result != sdk.COMM_RX_TIMEOUT or attempt == READ_ATTEMPTS - 1:
                self._check("ping", servo_id, result, error)
                return model
            log.debug("ping of id %d timed out; retrying once", servo_id)
        raise AssertionError("unreachable")

    def read(self, servo_id: int, reg: Register) -> int:
        """Read one register of one servo (retried once after a timeout)."""
        for attempt in range(READ_ATTEMPTS):
            data, result, error = self._packet.readTxRx(self._port, servo_id, reg.address, reg.size)
            if result != sdk.COMM_RX_TIMEOUT or attempt == READ_ATTEMPTS - 1:
                self._check(f"read of {reg.name}", servo_id, result, error)
                return decode(reg, int.from_bytes(bytes(data[: reg.size]), "little"))
        raise AssertionError("unreachable")

    def read_block(self, servo_id: int, model: ServoModel, first: str, last: str) -> dict[str, int]:
        """Read the registers from `first` to `last` (inclusive) of one servo in one packet."""
        regs, start, length = _span(model, first, last)
        for attempt in range(READ_ATTEMPTS):
            data, result, error = self._packet.readTxRx(self._port, servo_id, start, length)
            if result != sdk.COMM_RX_TIMEOUT or attempt == READ_ATTEMPTS - 1:
                self._check(f"read of {first}..{last}", servo_id, result, error)
                return _unpack(regs, start, bytes(data))
        raise AssertionError("unreachable")

    def write(self, servo_id: int, reg: Register, value: int) -> None:
        """Write one register of one servo and check its status packet."""
        if not reg.writable:
            raise CommunicationError(f"register {reg.name} (address {reg.address}) is read-only")
        result, error = self._packet.writeTxRx(
            self._port, servo_id, reg.address, reg.size, le_bytes(value, reg.size))
        self._check(f"write of {reg.name}={value}", servo_id, result, error)

    def reboot(self, servo_id: int) -> None:
        """Reboot one servo (clears a hardware error; torque comes back off)."""
        result, error = self._packet.reboot(self._port, servo_id)
        # the status packet of a reboot still carries the alert bit of the fault being cleared
        if result != sdk.COMM_SUCCESS:
            self._check("reboot", servo_id, result, error)
        self.alerts.discard(servo_id)

    # -- groups --------------------------------------------------------------------------------
    def sync_read_block(self, models: Mapping[int, ServoModel], first: str, last: str) -> dict[int, dict[str, int]]:
        """Sync-read registers `first`..`last` from every id (decoded with its model) in one instruction."""
        ids = list(models)
        if not ids:
            return {}
        _, start, length = _span(models[ids[0]], first, last)
        group = sdk.GroupSyncRead(self._port, self._packet, start, length)
        for servo_id in ids:
            group.addParam(servo_id)
        for attempt in range(READ_ATTEMPTS):
            result = group.txRxPacket()
            if result == sdk.COMM_SUCCESS:
                break
            if result != sdk.COMM_RX_TIMEOUT or attempt == READ_ATTEMPTS - 1:
                missing = [i for i in ids if not group.data_dict.get(i)]
                if result == sdk.COMM_RX_TIMEOUT:
                    raise ServoMissingError(
                        f"sync read of {first}..{last}: servo ids {missing} on {self.port_name} did not answer; "
                        f"check cables, power and ids (`vla robot check`)")
                raise CommunicationError(f"sync read of {first}..{last}: {self._packet.getTxRxResult(result)}")
            log.debug("sync read timed out; retrying once")
        out = {}
        for i in ids:
            regs, _, _ = _span(models[i], first, last)
            out[i] = _unpack(regs, start, bytes(group.data_dict[i]))
        return out

    def sync_write(self, reg: Register, values: Mapping[int, int]) -> None:
        """Write `reg` on several servos in one instruction (no status packets come back)."""
        if not reg.writable:
            raise CommunicationError(f"register {reg.name} (address {reg.address}) is read-only")
        group = sdk.GroupSyncWrite(self._port, self._packet, reg.address, reg.size)
        for servo_id, value in values.items():
            group.addParam(servo_id, le_bytes(value, reg.size))
        result = group.txPacket()
        if result != sdk.COMM_SUCCESS:
            raise CommunicationError(f"sync write of {reg.name}: {self._packet.getTxRxResult(result)}")


def _span(model: ServoModel, first: str, last: str) -> tuple[list[Register], int, int]:
    lo, hi = model.register(first), model.register(last)
    if hi.address < lo.address:
        raise ValueError(f"register {last} comes before {first}")
    regs = [r for r in model.registers.values() if lo.address <= r.address <= hi.address]
    return regs, lo.address, hi.address + hi.size - lo.address


def _unpack(regs: list[Register], start: int, data: bytes) -> dict[str, int]:
    out = {}
    for reg in regs:
        offset = reg.address - start
        out[reg.name] = decode(reg, int.from_bytes(data[offset: offset + reg.size], "little"))
    return out

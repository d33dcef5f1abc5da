"""An emulator of Dynamixel X-series servos on a Protocol 2.0 bus, behind a pseudo-terminal.

It answers ping (unicast and broadcast), read, write, reboot, sync read and sync write with
status packets carrying correct CRC-16 and byte stuffing (ROBOTIS e-Manual, "Protocol 2.0"),
applies the Secondary (Shadow) ID rule, refuses EEPROM writes while torque is on, keeps
hardware errors until a reboot, and moves each torqued servo toward its goal at its profile
velocity. The register layout comes from `hardware.dynamixel.tables` (the e-Manual tables).

`EmulatorProcess` runs the bus in a child process (so a busy test process cannot starve it) and
exposes a small control channel for tests: read or force a register, inject a fault, unplug a
servo, and read the log of instructions the bus received.
"""
from __future__ import annotations

import dataclasses
import multiprocessing
import os
import select
import time
import tty

from hardware.dynamixel.tables import ALERT_BIT, MODELS, Area, OperatingMode, ServoModel

HEADER = bytes([0xFF, 0xFF, 0xFD, 0x00])
BROADCAST = 0xFE
STATUS = 0x55
PING, READ, WRITE, REBOOT, SYNC_READ, SYNC_WRITE = 0x01, 0x02, 0x03, 0x08, 0x82, 0x83
ERR_RESULT_FAIL, ERR_INSTRUCTION, ERR_CRC, ERR_RANGE, ERR_LIMIT, ERR_ACCESS = 0x01, 0x02, 0x03, 0x04, 0x06, 0x07
MEMORY_SIZE = 147 + 1  # last address of the table is Present Temperature (146)
FIGHT_TOLERANCE = 20  # counts a shadow's goal may differ from its master's before they fight
FIGHT_SECONDS = 0.05  # fighting that long trips Overload on both
OVERLOAD = 0x20


def crc16(data: bytes) -> int:
    """CRC-16 of Protocol 2.0 (polynomial 0x8005, initial 0, not reflected), bit by bit."""
    crc = 0
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x8005) if crc & 0x8000 else (crc << 1)
            crc &= 0xFFFF
    return crc


def stuff(body: bytes) -> bytes:
    """Insert 0xFD after every FF FF FD in the instruction/params part."""
    out = bytearray()
    for b in body:
        out.append(b)
        if len(out) >= 3 and out[-3:] == b"\xff\xff\xfd":
            out.append(0xFD)
    return bytes(out)


def unstuff(body: bytes) -> bytes:
    """Remove the 0xFD that follows every FF FF FD."""
    out = bytearray()
    i = 0
    while i < len(body):
        out.append(body[i])
        if len(out) >= 3 and out[-3:] == b"\xff\xff\xfd" and i + 1 < len(body) and body[i + 1] == 0xFD:
            i += 1
        i += 1
    return bytes(out)


def status_packet(servo_id: int, error: int, params: bytes = b"") -> bytes:
    """A complete status packet (header, stuffed body, CRC)."""
    body = stuff(bytes([STATUS, error]) + params)
    length = len(body) + 2
    head = HEADER + bytes([servo_id, length & 0xFF, length >> 8])
    crc = crc16(head + body)
    return head + body + bytes([crc & 0xFF, crc >> 8])


def instruction_packet(servo_id: int, instruction: int, params: bytes = b"") -> bytes:
    """A complete instruction packet (used by the emulator's own tests)."""
    body = stuff(bytes([instruction]) + params)
    length = len(body) + 2
    head = HEADER + bytes([servo_id, length & 0xFF, length >> 8])
    crc = crc16(head + body)
    return head + body + bytes([crc & 0xFF, crc >> 8])


@dataclasses.dataclass(frozen=True)
class ServoSpec:
    """One emulated servo: id, model, mechanical stops and starting position (counts)."""

    id: int
    model: str
    position: int = 2048
    stops: tuple[int, int] = (0, 4095)  # where the mechanism stops the horn
    config: tuple[tuple[str, int], ...] = ()  # registers already configured, e.g. (("baud_rate", 3),)


class EmulatedServo:
    """Memory and motion of one servo."""

    def __init__(self, spec: ServoSpec):
        self.spec = spec
        self.model: ServoModel = MODELS[spec.model]
        self.memory = bytearray(MEMORY_SIZE)
        self.persistent_fault = 0
        self.fight_seconds = 0.0
        self._position = float(spec.position)
        self.factory_reset(keep_eeprom=False)

    def factory_reset(self, keep_eeprom: bool) -> None:
        eeprom = {r.name: self.get(r.name) for r in self.model.registers.values() if r.area is Area.EEPROM}
        self.memory[:] = bytes(MEMORY_SIZE)
        for name, value in self.model.defaults.items():
            self.set(name, value)
        if keep_eeprom:
            for name, value in eeprom.items():
                self.set(name, value)
        else:
            self.set("id", self.spec.id)
            for name, value in self.spec.config:
                self.set(name, value)
        self.set("present_input_voltage", 121)  # 12.1 V
        self.set("present_temperature", 36)
        self.set("goal_position", round(self._position))
        self.set("present_position", round(self._position))
        self.set("hardware_error_status", self.persistent_fault)

    def get(self, name: str) -> int:
        reg = self.model.register(name)
        raw = int.from_bytes(self.memory[reg.address: reg.address + reg.size], "little")
        if reg.signed and raw & (1 << (8 * reg.size - 1)):
            raw -= 1 << (8 * reg.size)
        return raw

    def set(self, name: str, value: int) -> None:
        reg = self.model.register(name)
        raw = value & ((1 << (8 * reg.size)) - 1)
        self.memory[reg.address: reg.address + reg.size] = raw.to_bytes(reg.size, "little")

    @property
    def fault(self) -> int:
        return self.get("hardware_error_status")

    def inject_fault(self, bits: int, persistent: bool) -> None:
        """Latch a hardware error: torque drops and stays off until a reboot."""
        self.set("hardware_error_status", self.fault | bits)
        self.set("torque_enable", 0)
        if persistent:
            self.persistent_fault |= bits

    def error_byte(self, number: int = 0) -> int:
        return number | (ALERT_BIT if self.fault else 0)

    def write(self, address: int, data: bytes) -> int:
        """Apply a write; returns the status error number (0 when accepted)."""
        end = address + len(data)
        touched = [r for r in self.model.registers.values() if r.address < end and address < r.address + r.size]
        if not touched or end > MEMORY_SIZE:
            return ERR_ACCESS
        for reg in touched:
            if not reg.writable or (reg.area is Area.EEPROM and self.get("torque_enable")):
                return ERR_ACCESS
        before = bytes(self.memory)
        self.memory[address:end] = data
        goal = self.get("goal_position")
        if any(r.name == "goal_position" for r in touched) and self.get("operating_mode") == OperatingMode.POSITION:
            if not self.get("min_position_limit") <= goal <= self.get("max_position_limit"):
                self.memory[:] = before
                return ERR_LIMIT
        if any(r.name == "torque_enable" for r in touched) and self.fault:
            self.set("torque_enable", 0)  # a latched fault keeps torque off until reboot
        if any(r.name == "operating_mode" for r in touched):
            if self.get("operating_mode") not in {int(m) for m in self.model.operating_modes}:
                self.memory[:] = before
                return ERR_RANGE
        return 0

    def advance(self, dt: float) -> None:
        """Move the horn toward the goal for `dt` seconds."""
        unit = self.model.velocity_unit_rpm / 60.0 * self.model.position_units_per_rev  # counts/s per unit
        speed = 0.0
        if self.get("torque_enable") and not self.fault:
            mode = self.get("operating_mode")
            limit = self.get("velocity_limit")
            if mode in (OperatingMode.POSITION, OperatingMode.EXTENDED_POSITION, OperatingMode.CURRENT_BASED_POSITION):
                profile = self.get("profile_velocity")
                vmax = (profile if 0 < profile < limit else limit) * unit
                error = self.get("goal_position") - self._position
                step = max(-vmax * dt, min(vmax * dt, error))
                speed = step / dt if dt > 0 else 0.0
            elif mode == OperatingMode.PWM:
                pwm_limit = max(self.get("pwm_limit"), 1)
                speed = max(-1.0, min(1.0, self.get("goal_pwm") / pwm_limit)) * limit * unit
            elif mode == OperatingMode.VELOCITY:
                speed = max(-limit, min(limit, self.get("goal_velocity"))) * unit
        lo, hi = self.spec.stops
        new = min(max(self._position + speed * dt, lo), hi)
        speed = (new - self._position) / dt if dt > 0 else 0.0
        self._position = new
        self.set("present_position", round(new))
        self.set("present_velocity", round(speed / unit))
        self.set("moving", int(abs(speed) > 0.5 * unit))
        pushing = self.get("operating_mode") == OperatingMode.PWM and self.get("torque_enable") and new in (lo, hi)
        effort = self.get("goal_pwm") // 2 if pushing else 0
        self.set(self.model.effort_register, effort)


class EmulatedBus:
    """Servos sharing one Protocol 2.0 bus: bytes in, status packets out."""

    def __init__(self, specs: list[ServoSpec]):
        self.servos = {s.id: EmulatedServo(s) for s in specs}
        self.unplugged: set[int] = set()
        # (id, instruction, address or -1) of each packet, plus one per servo addressed by a sync write
        self.log: list[tuple[int, int, int]] = []
        self._buffer = bytearray()

    def present(self, servo_id: int) -> bool:
        return servo_id in self.servos and servo_id not in self.unplugged

    def advance(self, dt: float) -> None:
        for servo in self.servos.values():
            if servo.spec.id not in self.unplugged:
                servo.advance(dt)
        self._check_fights(dt)

    def _check_fights(self, dt: float) -> None:
        for shadow in self.servos.values():
            master = self.servos.get(shadow.get("secondary_id"))
            if master is None:
                continue
            both_on = shadow.get("torque_enable") and master.get("torque_enable")
            apart = abs(shadow.get("goal_position") - master.get("goal_position")) > FIGHT_TOLERANCE
            shadow.fight_seconds = shadow.fight_seconds + dt if both_on and apart else 0.0
            if shadow.fight_seconds > FIGHT_SECONDS:
                shadow.inject_fault(OVERLOAD, persistent=False)
                master.inject_fault(OVERLOAD, persistent=False)

    def feed(self, data: bytes) -> list[bytes]:
        """Consume bytes from the host; return the status packets to send back."""
        self._buffer += data
        replies: list[bytes] = []
        while True:
            start = self._buffer.find(HEADER)
            if start < 0:
                del self._buffer[: max(0, len(self._buffer) - 3)]
                return replies
            del self._buffer[:start]
            if len(self._buffer) < 7:
                return replies
            length = self._buffer[5] | (self._buffer[6] << 8)
            total = 7 + length
            if len(self._buffer) < total:
                return replies
            packet = bytes(self._buffer[:total])
            del self._buffer[:total]
            replies += self._handle(packet)

    def _targets(self, servo_id: int) -> list[EmulatedServo]:
        """Servos that act on an instruction for `servo_id`: itself and its shadows."""
        return [s for s in self.servos.values() if self.present(s.spec.id)
                and (s.spec.id == servo_id or s.get("secondary_id") == servo_id)]

    def _handle(self, packet: bytes) -> list[bytes]:
        servo_id, body, crc = packet[4], packet[7:-2], packet[-2] | (packet[-1] << 8)
        if crc16(packet[:-2]) != crc:
            self.log.append((servo_id, -1, -1))
            return [status_packet(servo_id, ERR_CRC)] if servo_id != BROADCAST and self.present(servo_id) else []
        body = unstuff(body)
        instruction, params = body[0], body[1:]
        address = params[0] | (params[1] << 8) if len(params) >= 2 else -1
        self.log.append((servo_id, instruction, address))
        if instruction == PING:
            ids = sorted(i for i in self.servos if self.present(i)) if servo_id == BROADCAST else [servo_id]
            return [self._ping_reply(i) for i in ids if self.present(i)]
        if instruction == SYNC_READ:
            length = params[2] | (params[3] << 8)
            return [self._read_reply(i, address, length) for i in params[4:] if self.present(i)]
        if instruction == SYNC_WRITE:
            length = params[2] | (params[3] << 8)
            entries = params[4:]
            for k in range(0, len(entries), length + 1):
                self.log.append((entries[k], SYNC_WRITE, address))  # one record per addressed servo
                for servo in self._targets(entries[k]):
                    servo.write(address, bytes(entries[k + 1: k + 1 + length]))
            return []
        targets = [s for s in self.servos.values() if self.present(s.spec.id)] if servo_id == BROADCAST \
            else self._targets(servo_id)
        replies = []
        for servo in targets:
            error = self._apply(servo, instruction, params)
            if servo.spec.id == servo_id:  # shadows and broadcast targets stay silent
                if instruction == READ and not error:
                    replies.append(self._read_reply(servo_id, address, params[2] | (params[3] << 8)))
                else:
                    replies.append(status_packet(servo_id, servo.error_byte(error)))
        return replies

    def _apply(self, servo: EmulatedServo, instruction: int, params: bytes) -> int:
        if instruction == READ:
            return 0
        if instruction == WRITE:
            return servo.write(params[0] | (params[1] << 8), bytes(params[2:]))
        if instruction == REBOOT:
            servo.factory_reset(keep_eeprom=True)
            return 0
        return ERR_INSTRUCTION

    def _ping_reply(self, servo_id: int) -> bytes:
        servo = self.servos[servo_id]
        number = servo.get("model_number")
        return status_packet(servo_id, servo.error_byte(), bytes([number & 0xFF, number >> 8,
                                                                  servo.get("firmware_version")]))

    def _read_reply(self, servo_id: int, address: int, length: int) -> bytes:
        servo = self.servos[servo_id]
        if address + length > MEMORY_SIZE:
            return status_packet(servo_id, servo.error_byte(ERR_ACCESS))
        return status_packet(servo_id, servo.error_byte(), bytes(servo.memory[address: address + length]))


# -- the child process ---------------------------------------------------------------------------
MAX_TICK_SECONDS = 0.05  # wake at least this often so fights and motion integrate in small steps


def _serve(conn, specs: list[ServoSpec]) -> None:  # runs in the child process
    master, slave = os.openpty()
    tty.setraw(slave)
    bus = EmulatedBus(specs)
    conn.send(os.ttyname(slave))
    last = time.monotonic()
    while True:
        # motion is a function of elapsed time, so the servos advance when someone looks (no busy ticking)
        ready, _, _ = select.select([master, conn], [], [], MAX_TICK_SECONDS)
        now = time.monotonic()
        bus.advance(now - last)
        last = now
        if master in ready:
            for reply in bus.feed(os.read(master, 4096)):
                os.write(master, reply)
        if conn in ready:
            command, *args = conn.recv()
            if command == "stop":
                conn.send(None)
                break
            conn.send(_control(bus, command, args))
    os.close(master)
    os.close(slave)


def _control(bus: EmulatedBus, command: str, args: list):
    if command == "get":
        servo_id, name = args
        return bus.servos[servo_id].get(name)
    if command == "set":
        servo_id, name, value = args
        servo = bus.servos[servo_id]
        servo.set(name, value)
        if name == "present_position":
            servo._position = float(value)
        return None
    if command == "fault":
        servo_id, bits, persistent = args
        bus.servos[servo_id].inject_fault(bits, persistent)
        return None
    if command == "unplug":
        bus.unplugged.add(args[0])
        return None
    if command == "log":
        return list(bus.log)
    raise ValueError(f"unknown emulator command {command!r}")


class EmulatorProcess:
    """The emulated bus in a child process; `.port` is the pty path a driver opens."""

    def __init__(self, specs: list[ServoSpec]):
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._process = ctx.Process(target=_serve, args=(child, specs), daemon=True)
        self._process.start()
        if not self._conn.poll(30):
            self._process.kill()
            raise RuntimeError("the Dynamixel emulator did not start within 30 s")
        self.port: str = self._conn.recv()

    def _call(self, *message):
        self._conn.send(message)
        return self._conn.recv()

    def get(self, servo_id: int, register: str) -> int:
        """A register's current value, read around the bus."""
        return self._call("get", servo_id, register)

    def set(self, servo_id: int, register: str, value: int) -> None:
        """Force a register (e.g. temperature) as the physics would."""
        self._call("set", servo_id, register, value)

    def fault(self, servo_id: int, bits: int, persistent: bool = False) -> None:
        """Latch a hardware error on one servo."""
        self._call("fault", servo_id, bits, persistent)

    def unplug(self, servo_id: int) -> None:
        """Make one servo stop answering."""
        self._call("unplug", servo_id)

    def log(self) -> list[tuple[int, int, int]]:
        """(id, instruction, address) of every packet the bus received."""
        return self._call("log")

    def close(self) -> None:
        if self._process.is_alive():
            self._call("stop")
        self._process.join(timeout=5)

    def __enter__(self) -> EmulatorProcess:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

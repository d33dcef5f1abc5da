"""Dynamixel X-series control tables (Protocol 2.0) as data.

Source: ROBOTIS e-Manual, "XM430-W350" and "XL430-W250" pages, section "Control Table"
(https://emanual.robotis.com/docs/en/dxl/x/xm430-w350/ and .../xl430-w250/), and
"Protocol 2.0" (https://emanual.robotis.com/docs/en/dxl/protocol2/) for instructions and errors.
The two models share one layout; XL430-W250 lacks Current Limit / Goal Current, and its address 126
is Present Load (0.1 %) rather than Present Current.
"""
from __future__ import annotations

import dataclasses
import enum


class Area(enum.Enum):
    EEPROM = "eeprom"  # writable only while Torque Enable is 0
    RAM = "ram"


@dataclasses.dataclass(frozen=True)
class Register:
    name: str
    address: int
    size: int  # bytes, little endian
    writable: bool
    area: Area
    signed: bool = False


def _r(name: str, address: int, size: int, writable: bool, area: Area, signed: bool = False) -> Register:
    return Register(name, address, size, writable, area, signed)


E, R = Area.EEPROM, Area.RAM
# Layout shared by XM430-W350 and XL430-W250 (e-Manual control tables, firmware 45+).
_COMMON: tuple[Register, ...] = (
    _r("model_number", 0, 2, False, E),
    _r("model_information", 2, 4, False, E),
    _r("firmware_version", 6, 1, False, E),
    _r("id", 7, 1, True, E),
    _r("baud_rate", 8, 1, True, E),
    _r("return_delay_time", 9, 1, True, E),
    _r("drive_mode", 10, 1, True, E),
    _r("operating_mode", 11, 1, True, E),
    _r("secondary_id", 12, 1, True, E),
    _r("protocol_type", 13, 1, True, E),
    _r("homing_offset", 20, 4, True, E, signed=True),
    _r("moving_threshold", 24, 4, True, E),
    _r("temperature_limit", 31, 1, True, E),
    _r("max_voltage_limit", 32, 2, True, E),
    _r("min_voltage_limit", 34, 2, True, E),
    _r("pwm_limit", 36, 2, True, E),
    _r("velocity_limit", 44, 4, True, E),
    _r("max_position_limit", 48, 4, True, E),
    _r("min_position_limit", 52, 4, True, E),
    _r("shutdown", 63, 1, True, E),
    _r("torque_enable", 64, 1, True, R),
    _r("led", 65, 1, True, R),
    _r("status_return_level", 68, 1, True, R),
    _r("registered_instruction", 69, 1, False, R),
    _r("hardware_error_status", 70, 1, False, R),
    _r("velocity_i_gain", 76, 2, True, R),
    _r("velocity_p_gain", 78, 2, True, R),
    _r("position_d_gain", 80, 2, True, R),
    _r("position_i_gain", 82, 2, True, R),
    _r("position_p_gain", 84, 2, True, R),
    _r("bus_watchdog", 98, 1, True, R),
    _r("goal_pwm", 100, 2, True, R, signed=True),
    _r("goal_velocity", 104, 4, True, R, signed=True),
    _r("profile_acceleration", 108, 4, True, R),
    _r("profile_velocity", 112, 4, True, R),
    _r("goal_position", 116, 4, True, R, signed=True),
    _r("realtime_tick", 120, 2, False, R),
    _r("moving", 122, 1, False, R),
    _r("moving_status", 123, 1, False, R),
    _r("present_pwm", 124, 2, False, R, signed=True),
    _r("present_velocity", 128, 4, False, R, signed=True),
    _r("present_position", 132, 4, False, R, signed=True),
    _r("velocity_trajectory", 136, 4, False, R, signed=True),
    _r("position_trajectory", 140, 4, False, R, signed=True),
    _r("present_input_voltage", 144, 2, False, R),
    _r("present_temperature", 146, 1, False, R),
)
_XM_ONLY = (
    _r("current_limit", 38, 2, True, E),
    _r("goal_current", 102, 2, True, R, signed=True),
    _r("present_current", 126, 2, False, R, signed=True),  # 2.69 mA per unit
)
_XL_ONLY = (_r("present_load", 126, 2, False, R, signed=True),)  # 0.1 % of max torque per unit


class OperatingMode(enum.IntEnum):
    """Operating Mode (address 11) values, e-Manual."""

    CURRENT = 0  # XM only
    VELOCITY = 1
    POSITION = 3
    EXTENDED_POSITION = 4
    CURRENT_BASED_POSITION = 5  # XM only
    PWM = 16


class HardwareErrorBit(enum.IntFlag):
    """Hardware Error Status (address 70) bits, e-Manual."""

    INPUT_VOLTAGE = 0x01
    OVERHEATING = 0x04
    MOTOR_ENCODER = 0x08
    ELECTRICAL_SHOCK = 0x10
    OVERLOAD = 0x20


# Status packet error byte (Protocol 2.0): bit 7 is the hardware alert, bits 0-6 the error number.
ALERT_BIT = 0x80
STATUS_ERRORS = {
    0x01: "result fail",
    0x02: "instruction error",
    0x03: "CRC error",
    0x04: "data range error",
    0x05: "data length error",
    0x06: "data limit error",
    0x07: "access error (EEPROM written with torque on, or a read-only address)",
}

# Baud Rate (address 8) code -> bits per second.
BAUD_CODES = {0: 9_600, 1: 57_600, 2: 115_200, 3: 1_000_000, 4: 2_000_000, 5: 3_000_000, 6: 4_000_000}


@dataclasses.dataclass(frozen=True)
class ServoModel:
    """One Dynamixel model: number, registers, factory defaults and units."""

    name: str
    number: int  # Model Number register value
    registers: dict[str, Register]
    defaults: dict[str, int]  # factory values of the registers a fresh servo holds
    operating_modes: frozenset[OperatingMode]
    position_units_per_rev: int = 4096  # 0.088 deg per unit
    velocity_unit_rpm: float = 0.229
    voltage_unit_v: float = 0.1
    effort_register: str = "present_current"

    def register(self, name: str) -> Register:
        """The register called `name`, or an error naming the ones this model has."""
        if name not in self.registers:
            raise KeyError(f"{self.name} has no register {name!r}; it has {sorted(self.registers)}")
        return self.registers[name]


def _table(*groups: tuple[Register, ...]) -> dict[str, Register]:
    return {reg.name: reg for group in groups for reg in group}


# Factory defaults (e-Manual "Initial Value" column) that differ between the models or matter here.
_DEFAULTS_COMMON = {
    "id": 1, "baud_rate": 1, "return_delay_time": 250, "drive_mode": 0, "operating_mode": 3,
    "secondary_id": 255, "protocol_type": 2, "moving_threshold": 10, "temperature_limit": 72,
    "pwm_limit": 885, "max_position_limit": 4095, "min_position_limit": 0, "shutdown": 52,
    "status_return_level": 2, "position_p_gain": 800, "profile_velocity": 0, "firmware_version": 45,
}
XM430_W350 = ServoModel(
    name="XM430-W350",
    number=1020,
    registers=_table(_COMMON, _XM_ONLY),
    defaults={**_DEFAULTS_COMMON, "model_number": 1020, "temperature_limit": 80, "max_voltage_limit": 160,
              "min_voltage_limit": 95, "current_limit": 1193, "velocity_limit": 200},
    operating_modes=frozenset(OperatingMode),
)
XL430_W250 = ServoModel(
    name="XL430-W250",
    number=1060,
    registers=_table(_COMMON, _XL_ONLY),
    defaults={**_DEFAULTS_COMMON, "model_number": 1060, "max_voltage_limit": 140, "min_voltage_limit": 60,
              "velocity_limit": 265},
    operating_modes=frozenset(OperatingMode) - {OperatingMode.CURRENT, OperatingMode.CURRENT_BASED_POSITION},
    effort_register="present_load",
)
MODELS: dict[str, ServoModel] = {m.name: m for m in (XM430_W350, XL430_W250)}
MODELS_BY_NUMBER: dict[int, ServoModel] = {m.number: m for m in MODELS.values()}

"""The emulated WidowX 250 servo chain that hardware tests drive (specs and test settings)."""
from __future__ import annotations

from dynamixel_emulator import ServoSpec

from hardware.widowx.config import WX250S_SERVOS, WidowXConfig, rad_to_count

# CI shares two cores among many tests: give the pty round trip more than the SDK's ~34 ms
TEST_MARGIN_MS = 500.0
# finger travel 0.015..0.037 m <-> gripper servo about -1.1..+0.35 rad (Interbotix linkage)
GRIPPER_STOPS = (rad_to_count(-1.1), rad_to_count(0.35))


def widowx_specs(configured: bool = True) -> list[ServoSpec]:
    """The nine wx250s servos resting in the sleep pose; `configured`: EEPROM as Interbotix leaves it."""
    sleep = dict(zip(("waist", "shoulder", "elbow", "forearm_roll", "wrist_angle", "wrist_rotate"),
                     WidowXConfig().sleep))
    sleep |= {"shoulder_shadow": sleep["shoulder"], "elbow_shadow": sleep["elbow"], "gripper": 0.0}
    ids = {s.joint: s.id for s in WX250S_SERVOS}
    specs = []
    for s in WX250S_SERVOS:
        config: tuple[tuple[str, int], ...] = (("baud_rate", 3),)
        if configured:
            config += (("return_delay_time", 0), ("drive_mode", int(s.reverse)),
                       ("operating_mode", int(s.operating_mode)),
                       ("secondary_id", ids[s.shadow_of] if s.shadow_of else 255),
                       ("min_position_limit", s.min_count), ("max_position_limit", s.max_count))
        stops = GRIPPER_STOPS if s.joint == "gripper" else (s.min_count, s.max_count)
        specs.append(ServoSpec(s.id, s.model, rad_to_count(sleep[s.joint]), stops, config))
    return specs

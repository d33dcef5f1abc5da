"""The WidowX driver over dynamixel-sdk against the emulated servo chain (it cannot tell)."""
from __future__ import annotations

import time

import numpy as np
import pytest
from emulated_widowx import TEST_MARGIN_MS, widowx_specs
from dynamixel_emulator import SYNC_WRITE, WRITE, EmulatorProcess

from hardware.errors import JointLimitError, ServoFaultError, ServoMissingError
from hardware.widowx import kinematics
from hardware.widowx.config import WidowXConfig, rad_to_count
from robot.protocols import Robot

GOAL_POSITION, TORQUE_ENABLE = 116, 64


@pytest.fixture
def arm(emulator):
    robot = WidowXConfig(port=emulator.port, timeout_margin_ms=TEST_MARGIN_MS).make()
    yield robot
    robot.close()


def test_driver_is_a_robot_with_the_bridge_spec(arm):
    assert isinstance(arm, Robot)
    assert arm.spec.control_hz == 5.0 and arm.spec.action_dim == 7


def test_reset_reaches_home_and_reports_proprio(arm, emulator):
    obs = arm.reset()
    np.testing.assert_allclose(obs.info["joints"], arm.config.home, atol=arm.config.reach_tolerance_rad)
    np.testing.assert_allclose(obs.proprio[:3], kinematics.forward(obs.info["joints"])[:3, 3], atol=1e-6)
    assert emulator.get(9, "goal_pwm") == arm.config.gripper_pwm  # gripper opened in PWM mode


def test_act_moves_the_fingertip_by_the_delta(arm):
    start = arm.reset().proprio[:3].astype(np.float64)
    delta = np.array([0.03, -0.02, 0.02, 0.0, 0.0, 0.1, 0.0])
    result = arm.act(delta)
    assert result.info["ik_iterations"] >= 1
    arm.move_joints(result.info["commanded_joints"])  # wait for the servos to arrive
    reached = arm.observe().proprio[:3]
    # 4096 counts per turn quantize joints to 1.5 mrad: a few mm at the fingertip
    np.testing.assert_allclose(reached, start + delta[:3], atol=0.004)


def test_gripper_closes_below_threshold(arm, emulator):
    arm.reset()
    arm.act(np.array([0, 0, 0, 0, 0, 0, 0.2]))
    assert emulator.get(9, "goal_pwm") == -arm.config.gripper_pwm


def test_commands_go_to_masters_only(arm, emulator):
    arm.reset()
    for _ in range(3):
        arm.act(np.array([0.01, 0, 0, 0, 0, 0, 1.0]))
    goal_writes = [(i, ins) for i, ins, addr in emulator.log() if addr == GOAL_POSITION]
    assert goal_writes and all(ins == SYNC_WRITE for _, ins in goal_writes)
    assert {i for i, _ in goal_writes} == {0xFE, 1, 2, 4, 6, 7, 8}  # never the shadows 3 and 5
    assert emulator.get(3, "hardware_error_status") == 0 == emulator.get(5, "hardware_error_status")
    assert emulator.get(3, "goal_position") == emulator.get(2, "goal_position")


def test_unreachable_target_is_refused_and_nothing_is_sent(arm, emulator):
    arm.reset()
    before = len(emulator.log())
    with pytest.raises(JointLimitError):
        arm.act(np.array([0.5, 0, 0, 0, 0, 0, 1.0]))  # 0.5 m beyond the fingertip: out of reach
    new = [entry for entry in emulator.log()[before:] if entry[2] == GOAL_POSITION]
    assert new == []


def test_joint_goal_beyond_limits_is_refused(arm):
    arm.reset()
    with pytest.raises(JointLimitError, match="elbow"):
        arm.move_joints(np.array([0.0, 0.0, np.radians(100), 0.0, 0.0, 0.0]))


def test_fault_during_run_stops_with_a_typed_error(arm, emulator):
    arm.reset()
    emulator.fault(4, 0x04)
    with pytest.raises(ServoFaultError, match="overheating"):
        arm.act(np.zeros(7))


def test_recover_reboots_a_transient_fault_and_continues(arm, emulator):
    arm.reset()
    emulator.fault(8, 0x20)
    with pytest.raises(ServoFaultError, match="wrist_rotate.*overload"):
        arm.act(np.zeros(7))
    arm.recover()
    assert emulator.get(8, "hardware_error_status") == 0 and emulator.get(8, "torque_enable") == 1
    arm.act(np.array([0.01, 0, 0, 0, 0, 0, 1.0]))


def test_transient_fault_is_rebooted_at_connect():
    with EmulatorProcess(widowx_specs()) as emu:
        emu.fault(7, 0x01)
        WidowXConfig(port=emu.port, timeout_margin_ms=TEST_MARGIN_MS).make().close()
        assert emu.get(7, "hardware_error_status") == 0


def test_persistent_fault_refuses_to_connect():
    with EmulatorProcess(widowx_specs()) as emu:
        emu.fault(2, 0x20, persistent=True)
        with pytest.raises(ServoFaultError, match="shoulder.*overload"):
            WidowXConfig(port=emu.port, timeout_margin_ms=TEST_MARGIN_MS).make()


def test_missing_servo_refuses_to_connect():
    with EmulatorProcess(widowx_specs()) as emu:
        emu.unplug(8)
        with pytest.raises(ServoMissingError, match=r"wrist_rotate \(id 8\)"):
            WidowXConfig(port=emu.port, timeout_margin_ms=TEST_MARGIN_MS).make()


def test_factory_servos_get_the_chain_eeprom_settings():
    with EmulatorProcess(widowx_specs(configured=False)) as emu:
        arm = WidowXConfig(port=emu.port, timeout_margin_ms=TEST_MARGIN_MS).make()
        try:
            assert emu.get(3, "secondary_id") == 2 and emu.get(5, "secondary_id") == 4
            assert emu.get(7, "drive_mode") == 1 and emu.get(9, "operating_mode") == 16
            assert emu.get(1, "return_delay_time") == 0
            arm.reset()  # shadows now follow: no fight, no overload
            assert emu.get(3, "hardware_error_status") == 0
        finally:
            arm.close()


def test_hold_freezes_the_goal_at_the_present_position(arm, emulator):
    arm.reset()
    commanded = arm.act(np.array([0.05, 0, 0, 0, 0, 0, 1.0])).info["commanded_joints"]
    arm.hold()
    held = emulator.get(2, "goal_position")
    assert abs(held - rad_to_count(commanded[1])) > 5  # stopped short of the step's goal
    time.sleep(0.2)
    assert abs(emulator.get(2, "present_position") - held) <= 1


def test_park_rests_the_arm_and_drops_torque(arm, emulator):
    arm.reset()
    arm.close(park=True)
    assert emulator.get(1, "torque_enable") == 0
    assert abs(emulator.get(2, "present_position") - rad_to_count(arm.config.sleep[1])) < 20
    assert (2, WRITE, TORQUE_ENABLE) in emulator.log()


def test_hold_during_reset_aborts_the_move(arm, emulator):
    import threading

    from hardware.errors import RobotMotionError

    start = emulator.get(2, "present_position")
    raised = []

    def reset():
        try:
            arm.reset()  # sleep -> home takes ~0.6 s
        except RobotMotionError as e:
            raised.append(e)

    thread = threading.Thread(target=reset)
    thread.start()
    deadline = time.monotonic() + 10
    while abs(emulator.get(2, "present_position") - start) < 20 and time.monotonic() < deadline:
        time.sleep(0.005)  # wait until the shoulder is on its way
    arm.hold()  # what the e-stop key thread does
    thread.join(timeout=10)
    assert raised and "interrupted by hold" in str(raised[0])
    time.sleep(0.2)
    goal, present = emulator.get(2, "goal_position"), emulator.get(2, "present_position")
    assert abs(goal - present) <= 2 and abs(goal - rad_to_count(arm.config.home[1])) > 20

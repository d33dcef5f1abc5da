"""`vla robot check`: a health table from reads only; non-zero exit for missing or faulted servos."""
from __future__ import annotations

import numpy as np
import pytest
from dynamixel_emulator import PING, READ, EmulatorProcess
from emulated_widowx import TEST_MARGIN_MS, widowx_specs

from hardware.cli import robot_check
from hardware.errors import ConfigError
from hardware.registry import build_robot_config
from scripts.robot import main as robot_main


def _check(port: str, *cameras: str) -> tuple[int, str]:
    return robot_check("widowx", cameras=cameras, port=port, timeout_margin_ms=TEST_MARGIN_MS)


def test_healthy_chain_prints_every_servo_and_only_reads(emulator):
    emulator.set(4, "present_temperature", 47)
    code, table = _check(emulator.port)
    assert code == 0 and table.splitlines()[-1] == "OK"
    for joint in ("waist", "shoulder_shadow", "elbow", "wrist_rotate", "gripper"):
        assert joint in table
    elbow = next(line for line in table.splitlines() if line.startswith("elbow "))
    assert "47 C" in elbow and "XM430-W350" in elbow and "12.1 V" in elbow and "rad" in elbow
    assert {instruction for _, instruction, _ in emulator.log()} <= {PING, READ}  # never writes
    assert emulator.get(1, "torque_enable") == 0


def test_fault_and_missing_servo_fail_the_check():
    with EmulatorProcess(widowx_specs()) as emu:
        emu.fault(6, 0x04)
        emu.unplug(9)
        code, table = _check(emu.port)
    assert code == 1 and table.splitlines()[-1] == "NOT OK"
    assert "overheating" in next(line for line in table.splitlines() if line.startswith("forearm_roll"))
    assert "no answer" in next(line for line in table.splitlines() if line.startswith("gripper"))


def test_cli_check_exit_code_and_cameras(emulator, tmp_path, capsys):
    cv2 = pytest.importorskip("cv2")
    video = tmp_path / "cam.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (40, 30))
    writer.write(np.full((30, 40, 3), 90, np.uint8))
    writer.release()
    code = robot_main(["check", "--robot", "widowx", "--port", emulator.port, "--timeout-margin-ms",
                       str(TEST_MARGIN_MS), "--camera", f"primary={video}@40x30"])
    out = capsys.readouterr().out
    assert code == 0 and "cameras" in out and "40x30" in out


def test_options_of_the_other_robot_are_refused():
    with pytest.raises(ConfigError, match="widowx does not take.*--host"):
        build_robot_config("widowx", host="10.0.0.2")
    with pytest.raises(ConfigError, match="did you mean \\['franka'\\]"):
        build_robot_config("franke")


def test_franka_check_names_an_unreachable_host():
    pytest.importorskip("franky")
    code, table = robot_check("franka", host="127.0.0.253", realtime="ignore")
    assert code == 1 and "127.0.0.253" in table and "NOT OK" in table


def test_cli_reports_user_mistakes_without_a_traceback(tmp_path, capsys):
    code = robot_main(["check", "--robot", "widowx", "--port", str(tmp_path / "ttyUSB7")])
    err = capsys.readouterr().err
    assert code == 2 and "PortError" in err and "ttyUSB7" in err and "Traceback" not in err


def test_robot_verb_imports_without_torch_or_tensorflow():
    import subprocess
    import sys

    code = "import sys; sys.modules['torch'] = None; sys.modules['tensorflow'] = None; import scripts.robot"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)

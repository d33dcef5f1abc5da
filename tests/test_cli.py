import subprocess
import sys

from scripts.cli import VERBS, main


def test_help_lists_every_verb(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for verb in VERBS:
        assert verb in out


def test_unknown_verb_suggests_close_name(capsys):
    assert main(["serv"]) == 2
    assert "did you mean 'serve'" in capsys.readouterr().err


def test_console_script_installed():
    proc = subprocess.run([sys.executable, "-m", "scripts.cli", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and "usage: vla" in proc.stdout

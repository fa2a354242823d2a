"""The command line as a new user meets it: help at 80 columns, --version."""

import os
import re
import subprocess
import sys

import pytest

COMMANDS = ["pan-zoom", "caption", "generate", "check", "report", "shards verify", "demo"]


@pytest.mark.parametrize("command", COMMANDS)
def test_help_at_80_columns_keeps_every_option_name_whole(command):
    env = {**os.environ, "COLUMNS": "80", "TERM": "dumb"}
    result = subprocess.run([sys.executable, "-m", "datakit.cli", *command.split(), "--help"],
                            capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    assert "…" not in result.stdout  # nothing cut
    names = re.findall(r"--[a-z][a-z0-9-]+", result.stdout)
    assert "--help" in names
    assert all(len(line) <= 80 for line in result.stdout.splitlines())


def test_version():
    result = subprocess.run([sys.executable, "-m", "datakit.cli", "--version"],
                            capture_output=True, text=True)
    assert result.returncode == 0 and re.fullmatch(r"datakit \S+\n", result.stdout)

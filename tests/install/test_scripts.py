"""shellcheck on the install scripts (Debian: apt-get install -y shellcheck)."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from install_helpers import ROOT

SCRIPTS = [ROOT / "scripts" / "kind-demo.sh"]


@pytest.fixture(scope="module")
def shellcheck() -> str:
    path = shutil.which("shellcheck")
    assert path, "shellcheck is not installed: apt-get install -y shellcheck"
    return path


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_shellcheck(shellcheck: str, script: str) -> None:
    proc = subprocess.run(
        [shellcheck, "--severity=style", "--external-sources", str(script)], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_shellcheck_finds_problems(shellcheck: str, tmp_path: object) -> None:
    """shellcheck does report an unquoted expansion (so the test above can fail)."""
    proc = subprocess.run([shellcheck, "-"], input="#!/bin/bash\nrm $1\n", capture_output=True, text=True, check=False)
    assert proc.returncode != 0 and "SC2086" in proc.stdout


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_help_and_unknown_command(script: str) -> None:
    """The parts that need no Docker: --help prints the usage, an unknown command fails with a message."""
    ok = subprocess.run(["bash", str(script), "--help"], capture_output=True, text=True, check=False)
    assert ok.returncode == 0 and "Usage:" in ok.stdout
    bad = subprocess.run(["bash", str(script), "frobnicate"], capture_output=True, text=True, check=False)
    assert bad.returncode == 1 and "unknown command: frobnicate" in bad.stderr

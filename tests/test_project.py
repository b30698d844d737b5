"""The project's front door: README quick start, CI entry point, docs, CLI basics."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

import dapper_trio

ROOT = Path(__file__).resolve().parents[1]
CONSOLE_SCRIPT = Path(sys.executable).parent / "dapper-trio"


def _quick_start_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sh\n(.+?)\n```", section, re.S)


def test_readme_has_two_quick_start_lines() -> None:
    """The README's quick start is exactly two one-line commands."""
    commands = _quick_start_commands()
    assert len(commands) == 2
    assert all("\n" not in command for command in commands)
    assert "dapper-trio run" in commands[0]


def test_ci_runs_the_readme_test_command() -> None:
    """.ci/run runs the README's second quick-start line verbatim."""
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert _quick_start_commands()[1] in ci


def test_docs_check_passes() -> None:
    """docs/_tools/check_docs.py finds nothing stale, undocumented or broken."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "docs" / "_tools" / "check_docs.py")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    "command",
    [[str(CONSOLE_SCRIPT)], [sys.executable, "-m", "dapper_trio"]],
    ids=["console-script", "python-m"],
)
def test_version_and_help(command: list[str]) -> None:
    """Both entry points answer --version and --help, and run --help."""
    version = subprocess.run(
        [*command, "--version"], capture_output=True, text=True, timeout=30, check=False
    )
    assert version.returncode == 0
    assert version.stdout.startswith(f"dapper-trio {dapper_trio.__version__} (trio ")
    helped = subprocess.run(
        [*command, "--help"], capture_output=True, text=True, timeout=30, check=False
    )
    assert helped.returncode == 0
    assert "run" in helped.stdout
    run_help = subprocess.run(
        [*command, "run", "--help"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert run_help.returncode == 0
    for option in ("--continue", "--break", "--in-process", "--ipc", "tasks [-a]"):
        assert option in run_help.stdout


def test_bad_command_lines_are_clear_errors() -> None:
    """No command, an unknown one, or a bad breakpoint: a usage error, status 2."""
    cases = [
        ([], "usage: dapper-trio"),
        (["frobnicate"], "invalid choice"),
        (["run"], "give a script to run"),
        (["run", "-b", "nowhere", "x.py"], "bad breakpoint 'nowhere'"),
        (["run", "--ipc", "carrier-pigeon", "x.py"], "invalid choice"),
    ]
    for args, message in cases:
        result = subprocess.run(
            [sys.executable, "-m", "dapper_trio", *args],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert result.returncode == 2, args
        assert message in result.stdout + result.stderr, args

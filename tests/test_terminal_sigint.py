"""Ctrl-C at a real terminal: at the prompt, while running, twice, and after c."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest
from terminal import (
    PROGRAMS,
    Terminal,
    line_of,
    run_argv,
    run_under_debugger,
    terminal_env,
)

pytestmark = pytest.mark.timeout(60)

SLEEPER = PROGRAMS / "sleeper.py"


@pytest.fixture(params=["subprocess", "in-process"], name="mode")
def _mode(request: pytest.FixtureRequest) -> str:
    mode: str = request.param
    return mode


def _wait_running(term: Terminal) -> None:
    # The program prints "running" once its tasks are started; give the loop
    # a moment to settle into its wait (or its spinning) before Ctrl-C.
    term.expect("running")
    time.sleep(0.2)


def test_ctrl_c_at_prompt_clears_the_line(mode: str) -> None:
    """Ctrl-C at the prompt drops the typed line and redraws the prompt."""
    with run_under_debugger("tasks_demo.py", mode=mode) as term:
        term.expect_prompt()
        for _ in range(3):
            term.send("p 'typed but ' + 'never run'")
            time.sleep(0.2)
            term.interrupt()
            out = term.expect_prompt()
            assert "KeyboardInterrupt" not in out
            assert "typed but never run" not in out  # the line was dropped
        # The prompt is usable and the program intact.
        assert term.cmd("p 6 * 7").strip() == "42"
        term.sendline("c")
        assert "result 7" in term.expect_exit()
    assert term.exitstatus == 0


def test_ctrl_c_pauses_a_busy_task(mode: str) -> None:
    """Ctrl-C while a task computes pauses at that task's line."""
    with run_under_debugger("sleeper.py", "spin", mode=mode, options=["-c"]) as term:
        _wait_running(term)
        term.interrupt()
        out = term.expect_prompt()
        assert "[dapper-trio] interrupted (Ctrl-C) in task 'spinner'" in out
        assert "spinner()" in out
        assert "*t" in next(
            row for row in term.cmd("tasks").splitlines() if "spinner" in row
        )
        term.sendline("q")
        rest = term.expect_exit()
    assert "sleeper finally ran" in rest
    assert term.exitstatus == 1


def test_ctrl_c_pauses_an_idle_loop(mode: str) -> None:
    """Ctrl-C while trio waits on a timer wakes the loop and pauses on main's await."""
    with run_under_debugger("sleeper.py", mode=mode, options=["-c"]) as term:
        _wait_running(term)
        term.interrupt()
        out = term.expect_prompt()
        assert (
            "interrupted (Ctrl-C) while the trio loop was idle in task '__main__.main'"
            in out
        )
        tree = term.cmd("tasks")
        assert f"sleeper.py:{line_of(SLEEPER, 'sleep')} in sleeper" in tree
        # Continue, and pause again: Ctrl-C keeps working after c.
        term.sendline("c")
        time.sleep(0.3)
        term.interrupt()
        assert "interrupted (Ctrl-C)" in term.expect_prompt()
        term.sendline("q")
        rest = term.expect_exit()
    assert "sleeper finally ran" in rest
    assert "debugger quit" in rest
    assert term.exitstatus == 1


def test_double_ctrl_c_is_a_keyboard_interrupt(mode: str) -> None:
    """A second Ctrl-C within a second of an unserved pause raises KeyboardInterrupt."""
    with run_under_debugger("sleeper.py", "block", mode=mode, options=["-c"]) as term:
        term.expect("blocking")
        time.sleep(0.3)
        term.interrupt()  # the program is stuck in time.sleep: the pause waits
        time.sleep(0.2)
        term.interrupt()
        rest = term.expect_exit()
    assert "KeyboardInterrupt" in rest
    assert "sleeper finally ran" in rest
    assert "post-mortem" not in rest
    # As under plain python: the KeyboardInterrupt left trio inside a
    # BaseExceptionGroup (it was raised in a nursery), so the status is 1.
    assert "BaseExceptionGroup" in rest
    assert term.exitstatus == 1


def test_ctrl_c_after_continue_in_plain_app_is_trios() -> None:
    """After c from breakpoint() in a plain python app, Ctrl-C is trio's own again."""
    with Terminal([sys.executable, "plain_app.py"], env=terminal_env()) as term:
        out = term.expect_prompt()
        assert "[dapper-trio] breakpoint() in task '__main__.main' (t1)" in out
        term.sendline("c")
        term.expect("values 41")
        time.sleep(0.3)
        term.interrupt()
        rest = term.expect_exit()
    assert "got KeyboardInterrupt" in rest
    assert term.signalstatus == signal.SIGINT


def test_pause_lands_in_the_task_about_to_run(mode: str) -> None:
    """Ctrl-C in trio's scheduler with a task about to run pauses in that task."""
    argv = run_argv(mode, "-c")
    result = subprocess.run(
        [*argv, "pause_race.py"],
        cwd=PROGRAMS,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=60,
        env=terminal_env(),
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "pauses sent 20" in result.stdout
    pauses = [
        line for line in result.stderr.splitlines() if "interrupted (Ctrl-C)" in line
    ]
    assert len(pauses) == 20, result.stderr
    assert all("in task 'busy'" in line for line in pauses), result.stderr


def test_ctrl_c_while_trio_run_sets_up_pauses(mode: str) -> None:
    """A Ctrl-C that comes while trio.run is still setting up pauses too.

    It used to reach trio's own handler (the session handed SIGINT to trio
    for the whole set-up) and kill the program with a KeyboardInterrupt; an
    editor's pause, which is a SIGINT, was lost the same way.
    """
    with run_under_debugger(
        "sigint_at_run_start.py", mode=mode, options=["-c"]
    ) as term:
        out = term.expect_prompt()
        assert "interrupted (Ctrl-C)" in out
        assert "KeyboardInterrupt" not in out
        term.continue_to_end("survived the Ctrl-C")

"""How a ``dapper-trio run`` session ends, and that it leaves nothing behind.

The program continues to its end, the user quits, the program crashes, Ctrl-C
twice, the terminal closes, the supervisor is terminated, the debuggee is
killed, or there is no terminal at all.  Every test runs at a real terminal
(except the one without a terminal), and the harness in conftest.py fails a
test that leaves a process or a socket file behind.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

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

QUIT_LINE = "[dapper-trio] debugger quit: the program was stopped."
NO_REPL = (
    ": no REPL can open because standard input is not a terminal; "
    "the program continues."
)


@pytest.fixture(params=["subprocess", "in-process"], name="mode")
def _mode(request: pytest.FixtureRequest) -> str:
    mode: str = request.param
    return mode


def _pid_in_header(out: str) -> int:
    found = re.search(r"\[dapper-trio\] .*\(pid (\d+)\)", out)
    assert found, out
    return int(found.group(1))


def _parent_of(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rpartition(")")[2].split()[1])


def _traceback_frames(text: str) -> list[tuple[str, int, str]]:
    """(file name, line, function) of each frame of a printed traceback."""
    return [
        (Path(name).name, int(line), function)
        for name, line, function in re.findall(
            r'File "([^"]+)", line (\d+), in (\S+)', text
        )
    ]


# -- the program ends ----------------------------------------------------------


def test_exit_status_is_the_programs(mode: str) -> None:
    """Continue to the end: the exit status is the program's sys.exit(5)."""
    with run_under_debugger("end_exit.py", mode=mode) as term:
        assert "entry: first line" in term.expect_prompt()
        term.sendline("c")
        rest = term.expect_exit()
    assert "exiting with 5" in rest
    assert "Traceback" not in rest
    assert term.exitstatus == 5


def test_quit_at_first_line(mode: str) -> None:
    """q at the first-line stop: the quit line, nothing of the program, exit 1."""
    with run_under_debugger("end_exit.py", mode=mode) as term:
        term.expect_prompt()
        term.sendline("q")
        rest = term.expect_exit()
    assert rest.count(QUIT_LINE) == 1
    assert "exiting with 5" not in rest
    assert "Traceback" not in rest
    assert term.exitstatus == 1


def test_uncaught_exception_post_mortem_then_traceback(mode: str) -> None:
    """A crash opens a post-mortem; after c, python's own traceback and exit 1."""
    plain = subprocess.run(
        [sys.executable, "end_crash.py"],
        cwd=PROGRAMS,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert plain.returncode == 1
    with run_under_debugger("end_crash.py", mode=mode, options=["-c"]) as term:
        out = term.expect_prompt()
        assert "[dapper-trio] post-mortem of RuntimeError: value 3 is too big" in out
        assert f"end_crash.py({line_of(PROGRAMS / 'end_crash.py', 'raise')})" in out
        assert term.cmd("p value").strip() == "3"
        term.sendline("c")
        rest = term.expect_exit()
    traceback = rest[rest.index("Traceback (most recent call last):") :]
    assert traceback.rstrip().endswith("RuntimeError: value 3 is too big")
    assert "dapper_trio" not in traceback
    assert "runpy" not in traceback
    assert _traceback_frames(traceback) == _traceback_frames(plain.stderr)
    assert term.exitstatus == 1


def _ctrl_c_while_blocked(term: Terminal, presses: int) -> str:
    """Press Ctrl-C *presses* times while *term*'s program blocks; its output."""
    term.expect("blocking")
    time.sleep(0.3)  # let it get into time.sleep
    for press in range(presses):
        if press:
            time.sleep(0.2)  # well within dapper-trio's one-second double press
        term.interrupt()
    term.expect_exit()
    return term.text()


def test_double_ctrl_c_outside_trio_ends_as_python_does(mode: str) -> None:
    """Ctrl-C twice in a blocked sync script: KeyboardInterrupt, as under python."""
    with Terminal([sys.executable, "end_blocking.py"], env=terminal_env()) as plain:
        expected = _ctrl_c_while_blocked(plain, 1)
    argv = run_argv(mode, "-c", "end_blocking.py")
    with Terminal(argv, env=terminal_env()) as term:
        out = _ctrl_c_while_blocked(term, 2)
    assert "finally ran" in out
    assert out.rstrip().endswith("KeyboardInterrupt")
    assert "post-mortem" not in out
    assert "dapper_trio" not in out
    assert _traceback_frames(out) == _traceback_frames(expected)
    # Python ends by SIGINT after an uncaught KeyboardInterrupt; so does this.
    assert (plain.exitstatus, plain.signalstatus) == (None, signal.SIGINT)
    assert (term.exitstatus, term.signalstatus) == (None, signal.SIGINT)


# -- the terminal goes away ------------------------------------------------------


def _hang_up(term: Terminal) -> None:
    """Close the terminal's master side, as closing a terminal window does.

    The kernel then sends SIGHUP to the session leader, and nothing else is
    sent (``Terminal.close()`` would follow up with SIGINT and SIGKILL after
    0.3 s, hiding a session that does not end by itself).  Waits, bounded, for
    the session leader to exit.
    """
    term.child.ptyproc.fileobj.close()
    deadline = time.monotonic() + 10
    while term.child.isalive():
        assert time.monotonic() < deadline, "the session outlived its terminal"
        time.sleep(0.02)


def _assert_ended_by_hangup(term: Terminal, mode: str) -> None:
    if mode == "subprocess":
        # The supervisor handles SIGHUP: it terminates and reaps the child,
        # removes the socket, and exits with 128 + SIGHUP.
        assert (term.exitstatus, term.signalstatus) == (128 + signal.SIGHUP, None)
    else:
        # In-process, SIGHUP's default action ends the program, as under python.
        assert (term.exitstatus, term.signalstatus) == (None, signal.SIGHUP)


def test_terminal_closed_at_prompt(mode: str) -> None:
    """The terminal closing at the REPL prompt ends the session completely."""
    with run_under_debugger("sleeper.py", mode=mode) as term:
        debuggee = _pid_in_header(term.expect_prompt())
        _hang_up(term)
        _assert_ended_by_hangup(term, mode)
        assert not os.path.exists(f"/proc/{debuggee}")


def test_terminal_closed_while_running(mode: str) -> None:
    """The terminal closing while the program runs ends the session completely."""
    with run_under_debugger("sleeper.py", mode=mode, options=["-c"]) as term:
        term.expect("running")
        time.sleep(0.2)  # into its trio.sleep
        _hang_up(term)
        _assert_ended_by_hangup(term, mode)


# -- the supervisor or the debuggee is signalled ----------------------------------

# Runs the supervisor, then reports how it ended and the terminal's settings,
# as the next command at a shell prompt would see them.
_AND_THEN_STTY = (
    "import subprocess, sys\n"
    "status = subprocess.run(sys.argv[1:], check=False).returncode\n"
    "print('supervisor returncode', status, flush=True)\n"
    "subprocess.run(['stty', '-a'], check=False)\n"
)


def _supervisor_then_stty(script: str) -> Terminal:
    return Terminal(
        [sys.executable, "-c", _AND_THEN_STTY, *run_argv("subprocess", script)],
        env=terminal_env(),
    )


def _line_discipline(term: Terminal) -> tuple[bool, bool]:
    """(canonical mode, echo) of the terminal, read through the pty's master."""
    import termios

    lflag = termios.tcgetattr(term.child.child_fd)[3]
    return bool(lflag & termios.ICANON), bool(lflag & termios.ECHO)


def _supervisor_end(term: Terminal) -> tuple[int, set[str]]:
    """The supervisor's returncode and the stty flags after it ended."""
    term.expect(r"supervisor returncode (-?\d+)")
    status = int(term.child.match.group(1))
    settings = term.expect_exit()
    return status, set(re.split(r"[\s;]+", settings))


def test_sigterm_to_supervisor_at_prompt() -> None:
    """SIGTERM to the supervisor: child reaped, exit 128+15, terminal cooked."""
    with _supervisor_then_stty("sleeper.py") as term:
        debuggee = _pid_in_header(term.expect_prompt())
        supervisor = _parent_of(debuggee)
        assert supervisor != term.child.pid
        assert _line_discipline(term) == (False, False)  # the REPL's raw mode
        os.kill(supervisor, signal.SIGTERM)
        status, flags = _supervisor_end(term)
    # Deliberate: the supervisor catches SIGTERM, cleans up and exits with
    # 128 + SIGTERM rather than dying by the signal.
    assert status == 128 + signal.SIGTERM
    assert not os.path.exists(f"/proc/{debuggee}")
    assert {"icanon", "echo"} <= flags
    assert not {"-icanon", "-echo"} & flags
    assert "Traceback" not in term.text()
    assert term.exitstatus == 0


def test_debuggee_killed_at_prompt() -> None:
    """The debuggee SIGKILLed: the supervisor dies by SIGKILL too, terminal cooked."""
    with _supervisor_then_stty("sleeper.py") as term:
        debuggee = _pid_in_header(term.expect_prompt())
        assert _line_discipline(term) == (False, False)
        os.kill(debuggee, signal.SIGKILL)
        status, flags = _supervisor_end(term)
    assert status == -signal.SIGKILL
    assert {"icanon", "echo"} <= flags
    assert not {"-icanon", "-echo"} & flags
    assert "Traceback" not in term.text()
    assert term.exitstatus == 0


# -- no terminal -----------------------------------------------------------------


def test_no_terminal_each_pause_is_one_line(mode: str) -> None:
    """Without a terminal each pause prints one line and the program runs on."""
    program = PROGRAMS / "end_no_terminal.py"
    body = line_of(program, "loop-body")
    result = subprocess.run(
        run_argv(mode, "-b", f"end_no_terminal.py:{body}", "end_no_terminal.py"),
        cwd=PROGRAMS,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
        env=terminal_env(),
        check=False,
    )
    assert result.returncode == 3
    assert "total 3" in result.stdout
    pauses = [
        re.sub(r"\(pid \d+\)", "(pid N)", line)
        for line in result.stderr.splitlines()
        if line.startswith("[dapper-trio]")
    ]
    process = "process end_no_terminal.py (pid N)"
    main_task = "task '__main__.main' (t1)"
    assert pauses == [
        f"[dapper-trio] entry: first line of the program outside trio, {process}"
        f" at end_no_terminal.py:1 in <module>{NO_REPL}",
        *[
            f"[dapper-trio] breakpoint 1 in {main_task}, {process}"
            f" at end_no_terminal.py:{body} in main{NO_REPL}"
        ]
        * 3,
        f"[dapper-trio] breakpoint() in {main_task}, {process}"
        f" at end_no_terminal.py:{line_of(program, 'breakpoint')} in main{NO_REPL}",
    ]
    assert "Traceback" not in result.stderr

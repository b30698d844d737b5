"""``dapper-trio run``: entry points, the program's view of the world, exit status.

Every test runs at a real terminal (pexpect over a pty) in both modes; the
harness in conftest.py fails a test that leaves a process or socket behind.
"""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest
from terminal import (
    PROGRAMS,
    line_of,
    run_argv,
    run_under_debugger,
    terminal_env,
)

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(params=["subprocess", "in-process"], name="mode")
def _mode(request: pytest.FixtureRequest) -> str:
    mode: str = request.param
    return mode


def test_stops_at_first_line(mode: str) -> None:
    """run stops at the program's first line, naming why, the process and no task."""
    with run_under_debugger("tasks_demo.py", mode=mode) as term:
        out = term.expect_prompt()
        assert "[dapper-trio] entry: first line of the program outside trio" in out
        assert "process tasks_demo.py (pid " in out
        assert "tasks_demo.py(1)<module>()" in out
        assert '-> """Two workers in a nursery' in out
        term.sendline("c")
        rest = term.expect_exit()
        assert "result 7" in rest
    assert term.exitstatus == 0


def test_program_sees_plain_python_world(mode: str) -> None:
    """sys.argv, __name__, sys.path[0], cwd, signal handlers, the exit status
    and the interpreter's end (threads joined, atexit) match plain python."""
    plain = subprocess.run(
        [sys.executable, "show_env.py", "3", "x y"],
        cwd=PROGRAMS,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert plain.returncode == 3
    with run_under_debugger(
        "show_env.py", "3", "x y", mode=mode, options=["-c"]
    ) as term:
        out = term.expect_exit()
    assert term.exitstatus == 3
    for line in plain.stdout.splitlines():
        assert line in out.splitlines()
    # The interpreter ended the program as python does (the debuggee is a
    # fork of the supervisor in subprocess mode: see _spawn).
    assert out.index("thread: joined before exit") < out.index("atexit: ran at exit")


def test_module_entry(mode: str) -> None:
    """run -m pkg.mod stops at the module's first line, with its argv and __name__."""
    with run_under_debugger("pkg.mod", mode=mode, options=["-m"]) as term:
        # The harness puts the script argument ("pkg.mod") right after -m.
        out = term.expect_prompt()
        assert "process pkg.mod (pid " in out
        assert "pkg/mod.py(1)<module>()" in out
        term.sendline("c")
        rest = term.expect_exit()
    assert "module name __main__" in rest
    assert term.exitstatus == 0


def test_module_args_are_the_programs(mode: str) -> None:
    """Everything after -m MODULE belongs to the program, options included."""
    with run_under_debugger(
        "pkg.mod", "--flag", "-c", "value", mode=mode, options=["-c", "-m"]
    ) as term:
        out = term.expect_exit()
    assert "module argv ['--flag', '-c', 'value']" in out
    assert term.exitstatus == 0


def test_continue_option_and_conditional_breakpoint(mode: str) -> None:
    """-c runs to a -b FILE:LINE,CONDITION breakpoint that holds only when true."""
    line = line_of(PROGRAMS / "tasks_demo.py", "worker-body")
    with run_under_debugger(
        "tasks_demo.py",
        mode=mode,
        options=["-c", "-b", f"tasks_demo.py:{line},i == 2 and name == 'b'"],
    ) as term:
        out = term.expect_prompt()
        assert "[dapper-trio] breakpoint 1 in task 'worker-b'" in out
        assert term.cmd("p i, name").strip().endswith("(2, 'b')")
        term.sendline("c")
        assert "result 7" in term.expect_exit()
    assert term.exitstatus == 0


def test_the_debuggee_is_forked_before_the_command_line_is_parsed() -> None:
    """The program runs in a child forked before argparse was imported.

    ``dapper-trio run`` forks its debuggee first thing, so the child makes
    the debugger's imports while the supervisor parses its command line;
    the program finds no argument parser it did not import, as under plain
    python; nor ``tempfile``, which the supervisor imports for its socket
    (the program's lock service needs none on Linux: its socket is in the
    abstract namespace).
    """
    with run_under_debugger(
        "startup_modules.py", mode="subprocess", options=["-c"]
    ) as term:
        out = term.expect_exit()
        supervisor = term.child.pid
    assert term.exitstatus == 0
    assert "argparse loaded False" in out.splitlines()
    assert "tempfile loaded False" in out.splitlines()
    assert f"parent {supervisor}" in out.splitlines()


def test_missing_script_is_a_clear_error(mode: str) -> None:
    """A script that does not exist: one clear line, exit status 2, nothing started."""
    argv = run_argv(mode)
    result = subprocess.run(
        [*argv, "no_such_script.py"],
        cwd=PROGRAMS,
        capture_output=True,
        text=True,
        timeout=30,
        env=terminal_env(),
        check=False,
    )
    assert result.returncode == 2
    assert "can't open file 'no_such_script.py'" in result.stderr
    assert "Traceback" not in result.stderr


def test_tcp_transport() -> None:
    """--ipc tcp runs the debuggee connected over loopback TCP."""
    with run_under_debugger(
        "tasks_demo.py", mode="subprocess", options=["--ipc", "tcp"]
    ) as term:
        assert "entry: first line" in term.expect_prompt()
        term.sendline("c")
        assert "result 7" in term.expect_exit()
    assert term.exitstatus == 0


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("no_such_file.py:3", "no such file 'no_such_file.py'"),
        ("tasks_demo.py:9999", "has no line 9999"),
        ("tasks_demo.py:2", "is blank or a comment"),
    ],
)
def test_breakpoint_that_cannot_stop_is_an_error(
    mode: str, spec: str, message: str
) -> None:
    """-b naming a missing file or a line without code is refused before running."""
    argv = run_argv(mode)
    result = subprocess.run(
        [*argv, "-c", "-b", spec, "tasks_demo.py"],
        cwd=PROGRAMS,
        capture_output=True,
        text=True,
        timeout=30,
        env=terminal_env(),
        check=False,
    )
    assert result.returncode == 2
    assert message in result.stderr
    assert "result 7" not in result.stdout  # the program did not run


def test_breakpoint_file_relative_to_working_directory(mode: str) -> None:
    """-b FILE:LINE finds FILE relative to the working directory, as users type it."""
    line = line_of(PROGRAMS / "tasks_demo.py", "worker-return")
    with run_under_debugger(
        "programs/tasks_demo.py",
        mode=mode,
        options=["-c", "-b", f"programs/tasks_demo.py:{line}"],
        cwd=PROGRAMS.parent,
    ) as term:
        assert "[dapper-trio] breakpoint 1 in task 'worker-" in term.expect_prompt()
        term.cmd("cl 1")
        term.sendline("c")
        assert "result 7" in term.expect_exit()


def test_syntax_error_is_reported_as_python_does(mode: str) -> None:
    """A program that does not compile: python's message, status 1, no REPL."""
    plain = subprocess.run(
        [sys.executable, "syntax_error.py"],
        cwd=PROGRAMS,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    with run_under_debugger("syntax_error.py", mode=mode) as term:
        out = term.expect_exit()
    assert term.exitstatus == plain.returncode == 1
    assert "SyntaxError" in out
    assert plain.stderr.strip().splitlines()[-1] in out
    assert "(Pdb++)" not in out


def test_ignored_sigint_stays_ignored(mode: str) -> None:
    """SIGINT ignored at start (a background job) stays ignored, as in python."""
    argv = run_argv(mode, "-c")

    def ignore_sigint() -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)

    with subprocess.Popen(
        [*argv, "ignores_nothing.py"],
        cwd=PROGRAMS,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        env=terminal_env(),
        preexec_fn=ignore_sigint,
    ) as process:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "started"
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert "survived" in out

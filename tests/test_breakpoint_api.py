"""The calls a program makes, run with plain ``python`` at a real terminal.

``await dapper_trio.breakpoint()``, ``dapper_trio.set_trace()``, the builtin
``breakpoint()`` under ``PYTHONBREAKPOINT=dapper_trio.set_trace``,
``await dapper_trio.post_mortem()`` and ``dapper_trio.run(main)``.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from terminal import PROGRAMS, Terminal, line_of, terminal_env

pytestmark = pytest.mark.timeout(60)

BREAKPOINT_APP = PROGRAMS / "api_breakpoint.py"
SET_TRACE_APP = PROGRAMS / "api_set_trace.py"
THREADS_APP = PROGRAMS / "api_threads.py"
POST_MORTEM_APP = PROGRAMS / "api_post_mortem.py"
QUIT_LINE = "[dapper-trio] debugger quit: the program was stopped."
TRIO_AWARE = "dapper_trio.set_trace"


def _python(script: str, *args: str, **env: str) -> Terminal:
    """``python script args`` on a pty, with *env* added to the environment."""
    return Terminal([sys.executable, script, *args], env=terminal_env(**env))


def _stop_line(out: str, path: Path, mark: str, function: str) -> bool:
    """True if *out* shows a stop at the line marked *mark* in *function*."""
    return f"{path.name}({line_of(path, mark)}){function}()" in out


def _frames(where: str) -> list[str]:
    return re.findall(r"[\w.]+\.py\(\d+\)(\w+|<module>)\(\)", where)


def test_breakpoint_opens_repl_at_callers_line() -> None:
    """await breakpoint() stops at the caller's line in its task; p and c work."""
    with _python("api_breakpoint.py", "task") as term:
        out = term.expect_prompt()
        assert re.search(
            r"\[dapper-trio\] breakpoint\(\) in task 'asker' \(t\d+\), "
            r"process api_breakpoint\.py \(pid \d+\)",
            out,
        )
        assert _stop_line(out, BREAKPOINT_APP, "task-breakpoint", "asker")
        assert term.cmd("p answer").strip() == "42"
        term.continue_to_end("asker resumed with 42", "main done")


def test_breakpoint_in_cancelled_scope_opens_then_raises_cancelled() -> None:
    """In a cancelled scope the REPL still opens; after c, Cancelled is raised."""
    with _python("api_breakpoint.py", "cancelled") as term:
        out = term.expect_prompt()
        assert "[dapper-trio] breakpoint() in task 'canceller'" in out
        assert _stop_line(out, BREAKPOINT_APP, "cancelled-breakpoint", "cancelled")
        term.sendline("c")
        rest = term.expect_exit()
    assert "not reached" not in rest
    assert "cancelled_caught True" in rest
    assert term.exitstatus == 0


def test_breakpoints_disabled_is_only_a_checkpoint_at_terminal() -> None:
    """PYTHONBREAKPOINT=0: no REPL, but the checkpoint raises Cancelled."""
    with _python("api_breakpoint.py", "cancelled", PYTHONBREAKPOINT="0") as term:
        rest = term.expect_exit()
    assert "(Pdb++)" not in rest
    assert "[dapper-trio]" not in rest
    assert "not reached" not in rest
    assert "cancelled_caught True" in rest
    assert term.exitstatus == 0


def test_breakpoints_disabled_without_terminal() -> None:
    """PYTHONBREAKPOINT=0 with stdin not a tty: silent checkpoint, runs to the end."""
    result = subprocess.run(
        [sys.executable, "api_breakpoint.py", "cancelled"],
        cwd=PROGRAMS,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
        env=terminal_env(PYTHONBREAKPOINT="0"),
        check=False,
    )
    assert result.returncode == 0
    assert result.stdout.splitlines() == ["cancelled_caught True", "main done"]
    assert result.stderr == ""  # not even the "no REPL can open" line


def test_set_trace_in_sync_function() -> None:
    """set_trace() in a sync function a task calls stops there, in that task."""
    with _python("api_set_trace.py", "set_trace") as term:
        out = term.expect_prompt()
        assert re.search(
            r"\[dapper-trio\] breakpoint\(\) in task '__main__\.main' \(t\d+\), "
            r"process api_set_trace\.py \(pid \d+\)",
            out,
        )
        assert _stop_line(out, SET_TRACE_APP, "set-trace", "helper")
        assert term.cmd("p w").strip() == "2"
        assert _frames(term.cmd("where")) == ["main", "helper"]
        term.sendline("c")
        rest = term.expect_exit()
    assert "values 2" in rest
    assert term.exitstatus == 0


def test_builtin_breakpoint_in_task_sync_function_and_thread() -> None:
    """PYTHONBREAKPOINT=dapper_trio.set_trace: breakpoint() pauses anywhere."""
    with _python("api_set_trace.py", "builtin", PYTHONBREAKPOINT=TRIO_AWARE) as term:
        # In the trio task itself.
        out = term.expect_prompt()
        assert "[dapper-trio] breakpoint() in task '__main__.main' (t" in out
        assert _stop_line(out, SET_TRACE_APP, "task-breakpoint", "main")
        assert term.cmd("p x").strip() == "1"
        # In a sync function the task calls.
        term.sendline("c")
        out = term.expect_prompt()
        assert "[dapper-trio] breakpoint() in task '__main__.main' (t" in out
        assert _stop_line(out, SET_TRACE_APP, "sync-breakpoint", "sync_helper")
        assert term.cmd("p w").strip() == "2"
        # In a trio.to_thread.run_sync worker.
        term.sendline("c")
        out = term.expect_prompt()
        assert re.search(
            r"\[dapper-trio\] breakpoint\(\) in thread 'api-worker', "
            r"process api_set_trace\.py \(pid \d+\)",
            out,
        )
        assert _stop_line(out, SET_TRACE_APP, "thread-breakpoint", "in_thread")
        assert term.cmd("p w").strip() == "20"
        where = term.cmd("where")
        assert _frames(where) == ["in_thread"]
        assert "threading" not in where
        assert "trio" not in where
        term.sendline("c")
        rest = term.expect_exit()
    assert "values 20" in rest
    assert term.exitstatus == 0


# The names of the threads blocked waiting for the open REPL to end (one line
# narrower than the terminal, so that its echo does not wrap).
_WAITING_FOR_REPL = (
    "p [t.name for t in threading.enumerate() if __import__('dapper_trio._session',"
    " fromlist=['_']).get_session().is_waiting_for_repl(t.ident)]"
)


def _header(thread: str) -> str:
    return f"[dapper-trio] breakpoint() in thread '{thread}', process api_threads.py"


def test_one_repl_at_a_time() -> None:
    """Two threads pausing at once: the second REPL opens only after the first."""
    with _python("api_threads.py", PYTHONBREAKPOINT=TRIO_AWARE) as term:
        out = term.expect_prompt()
        first = re.search(r"breakpoint\(\) in thread '(worker-\w+)'", out)
        assert first, out
        first_thread = first.group(1)
        assert _stop_line(out, THREADS_APP, "worker-breakpoint", "work")
        second_thread = "worker-two" if first_thread == "worker-one" else "worker-one"
        assert _header(second_thread) not in out
        # Wait (bounded) until the other thread is blocked waiting for this REPL.
        waiting = ""
        deadline = time.monotonic() + 10
        while second_thread not in waiting and time.monotonic() < deadline:
            waiting = term.cmd(_WAITING_FOR_REPL)
        assert waiting.strip() == repr([second_thread])
        label = first_thread.removeprefix("worker-")
        assert term.cmd("p mine").strip() == repr(f"value of {label}")
        assert _header(second_thread) not in term.text()
        term.sendline("c")
        out = term.expect_prompt()
        assert _header(second_thread) in out
        assert _stop_line(out, THREADS_APP, "worker-breakpoint", "work")
        other = second_thread.removeprefix("worker-")
        assert term.cmd("p mine").strip() == repr(f"value of {other}")
        term.sendline("c")
        rest = term.expect_exit()
    assert "results ['value of one', 'value of two']" in rest
    assert term.exitstatus == 0
    # The transcript, in order: the first REPL, all of it, then the second.
    lines = term.text().splitlines()
    headers = [n for n, line in enumerate(lines) if "[dapper-trio]" in line]
    assert len(headers) == 2
    for index, thread in zip(headers, (first_thread, second_thread), strict=True):
        assert re.fullmatch(re.escape(_header(thread)) + r" \(pid \d+\)", lines[index])
    first_session = lines[headers[0] : headers[1]]
    assert f"'value of {label}'" in first_session
    assert first_session[-1].rstrip() == "(Pdb++) c"
    assert f"'value of {other}'" in lines[headers[1] :]


def test_tasks_from_worker_thread() -> None:
    """tasks in a worker thread's REPL shows the trio task tree."""
    with _python("api_threads.py", PYTHONBREAKPOINT=TRIO_AWARE) as term:
        term.expect_prompt()
        tree = [row for row in term.cmd("tasks").splitlines() if row.strip()]
        assert re.match(r" t\d+ +__main__\.main +api_threads\.py:\d+ in main", tree[0])
        assert "nursery at api_threads.py:" in tree[1]
        runners = re.findall(
            r"(runner-\w+) +api_threads\.py:\d+ in runner", "\n".join(tree[2:])
        )
        assert sorted(runners) == ["runner-one", "runner-two"]
        assert len(tree) == 4
        term.sendline("c")
        term.expect_prompt()
        term.sendline("c")
        term.expect_exit()
    assert term.exitstatus == 0


def test_post_mortem_of_handled_exception() -> None:
    """await post_mortem() in an except block inspects the handled exception."""
    with _python("api_post_mortem.py", "handled") as term:
        out = term.expect_prompt()
        assert (
            "[dapper-trio] post-mortem of ValueError: invalid literal for int() "
            "with base 10: 'forty-two'"
        ) in out
        assert _stop_line(out, POST_MORTEM_APP, "parse", "parse")
        assert term.cmd("p text").strip() == "'forty-two'"
        term.sendline("c")
        rest = term.expect_exit()
    assert "handled, going on" in rest
    assert term.exitstatus == 0


def test_run_post_mortem_of_exception_group() -> None:
    """dapper_trio.run: a post-mortem on every leaf, then the normal traceback."""
    with _python("api_post_mortem.py", "group") as term:
        out = term.expect_prompt()
        assert "[dapper-trio] post-mortem of ExceptionGroup with 3 exceptions" in out
        listing = term.cmd("exceptions")
        index_of = {}
        for n in range(3):
            found = re.search(
                rf"(\d+) ValueError: failure {n}\s+\[task 'failer-{n}' \(t\d+\)\]",
                listing,
            )
            assert found, listing
            index_of[n] = found.group(1)
        for n in (2, 1):
            out = term.cmd(f"exceptions {index_of[n]}")
            assert f"ValueError: failure {n}" in out
            assert _stop_line(out, POST_MORTEM_APP, "raise", "fail")
            assert term.cmd("p n").strip() == str(n)
        term.sendline("c")
        rest = term.expect_exit()
    assert "Exception Group Traceback (most recent call last):" in rest
    for n in range(3):
        assert f"ValueError: failure {n}" in rest
    assert term.exitstatus == 1


def test_quit_from_breakpoint_in_plain_app() -> None:
    """q at await breakpoint(): finally blocks run, one line, no traceback, exit 1."""
    with _python("api_breakpoint.py", "quit") as term:
        out = term.expect_prompt()
        assert _stop_line(out, BREAKPOINT_APP, "quit-breakpoint", "quitter")
        term.sendline("q")
        rest = term.expect_exit()
    assert "quitter finally ran" in rest
    assert "sleeper finally ran" in rest
    assert "not reached" not in rest
    assert "main done" not in rest
    assert rest.count(QUIT_LINE) == 1
    assert "Traceback" not in rest
    assert "DebuggerQuit" not in rest
    assert term.exitstatus == 1

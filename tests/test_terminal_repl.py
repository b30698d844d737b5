"""The trio-aware REPL at a real terminal: tasks, stepping, scopes, post-mortem."""

from __future__ import annotations

import re

import pytest
from terminal import PROGRAMS, clean, line_of, run_under_debugger, terminal_env

pytestmark = pytest.mark.timeout(60)

DEMO = PROGRAMS / "tasks_demo.py"


@pytest.fixture(params=["subprocess", "in-process"], name="mode")
def _mode(request: pytest.FixtureRequest) -> str:
    mode: str = request.param
    return mode


def _at(out: str, mark: str, path: object = DEMO) -> bool:
    return f"({line_of(path, mark)})" in out  # type: ignore[arg-type]


def test_header_where_and_hidden_frames(mode: str) -> None:
    """A breakpoint stop names the task; where shows only the task's user frames."""
    line = line_of(DEMO, "inner-first")
    with run_under_debugger(
        "tasks_demo.py", mode=mode, options=["-c", "-b", f"{line}"]
    ) as term:
        # -b with a bare line number is relative to the main file, as in pdb.
        out = term.expect_prompt()
        assert "[dapper-trio] breakpoint 1 in task '__main__.main' (t1)" in out
        where = term.cmd("where")
        frames = re.findall(r"tasks_demo\.py\(\d+\)(\w+)\(\)", where)
        assert frames == ["main", "stepper", "inner"]
        assert "_core" not in where
        assert "trio" not in where.replace("tasks_demo", "")
        assert "runpy" not in where
        assert "<module>" not in where
        term.cmd("cl 1")
        term.sendline("c")
        term.expect_exit()
    assert term.exitstatus == 0


def test_tasks_tree_and_task_switch(mode: str) -> None:
    """tasks shows the tree with ids, locations, the current task; task N switches."""
    line = line_of(DEMO, "worker-body")
    with run_under_debugger(
        "tasks_demo.py",
        mode=mode,
        options=["-c", "-b", f"tasks_demo.py:{line},name == 'b'"],
    ) as term:
        term.expect_prompt()
        tree = [row for row in term.cmd("tasks").splitlines() if row.strip()]
        assert tree[0].startswith(" t1   __main__.main  tasks_demo.py:")
        assert "nursery at tasks_demo.py:" in tree[1]
        worker_b = next(row for row in tree if "worker-b" in row)
        assert "*t3" in worker_b
        assert f"tasks_demo.py:{line} in worker" in worker_b
        worker_a = next(row for row in tree if "worker-a" in row)
        assert "*" not in worker_a
        assert re.search(r"tasks_demo\.py:\d+ in worker", worker_a)
        # Look at worker-a's await chain, then at main's.
        out = term.cmd("task worker-a")
        assert "task 'worker-a' (t2)" in out
        assert term.cmd("p name").strip() == "'a'"
        out = term.cmd("task t1")
        assert "task '__main__.main' (t1)" in out
        # main's await chain, innermost last: main -> stepper -> inner.
        frames = re.findall(r"tasks_demo\.py\(\d+\)(\w+)\(\)", term.cmd("where"))
        assert frames == ["main", "stepper", "inner"]
        term.cmd("up 2")
        assert "Nursery" in term.cmd("p type(nursery).__name__")
        out = term.cmd("task")
        assert _at(out, "worker-body")
        assert term.cmd("p name").strip() == "'b'"
        assert "no live task matches" in term.cmd("task nonesuch")
        term.cmd("cl 1")
        term.sendline("c")
        term.expect_exit()


def test_next_over_await_stays_in_task(mode: str) -> None:
    """next over an await stops at the next line of the same coroutine only."""
    line = line_of(DEMO, "stepper-first")
    with run_under_debugger(
        "tasks_demo.py", mode=mode, options=["-c", "-b", str(line)]
    ) as term:
        term.expect_prompt()
        term.cmd("cl 1")
        out = term.cmd("next")
        assert "[dapper-trio] step in task '__main__.main' (t1)" in out
        assert _at(out, "stepper-second")
        out = term.cmd("next")
        assert _at(out, "stepper-return")
        assert "chatter" not in out
        assert "worker" not in out
        term.sendline("c")
        term.expect_exit()


def test_step_into_async_def_and_return(mode: str) -> None:
    """step enters an awaited async def; return stops at its --Return--."""
    line = line_of(DEMO, "stepper-first")
    with run_under_debugger(
        "tasks_demo.py", mode=mode, options=["-c", "-b", str(line)]
    ) as term:
        term.expect_prompt()
        term.cmd("cl 1")
        out = term.cmd("step")
        assert "--Call--" in out
        assert "inner()" in out
        out = term.cmd("step")
        assert _at(out, "inner-first")
        out = term.cmd("return")
        assert "--Return--" in out
        assert "inner()->3" in out
        out = term.cmd("next")
        assert _at(out, "stepper-second")
        assert "stepper()" in out
        term.sendline("c")
        term.expect_exit()


def test_other_tasks_breakpoint_while_stepping(mode: str) -> None:
    """A breakpoint hit by another task while stepping stops, naming that task."""
    first = line_of(DEMO, "stepper-first")
    body = line_of(DEMO, "worker-body")
    with run_under_debugger(
        "tasks_demo.py", mode=mode, options=["-c", "-b", str(first)]
    ) as term:
        term.expect_prompt()
        term.cmd("cl 1")
        term.cmd(f"b {body}")
        # Step main along; it ends up waiting for the workers in its nursery,
        # and they run into breakpoint 2 while main is being stepped.
        seen = ""
        for _ in range(12):
            out = term.cmd("next")
            if "breakpoint 2" in out:
                seen = out
                break
            assert "task '__main__.main' (t1)" in out
        assert re.search(
            r"\[dapper-trio\] breakpoint 2 in task 'worker-[ab]' \(t[23]\)", seen
        )
        term.cmd("cl 2")
        term.sendline("c")
        term.expect_exit()


def test_until_stays_in_task(mode: str) -> None:
    """until LINE runs the loop to its end in the same task."""
    sleep_line = line_of(DEMO, "worker-sleep")
    ret = line_of(DEMO, "worker-return")
    with run_under_debugger(
        "tasks_demo.py", mode=mode, options=["-c", "-b", f"{sleep_line},name == 'a'"]
    ) as term:
        out = term.expect_prompt()
        assert "task 'worker-a'" in out
        term.cmd("cl 1")
        out = term.cmd(f"until {ret}")
        assert f"({ret})worker()" in out
        assert "task 'worker-a' (t2)" in out
        assert term.cmd("p total").strip() == "3"
        term.sendline("c")
        term.expect_exit()


def test_scopes(mode: str) -> None:
    """scopes lists the user's cancel scopes: nursery scope, deadlines, shield."""
    line = line_of(DEMO, "worker-body")
    with run_under_debugger(
        "tasks_demo.py", mode=mode, options=["-c", "-b", f"{line},name == 'a'"]
    ) as term:
        term.expect_prompt()
        out = term.cmd("scopes")
        assert "cancel scopes around task 'worker-a', innermost first:" in out
        assert "[0] nursery of task '__main__.main' at tasks_demo.py:" in out
        assert "no deadline, no shield, not cancelled" in out
        assert "[1]" not in out  # trio's own scopes are left out
        assert "[1]" in term.cmd("scopes -a")
        term.cmd("cl 1")
        term.sendline("c")
        term.expect_exit()


def test_post_mortem_exception_group(mode: str) -> None:
    """An ExceptionGroup opens a post-mortem; exceptions lists leaves and tasks."""
    with run_under_debugger("crash_group.py", mode=mode, options=["-c"]) as term:
        out = term.expect_prompt()
        assert "main finally ran" in out
        assert "post-mortem of ExceptionGroup with 3 exceptions" in out
        listing = term.cmd("exceptions")
        index_of = {}
        for n in range(3):
            found = re.search(
                rf"(\d+) ValueError: failure {n}\s+\[task 'failer-{n}' \(t\d+\)\]",
                listing,
            )
            assert found, listing
            index_of[n] = found.group(1)
        out = term.cmd(f"exceptions {index_of[2]}")
        assert "ValueError: failure 2" in out
        assert term.cmd("p n").strip() == "2"
        assert "fail()" in term.cmd("where")
        term.sendline("c")
        rest = term.expect_exit()
    assert "ExceptionGroup" in rest
    assert "failure 2" in rest
    assert "dapper_trio" not in rest  # the traceback is the program's own
    assert term.exitstatus == 1


def test_quit_runs_finally_blocks(mode: str) -> None:
    """q cancels the run: finally blocks run, one line, no traceback, exit 1."""
    spin = line_of(PROGRAMS / "sleeper.py", "spin")
    with run_under_debugger(
        "sleeper.py", "spin", mode=mode, options=["-c", "-b", f"sleeper.py:{spin}"]
    ) as term:
        term.expect_prompt()
        term.sendline("q")
        rest = term.expect_exit()
    assert "sleeper finally ran" in rest
    assert "[dapper-trio] debugger quit: the program was stopped." in rest
    assert "Traceback" not in rest
    assert term.exitstatus == 1


def test_prompt_colours_and_sticky(mode: str) -> None:
    """pdbpp's colours are on by default and sticky mode works."""
    env = terminal_env()
    env.pop("PDBPP_COLORS")
    with run_under_debugger("tasks_demo.py", mode=mode, env=env) as term:
        term.child.expect(r"\(Pdb\+\+\) ")
        raw = term.child.before
        assert "\x1b[" in raw  # highlighted source / filename
        term.sendline("sticky")
        term.child.expect(r"\(Pdb\+\+\) ")
        assert "async def worker(name, delay):" in clean(term.child.before)
        term.sendline("c")
        term.expect_exit()


def test_tab_completion(mode: str) -> None:
    """Tab completes commands, task names for `task`, and names in expressions."""
    line = line_of(DEMO, "worker-body")
    with run_under_debugger(
        "tasks_demo.py", mode=mode, options=["-c", "-b", f"{line},name == 'a'"]
    ) as term:
        term.expect_prompt()
        term.send("scop\t")
        term.expect_text("scopes")
        term.sendline("")
        assert "cancel scopes around task 'worker-a'" in term.expect_prompt()
        # Two candidates: the completer lists both task names.
        term.send("task worker-\t\t")
        term.expect_text("worker-a")
        term.expect_text("worker-b")
        term.send("\x15")  # Ctrl-U: kill the line
        term.sendline("")
        term.expect_prompt()
        term.send("p tota\t")
        term.expect_text("total")
        term.sendline("")
        assert term.expect_prompt().strip().endswith("0")
        term.cmd("cl 1")
        term.sendline("c")
        term.expect_exit()

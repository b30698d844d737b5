"""Debug mode of an actor tree at a real terminal: one lock, Ctrl-C, crash REPLs.

Each test runs tests/programs/tree_app.py (a debug-mode actor tree) on a pty
and checks the order and content of the prompts, and (through conftest's
leak check) that nothing is left behind.
"""

from __future__ import annotations

import os
import re
import signal
import sys
import time
from pathlib import Path

import pexpect
import pytest
from terminal import PROGRAMS, PROMPT, Terminal, line_of, terminal_env

pytestmark = pytest.mark.timeout(120)

HEADER = re.compile(r"\[dapper-trio\] (.*), process actor (\S+) \(pid (\d+)\)")
OTHER_OUTPUT = re.compile(
    r"^(racer\d+|noisy|quiet|child|deep) (before|after|says)", re.M
)


def tree(scenario: str, *args: str, **env: str) -> Terminal:
    """tree_app.py SCENARIO ARGS on a pty, with extra environment variables."""
    return Terminal(
        [sys.executable, str(PROGRAMS / "tree_app.py"), scenario, *args],
        env=terminal_env(**env),
        timeout=60,
    )


def header(out: str) -> tuple[str, str, int]:
    """(why, path, pid) from the last REPL header in *out*."""
    found = HEADER.findall(out)
    assert found, out
    why, path, pid = found[-1]
    return why, path, int(pid)


def procs(term: Terminal) -> dict[str, str]:
    """The ``procs`` listing: each process's name -> its state."""
    rows = {}
    for line in term.cmd("procs").splitlines():
        parts = line.split()
        if len(parts) >= 4 and parts[1] == "pid":
            rows[parts[0]] = " ".join(parts[3:])
    return rows


def test_breakpoint_in_the_root_then_a_child() -> None:
    """The root's REPL comes first, then the child's; each names its process."""
    with tree("root") as term:
        out = term.expect_prompt()
        assert "root before" in out
        assert header(out)[:2] == ("breakpoint() in task '__main__.main' (t1)", "root")
        assert procs(term) == {"root": "in the REPL"}
        term.sendline("c")
        out = term.expect_prompt()
        why, path, _ = header(out)
        assert (why, path) == (
            "breakpoint() in task 'tree_fns.pause' (t1)",
            "root/pause",
        )
        assert "child before" in out
        assert "tree_fns.py" in out
        assert procs(term) == {"root": "running", "pause": "in the REPL"}
        assert term.cmd("p label").strip() == "'child'"
        term.sendline("c")
        rest = term.expect_exit()
    assert rest.index("child after") < rest.index("root after child")
    assert "tree done" in rest
    assert term.exitstatus == 0


def test_breakpoint_in_a_grandchild() -> None:
    """A REPL two levels down names its whole path; procs shows the tree."""
    with tree("nest", TREE_DEPTH="2") as term:
        out = term.expect_prompt()
        why, path, _ = header(out)
        assert path == "root/nest_pause/level2/level1"
        assert why == "breakpoint() in task 'tree_fns.nest_pause' (t1)"
        rows = procs(term)
        assert rows == {
            "root": "running",
            "nest_pause": "running",
            "level2": "running",
            "level1": "in the REPL",
        }
        assert term.cmd("p label").strip() == "'deep'"
        term.sendline("c")
        rest = term.expect_exit()
    assert "result deep" in rest
    assert term.exitstatus == 0


def test_builtin_breakpoint_in_a_child() -> None:
    """breakpoint() with PYTHONBREAKPOINT=dapper_trio.set_trace works in a child."""
    with tree("sync", PYTHONBREAKPOINT="dapper_trio.set_trace") as term:
        out = term.expect_prompt()
        assert header(out)[1] == "root/pause_sync"
        assert term.cmd("p here").strip() == "'kid sync'"
        term.sendline("c")
        rest = term.expect_exit()
    assert "result kid sync" in rest
    assert term.exitstatus == 0


@pytest.mark.parametrize("count", [2, 20])
def test_processes_racing_for_the_terminal(count: int) -> None:
    """Every racer gets one REPL in turn; nothing else is printed inside one."""
    with tree("race", TREE_RACE=str(count)) as term:
        served = []
        for _ in range(count):
            out = term.expect_prompt(timeout=90)
            _, path, _ = header(out)
            served.append(path)
            # Only the header, the location and pdb's lines after it: no
            # other process's output inside this REPL.
            assert not OTHER_OUTPUT.search(out[out.index("[dapper-trio]") :]), out
            answer = term.cmd("p label")
            assert answer.strip() == repr(path.rsplit("/", 1)[1]), answer
            term.sendline("c")
        rest = term.expect_exit(timeout=90)
    assert sorted(served) == sorted(f"root/racer{i}" for i in range(count))
    assert "all racers done" in rest
    text = term.text()
    for i in range(count):
        assert text.count(f"racer{i} before") == 1
        assert text.count(f"racer{i} after") == 1
    assert term.exitstatus == 0


@pytest.mark.parametrize(
    ("policy", "depth", "expected"),
    [
        ("origin", 0, ["root/crasher"]),
        ("origin", 1, ["root/crasher/level1"]),
        ("every-hop", 0, ["root/crasher", "root"]),
        ("every-hop", 1, ["root/crasher/level1", "root/crasher", "root"]),
        ("root", 0, ["root"]),
        ("root", 1, ["root"]),
    ],
)
def test_crash_repl_policies(policy: str, depth: int, expected: list[str]) -> None:
    """A crash opens post-mortems where the policy says, origin first, then up."""
    with tree("crash", policy, TREE_DEPTH=str(depth)) as term:
        seen = []
        for _ in expected:
            out = term.expect_prompt()
            why, where, _ = header(out)
            seen.append(where)
            assert why.startswith("post-mortem of"), why
            if where == expected[0] and policy != "root":
                assert "ValueError: the secret is boom" in why
                assert term.cmd("p secret").strip() == "'the secret is boom'"
            else:
                assert "RemoteError" in why or "ExceptionGroup" in why, why
            if where == "root":
                assert "the secret is boom" in why  # the origin is named
                assert "tree_app.py" in out  # the frame that made the call
            term.sendline("c")
        rest = term.expect_exit()
    assert seen == expected
    assert "(Pdb++)" not in rest
    assert "RemoteError" in rest
    assert "ValueError: the secret is boom" in rest
    assert term.exitstatus == 1


@pytest.mark.parametrize("depth", [0, 1, 2])
def test_ctrl_c_at_a_repl_leaves_the_tree_intact(depth: int) -> None:
    """Three Ctrl-C at a REPL at any depth clear the line; nothing is cancelled."""
    scenario = ("root",) if depth == 0 else ("nest",)
    env = {} if depth == 0 else {"TREE_DEPTH": str(depth - 1)}
    with tree(*scenario, **env) as term:
        out = term.expect_prompt()
        path = header(out)[1]
        assert path.count("/") == depth, path
        for _ in range(3):
            term.send("p 'typed but ' + 'never run'")
            time.sleep(0.3)
            term.interrupt()
            out = term.expect_prompt()
            assert "KeyboardInterrupt" not in out
            assert "typed but never run" not in out
        assert term.cmd("p 6 * 7").strip() == "42"
        rows = procs(term)
        assert list(rows.values()).count("in the REPL") == 1
        assert all(state in ("running", "in the REPL") for state in rows.values()), rows
        term.sendline("c")
        if depth == 0:
            term.expect_prompt()  # the child's breakpoint
            term.sendline("c")
        rest = term.expect_exit()
    assert "tree done" in rest
    assert term.exitstatus == 0


def test_ctrl_c_with_no_repl_cancels_the_tree() -> None:
    """With no REPL open, Ctrl-C cancels the whole tree in order."""
    with tree("ctrl-c") as term:
        term.expect_prompt()
        term.sendline("c")
        term.expect("sleeper after")
        time.sleep(0.5)
        term.interrupt()
        rest = term.expect_exit()
    assert "sleeper finally ran" in rest
    assert "KeyboardInterrupt" in rest
    assert term.exitstatus == 1


def test_sigkill_of_the_holder_hands_the_terminal_over() -> None:
    """Killing the REPL's process gives the next waiter the terminal, with a notice."""
    with tree("race", TREE_RACE="2") as term:
        out = term.expect_prompt()
        _, dead_path, dead_pid = header(out)
        time.sleep(0.3)  # the other racer is waiting by now
        started = time.monotonic()
        os.kill(dead_pid, signal.SIGKILL)
        out = term.expect_prompt()
        assert time.monotonic() - started < 1.0
        assert (
            f"[dapper-trio] actor {dead_path} (pid {dead_pid}) died while it held"
            " the terminal" in out
        )
        _, path, _ = header(out)
        assert path != dead_path
        rows = procs(term)
        assert rows[dead_path.rsplit("/", 1)[1]] == "killed by SIGKILL"
        term.sendline("c")
        rest = term.expect_exit()
    assert f"ProcessDied: actor {dead_path} (pid {dead_pid}) was killed by SIGKILL" in (
        rest
    )
    assert term.exitstatus == 1


def test_a_cancel_waits_for_the_child_s_repl(tmp_path: Path) -> None:
    """A cancel reaching a child in the REPL is applied when the user leaves it."""
    with tree("cancel", TREE_FLAG=str(tmp_path / "paused")) as term:
        out = term.expect_prompt()
        assert header(out)[1] == "root/pause_with_finally"
        # Far past the grace period (1 s) twice over: nothing is signalled.
        time.sleep(3.0)
        assert term.cmd("p label").strip() == "'victim'"
        assert procs(term)["pause_with_finally"] == "in the REPL"
        term.sendline("c")
        rest = term.expect_exit()
    assert rest.index("victim finally ran") < rest.index("cancel applied")
    assert "tree done" in rest
    assert "SIGTERM" not in rest
    assert "SIGKILL" not in rest
    assert term.exitstatus == 0


def test_quit_in_a_child_stops_the_program() -> None:
    """q in a child's REPL stops the whole tree and says the debugger quit."""
    with tree("root") as term:
        term.expect_prompt()
        term.sendline("c")
        term.expect_prompt()
        term.sendline("q")
        rest = term.expect_exit()
    assert "debugger quit" in rest
    assert "Traceback" not in rest
    assert term.exitstatus == 1


def test_quit_with_repls_queued_opens_no_more() -> None:
    """q while other children wait: none of them opens a REPL; the tree unwinds."""
    with tree("race", TREE_RACE="3") as term:
        term.expect_prompt()
        deadline = time.monotonic() + 30
        while list((rows := procs(term)).values()).count("waiting for the REPL") < 2:
            assert time.monotonic() < deadline, rows
            time.sleep(0.2)
        started = time.monotonic()
        term.sendline("q")
        index = term.expect([pexpect.EOF, PROMPT])
        assert index == 0, "a queued REPL opened after q"
        rest = term.text()[term.text().rindex("(Pdb++) ") :]
        term.expect_exit()
        assert time.monotonic() - started < 10
    assert "[dapper-trio] debugger quit: the program was stopped." in rest
    assert "Traceback" not in rest
    assert "after" not in rest  # no racer went on past its breakpoint
    assert term.exitstatus == 1


def test_crash_while_a_child_imports_its_function() -> None:
    """An error importing a child's module at start-up stops there first."""
    with tree("half") as term:
        out = term.expect_prompt()
        why, path, _ = header(out)
        assert (why, path) == (
            "post-mortem of IndexError: list index out of range",
            "root/half",
        )
        broken = PROGRAMS / "tree_broken.py"
        assert f"tree_broken.py({line_of(broken, 'broken-import')})<module>()" in out
        assert term.cmd("p sys.argv").strip() == "['-c']"
        term.continue_to_end(
            "RemoteError: actor root/half",
            "IndexError: list index out of range",
            status=1,
        )


def test_a_child_dying_while_starting_waits_for_the_repl(tmp_path: Path) -> None:
    """A child that dies before it connects is reported once the open REPL ends."""
    with tree(
        "doomed",
        TREE_FLAG=str(tmp_path / "paused"),
        TREE_DOOMED="1",
        PYTHONPATH=str(PROGRAMS / "tree_site"),
    ) as term:
        out = term.expect_prompt()
        assert header(out)[1] == "root/pause_with_finally"
        deadline = time.monotonic() + 30
        while (rows := procs(term)).get("doomed") != "exited with status 3":
            assert time.monotonic() < deadline, rows
            time.sleep(0.2)
        assert rows["pause_with_finally"] == "in the REPL"
        term.sendline("c")
        rest = term.expect_exit()
    assert "survivor finally ran" in rest
    assert "ProcessDied: actor root/doomed (pid" in rest
    assert "exited with code 3 before it connected to its parent" in rest
    assert term.exitstatus == 1


def test_breakpoint_in_a_subprocess_started_grandchild(tmp_path: Path) -> None:
    """A child's trio.run_process grandchild stops under the lock, output held."""
    with tree("subproc", TREE_FLAG=str(tmp_path / "go")) as term:
        out = term.expect_prompt()
        assert re.search(
            r"\[dapper-trio\] breakpoint\(\) outside trio, process"
            r" root/run_script/tree_join_leaf.py \(pid \d+\)",
            out,
        ), out
        time.sleep(1.0)  # the noisy sibling prints meanwhile
        assert term.cmd("p secret").strip() == "'leaf secret'"
        rows = procs(term)
        assert rows["tree_join_leaf.py"] == "in the REPL"
        assert rows["run_script"] == "running"
        term.sendline("c")
        rest = term.expect_exit()
    inside = term.text()[: term.text().rindex("(Pdb++) ")]
    inside = inside[inside.index("process root/run_script/tree_join_leaf.py") :]
    assert "noisy says" not in inside
    assert len(re.findall(r"noisy says \d+", term.text())) == 20
    assert rest.index("leaf after") < rest.index("leaf exit code 0")
    assert "tree done" in rest
    assert term.exitstatus == 0


def test_other_output_is_held_while_a_repl_is_open() -> None:
    """A sibling's lines never appear inside a REPL; they come out when it ends."""
    with tree("chatter") as term:
        term.expect_prompt()
        time.sleep(2.0)  # the noisy sibling prints all its lines meanwhile
        assert term.cmd("p 1").strip() == "1"
        assert procs(term)["chatter"] == "exited with status 0"
        term.sendline("c")
        rest = term.expect_exit()
    inside = term.text()[: term.text().rindex("(Pdb++) ")]
    assert "noisy says" not in inside
    assert [f"noisy says {i}" for i in range(20)] == re.findall(r"noisy says \d+", rest)
    assert rest.index("noisy says 19") < rest.index("quiet after")
    assert term.exitstatus == 0

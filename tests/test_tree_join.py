"""Processes started outside the actor runtime join the program's debugging session.

The terminal tests run tests/programs/tree_join_app.py under ``dapper-trio
run`` on a pty: a ``subprocess`` grandchild's ``breakpoint()`` and a
``multiprocessing`` child's uncaught exception open REPLs under the
session's lock.  The others check the start-up hook and the environment
directly.  conftest's leak check applies to all of them.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from terminal import (
    PROGRAMS,
    Terminal,
    line_of,
    run_under_debugger,
    slow_supervisor_env,
    terminal_env,
)

from dapper_trio import _tree_join
from dapper_trio._actor_debug import TreeDebug
from dapper_trio._tree_hook.sitecustomize import process_name
from dapper_trio._tree_lock import TreeLockClient

pytestmark = pytest.mark.timeout(120)

HEADER = re.compile(r"\[dapper-trio\] (.*), process (\S+) \(pid (\d+)\)")
APP = PROGRAMS / "tree_join_app.py"
LEAF = "root/tree_join_mid.py/tree_join_leaf.py"


def header(out: str) -> tuple[str, str, int]:
    """(why, process, pid) from the last REPL header in *out*."""
    found = HEADER.findall(out)
    assert found, out
    why, process, pid = found[-1]
    return why, process, int(pid)


def procs(term: Terminal) -> dict[str, str]:
    """The ``procs`` listing: each process's name -> its state."""
    rows = {}
    for line in term.cmd("procs").splitlines():
        parts = line.split()
        if len(parts) >= 4 and parts[1] == "pid":
            rows[parts[0]] = " ".join(parts[3:])
        elif len(parts) >= 2:
            rows[parts[0]] = " ".join(parts[1:])
    return rows


def join_app(scenario: str, mode: str, flag: Path, **env: str) -> Terminal:
    """``dapper-trio run -c tree_join_app.py SCENARIO`` on a pty."""
    return run_under_debugger(
        "tree_join_app.py",
        scenario,
        mode=mode,
        options=["-c"],
        env=terminal_env(TREE_FLAG=str(flag), **env),
    )


@pytest.mark.parametrize("mode", ["subprocess", "in-process"])
def test_breakpoint_in_a_subprocess_grandchild_waits_its_turn(
    mode: str, tmp_path: Path
) -> None:
    """A grandchild's breakpoint() opens a REPL on the terminal after the root's."""
    with join_app("subprocess", mode, tmp_path / "flag") as term:
        out = term.expect_prompt()
        assert header(out)[:2] == (
            "breakpoint() in task '__main__.main' (t1)",
            "tree_join_app.py",
        )
        deadline = time.monotonic() + 30
        while (rows := procs(term)).get("tree_join_leaf.py") != "waiting for the REPL":
            assert time.monotonic() < deadline, rows
            time.sleep(0.2)
        assert rows["root"] == "in the REPL"
        assert rows["tree_join_mid.py"] == "(not connected)"
        term.sendline("c")
        out = term.expect_prompt()
        why, process, _ = header(out)
        assert (why, process) == ("breakpoint() outside trio", LEAF)
        leaf_line = line_of(PROGRAMS / "tree_join_leaf.py", "leaf-pause")
        assert f"tree_join_leaf.py({leaf_line})<module>()" in out
        assert term.cmd("p secret").strip() == "'leaf secret'"
        assert procs(term)["tree_join_leaf.py"] == "in the REPL"
        term.sendline("c")
        rest = term.expect_exit()
    assert rest.index("leaf after") < rest.index("leaf exit code 0")
    assert rest.index("leaf exit code 0") < rest.index("root done")
    assert term.exitstatus == 0


@pytest.mark.parametrize("method", ["spawn", "fork"])
def test_a_multiprocessing_child_s_crash_opens_a_post_mortem(
    method: str, tmp_path: Path
) -> None:
    """An uncaught exception in a multiprocessing child stops there, under the lock."""
    with join_app(f"mp-{method}", "subprocess", tmp_path / "flag") as term:
        out = term.expect_prompt()
        why, process, _ = header(out)
        assert why == "post-mortem of ZeroDivisionError: division by zero"
        assert process == "root/divider"
        assert f"tree_join_app.py({line_of(APP, 'mp-fail')})divide()" in out
        assert term.cmd("p denominator, numerator").strip() == "(0, 7)"
        assert procs(term) == {"root": "running", "divider": "in the REPL"}
        term.sendline("c")
        rest = term.expect_exit()
    # Then multiprocessing reports the error as it always does.
    assert "Process divider:" in rest
    assert "ZeroDivisionError: division by zero" in rest
    assert "divider exit code 1" in rest
    assert "root done" in rest
    assert term.exitstatus == 0


_FORKS_AT_ONCE = """\
import multiprocessing

def divide():
    numerator, denominator = 7, 0
    return numerator / denominator

if __name__ == "__main__":
    child = multiprocessing.get_context("fork").Process(target=divide, name="divider")
    child.start()
    child.join()
    print("divider exit code", child.exitcode, flush=True)
    print("program done", flush=True)
"""


def test_a_child_forked_before_the_supervisor_serves_waits_for_it(
    tmp_path: Path,
) -> None:
    """A child forked while the supervisor still starts: its REPL opens once
    the supervisor serves, as the program's first REPL would; not before,
    and not never.

    The child inherits the program's wait for the supervisor, but not the
    thread that ends it; the program's lock service holds the child's turn
    at the terminal until the supervisor serves instead.
    """
    program = tmp_path / "forks_at_once.py"
    program.write_text(_FORKS_AT_ONCE)
    env, serves = slow_supervisor_env(tmp_path, 3.0)
    with run_under_debugger(
        str(program), mode="subprocess", options=["-c"], env=env, cwd=tmp_path
    ) as term:
        out = term.expect_prompt(timeout=20)
        assert serves.exists()
        why, process, _ = header(out)
        assert why == "post-mortem of ZeroDivisionError: division by zero"
        assert process == "root/divider"
        assert term.cmd("p denominator, numerator").strip() == "(0, 7)"
        term.sendline("c")
        rest = term.expect_exit()
    assert "divider exit code 1" in rest
    assert "program done" in rest
    assert term.exitstatus == 0


def test_quit_in_a_subprocess_grandchild_stops_the_program(tmp_path: Path) -> None:
    """q in a process outside the actor runtime stops the whole program."""
    with join_app("leaf", "subprocess", tmp_path / "flag") as term:
        out = term.expect_prompt()
        assert header(out)[1] == LEAF
        term.sendline("q")
        rest = term.expect_exit()
    assert "[dapper-trio] debugger quit: the program was stopped." in rest
    assert "leaf after" not in rest
    assert "root done" not in rest
    assert "Traceback" not in rest
    assert term.exitstatus == 1


def test_ctrl_c_at_a_grandchild_s_prompt_interrupts_nothing(tmp_path: Path) -> None:
    """Ctrl-C at a subprocess grandchild's prompt clears it; every process lives on."""
    with join_app("leaf", "subprocess", tmp_path / "flag") as term:
        out = term.expect_prompt()
        assert header(out)[1] == LEAF
        for _ in range(3):
            term.send("p 'typed but ' + 'never run'")
            time.sleep(0.3)
            term.interrupt()
            out = term.expect_prompt()
            assert "KeyboardInterrupt" not in out
            assert "typed but never run" not in out
        assert term.cmd("p secret").strip() == "'leaf secret'"
        term.continue_to_end("leaf exit code 0", "root done")


def test_process_names_come_from_the_command_line() -> None:
    """A joined process is named after its script, module, or how it was started."""
    python = sys.executable
    assert process_name([python, "-u", "app.py", "x"]) == "app.py"
    assert process_name([python, "/srv/tools/app.py"]) == "app.py"
    assert process_name([python, "-X", "dev", "-m", "pkg.tool", "-v"]) == "pkg.tool"
    assert process_name([python, "-mpkg.tool"]) == "pkg.tool"
    assert process_name([python, "-c", "pass"]) == "python -c"
    assert (
        process_name(
            [
                python,
                "-c",
                "from multiprocessing.spawn import spawn_main",
                "--multiprocessing-fork",
            ]
        )
        == "multiprocessing"
    )
    assert process_name([python]) == "python"


def _run_hooked(code: str, *, session: bool) -> dict[str, object]:
    """Run *code* in a Python whose PYTHONPATH has the hook, then a user's dir."""
    env = dict(os.environ)
    for name in (_tree_join.SESSION_ENV, _tree_join.PATH_ENV):
        env.pop(name, None)
    env["PYTHONPATH"] = os.pathsep.join(
        [_tree_join.HOOK_DIR, str(PROGRAMS / "tree_site")]
    )
    if session:
        env[_tree_join.SESSION_ENV] = json.dumps(
            {"address": "unix:@nowhere", "token": "t"}
        )
        env[_tree_join.PATH_ENV] = "\x1f".join(["1", "root", "app.py"])
    result = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    value: dict[str, object] = json.loads(result.stdout)
    return value


REPORT = (
    "import json, os, sys; print(json.dumps({"
    "'site': os.environ.get('TREE_SITE_RAN'),"
    "'path': os.environ.get('DAPPER_TRIO_TREE_PATH'),"
    "'pid': os.getpid(),"
    "'hooked': sys.excepthook is not sys.__excepthook__,"
    "'imported': sorted({'dapper_trio', 'json', 'typing'} & set(sys.modules))}))"
)


def test_the_hook_names_the_process_and_runs_the_sitecustomize_it_hides() -> None:
    """In a session the hook names the process, hooks errors, chains; no imports."""
    report = _run_hooked(REPORT, session=True)
    assert report["site"] == "yes"
    assert report["hooked"] is True
    assert report["imported"] == ["json"]  # the report's own
    assert str(report["path"]).split("\x1f") == [
        str(report["pid"]),
        "root",
        "app.py",
        "python -c",
    ]


def test_the_hook_does_nothing_outside_a_session() -> None:
    """Outside a session the hook only runs the sitecustomize it hides."""
    report = _run_hooked(REPORT, session=False)
    assert report["site"] == "yes"
    assert report["path"] is None
    assert report["hooked"] is False
    assert report["imported"] == ["json"]


def test_export_puts_the_session_in_the_environment_and_takes_it_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """export() sets the session, hook and breakpoint(); unexport() restores them."""
    monkeypatch.setenv("PYTHONPATH", "/user/dir")
    monkeypatch.delenv("PYTHONBREAKPOINT", raising=False)
    monkeypatch.delenv(_tree_join.SESSION_ENV, raising=False)
    monkeypatch.delenv(_tree_join.PATH_ENV, raising=False)
    client = TreeLockClient(
        "unix:/nonexistent", "t", name="root", pid=1, path=("root",)
    )
    tree = TreeDebug(address="unix:/nonexistent", token="t", tty_fd=None, client=client)
    _tree_join.export(tree, path=("root",))
    try:
        assert os.environ["PYTHONPATH"] == f"{_tree_join.HOOK_DIR}{os.pathsep}/user/dir"
        assert os.environ["PYTHONBREAKPOINT"] == "dapper_trio.set_trace"
        info = json.loads(os.environ[_tree_join.SESSION_ENV])
        assert info["output_held"] is False
        assert os.environ[_tree_join.PATH_ENV] == f"{os.getpid()}\x1froot"
    finally:
        _tree_join.unexport()
    assert os.environ["PYTHONPATH"] == "/user/dir"
    assert "PYTHONBREAKPOINT" not in os.environ
    assert _tree_join.SESSION_ENV not in os.environ
    assert _tree_join.PATH_ENV not in os.environ


def test_export_keeps_a_breakpoint_hook_the_user_chose(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """PYTHONBREAKPOINT set by the user (0, say) is left alone."""
    monkeypatch.setenv("PYTHONBREAKPOINT", "0")
    client = TreeLockClient(
        "unix:/nonexistent", "t", name="root", pid=1, path=("root",)
    )
    tree = TreeDebug(address="unix:/nonexistent", token="t", tty_fd=None, client=client)
    _tree_join.export(tree, path=("root",))
    try:
        assert os.environ["PYTHONBREAKPOINT"] == "0"
    finally:
        _tree_join.unexport()
    assert os.environ["PYTHONBREAKPOINT"] == "0"


# -- a child started with an environment of its own still joins -----------------------


def test_a_child_given_an_environment_of_its_own_joins_the_session(
    tmp_path: Path,
) -> None:
    """trio.run_process(..., env={...}): the child's breakpoint() still opens
    dapper-trio's REPL under the session's lock, and the child's environment
    is the one it was given, plus the session."""
    with join_app("own-env", "subprocess", tmp_path / "flag") as term:
        out = term.expect_prompt()
        why, process, _ = header(out)
        assert (why, process) == ("breakpoint() outside trio", "root/tree_join_leaf.py")
        assert term.cmd("p secret").strip() == "'leaf secret'"
        assert procs(term)["tree_join_leaf.py"] == "in the REPL"
        # (LC_CTYPE: the interpreter's own locale coercion, PEP 538.)
        names = term.cmd("p sorted(set(os.environ) - {'LC_CTYPE'})").strip()
        assert names == repr(
            sorted(
                {
                    "PATH",
                    "TREE_FLAG",
                    _tree_join.SESSION_ENV,
                    _tree_join.PATH_ENV,
                    "PYTHONBREAKPOINT",
                    "PYTHONPATH",
                }
            )
        )
        term.continue_to_end("leaf after", "leaf exit code 0", "root done")


def test_the_hook_carries_the_session_to_a_child_s_own_environment() -> None:
    """In a process of the session, subprocess (imported after start-up)
    gives a child started with env={...} the session's variables."""
    report = "import json, os; print(json.dumps(dict(os.environ)))"
    code = (
        "import subprocess, sys; print(subprocess.run("
        f"[sys.executable, '-c', {report!r}],"
        " env={'ONLY': 'this'}, capture_output=True, text=True).stdout)"
    )
    child_env = _run_hooked(code, session=True)
    assert child_env["ONLY"] == "this"
    assert child_env[_tree_join.SESSION_ENV] == json.dumps(
        {"address": "unix:@nowhere", "token": "t"}
    )
    # The child's own hook ran: it named the child below its parent.
    assert str(child_env[_tree_join.PATH_ENV]).split("\x1f")[1:] == [
        "root",
        "app.py",
        "python -c",
        "python -c",
    ]
    assert child_env["PYTHONPATH"] == _tree_join.HOOK_DIR
    assert "HOME" not in child_env


def test_carry_session_adds_only_what_joining_needs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """carry_session: the session, the path, the hook in front of the
    child's PYTHONPATH, and dapper-trio's breakpoint() unless the child's
    environment or the user chose another; bytes stay bytes."""
    from dapper_trio._tree_hook.sitecustomize import carry_session

    hook = _tree_join.HOOK_DIR
    monkeypatch.delenv(_tree_join.SESSION_ENV, raising=False)
    given = {"A": "1"}
    assert carry_session(given) is given  # no session here: nothing to carry
    monkeypatch.setenv(_tree_join.SESSION_ENV, '{"address": "unix:@x"}')
    monkeypatch.setenv(_tree_join.PATH_ENV, "7\x1froot")
    monkeypatch.setenv("PYTHONBREAKPOINT", "dapper_trio.set_trace")
    assert carry_session({"A": "1", "PYTHONPATH": f"/lib{os.pathsep}"}) == {
        "A": "1",
        "PYTHONPATH": f"{hook}{os.pathsep}/lib",
        _tree_join.SESSION_ENV: '{"address": "unix:@x"}',
        _tree_join.PATH_ENV: "7\x1froot",
        "PYTHONBREAKPOINT": "dapper_trio.set_trace",
    }
    assert carry_session({"PYTHONBREAKPOINT": "0"})["PYTHONBREAKPOINT"] == "0"
    assert carry_session({"PYTHONPATH": hook})["PYTHONPATH"] == hook
    actor = {_tree_join.SESSION_ENV: "{}"}
    assert carry_session(actor) is actor  # names a session already
    assert carry_session(None) is None
    binary = carry_session({b"A": b"1"})
    assert binary[b"A"] == b"1"
    assert binary[os.fsencode(_tree_join.PATH_ENV)] == b"7\x1froot"
    monkeypatch.setenv("PYTHONBREAKPOINT", "0")  # the user's choice, not ours
    assert "PYTHONBREAKPOINT" not in carry_session({"A": "1"})

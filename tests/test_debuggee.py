"""The debuggee's start-up: no trio for programs without it, the agent, trio later.

A debuggee imports trio only when its program does (``_trio_import``), starts
the program with the configuration from its environment, and talks to its
supervisor from a thread with blocking sockets (``_debuggee.Agent``).  These
tests run the real command, real subprocesses and a real IPC listener.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import trio
from terminal import (
    dapper_command,
    run_under_debugger,
    slow_supervisor_env,
    terminal_env,
)

from dapper_trio import _debuggee
from dapper_trio._ipc import RemoteCommandError, new_token, open_listener

pytestmark = pytest.mark.timeout(60)

PLAIN_PROGRAM = """\
import sys
trio_at_start = "trio" in sys.modules
value = 6 * 7
print("trio at start:", trio_at_start, flush=True)  # mark: after
import trio
from trio import run
print("run wrapped:", hasattr(run, "__wrapped__"), flush=True)
sys.exit(value)
"""


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


@pytest.mark.parametrize("mode", ["subprocess", "in-process"])
def test_plain_program_runs_without_trio(tmp_path: Path, mode: str) -> None:
    """A program that does not import trio starts without it; trio, imported
    later, gets the session's ``trio.run`` (``from trio import run`` too)."""
    program = _write(tmp_path, "plain.py", PLAIN_PROGRAM)
    argv = [*dapper_command(), "run", "-c"]
    if mode == "in-process":
        argv.append("--in-process")
    done = subprocess.run(
        [*argv, str(program)],
        capture_output=True,
        text=True,
        timeout=30,
        env=terminal_env(),
        check=False,
    )
    assert "trio at start: False" in done.stdout, done.stdout + done.stderr
    assert "run wrapped: True" in done.stdout
    assert done.returncode == 42
    assert "before it could connect" not in done.stderr


def test_breakpoint_in_plain_program_at_a_terminal(tmp_path: Path) -> None:
    """A breakpoint in a program without trio stops, with trio still not loaded."""
    program = _write(tmp_path, "plain.py", PLAIN_PROGRAM)
    with run_under_debugger(
        str(program), mode="subprocess", options=["-c", "-b", f"{program}:4"]
    ) as term:
        term.expect_prompt()
        assert "True" not in term.cmd("p 'trio' in sys.modules")
        assert "42" in term.cmd("p value")
        term.sendline("c")
        out = term.expect_exit()
    assert "trio at start: False" in out
    assert term.exitstatus == 42


def test_when_imported_runs_before_the_importer_gets_trio() -> None:
    """Callbacks run right after trio's module code, before ``import`` returns."""
    code = textwrap.dedent(
        """
        import sys
        from dapper_trio import _trio_import
        assert "trio" not in sys.modules
        seen = []
        _trio_import.when_imported(lambda m: seen.append(m.__name__))
        _trio_import.when_imported(lambda m: setattr(m, "_dapper_mark", 1))
        from trio import _dapper_mark
        assert seen == ["trio"], seen
        assert _trio_import.loaded() is sys.modules["trio"]
        late = []
        _trio_import.when_imported(late.append)
        assert late == [sys.modules["trio"]]
        assert not any(
            type(f).__name__ == "_TrioFinder" for f in sys.meta_path
        ), sys.meta_path
        assert sys.modules["trio"].__spec__.loader is sys.modules["trio"].__loader__
        assert type(sys.modules["trio"].__loader__).__name__ != "_ThenCallBack"
        print("ok")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_supervisor_killed_while_the_program_runs(tmp_path: Path) -> None:
    """A debuggee whose supervisor dies stops itself, saying why."""
    program = _write(
        tmp_path,
        "forever.py",
        """\
        import time
        print("running", flush=True)
        while True:
            time.sleep(0.05)
        """,
    )
    with subprocess.Popen(
        [*dapper_command(), "run", "-c", str(program)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=terminal_env(),
    ) as supervisor:
        try:
            assert supervisor.stdout is not None
            assert supervisor.stdout.readline().strip() == "running"
            # The supervisor's import of trio may run ldconfig (trio's
            # find_library): the debuggee is the child that is its fork
            # (and ldconfig's Popen child is one, briefly, until its exec).
            deadline = time.monotonic() + 10
            while len(children := _forks(supervisor.pid)) != 1:
                assert time.monotonic() < deadline, children
                time.sleep(0.05)
            _wait_until_connected(children[0])
            # No chance to clean up: as the OOM killer would do it.
            supervisor.kill()
            supervisor.wait(timeout=10)
            deadline = time.monotonic() + 10
            while _alive(children[0]) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert not _alive(children[0])
            assert supervisor.stderr is not None
            err = supervisor.stderr.read()
            assert "lost the connection to the supervisor" in err
        finally:
            for pid in _children(supervisor.pid):  # pragma: no cover - on failure
                os.kill(pid, signal.SIGKILL)
            if supervisor.poll() is None:  # pragma: no cover - on failure
                supervisor.kill()


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def _forks(pid: int) -> list[int]:
    """The children of *pid* that run its command line (forks of it)."""
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        command = f.read()
    found = []
    for child in _children(pid):
        try:
            with open(f"/proc/{child}/cmdline", "rb") as f:
                if f.read() == command:
                    found.append(child)
        except OSError:
            continue
    return found


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] != "Z"
    except OSError:
        return False


def _wait_until_connected(pid: int) -> None:
    # The agent thread blocks in recv once the handshake is done: two
    # established unix sockets of the debuggee (its pipes are not sockets).
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        sockets = [
            os.readlink(f"/proc/{pid}/fd/{fd}")
            for fd in os.listdir(f"/proc/{pid}/fd")
            if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:")
        ]
        if sockets:
            time.sleep(0.5)  # the supervisor imports trio, then accepts
            return
        time.sleep(0.05)
    raise AssertionError("the debuggee never connected")


# -- the agent against a real listener --------------------------------------------


class _Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []
        self.lost: list[object] = []


def test_agent_serves_the_supervisor(monkeypatch: pytest.MonkeyPatch) -> None:
    """The agent authenticates, asks for its configuration, answers ``ping``,
    refuses unknown requests with an error, and reports the exit status."""
    recorder = _Recorder()
    monkeypatch.setattr(
        _debuggee.Agent, "_supervisor_lost", lambda self, why: recorder.lost.append(why)
    )
    token = new_token()
    config = {"target": {"kind": "script"}, "options": {}}
    results: dict[str, Any] = {}

    async def handle_request(method: str, params: Any) -> Any:
        assert method == "configure"
        return config

    async def handle_event(event: str, body: Any) -> None:
        recorder.events.append((event, body))

    async def main() -> None:
        with trio.fail_after(20):
            async with open_listener(token=token, name="test supervisor") as listener:
                agent = _debuggee.Agent(listener.address, token)
                got: list[dict[str, Any]] = []
                starter = threading.Thread(target=lambda: got.append(agent.start()))
                starter.start()
                async with listener.accept(
                    request_handler=handle_request, event_handler=handle_event
                ) as channel:
                    results["ping"] = await channel.request("ping")
                    with pytest.raises(RemoteCommandError) as info:
                        await channel.request("frobnicate")
                    results["error"] = str(info.value)
                    await trio.to_thread.run_sync(starter.join, 10)
                    results["config"] = got
                    await trio.to_thread.run_sync(lambda: agent.finish(7, quit=True))
                    await channel.wait_closed()

    trio.run(main)
    assert results["ping"] == {"pid": os.getpid()}
    assert "frobnicate" in results["error"]
    assert results["config"] == [config]
    assert recorder.events == [("exited", {"status": 7, "quit": True})]
    assert recorder.lost == []


def test_agent_with_config_from_the_environment_reports_after_a_late_accept(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Given its configuration, the agent does not wait for the supervisor;
    at the end it waits until the supervisor takes the connection, so the
    exit report arrives even when the program was done first."""
    recorder = _Recorder()
    monkeypatch.setattr(
        _debuggee.Agent, "_supervisor_lost", lambda self, why: recorder.lost.append(why)
    )
    token = new_token()
    config = {"target": {"kind": "script"}, "options": {}}

    async def handle_request(method: str, params: Any) -> Any:
        return config

    async def handle_event(event: str, body: Any) -> None:
        recorder.events.append((event, body))

    async def main() -> None:
        with trio.fail_after(20):
            async with open_listener(token=token, name="test supervisor") as listener:
                agent = _debuggee.Agent(listener.address, token)
                assert agent.start(config) is config  # no round trip
                finished = threading.Thread(target=lambda: agent.finish(3, quit=False))
                finished.start()
                await trio.sleep(0.3)  # the "program" ended before the accept
                assert finished.is_alive()
                async with listener.accept(
                    request_handler=handle_request, event_handler=handle_event
                ) as channel:
                    await channel.wait_closed()
                await trio.to_thread.run_sync(finished.join, 10)
                assert not finished.is_alive()

    trio.run(main)
    assert recorder.events == [("exited", {"status": 3, "quit": False})]
    assert recorder.lost == []


def test_agent_without_a_supervisor_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Nobody listening: start() raises LaunchError naming the cause."""
    recorder = _Recorder()
    monkeypatch.setattr(
        _debuggee.Agent, "_supervisor_lost", lambda self, why: recorder.lost.append(why)
    )
    from dapper_trio._launcher import LaunchError
    from dapper_trio._sockets import Address

    agent = _debuggee.Agent(
        Address("unix", path=str(tmp_path / "nobody.sock")), new_token()
    )
    with pytest.raises(LaunchError, match="cannot reach the supervisor"):
        agent.start()
    agent.finish(0, quit=False)  # returns at once: nothing to report to


def test_first_prompt_waits_for_the_supervisor(tmp_path: Path) -> None:
    """The program starts before the supervisor serves, but no REPL opens
    until it does: by the first prompt the supervisor ignores Ctrl-C and
    watches SIGTERM/SIGHUP, so a Ctrl-C (or a closed terminal) at once is
    handled as at any other prompt."""
    program = _write(tmp_path, "quick.py", 'print("program done")\n')
    env, serves = slow_supervisor_env(tmp_path, 2.0)
    with run_under_debugger(str(program), mode="subprocess", env=env) as term:
        out = term.expect_prompt(timeout=20)
        assert serves.exists()
        debuggee = int(out.split("(pid ")[1].split(")")[0])
        with open(f"/proc/{debuggee}/stat") as f:
            supervisor = int(f.read().split(") ")[1].split()[1])
        os.kill(supervisor, signal.SIGINT)  # as a Ctrl-C reaches the group
        time.sleep(0.3)
        assert _alive(supervisor)
        term.sendline("c")
        rest = term.expect_exit()
    assert "program done" in rest
    assert term.exitstatus == 0

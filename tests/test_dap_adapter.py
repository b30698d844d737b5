"""``dapper-trio dap`` as a real subprocess, driven by a tiny client of our own.

The client speaks DAP through ``dapper_trio._dap_wire`` over the adapter's
stdin and stdout.  These tests pin down what Microsoft's client (see
tests/dap_client and test_dap_client.py) cannot easily: concurrency, ``cancel``,
the adapter's exit after ``disconnect``, malformed input, and the finer
points of breakpoints and stops.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import trio

from dapper_trio._dap_wire import DapWriter, MessageFactory, read_messages
from dapper_trio._ipc import Address, Channel, connect

PROGRAMS = Path(__file__).parent / "dap_client" / "programs"
LOOPS = str(PROGRAMS / "loops.py")
SMOKE = str(PROGRAMS / "smoke.py")
CRASH = str(PROGRAMS / "crash.py")
PLAIN = str(PROGRAMS / "plain.py")
IDLE = str(PROGRAMS / "idle.py")
TRIO_FREE = str(PROGRAMS / "trio_free.py")
#: Every wait for a message; generous (two shared cores).
WAIT = 30.0

Message = dict[str, Any]


def line_of(path: str, mark: str) -> int:
    """The line of *path* ending with ``# mark: <mark>``."""
    for number, line in enumerate(Path(path).read_text().splitlines(), start=1):
        if line.rstrip().endswith(f"# mark: {mark}"):
            return number
    raise LookupError(mark)


class Client:
    """A DAP client on a ``dapper-trio dap`` process; remembers every message."""

    def __init__(self, process: trio.Process) -> None:
        self.process = process
        assert process.stdin is not None
        self.writer = DapWriter(process.stdin)
        self.factory = MessageFactory()
        self.messages: list[Message] = []
        self._arrived = trio.Event()
        self.eof = False

    async def read(self) -> None:
        assert self.process.stdout is not None
        async for message in read_messages(self.process.stdout):
            assert isinstance(message, dict), message
            self.messages.append(message)
            self._arrived.set()
        self.eof = True
        self._arrived.set()

    async def send(self, command: str, arguments: dict[str, Any] | None = None) -> int:
        message = self.factory.request(command, arguments or {})
        await self.writer.send(message)
        seq: int = message["seq"]
        return seq

    async def send_raw(self, data: bytes) -> None:
        assert self.process.stdin is not None
        await self.process.stdin.send_all(data)

    async def wait_for(self, predicate: Callable[[Message], bool]) -> Message:
        """The first message (old or new) matching *predicate*."""
        seen = 0
        with trio.fail_after(WAIT):
            while True:
                for message in self.messages[seen:]:
                    if predicate(message):
                        return message
                seen = len(self.messages)
                if self.eof:
                    raise AssertionError(f"adapter ended; got {self.messages}")
                self._arrived = trio.Event()
                await self._arrived.wait()

    async def response(self, seq: int) -> Message:
        return await self.wait_for(
            lambda m: m["type"] == "response" and m["request_seq"] == seq
        )

    async def request(
        self, command: str, arguments: dict[str, Any] | None = None
    ) -> Message:
        """Send a request and return its (successful) response."""
        response = await self.response(await self.send(command, arguments))
        assert response["success"], response
        return response

    async def event(self, name: str, after: int = 0) -> Message:
        """The first *name* event among messages from index *after* on."""
        return await self.wait_for(
            lambda m: (
                m["type"] == "event"
                and m["event"] == name
                and self.messages.index(m) >= after
            )
        )

    def mark(self) -> int:
        return len(self.messages)

    async def launch(
        self,
        program: str,
        breakpoints: dict[str, list[dict[str, Any]]] | None = None,
        **arguments: Any,
    ) -> list[Message]:
        """initialize, launch, set breakpoints, configurationDone."""
        await self.request("initialize", {"adapterID": "dapper-trio"})
        await self.request("launch", {"program": program, **arguments})
        answers = []
        for path, specs in (breakpoints or {}).items():
            response = await self.request(
                "setBreakpoints", {"source": {"path": path}, "breakpoints": specs}
            )
            answers.extend(response["body"]["breakpoints"])
        await self.request("configurationDone")
        return answers

    async def stack(self, thread_id: int) -> list[Message]:
        response = await self.request("stackTrace", {"threadId": thread_id})
        frames: list[Message] = response["body"]["stackFrames"]
        return frames

    async def stop(self, after: int = 0) -> tuple[Message, Message]:
        """The next ``stopped`` event (from index *after* on) and the top
        frame of the thread it names."""
        stopped = await self.event("stopped", after=after)
        [frame, *_] = await self.stack(stopped["body"]["threadId"])
        return stopped, frame

    async def locals(self, frame_id: int) -> dict[str, str]:
        scopes = await self.request("scopes", {"frameId": frame_id})
        reference = scopes["body"]["scopes"][0]["variablesReference"]
        found = await self.request("variables", {"variablesReference": reference})
        return {v["name"]: v["value"] for v in found["body"]["variables"]}


@contextlib.asynccontextmanager
async def open_adapter(*, reading: bool = True) -> AsyncIterator[Client]:
    """A ``dapper-trio dap`` process and a client on it; killed and reaped after.

    Not *reading*, the client reads nothing until the test runs its ``read``.
    """
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "dapper_trio", "dap"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    client = Client(process)
    try:
        async with trio.open_nursery() as nursery:
            if reading:
                nursery.start_soon(client.read)
            yield client
            nursery.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            # The end of its stdin makes the adapter end its debuggee and
            # clean up; it is killed only if that does not work.
            if process.stdin is not None:
                await process.stdin.aclose()
            if not reading and process.stdout is not None:
                await process.stdout.aclose()  # a writing adapter sees EPIPE
            with trio.move_on_after(10):
                await process.wait()
            if process.returncode is None:
                process.kill()
                await process.wait()
            for stream in (process.stdin, process.stdout):
                if stream is not None:
                    await stream.aclose()


async def disconnect(client: Client) -> None:
    await client.request("disconnect", {"terminateDebuggee": True})
    with trio.fail_after(WAIT):
        await client.process.wait()


async def test_malformed_json_gets_an_error_and_the_session_goes_on() -> None:
    """A body that is not JSON is answered with an error; the next request works."""
    async with open_adapter() as client:
        body = b'{"seq": 1, "type": "request", "command": '
        await client.send_raw(b"Content-Length: %d\r\n\r\n%b" % (len(body), body))
        error = await client.wait_for(lambda m: m["type"] == "response")
        assert error["success"] is False
        assert "bad message" in error["message"]
        response = await client.request("initialize", {"adapterID": "x"})
        assert response["body"]["supportsConfigurationDoneRequest"] is True
        await disconnect(client)


async def test_wrongly_typed_arguments_name_the_argument() -> None:
    """Arguments of the wrong type or missing get an error naming them."""
    async with open_adapter() as client:
        await client.request("initialize")
        seq = await client.send("launch", {"program": PLAIN, "args": "not a list"})
        error = await client.response(seq)
        assert error["success"] is False
        assert (
            error["message"] == "launch: argument 'args' must be an array, not a string"
        )
        seq = await client.send("setBreakpoints", {"source": {}})
        error = await client.response(seq)
        assert "needs a 'path'" in error["message"]
        seq = await client.send("launch", {"program": PLAIN, "cwd": "/no/such/dir"})
        error = await client.response(seq)
        assert "is not a directory" in error["message"]
        await disconnect(client)


@pytest.mark.parametrize("in_process", [False, True])
async def test_adapter_exits_soon_after_disconnect_with_stdin_open(
    in_process: bool,
) -> None:
    """After disconnect the adapter exits within a second, stdin still open."""
    async with open_adapter() as client:
        await client.launch(IDLE, inProcess=in_process)
        await client.wait_for(
            lambda m: m.get("event") == "output" and "ready" in m["body"]["output"]
        )
        seq = await client.send("disconnect", {"terminateDebuggee": True})
        await client.response(seq)
        started = time.monotonic()
        with trio.fail_after(WAIT):
            await client.process.wait()
        assert time.monotonic() - started < 1.0
        assert client.process.returncode == 0


async def test_end_of_stdin_ends_the_debuggee_and_the_adapter() -> None:
    """Closing the adapter's stdin ends the program and then the adapter."""
    async with open_adapter() as client:
        await client.launch(IDLE)
        process_event = await client.event("process")
        pid = process_event["body"]["systemProcessId"]
        await client.wait_for(
            lambda m: m.get("event") == "output" and "ready" in m["body"]["output"]
        )
        assert client.process.stdin is not None
        await client.process.stdin.aclose()
        with trio.fail_after(WAIT):
            await client.process.wait()
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


async def test_a_slow_evaluate_does_not_delay_threads_and_can_be_cancelled() -> None:
    """threads is answered during a slow evaluate, and cancel cancels it."""
    async with open_adapter() as client:
        await client.launch(SMOKE, {SMOKE: [{"line": line_of(SMOKE, "breakpoint")}]})
        stopped = await client.event("stopped")
        frame = (await client.stack(stopped["body"]["threadId"]))[0]
        slow = await client.send(
            "evaluate",
            {"expression": "__import__('time').sleep(3)", "frameId": frame["id"]},
        )
        started = time.monotonic()
        threads = await client.request("threads")
        assert {t["name"] for t in threads["body"]["threads"]} >= {"worker"}
        assert time.monotonic() - started < 2.0
        await client.request("cancel", {"requestId": slow})
        cancelled = await client.response(slow)
        assert cancelled["success"] is False
        assert cancelled["message"] == "cancelled"
        assert time.monotonic() - started < 2.5
        await disconnect(client)


async def test_condition_hit_condition_and_logpoint() -> None:
    """A condition, a hit count and a logpoint each decide stops as DAP says."""
    loop = line_of(LOOPS, "loop")
    helper = line_of(LOOPS, "helper")
    async with open_adapter() as client:
        answers = await client.launch(
            LOOPS,
            {
                LOOPS: [
                    {"line": helper, "logMessage": "helper x={x}"},
                    {"line": loop, "condition": "i >= 1", "hitCondition": "2"},
                ]
            },
        )
        assert [a["verified"] for a in answers] == [True, True]
        log = await client.wait_for(
            lambda m: m.get("event") == "output" and m["body"]["category"] == "console"
        )
        assert log["body"]["output"] == "helper x=3\n"
        stopped = await client.event("stopped")
        frame = (await client.stack(stopped["body"]["threadId"]))[0]
        assert frame["line"] == loop
        assert (await client.locals(frame["id"]))["i"] == "2"
        mark = client.mark()
        await client.request("continue", {"threadId": stopped["body"]["threadId"]})
        exited = await client.event("exited", after=mark)
        assert exited["body"]["exitCode"] == 0
        await client.event("terminated", after=mark)
        await disconnect(client)


async def test_bad_hit_condition_and_condition_are_unverified() -> None:
    """A hit condition or condition that cannot work is refused with a message."""
    loop = line_of(LOOPS, "loop")
    async with open_adapter() as client:
        await client.request("initialize")
        response = await client.request(
            "setBreakpoints",
            {
                "source": {"path": LOOPS},
                "breakpoints": [
                    {"line": loop, "hitCondition": "often"},
                    {"line": loop, "condition": "i >"},
                    {"line": 10_000},
                ],
            },
        )
        verdicts = response["body"]["breakpoints"]
        assert [v["verified"] for v in verdicts] == [False, False, False]
        assert "hit condition 'often'" in verdicts[0]["message"]
        assert "not an expression" in verdicts[1]["message"]
        assert "holds no code" in verdicts[2]["message"]
        await disconnect(client)


async def test_step_in_and_step_out_follow_the_task() -> None:
    """stepIn enters the awaited coroutine, stepOut stops at its return, next
    goes on in the caller, all in the same task."""
    call = line_of(LOOPS, "call")
    async with open_adapter() as client:
        await client.launch(LOOPS, {LOOPS: [{"line": call}]})
        stopped = await client.event("stopped")
        thread = stopped["body"]["threadId"]
        mark = client.mark()
        await client.request("stepIn", {"threadId": thread})
        stepped = await client.event("stopped", after=mark)
        assert stepped["body"]["threadId"] == thread
        assert (await client.stack(thread))[0]["name"] == "helper"
        mark = client.mark()
        await client.request("stepOut", {"threadId": thread})
        await client.event("stopped", after=mark)
        top = (await client.stack(thread))[0]
        assert top["name"] == "helper"  # at its return, as pdb's "return"
        mark = client.mark()
        await client.request("next", {"threadId": thread})
        await client.event("stopped", after=mark)
        top = (await client.stack(thread))[0]
        assert (top["name"], top["line"]) == ("main", line_of(LOOPS, "after"))
        await disconnect(client)


async def test_uncaught_exception_stops_with_the_traceback() -> None:
    """An exception escaping the program stops with reason exception."""
    async with open_adapter() as client:
        await client.launch(CRASH)
        stopped = await client.event("stopped")
        assert stopped["body"]["reason"] == "exception"
        assert "ValueError: boom" in stopped["body"]["text"]
        frames = await client.stack(stopped["body"]["threadId"])
        assert (frames[0]["name"], frames[0]["line"]) == (
            "doomed",
            line_of(CRASH, "raise"),
        )
        mark = client.mark()
        await client.request("continue", {"threadId": stopped["body"]["threadId"]})
        exited = await client.event("exited", after=mark)
        assert exited["body"]["exitCode"] == 1
        await disconnect(client)


async def test_stop_on_entry_in_a_plain_program_and_its_output() -> None:
    """stopOnEntry stops a plain program on its main thread; output, status follow."""
    async with open_adapter() as client:
        await client.launch(PLAIN, stopOnEntry=True)
        stopped = await client.event("stopped")
        assert stopped["body"]["reason"] == "entry"
        threads = await client.request("threads")
        assert threads["body"]["threads"] == [
            {"id": stopped["body"]["threadId"], "name": "MainThread"}
        ]
        frames = await client.stack(stopped["body"]["threadId"])
        assert frames[0]["line"] == 1  # the docstring, as python -m pdb
        mark = client.mark()
        await client.request("continue", {"threadId": stopped["body"]["threadId"]})
        exited = await client.event("exited", after=mark)
        assert exited["body"]["exitCode"] == 3
        output = [
            (m["body"]["category"], m["body"]["output"])
            for m in client.messages
            if m.get("event") == "output"
        ]
        stdout = "".join(text for category, text in output if category == "stdout")
        stderr = "".join(text for category, text in output if category == "stderr")
        assert stdout == "first: stdout\nthird: stdout\n"
        assert stderr == "second: stderr\n"
        await disconnect(client)


async def test_terminate_a_stopped_program_runs_its_cleanup() -> None:
    """terminate while stopped quits the debugger: exited, then terminated."""
    async with open_adapter() as client:
        await client.launch(SMOKE, {SMOKE: [{"line": line_of(SMOKE, "breakpoint")}]})
        await client.event("stopped")
        mark = client.mark()
        await client.request("terminate")
        exited = await client.event("exited", after=mark)
        assert exited["body"]["exitCode"] == 1
        await client.event("terminated", after=mark)
        await disconnect(client)


async def test_thread_events_for_trio_tasks() -> None:
    """Each trio task is announced as a thread that starts and exits."""
    async with open_adapter() as client:
        await client.launch(SMOKE)
        await client.event("terminated")
        threads = thread_events(client)
        assert threads == [
            ("started", 1),
            ("started", 2),
            ("exited", 2),
            ("exited", 1),
        ]
        await disconnect(client)


BUSY_TASKS = str(PROGRAMS / "busy_tasks.py")


async def test_thread_events_of_a_busy_program_do_not_wake_the_agent(
    tmp_path: Path,
) -> None:
    """Thread events wait while the program runs: the agent thread sleeps.

    Woken for them, it would fight the busy program for the GIL; they are
    sent when the program idles, stops or ends (here: at its end, in order).
    The program starts its tasks once the agent's start-up exchange is over
    (the main task's thread event, sent while the program idles, comes
    after it): that exchange wakes the agent once in any case.
    """
    go = tmp_path / "go"
    async with open_adapter() as client:
        await client.launch(BUSY_TASKS, args=[str(go)])
        await client.event("thread")
        go.touch()
        await client.event("terminated")
        output = stdout_of(client)
        [line] = [line for line in output.splitlines() if "agent" in line]
        woke = int(line.split()[2])
        assert woke < 20, line  # 0 here; ~200 if sent as they come, in batches
        threads = thread_events(client)
        started = threads_that(threads, "started")
        exited = threads_that(threads, "exited")
        assert len(started) == 31
        assert sorted(exited) == sorted(started)
        assert threads.index(("exited", 1)) == len(threads) - 1
        await disconnect(client)


async def test_thread_events_are_sent_while_the_program_idles() -> None:
    """A program idle in trio.sleep gets its thread events sent at once."""
    async with open_adapter() as client:
        await client.launch(IDLE)
        started = await client.wait_for(
            lambda m: m.get("event") == "thread" and m["body"]["reason"] == "started"
        )
        assert started["body"]["threadId"] == 1
        assert not any(m.get("event") == "exited" for m in client.messages)
        await disconnect(client)


LOOP_HOOKS = str(PROGRAMS / "loop_hooks.py")


async def test_a_busy_program_s_loop_calls_no_hook_of_ours_at_every_turn() -> None:
    """trio calls ``before_io_wait`` at every turn of its loop: the hook that
    sends waiting thread events when the loop idles is there only while they
    wait, and goes once the loop stays busy (always there, it cost a busy
    trio program 2-3 % of its run).  Every task is still announced."""
    async with open_adapter() as client:
        await client.launch(LOOP_HOOKS, args=["1"])
        await client.event("terminated")
        [busy] = [line for line in stdout_of(client).splitlines() if "busy:" in line]
        assert "before_io_wait" not in busy.split()
        assert {"task_spawned", "task_exited"} <= set(busy.split())
        threads = thread_events(client)
        started = threads_that(threads, "started")
        exited = threads_that(threads, "exited")
        assert sorted(started) == [1, 2, 3, 4]  # main and its three tasks
        assert sorted(exited) == sorted(started)
        await disconnect(client)


async def test_listen_serves_a_client_on_loopback_tcp() -> None:
    """--listen 0 announces its port; a TCP client gets a working session."""
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "dapper_trio", "dap", "--listen", "0"],
        stderr=subprocess.PIPE,
    )
    try:
        assert process.stderr is not None
        announced = b""
        with trio.fail_after(WAIT):
            while b"\n" not in announced:
                announced += await process.stderr.receive_some(1024)
        host_port = announced.decode().strip().rpartition(" ")[2]
        host, _, port = host_port.rpartition(":")
        assert host == "127.0.0.1"
        stream = await trio.open_tcp_stream(host, int(port))
        async with stream:
            writer = DapWriter(stream)
            factory = MessageFactory()
            await writer.send(factory.request("initialize", {"adapterID": "x"}))
            with trio.fail_after(WAIT):
                async with contextlib.aclosing(read_messages(stream)) as messages:
                    async for message in messages:
                        assert isinstance(message, dict)
                        if message["type"] == "response":
                            assert message["success"] is True
                            assert message["command"] == "initialize"
                            break
    finally:
        with trio.CancelScope(shield=True):
            process.terminate()
            with trio.move_on_after(10):
                await process.wait()
            if process.returncode is None:
                process.kill()
                await process.wait()
            if process.stderr is not None:
                await process.stderr.aclose()


# -- attach ----------------------------------------------------------------------

LISTENER = str(PROGRAMS / "listener.py")
PLAIN_FUNCS = str(PROGRAMS / "plain_funcs.py")
GROUPS = str(PROGRAMS / "groups.py")


@contextlib.asynccontextmanager
async def open_listener_program() -> AsyncIterator[tuple[trio.Process, Message]]:
    """listener.py, running, and the attach arguments it printed; killed after."""
    process = await trio.lowlevel.open_process(
        [sys.executable, LISTENER], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        assert process.stdout is not None
        line = b""
        with trio.fail_after(WAIT):
            while not line.endswith(b"\n"):
                chunk = await process.stdout.receive_some(1)
                assert chunk, "listener.py ended before printing its address"
                line += chunk
        yield process, json.loads(line)
    finally:
        with trio.CancelScope(shield=True):
            if process.returncode is None:
                process.kill()
            with trio.fail_after(WAIT):
                await process.wait()
            for stream in (process.stdout, process.stderr):
                if stream is not None:
                    await stream.aclose()


async def error_of(client: Client, command: str, arguments: dict[str, Any]) -> str:
    """The message of the error response to *command* (which must fail)."""
    response = await client.response(await client.send(command, arguments))
    assert response["success"] is False, response
    message: str = response["message"]
    return message


async def test_attach_refuses_a_wrong_token_then_serves_the_right_one() -> None:
    """A wrong token is refused with an error and the session goes on; the
    right one attaches, and disconnect leaves the program running."""
    async with (
        open_listener_program() as (program, arguments),
        open_adapter() as client,
    ):
        await client.request("initialize")
        wrong = {**arguments, "token": "0" * 64}
        message = await error_of(client, "attach", wrong)
        assert "authentication failed: wrong token" in message
        assert not [m for m in client.messages if m.get("event") == "initialized"]
        await client.request("attach", arguments)
        await client.event("initialized")
        await client.request("configurationDone")
        process = await client.event("process")
        assert process["body"]["startMethod"] == "attach"
        assert process["body"]["systemProcessId"] == program.pid
        threads = await client.request("threads")
        names = [thread["name"] for thread in threads["body"]["threads"]]
        assert names == ["__main__.main", "ticker"]
        await client.request("disconnect", {})
        with trio.fail_after(WAIT):
            await client.process.wait()
        await trio.sleep(0.2)
        assert program.returncode is None  # detached: it goes on


async def test_attach_arguments_are_checked() -> None:
    """attach without a token, or with an address that is not one, fails clearly."""
    async with open_adapter() as client:
        await client.request("initialize")
        assert "missing argument 'token'" in await error_of(
            client, "attach", {"port": 5678}
        )
        assert "not a dapper-trio address" in await error_of(
            client, "attach", {"address": "localhost:5678", "token": "t"}
        )
        assert "give the program's 'address'" in await error_of(
            client, "attach", {"port": 70000, "token": "t"}
        )
        assert "'port' must be an integer, not a string" in await error_of(
            client, "attach", {"port": "5678", "token": "t"}
        )
        assert "cannot reach tcp:127.0.0.1:1" in await error_of(
            client,
            "attach",
            {"connect": {"host": "127.0.0.1", "port": 1}, "token": "t"},
        )
        await disconnect(client)


async def test_listen_on_a_unix_socket_can_wait_for_the_client() -> None:
    """listen(transport="unix", wait_for_client=True) returns once attached."""
    process = await trio.lowlevel.open_process(
        [sys.executable, LISTENER, "-", "unix", "wait"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert process.stderr is not None
        assert process.stdout is not None
        announced = b""
        with trio.fail_after(WAIT):
            while b"\n" not in announced:
                chunk = await process.stderr.receive_some(1024)
                assert chunk, announced
                announced += chunk
        words = announced.decode().split()
        address = words[words.index("address") + 1]
        token = words[words.index("token") + 1]
        assert address.startswith("unix:")
        async with open_adapter() as client:
            await client.request("initialize")
            await client.request("attach", {"address": address, "token": token})
            await client.request("configurationDone")
            said = b""
            with trio.fail_after(WAIT):
                while not said.endswith(b"\n"):
                    said += await process.stdout.receive_some(1024)
            assert said == b"listener: attached\n"
            await disconnect(client)
        with trio.fail_after(WAIT):
            await process.wait()
    finally:
        with trio.CancelScope(shield=True):
            if process.returncode is None:
                process.kill()
            await process.wait()
            for stream in (process.stdout, process.stderr):
                if stream is not None:
                    await stream.aclose()


async def test_listen_takes_its_token_from_the_environment() -> None:
    """$DAPPER_TRIO_TOKEN is the token a listening program asks for."""
    os.environ["DAPPER_TRIO_TOKEN"] = "a-token-from-the-environment"
    try:
        async with open_listener_program() as (_, arguments):
            assert arguments["token"] == "a-token-from-the-environment"
    finally:
        del os.environ["DAPPER_TRIO_TOKEN"]


async def test_attach_terminate_ends_the_program() -> None:
    """terminate on an attached program quits it (its debugger quits)."""
    async with (
        open_listener_program() as (program, arguments),
        open_adapter() as client,
    ):
        await client.request("initialize")
        await client.request("attach", arguments)
        await client.request("configurationDone")
        mark = client.mark()
        await client.request("terminate")
        await client.event("terminated", after=mark)
        with trio.fail_after(WAIT):
            await program.wait()
        assert program.returncode == 1
        await disconnect(client)


# -- launch arguments and in-process ------------------------------------------------


async def test_launch_arguments_of_the_backends_are_checked() -> None:
    """inProcess with python, a bogus ipcTransport: errors naming them."""
    async with open_adapter() as client:
        await client.request("initialize")
        assert "'python' cannot be used with 'inProcess'" in await error_of(
            client, "launch", {"program": PLAIN, "inProcess": True, "python": "python3"}
        )
        assert "'ipcTransport' cannot be used with 'inProcess'" in await error_of(
            client,
            "launch",
            {"program": PLAIN, "inProcess": True, "ipcTransport": "tcp"},
        )
        assert (
            """'ipcTransport' must be "unix" or "tcp", not 'udp'"""
            in await error_of(
                client, "launch", {"program": PLAIN, "ipcTransport": "udp"}
            )
        )
        assert "'inProcess' must be a boolean, not a string" in await error_of(
            client, "launch", {"program": PLAIN, "inProcess": "yes"}
        )
        await disconnect(client)


async def test_in_process_program_runs_in_the_adapter_process() -> None:
    """inProcess: the process event names the adapter's pid; output, exit code."""
    async with open_adapter() as client:
        await client.launch(PLAIN, inProcess=True)
        process = await client.event("process")
        assert process["body"]["systemProcessId"] == client.process.pid
        exited = await client.event("exited")
        assert exited["body"]["exitCode"] == 3
        await client.event("terminated")
        output = "".join(
            m["body"]["output"]
            for m in client.messages
            if m.get("event") == "output" and m["body"]["category"] == "stdout"
        )
        assert output == "first: stdout\nthird: stdout\n"
        await disconnect(client)


# -- bad input for each request ------------------------------------------------------


async def test_function_breakpoint_requests_refuse_bad_input() -> None:
    """setFunctionBreakpoints: wrong shapes are errors, bad conditions unverified."""
    async with open_adapter() as client:
        await client.request("initialize")
        assert "'breakpoints' must be an array, not an object" in await error_of(
            client, "setFunctionBreakpoints", {"breakpoints": {}}
        )
        assert "each item of 'breakpoints' must be an object, not a string" in (
            await error_of(client, "setFunctionBreakpoints", {"breakpoints": ["f"]})
        )
        assert "needs a non-empty 'name'" in await error_of(
            client, "setFunctionBreakpoints", {"breakpoints": [{"name": " "}]}
        )
        assert "'condition' must be a string, not a number" in await error_of(
            client,
            "setFunctionBreakpoints",
            {"breakpoints": [{"name": "f", "condition": 1}]},
        )
        response = await client.request(
            "setFunctionBreakpoints",
            {
                "breakpoints": [
                    {"name": "scale", "condition": "factor >"},
                    {"name": "scale", "hitCondition": "twice"},
                    {"name": "scale"},
                ]
            },
        )
        verdicts = response["body"]["breakpoints"]
        assert [v["verified"] for v in verdicts] == [False, False, False]
        assert "not an expression" in verdicts[0]["message"]
        assert "hit condition 'twice'" in verdicts[1]["message"]
        assert "no program is launched or attached" in verdicts[2]["message"]
        await client.request("launch", {"program": PLAIN_FUNCS})
        await client.event("initialized")
        response = await client.request(
            "setFunctionBreakpoints",
            {"breakpoints": [{"name": "scale"}, {"name": "plain_funcs.nope"}]},
        )
        found, missing = response["body"]["breakpoints"]
        assert (found["verified"], found["line"]) == (
            True,
            line_of(PLAIN_FUNCS, "scale") - 1,
        )
        assert missing["verified"] is False
        assert "no function 'plain_funcs.nope' found" in missing["message"]
        await disconnect(client)


async def test_exception_breakpoint_requests_refuse_bad_input() -> None:
    """setExceptionBreakpoints and exceptionInfo: bad arguments are errors."""
    async with open_adapter() as client:
        await client.request("initialize")
        assert "'filters' must be an array of strings" in await error_of(
            client, "setExceptionBreakpoints", {"filters": ["raised", 3]}
        )
        response = await client.request(
            "setExceptionBreakpoints", {"filters": ["raised", "sometimes"]}
        )
        assert response["body"]["breakpoints"] == [
            {"verified": True},
            {"verified": False, "message": "unknown filter 'sometimes'"},
        ]
        assert "missing argument 'threadId'" in await error_of(
            client, "exceptionInfo", {}
        )
        await client.request("launch", {"program": SMOKE})
        await client.request(
            "setBreakpoints",
            {
                "source": {"path": SMOKE},
                "breakpoints": [{"line": line_of(SMOKE, "breakpoint")}],
            },
        )
        await client.request("setExceptionBreakpoints", {"filters": []})
        await client.request("configurationDone")
        stopped = await client.event("stopped")
        thread = stopped["body"]["threadId"]
        assert f"thread {thread} is not stopped on an exception" in await error_of(
            client, "exceptionInfo", {"threadId": thread}
        )
        await disconnect(client)


async def test_variable_completion_and_source_requests_refuse_bad_input() -> None:
    """setVariable, completions, source: missing, mistyped or stale arguments."""
    async with open_adapter() as client:
        await client.launch(SMOKE, {SMOKE: [{"line": line_of(SMOKE, "breakpoint")}]})
        stopped = await client.event("stopped")
        frame = (await client.stack(stopped["body"]["threadId"]))[0]
        assert "missing argument 'name'" in await error_of(
            client, "setVariable", {"variablesReference": 1, "value": "1"}
        )
        assert "'value' must be a string, not a number" in await error_of(
            client, "setVariable", {"variablesReference": 1, "name": "x", "value": 1}
        )
        assert "variablesReference 999 is not valid now" in await error_of(
            client,
            "setVariable",
            {"variablesReference": 999, "name": "x", "value": "1"},
        )
        assert "missing argument 'text'" in await error_of(
            client, "completions", {"column": 1}
        )
        assert "'column' must be an integer, not a string" in await error_of(
            client, "completions", {"text": "x", "column": "1"}
        )
        assert "frameId 999 is not valid now" in await error_of(
            client, "completions", {"text": "x", "column": 2, "frameId": 999}
        )
        completions = await client.request(
            "completions", {"text": "sor", "column": 4, "frameId": frame["id"]}
        )
        assert "sorted" in [t["label"] for t in completions["body"]["targets"]]
        assert "give a 'sourceReference' or a 'source' with a 'path'" in (
            await error_of(client, "source", {"source": {}})
        )
        assert "sourceReference 7 was never given" in await error_of(
            client, "source", {"sourceReference": 7}
        )
        assert "cannot read /no/such/file.py" in await error_of(
            client, "source", {"source": {"path": "/no/such/file.py"}}
        )
        sources = await client.request("loadedSources")
        assert SMOKE in [s["path"] for s in sources["body"]["sources"]]
        await disconnect(client)


async def test_completions_while_the_program_runs_use_main() -> None:
    """completions with the program running complete the names of __main__."""
    async with open_adapter() as client:
        await client.launch(IDLE)
        await client.wait_for(
            lambda m: m.get("event") == "output" and "ready" in m["body"]["output"]
        )
        completions = await client.request("completions", {"text": "ma", "column": 3})
        assert "main" in [t["label"] for t in completions["body"]["targets"]]
        await disconnect(client)


# -- the command line ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["dap", "--listen", "0.0.0.0:0"], "0.0.0.0 is not a loopback address"),
        (["dap", "--host", "127.0.0.1"], "--host needs --listen"),
        (["dap", "--listen", "[::1]:0", "--host", "127.0.0.1"], "disagree"),
        (["run", "--listen", "0", "-b", "3", PLAIN], "set breakpoints from the editor"),
        (["run", "--listen", "port", PLAIN], "expected [HOST:]PORT"),
    ],
)
def test_listen_and_host_options_are_checked(argv: list[str], message: str) -> None:
    """--listen takes loopback only; another address needs --host."""
    done = subprocess.run(
        [sys.executable, "-m", "dapper_trio", *argv],
        capture_output=True,
        text=True,
        timeout=WAIT,
        check=False,
    )
    assert done.returncode == 2
    assert message in done.stderr


async def test_host_names_another_address_with_a_warning() -> None:
    """--host 0.0.0.0 --listen 0 listens there, after a warning on stderr."""
    process = await trio.lowlevel.open_process(
        [
            sys.executable,
            "-m",
            "dapper_trio",
            "dap",
            "--host",
            "0.0.0.0",
            "--listen",
            "0",
        ],
        stderr=subprocess.PIPE,
    )
    try:
        assert process.stderr is not None
        text = b""
        with trio.fail_after(WAIT):
            while b"listening on 0.0.0.0:" not in text:
                chunk = await process.stderr.receive_some(1024)
                assert chunk, text
                text += chunk
        assert b"warning: listening on 0.0.0.0, not loopback" in text
    finally:
        with trio.CancelScope(shield=True):
            process.terminate()
            with trio.fail_after(WAIT):
                await process.wait()
            if process.stderr is not None:
                await process.stderr.aclose()


# -- no nested-process tree session under a DAP client -------------------------------

TREE_ENV = str(PROGRAMS / "tree_env.py")


def thread_events(client: Client) -> list[tuple[str, int]]:
    """``(reason, threadId)`` of each ``thread`` event so far, in order."""
    return [
        (m["body"]["reason"], m["body"]["threadId"])
        for m in client.messages
        if m.get("event") == "thread"
    ]


def threads_that(threads: list[tuple[str, int]], reason: str) -> list[int]:
    """The thread ids of *threads* (``thread_events``) with *reason*."""
    return [number for what, number in threads if what == reason]


def stdout_of(client: Client) -> str:
    """The program's stdout so far, from the output events."""
    return "".join(
        m["body"]["output"]
        for m in client.messages
        if m.get("event") == "output" and m["body"]["category"] == "stdout"
    )


def tree_seen(output: str) -> dict[str, str]:
    """What tree_env.py printed it saw of a tree session."""
    lines = [line for line in output.splitlines() if line.startswith("tree: ")]
    assert len(lines) == 1, output
    seen: dict[str, str] = json.loads(lines[0][len("tree: ") :])
    return seen


@pytest.mark.parametrize("in_process", [False, True], ids=["external", "inProcess"])
async def test_a_launched_program_is_in_no_tree_session(in_process: bool) -> None:
    """A launched program (either backend) sees no terminal tree session."""
    async with open_adapter() as client:
        await client.launch(TREE_ENV, inProcess=in_process)
        exited = await client.event("exited")
        assert exited["body"]["exitCode"] == 0
        assert tree_seen(stdout_of(client)) == {}
        await disconnect(client)


def test_a_listening_program_is_in_no_tree_session() -> None:
    """dapper-trio run --listen: the program sees no terminal tree session."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("DAPPER_TRIO_TREE")
    }
    done = subprocess.run(
        [sys.executable, "-m", "dapper_trio", "run", "--listen", "0", "-c", TREE_ENV],
        capture_output=True,
        text=True,
        timeout=WAIT,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "attach with address" in done.stderr
    assert tree_seen(done.stdout) == {}


@pytest.mark.parametrize("in_process", [False, True], ids=["external", "inProcess"])
async def test_disconnect_answers_after_the_programs_last_events(
    in_process: bool,
) -> None:
    """disconnect of a stopped program: exited and terminated, then the answer."""
    async with open_adapter() as client:
        await client.launch(
            SMOKE,
            {SMOKE: [{"line": line_of(SMOKE, "breakpoint")}]},
            inProcess=in_process,
        )
        await client.event("stopped")
        mark = client.mark()
        seq = await client.send("disconnect", {"terminateDebuggee": True})
        answer = await client.response(seq)
        assert answer["success"] is True
        after = client.messages[mark : client.messages.index(answer)]
        events = [m["event"] for m in after if m["type"] == "event"]
        assert events[-2:] == ["exited", "terminated"], events
        exited = next(m for m in after if m.get("event") == "exited")
        assert exited["body"]["exitCode"] == 1
        with trio.fail_after(WAIT):
            await client.process.wait()


OUTPUT_PROGRAM = """\
import os
import sys
import threading

for i in range(100):
    print(f"out {i}")
    print(f"err {i}", file=sys.stderr)
sys.stdout.buffer.write("bytes: caf\\u00e9\\n".encode(sys.stdout.encoding))
sys.stdout.buffer.write("split: \\u00e9".encode("utf-8")[:-1])
sys.stdout.buffer.write("\\u00e9".encode("utf-8")[-1:] + b"\\n")
sys.stdout.flush()
thread = threading.Thread(target=lambda: print("from a thread"))
thread.start()
thread.join()
print("streams:", sys.stdout.isatty(), sys.stdout.writable(), sys.stdout.fileno(),
      sys.stderr.fileno(), sys.stdout.encoding, sys.stdout.buffer.fileno(), flush=True)
os.write(1, b"fd-level stdout\\n")
os.write(2, b"fd-level stderr\\n")
print("last words", end="")
"""


async def test_external_output_keeps_the_order_of_stdout_and_stderr(
    tmp_path: Path,
) -> None:
    """A child process's sys.stdout and sys.stderr come as output events in the
    order written (threads and ``buffer`` too), all before ``exited``; what
    goes to the file descriptors directly still comes (through the pipes)."""
    program = tmp_path / "output_order.py"
    program.write_text(OUTPUT_PROGRAM)
    async with open_adapter() as client:
        await client.launch(str(program), env={"PYTHONIOENCODING": "utf-8"})
        exited = await client.event("exited")
        assert exited["body"]["exitCode"] == 0
        before_exit = client.messages[: client.messages.index(exited)]
        output = [
            (m["body"]["category"], m["body"]["output"])
            for m in before_exit
            if m.get("event") == "output"
        ]
        fd_level = [(category, text) for category, text in output if "fd-level" in text]
        python_level = [
            (category, line)
            for category, text in output
            if "fd-level" not in text
            for line in text.splitlines(keepends=True)
        ]
        # Lines of one category come back joined, in order; split them again.
        merged: list[tuple[str, str]] = []
        for category, line in python_level:
            if (
                merged
                and merged[-1][0] == category
                and not merged[-1][1].endswith("\n")
            ):
                merged[-1] = (category, merged[-1][1] + line)
            else:
                merged.append((category, line))
        expected = []
        for i in range(100):
            expected += [("stdout", f"out {i}\n"), ("stderr", f"err {i}\n")]
        assert merged[:200] == expected
        rest = merged[200:]
        assert rest[:3] == [
            ("stdout", "bytes: caf\u00e9\n"),
            ("stdout", "split: \u00e9\n"),
            ("stdout", "from a thread\n"),
        ]
        assert rest[3][1] == "streams: False True 1 2 utf-8 1\n"
        assert rest[4:] == [("stdout", "last words")]
        assert ("stdout", "fd-level stdout\n") in fd_level
        assert ("stderr", "fd-level stderr\n") in fd_level
        await client.event("terminated")


CRASH_OUTPUT_PROGRAM = """\
import atexit
import sys

atexit.register(print, "at exit: after the session, through the pipe")
print("before the crash", end="")
print(": stdout")
raise ValueError("the end")
"""


async def test_external_output_before_an_uncaught_exception_and_at_exit(
    tmp_path: Path,
) -> None:
    """What was printed before an uncaught exception comes before its traceback,
    and both before ``exited``; so does what atexit handlers print (the real
    stream takes it once the session is over)."""
    program = tmp_path / "crash_output.py"
    program.write_text(CRASH_OUTPUT_PROGRAM)
    async with open_adapter() as client:
        await client.request("initialize", {"adapterID": "dapper-trio"})
        await client.request("launch", {"program": str(program)})
        await client.request("setExceptionBreakpoints", {"filters": []})
        await client.request("configurationDone")
        exited = await client.event("exited")
        assert exited["body"]["exitCode"] == 1
        output = [
            (m["body"]["category"], m["body"]["output"])
            for m in client.messages[: client.messages.index(exited)]
            if m.get("event") == "output"
        ]
        program_output = [item for item in output if item[0] != "console"]
        joined = "".join(text for _, text in program_output)
        assert joined.startswith("before the crash: stdout\n"), program_output
        assert program_output[0][0] == "stdout"
        crash = next(
            i for i, item in enumerate(program_output) if "Traceback" in item[1]
        )
        assert program_output[crash][0] == "stderr"
        assert "ValueError: the end" in "".join(
            text for category, text in program_output if category == "stderr"
        )
        assert "at exit: after the session, through the pipe\n" in "".join(
            text for category, text in program_output if category == "stdout"
        )
        await client.event("terminated")


# -- the spare debuggee: a launch that fits runs in a process forked at start-up -----

PROCESS_ENV = str(PROGRAMS / "process_env.py")


def children_of(pid: int) -> list[int]:
    """The live child processes of *pid* (from /proc)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                fields = f.read().decode(errors="replace").rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(entry))
    return found


def process_state(pid: int) -> str | None:
    """The state letter of process *pid* (Z: a zombie); None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().decode(errors="replace").rpartition(")")[2].split()
    except OSError:
        return None
    return fields[0]


async def launched_process(client: Client, **arguments: Any) -> dict[str, Any]:
    """Launch process_env.py; what it printed, checked against the adapter's events."""
    await client.launch(PROCESS_ENV, **arguments)
    exited = await client.event("exited")
    assert exited["body"]["exitCode"] == 0
    output = stdout_of(client)
    assert "straight to fd 1" in output  # its file descriptor 1 is forwarded too
    lines = [line for line in output.splitlines() if line.startswith("process: ")]
    assert len(lines) == 1, output
    seen: dict[str, Any] = json.loads(lines[0][len("process: ") :])
    process_event = await client.event("process")
    assert process_event["body"]["systemProcessId"] == seen["pid"]
    assert seen["ppid"] == client.process.pid
    # Nothing of the client's pipes to the adapter is open in the program.
    adapter_pipes = set()
    for stream in (client.process.stdin, client.process.stdout):
        assert isinstance(stream, trio.lowlevel.FdStream)
        adapter_pipes.add(f"pipe:[{os.fstat(stream.fileno()).st_ino}]")
    assert not adapter_pipes & set(seen["fds"].values()), seen["fds"]
    await disconnect(client)
    return seen


def ran_in_the_spare(seen: dict[str, Any]) -> bool:
    """Whether the program ran in the spare: it has the adapter's command line."""
    orig_argv: list[str] = seen["orig_argv"]
    if orig_argv[-2:] == ["-c", "from dapper_trio._dap_agent import main; main()"]:
        return False
    assert orig_argv[-3:] == ["-m", "dapper_trio", "dap"], orig_argv
    return True


def fd_kinds(fds: dict[str, str]) -> list[str]:
    """What a program's file descriptors point at, without inode numbers."""
    return sorted(target.partition(":[")[0] for target in fds.values())


@pytest.mark.parametrize(
    ("arguments", "in_spare"),
    [
        ({}, True),
        ({"env": {"PROCESS_ENV_MARK": "set"}}, True),
        ({"python": sys.executable}, False),
        ({"env": {"PYTHONWARNINGS": "ignore"}}, False),
        ({"env": {"LANG": None}}, False),
    ],
    ids=["plain", "env", "python given", "PYTHON* variable", "LANG unset"],
)
async def test_a_launch_runs_in_the_spare_when_it_fits(
    arguments: dict[str, Any], in_spare: bool
) -> None:
    """The spare runs a launch with the adapter's interpreter and start-up variables.

    Naming an interpreter, or setting (or unsetting) a variable the
    interpreter reads at start-up, gets a fresh interpreter instead.
    """
    async with open_adapter() as client:
        seen = await launched_process(client, **arguments)
    assert ran_in_the_spare(seen) is in_spare


async def test_a_program_in_the_spare_sees_what_it_would_in_a_fresh_interpreter(
    tmp_path: Path,
) -> None:
    """Same working directory, argv, sys.path[0], environment, signals, stdio."""
    arguments = {"cwd": str(tmp_path), "args": ["a b", "c"]}
    env = {"PROCESS_ENV_MARK": "set"}
    async with open_adapter() as client:
        spare = await launched_process(client, env=env, **arguments)
    async with open_adapter() as client:
        fresh = await launched_process(
            client, env=env, python=sys.executable, **arguments
        )
    assert ran_in_the_spare(spare)
    assert not ran_in_the_spare(fresh)
    assert spare["cwd"] == str(tmp_path)
    assert spare["argv"] == [PROCESS_ENV, "a b", "c"]
    assert spare["env"] == {
        "PROCESS_ENV_MARK": "set",
        "PYTHONUNBUFFERED": "1",
        "DAPPER_TRIO_DAP_ADAPTER": None,
    }
    assert spare["session leader"]
    assert spare["stdin is /dev/null"]
    assert spare["stdout unbuffered"]
    assert spare["stderr unbuffered"]
    assert fd_kinds(spare["fds"]) == fd_kinds(fresh["fds"])
    for name in ("pid", "ppid", "orig_argv", "fds"):
        del spare[name], fresh[name]
    assert spare == fresh


async def test_the_spare_ends_with_a_session_that_launched_nothing() -> None:
    """initialize, disconnect: the adapter ends its spare and reaps it."""
    async with open_adapter() as client:
        await client.request("initialize", {"adapterID": "dapper-trio"})
        with trio.fail_after(WAIT):
            while not (spares := children_of(client.process.pid)):
                await trio.sleep(0.02)
        [spare] = spares
        # Its own session, as a launched one (it makes it first thing, but
        # the adapter answers initialize while it may still be starting).
        with trio.fail_after(WAIT):
            while os.getsid(spare) != spare:
                await trio.sleep(0.02)
        await disconnect(client)
        assert client.process.returncode == 0
        with pytest.raises(ProcessLookupError):
            os.kill(spare, 0)  # reaped by the adapter before it exited


async def test_the_spare_ends_by_itself_when_the_adapter_is_killed() -> None:
    """An adapter killed with SIGKILL leaves no spare behind: it sees its pipe close."""
    async with open_adapter() as client:
        await client.request("initialize", {"adapterID": "dapper-trio"})
        [spare] = children_of(client.process.pid)
        await kill_adapter_then_wait_for_end(client, spare)


async def kill_adapter_then_wait_for_end(client: Client, pid: int) -> None:
    """SIGKILL the adapter; return once process *pid* has ended by itself:
    gone and reaped, or exited and left to its new parent (a zombie)."""
    client.process.kill()
    with trio.fail_after(WAIT):
        await client.process.wait()
        while process_state(pid) not in (None, "Z"):
            await trio.sleep(0.05)


# -- a launched program that does not use trio ----------------------------------


@pytest.mark.parametrize("fresh", [False, True], ids=["spare", "fresh"])
async def test_a_program_without_trio_is_debugged_without_importing_it(
    fresh: bool,
) -> None:
    """A launched debuggee's agent speaks plain sockets: a program that never
    imports trio finds none loaded, and everything works without it -- in
    the spare too, which is forked before the adapter imports trio.
    """
    stop = line_of(TRIO_FREE, "stop")
    extra: dict[str, Any] = {"python": sys.executable} if fresh else {}
    async with open_adapter() as client:
        [verdict] = await client.launch(
            TRIO_FREE, {TRIO_FREE: [{"line": stop}]}, **extra
        )
        assert verdict["verified"]
        stopped = await client.event("stopped")
        thread_id = stopped["body"]["threadId"]
        threads = await client.request("threads")
        assert threads["body"]["threads"] == [{"id": thread_id, "name": "MainThread"}]
        [frame, *_] = await client.stack(thread_id)
        assert frame["line"] == stop
        loaded = await client.request(
            "evaluate",
            {"expression": "'trio' in sys.modules", "frameId": frame["id"]},
        )
        assert loaded["body"]["result"] == "False"
        mark = client.mark()
        await client.request("continue", {"threadId": thread_id})
        exited = await client.event("exited", after=mark)
        assert exited["body"]["exitCode"] == 0
        output = stdout_of(client)
        assert "trio at start: False" in output
        assert "done 42" in output
        await disconnect(client)


@pytest.mark.parametrize("fresh", [False, True], ids=["spare", "fresh"])
async def test_a_launched_program_ends_when_its_adapter_is_killed(fresh: bool) -> None:
    """SIGKILL to the adapter while the program runs: the agent sees the
    connection end and the program is stopped (it is in a session of its
    own, so nothing else would end it)."""
    extra: dict[str, Any] = {"python": sys.executable} if fresh else {}
    async with open_adapter() as client:
        await client.launch(TRIO_FREE, args=["wait"], **extra)
        started = await client.event("process")
        pid = started["body"]["systemProcessId"]
        await client.wait_for(
            lambda m: (
                m.get("event") == "output" and "trio at start" in m["body"]["output"]
            )
        )
        await kill_adapter_then_wait_for_end(client, pid)


async def test_requests_a_running_program_cannot_answer_are_refused() -> None:
    """Over the launched debuggee's connection: a request that needs a stop
    gets ``notStopped`` while the program runs, an unknown one an error, and
    the session goes on (a pause then stops the program)."""
    async with open_adapter() as client:
        await client.launch(TRIO_FREE, args=["wait"], python=sys.executable)
        await client.wait_for(
            lambda m: (
                m.get("event") == "output" and "trio at start" in m["body"]["output"]
            )
        )
        refused = await client.response(
            await client.send("stackTrace", {"threadId": 1})
        )
        assert not refused["success"]
        assert refused["message"] == "notStopped", refused
        assert "running" in refused["body"]["error"]["format"], refused
        threads = await client.request("threads")
        [thread] = threads["body"]["threads"]
        await client.request("pause", {"threadId": thread["id"]})
        stopped = await client.event("stopped")
        assert stopped["body"]["reason"] == "pause"
        [frame, *_] = await client.stack(stopped["body"]["threadId"])
        loop, tick = line_of(TRIO_FREE, "loop"), line_of(TRIO_FREE, "tick")
        assert frame["line"] in (loop, loop + 1, tick)  # in the waiting loop
        await disconnect(client)


def test_a_request_that_comes_with_the_handshake_reply_is_answered(
    tmp_path: Path,
) -> None:
    """The adapter may send its first request in the same write as its
    handshake reply: the agent reads both at once, and must answer the
    request it already holds rather than wait for more bytes.  (A stand-in
    adapter here, on a plain socket, writes the two as one.)"""
    from dapper_trio._targets import ADAPTER_ENV
    from dapper_trio._wire import FrameDecoder, FrameKind, encode_frame

    path = str(tmp_path / "adapter.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(1)
    server.settimeout(WAIT)
    info = {
        "address": f"unix:{path}",
        "token": "t" * 64,
        "target": {"kind": "script", "name": TRIO_FREE, "args": []},
    }
    env = {**os.environ, ADAPTER_ENV: json.dumps(info)}
    debuggee = subprocess.Popen(
        [sys.executable, "-c", "from dapper_trio._dap_agent import main; main()"],
        env=env,
        stdout=subprocess.DEVNULL,
    )
    try:
        conn, _ = server.accept()
        conn.settimeout(WAIT)
        decoder = FrameDecoder(peer="debuggee")

        def next_frame() -> Any:
            while (frame := decoder.next_frame()) is None:
                data = conn.recv(65536)
                assert data, "the debuggee closed the connection"
                decoder.feed(data)
            return frame

        hello = next_frame()
        assert hello.kind is FrameKind.HANDSHAKE
        assert hello.payload["token"] == info["token"]
        conn.sendall(
            encode_frame(FrameKind.HANDSHAKE, {"ok": True, "name": "t", "pid": 1})
            + encode_frame(
                FrameKind.REQUEST,
                {"id": 7, "method": "dap", "params": {"command": "threads"}},
            )
        )
        answers = {}
        while 7 not in answers:
            frame = next_frame()
            if frame.kind is FrameKind.REQUEST:  # the debuggee's "configure"
                answers[frame.payload["method"]] = frame.payload["id"]
            elif frame.kind is FrameKind.RESPONSE:
                answers[frame.payload["id"]] = frame.payload
        [thread] = answers[7]["result"]["threads"]
        assert thread["name"] == "MainThread"
        config = {"target": info["target"], "breakpoints": {}}
        conn.sendall(
            encode_frame(
                FrameKind.RESPONSE, {"id": answers["configure"], "result": config}
            )
        )
        while conn.recv(65536):  # its events, up to its half-close at the end
            pass
        conn.close()
        assert debuggee.wait(timeout=WAIT) == 0
    finally:
        server.close()
        if debuggee.poll() is None:
            debuggee.kill()
            debuggee.wait()


# -- the answers given before the adapter imports trio (_dap_early) ---------------


async def test_the_launch_sequence_answered_early_numbers_every_message() -> None:
    """initialize, launch, breakpoints, configurationDone: the answers the
    adapter gives before it has imported trio are the server's (checks and
    all), and its messages are numbered 1, 2, 3... across the hand-over."""
    stop = line_of(TRIO_FREE, "stop")
    async with open_adapter() as client:
        capabilities = await client.request("initialize", {"adapterID": "t"})
        assert capabilities["body"]["supportsConfigurationDoneRequest"]
        await client.request("launch", {"program": TRIO_FREE})
        await client.event("initialized")
        breakpoints = await client.request(
            "setBreakpoints",
            {
                "source": {"path": TRIO_FREE},
                "breakpoints": [
                    {"line": 3},
                    {"line": stop},
                    {"line": stop, "condition": "+"},
                ],
            },
        )
        verdicts = breakpoints["body"]["breakpoints"]
        assert [v["verified"] for v in verdicts] == [False, True, False]
        assert [v["id"] for v in verdicts] == [1, 2, 3]
        assert "holds no code" in verdicts[0]["message"]
        assert "not an expression" in verdicts[2]["message"]
        filters = await client.request(
            "setExceptionBreakpoints", {"filters": ["raised", "nonsense"]}
        )
        assert [f["verified"] for f in filters["body"]["breakpoints"]] == [True, False]
        await client.request("configurationDone")
        _, frame = await client.stop()
        assert frame["line"] == stop
        # Breakpoint ids go on from the early ones.
        again = await client.request(
            "setBreakpoints", {"source": {"path": TRIO_FREE}, "lines": [stop]}
        )
        assert [v["id"] for v in again["body"]["breakpoints"]] == [4]
        await disconnect(client)
        seqs = [m["seq"] for m in client.messages]
        assert seqs == list(range(1, len(seqs) + 1)), seqs


async def test_requests_not_answered_early_are_the_server_s_and_it_goes_on() -> None:
    """A function breakpoint (the program looks it up) and a bad request
    after ``launch``: the server replays what was answered early, answers
    these itself, and the program stops where it should."""
    stop = line_of(TRIO_FREE, "stop")
    async with open_adapter() as client:
        await client.request("initialize", {"adapterID": "t"})
        await client.request("launch", {"program": TRIO_FREE})
        bad = await client.response(
            await client.send(
                "setBreakpoints",
                {"source": {"path": "relative.py"}, "breakpoints": [{"line": 1}]},
            )
        )
        assert not bad["success"]
        assert "not absolute" in bad["message"], bad
        functions = await client.request(
            "setFunctionBreakpoints", {"breakpoints": [{"name": "no_such_function"}]}
        )
        [verdict] = functions["body"]["breakpoints"]
        assert not verdict["verified"]
        answer = await client.request(
            "setBreakpoints", {"source": {"path": TRIO_FREE}, "lines": [stop]}
        )
        assert answer["body"]["breakpoints"][0]["verified"]
        await client.request("configurationDone")
        _, frame = await client.stop()
        assert frame["line"] == stop
        await disconnect(client)


async def test_a_breakpoint_set_right_after_configuration_done_stops() -> None:
    """The program starts at configurationDone, before the adapter serves
    its connection: a breakpoint set at once is still the program's (in the
    answer to its "configure", or forwarded once it is connected)."""
    tick = line_of(TRIO_FREE, "tick")
    async with open_adapter() as client:
        await client.launch(TRIO_FREE, args=["wait"])
        answer = await client.request(
            "setBreakpoints", {"source": {"path": TRIO_FREE}, "lines": [tick]}
        )
        assert answer["body"]["breakpoints"][0]["verified"]
        stopped, frame = await client.stop()
        assert stopped["body"]["reason"] == "breakpoint"
        assert frame["line"] == tick
        await disconnect(client)


async def test_a_breakpoint_in_a_frame_already_running_stops() -> None:
    """A program without trio loops at module level; a breakpoint set on
    the loop's body stops in that running frame, on every backend (before
    3.12 the program's thread switches its own tracing on, reached through
    SIGINT like a pause)."""
    body = line_of(TRIO_FREE, "loop") + 1
    async with open_adapter() as client:
        await client.launch(TRIO_FREE, args=["wait"])
        await client.wait_for(
            lambda m: (
                m.get("event") == "output" and "trio at start" in m["body"]["output"]
            )
        )
        await trio.sleep(0.2)  # well inside the loop
        answer = await client.request(
            "setBreakpoints", {"source": {"path": TRIO_FREE}, "lines": [body]}
        )
        assert answer["body"]["breakpoints"][0]["verified"]
        stopped, frame = await client.stop()
        assert stopped["body"]["reason"] == "breakpoint"
        assert (frame["line"], frame["name"]) == (body, "<module>")
        # Cleared, then continued: only a pause stops it again.
        await client.request(
            "setBreakpoints", {"source": {"path": TRIO_FREE}, "breakpoints": []}
        )
        mark = client.mark()
        await client.request("continue", {"threadId": stopped["body"]["threadId"]})
        await client.request("pause", {"threadId": stopped["body"]["threadId"]})
        paused = await client.event("stopped", after=mark)
        assert paused["body"]["reason"] == "pause"
        await disconnect(client)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
async def test_a_signal_right_after_configuration_done_leaves_nothing_behind(
    signum: int,
) -> None:
    """SIGTERM or SIGHUP while the adapter may still be importing trio, the
    program already started: the adapter ends, the program with it, and the
    socket bound for the program is gone (the fixture checks the runtime
    directory and the processes)."""
    async with open_adapter() as client:
        await client.launch(TRIO_FREE, args=["wait"])
        started = await client.event("process")
        client.process.send_signal(signum)
        pid = started["body"]["systemProcessId"]
        with trio.fail_after(WAIT):
            await client.process.wait()
            while process_state(pid) not in (None, "Z"):
                await trio.sleep(0.05)


async def test_a_launch_that_cannot_listen_is_refused_and_the_session_goes_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No socket can be made for the program (its runtime directory does
    not exist): ``launch`` gets an error naming why, and the adapter goes on
    serving (it ended with a traceback before)."""
    monkeypatch.setenv("DAPPER_TRIO_RUNTIME_DIR", "/nonexistent/runtime-dir")
    async with open_adapter() as client:
        await client.request("initialize", {"adapterID": "t"})
        refused = await client.response(
            await client.send("launch", {"program": TRIO_FREE})
        )
        assert not refused["success"]
        assert "cannot listen for the program" in refused["message"], refused
        assert "/nonexistent/runtime-dir" in refused["message"]
        threads = await client.request("threads")
        assert threads["body"]["threads"] == []
        await disconnect(client)
        assert client.process.returncode == 0


# -- attach: a pause that overtakes the program's configuration ----------------------


async def test_a_pause_served_before_the_configuration_is_taken_in_stops() -> None:
    """An attached client's pause may be served before the program has taken
    in the answer to its "configure": the stop is still the client's to see.

    Here the adapter's side of the connection is the test's own: it answers
    "configure" only after its pause has been answered.  (A stop served while
    the program thought nobody was attached went on at once, and the client
    waited for a "stopped" that never came.)
    """
    process = await trio.lowlevel.open_process(
        [sys.executable, LISTENER], stdout=subprocess.PIPE
    )
    try:
        assert process.stdout is not None
        with trio.fail_after(WAIT):
            announced = b""
            while not announced.endswith(b"\n"):
                announced += await process.stdout.receive_some(4096)
        arguments = json.loads(announced.splitlines()[0])
        stopped = trio.Event()
        channels: list[Channel] = []

        async def on_event(event: str, body: Any) -> None:
            if event == "stopped":
                stopped.set()

        async def on_request(method: str, params: Any) -> Any:
            assert method == "configure"
            answer = await channels[0].request(
                "dap", {"command": "pause", "arguments": {"threadId": 1}}
            )
            assert answer == {}
            return {}

        with trio.fail_after(WAIT):
            async with connect(
                Address.parse(arguments["address"]),
                token=arguments["token"],
                name="test adapter",
                request_handler=on_request,
                event_handler=on_event,
            ) as channel:
                channels.append(channel)
                await stopped.wait()
    finally:
        with trio.CancelScope(shield=True):
            process.kill()
            await process.wait()
            if process.stdout is not None:
                await process.stdout.aclose()

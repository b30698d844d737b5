"""A launched program's output under ``dapper-trio dap`` is bounded: while a
client does not read, the program's writes wait (as writes to a full pipe
do) instead of piling up in the debuggee's or the adapter's memory, and
once the client reads, all of it arrives, in order.

The first tests drive ``DapEndpoint`` (the debuggee's side) and
``OutputBudget`` (the adapter's) directly; the last ones run the real
adapter with a program that writes 30 MB to a client that reads nothing
for a while.
"""

from __future__ import annotations

import threading
import types
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

import pytest
import trio
from test_dap_adapter import (
    WAIT,
    Client,
    disconnect,
    line_of,
    open_adapter,
    stdout_of,
)

from dapper_trio._dap_agent import FINISH_TIMEOUT, OUTPUT_PENDING_CHARS, DapEndpoint
from dapper_trio._dap_server import OutputBudget

pytestmark = pytest.mark.timeout(120)

#: More than half the endpoint's limit: two of them go over it.
CHUNK = "y" * (OUTPUT_PENDING_CHARS // 2 + 1000)


class HeldLoop:
    """A loop whose calls run only when the test says (a busy agent)."""

    def __init__(self) -> None:
        self.calls: list[tuple[Callable[..., object], tuple[Any, ...]]] = []

    def run_sync_soon(self, function: Callable[..., object], *args: Any) -> None:
        self.calls.append((function, args))

    def run_calls(self) -> None:
        calls, self.calls = self.calls, []
        for function, args in calls:
            function(*args)


class Writer(threading.Thread):
    """Writes *texts* through ``post_output``, noting each write that returned."""

    def __init__(self, endpoint: DapEndpoint, texts: list[str]) -> None:
        super().__init__(daemon=True)
        self.endpoint = endpoint
        self.texts = texts
        self.returned: list[bool] = []

    def run(self) -> None:
        for text in self.texts:
            self.returned.append(self.endpoint.post_output("stdout", text))


def held_endpoint() -> tuple[DapEndpoint, HeldLoop, list[str]]:
    endpoint = DapEndpoint()
    loop = HeldLoop()
    got: list[str] = []

    def sink(event: str, body: Any) -> None:
        assert event == "output"
        got.append(body["output"])

    endpoint.bind(loop, sink)
    return endpoint, loop, got


def settle(predicate: Callable[[], bool]) -> None:
    """Wait (bounded) until *predicate* holds."""
    event = threading.Event()
    for _ in range(200):
        if predicate():
            return
        event.wait(0.01)
    raise AssertionError("timed out")


def test_a_write_waits_while_a_megabyte_waits_for_the_agent() -> None:
    """The write that goes over the limit is queued, then waits; the agent
    taking the batch lets it return, and everything arrives in order."""
    endpoint, loop, got = held_endpoint()
    writer = Writer(endpoint, [CHUNK, CHUNK, "last"])
    writer.start()
    settle(lambda: len(writer.returned) == 1)
    threading.Event().wait(0.3)
    assert writer.returned == [True]  # the second write waits
    loop.run_calls()  # the agent takes both chunks: room again
    writer.join(timeout=WAIT)
    assert writer.returned == [True, True, True]
    loop.run_calls()
    assert "".join(got) == CHUNK + CHUNK + "last"


def test_a_lost_adapter_lets_a_waiting_write_go_on() -> None:
    """unbind (the connection is gone) wakes a write waiting for room."""
    endpoint, _loop, _got = held_endpoint()
    writer = Writer(endpoint, [CHUNK, CHUNK, "after"])
    writer.start()
    settle(lambda: len(writer.returned) == 1)
    threading.Event().wait(0.1)
    endpoint.unbind()
    writer.join(timeout=WAIT)
    # The waiting write had been queued; the next one is refused (it goes
    # to the real stream instead).
    assert writer.returned == [True, True, False]


def test_the_agent_s_own_threads_and_writes_inside_a_post_never_wait() -> None:
    """A write from one of the agent's threads, or from a signal handler
    that interrupted a post (the lock is held), would wait for itself."""
    endpoint, _loop, _got = held_endpoint()
    own: set[int] = set()
    endpoint.session = cast(Any, types.SimpleNamespace(own_threads=own))

    def three_chunks() -> None:
        for _ in range(3):
            assert endpoint.post_output("stdout", CHUNK)

    def agent_thread_writes() -> None:
        own.add(threading.get_ident())
        three_chunks()

    def handler_writes() -> None:
        with endpoint._post_lock:  # as a post interrupted by a signal would
            three_chunks()

    for writes in (agent_thread_writes, handler_writes):
        thread = threading.Thread(target=writes, daemon=True)
        thread.start()
        thread.join(timeout=WAIT)
        assert not thread.is_alive(), writes.__name__


async def test_the_budget_lets_producers_on_once_half_is_sent() -> None:
    """Over the limit, ``room`` and ``wait_for_room`` wait until the queue is
    down to half the limit; ``close`` lets everyone on."""
    budget = OutputBudget(limit=100)
    budget.add(60)
    await budget.room()  # under the limit: no wait
    budget.add(60)
    assert budget.full
    released: list[str] = []

    async def in_the_loop() -> None:
        await budget.room()
        released.append("loop")

    def in_a_thread() -> None:
        budget.wait_for_room()
        released.append("thread")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(in_the_loop)
        nursery.start_soon(trio.to_thread.run_sync, in_a_thread)
        await trio.sleep(0.2)
        budget.sent(60)  # 60 left: under the limit, not yet half
        await trio.sleep(0.2)
        assert released == []
        with trio.fail_after(WAIT):
            budget.sent(20)  # 40 left
            while len(released) < 2:
                await trio.sleep(0.01)
    assert sorted(released) == ["loop", "thread"]
    assert budget.queued == 40

    budget.add(200)
    assert budget.full
    with trio.fail_after(WAIT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(budget.room)
            await trio.sleep(0.1)
            budget.close()
    assert not budget.full
    budget.wait_for_room()  # closed: never waits


# -- the real adapter -------------------------------------------------------------

LINES = 300_000  # 100 characters each: 30 MB
FLOOD_PROGRAM = f"""\
import os, sys

marker, how = sys.argv[1], sys.argv[2]


def memory(field):
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field):
                return int(line.split()[1])


start = memory("VmRSS:")
body = "x" * 90
for i in range({LINES}):
    text = f"{{i:08d}} {{body}}\\n"
    if how == "fd":
        os.write(1, text.encode())
    else:
        sys.stdout.write(text)
with open(marker, "w") as out:
    out.write(f"{{start}} {{memory('VmHWM:')}}")
"""
#: How long the client does not read; the program would be done long before.
SILENCE = 3.0
#: What the bounds allow a process to grow by, in kB, while 30 MB pass.
GROWTH_KB = 15_000


def memory_kb(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field):
                return int(line.split()[1])
    raise AssertionError(f"no {field} for {pid}")


async def launch_unread(
    client: Client, launch: dict[str, Any], breakpoints: Sequence[int] = ()
) -> None:
    """Send the launch sequence without reading a single answer."""
    requests: list[tuple[str, dict[str, Any]]] = [
        ("initialize", {"adapterID": "dapper-trio"}),
        ("launch", launch),
    ]
    if breakpoints:
        source = {"path": launch["program"]}
        specs = [{"line": line} for line in breakpoints]
        requests.append(("setBreakpoints", {"source": source, "breakpoints": specs}))
    for command, arguments in [*requests, ("configurationDone", {})]:
        await client.send(command, arguments)


def numbered_lines(count: int) -> list[str]:
    """What the flooding programs print."""
    body = "x" * 90
    return [f"{i:08d} {body}" for i in range(count)]


async def quiet_adapter_peak(tmp_path: Path, in_process: bool) -> int:
    """The peak memory (kB) of an adapter that ran a program printing one
    line: what an adapter takes without the flood, on this Python."""
    program = tmp_path / "quiet.py"
    program.write_text("print('quiet')\n")
    async with open_adapter() as client:
        await client.launch(str(program), inProcess=in_process)
        await client.event("exited")
        peak = memory_kb(client.process.pid, "VmHWM:")
        await disconnect(client)
    return peak


@pytest.mark.parametrize(
    ("how", "in_process"),
    [("stream", False), ("fd", False), ("stream", True)],
    ids=["sys.stdout", "fd 1", "sys.stdout in-process"],
)
async def test_a_client_that_does_not_read_holds_the_program_back(
    tmp_path: Path, how: str, in_process: bool
) -> None:
    """While the client reads nothing, the program's writes wait and neither
    process grows with its output; then every line arrives, in order."""
    program = tmp_path / "flood.py"
    program.write_text(FLOOD_PROGRAM)
    marker = tmp_path / "done"
    quiet_peak = await quiet_adapter_peak(tmp_path, in_process)
    async with open_adapter(reading=False) as client:
        launch = {"program": str(program), "args": [str(marker), how]}
        if in_process:
            launch["inProcess"] = True
        await launch_unread(client, launch)
        await trio.sleep(SILENCE)
        assert not marker.exists(), "the program ran on with nobody reading"
        assert memory_kb(client.process.pid, "VmHWM:") - quiet_peak < GROWTH_KB

        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.read)
            exited = await client.event("exited")
            assert exited["body"]["exitCode"] == 0
            nursery.cancel_scope.cancel()
        text = stdout_of(client)
        assert text.splitlines() == numbered_lines(LINES)
        start, peak = map(int, marker.read_text().split())
        assert peak - start < GROWTH_KB
        assert memory_kb(client.process.pid, "VmHWM:") - quiet_peak < GROWTH_KB
        with trio.fail_after(WAIT):
            await client.send("disconnect", {})
            await client.process.wait()


THREAD_FLOOD_PROGRAM = """\
import sys, threading, time

lines = int(sys.argv[1])
body = "x" * 90


def flood():
    for i in range(lines):
        sys.stdout.write(f"{i:08d} {body}\\n")


thread = threading.Thread(target=flood)
thread.start()
if len(sys.argv) > 2:  # say when the stop is near
    time.sleep(0.5)
    open(sys.argv[2], "w").close()
stop_here = True  # mark: stop
thread.join()
print("done")
"""


@pytest.mark.parametrize("in_process", [False, True], ids=["child", "in-process"])
async def test_a_stop_while_another_thread_floods_output(
    tmp_path: Path, in_process: bool
) -> None:
    """Output held back by the bounds does not hold up a stop, the requests
    made at it, or the resume: the session ends with every line."""
    program = tmp_path / "thread_flood.py"
    program.write_text(THREAD_FLOOD_PROGRAM)
    line = line_of(str(program), "stop")
    async with open_adapter() as client:
        await client.launch(
            str(program),
            {str(program): [{"line": line}]},
            args=["50000"],
            inProcess=in_process,
        )
        stopped, frame = await client.stop()
        assert frame["line"] == line
        assert "stop_here" not in await client.locals(frame["id"])
        await client.request("continue", {"threadId": stopped["body"]["threadId"]})
        exited = await client.event("exited")
        assert exited["body"]["exitCode"] == 0
        lines = stdout_of(client).splitlines()
        assert lines[:-1] == numbered_lines(50_000)
        assert lines[-1] == "done"
        await disconnect(client)


async def test_a_resume_sent_before_the_client_saw_the_stop(tmp_path: Path) -> None:
    """A client behind on output sends ``continue`` before it has read the
    ``stopped`` event, while another thread floods: the adapter holds the
    event back until the resume is answered, and the answer comes behind
    output the bound would hold back -- which it must not, then."""
    program = tmp_path / "thread_flood.py"
    program.write_text(THREAD_FLOOD_PROGRAM)
    marker = tmp_path / "at the stop"
    line = line_of(str(program), "stop")
    async with open_adapter(reading=False) as client:
        await launch_unread(
            client, {"program": str(program), "args": ["100000", str(marker)]}, [line]
        )
        with trio.fail_after(WAIT):
            while not marker.exists():
                await trio.sleep(0.01)
        await trio.sleep(0.5)  # at the breakpoint; the thread fills the bounds
        resume = await client.send("continue", {"threadId": 1})
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.read)
            assert (await client.response(resume))["success"]
            await client.event("stopped")
            exited = await client.event("exited")
            assert exited["body"]["exitCode"] == 0
            nursery.cancel_scope.cancel()
        lines = stdout_of(client).splitlines()
        assert lines[:-1] == numbered_lines(100_000)
        assert lines[-1] == "done"


FORKING_PROGRAM = """\
import os, sys

pid = os.fork()
if pid == 0:
    for i in range(20_000):
        sys.stdout.write(f"child {i:08d}\\n")
    sys.stdout.flush()
    os._exit(0)
print("child status", os.waitpid(pid, 0)[1])
"""


async def test_a_forked_child_s_output_goes_through_its_pipes(tmp_path: Path) -> None:
    """No agent runs in a child the program forks: its output goes to the
    real file descriptors, forwarded by the adapter, and it never waits for
    room that nobody makes."""
    program = tmp_path / "forking.py"
    program.write_text(FORKING_PROGRAM)
    async with open_adapter() as client:
        await client.launch(str(program))
        exited = await client.event("exited")
        assert exited["body"]["exitCode"] == 0
        await client.event("terminated")
        # The child's pipe and the parent's connection are read side by
        # side: each keeps its order.
        lines = stdout_of(client).splitlines()
        assert "child status 0" in lines
        assert [line for line in lines if line.startswith("child 0")] == [
            f"child {i:08d}" for i in range(20_000)
        ]
        await disconnect(client)


TAIL_PROGRAM = """\
import sys

body = "x" * 90
for i in range(30_000):
    sys.stdout.write(f"{i:08d} {body}\\n")
"""


async def test_output_still_unsent_at_the_end_waits_for_a_slow_client(
    tmp_path: Path,
) -> None:
    """A program that ends with 3 MB not yet read by the client, which reads
    nothing for longer than the debuggee's 5 s wait for a normal close:
    the debuggee waits while the rest is on its way, and nothing is lost."""
    program = tmp_path / "tail.py"
    program.write_text(TAIL_PROGRAM)
    async with open_adapter(reading=False) as client:
        await launch_unread(client, {"program": str(program)})
        await trio.sleep(FINISH_TIMEOUT + 2)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.read)
            exited = await client.event("exited")
            assert exited["body"]["exitCode"] == 0
            await client.event("terminated")
            nursery.cancel_scope.cancel()
        assert stdout_of(client).splitlines() == numbered_lines(30_000)


FORK_WHILE_WAITING_PROGRAM = """\
import os, sys, threading, time, warnings

result = sys.argv[1]
# 3.12 warns of a fork in a threaded process: to stderr, which, like stdout,
# nobody reads here, so the parent would wait for room there.
warnings.simplefilter("ignore", DeprecationWarning)


def flood():
    for i in range(300_000):
        sys.stdout.buffer.write(b"%08d " % i + b"y" * 90 + b"\\n")


threading.Thread(target=flood, daemon=True).start()
time.sleep(1.5)  # nobody reads: the thread waits for room in buffer.write
pid = os.fork()
if pid == 0:
    sys.stdout.buffer.write(b"child\\n")
    os._exit(0)
deadline = time.monotonic() + 8
while time.monotonic() < deadline:
    done, status = os.waitpid(pid, os.WNOHANG)
    if done:
        message = f"child exited {status}"
        break
    time.sleep(0.05)
else:
    message = "the child hung"
    os.kill(pid, 9)
    os.waitpid(pid, 0)
with open(result, "w") as out:
    out.write(message)
os._exit(0)
"""


async def test_a_child_forked_while_a_write_waits_for_room(tmp_path: Path) -> None:
    """A thread holds the stream's lock while it waits for room when the
    program forks: the child's writes must not wait for that lock."""
    program = tmp_path / "fork_while_waiting.py"
    program.write_text(FORK_WHILE_WAITING_PROGRAM)
    result = tmp_path / "result"
    async with open_adapter(reading=False) as client:
        await launch_unread(client, {"program": str(program), "args": [str(result)]})
        with trio.fail_after(WAIT):
            while not result.exists() or not result.read_text():
                await trio.sleep(0.05)
        assert result.read_text() == "child exited 0"

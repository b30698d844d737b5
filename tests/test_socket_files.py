"""No socket file outlives a killed supervisor, DAP adapter or actor parent.

Each test starts the real command (``dapper-trio run``, ``dapper-trio dap``,
a program starting an actor), kills it at the chosen moment -- as soon as its
socket file exists (before its peer can connect), or once the peer is
connected -- and looks at the runtime directory, where the harness in
conftest.py puts every socket file.  SIGKILL before the debuggee
connected is not tested: nothing can run then, and the file stays (see
``dapper_trio._sockets``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio
from test_dap_adapter import open_adapter

TIMEOUT = 30.0
PROGRAM = """
import trio

async def main():
    print("PROGRAM-UP", flush=True)
    await trio.sleep(30)

trio.run(main)
"""


@pytest.fixture(name="program")
def _program(tmp_path: Path) -> str:
    path = tmp_path / "program.py"
    path.write_text(PROGRAM)
    return str(path)


@pytest.fixture(name="runtime_dir")
def _runtime_dir() -> trio.Path:
    return trio.Path(os.environ["DAPPER_TRIO_RUNTIME_DIR"])


async def socket_files(runtime_dir: trio.Path) -> list[trio.Path]:
    """The files in the socket directories under *runtime_dir*."""
    found = []
    for directory in await runtime_dir.iterdir():
        with contextlib.suppress(FileNotFoundError):
            found.extend(await directory.iterdir())
    return found


async def wait_for_socket_file(runtime_dir: trio.Path) -> None:
    """Wait (bounded by the caller's fail_after) until a socket file exists."""
    while not await socket_files(runtime_dir):
        await trio.sleep(0.002)


async def wait_for_no_socket_file(runtime_dir: trio.Path, seconds: float) -> None:
    """Wait up to *seconds* for every socket file to go."""
    with trio.move_on_after(seconds):
        while await socket_files(runtime_dir):
            await trio.sleep(0.01)


async def left_behind(runtime_dir: trio.Path) -> list[str]:
    """What is in *runtime_dir*; removed, so that the harness reports only once."""
    names = sorted(path.name for path in await runtime_dir.iterdir())
    for name in names:
        shutil.rmtree(runtime_dir / name, ignore_errors=True)
    return names


@contextlib.asynccontextmanager
async def supervisor(program: str) -> AsyncIterator[trio.Process]:
    """``dapper-trio run -c PROGRAM``; killed and reaped if still running after."""
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "dapper_trio", "run", "-c", program],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
    )
    try:
        yield process
    finally:
        with trio.CancelScope(shield=True):
            if process.returncode is None:
                process.kill()
                await process.wait()
            assert process.stdout is not None
            await process.stdout.aclose()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP], ids=["TERM", "HUP"])
async def test_supervisor_signalled_before_its_debuggee_connects(
    program: str, runtime_dir: trio.Path, signum: int
) -> None:
    """SIGTERM/SIGHUP while the supervisor still imports trio: the file goes."""
    with trio.fail_after(TIMEOUT):
        async with supervisor(program) as process:
            await wait_for_socket_file(runtime_dir)
            process.send_signal(signum)
            await process.wait()
    assert await left_behind(runtime_dir) == []


async def test_supervisor_killed_after_its_debuggee_connected(
    program: str, runtime_dir: trio.Path
) -> None:
    """SIGKILL once the debuggee is in leaves no file: it went when it connected."""
    with trio.fail_after(TIMEOUT):
        async with supervisor(program) as process:
            assert process.stdout is not None
            output = b""
            while b"PROGRAM-UP" not in output:
                data = await process.stdout.receive_some(4096)
                assert data, output
                output += data
            await wait_for_no_socket_file(runtime_dir, 2.0)
            process.kill()
            assert await process.wait() == -signal.SIGKILL
    assert await left_behind(runtime_dir) == []


async def test_dap_adapter_killed_after_its_debuggee_connected(
    program: str, runtime_dir: trio.Path
) -> None:
    """SIGKILL of ``dapper-trio dap`` once the debuggee is in leaves no file."""
    with trio.fail_after(TIMEOUT):
        async with open_adapter() as client:
            await client.launch(program)
            await client.wait_for(
                lambda m: (
                    m.get("event") == "output" and "PROGRAM-UP" in m["body"]["output"]
                )
            )
            await wait_for_no_socket_file(runtime_dir, 2.0)
            client.process.kill()
            await client.process.wait()
    assert await left_behind(runtime_dir) == []


@pytest.mark.parametrize("debuggee", ["fresh", "spare"])
async def test_dap_adapter_terminated_before_its_debuggee_connects(
    program: str, runtime_dir: trio.Path, debuggee: str
) -> None:
    """SIGTERM of ``dapper-trio dap`` while its debuggee starts: the file goes.

    A fresh interpreter (the launch names one, so the adapter's spare does
    not fit it) takes long enough to start for the signal to come while the
    file exists.  The spare connects within milliseconds: the signal comes
    as soon as the launch is sent, before or after the file was made.
    """
    launch = {"program": program}
    if debuggee == "fresh":
        launch["python"] = sys.executable
    with trio.fail_after(TIMEOUT):
        async with open_adapter() as client:
            await client.request("initialize", {"adapterID": "dapper-trio"})
            await client.send("launch", launch)
            if debuggee == "fresh":
                await wait_for_socket_file(runtime_dir)
            client.process.send_signal(signal.SIGTERM)
            await client.process.wait()
    assert await left_behind(runtime_dir) == []


_PARENT_STARTING_A_CHILD = """
import trio
from dapper_trio import open_actor_nursery

async def main():
    async with open_actor_nursery() as an:
        await an.start_actor("child")
        await trio.sleep(30)

trio.run(main)
"""


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP], ids=["TERM", "HUP"])
async def test_actor_parent_signalled_while_its_child_starts(
    tmp_path: Path, runtime_dir: trio.Path, signum: int
) -> None:
    """SIGTERM/SIGHUP before the child connected: the parent dies, the file goes."""
    script = tmp_path / "parent.py"
    script.write_text(_PARENT_STARTING_A_CHILD)
    with trio.fail_after(TIMEOUT):
        process = await trio.lowlevel.open_process([sys.executable, str(script)])
        try:
            # The file exists from just before the child starts until it
            # connects (a Python start-up: long enough to hit).
            while not await socket_files(runtime_dir):
                assert process.returncode is None
                await trio.sleep(0.002)
            process.send_signal(signum)
            assert await process.wait() == -signum
        finally:
            with trio.CancelScope(shield=True):
                if process.returncode is None:  # pragma: no cover - a failure
                    process.kill()
                    await process.wait()
    assert await left_behind(runtime_dir) == []

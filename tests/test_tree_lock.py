"""The tree's terminal lock: the pure table, and the server with real sockets."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest
import trio

from dapper_trio._tree_lock import (
    LockTable,
    ProcessInfo,
    TreeLockClient,
    TreeLockServer,
    TreeLockUnavailable,
    Turn,
    describe_returncode,
    watch_subtree,
)

if TYPE_CHECKING:
    from dapper_trio._tree_lock import Kind

ROOT = ("root",)


def table_with(*paths: tuple[str, ...]) -> LockTable:
    """A table whose member i (from 1) is the process at paths[i - 1], pid 100 + i."""
    table = LockTable()
    for member, path in enumerate(paths, start=1):
        table.join(member, name=path[-1], pid=100 + member, path=path)
    return table


def test_lock_is_granted_first_come_first_served() -> None:
    """Waiters get the terminal in the order they asked, one at a time."""
    table = table_with(("root", "a"), ("root", "b"), ("root", "c"))
    assert table.acquire(2)
    assert not table.acquire(3)
    assert not table.acquire(1)
    assert table.holder == 2
    assert table.release(2) == 3
    assert table.release(3) == 1
    assert table.release(1) is None
    assert not table.busy


def test_illegal_moves_leave_the_table_unchanged() -> None:
    """Asking twice or releasing without holding raises and changes nothing."""
    table = table_with(("root", "a"), ("root", "b"))
    table.acquire(1)
    table.acquire(2)
    with pytest.raises(ValueError, match="already holds or waits"):
        table.acquire(2)
    with pytest.raises(ValueError, match="does not hold"):
        table.release(2)
    assert table.holder == 1
    assert list(table.waiters) == [2]


def test_a_dead_holder_hands_over_with_a_notice() -> None:
    """A holder whose connection ends passes the lock on; the next holder is told."""
    table = table_with(("root", "a"), ("root", "b"))
    table.acquire(1)
    table.acquire(2)
    assert table.leave(1) == 2
    assert table.take_notices() == [
        "actor root/a (pid 101) died while it held the terminal"
    ]
    assert table.take_notices() == []
    assert table.leave(2) is None
    assert not table.busy


def test_a_dead_waiter_leaves_the_queue() -> None:
    """A waiter that goes away is never granted the terminal."""
    table = table_with(("root", "a"), ("root", "b"), ("root", "c"))
    table.acquire(1)
    table.acquire(2)
    table.acquire(3)
    assert table.leave(2) is None
    assert table.release(1) == 3
    assert table.notices == []


def test_busy_under_a_path() -> None:
    """A subtree is busy while a process at or under it holds or waits."""
    table = table_with(("root", "a"), ("root", "a", "x"), ("root", "b"))
    table.acquire(3)
    table.acquire(2)
    assert table.busy_under(("root", "a"))
    assert table.busy_under(("root", "b"))
    assert not table.busy_under(("root", "c"))
    table.release(3)
    assert not table.busy_under(("root", "b"))
    table.release(2)
    assert not table.busy_under(ROOT)


def test_a_quit_turns_every_waiter_away() -> None:
    """A holder that quits ends the lock: the waiters are turned away, none granted."""
    table = table_with(("root", "a"), ("root", "b"), ("root", "c"))
    table.acquire(1)
    table.acquire(2)
    table.acquire(3)
    assert table.quit(1) == [2, 3]
    assert table.quitting
    assert not table.busy
    assert not table.busy_under(ROOT)


def test_nothing_is_granted_once_quitting() -> None:
    """After a quit, acquire is refused and the table does not change."""
    table = table_with(("root", "a"), ("root", "b"))
    table.acquire(1)
    table.quit(1)
    with pytest.raises(ValueError, match="quitting"):
        table.acquire(2)
    assert table.holder is None
    assert list(table.waiters) == []


def test_only_the_holder_can_quit() -> None:
    """A quit from a waiter raises and changes nothing."""
    table = table_with(("root", "a"), ("root", "b"))
    table.acquire(1)
    table.acquire(2)
    with pytest.raises(ValueError, match="does not hold"):
        table.quit(2)
    assert not table.quitting
    assert table.holder == 1
    assert list(table.waiters) == [2]


def test_render_shows_the_tree_with_states() -> None:
    """procs lists every process, indented under its parent, with its state."""
    table = LockTable()
    table.join(0, name="root", pid=1, path=ROOT)
    table.started(name="a", pid=2, path=("root", "a"))
    table.join(5, name="a", pid=2, path=("root", "a"))
    table.started(name="x", pid=3, path=("root", "a", "x"))
    table.join(6, name="x", pid=3, path=("root", "a", "x"))
    table.started(name="b", pid=4, path=("root", "b"))
    table.started(name="c", pid=7, path=("root", "c"))
    table.join(8, name="c", pid=7, path=("root", "c"))
    table.acquire(5)
    table.acquire(6)
    table.exited(pid=4, path=("root", "b"), returncode=-9)
    table.leave(8)
    rows = [" ".join(line.split()) for line in table.render()]
    assert rows == [
        "root pid 1 running",
        "a pid 2 in the REPL",
        "x pid 3 waiting for the REPL",
        "b pid 4 killed by SIGKILL",
        "c pid 7 gone (its connection to the root ended)",
    ]
    assert table.render()[2].startswith("    x")


def test_render_shows_processes_that_never_connected() -> None:
    """A process between two known ones gets a line without a pid."""
    table = LockTable()
    table.join(0, name="root", pid=1, path=ROOT)
    table.join(4, name="leaf.py", pid=9, path=("root", "mid.py", "leaf.py"))
    table.acquire(4)
    rows = [" ".join(line.split()) for line in table.render()]
    assert rows == [
        "root pid 1 running",
        "mid.py (not connected)",
        "leaf.py pid 9 in the REPL",
    ]
    assert table.render()[2].startswith("    leaf.py")


def test_describe_returncode() -> None:
    """Exit statuses read as a person would say them."""
    assert describe_returncode(0) == "exited with status 0"
    assert describe_returncode(3) == "exited with status 3"
    assert describe_returncode(-15) == "killed by SIGTERM"
    assert describe_returncode(-200) == "killed by signal 200"


def _server() -> TreeLockServer:
    server = TreeLockServer(root=ProcessInfo("root", os.getpid(), ROOT))
    server.start()
    return server


def _client(
    server: TreeLockServer, name: str, pid: int, *, kind: Kind = "actor"
) -> TreeLockClient:
    return TreeLockClient(
        str(server.address),
        server.token,
        name=name,
        pid=pid,
        path=(*ROOT, name),
        kind=kind,
    )


def _wait_for(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 5
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_server_serves_clients_in_turn() -> None:
    """Two clients in threads: the second is granted only after the first releases."""
    server = _server()
    first, second = _client(server, "a", 11), _client(server, "b", 12)
    try:
        assert first.acquire() == Turn([])
        granted = threading.Event()

        def wait_turn() -> None:
            second.acquire()
            granted.set()

        waiter = threading.Thread(target=wait_turn)
        waiter.start()
        deadline = time.monotonic() + 5
        while len(server.table.waiters) < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not granted.is_set()
        assert "waiting for the REPL" in "\n".join(first.procs())
        first.release()
        assert granted.wait(5)
        waiter.join(5)
        second.release()
    finally:
        first.close()
        second.close()
        server.stop()


def test_server_refuses_a_wrong_token() -> None:
    """A client without the token is disconnected before anything else."""
    server = _server()
    intruder = TreeLockClient(
        str(server.address), "0" * 64, name="x", pid=13, path=("root", "x")
    )
    try:
        with pytest.raises(TreeLockUnavailable):
            intruder.acquire()
        assert not server.busy
    finally:
        intruder.close()
        server.stop()


def test_closing_the_holder_s_connection_hands_over() -> None:
    """The holder's connection ending (its process died) grants the next waiter."""
    server = _server()
    first, second = _client(server, "a", 21), _client(server, "b", 22)
    try:
        first.acquire()
        result: list[Turn] = []
        waiter = threading.Thread(target=lambda: result.append(second.acquire()))
        waiter.start()
        time.sleep(0.2)
        first.close()
        waiter.join(5)
        assert result == [
            Turn(["actor root/a (pid 21) died while it held the terminal"])
        ]
    finally:
        second.close()
        server.stop()


@pytest.mark.parametrize(
    ("kind", "stops_the_program"), [("actor", False), ("process", True)]
)
def test_a_quit_turns_away_waiters_and_later_requests(
    kind: Kind, stops_the_program: bool
) -> None:
    """After the holder quits, waiters and later requests are answered quit."""
    quits: list[str] = []
    server = TreeLockServer(
        root=ProcessInfo("root", os.getpid(), ROOT),
        on_quit=lambda: quits.append("quit"),
    )
    server.start()
    holder = _client(server, "a", 41, kind=kind)
    waiter, late = _client(server, "b", 42), _client(server, "c", 43)
    try:
        assert holder.acquire() == Turn([])
        result: list[Turn] = []
        thread = threading.Thread(target=lambda: result.append(waiter.acquire()))
        thread.start()
        _wait_for(lambda: len(server.table.waiters) == 1)
        holder.release(quit=True)
        thread.join(5)
        assert result == [Turn([], quitting=True)]
        assert late.acquire() == Turn([], quitting=True)
        assert not server.busy
        assert quits == (["quit"] if stops_the_program else [])
    finally:
        for client in (holder, waiter, late):
            client.close()
        server.stop()


def test_output_is_held_while_a_repl_is_open() -> None:
    """Attached pipes reach the terminal at once, except while someone holds it."""
    server = _server()
    client = _client(server, "a", 51)
    pipe_r, pipe_w = os.pipe()
    term_r, term_w = os.pipe()
    os.set_blocking(term_r, False)

    def shown() -> bytes:
        try:
            return os.read(term_r, 4096)
        except BlockingIOError:
            return b""

    try:
        server.attach_output([(pipe_r, term_w)])
        os.write(pipe_w, b"before\n")
        seen = b""

        def arrived() -> bool:
            nonlocal seen
            seen += shown()
            return seen == b"before\n"

        _wait_for(arrived)
        client.acquire()
        os.write(pipe_w, b"during\n")
        time.sleep(0.2)
        assert shown() == b""
        client.release()
        seen = b""

        def after() -> bool:
            nonlocal seen
            seen += shown()
            return seen == b"during\n"

        _wait_for(after)
        os.write(pipe_w, b"last\n")
        server.detach_output()
        assert shown() == b"last\n"
    finally:
        client.close()
        server.stop()
        for fd in (pipe_r, pipe_w, term_r, term_w):
            os.close(fd)


async def test_watch_follows_a_subtree() -> None:
    """A watch of a path sees it become busy and quiet again."""
    server = _server()
    client = _client(server, "a", 31)
    try:
        with trio.fail_after(10):
            async with watch_subtree(
                str(server.address), server.token, ("root", "a")
            ) as watch:
                assert not watch.busy
                await trio.to_thread.run_sync(client.acquire)
                await watch.wait_busy()
                await trio.to_thread.run_sync(client.release)
                await watch.wait_quiet()
    finally:
        client.close()
        server.stop()


async def test_watch_without_a_server_is_never_busy() -> None:
    """A watch whose root is gone reports quiet, so teardown is not held up."""
    with trio.fail_after(10):
        async with watch_subtree("unix:/nonexistent/ipc.sock", "t", ROOT) as watch:
            await watch.wait_quiet()
            assert not watch.busy

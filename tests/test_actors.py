"""Process trees: real child processes started, called, failed, cancelled, reaped.

Functions run in children live in tests/actor_fns.py.  The harness in
conftest.py fails any test that leaves a process, a zombie or a socket file
behind, so every test here also checks that the tree was torn down.
"""

from __future__ import annotations

import functools
import logging
import os
import signal
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import actor_fns
import pytest
import trio

from dapper_trio._actor_errors import error_from_dict, error_to_dict
from dapper_trio._actors import (
    ActorNursery,
    ProcessDied,
    RemoteError,
    current_actor,
    open_actor_nursery,
)
from dapper_trio._errors import DapperTrioError, TransportError

if sys.version_info < (3, 11):  # pragma: no cover - exercised on 3.10 only
    from exceptiongroup import BaseExceptionGroup

TIMEOUT = 20.0


def leaves(exc: BaseException) -> Iterator[BaseException]:
    """The non-group exceptions inside *exc* (itself if it is not a group)."""
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            yield from leaves(inner)
    else:
        yield exc


def only_leaf(exc: BaseException) -> BaseException:
    """The one exception inside a (nest of) group(s); fails if there are more."""
    found = list(leaves(exc))
    assert len(found) == 1, found
    return found[0]


def process_gone(pid: int) -> bool:
    """True once *pid* no longer exists (a zombie still does)."""
    return not os.path.exists(f"/proc/{pid}")


async def wait_for_file(path: Path) -> str:
    """Wait (bounded by the caller's fail_after) until *path* exists; its text."""
    async_path = trio.Path(path)
    while not await async_path.exists():
        await trio.sleep(0.01)
    await trio.sleep(0.01)  # let the writer finish
    return await async_path.read_text()


async def wait_until_gone(pid: int) -> None:
    """Wait (bounded by the caller's fail_after) until process *pid* is gone."""
    while not process_gone(pid):
        await trio.sleep(0.02)


# ---------------------------------------------------------------------------
# Running things


async def test_run_in_actor_returns_result() -> None:
    """run_in_actor runs the function in a new process and returns its result."""
    with trio.fail_after(TIMEOUT):
        async with open_actor_nursery() as an:
            assert await an.run_in_actor(actor_fns.double, 21) == 42
            me = await an.run_in_actor(actor_fns.whoami, name="kid")
    assert me["name"] == "kid"
    assert me["pid"] == me["os_pid"] != os.getpid()
    assert me["path"] == ["root", "kid"]
    assert me["parent_path"] == ["root"]
    assert (me["debug_mode"], me["crash_repl"]) == (False, "origin")
    assert process_gone(me["pid"])


async def test_current_actor_in_the_root() -> None:
    """Outside any child, current_actor() is the root."""
    actor = current_actor()
    assert (actor.name, actor.pid, actor.path) == ("root", os.getpid(), ("root",))
    assert actor.is_root
    assert actor.parent_path == ()


async def test_several_run_in_actor_calls_run_concurrently() -> None:
    """Concurrent run_in_actor calls each get their own process and result."""
    results: dict[int, dict[str, Any]] = {}

    async def one(i: int, an: ActorNursery) -> None:
        results[i] = await an.run_in_actor(actor_fns.whoami, name=f"w{i}")

    with trio.fail_after(TIMEOUT):
        async with open_actor_nursery() as an, trio.open_nursery() as nursery:
            for i in range(4):
                nursery.start_soon(one, i, an)
    assert sorted(results) == [0, 1, 2, 3]
    assert [results[i]["name"] for i in range(4)] == ["w0", "w1", "w2", "w3"]
    assert len({results[i]["pid"] for i in range(4)}) == 4


async def test_start_actor_serves_many_calls_until_cancelled() -> None:
    """A started actor keeps its state across portal.run calls; cancel_actor ends it."""
    with trio.fail_after(TIMEOUT):
        async with open_actor_nursery() as an:
            portal = await an.start_actor("worker")
            # The socket file went as soon as the child connected.
            runtime_dir = trio.Path(os.environ["DAPPER_TRIO_RUNTIME_DIR"])
            assert list(await runtime_dir.iterdir()) == []
            assert portal.name == "worker"
            assert portal.path == ("root", "worker")
            counts = [await portal.run(actor_fns.count_calls) for _ in range(10)]
            assert counts == [(i, portal.pid) for i in range(1, 11)]

            concurrent: list[tuple[int, int]] = []

            async def call() -> None:
                concurrent.append(await portal.run(actor_fns.count_calls))

            async with trio.open_nursery() as nursery:
                for _ in range(10):
                    nursery.start_soon(call)
            assert sorted(n for n, _ in concurrent) == list(range(11, 21))

            await portal.cancel_actor()
            assert process_gone(portal.pid)
            with pytest.raises(trio.ClosedResourceError, match="worker is stopped"):
                await portal.run(actor_fns.double, 1)
            await portal.cancel_actor()  # idempotent


async def test_started_actors_are_stopped_when_the_block_ends() -> None:
    """Leaving the nursery's block stops actors nobody cancelled."""
    with trio.fail_after(TIMEOUT):
        async with open_actor_nursery() as an:
            portals = [await an.start_actor(f"idle{i}") for i in range(2)]
        for portal in portals:
            assert process_gone(portal.pid)
        with pytest.raises(RuntimeError, match="closed"):
            await an.start_actor("late")


async def test_nested_depth_three() -> None:
    """A great-grandchild's result comes back through every level."""
    with trio.fail_after(TIMEOUT):
        async with open_actor_nursery() as an:
            path = await an.run_in_actor(actor_fns.nest, 3, name="level3")
    assert path == ["root", "level3", "level2", "level1", "level0"]


# ---------------------------------------------------------------------------
# Errors


async def test_remote_error_carries_the_child_s_error() -> None:
    """A child's exception arrives as RemoteError: type, message, traceback, who."""
    with trio.fail_after(TIMEOUT):
        async with open_actor_nursery() as an:
            portal = await an.start_actor("faulty")
            with pytest.raises(RemoteError) as excinfo:
                await portal.run(actor_fns.fail, "boom 17")
            # The actor survives its call's error.
            assert await portal.run(actor_fns.double, 2) == 4
    error = excinfo.value
    assert isinstance(error, DapperTrioError)
    assert (error.name, error.pid, error.path) == (
        "faulty",
        portal.pid,
        ("root", "faulty"),
    )
    assert error.error_type == "ValueError"
    assert error.message == "boom 17"
    assert "raise ValueError(message)  # mark: raise" in error.remote_traceback
    assert "actor_fns.py" in error.remote_traceback
    assert "_actor_main.py" not in error.remote_traceback
    assert error.origin is error
    text = str(error)
    assert text.startswith(
        f"actor root/faulty (pid {portal.pid}) raised ValueError: boom 17\n"
    )
    assert "# mark: raise" in text
    # It survives pickling (a child may relay it further).
    assert str(error_from_dict(error_to_dict(error))) == text


async def test_remote_error_cancels_siblings(tmp_path: Path) -> None:
    """A RemoteError propagates like a task's error and cancels the siblings."""

    async def tree() -> None:
        async with open_actor_nursery() as an, trio.open_nursery() as nursery:
            nursery.start_soon(
                functools.partial(
                    an.run_in_actor,
                    actor_fns.sleep_with_finally,
                    str(tmp_path),
                    name="sleeper",
                )
            )
            await wait_for_file(tmp_path / "started")
            await an.run_in_actor(actor_fns.fail, "first", name="failer")

    with trio.fail_after(TIMEOUT), pytest.raises(BaseExceptionGroup) as excinfo:
        await tree()
    error = only_leaf(excinfo.value)
    assert isinstance(error, RemoteError)
    assert (error.name, error.message) == ("failer", "first")
    sleeper_pid = int((tmp_path / "started").read_text())
    assert (tmp_path / "finally").read_text() == str(sleeper_pid)
    assert process_gone(sleeper_pid)


async def test_error_two_levels_down_names_its_origin() -> None:
    """A grandchild's error reaches the root as a RemoteError relaying it."""
    with trio.fail_after(TIMEOUT), pytest.raises(BaseExceptionGroup) as excinfo:
        async with open_actor_nursery() as an:
            await an.run_in_actor(actor_fns.middle_fails, "deep", name="middle")
    error = only_leaf(excinfo.value)
    assert isinstance(error, RemoteError)
    assert error.path == ("root", "middle")
    # The middle process raised what its own nursery raised: a group.
    assert error.error_type == "ExceptionGroup"
    assert len(error.relayed) == 1
    origin = error.origin
    assert isinstance(origin, RemoteError)
    assert origin is error.relayed[0]
    assert (origin.path, origin.error_type, origin.message) == (
        ("root", "middle", "leaf"),
        "ValueError",
        "deep",
    )
    assert "# mark: raise" in origin.remote_traceback
    summary = str(error).splitlines()[0]
    assert summary.startswith("actor root/middle (pid ")
    assert "; originally: actor root/middle/leaf (pid " in summary
    assert summary.endswith("raised ValueError: deep")


async def test_exit_code_arrives_as_process_died() -> None:
    """A child that calls os._exit(3) arrives as ProcessDied with exit code 3."""
    with trio.fail_after(TIMEOUT), pytest.raises(BaseExceptionGroup) as excinfo:
        async with open_actor_nursery() as an:
            await an.run_in_actor(actor_fns.exit_now, 3, name="quitter")
    error = only_leaf(excinfo.value)
    assert isinstance(error, ProcessDied)
    assert isinstance(error, TransportError)
    assert (error.name, error.path) == ("quitter", ("root", "quitter"))
    assert (error.exit_code, error.signal, error.returncode) == (3, None, 3)
    assert error.pid > 0
    assert str(error) == (
        f"actor root/quitter (pid {error.pid}) exited with code 3"
        " while running exit_now()"
    )


async def test_sigkill_of_a_busy_actor_reaches_its_caller() -> None:
    """A child killed with SIGKILL mid-call: the caller gets ProcessDied."""
    with trio.fail_after(TIMEOUT):
        async with open_actor_nursery() as an:
            portal = await an.start_actor("victim")

            async def kill_soon() -> None:
                await trio.sleep(0.2)
                os.kill(portal.pid, signal.SIGKILL)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(kill_soon)
                assert await portal.run(actor_fns.echo, None) is None
                with pytest.raises(ProcessDied) as excinfo:
                    await portal.run(trio.sleep_forever)
    error = excinfo.value
    assert error.signal == signal.SIGKILL
    assert error.exit_code is None
    assert error.pid == portal.pid
    assert "was killed by SIGKILL" in str(error)


async def test_sigkill_of_an_idle_actor_fails_the_nursery() -> None:
    """An idle child killed with SIGKILL raises ProcessDied in its nursery."""
    pids: list[int] = []

    async def tree() -> None:
        async with open_actor_nursery() as an:
            portal = await an.start_actor("idle")
            pids.append(portal.pid)
            os.kill(portal.pid, signal.SIGKILL)
            await trio.sleep_forever()  # cancelled by the child's death

    with trio.fail_after(TIMEOUT), pytest.raises(BaseExceptionGroup) as excinfo:
        await tree()
    error = only_leaf(excinfo.value)
    assert isinstance(error, ProcessDied)
    assert (error.name, error.pid, error.signal) == ("idle", pids[0], signal.SIGKILL)


# ---------------------------------------------------------------------------
# Cancellation


async def test_cancelling_the_parent_runs_the_child_s_finally(tmp_path: Path) -> None:
    """Cancelling the parent's scope cancels the child's trio run; finally runs."""
    with trio.fail_after(TIMEOUT):
        with trio.CancelScope() as scope:
            async with open_actor_nursery() as an, trio.open_nursery() as nursery:
                nursery.start_soon(
                    functools.partial(
                        an.run_in_actor, actor_fns.sleep_with_finally, str(tmp_path)
                    )
                )
                pid = int(await wait_for_file(tmp_path / "started"))
                scope.cancel()
        assert scope.cancelled_caught
    assert (tmp_path / "finally").read_text() == str(pid)
    assert process_gone(pid)


async def test_cancelling_a_starting_actor_reaps_it() -> None:
    """start_actor cancelled while the child starts: it is killed and reaped."""
    with trio.fail_after(TIMEOUT):
        async with open_actor_nursery() as an:
            with trio.move_on_after(0.05) as scope:
                await an.start_actor("unborn")
            assert scope.cancelled_caught
            assert not an._children
            portal = await an.start_actor("born")  # the nursery is still usable
            assert await portal.run(actor_fns.double, 4) == 8


async def test_ctrl_c_cancels_the_tree_in_order(tmp_path: Path) -> None:
    """Ctrl-C to the whole process group: children ignore it, the root cancels them."""
    script = tmp_path / "app.py"
    script.write_text(
        textwrap.dedent(
            """
            import sys, trio, actor_fns
            from dapper_trio._actors import open_actor_nursery

            async def main():
                async with open_actor_nursery() as an:
                    await an.run_in_actor(actor_fns.sleep_with_finally, sys.argv[1])

            trio.run(main)
            """
        )
    )
    env = dict(os.environ, PYTHONPATH=str(Path(actor_fns.__file__).parent))
    with (tmp_path / "stderr").open("wb") as stderr:
        process = await trio.lowlevel.open_process(
            [sys.executable, str(script), str(tmp_path)],
            env=env,
            stderr=stderr,
            start_new_session=True,  # a process group of its own, as at a terminal
        )
    try:
        with trio.fail_after(TIMEOUT):
            child = int(await wait_for_file(tmp_path / "started"))
            os.killpg(process.pid, signal.SIGINT)
            await process.wait()
    finally:
        process.kill()
        await process.wait()
    errors = (tmp_path / "stderr").read_text()
    assert process.returncode != 0
    assert "KeyboardInterrupt" in errors
    assert "RemoteError" not in errors  # the child was cancelled, not interrupted
    assert (tmp_path / "finally").read_text() == str(child)
    assert process_gone(child)


async def test_cancelled_call_unwinds_but_the_actor_lives(tmp_path: Path) -> None:
    """A cancelled portal.run cancels only that call; the actor goes on serving."""
    with trio.fail_after(TIMEOUT):
        async with open_actor_nursery() as an:
            portal = await an.start_actor("server")
            with trio.move_on_after(0.3) as scope:
                await portal.run(actor_fns.sleep_with_finally, str(tmp_path))
            assert scope.cancelled_caught
            # The call's finally has run by the time Cancelled reached us.
            assert (tmp_path / "finally").read_text() == str(portal.pid)
            assert await portal.run(actor_fns.double, 5) == 10


async def test_error_while_unwinding_replaces_cancelled(tmp_path: Path) -> None:
    """An error raised by a cancelled call's finally is raised in the caller."""
    with trio.fail_after(TIMEOUT):
        async with open_actor_nursery() as an:
            portal = await an.start_actor("messy")
            with pytest.raises(RemoteError) as excinfo, trio.move_on_after(0.3):
                await portal.run(actor_fns.fail_while_unwinding, str(tmp_path))
    assert excinfo.value.error_type == "RuntimeError"
    assert excinfo.value.message == "cleanup failed"


@pytest.mark.parametrize(
    ("ignore_sigterm", "signal_name"), [(False, "SIGTERM"), (True, "SIGKILL")]
)
async def test_a_child_ignoring_cancellation_is_signalled(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    ignore_sigterm: bool,
    signal_name: str,
) -> None:
    """A child ignoring cancellation gets SIGTERM, then SIGKILL, grace periods apart."""
    caplog.set_level(logging.WARNING, logger="dapper_trio.actors")
    grace = 0.3
    with trio.fail_after(TIMEOUT):
        with trio.CancelScope() as scope:
            async with open_actor_nursery(grace_period=grace) as an:
                portal = await an.start_actor("stubborn")
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(
                        portal.run, actor_fns.stubborn, str(tmp_path), ignore_sigterm
                    )
                    await wait_for_file(tmp_path / "started")
                    started = time.monotonic()
                    scope.cancel()
        elapsed = time.monotonic() - started
    assert process_gone(portal.pid)
    expected = 2 * grace if ignore_sigterm else grace
    assert expected <= elapsed < expected + 2 * grace + 1.0
    messages = [record.getMessage() for record in caplog.records]
    assert any(f"stopped with {signal_name}" in message for message in messages), (
        messages
    )


async def test_orphans_stop_when_their_parent_is_killed(tmp_path: Path) -> None:
    """Killing a middle process makes its child cancel itself; finally runs."""
    with trio.fail_after(TIMEOUT):
        async with open_actor_nursery() as an:
            portal = await an.start_actor("middle")
            async with trio.open_nursery() as nursery:

                async def run_middle() -> None:
                    with pytest.raises(ProcessDied):
                        await portal.run(
                            actor_fns.middle_with_sleeping_child, str(tmp_path)
                        )

                nursery.start_soon(run_middle)
                grandchild = int(await wait_for_file(tmp_path / "started"))
                os.kill(portal.pid, signal.SIGKILL)
            assert (await wait_for_file(tmp_path / "finally")) == str(grandchild)
            await wait_until_gone(grandchild)


# ---------------------------------------------------------------------------
# What can be sent


async def test_functions_must_be_importable() -> None:
    """Lambdas, local and non-async functions are refused before any process starts."""

    async def local() -> None:
        pass

    def not_async() -> None:
        pass

    coroutine = actor_fns.double(1)
    candidates: list[object] = [
        lambda: None,
        local,
        not_async,
        functools.partial(actor_fns.double, 1),
        coroutine,
    ]
    try:
        with trio.fail_after(TIMEOUT):
            async with open_actor_nursery() as an:
                portal = await an.start_actor("strict")
                for fn in candidates:
                    with pytest.raises(TypeError) as excinfo:
                        await an.run_in_actor(fn)  # type: ignore[arg-type]
                    with pytest.raises(TypeError):
                        await portal.run(fn)  # type: ignore[arg-type]
                    message = str(excinfo.value)
                    assert "not one" in message or "cannot import" in message
                assert an._children == {portal._child}  # no other process started
                with pytest.raises(TypeError, match="lambda or a function defined"):
                    await an.run_in_actor(local)
    finally:
        coroutine.close()


async def test_unpicklable_argument_is_refused() -> None:
    """An argument that cannot be pickled raises TypeError naming it."""
    with trio.fail_after(TIMEOUT):
        async with open_actor_nursery() as an:
            with pytest.raises(
                TypeError, match=r"argument 0 of echo\(\) cannot be sent"
            ):
                await an.run_in_actor(actor_fns.echo, threading.Lock())
            assert not an._children


async def test_unpicklable_result_is_a_remote_error() -> None:
    """A result that cannot be pickled arrives as a RemoteError saying so."""
    with trio.fail_after(TIMEOUT):
        async with open_actor_nursery() as an:
            with pytest.raises(RemoteError) as excinfo:
                await an.run_in_actor(actor_fns.lock)
    assert excinfo.value.error_type == "TypeError"
    assert "result of actor_fns.lock() cannot be sent" in excinfo.value.message


async def test_functions_from_the_main_script(tmp_path: Path) -> None:
    """Functions and classes of the main script can be sent, as in multiprocessing."""
    script = tmp_path / "app.py"
    script.write_text(
        textwrap.dedent(
            """
            import dataclasses, trio
            from dapper_trio._actors import open_actor_nursery

            @dataclasses.dataclass
            class Point:
                x: int
                y: int

            async def swap(point):
                return Point(point.y, point.x)

            async def main():
                async with open_actor_nursery() as an:
                    print(await an.run_in_actor(swap, Point(1, 2)))

            if __name__ == "__main__":
                trio.run(main)
            """
        )
    )
    with trio.fail_after(TIMEOUT):
        result = await trio.run_process(
            [sys.executable, str(script)], capture_stdout=True, capture_stderr=True
        )
    assert result.stdout.decode() == "Point(x=2, y=1)\n", result.stderr.decode()


# ---------------------------------------------------------------------------
# Settings


async def test_settings_are_inherited_two_levels_down() -> None:
    """debug_mode and crash_repl hold for grandchildren under default nurseries."""
    with trio.fail_after(TIMEOUT):
        async with open_actor_nursery(debug_mode=True, crash_repl="every-hop") as an:
            assert (an.debug_mode, an.crash_repl) == (True, "every-hop")
            report = await an.run_in_actor(actor_fns.settings_two_levels_down)
    assert report["nursery"] == [True, "every-hop"]
    grandchild = report["grandchild"]
    assert grandchild["path"] == ["root", "settings_two_levels_down", "grandchild"]
    assert (grandchild["debug_mode"], grandchild["crash_repl"]) == (True, "every-hop")


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"crash_repl": "everywhere"}, ValueError),
        ({"crash_repl": None}, ValueError),
        ({"debug_mode": "yes"}, TypeError),
        ({"grace_period": -1}, ValueError),
        ({"grace_period": float("nan")}, ValueError),
    ],
)
async def test_invalid_settings_are_refused(
    kwargs: dict[str, object], error: type[Exception]
) -> None:
    """Bad settings raise at once, before anything starts."""
    with pytest.raises(error):
        open_actor_nursery(**kwargs)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------
# Leaks


async def test_no_leaks_after_many_spawns() -> None:
    """Dozens of children, concurrent and in sequence, leave nothing behind."""
    runtime_dir = Path(os.environ["DAPPER_TRIO_RUNTIME_DIR"])
    pids: list[int] = []

    async def one(i: int, an: ActorNursery) -> None:
        me = await an.run_in_actor(actor_fns.whoami, name=f"n{i}")
        pids.append(me["pid"])

    with trio.fail_after(2 * TIMEOUT):
        for batch in range(4):
            async with open_actor_nursery() as an, trio.open_nursery() as nursery:
                for i in range(6):
                    nursery.start_soon(one, batch * 6 + i, an)
            assert list(await trio.Path(runtime_dir).iterdir()) == []
    assert len(set(pids)) == 24
    assert all(process_gone(pid) for pid in pids)

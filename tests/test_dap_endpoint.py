"""``DapEndpoint``: what the program posts reaches the agent's loop in order,
in batches, and non-urgent events wait.

The loop here is the test's own; the posts come from a worker thread, as they
come from the program's thread in a debuggee.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import Any, cast

import trio

from dapper_trio._dap_agent import DapEndpoint
from dapper_trio._dap_debuggee import DapSession, StopPort

WAIT = 10.0


class CountingToken:
    """A trio token that counts ``run_sync_soon`` calls (wake-ups of the loop)."""

    def __init__(self) -> None:
        self.token = trio.lowlevel.current_trio_token()
        self.calls = 0

    def run_sync_soon(self, function: Callable[..., object], *args: Any) -> None:
        self.calls += 1
        self.token.run_sync_soon(function, *args)


def bound_endpoint(
    got: list[tuple[str, Any]],
) -> tuple[DapEndpoint, CountingToken]:
    endpoint = DapEndpoint()
    token = CountingToken()
    endpoint.bind(
        cast(trio.lowlevel.TrioToken, token),
        lambda event, body: got.append((event, body)),
    )
    return endpoint, token


async def delivered(got: list[Any], count: int) -> None:
    with trio.fail_after(WAIT):
        while len(got) < count:
            await trio.sleep(0.01)


async def test_non_urgent_events_wait_for_the_next_urgent_post() -> None:
    """Thread events wait; output and an urgent event bring them, in order,
    in one wake-up of the loop."""
    got: list[tuple[str, Any]] = []
    endpoint, token = bound_endpoint(got)

    def starting() -> None:
        endpoint.post_event("thread", {"threadId": 1}, urgent=False)
        endpoint.post_event("thread", {"threadId": 2}, urgent=False)

    await trio.to_thread.run_sync(starting)
    await trio.sleep(0.1)
    assert got == []
    assert endpoint.waiting
    assert token.calls == 0

    # Posted here, with no checkpoint in between: the loop cannot deliver
    # before the last one (from a thread, a delivery may come in between).
    assert endpoint.post_output("stdout", "a")
    assert endpoint.post_output("stdout", "b")
    endpoint.post_event("stopped", {"threadId": 2})
    await delivered(got, 4)
    assert got == [
        ("thread", {"threadId": 1}),
        ("thread", {"threadId": 2}),
        ("output", {"category": "stdout", "output": "ab"}),
        ("stopped", {"threadId": 2}),
    ]
    assert token.calls == 1
    assert not endpoint.waiting


async def test_flush_sends_what_waits() -> None:
    """flush (the program idles or ends) delivers the waiting events."""
    got: list[tuple[str, Any]] = []
    endpoint, token = bound_endpoint(got)
    endpoint.post_event("thread", {"reason": "exited"}, urgent=False)
    endpoint.flush()
    endpoint.flush()  # nothing more to queue
    await delivered(got, 1)
    assert got == [("thread", {"reason": "exited"})]
    assert token.calls == 1
    endpoint.flush()
    await trio.sleep(0.05)
    assert token.calls == 1


async def test_a_result_comes_after_the_events_posted_before_it() -> None:
    """post_call runs after what was posted before it (a stopped event is
    sent before the answer that follows it)."""
    got: list[tuple[str, Any]] = []
    endpoint, token = bound_endpoint(got)

    def program() -> None:
        endpoint.post_event("thread", {"threadId": 3}, urgent=False)
        endpoint.post_event("stopped", {"threadId": 3})
        endpoint.post_call(
            cast(trio.lowlevel.TrioToken, token),
            lambda value: got.append(("result", value)),
            "answer",
        )

    await trio.to_thread.run_sync(program)
    await delivered(got, 3)
    assert got == [
        ("thread", {"threadId": 3}),
        ("stopped", {"threadId": 3}),
        ("result", "answer"),
    ]


async def test_unbound_endpoint_drops_events_and_refuses_output() -> None:
    """Before bind and after unbind: events dropped, output refused; a call
    for another loop still runs there."""
    endpoint = DapEndpoint()
    endpoint.post_event("stopped", {})
    assert endpoint.post_output("stdout", "lost") is False
    assert not endpoint.waiting
    ran: list[str] = []
    endpoint.post_call(trio.lowlevel.current_trio_token(), ran.append, "ran")
    await delivered(ran, 1)
    assert ran == ["ran"]


# -- a pause right after the previous client left a stop ------------------------------


def test_a_stop_whose_adapter_left_is_ending_until_it_closes() -> None:
    """StopPort.ending: stopped for a connection that is gone."""
    port = StopPort()
    port.open()
    assert not port.ending
    port.connection_lost()
    assert port.ending
    assert port.take() is None  # the stopped thread lets the stop go
    port.close()
    assert not port.ending
    port.open()  # a stop for the next connection
    assert not port.ending


class PausableSession:
    """What DapEndpoint's pause uses of a DapSession: a trio program's."""

    def __init__(self) -> None:
        self.port = StopPort()
        self.supervise_sigint = False
        self.threads = types.SimpleNamespace(
            trio_token=trio.lowlevel.current_trio_token()
        )
        self.paused = trio.Event()

    def pause_soon(self) -> None:
        self.paused.set()


async def test_a_pause_waits_for_the_left_stop_to_end() -> None:
    """A new client's pause while the stop the last one left is ending is
    sent once the program resumes, not taken for a pause of a stopped one."""
    endpoint = DapEndpoint()
    session = PausableSession()
    endpoint.session = cast(DapSession, session)
    session.port.open()
    session.port.connection_lost()
    async with trio.open_nursery() as nursery:
        answered = trio.Event()

        async def pause() -> None:
            assert await endpoint.handle({"command": "pause"}) == {}
            answered.set()

        nursery.start_soon(pause)
        await trio.sleep(0.2)
        assert not answered.is_set()
        assert not session.paused.is_set()
        await trio.to_thread.run_sync(session.port.close)  # the program resumes
        with trio.fail_after(WAIT):
            await answered.wait()
            await session.paused.wait()

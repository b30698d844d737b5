"""DapEndpoint, the DAP agent's handler of the adapter's requests, on its own.

A pause that comes while the stop a previous client left is still ending:
the endpoint is driven directly, with a session that has what a pause uses.
"""

from __future__ import annotations

import types
from typing import cast

import trio

from dapper_trio._dap_agent import DapEndpoint
from dapper_trio._dap_debuggee import DapSession, StopPort

WAIT = 10.0


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

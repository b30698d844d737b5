"""An attachable program's listener for DAP adapters (``_dap_listen``).

The program's end of the session is the ``_dap_agent.DapEndpoint`` a
launched debuggee has too; here it is served in a trio loop of the agent
thread's own, one client at a time, each proving it holds the listener's
token.  (A launched debuggee's agent does without trio: ``_dap_agent``.)
"""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Callable
from typing import Any

import trio

from ._dap_agent import DapEndpoint, _slot, real_trio_run
from ._dap_debuggee import Command
from ._ipc import Channel, IPCError, UnknownMethod, open_listener
from ._sockets import Address, BoundSocket


async def _send_events(
    channel: Channel, receive: trio.MemoryReceiveChannel[tuple[str, Any]]
) -> None:
    """Send the queued events in order, until the queue is closed or the
    connection is lost."""
    async with receive:
        async for first in receive:
            # Whatever else is queued goes in the same write: each write is
            # a syscall, and a GIL hand-over with a busy program.
            batch = [first]
            with contextlib.suppress(trio.WouldBlock, trio.EndOfChannel):
                while True:
                    batch.append(receive.receive_nowait())
            try:
                await channel.send_events(batch)
            except IPCError:
                return


def _queue(
    send: trio.MemorySendChannel[tuple[str, Any]], item: tuple[str, Any]
) -> None:
    with contextlib.suppress(trio.ClosedResourceError, trio.BrokenResourceError):
        send.send_nowait(item)


class ListeningAgent:
    """An attachable program's listener for adapters, in a thread of its own.

    Serves one adapter at a time.
    """

    def __init__(self, endpoint: DapEndpoint, bound: BoundSocket, token: str) -> None:
        self.endpoint = endpoint
        self.bound = bound
        self.token = token
        #: Called (in the agent thread) once a client is attached and configured.
        self.on_attached: Callable[[], None] = _nothing
        self._trio_token: trio.lowlevel.TrioToken | None = None
        self._exit_status: int | None = None
        self._done: trio.Event | None = None
        #: Set while no client is being served.
        self._idle = trio.Event()
        self._idle.set()
        self._started = threading.Event()
        self._thread = threading.Thread(
            target=self._thread_main, name="dapper-trio dap listener", daemon=True
        )

    @property
    def address(self) -> Address:
        return self.bound.address

    def start(self) -> None:
        """Start listening (the socket is bound already)."""
        self._thread.start()
        self._started.wait(timeout=10.0)

    def finish(self, status: int | None = None) -> None:
        """The program ended (with *status*, if known): tell the client, stop."""
        token = self._trio_token
        if token is None:
            self.bound.close()
            return
        try:
            trio.from_thread.run_sync(self._set_done, status, trio_token=token)
        except (trio.RunFinishedError, RuntimeError):
            return
        self._thread.join(timeout=5.0)

    def _set_done(self, status: int | None) -> None:
        self._exit_status = status
        if self._done is not None:
            self._done.set()

    def _thread_main(self) -> None:
        self.endpoint.session.own_threads.add(threading.get_ident())
        try:
            real_trio_run(self._main)
        except BaseException as exc:  # pragma: no cover - a bug in the agent
            print(f"[dapper-trio] the DAP listener failed: {exc!r}", file=sys.stderr)
        finally:
            self._started.set()

    async def _main(self) -> None:
        self._done = trio.Event()
        self._trio_token = trio.lowlevel.current_trio_token()
        self._started.set()
        async with (
            open_listener(
                token=self.token, bound=self.bound, name="dapper-trio program"
            ) as listener,
            trio.open_nursery() as nursery,
        ):
            nursery.start_soon(self._serve_clients, listener)
            await self._done.wait()
            # A client being served is told the program ended, then let go.
            with trio.move_on_after(3.0):
                await self._idle.wait()
            nursery.cancel_scope.cancel()

    async def _serve_clients(self, listener: Any) -> None:
        while True:
            async with listener.accept(request_handler=self._handle_request) as channel:
                self._idle = trio.Event()
                try:
                    await self._serve_client(channel)
                finally:
                    self._idle.set()

    async def _serve_client(self, channel: Channel) -> None:
        session = self.endpoint.session
        token, done = self._trio_token, self._done
        assert token is not None
        assert done is not None
        send, receive = trio.open_memory_channel[tuple[str, Any]](float("inf"))
        self.endpoint.bind(token, lambda *item: _queue(send, item))
        try:
            # A client is there from now on: a stop (its pause may be served
            # before the answer to "configure" is taken in here) is its to see.
            session.attached = True
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_send_events, channel, receive)
                try:
                    config = await channel.request("configure")
                    await self.endpoint.handle(
                        {"command": "configure", "arguments": config}
                    )
                except IPCError:
                    return  # the client left before it was configured
                except Exception as exc:
                    print(
                        f"[dapper-trio] cannot apply the DAP client's configuration:"
                        f" {exc}",
                        file=sys.stderr,
                        flush=True,
                    )
                self.on_attached()
                async with trio.open_nursery() as waits:
                    waits.start_soon(_cancel_when, channel.wait_closed, waits)
                    waits.start_soon(_cancel_when, done.wait, waits)
                if done.is_set() and self._exit_status is not None:
                    _queue(send, ("exited", {"exitCode": self._exit_status}))
                send.close()  # the sender ends once it has sent what is queued
                nursery.cancel_scope.deadline = trio.current_time() + 2.0
        finally:
            send.close()
            session.attached = False
            self.endpoint.unbind()
            # Forget the client's breakpoints first, and only then end the
            # stop it leaves (if any): resumed first, the program could reach
            # one of them again before they go, and stop with nobody there.
            with trio.CancelScope(shield=True):
                await self._detach()
            session.port.connection_lost()

    async def _detach(self) -> None:
        _, deliver, done = _slot(self.endpoint)
        self.endpoint.session.queue_configuration(Command("detach", {}, deliver))
        with trio.move_on_after(5.0):
            await done.wait()

    async def _handle_request(self, method: str, params: Any) -> Any:
        if method != "dap":
            raise UnknownMethod(f"unknown method {method!r}")
        return await self.endpoint.handle(params)


def _nothing() -> None:
    return None


async def _cancel_when(wait: Callable[[], Any], nursery: trio.Nursery) -> None:
    await wait()
    nursery.cancel_scope.cancel()


__all__ = ["ListeningAgent"]

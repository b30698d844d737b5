"""Attachable programs: ``await dapper_trio.listen()`` and ``dapper-trio run --listen``.

A program that listens can be debugged from an editor at any time: the
editor's ``dapper-trio dap`` sends ``attach`` with the address and the token
the program printed (or got back from ``listen()``), connects, and from then
on the program is debugged as a launched one is -- trio tasks as threads,
breakpoints, pause, evaluate.  When the editor detaches, the program forgets
its breakpoints, goes on if it was stopped, and waits for the next client.

The listener is dapper-trio's IPC listener (``_ipc``): a client must send
the token first, compared in constant time, or it is refused; on TCP it
listens on loopback unless a host is named explicitly, which warns (whoever
holds the token and can reach the port can run code in the program).  The
token is random per listener unless ``DAPPER_TRIO_TOKEN`` (or ``token=``)
sets one, so that an editor configuration can name it.

``listen()`` sets up what ``dapper-trio run`` sets up before a program
starts, but in the middle of a trio run: the debug session (a DAP one),
dapper-trio's trio instrument (every live task gets its thread id now), and
the agent thread that serves clients (``_dap_attach.ListeningAgent``).  At
the program's exit (``atexit``) the listener is closed: a client attached
then sees the program end, and a unix socket's file and directory go.

Known holes.  A program that listens without ``dapper-trio run`` cannot be
paused while it runs outside trio, nor while a task runs without reaching a
checkpoint (there is no SIGINT to interrupt it).  A program being debugged
at a terminal (``dapper-trio run`` without ``--listen``) cannot also listen.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import os
import signal
import sys
import threading
from typing import Any, Literal

import trio

from . import _session, _tasks, _trio_internals
from ._dap_agent import DapEndpoint, launched_search
from ._dap_attach import ListeningAgent
from ._dap_debuggee import DapSession
from ._sockets import Address, bind_listening_socket, new_token
from ._targets import RunOptions, Target

#: Environment variable giving the token clients must present (random if unset).
TOKEN_ENV = "DAPPER_TRIO_TOKEN"

LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})


@dataclasses.dataclass(frozen=True)
class Listening:
    """Where a listening program is, and the token a client must present."""

    address: Address
    token: str

    def attach_arguments(self) -> dict[str, Any]:
        """The ``attach`` arguments that reach this program."""
        return {"address": str(self.address), "token": self.token}

    def describe(self) -> str:
        """The line a listening program prints on stderr."""
        return (
            f"[dapper-trio] waiting for a DAP client: attach with address "
            f"{self.address} and token {self.token}"
        )


@dataclasses.dataclass
class _Listener:
    info: Listening
    session: DapSession
    agent: ListeningAgent
    #: Set whenever a client has attached and configured the program.
    attached: threading.Event
    #: ``listen(wait_for_client=True)`` calls waiting: their loops and events.
    waiters: list[tuple[trio.lowlevel.TrioToken, trio.Event]] = dataclasses.field(
        default_factory=list
    )

    def on_attached(self) -> None:
        with _lock:
            self.attached.set()
            waiters, self.waiters = self.waiters, []
        for token, event in waiters:
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(event.set)

    async def wait_for_client(self) -> None:
        event = trio.Event()
        with _lock:
            if self.session.attached:
                return
            entry = (trio.lowlevel.current_trio_token(), event)
            self.waiters.append(entry)
        try:
            await event.wait()
        finally:
            with _lock, contextlib.suppress(ValueError):
                self.waiters.remove(entry)


_lock = threading.Lock()
_current: _Listener | None = None


def warn_if_exposed(host: str, *, who: str) -> None:
    """Print a warning if *host* is not a loopback address."""
    if host not in LOOPBACK:
        print(
            f"{who}: warning: listening on {host}, not loopback: whoever can "
            "reach it (and, for a program, knows its token) can run code as you",
            file=sys.stderr,
            flush=True,
        )


def _open(
    *,
    session: DapSession,
    transport: Literal["tcp", "unix"],
    host: str,
    port: int,
    token: str | None,
    announce: bool,
) -> _Listener:
    global _current
    bound = bind_listening_socket(transport=transport, host=host, port=port)
    info = Listening(bound.address, token or os.environ.get(TOKEN_ENV) or new_token())
    agent = ListeningAgent(session.endpoint, bound, info.token)
    listener = _Listener(info, session, agent, threading.Event())
    agent.on_attached = listener.on_attached
    _current = listener
    agent.start()
    # At the program's exit: tell a client, close the socket, remove its file.
    atexit.register(agent.finish)
    if announce:
        print(info.describe(), file=sys.stderr, flush=True)
    return _current


def _adopt_trio_run(session: DapSession) -> None:
    """In a running trio thread: give *session* the run, as if it started it."""
    session.threads.program_thread = threading.get_ident()
    session.threads.program_thread_name = threading.current_thread().name
    trio.lowlevel.add_instrument(session.instrument)
    session._instrumented_runner = _trio_internals.current_runner()
    session._run_started()
    if threading.current_thread() is threading.main_thread():
        installed = signal.getsignal(signal.SIGINT)
        if callable(installed):
            # trio's own handler: how a quit from an idle pause unwinds the run
            session._ki_fallback = installed
    session.threads.trio_started(trio.lowlevel.current_trio_token())
    main = _trio_internals.main_task()
    for task in _live_tasks(main) if main is not None else []:
        _tasks.REGISTRY.spawned(task)
        session.task_started(task)
    session._wrap_trio_run()  # later runs of this program get the instrument
    # The program runs on: stop only at breakpoints (none yet).
    debugger = session.debugger()
    here = sys._getframe()
    debugger._ensure_botframe(here)
    debugger.set_continue()
    debugger._arm(here)


def _live_tasks(task: trio.lowlevel.Task) -> list[trio.lowlevel.Task]:
    """*task* and its descendants, parents first."""
    found = [task]
    for nursery in task.child_nurseries:
        for child in sorted(nursery.child_tasks, key=_tasks.REGISTRY.id_of):
            found.extend(_live_tasks(child))
    return found


async def listen(
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    transport: Literal["tcp", "unix"] = "tcp",
    token: str | None = None,
    wait_for_client: bool = False,
    announce: bool = True,
) -> Listening:
    """Let an editor attach to this program with ``dapper-trio dap``.

    Starts listening for DAP clients on *host*:*port* (TCP; port 0 picks a
    free one) or on a unix socket in a private directory
    (``transport="unix"``), and returns where (``.address``), the token a
    client must present (``.token``), and both as ``attach`` arguments
    (``.attach_arguments()``).  With *announce*, that is also printed on
    stderr.  The token is *token*, else ``$DAPPER_TRIO_TOKEN``, else random.
    A *host* other than loopback prints a warning: whoever can reach it and
    knows the token can run code in this program.  Clients attach one at a
    time; when one detaches, its breakpoints go, and the program goes on.
    Calling ``listen()`` again returns the same listener.

    With *wait_for_client*, returns only once a client has attached and sent
    its configuration (its breakpoints are set by then).

    On cancellation: the wait for a client is abandoned (the listener stays);
    otherwise this call is a checkpoint.
    """
    global _current
    if transport not in ("tcp", "unix"):
        raise ValueError(f"transport must be 'tcp' or 'unix', not {transport!r}")
    with _lock:
        current = _current
        if current is not None and current.session is not _session._SESSION:
            current = None  # a listener of an earlier program in this process
        if current is None:
            existing = _session._SESSION
            if (
                existing is not None
                and not isinstance(existing, DapSession)
                and (existing.supervise_sigint or existing.tree is not None)
            ):
                raise RuntimeError(
                    "dapper_trio.listen: this program is debugged at a "
                    "terminal already; use 'dapper-trio run --listen' instead"
                )
            if transport == "tcp":
                warn_if_exposed(host, who="dapper_trio.listen")
            session = DapSession(DapEndpoint(), lost="continue", attached=False)
            _session._SESSION = session
            session.install_excepthook()
            _adopt_trio_run(session)
            current = _open(
                session=session,
                transport=transport,
                host=host,
                port=port,
                token=token,
                announce=announce,
            )
    if wait_for_client:
        await current.wait_for_client()
    await trio.lowlevel.checkpoint()
    return current.info


def run_listening(
    target: Target,
    *,
    host: str,
    port: int,
    stop_on_entry: bool,
) -> int:
    """``dapper-trio run --listen``: run *target* here, attachable by editors.

    With *stop_on_entry*, the program starts once a client has attached
    and configured it, and stops at its first line; else it starts at once.
    Returns the program's exit status.
    """
    global _current
    from ._launcher import run_program

    session = DapSession(
        DapEndpoint(),
        search=launched_search(target, os.getcwd()),
        lost="continue",
        attached=False,
    )
    _session._SESSION = session
    session.install_excepthook()
    session.debugger()
    with _lock:
        listener = _open(
            session=session,
            transport="tcp",
            host=host,
            port=port,
            token=None,
            announce=True,
        )
    try:
        if stop_on_entry:
            while not listener.attached.wait(timeout=0.5):
                pass
        status = run_program(
            target,
            RunOptions(stop_on_entry=stop_on_entry),
            session=session,
            # Editors, not this terminal, debug it: no tree session.
            share_terminal=False,
        )
        _session._flush_std_streams()
        listener.agent.finish(status)
        return status
    except KeyboardInterrupt:
        listener.agent.finish(None)
        return 130
    finally:
        _current = None


__all__ = ["LOOPBACK", "TOKEN_ENV", "Listening", "listen", "run_listening"]

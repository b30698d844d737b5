"""A child actor process: connect back to the parent, run the calls it sends.

Theory of operation
===================

The problem.  A child is a whole Python process that must behave like a trio
task of its parent: run the functions the parent sends, report each result
or error, unwind its ``finally`` blocks when the parent cancels it, and never
outlive the parent that is responsible for reaping it.

Things that don't work.
* Running each call in the IPC layer's request-handler task (answering a
  ``run`` request with the result): that task lives in the channel's own
  nursery, so user code would show up inside the IPC machinery in task
  trees; and the parent could not cancel one call: a cancelled ``request()``
  is abandoned, the handler is not told.
* Cancelling the whole trio run when the parent says stop: the results of
  calls that unwind (including errors raised by their ``finally`` blocks)
  could not be reported any more, because the channel goes down with it.
* Relying on SIGTERM for cancellation: Python's default action kills the
  process without running a single ``finally``.
* Trusting the parent to always say stop: a parent killed with SIGKILL says
  nothing.  Its end of the socket closes, which we do see.

The design.  The child runs ``trio.run`` with one nursery holding every call
and, inside it, the connection to the parent (``_ipc.connect`` with the
token from ``DAPPER_TRIO_ACTOR``).  Messages are one-way events in both
directions, so nothing waits on a reply slot the other side might abandon:

* parent -> child ``run {call, fn, args}``: start a task running
  ``fn(*args)`` in a cancel scope of its own;
* parent -> child ``cancel_call {call}``: cancel that scope;
* parent -> child ``cancel {}``: cancel every call; once they have all
  unwound (their results sent), close the connection and exit 0;
* child -> parent ``result {call, value | error | cancelled}``: a pickled
  value, a described exception (see ``_actor_errors``), or "this call was
  cancelled".

If the connection ends without a ``cancel`` (the parent died), the child
cancels every call as for ``cancel``, and starts a watchdog thread that
sends this process SIGTERM after the grace period the parent allowed it,
then SIGKILL after another: an orphan never lingers, even one that ignores
cancellation or blocks its loop while unwinding.

The process ignores SIGINT from its first line (the parent's command line
does it before anything is imported): a Ctrl-C at the terminal reaches every
process of the foreground process group, and the tree must be cancelled in
order, from the root, rather than every process raising
``KeyboardInterrupt`` at once.

Every child records its path from the root in the debugging session's
environment, if there is one (``_tree_join.adopt_path``), so that processes
it starts some other way know their parent.  Debug mode: at start-up the
child connects its debug session to the root's terminal lock
(``_actor_debug.join_tree``), and a call that raises opens a post-mortem
REPL first if the ``crash_repl`` policy says so; the error is reported to
the parent when the user leaves it.  While a REPL
runs, this process's trio loop is blocked: the parent's messages wait, and
the parent, which knows (it watches the root's lock), waits too.

Known holes.  Code that blocks the child's event loop (a busy loop, a
blocking call) notices neither cancellation nor the parent's death: the
parent's SIGTERM and SIGKILL still stop it, but an orphan whose loop is
blocked when its parent dies lingers until the loop runs again (the
parent's death is seen by a trio task, which then starts the watchdog).
A call that returns a value after it was asked to cancel reports the value;
the parent then raises ``Cancelled`` anyway.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Awaitable
from typing import Any

import trio

from ._actor_codec import dumps, loads, resolve_function, set_main_info
from ._actor_context import Actor, ChildConfig, set_current_actor
from ._actor_errors import describe_exception
from ._ipc import Address, Channel, ConnectionLost, HandshakeError, connect
from ._tree_join import adopt_path
from ._wire import LocalProtocolError


class _ChildRuntime:
    """The trio side of a child actor: one connection, many calls."""

    def __init__(self, config: ChildConfig, actor: Actor) -> None:
        self._config = config
        self._actor = actor
        self._nursery: trio.Nursery | None = None
        self._channel: Channel | None = None
        self._stopping = trio.Event()
        self._parent_lost = False
        self._calls: dict[int, trio.CancelScope] = {}
        self._idle: trio.Event | None = None

    async def run(self) -> str | None:
        """Serve the parent until it says stop (or goes away).

        Returns None, or why the parent could not be reached.
        """
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            try:
                async with connect(
                    Address.parse(self._config.address),
                    token=self._config.token,
                    name=f"actor {'/'.join(self._actor.path)}",
                    event_handler=self._on_event,
                ) as channel:
                    self._channel = channel
                    nursery.start_soon(self._watch_parent, channel)
                    await self._stopping.wait()
                    for scope in self._calls.values():
                        scope.cancel()
                    await self._wait_idle()
            except (ConnectionLost, HandshakeError) as exc:
                if self._channel is not None:
                    raise  # pragma: no cover - nothing in the block raises these
                return str(exc)
            finally:
                nursery.cancel_scope.cancel()
        return None

    async def _on_event(self, event: str, body: Any) -> None:
        # Called by the channel's reader: quick, never blocks.
        assert self._nursery is not None
        if event == "run":
            call_id = int(body["call"])
            self._calls[call_id] = trio.CancelScope()
            self._nursery.start_soon(
                self._run_call,
                call_id,
                body["fn"],
                body["args"],
                name=f"{body['fn']['module']}.{body['fn']['qualname']}",
            )
        elif event == "cancel_call":
            scope = self._calls.get(int(body["call"]))
            if scope is not None:
                scope.cancel()
        elif event == "cancel":
            self._stopping.set()

    async def _run_call(self, call_id: int, ref: dict[str, str], args: str) -> None:
        scope = self._calls[call_id]
        if self._stopping.is_set():
            scope.cancel()
        label = f"{ref.get('module')}.{ref.get('qualname')}()"
        try:
            try:
                with scope:
                    value = await self._call(ref, args)
            except trio.Cancelled:
                raise  # not ours: the whole run is going down
            except BaseException as exc:
                if self._actor.debug_mode:
                    self._crash_repl(exc)
                report: dict[str, Any] = {"error": self._describe(exc)}
            else:
                if scope.cancelled_caught:
                    report = {"cancelled": True}
                else:
                    report = self._value_report(value, label)
            await self._send_result(call_id, report, label)
        finally:
            del self._calls[call_id]
            if not self._calls and self._idle is not None:
                self._idle.set()

    def _crash_repl(self, exc: BaseException) -> None:
        # Debug mode: a post-mortem here, before the error travels up, if the
        # crash_repl policy says so (see _actor_debug.wants_crash_repl).
        from ._actor_debug import open_crash_repl, wants_crash_repl

        if wants_crash_repl(exc, self._actor, in_root=False):
            open_crash_repl(exc)

    async def _call(self, ref: dict[str, str], args: str) -> Any:
        fn = resolve_function(ref)
        coro = fn(*loads(args))
        if not isinstance(coro, Awaitable):
            raise TypeError(f"{ref['qualname']}() did not return an awaitable")
        return await coro

    def _describe(self, exc: BaseException) -> dict[str, Any]:
        return describe_exception(
            exc,
            name=self._actor.name,
            pid=self._actor.pid,
            path=self._actor.path,
            skip_frames_of=__file__,
        )

    def _value_report(self, value: object, label: str) -> dict[str, Any]:
        try:
            return {"value": dumps(value)}
        except Exception as exc:
            error = TypeError(
                f"the result of {label} cannot be sent to the parent:"
                f" {type(exc).__name__}: {exc} (results must be picklable)"
            )
            error.__cause__ = exc
            return {"error": self._describe(error)}

    async def _send_result(
        self, call_id: int, report: dict[str, Any], label: str
    ) -> None:
        assert self._channel is not None
        report["call"] = call_id
        try:
            try:
                await self._channel.send_event("result", report)
            except LocalProtocolError as exc:
                error = ValueError(
                    f"the result of {label} is too large to send to the parent: {exc}"
                )
                report = {"call": call_id, "error": self._describe(error)}
                await self._channel.send_event("result", report)
        except ConnectionLost:
            pass  # the parent is gone; _watch_parent deals with it

    async def _wait_idle(self) -> None:
        if self._calls:
            self._idle = trio.Event()
            await self._idle.wait()

    async def _watch_parent(self, channel: Channel) -> None:
        await channel.wait_closed()
        if self._stopping.is_set():
            return
        self._parent_lost = True
        print(
            f"[dapper-trio] actor {'/'.join(self._actor.path)} (pid"
            f" {self._actor.pid}) lost its parent ({channel.close_reason});"
            " cancelling",
            file=sys.stderr,
            flush=True,
        )
        _start_watchdog(self._config.grace_period)
        self._stopping.set()


def _start_watchdog(grace_period: float) -> None:
    """Stop this orphan as its parent would have, if it does not exit first.

    A thread, so that it fires even if a ``finally`` block blocks the loop.
    """

    def watchdog() -> None:
        time.sleep(grace_period)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(grace_period)
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(
        target=watchdog, name="dapper-trio orphan watchdog", daemon=True
    ).start()


def main(config_text: str) -> None:
    """Entry point of a child actor; *config_text* is ``DAPPER_TRIO_ACTOR``'s value.

    Started by ``ActorNursery`` as ``python -c`` with a prologue that ignores
    SIGINT and sets ``sys.path`` to the parent's before importing this module.
    """
    try:
        config = ChildConfig.from_env(config_text)
    except ValueError as exc:
        sys.exit(f"dapper-trio: {exc}")
    set_main_info(config.main)
    actor = Actor(
        name=config.name,
        pid=os.getpid(),
        path=config.path,
        debug_mode=config.debug_mode,
        crash_repl=config.crash_repl,
    )
    set_current_actor(actor)
    # Processes this actor starts some other way know it as their parent.
    adopt_path(actor.path)
    if config.debug_mode and config.tree_address is not None:
        from ._actor_debug import join_tree

        join_tree(config, actor)
    problem = trio.run(_ChildRuntime(config, actor).run)
    if problem is not None:
        sys.exit(
            f"dapper-trio: actor {'/'.join(actor.path)} cannot reach its parent:"
            f" {problem}"
        )

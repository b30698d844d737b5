"""Trio transports for the frame protocol: listeners, connections, channels.

Theory of operation
===================

The problem.  A debugger is several processes (adapter, supervisor,
debuggees, a tree of children) that must ask each other things ("pause",
"give me the task tree", "may I have the terminal?") and tell each other
things ("stopped at line 12").  Every process must survive a peer that dies
mid-sentence, sends garbage, or is an unrelated local program that found the
socket, and nothing may leak: no task, no socket, no socket file.

Things that don't work.
* One task per request that reads its own response off the socket: two such
  tasks race for the same bytes.  Exactly one task may read a connection.
* Waiting for a response by polling a dict (Dapper's adapter does this with
  sleeps): slow, and a dead peer is noticed only at a timeout.
* Running every request handler inline in the reader: one slow command
  ("evaluate" of a long call) blocks every other request and the replies to
  our own requests.  (Plain-function handlers do run inline: they cannot
  wait for anything, and being called in order is what they are for.)
* Answering in the reader with a send that may wait for the socket to drain:
  when both peers flood each other with requests, both readers wait to send,
  neither reads, and neither socket ever drains.  A deadlock.
* Running an ``async def`` handler's first step in the reader and moving it
  to a task only if it suspends (asyncio's eager tasks): the cancel scopes it
  entered belong to the reader's task, and trio cannot move a half-run
  coroutine to another task.
* Letting a requester read its own response when the reader is idle, which
  would save waking it (a pass through the run loop): the reader is parked in
  ``wait_readable``, which allows one waiter per socket, and events must be
  handled in order by one task whatever else is in flight.
* Reading with trio's ``sock.recv()``: it first tries the read and yields
  after a read that succeeds, and a reader that just emptied the socket pays
  for a read that fails (a system call and a ``BlockingIOError``) before it
  waits.
* An unauthenticated socket (Dapper, debugpy): anyone on the machine who can
  reach it can drive the debuggee, which means running code in it.
* Sending with ``SocketStream.send_all`` and a lock, then treating any
  cancellation as harmless: ``send_all`` cancelled after a partial write leaves
  half a frame on the wire, and every later frame is read as garbage.

The design.  A ``Channel`` is one authenticated connection.  Its context
manager owns a nursery with one reader task; the reader decodes frames with
the sans-I/O ``FrameDecoder`` and
* completes our pending requests: each pending request is a slot keyed by its
  id; the reader hands the result to the waiting task directly
  (``trio.lowlevel.reschedule``), so responses may arrive in any order;
* calls the request handler for each incoming request.  If the result is
  awaitable (an ``async def`` handler), it is awaited in a task of its own
  (in a nursery inside the reader), so a slow handler never blocks the
  others.  Otherwise (a plain function) the reader answers at once, but only
  if the send lock is free and the socket takes the whole frame without
  waiting; what does not fit is written by a task, which the reader hands
  the lock to.  A handler's exception becomes an error response;
* awaits the event handler for each incoming event, in order.
The reader reads with ``os.read`` on the descriptor: after a read that
emptied the socket (it returned less than asked for) it waits with
``wait_readable`` first, otherwise it yields and reads again.
Sends go through one send lock so frames never interleave (a
``trio.Semaphore(1)``: a ``trio.Lock`` cannot be released by another task).
A frame is first written straight to the socket (``os.write`` on its
descriptor, no trip through the run loop: the profile showed those trips
dominate small round trips), and only what does not fit goes through trio's
socket, which waits for the socket to drain.  Bytes are counted: a send
cancelled before its first byte leaves the stream intact, one cancelled
part-way closes the connection.
Methods that update the pending-request bookkeeping are KI-protected, so a
Ctrl-C cannot leave a request registered but never answered.  When the
connection ends for any reason (EOF, reset, a protocol error by the peer, a
local close, the owner's scope cancelled), ``Channel._close`` runs once:
it records the reason, fails every pending request with ``ConnectionLost`` at
once, cancels the reader and the request handlers, and closes the socket.

Authentication: the connecting side must send a HANDSHAKE frame with the
session's random token first; the listener compares it in constant time and
processes no other frame before that.  Frames before authentication are
capped at 64 KiB, so an unauthenticated peer cannot make us buffer 16 MiB.
Unix sockets live in a fresh 0700 directory, which is removed on close, or
as soon as the one peer a listener is for has authenticated
(``accept(remove_path=True)``; see ``_sockets`` for what a killed process
leaves behind).

Known holes.  The pid a peer announces in its handshake is not verified
(``SO_PEERCRED`` could, on Linux).  The token travels in clear text, which is
fine for a unix socket or loopback TCP and is not fine across a network:
``host=`` other than loopback is for trusted networks only.  ``accept()``
authenticates one connection at a time, so a peer that connects and says
nothing delays the next one by up to ``handshake_timeout`` (``serve()`` runs
every handshake in its own task).  A response whose request was cancelled
is discarded; the peer's handler is not told to stop.  A round trip wakes
three tasks in turn (the peer's reader, our reader, the requester), each a
pass through a run loop, with a plain-function handler, and four with an
``async def`` one (its task too), where a bare socket echo wakes two.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from inspect import isawaitable
from typing import Any, Literal, NoReturn

import outcome
import trio

from ._errors import TransportError
from ._plain_ipc import (
    HANDSHAKE_MAX_FRAME_SIZE,
    check_hello,
    error_body,
    refusal_frame,
    welcome_frame,
)
from ._sockets import (
    RUNTIME_DIR_VARIABLE as RUNTIME_DIR_VARIABLE,
)
from ._sockets import SOCKET_NAME as SOCKET_NAME
from ._sockets import Address as Address
from ._sockets import BoundSocket as BoundSocket
from ._sockets import IPCError as IPCError
from ._sockets import bind_listening_socket as bind_listening_socket
from ._sockets import new_token as new_token
from ._wire import (
    DEFAULT_MAX_FRAME_SIZE,
    PROTOCOL_VERSION,
    Frame,
    FrameDecoder,
    FrameKind,
    LocalProtocolError,
    RemoteProtocolError,
    encode_frame,
)

__all__ = [
    "Address",
    "Channel",
    "ConnectionLost",
    "EventHandler",
    "HandshakeError",
    "IPCError",
    "Listener",
    "Peer",
    "RemoteCommandError",
    "RequestHandler",
    "UnknownMethod",
    "connect",
    "new_token",
    "open_listener",
]

logger = logging.getLogger("dapper_trio.ipc")

# Before a peer has proved it holds the token, it may not make us buffer much.
_RECEIVE_SIZE = 64 * 1024
# A large frame is read in pieces of up to this size (one allocation each).
_LARGE_RECEIVE_SIZE = 4 * 1024 * 1024
_BACKLOG = 128
# sun_path holds 108 bytes on Linux, 104 on the BSDs and macOS, NUL included.
_UNIX_PATH_MAX = 107 if sys.platform.startswith("linux") else 103
# How long we try to tell a refused peer why, after refusing it.
_REFUSAL_TIMEOUT = 1.0
# Frame kinds looked up once per frame, as module globals: a global costs a
# fifth of an attribute lookup on the enum class.
_EVENT, _REQUEST, _RESPONSE = FrameKind.EVENT, FrameKind.REQUEST, FrameKind.RESPONSE
# What a sync request handler usually returns.  Checked before
# inspect.isawaitable(), which goes through the Awaitable ABC for any value
# that is not a coroutine and costs ten times as much.
_PLAIN_RESULTS = frozenset({dict, list, str, int, float, bool, type(None)})

RequestHandler = Callable[[str, Any], Any]
"""``handler(method, params) -> result`` (a JSON value), plain or ``async def``.

A plain function is called by the reader task, inline and in order; an
``async def`` one (or any function returning an awaitable) runs in a task of
its own per request.  See ``Channel``.
"""
EventHandler = Callable[[str, Any], Awaitable[None]]
"""``async def handler(event, body) -> None``; keep it quick (see Channel)."""


# ---------------------------------------------------------------------------
# Errors


class ConnectionLost(IPCError, TransportError):
    """The connection to a peer is gone (or could not be made).

    ``peer`` names the peer, ``reason`` says why: EOF, a reset, a protocol
    error by the peer, a local close.  Every request pending when the
    connection ends fails with this error, as does every later request.
    """

    def __init__(self, peer: str, reason: str) -> None:
        super().__init__(f"connection to peer {peer!r} lost: {reason}")
        self.peer = peer
        self.reason = reason

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.peer, self.reason))


class HandshakeError(IPCError):
    """The connection was made but the handshake failed or was refused."""


class RemoteCommandError(IPCError):
    """The peer ran our request and its handler raised.

    This is not a ``TransportError``: the connection is fine, the command
    failed.  ``error_type`` is the name of the remote exception's class,
    ``message`` its ``str()``, ``remote_traceback`` its formatted traceback.
    """

    def __init__(
        self,
        error_type: str,
        message: str,
        remote_traceback: str = "",
        *,
        method: str = "",
        peer: str = "",
    ) -> None:
        where = f"peer {peer!r} failed request {method!r}: " if peer else ""
        super().__init__(f"{where}{error_type}: {message}")
        self.error_type = error_type
        self.message = message
        self.remote_traceback = remote_traceback
        self.method = method
        self.peer = peer
        if remote_traceback and hasattr(self, "add_note"):  # Python >= 3.11
            self.add_note(f"Remote traceback:\n{remote_traceback.rstrip()}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_remote_command_error, (self.__dict__.copy(),))


def _rebuild_remote_command_error(state: dict[str, Any]) -> RemoteCommandError:
    return RemoteCommandError(
        state["error_type"],
        state["message"],
        state["remote_traceback"],
        method=state["method"],
        peer=state["peer"],
    )


class UnknownMethod(IPCError, LookupError):
    """Raise this from a request handler for a method it does not know.

    The requester then gets a ``RemoteCommandError`` whose ``error_type`` is
    ``"UnknownMethod"``, as it does when the peer has no request handler.
    """


# ---------------------------------------------------------------------------
# Addresses, peers, tokens


@dataclass(frozen=True)
class Peer:
    """Who is at the other end, as it announced itself in the handshake."""

    name: str
    pid: int

    def __str__(self) -> str:
        return f"{self.name} pid {self.pid}"


# ---------------------------------------------------------------------------
# Low-level helpers on trio sockets


async def _send_all(sock: trio.socket.SocketType, data: bytes) -> None:
    """Send all of *data* (used for handshakes; channels count partial sends)."""
    view = memoryview(data)
    while view:
        view = view[await sock.send(view) :]


async def _receive_frame(
    sock: trio.socket.SocketType, decoder: FrameDecoder
) -> Frame | None:
    """Read until *decoder* yields a frame; None on EOF."""
    while (frame := decoder.next_frame()) is None:
        data = await sock.recv(_RECEIVE_SIZE)
        if not data:
            return None
        decoder.feed(data)
    return frame


def _describe_os_error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


# ---------------------------------------------------------------------------
# Channel


class _Pending:
    """One request waiting for its response."""

    __slots__ = ("method", "result", "task")

    def __init__(self, method: str) -> None:
        self.method = method
        # Set by the reader if the response (or the connection's end) comes
        # before the requesting task has started waiting.
        self.result: outcome.Outcome[Any] | None = None
        self.task: trio.lowlevel.Task | None = None


class Channel:
    """One authenticated connection: requests both ways, events both ways.

    Made by ``connect()``, ``Listener.accept()`` and ``Listener.serve()``; it
    is open for as long as their context (or ``on_channel`` call) lasts.

    Incoming requests go to the request handler.  An ``async def`` handler
    (or a plain function that returns an awaitable) runs in a task of its own
    per request, so a slow one never blocks the others.  A plain function is
    called *by the reader task*, in order with the other frames, and its
    result is answered at once, which saves starting a task: it should be
    quick, like an event handler.  Either way an exception from the handler
    becomes an error response (``RemoteCommandError`` for the requester).

    Incoming events are passed to the event handler one at a time, in order,
    *by the reader task*: while the handler runs, nothing else is read from
    this connection (responses included), so an event handler should be quick
    and hand long work to a task of its own.  An exception from the event
    handler is logged and the connection stays up.
    """

    def __init__(
        self,
        stream: trio.SocketStream,
        *,
        peer: Peer,
        decoder: FrameDecoder,
        max_frame_size: int,
        request_handler: RequestHandler | None,
        event_handler: EventHandler | None,
    ) -> None:
        self._stream = stream
        self._sock = stream.socket
        # The descriptor, for os.write() and wait_readable() without a call
        # to fileno() each time.  Only _close() closes the socket, and it sets
        # _close_reason first; since a closed number may be reused at once,
        # _fd is used only where _close_reason was seen None with no await
        # since.  (os.read(), which follows a wait, asks sock.fileno(): -1
        # once closed.)
        self._fd = stream.socket.fileno()
        self._peer = peer
        self._label = str(peer)
        self._decoder = decoder
        self._max_frame_size = max_frame_size
        self._request_handler = request_handler
        self._event_handler = event_handler
        self._send_lock = trio.Semaphore(1, max_value=1)  # see _send
        self._next_id = 1
        self._pending: dict[int, _Pending] = {}
        self._reader_scope = trio.CancelScope()
        self._owner_scopes: list[trio.CancelScope] = []
        self._close_reason: str | None = None
        self._close_cause: BaseException | None = None
        self._closed_event = trio.Event()

    def __repr__(self) -> str:
        state = "open" if self._close_reason is None else "closed"
        return f"<Channel to {self._label!r} ({state})>"

    @property
    def peer(self) -> Peer:
        """The peer's name and pid, from its handshake."""
        return self._peer

    @property
    def closed(self) -> bool:
        """True once the connection has ended, for whatever reason."""
        return self._close_reason is not None

    @property
    def close_reason(self) -> str | None:
        """Why the connection ended (None while it is open)."""
        return self._close_reason

    @trio.lowlevel.enable_ki_protection
    async def request(self, method: str, params: Any = None) -> Any:
        """Send a request and wait for its response; return the result.

        Raises ``RemoteCommandError`` if the peer's handler raised,
        ``ConnectionLost`` if the connection ends before the response comes
        (at once, for every pending request) or had already ended, and
        ``LocalProtocolError`` if *params* cannot be sent (nothing is sent).

        Cancellation: the wait is abandoned and a late response is discarded;
        the peer's handler is not told.  If the cancellation lands part-way
        through writing a large request, the connection is closed, since the
        stream cannot be resynchronised.
        """
        if self._close_reason is not None:
            raise self._lost()
        await trio.lowlevel.checkpoint_if_cancelled()
        request_id = self._next_id
        self._next_id = request_id + 1
        data = encode_frame(
            _REQUEST,
            {"id": request_id, "method": method, "params": params},
            max_frame_size=self._max_frame_size,
        )
        slot = _Pending(method)
        # Registered before sending: the response may arrive while we send.
        self._pending[request_id] = slot
        try:
            await self._send(data, schedule=False)
        except BaseException:
            self._pending.pop(request_id, None)
            raise
        if slot.result is not None:
            return slot.result.unwrap()
        slot.task = trio.lowlevel.current_task()

        def abort(_: trio.lowlevel.RaiseCancelT) -> trio.lowlevel.Abort:
            # The response, if it ever comes, finds no slot and is dropped.
            self._pending.pop(request_id, None)
            return trio.lowlevel.Abort.SUCCEEDED

        return await trio.lowlevel.wait_task_rescheduled(abort)

    async def send_event(self, event: str, body: Any = None) -> None:
        """Send a one-way event; return once it is written to the socket.

        Raises ``ConnectionLost`` if the connection has ended and
        ``LocalProtocolError`` if *body* cannot be sent (nothing is sent).

        Cancellation: if cancelled before any byte is written, nothing is
        sent; if cancelled part-way through a large frame, the connection is
        closed, since the stream cannot be resynchronised.
        """
        if self._close_reason is not None:
            raise self._lost()
        data = encode_frame(
            _EVENT,
            {"event": event, "body": body},
            max_frame_size=self._max_frame_size,
        )
        await trio.lowlevel.checkpoint_if_cancelled()
        await self._send(data, schedule=True)

    async def send_events(self, events: Sequence[tuple[str, Any]]) -> None:
        """Send several one-way events, in order, with one write if it fits.

        As ``send_event`` for each; an event whose body cannot be sent
        raises ``LocalProtocolError`` before anything is sent.  Cancellation
        as ``send_event``'s.
        """
        if self._close_reason is not None:
            raise self._lost()
        data = b"".join(
            encode_frame(
                _EVENT,
                {"event": event, "body": body},
                max_frame_size=self._max_frame_size,
            )
            for event, body in events
        )
        if not data:
            return
        await trio.lowlevel.checkpoint_if_cancelled()
        await self._send(data, schedule=True)

    async def aclose(self) -> None:
        """Close the connection; pending requests fail with ``ConnectionLost``.

        Idempotent.  Cancellation: the connection is closed anyway (closing
        does not block); the checkpoint at the end may raise ``Cancelled``.
        """
        self._close("closed locally")
        await trio.lowlevel.checkpoint()

    async def wait_closed(self) -> None:
        """Wait until the connection has ended (see ``close_reason``).

        Cancellation: the wait is abandoned; the connection is not affected.
        """
        await self._closed_event.wait()

    # -- internals ---------------------------------------------------------

    def _lost(self) -> ConnectionLost:
        assert self._close_reason is not None
        error = ConnectionLost(self._label, self._close_reason)
        error.__cause__ = self._close_cause
        return error

    @trio.lowlevel.enable_ki_protection
    def _close(self, reason: str, cause: BaseException | None = None) -> None:
        """End the connection (once): fail pending requests, stop the reader."""
        if self._close_reason is not None:
            return
        self._close_reason = reason
        self._close_cause = cause
        pending = list(self._pending.values())
        self._pending.clear()
        for slot in pending:
            self._complete(slot, outcome.Error(self._lost()))
        self._reader_scope.cancel()
        for scope in self._owner_scopes:
            scope.cancel()
        self._sock.close()
        self._closed_event.set()

    def _cancel_on_close(self, scope: trio.CancelScope) -> None:
        if self._close_reason is not None:
            scope.cancel()
        else:
            self._owner_scopes.append(scope)

    @staticmethod
    @trio.lowlevel.enable_ki_protection
    def _complete(slot: _Pending, result: outcome.Outcome[Any]) -> None:
        if slot.task is None:
            slot.result = result
        else:
            trio.lowlevel.reschedule(slot.task, result)

    # -- sending -----------------------------------------------------------
    #
    # The send lock is held from a frame's first byte to its last.  It is a
    # Semaphore(1) rather than a Lock because the reader may start a frame
    # and hand the rest, with the lock, to a task (see _answer); a trio.Lock
    # may only be released by the task that acquired it.

    @trio.lowlevel.enable_ki_protection
    async def _send(self, data: bytes, *, schedule: bool) -> None:
        """Write one whole frame; frames of concurrent senders never interleave.

        The frame is first written straight to the socket, without yielding;
        only what does not fit at once goes through trio's socket, which waits
        for the socket to drain.  With *schedule*, a send that did not have to
        wait ends with a schedule point, so that the caller is a checkpoint;
        ``request()`` (which blocks right after) and responses (sent by a task
        about to exit) skip it, which saves a trip through the run loop.
        """
        lock = self._send_lock
        try:
            lock.acquire_nowait()  # the common case costs no extra checkpoint
        except trio.WouldBlock:
            await lock.acquire()
            schedule = False  # acquire() was the checkpoint
        try:
            sent = self._write_nowait(data)
        except BaseException:
            lock.release()
            raise
        if sent < len(data):
            await self._write_rest(data, sent)  # releases the lock
            return
        lock.release()
        if schedule:
            await trio.lowlevel.cancel_shielded_checkpoint()

    def _write_nowait(self, data: bytes) -> int:
        """Write what the socket takes now (the send lock held); return the count.

        Raises ``ConnectionLost`` if the connection has ended or ends now.
        """
        if self._close_reason is not None:
            raise self._lost()
        try:
            return os.write(self._fd, data)
        except BlockingIOError:
            return 0
        except OSError as exc:
            self._close(f"sending failed: {_describe_os_error(exc)}", exc)
            raise self._lost() from exc

    @trio.lowlevel.enable_ki_protection
    async def _write_rest(self, data: bytes, sent: int) -> None:
        """Write *data* from byte *sent* on, waiting for the socket to drain.

        The caller holds the send lock; this releases it, however it ends.
        Cancelled part-way through a frame, it closes the connection.
        """
        total = len(data)
        try:
            view = memoryview(data)
            while sent < total:
                sent += await self._sock.send(view[sent:])
        except trio.Cancelled:
            if sent:
                self._close(
                    f"a send was cancelled after {sent} of {total} bytes of a frame;"
                    " the stream cannot be resynchronised"
                )
            raise
        except (OSError, trio.ClosedResourceError) as exc:
            self._close(f"sending failed: {_describe_os_error(exc)}", exc)
            raise self._lost() from exc
        finally:
            self._send_lock.release()

    # -- receiving ---------------------------------------------------------

    async def _run_reader(self) -> None:
        sock = self._sock
        # Valid at every wait: we get there after a read (the socket was open)
        # and the checks after each frame, or after the check before the loop.
        fd = self._fd
        decoder = self._decoder
        next_frame = decoder.next_frame  # bound once: saves a lookup per frame
        # Whether the last read emptied the socket (it returned less than
        # asked for).  Then the next read waits for the socket to be readable
        # first instead of trying a read that would fail, which would cost a
        # system call and a BlockingIOError.
        drained = True
        with self._reader_scope:
            async with trio.open_nursery() as handlers:
                reason = "closed locally"
                cause: BaseException | None = None
                if self.closed:  # (not _close_reason: mypy would narrow it)
                    return  # closed by another task before we started
                try:
                    while True:
                        while (frame := next_frame()) is not None:
                            if frame.kind is _EVENT:
                                # Awaited here: events are handled in order.
                                await self._on_event(frame.payload)
                            else:
                                self._dispatch(frame, handlers)
                            if self._close_reason is not None:
                                # Closed by a handler or by a failed answer:
                                # what is still buffered has nobody to go to.
                                return
                        if drained:
                            await trio.lowlevel.wait_readable(fd)
                        else:
                            # More may be waiting; yield first, as trio's
                            # recv() does, so that a peer that never stops
                            # sending cannot starve the other tasks.
                            await trio.lowlevel.checkpoint()
                        needed = decoder.bytes_needed
                        size = (
                            _RECEIVE_SIZE
                            if needed <= _RECEIVE_SIZE
                            else min(needed, _LARGE_RECEIVE_SIZE)
                        )
                        try:
                            # Not sock.recv(): after a read that succeeds at
                            # once it yields, one more pass through the run
                            # loop per read.  Not fd: the socket may have been
                            # closed since we were woken, and fileno() is then
                            # -1 (EBADF), where fd could already be reused.
                            data = os.read(sock.fileno(), size)
                        except BlockingIOError:
                            drained = True  # nothing to read after all
                            continue
                        if not data:
                            reason = "the peer closed the connection"
                            if decoder.buffered_bytes:
                                reason += (
                                    " in the middle of a frame"
                                    f" ({decoder.buffered_bytes} bytes of it received)"
                                )
                            break
                        drained = len(data) < size
                        decoder.feed(data)
                except RemoteProtocolError as exc:
                    logger.warning("closing the connection: %s", exc)
                    reason, cause = str(exc), exc
                except trio.ClosedResourceError:
                    pass  # closed by _close from another task
                except OSError as exc:
                    reason, cause = f"receive failed: {_describe_os_error(exc)}", exc
                    if decoder.buffered_bytes:
                        reason += (
                            f" in the middle of a frame ({decoder.buffered_bytes}"
                            " bytes of it received)"
                        )
                if self._close_reason is None:
                    logger.debug("connection to %r ended: %s", self._label, reason)
                self._close(reason, cause)

    def _dispatch(self, frame: Frame, handlers: trio.Nursery) -> None:
        """Handle a RESPONSE or a REQUEST frame (the reader awaits EVENTs itself)."""
        message = frame.payload
        kind = frame.kind
        if type(message) is not dict:
            raise RemoteProtocolError(
                f"{kind.name} payload is a JSON {type(message).__name__},"
                " not an object",
                peer=self._label,
            )
        if kind is _RESPONSE:
            self._on_response(message)
        elif kind is _REQUEST:
            request_id = message.get("id")
            method = message.get("method")
            if type(request_id) is not int or type(method) is not str:
                raise RemoteProtocolError(
                    "REQUEST needs an integer 'id' and a string 'method',"
                    f" got id={request_id!r} method={method!r}",
                    peer=self._label,
                )
            self._on_request(request_id, method, message.get("params"), handlers)
        else:
            raise RemoteProtocolError(
                f"unexpected {kind.name} frame after the handshake", peer=self._label
            )

    @trio.lowlevel.enable_ki_protection
    def _on_response(self, message: dict[str, Any]) -> None:
        request_id = message.get("id")
        if type(request_id) is not int:
            raise RemoteProtocolError(
                f"RESPONSE needs an integer 'id', got {request_id!r}",
                peer=self._label,
            )
        slot = self._pending.pop(request_id, None)
        if "result" in message:
            result: outcome.Outcome[Any] = outcome.Value(message["result"])
        else:
            error = message.get("error")
            if type(error) is not dict or type(error.get("type")) is not str:
                raise RemoteProtocolError(
                    "RESPONSE needs a 'result' or an 'error' object with a"
                    f" string 'type', got {message!r:.200}",
                    peer=self._label,
                )
            result = outcome.Error(
                RemoteCommandError(
                    error["type"],
                    str(error.get("message", "")),
                    str(error.get("traceback", "")),
                    method=slot.method if slot is not None else "",
                    peer=self._label,
                )
            )
        if slot is None:
            # Its request was cancelled (or the id is bogus): nobody waits.
            logger.debug(
                "discarding a response from %r to request %d: nobody waits for it",
                self._label,
                request_id,
            )
        elif slot.task is None:  # _complete(), inlined: a call per response
            slot.result = result
        else:
            trio.lowlevel.reschedule(slot.task, result)

    async def _on_event(self, message: Any) -> None:
        if type(message) is not dict:
            raise RemoteProtocolError(
                f"EVENT payload is a JSON {type(message).__name__}, not an object",
                peer=self._label,
            )
        event = message.get("event")
        if type(event) is not str:
            raise RemoteProtocolError(
                f"EVENT needs a string 'event', got {event!r}", peer=self._label
            )
        handler = self._event_handler
        if handler is None:
            logger.debug("dropping event %r from %r: no handler", event, self._label)
            return
        try:
            await handler(event, message.get("body"))
        except Exception:
            logger.exception(
                "the handler for event %r from %r raised; the event is dropped",
                event,
                self._label,
            )

    # -- answering requests ------------------------------------------------

    def _on_request(
        self, request_id: int, method: str, params: Any, handlers: trio.Nursery
    ) -> None:
        """Run a request's handler: a sync one here, an async one in a new task.

        A plain function is called here, in the reader, so its request is
        answered without starting a task (and in order with other frames).
        If what it returns is awaitable (an ``async def`` handler), awaiting
        it and answering are left to a task, so that a slow request never
        blocks the reader.
        """
        handler = self._request_handler
        if handler is None:
            self._answer(
                request_id,
                method,
                {
                    "id": request_id,
                    "error": {
                        "type": UnknownMethod.__name__,
                        "message": (
                            f"{method!r}: pid {os.getpid()} has no request handler"
                        ),
                        "traceback": "",
                    },
                },
                handlers,
            )
            return
        try:
            result = handler(method, params)
        except Exception as exc:
            self._answer(
                request_id, method, self._failure(request_id, method, exc), handlers
            )
            return
        if type(result) not in _PLAIN_RESULTS and isawaitable(result):
            handlers.start_soon(
                self._run_request,
                request_id,
                method,
                result,
                name=f"dapper_trio.ipc request {method!r} from {self._label}",
            )
            return
        self._answer(request_id, method, {"id": request_id, "result": result}, handlers)

    async def _run_request(
        self, request_id: int, method: str, awaitable: Awaitable[Any]
    ) -> None:
        """Await an async handler's result and send the response (its own task)."""
        response: dict[str, Any]
        try:
            result = await awaitable
        except Exception as exc:
            response = self._failure(request_id, method, exc)
        else:
            response = {"id": request_id, "result": result}
        try:
            await self._send(
                self._encode_response(request_id, response), schedule=False
            )
        except ConnectionLost:
            # The requester is gone; there is nobody to answer.
            logger.debug(
                "could not answer %r from %r: connection lost", method, self._label
            )

    @trio.lowlevel.enable_ki_protection
    def _answer(
        self,
        request_id: int,
        method: str,
        response: dict[str, Any],
        handlers: trio.Nursery,
    ) -> None:
        """Send a response from the reader, which must never wait to send.

        If both sides' readers waited for their socket to drain while each
        waited for the other to read, neither would read again: a deadlock.
        So the frame is written here only if the send lock is free and the
        socket takes the whole frame at once; otherwise a task writes it (or
        the rest of it, holding the lock the reader took).
        """
        data = self._encode_response(request_id, response)
        lock = self._send_lock
        try:
            lock.acquire_nowait()
        except trio.WouldBlock:
            handlers.start_soon(
                self._send_answer,
                method,
                data,
                name=f"dapper_trio.ipc response to {method!r} for {self._label}",
            )
            return
        try:
            sent = self._write_nowait(data)
        except ConnectionLost:
            lock.release()
            self._log_unanswered(method)
            return
        if sent == len(data):
            lock.release()
            return
        handlers.start_soon(
            self._finish_answer,
            method,
            data,
            sent,
            name=f"dapper_trio.ipc response to {method!r} for {self._label}",
        )

    async def _send_answer(self, method: str, data: bytes) -> None:
        try:
            await self._send(data, schedule=False)
        except ConnectionLost:
            self._log_unanswered(method)

    async def _finish_answer(self, method: str, data: bytes, sent: int) -> None:
        # Started by _answer holding the send lock; _write_rest releases it.
        try:
            await self._write_rest(data, sent)
        except ConnectionLost:
            self._log_unanswered(method)

    def _log_unanswered(self, method: str) -> None:
        # The requester is gone; there is nobody to answer.
        logger.debug(
            "could not answer %r from %r: connection lost", method, self._label
        )

    def _failure(self, request_id: int, method: str, exc: Exception) -> dict[str, Any]:
        logger.debug("request %r from %r failed", method, self._label, exc_info=exc)
        return {"id": request_id, "error": error_body(exc)}

    def _encode_response(self, request_id: int, response: dict[str, Any]) -> bytes:
        try:
            return encode_frame(
                FrameKind.RESPONSE, response, max_frame_size=self._max_frame_size
            )
        except LocalProtocolError as exc:
            return encode_frame(
                FrameKind.RESPONSE,
                {"id": request_id, "error": error_body(exc)},
                max_frame_size=self._max_frame_size,
            )


@asynccontextmanager
async def _open_channel(
    stream: trio.SocketStream,
    *,
    peer: Peer,
    decoder: FrameDecoder,
    max_frame_size: int,
    request_handler: RequestHandler | None,
    event_handler: EventHandler | None,
) -> AsyncIterator[Channel]:
    """Run a channel's reader for the duration of the block; close it after."""
    channel = Channel(
        stream,
        peer=peer,
        decoder=decoder,
        max_frame_size=max_frame_size,
        request_handler=request_handler,
        event_handler=event_handler,
    )
    body_error: BaseException | None = None
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                channel._run_reader, name=f"dapper_trio.ipc reader for {peer}"
            )
            try:
                yield channel
            except BaseException as exc:
                # Re-raised below, outside the nursery, so that the caller
                # sees its own exception rather than an ExceptionGroup.
                body_error = exc
            finally:
                channel._close("closed locally")
    finally:
        channel._close("closed locally")
    if body_error is not None:
        raise body_error


# ---------------------------------------------------------------------------
# Client


async def _open_stream(address: Address) -> trio.SocketStream:
    try:
        if address.transport == "unix":
            return await trio.open_unix_socket(address.path)
        return await trio.open_tcp_stream(address.host, address.port)
    except OSError as exc:
        raise ConnectionLost(
            f"listener at {address}", f"could not connect: {_describe_os_error(exc)}"
        ) from exc


async def _client_handshake(
    stream: trio.SocketStream,
    address: Address,
    *,
    token: str,
    name: str,
    handshake_timeout: float,
) -> tuple[Peer, FrameDecoder]:
    decoder = FrameDecoder(
        peer=f"listener at {address}", max_frame_size=HANDSHAKE_MAX_FRAME_SIZE
    )
    hello = encode_frame(
        FrameKind.HANDSHAKE,
        {
            "protocol": PROTOCOL_VERSION,
            "token": token,
            "name": name,
            "pid": os.getpid(),
        },
    )
    frame: Frame | None = None
    with trio.move_on_after(handshake_timeout) as scope:
        try:
            await _send_all(stream.socket, hello)
            frame = await _receive_frame(stream.socket, decoder)
        except RemoteProtocolError as exc:
            raise HandshakeError(f"handshake with {address} failed: {exc}") from exc
        except OSError as exc:
            raise HandshakeError(
                f"handshake with {address} failed: {_describe_os_error(exc)}"
            ) from exc
    if scope.cancelled_caught:
        raise HandshakeError(
            f"no handshake reply from {address} within {handshake_timeout:g} s"
        )
    if frame is None:
        raise HandshakeError(f"{address} closed the connection during the handshake")
    reply = frame.payload
    if frame.kind is not FrameKind.HANDSHAKE or type(reply) is not dict:
        raise HandshakeError(
            f"{address} answered the handshake with a {frame.kind.name} frame"
        )
    if reply.get("ok") is not True:
        raise HandshakeError(
            f"{address} refused the connection: {reply.get('error', 'no reason given')}"
        )
    peer_name, peer_pid = reply.get("name"), reply.get("pid")
    if type(peer_name) is not str or type(peer_pid) is not int:
        raise HandshakeError(f"{address} sent a malformed handshake reply: {reply!r}")
    peer = Peer(peer_name, peer_pid)
    decoder.peer = str(peer)
    return peer, decoder


@asynccontextmanager
async def connect(
    address: Address,
    *,
    token: str,
    name: str,
    request_handler: RequestHandler | None = None,
    event_handler: EventHandler | None = None,
    max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
    handshake_timeout: float = 5.0,
) -> AsyncIterator[Channel]:
    """Connect to a listener, authenticate with *token*, and yield a ``Channel``.

    *name* is how we introduce ourselves (the listener logs it and its channel's
    ``peer.name`` is it).  Requests from the listener go to *request_handler*,
    events to *event_handler*.  The connection is closed when the block ends,
    however it ends; pending requests then fail with ``ConnectionLost``.  The
    block is not cancelled if the peer goes away: requests raise, and
    ``channel.wait_closed()`` returns.

    Raises ``ConnectionLost`` if the address cannot be reached and
    ``HandshakeError`` if the listener refuses us (with its reason) or does
    not answer within *handshake_timeout* seconds.

    Cancellation: while connecting, the attempt is abandoned and the socket
    closed; inside the block, the channel is closed on the way out.
    """
    stream = await _open_stream(address)
    try:
        peer, decoder = await _client_handshake(
            stream, address, token=token, name=name, handshake_timeout=handshake_timeout
        )
    except BaseException:
        stream.socket.close()
        raise
    decoder.max_frame_size = max_frame_size
    async with _open_channel(
        stream,
        peer=peer,
        decoder=decoder,
        max_frame_size=max_frame_size,
        request_handler=request_handler,
        event_handler=event_handler,
    ) as channel:
        yield channel


# ---------------------------------------------------------------------------
# Listener


class Listener:
    """A listening socket that only lets in peers holding the session token.

    Made by ``open_listener()``; use ``serve()`` to accept connections for as
    long as it runs, or ``accept()`` for exactly one.  Do not run both at once.
    """

    def __init__(
        self,
        socket_listener: trio.SocketListener,
        address: Address,
        *,
        token: str,
        name: str,
        max_frame_size: int,
        handshake_timeout: float,
        bound: BoundSocket | None = None,
    ) -> None:
        self._socket_listener = socket_listener
        self._address = address
        self._bound = bound
        self._token = token.encode()
        self._name = name
        self._max_frame_size = max_frame_size
        self._handshake_timeout = handshake_timeout
        self._welcome = welcome_frame(name)

    def __repr__(self) -> str:
        return f"<Listener {self._name!r} on {self._address}>"

    @property
    def address(self) -> Address:
        """Where peers connect; ``str()`` of it can go in an environment variable."""
        return self._address

    @property
    def name(self) -> str:
        """The name this side announces in handshakes."""
        return self._name

    def remove_path(self) -> None:
        """Remove a unix socket's file and its directory now; keep listening.

        No new peer can connect after this (over unix); connected peers, and
        connections waiting to be accepted, are not affected.  A listener for
        one peer calls it once that peer is in (``accept(remove_path=True)``):
        a process killed with SIGKILL then leaves nothing behind.
        Idempotent; nothing to do for TCP.
        """
        if self._bound is not None:
            self._bound.remove_path()

    async def serve(
        self,
        on_channel: Callable[[Channel], Awaitable[object]],
        *,
        request_handler: RequestHandler | None = None,
        event_handler: EventHandler | None = None,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> NoReturn:
        """Accept connections forever; run ``await on_channel(channel)`` for each.

        Each connection is authenticated in its own task (a peer that fails is
        logged and closed, and serving goes on); then ``on_channel`` runs in
        that task with the channel's reader running, and the channel is
        closed when it returns.  If the connection ends first, ``on_channel``
        is cancelled, and a ``ConnectionLost`` it raises for its own channel is
        logged, not propagated.  Any other exception from ``on_channel``
        propagates and ends ``serve()`` (with every connection it holds).

        Use ``await nursery.start(listener.serve, on_channel)`` to know when it
        is accepting.  Cancellation: stops accepting and closes every
        connection it accepted.
        """
        async with trio.open_nursery() as nursery:
            task_status.started()
            while True:
                stream = await self._socket_listener.accept()
                nursery.start_soon(
                    self._serve_connection,
                    stream,
                    on_channel,
                    request_handler,
                    event_handler,
                    name=f"dapper_trio.ipc connection on {self._address}",
                )
        raise AssertionError("unreachable")  # pragma: no cover

    @asynccontextmanager
    async def accept(
        self,
        *,
        request_handler: RequestHandler | None = None,
        event_handler: EventHandler | None = None,
        remove_path: bool = False,
    ) -> AsyncIterator[Channel]:
        """Wait for one peer that authenticates; yield its ``Channel``.

        Peers that fail the handshake are logged and closed, and waiting goes
        on.  The channel is closed when the block ends.  With *remove_path*,
        the peer is the only one this listener is for: the socket file and
        its directory are removed (``remove_path()``) as soon as it has
        authenticated, before the block starts.

        Cancellation: stops waiting (a connection being authenticated is
        closed); inside the block, the channel is closed on the way out.
        """
        while True:
            stream = await self._socket_listener.accept()
            authenticated = await self._authenticate(stream)
            if authenticated is not None:
                break
        if remove_path:
            self.remove_path()
        peer, decoder = authenticated
        async with _open_channel(
            stream,
            peer=peer,
            decoder=decoder,
            max_frame_size=self._max_frame_size,
            request_handler=request_handler,
            event_handler=event_handler,
        ) as channel:
            yield channel

    async def _serve_connection(
        self,
        stream: trio.SocketStream,
        on_channel: Callable[[Channel], Awaitable[object]],
        request_handler: RequestHandler | None,
        event_handler: EventHandler | None,
    ) -> None:
        authenticated = await self._authenticate(stream)
        if authenticated is None:
            return
        peer, decoder = authenticated
        async with _open_channel(
            stream,
            peer=peer,
            decoder=decoder,
            max_frame_size=self._max_frame_size,
            request_handler=request_handler,
            event_handler=event_handler,
        ) as channel:
            with trio.CancelScope() as scope:
                channel._cancel_on_close(scope)
                try:
                    await on_channel(channel)
                except ConnectionLost as exc:
                    if not channel.closed:
                        raise
                    logger.info("connection handler for %r ended: %s", str(peer), exc)

    def _describe_unauthenticated(self, stream: trio.SocketStream) -> str:
        if self._address.transport == "tcp":
            try:
                host, port = stream.socket.getpeername()[:2]
            except OSError:
                pass
            else:
                return f"unauthenticated connection from tcp:{host}:{port}"
        return f"unauthenticated connection on {self._address}"

    async def _authenticate(
        self, stream: trio.SocketStream
    ) -> tuple[Peer, FrameDecoder] | None:
        """Run the server side of the handshake; None if the peer was refused.

        A refused peer's socket is closed here.  Never raises, except
        ``Cancelled``.
        """
        label = self._describe_unauthenticated(stream)
        decoder = FrameDecoder(peer=label, max_frame_size=HANDSHAKE_MAX_FRAME_SIZE)
        sock = stream.socket
        accepted = False
        try:
            reason = f"no handshake within {self._handshake_timeout:g} s"
            with trio.move_on_after(self._handshake_timeout):
                try:
                    frame = await _receive_frame(sock, decoder)
                except RemoteProtocolError as exc:
                    reason = exc.reason
                except OSError as exc:
                    reason = f"receive failed: {_describe_os_error(exc)}"
                else:
                    if frame is None:
                        reason = "closed the connection before the handshake"
                    else:
                        peer, reason = self._check_hello(frame)
                        if peer is not None:
                            await _send_all(sock, self._welcome)
                            decoder.peer = str(peer)
                            decoder.max_frame_size = self._max_frame_size
                            logger.info("accepted %r on %s", str(peer), self._address)
                            accepted = True
                            return peer, decoder
            logger.warning("refused %s: %s", label, reason)
            # Tell the peer why, as best we can: it may not be listening.
            with trio.move_on_after(_REFUSAL_TIMEOUT):
                await _send_all(sock, refusal_frame(reason))
        except OSError as exc:
            logger.warning("refused %s: %s", label, _describe_os_error(exc))
        finally:
            if not accepted:
                sock.close()
        return None

    def _check_hello(self, frame: Frame) -> tuple[Peer | None, str]:
        """Validate a first frame: (peer, "") if it authenticates, else (None, why)."""
        who, reason = check_hello(frame, self._token)
        return (None if who is None else Peer(*who)), reason


@asynccontextmanager
async def open_listener(
    *,
    token: str,
    transport: Literal["unix", "tcp"] = "unix",
    name: str = "listener",
    host: str = "127.0.0.1",
    port: int = 0,
    runtime_dir: str | None = None,
    max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
    handshake_timeout: float = 5.0,
    bound: BoundSocket | None = None,
) -> AsyncIterator[Listener]:
    """Listen for peers holding *token*; yield a ``Listener``.

    ``transport="unix"`` (the default) makes a socket ``ipc.sock`` in a fresh
    private directory (mode 0700, from ``tempfile.mkdtemp``) under
    *runtime_dir*, else ``$DAPPER_TRIO_RUNTIME_DIR``, else ``$XDG_RUNTIME_DIR``
    if it is a writable directory, else ``tempfile.gettempdir()``.
    ``transport="tcp"`` binds *host* (loopback unless you name another) and
    *port* (0: any free port; ``listener.address`` tells which).

    *bound* is a socket already listening (``bind_listening_socket()``, made
    before trio runs so that a child can be started early); the listener takes
    it over, and the transport options are then ignored.

    On leaving the block, however it is left, the listening socket is closed
    and the socket file and its directory are removed (if
    ``Listener.remove_path()`` did not remove them already).  While the file
    exists, SIGTERM or SIGHUP with their default action remove it before the
    process dies (see ``_sockets``).

    Cancellation: while opening, nothing is left behind; inside the block,
    the cleanup above runs on the way out.
    """
    if type(token) is not str or not token:
        raise ValueError("token must be a non-empty string (see new_token())")
    if bound is None:
        bound = bind_listening_socket(
            transport=transport, host=host, port=port, runtime_dir=runtime_dir
        )
    try:
        sock = trio.socket.from_stdlib_socket(bound.sock)
        with sock:
            yield Listener(
                trio.SocketListener(sock),
                bound.address,
                token=token,
                name=name,
                max_frame_size=max_frame_size,
                handshake_timeout=handshake_timeout,
                bound=bound,
            )
    finally:
        bound.close()

"""The program's connection to a DAP adapter: requests in, events out.

Theory of operation
===================

The problem.  The program's trio loop freezes at every stop, but the adapter
must be answered meanwhile (``threads``, ``pause``, the requests the stopped
thread serves), and events must reach it in order from whichever thread
posts them.  Three ways of being connected need the same answers: a program
``dapper-trio dap`` launched in a child process (it connects to the
adapter), a program that called ``dapper_trio.listen()`` or was started with
``dapper-trio run --listen`` (the adapter connects to it: ``attach``), and a
program in the adapter's own process (``inProcess``: no connection at all).

Things that don't work.
* Serving requests in the program's loop: it is frozen at a stop.
* One thread per request: requests must be answered concurrently (a slow
  ``evaluate`` never holds ``threads`` up) but events in order.
* Killing the program when an *attached* adapter goes away: the program was
  running before anyone attached and should go on after they leave.

The design.  ``DapEndpoint`` answers the "dap" requests in one loop that
is not the program's, and delivers events to a *sink* in that loop
(``post_event`` may be called from any thread; the loop's
``run_sync_soon`` keeps them in order).  The loop is an *agent thread*'s
with a connection to the adapter, or, in-process, the adapter's own trio
loop (``_dap_backends``).  A launched debuggee's agent (``ConnectingAgent``)
is a plain ``poll`` loop on blocking sockets, with no trio: a program that
does not use trio never imports it (``_trio_import``), as under ``dapper-trio
run``.  An attachable program's (``_dap_attach.ListeningAgent``) is a trio
loop, as is the adapter's: both answer with ``handle``.  Pausing
sends SIGINT to the program's main thread when the session owns SIGINT (see
``_session``), and otherwise asks the program's trio loop to pause
(``run_sync_soon``), which works as soon as the loop runs: between task
steps, or idle in epoll.

A launched program's ``sys.stdout`` and ``sys.stderr`` are
``ForwardedStream`` objects: a write queues the text with ``post_output``
(waiting only while more than ``OUTPUT_PENDING_CHARS`` of it wait to be
sent, as a write to a full pipe would), and the agent sends it as an
``output`` event in its place among the other events -- two pipes read side
by side would not keep the order of stdout and stderr.  Everything posted
between two deliveries -- events, output, the results of commands
(``post_call``) -- is one batch, in the order posted: one ``run_sync_soon``,
and the agent sends what is queued in one write.  ``thread`` events are not
urgent: they wait in the batch for the next urgent post, for the program's
loop to go idle or for its end (``flush``), because waking the agent thread
while the program runs makes the two fight for the GIL, at the program's
expense.  The agent sends what is queued before it closes the connection at
the end of the program, and from then on (or once the adapter is lost) the
streams write to the real file descriptors, whose pipes the adapter still
reads.

A launched program quits when its adapter goes away.  An attached one
forgets the client's breakpoints and exception filters, goes on if it was
stopped, and waits for the next client: one at a time, each proving it
holds the listener's token.

A child the program forks writes to the real file descriptors (the
adapter forwards their pipes): no agent thread runs there.  At its end, a
launched program waits while what it has not yet sent gets on its way (a
slow client holds it back, as a full pipe would), up to
``FINISH_STALL_TIMEOUT`` without progress.

Known holes.  Output queued when the program calls ``os._exit`` or dies of
a signal is lost.  Without SIGINT (an attached
program, an in-process one), a pause waits until the running task reaches a
checkpoint, and a program outside trio cannot be paused at all.
"""

from __future__ import annotations

import codecs
import contextlib
import functools
import io
import json
import os
import queue
import select
import signal
import socket
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, NoReturn, Protocol, TextIO, cast

from . import _session
from ._dap_debuggee import (
    CONFIGURATION,
    RESUMING,
    Command,
    DapSession,
    Error,
    NotStopped,
    Outcome,
    Value,
)
from ._dap_functions import SearchPath, module_file
from ._dap_inspect import CommandError
from ._launcher import LaunchError, RunOptions, Target, resolve, run_program
from ._plain_ipc import (
    CONFIGURE_REQUEST,
    PlainConnection,
    answer_to_configure,
    error_body,
)
from ._sockets import Address
from ._targets import ADAPTER_ENV
from ._wire import Frame, FrameKind, ProtocolError, encode_frame

if TYPE_CHECKING:
    import trio


#: How long a launched debuggee waits for its configuration from the adapter.
CONFIG_TIMEOUT = 60.0
#: How long, at the end, a launched debuggee waits for the adapter to have
#: read what it sent and closed the connection.
FINISH_TIMEOUT = 5.0
#: How long, at the end, it waits for the adapter to read more of what is
#: still unsent (a client that reads slowly holds the adapter back).
FINISH_STALL_TIMEOUT = 60.0
#: How long a pause waits for a stop left by a previous adapter to end.
LEFT_STOP_WAIT = 5.0
#: A pause request not served within this many seconds may be sent again.
PAUSE_RETRY_SECONDS = 1.5

#: How much program output one ``output`` event carries at most (characters).
OUTPUT_EVENT_CHARS = 64 * 1024
#: How much program output may wait for the agent to take it (characters):
#: beyond it, the program's writes wait, as writes to a full pipe do, so a
#: program that prints faster than the client reads cannot fill its memory.
OUTPUT_PENDING_CHARS = 1024 * 1024


Sink = Callable[[str, Any], None]


class Loop(Protocol):
    """Where an endpoint delivers: a trio run's token, or a launched
    debuggee's ``ConnectingAgent``."""

    def run_sync_soon(self, sync_fn: Callable[..., object], *args: Any) -> None:
        """Call ``sync_fn(*args)`` soon in the loop's thread, in the order
        called; from any thread.  RuntimeError once the loop has ended."""


#: ``DapEndpoint.answer_now``: the request is answered later.
LATER: Any = object()


def _call_if_alive(method: weakref.WeakMethod[Callable[[], None]]) -> None:
    function = method()
    if function is not None:
        function()


class DapEndpoint:
    """The program's end of a DAP session, served in one loop.

    ``bind`` names the loop (a trio token, or a ``ConnectingAgent``) and the
    sink that takes events there; until then, and after ``unbind``, events
    are dropped.
    """

    session: DapSession

    def __init__(self) -> None:
        self._token: Loop | None = None
        self._sink: Sink | None = None
        self._pause_sent_at: float | None = None
        # Everything posted for the loop -- events, program output, results
        # of commands -- joins one list, delivered by one run_sync_soon: the
        # first post after a delivery queues the next delivery, later ones
        # join it.  One wake-up of the agent thread per batch matters: each
        # wake-up makes that thread take the GIL from a busy program (and
        # each run_sync_soon is a syscall in the posting thread), and a
        # program starting 30 tasks posted 30 thread events, which cost it
        # tenths of a second (see docs/internals.md).  The list keeps the
        # order things were posted in.  Posting happens under this lock
        # (reentrant: a signal handler may print while the main thread
        # holds it).
        self._post_lock = threading.RLock()
        self._output_open = False
        #: Output in the pending batch (characters); writers wait on
        #: ``_room`` while it is over ``OUTPUT_PENDING_CHARS``.
        self._output_pending = 0
        self._room = threading.Condition(self._post_lock)
        forked = weakref.WeakMethod(self._forked)
        os.register_at_fork(after_in_child=lambda: _call_if_alive(forked))
        self._pending: list[list[Any]] | None = None
        self._delivery_queued = False

    def _forked(self) -> None:
        """In a child the program forked: no agent runs here, so output goes
        to the real streams (whose pipes the adapter forwards), not to a
        batch nobody takes -- writes would wait for room for ever.  The
        locks are new: another thread may have held them at the fork."""
        self._post_lock = threading.RLock()
        self._room = threading.Condition(self._post_lock)
        self._output_open = False
        self._output_pending = 0
        # Nothing posted here is delivered: the loop is the parent's.
        self._token = self._sink = None
        self._pending = None
        self._delivery_queued = False

    def bind(self, token: Loop, sink: Sink) -> None:
        with self._post_lock:
            self._token, self._sink = token, sink
            self._output_open = True

    def unbind(self) -> None:
        with self._post_lock:
            self._token = self._sink = None
            self._output_open = False
            self._pending = None
            self._delivery_queued = False
            self._output_pending = 0
            self._room.notify_all()

    def _post(self, item: list[Any], *, urgent: bool = True) -> bool:
        """Add *item* to the pending batch (the lock held); False if unbound."""
        if self._token is None:
            return False
        if self._pending is None:
            self._pending = []
        self._pending.append(item)
        return self._queue_delivery() if urgent else True

    def _queue_delivery(self) -> bool:
        """Have the loop deliver the pending batch (the lock held)."""
        token, batch = self._token, self._pending
        if self._delivery_queued or token is None or batch is None:
            return token is not None
        try:
            token.run_sync_soon(self._deliver_batch, batch)
        except RuntimeError:  # the loop has ended (trio.RunFinishedError)
            return False
        self._delivery_queued = True
        return True

    def post_event(self, event: str, body: Any, *, urgent: bool = True) -> None:
        """Queue an event for the adapter; from any thread, never blocks.

        A non-*urgent* event (a thread started or exited) waits, in its
        place, for the next urgent post or ``flush``: waking the agent
        thread while the program runs costs the program (see above).
        """
        with self._post_lock:
            self._post(["event", event, body], urgent=urgent)

    @property
    def waiting(self) -> bool:
        """Whether non-urgent posts wait for a ``flush`` (a hint, unlocked)."""
        return self._pending is not None and not self._delivery_queued

    def flush(self) -> None:
        """Deliver what non-urgent posts left waiting; from any thread."""
        with self._post_lock:
            self._queue_delivery()

    def post_call(
        self, token: Loop, function: Callable[[Any], object], argument: Any
    ) -> None:
        """Run ``function(argument)`` in *token*'s loop, after what was posted.

        From any thread.  Results of commands go this way, so that an
        event posted before a result is sent before the response.
        """
        with self._post_lock:
            if token is self._token and self._post(["call", function, argument]):
                return
        with contextlib.suppress(RuntimeError):  # the loop has ended
            token.run_sync_soon(function, argument)

    def _deliver(self, event: str, body: Any) -> None:
        sink = self._sink
        if sink is not None:
            sink(event, body)

    def post_output(self, category: str, text: str) -> bool:
        """Queue program output (``sys.stdout``, ``sys.stderr``) for the
        adapter, after everything posted before; from any thread.  False if
        output no longer goes to the adapter.

        Once queued, the text is on its way; then, while more than
        ``OUTPUT_PENDING_CHARS`` of output wait for the agent (which sends
        no faster than the adapter reads, and the adapter reads no faster
        than the client), the caller waits, as a write to a full pipe
        does.  The agent's own threads never wait, nor does a write made
        inside a post (a signal handler's).  Consecutive writes of the same
        category in one batch become one ``output`` event.
        """
        with self._post_lock:
            if not self._output_open:
                return False
            batch = self._pending
            if batch and batch[-1][0] == "output" and batch[-1][1] == category:
                batch[-1][2].append(text)
                queued = self._queue_delivery()
            else:
                queued = self._post(["output", category, [text]])
            if not queued:
                self._output_open = False
                return False
            self._output_pending += len(text)
            if self._output_pending <= OUTPUT_PENDING_CHARS:
                return True
        self._wait_for_room()
        return True

    def _wait_for_room(self) -> None:
        # Held here, the lock was taken by a post this write interrupted (a
        # signal handler's print): the delivery that makes room needs it.
        # (``_is_owned`` is what ``threading.Condition`` asks an RLock too.)
        if cast(Any, self._post_lock)._is_owned():
            return
        session = getattr(self, "session", None)
        if session is not None and threading.get_ident() in session.own_threads:
            return  # the agent's own thread: it makes the room
        with self._room:
            self._room.wait_for(self._has_room)

    def _has_room(self) -> bool:
        return not self._output_open or self._output_pending <= OUTPUT_PENDING_CHARS

    def close_output(self) -> None:
        """From now on, ``post_output`` refuses (what was posted is sent)."""
        with self._post_lock:
            self._output_open = False
            self._room.notify_all()

    def _deliver_batch(self, batch: list[list[Any]]) -> None:
        with self._post_lock:
            if self._pending is batch:
                self._pending = None
                self._delivery_queued = False
                # All the output waiting was in this batch.
                self._output_pending = 0
                self._room.notify_all()
        for kind, first, second in batch:
            if kind == "event":
                self._deliver(first, second)
            elif kind == "call":
                first(second)
            else:
                text = "".join(second)
                for start in range(0, len(text), OUTPUT_EVENT_CHARS):
                    self._deliver(
                        "output",
                        {
                            "category": first,
                            "output": text[start : start + OUTPUT_EVENT_CHARS],
                        },
                    )

    def pause_served(self) -> None:
        self._pause_sent_at = None

    async def handle(self, params: Any) -> Any:
        """Answer one "dap" request (``{"command": ..., "arguments": ...}``)
        in a trio loop (an attach's, an in-process session's).

        Cancelled, it stops waiting; the program may still carry the
        request out.
        """
        if not isinstance(params, dict):
            from ._ipc import UnknownMethod

            raise UnknownMethod("a dap request needs a command")
        name = str(params.get("command"))
        arguments = params.get("arguments") or {}
        if name == "pause":
            await self._left_stop_ended()
            self._pause()
            return {}
        answer = self.answer_now(name, arguments)
        if answer is not LATER:
            return answer
        result, deliver, done = _slot(self)
        self.submit(name, arguments, deliver)
        await done.wait()
        return result[0].unwrap()

    def answer_now(self, name: str, arguments: Mapping[str, Any]) -> Any:
        """The answer to request *name* if it needs no wait, else ``LATER``.

        Not ``pause``, which may have to wait for a stop to end first.
        """
        session = self.session
        if name == "threads":
            return {"threads": session.threads.listing(session.stopped_thread())}
        if name == "resolveFunctionBreakpoints":
            return session.resolve_functions(arguments)
        if name == "loadedSources":
            from ._dap_sources import loaded_sources

            return {"sources": loaded_sources()}
        if name == "source":
            return session.source(arguments)
        if name == "terminate":
            return self._terminate()
        if name == "completions" and not session.port.stopped:
            return session.completions_running(arguments)
        return LATER

    def submit(
        self,
        name: str,
        arguments: Mapping[str, Any],
        deliver: Callable[[Outcome], None],
    ) -> None:
        """Have the program answer request *name*: *deliver* gets the outcome,
        from the thread that served it.

        Configuration is applied whether the program runs or is stopped;
        anything else needs a stop (NotStopped if the program runs).
        """
        if name in CONFIGURATION:
            self.session.queue_configuration(Command(name, arguments, deliver))
        elif not self.session.port.submit(Command(name, arguments, deliver)):
            raise NotStopped(f"{name}: the program is running (pause it first)")

    async def _left_stop_ended(self) -> None:
        """Wait (bounded) until a stop whose adapter went away has ended.

        A client that attaches right after another one left may ask to
        pause before the program's thread has resumed from the stop the
        first one left: taken for a pause of a stopped program, it would be
        ignored, and the program would run on.  Cancelled, it stops waiting.
        """
        import trio

        port = self.session.port
        with trio.move_on_after(LEFT_STOP_WAIT):
            while port.ending:  # noqa: ASYNC110 - it ends in the program's thread
                await trio.sleep(0.01)

    def wait_for_left_stop(self) -> None:
        """``_left_stop_ended`` for a thread that may block."""
        deadline = time.monotonic() + LEFT_STOP_WAIT
        while self.session.port.ending and time.monotonic() < deadline:
            time.sleep(0.01)

    def _pause(self) -> None:
        session = self.session
        if session.port.stopped:
            return
        now = time.monotonic()
        sent = self._pause_sent_at
        if sent is not None and now - sent < PAUSE_RETRY_SECONDS:
            return  # one is on its way (a second SIGINT would be a KeyboardInterrupt)
        if session.supervise_sigint:
            self._pause_sent_at = now
            session.pause_signal_sent = True
            os.kill(os.getpid(), signal.SIGINT)
            return
        token = session.threads.trio_token
        if token is None:
            raise CommandError(
                "pause: this program runs outside trio and cannot be paused "
                "here; set a breakpoint instead"
            )
        self._pause_sent_at = now
        try:
            token.run_sync_soon(_pause_in_loop, session)
        except RuntimeError:  # trio.RunFinishedError
            raise CommandError("pause: the program's trio run has ended") from None

    def _terminate(self) -> dict[str, Any]:
        """End the program: quit at the stop it is in, or at the next one."""
        session = self.session
        if session.port.submit(Command("quit", {}, lambda result: None)):
            return {"how": "quit"}
        if session.supervise_sigint or session.threads.trio_token is not None:
            session.quit_at_next_stop = True
            with contextlib.suppress(CommandError):
                self._pause()
                return {"how": "pause"}
        return {"how": "none"}


def real_trio_run(async_fn: Callable[[], Any]) -> None:
    """``trio.run`` as trio defines it, not as a debug session wrapped it.

    The agent's own run must not get the session's instrument: its tasks
    are not the program's.
    """
    import trio

    run: Any = trio.run
    while hasattr(run, "__wrapped__"):
        run = run.__wrapped__
    run(async_fn)


def _pause_in_loop(session: DapSession) -> None:
    """In the program's trio thread: stop at the next line of any task, or
    on the main task's await chain if the loop stays idle."""
    session.pause_soon()


def _slot(
    endpoint: DapEndpoint,
) -> tuple[list[Outcome], Callable[[Outcome], None], trio.Event]:
    """A result holder another thread fills, and the event it sets here.

    The result comes through *endpoint*'s queue, after the events posted
    before it (a ``stopped`` posted before a ``next`` is answered is sent
    before the answer).
    """
    import trio

    result: list[Outcome] = []
    done = trio.Event()
    token = trio.lowlevel.current_trio_token()

    def set_result(value: Outcome) -> None:
        result.append(value)
        done.set()

    def deliver(value: Outcome) -> None:
        endpoint.post_call(token, set_result, value)

    return result, deliver, done


# -- launch: the debuggee connects to the adapter ---------------------------------


class ConnectingAgent:
    """A launched debuggee's connection to its adapter, in a thread of its own.

    Plain blocking sockets (``_plain_ipc``), not trio: a launched program
    that does not use trio never imports it, and trio's import would delay
    its first line by more than everything else the debuggee does.  The
    thread waits in ``poll`` on the connection and on a wake-up pipe.  For
    its endpoint it is the loop (``Loop``): ``run_sync_soon`` queues a call
    and writes a byte to the pipe when the queue was empty -- one wake-up
    per batch, as a trio token's would be.  What the calls produce (events,
    the results of requests, in the order posted) goes out in one write.
    """

    def __init__(self, endpoint: DapEndpoint, address: Address, token: str) -> None:
        self._pid = os.getpid()
        self.endpoint = endpoint
        self.address = address
        self.token = token
        self._config: queue.Queue[dict[str, Any] | BaseException] = queue.Queue()
        self._calls: deque[tuple[Callable[..., object], tuple[Any, ...]]] = deque()
        self._calls_lock = threading.Lock()
        self._ended = False  # no calls are taken any more
        self._wake_read, self._wake_write = os.pipe()
        for fd in (self._wake_read, self._wake_write):
            os.set_blocking(fd, False)
            os.set_inheritable(fd, False)
        self._connection: PlainConnection | None = None
        self._outgoing: list[bytes] = []
        self._sent = 0  # bytes sent, for finish() to see progress
        self._all_sent = False  # the connection is half-closed: all is out
        self._closing = False
        self._finishing = False
        self._initial_config: dict[str, Any] | None = None
        self._name = f"dap debuggee pid {os.getpid()}"
        self._thread = threading.Thread(
            target=self._thread_main, name="dapper-trio dap agent", daemon=True
        )

    def start(self, config: dict[str, Any] | None = None) -> dict[str, Any]:
        """Connect and return the configuration the adapter sends.

        With *config* (the adapter gave it with the launch, ``_dap_early``)
        this returns it once connected, which the listener's backlog allows
        before the adapter serves: the handshake is made in the background,
        and the adapter's answer to "configure" is then applied only if the
        client changed something meanwhile.  LaunchError if the adapter
        cannot be reached.
        """
        self._initial_config = config
        # What the program posts from now on waits for the connection.
        self.endpoint.bind(self, self._queue_event)
        try:
            self._connection = PlainConnection.connect(
                self.address, name=self._name, timeout=CONFIG_TIMEOUT
            )
        except OSError as exc:
            self._end_calls()
            raise LaunchError(f"cannot reach the adapter: {exc}") from exc
        self._thread.start()
        if config is not None:
            return config
        try:
            result = self._config.get(timeout=CONFIG_TIMEOUT)
        except queue.Empty:
            raise LaunchError(
                "the adapter did not configure the program in time"
            ) from None
        if isinstance(result, BaseException):
            raise LaunchError(f"cannot reach the adapter: {result}") from result
        return result

    def finish(self) -> None:
        """Send what is queued and close the connection (the program ended).

        Output written from now on goes to the real streams.
        """
        if os.getpid() != self._pid:
            return  # a child the program forked: the agent is the parent's
        self._finishing = True
        self.endpoint.close_output()
        try:
            self.run_sync_soon(self._close_when_sent)
        except RuntimeError:
            return  # the connection is gone already
        # Wait while what is left gets on its way: a client that reads
        # slowly holds the adapter, and so this, back (its output is
        # bounded); an adapter that reads nothing for long is given up on.
        sent = -1
        while self._thread.is_alive() and self._sent != sent:
            sent = self._sent
            stalled = FINISH_TIMEOUT if self._all_sent else FINISH_STALL_TIMEOUT
            self._thread.join(timeout=stalled)

    # -- the endpoint's loop ---------------------------------------------------

    def run_sync_soon(self, sync_fn: Callable[..., object], *args: Any) -> None:
        """Call ``sync_fn(*args)`` in the agent thread; RuntimeError once the
        connection is closed."""
        with self._calls_lock:  # the pipe is closed under it when the thread ends
            if self._ended:
                raise RuntimeError("the connection to the adapter is closed")
            if not self._calls:
                with contextlib.suppress(BlockingIOError):  # full: it wakes anyway
                    os.write(self._wake_write, b"\0")
            self._calls.append((sync_fn, args))

    def _run_calls(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while os.read(self._wake_read, 4096):
                pass
        with self._calls_lock:
            calls, self._calls = self._calls, deque()
        for function, args in calls:
            function(*args)

    # -- the agent thread ------------------------------------------------------

    def _thread_main(self) -> None:
        self.endpoint.session.own_threads.add(threading.get_ident())
        connection = self._connection
        assert connection is not None
        why: object = "the adapter closed the connection"
        try:
            connection.handshake(self.token, self._name)
            connection.send(CONFIGURE_REQUEST)
            self._serve(connection)
        except BaseException as exc:
            self._config.put(exc)
            why = exc
        self._end_calls()
        connection.sock.close()
        if not self._finishing:
            self._adapter_lost(why)

    def _end_calls(self) -> None:
        """Take no more calls; nothing is delivered from now on."""
        with self._calls_lock:
            self._ended = True
            for fd in (self._wake_read, self._wake_write):
                os.close(fd)
        self.endpoint.unbind()

    def _serve(self, connection: PlainConnection) -> None:
        sock = connection.sock
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        poller.register(self._wake_read, select.POLLIN)
        while True:
            # What the decoder holds first: the read of the handshake's reply
            # may have brought the adapter's first request along.
            while (frame := connection.decoder.next_frame()) is not None:
                self._on_frame(frame)
            if self._outgoing:
                data, self._outgoing = b"".join(self._outgoing), []
                self._send_all(sock, data)
            if self._closing:
                self._closing = False
                # Half-close: the adapter reads everything sent, sees the
                # end and closes its side, which ends this loop.
                sock.shutdown(socket.SHUT_WR)
                self._all_sent = True
            for fd, _ in poller.poll():
                if fd == self._wake_read:
                    self._run_calls()
                    continue
                data = sock.recv(65536)
                if not data:
                    return
                connection.decoder.feed(data)

    def _send_all(self, sock: socket.socket, data: bytes) -> None:
        """``sendall``, counting what went out (``finish`` watches it)."""
        view = memoryview(data)
        while view:
            count = sock.send(view)
            self._sent += count
            view = view[count:]

    def _close_when_sent(self) -> None:
        self._closing = True

    def _queue_event(self, event: str, body: Any) -> None:
        """The endpoint's sink: *event* goes out with this turn's write."""
        try:
            frame = encode_frame(FrameKind.EVENT, {"event": event, "body": body})
        except ProtocolError as exc:  # not JSON, or too big: it cannot be sent
            frame = encode_frame(
                FrameKind.EVENT,
                {
                    "event": "output",
                    "body": {
                        "category": "console",
                        "output": f"[dapper-trio] a {event!r} event was lost: {exc}\n",
                    },
                },
            )
        self._outgoing.append(frame)

    def _on_frame(self, frame: Frame) -> None:
        answer = answer_to_configure(frame)
        message = frame.payload
        if answer is not None and self._initial_config is not None:
            if isinstance(answer, dict) and answer != self._initial_config:
                self.endpoint.submit("configure", answer, _ignore)
        elif answer is not None:
            self._config.put(answer)
        elif frame.kind is FrameKind.REQUEST and type(message) is dict:
            self._on_request(message.get("id"), message.get("method"), message)

    def _on_request(
        self, request_id: Any, method: Any, message: dict[str, Any]
    ) -> None:
        params = message.get("params")
        if method != "dap" or not isinstance(params, dict):
            what = f"unknown method {method!r}" if method != "dap" else "no command"
            self._respond((request_id, _Failure("UnknownMethod", what)))
            return
        name = str(params.get("command"))
        arguments = params.get("arguments") or {}
        endpoint = self.endpoint
        answer: Outcome
        try:
            if name == "pause":
                if endpoint.session.port.ending:
                    # A stop is ending: pause once it has (in a thread of
                    # its own, so that other requests are answered).
                    threading.Thread(
                        target=self._pause_later,
                        args=(request_id,),
                        name="dapper-trio dap pause",
                        daemon=True,
                    ).start()
                    return
                endpoint._pause()
                answer = Value({})
            else:
                result = endpoint.answer_now(name, arguments)
                if result is LATER:
                    deliver = functools.partial(self._post_answer, request_id)
                    endpoint.submit(name, arguments, deliver)
                    return
                answer = Value(result)
        except Exception as exc:
            answer = Error(exc)
        self._respond((request_id, answer))

    def _post_answer(self, request_id: Any, answer: Outcome) -> None:
        # From the thread that served the request: sent after the events
        # posted before it.
        self.endpoint.post_call(self, self._respond, (request_id, answer))

    def _pause_later(self, request_id: Any) -> None:
        self.endpoint.session.own_threads.add(threading.get_ident())
        answer: Outcome
        try:
            self.endpoint.wait_for_left_stop()
            self.endpoint._pause()
            answer = Value({})
        except Exception as exc:
            answer = Error(exc)
        with contextlib.suppress(RuntimeError):
            self.run_sync_soon(self._respond, (request_id, answer))

    def _respond(self, reply: tuple[Any, Outcome | _Failure]) -> None:
        request_id, answer = reply
        if isinstance(answer, _Failure):
            error = {"type": answer.type, "message": answer.message, "traceback": ""}
            response: dict[str, Any] = {"id": request_id, "error": error}
        elif isinstance(answer, Error):
            response = {"id": request_id, "error": error_body(answer.error)}
        else:
            response = {"id": request_id, "result": answer.value}
        try:
            frame = encode_frame(FrameKind.RESPONSE, response)
        except ProtocolError as exc:
            frame = encode_frame(
                FrameKind.RESPONSE, {"id": request_id, "error": error_body(exc)}
            )
        self._outgoing.append(frame)

    def _adapter_lost(self, why: object) -> None:
        self.endpoint.close_output()
        session = self.endpoint.session
        session.port.connection_lost()
        if session.port.stopped:
            return  # the stopped thread quits the program
        try:
            print(
                f"[dapper-trio] lost the connection to the adapter ({why}); "
                "the program is stopped.",
                file=sys.stderr,
                flush=True,
            )
        except OSError:
            pass  # stderr was a pipe to the adapter, which is gone
        os.kill(os.getpid(), signal.SIGTERM)


def _ignore(answer: Outcome) -> None:
    return None


class _Failure:
    """An error response that names its type (no exception behind it)."""

    def __init__(self, type: str, message: str) -> None:
        self.type = type
        self.message = message


# -- the launched program's sys.stdout and sys.stderr --------------------------------


class _WriteOnly:
    """What a forwarded stream and its buffer say of themselves."""

    def readable(self) -> bool:
        return False

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False


class ForwardedStream(_WriteOnly, io.TextIOBase):
    """A launched program's ``sys.stdout`` or ``sys.stderr``: what it writes
    becomes ``output`` events sent over the agent's connection, in order with
    the other stream and with the other events (``DapEndpoint.post_output``).

    Once output no longer goes to the adapter (the program ended, the
    connection was lost), writes go to the stream this one replaced: the
    real file descriptor, which the adapter forwards while it is there.
    Nothing raised while forwarding reaches the program.
    """

    def __init__(
        self, category: str, real: TextIO, post: Callable[[str, str], bool]
    ) -> None:
        self._category = category
        self._real = real
        self._post = post
        self._encoding = getattr(real, "encoding", None) or "utf-8"
        self._errors = getattr(real, "errors", None) or "strict"
        self.buffer = ForwardedBuffer(self)

    @property
    def real(self) -> TextIO:
        return self._real

    @property
    def name(self) -> str:
        return f"<{self._category}>"

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return self._encoding

    @property
    def errors(self) -> str:  # type: ignore[override]
        return self._errors

    @property
    def line_buffering(self) -> bool:
        return True

    def reconfigure(self, **kwargs: Any) -> None:
        """Like ``TextIOWrapper.reconfigure``: the encoding and errors are
        kept (they decode what ``buffer`` gets); the rest is ignored."""
        self._encoding = kwargs.get("encoding") or self._encoding
        self._errors = kwargs.get("errors") or self._errors
        self.buffer.reset_decoder()

    def fileno(self) -> int:
        return self._real.fileno()

    def isatty(self) -> bool:
        try:
            return self._real.isatty()
        except (ValueError, OSError):
            return False

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        if text:
            self.send(text)
        return len(text)

    def send(self, text: str) -> None:
        try:
            if self._post(self._category, text):
                return
        except Exception:
            pass
        try:
            self._real.write(text)
            self._real.flush()
        except Exception:
            pass  # the adapter and its pipes are gone

    def flush(self) -> None:
        """What was written is on its way already; the real stream is flushed
        for what went to it."""
        try:
            self._real.flush()
        except Exception:
            pass

    def close(self) -> None:
        """Not closed: the program's output keeps going somewhere."""


class ForwardedBuffer(_WriteOnly, io.RawIOBase):
    """A ``ForwardedStream``'s ``buffer``: bytes written are decoded with the
    stream's encoding (incrementally: a character may span writes) and sent
    by the stream, in order with its text."""

    def __init__(self, stream: ForwardedStream) -> None:
        self._stream = stream
        # Reentrant: a signal handler may write while its thread is in a
        # write here (which may be waiting for room, see ``post_output``).
        # New in a forked child: a thread may have held it at the fork.
        self._lock = threading.RLock()
        renew = weakref.WeakMethod(self._renew_lock)
        os.register_at_fork(after_in_child=lambda: _call_if_alive(renew))
        self.reset_decoder()

    def _renew_lock(self) -> None:
        self._lock = threading.RLock()

    def reset_decoder(self) -> None:
        try:
            factory = codecs.getincrementaldecoder(self._stream.encoding)
        except LookupError:
            factory = codecs.getincrementaldecoder("utf-8")
        self._decoder = factory(errors="replace")

    @property
    def raw(self) -> ForwardedBuffer:
        return self

    def fileno(self) -> int:
        return self._stream.fileno()

    def isatty(self) -> bool:
        return self._stream.isatty()

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        size = view.nbytes
        with self._lock:
            text = self._decoder.decode(view.tobytes())
            if text:
                self._stream.send(text)
        return size

    def flush(self) -> None:
        self._stream.flush()

    def close(self) -> None:
        """Not closed, like its stream."""


def forward_std_streams(endpoint: DapEndpoint) -> None:
    """Replace ``sys.stdout`` and ``sys.stderr`` with forwarded streams."""
    for category in ("stdout", "stderr"):
        real = getattr(sys, category)
        if real is None or isinstance(real, ForwardedStream):
            continue
        setattr(sys, category, ForwardedStream(category, real, endpoint.post_output))


def launched_search(target: Target, cwd: str) -> SearchPath:
    """The search path the program of *target* will have, started in *cwd*."""
    path = list(sys.path[1:])
    if target.kind == "script":
        main_file: str | None = resolve(target)
        path.insert(0, os.path.dirname(os.path.abspath(target.name)))
    else:
        path.insert(0, cwd)
        name = f"{target.name}.__main__"
        try:
            main_file = module_file(target.name, path)
        except LookupError:
            try:  # a package: python -m runs its __main__
                main_file = module_file(name, path)
            except LookupError:
                main_file = None
    return SearchPath(main_file, tuple(path), cwd)


def main() -> None:
    """Entry point of the debuggee process started by ``dapper-trio dap``."""
    raw = os.environ.pop(ADAPTER_ENV, None)
    if raw is None:
        sys.exit("dapper-trio: this process must be started by 'dapper-trio dap'")
    run_agent(json.loads(raw))


def preload() -> None:
    """Import what ``run_agent`` will (a spare debuggee, ``_spawn.fork_spare``).

    This module and the tracing backend's; nothing is set up, as the launch
    decides the working directory and the environment.
    """
    if sys.version_info >= (3, 12):
        from . import _monitoring  # noqa: F401


def run_agent(info: dict[str, Any]) -> NoReturn:
    """Connect to the adapter of *info* and run the program it launches.

    *info* is what the adapter put in ``ADAPTER_ENV`` (its address, the
    token, the target).  Ends with SystemExit: the program's exit status.
    """
    endpoint = DapEndpoint()
    try:
        search = launched_search(Target.from_dict(info["target"]), os.getcwd())
    except (LaunchError, KeyError, ValueError, TypeError):
        search = None
    session = DapSession(endpoint, search=search)
    _session._SESSION = session  # dapper_trio.breakpoint() & co find this one
    session.install_excepthook()
    session.debugger()  # the main thread's debugger is the main one
    agent = ConnectingAgent(endpoint, Address.parse(info["address"]), info["token"])
    try:
        config = agent.start(info.get("config"))
        target = Target.from_dict(config["target"])
        stop_on_entry = bool(config.get("stop_on_entry", False))
        session.configure(config)
    except (LaunchError, KeyError, ValueError, TypeError) as exc:
        print(f"dapper-trio: error: {exc}", file=sys.stderr)
        agent.finish()
        sys.exit(2)
    # From here on, the program's sys.stdout and sys.stderr are output events
    # over the connection, in the order written (two pipes would not keep
    # it); what goes to file descriptors 1 and 2 directly still takes the
    # pipes.
    forward_std_streams(endpoint)
    try:
        status = run_program(
            target,
            RunOptions(stop_on_entry=stop_on_entry),
            session=session,
            sigint_ignored=False,
            # A DAP client drives it, not a terminal: no tree session (its
            # socket directory, its quit path) in the debuggee.
            share_terminal=False,
            freeze_heap=True,
        )
    except LaunchError as exc:
        print(f"dapper-trio: error: {exc}", file=sys.stderr)
        status = 2
    _session._flush_std_streams()
    agent.finish()
    sys.exit(status)


__all__ = ["RESUMING", "ConnectingAgent", "DapEndpoint", "main"]

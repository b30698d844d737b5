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

The design.  ``DapEndpoint`` handles the "dap" requests in one trio loop
that is not the program's (``handle``), and delivers events to a *sink* in
that loop (``post_event`` may be called from any thread; ``run_sync_soon``
keeps them in order).  The loop is an *agent thread*'s with an IPC channel
to the adapter (``ConnectingAgent`` for launch, ``ListeningAgent`` for
attach), or, in-process, the adapter's own (``_dap_backends``).  Pausing
sends SIGINT to the program's main thread when the session owns SIGINT (see
``_session``), and otherwise asks the program's trio loop to pause
(``run_sync_soon``), which works as soon as the loop runs: between task
steps, or idle in epoll.

A launched program's ``sys.stdout`` and ``sys.stderr`` are
``ForwardedStream`` objects: a write queues the text with ``post_output``
(never waiting for the network), and the agent sends it as an ``output`` event in
its place among the other events -- two pipes read side by side would not
keep the order of stdout and stderr.  Everything posted between two
deliveries -- events, output, the results of commands (``post_call``) -- is
one batch, in the order posted: one ``run_sync_soon``, and the agent sends
what is queued in one write.  ``thread`` events are not urgent: they wait in
the batch for the next urgent post, for the program's loop to go idle or for
its end (``flush``), because waking the agent thread while the program runs
makes the two fight for the GIL, at the program's expense.  The agent sends
what is queued before it closes the connection at the end of the program,
and from then on (or once the adapter is lost) the streams write to the
real file descriptors, whose pipes the adapter still reads.

A launched program quits when its adapter goes away.  An attached one
forgets the client's breakpoints and exception filters, goes on if it was
stopped, and waits for the next client: one at a time, each proving it
holds the listener's token.

Known holes.  Output queued when the program calls ``os._exit`` or dies of
a signal is lost; the queue has no bound.  Without SIGINT (an attached
program, an in-process one), a pause waits until the running task reaches a
checkpoint, and a program outside trio cannot be paused at all.
"""

from __future__ import annotations

import codecs
import contextlib
import io
import json
import os
import queue
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, NoReturn, TextIO

import outcome
import trio

from . import _session
from ._dap_backends import ADAPTER_ENV
from ._dap_debuggee import (
    CONFIGURATION,
    RESUMING,
    Command,
    DapSession,
    NotStopped,
)
from ._dap_functions import SearchPath, module_file
from ._dap_inspect import CommandError
from ._ipc import Address, Channel, IPCError, UnknownMethod, connect, open_listener
from ._launcher import LaunchError, RunOptions, Target, resolve, run_program
from ._sockets import BoundSocket

#: How long a launched debuggee waits for its configuration from the adapter.
CONFIG_TIMEOUT = 60.0
#: How long a pause waits for a stop left by a previous adapter to end.
LEFT_STOP_WAIT = 5.0
#: A pause request not served within this many seconds may be sent again.
PAUSE_RETRY_SECONDS = 1.5

#: How much program output one ``output`` event carries at most (characters).
OUTPUT_EVENT_CHARS = 64 * 1024

Sink = Callable[[str, Any], None]


class DapEndpoint:
    """The program's end of a DAP session, served in one trio loop.

    ``bind`` names the loop (its token) and the sink that takes events there;
    until then, and after ``unbind``, events are dropped.
    """

    session: DapSession

    def __init__(self) -> None:
        self._token: trio.lowlevel.TrioToken | None = None
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
        self._pending: list[list[Any]] | None = None
        self._delivery_queued = False

    def bind(self, token: trio.lowlevel.TrioToken, sink: Sink) -> None:
        with self._post_lock:
            self._token, self._sink = token, sink
            self._output_open = True

    def unbind(self) -> None:
        with self._post_lock:
            self._token = self._sink = None
            self._output_open = False
            self._pending = None
            self._delivery_queued = False

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
        except trio.RunFinishedError:
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
        self,
        token: trio.lowlevel.TrioToken,
        function: Callable[[Any], object],
        argument: Any,
    ) -> None:
        """Run ``function(argument)`` in *token*'s loop, after what was posted.

        From any thread.  Results of commands go this way, so that an
        event posted before a result is sent before the response.
        """
        with self._post_lock:
            if token is self._token and self._post(["call", function, argument]):
                return
        with contextlib.suppress(trio.RunFinishedError):
            token.run_sync_soon(function, argument)

    def _deliver(self, event: str, body: Any) -> None:
        sink = self._sink
        if sink is not None:
            sink(event, body)

    def post_output(self, category: str, text: str) -> bool:
        """Queue program output (``sys.stdout``, ``sys.stderr``) for the
        adapter, after everything posted before; from any thread, never
        blocks.  False if output no longer goes to the adapter.

        Consecutive writes of the same category in one batch become one
        ``output`` event.
        """
        with self._post_lock:
            if not self._output_open:
                return False
            batch = self._pending
            if batch and batch[-1][0] == "output" and batch[-1][1] == category:
                batch[-1][2].append(text)
                if self._queue_delivery():
                    return True
            elif self._post(["output", category, [text]]):
                return True
            self._output_open = False
            return False

    def close_output(self) -> None:
        """From now on, ``post_output`` refuses (what was posted is sent)."""
        with self._post_lock:
            self._output_open = False

    def _deliver_batch(self, batch: list[list[Any]]) -> None:
        with self._post_lock:
            if self._pending is batch:
                self._pending = None
                self._delivery_queued = False
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
        """Answer one "dap" request (``{"command": ..., "arguments": ...}``)."""
        if not isinstance(params, dict):
            raise UnknownMethod("a dap request needs a command")
        name = str(params.get("command"))
        arguments = params.get("arguments") or {}
        session = self.session
        if name == "threads":
            return {"threads": session.threads.listing(session.stopped_thread())}
        if name == "pause":
            await self._left_stop_ended()
            self._pause()
            return {}
        if name == "resolveFunctionBreakpoints":
            return session.resolve_functions(arguments)
        if name == "loadedSources":
            from ._dap_sources import loaded_sources

            return {"sources": loaded_sources()}
        if name == "source":
            return session.source(arguments)
        if name == "terminate":
            return self._terminate()
        if name in CONFIGURATION:
            return await self._configure(name, arguments)
        if name == "completions" and not session.port.stopped:
            return session.completions_running(arguments)
        return await self._in_stopped_thread(name, arguments)

    async def _left_stop_ended(self) -> None:
        """Wait (bounded) until a stop whose adapter went away has ended.

        A client that attaches right after another one left may ask to
        pause before the program's thread has resumed from the stop the
        first one left: taken for a pause of a stopped program, it would be
        ignored, and the program would run on.  Cancelled, it stops waiting.
        """
        port = self.session.port
        with trio.move_on_after(LEFT_STOP_WAIT):
            while port.ending:  # noqa: ASYNC110 - it ends in the program's thread
                await trio.sleep(0.01)

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
        except trio.RunFinishedError:
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

    async def _configure(self, name: str, arguments: Mapping[str, Any]) -> Any:
        result, deliver, done = _slot(self)
        self.session.queue_configuration(Command(name, arguments, deliver))
        await done.wait()
        return result[0].unwrap()

    async def _in_stopped_thread(self, name: str, arguments: Mapping[str, Any]) -> Any:
        result, deliver, done = _slot(self)
        if not self.session.port.submit(Command(name, arguments, deliver)):
            raise NotStopped(f"{name}: the program is running (pause it first)")
        await done.wait()
        return result[0].unwrap()


def real_trio_run(async_fn: Callable[[], Any]) -> None:
    """``trio.run`` as trio defines it, not as a debug session wrapped it.

    The agent's own run must not get the session's instrument: its tasks
    are not the program's.
    """
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
) -> tuple[
    list[outcome.Outcome[Any]], Callable[[outcome.Outcome[Any]], None], trio.Event
]:
    """A result holder another thread fills, and the event it sets here.

    The result comes through *endpoint*'s queue, after the events posted
    before it (a ``stopped`` posted before a ``next`` is answered is sent
    before the answer).
    """
    result: list[outcome.Outcome[Any]] = []
    done = trio.Event()
    token = trio.lowlevel.current_trio_token()

    def set_result(value: outcome.Outcome[Any]) -> None:
        result.append(value)
        done.set()

    def deliver(value: outcome.Outcome[Any]) -> None:
        endpoint.post_call(token, set_result, value)

    return result, deliver, done


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


# -- launch: the debuggee connects to the adapter ---------------------------------


class ConnectingAgent:
    """A launched debuggee's connection to its adapter, in a thread of its own."""

    def __init__(self, endpoint: DapEndpoint, address: Address, token: str) -> None:
        self.endpoint = endpoint
        self.address = address
        self.token = token
        self._config: queue.Queue[dict[str, Any] | BaseException] = queue.Queue()
        self._trio_token: trio.lowlevel.TrioToken | None = None
        self._done: trio.Event | None = None
        self._finishing = False
        self._thread = threading.Thread(
            target=self._thread_main, name="dapper-trio dap agent", daemon=True
        )

    def start(self) -> dict[str, Any]:
        """Connect and return the configuration the adapter sends."""
        self._thread.start()
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
        self._finishing = True
        self.endpoint.close_output()
        token = self._trio_token
        if token is None:
            return
        try:
            trio.from_thread.run_sync(self._set_done, trio_token=token)
        except (trio.RunFinishedError, RuntimeError):
            return
        self._thread.join(timeout=5.0)

    def _set_done(self) -> None:
        if self._done is not None:
            self._done.set()

    def _thread_main(self) -> None:
        self.endpoint.session.own_threads.add(threading.get_ident())
        try:
            real_trio_run(self._main)
        except BaseException as exc:
            self._config.put(exc)
            if not self._finishing:
                self._adapter_lost(exc)

    async def _main(self) -> None:
        self._done = trio.Event()
        send, receive = trio.open_memory_channel[tuple[str, Any]](float("inf"))
        self._trio_token = trio.lowlevel.current_trio_token()
        self.endpoint.bind(self._trio_token, lambda *item: _queue(send, item))
        async with connect(
            self.address,
            token=self.token,
            name=f"dap debuggee pid {os.getpid()}",
            request_handler=self._handle_request,
        ) as channel:
            config = await channel.request("configure")
            self._config.put(config)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._flush_then_close, channel, receive)
                nursery.start_soon(
                    self._watch_connection, channel, nursery.cancel_scope
                )
                await self._done.wait()
                send.close()

    async def _flush_then_close(
        self, channel: Channel, receive: trio.MemoryReceiveChannel[tuple[str, Any]]
    ) -> None:
        await _send_events(channel, receive)
        await channel.aclose()

    async def _watch_connection(
        self, channel: Channel, scope: trio.CancelScope
    ) -> None:
        await channel.wait_closed()
        if not self._finishing:
            self._adapter_lost(channel.close_reason)
        scope.cancel()

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

    async def _handle_request(self, method: str, params: Any) -> Any:
        if method != "dap":
            raise UnknownMethod(f"unknown method {method!r}")
        return await self.endpoint.handle(params)


def _queue(
    send: trio.MemorySendChannel[tuple[str, Any]], item: tuple[str, Any]
) -> None:
    with contextlib.suppress(trio.ClosedResourceError, trio.BrokenResourceError):
        send.send_nowait(item)


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
        self._lock = threading.Lock()
        self.reset_decoder()

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
        config = agent.start()
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


# -- attach: the adapter connects to the program -----------------------------------


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


__all__ = ["RESUMING", "ConnectingAgent", "DapEndpoint", "ListeningAgent", "main"]

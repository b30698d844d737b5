"""The DAP adapter: ``dapper-trio dap`` between an editor and the program.

Theory of operation
===================

The problem.  An editor sends requests and expects answers and events, some
of them while others are still running: ``pause`` or ``disconnect`` while an
``evaluate`` takes its time, ``cancel`` for a request in flight.  The
program runs elsewhere -- a child process, a thread of this process, a
process that was already running (see ``_dap_backends``) -- and may die,
hang in a long ``evaluate``, or print megabytes; none of that may stop the
adapter from answering, and the adapter must never outlive its session.

Things that don't work.
* Handling requests one after another in the reading loop: a slow request
  blocks ``pause`` and ``disconnect`` (Dapper's adapter had that shape).
* One thread per request: nothing would own them, a ``cancel`` could not
  stop one, and an exception in one would be lost.
* Ending the session when stdin closes only: an editor may keep the pipe
  open after ``disconnect``; the adapter must exit by itself.
* Forwarding the program's ``stopped`` event as soon as it comes: a client
  that sent ``next`` may see the next ``stopped`` before the answer to its
  ``next`` (the two travel different paths), and some clients then drop it.
* Sending ``initialized`` with the answer to ``initialize``: the client then
  sends its breakpoints before it has said what to debug, and function
  breakpoints cannot be looked up yet.  It is sent once ``launch`` or
  ``attach`` has reached the program, as debugpy does.

The design.  One trio nursery owns everything: the reader of the client's
messages, one task per request (each in a ``CancelScope`` registered by the
request's ``seq``, which ``cancel`` cancels), and the backend.  Events from
the backend go through one queue and one forwarder task, so they reach the
client in order; a ``stopped`` event waits until no resuming request is
still unanswered.  The program's output is bounded there (``OutputBudget``):
while more than ``OUTPUT_QUEUE_CHARS`` of it wait for the client, what
brings more (the debuggee connection's reader, the readers of its pipes, an
in-process program's writes) waits, so the program's writes end up waiting
as writes to a full pipe do, and a client that reads slowly costs neither
process its memory.  Configuration requests (setBreakpoints,
setFunctionBreakpoints, setExceptionBreakpoints, configurationDone) take
turns on a lock, so they apply in the order they were sent; until the
program has asked for its configuration (it does when it connects, and gets
it once ``configurationDone`` has come: it does not start before the client
has set its breakpoints) they are only stored.  Line breakpoints are checked
here, from the source (``check_breakpoints``); function breakpoints are
looked up by the program, which knows its own ``sys.path``. ``disconnect``
and ``terminate`` end the program or detach from it (see the backends);
after ``disconnect`` is answered the whole nursery is cancelled and the
adapter exits.

Bad input never ends a session: a message whose body is not JSON, an
unknown command, missing or wrongly typed arguments, a program that does not
exist, an attach with the wrong token -- each gets an error response naming
what was wrong.  Only a header that cannot be read (the stream is out of
step) ends it.

Known holes.  ``module`` sources without a path are not supported.  Lines
and columns are 1-based whatever the client asks.  ``cancel`` abandons the
wait for a request the program is running; the program finishes it anyway.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import signal
import sys
import threading
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Any

import trio

from ._dap_backends import (
    AttachBackend,
    Backend,
    ExternalProcessBackend,
    InProcessBackend,
)
from ._dap_early import Early
from ._dap_launch import (
    CAPABILITIES,
    Launch,
    breakpoints_requested,
    check_breakpoints,
    check_function_breakpoints,
    exception_filters,
    parse_launch,
    spare_fits,
)
from ._dap_requests import Arguments, RequestError
from ._dap_wire import (
    DapMessage,
    DapProtocolError,
    DapWriter,
    MalformedMessage,
    MessageFactory,
    read_messages,
)
from ._sockets import Address
from ._spawn import SpareDebuggee
from ._targets import ADAPTER_ENV

logger = logging.getLogger("dapper_trio.dap")

#: Seconds ``setFunctionBreakpoints`` waits for a launched program to connect
#: before answering (it looks the names up).
CONNECT_WAIT = 15.0

#: Seconds the answer to ``disconnect`` waits for the events posted before it.
EVENTS_FLUSH_TIMEOUT = 2.0

#: The marker queued among the events by ``_events_flushed`` (not an event).
_FLUSH = "<flush>"

#: How much program output may wait to be sent to the client (characters)
#: before what produces it waits (``OutputBudget``).
OUTPUT_QUEUE_CHARS = 1024 * 1024


def _output_chars(event: str, body: Any) -> int:
    """How much of the output budget an event takes."""
    if event != "output" or not isinstance(body, Mapping):
        return 0
    output = body.get("output")
    return len(output) if isinstance(output, str) else 0


class OutputBudget:
    """How much program output waits in the adapter to be sent to the client.

    Queueing output adds its length (from any thread), sending it takes it
    off (in the loop).  Once more than ``limit`` characters wait, producers
    wait for the client to read half of them: ``room`` in the loop,
    ``wait_for_room`` from another thread (in the loop's own thread it
    returns at once).  Waiting for half, not for the first character under
    the limit, lets a producer bring a run of output at each wake-up rather
    than one event.  ``close`` (the client is gone, the program ended or
    is being ended) lets everyone on for good; while ``holding`` (the
    forwarder keeps a ``stopped`` event back until a resume is answered,
    and that answer may be behind the output) nobody waits either.
    """

    def __init__(self, limit: int = OUTPUT_QUEUE_CHARS) -> None:
        self.limit = limit
        self._queued = 0
        self._over = False  # over the limit, and not yet down to half of it
        self._open = True
        self._holding = 0  # how many holds are on
        self._lock = threading.Condition()
        self._changed = trio.Event()
        self._loop_thread = threading.get_ident()

    @property
    def queued(self) -> int:
        return self._queued

    @property
    def full(self) -> bool:
        return self._open and self._over and not self._holding

    @contextlib.contextmanager
    def holding(self) -> Iterator[None]:
        """Let everyone on while the block runs (in the loop)."""
        with self._lock:
            self._holding += 1
            self._lock.notify_all()
        self._wake()
        try:
            yield
        finally:
            with self._lock:
                self._holding -= 1

    def add(self, chars: int) -> None:
        if chars:
            with self._lock:
                self._queued += chars
                if self._queued > self.limit:
                    self._over = True

    def sent(self, chars: int) -> None:
        """*chars* of output left the queue (in the loop)."""
        if not chars:
            return
        with self._lock:
            self._queued -= chars
            woken = self._over and self._queued <= self.limit // 2
            if woken:
                self._over = False
                self._lock.notify_all()
        if woken:
            self._wake()

    def close(self) -> None:
        """Nobody waits from now on (in the loop)."""
        with self._lock:
            self._open = False
            self._lock.notify_all()
        self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def room(self) -> None:
        """Return once the queue is not full (see above).

        Cancelled, it stops waiting (nothing was queued by it).
        """
        while self.full:
            await self._changed.wait()

    def wait_for_room(self) -> None:
        """``room`` for a thread outside the loop; returns at once inside it."""
        if threading.get_ident() == self._loop_thread:
            return
        with self._lock:
            self._lock.wait_for(lambda: not self.full)


#: Requests the program answers, with the arguments each one must have.
_FORWARDED: dict[str, tuple[tuple[str, type, bool], ...]] = {
    "stackTrace": (
        ("threadId", int, True),
        ("startFrame", int, False),
        ("levels", int, False),
    ),
    "scopes": (("frameId", int, True),),
    "variables": (
        ("variablesReference", int, True),
        ("start", int, False),
        ("count", int, False),
    ),
    "evaluate": (
        ("expression", str, True),
        ("frameId", int, False),
        ("context", str, False),
    ),
    "setVariable": (
        ("variablesReference", int, True),
        ("name", str, True),
        ("value", str, True),
    ),
    "exceptionInfo": (("threadId", int, True),),
    "completions": (
        ("text", str, True),
        ("column", int, True),
        ("frameId", int, False),
        ("line", int, False),
    ),
    "continue": (("threadId", int, True),),
    "next": (("threadId", int, True),),
    "stepIn": (("threadId", int, True),),
    "stepOut": (("threadId", int, True),),
}
_RESUMING = frozenset({"continue", "next", "stepIn", "stepOut"})


# -- breakpoints ---------------------------------------------------------------


# -- launch and attach arguments ----------------------------------------------


def parse_attach(arguments: Arguments) -> tuple[Address, str]:
    """Check what ``attach`` asked for: the program's address and its token.

    The address is ``address`` (``tcp:HOST:PORT`` or ``unix:PATH``, as the
    program printed it), or ``port`` with an optional ``host`` (default
    127.0.0.1), or ``connect: {host, port}`` as debugpy's configurations say.
    """
    token = arguments.string("token")
    if not token:
        raise RequestError(
            "attach: missing argument 'token' (the program printed it, or"
            " dapper_trio.listen() returned it)"
        )
    text = arguments.string("address")
    connect = arguments.mapping("connect")
    host = arguments.string("host") or connect.get("host") or "127.0.0.1"
    port = arguments.integer("port") or connect.get("port")
    if text is not None:
        try:
            return Address.parse(text), token
        except ValueError as exc:
            raise RequestError(f"attach: {exc}") from None
    if not isinstance(host, str):
        raise RequestError("attach: 'connect.host' must be a string")
    if type(port) is not int or not 0 < port < 65536:
        raise RequestError(
            "attach: give the program's 'address' (as it printed it), or its"
            " 'port' (1-65535) and 'host'"
        )
    return Address("tcp", host=host, port=port), token


# -- the server ----------------------------------------------------------------


class DapServer:
    """One DAP session: a client on a pair of streams, at most one program."""

    def __init__(
        self,
        send_stream: trio.abc.SendStream,
        *,
        spare: SpareDebuggee | None = None,
        early: Early | None = None,
    ) -> None:
        self._writer = DapWriter(send_stream)
        #: A process waiting to run a launched program (``_spawn.fork_spare``).
        self._spare = spare
        #: What was answered before trio was imported (``_dap_early``).
        self._early = early
        #: The spare, handed the launch early: the launch's, once replayed.
        self._handover = early.handover if early is not None else None
        #: Events not sent while the early requests are replayed (sent then).
        self._muted: frozenset[str] = frozenset()
        self._factory = MessageFactory(early.last_seq if early is not None else 0)
        self._in_flight: dict[int, trio.CancelScope] = {}
        self._config_lock = trio.Lock()
        self._configuration_done = trio.Event()
        self._breakpoints: dict[str, list[dict[str, Any]]] = {}
        self._function_breakpoints: list[dict[str, Any]] = []
        self._next_breakpoint_id = 1
        self._exception_filters: list[str] = ["uncaught"]
        self._launch: Launch | None = None
        self._backend: Backend | None = None
        self._configured = False
        self._resumes_in_flight = 0
        self._resumes_done = trio.Event()
        self._events_send, self._events_receive = trio.open_memory_channel[
            tuple[str, Any, int]
        ](math.inf)
        #: Output queued there, and what waits for room (``OutputBudget``).
        self.output_budget = OutputBudget()
        self._nursery: trio.Nursery | None = None
        self._ending = False

    # -- serving ----------------------------------------------------------------

    async def serve(self, receive_stream: trio.abc.ReceiveStream) -> None:
        """Serve the client until ``disconnect`` or the end of its stream.

        Returns when the session is over, the program ended or left.
        """
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._forward_events)
                early, self._early = self._early, None
                decoder = None
                if early is not None:
                    await self._replay(early)
                    for message in early.unanswered:
                        self._dispatch(message)
                    decoder = early.decoder
                try:
                    async with contextlib.aclosing(
                        read_messages(receive_stream, decoder)
                    ) as messages:
                        async for message in messages:
                            self._dispatch(message)
                except DapProtocolError as exc:
                    logger.error("closing the session: %s", exc)  # noqa: TRY400 - the peer's fault, no traceback
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pass
                # The client went away without disconnect: end (or leave) the program.
                with trio.CancelScope(shield=True):
                    await self._end_program(terminate=None)
                nursery.cancel_scope.cancel()
        finally:
            self._discard_spare()

    async def _replay(self, early: Early) -> None:
        """Run the requests answered early through the handlers, in order,
        sending nothing: the state is then what answering them here would
        have made it.  The spare, if it was handed the launch, is the
        launched backend's (``_on_launch``)."""
        self._muted = frozenset({"process", "initialized"})
        try:
            for request in early.answered:
                command: str = request["command"]
                try:
                    await self._handler(command)(
                        Arguments(command, request.get("arguments"))
                    )
                except RequestError as exc:  # pragma: no cover - checked early
                    logger.warning("replaying %s: %s", command, exc)
        finally:
            self._muted = frozenset()

    def _discard_spare(self) -> None:
        spare, self._spare = self._spare, None
        if spare is not None:
            spare.discard()

    def _take_spare(self, launch: Launch) -> SpareDebuggee | None:
        """The spare debuggee, if it can run *launch* (then it is used up)."""
        if self._spare is None or not spare_fits(launch):
            return None
        spare, self._spare = self._spare, None
        return spare

    def _dispatch(self, message: DapMessage | MalformedMessage) -> None:
        assert self._nursery is not None
        if isinstance(message, MalformedMessage):
            self._nursery.start_soon(
                self._send,
                self._factory_error(message, f"bad message: {message.error}"),
            )
            return
        if message.get("type") != "request":
            return  # responses to reverse requests (we send none), stray events
        seq, command = message.get("seq"), message.get("command")
        if type(seq) is not int or type(command) is not str:
            self._nursery.start_soon(
                self._send,
                self._factory_error(
                    message, "a request needs an integer 'seq' and a string 'command'"
                ),
            )
            return
        scope = trio.CancelScope()
        self._in_flight[seq] = scope
        self._nursery.start_soon(
            self._run_request, message, scope, name=f"dap {command}"
        )

    def _factory_error(
        self,
        request: Mapping[str, Any] | MalformedMessage,
        text: str,
        short: str | None = None,
    ) -> DapMessage:
        return self._factory.error_response(request, text, short=short)

    async def _send(self, message: DapMessage) -> None:
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await self._writer.send(message)

    async def _send_event(
        self, event: str, body: Mapping[str, Any] | None = None
    ) -> None:
        await self._send(self._factory.event(event, body))

    async def _run_request(self, request: DapMessage, scope: trio.CancelScope) -> None:
        command: str = request["command"]
        response: DapMessage | None = None
        try:
            with scope:
                try:
                    handler = self._handler(command)
                    arguments = Arguments(command, request.get("arguments"))
                    body = await handler(arguments)
                    response = self._factory.response(request, body)
                except RequestError as exc:
                    response = self._factory_error(request, str(exc), exc.short)
            if response is None:
                response = self._factory_error(
                    request, f"{command} was cancelled", "cancelled"
                )
            await self._send(response)
            if command == "disconnect":
                self._end_session()
        finally:
            self._in_flight.pop(request["seq"], None)

    def _handler(
        self, command: str
    ) -> Callable[[Arguments], Awaitable[dict[str, Any] | None]]:
        handler = getattr(self, f"_on_{command}", None)
        if handler is None:
            if command in _FORWARDED:
                return lambda arguments: self._forward(command, arguments)
            raise RequestError(f"unknown command {command!r}")
        result: Callable[[Arguments], Awaitable[dict[str, Any] | None]] = handler
        return result

    async def aclose(self) -> None:
        """End the session from outside (a signal): end the program, stop serving."""
        with trio.CancelScope(shield=True):
            await self._end_program(terminate=None)
        self._end_session()

    def _end_session(self) -> None:
        self._ending = True
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()

    # -- requests handled here ---------------------------------------------------

    async def _on_initialize(self, arguments: Arguments) -> dict[str, Any]:
        arguments.string("adapterID")
        return dict(CAPABILITIES)

    async def _on_cancel(self, arguments: Arguments) -> None:
        request_id = arguments.integer("requestId")
        if request_id is not None:
            scope = self._in_flight.get(request_id)
            if scope is not None:
                scope.cancel()

    async def _on_launch(self, arguments: Arguments) -> None:
        if self._backend is not None:
            raise RequestError("launch: a program is already running in this session")
        launch = parse_launch(arguments)
        backend: Backend
        handover, self._handover = self._handover, None
        if launch.in_process:
            backend = InProcessBackend(self, launch)
        elif handover is not None:
            # Replaying the early answers: the spare runs this launch already.
            backend = ExternalProcessBackend(self, launch, handover=handover)
        else:
            backend = ExternalProcessBackend(self, launch, self._take_spare(launch))
        await self._start(backend, launch)

    async def _on_attach(self, arguments: Arguments) -> None:
        if self._backend is not None:
            raise RequestError("attach: a program is already running in this session")
        address, token = parse_attach(arguments)
        await self._start(AttachBackend(self, address, token), None)

    async def _start(self, backend: Backend, launch: Launch | None) -> None:
        assert self._nursery is not None
        self._backend, self._launch = backend, launch
        try:
            await self._nursery.start(backend.run)
        except BaseException:
            self._backend = self._launch = None
            raise
        self.post("initialized")

    async def _on_configurationDone(self, arguments: Arguments) -> None:
        async with self._config_lock:
            self._configuration_done.set()

    def _live_backend(self) -> Backend | None:
        """The backend, if its program has its configuration and still runs."""
        backend = self._backend
        if backend is None or not self._configured or backend.exited.is_set():
            return None
        return backend

    async def _on_setBreakpoints(self, arguments: Arguments) -> dict[str, Any]:
        path, requested = breakpoints_requested(arguments)
        async with self._config_lock:
            results, specs = check_breakpoints(
                path, requested, self._next_breakpoint_id
            )
            self._next_breakpoint_id += len(results)
            self._breakpoints[path] = specs
            backend = self._live_backend()
            if backend is not None:
                answer = await backend.request(
                    "setBreakpoints", {"path": path, "breakpoints": specs}
                )
                verdicts = iter(answer.get("breakpoints", []))
                for result in results:
                    if result["verified"]:
                        verdict = next(verdicts, {"verified": True})
                        if not verdict.get("verified", True):
                            result["verified"] = False
                            result["message"] = verdict.get("message", "not set")
        return {"breakpoints": results}

    async def _on_setFunctionBreakpoints(self, arguments: Arguments) -> dict[str, Any]:
        requested = arguments.objects("breakpoints")
        async with self._config_lock:
            results, checked = check_function_breakpoints(
                requested, self._next_breakpoint_id
            )
            self._next_breakpoint_id += len(results)
            specs = [spec for _, spec in checked]
            self._function_breakpoints = specs
            backend = self._live_backend()
            if backend is not None:
                answer = await backend.request(
                    "setFunctionBreakpoints", {"breakpoints": specs}
                )
            else:
                answer = await self._look_up_functions(specs)
            verdicts = answer.get("breakpoints", [])
            for (index, _), verdict in zip(checked, verdicts, strict=False):
                results[index].update(
                    {
                        key: verdict[key]
                        for key in ("verified", "message", "line", "source")
                        if key in verdict
                    }
                )
        return {"breakpoints": results}

    async def _look_up_functions(self, specs: list[dict[str, Any]]) -> dict[str, Any]:
        """Ask a program that is not configured yet where *specs* would go."""
        backend = self._backend
        if not specs:
            return {"breakpoints": []}
        if backend is None:
            return {
                "breakpoints": [
                    {
                        "verified": False,
                        "message": "not looked up yet: no program is launched or"
                        " attached (it is looked up when one is)",
                    }
                ]
                * len(specs)
            }
        with trio.move_on_after(CONNECT_WAIT):
            async with trio.open_nursery() as waits:

                async def wait_for(event: trio.Event) -> None:
                    await event.wait()
                    waits.cancel_scope.cancel()

                waits.start_soon(wait_for, backend.connected)
                waits.start_soon(wait_for, backend.exited)
        if backend.exited.is_set() or not backend.connected.is_set():
            why = (
                "the program has ended"
                if backend.exited.is_set()
                else ("the program did not connect in time")
            )
            return {"breakpoints": [{"verified": False, "message": why}] * len(specs)}
        return await backend.request(
            "resolveFunctionBreakpoints", {"breakpoints": specs}
        )

    async def _on_setExceptionBreakpoints(self, arguments: Arguments) -> dict[str, Any]:
        filters, answer = exception_filters(arguments.strings("filters"))
        async with self._config_lock:
            self._exception_filters = filters
            backend = self._live_backend()
            if backend is not None:
                await backend.request(
                    "setExceptionBreakpoints", {"filters": self._exception_filters}
                )
        return answer

    async def _on_threads(self, arguments: Arguments) -> dict[str, Any]:
        backend = self._backend
        if backend is None or backend.exited.is_set():
            return {"threads": []}
        try:
            return await backend.request("threads", {})
        except RequestError:
            if backend.exited.is_set():
                return {"threads": []}
            raise

    async def _on_loadedSources(self, arguments: Arguments) -> dict[str, Any]:
        backend = self._backend
        if backend is None or backend.exited.is_set():
            return {"sources": []}
        return await backend.request("loadedSources", {})

    async def _on_source(self, arguments: Arguments) -> dict[str, Any]:
        source = arguments.mapping("source")
        reference = arguments.integer("sourceReference")
        if reference is None:
            value = source.get("sourceReference")
            reference = value if type(value) is int else None
        if reference:
            return await self._request("source", {"sourceReference": reference})
        path = source.get("path")
        if not isinstance(path, str) or not path:
            raise RequestError(
                "source: give a 'sourceReference' or a 'source' with a 'path'"
            )
        try:
            data = await trio.Path(path).read_bytes()
        except OSError as exc:
            raise RequestError(f"source: cannot read {path}: {exc.strerror}") from None
        return {
            "content": data.decode("utf-8", errors="replace"),
            "mimeType": "text/x-python",
        }

    async def _on_pause(self, arguments: Arguments) -> None:
        arguments.integer("threadId")
        await self._request("pause", {})

    async def _on_terminate(self, arguments: Arguments) -> None:
        await self._end_program(terminate=True)

    async def _on_disconnect(self, arguments: Arguments) -> None:
        terminate: bool | None = None
        if "terminateDebuggee" in arguments.raw:
            terminate = arguments.boolean("terminateDebuggee")
        with trio.CancelScope(shield=True):
            await self._end_program(terminate=terminate)
            # What the ended program said (its last output, exited,
            # terminated) goes out before the answer: after it, the session
            # is over.
            await self._events_flushed()

    async def _forward(self, command: str, arguments: Arguments) -> dict[str, Any]:
        for name, kind, required in _FORWARDED[command]:
            if kind is int:
                arguments.integer(name, required=required)
            else:
                arguments.string(name, required=required)
        if command not in _RESUMING:
            return await self._request(command, arguments.raw)
        self._resumes_in_flight += 1
        try:
            return await self._request(command, arguments.raw)
        finally:
            self._resumes_in_flight -= 1
            if self._resumes_in_flight == 0:
                self._resumes_done.set()
                self._resumes_done = trio.Event()

    async def _request(
        self, command: str, arguments: Mapping[str, Any]
    ) -> dict[str, Any]:
        backend = self._backend
        if backend is None:
            raise RequestError(
                f"{command}: no program is running (send launch or attach first)"
            )
        return await backend.request(command, arguments)

    async def _end_program(self, *, terminate: bool | None) -> None:
        """End the program or detach (*terminate* None: as the backend does)."""
        backend = self._backend
        if backend is None:
            return
        if terminate is None:
            terminate = backend.default_terminate
        # What the program still sends is read at once meanwhile: the
        # request that ends it must not wait behind its output.  (A program
        # that goes on -- a detach, a terminate it ignores -- is bounded
        # again after.)
        with self.output_budget.holding():
            await backend.end(terminate=terminate)

    # -- what the backend asks of us ------------------------------------------------

    def post(self, event: str, body: Mapping[str, Any] | None = None) -> None:
        """Send *event* to the client, after every event posted before."""
        if event in self._muted:
            return  # sent before trio was imported (``_dap_early``)
        chars = _output_chars(event, body)
        self.output_budget.add(chars)
        self._enqueue(event, body, chars)

    def _enqueue(self, event: str, body: Any, chars: int) -> None:
        try:
            self._events_send.send_nowait((event, body, chars))
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            self.output_budget.sent(chars)

    async def output_room(self) -> None:
        """Return once the client has read enough of the program's output
        (``OutputBudget``); what produces output awaits this after posting
        it.  Cancelled, it stops waiting."""
        await self.output_budget.room()

    def release_output(self) -> None:
        """The program has ended: read what it sent without waiting for the
        client (what is left is what was in flight)."""
        self.output_budget.close()

    def wait_for_output_room(self) -> None:
        """``output_room`` for a thread outside the loop (an in-process
        program's); in the loop's own thread it returns at once."""
        self.output_budget.wait_for_room()

    async def configuration(self) -> dict[str, Any]:
        """The program's configuration, once the client is done configuring."""
        await self._configuration_done.wait()
        async with self._config_lock:
            self._configured = True
            launch = self._launch
            return {
                "target": launch.target if launch is not None else None,
                "stop_on_entry": launch.stop_on_entry if launch is not None else False,
                "breakpoints": self._breakpoints,
                "function_breakpoints": self._function_breakpoints,
                "exception_filters": self._exception_filters,
            }

    async def _events_flushed(self) -> None:
        """Return once every event posted so far is sent (bounded: a
        ``stopped`` event may wait for a resume that never comes)."""
        flushed = trio.Event()
        try:
            self._events_send.send_nowait((_FLUSH, flushed, 0))
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            return
        with trio.move_on_after(EVENTS_FLUSH_TIMEOUT):
            await flushed.wait()

    async def _forward_events(self) -> None:
        try:
            await self._forward_each_event()
        finally:
            self.output_budget.close()

    async def _forward_each_event(self) -> None:
        async for event, body, chars in self._events_receive:
            if event == _FLUSH:
                body.set()
                continue
            backend = self._backend
            if event == "stopped" and self._resumes_in_flight:
                # The resume's answer may come behind output the budget
                # would hold back: let the reader on until it is in.
                with self.output_budget.holding():
                    while self._resumes_in_flight:
                        await self._resumes_done.wait()
            if event == "stopped":
                if backend is not None:
                    backend.stopped = True
            elif event == "continued" and backend is not None:
                backend.stopped = False
            await self._send_event(event, body)
            self.output_budget.sent(chars)


# -- entry points ----------------------------------------------------------------


async def serve_stdio(
    spare: SpareDebuggee | None = None, early: Early | None = None
) -> None:
    """Speak DAP on this process's stdin and stdout until the session ends.

    Anything else writing to file descriptor 1 (a stray ``print``, a C
    library) is sent to stderr instead, so it cannot corrupt the protocol.
    *spare* runs the session's first launch that fits it, and is ended with
    the session otherwise.  Cancelled, the session ends as if the client had
    gone away (the program is ended).
    """
    dap_out = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    stdin = trio.lowlevel.FdStream(os.dup(0))
    stdout = trio.lowlevel.FdStream(dap_out)
    async with stdin, stdout:
        await _serve_until_signalled(DapServer(stdout, spare=spare, early=early), stdin)


async def _serve_until_signalled(
    server: DapServer, stream: trio.abc.ReceiveStream
) -> None:
    """Serve; SIGTERM or SIGHUP end the debuggee first, then the session."""
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGHUP) as signals:
        async with trio.open_nursery() as nursery:

            async def watch() -> None:
                async for _ in signals:
                    await server.aclose()
                    return

            nursery.start_soon(watch)
            await server.serve(stream)
            nursery.cancel_scope.cancel()


async def serve_tcp(host: str, port: int, *, announce: Callable[[str], None]) -> None:
    """Accept DAP clients on *host*:*port*, one session per connection, forever."""
    listeners = await trio.open_tcp_listeners(port, host=host)
    name = listeners[0].socket.getsockname()
    announce(f"dapper-trio dap: listening on {name[0]}:{name[1]}")

    async def session(stream: trio.SocketStream) -> None:
        async with stream:
            await DapServer(stream).serve(stream)

    await trio.serve_listeners(session, listeners)


def run(
    listen: tuple[str, int] | None = None,
    *,
    spare: SpareDebuggee | None = None,
    early: Early | None = None,
) -> int:
    """``dapper-trio dap``: serve on stdio, or on TCP with *listen*.

    *spare* (stdio only) is a process forked to run the first launch;
    *early*, what was answered on stdio before trio was imported.
    """
    if listen is None:
        try:
            trio.run(serve_stdio, spare, early)
        finally:
            if spare is not None:
                spare.discard()
        return 0
    if spare is not None:
        spare.discard()
    host, port = listen

    def announce(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    try:
        trio.run(lambda: serve_tcp(host, port, announce=announce))
    except KeyboardInterrupt:
        return 130
    return 0


__all__ = ["ADAPTER_ENV", "CAPABILITIES", "DapServer", "check_breakpoints", "run"]

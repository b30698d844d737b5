"""The DAP adapter: ``dapper-trio dap`` between an editor and the debuggee.

Theory of operation
===================

The problem.  An editor sends requests and expects answers and events, some
of them while others are still running: ``pause`` or ``disconnect`` while an
``evaluate`` takes its time, ``cancel`` for a request in flight.  The
program runs in another process (``_dap_debuggee``), which may die, hang in
a long ``evaluate``, or print megabytes; none of that may stop the adapter
from answering, and the adapter must never outlive its session.

Things that don't work.
* Handling requests one after another in the reading loop: a slow request
  blocks ``pause`` and ``disconnect`` (Dapper's adapter had that shape).
* One thread per request: nothing would own them, a ``cancel`` could not
  stop one, and an exception in one would be lost.
* Ending the session when stdin closes only: an editor may keep the pipe
  open after ``disconnect``; the adapter must exit by itself.
* Forwarding the debuggee's ``stopped`` event as soon as it comes: a client
  that sent ``next`` may see the next ``stopped`` before the answer to its
  ``next`` (the two travel different paths), and some clients then drop it.

The design.  One trio nursery owns everything: the reader of the client's
messages, one task per request (each in a ``CancelScope`` registered by the
request's ``seq``, which ``cancel`` cancels), and the backend.  The backend
is a task that owns the IPC listener, the debuggee process (in a session of
its own, stdin from /dev/null, stdout and stderr piped and forwarded as
``output`` events by two pump tasks) and its connection.  The debuggee's
events go through one queue and one forwarder task, so they reach the
client in order; a ``stopped`` event waits until no resuming request is
still unanswered.  Configuration requests (setBreakpoints,
setExceptionBreakpoints, configurationDone) take turns on a lock, so they
apply in the order they were sent.  The debuggee asks for its configuration
when it connects and gets it once ``configurationDone`` has come: the
program does not start before the client has set its breakpoints.
``disconnect`` and ``terminate`` end the debuggee (gracefully if it is
stopped: the debugger quits, ``finally`` blocks run; else SIGTERM, then
SIGKILL after a grace period); after ``disconnect`` is answered the whole
nursery is cancelled and the adapter exits.

Bad input never ends a session: a message whose body is not JSON, an
unknown command, missing or wrongly typed arguments, a program that does not
exist -- each gets an error response naming what was wrong.  Only a header
that cannot be read (the stream is out of step) ends it.

Known holes.  ``attach``, ``inProcess`` and ``module`` sources without a
path are not supported.  Lines and columns are 1-based whatever the client
asks.  ``cancel`` abandons the wait for a request the debuggee is running;
the debuggee finishes it anyway.
"""

from __future__ import annotations

import codecs
import contextlib
import json
import logging
import math
import os
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import trio

from . import _dap_lines
from ._dap_wire import (
    DapMessage,
    DapProtocolError,
    DapWriter,
    MalformedMessage,
    MessageFactory,
    read_messages,
)
from ._ipc import Channel, ConnectionLost, RemoteCommandError, new_token, open_listener

logger = logging.getLogger("dapper_trio.dap")

#: Environment variable carrying the adapter's address and token to the
#: debuggee (``_dap_debuggee.main``).
ADAPTER_ENV = "DAPPER_TRIO_DAP_ADAPTER"

#: Seconds the debuggee gets to exit after ``terminate`` or ``disconnect``
#: before it is killed.
TERMINATE_GRACE = 0.4
#: Seconds the pumps may take to forward the last output after the exit.
OUTPUT_DRAIN_TIMEOUT = 2.0
#: How much program output one ``output`` event carries at most.
OUTPUT_CHUNK = 64 * 1024

#: Requests answered by the stopped debuggee thread.
_FORWARDED = frozenset(
    {
        "stackTrace",
        "scopes",
        "variables",
        "evaluate",
        "continue",
        "next",
        "stepIn",
        "stepOut",
    }
)
_RESUMING = frozenset({"continue", "next", "stepIn", "stepOut"})

CAPABILITIES: dict[str, Any] = {
    "supportsConfigurationDoneRequest": True,
    "supportsConditionalBreakpoints": True,
    "supportsHitConditionalBreakpoints": True,
    "supportsLogPoints": True,
    "supportsEvaluateForHovers": True,
    "supportsTerminateRequest": True,
    "supportTerminateDebuggee": True,
    "supportsCancelRequest": True,
    "exceptionBreakpointFilters": [
        {
            "filter": "uncaught",
            "label": "Uncaught Exceptions",
            "description": "Stop when an exception escapes the program.",
            "default": True,
        }
    ],
}
"""What ``initialize`` advertises: exactly what this adapter implements."""


class RequestError(Exception):
    """A request cannot be served; the text is the error response's message."""

    def __init__(self, message: str, *, short: str | None = None) -> None:
        super().__init__(message)
        self.short = short


# -- checking arguments --------------------------------------------------------

_TYPE_NAMES = {
    str: "a string",
    int: "an integer",
    bool: "a boolean",
    list: "an array",
    dict: "an object",
}


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    return _TYPE_NAMES.get(type(value), type(value).__name__)


class Arguments:
    """A request's ``arguments``, read with type checks that name the culprit."""

    def __init__(self, command: str, raw: object) -> None:
        self.command = command
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise RequestError(
                f"{command}: 'arguments' must be an object, not {_json_type(raw)}"
            )
        self.raw: dict[str, Any] = raw

    def _get(self, name: str, kind: type, required: bool) -> Any:
        value = self.raw.get(name)
        if value is None:
            if required:
                raise RequestError(f"{self.command}: missing argument {name!r}")
            return None
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise RequestError(
                f"{self.command}: argument {name!r} must be {_TYPE_NAMES[kind]},"
                f" not {_json_type(value)}"
            )
        return value

    def string(self, name: str, *, required: bool = False) -> str | None:
        result: str | None = self._get(name, str, required)
        return result

    def integer(self, name: str, *, required: bool = False) -> int | None:
        result: int | None = self._get(name, int, required)
        return result

    def boolean(self, name: str, default: bool = False) -> bool:
        value: bool | None = self._get(name, bool, False)
        return default if value is None else value

    def strings(self, name: str) -> list[str]:
        value: list[Any] | None = self._get(name, list, False)
        if value is None:
            return []
        if not all(isinstance(item, str) for item in value):
            raise RequestError(
                f"{self.command}: argument {name!r} must be an array of strings"
            )
        return value

    def mapping(self, name: str) -> dict[str, Any]:
        value: dict[str, Any] | None = self._get(name, dict, False)
        return {} if value is None else value


# -- breakpoints ---------------------------------------------------------------


def check_breakpoints(
    path: str, requested: list[Any], first_id: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Check ``setBreakpoints`` entries against *path*'s source.

    Returns (the response's Breakpoint objects, the specs to set in the
    debuggee).  A line without code, a condition that does not compile or a
    hit condition that does not parse makes that breakpoint unverified, with
    a message; it is not set.
    """
    try:
        lines: frozenset[int] | None = _dap_lines.file_code_lines(path)
        problem = ""
    except _dap_lines.SourceUnavailable as exc:
        lines, problem = None, str(exc)
    results: list[dict[str, Any]] = []
    specs: list[dict[str, Any]] = []
    for offset, entry in enumerate(requested):
        if not isinstance(entry, dict) or not isinstance(entry.get("line"), int):
            raise RequestError(
                "setBreakpoints: each breakpoint needs an integer 'line'"
            )
        line = entry["line"]
        result: dict[str, Any] = {
            "id": first_id + offset,
            "verified": False,
            "line": line,
            "source": {"path": path, "name": os.path.basename(path)},
        }
        results.append(result)
        spec = {
            key: entry[key]
            for key in ("condition", "hitCondition", "logMessage")
            if entry.get(key) is not None
        }
        for key, value in spec.items():
            if not isinstance(value, str):
                raise RequestError(
                    f"setBreakpoints: {key!r} must be a string, not {_json_type(value)}"
                )
        if lines is None:
            result["message"] = problem
            continue
        if line not in lines:
            result["message"] = f"line {line} of {os.path.basename(path)} holds no code"
            continue
        condition = spec.get("condition")
        if condition:
            try:
                compile(condition, "<condition>", "eval")
            except SyntaxError as exc:
                result["message"] = (
                    f"condition {condition!r} is not an expression: {exc.msg}"
                )
                continue
        hit = spec.get("hitCondition")
        if hit:
            try:
                _dap_lines.parse_hit_condition(hit)
            except ValueError as exc:
                result["message"] = str(exc)
                continue
        result["verified"] = True
        specs.append({"line": line, **spec})
    return results, specs


# -- the server ----------------------------------------------------------------


class _Launch:
    """What ``launch`` asked for, checked."""

    def __init__(self, arguments: Arguments) -> None:
        program = arguments.string("program")
        module = arguments.string("module")
        if (program is None) == (module is None):
            raise RequestError("launch: give exactly one of 'program' and 'module'")
        cwd = arguments.string("cwd") or os.getcwd()
        if not os.path.isdir(cwd):
            raise RequestError(f"launch: 'cwd' {cwd!r} is not a directory")
        self.cwd = os.path.abspath(cwd)
        if program is not None:
            path = os.path.join(self.cwd, program)
            if not os.path.isfile(path):
                raise RequestError(
                    f"launch: program {program!r} does not exist (in {self.cwd})"
                )
            self.target: dict[str, Any] = {
                "kind": "script",
                "name": os.path.abspath(path),
            }
        else:
            self.target = {"kind": "module", "name": module}
        self.target["args"] = arguments.strings("args")
        env = arguments.mapping("env")
        for key, value in env.items():
            if value is not None and not isinstance(value, str):
                raise RequestError(f"launch: env[{key!r}] must be a string or null")
        self.env: dict[str, str | None] = env
        self.stop_on_entry = arguments.boolean("stopOnEntry")
        python = arguments.raw.get("python")
        if python is None:
            self.python = [sys.executable]
        elif isinstance(python, str):
            self.python = [python]
        else:
            self.python = arguments.strings("python")
            if not self.python:
                raise RequestError("launch: 'python' must not be empty")


class DapServer:
    """One DAP session: a client on a pair of streams, at most one debuggee."""

    def __init__(self, send_stream: trio.abc.SendStream) -> None:
        self._writer = DapWriter(send_stream)
        self._factory = MessageFactory()
        self._in_flight: dict[int, trio.CancelScope] = {}
        self._config_lock = trio.Lock()
        self._configuration_done = trio.Event()
        self._breakpoints: dict[str, list[dict[str, Any]]] = {}
        self._next_breakpoint_id = 1
        self._exception_filters: list[str] = ["uncaught"]
        self._launched: _Launch | None = None
        self._configured = False
        self._channel: Channel | None = None
        self._connected = trio.Event()
        self._process: trio.Process | None = None
        self._exited = trio.Event()
        self._stopped = False
        self._resumes_in_flight = 0
        self._resumes_done = trio.Event()
        self._events_send, self._events_receive = trio.open_memory_channel[
            tuple[str, Any]
        ](math.inf)
        self._nursery: trio.Nursery | None = None
        self._ending = False

    # -- serving ----------------------------------------------------------------

    async def serve(self, receive_stream: trio.abc.ReceiveStream) -> None:
        """Serve the client until ``disconnect`` or the end of its stream.

        Returns when the session is over, the debuggee ended and reaped.
        """
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._forward_events)
            try:
                async with contextlib.aclosing(
                    read_messages(receive_stream)
                ) as messages:
                    async for message in messages:
                        self._dispatch(message)
            except DapProtocolError as exc:
                logger.error("closing the session: %s", exc)  # noqa: TRY400 - the peer's fault, no traceback
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
            # The client went away without disconnect: end the debuggee.
            with trio.CancelScope(shield=True):
                await self._end_debuggee(graceful=False)
            nursery.cancel_scope.cancel()

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
        """End the session from outside (a signal): end the debuggee, stop serving."""
        with trio.CancelScope(shield=True):
            await self._end_debuggee(graceful=False)
        self._end_session()

    def _end_session(self) -> None:
        self._ending = True
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()

    # -- requests handled here ---------------------------------------------------

    async def _on_initialize(self, arguments: Arguments) -> dict[str, Any]:
        arguments.string("adapterID")
        assert self._nursery is not None
        self._nursery.start_soon(self._send_event, "initialized")
        return dict(CAPABILITIES)

    async def _on_cancel(self, arguments: Arguments) -> None:
        request_id = arguments.integer("requestId")
        if request_id is not None:
            scope = self._in_flight.get(request_id)
            if scope is not None:
                scope.cancel()

    async def _on_launch(self, arguments: Arguments) -> None:
        if self._launched is not None:
            raise RequestError("launch: a program is already launched in this session")
        if "inProcess" in arguments.raw and arguments.boolean("inProcess"):
            raise RequestError("launch: 'inProcess' is not supported yet")
        launch = _Launch(arguments)
        self._launched = launch
        assert self._nursery is not None
        try:
            await self._nursery.start(self._run_debuggee, launch)
        except OSError as exc:
            self._launched = None
            raise RequestError(
                f"launch: cannot start {launch.python[0]!r}: {exc.strerror or exc}"
            ) from None

    async def _on_attach(self, arguments: Arguments) -> None:
        raise RequestError("attach is not supported yet; use launch")

    async def _on_configurationDone(self, arguments: Arguments) -> None:
        async with self._config_lock:
            self._configuration_done.set()

    async def _on_setBreakpoints(self, arguments: Arguments) -> dict[str, Any]:
        source = arguments.mapping("source")
        path = source.get("path")
        if not isinstance(path, str) or not path:
            raise RequestError("setBreakpoints: 'source' needs a 'path' (a string)")
        requested = arguments.raw.get("breakpoints")
        if requested is None:
            requested = [{"line": line} for line in arguments.raw.get("lines") or []]
        if not isinstance(requested, list):
            raise RequestError("setBreakpoints: 'breakpoints' must be an array")
        path = os.path.normpath(path)  # noqa: ASYNC240 - no I/O, string work
        if not os.path.isabs(path):
            raise RequestError(f"setBreakpoints: source path {path!r} is not absolute")
        async with self._config_lock:
            results, specs = check_breakpoints(
                path, requested, self._next_breakpoint_id
            )
            self._next_breakpoint_id += len(results)
            self._breakpoints[path] = specs
            if self._configured and self._channel is not None:
                answer = await self._request(
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

    async def _on_setExceptionBreakpoints(self, arguments: Arguments) -> dict[str, Any]:
        filters = arguments.strings("filters")
        known = {
            entry["filter"] for entry in CAPABILITIES["exceptionBreakpointFilters"]
        }
        async with self._config_lock:
            self._exception_filters = [name for name in filters if name in known]
            if self._configured and self._channel is not None:
                await self._request(
                    "setExceptionBreakpoints", {"filters": self._exception_filters}
                )
        return {"breakpoints": [{"verified": name in known} for name in filters]}

    async def _on_threads(self, arguments: Arguments) -> dict[str, Any]:
        if self._channel is None:
            return {"threads": []}
        try:
            result: dict[str, Any] = await self._request("threads", {})
        except RequestError:
            if self._exited.is_set() or self._channel is None:
                return {"threads": []}
            raise
        return result

    async def _on_pause(self, arguments: Arguments) -> None:
        arguments.integer("threadId")
        await self._request("pause", {})

    async def _on_terminate(self, arguments: Arguments) -> None:
        await self._end_debuggee(graceful=True)

    async def _on_disconnect(self, arguments: Arguments) -> None:
        arguments.boolean("terminateDebuggee", True)
        with trio.CancelScope(shield=True):
            await self._end_debuggee(graceful=False)

    async def _forward(self, command: str, arguments: Arguments) -> dict[str, Any]:
        if command in ("stackTrace", "continue", "next", "stepIn", "stepOut"):
            arguments.integer("threadId", required=True)
        if command == "stackTrace":
            arguments.integer("startFrame")
            arguments.integer("levels")
        elif command == "scopes":
            arguments.integer("frameId", required=True)
        elif command == "variables":
            arguments.integer("variablesReference", required=True)
            arguments.integer("start")
            arguments.integer("count")
        elif command == "evaluate":
            arguments.string("expression", required=True)
            arguments.integer("frameId")
            arguments.string("context")
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
        channel = self._channel
        if channel is None:
            raise RequestError(f"{command}: no program is running (send launch first)")
        try:
            result = await channel.request(
                "dap", {"command": command, "arguments": dict(arguments)}
            )
        except RemoteCommandError as exc:
            short = "notStopped" if exc.error_type == "NotStopped" else None
            raise RequestError(f"{command}: {exc.message}", short=short) from None
        except ConnectionLost:
            raise RequestError(f"{command}: the program has ended") from None
        if not isinstance(result, dict):
            raise RequestError(f"{command}: the debuggee answered {result!r}")
        return result

    # -- the debuggee ------------------------------------------------------------

    async def _run_debuggee(
        self,
        launch: _Launch,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        token = new_token()
        async with open_listener(
            token=token, name="dapper-trio dap adapter"
        ) as listener:
            env = dict(os.environ)
            env.setdefault("PYTHONUNBUFFERED", "1")
            for key, value in launch.env.items():
                if value is None:
                    env.pop(key, None)
                else:
                    env[key] = value
            env[ADAPTER_ENV] = json.dumps(
                {"address": str(listener.address), "token": token}
            )
            flags: list[str] = subprocess._args_from_interpreter_flags()  # type: ignore[attr-defined]
            command = [
                *launch.python,
                *(flags if launch.python == [sys.executable] else []),
                "-c",
                "from dapper_trio._dap_debuggee import main; main()",
            ]
            process = await trio.lowlevel.open_process(
                command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                cwd=launch.cwd,
                env=env,
                start_new_session=True,
            )
            self._process = process
            try:
                await self._send_event(
                    "process",
                    {
                        "name": launch.target["name"],
                        "systemProcessId": process.pid,
                        "isLocalProcess": True,
                        "startMethod": "launch",
                    },
                )
                task_status.started()
                async with trio.open_nursery() as pumps:
                    assert process.stdout is not None
                    assert process.stderr is not None
                    pumps.start_soon(self._pump, process.stdout, "stdout")
                    pumps.start_soon(self._pump, process.stderr, "stderr")
                    async with trio.open_nursery() as connection:
                        connection.start_soon(self._serve_debuggee, listener)
                        await process.wait()
                        connection.cancel_scope.cancel()
                    pumps.cancel_scope.deadline = (
                        trio.current_time() + OUTPUT_DRAIN_TIMEOUT
                    )
            finally:
                with trio.CancelScope(shield=True):
                    await _kill_and_reap(process)
                self._channel = None
                self._exited.set()
        code = process.returncode
        assert code is not None  # reaped above
        exit_code = code if code >= 0 else 128 - code
        await self._events_send.send(("exited", {"exitCode": exit_code}))
        await self._events_send.send(("terminated", {}))

    async def _serve_debuggee(self, listener: Any) -> None:
        async with listener.accept(
            request_handler=self._debuggee_request, event_handler=self._debuggee_event
        ) as channel:
            self._channel = channel
            self._connected.set()
            await channel.wait_closed()
            self._channel = None

    async def _debuggee_request(self, method: str, params: Any) -> Any:
        if method != "configure":
            raise LookupError(f"unknown method {method!r}")
        await self._configuration_done.wait()
        async with self._config_lock:
            launch = self._launched
            assert launch is not None
            self._configured = True
            return {
                "target": launch.target,
                "stop_on_entry": launch.stop_on_entry,
                "breakpoints": self._breakpoints,
                "exception_filters": self._exception_filters,
            }

    async def _debuggee_event(self, event: str, body: Any) -> None:
        self._events_send.send_nowait((event, body))

    async def _forward_events(self) -> None:
        async for event, body in self._events_receive:
            if event == "stopped":
                while self._resumes_in_flight:
                    await self._resumes_done.wait()
                self._stopped = True
            elif event == "continued":
                self._stopped = False
            await self._send_event(event, body)

    async def _pump(self, stream: trio.abc.ReceiveStream, category: str) -> None:
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        while True:
            data = await stream.receive_some(OUTPUT_CHUNK)
            text = decoder.decode(data, final=not data)
            if text:
                await self._events_send.send(
                    ("output", {"category": category, "output": text})
                )
            if not data:
                return

    async def _end_debuggee(self, *, graceful: bool) -> None:
        """End the debuggee (if any) and wait, bounded, until it is reaped."""
        process = self._process
        if process is None or self._exited.is_set():
            return
        quit_asked = False
        if graceful and self._stopped and self._channel is not None:
            with trio.move_on_after(TERMINATE_GRACE):
                with contextlib.suppress(RequestError):
                    await self._request("quit", {})
                    quit_asked = True
        if not quit_asked:
            with contextlib.suppress(OSError):
                os.killpg(process.pid, signal.SIGTERM)
        with trio.move_on_after(TERMINATE_GRACE * (3 if quit_asked else 1)):
            await self._exited.wait()
            return
        with contextlib.suppress(OSError):
            os.killpg(process.pid, signal.SIGKILL)
        with trio.move_on_after(2.0):
            await self._exited.wait()


async def _kill_and_reap(process: trio.Process) -> None:
    """Kill *process*'s group if it still runs; reap it (bounded)."""
    if process.returncode is None:
        with contextlib.suppress(OSError):
            os.killpg(process.pid, signal.SIGKILL)
    with trio.move_on_after(5.0):
        await process.wait()
    for stream in (process.stdout, process.stderr):
        if stream is not None:
            await stream.aclose()


# -- entry points ----------------------------------------------------------------


async def serve_stdio() -> None:
    """Speak DAP on this process's stdin and stdout until the session ends.

    Anything else writing to file descriptor 1 (a stray ``print``, a C
    library) is sent to stderr instead, so it cannot corrupt the protocol.
    """
    dap_out = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    stdin = trio.lowlevel.FdStream(os.dup(0))
    stdout = trio.lowlevel.FdStream(dap_out)
    async with stdin, stdout:
        await _serve_until_signalled(DapServer(stdout), stdin)


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


def run(listen: tuple[str, int] | None = None) -> int:
    """``dapper-trio dap``: serve on stdio, or on TCP with *listen*."""
    if listen is None:
        trio.run(serve_stdio)
        return 0
    host, port = listen

    def announce(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    try:
        trio.run(lambda: serve_tcp(host, port, announce=announce))
    except KeyboardInterrupt:
        return 130
    return 0


__all__ = ["CAPABILITIES", "DapServer", "run"]

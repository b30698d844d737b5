"""The answers ``dapper-trio dap`` gives before it has imported trio.

The problem.  An editor starts the adapter and at once sends
``initialize``, ``launch``, its breakpoints and ``configurationDone``; the
program starts after the last.  Importing trio and the server takes the
adapter 0.1 s, and a program that does not use trio would wait that long
for nothing: its debuggee (the spare, forked at the adapter's start, see
``_spawn.fork_spare``) needs no trio (``_dap_agent``).

The design.  Before it imports trio, the adapter reads the client's first
messages here, with blocking reads, and answers those it can answer exactly
as the server would -- with the same functions (``_dap_launch``) -- as long
as they are the plain launch sequence: ``initialize``, a ``launch`` the
spare fits, ``setBreakpoints``, ``setExceptionBreakpoints`` and
``configurationDone``.  At ``configurationDone`` it hands the spare the
launch with its whole configuration and a listening socket to connect to:
the program starts at once, and its agent connects when the server, trio
imported, takes the socket over.  At the first message it cannot answer
(anything else, a check that fails, bad framing), or at the end of stdin,
it stops and leaves that message unanswered.

Then the server (``DapServer``) takes over: it replays the requests
answered here, through its own handlers, without sending anything again
(so its state is what it would have been), answers the message left over,
and goes on reading with the same decoder.  ``last_seq`` keeps the
numbering of the adapter's messages.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from ._dap_launch import (
    CAPABILITIES,
    Launch,
    breakpoints_requested,
    check_breakpoints,
    exception_filters,
    launch_env,
    parse_launch,
    spare_fits,
)
from ._dap_requests import Arguments, RequestError
from ._dap_wire import (
    DapDecoder,
    DapMessage,
    DapProtocolError,
    MalformedMessage,
    MessageFactory,
    encode_message,
)
from ._sockets import BoundSocket, bind_listening_socket, new_token
from ._spawn import ForkedProcess, SpareDebuggee

_READ_SIZE = 65536


@dataclass
class HandOver:
    """The spare, running the launched program, and where it connects."""

    process: ForkedProcess
    stdout: int
    stderr: int
    bound: BoundSocket
    token: str


@dataclass
class Early:
    """What was read and answered before the server took over."""

    #: The requests answered, in order: the server replays them silently.
    answered: list[DapMessage] = field(default_factory=list)
    #: Read and not answered (the one that ended the early answers).
    unanswered: list[DapMessage | MalformedMessage] = field(default_factory=list)
    #: The decoder, with whatever it holds that was not read out yet.
    decoder: DapDecoder = field(default_factory=DapDecoder)
    #: The ``seq`` of the last message sent.
    last_seq: int = 0
    #: Set if the spare was handed the launch (at ``configurationDone``).
    handover: HandOver | None = None


class _Answerer:
    def __init__(self, spare: SpareDebuggee | None, write_fd: int) -> None:
        self.spare = spare
        self.write_fd = write_fd
        self.factory = MessageFactory()
        self.early = Early()
        self.launch: Launch | None = None
        #: The socket bound at ``launch``, until the spare is handed it.
        self.bound: BoundSocket | None = None
        self.breakpoints: dict[str, list[dict[str, Any]]] = {}
        self.next_breakpoint_id = 1
        self.exception_filters = ["uncaught"]
        #: ``configurationDone`` was answered: the server does the rest.
        self.configured = False

    def answer(self, message: DapMessage | MalformedMessage) -> bool:
        """Answer *message* as the server would; False if that cannot be done here."""
        if isinstance(message, MalformedMessage) or message.get("type") != "request":
            return False
        command = message.get("command")
        if type(message.get("seq")) is not int or type(command) is not str:
            return False
        arguments = Arguments(command, message.get("arguments"))
        try:
            body = self._body(command, arguments)
        except (RequestError, _NotHere):
            return False
        except OSError:
            raise  # the client is gone (writing to it failed)
        except Exception:  # the server answers it, with its error
            return False
        self.early.answered.append(message)
        self._send(self.factory.response(message, body))
        return True

    def _body(self, command: str, arguments: Arguments) -> dict[str, Any] | None:
        if command == "initialize":
            arguments.string("adapterID")
            return dict(CAPABILITIES)
        if command == "launch":
            spare = self.spare
            if spare is None or self.launch is not None:
                raise _NotHere
            launch = parse_launch(arguments)
            if not spare_fits(launch):
                raise _NotHere
            try:
                # Where the program will connect; bound now, so that a
                # failure is the server's to report, in answer to launch.
                self.bound = bind_listening_socket(transport=launch.transport)
            except OSError:
                raise _NotHere from None
            self.launch = launch
            self._send(
                self.factory.event(
                    "process",
                    {
                        "name": launch.target["name"],
                        "systemProcessId": spare.pid,
                        "isLocalProcess": True,
                        "startMethod": "launch",
                    },
                )
            )
            self._send(self.factory.event("initialized"))
            return None
        if command == "setBreakpoints":
            path, requested = breakpoints_requested(arguments)
            results, specs = check_breakpoints(path, requested, self.next_breakpoint_id)
            self.next_breakpoint_id += len(results)
            self.breakpoints[path] = specs
            return {"breakpoints": results}
        if command == "setExceptionBreakpoints":
            filters, answer = exception_filters(arguments.strings("filters"))
            self.exception_filters = filters
            return answer
        if command == "configurationDone" and self.launch is not None:
            self._hand_over(self.launch)
            self.configured = True
            return None
        raise _NotHere

    def _hand_over(self, launch: Launch) -> None:
        spare, bound = self.spare, self.bound
        assert spare is not None
        assert bound is not None
        token = new_token()
        info = {
            "address": str(bound.address),
            "token": token,
            "target": launch.target,
            # What the server's ``configuration()`` will answer the agent.
            "config": {
                "target": launch.target,
                "stop_on_entry": launch.stop_on_entry,
                "breakpoints": self.breakpoints,
                "function_breakpoints": [],
                "exception_filters": self.exception_filters,
            },
        }
        try:
            process, stdout, stderr = spare.hand_over(
                cwd=launch.cwd, env=launch_env(launch), info=info
            )
        except OSError:
            # The spare is gone: the server's replay of the launch starts
            # a fresh process, which asks for its configuration.
            return
        self.early.handover = HandOver(process, stdout, stderr, bound, token)
        self.bound = None

    def _send(self, message: Mapping[str, Any]) -> None:
        data = memoryview(encode_message(message))
        self.early.last_seq = self.factory.last_seq
        while data:
            data = data[os.write(self.write_fd, data) :]


@contextlib.contextmanager
def _closing_unused(answerer: _Answerer) -> Iterator[None]:
    """Close the socket bound at ``launch`` if no spare was handed it: the
    server's replay of the launch binds its own."""
    try:
        yield
    finally:
        if answerer.bound is not None:
            answerer.bound.close()
            answerer.bound = None


class _NotHere(Exception):
    """The server answers this one."""


def answer_early(
    spare: SpareDebuggee | None, *, read_fd: int = 0, write_fd: int = 1
) -> Early:
    """Read and answer the client's first messages (see the module docstring).

    Returns when a message cannot be answered here, after the spare was
    handed the launch, at the end of *read_fd*, or if *write_fd* fails.
    """
    answerer = _Answerer(spare, write_fd)
    early = answerer.early
    decoder = early.decoder
    with contextlib.suppress(OSError), _closing_unused(answerer):
        while True:
            try:
                message = decoder.next_message()
            except DapProtocolError:
                break  # the server reads the same error and ends the session
            if message is None:
                data = os.read(read_fd, _READ_SIZE)
                if not data:
                    break  # the server sees the end of the stream too
                decoder.feed(data)
                continue
            if not answerer.answer(message):
                early.unanswered.append(message)
                break
            if answerer.configured:
                break
    return early


__all__ = ["Early", "HandOver", "answer_early"]

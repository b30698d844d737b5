"""A minimal Debug Adapter Protocol client, for benchmarks/overhead.py and dap.py.

It starts an adapter that speaks DAP on its stdin and stdout (``python -m
debugpy.adapter``, ``dapper-trio dap``), launches a program under it with
breakpoints set, and either waits for the program to end (``run_program``)
or waits for the first stop and steps from there (``stop_and_step``), as an
editor would.  Nothing here knows about one adapter in particular: what
differs between adapters is the command line that starts one and a few
extra ``launch`` arguments, both given by the caller (see ``Adapter``).

Only what those need is spoken: initialize, launch, setBreakpoints,
configurationDone, next, disconnect, and answering a ``runInTerminal``
reverse request with an error (the client asks for the program's output as
``output`` events: ``console: internalConsole``).
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

Message = dict[str, Any]


class DapError(Exception):
    """The adapter did not behave as a run to completion needs."""


@dataclass(frozen=True)
class Breakpoint:
    path: Path
    line: int
    condition: str | None = None


@dataclass(frozen=True)
class Adapter:
    """How to start one DAP adapter and what to add to its ``launch`` request.

    *argv* is the adapter's command line, relative to nothing: the caller
    builds it for the interpreter under test.  *launch* is merged into the
    launch arguments every adapter gets (program, args, cwd, stopOnEntry,
    justMyCode, console).
    """

    name: str
    argv: Sequence[str]
    launch: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class Run:
    """What one run to completion under an adapter produced."""

    launched: float  # perf_counter when the launch request was sent
    terminated: float  # perf_counter when the terminated event arrived
    exit_code: int | None
    output: str  # the program's stdout and stderr, from output events
    breakpoints: list[Message]  # the adapter's answers to setBreakpoints
    stopped: Message | None = None  # the first stopped event, if any

    @property
    def seconds(self) -> float:
        """From the launch request to the terminated event."""
        return self.terminated - self.launched


class Client:
    """One adapter process, spoken to over its stdin and stdout.

    Every wait is bounded by *timeout* seconds; ``close`` (also on leaving a
    ``with`` block) ends the adapter and its process group.
    """

    def __init__(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        timeout: float = 60.0,
    ) -> None:
        self.timeout = timeout
        self.argv = list(argv)
        #: perf_counter when the adapter was started.
        self.started = time.perf_counter()
        self.process = subprocess.Popen(
            self.argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=None if env is None else dict(env),
            cwd=cwd,
            start_new_session=True,  # so close() can end the whole group
        )
        self._seq = 0
        self._messages: queue.Queue[Message | None] = queue.Queue()
        self._pending: list[Message] = []  # read, not yet asked for
        self._stderr: list[bytes] = []
        self._threads = [
            threading.Thread(target=self._read, daemon=True),
            threading.Thread(target=self._drain_stderr, daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    # -- wire ---------------------------------------------------------------------

    def _read(self) -> None:
        stream = self.process.stdout
        assert stream is not None
        try:
            while True:
                length = None
                while True:
                    header = stream.readline()
                    if not header:
                        return
                    header = header.strip()
                    if not header:
                        break
                    name, _, value = header.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                if length is None:
                    raise DapError(  # noqa: TRY301 - ends the reader thread
                        "a message without Content-Length"
                    )
                body = stream.read(length)
                if len(body) < length:
                    return
                self._messages.put(json.loads(body))
        except (OSError, ValueError, DapError):
            return
        finally:
            self._messages.put(None)

    def _drain_stderr(self) -> None:
        stream = self.process.stderr
        assert stream is not None
        for chunk in iter(lambda: stream.read1(65536), b""):
            self._stderr.append(chunk)

    def send(self, message: Message) -> None:
        body = json.dumps(message).encode()
        stream = self.process.stdin
        assert stream is not None
        try:
            stream.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)
            stream.flush()
        except OSError as exc:
            raise self.failure(f"cannot write to the adapter: {exc}") from None

    def request(self, command: str, arguments: Mapping[str, Any] | None = None) -> int:
        """Send a request; its sequence number (for ``response``)."""
        self._seq += 1
        message: Message = {"seq": self._seq, "type": "request", "command": command}
        if arguments is not None:
            message["arguments"] = dict(arguments)
        self.send(message)
        return self._seq

    def _next(self, deadline: float, waiting_for: str) -> Message:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise self.failure(f"timed out waiting for {waiting_for}")
        try:
            message = self._messages.get(timeout=remaining)
        except queue.Empty:
            raise self.failure(f"timed out waiting for {waiting_for}") from None
        if message is None:
            self._messages.put(None)  # every later wait fails the same way
            raise self.failure(f"the adapter closed its output before {waiting_for}")
        if message.get("type") == "request":
            self._answer_reverse(message)
        return message

    def _answer_reverse(self, message: Message) -> None:
        """Decline reverse requests (runInTerminal, startDebugging)."""
        self._seq += 1
        self.send(
            {
                "seq": self._seq,
                "type": "response",
                "request_seq": message.get("seq"),
                "command": message.get("command"),
                "success": False,
                "message": "not supported by this client",
            }
        )

    def wait(self, kind: str, name: str, *, request_seq: int | None = None) -> Message:
        """The next event called *name* (kind "event") or the response to
        request *request_seq* (kind "response"); what arrives meanwhile is
        kept for later waits."""
        deadline = time.monotonic() + self.timeout
        wanted = f"{kind} {name!r}"

        def matches(message: Message) -> bool:
            if message.get("type") != kind:
                return False
            if kind == "event":
                return bool(message.get("event") == name)
            return bool(message.get("request_seq") == request_seq)

        for index, message in enumerate(self._pending):
            if matches(message):
                return self._pending.pop(index)
        while True:
            message = self._next(deadline, wanted)
            if matches(message):
                return message
            self._pending.append(message)

    def response(self, seq: int, command: str) -> Message:
        """The successful response to request *seq*."""
        message = self.wait("response", command, request_seq=seq)
        if not message.get("success"):
            raise self.failure(
                f"{command} failed: {message.get('message')!r} {message.get('body')!r}"
            )
        return message

    def events(self, name: str) -> list[Message]:
        """Events called *name* received so far and not yet waited for."""
        return [
            message
            for message in self._pending
            if message.get("type") == "event" and message.get("event") == name
        ]

    # -- ending -------------------------------------------------------------------

    def close(self) -> None:
        """Close the adapter's stdin, give it a moment, then end its group."""
        process = self.process
        if process.stdin is not None and not process.stdin.closed:
            try:
                process.stdin.close()
            except OSError:
                pass
        try:
            process.wait(timeout=min(self.timeout, 10.0))
        except subprocess.TimeoutExpired:
            pass
        # The adapter's session may hold the debuggee (and debugpy's launcher).
        for signal_number in (15, 9):
            try:
                os.killpg(process.pid, signal_number)
            except (ProcessLookupError, PermissionError):
                break
            try:
                process.wait(timeout=5.0)
                break
            except subprocess.TimeoutExpired:
                continue
        for thread in self._threads:
            thread.join(timeout=5.0)
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def stderr(self) -> str:
        return b"".join(self._stderr).decode(errors="replace")

    def failure(self, what: str) -> DapError:
        tail = self.stderr()[-1500:]
        return DapError(
            f"{' '.join(self.argv)}: {what}"
            + (f"; its stderr ends:\n{tail}" if tail.strip() else "")
        )


def _start(
    client: Client,
    adapter: Adapter,
    program: Path,
    args: Sequence[str],
    breakpoints: Sequence[Breakpoint],
    cwd: str | os.PathLike[str] | None,
) -> tuple[float, int, list[Message]]:
    """initialize, launch, setBreakpoints, configurationDone, as an editor does.

    Returns (perf_counter when launch was sent, the launch request's seq, the
    adapter's answers to setBreakpoints).
    """
    client.response(
        client.request(
            "initialize",
            {
                "clientID": "dapper-trio-bench",
                "clientName": "benchmarks/dap_client.py",
                "adapterID": "python",
                "pathFormat": "path",
                "linesStartAt1": True,
                "columnsStartAt1": True,
                "supportsRunInTerminalRequest": False,
                "supportsStartDebuggingRequest": False,
            },
        ),
        "initialize",
    )
    launch_args: dict[str, Any] = {
        "name": "benchmark",
        "type": "python",
        "request": "launch",
        "program": str(program),
        "args": list(args),
        "cwd": str(cwd) if cwd is not None else str(program.parent),
        "stopOnEntry": False,
        "justMyCode": True,
        "console": "internalConsole",
        **adapter.launch,
    }
    launched = time.perf_counter()
    launch_seq = client.request("launch", launch_args)
    client.wait("event", "initialized")
    by_file: dict[Path, list[Breakpoint]] = {}
    for spec in breakpoints:
        by_file.setdefault(spec.path, []).append(spec)
    answers: list[Message] = []
    for path, specs in by_file.items():
        body = client.response(
            client.request(
                "setBreakpoints",
                {
                    "source": {"path": str(path), "name": path.name},
                    "breakpoints": [
                        {"line": spec.line}
                        | (
                            {}
                            if spec.condition is None
                            else {"condition": spec.condition}
                        )
                        for spec in specs
                    ],
                    "lines": [spec.line for spec in specs],
                },
            ),
            "setBreakpoints",
        ).get("body", {})
        answers += body.get("breakpoints", [])
    client.response(client.request("configurationDone"), "configurationDone")
    return launched, launch_seq, answers


def run_program(
    adapter: Adapter,
    program: Path,
    args: Sequence[str],
    breakpoints: Sequence[Breakpoint],
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    timeout: float = 60.0,
    expect_stop: bool = False,
) -> Run:
    """Run *program* under *adapter* with *breakpoints*, as an editor would.

    initialize; launch (stopOnEntry false, justMyCode true, output as events);
    on ``initialized``, setBreakpoints for each file then configurationDone;
    wait for ``terminated``.  With *expect_stop*, wait for ``stopped``
    instead, then disconnect and end the program (the check that a
    breakpoint whose condition holds does stop).

    Raises DapError if a wait outlasts *timeout* or the adapter fails.
    """
    with Client(adapter.argv, env=env, cwd=cwd, timeout=timeout) as client:
        launched, launch_seq, answers = _start(
            client, adapter, program, args, breakpoints, cwd
        )
        client.response(launch_seq, "launch")
        stopped = None
        if expect_stop:
            stopped = client.wait("event", "stopped")
            client.response(
                client.request("disconnect", {"terminateDebuggee": True}),
                "disconnect",
            )
            terminated = time.perf_counter()
            exit_code = None
        else:
            client.wait("event", "terminated")
            terminated = time.perf_counter()
            exited = client.events("exited")
            exit_code = exited[0]["body"].get("exitCode") if exited else None
            client.response(client.request("disconnect", {}), "disconnect")
        output = "".join(
            str(event.get("body", {}).get("output", ""))
            for event in client.events("output")
            if event.get("body", {}).get("category") in ("stdout", "stderr")
        )
        return Run(launched, terminated, exit_code, output, answers, stopped)


@dataclass
class StepRun:
    """What ``stop_and_step`` measured."""

    to_first_stop: float  # seconds from starting the adapter to the first stopped
    steps: list[float]  # seconds of each next: request to its stopped event
    lines: list[int]  # the line of the top frame after the first stop and each step


def stop_and_step(
    adapter: Adapter,
    program: Path,
    args: Sequence[str],
    breakpoint: Breakpoint,
    steps: int,
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    timeout: float = 60.0,
) -> StepRun:
    """Launch *program* with *breakpoint*, wait for the stop, then ``next`` *steps*
    times, each time waiting for the response and the ``stopped`` event.

    The top frame's line is read (``stackTrace``) after the first stop and
    after the last step only, outside the timed part, so the steps measure
    the round trip alone.  Ends the program with ``disconnect``.
    """
    with Client(adapter.argv, env=env, cwd=cwd, timeout=timeout) as client:
        _, launch_seq, answers = _start(
            client, adapter, program, args, [breakpoint], cwd
        )
        if not answers or not answers[0].get("verified", False):
            raise client.failure(f"the breakpoint was not verified: {answers}")
        stopped = client.wait("event", "stopped")
        # From the adapter's start: an adapter may answer before it is
        # ready (dapper-trio's does, to start the program sooner).
        first = time.perf_counter() - client.started
        client.response(launch_seq, "launch")
        thread = stopped["body"]["threadId"]

        def line() -> int:
            trace = client.response(
                client.request("stackTrace", {"threadId": thread, "levels": 1}),
                "stackTrace",
            )
            return int(trace["body"]["stackFrames"][0]["line"])

        lines = [line()]
        times = []
        for _ in range(steps):
            started = time.perf_counter()
            client.response(client.request("next", {"threadId": thread}), "next")
            client.wait("event", "stopped")
            times.append(time.perf_counter() - started)
            client._pending = [  # what arrived meanwhile (continued...) is not needed
                message
                for message in client._pending
                if message.get("type") != "event"
                or message.get("event") not in ("continued", "stopped")
            ]
        lines.append(line())
        client.response(
            client.request("disconnect", {"terminateDebuggee": True}), "disconnect"
        )
        return StepRun(first, times, lines)

"""The supervisor of ``dapper-trio run``: the program's parent, without trio.

The program runs in a child process (``_spawn``), which has its own
configuration from the start, its own REPL on the shared terminal, and the
tree's lock service.  What is left for its parent is small:

* take the debuggee's connection (the IPC handshake: ``_plain_ipc``), remove
  the socket file once it is in, and answer ``configure``;
* read the exit report the debuggee sends at the end (did the user quit?);
* reap the child, and end as it ended: same exit status, or the same signal;
* SIGTERM or SIGHUP (the terminal closed): terminate the child (SIGTERM,
  then SIGKILL after ``TERMINATE_GRACE`` seconds), reap it, end with 128+N;
* whatever way it ends, remove the socket and restore the terminal's
  settings (a child killed mid-REPL leaves the terminal in raw mode).

Ctrl-C is the debuggee's (same process group): it pauses the program there,
and this process ignores SIGINT throughout.

Why no trio here, when every other part of dapper-trio that waits on more
than one thing is a trio program?  This process runs beside the program for
the whole of its run, on the same machine.  It used to be a trio run (the
listener, a reader task, a task waiting on the child): importing and starting
trio took 0.15-0.2 s of CPU, on the other core, during the program's first
0.1-0.2 s, and that alone made the program 2-3 % slower on this 2-core host
(benchmarks/overhead.py's cold-file cells; docs/internals.md).  The whole job
is one ``selectors`` loop over four things -- the listening socket, the one
connection, a signal wake-up descriptor (SIGCHLD, SIGTERM, SIGHUP) and a
handshake deadline -- and it keeps trio's rules where they matter: one
reader per connection, every wait bounded or woken by a signal, the child
reaped and the socket gone on every way out.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from ._plain_ipc import (
    HANDSHAKE_MAX_FRAME_SIZE,
    check_hello,
    error_body,
    refusal_frame,
    welcome_frame,
)
from ._records import record
from ._targets import RunOptions, Target
from ._wire import (
    DEFAULT_MAX_FRAME_SIZE,
    FrameDecoder,
    FrameKind,
    ProtocolError,
    RemoteProtocolError,
    encode_frame,
)

if TYPE_CHECKING:
    from ._spawn import ChildProcess, StartedDebuggee

#: Seconds a child gets to exit after SIGTERM before it is killed.
TERMINATE_GRACE = 2.0
#: Seconds a connection gets to send its handshake before it is refused.
HANDSHAKE_TIMEOUT = 5.0
#: Seconds a send to the debuggee may take (its agent thread always reads).
SEND_TIMEOUT = 5.0
#: The signals that end a session; SIGCHLD only wakes the loop.
ENDING_SIGNALS = (signal.SIGTERM, signal.SIGHUP)

_NAME = "dapper-trio supervisor"
_RECEIVE_SIZE = 65536


@record(frozen=True)
class ProgramExit:
    """How the debugged program ended."""

    returncode: int  # as subprocess reports it: negative for a signal
    quit: bool  # the user quit the debugger
    connected: bool  # the debuggee reached its supervisor

    @property
    def signal(self) -> int | None:
        return -self.returncode if self.returncode < 0 else None


def supervise_program(
    target: Target, options: RunOptions, *, started: StartedDebuggee
) -> int:
    """``dapper-trio run`` in subprocess mode: supervise the program's process.

    *started* is the debuggee ``_spawn.start_debuggee`` started, and the
    socket it will connect to.  Returns the program's exit status (128+N if
    signal N ended the session here); if the program was killed by a
    signal, this process kills itself with the same signal (after cleaning
    up) so the shell sees exactly what it would have seen.  The child is
    reaped, the socket closed and removed, and the terminal restored before
    this returns or raises.
    """
    try:
        with _signal_wakeups() as wakeups:
            result = _Supervisor(target, options, started, wakeups).run()
    finally:
        started.bound.close()
        started.restore_terminal()
    if isinstance(result, int):
        return result
    if not result.connected and result.returncode != 0:
        print(
            "dapper-trio: the debuggee exited before it could connect "
            f"(exit status {result.returncode})",
            file=sys.stderr,
        )
    if result.signal is not None:
        if result.signal != signal.SIGINT:
            # (After SIGINT the program has printed its KeyboardInterrupt.)
            print(
                f"[dapper-trio] the program was killed by signal {result.signal} "
                f"({signal.Signals(result.signal).name})",
                file=sys.stderr,
                flush=True,
            )
        _die_by(result.signal)
    return result.returncode


def _die_by(signum: int) -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(ValueError, OSError):
            stream.flush()
    if signum != signal.SIGKILL:  # SIGKILL's action cannot be set (EINVAL)
        signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def _no_op(signum: int, frame: object) -> None:
    """A handler, so that the signal is caught: the wake-up fd reports it."""


@contextlib.contextmanager
def _signal_wakeups() -> Iterator[socket.socket]:
    """A socket that receives one byte, the signal's number, per signal
    caught: SIGCHLD and ``ENDING_SIGNALS``.  Their previous handlers and the
    previous wake-up descriptor are put back on the way out."""
    read, write = socket.socketpair()
    read.setblocking(False)
    write.setblocking(False)
    signums = (signal.SIGCHLD, *ENDING_SIGNALS)
    previous: dict[int, Any] = {}
    old_fd = -1
    try:
        old_fd = signal.set_wakeup_fd(write.fileno(), warn_on_full_buffer=False)
        for signum in signums:
            previous[signum] = signal.signal(signum, _no_op)
        yield read
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        signal.set_wakeup_fd(old_fd)
        read.close()
        write.close()


class _Pending:
    """A connection that has not yet sent its handshake."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.deadline = time.monotonic() + HANDSHAKE_TIMEOUT
        self.decoder = FrameDecoder(
            peer=_describe(sock), max_frame_size=HANDSHAKE_MAX_FRAME_SIZE
        )


class _Supervisor:
    """The loop of ``supervise_program``."""

    def __init__(
        self,
        target: Target,
        options: RunOptions,
        started: StartedDebuggee,
        wakeups: socket.socket,
    ) -> None:
        self.started = started
        self.process: ChildProcess = started.process
        self.configuration = {"target": target.to_dict(), "options": options.to_dict()}
        self.token = started.token.encode()
        self.selector = selectors.DefaultSelector()
        self.wakeups = wakeups
        self.pending: list[_Pending] = []
        self.channel: socket.socket | None = None
        self.decoder: FrameDecoder | None = None
        self.connected = False
        self.report: dict[str, Any] = {}
        self.ending_signal: int | None = None

    def run(self) -> ProgramExit | int:
        """Serve until the child exits (its ProgramExit) or a signal ends
        the session (128+N, the child terminated).  On an exception the
        child is terminated and reaped before it propagates."""
        listener = self.started.bound.sock
        listener.setblocking(False)
        self._watch(self.wakeups, self._on_wakeup)
        self._watch(listener, self._on_connection)
        try:
            returncode = self._serve()
        except BaseException:
            self._terminate_child()
            raise
        finally:
            self._close_all()
            self.selector.close()
        if returncode is None:
            assert self.ending_signal is not None
            return 128 + self.ending_signal
        return ProgramExit(
            returncode=returncode,
            quit=bool(self.report.get("quit", False)),
            connected=self.connected,
        )

    def _serve(self) -> int | None:
        while True:
            returncode = self.process.poll()
            if returncode is not None:
                # What the debuggee sent before it exited (its exit report)
                # is in the socket's buffer.
                if self.channel is not None:
                    self._on_channel()
                return returncode
            if self.ending_signal is not None:
                self._terminate_child()
                return None
            timeout = None
            if self.pending:
                soonest = min(pending.deadline for pending in self.pending)
                timeout = max(0.0, soonest - time.monotonic())
            for key, _ in self.selector.select(timeout):
                callback: Callable[[], None] = key.data
                callback()
            now = time.monotonic()
            for pending in list(self.pending):
                if pending.deadline <= now:
                    timeout_text = f"{HANDSHAKE_TIMEOUT:g}"
                    self._refuse(pending, f"no handshake within {timeout_text} s")

    # -- what wakes the loop -------------------------------------------------

    def _watch(self, sock: socket.socket, callback: Callable[[], None]) -> None:
        self.selector.register(sock, selectors.EVENT_READ, callback)

    def _on_wakeup(self) -> None:
        with contextlib.suppress(BlockingIOError):
            for signum in self.wakeups.recv(4096):
                if signum in ENDING_SIGNALS and self.ending_signal is None:
                    self.ending_signal = signum

    def _on_connection(self) -> None:
        try:
            sock, _ = self.started.bound.sock.accept()
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            return
        sock.setblocking(False)
        pending = _Pending(sock)
        self.pending.append(pending)
        self._watch(sock, lambda: self._on_hello(pending))

    def _on_hello(self, pending: _Pending) -> None:
        try:
            data = pending.sock.recv(HANDSHAKE_MAX_FRAME_SIZE)
        except BlockingIOError:
            return
        except OSError as exc:
            self._refuse(pending, f"receive failed: {exc}")
            return
        if not data:
            self._refuse(pending, "closed the connection before the handshake")
            return
        try:
            pending.decoder.feed(data)
            frame = pending.decoder.next_frame()
        except RemoteProtocolError as exc:
            self._refuse(pending, exc.reason)
            return
        if frame is None:
            return
        who, reason = check_hello(frame, self.token)
        if who is None:
            self._refuse(pending, reason)
            return
        self._forget(pending)
        # The one peer this socket is for is in: nobody else may connect
        # (gone before it is welcomed, so a welcomed debuggee knows).
        self.started.bound.remove_path()
        self.selector.unregister(self.started.bound.sock)
        for other in list(self.pending):
            self._refuse(other, "the debuggee has connected already")
        sock = pending.sock
        try:
            _send_all(sock, welcome_frame(_NAME))
        except OSError:
            sock.close()
            return
        decoder = pending.decoder
        decoder.peer = f"{who[0]} (pid {who[1]})"
        decoder.max_frame_size = DEFAULT_MAX_FRAME_SIZE
        self.channel, self.decoder, self.connected = sock, decoder, True
        self._watch(sock, self._on_channel)
        # A frame that came with the handshake is waiting in the decoder.
        self._on_frames()

    def _on_channel(self) -> None:
        """Read what the debuggee sent; close our end at its end."""
        assert self.channel is not None
        assert self.decoder is not None
        while True:
            try:
                data = self.channel.recv(_RECEIVE_SIZE)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                # The debuggee closed its end (after its exit report) or died.
                self._close_channel()
                return
            try:
                self.decoder.feed(data)
            except ProtocolError as exc:
                _log_warning(f"closing the connection to the debuggee: {exc}")
                self._close_channel()
                return
            if not self._on_frames():
                return

    def _on_frames(self) -> bool:
        """Handle the frames decoded; False if that closed the connection."""
        try:
            self._handle_frames()
        except ProtocolError as exc:
            _log_warning(f"closing the connection to the debuggee: {exc}")
        except OSError:
            pass  # (a send failed: the debuggee's end is gone)
        else:
            return True
        self._close_channel()
        return False

    def _handle_frames(self) -> None:
        assert self.channel is not None
        assert self.decoder is not None
        while (frame := self.decoder.next_frame()) is not None:
            message = frame.payload
            if type(message) is not dict:
                continue
            if frame.kind is FrameKind.EVENT:
                body = message.get("body")
                if message.get("event") == "exited" and type(body) is dict:
                    self.report = body
            elif frame.kind is FrameKind.REQUEST:
                _send_all(self.channel, self._answer(message))

    def _answer(self, request: dict[str, Any]) -> bytes:
        response: dict[str, Any] = {"id": request.get("id")}
        method = request.get("method")
        if method == "configure":
            response["result"] = self.configuration
        else:
            unknown = LookupError(f"unknown method {method!r}")
            response["error"] = error_body(unknown)
        return encode_frame(FrameKind.RESPONSE, response)

    # -- endings -------------------------------------------------------------

    def _refuse(self, pending: _Pending, reason: str) -> None:
        _log_warning(f"refused {pending.decoder.peer}: {reason}")
        self._forget(pending)
        with contextlib.suppress(OSError):
            pending.sock.send(refusal_frame(reason))
        pending.sock.close()

    def _forget(self, pending: _Pending) -> None:
        self.pending.remove(pending)
        self.selector.unregister(pending.sock)

    def _close_channel(self) -> None:
        if self.channel is not None:
            self.selector.unregister(self.channel)
            self.channel.close()
            self.channel = None

    def _close_all(self) -> None:
        self._close_channel()
        for pending in list(self.pending):
            self._forget(pending)
            pending.sock.close()

    def _terminate_child(self) -> None:
        """SIGTERM, then SIGKILL after ``TERMINATE_GRACE`` s; reap the child."""
        import subprocess

        with contextlib.suppress(OSError):
            self.process.terminate()
        try:
            self.process.wait(TERMINATE_GRACE)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(OSError):
                self.process.kill()
            self.process.wait()


def _send_all(sock: socket.socket, data: bytes) -> None:
    """Send all of *data* on a non-blocking socket, within ``SEND_TIMEOUT``.

    OSError (TimeoutError included) if it could not: the connection is then
    unusable, with part of a frame on it, and the caller closes it.
    """
    sock.settimeout(SEND_TIMEOUT)
    try:
        sock.sendall(data)
    finally:
        sock.setblocking(False)


def _describe(sock: socket.socket) -> str:
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        with contextlib.suppress(OSError):
            host, port = sock.getpeername()[:2]
            return f"the unauthenticated connection from tcp:{host}:{port}"
    return "an unauthenticated connection"


def _log_warning(text: str) -> None:
    # (logging is imported only when there is something to log.)
    import logging

    logging.getLogger("dapper_trio.supervisor").warning("%s", text)

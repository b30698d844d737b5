"""The debuggee process: runs the program, talks to its supervisor over IPC.

The program owns the main thread and its own trio run, and that run is frozen
whenever a REPL is open.  So the connection to the supervisor lives in an
*agent thread*: plain blocking sockets speaking the IPC frames (``_wire``)
and the IPC handshake, so that it keeps answering while the program is
paused -- and so that a debuggee does not import trio for a program that
never does (see ``_trio_import``).

The supervisor puts the run configuration in the debuggee's environment as
well as answering ``configure``: the program starts as soon as the debuggee
is up, while the supervisor is still importing trio beside it.  At the end
the debuggee waits (bounded) until the supervisor has taken the connection,
so the exit report is never lost.

If the connection to the supervisor is lost while the program runs (the
supervisor was killed), the debuggee terminates itself: a debuggee must never
outlive the supervisor that is responsible for reaping it.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import sys
import threading
from typing import Any, NoReturn

from ._launcher import LaunchError, RunOptions, Target, run_program
from ._plain_ipc import CONFIGURE_REQUEST, PlainConnection, answer_to_configure
from ._session import get_session
from ._sockets import Address
from ._targets import SESSION_ENV
from ._wire import Frame, FrameKind, ProtocolError, encode_frame

#: How long the debuggee waits for its supervisor before giving up.
CONFIG_TIMEOUT = 30.0
#: How long, at the end, the debuggee waits for the supervisor to have read
#: its exit report and closed the connection.
FINISH_TIMEOUT = 5.0


class Agent:
    """The debuggee's connection to its supervisor, in a thread of its own."""

    def __init__(self, address: Address, token: str) -> None:
        self.address = address
        self.token = token
        # The agent thread and its connection live in this process only: a
        # child made by os.fork() (a multiprocessing child, say) has neither.
        self._pid = os.getpid()
        self._config: queue.Queue[dict[str, Any] | BaseException] = queue.Queue()
        # Set once the supervisor has taken the connection, or it failed.
        self._settled = threading.Event()
        self._welcomed = False
        self._send_lock = threading.Lock()
        self._connection: PlainConnection | None = None
        self._finishing = False
        self._thread = threading.Thread(
            target=self._thread_main, name="dapper-trio agent", daemon=True
        )

    def start(self, config: dict[str, Any] | None = None) -> dict[str, Any]:
        """Connect; return *config*, or the configuration the supervisor sends.

        With *config* (it came with the environment) this returns at once and
        the connection is made in the background.
        """
        self._thread.start()
        if config is not None:
            return config
        try:
            result = self._config.get(timeout=CONFIG_TIMEOUT)
        except queue.Empty:
            raise LaunchError("the supervisor did not answer in time") from None
        if isinstance(result, BaseException):
            raise LaunchError(f"cannot reach the supervisor: {result}") from result
        return result

    def wait_for_supervisor(self) -> None:
        """Wait (bounded) until the supervisor has taken the connection.

        The program starts before the supervisor serves; a REPL must not:
        until then the supervisor cannot yet ignore Ctrl-C or end the session
        cleanly when the terminal closes.  (Bounded by CONFIG_TIMEOUT; if
        the supervisor is gone, the agent stops the program meanwhile.)

        In a child forked from the program it returns at once: no agent
        thread runs there to settle anything.  Such a child's REPL waits
        for the terminal instead, which the program's lock service grants
        other processes only once this wait is over in the program
        (``TreeLockServer``'s gate).
        """
        if self._forked():
            return
        self._settled.wait(CONFIG_TIMEOUT)

    def finish(self, status: int, *, quit: bool) -> None:
        """Report the program's exit status and close the connection.

        Waits up to CONFIG_TIMEOUT seconds for the supervisor to have taken
        the connection, so that the report reaches it.
        """
        self._finishing = True
        self._settled.wait(CONFIG_TIMEOUT)
        if not self._welcomed:
            return
        report = {"status": status, "quit": quit}
        try:
            self._send(
                encode_frame(FrameKind.EVENT, {"event": "exited", "body": report})
            )
        except OSError:
            pass
        sock = self._connection.sock if self._connection is not None else None
        if sock is not None:
            # Half-close: the supervisor reads everything we sent, sees the
            # end and closes its side, which ends the agent thread.  (Not
            # SHUT_RDWR: a reply the supervisor still sends, e.g. to
            # 'configure', would then fail there and could close its end
            # before it has read the report.)
            try:
                sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass
        self._thread.join(timeout=FINISH_TIMEOUT)
        if sock is not None:
            sock.close()

    def _forked(self) -> bool:
        return os.getpid() != self._pid

    # -- the agent thread ---------------------------------------------------

    def _send(self, data: bytes) -> None:
        connection = self._connection
        if connection is None:
            raise OSError("not connected")
        with self._send_lock:
            connection.send(data)

    def _thread_main(self) -> None:
        try:
            try:
                self._connect()
            finally:
                self._settled.set()
            self._serve()
        except BaseException as exc:
            self._config.put(exc)
            if not self._finishing:
                self._supervisor_lost(exc)
            return
        if not self._finishing:
            self._supervisor_lost("the supervisor closed the connection")

    def _connect(self) -> None:
        self._connection = PlainConnection.open(
            self.address,
            token=self.token,
            name=f"debuggee pid {os.getpid()}",
            timeout=CONFIG_TIMEOUT,
        )
        self._welcomed = True
        self._send(CONFIGURE_REQUEST)

    def _receive(self) -> Frame | None:
        assert self._connection is not None
        return self._connection.receive()

    def _serve(self) -> None:
        while True:
            try:
                frame = self._receive()
            except (OSError, ProtocolError) as exc:
                if self._finishing:
                    return
                raise ConnectionError(str(exc)) from exc
            if frame is None:
                return
            answer = answer_to_configure(frame)
            if answer is not None:
                self._config.put(answer)
            elif frame.kind is FrameKind.REQUEST and type(frame.payload) is dict:
                self._answer(frame.payload)

    def _answer(self, message: dict[str, Any]) -> None:
        request_id = message.get("id")
        method = message.get("method")
        response: dict[str, Any]
        if method == "ping":
            response = {"id": request_id, "result": {"pid": os.getpid()}}
        else:
            response = {
                "id": request_id,
                "error": {
                    "type": "UnknownMethod",
                    "message": f"unknown method {method!r}",
                    "traceback": "",
                },
            }
        try:
            self._send(encode_frame(FrameKind.RESPONSE, response))
        except OSError:
            pass  # the reader sees the connection end

    def _supervisor_lost(self, why: object) -> None:
        try:
            print(
                f"[dapper-trio] lost the connection to the supervisor ({why}); "
                "the program is stopped.",
                file=sys.stderr,
                flush=True,
            )
        except (OSError, ValueError):
            pass  # stderr is gone too: stop all the same
        os.kill(os.getpid(), signal.SIGTERM)


def main() -> None:
    """Entry point of a debuggee process the supervisor started with exec.

    The session's details come in the environment (``_spawn``).
    """
    raw = os.environ.pop(SESSION_ENV, None)
    if raw is None:
        sys.exit("dapper-trio: this process must be started by 'dapper-trio run'")
    run_debuggee(json.loads(raw))


def preload() -> None:
    """Import what ``run_debuggee`` will (a spare, ``_spawn.fork_terminal_spare``).

    The REPL (pdbpp), the tree session's lock service and the tracing
    backend: imported on the way to the program's first line otherwise.
    Nothing is set up.
    """
    from . import _actor_debug, _repl, _tree_lock  # noqa: F401

    if sys.version_info >= (3, 12):
        from . import _monitoring  # noqa: F401


def run_debuggee(info: dict[str, Any]) -> NoReturn:
    """Connect to the supervisor, run the program; exit with its status.

    *info* is what ``_spawn.start_debuggee`` gives its child: the address
    and token to connect with, whether SIGINT was ignored, and (usually) the
    run's configuration.  Raises SystemExit with the program's exit status,
    so that the interpreter finishes as it would after the program under
    plain python (threads joined, atexit handlers run, streams flushed).
    """
    agent = Agent(Address.parse(info["address"]), info["token"])
    try:
        config = agent.start(info.get("config"))
        target = Target.from_dict(config["target"])
        options = RunOptions.from_dict(config["options"])
    except (LaunchError, KeyError, ValueError) as exc:
        print(f"dapper-trio: error: {exc}", file=sys.stderr)
        sys.exit(2)
    session = get_session()
    session.repl_gate = agent.wait_for_supervisor
    try:
        status = run_program(
            target,
            options,
            session=session,
            sigint_ignored=bool(info.get("sigint_ignored", False)),
            share_terminal=True,
            freeze_heap=True,
        )
    except LaunchError as exc:
        print(f"dapper-trio: error: {exc}", file=sys.stderr)
        status = 2
    agent.finish(status, quit=session.quit_requested)
    sys.exit(status)

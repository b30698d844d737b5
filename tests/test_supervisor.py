"""The supervisor of ``dapper-trio run`` (``_backends``): a loop without trio.

Most tests here run the loop in this process, on its main thread (it takes
signals), against a real child process, a real listening socket and real
peers connecting from a thread.  The last ones run the real command.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from terminal import dapper_command, terminal_env

from dapper_trio import _backends
from dapper_trio._plain_ipc import PlainConnection
from dapper_trio._sockets import Address, bind_listening_socket, new_token
from dapper_trio._spawn import StartedDebuggee
from dapper_trio._targets import RunOptions, Target
from dapper_trio._wire import FrameDecoder, FrameKind, encode_frame

pytestmark = pytest.mark.timeout(60)

TARGET = Target("script", "program.py", ("--flag",))
OPTIONS = RunOptions(stop_on_entry=False, breakpoints=("program.py:3",))
CONFIGURATION = {"target": TARGET.to_dict(), "options": OPTIONS.to_dict()}
# A child that exits with the status it reads from its stdin (or sleeps on,
# ignoring SIGTERM, when told to).
CHILD = """\
import signal, sys, time
if sys.argv[1] == "stubborn":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("up", flush=True)
line = sys.stdin.readline()
sys.exit(int(line or "0"))
"""


class Session:
    """A started debuggee (the child above) and what the test's peers need."""

    def __init__(self, started: StartedDebuggee, child: subprocess.Popen[str]) -> None:
        self.started = started
        self.child = child
        self.address: Address = started.bound.address
        self.token = started.token
        self.restored = 0

    def debuggee(self) -> PlainConnection:
        """Connect and authenticate, as the debuggee's agent does."""
        return PlainConnection.open(
            self.address, token=self.token, name="debuggee pid 1", timeout=10
        )

    def end_child(self, status: int) -> None:
        assert self.child.stdin is not None
        self.child.stdin.write(f"{status}\n")
        self.child.stdin.flush()


@contextmanager
def session(kind: str = "plain") -> Iterator[Session]:
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, kind],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    assert child.stdout.readline() == "up\n"
    bound = bind_listening_socket()
    holder: list[Session] = []

    def restore_terminal() -> None:
        holder[0].restored += 1

    started = StartedDebuggee(child, bound, new_token(), restore_terminal)
    holder.append(Session(started, child))
    try:
        yield holder[0]
    finally:
        if child.poll() is None:
            child.kill()
        child.wait()
        for stream in (child.stdin, child.stdout):
            assert stream is not None
            stream.close()
        bound.close()


def supervise(s: Session, peer: Callable[[], None]) -> Any:
    """Run the supervisor's loop here while *peer* runs in a thread; return
    what the loop returned, once both are done (the peer's error if any)."""
    errors: list[BaseException] = []

    def run_peer() -> None:
        try:
            peer()
        except BaseException as exc:
            errors.append(exc)
            s.child.kill()  # so that the loop ends

    thread = threading.Thread(target=run_peer)
    thread.start()
    try:
        with _backends._signal_wakeups() as wakeups:
            result = _backends._Supervisor(TARGET, OPTIONS, s.started, wakeups).run()
    finally:
        thread.join(30)
    assert not thread.is_alive()
    if errors:
        raise errors[0]
    return result


def refusal_of(sock: socket.socket) -> Any:
    """The handshake frame a refused connection got, then the end."""
    sock.settimeout(10)
    decoder = FrameDecoder(peer="supervisor", max_frame_size=65536)
    while (frame := decoder.next_frame()) is None:
        data = sock.recv(65536)
        assert data, "closed without a refusal"
        decoder.feed(data)
    assert frame.kind is FrameKind.HANDSHAKE
    assert sock.recv(1) == b""
    return frame.payload


def send_exit_report(connection: PlainConnection, status: int, *, quit: bool) -> None:
    report = {"status": status, "quit": quit}
    connection.send(encode_frame(FrameKind.EVENT, {"event": "exited", "body": report}))


def expect_closed(connection: PlainConnection) -> None:
    """The supervisor closes its end: our stream ends; then we close ours."""
    try:
        assert connection.receive() is None
    finally:
        connection.sock.close()


def request(connection: PlainConnection, request_id: int, method: str) -> Any:
    message = {"id": request_id, "method": method, "params": None}
    connection.send(encode_frame(FrameKind.REQUEST, message))
    frame = connection.receive()
    assert frame is not None
    assert frame.kind is FrameKind.RESPONSE
    return frame.payload


def test_serves_the_debuggee_and_reports_how_it_ended() -> None:
    """configure is answered with the run's configuration, an unknown request
    with an error; the socket file goes once the debuggee is in; the exit
    report's quit flag and the child's status make the ProgramExit."""
    with session() as s:
        path = Path(s.address.path or "")
        assert path.exists()

        def debuggee() -> None:
            connection = s.debuggee()
            try:
                assert not path.exists()
                assert request(connection, 1, "configure") == {
                    "id": 1,
                    "result": CONFIGURATION,
                }
                answer = request(connection, 2, "teleport")
                assert answer["id"] == 2
                assert answer["error"]["type"] == "LookupError"
                assert "unknown method 'teleport'" in answer["error"]["message"]
                send_exit_report(connection, 7, quit=True)
                connection.sock.shutdown(socket.SHUT_WR)
            except BaseException:
                connection.sock.close()
                raise
            # The supervisor closes its end once it has read ours.
            expect_closed(connection)
            s.end_child(7)

        result = supervise(s, debuggee)
    assert result == _backends.ProgramExit(returncode=7, quit=True, connected=True)


def test_refuses_peers_that_do_not_authenticate_and_goes_on_serving(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A wrong token, bytes that are not a frame, a peer that says nothing:
    each is told why and closed, with a warning; meanwhile the debuggee is
    served, and a peer still waiting when it is in is turned away."""
    monkeypatch.setattr(_backends, "HANDSHAKE_TIMEOUT", 0.5)
    caplog.set_level(logging.WARNING, logger="dapper_trio.supervisor")
    with session() as s:
        target = s.address.path

        def raw() -> socket.socket:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.connect(target)
            return sock

        def peers() -> None:
            with pytest.raises(ConnectionError, match="wrong token"):
                PlainConnection.open(
                    s.address, token="not-it", name="intruder", timeout=10
                )
            with raw() as garbage:
                garbage.sendall(b"GET / HTTP/1.1\r\n\r\n")
                refusal = refusal_of(garbage)
            assert refusal["ok"] is False
            assert "magic" in refusal["error"]
            with raw() as silent:
                refusal = refusal_of(silent)
            assert refusal == {"ok": False, "error": "no handshake within 0.5 s"}
            with raw() as waiting:
                connection = s.debuggee()
                try:
                    assert request(connection, 1, "configure")["result"] == (
                        CONFIGURATION
                    )
                    refusal = refusal_of(waiting)
                finally:
                    connection.sock.close()
            assert refusal["error"] == "the debuggee has connected already"
            s.end_child(0)

        result = supervise(s, peers)
    assert result == _backends.ProgramExit(returncode=0, quit=False, connected=True)
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 4, warnings
    assert "wrong token" in warnings[0]
    assert "no handshake within 0.5 s" in warnings[2]


def test_a_bad_frame_from_the_debuggee_closes_its_connection(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """After the handshake, bytes that are not a frame: a warning naming the
    peer, and the connection closed (the debuggee's agent then stops the
    program); the supervisor still reaps the child and reports it."""
    caplog.set_level(logging.WARNING, logger="dapper_trio.supervisor")
    with session() as s:

        def debuggee() -> None:
            connection = s.debuggee()
            connection.send(b"XX" + bytes(30))
            expect_closed(connection)
            s.end_child(3)

        result = supervise(s, debuggee)
    assert result == _backends.ProgramExit(returncode=3, quit=False, connected=True)
    (warning,) = [r.getMessage() for r in caplog.records]
    assert "closing the connection to the debuggee" in warning
    assert "debuggee pid 1" in warning


def test_an_exit_report_sent_just_before_the_end_is_read() -> None:
    """The child exits right after its report, the connection still open:
    the report in the socket's buffer is read before the loop ends."""
    with session() as s:

        def debuggee() -> None:
            connection = s.debuggee()
            send_exit_report(connection, 1, quit=True)
            s.end_child(1)
            s.child.wait()
            connection.sock.close()

        result = supervise(s, debuggee)
    assert result.quit is True
    assert result.returncode == 1


def test_a_debuggee_that_never_connected() -> None:
    with session() as s:
        result = supervise(s, lambda: s.end_child(5))
    assert result == _backends.ProgramExit(returncode=5, quit=False, connected=False)


@pytest.mark.parametrize(
    ("signum", "kind", "child_status"),
    [
        (signal.SIGTERM, "plain", -signal.SIGTERM),
        (signal.SIGHUP, "plain", -signal.SIGTERM),
        (signal.SIGTERM, "stubborn", -signal.SIGKILL),
    ],
    ids=["TERM", "HUP", "TERM-ignored-by-the-child"],
)
def test_a_signal_ends_the_session_and_the_child(
    monkeypatch: pytest.MonkeyPatch, signum: int, kind: str, child_status: int
) -> None:
    """SIGTERM or SIGHUP: the child gets SIGTERM (SIGKILL after the grace
    period if it ignores it) and is reaped; the loop returns 128+N; the
    signal's handler before the loop is back."""
    monkeypatch.setattr(_backends, "TERMINATE_GRACE", 0.5)
    with session(kind) as s:
        before = signal.getsignal(signum)

        def debuggee() -> None:
            connection = s.debuggee()  # welcomed: the loop is running
            os.kill(os.getpid(), signum)
            expect_closed(connection)

        result = supervise(s, debuggee)
        assert s.child.returncode == child_status
        assert signal.getsignal(signum) == before
    assert result == 128 + signum


def test_supervise_program_cleans_up_and_passes_the_status_on() -> None:
    """The socket and its directory go, the terminal is restored once."""
    with session() as s:
        directory = Path(s.address.path or "").parent
        threading.Timer(0.2, s.end_child, (9,)).start()
        status = _backends.supervise_program(TARGET, OPTIONS, started=s.started)
        assert status == 9
        assert s.restored == 1
        assert not directory.exists()
        assert s.started.bound.sock.fileno() == -1


TRIO_PROGRAM = """\
import trio

async def main():
    await trio.sleep(0)
    print("trio program done", flush=True)

trio.run(main)
"""
# Records, in a file, every process that imports trio.
RECORD_TRIO = """\
import os, sys

class RecordTrio:
    def find_spec(self, name, path=None, target=None):
        if name == "trio":
            with open(os.environ["TRIO_IMPORTERS"], "a") as f:
                f.write(f"{os.getpid()}\\n")
        return None

sys.meta_path.insert(0, RecordTrio())
"""


def test_the_supervisor_of_a_trio_program_never_imports_trio(tmp_path: Path) -> None:
    """Only the program's process imports trio (because the program does)."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(RECORD_TRIO)
    (tmp_path / "program.py").write_text(TRIO_PROGRAM)
    importers = tmp_path / "importers"
    env = terminal_env(PYTHONPATH=str(site), TRIO_IMPORTERS=str(importers))
    with subprocess.Popen(
        [*dapper_command(), "run", "-c", str(tmp_path / "program.py")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    ) as supervisor:
        out, err = supervisor.communicate(timeout=30)
    assert "trio program done" in out, out + err
    assert supervisor.returncode == 0
    pids = {int(line) for line in importers.read_text().split()}
    assert len(pids) == 1
    assert supervisor.pid not in pids

"""One terminal for a process tree: the root's lock service and its clients.

Theory of operation
===================

The problem.  In debug mode any process of an actor tree, at any depth, may
open a REPL (a breakpoint, a crash), and all of them share one terminal.
REPLs must take turns, first come first served; a process killed while it
holds the terminal must not hang the others; a parent stopping a child must
not kill it while a descendant of it is in a REPL; Ctrl-C must not cancel
anything while a REPL is open or awaited; and the other processes' output
must not land in the middle of a REPL.

Things that don't work.
* Asking the parent, which asks its parent (tractor's hop-by-hop design):
  a middle process whose event loop is blocked -- because *it* is in a REPL,
  or waiting for one -- stops relaying, and the tree deadlocks.
* A lock service run by the root's trio loop: a REPL runs *in* the loop's
  thread (``breakpoint()`` and crash REPLs block the process, by design), so
  the root waiting for the terminal, or holding it, would stop serving the
  very requests that must release it.
* Taking the lock with an async call in the child: a sync ``breakpoint()``
  must wait for its turn where it stands, and there is no greenback.
* Reading a dead holder's fate from its parent: the parent may itself be
  blocked in a REPL; the root must notice on its own.

The design.  The process that starts a debug-mode tree (its *root*) runs a
``TreeLockServer`` in a thread of its own: a ``selectors`` loop over a unix
socket in a private directory.  Its address and a random token travel down
the tree in each child's configuration, so every process connects to the
root directly (lazily: on its first REPL or its first child).  Messages are
``_wire`` frames: a HANDSHAKE with the token first, then EVENT frames whose
payload is ``{"op": ..., ...}``:

============  ========================================  ===================
op            from                                      answer
============  ========================================  ===================
``hello``     every connection, first (with token)      --
``acquire``   a process that wants the terminal         ``granted``, FIFO
``release``   the holder, when its REPL ends            --
``started``   a parent, after spawning a child          --
``exited``    a parent, after reaping a child           --
``procs``     the holder (the ``procs`` command)        ``procs``
``watch``     a parent stopping a child (a subtree)     ``busy`` on change
============  ========================================  ===================

The lock state is a pure table, ``LockTable``: who holds, who waits (FIFO),
which processes exist and in which state, which holders died.  When a
connection ends while it holds or waits (the process died: the kernel closes
its socket), the table hands the terminal to the next waiter at once and
keeps a notice that the next ``granted`` carries, so the next REPL says which
process died.  ``watch`` connections get ``busy`` each time "some process
under this path holds or waits for the terminal" changes: that is how a
parent knows not to start its stop ladder's clock.

Output.  When the root's standard output is a terminal, the server also
owns the terminal's output: the root's fds 1 and 2 are redirected to pipes
(children inherit them, at any depth), and the server thread copies what
arrives to the real terminal -- unless a REPL is open, in which case it is
held, and written when the REPL ends, before the next one is granted.  A
process holding the terminal points its own fds 1 and 2 back at the real
terminal (a descriptor inherited down the tree) for the length of its REPL.

Known holes.  Descendants started another way (``subprocess``,
``multiprocessing``) write to the same pipes but take no part in the lock.
A process whose loop is blocked for another reason while its child dies
still learns of the death late; the root does not.  The token travels in the
environment, as the actor runtime's does.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import hmac
import os
import select
import selectors
import signal
import socket
import threading
from collections.abc import AsyncIterator, Sequence
from typing import Any

import trio

from ._sockets import Address, bind_listening_socket, new_token
from ._wire import FrameDecoder, FrameKind, RemoteProtocolError, encode_frame

__all__ = [
    "LockTable",
    "SubtreeWatch",
    "TreeLockClient",
    "TreeLockServer",
    "watch_subtree",
]

_MAX_FRAME = 256 * 1024
_READ_SIZE = 65536
#: A client gives up connecting (or waiting for an answer to ``procs``) after this.
_CONNECT_TIMEOUT = 5.0

Path = tuple[str, ...]


def _format_path(path: Sequence[str]) -> str:
    return "/".join(path)


def describe_returncode(returncode: int) -> str:
    """``"exited with status 3"`` or ``"killed by SIGKILL"``."""
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"killed by {name}"
    return f"exited with status {returncode}"


# ---------------------------------------------------------------------------
# The table: pure and synchronous.


@dataclasses.dataclass
class ProcessInfo:
    """What the root knows about one process of the tree."""

    name: str
    pid: int
    path: Path
    returncode: int | None = None
    lost: bool = False  # its connection ended before its parent reported it


class LockTable:
    """Who holds the terminal, who waits for it, and which processes exist.

    Members are connection ids (ints) the server gives each ``hello``; each
    member is one process.  Pure: no sockets, no threads.
    """

    def __init__(self) -> None:
        self.holder: int | None = None
        self.waiters: collections.deque[int] = collections.deque()
        self.members: dict[int, ProcessInfo] = {}
        self.processes: dict[int, ProcessInfo] = {}  # by pid
        self.notices: list[str] = []  # for the next holder

    # -- membership ------------------------------------------------------

    def join(self, member: int, *, name: str, pid: int, path: Path) -> None:
        """A process connected."""
        info = self.processes.get(pid)
        if info is None or info.path != path:
            info = self.processes[pid] = ProcessInfo(name, pid, path)
        self.members[member] = info

    def started(self, *, name: str, pid: int, path: Path) -> None:
        """A parent reports a child it started."""
        if pid not in self.processes:
            self.processes[pid] = ProcessInfo(name, pid, path)

    def exited(self, *, pid: int, path: Path, returncode: int) -> None:
        """A parent reports a child it reaped."""
        info = self.processes.get(pid)
        if info is None:
            info = self.processes[pid] = ProcessInfo(path[-1], pid, path)
        info.returncode = returncode

    def leave(self, member: int) -> int | None:
        """A connection ended; return the member granted the terminal, if any."""
        info = self.members.pop(member, None)
        if info is None:
            return None
        if info.returncode is None:
            info.lost = True
        with contextlib.suppress(ValueError):
            self.waiters.remove(member)
        if self.holder == member:
            self.notices.append(
                f"actor {_format_path(info.path)} (pid {info.pid}) died while"
                " it held the terminal"
            )
            self.holder = None
            return self._grant_next()
        return None

    # -- the lock ----------------------------------------------------------

    def acquire(self, member: int) -> bool:
        """*member* asks for the terminal; True if it got it at once."""
        if self.holder == member or member in self.waiters:
            raise ValueError(f"member {member} already holds or waits")
        self.waiters.append(member)
        return self._grant_next() == member

    def release(self, member: int) -> int | None:
        """*member* leaves its REPL; return the member granted next, if any."""
        if self.holder != member:
            raise ValueError(f"member {member} does not hold the terminal")
        self.holder = None
        return self._grant_next()

    def take_notices(self) -> list[str]:
        """The death notices the next holder is to show (and forget them)."""
        notices, self.notices = self.notices, []
        return notices

    def _grant_next(self) -> int | None:
        if self.holder is None and self.waiters:
            self.holder = self.waiters.popleft()
            return self.holder
        return None

    # -- questions -------------------------------------------------------

    @property
    def busy(self) -> bool:
        """True while any process holds or waits for the terminal."""
        return self.holder is not None or bool(self.waiters)

    def busy_under(self, prefix: Path) -> bool:
        """True while a process at or under *prefix* holds or waits."""
        involved = list(self.waiters)
        if self.holder is not None:
            involved.append(self.holder)
        for member in involved:
            info = self.members.get(member)
            if info is not None and info.path[: len(prefix)] == prefix:
                return True
        return False

    def state_of(self, info: ProcessInfo) -> str:
        """One process's state, as ``procs`` shows it."""
        member_of = {id(m): k for k, m in self.members.items()}
        member = member_of.get(id(info))
        if member is not None and member == self.holder:
            return "in the REPL"
        if member is not None and member in self.waiters:
            return "waiting for the REPL"
        if info.returncode is not None:
            return describe_returncode(info.returncode)
        if info.lost:
            return "gone (its connection to the root ended)"
        return "running"

    def render(self) -> list[str]:
        """The process tree, one line per process, indented by depth."""
        rows = sorted(self.processes.values(), key=lambda info: (info.path, info.pid))
        width = max((2 * len(info.path) + len(info.name) for info in rows), default=0)
        lines = []
        for info in rows:
            label = "  " * (len(info.path) - 1) + info.name
            lines.append(f"{label:<{width}}  pid {info.pid:<7}  {self.state_of(info)}")
        return lines


# ---------------------------------------------------------------------------
# The server: a thread with a selectors loop.


class _Conn:
    __slots__ = ("busy_sent", "decoder", "member", "sock", "watch")

    def __init__(self, sock: socket.socket, member: int) -> None:
        self.sock = sock
        self.member = member
        self.decoder = FrameDecoder(peer="tree lock client", max_frame_size=_MAX_FRAME)
        self.watch: Path | None = None
        self.busy_sent: bool | None = None


class TreeLockServer:
    """The root's terminal lock, in a thread (see the module's docstring).

    ``start()`` binds and starts the thread; ``stop()`` writes out any held
    output, closes every connection, removes the socket file, and joins.
    *output* pairs a pipe's read end with the terminal descriptor what it
    carries is written to.
    """

    def __init__(
        self, *, root: ProcessInfo, output: Sequence[tuple[int, int]] = ()
    ) -> None:
        self.token = new_token()
        self.table = LockTable()
        self.table.join(0, name=root.name, pid=root.pid, path=root.path)
        self._output = list(output)
        self._held: list[tuple[int, bytes]] = []
        self._bound = bind_listening_socket()
        self.address: Address = self._bound.address
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = os.pipe()
        self._conns: dict[int, _Conn] = {}
        self._next_member = 1
        self._thread = threading.Thread(
            target=self._run, name="dapper-trio tree lock", daemon=True
        )
        self._stopping = False

    @property
    def busy(self) -> bool:
        """True while any process holds or waits for the terminal (any thread)."""
        return self.table.busy

    def start(self) -> None:
        self._bound.sock.setblocking(False)
        self._selector.register(self._bound.sock, selectors.EVENT_READ, "listen")
        self._selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        for read_fd, _ in self._output:
            os.set_blocking(read_fd, False)
            self._selector.register(read_fd, selectors.EVENT_READ, "output")
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread (bounded by *timeout*) and release everything."""
        self._stopping = True
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")
        self._thread.join(timeout)
        self._selector.close()
        for conn in self._conns.values():
            conn.sock.close()
        self._conns.clear()
        self._bound.close()
        os.close(self._wake_r)
        os.close(self._wake_w)

    # -- the loop --------------------------------------------------------

    def _run(self) -> None:
        while not self._stopping:
            for key, _ in self._selector.select():
                what = key.data
                if what == "listen":
                    self._accept()
                elif what == "wake":
                    with contextlib.suppress(OSError):
                        os.read(self._wake_r, 512)
                elif what == "output":
                    self._pump(key.fd)
                else:
                    self._read(what)
        # Last words: whatever the pipes still hold goes out.
        self._flush_held()
        for read_fd, _ in self._output:
            self._pump(read_fd, drain=True, hold=False)

    def _accept(self) -> None:
        try:
            sock, _ = self._bound.sock.accept()
        except OSError:
            return
        sock.setblocking(True)
        sock.settimeout(_CONNECT_TIMEOUT)  # for sends to a stuck client
        conn = _Conn(sock, self._next_member)
        self._next_member += 1
        self._selector.register(sock, selectors.EVENT_READ, conn)

    def _read(self, conn: _Conn) -> None:
        try:
            data = conn.sock.recv(_READ_SIZE)
        except OSError:
            data = b""
        if not data:
            self._drop(conn)
            return
        conn.decoder.feed(data)
        try:
            while (frame := conn.decoder.next_frame()) is not None:
                if not self._handle(conn, frame.kind, frame.payload):
                    self._drop(conn)
                    return
        except RemoteProtocolError:
            self._drop(conn)

    def _handle(self, conn: _Conn, kind: FrameKind, body: Any) -> bool:
        if conn.member not in self._conns:
            # The first frame must prove the token.
            token = body.get("token") if isinstance(body, dict) else None
            if kind != FrameKind.HANDSHAKE or not isinstance(token, str):
                return False
            if not hmac.compare_digest(token.encode(), self.token.encode()):
                return False
            self._conns[conn.member] = conn
            if body.get("watch") is not None:
                conn.watch = tuple(body["watch"])
                self._notify_watchers()
            else:
                self.table.join(
                    conn.member,
                    name=str(body["name"]),
                    pid=int(body["pid"]),
                    path=tuple(body["path"]),
                )
            return True
        if kind != FrameKind.EVENT or not isinstance(body, dict):
            return False
        op = body.get("op")
        table = self.table
        if op == "acquire":
            if table.acquire(conn.member):
                self._grant(conn.member)
            self._notify_watchers()
        elif op == "release":
            if table.holder == conn.member:
                self._hand_over(table.release(conn.member))
        elif op == "started":
            table.started(name=body["name"], pid=body["pid"], path=tuple(body["path"]))
        elif op == "exited":
            table.exited(
                pid=body["pid"], path=tuple(body["path"]), returncode=body["returncode"]
            )
        elif op == "procs":
            self._send(conn, {"op": "procs", "lines": table.render()})
        else:
            return False
        return True

    def _drop(self, conn: _Conn) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(conn.sock)
        conn.sock.close()
        self._conns.pop(conn.member, None)
        if conn.watch is None:
            self._hand_over(self.table.leave(conn.member))

    def _hand_over(self, granted: int | None) -> None:
        # The terminal is free, or changes hands: what was held goes out now,
        # so it lands between two REPLs, never inside one.
        if granted is not None:
            self._grant(granted)
        elif self.table.holder is None:
            self._flush_held()
        self._notify_watchers()

    def _grant(self, member: int) -> None:
        # Before the REPL starts: what was held, then what the pipes hold
        # (written before the request, by the new holder too).
        self._flush_held()
        for read_fd, _ in self._output:
            self._pump(read_fd, drain=True, hold=False)
        conn = self._conns.get(member)
        if conn is None:  # pragma: no cover - the table only grants members
            return
        if not self._send(
            conn, {"op": "granted", "notices": self.table.take_notices()}
        ):
            self._drop(conn)

    def _notify_watchers(self) -> None:
        for conn in list(self._conns.values()):
            if conn.watch is None:
                continue
            busy = self.table.busy_under(conn.watch)
            if busy != conn.busy_sent:
                conn.busy_sent = busy
                if not self._send(conn, {"op": "busy", "busy": busy}):
                    self._drop(conn)

    def _send(self, conn: _Conn, body: dict[str, Any]) -> bool:
        try:
            conn.sock.sendall(encode_frame(FrameKind.EVENT, body))
        except OSError:
            return False
        return True

    # -- output ----------------------------------------------------------

    def _pump(self, read_fd: int, *, drain: bool = False, hold: bool = True) -> None:
        """Copy what a pipe holds to the terminal; held while a REPL is open."""
        target = next(dest for src, dest in self._output if src == read_fd)
        while True:
            try:
                data = os.read(read_fd, _READ_SIZE)
            except OSError:  # BlockingIOError: nothing more for now
                return
            if not data:
                with contextlib.suppress(KeyError, ValueError):
                    self._selector.unregister(read_fd)
                return
            if hold and self.table.holder is not None:
                self._held.append((target, data))
            else:
                _write_all(target, data)
            if not drain:
                return

    def _flush_held(self) -> None:
        held, self._held = self._held, []
        for target, data in held:
            _write_all(target, data)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            written = os.write(fd, view)
        except BlockingIOError:  # pragma: no cover - a terminal in nonblocking mode
            select.select([], [fd], [], 1.0)
            continue
        except OSError:
            return  # the terminal is gone: nothing to show it on
        view = view[written:]


# ---------------------------------------------------------------------------
# The client of every process: blocking, usable from any thread.


class TreeLockUnavailable(Exception):
    """The root's lock service cannot be reached (it ended, or never was)."""


class TreeLockClient:
    """One process's connection to the root's lock service (made on first use).

    ``acquire()`` blocks its thread until the terminal is granted; the
    process's own REPL lock (``DebugSession.repl_turn``) makes sure only one
    thread of the process asks at a time, so answers are read by the thread
    that asked.  Notifications may be sent from any thread.
    """

    def __init__(
        self, address: str, token: str, *, name: str, pid: int, path: Path
    ) -> None:
        self._address = Address.parse(address)
        self._token = token
        self._hello = {"token": token, "name": name, "pid": pid, "path": list(path)}
        self._sock: socket.socket | None = None
        self._decoder = FrameDecoder(
            peer="tree lock service", max_frame_size=_MAX_FRAME
        )
        self._send_lock = threading.Lock()
        self._broken = False

    def _connection(self) -> socket.socket:
        if self._sock is None:
            if self._broken:
                raise TreeLockUnavailable("the connection to the root was lost")
            try:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.settimeout(_CONNECT_TIMEOUT)
                sock.connect(self._address.path)
                sock.sendall(encode_frame(FrameKind.HANDSHAKE, self._hello))
                sock.settimeout(None)
            except OSError as exc:
                self._broken = True
                raise TreeLockUnavailable(str(exc)) from exc
            self._sock = sock
        return self._sock

    def _send(self, body: dict[str, Any]) -> None:
        with self._send_lock:
            sock = self._connection()
            try:
                sock.sendall(encode_frame(FrameKind.EVENT, body))
            except OSError as exc:
                self._fail()
                raise TreeLockUnavailable(str(exc)) from exc

    def _receive(self, op: str) -> dict[str, Any]:
        sock = self._connection()
        while True:
            try:
                frame = self._decoder.next_frame()
            except RemoteProtocolError as exc:
                self._fail()
                raise TreeLockUnavailable(str(exc)) from exc
            if frame is not None:
                body = frame.payload
                if isinstance(body, dict) and body.get("op") == op:
                    return body
                continue
            try:
                data = sock.recv(_READ_SIZE)
            except OSError as exc:
                self._fail()
                raise TreeLockUnavailable(str(exc)) from exc
            if not data:
                self._fail()
                raise TreeLockUnavailable("the root closed the connection")
            self._decoder.feed(data)

    def _fail(self) -> None:
        self._broken = True
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def acquire(self) -> list[str]:
        """Wait for the terminal (blocking); return notices to show first."""
        self._send({"op": "acquire"})
        body = self._receive("granted")
        return [str(notice) for notice in body.get("notices", [])]

    def release(self) -> None:
        """Give the terminal back."""
        self._send({"op": "release"})

    def procs(self) -> list[str]:
        """The process tree as the root sees it (one line per process)."""
        self._send({"op": "procs"})
        return [str(line) for line in self._receive("procs").get("lines", [])]

    def notify(self, op: str, **body: Any) -> None:
        """Report ``started``/``exited``; silently dropped if the root is gone."""
        with contextlib.suppress(TreeLockUnavailable):
            self._send({"op": op, **body})

    def close(self) -> None:
        with self._send_lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None


# ---------------------------------------------------------------------------
# Watching a subtree, from trio (a parent stopping a child).


class SubtreeWatch:
    """Whether any process under a path holds or waits for the terminal."""

    def __init__(self) -> None:
        self.busy = False
        self._changed = trio.Event()

    def _set(self, busy: bool) -> None:
        self.busy = busy
        self._changed.set()
        self._changed = trio.Event()

    async def wait_quiet(self) -> None:
        """Return once no process under the path holds or waits."""
        while self.busy:
            await self._changed.wait()
        await trio.lowlevel.checkpoint()

    async def wait_busy(self) -> None:
        """Return once some process under the path holds or waits."""
        while not self.busy:
            await self._changed.wait()


@contextlib.asynccontextmanager
async def watch_subtree(
    address: str, token: str, path: Path
) -> AsyncIterator[SubtreeWatch]:
    """Follow the terminal's use under *path*; never busy if the root is gone."""
    watch = SubtreeWatch()
    try:
        stream = await trio.open_unix_socket(Address.parse(address).path)
    except OSError:
        yield watch
        return
    async with stream, trio.open_nursery() as nursery:
        await stream.send_all(
            encode_frame(FrameKind.HANDSHAKE, {"token": token, "watch": list(path)})
        )
        first = trio.Event()
        nursery.start_soon(_read_watch, stream, watch, first)
        with trio.move_on_after(_CONNECT_TIMEOUT):
            await first.wait()
        try:
            yield watch
        finally:
            nursery.cancel_scope.cancel()


async def _read_watch(
    stream: trio.SocketStream, watch: SubtreeWatch, first: trio.Event
) -> None:
    decoder = FrameDecoder(peer="tree lock service", max_frame_size=_MAX_FRAME)
    try:
        while True:
            data = await stream.receive_some(_READ_SIZE)
            if not data:
                break
            decoder.feed(data)
            while (frame := decoder.next_frame()) is not None:
                if isinstance(frame.payload, dict) and "busy" in frame.payload:
                    watch._set(bool(frame.payload["busy"]))
                    first.set()
    except (trio.BrokenResourceError, trio.ClosedResourceError, RemoteProtocolError):
        pass
    watch._set(False)
    first.set()

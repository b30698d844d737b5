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
socket (on Linux in the abstract namespace: no file to leave behind if the
root is killed; elsewhere in a private directory).  Its address and a
random token travel down the tree in each child's configuration (and, for
processes started another way, in the environment: see ``_tree_join``), so
every process connects to the root directly (lazily: on its first REPL or
its first child).  Messages are ``_wire`` frames: a HANDSHAKE with the
token first, then EVENT frames whose payload is ``{"op": ..., ...}``:

============  ========================================  ===================
op            from                                      answer
============  ========================================  ===================
``hello``     every connection, first (with token)      --
``acquire``   a process that wants the terminal         ``granted``, FIFO;
                                                        ``quit`` once the
                                                        program is quitting
``release``   the holder, when its REPL ends (with      --
              ``quit: true`` if the user quit)
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

Quitting.  A holder that leaves its REPL because the user quit says so in
its ``release``: the program is quitting, so no REPL opens any more.  Every
waiter, and every later ``acquire``, is answered ``quit`` at once (that
process then quits where it stands, as if the user had typed ``q`` there),
and the server calls its ``on_quit`` hook if the quitter was a process the
actor runtime does not relay errors for (the root then stops the program).

Output.  When the root's standard output is a terminal and a debug-mode
actor tree is open, the server also owns the terminal's output: the root's
fds 1 and 2 are redirected to pipes (children inherit them, at any depth;
``attach_output``), and the server thread copies what arrives to the real
terminal -- unless a REPL is open, in which case it is held, and written
when the REPL ends, before the next one is granted.  A process holding the
terminal points its own fds 1 and 2 back at the real terminal for the length
of its REPL.

Latency.  A handoff is one ``release`` frame, one ``granted`` frame, and
no timer anywhere: the server blocks in ``select`` and the waiter in
``recv``.  A waiter asks first (``request``), then prepares its REPL while
it waits (see ``_actor_debug``), then reads its answer (``wait``).

Known holes.  A process whose loop is blocked for another reason while its
child dies still learns of the death late; the root does not.  The token
travels in the environment, as the actor runtime's does.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import os
import queue
import select
import selectors
import signal
import socket
import sys
import threading
import weakref
from collections.abc import AsyncIterator, Callable, Sequence
from typing import TYPE_CHECKING, Any, Literal

from ._sockets import Address, bind_listening_socket, new_token, tokens_equal
from ._wire import FrameDecoder, FrameKind, RemoteProtocolError, encode_frame

if TYPE_CHECKING:
    import trio

__all__ = [
    "LockTable",
    "SubtreeWatch",
    "TreeLockClient",
    "TreeLockServer",
    "Turn",
    "watch_subtree",
]

_MAX_FRAME = 256 * 1024
_READ_SIZE = 65536
#: A client gives up connecting (or waiting for an answer to ``procs``) after this.
_CONNECT_TIMEOUT = 5.0

Path = tuple[str, ...]
#: What a member is: the tree's root, a child actor (its errors, a quit
#: included, travel up to its parent), or another process of the program.
Kind = Literal["root", "actor", "process"]


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
    kind: Kind = "actor"


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
        #: Set when a holder quit: the program is stopping, no REPL opens.
        self.quitting = False

    # -- membership ------------------------------------------------------

    def join(
        self, member: int, *, name: str, pid: int, path: Path, kind: Kind = "actor"
    ) -> None:
        """A process connected."""
        info = self.processes.get(pid)
        if info is None or info.path != path:
            info = self.processes[pid] = ProcessInfo(name, pid, path, kind=kind)
        info.kind = kind
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
        if self.quitting:
            raise ValueError("the program is quitting: no REPL opens any more")
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

    def quit(self, member: int) -> list[int]:
        """*member* leaves its REPL by quitting; return the waiters turned away.

        From now on the program is quitting: nobody holds or waits, and
        ``acquire`` refuses.
        """
        if self.holder != member:
            raise ValueError(f"member {member} does not hold the terminal")
        self.holder = None
        self.quitting = True
        turned_away = list(self.waiters)
        self.waiters.clear()
        return turned_away

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

    def busy_elsewhere(self, pid: int) -> bool:
        """True while a process other than *pid* holds or waits.

        (The root asks this about itself: its own REPLs it knows of, and
        its ``release`` may not have been read yet.)
        """
        involved = list(self.waiters)
        if self.holder is not None:
            involved.append(self.holder)
        return any(
            (info := self.members.get(member)) is None or info.pid != pid
            for member in involved
        )

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
        # (A process can be two members: the root's own REPLs take the
        # terminal as member 0, beside its client connection.)
        members = [k for k, m in self.members.items() if m is info]
        if self.holder is not None and self.holder in members:
            return "in the REPL"
        if any(member in self.waiters for member in members):
            return "waiting for the REPL"
        if info.returncode is not None:
            return describe_returncode(info.returncode)
        if info.lost:
            return "gone (its connection to the root ended)"
        return "running"

    def render(self) -> list[str]:
        """The process tree, one line per process, indented by depth.

        A process between two known ones that never connected (started
        outside the actor runtime, and never asked for the terminal) gets a
        line of its own, without a pid.
        """
        known = {info.path for info in self.processes.values()}
        rows: list[tuple[Path, int, str, str]] = [
            (info.path, info.pid, f"pid {info.pid:<7}", self.state_of(info))
            for info in self.processes.values()
        ]
        for info in self.processes.values():
            for depth in range(1, len(info.path)):
                prefix = info.path[:depth]
                if prefix not in known:
                    known.add(prefix)
                    rows.append((prefix, 0, f"{'':<11}", "(not connected)"))
        rows.sort(key=lambda row: (row[0], row[1]))
        width = max((2 * len(path) + len(path[-1]) for path, *_ in rows), default=0)
        lines = []
        for path, _, pid, state in rows:
            label = "  " * (len(path) - 1) + path[-1]
            lines.append(f"{label:<{width}}  {pid}  {state}")
        return lines


# ---------------------------------------------------------------------------
# The server: a thread with a selectors loop.


_ABSTRACT_NAMESPACE = sys.platform.startswith("linux")


def _bind() -> tuple[socket.socket, str, Callable[[], None]]:
    """A listening socket for the lock: (socket, address text, undo).

    On Linux in the abstract namespace (the address is ``unix:@NAME``): no
    file, so a root killed by a signal leaves nothing behind.  Elsewhere a
    socket file in a private directory.
    """
    if _ABSTRACT_NAMESPACE:
        name = f"dapper-trio-tree-{new_token()[:32]}"
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(f"\0{name}")
            sock.listen(128)
        except BaseException:
            sock.close()
            raise
        return sock, f"unix:@{name}", sock.close
    bound = bind_listening_socket()  # pragma: no cover - not Linux
    return bound.sock, str(bound.address), bound.close  # pragma: no cover


def _socket_path(address: str) -> str:
    """What to connect to for *address* (``unix:@NAME``: the abstract NAME)."""
    path = Address.parse(address).path
    return f"\0{path[1:]}" if path.startswith("@") else path


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

    ``start()`` starts the thread; ``stop()`` writes out any held output,
    closes every connection and the listening socket, and joins.
    *output* pairs a pipe's read end with the terminal descriptor what it
    carries is written to (more can be attached later: ``attach_output``).
    *on_quit* is called, in the server's thread, when a process that is not
    a child actor quits the debugger.  *gate*, if given, is called once (in
    a thread of its own) before the first grant to another process, which
    waits until it returns: ``dapper-trio run`` passes the wait for its
    supervisor, so that no REPL anywhere in the tree opens before the
    supervisor ignores Ctrl-C (see ``DebugSession.repl_gate``).
    """

    def __init__(
        self,
        *,
        root: ProcessInfo,
        output: Sequence[tuple[int, int]] = (),
        on_quit: Callable[[], object] | None = None,
        gate: Callable[[], object] | None = None,
    ) -> None:
        self.token = new_token()
        self._gate = gate
        self._gate_waiting = False
        self.table = LockTable()
        self.table.join(0, name=root.name, pid=root.pid, path=root.path, kind="root")
        self._output: list[tuple[int, int]] = []
        self._initial_output = list(output)
        self._held: list[tuple[int, bytes]] = []
        self._on_quit = on_quit
        self._listener, self.address, self._unbind = _bind()
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = os.pipe()
        self._commands: queue.SimpleQueue[
            tuple[Callable[..., None], tuple[Any, ...], threading.Event]
        ] = queue.SimpleQueue()
        self._conns: dict[int, _Conn] = {}
        self._next_member = 1
        self._thread = threading.Thread(
            target=self._run, name="dapper-trio tree lock", daemon=True
        )
        self._stopping = False
        #: Held while the service thread handles an event, and by this
        #: process's own REPLs taking the terminal without a round trip
        #: (``acquire_here``).
        self._lock = threading.RLock()
        self._pid = os.getpid()

    @property
    def busy(self) -> bool:
        """True while any process holds or waits for the terminal (any thread)."""
        return self.table.busy

    def busy_elsewhere(self) -> bool:
        """True while a process other than this one holds or waits (any thread)."""
        return self.table.busy_elsewhere(os.getpid())

    def start(self) -> None:
        self._listener.setblocking(False)
        self._selector.register(self._listener, selectors.EVENT_READ, "listen")
        self._selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._attach(self._initial_output)
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
        self._unbind()
        os.close(self._wake_r)
        os.close(self._wake_w)

    def attach_output(self, output: Sequence[tuple[int, int]]) -> None:
        """Copy each pipe to its terminal descriptor from now on (any thread)."""
        self._in_thread(self._attach, list(output))

    def detach_output(self) -> None:
        """Write out what the pipes hold and stop reading them (any thread).

        Returns once that is done; the descriptors are the caller's to close.
        """
        self._in_thread(self._detach)

    def _in_thread(self, fn: Callable[..., None], *args: Any) -> None:
        if not self._thread.is_alive():
            fn(*args)  # not started, or stopped: nobody else touches the state
            return
        done = threading.Event()
        self._commands.put((fn, args, done))
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")
        done.wait(_CONNECT_TIMEOUT)

    # -- the loop --------------------------------------------------------

    def _run(self) -> None:
        while not self._stopping:
            for key, _ in self._selector.select():
                with self._lock:
                    self._dispatch(key)
        with self._lock:
            self._run_commands()
        # Last words: whatever the pipes still hold goes out.
        self._flush_held()
        for read_fd, _ in self._output:
            self._pump(read_fd, drain=True, hold=False)

    def _dispatch(self, key: selectors.SelectorKey) -> None:
        what = key.data
        if what == "listen":
            self._accept()
        elif what == "wake":
            with contextlib.suppress(OSError):
                os.read(self._wake_r, 512)
            self._run_commands()
        elif what == "output":
            self._pump(key.fd)
        else:
            self._read(what)

    # -- this process's own REPLs ---------------------------------------------

    def acquire_here(self) -> Turn | None:
        """Take the terminal for this (the serving) process if it is free now.

        No round trip through the service thread: the common case of a
        program debugged alone pays nothing for the tree.  None if another
        process holds or waits (ask through a client then, and wait).
        """
        if os.getpid() != self._pid or not self._thread.is_alive():
            return None  # a forked child's copy of the service: not the service
        with self._lock:
            table = self.table
            if table.quitting:
                return Turn([], quitting=True)
            if table.holder is not None or table.waiters:
                return None
            table.acquire(0)
            self._flush_held()
            for read_fd, _ in self._output:
                self._pump(read_fd, drain=True, hold=False)
            notices = table.take_notices()
            self._notify_watchers()
            return Turn(notices)

    def release_here(self, *, quit: bool = False) -> None:
        """Give back the terminal ``acquire_here`` took."""
        with self._lock:
            if self.table.holder != 0:
                return
            if quit:
                self._quit(0)
            else:
                self._hand_over(self.table.release(0))

    def _run_commands(self) -> None:
        while True:
            try:
                fn, args, done = self._commands.get_nowait()
            except queue.Empty:
                return
            try:
                fn(*args)
            finally:
                done.set()

    def _attach(self, output: list[tuple[int, int]]) -> None:
        for read_fd, dest in output:
            os.set_blocking(read_fd, False)
            self._selector.register(read_fd, selectors.EVENT_READ, "output")
            self._output.append((read_fd, dest))

    def _detach(self) -> None:
        self._flush_held()
        for read_fd, _ in self._output:
            self._pump(read_fd, drain=True, hold=False)
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(read_fd)
        self._output = []

    def _accept(self) -> None:
        try:
            sock, _ = self._listener.accept()
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
            if not tokens_equal(token, self.token):
                return False
            self._conns[conn.member] = conn
            if body.get("watch") is not None:
                conn.watch = tuple(body["watch"])
                self._notify_watchers()
            else:
                kind_of = body.get("kind", "actor")
                self.table.join(
                    conn.member,
                    name=str(body["name"]),
                    pid=int(body["pid"]),
                    path=tuple(body["path"]),
                    kind=kind_of if kind_of in ("root", "process") else "actor",
                )
            return True
        if kind != FrameKind.EVENT or not isinstance(body, dict):
            return False
        op = body.get("op")
        table = self.table
        if op == "acquire":
            if table.quitting:
                self._turn_away(conn.member)
            elif table.acquire(conn.member):
                self._grant(conn.member)
            self._notify_watchers()
        elif op == "release":
            if table.holder == conn.member and body.get("quit"):
                self._quit(conn.member)
            elif table.holder == conn.member:
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

    def _quit(self, member: int) -> None:
        # The holder's user quit: nobody else gets a REPL; what was held
        # goes out; the root stops the program if the actor runtime will
        # not carry the quit up (see on_quit).
        for waiter in self.table.quit(member):
            self._turn_away(waiter)
        self._flush_held()
        self._notify_watchers()
        info = self.table.members.get(member)
        if self._on_quit is not None and info is not None and info.kind == "process":
            self._on_quit()

    def _turn_away(self, member: int) -> None:
        conn = self._conns.get(member)
        if conn is not None and not self._send(conn, {"op": "quit"}):
            self._drop(conn)

    def _grant(self, member: int) -> None:
        if self._gate is not None and member != 0:
            # Until the gate opens, the table's holder waits for its grant.
            if not self._gate_waiting:
                self._gate_waiting = True
                threading.Thread(
                    target=self._wait_at_gate,
                    args=(self._gate,),
                    name="dapper-trio tree lock gate",
                    daemon=True,
                ).start()
            return
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

    def _wait_at_gate(self, gate: Callable[[], object]) -> None:
        try:
            gate()
        finally:
            self._in_thread(self._open_gate)

    def _open_gate(self) -> None:
        self._gate = None
        holder = self.table.holder
        if not self._stopping and holder is not None and holder != 0:
            self._grant(holder)

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


@dataclasses.dataclass(frozen=True)
class Turn:
    """The root's answer to a request for the terminal."""

    #: Death notices to show before the REPL (who died holding the terminal).
    notices: list[str]
    #: The program is quitting: no REPL opens; quit where you stand.
    quitting: bool = False


class TreeLockClient:
    """One process's connection to the root's lock service (made on first use).

    ``request()`` then ``wait()`` (or ``acquire()``, both) blocks its thread
    until the terminal is granted; the process's own REPL lock
    (``DebugSession.repl_turn``) makes sure only one thread of the process
    asks at a time, so answers are read by the thread that asked.
    Notifications may be sent from any thread.  In a child made by
    ``os.fork()`` the client starts afresh (a new connection, as the new
    process), named by ``rename()``.
    """

    def __init__(
        self,
        address: str,
        token: str,
        *,
        name: str,
        pid: int,
        path: Path,
        kind: Kind = "actor",
    ) -> None:
        self._path = _socket_path(address)
        self._token = token
        self._hello: dict[str, Any] = {
            "token": token,
            "name": name,
            "pid": pid,
            "path": list(path),
            "kind": kind,
        }
        self._sock: socket.socket | None = None
        self._decoder = FrameDecoder(
            peer="tree lock service", max_frame_size=_MAX_FRAME
        )
        self._send_lock = threading.Lock()
        self._broken = False
        _forget_after_fork.add(self)

    @property
    def path(self) -> Path:
        """This process's path from the root, as the root knows it."""
        return tuple(self._hello["path"])

    def rename(self, *, name: str, path: Path, kind: Kind | None = None) -> None:
        """Change who this process says it is (before it first connects)."""
        self._hello.update(name=name, path=list(path), pid=os.getpid())
        if kind is not None:
            self._hello["kind"] = kind

    def _after_fork(self) -> None:
        # In the child: the connection is the parent's.  Closing this copy
        # of its descriptor leaves it open in the parent.
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self._decoder = FrameDecoder(
            peer="tree lock service", max_frame_size=_MAX_FRAME
        )
        self._send_lock = threading.Lock()
        self._broken = False
        self._hello["pid"] = os.getpid()

    def _connection(self) -> socket.socket:
        if self._sock is None:
            if self._broken:
                raise TreeLockUnavailable("the connection to the root was lost")
            try:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.settimeout(_CONNECT_TIMEOUT)
                sock.connect(self._path)
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

    def _receive(self, *ops: str) -> dict[str, Any]:
        sock = self._connection()
        while True:
            try:
                frame = self._decoder.next_frame()
            except RemoteProtocolError as exc:
                self._fail()
                raise TreeLockUnavailable(str(exc)) from exc
            if frame is not None:
                body = frame.payload
                if isinstance(body, dict) and body.get("op") in ops:
                    return body
                continue
            try:
                data = sock.recv(_READ_SIZE)
            except InterruptedError:  # pragma: no cover - Python retries EINTR
                continue
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

    def request(self) -> None:
        """Ask for the terminal (returns at once: the answer is ``wait()``'s)."""
        self._send({"op": "acquire"})

    def wait(self) -> Turn:
        """Block until the root answers the request: granted, or quitting."""
        body = self._receive("granted", "quit")
        if body["op"] == "quit":
            return Turn([], quitting=True)
        return Turn([str(notice) for notice in body.get("notices", [])])

    def acquire(self) -> Turn:
        """``request()`` and ``wait()``."""
        self.request()
        return self.wait()

    def release(self, *, quit: bool = False) -> None:
        """Give the terminal back (*quit*: the user quit the debugger)."""
        self._send({"op": "release", "quit": quit})

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


_forget_after_fork: weakref.WeakSet[TreeLockClient] = weakref.WeakSet()


def _clients_after_fork() -> None:
    for client in list(_forget_after_fork):
        client._after_fork()


os.register_at_fork(after_in_child=_clients_after_fork)


# ---------------------------------------------------------------------------
# Watching a subtree, from trio (a parent stopping a child).


class SubtreeWatch:
    """Whether any process under a path holds or waits for the terminal.

    Used from trio code only; trio is imported here, not at module level:
    a debuggee imports this module whether or not its program uses trio.
    """

    def __init__(self) -> None:
        import trio

        self.busy = False
        self._changed = trio.Event()

    def _set(self, busy: bool) -> None:
        self.busy = busy
        self._changed.set()
        self._changed = type(self._changed)()

    async def wait_quiet(self) -> None:
        """Return once no process under the path holds or waits."""
        while self.busy:
            await self._changed.wait()
        import trio

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
    import trio

    watch = SubtreeWatch()
    try:
        stream = await trio.open_unix_socket(_socket_path(address))
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
    import trio

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

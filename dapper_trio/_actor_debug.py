"""Debug mode in each process: the tree's terminal, Ctrl-C, crash REPLs.

``_tree_lock`` is the lock service and its protocol; this module plugs it
into a process:

* in the process that serves the lock (the root of a debug-mode actor tree,
  or the program's process under ``dapper-trio run``, see ``_tree_join``):
  run the service (``start_service()``), redirect this process's output
  through it while a debug-mode actor tree is open and stdout is a terminal
  (``tree_debug()``), and shield the tree from Ctrl-C while a REPL is open
  or awaited (``_SigintGuard``, or the debug session's own handler);
* in every process that takes part, root included: hand the debug session a
  ``TreeTerminal``, so that every REPL -- ``breakpoint()``, ``set_trace()``,
  a post-mortem -- first takes the tree's terminal from the root, and reads
  and writes the real terminal while it holds it;
* ``open_crash_repl()``: the ``crash_repl`` policy, deciding where a crash
  opens a post-mortem REPL.

Handoff latency.  A REPL's first prompt used to cost a process far more
after the grant than the grant itself (under a millisecond): pdbpp builds
its completer on a process's first REPL, which imports pyrepl, and pyrepl
builds its reader on the first prompt -- 20-70 ms on a loaded machine.  A
waiting process now asks for the terminal first, then does that work while
it waits (``_prepare_repl``): in ``benchmarks/tree.py`` the median handoff
went from 88 ms to 21 ms on a loaded 2-CPU machine.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import sys
import threading
import types
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from . import _trio_import
from ._actor_context import Actor, ChildConfig, current_actor
from ._actor_errors import ProcessDied, RemoteError, format_path
from ._tree_lock import (
    Kind,
    ProcessInfo,
    TreeLockClient,
    TreeLockServer,
    TreeLockUnavailable,
    Turn,
)

if TYPE_CHECKING:
    from ._repl import TrioPdb

if sys.version_info < (3, 11):  # pragma: no cover - exercised on 3.10 only
    from exceptiongroup import BaseExceptionGroup


@dataclasses.dataclass(frozen=True)
class TreeDebug:
    """How this process reaches its tree's terminal lock (and terminal)."""

    address: str
    token: str
    #: A descriptor of the real terminal (inherited by child actors), or
    #: None when the root's output is not redirected through the lock.
    tty_fd: int | None
    client: TreeLockClient
    #: This process's fds 1 and 2 are the root's pipes (a descendant of a
    #: root whose output goes through the lock): a REPL points them at
    #: ``/dev/tty`` when no ``tty_fd`` was inherited.
    output_held: bool = False
    #: The root's standard input is a terminal: a REPL whose fd 0 is not
    #: one (a ``multiprocessing`` child's) reads ``/dev/tty`` instead.
    terminal_input: bool = False
    #: True while another process holds or waits for the terminal (set in
    #: the process that runs the service; its own REPLs it knows of).
    busy: Callable[[], bool] | None = None
    #: The lock service, in the process that runs it: its own REPLs take the
    #: terminal directly when it is free.
    server: TreeLockServer | None = None

    def notify(self, op: str, **body: Any) -> None:
        """Tell the root about a child started or reaped (for ``procs``)."""
        self.client.notify(op, **body)


class TreeTerminal:
    """What the debug session calls around each REPL (``DebugSession.tree``)."""

    def __init__(self, tree: TreeDebug) -> None:
        self._tree = tree

    @contextlib.contextmanager
    def hold(self, debugger: TrioPdb) -> Iterator[bool]:
        """Wait for the tree's terminal; read and write it while the REPL runs.

        Yields False, without holding anything, if the program is quitting
        (a user quit in another REPL): no REPL is to open.
        """
        client = self._tree.client
        server = self._tree.server
        acquired = False
        here = server.acquire_here() if server is not None else None
        if here is not None:
            turn = here
            try:
                if not turn.quitting:
                    _prepare_repl(debugger)
                    with _at_terminal(self._tree, debugger, turn):
                        yield True
            finally:
                if server is not None and not turn.quitting:
                    server.release_here(quit=bool(debugger.quitting))
            if turn.quitting:
                yield False
            return
        with _sigint_dropped():
            try:
                client.request()
                _prepare_repl(debugger)
                turn = client.wait()
                acquired = not turn.quitting
            except TreeLockUnavailable as exc:
                turn = Turn(
                    [
                        f"the tree's terminal lock cannot be reached ({exc}); this"
                        " REPL does not wait for the others"
                    ]
                )
        if turn.quitting:
            yield False
            return
        try:
            with _at_terminal(self._tree, debugger, turn):
                yield True
        finally:
            if acquired:
                with contextlib.suppress(TreeLockUnavailable):
                    client.release(quit=bool(debugger.quitting))

    def busy(self) -> bool:
        """True while another process holds or waits (False if unknown here)."""
        busy = self._tree.busy
        return busy is not None and busy()

    def procs(self) -> list[str]:
        """The tree's processes and their states, one line each."""
        return self._tree.client.procs()


@contextlib.contextmanager
def _at_terminal(tree: TreeDebug, debugger: TrioPdb, turn: Turn) -> Iterator[None]:
    """A REPL's turn: its streams on the tree's terminal, the turn's notices
    shown first; the streams put back after."""
    restore = _point_streams_at_terminal(tree)
    try:
        for notice in turn.notices:
            debugger.message(f"[dapper-trio] {notice}")
        yield
    finally:
        restore()


def _prepare_repl(debugger: TrioPdb) -> None:
    """Do now, while waiting, what a process's first REPL would do first.

    pdbpp's completer imports its line editor (pyrepl) on the first REPL of
    a process, and pyrepl builds its reader (keymaps, the terminal's
    capabilities) on the first prompt: most of a handoff otherwise.  Nothing
    here touches the terminal, which another process holds.
    """
    if getattr(debugger, "fancycompleter", None) is not None:
        return  # not this process's first REPL
    with contextlib.suppress(Exception):
        import fancycompleter

        line_editor, _ = fancycompleter.DefaultConfig().find_best_readline()
        _prepare_reader(line_editor)


def _prepare_reader(line_editor: Any) -> None:
    # pyrepl's reader reads and writes the descriptors its _setup() picks
    # (those of sys.stdin and sys.stdout) once they are the terminal; they
    # will be during the REPL (_point_streams_at_terminal), so build it on
    # them now.  Only for the pyrepl this was written against.
    wrapper = getattr(line_editor, "_wrapper", None)
    if (
        getattr(line_editor, "__name__", None) != "pyrepl.readline"
        or wrapper is None
        or getattr(wrapper, "reader", True) is not None
    ):
        return
    wrapper.f_in, wrapper.f_out = sys.stdin.fileno(), sys.stdout.fileno()
    wrapper.get_reader()


def _drop_sigint(signum: int, frame: types.FrameType | None) -> None:
    return None


@contextlib.contextmanager
def _sigint_dropped() -> Iterator[None]:
    """Ctrl-C does nothing while this thread waits for its turn (main thread)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)
    signal.signal(signal.SIGINT, _drop_sigint)
    try:
        yield
    finally:
        if signal.getsignal(signal.SIGINT) == _drop_sigint:
            signal.signal(signal.SIGINT, previous)


def _flush_std_streams() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(ValueError, OSError, AttributeError):
            stream.flush()


def _fileno(stream: Any) -> int | None:
    try:
        return int(stream.fileno())
    except (AttributeError, ValueError, OSError):
        return None


def _open_terminal() -> int | None:
    try:
        return os.open("/dev/tty", os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError:
        return None


def _point_streams_at_terminal(tree: TreeDebug) -> Callable[[], None]:
    """Point this process's fds at the real terminal, for one REPL.

    fds 1 and 2 when they are the root's pipes; ``sys.stdin``'s when the
    root's input is a terminal and this process's is not (``multiprocessing``
    points it at ``/dev/null``).  Returns the undo.
    """
    _flush_std_streams()
    opened: int | None = None
    moves: list[tuple[int, int]] = []
    out = tree.tty_fd
    if out is None and tree.output_held and not _is_terminal(1):
        out = opened = _open_terminal()
    if out is not None:
        moves += [(out, 1), (out, 2)]
    stdin = _fileno(sys.stdin)
    if tree.terminal_input and stdin is not None and not _is_terminal(stdin):
        if opened is None:
            opened = _open_terminal()
        if opened is not None:
            moves.append((opened, stdin))
    saved = [(os.dup(target), target) for _, target in moves]
    for source, target in moves:
        os.dup2(source, target)

    def restore() -> None:
        _flush_std_streams()
        for copy, target in saved:
            os.dup2(copy, target)
            os.close(copy)
        if opened is not None:
            os.close(opened)

    return restore


# ---------------------------------------------------------------------------
# The process that serves the lock: the service, the output pipes, Ctrl-C.


class _SigintGuard:
    """Drops Ctrl-C while the tree's terminal is held or awaited.

    Wraps the handler installed when debug mode starts (trio's, in a plain
    ``python`` program); installed from the main thread only, and removed
    only if it is still the installed handler.  A REPL in this process
    installs the session's own handler on top while it runs.  (Under
    ``dapper-trio run`` the session's handler asks the terminal itself.)
    """

    def __init__(self, server: TreeLockServer) -> None:
        self._server = server
        self._previous: Any = None
        self._installed = False

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        previous = signal.getsignal(signal.SIGINT)
        if not callable(previous):
            return  # ignored (or default-by-C): nothing to guard
        self._previous = previous
        signal.signal(signal.SIGINT, self._handle)
        self._installed = True

    def uninstall(self) -> None:
        if self._installed and signal.getsignal(signal.SIGINT) == self._handle:
            signal.signal(signal.SIGINT, self._previous)
        self._installed = False

    def _handle(self, signum: int, frame: types.FrameType | None) -> None:
        if self._server.busy_elsewhere():
            return  # a REPL is open or awaited somewhere: nothing is cancelled
        self._previous(signum, frame)


class _Service:
    """The lock service this process runs, and its own client of it."""

    def __init__(
        self,
        *,
        name: str,
        path: tuple[str, ...],
        on_quit: Callable[[], object] | None = None,
        gate: Callable[[], object] | None = None,
        guard: bool,
    ) -> None:
        pid = os.getpid()
        self.server = TreeLockServer(
            root=ProcessInfo(name, pid, path, kind="root"), on_quit=on_quit, gate=gate
        )
        self.server.start()
        client = TreeLockClient(
            str(self.server.address),
            self.server.token,
            name=name,
            pid=pid,
            path=path,
            kind="root",
        )
        self.tree = TreeDebug(
            address=str(self.server.address),
            token=self.server.token,
            tty_fd=None,
            client=client,
            terminal_input=_is_terminal(0),  # for children made by os.fork()
            busy=self.server.busy_elsewhere,
            server=self.server,
        )
        self._guard: _SigintGuard | None = None
        if guard:
            self._guard = _SigintGuard(self.server)
            self._guard.install()
        self._output: _Output | None = None

    def redirect_output(self) -> None:
        """Send fds 1 and 2 through the service, if stdout is a terminal."""
        if self._output is None and _is_terminal(1):
            self._output = _Output(self.server)
            self.tree = dataclasses.replace(self.tree, tty_fd=self._output.tty_fd)

    def restore_output(self) -> None:
        output, self._output = self._output, None
        if output is not None:
            output.close()
            self.tree = dataclasses.replace(self.tree, tty_fd=None)

    def close(self) -> None:
        if self._guard is not None:
            self._guard.uninstall()
        self.tree.client.close()
        self.restore_output()
        self.server.stop()  # writes out what the pipes still hold


class _Output:
    """This process's fds 1 and 2 redirected to pipes the service copies."""

    def __init__(self, server: TreeLockServer) -> None:
        self._server = server
        _flush_std_streams()
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        self._saved = os.dup(1), os.dup(2)
        os.dup2(out_w, 1)
        os.dup2(err_w, 2)
        os.close(out_w)
        os.close(err_w)
        self._pipes = [out_r, err_r]
        #: The real terminal (what fd 1 was), for the REPLs of the tree.
        self.tty_fd = self._saved[0]
        server.attach_output([(out_r, self._saved[0]), (err_r, self._saved[1])])

    def close(self) -> None:
        _flush_std_streams()
        os.dup2(self._saved[0], 1)
        os.dup2(self._saved[1], 2)
        self._server.detach_output()  # what the pipes hold goes out first
        for fd in [*self._pipes, *self._saved]:
            os.close(fd)


def _is_terminal(fd: int) -> bool:
    try:
        return os.isatty(fd)
    except OSError:  # pragma: no cover - a closed descriptor
        return False


_service: _Service | None = None
_service_users = 0  # start_service() and each debug-mode nursery
_nurseries = 0  # debug-mode nurseries open in this process
_inherited: TreeDebug | None = None


def start_service(
    *,
    name: str,
    path: tuple[str, ...],
    on_quit: Callable[[], object] | None,
    gate: Callable[[], object] | None = None,
) -> TreeDebug:
    """Serve the terminal lock from this process (``dapper-trio run``'s program).

    Debug-mode actor nurseries opened here use it too; ``stop_service()``
    ends it.  The process's REPLs keep their header's name.  Other
    processes get the terminal only once *gate* has returned (see
    ``TreeLockServer``).
    """
    global _service, _service_users
    assert _service is None, "this process serves a lock already"
    _service = _Service(name=name, path=path, on_quit=on_quit, gate=gate, guard=False)
    _service_users += 1
    _install_terminal(_service.tree, process_name=None)
    return _service.tree


def stop_service() -> None:
    """End what ``start_service()`` started (once every nursery has ended)."""
    _release_service()


def _release_service() -> None:
    global _service, _service_users
    _service_users -= 1
    if _service_users == 0 and _service is not None:
        service, _service = _service, None
        _uninstall_terminal()
        service.close()
        from ._tree_join import unexport

        unexport()


@contextlib.contextmanager
def tree_debug() -> Iterator[TreeDebug]:
    """The tree's terminal lock, for a debug-mode nursery of this process.

    In a process that takes part in a tree or session served elsewhere: that
    one.  Otherwise this process serves it (from its first debug-mode
    nursery on, unless ``start_service()`` did already), and its output goes
    through it while a debug-mode nursery is open.
    """
    global _service, _service_users, _nurseries
    from ._session import get_session
    from ._tree_join import export

    get_session()  # a process of a debugged program joins its session now
    if _inherited is not None:
        yield _inherited
        return
    me = current_actor()
    if _service is None:
        _service = _Service(name=me.name, path=me.path, guard=True)
        _install_terminal(_service.tree, process_name=describe(me.path, "actor"))
    service = _service
    _service_users += 1
    _nurseries += 1
    try:
        if _nurseries == 1:
            service.redirect_output()
            _install_terminal(service.tree)
            export(service.tree, path=me.path)
        yield service.tree
    finally:
        _nurseries -= 1
        if _nurseries == 0:
            service.restore_output()
            _install_terminal(service.tree)
            export(service.tree, path=me.path)
        _release_service()


def join_tree(config: ChildConfig, actor: Actor) -> None:
    """In a debug-mode child at start-up: connect REPLs to the root's lock."""
    if config.tree_address is None or config.tree_token is None:
        return
    from ._tree_join import session_flags

    with contextlib.suppress(AttributeError, ValueError):
        # Output goes through a pipe now: keep lines whole and timely.
        sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    output_held, terminal_input = session_flags()
    join(
        TreeDebug(
            address=config.tree_address,
            token=config.tree_token,
            tty_fd=config.tty_fd,
            output_held=output_held,
            terminal_input=terminal_input,
            client=TreeLockClient(
                config.tree_address,
                config.tree_token,
                name=actor.name,
                pid=actor.pid,
                path=actor.path,
            ),
        ),
        process_name=describe(actor.path, "actor"),
    )


def join(tree: TreeDebug, *, process_name: str) -> None:
    """Take part in a tree or session served by another process."""
    global _inherited
    _inherited = tree
    _install_terminal(tree, process_name=process_name)


def joined() -> TreeDebug | None:
    """The tree or session this process takes part in, if any."""
    if _inherited is not None:
        return _inherited
    return _service.tree if _service is not None else None


def describe(path: tuple[str, ...], kind: Kind) -> str:
    """How a REPL's header names a process of the tree."""
    return f"actor {format_path(path)}" if kind != "process" else format_path(path)


_process_name_before: str | None = None
_UNCHANGED = "\0unchanged"


def _install_terminal(
    tree: TreeDebug, *, process_name: str | None = _UNCHANGED
) -> None:
    """Route this process's REPLs through the tree's terminal lock.

    *process_name*: how headers name this process from now on (None: as
    before; by default: unchanged since the last call).
    """
    global _process_name_before
    from ._session import get_session

    session = get_session()
    session.tree = TreeTerminal(tree)
    if process_name is _UNCHANGED:
        return
    if _process_name_before is None:
        _process_name_before = session.process_name
    session.process_name = process_name or _process_name_before


def _uninstall_terminal() -> None:
    global _process_name_before
    from ._session import get_session

    session = get_session()
    session.tree = None
    if _process_name_before is not None:
        session.process_name = _process_name_before
        _process_name_before = None


def _after_fork_in_child() -> None:
    # A child made by os.fork() takes part in the tree as a process of its
    # own (``_tree_join`` names it); the lock service stays its parent's.
    global _service, _service_users, _nurseries, _inherited
    if _service is not None:
        tree = _service.tree
        _inherited = dataclasses.replace(
            tree, busy=None, output_held=tree.tty_fd is not None
        )
        _service, _service_users, _nurseries = None, 0, 0


os.register_at_fork(after_in_child=_after_fork_in_child)


# ---------------------------------------------------------------------------
# Crash REPLs


def _local_errors(exc: BaseException) -> list[BaseException]:
    """The leaves of *exc* raised here (not relayed from a child, not Cancelled)."""
    if isinstance(exc, BaseExceptionGroup):
        found: list[BaseException] = []
        for inner in exc.exceptions:
            found.extend(_local_errors(inner))
        return found
    trio = _trio_import.loaded()
    if isinstance(exc, (RemoteError, ProcessDied)) or (
        trio is not None and isinstance(exc, trio.Cancelled)
    ):
        return []
    return [exc]


def _relays(exc: BaseException) -> bool:
    if isinstance(exc, BaseExceptionGroup):
        return any(_relays(inner) for inner in exc.exceptions)
    return isinstance(exc, RemoteError)


def wants_crash_repl(exc: BaseException, actor: Actor, *, in_root: bool) -> bool:
    """Whether *exc*, about to leave a call (child) or arrive (root), opens a REPL.

    ``origin``: only in the process the error started in; ``every-hop``:
    there and in every process it is relayed through, the root included;
    ``root``: only in the root, on the ``RemoteError`` that arrives there.
    Quitting the debugger and cancellation never open one.
    """
    from ._session import get_session, is_quit

    session = get_session()
    if session.disabled or is_quit(exc, quit_requested=session.quit_requested):
        return False
    policy = actor.crash_repl
    if in_root:
        return policy in ("every-hop", "root") and _relays(exc)
    if policy == "root":
        return False
    if policy == "origin":
        return bool(_local_errors(exc))
    return bool(_local_errors(exc)) or _relays(exc)


def open_crash_repl(exc: BaseException) -> None:
    """Open a post-mortem REPL on *exc* now (blocking this process)."""
    from ._api import post_mortem_sync
    from ._session import breakpoints_disabled

    if not breakpoints_disabled():
        post_mortem_sync(exc)

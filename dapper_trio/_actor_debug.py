"""Debug mode of an actor tree, in each process: the terminal, Ctrl-C, crash REPLs.

``_tree_lock`` is the root's lock service and its protocol; this module
plugs it into a process:

* in the process that opens the first debug-mode nursery of a tree (its
  root): start the service (``tree_debug()``), redirect this process's
  output through it when stdout is a terminal, and shield the tree from
  Ctrl-C while a REPL is open or awaited (``_SigintGuard``);
* in every debug-mode process, root included: hand the debug session a
  ``TreeTerminal``, so that every REPL -- ``breakpoint()``, ``set_trace()``,
  a post-mortem -- first takes the tree's terminal from the root, and writes
  to the real terminal while it holds it;
* ``open_crash_repl()``: the ``crash_repl`` policy, deciding where a crash
  opens a post-mortem REPL.
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

import trio

from ._actor_context import Actor, ChildConfig, current_actor
from ._actor_errors import ProcessDied, RemoteError, format_path
from ._tree_lock import (
    ProcessInfo,
    TreeLockClient,
    TreeLockServer,
    TreeLockUnavailable,
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
    #: A descriptor of the real terminal (inherited by children), or None
    #: when the root's output is not a terminal.
    tty_fd: int | None
    client: TreeLockClient

    def notify(self, op: str, **body: Any) -> None:
        """Tell the root about a child started or reaped (for ``procs``)."""
        self.client.notify(op, **body)


class TreeTerminal:
    """What the debug session calls around each REPL (``DebugSession.tree``)."""

    def __init__(self, tree: TreeDebug) -> None:
        self._tree = tree

    @contextlib.contextmanager
    def hold(self, debugger: TrioPdb) -> Iterator[None]:
        """Wait for the tree's terminal; write to it while the REPL runs."""
        client = self._tree.client
        try:
            notices = client.acquire()
            acquired = True
        except TreeLockUnavailable as exc:
            notices = [
                f"the tree's terminal lock cannot be reached ({exc}); this REPL"
                " does not wait for the others"
            ]
            acquired = False
        restore = _point_output_at(self._tree.tty_fd)
        try:
            for notice in notices:
                debugger.message(f"[dapper-trio] {notice}")
            yield
        finally:
            restore()
            if acquired:
                with contextlib.suppress(TreeLockUnavailable):
                    client.release()

    def procs(self) -> list[str]:
        """The tree's processes and their states, one line each."""
        return self._tree.client.procs()


def _flush_std_streams() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(ValueError, OSError, AttributeError):
            stream.flush()


def _point_output_at(tty_fd: int | None) -> Callable[[], None]:
    """Make fds 1 and 2 the terminal (until the returned function is called)."""
    if tty_fd is None:
        return _flush_std_streams
    _flush_std_streams()
    saved = os.dup(1), os.dup(2)
    os.dup2(tty_fd, 1)
    os.dup2(tty_fd, 2)

    def restore() -> None:
        _flush_std_streams()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        os.close(saved[0])
        os.close(saved[1])

    return restore


# ---------------------------------------------------------------------------
# The root: the service, the output pipes, the Ctrl-C guard.


class _SigintGuard:
    """Drops Ctrl-C while the tree's terminal is held or awaited.

    Wraps the handler installed when debug mode starts (trio's, or
    dapper-trio's under ``dapper-trio run``); installed from the main thread
    only, and removed only if it is still the installed handler.  A REPL in
    this process installs the session's own handler on top while it runs.
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
        if self._server.busy:
            return  # a REPL is open or awaited somewhere: nothing is cancelled
        self._previous(signum, frame)


class _Service:
    """The root's lock service and what it changed in this process."""

    def __init__(self, me: Actor) -> None:
        output: list[tuple[int, int]] = []
        self._saved: tuple[int, int] | None = None
        self._pipes: list[int] = []
        if _is_terminal(1):
            _flush_std_streams()
            out_r, out_w = os.pipe()
            err_r, err_w = os.pipe()
            self._saved = os.dup(1), os.dup(2)
            os.dup2(out_w, 1)
            os.dup2(err_w, 2)
            os.close(out_w)
            os.close(err_w)
            self._pipes = [out_r, err_r]
            output = [(out_r, self._saved[0]), (err_r, self._saved[1])]
        try:
            self.server = TreeLockServer(
                root=ProcessInfo(me.name, me.pid, me.path), output=output
            )
        except BaseException:
            self._restore_output()
            raise
        self.server.start()
        client = TreeLockClient(
            str(self.server.address),
            self.server.token,
            name=me.name,
            pid=me.pid,
            path=me.path,
        )
        self.tree = TreeDebug(
            address=str(self.server.address),
            token=self.server.token,
            tty_fd=self._saved[0] if self._saved is not None else None,
            client=client,
        )
        self._guard = _SigintGuard(self.server)
        self._guard.install()

    def close(self) -> None:
        self._guard.uninstall()
        self.tree.client.close()
        _flush_std_streams()
        if self._saved is not None:
            os.dup2(self._saved[0], 1)
            os.dup2(self._saved[1], 2)
        self.server.stop()  # writes out what the pipes still hold
        self._restore_output()

    def _restore_output(self) -> None:
        if self._saved is not None:
            os.dup2(self._saved[0], 1)
            os.dup2(self._saved[1], 2)
        for fd in [*self._pipes, *(self._saved or ())]:
            os.close(fd)
        self._pipes, self._saved = [], None


def _is_terminal(fd: int) -> bool:
    try:
        return os.isatty(fd)
    except OSError:  # pragma: no cover - a closed descriptor
        return False


_service: _Service | None = None
_service_users = 0
_inherited: TreeDebug | None = None


@contextlib.contextmanager
def tree_debug() -> Iterator[TreeDebug]:
    """The tree's terminal lock, for a debug-mode nursery of this process.

    In a debug-mode child: the one its parent passed down.  Otherwise this
    process is the tree's root: the service starts with the first such
    nursery and stops when the last one ends, and meanwhile this process's
    REPLs take part in the lock too.
    """
    global _service, _service_users
    if _inherited is not None:
        yield _inherited
        return
    if _service is None:
        me = current_actor()
        _service = _Service(me)
        _install_terminal(_service.tree, process_name=f"actor {format_path(me.path)}")
    _service_users += 1
    try:
        yield _service.tree
    finally:
        _service_users -= 1
        if _service_users == 0:
            service, _service = _service, None
            _uninstall_terminal()
            service.close()


def join_tree(config: ChildConfig, actor: Actor) -> None:
    """In a debug-mode child at start-up: connect REPLs to the root's lock."""
    global _inherited
    if config.tree_address is None or config.tree_token is None:
        return
    with contextlib.suppress(AttributeError, ValueError):
        # Output goes through a pipe now: keep lines whole and timely.
        sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    _inherited = TreeDebug(
        address=config.tree_address,
        token=config.tree_token,
        tty_fd=config.tty_fd,
        client=TreeLockClient(
            config.tree_address,
            config.tree_token,
            name=actor.name,
            pid=actor.pid,
            path=actor.path,
        ),
    )
    _install_terminal(_inherited, process_name=f"actor {format_path(actor.path)}")


_process_name_before: str | None = None


def _install_terminal(tree: TreeDebug, *, process_name: str) -> None:
    """Route this process's REPLs through the tree's terminal lock."""
    global _process_name_before
    from ._session import get_session

    session = get_session()
    session.tree = TreeTerminal(tree)
    # Headers name the actor by its path from the root.
    _process_name_before = session.process_name
    session.process_name = process_name


def _uninstall_terminal() -> None:
    from ._session import get_session

    session = get_session()
    session.tree = None
    if _process_name_before is not None:
        session.process_name = _process_name_before


# ---------------------------------------------------------------------------
# Crash REPLs


def _local_errors(exc: BaseException) -> list[BaseException]:
    """The leaves of *exc* raised here (not relayed from a child, not Cancelled)."""
    if isinstance(exc, BaseExceptionGroup):
        found: list[BaseException] = []
        for inner in exc.exceptions:
            found.extend(_local_errors(inner))
        return found
    if isinstance(exc, (RemoteError, ProcessDied, trio.Cancelled)):
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

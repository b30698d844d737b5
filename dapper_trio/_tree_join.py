"""Every process of a program joins its debugging session, however it started.

Theory of operation
===================

The problem.  Under ``dapper-trio run`` (or in a debug-mode actor tree) the
program's processes share one terminal and one lock (``_tree_lock``).  Child
actors are told where the lock is by their parent.  But a program also
starts processes the actor runtime never sees: ``subprocess``,
``trio.run_process``, ``multiprocessing``, a shell script that runs Python.
Their ``breakpoint()`` and their uncaught exceptions must open REPLs under
the same lock, on the same terminal, or two REPLs read the keyboard at once.

Things that don't work.
* A ``.pth`` file in site-packages: it runs in every Python process on the
  machine, debugged or not, and needs write access to the environment.
* Importing dapper-trio in every descendant at start-up: it imports trio
  and pdbpp (0.15-0.2 s) in processes that may never stop; a descendant may
  even run another interpreter, without dapper-trio.
* ``sys.excepthook`` alone: ``multiprocessing`` catches its children's
  exceptions itself and prints them; the hook never sees them.  And
  ``multiprocessing`` points a child's standard input at ``/dev/null``.

The design.  The process that serves the lock (the program's process under
``dapper-trio run``; the root of a debug-mode actor tree otherwise) puts
the session in its environment, which every descendant inherits:

* ``DAPPER_TRIO_TREE``: JSON with the lock's address and token, whether
  output goes through the lock (``output_held``) and whether the root reads
  a terminal;
* ``DAPPER_TRIO_TREE_PATH``: the pid and the path from the root of the
  last process that named itself (plain text: no json at start-up);
* ``PYTHONBREAKPOINT=dapper_trio.set_trace``, unless it is set already: the
  builtin ``breakpoint()`` stops in dapper-trio's REPL;
* ``PYTHONPATH`` gains ``dapper_trio/_tree_hook`` in front: its
  ``sitecustomize.py`` runs at the start of every Python descendant.  With
  the standard library only, it names the process in
  ``DAPPER_TRIO_TREE_PATH`` (for its own descendants), installs a
  ``sys.excepthook`` and, in ``multiprocessing`` children, a wrapper of
  ``Process.run``, both of which open a post-mortem REPL (importing
  dapper-trio then) before the error is reported as usual.  It then runs
  the ``sitecustomize`` it hides, if there is one further along
  ``sys.path``.

A process joins (``join_from_environment``, called when its debug session
is created) lazily: its first REPL connects to the lock.  Its REPL points
``sys.stdin``'s descriptor and fds 1 and 2 at ``/dev/tty`` when they are
not the terminal (a ``multiprocessing`` child's ``/dev/null``, an actor
tree's output pipes).  A process made by ``os.fork()`` is a process of its
own in the tree (``fork``, until ``multiprocessing`` names it).

A child started with an environment of its own would lose the session:
``subprocess.Popen`` (patched in the program's process by ``export`` and in
every descendant by the hook, once ``subprocess`` is imported) adds the
session's variables to such an environment (``carry_session``).

Known holes.  ``python -E`` and ``-I`` ignore the environment, ``-S`` skips
``sitecustomize`` (``breakpoint()`` still joins), and a child given an
environment of its own by ``os.execve`` or ``os.posix_spawn`` rather than
``subprocess`` debugs alone.
Ctrl-C at a prompt reaches only the REPL's process (the line editor reads
it as a key); pressed while a command runs, it reaches processes outside
the actor runtime as it always does, unless they wait for a REPL.  Their
output is not held while another REPL is open (it would make the program's
output a pipe); inside an actor tree whose output goes through the lock, it
is.  A ``sitecustomize`` hidden behind ours sees ``sys.modules
["sitecustomize"]`` change.  The children of a plain ``os.fork()`` child
are listed as its siblings.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ._tree_hook.sitecustomize import (
    BREAKPOINT_HOOK,
    PATH_ENV,
    SESSION_ENV,
    carry_session_to_children,
    patch_multiprocessing,
    process_name,
    read_path,
    write_path,
)

if TYPE_CHECKING:
    from ._actor_debug import TreeDebug
    from ._session import DebugSession
    from ._tree_lock import Kind

__all__ = ["HOOK_DIR", "PATH_ENV", "SESSION_ENV"]

#: The directory put in front of ``PYTHONPATH``: its ``sitecustomize.py``.
HOOK_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_tree_hook")

_VARIABLES = (SESSION_ENV, PATH_ENV, "PYTHONPATH", "PYTHONBREAKPOINT")
_saved: dict[str, str | None] | None = None


def _read() -> dict[str, Any] | None:
    """The session in the environment: address, token, flags (or None)."""
    text = os.environ.get(SESSION_ENV)
    if not text or read_path() is None:
        return None
    try:
        info = json.loads(text)
        if not isinstance(info, dict):
            return None
        str(info["address"]), str(info["token"])
    except (ValueError, KeyError, TypeError):
        return None
    return info


def export(tree: TreeDebug, *, path: tuple[str, ...]) -> None:
    """Describe the session in this process's environment, for descendants."""
    global _saved
    if _saved is None:
        _saved = {name: os.environ.get(name) for name in _VARIABLES}
    os.environ[SESSION_ENV] = json.dumps(
        {
            "address": tree.address,
            "token": tree.token,
            "output_held": tree.tty_fd is not None,
            "terminal_input": _is_terminal(0),
        },
        separators=(",", ":"),
    )
    write_path(list(path))
    pythonpath = _saved["PYTHONPATH"]
    os.environ["PYTHONPATH"] = (
        HOOK_DIR if not pythonpath else f"{HOOK_DIR}{os.pathsep}{pythonpath}"
    )
    if _saved["PYTHONBREAKPOINT"] is None:
        os.environ["PYTHONBREAKPOINT"] = BREAKPOINT_HOOK
    carry_session_to_children()


def unexport() -> None:
    """Put the environment back as ``export()`` found it."""
    global _saved
    saved, _saved = _saved, None
    for name, value in (saved or {}).items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def session_flags() -> tuple[bool, bool]:
    """(output held by the lock, root reads a terminal), per the environment."""
    info = _read() or {}
    return bool(info.get("output_held")), bool(info.get("terminal_input"))


def _is_terminal(fd: int) -> bool:
    try:
        return os.isatty(fd)
    except OSError:  # pragma: no cover - a closed descriptor
        return False


def adopt_path(path: tuple[str, ...]) -> None:
    """This process is *path* in the tree: say so to its descendants."""
    if _read() is not None:
        write_path(list(path))


def _own_path() -> tuple[str, ...]:
    found = read_path()
    assert found is not None
    pid, names = found
    if pid == os.getpid():
        return tuple(names)
    # The hook did not name this process: a child made by os.fork(), or a
    # python -S.  It is a child of the process the environment names.
    if _forked_at == os.getpid():
        return (*names, "fork")
    return (*names, process_name(getattr(sys, "orig_argv", sys.argv)))


_forked_at: int | None = None


def join_from_environment() -> None:
    """If a session is in the environment, route this process's REPLs to it.

    Called when the process's debug session is created; connects on the
    first REPL.  A process that serves or already takes part is unchanged.
    """
    info = _read()
    if info is None:
        return
    from . import _actor_debug
    from ._actor_context import current_actor
    from ._tree_lock import TreeLockClient

    if _actor_debug.joined() is not None:
        return
    me = current_actor()
    kind: Kind
    if me.is_root:
        path, kind = _own_path(), "process"
    else:
        path, kind = me.path, "actor"  # a child actor outside debug mode
    address, token = str(info["address"]), str(info["token"])
    tree = _actor_debug.TreeDebug(
        address=address,
        token=token,
        tty_fd=None,
        client=TreeLockClient(
            address, token, name=path[-1], pid=os.getpid(), path=path, kind=kind
        ),
        output_held=bool(info.get("output_held")),
        terminal_input=bool(info.get("terminal_input")),
    )
    _actor_debug.join(tree, process_name=_actor_debug.describe(path, kind))


def renamed() -> None:
    """The environment names this process anew (a multiprocessing child)."""
    found = read_path()
    if found is not None and found[0] == os.getpid():
        _rename_client(tuple(found[1]))


def _rename_client(path: tuple[str, ...]) -> None:
    # Attribute changes only, and no imports: this also runs in a child
    # between fork and exec.
    actor_debug = sys.modules.get("dapper_trio._actor_debug")
    tree = actor_debug.joined() if actor_debug is not None else None
    if actor_debug is None or tree is None:
        return
    tree.client.rename(name=path[-1], path=path, kind="process")
    session_module = sys.modules.get("dapper_trio._session")
    session = getattr(session_module, "_SESSION", None)
    if session is not None and session.tree is not None:
        session.process_name = actor_debug.describe(path, "process")


def _after_fork_in_child() -> None:
    # A child made by os.fork() is a process of its own in the tree.  The
    # environment is left alone: the child may be about to exec a program,
    # whose hook names it (a multiprocessing child is named when it starts).
    global _forked_at
    _forked_at = os.getpid()
    if _read() is not None:
        _rename_client(_own_path())
    if "multiprocessing.process" in sys.modules:
        patch_multiprocessing()


os.register_at_fork(after_in_child=_after_fork_in_child)


def post_mortem_uncaught(exc: BaseException) -> bool:
    """A process of the session ends with *exc*: open a post-mortem first.

    Returns True if the user quit the debugger (here or elsewhere: then no
    REPL opens), after printing the line that says so.
    """
    from ._api import post_mortem_sync
    from ._session import QUIT_MESSAGE, breakpoints_disabled, get_session, is_quit

    session = get_session()
    if not is_quit(exc, quit_requested=session.quit_requested):
        if isinstance(exc, KeyboardInterrupt) or breakpoints_disabled():
            return False
        post_mortem_sync(exc)
        if not session.quit_requested:
            return False
    print(QUIT_MESSAGE, file=sys.stderr, flush=True)
    return True


def open_session(session: DebugSession) -> Callable[[], None]:
    """``dapper-trio run``: serve the terminal lock from the program's process.

    Every process of the program joins it (see the module's docstring).  A
    user who quits in a process outside the actor runtime stops the
    program: this process is interrupted as by Ctrl-C, and reports that the
    debugger quit.  Returns the function that ends the session.
    """
    from ._actor_context import ROOT_NAME
    from ._actor_debug import joined, start_service, stop_service

    if joined() is not None:
        return _nothing  # a program debugged inside another's session: stay
    main_thread = threading.main_thread()

    def on_quit() -> None:
        session.quit_requested = True
        session.disabled = True
        if main_thread.ident is not None:
            signal.pthread_kill(main_thread.ident, signal.SIGINT)

    # The supervisor's wait (session.repl_gate) holds every process's first
    # REPL, not only this one's: a child can be quicker than the supervisor.
    tree = start_service(
        name=ROOT_NAME, path=(ROOT_NAME,), on_quit=on_quit, gate=session.repl_gate
    )
    export(tree, path=(ROOT_NAME,))
    return stop_service


def _nothing() -> None:
    return None

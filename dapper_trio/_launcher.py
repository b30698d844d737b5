"""Run a script or module under the debugger, as plain ``python`` would run it.

``sys.argv``, ``__name__ == "__main__"``, ``sys.path[0]`` and the working
directory are what the program would see under ``python script.py`` or
``python -m module``; the exit status is the program's.  This is the code
that runs the program in ``--in-process`` mode and inside the debuggee
process in subprocess mode.
"""

from __future__ import annotations

import builtins
import importlib.machinery
import importlib.util
import io
import linecache
import os
import runpy
import signal
import sys
import traceback
import types
from collections.abc import Iterator

from . import _frames
from ._engine import ANY_TASK
from ._frames import short_path
from ._heap import freeze_startup
from ._session import QUIT_MESSAGE, DebugSession, get_session, is_quit
from ._targets import LaunchError as LaunchError
from ._targets import RunOptions as RunOptions
from ._targets import Target as Target
from ._targets import resolve as resolve
from ._tree_join import open_session

__tracebackhide__ = True


def run_program(
    target: Target,
    options: RunOptions,
    *,
    session: DebugSession | None = None,
    sigint_ignored: bool | None = None,
    share_terminal: bool | None = None,
    freeze_heap: bool = False,
) -> int:
    """Run *target* under the debugger in this process; return its exit status.

    A KeyboardInterrupt that reaches the top (two Ctrl-C presses) ends this
    process the way Python does: killed by SIGINT.  If SIGINT was ignored
    when the program was started (*sigint_ignored*, default: as it is now),
    it stays ignored, as under plain python.  With *share_terminal*
    (``dapper-trio run``; default: when no *session* is given) every process
    the program starts joins this one's terminal session (see _tree_join).
    With *freeze_heap* (a process that exists to run this program) the
    debugger's own objects are frozen out of the collector's walks just
    before the program starts (see _heap).
    """
    if share_terminal is None:
        share_terminal = session is None
    if session is None:
        session = get_session()
    if sigint_ignored is None:
        sigint_ignored = signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    session.process_name = target.process_name()
    if target.kind == "script":
        sys.path[0] = os.path.dirname(os.path.abspath(target.name))
        sys.argv = [target.name, *target.args]
    else:
        sys.path[0] = os.getcwd()
        sys.argv = [target.name, *target.args]  # runpy replaces argv[0] with the path
    main_file = resolve(target)
    code = None
    if target.kind == "script" and not os.path.isdir(target.name):
        try:
            code = _compile_script(main_file)
        except SyntaxError as exc:
            # As python does: the error, no traceback, status 1.
            traceback.print_exception(type(exc), exc, None)
            return 1
    session.supervise(sigint=not sigint_ignored)
    debugger = session.debugger()
    for spec in options.breakpoints:
        filename, lineno, condition = _breakpoint_location(spec, main_file)
        before = len(debugger.get_all_breaks())
        debugger.onecmd(
            f"break {filename}:{lineno}" + (f", {condition}" if condition else "")
        )
        if len(debugger.get_all_breaks()) == before:  # pragma: no cover - checked above
            raise LaunchError(f"cannot set breakpoint {spec!r}")
    debugger.reset()
    here = sys._getframe()
    # The debugger's base frame: nothing above the program is shown.
    debugger.botframe = here
    debugger._recompute_stepping()
    if code is not None:
        # Again, now that the breakpoints are known: the tracer may compile
        # them into the code (see _instrument).
        code = debugger.tracer.compile_module(_read_source(main_file), main_file)
    if options.stop_on_entry:
        debugger.mainpyfile = debugger.canonic(main_file)
        debugger._wait_for_mainpyfile = True
        debugger._follow(None)
        debugger.start_tracing(here)
    else:
        debugger.set_continue()
        debugger._arm(here)
        if session.pause_pending():
            # Ctrl-C (or an editor's pause) came while the breakpoints were
            # set up, and set_continue() just forgot it: ask again.
            debugger.request_pause(here, task=ANY_TASK)
    end_session = open_session(session) if share_terminal else _nothing
    if freeze_heap:
        freeze_startup()
    try:
        if code is not None:
            _exec_as_main(code, main_file)
        elif target.kind == "script":
            runpy.run_path(target.name, run_name="__main__")
        else:
            runpy.run_module(target.name, run_name="__main__", alter_sys=True)
    except SystemExit as exc:
        return _exit_status(exc)
    except BaseException as exc:
        sys.settrace(None)
        return _report_uncaught(exc, session)
    finally:
        sys.settrace(None)
        end_session()
    return 0


def _read_source(filename: str) -> bytes:
    with io.open_code(filename) as source:
        return source.read()


def _compile_script(filename: str) -> types.CodeType:
    return compile(_read_source(filename), filename, "exec", dont_inherit=True)


def _exec_as_main(code: types.CodeType, filename: str) -> None:
    """Run *code* as ``python script.py`` runs a script.

    runpy.run_path differs from plain python in ways a program can see (a
    relative ``__file__`` and code filename, no ``__loader__``, ``__package__``
    set to ''); this gives the program the same ``__main__`` python would.
    """
    module = types.ModuleType("__main__")
    module.__file__ = filename
    module.__loader__ = importlib.machinery.SourceFileLoader("__main__", filename)
    module.__package__ = None
    module.__spec__ = None
    module.__cached__ = None  # type: ignore[attr-defined]
    module.__builtins__ = builtins  # type: ignore[attr-defined]
    sys.modules["__main__"] = module
    exec(code, module.__dict__)


def _breakpoint_location(spec: str, main_file: str) -> tuple[str, int, str]:
    """Check a ``[FILE:]LINE[,CONDITION]`` breakpoint; return (file, line, cond).

    FILE is taken relative to the working directory (then to ``sys.path``, as
    pdb does); without FILE the line is in the program's main file.  A line
    past the end of the file, or a blank or comment line, is refused: the
    program would otherwise run straight past a breakpoint that can't stop.
    """
    location, _, condition = spec.partition(",")
    file_part, _, line_part = location.strip().rpartition(":")
    if not line_part.isdigit():
        raise LaunchError(f"bad breakpoint {spec!r}: expected [FILE:]LINE[,CONDITION]")
    lineno = int(line_part)
    if not file_part:
        filename = main_file
    elif os.path.exists(file_part):
        filename = os.path.abspath(file_part)
    else:
        candidates = [os.path.join(entry, file_part) for entry in sys.path if entry]
        found = [path for path in candidates if os.path.exists(path)]
        if not found:
            raise LaunchError(f"breakpoint {spec!r}: no such file {file_part!r}")
        filename = os.path.abspath(found[0])
    line = linecache.getline(filename, lineno)
    if not line:
        raise LaunchError(
            f"breakpoint {spec!r}: {short_path(filename)} has no line {lineno}"
        )
    stripped = line.strip()
    if not stripped or stripped.startswith("#"):
        raise LaunchError(
            f"breakpoint {spec!r}: line {lineno} of {short_path(filename)} "
            "is blank or a comment"
        )
    return filename, lineno, condition.strip()


def _exit_status(exc: SystemExit) -> int:
    code = exc.code
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def _user_traceback(exc: BaseException) -> BaseException:
    # What python would print: from the program's first frame, without
    # runpy's frames above it or dapper-trio's anywhere.
    tb = exc.__traceback__
    while tb is not None and _frames.is_hidden_frame(tb.tb_frame):
        tb = tb.tb_next
    if tb is not None:
        exc.__traceback__ = tb
    _frames.strip_own_frames(exc)
    return exc


def _report_uncaught(exc: BaseException, session: DebugSession) -> int:
    if is_quit(exc, quit_requested=session.quit_requested):
        print(QUIT_MESSAGE, file=sys.stderr, flush=True)
        return 1
    exc = _user_traceback(exc)
    if isinstance(exc, KeyboardInterrupt):
        traceback.print_exception(type(exc), exc, exc.__traceback__)
        _die_by_sigint()
        return 130  # pragma: no cover - only if the signal did not kill us
    if not _interrupted(exc) and not session.disabled:
        session.debugger().post_mortem_of(exc)
    if is_quit(exc, quit_requested=session.quit_requested):  # pragma: no cover
        print(QUIT_MESSAGE, file=sys.stderr, flush=True)
        return 1
    traceback.print_exception(type(exc), exc, exc.__traceback__)
    return 1


def _interrupted(exc: BaseException) -> bool:
    """True if *exc* is only Ctrl-C (KeyboardInterrupt, possibly in groups).

    Someone who pressed Ctrl-C twice wants the program stopped, not a
    post-mortem.  (Python then exits with status 1 for a group and by SIGINT
    for a bare KeyboardInterrupt; so do we.)
    """
    leaves = [leaf for leaf in _iter_leaves(exc) if type(leaf).__name__ != "Cancelled"]
    return bool(leaves) and all(isinstance(leaf, KeyboardInterrupt) for leaf in leaves)


def _iter_leaves(exc: BaseException) -> Iterator[BaseException]:
    children = getattr(exc, "exceptions", None)
    if isinstance(children, tuple):
        for child in children:
            yield from _iter_leaves(child)
    else:
        yield exc


def _die_by_sigint() -> None:
    """Exit as CPython does after an uncaught KeyboardInterrupt."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (ValueError, OSError):
            pass
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGINT)


def _nothing() -> None:
    return None

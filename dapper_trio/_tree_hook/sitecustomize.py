"""Join a debugged program's session at start-up (see ``dapper_trio._tree_join``).

``site`` imports this module at the start of every Python process whose
``PYTHONPATH`` has this directory in front -- the processes a program run by
``dapper-trio run`` (or a debug-mode actor tree) starts, at any depth.  It
uses the standard library only and imports dapper-trio only when a process
ends with an uncaught exception: a process that never fails pays about a
millisecond.  It may run under another interpreter than the program's, so
it fails quietly.

What it does, only when ``DAPPER_TRIO_TREE`` describes a session:

* names this process in ``DAPPER_TRIO_TREE`` (its path from the root), so
  that its own children know their parent;
* wraps ``sys.excepthook``, and ``multiprocessing``'s ``Process.run`` (in
  ``multiprocessing`` children, whose exceptions never reach the hook), to
  open a post-mortem REPL under the session's lock before the error is
  reported as usual;
* carries the session into the environment of any child that is started
  with an ``env`` of its own (``subprocess.Popen``, and through it
  ``subprocess.run``, ``trio.run_process``, asyncio), as the child would
  have inherited it otherwise;
* then runs the ``sitecustomize`` module this one hides, if any.
"""

from __future__ import annotations

import importlib.machinery
import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

SESSION_ENV = "DAPPER_TRIO_TREE"
#: The path from the root of the process that wrote it: ``PID<US>NAME<US>...``
#: (plain text, so that starting up needs no json).
PATH_ENV = "DAPPER_TRIO_TREE_PATH"
ACTOR_ENV = "DAPPER_TRIO_ACTOR"
_SEPARATOR = "\x1f"
#: What ``breakpoint()`` calls in a process of the session.
BREAKPOINT_HOOK = "dapper_trio.set_trace"
_HERE = os.path.dirname(os.path.abspath(__file__))
# Options of python that take the next argument as their value.
_WITH_VALUE = {"-W", "-X", "--check-hash-based-pycs"}


def process_name(argv: list[str]) -> str:
    """A short name for a Python process, from its command line."""
    args = list(argv[1:])
    while args:
        arg = args.pop(0)
        if arg in _WITH_VALUE:
            if args:
                args.pop(0)
        elif arg == "-c":
            if "--multiprocessing-fork" in args:
                return "multiprocessing"
            return "python -c"
        elif arg == "-m":
            return args[0] if args else "python -m"
        elif arg.startswith("-m") and not arg.startswith("--"):
            return arg[2:]
        elif arg == "-" or not arg.startswith("-"):
            return os.path.basename(arg) or "python"
    return "python"


def read_path() -> tuple[int, list[str]] | None:
    """(pid, path) of the process that last named itself in the environment."""
    text = os.environ.get(PATH_ENV)
    if not text:
        return None
    pid, *names = text.split(_SEPARATOR)
    try:
        return int(pid), names
    except ValueError:
        return None


def write_path(names: list[str]) -> None:
    """Say in the environment that this process is at *names* in the tree."""
    os.environ[PATH_ENV] = _SEPARATOR.join([str(os.getpid()), *names])


def _rename(name: str) -> None:
    # A multiprocessing child now knows its name (Process-1, or the one given).
    # Spawned, this process named itself already (replace that); forked, the
    # environment still names its parent (add to that).
    found = read_path()
    if SESSION_ENV not in os.environ or found is None:
        return
    pid, names = found
    write_path([*(names[:-1] if pid == os.getpid() else names), name])
    joined = sys.modules.get("dapper_trio._tree_join")
    if joined is not None:
        joined.renamed()


def carry_session(env: Any) -> Any:
    """*env*, for a child of this process, with the session's variables added.

    What a child started with an environment of its own would otherwise
    lack to join the session: ``DAPPER_TRIO_TREE`` and the path (as this
    process has them), ``PYTHONPATH`` with this directory in front, and
    ``PYTHONBREAKPOINT`` if the session set it and *env* sets none.
    Returns *env* itself (unchanged) outside a session, or if *env* names a
    session already (a child actor's); a new dict otherwise.  Keys and
    values stay bytes where *env*'s are.
    """
    session = os.environ.get(SESSION_ENV)
    path = os.environ.get(PATH_ENV)
    if session is None or path is None or env is None:
        return env
    try:
        items = list(env.items())
    except AttributeError:
        return env  # not a mapping: let Popen say so
    binary = any(isinstance(key, bytes) for key, _ in items)

    def text(value: Any) -> Any:
        return os.fsdecode(value) if isinstance(value, bytes) else value

    given = {text(key): text(value) for key, value in items}
    if SESSION_ENV in given:
        return env
    given[SESSION_ENV] = session
    given[PATH_ENV] = path
    entries = [
        entry for entry in given.get("PYTHONPATH", "").split(os.pathsep) if entry
    ]
    if _HERE not in entries:
        given["PYTHONPATH"] = os.pathsep.join([_HERE, *entries])
    if "PYTHONBREAKPOINT" not in given and os.environ.get("PYTHONBREAKPOINT") == (
        BREAKPOINT_HOOK
    ):
        given["PYTHONBREAKPOINT"] = BREAKPOINT_HOOK
    if binary:
        return {os.fsencode(key): os.fsencode(value) for key, value in given.items()}
    return given


#: Popen's parameters before ``env``, after ``args``: bufsize, executable,
#: stdin, stdout, stderr, preexec_fn, close_fds, shell, cwd (3.10 to 3.13).
_ENV_POSITION = 9


def patch_subprocess(module: Any) -> None:
    """Make *module*'s ``Popen`` (``subprocess``) carry the session to a
    child given an ``env`` of its own (``carry_session``)."""
    popen = module.Popen
    original = popen.__init__
    if getattr(original, "__dapper_trio__", False):
        return

    def __init__(self: Any, args: Any, *rest: Any, **kwargs: Any) -> None:
        try:
            if len(rest) > _ENV_POSITION:
                given = list(rest)
                given[_ENV_POSITION] = carry_session(given[_ENV_POSITION])
                rest = tuple(given)
            elif kwargs.get("env") is not None:
                kwargs["env"] = carry_session(kwargs["env"])
        except Exception:  # an env Popen itself will refuse: let it say why
            pass
        original(self, args, *rest, **kwargs)

    __init__.__dapper_trio__ = True  # type: ignore[attr-defined]
    __init__.__wrapped__ = original  # type: ignore[attr-defined]
    popen.__init__ = __init__


class _WhenSubprocessImported:
    """A ``sys.meta_path`` finder: patches ``subprocess`` once it is loaded.

    Importing ``subprocess`` at start-up would cost every process of the
    session a few milliseconds; most never start a child.
    """

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        if name != "subprocess":
            return None
        if self in sys.meta_path:
            sys.meta_path.remove(self)  # once: the module is patched now
        spec = None
        for finder in sys.meta_path:
            find = getattr(finder, "find_spec", None)
            if find is not None and (spec := find(name, path, target)) is not None:
                break
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module

        def exec_and_patch(module: Any) -> None:
            exec_module(module)
            try:
                patch_subprocess(module)
            except Exception:  # never break the program's import
                pass

        spec.loader.exec_module = exec_and_patch
        return spec


def carry_session_to_children() -> None:
    """Patch ``subprocess`` now if it is loaded, or as soon as it is."""
    module = sys.modules.get("subprocess")
    if module is not None:
        patch_subprocess(module)
    elif not any(isinstance(f, _WhenSubprocessImported) for f in sys.meta_path):
        sys.meta_path.insert(0, _WhenSubprocessImported())


def _post_mortem(exc: BaseException) -> bool:
    """Open a post-mortem REPL on *exc*; True if the user quit the debugger."""
    try:
        from dapper_trio._tree_join import post_mortem_uncaught

        return bool(post_mortem_uncaught(exc))
    except Exception:  # another interpreter, a broken installation: report as usual
        return False


def patch_multiprocessing() -> None:
    # multiprocessing's Process._bootstrap catches what run() raises and
    # prints it itself: wrap each process's run().
    try:
        from multiprocessing import process
    except Exception:  # pragma: no cover - a Python without multiprocessing
        return
    base = process.BaseProcess
    original = base._bootstrap  # type: ignore[attr-defined]
    if getattr(original, "__dapper_trio__", False):
        return

    def _bootstrap(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        _rename(str(self.name))
        run = self.run

        def run_and_inspect():  # type: ignore[no-untyped-def]
            try:
                return run()
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                if _post_mortem(exc):
                    raise SystemExit(1) from None
                raise

        self.run = run_and_inspect
        return original(self, *args, **kwargs)

    _bootstrap.__dapper_trio__ = True  # type: ignore[attr-defined]
    base._bootstrap = _bootstrap  # type: ignore[attr-defined]


def _install_excepthook() -> None:
    previous = sys.excepthook

    def excepthook(exc_type, exc, tb):  # type: ignore[no-untyped-def]
        if not issubclass(exc_type, KeyboardInterrupt) and _post_mortem(exc):
            return
        previous(exc_type, exc, tb)

    sys.excepthook = excepthook


def _after_fork_in_child() -> None:
    # Nothing else: the child may be about to exec another program.
    if "multiprocessing.process" in sys.modules:
        patch_multiprocessing()


def _join() -> None:
    found = read_path()
    if SESSION_ENV not in os.environ or found is None:
        return
    os.register_at_fork(after_in_child=_after_fork_in_child)
    carry_session_to_children()
    if ACTOR_ENV in os.environ:
        return  # a child actor: the actor runtime names it and reports errors
    argv = list(getattr(sys, "orig_argv", sys.argv))
    write_path([*found[1], process_name(argv)])
    _install_excepthook()
    if "--multiprocessing-fork" in argv:
        patch_multiprocessing()


def _chain() -> None:
    # Run the sitecustomize this module hides (the next one on sys.path).
    rest = [entry for entry in sys.path if os.path.abspath(entry or os.curdir) != _HERE]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", rest)
    if spec is None or spec.loader is None:
        return
    from importlib.util import module_from_spec

    module = module_from_spec(spec)
    sys.modules["sitecustomize"] = module
    spec.loader.exec_module(module)


if __name__ == "sitecustomize":
    try:
        _join()
    except Exception:  # never stop a program from starting
        pass
    _chain()

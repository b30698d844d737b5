"""Function breakpoints: from the name a person types to lines bdb breaks on.

Theory of operation
===================

The problem.  A DAP function breakpoint is a name typed into an editor --
``worker``, ``Server.handle``, ``jobs.run``, ``jobs.py:run`` -- and it must
work before the function exists: the program has not started yet, or has
not imported the module.  pdb's ``break FUNCTION`` evaluates the name in the
current frame, which needs the function to be there already.

Things that don't work.
* Importing the module to find the function: importing runs the module's
  code, in the debugger's thread and before the program asked for it.
* Stopping on every call and comparing ``co_name`` (debugpy's way): a
  callback per call makes the whole program slow for one breakpoint.
* Matching on ``co_name`` alone: ``handle`` would stop in every class that
  has a ``handle`` method.

The design.  Names are resolved from source, statically: find the file, by
the name's module part through a path search that imports nothing
(``PathFinder.find_spec`` on the program's search path), or the program's
main file for a name without one; compile it; take every code object whose
qualified name matches (``co_qualname``, or the same name rebuilt on 3.10),
with ``<locals>`` parts optional.  bdb then breaks on the function's first
line with ``funcname`` set, as pdb's ``break FUNCTION`` does, and the tracers
make that a stop at its first executable line.  Compiled files are cached
by path, size and modification time.

Known holes.  Functions made at run time (``exec``, ``types.FunctionType``)
cannot be found.  A decorator that replaces a function by a wrapper defined
elsewhere still breaks in the function's own code, when the wrapper calls
it.  Namespace packages without an ``__init__.py`` are searched like others.
"""

from __future__ import annotations

import dataclasses
import importlib.machinery
import io
import os
import types
from collections.abc import Iterator, Sequence

#: CO_OPTIMIZED | CO_NEWLOCALS: set for functions, not for class bodies.
_FUNCTION_FLAGS = 0x0001 | 0x0002


@dataclasses.dataclass(frozen=True)
class FunctionLocation:
    """Where a function breakpoint goes: bdb's (file, line, funcname)."""

    filename: str
    line: int
    funcname: str
    qualname: str


@dataclasses.dataclass(frozen=True)
class SearchPath:
    """Where a program finds its modules: what names are resolved against.

    *main_file* is the program's script (names without a module part are
    looked up there); *path* is its ``sys.path``; *cwd* is where relative
    ``file.py:name`` paths start.
    """

    main_file: str | None
    path: tuple[str, ...]
    cwd: str


def _qualified_codes(
    code: types.CodeType, prefix: str = ""
) -> Iterator[tuple[str, types.CodeType]]:
    for constant in code.co_consts:
        if not isinstance(constant, types.CodeType):
            continue
        qualname = getattr(constant, "co_qualname", None) or prefix + constant.co_name
        yield qualname, constant
        inner = (
            f"{qualname}.<locals>."
            if constant.co_flags & _FUNCTION_FLAGS
            else f"{qualname}."
        )
        yield from _qualified_codes(constant, inner)


_compiled: dict[str, tuple[tuple[int, int], list[tuple[str, types.CodeType]]]] = {}


def functions_in(filename: str) -> list[tuple[str, types.CodeType]]:
    """Every (qualified name, code object) defined in *filename*.

    Raises ``LookupError`` if the file cannot be read or compiled.
    """
    try:
        status = os.stat(filename)
    except OSError as exc:
        raise LookupError(f"cannot read {filename}: {exc.strerror}") from None
    stamp = (status.st_size, status.st_mtime_ns)
    cached = _compiled.get(filename)
    if cached is not None and cached[0] == stamp:
        return cached[1]
    try:
        with io.open_code(filename) as file:
            source = file.read()
        module = compile(source, filename, "exec", dont_inherit=True)
    except OSError as exc:
        raise LookupError(f"cannot read {filename}: {exc.strerror}") from None
    except (SyntaxError, ValueError) as exc:
        raise LookupError(f"{filename} does not compile: {exc}") from None
    found = [
        (qualname, code)
        for qualname, code in _qualified_codes(module)
        if not qualname.endswith(">") or qualname.endswith("<lambda>")
    ]
    _compiled[filename] = (stamp, found)
    return found


def _matches(qualname: str, wanted: str) -> bool:
    return qualname == wanted or qualname.replace("<locals>.", "") == wanted


def find_in_file(filename: str, qualname: str) -> list[FunctionLocation]:
    """The functions called *qualname* in *filename* (``[]`` if none)."""
    return [
        FunctionLocation(filename, code.co_firstlineno, code.co_name, name)
        for name, code in functions_in(filename)
        if _matches(name, qualname) and code.co_flags & _FUNCTION_FLAGS
    ]


def module_file(module: str, path: Sequence[str]) -> str:
    """The source file of *module* on *path*, found without importing anything.

    Raises ``LookupError`` if there is no such module or it has no source.
    """
    locations: list[str] | None = list(path)
    spec: importlib.machinery.ModuleSpec | None = None
    parts = module.split(".")
    for index in range(len(parts)):
        name = ".".join(parts[: index + 1])
        if locations is None:
            raise LookupError(f"{'.'.join(parts[:index])} is not a package")
        try:
            spec = importlib.machinery.PathFinder.find_spec(name, locations)
        except (ImportError, ValueError):
            spec = None
        if spec is None:
            raise LookupError(f"no module named {name!r}")
        found = spec.submodule_search_locations
        locations = None if found is None else list(found)
    assert spec is not None
    origin = spec.origin
    if spec.submodule_search_locations is not None and (
        origin is None or not origin.endswith(".py")
    ):
        raise LookupError(f"package {module!r} has no __init__.py")
    if origin is None or not origin.endswith(".py") or not os.path.isfile(origin):
        raise LookupError(f"module {module!r} has no Python source")
    return os.path.abspath(origin)


def resolve(name: str, search: SearchPath) -> list[FunctionLocation]:
    """Where the function breakpoint *name* breaks (one entry or more).

    Forms: ``qualname`` (in the program's main file, e.g. ``worker`` or
    ``Server.handle``), ``module.qualname`` (the longest module prefix that
    exists wins), ``module:qualname`` and ``path/to/file.py:qualname``.
    Raises ``LookupError`` saying where it looked.
    """
    text = name.strip()
    if not text:
        raise LookupError("a function breakpoint needs a name")
    place, colon, qualname = text.rpartition(":")
    if colon:
        if not place or not qualname:
            raise LookupError(f"{text!r}: expected MODULE:NAME or FILE.py:NAME")
        if place.endswith(".py"):
            filename = os.path.abspath(os.path.join(search.cwd, place))
        else:
            filename = module_file(place, search.path)
        found = find_in_file(filename, qualname)
        if not found:
            raise LookupError(f"no function {qualname!r} in {filename}")
        return found
    looked: list[str] = []
    if search.main_file is not None:
        found = find_in_file(search.main_file, text)
        if found:
            return found
        looked.append(os.path.basename(search.main_file))
    parts = text.split(".")
    for split in range(len(parts) - 1, 0, -1):
        module = ".".join(parts[:split])
        try:
            filename = module_file(module, search.path)
        except LookupError:
            continue
        found = find_in_file(filename, ".".join(parts[split:]))
        if found:
            return found
        looked.append(f"module {module}")
    where = ", ".join(looked) if looked else "no module or main file to look in"
    raise LookupError(f"no function {text!r} found (looked in {where})")

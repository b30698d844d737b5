"""What a parent sends a child actor to run: function references and pickles.

Pure and synchronous: no trio, no sockets.

A function crosses as a *reference*: its module and qualified name, which the
child imports.  So it must be an ``async def`` reachable by that name from
its module: lambdas, nested functions, bound methods and ``functools.partial``
objects are refused with a ``TypeError`` *before* any process is started
(pass the arguments separately instead).  Arguments and results are pickled
and travel as base64 text inside the JSON frames of the IPC layer.

Functions (and classes) defined in the program's main script are importable
too, as ``multiprocessing``'s spawn method makes them: the child is told how
the root's ``__main__`` was started (a file, or ``-m module``) and runs it on
first use under the name ``__mp_main__`` -- so the script's
``if __name__ == "__main__":`` block does not run again -- and aliases it as
``__main__``.  Unlike multiprocessing, a child loads the main module only when
a reference or a pickle names it, so a child that runs library functions
never pays for importing the main script.
"""

from __future__ import annotations

import binascii
import importlib
import io
import os
import pickle
import sys
import types
from collections.abc import Callable, Sequence
from typing import Any

#: Module names under which the main script's objects are known.
MAIN_NAMES = ("__main__", "__mp_main__")

_main_info: dict[str, str] | None = None
_main_info_set = False


def set_main_info(info: dict[str, str] | None) -> None:
    """In a child: how the root's ``__main__`` can be loaded (from its parent)."""
    global _main_info, _main_info_set
    _main_info = info
    _main_info_set = True


def main_info() -> dict[str, str] | None:
    """How a child can load this program's ``__main__``, or None if it cannot.

    In the root: ``{"module": name}`` for ``python -m name``, ``{"path": file}``
    for a script, None for an interactive session or ``-c``.  In a child: what
    its parent said, passed on unchanged to its own children.
    """
    if _main_info_set:
        return _main_info
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if spec is not None and spec.name not in MAIN_NAMES:
        return {"module": spec.name}
    path = getattr(main, "__file__", None)
    if isinstance(path, str):
        return {"path": os.path.abspath(path)}
    return None


def _load_main() -> types.ModuleType:
    """In a child: import the root's main module as ``__mp_main__`` (once)."""
    loaded = sys.modules.get("__mp_main__")
    if loaded is not None:
        return loaded
    info = main_info() if _main_info_set else None
    if info is None:
        raise ImportError(
            "the function or object comes from the parent's __main__, which a"
            " child cannot import (an interactive session or python -c)"
        )
    import runpy  # only for programs that use it: a child's start-up is short

    module = types.ModuleType("__mp_main__")
    if "module" in info:
        namespace = runpy.run_module(info["module"], run_name="__mp_main__")
    else:
        namespace = runpy.run_path(info["path"], run_name="__mp_main__")
    module.__dict__.update(namespace)
    sys.modules["__mp_main__"] = module
    sys.modules["__main__"] = module
    return module


def _import(module_name: str) -> types.ModuleType:
    if module_name in MAIN_NAMES and _main_info_set:
        return _load_main()
    return importlib.import_module(module_name)


# ---------------------------------------------------------------------------
# Function references


def _describe(fn: object) -> str:
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None)
    return f"{type(fn).__name__} {name!r}" if name else repr(fn)


def function_ref(fn: Callable[..., Any]) -> dict[str, str]:
    """The reference a child imports *fn* by: ``{"module": ..., "qualname": ...}``.

    Raises ``TypeError`` if *fn* is not an ``async def`` function that can be
    imported by its module and qualified name.
    """
    import inspect  # only in a parent: a child's start-up is short

    if not inspect.iscoroutinefunction(fn):
        raise TypeError(
            f"an actor runs async functions; {_describe(fn)} is not one"
            " (pass an 'async def' function, not a coroutine or the result of"
            " calling it)"
        )
    module_name = getattr(fn, "__module__", None)
    qualname = getattr(fn, "__qualname__", None)
    hint = (
        "; define it at the top level of a module (pass its arguments"
        " separately: run(fn, *args))"
    )
    if not isinstance(module_name, str) or not isinstance(qualname, str):
        raise TypeError(
            f"{fn!r} has no module and qualified name, so a child process cannot"
            f" import it{hint}"
        )
    if "<" in qualname:
        raise TypeError(
            f"{module_name}.{qualname} is a lambda or a function defined inside"
            f" another, so a child process cannot import it{hint}"
        )
    if module_name in MAIN_NAMES:
        if main_info() is None:
            raise TypeError(
                f"{qualname} is defined in __main__ of an interactive session or"
                f" 'python -c', which a child process cannot import{hint}"
            )
        found: object = sys.modules.get(module_name)
        module_name = "__main__"
    else:
        found = sys.modules.get(module_name)
    for part in qualname.split("."):
        found = getattr(found, part, None)
    if found is not fn:
        raise TypeError(
            f"{module_name}.{qualname} does not name {_describe(fn)}, so a child"
            f" process cannot import it (a bound method, or a decorated or"
            f" replaced function?){hint}"
        )
    return {"module": module_name, "qualname": qualname}


def resolve_function(ref: dict[str, str]) -> Callable[..., Any]:
    """Import the function a ``function_ref()`` names (in the child)."""
    found: Any = _import(ref["module"])
    for part in ref["qualname"].split("."):
        found = getattr(found, part)
    if not callable(found):
        raise TypeError(f"{ref['module']}.{ref['qualname']} is not callable")
    return found  # type: ignore[no-any-return]


# ---------------------------------------------------------------------------
# Pickles as text


class _Unpickler(pickle.Unpickler):
    """Finds objects of the main script under either of its names."""

    def find_class(self, module: str, name: str) -> Any:
        if module in MAIN_NAMES:
            if _main_info_set:
                return getattr(_load_main(), name)
            module = "__main__"
        return super().find_class(module, name)


def dumps(value: object) -> str:
    """Pickle *value* and return it as base64 text (raises as pickle does)."""
    data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    return binascii.b2a_base64(data, newline=False).decode("ascii")


def loads(text: str) -> Any:
    """Inverse of ``dumps()``, finding main-script objects under either name."""
    return _Unpickler(io.BytesIO(binascii.a2b_base64(text))).load()


def dumps_args(fn: Callable[..., Any], args: Sequence[object]) -> str:
    """Pickle a call's arguments; ``TypeError`` naming the one that failed."""
    try:
        return dumps(tuple(args))
    except Exception as exc:
        for index, arg in enumerate(args):
            try:
                pickle.dumps(arg, protocol=pickle.HIGHEST_PROTOCOL)
            except Exception as arg_exc:
                raise TypeError(
                    f"argument {index} of {fn.__qualname__}() cannot be sent to"
                    f" a child process: {type(arg_exc).__name__}: {arg_exc}"
                    " (arguments must be picklable)"
                ) from arg_exc
        raise TypeError(
            f"the arguments of {fn.__qualname__}() cannot be sent to a child"
            f" process: {type(exc).__name__}: {exc}"
        ) from exc

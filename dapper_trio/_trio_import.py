"""trio, imported by the program rather than by the debugger.

Importing trio costs a debuggee more than everything else it does before the
program starts (0.1-0.3 s on a loaded machine: measured with ``python -X
importtime``), and a program that never uses trio should not pay it.  So the
modules a debuggee imports at start-up (``_launcher``, ``_session``,
``_engine``, ``_repl``, ``_frames``, ``_tasks``, ``_trio_internals``) do not
import trio at module level: what needs it at run time either runs only
inside a trio run (where trio is imported, by definition) or asks here.

``when_imported(callback)`` calls *callback* with the trio module as soon as
trio has finished importing: at once if it has, otherwise from a
``sys.meta_path`` finder that sees the program's ``import trio`` and runs the
callbacks right after trio's own module code, before the importer gets the
module back.  So ``from trio import run`` in the program already sees what the
callbacks did (the session wraps ``trio.run`` that way).
"""

from __future__ import annotations

import sys
import threading
import types
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import importlib.machinery

__all__ = ["loaded", "when_imported"]

Callback = Callable[[types.ModuleType], None]

_lock = threading.RLock()
_callbacks: list[Callback] = []
_finder: _TrioFinder | None = None


def loaded() -> types.ModuleType | None:
    """The trio module if it has finished importing, else None."""
    module = sys.modules.get("trio")
    if module is None or _initializing(module):
        return None
    return module


def when_imported(callback: Callback) -> None:
    """Call *callback(trio)* once trio is imported (now, if it is already)."""
    global _finder
    module = loaded()
    if module is not None:
        callback(module)
        return
    with _lock:
        _callbacks.append(callback)
        if _finder is None:
            _finder = _TrioFinder()
            sys.meta_path.insert(0, _finder)


def _initializing(module: types.ModuleType) -> bool:
    spec = getattr(module, "__spec__", None)
    return bool(getattr(spec, "_initializing", False))


def _run_callbacks(module: types.ModuleType) -> None:
    global _finder
    with _lock:
        callbacks = list(_callbacks)
        _callbacks.clear()
        finder, _finder = _finder, None
    if finder is not None:
        try:
            sys.meta_path.remove(finder)
        except ValueError:  # pragma: no cover - somebody removed it
            pass
    for callback in callbacks:
        callback(module)


class _TrioFinder:
    """Finds ``trio`` through the other finders and wraps its loader.

    (A meta path finder by protocol; not an ``importlib.abc`` subclass, whose
    import costs a debuggee 10 ms.)
    """

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: types.ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != "trio":
            return None
        for finder in list(sys.meta_path):
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec: importlib.machinery.ModuleSpec | None = finder.find_spec(
                fullname, path, target
            )
            if spec is None:
                continue
            if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                spec.loader = _ThenCallBack(spec.loader)  # type: ignore[assignment]
            return spec
        return None


class _ThenCallBack:
    """A loader that runs trio's module code, then the callbacks."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> Any:
        return self.inner.create_module(spec)

    def exec_module(self, module: types.ModuleType) -> None:
        # Put the real loader back first: importlib.resources and friends
        # look at module.__spec__.loader later.
        if module.__spec__ is not None:
            module.__spec__.loader = self.inner
        module.__loader__ = self.inner
        self.inner.exec_module(module)
        # The import system clears _initializing after this returns, and
        # callbacks may import trio's submodules: say it is done.
        _run_callbacks(module)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

"""Sources for DAP: files the program has loaded, and code that has no file.

A DAP ``Source`` names a file by ``path``, which the client reads itself,
or by a ``sourceReference`` number, for which it sends a ``source`` request
and shows the text it gets back.  Frames of code that has no file on disk --
``exec()`` of a string that ``linecache`` knows, a file deleted since it was
imported -- get a reference, handed out by ``SourceTable`` for the whole
session (unlike variables, a source does not change when the program
resumes).  ``loaded_sources`` lists the modules the program has imported.

Thread-safe: the agent thread answers ``source`` and ``loadedSources`` while
the program runs.
"""

from __future__ import annotations

import linecache
import os
import sys
import threading
from typing import Any

from . import _frames


class SourceTable:
    """``sourceReference`` numbers for code without a readable file."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_name: dict[str, int] = {}
        self._names: dict[int, str] = {}

    def reference_for(self, filename: str) -> int:
        """A reference for *filename* if ``linecache`` has its lines, else 0."""
        with self._lock:
            found = self._by_name.get(filename)
            if found is not None:
                return found
        if not linecache.getlines(filename):
            return 0
        with self._lock:
            reference = self._by_name.setdefault(filename, len(self._by_name) + 1)
            self._names[reference] = filename
            return reference

    def content(self, reference: int) -> str:
        """The text behind *reference*; ``LookupError`` if it is unknown."""
        with self._lock:
            filename = self._names.get(reference)
        if filename is None:
            raise LookupError(f"sourceReference {reference} was never given")
        lines = linecache.getlines(filename)
        if not lines:
            raise LookupError(f"the source of {filename} is no longer available")
        return "".join(lines)


def describe(filename: str, table: SourceTable) -> dict[str, Any]:
    """The DAP ``Source`` of code from *filename*."""
    source: dict[str, Any] = {"name": os.path.basename(filename) or filename}
    if os.path.isfile(filename):
        source["path"] = os.path.abspath(filename)
        return source
    reference = table.reference_for(filename)
    if reference:
        source["sourceReference"] = reference
        source["origin"] = "no file on disk"
    source["presentationHint"] = "deemphasize"
    return source


def read_file(path: str) -> str:
    """The text of the source file *path* (``OSError`` if it cannot be read)."""
    with open(path, "rb") as file:
        data = file.read()
    return data.decode("utf-8", errors="replace")


#: dapper-trio's own files, left out of ``loaded_sources``.
_OWN_DIRECTORY = os.path.dirname(os.path.abspath(__file__)) + os.sep


def loaded_sources() -> list[dict[str, Any]]:
    """A DAP ``Source`` for each imported module with a Python source file.

    dapper-trio's own modules are left out; the order is by path.
    """
    found: dict[str, dict[str, Any]] = {}
    for name, module in list(sys.modules.items()):
        filename = getattr(module, "__file__", None)
        if not isinstance(filename, str) or not filename.endswith(".py"):
            continue
        path = os.path.abspath(filename)
        if path.startswith(_OWN_DIRECTORY):
            continue
        if path in found or not os.path.isfile(path):
            continue
        found[path] = {
            "name": os.path.basename(path),
            "path": path,
            **(
                {"presentationHint": "deemphasize"}
                if name.partition(".")[0] in _frames.HIDDEN_MODULES
                else {}
            ),
        }
    return [found[path] for path in sorted(found)]

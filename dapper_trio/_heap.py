"""The debugger's own objects kept out of the collector's way, and heap walks.

A debuggee process runs one program and nothing else, and everything it
imported and built before the program starts lives until it exits.  Yet
every full collection walks those objects: the program's own, and the
several that interpreter shutdown runs while it tears the modules down,
which on this machine took ~30 ms longer than plain python's at every exit
(and ~75 ms for a process that has imported trio).  ``freeze_startup()``
moves them to the permanent generation (``gc.freeze()``) just before the
program runs, so the program's collections and its shutdown walk only what
the program made.  Objects the program frees are freed as before (reference
counting does not look at generations); only a reference cycle among the
frozen objects would never be collected, and there are none worth the walk.

A frozen object is invisible to ``gc.get_objects()``, which the tracers walk
to find the live functions and coroutines of a file that gets a breakpoint
(``_monitoring``, ``_instrument``): a breakpoint may be set in a module
imported before the freeze (the standard library's ``json``, say).  So the
functions are listed at the freeze, and ``live_objects()`` gives them along
with what the collector still tracks.
"""

from __future__ import annotations

import gc
import itertools
import types
from collections.abc import Iterable
from typing import Any

#: The functions alive when the heap was frozen (kept alive by this list;
#: module-level functions outlive it anyway).
_frozen_functions: list[types.FunctionType] = []


def freeze_startup() -> None:
    """Freeze every object alive now (``gc.freeze()``), remembering functions.

    Only for a process that exists to run one program: nothing frozen is
    ever collected again.
    """
    _frozen_functions.extend(
        obj for obj in gc.get_objects() if type(obj) is types.FunctionType
    )
    gc.freeze()


def live_objects() -> Iterable[Any]:
    """The objects to look through for live functions and coroutines.

    ``gc.get_objects()`` and the functions frozen by ``freeze_startup()``.
    """
    if not _frozen_functions:
        return gc.get_objects()
    return itertools.chain(_frozen_functions, gc.get_objects())

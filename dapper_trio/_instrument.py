"""Breakpoints compiled into the code: no trace function while the program runs.

Theory of operation
===================

The problem.  On Python 3.10/3.11 the only event source is ``sys.settrace``,
and any global trace function costs a Python call per function call (4-5x on
call-heavy code) even if it does nothing.  A breakpoint in a file the
program never runs should cost nothing.

Things that don't work.  Rewriting bytecode in place: 3.10, 3.11 and 3.12
each changed the instruction set, the line table and the exception table
formats.  ``f_trace`` on the frames that need it, without a global trace
function: CPython ignores it then.

The design.  Source-level instrumentation.  For a file with breakpoints, its
source is parsed, a call ``HOOK(line)`` is inserted as a statement just
before each statement starting on a breakpoint line (with that line's
number, so tracebacks and line events are unchanged), and the module is
recompiled.  ``HOOK`` is a string constant in the AST, replaced by the hook
function object in the compiled code objects' constants (no name is added to
the module).  Every code object of the recompiled module is matched with the
running one by qualified name and first line, and:

* every live function of the file gets the new code (``func.__code__``;
  closures created later get it from their parent's constants);
* a frame running old code (the main script's module body stopped on
  entry, a coroutine suspended in old code) makes its functions from its
  code's constants when it reaches their ``def``: those constants that
  hold breakpoint lines are swapped in place for the new code objects
  (``_set_const``), so a function defined after the breakpoint was set
  runs the new code (code objects are immutable and a running frame's code
  cannot be replaced; its constants tuple is the one mutable thing it
  reads from);
* modules imported later are instrumented by an import hook (a meta-path
  finder whose loader compiles from source, and never writes the
  instrumented bytecode to ``__pycache__``); the main script is compiled by
  the launcher through ``compile_module``;
* frames already running old code whose breakpoint lines changed (a
  suspended coroutine, a loop in progress) get ``f_trace``; their thread then
  runs a no-op global trace function (new frames untraced) for as long as
  they live -- correctness first, the cost only while they exist.

The hook calls the engine, which decides with bdb's rules (conditions
compiled once) and stops like any other breakpoint.  While a step is in
progress the trace function sees the line anyway and the hook does nothing.

A breakpoint that cannot be compiled in -- a line that does not start a
statement (a continuation line), code whose source is missing or has changed
on disk since it was loaded, two code objects the matching cannot tell apart
-- makes its file fall back to the engine's trace function, whose fast path
skips other files: slower, never wrong.

Known holes.  Code that holds on to an old code object (``func.__code__``
saved elsewhere) keeps running it.  Swapping constants in place writes into
a tuple CPython believes immutable (a pointer store, reference counts kept
right): the running frame reads the tuple at each ``LOAD_CONST``, and
nothing caches it, on 3.10-3.13; the old code object's ``hash`` changes.
Frames of other threads running old code see a new breakpoint only once they
call the function again.
"""

from __future__ import annotations

import ast
import bdb
import importlib.machinery
import itertools
import linecache
import sys
import threading
import types
import warnings
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from . import _breakpoints
from ._heap import live_objects

if TYPE_CHECKING:
    import ctypes

    from ._engine import TaskAwareBdb

_SENTINEL = "__dapper_trio_breakpoint_hook__"
_ITER_SENTINEL = "__dapper_trio_breakpoint_iter_hook__"
_AITER_SENTINEL = "__dapper_trio_breakpoint_aiter_hook__"
_COUNT_SENTINEL = "__dapper_trio_count_{}__"
_REVISITS_DECORATOR_LINE = sys.version_info >= (3, 11)
_EXCEPTION_SENTINEL = "__dapper_trio_exception__"

#: A file's conditional breakpoints compiled in: (line, condition text).
Conditions = frozenset[tuple[int, str]]

#: The engine's entry point for an instrumented breakpoint line, set by the
#: session: called with (frame, line) in the thread that reached it.
handler: Callable[[types.FrameType, int], None] | None = None


def _breakpoint_hook(line: int) -> None:
    # This is what instrumented code calls; keep it cheap.
    target = handler
    if target is not None:
        target(sys._getframe(1), line)


class _HookedIterator:
    """Calls the hook before each step of a ``for`` loop on a breakpoint line
    but the first (a hook before the loop serves that one, before the
    iterable is evaluated, where pdb's first line event is)."""

    __slots__ = ("_first", "_frame", "_iterator", "_line")

    def __init__(self, frame: types.FrameType, line: int, iterator: Any) -> None:
        self._frame = frame
        self._line = line
        self._iterator = iterator
        self._first = True

    def _hook(self) -> None:
        if self._first:
            self._first = False
            return
        target = handler
        if target is not None:
            target(self._frame, self._line)

    def __iter__(self) -> _HookedIterator:
        return self

    def __next__(self) -> Any:
        self._hook()
        return next(self._iterator)

    def __aiter__(self) -> _HookedIterator:
        return self

    def __anext__(self) -> Any:
        # Not a coroutine: the hook runs now, in the loop's frame, and the
        # loop awaits the real iterator's awaitable.
        self._hook()
        return self._iterator.__anext__()


def _breakpoint_iter_hook(line: int, iterable: Iterable[Any]) -> _HookedIterator:
    return _HookedIterator(sys._getframe(1), line, iter(iterable))


def _breakpoint_aiter_hook(line: int, iterable: Any) -> _HookedIterator:
    return _HookedIterator(sys._getframe(1), line, type(iterable).__aiter__(iterable))


class _CountedBreakpoint(bdb.Breakpoint):
    """A breakpoint whose condition is compiled into the code: the passes
    where it was false are counted there (``itertools.count``, no Python
    call) and added to ``hits``, as bdb counts every pass."""

    _counters: list[itertools.count[int]]

    @property
    def hits(self) -> int:
        return int(self.__dict__["hits"]) + sum(
            int(repr(counter)[6:-1]) for counter in self._counters
        )

    @hits.setter
    def hits(self, value: int) -> None:
        self.__dict__["hits"] = value - (self.hits - int(self.__dict__["hits"]))


def _count_false_passes(name: str, line: int) -> Callable[[], object]:
    """A C-level callable counting the false passes of *name*:*line*'s
    compiled-in condition into its breakpoint's hits."""
    counter = itertools.count()
    for bp in bdb.Breakpoint.bplist.get((name, line), ()):
        if type(bp) is bdb.Breakpoint:
            bp.__class__ = _CountedBreakpoint
            bp.__dict__["_counters"] = []
        if isinstance(bp, _CountedBreakpoint):
            bp._counters.append(counter)
    return counter.__next__


Key = tuple[str, int]


def _key(code: types.CodeType) -> Key:
    return (getattr(code, "co_qualname", code.co_name), code.co_firstlineno)


def _walk_code(code: types.CodeType) -> Iterator[types.CodeType]:
    yield code
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _walk_code(const)


def _lines(code: types.CodeType) -> frozenset[int]:
    return frozenset(line for _, _, line in code.co_lines() if line is not None)


def _tree_lines(code: types.CodeType) -> frozenset[int]:
    """The lines of *code* and of every code object nested in it."""
    return frozenset().union(*(_lines(nested) for nested in _walk_code(code)))


def _const_slot(code: types.CodeType, index: int) -> ctypes.c_void_p | None:
    """The pointer to ``code.co_consts[index]`` in its tuple (None if the
    tuple is not laid out as CPython's: items after the object header).

    The tuple is the code object's own (``co_consts`` is not a copy).
    """
    import ctypes  # only here: a debuggee's start-up does not pay for it

    consts = code.co_consts
    slot = ctypes.c_void_p.from_address(
        id(consts) + tuple.__basicsize__ + index * tuple.__itemsize__
    )
    return slot if slot.value == id(consts[index]) else None


def _set_const(code: types.CodeType, index: int, value: object) -> None:
    """Make ``code.co_consts[index]`` *value*, in place (see Known holes)."""
    slot = _const_slot(code, index)
    assert slot is not None  # checked by the caller before any change
    import ctypes

    old = code.co_consts[index]
    ctypes.pythonapi.Py_IncRef(ctypes.py_object(value))
    slot.value = id(value)
    ctypes.pythonapi.Py_DecRef(ctypes.py_object(old))


class _Unsupported(Exception):
    """This file's breakpoints cannot be compiled in (the reason says why)."""


def _no_code(statement: ast.stmt) -> bool:
    """True for a statement that compiles to nothing in a function body."""
    return isinstance(statement, (ast.Global, ast.Nonlocal)) or (
        isinstance(statement, ast.AnnAssign) and statement.value is None
    )


def _first_line(statement: ast.stmt) -> int:
    """The line a statement starts on, decorators included (co_firstlineno)."""
    decorators = getattr(statement, "decorator_list", None)
    if decorators:
        return min(statement.lineno, *(int(node.lineno) for node in decorators))
    return statement.lineno


def _position(line: int, col: int) -> dict[str, Any]:
    return {
        "lineno": line,
        "col_offset": col,
        "end_lineno": line,
        "end_col_offset": col,
    }


def _call(sentinel: str, line: int, col: int, *extra: ast.expr) -> ast.Call:
    position = _position(line, col)
    return ast.Call(
        func=ast.Constant(value=sentinel, **position),
        args=[ast.Constant(value=line, **position), *extra],
        keywords=[],
        **position,
    )


class _InsertHooks(ast.NodeTransformer):
    """Insert ``HOOK(line)`` where each wanted line is reached.

    * before a statement starting on a wanted line;
    * for ``while`` on a wanted line, in its condition (``HOOK(line) or
      cond``), which runs at every iteration as the line event does;
    * for ``for`` on a wanted line, around its iterable, whose every
      ``__next__`` calls the hook (a line event per iteration);
    * for a function whose ``def`` (or first decorator) line is wanted, also
      before the first statement of its body: a breakpoint set on a function
      by name sits on that line and stops at the function's first line.
    """

    def __init__(
        self, lines: frozenset[int], conditions: Mapping[int, str] | None = None
    ) -> None:
        self.lines = lines
        self.conditions = conditions or {}
        self.placed: set[int] = set()

    def generic_visit(self, node: ast.AST) -> ast.AST:
        for field, value in ast.iter_fields(node):
            if isinstance(value, list) and value and isinstance(value[0], ast.stmt):
                setattr(node, field, self._body(value, node))
            elif isinstance(value, list):
                for item in value:
                    if isinstance(item, ast.AST):
                        self.visit(item)
            elif isinstance(value, ast.AST):
                self.visit(value)
        return node

    def _body(self, body: list[ast.stmt], owner: ast.AST) -> list[ast.stmt]:
        new_body: list[ast.stmt] = []
        entry = self._entry_hook(body, owner)
        for index, statement in enumerate(body):
            line = _first_line(statement)
            if index == entry:
                assert isinstance(owner, ast.stmt)
                owner_line = _first_line(owner)
                new_body.append(self._hook(line, statement.col_offset, owner_line))
                self.placed.add(owner_line)
                if _REVISITS_DECORATOR_LINE and getattr(
                    statement, "decorator_list", None
                ):
                    # See below: the first line runs twice.
                    new_body.append(self.visit(statement))
                    new_body.append(self._hook(line, statement.col_offset, owner_line))
                    if line in self.lines:
                        self.placed.add(line)
                    continue
            if line in self.lines:
                self.placed.add(line)
                if isinstance(statement, ast.While):
                    statement.test = ast.BoolOp(
                        op=ast.Or(),
                        values=[
                            _call(_SENTINEL, line, statement.col_offset),
                            statement.test,
                        ],
                        **_position(line, statement.col_offset),
                    )
                elif isinstance(statement, (ast.For, ast.AsyncFor)):
                    if index != entry:
                        new_body.append(self._hook(line, statement.col_offset, line))
                    statement.iter = _call(
                        _ITER_SENTINEL
                        if isinstance(statement, ast.For)
                        else _AITER_SENTINEL,
                        line,
                        statement.col_offset,
                        statement.iter,
                    )
                elif (
                    index != entry
                    and _REVISITS_DECORATOR_LINE
                    and getattr(statement, "decorator_list", None)
                ):
                    # 3.11+ reports the first decorator's line again when it
                    # applies the decorators, after the def line: pdb stops
                    # there twice.
                    new_body.append(self._hook(line, statement.col_offset, line))
                    new_body.append(self.visit(statement))
                    new_body.append(self._hook(line, statement.col_offset, line))
                    continue
                elif index != entry and line in self.conditions:
                    new_body.append(
                        self._conditional_hook(
                            line, statement.col_offset, self.conditions[line]
                        )
                    )
                elif index != entry:
                    new_body.append(self._hook(line, statement.col_offset, line))
            new_body.append(self.visit(statement))
        return new_body

    def _entry_hook(self, body: list[ast.stmt], owner: ast.AST) -> int | None:
        """Index of the body statement a function breakpoint hooks, if any."""
        if not isinstance(owner, (ast.FunctionDef, ast.AsyncFunctionDef)):
            return None
        if _first_line(owner) not in self.lines:
            return None
        index = 0
        first = body[0]
        if (
            isinstance(first, ast.Expr)
            and isinstance(first.value, ast.Constant)
            and isinstance(first.value.value, str)
        ):
            index = 1  # a docstring is not executed (and must stay first)
        # Neither are declarations: the first line event is further down.
        while index < len(body) and _no_code(body[index]):
            index += 1
        return index if index < len(body) else None

    @classmethod
    def _conditional_hook(cls, line: int, col: int, condition: str) -> ast.stmt:
        """``try: HOOK(line) if COND else COUNT()`` / ``except Exception:
        HOOK(line)``, before the statement.

        The condition runs as the program's own code (no eval, no
        f_locals), so a false one costs what the expression costs; a
        condition that raises stops, as with bdb.  Its jumps make a traced
        frame see more than one line event for the line (a jump within a
        line is a line event); the engine ignores the extra ones
        (``conditional_lines``).
        """
        test = ast.parse(condition.strip(), "<breakpoint condition>", mode="eval").body
        for node in ast.walk(test):
            if hasattr(node, "lineno"):
                for name, value in _position(line, col).items():
                    setattr(node, name, value)
        position = _position(line, col)
        count = ast.Expr(
            value=ast.Call(
                func=ast.Constant(value=_COUNT_SENTINEL.format(line), **position),
                args=[],
                keywords=[],
                **position,
            ),
            **position,
        )
        hook = cls._hook(line, col, line)
        assert isinstance(hook, ast.Expr)
        check = ast.Expr(
            value=ast.IfExp(test=test, body=hook.value, orelse=count.value, **position),
            **position,
        )
        return ast.Try(
            body=[check],
            handlers=[
                ast.ExceptHandler(
                    type=ast.Constant(value=_EXCEPTION_SENTINEL, **position),
                    name=None,
                    body=[cls._hook(line, col, line)],
                    **position,
                )
            ],
            orelse=[],
            finalbody=[],
            **position,
        )

    @staticmethod
    def _hook(at: int, col: int, line: int) -> ast.stmt:
        call = _call(_SENTINEL, line, col)
        call.lineno = call.end_lineno = at
        for arg in call.args:
            arg.lineno = arg.end_lineno = at
        call.func.lineno = call.func.end_lineno = at
        return ast.Expr(value=call, **_position(at, col))


#: Bumped whenever the instrumented code changes (records of what a LINE
#: event decided are void then).
generation = 0

#: id of an instrumented code object -> it, and its lines with a condition
#: compiled in (the engine ignores the extra line events their jumps make).
conditional_lines: dict[int, tuple[types.CodeType, frozenset[int]]] = {}


def _patch_hook(
    code: types.CodeType, extra: Mapping[str, object] | None = None
) -> types.CodeType:
    """Replace the sentinel constants by what they stand for, recursively."""
    extra = extra or {}
    changed = False
    counted: list[int] = []
    consts: list[Any] = []
    for const in code.co_consts:
        if const == _SENTINEL and isinstance(const, str):
            consts.append(_breakpoint_hook)
            changed = True
        elif const == _ITER_SENTINEL and isinstance(const, str):
            consts.append(_breakpoint_iter_hook)
            changed = True
        elif const == _AITER_SENTINEL and isinstance(const, str):
            consts.append(_breakpoint_aiter_hook)
            changed = True
        elif const == _EXCEPTION_SENTINEL and isinstance(const, str):
            consts.append(Exception)
            changed = True
        elif isinstance(const, str) and const in extra:
            consts.append(extra[const])
            counted.append(int(const.rsplit("_", 3)[1]))
            changed = True
        elif isinstance(const, types.CodeType):
            patched = _patch_hook(const, extra)
            changed = changed or patched is not const
            consts.append(patched)
        else:
            consts.append(const)
    if not changed:
        return code
    patched = code.replace(co_consts=tuple(consts))
    if counted:
        conditional_lines[id(patched)] = (patched, frozenset(counted))
    return patched


def instrument_source(
    source: str | bytes,
    filename: str,
    lines: Iterable[int],
    conditions: Iterable[tuple[int, str]] = (),
    *,
    name: str | None = None,
) -> types.CodeType:
    """Compile *source* with ``HOOK(line)`` before each statement on *lines*.

    A line with a condition gets the condition compiled in front of its
    hook.  Raises ``_Unsupported`` if a line does not start a statement,
    SyntaxError if a condition is not an expression.
    """
    wanted = frozenset(lines)
    by_line = dict(conditions)
    tree = ast.parse(source, filename)
    inserter = _InsertHooks(wanted, by_line)
    inserter.visit(tree)
    missing = wanted - inserter.placed
    if missing:
        raise _Unsupported(
            f"line(s) {sorted(missing)} of {filename} do not start a statement"
        )
    with warnings.catch_warnings():
        # The hooks are string constants until _patch_hook: calling one is
        # what this warning is about.  (The same warning in the program's
        # own code is hidden too -- it still shows without breakpoints.)
        warnings.filterwarnings("ignore", "'str' object is not callable", SyntaxWarning)
        code = compile(tree, filename, "exec", dont_inherit=True)
    counters = {
        _COUNT_SENTINEL.format(line): _count_false_passes(name or filename, line)
        for line in by_line
    }
    return _patch_hook(code, counters)


class _Index:
    """The code objects of one compiled module, by (qualname, first line)."""

    def __init__(self, module_code: types.CodeType) -> None:
        self.codes: dict[Key, types.CodeType] = {}
        self.ambiguous: set[Key] = set()
        for code in _walk_code(module_code):
            key = _key(code)
            if key in self.codes:
                self.ambiguous.add(key)
            self.codes[key] = code


class _FileState:
    """What is compiled into one file now."""

    def __init__(self, filename: str) -> None:
        self.filename = filename
        self.lines: frozenset[int] = frozenset()
        self.conditions: Conditions = frozenset()
        self.pristine: _Index | None = None
        self.current: _Index | None = None


class CodeInstrumenter:
    """Keeps every file's code in step with its breakpoints (see above)."""

    def __init__(self) -> None:
        self._files: dict[str, _FileState] = {}
        self._fallback: dict[str, str] = {}  # file -> why it needs tracing
        self._wanted: dict[str, frozenset[int]] = {}
        self._wanted_conditions: dict[str, Conditions] = {}
        self._lock = threading.RLock()
        self._finder: _BreakpointFinder | None = None
        self._canonic: Callable[[str], str] = lambda name: name
        #: id of a legacy frame -> a weak reference to its coroutine or
        #: generator (None: a plain function's frame).
        self._owners: dict[int, weakref.ref[Any] | None] = {}

    # -- what the tracer asks -------------------------------------------

    def needs_trace_function(self) -> bool:
        """True if some breakpoint could only be served by a trace function."""
        return any(name in self._wanted for name in self._fallback)

    def fallback_reasons(self) -> dict[str, str]:
        """Files whose breakpoints are served by tracing, and why."""
        return {
            name: why for name, why in self._fallback.items() if name in self._wanted
        }

    def legacy_frames_alive(self, debugger: TaskAwareBdb) -> bool:
        """Drop finished frames from the debugger's legacy set; any left?

        Cheap enough to call often: a coroutine's or generator's frame is
        alive while its owner is and still holds it; a plain function's
        while it is on some thread's stack.
        """
        legacy = debugger._legacy_frames
        if not legacy:
            return False
        on_stacks: set[int] | None = None
        for frame in list(legacy):
            ref = self._owners.get(id(frame))
            if ref is not None:
                owner = ref()
                alive = owner is not None and _frame_of(owner) is frame
            else:
                if on_stacks is None:
                    on_stacks = _stack_frames()
                alive = id(frame) in on_stacks
            if not alive:
                legacy.discard(frame)
                self._owners.pop(id(frame), None)
        return bool(legacy)

    # -- keeping code in step with breakpoints ------------------------------

    def sync(
        self,
        debugger: TaskAwareBdb,
        breaks: Mapping[str, Iterable[int]] | None = None,
    ) -> None:
        """Compile the debugger's breakpoints (or only *breaks*: file ->
        lines) into the code that runs."""
        with self._lock:
            self._canonic = debugger.canonic
            wanted = {
                name: frozenset(lines)
                for name, lines in (
                    debugger.breaks if breaks is None else breaks
                ).items()
                if lines
            }
            self._wanted = wanted
            conditions = self._wanted_conditions = {
                name: lone_conditions(name, lines) for name, lines in wanted.items()
            }
            changed = [
                name
                for name in {*wanted, *self._files}
                if (
                    wanted.get(name, frozenset()) != self._state(name).lines
                    or conditions.get(name, frozenset()) != self._state(name).conditions
                )
                and name not in self._fallback
            ]
            if not changed:
                self._update_finder()
                return
            global generation
            generation += 1
            functions, generators = _functions_and_generators(
                {self._state(name).filename for name in changed}, self._canonic
            )
            for name in changed:
                self._retarget(
                    debugger,
                    self._state(name),
                    wanted.get(name, frozenset()),
                    conditions.get(name, frozenset()),
                    functions.get(name, []),
                    generators.get(name, []),
                )
            self._update_finder()

    def compile_module(self, source: str | bytes, filename: str) -> types.CodeType:
        """Compile a module about to be run, with its breakpoints compiled in."""
        name = self._canonic(filename)
        lines = self._wanted.get(name, frozenset())
        conditions = self._wanted_conditions.get(name, frozenset())
        if lines and name not in self._fallback:
            try:
                code = instrument_source(source, filename, lines, conditions, name=name)
            except (_Unsupported, SyntaxError, ValueError) as exc:
                # (A hook before ``from __future__`` is a SyntaxError.)
                self._fallback[name] = str(exc)
            else:
                state = self._state(name)
                state.lines = lines
                state.conditions = conditions
                state.current = _Index(code)
                return code
        return compile(source, filename, "exec", dont_inherit=True)

    def _state(self, name: str) -> _FileState:
        state = self._files.get(name)
        if state is None:
            state = self._files[name] = _FileState(name)
        return state

    def _retarget(
        self,
        debugger: TaskAwareBdb,
        state: _FileState,
        lines: frozenset[int],
        conditions: Conditions,
        functions: Sequence[types.FunctionType],
        generators: Sequence[Any],
    ) -> None:
        reason = self._install(
            debugger, state, lines, conditions, functions, generators
        )
        if reason is not None:
            # Served by the trace function from now on: new calls through
            # its fast path, frames running now through f_trace.
            self._fallback[state.filename] = reason
            for frame, owner in _frames_running(
                state.filename, generators, self._canonic
            ):
                if lines & _lines(frame.f_code):
                    self._trace_legacy(debugger, frame, owner)

    def _trace_legacy(
        self, debugger: TaskAwareBdb, frame: types.FrameType, owner: Any
    ) -> None:
        frame.f_trace = debugger.trace_dispatch
        debugger._legacy_frames.add(frame)
        self._owners[id(frame)] = None if owner is None else weakref.ref(owner)

    def _install(
        self,
        debugger: TaskAwareBdb,
        state: _FileState,
        lines: frozenset[int],
        conditions: Conditions,
        functions: Sequence[types.FunctionType],
        generators: Sequence[Any],
    ) -> str | None:
        """Compile *lines* into the file's code; the reason if it cannot."""
        source = "".join(linecache.getlines(state.filename))
        if not source:
            return f"no source for {state.filename}"
        try:
            pristine = _Index(
                compile(source, state.filename, "exec", dont_inherit=True)
            )
            new = (
                _Index(
                    instrument_source(
                        source, state.filename, lines, conditions, name=state.filename
                    )
                )
                if lines
                else pristine
            )
        except (_Unsupported, SyntaxError, ValueError) as exc:
            return str(exc)
        old = state.current or pristine
        # Every running code object must be one we installed, or compile the
        # same from the source as it is now: otherwise the file changed on
        # disk since it was loaded, and its line numbers would lie.
        for function in functions:
            code = function.__code__
            key = _key(code)
            if state.current is not None and state.current.codes.get(key) is code:
                continue
            fresh = pristine.codes.get(key)
            if fresh is None or fresh.co_code != code.co_code:
                return f"{state.filename} changed on disk since it was loaded"
        swaps: list[tuple[types.FunctionType, types.CodeType]] = []
        for function in functions:
            key = _key(function.__code__)
            if key in new.ambiguous or key in old.ambiguous:
                if _lines(function.__code__) & (lines | state.lines):
                    return (
                        f"two code objects of {state.filename} start at line {key[1]}"
                    )
                continue
            replacement = new.codes.get(key)
            if replacement is None:
                continue
            if replacement.co_freevars != function.__code__.co_freevars:
                return f"{key[0]} in {state.filename} cannot take new code"
            if replacement is not function.__code__:
                swaps.append((function, replacement))
        # Functions not made yet: a running frame's code makes them from its
        # constants (see the module's docstring).
        running = list(_frames_running(state.filename, generators, self._canonic))
        const_swaps: list[tuple[types.CodeType, int, types.CodeType]] = []
        seen: set[int] = set()
        for frame, _ in running:
            reason = self._const_swaps(
                frame.f_code, state, pristine, old, new, lines, const_swaps, seen
            )
            if reason is not None:
                return reason
        for function, replacement in swaps:
            function.__code__ = replacement
        for parent, index, replacement in const_swaps:
            _set_const(parent, index, replacement)
        # Frames already running code that lacks a hook for one of its
        # breakpoint lines (old code, or code from before this change) are
        # traced instead, for as long as they live.
        for frame, owner in running:
            code = frame.f_code
            code_lines = _lines(code)
            wanted_here = lines & code_lines
            if not wanted_here:
                continue
            installed = state.current is not None and (
                state.current.codes.get(_key(code)) is code
            )
            hooked = state.lines & code_lines if installed else frozenset()
            # A hook whose compiled-in condition changed is no hook.
            hooked -= {line for line, _ in state.conditions ^ conditions}
            if wanted_here - hooked:
                self._trace_legacy(debugger, frame, owner)
        state.pristine = pristine
        state.current = new
        state.lines = lines
        state.conditions = conditions
        return None

    @staticmethod
    def _const_swaps(
        code: types.CodeType,
        state: _FileState,
        pristine: _Index,
        old: _Index,
        new: _Index,
        lines: frozenset[int],
        found: list[tuple[types.CodeType, int, types.CodeType]],
        seen: set[int],
    ) -> str | None:
        """Add to *found* the constants of *code* (a running frame's) to
        swap for *new*'s code: those holding, themselves or in code nested
        in them, lines with a breakpoint before or after this change (a new
        constant brings its nested code along).  The reason if one cannot
        be swapped."""
        if id(code) in seen:
            return None
        seen.add(id(code))
        affected = lines | state.lines
        for index, const in enumerate(code.co_consts):
            if not isinstance(const, types.CodeType):
                continue
            if not _tree_lines(const) & affected:
                continue
            key = _key(const)
            replacement = new.codes.get(key)
            if replacement is None or replacement is const:
                continue
            if key in new.ambiguous or key in old.ambiguous:
                return f"two code objects of {state.filename} start at line {key[1]}"
            installed = (
                state.current is not None and state.current.codes.get(key) is const
            )
            fresh = pristine.codes.get(key)
            if not installed and (fresh is None or fresh.co_code != const.co_code):
                return f"{state.filename} changed on disk since it was loaded"
            if replacement.co_freevars != const.co_freevars:
                return f"{key[0]} in {state.filename} cannot take new code"
            if _const_slot(code, index) is None:  # pragma: no cover - not CPython
                return f"the code running {key[0]} cannot take new constants"
            found.append((code, index, replacement))
        return None

    # -- modules imported later -----------------------------------------

    def _update_finder(self) -> None:
        needed = any(name not in self._fallback for name in self._wanted)
        if needed and self._finder is None:
            self._finder = _BreakpointFinder(self)
            sys.meta_path.insert(0, self._finder)
        elif not needed and self._finder is not None:
            try:
                sys.meta_path.remove(self._finder)
            except ValueError:  # pragma: no cover - removed by someone else
                pass
            self._finder = None

    def wants(self, filename: str) -> bool:
        """True if *filename* has breakpoints to compile in when imported."""
        name = self._canonic(filename)
        return name in self._wanted and name not in self._fallback


def lone_conditions(name: str, lines: Iterable[int]) -> Conditions:
    """The lines of *name* whose one breakpoint is a plain conditional one."""
    found: list[tuple[int, str]] = []
    for line in lines:
        breakpoints = bdb.Breakpoint.bplist.get((name, line), ())
        if len(breakpoints) != 1:
            continue
        bp = breakpoints[0]
        if (
            bp.cond
            and not bp.funcname
            and not bp.temporary
            and _breakpoints.condition_code(bp.cond) is not None
        ):
            found.append((line, bp.cond))
    return frozenset(found)


class _InstrumentingLoader(importlib.machinery.SourceFileLoader):
    """Compiles from source with breakpoints in; never caches that bytecode."""

    def __init__(
        self, fullname: str, path: str, instrumenter: CodeInstrumenter
    ) -> None:
        super().__init__(fullname, path)
        self._instrumenter = instrumenter

    def get_code(self, fullname: str) -> types.CodeType:
        path = self.get_filename(fullname)
        source = self.get_data(path)
        return self._instrumenter.compile_module(source, path)


class _BreakpointFinder:
    # A meta path finder by protocol, not an importlib.abc subclass: importing
    # importlib.abc costs every debuggee 10 ms of start-up.

    def __init__(self, instrumenter: CodeInstrumenter) -> None:
        self._instrumenter = instrumenter

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: types.ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        spec = importlib.machinery.PathFinder.find_spec(fullname, path, target)
        if (
            spec is None
            or spec.origin is None
            or not spec.origin.endswith(".py")
            or not isinstance(spec.loader, importlib.machinery.SourceFileLoader)
            or not self._instrumenter.wants(spec.origin)
        ):
            return None
        spec.loader = _InstrumentingLoader(fullname, spec.origin, self._instrumenter)
        return spec


def _functions_and_generators(
    filenames: set[str], canonic: Callable[[str], str]
) -> tuple[dict[str, list[types.FunctionType]], dict[str, list[Any]]]:
    """Live functions and generator-like objects of these files, one heap walk."""
    functions: dict[str, list[types.FunctionType]] = {}
    generators: dict[str, list[Any]] = {}
    cache: dict[str, str] = {}

    def file_of(code: types.CodeType) -> str | None:
        raw = code.co_filename
        name = cache.get(raw)
        if name is None:
            name = cache[raw] = canonic(raw)
        return name if name in filenames else None

    for obj in live_objects():
        kind = type(obj)
        if kind is types.FunctionType:
            name = file_of(obj.__code__)
            if name is not None:
                functions.setdefault(name, []).append(obj)
        elif kind in (
            types.CoroutineType,
            types.GeneratorType,
            types.AsyncGeneratorType,
        ):
            frame = (
                getattr(obj, "cr_frame", None)
                or getattr(obj, "gi_frame", None)
                or (getattr(obj, "ag_frame", None))
            )
            if frame is not None:
                name = file_of(frame.f_code)
                if name is not None:
                    generators.setdefault(name, []).append((frame, obj))
    return functions, generators


def _frames_running(
    filename: str, generators: Sequence[Any], canonic: Callable[[str], str]
) -> Iterator[tuple[types.FrameType, Any]]:
    """Frames of *filename* running or suspended now, each with the
    generator or coroutine that owns it (None for a plain function's)."""
    seen: set[int] = set()
    for frame, owner in generators:
        seen.add(id(frame))
        yield frame, owner
    for top in sys._current_frames().values():
        node: types.FrameType | None = top
        while node is not None:
            if id(node) not in seen and canonic(node.f_code.co_filename) == filename:
                seen.add(id(node))
                yield node, None
            node = node.f_back


def _frame_of(owner: Any) -> types.FrameType | None:
    frame: types.FrameType | None = (
        getattr(owner, "cr_frame", None)
        or getattr(owner, "gi_frame", None)
        or getattr(owner, "ag_frame", None)
    )
    return frame


def _stack_frames() -> set[int]:
    """ids of every frame on some thread's stack."""
    alive: set[int] = set()
    for top in sys._current_frames().values():
        node: types.FrameType | None = top
        while node is not None:
            alive.add(id(node))
            node = node.f_back
    return alive

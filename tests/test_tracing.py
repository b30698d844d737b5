"""The tracing backends: breakpoints cost nothing elsewhere and stop as pdb's do.

Every in-process test runs once per backend this Python has (``backends()``):
``settrace`` (breakpoints compiled into the code, ``sys.settrace`` only while
stepping) everywhere, and ``monitoring`` (local ``sys.monitoring`` LINE
events) on 3.12+.  The backend is a per-process singleton; the ``backend``
fixture installs a fresh one for the test and puts the process's back after.

The programs live in ``programs/tracing_program.py`` and
``programs/tracing_lib.py``: pytest rewrites this module's asserts, so code
defined here is not what compiling its source gives and the settrace backend
could only serve its breakpoints by tracing it.  Where the standard library's
bdb (pdb's engine) decides how often a line stops, the test runs the same
code under a plain ``bdb.Bdb`` too and compares.
"""

from __future__ import annotations

import bdb
import collections
import contextlib
import dis
import gc
import importlib
import importlib.util
import json
import marshal
import subprocess
import sys
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
from scripted import ScriptedDebugger, in_trio, line_of
from terminal import PROGRAMS, Terminal, run_under_debugger, terminal_env

from dapper_trio import _instrument, _monitoring, _tracing

MakeDebugger = Callable[..., ScriptedDebugger]


def _load(name: str) -> types.ModuleType:
    """Import programs/NAME.py as module NAME (programs/ is not on sys.path)."""
    spec = importlib.util.spec_from_file_location(name, PROGRAMS / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


program = _load("tracing_program")
lib = _load("tracing_lib")
PROGRAM = str(PROGRAMS / "tracing_program.py")
LIB = str(PROGRAMS / "tracing_lib.py")
assert (program.__file__, lib.__file__) == (PROGRAM, LIB)

#: What a recorded expression gives where its name is not bound yet.
UNBOUND = "<unbound>"


def backends() -> list[str]:
    """The tracing backends this Python has."""
    if sys.version_info >= (3, 12):
        return ["settrace", "monitoring"]
    return ["settrace"]


@pytest.fixture(params=backends(), name="backend")
def _backend(request: pytest.FixtureRequest) -> Iterator[str]:
    """Make the backend of the param this process's tracer for the test."""
    name: str = request.param
    saved = _tracing._tracer
    made: _monitoring.MonitoringTracer | None = None
    tracer: _tracing.Tracer
    if name == "settrace":
        tracer = _tracing.SettraceTracer()
    elif isinstance(saved, _monitoring.MonitoringTracer):
        tracer = saved  # it holds the tool id; it is idle between tests
    else:
        tracer = made = _monitoring.MonitoringTracer()
    _tracing._tracer = tracer
    try:
        yield name
    finally:
        _tracing._tracer = saved
        if made is not None:
            made.close()


@pytest.fixture(name="make_debugger")
def _make_debugger(backend: str) -> Iterator[MakeDebugger]:
    """ScriptedDebuggers whose breakpoints are gone after the test.

    As in test_engine: bdb's class-level breakpoints are saved and restored
    (numbering starts at 1), the debuggers' breakpoints are cleared through
    the engine (so the backend restores the code or switches events off)
    before the backend is put back, and no stop may be in trio's code.
    """
    saved = (bdb.Breakpoint.next, bdb.Breakpoint.bplist, bdb.Breakpoint.bpbynumber)
    bdb.Breakpoint.clearBreakpoints()  # type: ignore[attr-defined,unused-ignore]
    made: list[ScriptedDebugger] = []

    def make(*args: Any, **kwargs: Any) -> ScriptedDebugger:
        debugger = ScriptedDebugger(*args, **kwargs)
        made.append(debugger)
        return debugger

    try:
        yield make
    finally:
        for debugger in made:
            debugger.clear_all_breaks()
        bdb.Breakpoint.next, bdb.Breakpoint.bplist, bdb.Breakpoint.bpbynumber = saved
    for debugger in made:
        assert not [stop for stop in debugger.stops if in_trio(stop)]


def recording(expression: str, values: list[Any]) -> Callable[..., None]:
    """A scripted command: note *expression* in the stop frame, then continue."""

    def command(dbg: ScriptedDebugger, frame: types.FrameType) -> None:
        try:
            values.append(eval(expression, frame.f_globals, frame.f_locals))
        except NameError:
            values.append(UNBOUND)
        dbg.set_continue()

    return command


class ReferenceBdb(bdb.Bdb):
    """The standard library's bdb with breakpoints only: pdb's semantics."""

    def __init__(self) -> None:
        super().__init__()
        self.stops: list[tuple[str, int]] = []

    def user_line(self, frame: types.FrameType) -> None:
        self.stops.append((frame.f_code.co_name, frame.f_lineno))
        self.set_continue()

    def run_continuing(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``program.call(fn, *args)`` in trio, stopping at breakpoints only."""
        self.reset()
        self.botframe = sys._getframe()
        self.set_continue()
        sys.settrace(self.trace_dispatch)
        try:
            return trio.run(program.call, fn, *args)
        finally:
            sys.settrace(None)


def pdb_stops(
    set_breaks: Callable[[bdb.Bdb], object], fn: Callable[..., Any], *args: Any
) -> list[tuple[str, int]]:
    """Where stdlib bdb stops running *fn* with the breakpoints *set_breaks* sets."""
    reference = ReferenceBdb()
    set_breaks(reference)
    try:
        reference.run_continuing(fn, *args)
    finally:
        reference.clear_all_breaks()
    return reference.stops


def global_events() -> int:
    """The events the debugger's sys.monitoring tool id asks for everywhere."""
    monitoring = getattr(sys, "monitoring", None)
    if monitoring is None:
        return 0
    events: int = monitoring.get_events(monitoring.DEBUGGER_ID)
    return events


def local_events(code: types.CodeType) -> int:
    """The events the debugger's tool id asks for on *code* alone."""
    monitoring = getattr(sys, "monitoring", None)
    if monitoring is None:
        return 0
    events: int = monitoring.get_local_events(monitoring.DEBUGGER_ID, code)
    return events


@contextlib.contextmanager
def counting_discovery(
    backend: str, counted: collections.Counter[str]
) -> Iterator[None]:
    """Count the monitoring backend's PY_START/PY_RESUME callbacks.

    Only for runs that never step: a callback that looks at its caller's frame
    (LINE, and these while stepping) would see the counting wrapper's.
    """
    if backend != "monitoring":
        yield
        return
    monitoring: Any = sys.monitoring  # type: ignore[attr-defined,unused-ignore]
    tool = monitoring.DEBUGGER_ID
    events = {
        "PY_START": monitoring.events.PY_START,
        "PY_RESUME": monitoring.events.PY_RESUME,
    }
    previous: dict[str, Any] = {}

    def counter(name: str) -> Callable[..., Any]:
        def callback(*args: Any) -> Any:
            counted[name] += 1
            return previous[name](*args)

        return callback

    for name, event in events.items():
        previous[name] = monitoring.register_callback(tool, event, counter(name))
    try:
        yield
    finally:
        for name, event in events.items():
            monitoring.register_callback(tool, event, previous[name])


def all_consts(code: types.CodeType) -> Iterator[object]:
    """The constants of *code* and of every code object nested in it."""
    for const in code.co_consts:
        yield const
        if isinstance(const, types.CodeType):
            yield from all_consts(const)


def is_instrumented(code: types.CodeType) -> bool:
    """True if breakpoint hooks are compiled into *code* (settrace backend)."""
    consts = list(all_consts(code))
    return (
        _instrument._breakpoint_hook in consts
        or _instrument._breakpoint_iter_hook in consts
    )


# -- 1. breakpoints elsewhere cost nothing ----------------------------------------


def test_breakpoint_in_another_file_installs_no_tracing(
    backend: str, make_debugger: MakeDebugger
) -> None:
    """Breakpoints only in another file: nothing traces the program, yet it stops."""
    dbg = make_debugger()
    assert dbg.set_break(LIB, line_of(LIB, "target-body")) is None
    counted: collections.Counter[str] = collections.Counter()

    def probe(i: int) -> tuple[object, int, int, int]:
        return (
            sys.gettrace(),
            global_events(),
            local_events(program.busy_then_call.__code__),
            sum(counted.values()),
        )

    with counting_discovery(backend, counted):
        seen, result = dbg.run(
            program.busy_then_call, probe, lib.target, 200, start="continue"
        )
    assert result == 2000
    assert dbg.transcript() == [("line", "busy_then_call", "target", "result = n * 10")]
    assert dbg.stops[0].reason == "breakpoint 1"
    assert {trace for trace, _, _, _ in seen} == {None}
    assert {local for _, _, local, _ in seen} == {0}
    if backend == "monitoring":
        # As designed (_monitoring): while breakpoints exist, only the
        # discovery events are global; each code object is looked at once
        # and then reports nothing, so a warmed-up loop makes no callback
        # (PY_THROW comes only from a throw() into a suspended generator).
        events = sys.monitoring.events  # type: ignore[attr-defined,unused-ignore]
        assert {global_ for _, global_, _, _ in seen} == {
            events.PY_START | events.PY_RESUME | events.PY_THROW
        }
        assert seen[0][3] > 0  # the counting works: the first calls are seen
        assert seen[100][3] == seen[-1][3]
        assert local_events(lib.target.__code__) == events.LINE
    else:
        assert {global_ for _, global_, _, _ in seen} == {0}
        assert is_instrumented(lib.target.__code__)


# -- 2. loops ---------------------------------------------------------------------

N = 3

#: (function, marked line, the loop's variable, stops for N iterations, the
#: variable's value at each stop).  pdb stops on a ``for`` line once per
#: iteration plus once for the check that exhausts the iterator (N + 1), on a
#: ``while`` line at every evaluation of its condition (N + 1), and on a
#: ``while True:`` left by ``break`` once per iteration (N).
LOOPS = {
    "for": (program.for_loop, "for-line", "i", N + 1, [UNBOUND, 0, 1, 2]),
    "async-for": (
        program.async_for_loop,
        "async-for-line",
        "i",
        N + 1,
        [UNBOUND, 0, 1, 2],
    ),
    "while": (program.while_loop, "while-line", "i", N + 1, [0, 1, 2, 3]),
    "while-true": (program.while_true, "while-true-line", "i", N, [0, 1, 2]),
}


@pytest.mark.parametrize("kind", list(LOOPS))
def test_loop_line_stops_as_often_as_pdb(
    backend: str, make_debugger: MakeDebugger, kind: str
) -> None:
    """A breakpoint on a loop's line stops per iteration/condition, as pdb does."""
    fn, mark, variable, expected, values_at_stops = LOOPS[kind]
    line = line_of(PROGRAM, mark)
    reference = pdb_stops(lambda b: b.set_break(PROGRAM, line), fn, N)
    assert reference == [(fn.__name__, line)] * expected
    values: list[Any] = []
    dbg = make_debugger([recording(variable, values)] * 20)
    assert dbg.set_break(PROGRAM, line) is None
    dbg.run(program.call, fn, N, start="continue")
    assert [(stop.function, stop.lineno) for stop in dbg.stops] == reference
    assert values == values_at_stops
    assert dbg.get_breaks(PROGRAM, line)[0].hits == expected


# -- 3. function breakpoints ------------------------------------------------------

FUNCTIONS = {
    "plain": (program.plain, "plain-first"),
    "decorated": (program.decorated, "decorated-first"),
    "docstring": (program.documented, "documented-first"),
    "coroutine": (program.coroutine_function, "coroutine-first"),
    # Where the first statement compiles to no code, or starts with another
    # line than its own (a decorator), pdb stops at the first line executed.
    "global-declaration": (program.declares_global, "declares-global-first"),
    "decorated-nested-def": (program.with_decorated_def, "nested-decorator"),
}


@pytest.mark.parametrize("kind", list(FUNCTIONS))
def test_function_breakpoint_stops_at_first_executable_line(
    backend: str, make_debugger: MakeDebugger, kind: str
) -> None:
    """``break func`` stops at the function's first executable line, every call."""
    fn, mark = FUNCTIONS[kind]
    code = fn.__code__
    first = line_of(PROGRAM, mark)

    def set_function_break(debugger: bdb.Bdb) -> object:
        # What pdb's ``break func`` does.
        return debugger.set_break(PROGRAM, code.co_firstlineno, funcname=code.co_name)

    reference = pdb_stops(set_function_break, program.call_twice, fn)
    # Once per call (a decorator line runs twice on 3.12: before and after
    # the def it decorates).
    assert set(reference) == {(code.co_name, first)}
    assert len(reference) in (2, 4)
    dbg = make_debugger()
    assert set_function_break(dbg) is None
    dbg.run(program.call, program.call_twice, fn, start="continue")
    assert [(stop.function, stop.lineno) for stop in dbg.stops] == reference
    (bp,) = dbg.get_breaks(PROGRAM, code.co_firstlineno)
    assert {stop.reason for stop in dbg.stops} == {f"breakpoint {bp.number}"}


# -- 4. conditions and hit counts ---------------------------------------------------


@pytest.mark.parametrize(
    ("condition", "values_at_stops"),
    [
        ("i < 0", []),
        ("i == 3", [3]),
        ("i >= 4", [4, 5]),
        # bdb: a condition that raises counts as true (and says so).
        ("no_such_name > 1", [0, 1, 2, 3, 4, 5]),
    ],
    ids=["never", "once", "from-then-on", "raises"],
)
def test_conditional_breakpoint(
    backend: str,
    make_debugger: MakeDebugger,
    condition: str,
    values_at_stops: list[int],
) -> None:
    """A condition decides each hit (one that raises stops); every hit is counted."""
    line = line_of(PROGRAM, "summing-body")
    values: list[Any] = []
    dbg = make_debugger([recording("i", values)] * 20)
    assert dbg.set_break(PROGRAM, line, cond=condition) is None
    assert dbg.run(program.call, program.summing, 6, start="continue") == 15
    assert values == values_at_stops
    assert [stop.text for stop in dbg.stops] == ["total += i"] * len(values_at_stops)
    (bp,) = dbg.get_breaks(PROGRAM, line)
    assert bp.hits == 6


# -- lines that cannot take a hook ---------------------------------------------


def fallback_reasons() -> dict[str, str]:
    """The settrace backend's files served by tracing, and why."""
    tracer = _tracing.current_tracer()
    assert isinstance(tracer, _tracing.SettraceTracer)
    return tracer.instrumenter.fallback_reasons()


def test_continuation_line_breakpoint_stops_as_pdb(
    backend: str, make_debugger: MakeDebugger
) -> None:
    """A continuation-line breakpoint (no statement starts there) stops as in pdb."""
    line = line_of(PROGRAM, "continuation")
    reference = pdb_stops(lambda b: b.set_break(PROGRAM, line), program.continued, 1)
    assert reference == [("continued", line)]
    dbg = make_debugger()
    assert dbg.set_break(PROGRAM, line) is None
    assert dbg.run(program.call, program.continued, 1, start="continue") == 1
    assert [(stop.function, stop.lineno) for stop in dbg.stops] == reference
    if backend == "settrace":
        # Documented: such a file is served by the trace function instead.
        assert "do not start a statement" in fallback_reasons()[PROGRAM]


# -- 5. breakpoints set while the program runs ----------------------------------


def setting_break(filename: str, line: int) -> Callable[..., None]:
    """A scripted command: set a breakpoint (as ``break`` at the prompt), continue."""

    def command(dbg: ScriptedDebugger, frame: types.FrameType) -> None:
        assert dbg.set_break(filename, line) is None
        dbg.set_continue()

    return command


def test_breakpoint_set_while_a_coroutine_is_suspended_stops_it(
    backend: str, make_debugger: MakeDebugger
) -> None:
    """A breakpoint set while task W waits mid-function stops W when it resumes."""
    line = line_of(PROGRAM, "after-wait")
    dbg = make_debugger([setting_break(PROGRAM, line)])
    log = dbg.run(program.suspended_coroutine, dbg, start="continue")
    assert log == ["waiting", "resumed"]
    assert dbg.transcript() == [
        ("enter", "suspended_coroutine", "suspended_coroutine", "dbg.set_trace()"),
        ("line", "W", "waiter", 'log.append("resumed")'),
    ]
    assert dbg.stops[1].reason == "breakpoint 1"


def test_breakpoint_set_while_a_generator_is_suspended_stops_a_throw_into_it(
    backend: str, make_debugger: MakeDebugger
) -> None:
    """A breakpoint in a suspended generator's handler stops when throw() lands.

    The generator's code is past its start and is not resumed by ``next``:
    only the exception thrown in (PY_THROW) shows the tracer its code.
    """
    line = line_of(PROGRAM, "thrown-handler")
    dbg = make_debugger([setting_break(PROGRAM, line)])
    log = dbg.run(program.call, program.thrown_into_suspended, dbg, start="continue")
    assert log == ["caught", "done"]
    assert [stop.text for stop in dbg.stops[1:]] == ['log.append("caught")']
    assert dbg.stops[1].reason == "breakpoint 1"


def test_breakpoint_set_in_a_running_loop_stops_its_next_iteration(
    backend: str, make_debugger: MakeDebugger
) -> None:
    """A breakpoint set from a callee's stop stops the caller's running loop next."""
    line = line_of(PROGRAM, "outer-body")
    values: list[Any] = []
    dbg = make_debugger([setting_break(PROGRAM, line), *[recording("i", values)] * 10])
    assert dbg.run(program.outer_loop, dbg, 5, start="continue") == 10
    assert dbg.transcript() == [
        ("enter", "outer_loop", "inner_stop", "dbg.set_trace()"),
        *[("line", "outer_loop", "outer_loop", "total += inner_stop(dbg, i)")] * 3,
    ]
    assert values == [2, 3, 4]


def test_continuation_line_breakpoint_set_in_a_running_loop_stops_it(
    backend: str, make_debugger: MakeDebugger
) -> None:
    """A continuation-line breakpoint set from a callee's stop stops the caller."""
    line = line_of(PROGRAM, "sync-continuation")
    values: list[Any] = []
    dbg = make_debugger([setting_break(PROGRAM, line), *[recording("i", values)] * 10])
    assert (
        dbg.run(program.call, program.outer_sync_loop, dbg, 5, start="continue") == 10
    )
    # The rest of iteration 1 reaches the line too.
    assert values == [1, 2, 3, 4]
    assert [stop.text for stop in dbg.stops[1:]] == ["0,"] * 4


#: A module for import tests; its code differs with *step*.
LATE_SOURCE = """\
def late(x):
    y = x + {step}
    return y
"""
LATE_LINE = 2


@pytest.fixture(name="temp_modules")
def _temp_modules(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., Path]]:
    """Write modules into an importable temp directory; forget them after."""
    monkeypatch.syspath_prepend(str(tmp_path))
    names: list[str] = []

    def write(name: str, step: int = 1) -> Path:
        path = tmp_path / f"{name}.py"
        path.write_text(LATE_SOURCE.format(step=step))
        names.append(name)
        return path

    try:
        yield write
    finally:
        for name in names:
            sys.modules.pop(name, None)


def test_breakpoint_in_a_module_imported_later(
    backend: str, make_debugger: MakeDebugger, temp_modules: Callable[..., Path]
) -> None:
    """A breakpoint set by path before its module is imported stops once it runs."""
    name = f"tracing_late_{backend}"
    path = temp_modules(name)
    assert name not in sys.modules
    dbg = make_debugger()
    assert dbg.set_break(str(path), LATE_LINE) is None
    assert dbg.run(program.import_and_call, name, 1, start="continue") == 2
    assert dbg.transcript() == [("line", "import_and_call", "late", "y = x + 1")]


# -- equal code objects -------------------------------------------------------------


def test_equal_code_in_two_files_stops_in_each(
    backend: str, make_debugger: MakeDebugger, temp_modules: Callable[..., Path]
) -> None:
    """Equal code in two files (a copy, a reload) stops at each file's breakpoint.

    Code objects compare equal by value, whatever their file: the backends
    must tell them apart by identity.
    """
    first, second = (f"tracing_copy{n}_{backend}" for n in (1, 2))
    paths = [temp_modules(first), temp_modules(second)]
    modules = [importlib.import_module(first), importlib.import_module(second)]
    assert modules[0].late.__code__ == modules[1].late.__code__
    dbg = make_debugger()
    for path in paths:
        assert dbg.set_break(str(path), LATE_LINE) is None

    async def call_each_then_reload() -> list[int]:
        results = [module.late(1) for module in modules]
        reloaded = importlib.reload(modules[0])
        return [*results, reloaded.late(1)]

    assert dbg.run(call_each_then_reload, start="continue") == [2, 2, 2]
    assert [(stop.function, stop.filename) for stop in dbg.stops] == [
        ("late", str(paths[0])),
        ("late", str(paths[1])),
        ("late", str(paths[0])),
    ]


# -- 6. clearing -----------------------------------------------------------------


def test_cleared_breakpoint_stops_no_more(
    backend: str, make_debugger: MakeDebugger
) -> None:
    """Cleared at its first stop, a breakpoint in a running loop stops no more."""
    line = line_of(PROGRAM, "clear-line")
    function = program.clear_target
    original = function.__code__
    while_set: list[bool] = []

    def clear_and_continue(dbg: ScriptedDebugger, frame: types.FrameType) -> None:
        while_set.append(is_instrumented(function.__code__))
        assert dbg.clear_break(PROGRAM, line) is None
        dbg.set_continue()

    dbg = make_debugger([clear_and_continue])
    assert dbg.set_break(PROGRAM, line) is None
    assert dbg.run(program.call, function, 5, start="continue") == 10
    assert dbg.transcript() == [("line", "call", "clear_target", "total += i")]
    # A new call after the clear does not stop either.
    assert dbg.run(program.call, function, 5, start="continue") == 10
    assert len(dbg.stops) == 1
    if backend == "settrace":
        # The hooks were compiled in, and the code is as it was again.
        assert while_set == [True]
        assert not is_instrumented(function.__code__)
        assert function.__code__.co_code == original.co_code
        assert function.__code__.co_consts == original.co_consts
    else:
        assert while_set == [False]
        assert local_events(function.__code__) == 0
        assert global_events() == 0


# -- 7. stepping from a breakpoint stop --------------------------------------------


def test_next_and_step_after_a_breakpoint_stop(
    backend: str, make_debugger: MakeDebugger
) -> None:
    """After a breakpoint stop, next goes on line by line and step enters a call."""
    line = line_of(PROGRAM, "step-bp")
    dbg = make_debugger(["next", "next", "step", "step", "continue"])
    assert dbg.set_break(PROGRAM, line) is None
    assert dbg.run(program.call, program.stepping_target, 1, start="continue") == 6
    task = "call"
    assert dbg.transcript() == [
        ("line", task, "stepping_target", "a = x + 1"),
        ("line", task, "stepping_target", "await trio.lowlevel.checkpoint()"),
        ("line", task, "stepping_target", "b = helper(a)"),
        ("call", task, "helper", "def helper(x: int) -> int:"),
        ("line", task, "helper", "doubled = x * 2"),
    ]
    assert [stop.reason for stop in dbg.stops] == [
        "breakpoint 1",
        "step",
        "step",
        "step",
        "step",
    ]


def test_stepping_onto_a_breakpoint_line_stops_there_once(
    backend: str, make_debugger: MakeDebugger
) -> None:
    """A step that lands on a breakpoint's line stops once: continue goes past it."""
    first, second = line_of(PROGRAM, "step-bp"), line_of(PROGRAM, "step-second")
    dbg = make_debugger(["next", "next", "continue"])
    assert dbg.set_break(PROGRAM, first) is None
    assert dbg.set_break(PROGRAM, second) is None
    assert dbg.run(program.call, program.stepping_target, 1, start="continue") == 6
    assert [(stop.text, stop.reason) for stop in dbg.stops] == [
        ("a = x + 1", "breakpoint 1"),
        ("await trio.lowlevel.checkpoint()", "step"),
        ("b = helper(a)", "step"),
    ]


def test_step_at_a_for_line_breakpoint_enters_the_iterables_call(
    backend: str, make_debugger: MakeDebugger
) -> None:
    """Stopped at ``for i in numbers(n):``, step enters numbers() as in pdb."""
    line = line_of(PROGRAM, "for-call-line")
    dbg = make_debugger(["step", "continue"])
    assert dbg.set_break(PROGRAM, line) is None
    assert dbg.run(program.call, program.sum_numbers, 2, start="continue") == 1
    assert dbg.transcript()[:2] == [
        ("line", "call", "sum_numbers", "for i in numbers(n):"),
        ("call", "call", "numbers", "def numbers(n: int) -> list[int]:"),
    ]


# -- 8. no instrumented bytecode in __pycache__ --------------------------------------


def test_instrumented_code_is_never_cached(
    backend: str,
    make_debugger: MakeDebugger,
    temp_modules: Callable[..., Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Importing a module with a breakpoint leaves __pycache__ as python would."""
    monkeypatch.setattr(sys, "dont_write_bytecode", False)
    cached_name, fresh_name = f"tracing_cached_{backend}", f"tracing_fresh_{backend}"
    cached, fresh = temp_modules(cached_name, 1), temp_modules(fresh_name, 2)
    # The first one python has cached already, without breakpoints.
    importlib.import_module(cached_name)
    del sys.modules[cached_name]
    gc.collect()  # (its old code is gone: see test_equal_code_in_two_files...)
    cached_pyc = Path(importlib.util.cache_from_source(str(cached)))
    fresh_pyc = Path(importlib.util.cache_from_source(str(fresh)))
    before = cached_pyc.read_bytes()
    assert not fresh_pyc.exists()
    dbg = make_debugger()
    assert dbg.set_break(str(cached), LATE_LINE) is None
    assert dbg.set_break(str(fresh), LATE_LINE) is None

    async def import_both() -> list[Any]:
        return [
            await program.import_and_call(cached_name, 1),
            await program.import_and_call(fresh_name, 2),
        ]

    assert dbg.run(import_both, start="continue") == [2, 4]
    assert [(stop.function, stop.filename) for stop in dbg.stops] == [
        ("late", str(cached)),
        ("late", str(fresh)),
    ]
    assert cached_pyc.read_bytes() == before
    if fresh_pyc.exists():
        # Only what python itself would have written.
        data = fresh_pyc.read_bytes()
        plain = compile(fresh.read_text(), str(fresh), "exec", dont_inherit=True)
        assert marshal.loads(data[16:]) == plain
    for pyc in cached_pyc.parent.iterdir():
        assert b"__dapper_trio" not in pyc.read_bytes()


# -- 9. at a terminal --------------------------------------------------------------

HOT_LOOP = PROGRAMS / "tracing_hot_loop.py"


@pytest.fixture(params=["subprocess", "in-process"], name="mode")
def _mode(request: pytest.FixtureRequest) -> str:
    mode: str = request.param
    return mode


@pytest.mark.timeout(60)
@pytest.mark.parametrize("tracer", backends())
def test_terminal_breakpoint_in_a_hot_loop(mode: str, tracer: str) -> None:
    """-b FILE:LINE stops in a task's hot loop; c goes to the next hit; q quits."""
    line = line_of(str(HOT_LOOP), "hot-body")
    with run_under_debugger(
        HOT_LOOP.name,
        mode=mode,
        options=["-c", "-b", f"{HOT_LOOP.name}:{line}"],
        env=terminal_env(DAPPER_TRIO_TRACER=tracer),
    ) as term:
        out = term.expect_prompt()
        assert "[dapper-trio] breakpoint 1 in task 'spinner'" in out
        assert f"tracing_hot_loop.py({line})spin()" in out
        assert "-> total += i" in out
        assert term.cmd("p i").strip() == "0"
        term.sendline("c")
        out = term.expect_prompt()
        assert "[dapper-trio] breakpoint 1 in task 'spinner'" in out
        assert term.cmd("p i").strip() == "1"
        term.sendline("q")
        rest = term.expect_exit()
    assert "[dapper-trio] debugger quit: the program was stopped." in rest
    assert "done" not in rest
    assert term.exitstatus == 1


@pytest.mark.timeout(60)
@pytest.mark.parametrize("tracer", backends())
def test_terminal_conditional_breakpoint_in_a_hot_loop(mode: str, tracer: str) -> None:
    """run -c -b 'FILE:LINE, i == 7' stops once, with i == 7, and runs on to the end."""
    line = line_of(str(HOT_LOOP), "hot-body")
    with run_under_debugger(
        HOT_LOOP.name,
        mode=mode,
        options=["-c", "-b", f"{HOT_LOOP.name}:{line}, i == 7"],
        env=terminal_env(DAPPER_TRIO_TRACER=tracer),
    ) as term:
        out = term.expect_prompt()
        assert "[dapper-trio] breakpoint 1 in task 'spinner'" in out
        assert "-> total += i" in out
        assert term.cmd("p i").strip() == "7"
        term.sendline("c")
        rest = term.expect_exit()
    assert f"spun {sum(range(200_000))}" in rest
    assert "done" in rest
    assert "(Pdb++)" not in rest
    assert term.exitstatus == 0


# -- 10. a foreign sys.monitoring tool ------------------------------------------------


@pytest.mark.parametrize("requested", backends())
def test_tool_id_taken_falls_back_to_settrace(requested: str) -> None:
    """DEBUGGER_ID taken by another tool: monitoring says so and uses settrace."""
    result = subprocess.run(
        [
            sys.executable,
            str(PROGRAMS / "tracing_runner.py"),
            "--take-tool-id",
            "summing",
            "summing-body",
            "4",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        env=terminal_env(DAPPER_TRIO_TRACER=requested),
        check=False,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["tracer"] == "settrace"
    assert report["result"] == 6
    assert (
        report["stops"]
        == [["line", "call", "summing", "total += i", "breakpoint 1"]] * 4
    )
    notices = [line for line in result.stderr.splitlines() if "dapper-trio" in line]
    if requested == "monitoring":
        assert notices == [
            "[dapper-trio] sys.monitoring tool id 0 is in use by 'other';"
            " using sys.settrace"
        ]
    else:
        assert notices == []


def test_condition_changed_at_a_stop_holds_in_the_suspended_coroutine(
    backend: str, make_debugger: MakeDebugger
) -> None:
    """A condition changed at a stop applies to the running coroutine, once a pass."""
    line = line_of(PROGRAM, "channel-bp")
    values: list[Any] = []

    def change_condition(dbg: ScriptedDebugger, frame: types.FrameType) -> None:
        values.append(frame.f_locals["number"])
        (bp,) = dbg.get_breaks(PROGRAM, line)
        bp.cond = "number == 20"  # what pdb's ``condition 1 number == 20`` does
        dbg.set_continue()

    dbg = make_debugger([change_condition, recording("number", values)])
    assert dbg.set_break(PROGRAM, line, cond="number > 5") is None
    assert dbg.run(program.call, program.channel_pipeline, 30, start="continue") == 30
    assert values == [6, 20]
    assert [stop.text for stop in dbg.stops] == ["log.append(number)"] * 2
    (bp,) = dbg.get_breaks(PROGRAM, line)
    # Every pass counted; the pass where the condition changed may count twice
    # with the monitoring backend (its old code's LINE event and its hook).
    assert bp.hits in ((30,) if backend == "settrace" else (30, 31))


# -- 11. functions defined after the breakpoint was set ----------------------------

DEFINED_LATER = """\
import trio

print("start")


def helper(x):
    y = x * 2  # mark: helper-body
    return y


class Counter:
    def bump(self, n):
        return n + 1  # mark: method-body


async def main():
    total = 0
    for i in range(2):
        total += helper(i)
    print("total", Counter().bump(total))


trio.run(main)
"""


@contextlib.contextmanager
def _stopped_on_entry(script: Path, mode: str, tracer: str) -> Iterator[Terminal]:
    """Run *script* under the debugger; yield at its first prompt."""
    with run_under_debugger(
        script.name,
        mode=mode,
        cwd=script.parent,
        env=terminal_env(DAPPER_TRIO_TRACER=tracer),
    ) as term:
        out = term.expect_prompt()
        assert f"{script.name}(1)<module>()" in out
        yield term


@pytest.mark.timeout(60)
@pytest.mark.parametrize("tracer", backends())
def test_terminal_breakpoint_in_a_function_not_defined_yet(
    mode: str, tracer: str, tmp_path: Path
) -> None:
    """A breakpoint set on entry in a function not defined yet stops once it is."""
    script = tmp_path / "defined_later.py"
    script.write_text(DEFINED_LATER)
    helper = line_of(str(script), "helper-body")
    method = line_of(str(script), "method-body")
    with _stopped_on_entry(script, mode, tracer) as term:
        assert f"Breakpoint 1 at {script}:{helper}" in term.cmd(f"b {helper}")
        assert f"Breakpoint 2 at {script}:{method}" in term.cmd(f"b {method}")
        term.sendline("c")
        out = term.expect_prompt()
        assert f"defined_later.py({helper})helper()" in out
        assert "start" in out
        assert term.cmd("p x").strip() == "0"
        term.cmd("cl 1")
        term.sendline("c")
        out = term.expect_prompt()
        assert f"defined_later.py({method})bump()" in out
        assert term.cmd("p n").strip() == "2"
        term.continue_to_end("total 3")


JSON_USER = """\
import json
print("start")
print(json.dumps([1, 2]))
print("end")
"""


def _first_body_line(function: types.FunctionType) -> int:
    code = function.__code__
    return min(
        line
        for _, line in dis.findlinestarts(code)
        if line is not None and line > code.co_firstlineno
    )


@pytest.mark.timeout(60)
@pytest.mark.parametrize("tracer", backends())
def test_terminal_breakpoint_in_a_module_the_debugger_imported_first(
    mode: str, tracer: str, tmp_path: Path
) -> None:
    """A breakpoint in json.dumps (imported by the debuggee itself, and so
    frozen out of the collector's sight before the program ran) stops."""
    script = tmp_path / "uses_json.py"
    script.write_text(JSON_USER)
    line = _first_body_line(json.dumps)
    with _stopped_on_entry(script, mode, tracer) as term:
        assert f"Breakpoint 1 at {json.__file__}:{line}" in term.cmd(
            f"b {json.__file__}:{line}"
        )
        term.sendline("c")
        out = term.expect_prompt()
        assert f"__init__.py({line})dumps()" in out
        assert term.cmd("p obj").strip() == "[1, 2]"
        term.continue_to_end("[1, 2]", "end")

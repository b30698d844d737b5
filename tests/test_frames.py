"""Which frames are the user's, suspension vs return, traceback cleaning, stacks."""

from __future__ import annotations

import importlib
import json
import os
import runpy
import sys
import types
import uuid
from collections.abc import AsyncIterator, Callable, Generator, Iterator
from pathlib import Path
from typing import Any

import outcome
import pytest
import trio
import trio.lowlevel
import trio.testing

from dapper_trio import _frames

if sys.version_info < (3, 11):  # pragma: no cover - exercised on 3.10 only
    from exceptiongroup import BaseExceptionGroup, ExceptionGroup

TRIO_DIR = os.path.dirname(trio.__file__)

# -- recording settrace events -------------------------------------------------


class Suspend:
    """An awaitable that suspends its awaiter once, as trio's traps do."""

    def __await__(self) -> Generator[str, None, None]:
        yield "suspended"


async def inner() -> int:
    await Suspend()
    return 1


async def outer() -> int:
    x = await inner()
    await Suspend()
    return x + 1


def numbers() -> Iterator[int]:
    yield 1
    yield 2


def delegating() -> Generator[int, None, None]:
    yield from numbers()


async def async_numbers() -> AsyncIterator[int]:
    await Suspend()
    yield 1
    yield 2


async def consume_async_numbers() -> list[int]:
    return [value async for value in async_numbers()]


async def sleeps_in_trio() -> int:
    await trio.lowlevel.checkpoint()
    await trio.lowlevel.checkpoint()
    return 3


def _name(code: types.CodeType) -> str:
    return "__await__" if code is Suspend.__await__.__code__ else code.co_name


def record(drive: Callable[[], object], *functions: Any) -> list[tuple[str, str]]:
    """Run *drive* under sys.settrace; classify each call/return of *functions*.

    A 'call' event is "resume" if is_resumption says so, else "call"; a
    'return' event is "suspend" if is_suspension says so, else "return".
    The predicates run inside the trace function, as the engine runs them.
    """
    codes = {getattr(f, "__code__", f) for f in functions}
    events: list[tuple[str, str]] = []

    def tracer(frame: types.FrameType, event: str, arg: Any) -> Any:
        if frame.f_code not in codes:
            return None
        if event == "call":
            kind = "resume" if _frames.is_resumption(frame) else "call"
            events.append((_name(frame.f_code), kind))
        elif event == "return":
            kind = "suspend" if _frames.is_suspension(frame) else "return"
            events.append((_name(frame.f_code), kind))
        return tracer

    previous = sys.gettrace()
    sys.settrace(tracer)
    try:
        drive()
    finally:
        sys.settrace(previous)
    return events


def drive_by_hand(coro: Any) -> Any:
    """Send None into *coro* until it finishes, as an event loop would."""
    try:
        while True:
            coro.send(None)
    except StopIteration as done:
        return done.value


def test_coroutine_chain_suspensions_and_resumptions() -> None:
    """In a coroutine chain each await is a suspension, each pickup a resumption."""
    events = record(lambda: drive_by_hand(outer()), outer, inner, Suspend.__await__)
    assert events == [
        ("outer", "call"),
        ("inner", "call"),
        ("__await__", "call"),
        ("__await__", "suspend"),
        ("inner", "suspend"),
        ("outer", "suspend"),
        ("outer", "resume"),
        ("inner", "resume"),
        ("__await__", "resume"),
        ("__await__", "return"),
        ("inner", "return"),
        ("__await__", "call"),
        ("__await__", "suspend"),
        ("outer", "suspend"),
        ("outer", "resume"),
        ("__await__", "resume"),
        ("__await__", "return"),
        ("outer", "return"),
    ]


def test_generator_yields_are_suspensions() -> None:
    """A generator's yields are suspensions and its next() calls resumptions."""
    assert record(lambda: list(numbers()), numbers) == [
        ("numbers", "call"),
        ("numbers", "suspend"),
        ("numbers", "resume"),
        ("numbers", "suspend"),
        ("numbers", "resume"),
        ("numbers", "return"),
    ]


def test_yield_from_suspensions() -> None:
    """yield from suspends at each delegated yield (3.10: before YIELD_FROM)."""
    assert record(lambda: list(delegating()), delegating, numbers) == [
        ("delegating", "call"),
        ("numbers", "call"),
        ("numbers", "suspend"),
        ("delegating", "suspend"),
        ("delegating", "resume"),
        ("numbers", "resume"),
        ("numbers", "suspend"),
        ("delegating", "suspend"),
        ("delegating", "resume"),
        ("numbers", "resume"),
        ("numbers", "return"),
        ("delegating", "return"),
    ]


def test_async_generator_awaits_and_yields_are_suspensions() -> None:
    """An async generator suspends both at its awaits and at its yields."""
    events = record(
        lambda: drive_by_hand(consume_async_numbers()),
        async_numbers,
        Suspend.__await__,
    )
    assert events == [
        ("async_numbers", "call"),
        ("__await__", "call"),
        ("__await__", "suspend"),
        ("async_numbers", "suspend"),
        ("async_numbers", "resume"),
        ("__await__", "resume"),
        ("__await__", "return"),
        ("async_numbers", "suspend"),
        ("async_numbers", "resume"),
        ("async_numbers", "suspend"),
        ("async_numbers", "resume"),
        ("async_numbers", "return"),
    ]


def test_coroutine_in_a_trio_run() -> None:
    """A coroutine trio drives through trio.sleep(0): one call, one real return."""
    events = record(lambda: trio.run(sleeps_in_trio), sleeps_in_trio)
    assert events == [
        ("sleeps_in_trio", "call"),
        ("sleeps_in_trio", "suspend"),
        ("sleeps_in_trio", "resume"),
        ("sleeps_in_trio", "suspend"),
        ("sleeps_in_trio", "resume"),
        ("sleeps_in_trio", "return"),
    ]


def test_plain_functions_are_never_suspensions_or_resumptions() -> None:
    """Plain function frames: neither predicate is ever true."""

    def plain() -> int:
        return 1

    assert record(plain, plain) == [("plain", "call"), ("plain", "return")]


# -- hidden frames -------------------------------------------------------------


def function_in_module(
    module_name: str, filename: str = "<fake>", tag: str | None = None
) -> Callable[[], types.FrameType]:
    """``here()``, defined in a module named *module_name*, returns its frame.

    Its code differs from every other call's unless the same *tag* is given:
    code objects compare (and hash) by value, not by file or module.
    """
    namespace: dict[str, Any] = {"__name__": module_name, "sys": sys}
    tag = tag if tag is not None else f"{module_name}:{uuid.uuid4()}"
    source = f"def here():\n    tag = {tag!r}\n    return sys._getframe()\n"
    exec(compile(source, filename, "exec"), namespace)
    function: Callable[[], types.FrameType] = namespace["here"]
    return function


def frame_in_module(module_name: str) -> types.FrameType:
    """A frame whose globals say it belongs to *module_name*."""
    return function_in_module(module_name)()


def test_trio_scheduler_frame_is_hidden() -> None:
    """The trio frame that runs a task's coroutine is hidden."""

    async def main() -> types.FrameType | None:
        return sys._getframe().f_back

    back = trio.run(main)
    assert back is not None
    assert back.f_globals["__name__"].startswith("trio.")
    assert _frames.is_hidden_frame(back)


def test_outcome_frame_is_hidden() -> None:
    """outcome's frames (trio wraps every task step in it) are hidden."""
    frame = outcome.capture(sys._getframe).unwrap()
    assert frame.f_globals["__name__"].startswith("outcome")
    assert _frames.is_hidden_frame(frame)


def test_dapper_trio_frame_is_hidden() -> None:
    """dapper-trio's own frames are hidden."""
    seen: list[types.FrameType] = []

    def entries() -> Iterator[tuple[types.FrameType, int]]:
        seen.append(sys._getframe(1))
        yield from ()

    _frames.innermost_user_frame(entries())
    assert seen[0].f_globals["__name__"] == "dapper_trio._frames"
    assert _frames.is_hidden_frame(seen[0])


def test_runpy_and_importlib_frames_are_hidden(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Frames of runpy and importlib that run a program are hidden; its own not."""
    capture = "import sys\nCHAIN = []\nf = sys._getframe()\n"
    capture += "while f is not None:\n    CHAIN.append(f)\n    f = f.f_back\n"
    script = tmp_path / "script_for_runpy.py"
    script.write_text(capture)
    chain = runpy.run_path(str(script))["CHAIN"]
    assert not _frames.is_hidden_frame(chain[0])
    runpy_frames = [f for f in chain if f.f_globals.get("__name__") == "runpy"]
    assert runpy_frames
    assert all(_frames.is_hidden_frame(f) for f in runpy_frames)

    module_name = f"module_for_importlib_{os.getpid()}"
    (tmp_path / f"{module_name}.py").write_text(capture)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, module_name, raising=False)
    module = importlib.import_module(module_name)
    monkeypatch.delitem(sys.modules, module_name)
    chain = module.CHAIN
    assert not _frames.is_hidden_frame(chain[0])
    # Everything between the module's frame and this test is importlib's.
    between = chain[1 : chain.index(sys._getframe())]
    assert any(f.f_code.co_filename.startswith("<frozen ") for f in between)
    assert any(f.f_globals.get("__name__") == "importlib" for f in between)
    assert all(_frames.is_hidden_frame(f) for f in between)


def test_user_frames_are_not_hidden() -> None:
    """User frames are not hidden, nor modules that only start like a hidden one."""
    assert not _frames.is_hidden_frame(sys._getframe())
    assert not _frames.is_hidden_frame(frame_in_module("trio_helpers"))
    assert not _frames.is_hidden_frame(frame_in_module("__main__"))
    assert _frames.is_hidden_frame(frame_in_module("trio._core._fake"))
    assert _frames.is_hidden_frame(frame_in_module("dapper_trio"))


def test_hidden_is_decided_per_module_for_equal_code() -> None:
    """A user function with code equal to a trio function's is not hidden."""
    for first, second in (("user", "trio"), ("trio", "user")):
        tag = str(uuid.uuid4())
        here = {
            "user": function_in_module("user_module", "/home/user/app.py", tag),
            "trio": function_in_module(
                "trio._core._equal_code", os.path.join(TRIO_DIR, "_x.py"), tag
            ),
        }
        assert here["user"].__code__ == here["trio"].__code__  # the premise
        verdicts = {
            which: _frames.is_hidden_frame(here[which]()) for which in (first, second)
        }
        assert verdicts == {"user": False, "trio": True}


def test_library_code_is_decided_per_file_for_equal_code() -> None:
    """A user function with code equal to a stdlib function's is not library code."""
    stdlib_file = json.__file__
    for first, second in (("user", "stdlib"), ("stdlib", "user")):
        tag = str(uuid.uuid4())
        code = {
            "user": function_in_module("app", "/home/user/app.py", tag).__code__,
            "stdlib": function_in_module("json", stdlib_file, tag).__code__,
        }
        assert code["user"] == code["stdlib"]  # the premise
        verdicts = {
            which: _frames.is_library_code(code[which]) for which in (first, second)
        }
        assert verdicts == {"user": False, "stdlib": True}


# -- step targets -----------------------------------------------------------------
#
# json.loads is pure Python (loads -> JSONDecoder.decode -> raw_decode) until
# its C scanner calls object_hook, so the hook sees a chain of stdlib frames
# between itself and whoever called json.loads.

STDLIB_CHAIN = ("raw_decode", "decode", "loads")


def step_targets_seen_by_hook(
    call_loads: Callable[[Callable[..., Any]], Any],
) -> dict[str, bool]:
    """is_step_target for the hook's frame and each json frame above it."""
    verdicts: dict[str, bool] = {}

    def hook(obj: dict[str, Any]) -> dict[str, Any]:
        frame = sys._getframe()
        verdicts["hook"] = _frames.is_step_target(frame)
        node = frame.f_back
        for name in STDLIB_CHAIN:
            assert node is not None
            assert node.f_code.co_name == name
            assert _frames.is_library_code(node.f_code)
            verdicts[name] = _frames.is_step_target(node)
            node = node.f_back
        return obj

    call_loads(hook)
    return verdicts


def test_stdlib_called_by_user_code_is_a_step_target() -> None:
    """stdlib code the program calls is a step target, directly or via stdlib."""
    verdicts = step_targets_seen_by_hook(
        lambda hook: json.loads("{}", object_hook=hook)
    )
    assert verdicts == {"hook": True, "raw_decode": True, "decode": True, "loads": True}


def test_stdlib_called_by_hidden_code_is_not_a_step_target() -> None:
    """stdlib code trio calls is no step target; user callbacks it calls are."""
    namespace: dict[str, Any] = {"__name__": "trio._fake_caller", "json": json}
    exec(
        compile(
            "def call(hook):\n    return json.loads('{}', object_hook=hook)\n",
            "<trio-like>",
            "exec",
        ),
        namespace,
    )
    verdicts = step_targets_seen_by_hook(namespace["call"])
    assert verdicts == {
        "hook": True,
        "raw_decode": False,
        "decode": False,
        "loads": False,
    }


def test_hidden_frames_are_never_step_targets() -> None:
    """A hidden frame is never a step target."""
    assert not _frames.is_step_target(frame_in_module("trio._core._fake"))
    assert _frames.is_step_target(sys._getframe())


# -- strip_own_frames ----------------------------------------------------------------


def raised_through_dapper_trio(exc: BaseException) -> BaseException:
    """Raise *exc* from a generator that dapper-trio's code is iterating."""

    def entries() -> Iterator[tuple[types.FrameType, int]]:
        raise exc
        yield  # pragma: no cover - makes this a generator

    try:
        _frames.innermost_user_frame(entries())
    except BaseException as caught:
        return caught
    raise AssertionError("not raised")  # pragma: no cover


def names(tb: types.TracebackType | None) -> list[str]:
    return [frame.f_code.co_name for frame, _ in _frames.iter_traceback(tb)]


def test_strip_plain_exception() -> None:
    """dapper-trio's frames leave a traceback; the others stay, in order."""
    exc = raised_through_dapper_trio(ValueError("x"))
    assert names(exc.__traceback__) == [
        "raised_through_dapper_trio",
        "innermost_user_frame",
        "entries",
    ]
    _frames.strip_own_frames(exc)
    assert names(exc.__traceback__) == ["raised_through_dapper_trio", "entries"]


def test_strip_keeps_order_of_interleaved_frames() -> None:
    """User frames interleaved with dapper-trio's keep their order and lines."""

    def level_one() -> Iterator[tuple[types.FrameType, int]]:
        _frames.innermost_user_frame(level_two())
        yield from ()

    def level_two() -> Iterator[tuple[types.FrameType, int]]:
        raise KeyError("deep")
        yield  # pragma: no cover - makes this a generator

    try:
        _frames.innermost_user_frame(level_one())
    except KeyError as caught:
        exc = caught
    before = [
        (frame.f_code.co_name, lineno)
        for frame, lineno in _frames.iter_traceback(exc.__traceback__)
    ]
    assert [name for name, _ in before] == [
        "test_strip_keeps_order_of_interleaved_frames",
        "innermost_user_frame",
        "level_one",
        "innermost_user_frame",
        "level_two",
    ]
    _frames.strip_own_frames(exc)
    after = [
        (frame.f_code.co_name, lineno)
        for frame, lineno in _frames.iter_traceback(exc.__traceback__)
    ]
    assert after == [entry for entry in before if entry[0] != "innermost_user_frame"]


def test_strip_exception_group_leaves() -> None:
    """An exception group's own traceback and each leaf's are cleaned."""
    first = raised_through_dapper_trio(ValueError("first"))
    nested = ExceptionGroup("nested", [raised_through_dapper_trio(KeyError("second"))])
    group = raised_through_dapper_trio(BaseExceptionGroup("outer", [first, nested]))
    _frames.strip_own_frames(group)
    assert isinstance(group, BaseExceptionGroup)
    assert names(group.__traceback__) == ["raised_through_dapper_trio", "entries"]
    leaf_one, inner_group = group.exceptions
    assert names(leaf_one.__traceback__) == ["raised_through_dapper_trio", "entries"]
    assert isinstance(inner_group, BaseExceptionGroup)
    assert names(inner_group.exceptions[0].__traceback__) == [
        "raised_through_dapper_trio",
        "entries",
    ]


def test_strip_cause_and_context() -> None:
    """__cause__ and __context__ chains are cleaned too, cycles included."""
    cause = raised_through_dapper_trio(ValueError("cause"))
    context = raised_through_dapper_trio(KeyError("context"))
    top = RuntimeError("top")
    top.__cause__ = cause
    top.__context__ = context
    context.__context__ = top  # a cycle must not loop forever
    top = raised_through_dapper_trio(top)
    _frames.strip_own_frames(top)
    for exc in (top, cause, context):
        assert names(exc.__traceback__) == ["raised_through_dapper_trio", "entries"]


def test_strip_traceback_of_only_own_frames_to_none() -> None:
    """A traceback of only dapper-trio's frames becomes None; others stay as is."""
    own: list[types.FrameType] = []

    def entries() -> Iterator[tuple[types.FrameType, int]]:
        own.append(sys._getframe(1))
        yield from ()

    _frames.innermost_user_frame(entries())
    exc = ValueError("only ours")
    exc.__traceback__ = types.TracebackType(None, own[0], 0, own[0].f_lineno)
    _frames.strip_own_frames(exc)
    assert exc.__traceback__ is None

    with pytest.raises(KeyError) as info:
        raise KeyError("none of ours")
    plain = info.value
    tb = plain.__traceback__
    _frames.strip_own_frames(plain)
    assert plain.__traceback__ is tb


# -- task stacks -----------------------------------------------------------------


def capture_running_stack() -> list[tuple[types.FrameType, int]]:
    return _frames.running_task_stack(sys._getframe(), trio.lowlevel.current_task())


async def awaits_capture() -> list[tuple[types.FrameType, int]]:
    await trio.lowlevel.checkpoint()
    return capture_running_stack()


async def task_root(results: list[list[tuple[types.FrameType, int]]]) -> None:
    results.append(await awaits_capture())


def test_running_task_stack_ends_at_the_task_root() -> None:
    """A running task's stack runs from its root coroutine to the current frame."""
    results: list[list[tuple[types.FrameType, int]]] = []

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(task_root, results, name="child")
        results.append(await awaits_capture())

    trio.run(main)
    child, main_stack = results
    assert [f.f_code.co_name for f, _ in child] == [
        "task_root",
        "awaits_capture",
        "capture_running_stack",
    ]
    assert [f.f_code.co_name for f, _ in main_stack] == [
        "main",
        "awaits_capture",
        "capture_running_stack",
    ]
    for frame, lineno in child + main_stack:
        assert not _frames.is_hidden_frame(frame)
        assert isinstance(lineno, int)


def test_running_task_stack_outside_a_task_walks_to_the_outermost_frame() -> None:
    """Without a task, the stack runs from the outermost frame to this one."""
    stack = _frames.running_task_stack(sys._getframe(), None)
    assert stack[-1][0] is sys._getframe()
    assert stack[0][0].f_back is None


async def level_two_sleeps() -> None:
    await trio.sleep_forever()  # mark: level-two


async def level_one_awaits() -> None:
    await level_two_sleeps()


async def test_suspended_task_stack_is_the_await_chain() -> None:
    """A suspended task's stack is its await chain, outermost first, then trio's."""
    async with trio.open_nursery() as nursery:
        nursery.start_soon(level_one_awaits, name="sleeper")
        await trio.testing.wait_all_tasks_blocked()
        (task,) = nursery.child_tasks
        stack = _frames.suspended_task_stack(task)
        assert stack[0][0] is task.coro.cr_frame
        nursery.cancel_scope.cancel()
    assert [f.f_code.co_name for f, _ in stack[:2]] == [
        "level_one_awaits",
        "level_two_sleeps",
    ]
    assert stack[2:]
    assert all(_frames.is_hidden_frame(frame) for frame, _ in stack[2:])
    found = _frames.innermost_user_frame(stack)
    assert found is not None
    assert found[0].f_code.co_name == "level_two_sleeps"
    assert found[1] == level_two_sleeps.__code__.co_firstlineno + 1


def test_describe_frame_names_file_line_and_function(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """describe_frame is `file:line in function`, the file relative to the cwd."""
    frame = sys._getframe()
    here = Path(__file__).resolve()
    monkeypatch.chdir(here.parent.parent)
    assert _frames.describe_frame(frame, 12) == (
        f"tests/{here.name}:12 in {frame.f_code.co_name}"
    )
    monkeypatch.chdir(tmp_path)
    assert _frames.describe_frame(frame, 7) == f"{here}:7 in {frame.f_code.co_name}"

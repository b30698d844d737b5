"""Programs for tests/test_tracing.py, run in-process under ScriptedDebugger.

They live outside the test module because pytest rewrites the asserts of test
modules: their code is not what compiling their source gives, so the settrace
backend could not compile breakpoints into it (it would fall back to tracing
the file, which is what the tests must not depend on).  Lines a test needs
carry a ``# mark: NAME`` comment.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import trio
import trio.testing


async def call(fn: Callable[..., Any], *args: Any) -> Any:
    """The main task: call *fn*, awaiting what it returns if it is awaitable."""
    result = fn(*args)
    if inspect.isawaitable(result):
        result = await result
    return result


# -- nothing traced while breakpoints are elsewhere ---------------------------


async def spin(n: int) -> None:
    for _ in range(n):
        await trio.lowlevel.checkpoint()


async def busy_then_call(
    probe: Callable[[int], Any], target: Callable[[int], int], n: int
) -> tuple[list[Any], int]:
    """Run *n* checkpoints beside a spinning task, probing each, then call *target*."""
    seen = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(spin, n, name="spinner")
        for i in range(n):
            seen.append(probe(i))
            await trio.lowlevel.checkpoint()
    return seen, target(n)


# -- loops -------------------------------------------------------------------


def for_loop(n: int) -> int:
    total = 0
    for i in range(n):  # mark: for-line
        total += i
    return total


def while_loop(n: int) -> int:
    i = 0
    while i < n:  # mark: while-line
        i += 1
    return i


def while_true(n: int) -> int:
    i = 0
    while True:  # mark: while-true-line
        i += 1
        if i == n:
            break
    return i


async def counting(n: int) -> AsyncIterator[int]:
    for value in range(n):
        await trio.lowlevel.checkpoint()
        yield value


async def async_for_loop(n: int) -> int:
    total = 0
    async for i in counting(n):  # mark: async-for-line
        total += i
    return total


# -- function breakpoints ----------------------------------------------------


def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
    return fn


def plain(x: int) -> int:
    y = x + 1  # mark: plain-first
    return y


@decorate
def decorated(x: int) -> int:
    y = x + 2  # mark: decorated-first
    return y


def documented(x: int) -> int:
    """A docstring is not executed: the first line is below it."""
    y = x + 3  # mark: documented-first
    return y


COUNTER = 0


def declares_global(x: int) -> int:
    global COUNTER  # a declaration: it compiles to no code
    COUNTER = x  # mark: declares-global-first
    return COUNTER


def with_decorated_def(x: int) -> Callable[[], int]:
    @decorate  # mark: nested-decorator
    def inner() -> int:
        return x

    return inner


async def coroutine_function(x: int) -> int:
    y = x + 4  # mark: coroutine-first
    await trio.lowlevel.checkpoint()
    return y


async def call_twice(fn: Callable[[int], Any]) -> list[Any]:
    """Call *fn* twice (awaiting it if it is a coroutine function)."""
    return [await call(fn, 1), await call(fn, 2)]


# -- conditions ----------------------------------------------------------------


def summing(n: int) -> int:
    total = 0
    for i in range(n):
        total += i  # mark: summing-body
    return total


# -- lines that cannot take a hook ------------------------------------------------


def continued(x: int) -> int:
    y = max(
        x,  # mark: continuation
        0,
    )
    return y


# -- breakpoints set while the program runs --------------------------------------


async def waiter(event: trio.Event, log: list[str]) -> None:
    log.append("waiting")
    await event.wait()
    log.append("resumed")  # mark: after-wait


async def suspended_coroutine(dbg: Any) -> list[str]:
    """Stop (set_trace) while task W is suspended mid-function, then wake it."""
    event = trio.Event()
    log: list[str] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter, event, log, name="W")
        await trio.testing.wait_all_tasks_blocked()
        dbg.set_trace()
        event.set()
    return log


def inner_stop(dbg: Any, i: int) -> int:
    if i == 1:
        dbg.set_trace()
    return i


async def outer_loop(dbg: Any, n: int) -> int:
    """A loop in progress when its breakpoint is set (from inside inner_stop)."""
    total = 0
    for i in range(n):
        total += inner_stop(dbg, i)  # mark: outer-body
        await trio.lowlevel.checkpoint()
    return total


def outer_sync_loop(dbg: Any, n: int) -> int:
    """The same, without awaits, and the breakpoint on a continuation line."""
    total = 0
    for i in range(n):
        total += max(
            inner_stop(dbg, i),
            0,  # mark: sync-continuation
        )
    return total


def catcher(log: list[str]) -> Iterator[str]:
    """A generator that handles what is thrown into it at its ``yield``."""
    try:
        yield "ready"
    except ValueError:
        log.append("caught")  # mark: thrown-handler
    yield "done"


def thrown_into_suspended(dbg: Any) -> list[str]:
    """Stop (set_trace) while a generator is suspended, then throw() into it."""
    log: list[str] = []
    generator = catcher(log)
    next(generator)
    dbg.set_trace()
    log.append(generator.throw(ValueError("thrown")))
    return log


async def import_and_call(name: str, x: int) -> Any:
    """Import module *name* now and call its ``late(x)``."""
    module = importlib.import_module(name)
    return module.late(x)


# -- clearing ----------------------------------------------------------------


async def clear_target(n: int) -> int:
    total = 0
    for i in range(n):
        total += i  # mark: clear-line
        await trio.lowlevel.checkpoint()
    return total


# -- stepping from a breakpoint stop ----------------------------------------------


def helper(x: int) -> int:
    doubled = x * 2
    return doubled


async def stepping_target(x: int) -> int:
    a = x + 1  # mark: step-bp
    await trio.lowlevel.checkpoint()
    b = helper(a)  # mark: step-second
    return a + b


def numbers(n: int) -> list[int]:
    return list(range(n))


def sum_numbers(n: int) -> int:
    total = 0
    for i in numbers(n):  # mark: for-call-line
        total += i
    return total


# -- a condition changed at a stop, the coroutine still in the old code -------


async def channel_worker(receive: Any, log: list[int]) -> None:
    async for number in receive:
        log.append(number)  # mark: channel-bp
        await trio.lowlevel.checkpoint()


async def channel_pipeline(n: int) -> int:
    log: list[int] = []
    send, receive = trio.open_memory_channel[int](0)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(channel_worker, receive, log, name="worker")
        async with send:
            for number in range(n):
                await send.send(number)
    return len(log)

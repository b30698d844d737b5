"""Lifecycle state machines: the transition tables and the one place they are enforced.

Rule 1: everything that affects a lifecycle state machine and its transitions
lives in this file.  The tables below are data; ``StateMachine.fire`` is the
single entry point that moves a machine, and it turns a move the table does not
list into a ``LifecycleError`` naming the machine, the state and the attempted
move.  Nothing here does I/O or imports trio: the tables are tested with plain
sync tests, and the trio adapter (``_lifecycle``) stays thin.  (The habit is
h11's ``_state.py``.)

Two tables share the machinery:

* ``BACKEND_TRANSITIONS`` over ``BackendLifecycleState``: a debugger backend
  (in-process or subprocess) from creation to termination.
* ``WORKER_TRANSITIONS`` over ``WorkerState``: one worker process of a pool.
  TERMINATED is reachable from every state because a process can die at any
  time.

``docs/_tools/lifecycle_diagram.py`` renders both tables into
``docs/lifecycle.md``; the tests compare each table with a literal copy, so a
silent change to a table fails.
"""

from __future__ import annotations

import enum
import functools
import logging
import time
from collections import deque
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final, Generic, TypeVar

from ._errors import DapperTrioError

__all__ = [
    "BACKEND_INITIAL_STATE",
    "BACKEND_TRANSITIONS",
    "WORKER_INITIAL_STATE",
    "WORKER_TRANSITIONS",
    "BackendLifecycleState",
    "LifecycleError",
    "MachineStatistics",
    "StateMachine",
    "Transition",
    "WorkerState",
]

logger = logging.getLogger("dapper_trio.lifecycle")

S = TypeVar("S", bound=enum.Enum)

TransitionTable = Mapping[S, frozenset[S]]


class BackendLifecycleState(enum.Enum):
    """Where a debugger backend is in its life.

    ``UNINITIALIZED``: created, nothing started.  ``INITIALIZING``: starting
    (process spawn, handshake).  ``READY``: idle, operations may start.
    ``BUSY``: at least one operation in flight; more may start.  ``ERROR``: the
    transport or process failed; ``recover`` returns to READY.
    ``TERMINATING``: shutting down (operations cancelled, cleanups running).
    ``TERMINATED``: final.
    """

    UNINITIALIZED = "uninitialized"
    INITIALIZING = "initializing"
    READY = "ready"
    BUSY = "busy"
    ERROR = "error"
    TERMINATING = "terminating"
    TERMINATED = "terminated"


class WorkerState(enum.Enum):
    """Where a pool worker process is in its life.

    ``INITIALIZING``: spawned, not yet accepting work.  ``READY``: idle.
    ``BUSY``: running work.  ``DRAINING``: finishing, accepts no new work.
    ``TERMINATED``: final; reachable from every state (a process can die at
    any time).
    """

    INITIALIZING = "initializing"
    READY = "ready"
    BUSY = "busy"
    DRAINING = "draining"
    TERMINATED = "terminated"


def _freeze(table: Mapping[S, Collection[S]]) -> TransitionTable[S]:
    return MappingProxyType(
        {state: frozenset(targets) for state, targets in table.items()}
    )


_B = BackendLifecycleState
_W = WorkerState

#: The backend table: state -> the states it may move to.
BACKEND_TRANSITIONS: Final[TransitionTable[BackendLifecycleState]] = _freeze(
    {
        _B.UNINITIALIZED: {_B.INITIALIZING, _B.TERMINATED},
        _B.INITIALIZING: {_B.READY, _B.ERROR, _B.TERMINATING},
        _B.READY: {_B.BUSY, _B.ERROR, _B.TERMINATING},
        _B.BUSY: {_B.READY, _B.ERROR, _B.TERMINATING},
        _B.ERROR: {_B.READY, _B.TERMINATING},
        _B.TERMINATING: {_B.TERMINATED, _B.ERROR},
        _B.TERMINATED: set(),
    }
)
BACKEND_INITIAL_STATE: Final = BackendLifecycleState.UNINITIALIZED

#: The pool worker table: state -> the states it may move to.
WORKER_TRANSITIONS: Final[TransitionTable[WorkerState]] = _freeze(
    {
        _W.INITIALIZING: {_W.READY, _W.TERMINATED},
        _W.READY: {_W.BUSY, _W.DRAINING, _W.TERMINATED},
        _W.BUSY: {_W.READY, _W.DRAINING, _W.TERMINATED},
        _W.DRAINING: {_W.TERMINATED},
        _W.TERMINATED: set(),
    }
)
WORKER_INITIAL_STATE: Final = WorkerState.INITIALIZING


def _label(state: object) -> str:
    return state.name if isinstance(state, enum.Enum) else repr(state)


class LifecycleError(DapperTrioError):
    """An illegal lifecycle move: the caller asked for something the table forbids.

    Attributes:
        machine: the name of the state machine (e.g. ``"backend"``).
        state: the state the machine was in (it is still in it).
        target: the state the caller tried to move to, or ``None`` when the
            refused request was not a single move.
    """

    def __init__(
        self,
        message: str,
        *,
        machine: str,
        state: enum.Enum,
        target: enum.Enum | None,
    ) -> None:
        super().__init__(message)
        self.machine = machine
        self.state = state
        self.target = target

    def __reduce__(self) -> tuple[Callable[..., LifecycleError], tuple[str]]:
        rebuild = functools.partial(
            LifecycleError, machine=self.machine, state=self.state, target=self.target
        )
        return (rebuild, (str(self),))


@dataclass(frozen=True)
class Transition(Generic[S]):
    """One move of a state machine.

    ``timestamp`` is read from the machine's monotonic clock (trio's clock for
    a ``LifecycleManager``) when the move happened.
    """

    source: S
    target: S
    reason: str | None
    timestamp: float


@dataclass(frozen=True)
class MachineStatistics(Generic[S]):
    """A snapshot of a state machine's bookkeeping.

    ``transition_counts`` maps ``(source, target)`` to how many times that move
    happened (moves that never happened are absent).  ``time_in_state`` maps
    every state of the table to the seconds spent in it, including the time
    spent in the current state so far.
    """

    state: S
    transition_counts: Mapping[tuple[S, S], int]
    time_in_state: Mapping[S, float]
    transitions: int


Observer = Callable[[Transition[S]], object]


class StateMachine(Generic[S]):
    """A state machine over one transition table, moved only by ``fire``.

    Args:
        name: names the machine in errors and logs (``"backend"``,
            ``"worker 3"``).
        table: state -> states it may move to.  Every state of the enum must be
            a key; a state with no targets is final.
        initial: the state the machine starts in.
        clock: a monotonic clock in seconds, read for transition timestamps and
            time-in-state accounting.

    Observers registered with ``add_observer`` are called synchronously after
    every move, in registration order, one transition at a time: a move fired
    from inside an observer is applied at once, but observers hear about it
    only after every observer has seen the move before it.  An observer that
    raises is logged (logger ``dapper_trio.lifecycle``) and never undoes or
    blocks a move.
    """

    def __init__(
        self,
        name: str,
        table: Mapping[S, Collection[S]],
        initial: S,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._name = name
        self._table: TransitionTable[S] = _validated(table)
        if initial not in self._table:
            raise ValueError(f"{name}: initial state {initial!r} is not in the table")
        self._state = initial
        self._clock = clock
        self._entered_at = clock()
        self._time_in_state: dict[S, float] = dict.fromkeys(self._table, 0.0)
        self._counts: dict[tuple[S, S], int] = {}
        self._transitions = 0
        self._observers: dict[int, Observer[S]] = {}
        self._next_token = 0
        self._pending: deque[Transition[S]] = deque()
        self._notifying = False

    def __repr__(self) -> str:
        return f"<StateMachine {self._name!r} in {_label(self._state)}>"

    @property
    def name(self) -> str:
        """The machine's name, as used in errors."""
        return self._name

    @property
    def state(self) -> S:
        """The current state."""
        return self._state

    @property
    def table(self) -> TransitionTable[S]:
        """The (read-only) transition table."""
        return self._table

    def legal_targets(self, state: S | None = None) -> frozenset[S]:
        """Return the states *state* (default: the current one) may move to."""
        return self._table[self._state if state is None else state]

    def is_final(self, state: S | None = None) -> bool:
        """Return whether *state* (default: the current one) has no way out."""
        return not self.legal_targets(state)

    def can_fire(self, target: S, *, expect: Collection[S] | None = None) -> bool:
        """Return whether ``fire(target, expect=expect)`` would succeed now."""
        if expect is not None and self._state not in expect:
            return False
        return target in self._table[self._state]

    def check(self, target: S, *, expect: Collection[S] | None = None) -> None:
        """Raise ``LifecycleError`` unless ``fire(target, expect=expect)`` would work.

        *expect*, if given, narrows the table for this call: the move must also
        start from one of these states (``mark_ready()`` moves to READY only from
        INITIALIZING, although the table also allows ERROR -> READY).
        """
        source = self._state
        legal = self._table[source]
        if target in legal and (expect is None or source in expect):
            return
        if target in legal:
            assert expect is not None
            why = "this move is only allowed from " + _names(expect, self._table)
        elif legal:
            why = f"legal targets from {source.name}: {_names(legal, self._table)}"
        else:
            why = f"{source.name} is final, no move is legal"
        raise LifecycleError(
            f"{self._name}: illegal transition from {source.name} to "
            f"{_label(target)} ({why})",
            machine=self._name,
            state=source,
            target=target,
        )

    def fire(
        self,
        target: S,
        *,
        reason: str | None = None,
        expect: Collection[S] | None = None,
    ) -> Transition[S]:
        """Move to *target*, or raise ``LifecycleError`` and stay put.

        This is the only way the machine's state changes.  On success, the move
        is counted and timed, observers are told, and the ``Transition`` is
        returned.  *expect* narrows the legal sources (see ``check``).
        """
        self.check(target, expect=expect)
        source = self._state
        now = self._clock()
        self._time_in_state[source] += max(0.0, now - self._entered_at)
        self._entered_at = now
        self._state = target
        key = (source, target)
        self._counts[key] = self._counts.get(key, 0) + 1
        self._transitions += 1
        transition = Transition(source, target, reason, now)
        self._pending.append(transition)
        self._notify()
        return transition

    def add_observer(self, callback: Observer[S]) -> Callable[[], None]:
        """Call ``callback(transition)`` after every move; return an unsubscriber.

        The returned callable removes the observer; calling it again does
        nothing.
        """
        token = self._next_token
        self._next_token += 1
        self._observers[token] = callback

        def unsubscribe() -> None:
            self._observers.pop(token, None)

        return unsubscribe

    def statistics(self) -> MachineStatistics[S]:
        """Return counts per move and seconds per state (current one included)."""
        times = dict(self._time_in_state)
        times[self._state] += max(0.0, self._clock() - self._entered_at)
        return MachineStatistics(
            state=self._state,
            transition_counts=MappingProxyType(dict(self._counts)),
            time_in_state=MappingProxyType(times),
            transitions=self._transitions,
        )

    def _notify(self) -> None:
        if self._notifying:
            return  # the outer _notify delivers it, after the move before it
        self._notifying = True
        try:
            while self._pending:
                transition = self._pending.popleft()
                for callback in list(self._observers.values()):
                    try:
                        callback(transition)
                    except Exception:
                        logger.exception(
                            "%s: observer %r raised on %s -> %s",
                            self._name,
                            callback,
                            transition.source.name,
                            transition.target.name,
                        )
        finally:
            self._notifying = False


def _names(states: Collection[S], table: TransitionTable[S]) -> str:
    # Table (enum definition) order, so messages are stable.
    return ", ".join(state.name for state in table if state in states)


def _validated(table: Mapping[S, Collection[S]]) -> TransitionTable[S]:
    if not table:
        raise ValueError("a transition table needs at least one state")
    enum_type = type(next(iter(table)))
    missing = [state for state in enum_type if state not in table]
    if missing:
        raise ValueError(f"transition table has no row for {missing}")
    for state, targets in table.items():
        if type(state) is not enum_type:
            raise ValueError(f"{state!r} is not a {enum_type.__name__}")
        for target in targets:
            if type(target) is not enum_type:
                raise ValueError(f"{state!r} -> {target!r}: not a {enum_type.__name__}")
    return _freeze(table)

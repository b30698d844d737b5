"""The worker pool's rules, pure and synchronous: options, backoff, worker records.

Nothing here does I/O or imports trio (the trio side is ``_pool``), so the
rules are tested with plain sync tests:

* ``PoolConfig``: the options of ``open_worker_pool()``, checked by
  ``PoolConfig.check()`` (``ValueError``, or ``TypeError`` for a value of the
  wrong type, naming the option).
* ``Backoff``: how long to wait before the next start after consecutive
  failed worker starts, and when to give up.
* ``WorkerRecord``: one worker's lifecycle machine (``WORKER_TRANSITIONS``,
  moved only through ``_states.StateMachine.fire``) and the counters the
  recycling rules read.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final, Literal

from ._states import (
    WORKER_INITIAL_STATE,
    WORKER_TRANSITIONS,
    StateMachine,
    Transition,
    WorkerState,
)

__all__ = [
    "RECYCLE_REASONS",
    "Backoff",
    "CallOutcome",
    "PoolConfig",
    "RecycleReason",
    "WorkerRecord",
    "requests_run_out_within",
]

#: Why a worker is recycled (drained and replaced).
RecycleReason = Literal["max_requests", "max_age", "error_threshold"]
RECYCLE_REASONS: Final[tuple[RecycleReason, ...]] = (
    "max_requests",
    "max_age",
    "error_threshold",
)

#: How a call given to a worker ended: ``"ok"`` (a value), ``"error"`` (the
#: call raised), ``"cancelled"`` (by its caller, or by the pool's shutdown),
#: ``"lost"`` (the worker died while running it).
CallOutcome = Literal["ok", "error", "cancelled", "lost"]


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _seconds(name: str, value: object, *, zero_ok: bool, inf_ok: bool) -> float:
    if not _is_number(value):
        raise TypeError(f"{name} must be a number of seconds, not {value!r}")
    assert isinstance(value, (int, float))
    if math.isnan(value) or (math.isinf(value) and not inf_ok):
        raise ValueError(f"{name} must be a finite number of seconds, not {value!r}")
    if value < 0 or (value == 0 and not zero_ok):
        bound = ">= 0" if zero_ok else "> 0"
        raise ValueError(f"{name} must be {bound} seconds, not {value!r}")
    return float(value)


def _count(name: str, value: object, *, none_ok: bool) -> int | None:
    if value is None and none_ok:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        allowed = "an integer >= 1 or None" if none_ok else "an integer >= 1"
        raise TypeError(f"{name} must be {allowed}, not {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, not {value!r}")
    return value


@dataclasses.dataclass(frozen=True)
class Backoff:
    """Delays between worker starts after failed ones: ``(initial, factor, maximum)``.

    After the *n*-th consecutive failed start the pool waits
    ``min(initial * factor ** (n - 1), maximum)`` seconds before the next
    attempt.  It gives up at the first failure that follows a wait of
    ``maximum``: with ``(0.1, 2.0, 30.0)`` it waits 0.1, 0.2, 0.4, ... 25.6,
    then 30 s, and gives up if that eleventh attempt fails too (81 s after
    the first failure).
    """

    initial: float
    factor: float
    maximum: float

    @classmethod
    def check(cls, value: object) -> Backoff:
        """Validate ``restart_backoff``; ``ValueError``/``TypeError`` naming it."""
        name = "restart_backoff"
        if (
            not isinstance(value, Sequence)
            or isinstance(value, str)
            or len(value) != 3
            or not all(_is_number(part) for part in value)
        ):
            raise TypeError(
                f"{name} must be three numbers (initial, factor, maximum), not"
                f" {value!r}"
            )
        initial, factor, maximum = (float(part) for part in value)
        if not all(math.isfinite(part) for part in (initial, factor, maximum)):
            raise ValueError(f"{name} must be finite numbers, not {value!r}")
        if initial <= 0:
            raise ValueError(
                f"{name}: the initial delay must be > 0 seconds, not {initial!r}"
            )
        if factor < 1:
            raise ValueError(f"{name}: the factor must be >= 1, not {factor!r}")
        if maximum < initial:
            raise ValueError(
                f"{name}: the maximum delay ({maximum!r}) must be >= the initial"
                f" one ({initial!r})"
            )
        if factor == 1 and initial < maximum:
            raise ValueError(
                f"{name}: with a factor of 1 the delay never reaches the maximum,"
                " so the pool would retry forever; use a factor > 1, or"
                " initial == maximum"
            )
        return cls(initial, factor, maximum)

    def delay(self, failures: int) -> float | None:
        """Seconds to wait after *failures* consecutive failed starts; None: give up."""
        if failures < 1:
            return 0.0
        if failures >= 2 and self._step(failures - 1) >= self.maximum:
            return None
        return self._step(failures)

    def _step(self, n: int) -> float:
        # min(initial * factor ** (n - 1), maximum) without overflowing.
        value = self.initial
        for _ in range(n - 1):
            value *= self.factor
            if value >= self.maximum:
                return self.maximum
        return min(value, self.maximum)

    def schedule(self) -> list[float]:
        """Every wait, in order, before the pool gives up."""
        delays = []
        failures = 1
        while (wait := self.delay(failures)) is not None:
            delays.append(wait)
            failures += 1
        return delays

    @property
    def attempts(self) -> int:
        """How many consecutive failed starts make the pool give up."""
        return len(self.schedule()) + 1


@dataclasses.dataclass(frozen=True)
class PoolConfig:
    """The options of ``open_worker_pool()`` (see its docstring and docs/pool.md)."""

    size: int = 4
    max_worker_age: float = 3600.0
    max_worker_requests: int | None = 1000
    error_threshold: int | None = 5
    health_check_interval: float = 30.0
    health_check_timeout: float = 5.0
    shutdown_timeout: float = 30.0
    enable_health_monitoring: bool = True
    restart_backoff: Backoff = Backoff(0.1, 2.0, 30.0)
    debug_mode: bool = False
    initializer: Callable[..., Awaitable[Any]] | None = None
    initargs: tuple[Any, ...] = ()

    @classmethod
    def check(
        cls,
        *,
        size: object,
        max_worker_age: object,
        max_worker_requests: object,
        error_threshold: object,
        health_check_interval: object,
        health_check_timeout: object,
        shutdown_timeout: object,
        enable_health_monitoring: object,
        restart_backoff: object,
        debug_mode: object,
        initializer: object = None,
        initargs: object = (),
    ) -> PoolConfig:
        """Validate every option; ``ValueError``/``TypeError`` naming the bad one."""
        checked_size = _count("size", size, none_ok=False)
        assert checked_size is not None
        for name, flag in (
            ("enable_health_monitoring", enable_health_monitoring),
            ("debug_mode", debug_mode),
        ):
            if not isinstance(flag, bool):
                raise TypeError(f"{name} must be True or False, not {flag!r}")
        if initializer is not None and not callable(initializer):
            raise TypeError(
                f"initializer must be an async function, not {initializer!r}"
            )
        if not isinstance(initargs, tuple):
            raise TypeError(f"initargs must be a tuple, not {initargs!r}")
        return cls(
            size=checked_size,
            max_worker_age=_seconds(
                "max_worker_age", max_worker_age, zero_ok=False, inf_ok=True
            ),
            max_worker_requests=_count(
                "max_worker_requests", max_worker_requests, none_ok=True
            ),
            error_threshold=_count("error_threshold", error_threshold, none_ok=True),
            health_check_interval=_seconds(
                "health_check_interval",
                health_check_interval,
                zero_ok=False,
                inf_ok=False,
            ),
            health_check_timeout=_seconds(
                "health_check_timeout",
                health_check_timeout,
                zero_ok=False,
                inf_ok=False,
            ),
            shutdown_timeout=_seconds(
                "shutdown_timeout", shutdown_timeout, zero_ok=True, inf_ok=True
            ),
            enable_health_monitoring=bool(enable_health_monitoring),
            restart_backoff=Backoff.check(restart_backoff),
            debug_mode=bool(debug_mode),
            initializer=initializer,
            initargs=initargs,
        )


def requests_run_out_within(
    calls: int, limit: int | None, elapsed: float, lead: float
) -> bool:
    """Whether a worker given *calls* calls in *elapsed* seconds, at that pace,
    reaches *limit* calls within *lead* seconds.

    Judged only once it has been given a tenth of its limit (at least one
    call): the pace of its first few calls says little.
    """
    if limit is None or calls < max(1, limit // 10) or calls >= limit:
        return False
    return (limit - calls) * (elapsed / calls) <= lead


class WorkerRecord:
    """One worker's state machine and the counters recycling decisions read.

    The state changes only through ``fire`` (``_states.StateMachine``): a move
    the worker table does not list raises ``LifecycleError`` and leaves the
    state as it was.  Once a recycling rule has picked a reason it is kept in
    ``recycle``; later rules do not override it.
    """

    def __init__(
        self,
        name: str,
        *,
        max_requests: int | None,
        error_threshold: int | None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.machine: StateMachine[WorkerState] = StateMachine(
            f"worker {name}", WORKER_TRANSITIONS, WORKER_INITIAL_STATE, clock=clock
        )
        self._max_requests = max_requests
        self._error_threshold = error_threshold
        #: Calls given to this worker.
        self.calls = 0
        #: Failed calls since the last one that succeeded.
        self.consecutive_failures = 0
        #: When it became READY (on the machine's clock), or None.
        self.ready_at: float | None = None
        #: Why it is being recycled, once a rule said so.
        self.recycle: RecycleReason | None = None

    def __repr__(self) -> str:
        return f"<WorkerRecord {self.name!r} {self.machine.state.name}>"

    @property
    def state(self) -> WorkerState:
        """The current state."""
        return self.machine.state

    def fire(self, target: WorkerState, reason: str) -> Transition[WorkerState]:
        """Move to *target*, or raise ``LifecycleError`` and stay put."""
        return self.machine.fire(target, reason=reason)

    def mark_ready(self, reason: str) -> Transition[WorkerState]:
        """INITIALIZING -> READY (only from INITIALIZING); starts the age clock."""
        transition = self.machine.fire(
            WorkerState.READY, reason=reason, expect=(WorkerState.INITIALIZING,)
        )
        self.ready_at = transition.timestamp
        return transition

    def call_started(self) -> RecycleReason | None:
        """Count a call given to the worker; the recycle reason if this made one."""
        self.calls += 1
        if self._max_requests is not None and self.calls >= self._max_requests:
            return self._recycle("max_requests")
        return None

    def call_finished(self, outcome: CallOutcome) -> RecycleReason | None:
        """Count how a call ended; the recycle reason if this made one.

        Only a call's own error counts as a failure; a value resets the count.
        A cancelled call, or one lost with its worker, says nothing either way.
        """
        if outcome == "ok":
            self.consecutive_failures = 0
        elif outcome == "error":
            self.consecutive_failures += 1
            if (
                self._error_threshold is not None
                and self.consecutive_failures >= self._error_threshold
            ):
                return self._recycle("error_threshold")
        return None

    def age(self, now: float) -> float:
        """Seconds since the worker became READY (0 before)."""
        return 0.0 if self.ready_at is None else max(0.0, now - self.ready_at)

    def age_expired(self, now: float, max_age: float) -> RecycleReason | None:
        """The recycle reason if the worker is *max_age* old and this made one."""
        if self.ready_at is not None and self.age(now) >= max_age:
            return self._recycle("max_age")
        return None

    def _recycle(self, reason: RecycleReason) -> RecycleReason | None:
        if self.recycle is not None:
            return None
        self.recycle = reason
        return reason

"""The lifecycle transition tables and the StateMachine that enforces them."""

from __future__ import annotations

import importlib.util
import itertools
import logging
import pickle
from pathlib import Path
from types import ModuleType

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dapper_trio._errors import DapperTrioError
from dapper_trio._states import (
    BACKEND_INITIAL_STATE,
    BACKEND_TRANSITIONS,
    WORKER_INITIAL_STATE,
    WORKER_TRANSITIONS,
    BackendLifecycleState,
    LifecycleError,
    StateMachine,
    Transition,
    WorkerState,
)

B = BackendLifecycleState
W = WorkerState

# The tables as the issue states them, written out again on purpose: if a
# table in _states changes silently, these tests fail.
EXPECTED_BACKEND: dict[BackendLifecycleState, set[BackendLifecycleState]] = {
    B.UNINITIALIZED: {B.INITIALIZING, B.TERMINATED},
    B.INITIALIZING: {B.READY, B.ERROR, B.TERMINATING},
    B.READY: {B.BUSY, B.ERROR, B.TERMINATING},
    B.BUSY: {B.READY, B.ERROR, B.TERMINATING},
    B.ERROR: {B.READY, B.TERMINATING},
    B.TERMINATING: {B.TERMINATED, B.ERROR},
    B.TERMINATED: set(),
}
EXPECTED_WORKER: dict[WorkerState, set[WorkerState]] = {
    W.INITIALIZING: {W.READY, W.TERMINATED},
    W.READY: {W.BUSY, W.DRAINING, W.TERMINATED},
    W.BUSY: {W.READY, W.DRAINING, W.TERMINATED},
    W.DRAINING: {W.TERMINATED},
    W.TERMINATED: set(),
}

BACKEND_PAIRS = list(itertools.product(B, B))
WORKER_PAIRS = list(itertools.product(W, W))

ROOT = Path(__file__).resolve().parents[1]


class FakeClock:
    """A hand-driven clock for timing tests."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_backend_table_is_the_documented_one() -> None:
    """The backend table matches the issue's table exactly, with a row per state."""
    assert set(BACKEND_TRANSITIONS) == set(B)
    assert {s: set(t) for s, t in BACKEND_TRANSITIONS.items()} == EXPECTED_BACKEND
    assert BACKEND_INITIAL_STATE is B.UNINITIALIZED


def test_worker_table_is_the_documented_one() -> None:
    """The worker table matches the issue's table exactly, with a row per state."""
    assert set(WORKER_TRANSITIONS) == set(W)
    assert {s: set(t) for s, t in WORKER_TRANSITIONS.items()} == EXPECTED_WORKER
    assert WORKER_INITIAL_STATE is W.INITIALIZING


def test_worker_can_always_die() -> None:
    """Every non-final worker state can move to TERMINATED (a process can die)."""
    for state, targets in WORKER_TRANSITIONS.items():
        if state is not W.TERMINATED:
            assert W.TERMINATED in targets


def test_tables_are_read_only() -> None:
    """The module-level tables cannot be mutated by accident."""
    with pytest.raises(TypeError):
        BACKEND_TRANSITIONS[B.READY] = frozenset()  # type: ignore[index]
    assert isinstance(BACKEND_TRANSITIONS[B.READY], frozenset)


@pytest.mark.parametrize(
    ("state", "target"),
    BACKEND_PAIRS,
    ids=[f"{s.name}->{t.name}" for s, t in BACKEND_PAIRS],
)
def test_backend_every_pair(
    state: BackendLifecycleState, target: BackendLifecycleState
) -> None:
    """Each backend (state, target) pair succeeds iff the literal table lists it."""
    clock = FakeClock()
    machine = StateMachine("backend", BACKEND_TRANSITIONS, state, clock=clock)
    seen: list[Transition[BackendLifecycleState]] = []
    machine.add_observer(seen.append)
    if target in EXPECTED_BACKEND[state]:
        transition = machine.fire(target, reason="walk")
        assert transition == Transition(state, target, "walk", 100.0)
        assert machine.state is target
        assert seen == [transition]
        assert machine.statistics().transition_counts == {(state, target): 1}
    else:
        with pytest.raises(LifecycleError) as info:
            machine.fire(target, reason="walk")
        error = info.value
        assert error.state is state
        assert error.target is target
        assert error.machine == "backend"
        message = str(error)
        assert message.startswith("backend: ")
        assert f"from {state.name} to {target.name}" in message
        for legal in EXPECTED_BACKEND[state]:
            assert legal.name in message.split("(", 1)[1]
        assert machine.state is state
        assert seen == []
        assert machine.statistics().transitions == 0


@pytest.mark.parametrize(
    ("state", "target"),
    WORKER_PAIRS,
    ids=[f"{s.name}->{t.name}" for s, t in WORKER_PAIRS],
)
def test_worker_every_pair(state: WorkerState, target: WorkerState) -> None:
    """Each worker (state, target) pair succeeds iff the literal table lists it."""
    machine = StateMachine("worker 1", WORKER_TRANSITIONS, state)
    if target in EXPECTED_WORKER[state]:
        transition = machine.fire(target)
        assert (transition.source, transition.target) == (state, target)
        assert transition.reason is None
        assert machine.state is target
    else:
        with pytest.raises(LifecycleError) as info:
            machine.fire(target)
        assert (info.value.state, info.value.target) == (state, target)
        assert (
            f"worker 1: illegal transition from {state.name} to {target.name}"
            in str(info.value)
        )
        assert machine.state is state


def test_final_state_message() -> None:
    """A move out of a final state says the state is final."""
    machine = StateMachine("backend", BACKEND_TRANSITIONS, B.TERMINATED)
    assert machine.is_final()
    with pytest.raises(LifecycleError, match="TERMINATED is final"):
        machine.fire(B.READY)


def test_legal_targets_listed_in_table_order() -> None:
    """The error lists the legal targets in enum order, so messages are stable."""
    machine = StateMachine("backend", BACKEND_TRANSITIONS, B.READY)
    with pytest.raises(LifecycleError) as info:
        machine.fire(B.UNINITIALIZED)
    assert "legal targets from READY: BUSY, ERROR, TERMINATING" in str(info.value)


def test_expect_narrows_the_sources() -> None:
    """fire(expect=...) refuses a move the table allows but the caller does not."""
    machine = StateMachine("backend", BACKEND_TRANSITIONS, B.ERROR)
    assert not machine.can_fire(B.READY, expect=[B.INITIALIZING])
    with pytest.raises(LifecycleError, match="only allowed from INITIALIZING"):
        machine.fire(B.READY, expect=[B.INITIALIZING])
    assert machine.state is B.ERROR
    assert machine.can_fire(B.READY, expect=[B.ERROR])
    machine.fire(B.READY, expect=[B.ERROR])
    assert machine.state is B.READY


def test_lifecycle_error_is_a_dapper_error_and_pickles() -> None:
    """LifecycleError is a DapperTrioError and survives pickling with its attributes."""
    machine = StateMachine("backend", BACKEND_TRANSITIONS, B.READY)
    with pytest.raises(DapperTrioError) as info:
        machine.fire(B.INITIALIZING)
    error = info.value
    assert isinstance(error, LifecycleError)
    copy = pickle.loads(pickle.dumps(error))
    assert isinstance(copy, LifecycleError)
    assert str(copy) == str(error)
    assert (copy.machine, copy.state, copy.target) == (
        "backend",
        B.READY,
        B.INITIALIZING,
    )


def test_transition_is_frozen() -> None:
    """A Transition cannot be modified after the fact."""
    transition = StateMachine("w", WORKER_TRANSITIONS, W.READY).fire(W.BUSY)
    with pytest.raises(AttributeError):
        transition.target = W.READY  # type: ignore[misc]


def test_statistics_counts_and_times() -> None:
    """Counts per move and time per state (current one included) follow the clock."""
    clock = FakeClock()
    machine = StateMachine("w", WORKER_TRANSITIONS, W.INITIALIZING, clock=clock)
    clock.now += 1.0
    machine.fire(W.READY)
    clock.now += 2.0
    machine.fire(W.BUSY)
    clock.now += 0.5
    machine.fire(W.READY)
    clock.now += 0.25
    machine.fire(W.BUSY)
    clock.now += 4.0
    stats = machine.statistics()
    assert stats.state is W.BUSY
    assert stats.transitions == 4
    assert stats.transition_counts == {
        (W.INITIALIZING, W.READY): 1,
        (W.READY, W.BUSY): 2,
        (W.BUSY, W.READY): 1,
    }
    assert stats.time_in_state == {
        W.INITIALIZING: 1.0,
        W.READY: 2.25,
        W.BUSY: 4.5,
        W.DRAINING: 0.0,
        W.TERMINATED: 0.0,
    }
    with pytest.raises(TypeError):
        stats.transition_counts[(W.READY, W.BUSY)] = 0  # type: ignore[index]


def test_observer_raising_is_logged_and_harmless(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A raising observer is logged; the move stands and later observers still run."""
    machine = StateMachine("w", WORKER_TRANSITIONS, W.INITIALIZING)
    seen: list[WorkerState] = []

    def bad(transition: Transition[WorkerState]) -> None:
        raise ValueError("observer bug")

    machine.add_observer(bad)
    machine.add_observer(lambda t: seen.append(t.target))
    with caplog.at_level(logging.ERROR, logger="dapper_trio.lifecycle"):
        machine.fire(W.READY)
    assert machine.state is W.READY
    assert seen == [W.READY]
    assert "observer" in caplog.text
    assert "observer bug" in caplog.text


def test_unsubscribe() -> None:
    """The callable add_observer returns stops notifications, and is idempotent."""
    machine = StateMachine("w", WORKER_TRANSITIONS, W.INITIALIZING)
    seen: list[WorkerState] = []
    unsubscribe = machine.add_observer(lambda t: seen.append(t.target))
    machine.fire(W.READY)
    unsubscribe()
    unsubscribe()
    machine.fire(W.BUSY)
    assert seen == [W.READY]


def test_reentrant_fire_keeps_order() -> None:
    """A move fired by an observer reaches every observer after the move before it."""
    machine = StateMachine("w", WORKER_TRANSITIONS, W.INITIALIZING)
    first: list[WorkerState] = []
    second: list[WorkerState] = []

    def chain(transition: Transition[WorkerState]) -> None:
        first.append(transition.target)
        if transition.target is W.READY:
            machine.fire(W.BUSY)
            assert machine.state is W.BUSY  # applied at once

    machine.add_observer(chain)
    machine.add_observer(lambda t: second.append(t.target))
    machine.fire(W.READY)
    assert first == [W.READY, W.BUSY]
    assert second == [W.READY, W.BUSY]


def test_table_validation() -> None:
    """A table missing a state's row or naming a foreign state is rejected."""
    partial = {s: t for s, t in WORKER_TRANSITIONS.items() if s is not W.DRAINING}
    with pytest.raises(ValueError, match="no row"):
        StateMachine("w", partial, W.READY)
    foreign = dict(WORKER_TRANSITIONS)
    foreign[W.READY] = frozenset({B.READY})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not a WorkerState"):
        StateMachine("w", foreign, W.READY)
    with pytest.raises(ValueError, match="at least one state"):
        StateMachine("w", {}, W.READY)


@given(st.lists(st.sampled_from(list(B)), max_size=40))
def test_random_walk_matches_the_literal_table(
    targets: list[BackendLifecycleState],
) -> None:
    """Any sequence of requested moves ends where the literal table says it should."""
    machine = StateMachine("backend", BACKEND_TRANSITIONS, B.UNINITIALIZED)
    model = B.UNINITIALIZED
    for target in targets:
        if target in EXPECTED_BACKEND[model]:
            machine.fire(target)
            model = target
        else:
            with pytest.raises(LifecycleError):
                machine.fire(target)
        assert machine.state is model


def _load_diagram_tool() -> ModuleType:
    path = ROOT / "docs" / "_tools" / "lifecycle_diagram.py"
    spec = importlib.util.spec_from_file_location("lifecycle_diagram", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_diagram_check_detects_a_stale_doc(tmp_path: Path) -> None:
    """is_current() (behind --check) is false when the generated block differs."""
    tool = _load_diagram_tool()
    stale = tmp_path / "lifecycle.md"
    stale.write_text(
        f"intro\n{tool.BEGIN}\nold diagram\n{tool.END}\nmore\n", encoding="utf-8"
    )
    assert not tool.is_current(stale)
    stale.write_text(
        f"intro\n{tool.BEGIN}\n{tool.render()}{tool.END}\nmore\n", encoding="utf-8"
    )
    assert tool.is_current(stale)


def test_docs_diagram_is_current() -> None:
    """docs/lifecycle.md holds exactly what the diagram tool renders from the tables."""
    tool = _load_diagram_tool()
    rendered = tool.render()
    for state in itertools.chain(B, W):
        assert state.name in rendered
    for source, targets in EXPECTED_BACKEND.items():
        for target in targets:
            assert f"{source.name} --> {target.name}" in rendered
    assert tool.is_current(), "run: python docs/_tools/lifecycle_diagram.py --write"

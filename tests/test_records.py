"""The record classes of the code that runs before the debuggee starts."""

from __future__ import annotations

import pickle

import pytest

from dapper_trio._records import FrozenRecordError, record
from dapper_trio._sockets import Address
from dapper_trio._targets import RunOptions, Target


@record()
class Point:
    x: int
    y: int = 0


@record(frozen=True)
class Checked:
    name: str
    size: int = 1

    def __post_init__(self) -> None:
        if self.size < 0:
            raise ValueError(f"negative size: {self.size}")


def test_fields_positional_keyword_and_default() -> None:
    assert Point(1, 2) == Point(x=1, y=2)
    assert Point(1).y == 0
    assert repr(Point(1, y=3)) == "Point(x=1, y=3)"
    assert Point(1) != Point(2)
    assert Point(1) != (1, 0)


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(TypeError, match="missing argument 'x'"):
        Point()  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="bad argument 'z'"):
        Point(1, z=2)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="bad argument 'x'"):
        Point(1, x=2)  # type: ignore[misc]
    with pytest.raises(TypeError, match="takes 2 arguments, got 3"):
        Point(1, 2, 3)  # type: ignore[call-arg]


def test_mutable_record_is_unhashable_and_assignable() -> None:
    point = Point(1)
    point.y = 5
    assert point == Point(1, 5)
    with pytest.raises(TypeError):
        hash(point)


def test_frozen_record_hashes_refuses_assignment_and_runs_post_init() -> None:
    item = Checked("a")
    assert hash(item) == hash(Checked("a", 1))
    assert {item, Checked("a", 1)} == {item}
    with pytest.raises(FrozenRecordError, match="cannot assign to field 'size'"):
        item.size = 2  # type: ignore[misc]
    with pytest.raises(AttributeError):
        del item.name  # type: ignore[misc]
    with pytest.raises(ValueError, match="negative size"):
        Checked("b", -1)


def test_the_records_dapper_trio_sends_round_trip() -> None:
    target = Target("script", "x.py", ("--flag",))
    assert Target.from_dict(target.to_dict()) == target
    options = RunOptions(stop_on_entry=False, breakpoints=("x.py:3",))
    assert RunOptions.from_dict(options.to_dict()) == options
    address = Address.parse("tcp:[::1]:4711")
    assert address == Address("tcp", host="::1", port=4711)
    assert Address.parse(str(address)) == address
    assert pickle.loads(pickle.dumps(address)) == address
    with pytest.raises(ValueError, match="tcp port is 1-65535"):
        Address("tcp", host="h", port=0)

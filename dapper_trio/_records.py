"""Small record classes for the code that runs before the debuggee starts.

``dapper-trio run`` starts the debuggee as early as it can (see ``_spawn``),
and what the supervisor imports before that is paid in full by every run.
``dataclasses`` imports ``inspect`` (and with it ``ast``, ``dis`` and
``tokenize``), ~20 ms here: a third of the supervisor's imports before the
debuggee starts.  ``record`` makes what ``@dataclass`` made for the few
classes on that path (``Target``, ``RunOptions``, ``Address``,
``BoundSocket``, the started debuggee): ``__init__`` from the annotated
fields and their defaults, then ``__post_init__`` if the class has one;
``__repr__``; ``__eq__``; and with ``frozen=True``, ``__hash__`` and no
assignment.  Type checkers treat it as a dataclass (``dataclass_transform``).
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, TypeVar

    from typing_extensions import dataclass_transform

    _C = TypeVar("_C", bound=type)
else:

    def dataclass_transform(**_: object) -> Callable[[Any], Any]:
        return lambda function: function


class FrozenRecordError(AttributeError):
    """Assignment to a field of a frozen record."""


_MISSING = object()


@dataclass_transform(frozen_default=False)
def record(*, frozen: bool = False) -> Callable[[_C], _C]:
    """Make *cls* a record of its annotated fields (see the module docstring)."""

    def make(cls: _C) -> _C:
        # (Not inspect.get_annotations: importing inspect is what this avoids.)
        names = tuple(cls.__dict__.get("__annotations__", {}))  # noqa: RUF063
        defaults = {name: cls.__dict__.get(name, _MISSING) for name in names}
        qualname = cls.__qualname__
        set_field = object.__setattr__

        def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
            if len(args) > len(names):
                raise TypeError(
                    f"{qualname}() takes {len(names)} arguments, got {len(args)}"
                )
            values = dict(zip(names, args, strict=False))
            for name, value in kwargs.items():
                if name not in defaults or name in values:
                    raise TypeError(f"{qualname}() got a bad argument {name!r}")
                values[name] = value
            for name in names:
                value = values.get(name, defaults[name])
                if value is _MISSING:
                    raise TypeError(f"{qualname}() missing argument {name!r}")
                set_field(self, name, value)
            post_init = getattr(self, "__post_init__", None)
            if post_init is not None:
                post_init()

        def __repr__(self: Any) -> str:
            fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in names)
            return f"{qualname}({fields})"

        def fields_of(self: Any) -> tuple[Any, ...]:
            return tuple(getattr(self, name) for name in names)

        def __eq__(self: Any, other: object) -> bool:
            if other.__class__ is not self.__class__:
                return NotImplemented
            return bool(fields_of(self) == fields_of(other))

        cls.__init__ = __init__  # type: ignore[misc]
        cls.__repr__ = __repr__  # type: ignore[assignment]
        cls.__eq__ = __eq__  # type: ignore[assignment]
        if frozen:

            def __hash__(self: Any) -> int:
                return hash(fields_of(self))

            def __setattr__(self: Any, name: str, value: object) -> None:
                raise FrozenRecordError(f"cannot assign to field {name!r}")

            def __delattr__(self: Any, name: str) -> None:
                raise FrozenRecordError(f"cannot delete field {name!r}")

            cls.__hash__ = __hash__  # type: ignore[assignment]
            cls.__setattr__ = __setattr__  # type: ignore[assignment]
            cls.__delattr__ = __delattr__  # type: ignore[assignment]
        else:
            cls.__hash__ = None  # type: ignore[assignment]
        return cls

    return make

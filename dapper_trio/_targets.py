"""What to run and how: targets and options, checked without importing trio.

``dapper-trio run`` checks its target (and starts the debuggee) before it
imports trio, so this module stays free of it.
"""

from __future__ import annotations

import importlib.util
import os

from ._records import record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Literal

#: Environment variable carrying the supervisor's address and token to the
#: debuggee (here, not in _spawn, so that a debuggee does not import
#: subprocess and termios for it).
SESSION_ENV = "DAPPER_TRIO_SUPERVISOR"
#: Environment variable carrying the adapter's address and token (and the
#: target) to a debuggee ``dapper-trio dap`` launched (``_dap_agent.main``).
ADAPTER_ENV = "DAPPER_TRIO_DAP_ADAPTER"


class LaunchError(Exception):
    """The program could not be started (missing file, unknown module...)."""


@record(frozen=True)
class Target:
    """What to run: a script path or a module name, with its arguments."""

    kind: Literal["script", "module"]
    name: str
    args: tuple[str, ...] = ()

    def process_name(self) -> str:
        return os.path.basename(self.name) if self.kind == "script" else self.name

    def to_dict(self) -> dict[str, object]:
        return {"kind": self.kind, "name": self.name, "args": list(self.args)}

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> Target:
        kind = data["kind"]
        name = data["name"]
        args = data.get("args", [])
        valid = (
            kind in ("script", "module")
            and isinstance(name, str)
            and isinstance(args, list)
            and all(isinstance(a, str) for a in args)
        )
        if not valid:
            # A malformed message from the supervisor: a bad value, whatever
            # part of it is wrong.
            raise ValueError(f"bad target: {data!r}")
        return cls(kind, name, tuple(args))  # type: ignore[arg-type]


@record(frozen=True)
class RunOptions:
    """How to run it: stop at the first line or not, breakpoints to set."""

    stop_on_entry: bool = True
    breakpoints: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, object]:
        return {
            "stop_on_entry": self.stop_on_entry,
            "breakpoints": list(self.breakpoints),
        }

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> RunOptions:
        stop = data.get("stop_on_entry", True)
        breaks = data.get("breakpoints", [])
        if not isinstance(stop, bool) or not isinstance(breaks, list):
            raise ValueError(f"bad run options: {data!r}")  # noqa: TRY004 - as above
        return cls(bool(stop), tuple(str(b) for b in breaks))


def resolve(target: Target) -> str:
    """Check that *target* exists; return the file whose first line we stop at."""
    if target.kind == "script":
        if not os.path.exists(target.name):
            raise LaunchError(f"can't open file {target.name!r}: no such file")
        if os.path.isdir(target.name):
            main = os.path.join(target.name, "__main__.py")
            if not os.path.exists(main):
                raise LaunchError(f"can't find '__main__.py' in {target.name!r}")
            return os.path.abspath(main)
        return os.path.abspath(target.name)
    try:
        spec = importlib.util.find_spec(target.name)
    except (ImportError, ValueError) as exc:
        raise LaunchError(f"no module named {target.name!r} ({exc})") from None
    if spec is None:
        raise LaunchError(f"no module named {target.name!r}")
    if spec.submodule_search_locations is not None:
        # A package: python -m runs its __main__ submodule.
        try:
            main_spec = importlib.util.find_spec(target.name + ".__main__")
        except ImportError:
            main_spec = None
        if main_spec is None or main_spec.origin is None:
            raise LaunchError(
                f"{target.name!r} is a package and cannot be directly executed"
            )
        return os.path.abspath(main_spec.origin)
    if spec.origin is None or not os.path.exists(spec.origin):
        raise LaunchError(f"module {target.name!r} has no source file to debug")
    return os.path.abspath(spec.origin)

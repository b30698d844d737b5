"""Who this process is in an actor tree, and how a parent tells a child.

Pure and synchronous: no trio, no sockets.  A parent starts a child with one
environment variable, ``DAPPER_TRIO_ACTOR``, holding a JSON object (see
``ChildConfig``): where to connect back and with which token, the child's
name and path from the root, the debug settings it inherits, the grace
period its parent allows it, and the parent's ``sys.path`` and ``__main__``
(so that the child can import what the parent can).  The child removes the
variable from its environment, so processes it starts some other way do not
mistake themselves for actors.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from typing import Any, Literal, cast

#: The environment variable that makes a process a child actor.
ACTOR_ENV = "DAPPER_TRIO_ACTOR"

CrashRepl = Literal["origin", "every-hop", "root"]
CRASH_REPL_POLICIES: tuple[CrashRepl, ...] = ("origin", "every-hop", "root")
ROOT_NAME = "root"


@dataclasses.dataclass(frozen=True)
class Actor:
    """This process's place in an actor tree (see ``current_actor()``).

    ``path`` is the names from the root down to this actor, itself included
    (``("root", "child", "grandchild")``); ``debug_mode`` and ``crash_repl``
    are the settings this process inherited from the nursery that started it
    (in the root: the defaults, ``False`` and ``"origin"``; the settings of
    the root's own nurseries are on each ``ActorNursery``).
    """

    name: str
    pid: int
    path: tuple[str, ...]
    debug_mode: bool = False
    crash_repl: CrashRepl = "origin"

    @property
    def parent_path(self) -> tuple[str, ...]:
        """The path of the parent actor (empty for the root)."""
        return self.path[:-1]

    @property
    def is_root(self) -> bool:
        """True in the process at the top of the tree."""
        return len(self.path) == 1


@dataclasses.dataclass(frozen=True)
class ChildConfig:
    """What a parent tells a child it starts (in ``ACTOR_ENV``)."""

    address: str
    token: str
    name: str
    path: tuple[str, ...]
    debug_mode: bool
    crash_repl: CrashRepl
    grace_period: float
    sys_path: tuple[str, ...]
    main: dict[str, str] | None
    #: In debug mode: the root's terminal lock service and its token, and
    #: the descriptor of the real terminal this process inherits (if any).
    tree_address: str | None = None
    tree_token: str | None = None
    tty_fd: int | None = None

    def to_env(self) -> str:
        """The JSON text to put in ``ACTOR_ENV``."""
        data = dataclasses.asdict(self)
        data["path"] = list(self.path)
        data["sys_path"] = list(self.sys_path)
        return json.dumps(data, separators=(",", ":"))

    @classmethod
    def from_env(cls, text: str) -> ChildConfig:
        """Parse ``to_env()``'s text; ``ValueError`` if it is malformed."""
        try:
            data: dict[str, Any] = json.loads(text)
            crash_repl = data["crash_repl"]
            if crash_repl not in CRASH_REPL_POLICIES:
                raise ValueError(f"unknown crash_repl {crash_repl!r}")
            main = data["main"]
            return cls(
                address=str(data["address"]),
                token=str(data["token"]),
                name=str(data["name"]),
                path=tuple(str(part) for part in data["path"]),
                debug_mode=bool(data["debug_mode"]),
                crash_repl=cast(CrashRepl, crash_repl),
                grace_period=float(data["grace_period"]),
                sys_path=tuple(str(entry) for entry in data["sys_path"]),
                main=None
                if main is None
                else {str(k): str(v) for k, v in main.items()},
                tree_address=_optional_str(data.get("tree_address")),
                tree_token=_optional_str(data.get("tree_token")),
                tty_fd=None if data.get("tty_fd") is None else int(data["tty_fd"]),
            )
        except (KeyError, TypeError, AttributeError, json.JSONDecodeError) as exc:
            raise ValueError(f"malformed {ACTOR_ENV}: {exc!r}") from exc


def _optional_str(value: object) -> str | None:
    return None if value is None else str(value)


_current: Actor | None = None


def set_current_actor(actor: Actor) -> None:
    """Record who this process is (the child runtime calls this at start-up)."""
    global _current
    _current = actor


def current_actor() -> Actor:
    """This process's place in the actor tree.

    In a child actor: its name, pid, path from the root, and the
    ``debug_mode`` and ``crash_repl`` settings it inherited.  In any other
    process: the root, named ``"root"``.
    """
    global _current
    actor = _current
    if actor is None or actor.pid != os.getpid():
        # The root; or a process forked from an actor, which is not one.
        actor = _current = Actor(name=ROOT_NAME, pid=os.getpid(), path=(ROOT_NAME,))
    return actor


def child_path(parent: Sequence[str], name: str) -> tuple[str, ...]:
    """The path of a child called *name* of the actor at *parent*."""
    return (*parent, name)

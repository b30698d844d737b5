"""Errors that cross process boundaries in an actor tree, and their wire form.

Pure and synchronous: no trio, no sockets.  A child describes an exception
with ``describe_exception()`` as a JSON-able dict; the parent rebuilds it with
``error_from_dict()``.  Nothing is unpickled to get an error across: a user's
exception class need not be importable (or picklable) in the parent, so what
travels is its type's name, its message and its formatted traceback.

Errors relayed through several hops keep their history: when a child's
exception is, or contains (inside exception groups, or as the ``__cause__`` of
what it raised), a ``RemoteError`` or ``ProcessDied`` from one of *its*
children, that error travels along in ``relayed``, so the root can name the
process where an error originated however deep it was.
"""

from __future__ import annotations

import signal
import sys
import traceback
from collections.abc import Iterator, Sequence
from types import TracebackType
from typing import Any

from ._errors import DapperTrioError, TransportError

if sys.version_info < (3, 11):  # pragma: no cover - exercised on 3.10 only
    from exceptiongroup import BaseExceptionGroup

__all__ = ["ProcessDied", "RemoteError"]

# Each message and traceback carried is capped, so that a deep chain of
# relayed errors stays well inside one IPC frame.
_TEXT_MAX = 32 * 1024
# How deep relayed errors are followed (a chain longer than this is cut).
_RELAY_DEPTH_MAX = 32


def format_path(path: Sequence[str]) -> str:
    """``("root", "child")`` -> ``"root/child"``."""
    return "/".join(path)


def _truncate(text: str, limit: int = _TEXT_MAX) -> str:
    if len(text) <= limit:
        return text
    return text[: limit // 2] + "\n[... truncated ...]\n" + text[-limit // 2 :]


class RemoteError(DapperTrioError):
    """An exception raised in a child actor, as its parent sees it.

    ``name``, ``pid`` and ``path`` (names from the root to that actor) say
    which process raised it; ``error_type`` is the name of the exception's
    class, ``message`` its ``str()``, ``remote_traceback`` its formatted
    traceback (with the child's source lines).  ``relayed`` holds the
    ``RemoteError`` / ``ProcessDied`` errors of that child's own children
    that the exception carried, and ``origin`` follows them down to the
    process where the error started.

    ``str()`` is a summary line naming the actor (and the origin, when the
    error was relayed), followed by the remote traceback.
    """

    def __init__(
        self,
        *,
        name: str,
        pid: int,
        path: Sequence[str],
        error_type: str,
        message: str,
        remote_traceback: str = "",
        relayed: Sequence[RemoteError | ProcessDied] = (),
    ) -> None:
        self.name = name
        self.pid = pid
        self.path: tuple[str, ...] = tuple(path)
        self.error_type = error_type
        self.message = message
        self.remote_traceback = remote_traceback
        self.relayed: tuple[RemoteError | ProcessDied, ...] = tuple(relayed)
        super().__init__(self._text())

    @property
    def origin(self) -> RemoteError | ProcessDied:
        """The error where this one started: follow ``relayed`` while it is one.

        ``self`` if the error was raised in this child itself (or it relayed
        several errors at once).
        """
        error: RemoteError | ProcessDied = self
        while isinstance(error, RemoteError) and len(error.relayed) == 1:
            error = error.relayed[0]
        return error

    @property
    def summary(self) -> str:
        """One line: which actor raised what (and where it came from)."""
        what = f"{self.error_type}: {self.message}" if self.message else self.error_type
        text = f"actor {format_path(self.path)} (pid {self.pid}) raised {what}"
        origin = self.origin
        if origin is not self:
            text += f"; originally: {origin.summary}"
        return text

    def _text(self) -> str:
        if not self.remote_traceback:
            return self.summary
        where = f"actor {format_path(self.path)} (pid {self.pid})"
        return (
            f"{self.summary}\n\nTraceback in {where}:\n{self.remote_traceback.rstrip()}"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (error_from_dict, (error_to_dict(self),))


class ProcessDied(TransportError):
    """A child actor's process ended without being asked to, or was lost.

    ``name``, ``pid`` and ``path`` say which process; ``returncode`` is its
    exit status as ``subprocess`` reports it (negative: killed by that
    signal); ``signal`` and ``exit_code`` split it (one of them is None);
    ``reason`` says when it happened (``"before it connected"``, ...).
    """

    def __init__(
        self,
        *,
        name: str,
        pid: int,
        path: Sequence[str],
        returncode: int,
        reason: str = "",
    ) -> None:
        self.name = name
        self.pid = pid
        self.path: tuple[str, ...] = tuple(path)
        self.returncode = returncode
        self.reason = reason
        super().__init__(self.summary)

    @property
    def signal(self) -> signal.Signals | None:
        """The signal that killed the process, or None if it exited."""
        if self.returncode >= 0:
            return None
        try:
            return signal.Signals(-self.returncode)
        except ValueError:  # pragma: no cover - a signal Python has no name for
            return None

    @property
    def exit_code(self) -> int | None:
        """The process's exit code, or None if a signal killed it."""
        return self.returncode if self.returncode >= 0 else None

    @property
    def summary(self) -> str:
        """One line: which process died, how, and when."""
        if self.returncode < 0:
            sig = self.signal
            how = f"was killed by {sig.name if sig else f'signal {-self.returncode}'}"
        else:
            how = f"exited with code {self.returncode}"
        text = f"actor {format_path(self.path)} (pid {self.pid}) {how}"
        return f"{text} {self.reason}" if self.reason else text

    def __reduce__(self) -> tuple[Any, ...]:
        return (error_from_dict, (error_to_dict(self),))


# ---------------------------------------------------------------------------
# Wire form


def error_to_dict(error: RemoteError | ProcessDied) -> dict[str, Any]:
    """The JSON-able form of a tree error (``error_from_dict`` inverts it)."""
    if isinstance(error, ProcessDied):
        return {
            "kind": "died",
            "name": error.name,
            "pid": error.pid,
            "path": list(error.path),
            "returncode": error.returncode,
            "reason": error.reason,
        }
    return {
        "kind": "error",
        "name": error.name,
        "pid": error.pid,
        "path": list(error.path),
        "type": error.error_type,
        "message": error.message,
        "traceback": error.remote_traceback,
        "relayed": [error_to_dict(inner) for inner in error.relayed],
    }


def error_from_dict(data: dict[str, Any]) -> RemoteError | ProcessDied:
    """Rebuild a ``RemoteError`` or ``ProcessDied`` from ``error_to_dict()``.

    Raises ``ValueError`` (or ``KeyError``/``TypeError``) on malformed data.
    """
    if data["kind"] == "died":
        return ProcessDied(
            name=str(data["name"]),
            pid=int(data["pid"]),
            path=[str(part) for part in data["path"]],
            returncode=int(data["returncode"]),
            reason=str(data.get("reason", "")),
        )
    if data["kind"] != "error":
        raise ValueError(f"unknown error kind {data['kind']!r}")
    return RemoteError(
        name=str(data["name"]),
        pid=int(data["pid"]),
        path=[str(part) for part in data["path"]],
        error_type=str(data["type"]),
        message=str(data["message"]),
        remote_traceback=str(data.get("traceback", "")),
        relayed=[error_from_dict(inner) for inner in data.get("relayed", [])],
    )


def _tree_errors(
    exc: BaseException, depth: int = 0
) -> Iterator[RemoteError | ProcessDied]:
    """The tree errors *exc* carries: itself, group members, its ``__cause__``."""
    if depth > _RELAY_DEPTH_MAX:
        return
    if isinstance(exc, (RemoteError, ProcessDied)):
        yield exc
    elif isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            yield from _tree_errors(inner, depth + 1)
    elif exc.__cause__ is not None:
        yield from _tree_errors(exc.__cause__, depth + 1)


def _user_traceback(exc: BaseException, skip_frames_of: str) -> TracebackType | None:
    """*exc*'s traceback without its first frames from the file *skip_frames_of*."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename == skip_frames_of:
        tb = tb.tb_next
    return tb if tb is not None else exc.__traceback__


def describe_exception(
    exc: BaseException,
    *,
    name: str,
    pid: int,
    path: Sequence[str],
    skip_frames_of: str = "",
) -> dict[str, Any]:
    """Describe an exception raised in this actor, in ``error_to_dict()`` form.

    The traceback starts at the first frame not in the file *skip_frames_of*
    (the actor runtime's own frames say nothing to the user).
    """
    tb = _user_traceback(exc, skip_frames_of)
    text = "".join(traceback.format_exception(type(exc), exc, tb))
    relayed = [error_to_dict(error) for error in _tree_errors(exc)]
    return {
        "kind": "error",
        "name": name,
        "pid": pid,
        "path": list(path),
        "type": type(exc).__name__,
        "message": _truncate(str(exc)),
        "traceback": _truncate(text),
        "relayed": relayed,
    }

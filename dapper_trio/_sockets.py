"""Sockets before trio: addresses, tokens, and binding a listening socket.

Nothing here imports trio.  ``dapper-trio run`` binds the supervisor's
listening socket and starts the debuggee *before* it imports trio, so that
the two interpreters start up side by side; ``_ipc.open_listener`` then takes
the bound socket over.

Socket files left behind
========================

The problem.  A unix socket's file (and its private directory) outlives the
process that bound it unless that process removes it, and a process killed
by a signal runs no ``finally`` block.

Things that don't work.
* ``atexit``: it does not run when a signal's default action ends the
  process (SIGTERM, SIGHUP), nor after SIGKILL.
* Removing the file before anyone connected: the peer finds no socket.
* Catching SIGTERM and cleaning up in trio (``open_signal_receiver``): only
  code that runs trio can, and ``dapper-trio run`` binds before it imports
  trio (about 0.2 s in which SIGTERM used to leave the file); and a library
  must not change what SIGTERM does to its user's program (end it).

The design.  A listener that serves one peer removes the file and its
directory as soon as that peer has authenticated (``BoundSocket.remove_path``,
``Listener.accept(remove_path=True)``): the file exists only between binding
and that moment.  For that window, while a socket file of this process
exists, SIGTERM and SIGHUP -- if their action is still the default one, and
only in the main thread, where handlers can be set -- get a handler that
removes this process's socket directories and then dies of the same signal
with the default action, so the parent sees what it would have seen.  A
handler installed later (trio's signal receiver, the program's own) takes
precedence; ours is put back to the default once no file is left, if it is
still the one installed.

Known holes.  SIGKILL (or a crash of the interpreter) between binding and the
peer's arrival still leaves the directory: nothing can run then.  Listeners
that serve many peers (``serve()``, ``dapper_trio.listen``) keep their file
for as long as they listen.  While the handler is installed, SIGTERM takes
effect at the main thread's next bytecode, not inside a long C call.
"""

from __future__ import annotations

import os
import signal
import socket as stdlib_socket
import sys
import threading
import types
from _operator import _compare_digest

from ._errors import DapperTrioError
from ._records import record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Literal

#: Environment variable naming where socket directories go.
RUNTIME_DIR_VARIABLE = "DAPPER_TRIO_RUNTIME_DIR"
#: The socket file's name inside its private directory.
SOCKET_NAME = "ipc.sock"
_BACKLOG = 128
# sun_path holds 108 bytes on Linux (104 on the BSDs), the terminating NUL
# included.
_UNIX_PATH_MAX = 107 if sys.platform.startswith("linux") else 103


class IPCError(DapperTrioError):
    """Base class of the errors raised by dapper-trio's IPC layer."""


@record(frozen=True)
class Address:
    """Where a listener listens: ``unix:/path/to.sock`` or ``tcp:HOST:PORT``.

    ``str(address)`` and ``Address.parse()`` convert to and from that text, so
    an address can be handed to a child process in an environment variable.
    """

    transport: Literal["unix", "tcp"]
    path: str = ""
    host: str = ""
    port: int = 0

    def __post_init__(self) -> None:
        if self.transport == "unix":
            if not self.path or "\0" in self.path:
                raise ValueError(f"a unix address needs a socket path: {self!r}")
            if self.host or self.port:
                raise ValueError(f"a unix address has no host or port: {self!r}")
        elif self.transport == "tcp":
            if not self.host or self.path:
                raise ValueError(f"a tcp address needs a host and no path: {self!r}")
            if type(self.port) is not int or not 0 < self.port < 65536:
                raise ValueError(f"a tcp port is 1-65535, not {self.port!r}")
        else:
            raise ValueError(f"unknown transport {self.transport!r}: {self!r}")

    def __str__(self) -> str:
        if self.transport == "unix":
            return f"unix:{self.path}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"tcp:{host}:{self.port}"

    @classmethod
    def parse(cls, text: str) -> Address:
        """Parse ``unix:PATH`` or ``tcp:HOST:PORT`` (``tcp:[::1]:PORT`` for IPv6).

        Raises ``ValueError`` naming the text if it is neither.
        """
        transport, sep, rest = text.partition(":")
        problem = "expected 'unix:/path/to.sock' or 'tcp:HOST:PORT'"
        try:
            if sep and transport == "unix" and rest:
                return cls("unix", path=rest)
            if sep and transport == "tcp":
                host, sep, port = rest.rpartition(":")
                if host.startswith("[") and host.endswith("]"):
                    host = host[1:-1]
                if sep and host and port.isdigit() and port.isascii():
                    return cls("tcp", host=host, port=int(port))
        except ValueError as exc:
            problem = str(exc)
        raise ValueError(f"not a dapper-trio address: {text!r} ({problem})")


def new_token() -> str:
    """Return a fresh random session token (64 hex characters).

    What ``secrets.token_hex(32)`` returns, without importing secrets (and
    hmac and hashlib with it) in every debuggee.
    """
    return os.urandom(32).hex()


def tokens_equal(given: str, expected: str) -> bool:
    """Compare tokens in constant time: ``hmac.compare_digest`` on their bytes.

    The same C function, taken from ``_operator`` as ``hmac`` takes it:
    importing ``hmac`` loads OpenSSL's hashlib, ~7 ms of every debuggee's
    start-up here.
    """
    return _compare_digest(given.encode(), expected.encode())


def _runtime_base(runtime_dir: str | None) -> str:
    """Where socket directories go (see ``open_listener``)."""
    if runtime_dir is not None:
        return runtime_dir
    configured = os.environ.get(RUNTIME_DIR_VARIABLE)
    if configured:
        return configured
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg and os.path.isdir(xdg) and os.access(xdg, os.W_OK | os.X_OK):
        return xdg
    import tempfile

    return tempfile.gettempdir()


def _make_socket_dir(runtime_dir: str | None) -> tuple[str, str]:
    """Create a private 0700 directory; return it and the socket path in it."""
    if not hasattr(stdlib_socket, "AF_UNIX"):
        raise IPCError("unix sockets are not available here; use transport='tcp'")
    import tempfile

    directory = tempfile.mkdtemp(prefix="dapper-trio-", dir=_runtime_base(runtime_dir))
    _track(directory)
    path = os.path.join(directory, SOCKET_NAME)
    size = len(os.fsencode(path))
    if size > _UNIX_PATH_MAX:
        _untrack(directory)
        raise IPCError(
            f"unix socket path {path!r} is {size} bytes, over the limit of"
            f" {_UNIX_PATH_MAX}; point {RUNTIME_DIR_VARIABLE} (or runtime_dir=)"
            " at a shorter directory, or use transport='tcp'"
        )
    return directory, path


# Signals whose default action ends the process, and which a process is sent
# to ask it to end: the ones worth removing socket files for.
_CLEANUP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)
# The socket directories of this process, each with the pid that made it (a
# forked child must not remove its parent's files).
_directories: dict[str, int] = {}


def _on_signal(signum: int, frame: types.FrameType | None) -> None:
    """Remove this process's socket directories, then die of *signum*."""
    pid = os.getpid()
    for directory, owner in list(_directories.items()):
        if owner == pid:
            _remove_directory(directory)
    signal.signal(signum, signal.SIG_DFL)
    os.kill(pid, signum)


def _remove_directory(directory: str) -> None:
    """Remove a socket directory and what is in it (a socket file), quietly.

    Not shutil.rmtree: this runs in a signal handler too, where importing a
    module is best avoided, and the directory holds one file.
    """
    try:
        names = os.listdir(directory)
    except OSError:
        return
    for name in names:
        try:
            os.unlink(os.path.join(directory, name))
        except OSError:
            pass
    try:
        os.rmdir(directory)
    except OSError:
        pass


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _track(directory: str) -> None:
    """Remove *directory* if a signal ends this process (see the top)."""
    _directories[directory] = os.getpid()
    if not _in_main_thread():
        return
    for signum in _CLEANUP_SIGNALS:
        if signal.getsignal(signum) == signal.SIG_DFL:
            signal.signal(signum, _on_signal)


def _untrack(directory: str, *, remove: bool = True) -> None:
    """Remove *directory* now; put the default action back if none is left.

    With ``remove=False`` the directory is only forgotten (a forked child's
    copy of its parent's table: the parent removes it).
    """
    if remove:
        _remove_directory(directory)
    _directories.pop(directory, None)
    pid = os.getpid()
    if any(owner == pid for owner in _directories.values()):
        return
    if not _in_main_thread():
        return  # the handler stays, and acts as the default action would
    for signum in _CLEANUP_SIGNALS:
        if signal.getsignal(signum) is _on_signal:
            signal.signal(signum, signal.SIG_DFL)


@record()
class BoundSocket:
    """A socket bound and listening, not yet owned by a trio listener."""

    sock: stdlib_socket.socket
    address: Address
    directory: str | None  # the private directory of a unix socket

    def remove_path(self) -> None:
        """Remove a unix socket's file and directory; keep the socket open.

        No new peer can connect after this; peers already connected, and
        connections waiting in the backlog, are not affected.  For a listener
        that serves one peer, call it once that peer is in (see the module's
        docstring).  Idempotent; nothing to do for TCP.
        """
        directory, self.directory = self.directory, None
        if directory is not None:
            _untrack(directory)

    def close(self) -> None:
        """Close the socket; remove a unix socket's file and directory."""
        self.sock.close()
        self.remove_path()

    def release_in_child(self) -> None:
        """In a child forked after binding: close its copy, leave the path.

        The parent owns the socket file and its directory.  The child
        forgets them, so that nothing in it (its signal handlers included)
        removes them.
        """
        self.sock.close()
        directory, self.directory = self.directory, None
        if directory is not None:
            _untrack(directory, remove=False)


def bind_listening_socket(
    *,
    transport: Literal["unix", "tcp"] = "unix",
    host: str = "127.0.0.1",
    port: int = 0,
    runtime_dir: str | None = None,
) -> BoundSocket:
    """Bind and listen (see ``_ipc.open_listener`` for where and how).

    Synchronous and trio-free; a TCP *host* that is a name is resolved here,
    blocking.  Nothing is left behind if it fails.
    """
    if transport == "unix":
        directory, path = _make_socket_dir(runtime_dir)
        try:
            sock = stdlib_socket.socket(
                stdlib_socket.AF_UNIX, stdlib_socket.SOCK_STREAM
            )
        except BaseException:
            _untrack(directory)
            raise
        try:
            sock.bind(path)
            os.chmod(path, 0o600)
            sock.listen(_BACKLOG)
        except BaseException:
            sock.close()
            _untrack(directory)
            raise
        return BoundSocket(sock, Address("unix", path=path), directory)
    if transport == "tcp":
        infos = stdlib_socket.getaddrinfo(
            host, port, type=stdlib_socket.SOCK_STREAM, flags=stdlib_socket.AI_PASSIVE
        )
        family, type_, proto, _, sockaddr = infos[0]
        sock = stdlib_socket.socket(family, type_, proto)
        try:
            sock.setsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_REUSEADDR, 1)
            sock.bind(sockaddr)
            sock.listen(_BACKLOG)
            bound_host, bound_port = sock.getsockname()[:2]
        except BaseException:
            sock.close()
            raise
        return BoundSocket(sock, Address("tcp", host=bound_host, port=bound_port), None)
    raise ValueError(f"transport must be 'unix' or 'tcp', not {transport!r}")

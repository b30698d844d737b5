"""Backends: where the debugged program runs, and who supervises it.

``ExternalProcessBackend`` runs the program in a child process.  Its one
nursery holds the IPC listener's accept-and-serve task (with the channel's
reader task under it) and the task that owns the child process (started, for
``dapper-trio run``, before trio was even imported: see ``_spawn``); the
backend's
``LifecycleManager`` records the connection's life (INITIALIZING until the
debuggee connects and takes its configuration, READY while connected, ERROR if
the connection or the process fails, TERMINATED when it is over).

The child shares the terminal with the supervisor (same process group, same
stdin/stdout/stderr): its REPL reads the terminal directly and its Ctrl-C
handling pauses it; the supervisor ignores SIGINT while the child lives.
SIGTERM or SIGHUP to the supervisor terminates the child (SIGTERM, then
SIGKILL after a grace period) and reaps it.  Whatever way the session ends,
the child is reaped, the socket file and its directory are removed, and the
terminal's settings are restored (a child killed mid-REPL leaves the terminal
in raw mode otherwise).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import sys
from typing import TYPE_CHECKING, Any, Literal

import trio

from ._ipc import open_listener
from ._lifecycle import LifecycleManager
from ._spawn import StartedDebuggee, save_terminal, start_debuggee
from ._states import BackendLifecycleState
from ._targets import RunOptions, Target, resolve

if TYPE_CHECKING:
    from ._spawn import ChildProcess

#: Seconds a child gets to exit after SIGTERM before it is killed.
TERMINATE_GRACE = 2.0


@dataclasses.dataclass(frozen=True)
class ProgramExit:
    """How the debugged program ended."""

    returncode: int  # as subprocess reports it: negative for a signal
    quit: bool  # the user quit the debugger
    connected: bool  # the debuggee reached its supervisor

    @property
    def signal(self) -> int | None:
        return -self.returncode if self.returncode < 0 else None


class ExternalProcessBackend:
    """Runs a program in a supervised child process connected over IPC.

    Create it inside ``trio.run`` (its lifecycle keeps time on trio's clock).
    """

    def __init__(
        self,
        target: Target,
        options: RunOptions,
        *,
        transport: Literal["unix", "tcp"] = "unix",
        started: StartedDebuggee | None = None,
    ) -> None:
        self.target = target
        self.options = options
        self.transport = transport
        self.lifecycle = LifecycleManager("debuggee")
        self._started = started
        self._exit_report: dict[str, Any] | None = None
        self._connected = False

    async def run(self) -> ProgramExit:
        """Run the program to its end and report how it ended.

        If the debuggee was not started already (``_spawn.start_debuggee``),
        it is started here.  On cancellation the child is terminated
        (SIGTERM, then SIGKILL after ``TERMINATE_GRACE`` seconds) and reaped
        before Cancelled propagates.
        """
        self.lifecycle.initialize()
        started = self._started or start_debuggee(transport=self.transport)
        try:
            async with (
                open_listener(
                    token=started.token,
                    bound=started.bound,
                    name="dapper-trio supervisor",
                ) as listener,
                trio.open_nursery() as nursery,
            ):
                nursery.start_soon(self._serve, listener)
                returncode = await _wait_for_exit(started.process)
                nursery.cancel_scope.cancel(reason="the debuggee exited")
        finally:
            with trio.CancelScope(shield=True):
                await self.lifecycle.terminate("the debuggee exited")
        report = self._exit_report or {}
        return ProgramExit(
            returncode=returncode,
            quit=bool(report.get("quit", False)),
            connected=self._connected,
        )

    async def _serve(self, listener: Any) -> None:
        async with listener.accept(
            request_handler=self._handle_request,
            event_handler=self._handle_event,
            remove_path=True,
        ) as channel:
            self._connected = True
            await channel.wait_closed()
            if self._exit_report is None:
                self.lifecycle.mark_error(
                    "the connection to the debuggee was lost",
                    _ConnectionDropped(channel.close_reason or "closed"),
                )

    async def _handle_request(self, method: str, params: Any) -> Any:
        if method == "configure":
            if self.lifecycle.lifecycle_state is BackendLifecycleState.INITIALIZING:
                self.lifecycle.mark_ready()
            return {
                "target": self.target.to_dict(),
                "options": self.options.to_dict(),
            }
        raise LookupError(f"unknown method {method!r}")

    async def _handle_event(self, event: str, body: Any) -> None:
        if event == "exited" and isinstance(body, dict):
            self._exit_report = body


class _ConnectionDropped(Exception):
    pass


async def _wait_for_exit(process: ChildProcess) -> int:
    """Wait for *process* to exit; return its returncode.

    Cancellation: the process is terminated (SIGTERM, then SIGKILL after
    ``TERMINATE_GRACE`` seconds) and reaped, shielded, before Cancelled
    propagates.
    """
    try:
        return await trio.to_thread.run_sync(process.wait, abandon_on_cancel=True)
    except trio.Cancelled:
        with trio.CancelScope(shield=True):
            await _terminate_then_kill(process)
        raise


async def _terminate_then_kill(process: ChildProcess) -> None:
    with contextlib.suppress(OSError):
        process.terminate()
    with trio.move_on_after(TERMINATE_GRACE):
        await trio.to_thread.run_sync(process.wait, abandon_on_cancel=True)
        return
    with contextlib.suppress(OSError):
        process.kill()
    await trio.to_thread.run_sync(process.wait)


async def _supervise(
    target: Target,
    options: RunOptions,
    transport: Literal["unix", "tcp"],
    started: StartedDebuggee | None,
) -> ProgramExit | int:
    backend = ExternalProcessBackend(
        target, options, transport=transport, started=started
    )
    # SIGINT reaches the child too (same process group): it pauses or
    # interrupts the program there, so here it is ignored.  SIGTERM/SIGHUP
    # end the session.
    with trio.open_signal_receiver(
        signal.SIGINT, signal.SIGTERM, signal.SIGHUP
    ) as signals:
        outcome: list[ProgramExit | int] = []
        async with trio.open_nursery() as nursery:

            async def run_backend() -> None:
                outcome.append(await backend.run())
                nursery.cancel_scope.cancel()

            nursery.start_soon(run_backend)
            async for signum in signals:
                if signum == signal.SIGINT:
                    continue
                outcome.append(128 + signum)
                nursery.cancel_scope.cancel(reason=f"supervisor got signal {signum}")
                break
        return outcome[0]


def supervise_program(
    target: Target,
    options: RunOptions,
    *,
    transport: Literal["unix", "tcp"] = "unix",
    started: StartedDebuggee | None = None,
) -> int:
    """``dapper-trio run`` in subprocess mode: supervise the program's process.

    Returns the program's exit status; if the program was killed by a signal,
    this process kills itself with the same signal (after cleaning up) so the
    shell sees exactly what it would have seen.
    """
    resolve(target)
    restore_terminal = started.restore_terminal if started else save_terminal()
    try:
        result = trio.run(_supervise, target, options, transport, started)
    finally:
        restore_terminal()
    if isinstance(result, int):
        return result
    if not result.connected and result.returncode != 0:
        print(
            "dapper-trio: the debuggee exited before it could connect "
            f"(exit status {result.returncode})",
            file=sys.stderr,
        )
    if result.signal is not None:
        if result.signal != signal.SIGINT:
            # (After SIGINT the program has printed its KeyboardInterrupt.)
            print(
                f"[dapper-trio] the program was killed by signal {result.signal} "
                f"({signal.Signals(result.signal).name})",
                file=sys.stderr,
                flush=True,
            )
        _die_by(result.signal)
    return result.returncode


def _die_by(signum: int) -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(ValueError, OSError):
            stream.flush()
    if signum != signal.SIGKILL:  # SIGKILL's action cannot be set (EINVAL)
        signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)

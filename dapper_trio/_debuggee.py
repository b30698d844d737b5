"""The debuggee process: runs the program, talks to its supervisor over IPC.

The program owns the main thread and its own trio run, and that run is frozen
whenever a REPL is open.  So the connection to the supervisor lives in an
*agent thread* with a trio run of its own: its nursery holds the channel and
its reader task, and it keeps answering while the program is paused.  The
main thread talks to the agent only through ``trio.from_thread`` with the
agent's token, and waits for its configuration with a bounded timeout.

If the connection to the supervisor is lost while the program runs (the
supervisor was killed), the debuggee terminates itself: a debuggee must never
outlive the supervisor that is responsible for reaping it.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import sys
import threading
from typing import Any

import trio

from ._ipc import Address, Channel, connect
from ._launcher import LaunchError, RunOptions, Target, run_program
from ._session import get_session
from ._spawn import SESSION_ENV

#: How long the debuggee waits for its supervisor before giving up.
CONFIG_TIMEOUT = 30.0


class Agent:
    """The debuggee's connection to its supervisor, in a thread of its own."""

    def __init__(self, address: Address, token: str) -> None:
        self.address = address
        self.token = token
        self._config: queue.Queue[dict[str, Any] | BaseException] = queue.Queue()
        self._trio_token: trio.lowlevel.TrioToken | None = None
        self._done: trio.Event | None = None
        self._exit_report: dict[str, Any] = {}
        self._finishing = False
        self._thread = threading.Thread(
            target=self._thread_main, name="dapper-trio agent", daemon=True
        )

    def start(self) -> dict[str, Any]:
        """Connect and return the run configuration the supervisor sends."""
        self._thread.start()
        try:
            result = self._config.get(timeout=CONFIG_TIMEOUT)
        except queue.Empty:
            raise LaunchError("the supervisor did not answer in time") from None
        if isinstance(result, BaseException):
            raise LaunchError(f"cannot reach the supervisor: {result}") from result
        return result

    def finish(self, status: int, *, quit: bool) -> None:
        """Report the program's exit status and close the connection."""
        self._finishing = True
        token = self._trio_token
        if token is None:
            return
        try:
            trio.from_thread.run_sync(
                self._set_done, {"status": status, "quit": quit}, trio_token=token
            )
        except (trio.RunFinishedError, RuntimeError):
            return
        self._thread.join(timeout=5.0)

    def _set_done(self, report: dict[str, Any]) -> None:
        self._exit_report = report
        if self._done is not None:
            self._done.set()

    def _thread_main(self) -> None:
        try:
            trio.run(self._main)
        except BaseException as exc:
            self._config.put(exc)
            if not self._finishing:
                self._supervisor_lost(exc)

    async def _main(self) -> None:
        self._trio_token = trio.lowlevel.current_trio_token()
        self._done = trio.Event()
        async with connect(
            self.address,
            token=self.token,
            name=f"debuggee pid {os.getpid()}",
            request_handler=self._handle_request,
        ) as channel:
            config = await channel.request("configure")
            self._config.put(config)
            await self._serve_until_done(channel)

    async def _serve_until_done(self, channel: Channel) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._watch_connection, channel, nursery.cancel_scope)
            assert self._done is not None
            await self._done.wait()
            await channel.send_event("exited", self._exit_report)
            nursery.cancel_scope.cancel()

    async def _watch_connection(
        self, channel: Channel, scope: trio.CancelScope
    ) -> None:
        await channel.wait_closed()
        if not self._finishing:
            self._supervisor_lost(channel.close_reason)
        scope.cancel()

    async def _handle_request(self, method: str, params: Any) -> Any:
        if method == "ping":
            return {"pid": os.getpid()}
        raise LookupError(f"unknown method {method!r}")

    def _supervisor_lost(self, why: object) -> None:
        print(
            f"[dapper-trio] lost the connection to the supervisor ({why}); "
            "the program is stopped.",
            file=sys.stderr,
            flush=True,
        )
        os.kill(os.getpid(), signal.SIGTERM)


def main() -> None:
    """Entry point of the debuggee process started by the supervisor."""
    raw = os.environ.pop(SESSION_ENV, None)
    if raw is None:
        sys.exit("dapper-trio: this process must be started by 'dapper-trio run'")
    info = json.loads(raw)
    agent = Agent(Address.parse(info["address"]), info["token"])
    try:
        config = agent.start()
        target = Target.from_dict(config["target"])
        options = RunOptions.from_dict(config["options"])
    except (LaunchError, KeyError, ValueError) as exc:
        print(f"dapper-trio: error: {exc}", file=sys.stderr)
        sys.exit(2)
    session = get_session()
    try:
        status = run_program(
            target,
            options,
            session=session,
            sigint_ignored=bool(info.get("sigint_ignored", False)),
            share_terminal=True,
        )
    except LaunchError as exc:
        print(f"dapper-trio: error: {exc}", file=sys.stderr)
        status = 2
    agent.finish(status, quit=session.quit_requested)
    sys.exit(status)

"""Where ``dapper-trio dap``'s program runs: a child process, this process, or
a process that was already running.

Theory of operation
===================

The problem.  The adapter (``_dap_server``) answers the client the same way
whatever runs the program, but starting, reaching and ending the program
differ: a child process is spawned, connects back over IPC and is killed if
need be; a program in the adapter's own process runs in a thread and can
only be asked to end; a program someone else started is reached at the
address it printed, with its token, and is left running when the client
detaches.

The design.  A backend is a task in the server's nursery (``run``, started
with ``nursery.start``: it has started once the program is reachable) with
three more methods: ``request`` (a "dap" request for the program's endpoint,
``_dap_agent.DapEndpoint``; errors become ``RequestError``), ``end``
(terminate, or detach) and ``exited`` (an event set once the program is
gone).  It talks back to the server through its ``BackendHost``: events go
to ``post`` in order, and the program's request for its configuration goes
to ``configuration``, which waits for ``configurationDone``.

* ``ExternalProcessBackend`` (``launch``): the program in a child process
  in a session of its own, stdin from /dev/null; the child connects to an
  IPC listener whose transport ``ipcTransport`` picks.  Its ``sys.stdout``
  and ``sys.stderr`` send ``output`` events over that connection, in the
  order written (``_dap_agent.ForwardedStream``); its file descriptors 1
  and 2 (C code, child processes, and Python output once the session is
  over) are pipes forwarded as ``output`` events by two pump tasks.  When
  the child has exited, the connection is read to its end (bounded) before
  ``exited`` is posted, so that no output event is cut off.  Ending it: the
  debugger quits if it is stopped (``finally`` blocks run), else SIGTERM,
  then SIGKILL after a grace period; it is always reaped.
* ``InProcessBackend`` (``launch`` with ``inProcess``): the program in a
  thread of this process, its endpoint served in the adapter's own trio loop
  (no IPC at all).  Its ``sys.stdout`` and ``sys.stderr`` become ``output``
  events; ``sys.argv``, ``sys.path[0]``, ``__main__``, the working directory
  and the environment are the program's while it runs and put back after.
  Ending it: quit at the stop it is in, or at the next one (a pause is sent).
* ``AttachBackend`` (``attach``): connects to a program's IPC listener with
  its token (refused: an error response, and the session goes on).
  ``disconnect`` detaches (the program goes on without breakpoints);
  ``terminateDebuggee`` or ``terminate`` quits it, or sends it SIGTERM if
  it does not stop in time.

Known holes.  One in-process program at a time per adapter process (its
``sys`` state is global); an in-process program that never stops and runs
outside trio cannot be ended before the adapter exits; output written to
file descriptors 1 and 2 directly (C code, child processes) by an
in-process program is not captured, and by a launched program it keeps
the order of its own pipe only.
"""

from __future__ import annotations

import codecs
import contextlib
import functools
import io
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Mapping
from typing import Any, Protocol

import trio

from ._dap_early import HandOver
from ._dap_launch import Launch, launch_env
from ._dap_requests import RequestError
from ._ipc import (
    Address,
    Channel,
    ConnectionLost,
    HandshakeError,
    RemoteCommandError,
    bind_listening_socket,
    connect,
    new_token,
    open_listener,
)
from ._spawn import ForkedProcess, SpareDebuggee
from ._targets import ADAPTER_ENV

#: Seconds a program gets to quit (``finally`` blocks run) after ``terminate``
#: or ``disconnect`` before it is sent SIGTERM.
QUIT_GRACE = 2.0
#: Seconds a request to end the program, or SIGTERM, may take to work.
TERMINATE_GRACE = 0.4
#: Seconds the pumps may take to forward the last output after the exit.
OUTPUT_DRAIN_TIMEOUT = 2.0
#: How much program output one ``output`` event carries at most.
OUTPUT_CHUNK = 64 * 1024
#: Seconds an attached program may take to answer the handshake.
ATTACH_TIMEOUT = 10.0


class BackendHost(Protocol):
    """What a backend needs from the server."""

    def post(self, event: str, body: Mapping[str, Any] | None = None) -> None:
        """Send *event* to the client, after every event posted before."""

    async def output_room(self) -> None:
        """Wait while too much program output waits for the client."""

    def wait_for_output_room(self) -> None:
        """``output_room`` from another thread (in the loop's, no wait)."""

    def release_output(self) -> None:
        """The program has ended: stop holding its output back."""

    async def configuration(self) -> dict[str, Any]:
        """The client's configuration, once ``configurationDone`` has come."""


def _remote_error(command: str, exc: RemoteCommandError) -> RequestError:
    short = "notStopped" if exc.error_type == "NotStopped" else None
    return RequestError(f"{command}: {exc.message}", short=short)


class _ChannelBackend:
    """A backend whose program is at the other end of an IPC channel."""

    def __init__(self, host: BackendHost) -> None:
        self.host = host
        self.channel: Channel | None = None
        self.connected = trio.Event()
        self.exited = trio.Event()

    async def request(
        self, command: str, arguments: Mapping[str, Any]
    ) -> dict[str, Any]:
        channel = self.channel
        if channel is None:
            if self.exited.is_set():
                raise RequestError(f"{command}: the program has ended")
            raise RequestError(f"{command}: the program is not connected yet")
        try:
            result = await channel.request(
                "dap", {"command": command, "arguments": dict(arguments)}
            )
        except RemoteCommandError as exc:
            raise _remote_error(command, exc) from None
        except ConnectionLost:
            raise RequestError(f"{command}: the program has ended") from None
        if not isinstance(result, dict):
            raise RequestError(f"{command}: the debuggee answered {result!r}")
        return result

    async def _handle_request(self, method: str, params: Any) -> Any:
        if method != "configure":
            raise LookupError(f"unknown method {method!r}")
        return await self.host.configuration()

    async def _handle_event(self, event: str, body: Any) -> None:
        self.host.post(event, body if isinstance(body, dict) else {})
        if event == "output":
            # Read no more from the program until the client has read
            # enough: the program's writes then wait (``_dap_agent``).
            await self.host.output_room()


# -- a child process -------------------------------------------------------------


class ExternalProcessBackend(_ChannelBackend):
    """The launched program in a child process, connected over IPC."""

    default_terminate = True

    def __init__(
        self,
        host: BackendHost,
        launch: Launch,
        spare: SpareDebuggee | None = None,
        *,
        handover: HandOver | None = None,
    ) -> None:
        super().__init__(host)
        self.launch = launch
        #: A process forked at the adapter's start-up to run this launch
        #: (``_spawn.fork_spare``); it must fit the launch (``spare_fits``).
        self.spare = spare
        #: That process, already running this launch: it was handed it
        #: before trio was imported (``_dap_early``), and connects to the
        #: socket bound then.
        self.handover = handover
        self.process: trio.Process | SpareProcess | None = None
        self.stopped = False
        self._disconnected = trio.Event()

    async def run(
        self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        launch = self.launch
        handover, self.handover = self.handover, None
        if handover is not None:
            token, bound = handover.token, handover.bound
        else:
            token = new_token()
            try:
                bound = bind_listening_socket(transport=launch.transport)
            except OSError as exc:
                raise RequestError(
                    f"launch: cannot listen for the program's connection: {exc}"
                ) from None
        async with open_listener(
            token=token, name="dapper-trio dap adapter", bound=bound
        ) as listener:
            process: trio.Process | SpareProcess
            if handover is not None:
                process = SpareProcess(
                    handover.process, handover.stdout, handover.stderr
                )
            else:
                env = launch_env(launch)
                info = {
                    "address": str(listener.address),
                    "token": token,
                    "target": launch.target,
                }
                spared = await self._hand_to_spare(env, info)
                if spared is not None:
                    process = spared
                else:
                    process = await self._start_process(env, info)
            self.process = process
            try:
                self.host.post(
                    "process",
                    {
                        "name": launch.target["name"],
                        "systemProcessId": process.pid,
                        "isLocalProcess": True,
                        "startMethod": "launch",
                    },
                )
                task_status.started()
                async with trio.open_nursery() as pumps:
                    assert process.stdout is not None
                    assert process.stderr is not None
                    pumps.start_soon(self._pump, process.stdout, "stdout")
                    pumps.start_soon(self._pump, process.stderr, "stderr")
                    async with trio.open_nursery() as connection:
                        connection.start_soon(self._serve_debuggee, listener)
                        await process.wait()
                        self.host.release_output()
                        if self.connected.is_set():
                            # The program's last output events may still be
                            # on their way: the channel ends when they are in.
                            with trio.move_on_after(OUTPUT_DRAIN_TIMEOUT):
                                await self._disconnected.wait()
                        connection.cancel_scope.cancel()
                    pumps.cancel_scope.deadline = (
                        trio.current_time() + OUTPUT_DRAIN_TIMEOUT
                    )
            finally:
                with trio.CancelScope(shield=True):
                    await _kill_and_reap(process)
                self.channel = None
                self.exited.set()
        code = process.returncode
        assert code is not None  # reaped above
        self.host.post("exited", {"exitCode": code if code >= 0 else 128 - code})
        self.host.post("terminated", {})

    async def _hand_to_spare(
        self, env: dict[str, str], info: dict[str, Any]
    ) -> SpareProcess | None:
        """Run the program in the spare debuggee, if there is one; else None."""
        spare, self.spare = self.spare, None
        if spare is None:
            return None
        try:
            forked, stdout, stderr = await trio.to_thread.run_sync(
                functools.partial(
                    spare.hand_over, cwd=self.launch.cwd, env=env, info=info
                )
            )
        except OSError:
            # It died (killed by someone): a fresh process will do.
            spare.discard()
            return None
        return SpareProcess(forked, stdout, stderr)

    async def _start_process(
        self, env: dict[str, str], info: dict[str, Any]
    ) -> trio.Process:
        launch = self.launch
        env = {**env, ADAPTER_ENV: json.dumps(info)}
        flags: list[str] = subprocess._args_from_interpreter_flags()  # type: ignore[attr-defined]
        command = [
            *launch.python,
            *(flags if launch.default_python else []),
            "-c",
            "from dapper_trio._dap_agent import main; main()",
        ]
        try:
            return await trio.lowlevel.open_process(
                command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                cwd=launch.cwd,
                env=env,
                start_new_session=True,
            )
        except OSError as exc:
            raise RequestError(
                f"launch: cannot start {launch.python[0]!r}: {exc.strerror or exc}"
            ) from None

    async def _serve_debuggee(self, listener: Any) -> None:
        async with listener.accept(
            request_handler=self._handle_request,
            event_handler=self._handle_event,
            remove_path=True,
        ) as channel:
            self.channel = channel
            self.connected.set()
            try:
                await channel.wait_closed()
            finally:
                self.channel = None
                self._disconnected.set()

    async def _pump(self, stream: trio.abc.ReceiveStream, category: str) -> None:
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        while True:
            data = await stream.receive_some(OUTPUT_CHUNK)
            text = decoder.decode(data, final=not data)
            if text:
                self.host.post("output", {"category": category, "output": text})
                await self.host.output_room()  # the pipe fills meanwhile
            if not data:
                return

    async def end(self, *, terminate: bool) -> None:
        """End the debuggee (a launched program always ends) and reap it, bounded.

        The debugger quits at the stop the program is in, or at the next one
        (a pause is sent), so ``finally`` blocks run; a program that does not
        end within ``QUIT_GRACE`` gets SIGTERM, then SIGKILL.
        """
        process = self.process
        if process is None or self.exited.is_set():
            return
        if self.channel is not None:
            with trio.move_on_after(TERMINATE_GRACE), contextlib.suppress(RequestError):
                await self.request("terminate", {})
            with trio.move_on_after(QUIT_GRACE):
                await self.exited.wait()
                return
        with contextlib.suppress(OSError):
            os.killpg(process.pid, signal.SIGTERM)
        with trio.move_on_after(TERMINATE_GRACE):
            await self.exited.wait()
            return
        with contextlib.suppress(OSError):
            os.killpg(process.pid, signal.SIGKILL)
        with trio.move_on_after(2.0):
            await self.exited.wait()


class SpareProcess:
    """What the backend uses of ``trio.Process``, for a handed-over spare."""

    def __init__(self, process: ForkedProcess, stdout: int, stderr: int) -> None:
        self._process = process
        self.pid = process.pid
        self.stdout = trio.lowlevel.FdStream(stdout)
        self.stderr = trio.lowlevel.FdStream(stderr)

    @property
    def returncode(self) -> int | None:
        """The exit status (negative: the signal), once it has exited."""
        return self._process.poll()

    async def wait(self) -> int:
        """Wait for the process to exit (reaping it); its returncode.

        Cancelled, it stops waiting; the process is not touched.
        """
        while (code := self._process.poll()) is None:
            await _child_exited(self.pid)
        return code


async def _child_exited(pid: int) -> None:
    """Return once child *pid* may have exited (a pidfd, or a short sleep)."""
    try:
        pidfd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        await trio.sleep(0.05)
        return
    try:
        await trio.lowlevel.wait_readable(pidfd)
    finally:
        os.close(pidfd)


async def _kill_and_reap(process: trio.Process | SpareProcess) -> None:
    """Kill *process*'s group if it still runs; reap it (bounded)."""
    if process.returncode is None:
        with contextlib.suppress(OSError):
            os.killpg(process.pid, signal.SIGKILL)
    with trio.move_on_after(5.0):
        await process.wait()
    for stream in (process.stdout, process.stderr):
        if stream is not None:
            await stream.aclose()


# -- a program someone else started ---------------------------------------------------


class AttachBackend(_ChannelBackend):
    """A running program's listener, reached at its address with its token."""

    default_terminate = False

    def __init__(self, host: BackendHost, address: Address, token: str) -> None:
        super().__init__(host)
        self.address = address
        self.token = token
        self.pid: int | None = None
        self.stopped = False

    async def run(
        self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        try:
            async with contextlib.AsyncExitStack() as stack:
                try:
                    channel = await stack.enter_async_context(
                        connect(
                            self.address,
                            token=self.token,
                            name="dapper-trio dap adapter",
                            request_handler=self._handle_request,
                            event_handler=self._handle_event,
                            handshake_timeout=ATTACH_TIMEOUT,
                        )
                    )
                except HandshakeError as exc:
                    raise RequestError(f"attach: {exc}") from None
                except (ConnectionLost, OSError) as exc:
                    raise RequestError(
                        f"attach: cannot reach {self.address}: {exc}"
                    ) from None
                self.channel = channel
                self.pid = channel.peer.pid
                self.connected.set()
                self.host.post(
                    "process",
                    {
                        "name": f"{channel.peer.name} (pid {channel.peer.pid})",
                        "systemProcessId": channel.peer.pid,
                        "isLocalProcess": True,
                        "startMethod": "attach",
                    },
                )
                task_status.started()
                try:
                    await channel.wait_closed()
                finally:
                    self.channel = None
        finally:
            self.exited.set()
        self.host.post("terminated", {})

    async def end(self, *, terminate: bool) -> None:
        """Detach (the program goes on), or end the program with *terminate*."""
        channel = self.channel
        if channel is None or self.exited.is_set():
            return
        if terminate:
            with trio.move_on_after(TERMINATE_GRACE), contextlib.suppress(RequestError):
                await self.request("terminate", {})
            with trio.move_on_after(QUIT_GRACE):
                await self.exited.wait()
                return
            if self.pid is not None and self.pid != os.getpid():
                with contextlib.suppress(OSError):
                    os.kill(self.pid, signal.SIGTERM)
        await channel.aclose()
        with trio.move_on_after(2.0):
            await self.exited.wait()


# -- this process -------------------------------------------------------------

_in_process_lock = threading.Lock()


class _EventStream(io.TextIOBase):
    """A program's ``sys.stdout`` or ``sys.stderr``: lines become ``output`` events."""

    def __init__(self, category: str, post: Any) -> None:
        self._category = category
        self._post = post
        self._lock = threading.Lock()
        self._pending: list[str] = []

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return "utf-8"

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        with self._lock:
            self._pending.append(text)
            if "\n" not in text:
                return len(text)
            data = "".join(self._pending)
            self._pending.clear()
        self._post(self._category, data)
        return len(text)

    def flush(self) -> None:
        with self._lock:
            data = "".join(self._pending)
            self._pending.clear()
        if data:
            self._post(self._category, data)


class _SavedProcessState:
    """What an in-process program changes in ``sys`` and ``os``, put back after."""

    def __init__(self, env: Mapping[str, str | None]) -> None:
        self.argv = list(sys.argv)
        self.path0 = sys.path[0] if sys.path else None
        self.main = sys.modules.get("__main__")
        self.cwd = os.getcwd()
        self.stdout, self.stderr = sys.stdout, sys.stderr
        self.env = {key: os.environ.get(key) for key in env}

    def restore(self) -> None:
        sys.argv[:] = self.argv
        if self.path0 is not None and sys.path:
            sys.path[0] = self.path0
        if self.main is not None:
            sys.modules["__main__"] = self.main
        with contextlib.suppress(OSError):
            os.chdir(self.cwd)
        sys.stdout, sys.stderr = self.stdout, self.stderr
        for key, value in self.env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


class InProcessBackend:
    """The launched program in a thread of the adapter's process."""

    default_terminate = True

    def __init__(self, host: BackendHost, launch: Launch) -> None:
        self.host = host
        self.launch = launch
        self.connected = trio.Event()
        self.exited = trio.Event()
        self.stopped = False
        self._endpoint: Any = None
        self._status = 1

    async def run(
        self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        from . import _dap_agent, _dap_debuggee
        from ._targets import LaunchError, Target

        if not _in_process_lock.acquire(blocking=False):
            raise RequestError(
                "launch: another program runs in this adapter's process; "
                "'inProcess' allows one at a time"
            )
        try:
            target = Target.from_dict(self.launch.target)
            endpoint = _dap_agent.DapEndpoint()
            token = trio.lowlevel.current_trio_token()
            try:
                search = _dap_agent.launched_search(target, self.launch.cwd)
            except LaunchError:
                search = None
            session = _dap_debuggee.DapSession(endpoint, search=search)
            session.own_threads.add(threading.get_ident())
            endpoint.bind(token, self.host.post)
            self._endpoint = endpoint
            done = trio.Event()
            thread = threading.Thread(
                target=self._program_main,
                args=(session, target, token, done),
                name="dapper-trio program",
                daemon=True,
            )
            self.host.post(
                "process",
                {
                    "name": target.name,
                    "systemProcessId": os.getpid(),
                    "isLocalProcess": True,
                    "startMethod": "launch",
                },
            )
            thread.start()
            self.connected.set()
            task_status.started()
            try:
                await done.wait()
            finally:
                endpoint.unbind()
                self.exited.set()
        finally:
            _in_process_lock.release()
        self.host.post("exited", {"exitCode": self._status})
        self.host.post("terminated", {})

    def _program_main(
        self,
        session: Any,
        target: Any,
        token: trio.lowlevel.TrioToken,
        done: trio.Event,
    ) -> None:
        from . import _session, _tracing
        from ._launcher import LaunchError, RunOptions, run_program

        launch = self.launch
        saved = _SavedProcessState(launch.env)
        previous_session = _session._SESSION
        previous_factory = _tracing.debugger_factory

        endpoint = self._endpoint

        def post_output(category: str, text: str) -> None:
            # Through the endpoint: batched (one event for many writes) and
            # in order with the program's other events.
            if endpoint.post_output(category, text):
                self.host.wait_for_output_room()
                return
            with contextlib.suppress(trio.RunFinishedError):  # after the end
                token.run_sync_soon(
                    self.host.post, "output", {"category": category, "output": text}
                )

        status = 1
        try:
            os.chdir(launch.cwd)
            for key, value in launch.env.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
            sys.stdout = _EventStream("stdout", post_output)
            sys.stderr = _EventStream("stderr", post_output)
            session.threads.program_thread = threading.get_ident()
            session.threads.program_thread_name = threading.current_thread().name
            _session._SESSION = session
            session.debugger()  # this thread's debugger is the main one
            config = trio.from_thread.run(self.host.configuration, trio_token=token)
            session.configure(config)
            try:
                status = run_program(
                    target,
                    RunOptions(stop_on_entry=bool(config.get("stop_on_entry"))),
                    session=session,
                    sigint_ignored=True,
                    # Never a tree session in the adapter's process: its quit
                    # path would pthread_kill the adapter's main thread.
                    share_terminal=False,
                )
            except LaunchError as exc:
                print(f"dapper-trio: error: {exc}", file=sys.stderr)
                status = 2
        except (trio.RunFinishedError, trio.Cancelled):
            status = 1  # the adapter is going away
        finally:
            for stream in (sys.stdout, sys.stderr):
                with contextlib.suppress(Exception):
                    stream.flush()
            with contextlib.suppress(Exception):
                session.main_debugger().clear_all_breaks()
            session.watch.close()
            real_run = session._real_trio_run
            if (
                real_run is not None
                and getattr(trio.run, "__wrapped__", None) is real_run
            ):
                trio.run = real_run  # type: ignore[assignment]
            _session._SESSION = previous_session
            _tracing.debugger_factory = previous_factory
            saved.restore()
            self._status = status
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(done.set)

    async def request(
        self, command: str, arguments: Mapping[str, Any]
    ) -> dict[str, Any]:
        from ._dap_debuggee import NotStopped

        endpoint = self._endpoint
        if endpoint is None or self.exited.is_set():
            raise RequestError(f"{command}: the program has ended")
        try:
            result = await endpoint.handle(
                {"command": command, "arguments": dict(arguments)}
            )
        except NotStopped as exc:
            raise RequestError(f"{command}: {exc}", short="notStopped") from None
        except Exception as exc:
            raise RequestError(f"{command}: {exc}") from None
        if not isinstance(result, dict):
            raise RequestError(f"{command}: the debuggee answered {result!r}")
        return result

    async def end(self, *, terminate: bool) -> None:
        """Quit the program (at its stop, or the next one), bounded."""
        if self.exited.is_set() or self._endpoint is None:
            return
        with contextlib.suppress(RequestError):
            await self.request("terminate", {})
        with trio.move_on_after(QUIT_GRACE):
            await self.exited.wait()


Backend = ExternalProcessBackend | InProcessBackend | AttachBackend

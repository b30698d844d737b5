"""The ``dapper-trio`` command line (also ``python -m dapper_trio``)."""

from __future__ import annotations

import os
import sys

from ._version import __version__

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from collections.abc import Sequence
    from typing import NoReturn

    from ._spawn import TerminalSpare

RUN_USAGE = (
    "dapper-trio run [-c] [-b [FILE:]LINE[,CONDITION]]... [--in-process] "
    "[--ipc {unix,tcp}] [--listen [HOST:]PORT [--host HOST]] "
    "(script.py | -m module) [args...]"
)

RUN_DESCRIPTION = """\
Run a Python program under the trio-aware debugger and stop at its first line,
like `python -m pdb`.  The program sees the sys.argv, __name__, sys.path[0]
and working directory it would see under plain `python`, and the exit status
is the program's.

By default the program runs in a child process supervised by this one and
connected to it over a private, authenticated socket; --in-process runs it in
this process with the same behaviour.

At the (Pdb++) prompt, besides every pdb/pdb++ command:
  tasks [-a]        the live trio task tree
  task [ID|NAME]    look at another task's await chain (`task` to come back)
  scopes            cancel scopes around the task: deadlines, shields, reasons
  exceptions [N]    leaves of an ExceptionGroup in a post-mortem

Ctrl-C while the program runs pauses it (press twice within a second for a
plain KeyboardInterrupt); Ctrl-C at the prompt clears the line.

With --listen, there is no REPL: the program runs in this process and waits
for an editor to attach with `dapper-trio dap` (the address and token are
printed on stderr; see docs/editors.md).  Without -c it starts once a client
has attached, and stops at its first line."""


DAP_DESCRIPTION = """\
Speak the Debug Adapter Protocol on stdin/stdout (or on TCP with --listen), so
that an editor (VS Code, nvim-dap, any DAP client) can debug a trio program:
every trio task is a DAP thread named after the task.  A launched program runs
in a child process (in this process with "inProcess": true); attach reaches a
program that called dapper_trio.listen() or runs under `dapper-trio run
--listen`.  See docs/editors.md."""


def _version_text() -> str:
    import pdbpp_utils
    import trio

    python = ".".join(map(str, sys.version_info[:3]))
    return (
        f"dapper-trio {__version__} "
        f"(trio {trio.__version__}, pdbpp {pdbpp_utils.__version__}, Python {python})"
    )


def _build_parser() -> argparse.ArgumentParser:
    import argparse

    class _VersionAction(argparse.Action):
        # Like action="version", but the text (which imports trio and pdbpp to
        # read their versions) is only computed when asked for: every run would
        # otherwise pay for those imports before the debuggee is started.
        def __call__(
            self,
            parser: argparse.ArgumentParser,
            namespace: argparse.Namespace,
            values: object,
            option_string: str | None = None,
        ) -> None:
            print(_version_text())
            parser.exit()

    parser = argparse.ArgumentParser(
        prog="dapper-trio",
        description="A debugger runtime for Trio programs.",
        epilog=(
            "See 'dapper-trio run --help', 'dapper-trio dap --help', "
            "docs/terminal.md and docs/editors.md."
        ),
    )
    parser.add_argument(
        "--version",
        action=_VersionAction,
        nargs=0,
        help="show the versions of dapper-trio, trio, pdbpp and Python, and exit",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    run = commands.add_parser(
        "run",
        help="debug a script or module at the terminal",
        usage=RUN_USAGE,
        description=RUN_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_run_options(run)
    dap = commands.add_parser(
        "dap",
        help="serve the Debug Adapter Protocol (for editors)",
        description=DAP_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    dap.add_argument(
        "--listen",
        metavar="[HOST:]PORT",
        help=(
            "serve DAP clients on TCP instead of stdin/stdout, on loopback "
            "(127.0.0.1 or ::1); PORT 0 picks a free port, printed on stderr"
        ),
    )
    _add_host_option(dap)
    return parser


def _add_host_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--host",
        metavar="HOST",
        help=(
            "listen on HOST instead of loopback (prints a warning: whoever can "
            "reach it can run code as you)"
        ),
    )


def _add_run_options(run: argparse.ArgumentParser) -> None:
    run.add_argument(
        "-c",
        "--continue",
        dest="stop_on_entry",
        action="store_false",
        help="don't stop at the first line; run until a breakpoint",
    )
    run.add_argument(
        "-b",
        "--break",
        dest="breakpoints",
        action="append",
        default=[],
        metavar="[FILE:]LINE[,CONDITION]",
        help=(
            "set a breakpoint before the program starts (repeatable); FILE "
            "defaults to the program's main file, CONDITION is a Python expression"
        ),
    )
    run.add_argument(
        "--in-process",
        action="store_true",
        help="run the program in this process instead of a supervised child",
    )
    run.add_argument(
        "--ipc",
        choices=("unix", "tcp"),
        default="unix",
        help="transport between supervisor and program (default: unix)",
    )
    run.add_argument(
        "--listen",
        metavar="[HOST:]PORT",
        help=(
            "no REPL: let an editor attach (DAP) on TCP, loopback unless --host "
            "says otherwise; PORT 0 picks a free port"
        ),
    )
    _add_host_option(run)
    run.add_argument(
        "-m", dest="module", metavar="MODULE", help="run a module as a script"
    )


_RUN_FLAGS_WITH_VALUE = {"-b", "--break", "--ipc", "--listen", "--host"}


def _split_run_argv(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """Split ``run``'s arguments into (our options, the program and its args).

    Options end at the script name, at ``-m MODULE`` (everything after the
    module name belongs to the program) or at ``--``.
    """
    ours: list[str] = []
    index = 0
    while index < len(argv):
        token = argv[index]
        if token == "--":
            return ours, list(argv[index + 1 :])
        if token == "-m":
            ours.extend(argv[index : index + 2])
            return ours, list(argv[index + 2 :])
        if token.startswith("-m") and len(token) > 2 and not token.startswith("--"):
            ours.append(token)
            return ours, list(argv[index + 1 :])
        if not token.startswith("-") or token == "-":
            return ours, list(argv[index:])
        ours.append(token)
        if token in _RUN_FLAGS_WITH_VALUE:
            if index + 1 < len(argv):
                ours.append(argv[index + 1])
            index += 2
            continue
        index += 1
    return ours, []


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``dapper-trio`` console script."""
    if argv is None:
        argv = sys.argv[1:]
    argv = list(argv)
    if argv == ["dap"]:
        # What an editor runs: the spare is forked before argparse, the
        # parser and the rest are imported (see _dap_on_stdio).
        return _dap_on_stdio()
    if argv[:1] == ["run"]:
        # The debuggee-to-be is forked first, to import the debugger while
        # this process parses the command line (see _spawn); in that child
        # this call runs the program and ends with SystemExit.
        from ._spawn import fork_terminal_spare

        spare = fork_terminal_spare(_preload_debuggee)
        try:
            parser = _build_parser()
            ours, program = _split_run_argv(argv[1:])
            args = parser.parse_args(["run", *ours])
            return _cmd_run(parser, args, program, spare)
        finally:
            if spare is not None:
                spare.discard()  # unless it became the debuggee
    parser = _build_parser()
    args = parser.parse_args(argv)
    if args.command == "dap":
        return _cmd_dap(parser, args)
    parser.print_help()
    return 2


def _exit_at_once(status: int) -> NoReturn:
    """End the supervisor now that it has cleaned up after the program.

    By then the debuggee is reaped, the socket removed, the terminal
    restored and nothing else runs here.  What is left is the interpreter's
    teardown (it cost 40-50 ms of every run's wall time while the supervisor
    was a trio run, with idle worker threads to join); ``os._exit`` skips it.
    """
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (ValueError, OSError):
            pass
    os._exit(status)


_LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def _parse_listen(
    parser: argparse.ArgumentParser, command: str, args: argparse.Namespace
) -> tuple[str, int] | None:
    """``--listen [HOST:]PORT`` and ``--host HOST``: where to listen, or None.

    A HOST in --listen must be loopback; any other address must be named
    with --host, which warns.
    """
    if args.listen is None:
        if args.host is not None:
            parser.error(f"{command}: --host needs --listen")
        return None
    text = args.listen
    host, _, port = text.rpartition(":")
    host = host.strip("[]")
    if not port.isdigit() or int(port) > 65535:
        parser.error(f"{command}: --listen {text!r}: expected [HOST:]PORT")
    if host and host not in _LOOPBACK:
        parser.error(
            f"{command}: --listen {text!r}: {host} is not a loopback address; "
            f"to listen there, say so with --host {host} --listen {port}"
        )
    if args.host is not None:
        if host and host != args.host:
            parser.error(
                f"{command}: --listen {text!r} and --host {args.host!r} disagree"
            )
        host = args.host
        if host not in _LOOPBACK:
            print(
                f"dapper-trio {command}: warning: listening on {host}, not "
                "loopback: anyone who can reach it can run code as you",
                file=sys.stderr,
            )
    return host or "127.0.0.1", int(port)


def _cmd_dap(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    listen = _parse_listen(parser, "dap", args)
    if listen is not None:
        from ._dap_server import run

        return run(listen)
    return _dap_on_stdio()


def _dap_on_stdio() -> int:
    """``dapper-trio dap``: serve one client on stdin and stdout."""
    # A spare debuggee for the client's launch, forked first: it imports
    # the debugger (no trio) while the adapter answers the client's first
    # requests, before the adapter imports trio (_dap_early); at
    # configurationDone it runs the program.  In a spare, this call runs
    # the launched program and ends with SystemExit (see _spawn.fork_spare).
    from ._spawn import fork_spare

    spare = fork_spare(_preload_agent)
    from ._dap_early import answer_early

    # (SIGTERM or SIGHUP before the server watches them still removes the
    # socket bound early for the program: _sockets.)
    early = answer_early(spare)
    from ._dap_server import run

    return run(spare=spare, early=early)


def _preload_agent() -> None:
    from ._dap_agent import preload

    preload()


def _preload_debuggee() -> None:
    from ._debuggee import preload

    preload()


def _cmd_run(
    parser: argparse.ArgumentParser,
    args: argparse.Namespace,
    program: list[str],
    spare: TerminalSpare | None = None,
) -> int:
    # Nothing here imports trio (see _backends).
    from ._targets import LaunchError, RunOptions, Target, resolve

    if args.module is not None:
        target = Target("module", args.module, tuple(program))
    elif program:
        target = Target("script", program[0], tuple(program[1:]))
    else:
        parser.error("run: give a script to run, or -m MODULE")
    for spec in args.breakpoints:
        location = spec.partition(",")[0].strip()
        line = location.rpartition(":")[2]
        if not line.isdigit():
            parser.error(
                f"run: bad breakpoint {spec!r}: expected [FILE:]LINE[,CONDITION]"
            )
    options = RunOptions(
        stop_on_entry=args.stop_on_entry, breakpoints=tuple(args.breakpoints)
    )
    listen = _parse_listen(parser, "run", args)
    if listen is not None and args.breakpoints:
        parser.error("run: --listen: set breakpoints from the editor, not with -b")
    try:
        resolve(target)
        if listen is not None:
            from ._dap_listen import run_listening

            return run_listening(
                target,
                host=listen[0],
                port=listen[1],
                stop_on_entry=args.stop_on_entry,
            )
        if args.in_process:
            from ._launcher import run_program

            return run_program(target, options)
        from ._spawn import start_debuggee

        config = {"target": target.to_dict(), "options": options.to_dict()}
        # A fork of this process: in the child, this call runs the program
        # and ends with SystemExit (see _spawn).
        started = start_debuggee(
            transport=args.ipc, config=config, fork=True, spare=spare
        )
        # Ctrl-C is the debuggee's: it pauses the program there.  Ignored
        # here from now on (the program may be running, even at a prompt,
        # already).
        import signal

        signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            from ._backends import supervise_program
        except BaseException:
            started.abort()
            raise
        status = supervise_program(target, options, started=started)
        _exit_at_once(status)
    except LaunchError as exc:
        print(f"dapper-trio: error: {exc}", file=sys.stderr)
        return 2

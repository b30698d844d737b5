"""What a debugger costs a program it never stops: runs to completion, as ratios.

Run ``python benchmarks/overhead.py`` (about 8 minutes, plus a few the first
time, which builds the throwaway venvs) or ``--quick`` (a smoke run of a
minute or two); ``--python 3.13`` (repeatable; default 3.11 and 3.12) picks
the interpreters, ``--scale`` shrinks the workloads, ``--repeat`` sets how
many runs each cell is the minimum of and ``--no-debugpy`` leaves debugpy out.

Each workload runs to completion under each debugger with one breakpoint
set that never stops it; the table gives its wall time divided by that of
plain ``python workload.py``, measured in the same run (the first row).  The
columns are the scenarios:

0. the CPU workload for one round (a few milliseconds of work): what starting
   and ending the program under the debugger costs, which every other column
   pays once;
1. the trio workload for 10 items: the same for a program that imports
   trio, as the trio column's does (the debugger's start-up overlaps that
   import, so it costs such a program less than column 0 says);
2. the CPU workload (``workloads/calls.py``: Python method calls), with the
   breakpoint in a file it imports but never runs (``workloads/_never.py``);
3. the trio workload (``workloads/channels.py``: tasks passing items through
   memory channels), breakpoint likewise;
4. the CPU workload with a conditional breakpoint on its hottest loop line
   (``total += position.norm1()``, once per iteration of ``simulate``) whose
   condition, ``steps < 0``, never holds: the debugger must stop there often
   enough to evaluate it.

The rows are the contenders, each run with the interpreter's throwaway venv:

* plain ``python workload.py``: the baseline, 1.00x;
* stdlib pdb: ``python -m pdb -c 'break FILE:LINE[, COND]' -c continue``
  (pdbpp, which dapper-trio installs, has its hijack of ``pdb`` switched off);
* debugpy 1.8 with a client attached: ``python -m debugpy.adapter``, driven
  by ``dap_client.py`` as an editor would (launch, setBreakpoints,
  configurationDone, wait for ``terminated``);
* dapper-trio's terminal front end, ``python -m dapper_trio run -c -b
  FILE:LINE[,COND]``; on 3.12 and later once per tracing backend
  (``DAPPER_TRIO_TRACER=settrace`` and ``=monitoring``), and once with
  ``--in-process`` (one process instead of a supervisor and a debuggee);
* dapper-trio's DAP front end, ``python -m dapper_trio dap``, driven by the
  same client, where ``dap --help`` works; "not available" otherwise.

What is timed: from spawn to the program's end.  For plain python and the
terminal front ends that is the process's exit, on a pty as at a terminal;
for pdb, which restarts a program that ends, its "The program finished"
message; for a DAP contender, from starting the adapter to its
``terminated`` event, so the adapter's own start-up counts, as it does when
an editor starts a session.

A cell counts only if the run ended with status 0, printed the workload's
"workload done:" line, set the breakpoint (pdb and ``run`` print
"Breakpoint 1 at"; a DAP adapter answers setBreakpoints) and did not stop;
otherwise it says FAILED and why, under the table.  The last column is a
control: the hot-line breakpoint with a condition that holds (``steps > 0``)
must stop the program, so no contender can look fast by ignoring
breakpoints.

Three more tables follow: the same runs' wall times as medians (the first
table keeps each cell's fastest run, and one lucky baseline run moves a
whole column); paired, each run over plain python's run of the same round
and workload, made seconds before or after it, the median of those ratios
(the machine's speed drifts over minutes, and this keeps each ratio's two
runs in the same moment); and their CPU time (user + system of every
process of the run, from ``getrusage(RUSAGE_CHILDREN)``), which a busy
machine disturbs far less than wall time.

Each cell is the minimum of ``--repeat`` runs (default 3), except that a cell
whose runs add up to more than ``--budget`` seconds (default
``REPEAT_BUDGET``) is not run again: pdb and debugpy take minutes a run.
The speed of this machine's cores wanders by 10-30 % from one run to the
next, so a cell of 2-3 s runs needs many of them for its minimum to mean
something: ``--column trio --repeat 12 --budget 60`` measures that column
alone with twelve.  In each round the contenders run
in a rotated order, so all of them see the same noise.  Only the ratios mean
anything on a shared machine; the baseline's absolute times are printed for
reference alone.  Every contender gets an empty temporary ``HOME`` and
working directory, ``TERM=dumb``, ``PDBPP_COLORS=0`` and none of the
variables in ``UNSET``.

The venvs live in ``benchmarks/.venvs/pyX.Y`` (``--cache``; git ignores them
through a ``.gitignore`` written there), made with ``pythonX.Y -m venv`` on
first use.  dapper-trio (and with it trio) is installed from a copy of this
checkout's package files, not editable, so no contender imports the work
tree; it is installed again whenever those files change.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import os
import pty
import resource
import select
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import termios
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from dap_client import Adapter, Breakpoint, DapError, Run, run_program

BENCHMARKS = Path(__file__).resolve().parent
REPO = BENCHMARKS.parent
WORKLOADS = BENCHMARKS / "workloads"
NEVER = WORKLOADS / "_never.py"
CALLS = WORKLOADS / "calls.py"
CHANNELS = WORKLOADS / "channels.py"
#: The hot line of calls.py, found by its text: the file has no ``# mark:``
#: there, and this benchmark leaves the existing workloads as they are.
HOT_LINE = "total += position.norm1()"
NEVER_TRUE = "steps < 0"
ALWAYS_TRUE = "steps > 0"

DONE = "workload done:"
BREAKPOINT_SET = "Breakpoint 1 at"
PDB_FINISHED = "The program finished and will be restarted"
PDB_PROMPT = "(Pdb) "
PDBPP_PROMPT = "(Pdb++) "
TRACER_ENV = "DAPPER_TRIO_TRACER"
TIMES = "\N{MULTIPLICATION SIGN}"

DEFAULT_PYTHONS = ("3.11", "3.12")
DEFAULT_CACHE = BENCHMARKS / ".venvs"
#: What is copied from the checkout and installed (and hashed to tell when
#: the installed copy is out of date).
PACKAGE_FILES = ("pyproject.toml", "README.md", "dapper_trio")
DEBUGPY = "debugpy==1.8.*"
#: Seconds a cell's runs may add up to before it is not run again.
REPEAT_BUDGET = 15.0
#: Variables a person's terminal would not have, or that change what is
#: measured (PYTHONPATH could bring the work tree in; a tracer choice
#: belongs to the contender).
UNSET = (
    "DAPPER_TRIO_TRACER",
    "PDBPP_HIJACK_PDB",
    "PYTHONBREAKPOINT",
    "PYTHONDEVMODE",
    "PYTHONHOME",
    "PYTHONINSPECT",
    "PYTHONPATH",
    "PYTHONPROFILEIMPORTTIME",
    "PYTHONSTARTUP",
    "PYTHONTRACEMALLOC",
    "PYTHONUNBUFFERED",
    "PYTHONVERBOSE",
    "PYTHONWARNINGS",
    "VIRTUAL_ENV",
)


class Failed(Exception):
    """A contender (or the baseline) did not behave as the benchmark expects."""


def line_of(path: Path, text: str) -> int:
    """The number of the only line of *path* that contains *text*."""
    found = [
        number
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if text in line
    ]
    if len(found) != 1:
        raise LookupError(f"{len(found)} lines of {path} contain {text!r}, not one")
    return found[0]


def tail(text: str, size: int = 600) -> str:
    return text[-size:].strip()


# -- scenarios (columns) and contenders (rows) ---------------------------------------


@dataclass(frozen=True)
class Scenario:
    label: str
    script: Path
    size: int  # the workload's argument
    breakpoint: Breakpoint


def scenarios(scale: float) -> list[Scenario]:
    """The columns, the workloads sized for 2-3 s of plain python here.

    Long enough that a debugger's start-up (dapper-trio: two processes and
    their imports, ~0.4 s) is not all that is measured.
    """
    never = Breakpoint(NEVER, line_of(NEVER, "# mark: breakpoint"))
    hot = Breakpoint(CALLS, line_of(CALLS, HOT_LINE), NEVER_TRUE)
    return [
        # One round: start-up and exit only, what every other column pays once.
        Scenario("start-up (1 round), cold-file bp", CALLS, 1, never),
        # The same for a trio program, whose import of trio the debugger's
        # own start-up overlaps: what the trio column pays once.
        Scenario("trio start-up (10 items), cold-file bp", CHANNELS, 10, never),
        # 3125 rounds of 8,001 Python calls: the 25 M calls of the table.
        Scenario("CPU, cold-file bp", CALLS, max(1, round(3125 * scale)), never),
        Scenario("trio, cold-file bp", CHANNELS, max(10, round(40000 * scale)), never),
        # Fewer rounds: pdb and debugpy pay 20-40x here.
        Scenario(
            "CPU, hot-line bp, cond never true", CALLS, max(1, round(1000 * scale)), hot
        ),
    ]


def control_breakpoint() -> Breakpoint:
    """The hot-line breakpoint with a condition that holds: it must stop."""
    return Breakpoint(CALLS, line_of(CALLS, HOT_LINE), ALWAYS_TRUE)


Front = Literal["python", "pdb", "run", "dap"]


def _debugpy_launch(python: str) -> dict[str, Any]:
    # The adapter would start the debuggee with its own interpreter anyway;
    # said explicitly so that it cannot pick another one from PATH.
    return {"python": [python]}


@dataclass(frozen=True)
class Contender:
    """One row: how a workload is run (see ``command`` and ``timed_run``).

    A DAP contender is started as ``python *adapter`` with ``launch(python)``
    merged into its launch request.  The row is shown on interpreters in
    ``[since, before)``; it runs only if ``python *probe`` (when given) exits
    0, "not available" otherwise.
    """

    name: str
    front: Front
    env: Mapping[str, str] = field(default_factory=dict)
    adapter: tuple[str, ...] = ()
    launch: Callable[[str], dict[str, Any]] | None = None
    since: tuple[int, int] = (3, 0)
    before: tuple[int, int] = (4, 0)
    probe: tuple[str, ...] = ()
    needs_debugpy: bool = False
    #: Extra options of ``dapper-trio run`` (front "run").
    options: tuple[str, ...] = ()

    def shown_on(self, version: tuple[int, int]) -> bool:
        return self.since <= version < self.before


BASELINE = Contender("python (baseline)", "python")
CONTENDERS = [
    BASELINE,
    Contender("stdlib pdb", "pdb", env={"PDBPP_HIJACK_PDB": "0"}),
    Contender(
        "debugpy (DAP)",
        "dap",
        adapter=("-m", "debugpy.adapter"),
        launch=_debugpy_launch,
        needs_debugpy=True,
    ),
    Contender("dapper-trio run -c", "run", before=(3, 12)),
    Contender(
        "dapper-trio run -c, settrace",
        "run",
        env={TRACER_ENV: "settrace"},
        since=(3, 12),
    ),
    Contender(
        "dapper-trio run -c, monitoring",
        "run",
        env={TRACER_ENV: "monitoring"},
        since=(3, 12),
    ),
    Contender("dapper-trio run -c --in-process", "run", options=("--in-process",)),
    Contender(
        "dapper-trio (DAP)",
        "dap",
        adapter=("-m", "dapper_trio", "dap"),
        probe=("-m", "dapper_trio", "dap", "--help"),
    ),
]


def breakpoint_spec(spec: Breakpoint, separator: str) -> str:
    location = f"{spec.path}:{spec.line}"
    return location if spec.condition is None else location + separator + spec.condition


def command(
    contender: Contender, python: str, script: Path, size: int, spec: Breakpoint
) -> list[str]:
    """The command line of a terminal contender (not DAP: see ``on_adapter``)."""
    args = [str(script), str(size)]
    if contender.front == "python":
        return [python, *args]
    if contender.front == "pdb":
        spec_text = breakpoint_spec(spec, ", ")
        return [
            python,
            "-m",
            "pdb",
            "-c",
            f"break {spec_text}",
            "-c",
            "continue",
            *args,
        ]
    if contender.front == "run":
        spec_text = breakpoint_spec(spec, ",")
        return [
            python,
            "-m",
            "dapper_trio",
            "run",
            *contender.options,
            "-c",
            "-b",
            spec_text,
            *args,
        ]
    raise ValueError(f"{contender.name} is not run on a terminal")


# -- running on a pty ----------------------------------------------------------------


@dataclass
class PtyRun:
    text: str  # everything the terminal received
    found: int | None  # index of the first of the patterns seen; None: it exited
    seconds: float  # from spawn to that pattern, or to the exit
    status: int | None  # exit status (None if it was still running at the pattern)


def session_members(sid: int) -> list[int]:
    """Processes of session *sid* (ours: pty.fork made it), from /proc."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path("/proc", entry, "stat").read_text()
        except OSError:
            continue
        fields = stat.rpartition(")")[2].split()
        if int(fields[3]) == sid:  # state, ppid, pgrp, session
            members.append(int(entry))
    return members


def reap(pid: int, deadline: float) -> int | None:
    """Wait for child *pid* until *deadline*; its exit code, None if still running."""
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.perf_counter() > deadline:
            return None
        time.sleep(0.005)


def end_session(pid: int, fd: int, status: int | None) -> None:
    """Quit at a prompt, then end whatever is left of the session pty.fork made.

    *status* is the leader's exit status if it has been reaped already; its
    session may still hold a process that outlived it.
    """
    if status is None:
        with contextlib.suppress(OSError):
            os.write(fd, b"q\n")
        status = reap(pid, time.perf_counter() + 5.0)
    for signal_number in (signal.SIGTERM, signal.SIGKILL):
        members = session_members(pid)
        if not members:
            break
        for member in members:
            with contextlib.suppress(ProcessLookupError):
                os.kill(member, signal_number)
        if status is None:
            status = reap(pid, time.perf_counter() + 5.0)
        else:
            time.sleep(0.5)


def on_pty(
    argv: Sequence[str],
    env: Mapping[str, str],
    cwd: str,
    timeout: float,
    patterns: Sequence[str] = (),
) -> PtyRun:
    """Run *argv* on a new pty until it exits or prints one of *patterns*."""
    started = time.perf_counter()
    deadline = started + timeout
    pid, fd = pty.fork()
    if pid == 0:  # the child: its own session, the pty as its terminal
        try:
            fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 160, 0, 0))
            os.chdir(cwd)
            os.execve(argv[0], list(argv), dict(env))
        finally:
            os._exit(127)
    received = bytearray()
    # Searched as bytes, in what each read added (and the few bytes before
    # it that a pattern could start in): a workload printing megabytes must
    # not cost the harness a decode of everything at every read.
    encoded = [pattern.encode() for pattern in patterns]
    longest = max((len(pattern) for pattern in encoded), default=0)
    status: int | None = None
    try:
        while True:
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                text = received.decode(errors="replace")
                raise Failed(
                    f"timed out after {timeout:.0f} s; output ends:\n{tail(text)}"
                )
            ready, _, _ = select.select([fd], [], [], remaining)
            if not ready:
                continue
            try:
                data = os.read(fd, 65536)
            except OSError:  # EIO: every process closed the terminal
                data = b""
            if not data:
                break
            received += data
            start = max(0, len(received) - len(data) - longest)
            hits = [
                (found, index)
                for index, pattern in enumerate(encoded)
                if (found := received.find(pattern, start)) >= 0
            ]
            if hits:
                text = received.decode(errors="replace")
                return PtyRun(text, min(hits)[1], time.perf_counter() - started, None)
        status = reap(pid, deadline)
        seconds = time.perf_counter() - started
        text = received.decode(errors="replace")
        if status is None:
            raise Failed(
                f"closed its terminal but did not exit; output ends:\n{tail(text)}"
            )
        return PtyRun(text, None, seconds, status)
    finally:
        end_session(pid, fd, status)
        os.close(fd)


# -- running under a DAP adapter -----------------------------------------------------


def on_adapter(
    contender: Contender,
    target: Target,
    script: Path,
    size: int,
    spec: Breakpoint,
    timeout: float,
    *,
    expect_stop: bool = False,
) -> tuple[float, Run]:
    """Seconds from starting the adapter to ``terminated`` (or ``stopped``)."""
    adapter = Adapter(
        contender.name,
        [target.python, *contender.adapter],
        contender.launch(target.python) if contender.launch else {},
    )
    started = time.perf_counter()
    try:
        run = run_program(
            adapter,
            script,
            [str(size)],
            [spec],
            env=target.env_for(contender),
            cwd=target.home,
            timeout=timeout,
            expect_stop=expect_stop,
        )
    except DapError as exc:
        raise Failed(str(exc)) from None
    return run.terminated - started, run


# -- one interpreter ---------------------------------------------------------------


@dataclass
class Target:
    """One interpreter under test: its venv's python, and where contenders run."""

    python: str
    version: tuple[int, int]
    home: str  # empty HOME and working directory for every contender
    env: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        env = {name: value for name, value in os.environ.items() if name not in UNSET}
        bin_dir = str(Path(self.python).parent)
        env.update(
            {
                "TERM": "dumb",
                "PDBPP_COLORS": "0",
                "HOME": self.home,
                "PATH": bin_dir + os.pathsep + env.get("PATH", ""),
            }
        )
        self.env = env

    def env_for(self, contender: Contender) -> dict[str, str]:
        return {**self.env, **contender.env}


def timed_run(
    contender: Contender, target: Target, scenario: Scenario, timeout: float
) -> float:
    """Seconds to run *scenario* to completion under *contender*, checked."""
    script, size, spec = scenario.script, scenario.size, scenario.breakpoint
    if contender.front == "dap":
        seconds, run = on_adapter(contender, target, script, size, spec, timeout)
        if not run.breakpoints:
            raise Failed("setBreakpoints answered no breakpoint")
        if run.exit_code != 0 or DONE not in run.output:
            raise Failed(f"exit code {run.exit_code}; output ends:\n{tail(run.output)}")
        return seconds
    patterns = {
        "python": [],
        "pdb": [PDB_FINISHED, PDB_PROMPT],
        "run": [PDBPP_PROMPT],
    }[contender.front]
    argv = command(contender, target.python, script, size, spec)
    result = on_pty(argv, target.env_for(contender), target.home, timeout, patterns)
    text = result.text
    if contender.front == "pdb":
        if result.found != 0:
            raise Failed(
                f"stopped before the program finished; output ends:\n{tail(text)}"
            )
    elif result.found is not None:
        raise Failed(
            f"stopped at a breakpoint that never holds; output ends:\n{tail(text)}"
        )
    elif result.status != 0:
        raise Failed(f"exit status {result.status}; output ends:\n{tail(text)}")
    if DONE not in text:
        raise Failed(f"no {DONE!r} line; output ends:\n{tail(text)}")
    if contender.front != "python" and BREAKPOINT_SET not in text:
        raise Failed(f"no {BREAKPOINT_SET!r} line; output ends:\n{tail(text)}")
    return result.seconds


def stops_when_true(contender: Contender, target: Target) -> str:
    """The control: does the hot-line breakpoint stop when its condition holds?"""
    spec = control_breakpoint()
    try:
        if contender.front == "dap":
            _, run = on_adapter(
                contender, target, CALLS, 1, spec, 120.0, expect_stop=True
            )
            stopped = run.stopped or {}
            reason = stopped.get("body", {}).get("reason")
            return "yes" if reason == "breakpoint" else f"NO (stopped: {reason})"
        prompt = PDB_PROMPT if contender.front == "pdb" else PDBPP_PROMPT
        argv = command(contender, target.python, CALLS, 1, spec)
        result = on_pty(
            argv, target.env_for(contender), target.home, 120.0, [prompt, DONE]
        )
    except Failed as exc:
        return f"FAILED ({str(exc).splitlines()[0]})"
    if result.found == 0 and f"{CALLS.name}({spec.line})" in result.text:
        return "yes"
    return "NO"


# -- venvs ---------------------------------------------------------------------------


def find_interpreter(spec: str) -> str:
    """``3.12`` -> the ``python3.12`` on PATH; anything else is a command or path."""
    name = f"python{spec}" if spec[:1].isdigit() else spec
    found = shutil.which(name)
    if found is None:
        raise Failed(f"no interpreter {name!r} on PATH")
    return found


def check_output(argv: Sequence[str], what: str, timeout: float = 600.0) -> str:
    try:
        done = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=tempfile.gettempdir(),
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise Failed(f"{what}: {exc}") from None
    if done.returncode != 0:
        raise Failed(f"{what} failed:\n{tail(done.stdout + done.stderr, 1500)}")
    return done.stdout


def importable(python: str, module: str) -> bool:
    done = subprocess.run(
        [python, "-c", f"import {module}"],
        capture_output=True,
        timeout=120,
        cwd=tempfile.gettempdir(),
    )
    return done.returncode == 0


def copy_package(destination: Path) -> str:
    """Copy the package files of the checkout to *destination*; their hash."""
    digest = hashlib.sha256()
    for name in PACKAGE_FILES:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(
                source,
                destination / name,
                ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
            )
        else:
            shutil.copy2(source, destination / name)
    for path in sorted(destination.rglob("*")):
        if path.is_file():
            digest.update(str(path.relative_to(destination)).encode() + b"\0")
            digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def prepare(
    spec: str, cache: Path, *, with_debugpy: bool
) -> tuple[str, tuple[int, int]]:
    """The python of *spec*'s venv under *cache*, made and brought up to date,
    and its version."""
    interpreter = find_interpreter(spec)
    version = check_output(
        [interpreter, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
        f"{interpreter} -c",
    ).strip()
    venv = cache / f"py{version}"
    python = venv / "bin" / "python"
    if not python.exists():
        cache.mkdir(parents=True, exist_ok=True)
        (cache / ".gitignore").write_text(
            "# throwaway venvs of benchmarks/overhead.py\n*\n"
        )
        progress(f"creating {venv} with {interpreter}")
        check_output([interpreter, "-m", "venv", str(venv)], f"{interpreter} -m venv")
    stamp = venv / "dapper-trio-sources.sha256"
    with tempfile.TemporaryDirectory(prefix="dapper-trio-bench-src-") as source:
        fingerprint = copy_package(Path(source))
        wanted = []
        if not stamp.exists() or stamp.read_text() != fingerprint:
            wanted.append(source)
        if with_debugpy and not importable(str(python), "debugpy"):
            wanted.append(DEBUGPY)
        if wanted:
            progress(
                f"installing into {venv}: "
                + ", ".join(
                    "dapper-trio (this checkout)" if item == source else item
                    for item in wanted
                )
            )
            check_output(
                [
                    str(python),
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    "--disable-pip-version-check",
                    "trio",
                    *wanted,
                ],
                f"pip install into {venv}",
            )
            stamp.write_text(fingerprint)
    major, minor = version.split(".")
    return str(python), (int(major), int(minor))


def describe(python: str) -> str:
    code = (
        "import importlib.metadata as m, sys\n"
        "def v(name):\n"
        "    try: return m.version(name)\n"
        "    except m.PackageNotFoundError: return 'not installed'\n"
        'print(f\'Python {sys.version.split()[0]}: trio {v("trio")},'
        ' debugpy {v("debugpy")}, dapper-trio {v("dapper-trio")}\')\n'
    )
    return check_output([python, "-c", code], "reading versions").strip()


# -- the benchmark -------------------------------------------------------------------


def progress(message: str) -> None:
    print(f"[overhead] {message}", file=sys.stderr, flush=True)


@dataclass
class Results:
    target: Target
    description: str
    scenarios: list[Scenario]
    contenders: list[Contender]
    unavailable: dict[str, str]  # contender name -> what its cells say
    times: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    #: CPU seconds (user + system) of every process of each run.
    cpu: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    #: The round each of ``times``' runs was made in.
    rounds: dict[tuple[str, str], list[int]] = field(default_factory=dict)
    failures: dict[tuple[str, str], str] = field(default_factory=dict)
    controls: dict[str, str] = field(default_factory=dict)


def bench(
    target: Target,
    description: str,
    cases: list[Scenario],
    repeat: int,
    *,
    with_debugpy: bool,
    only: Sequence[str] = (),
    budget: float = REPEAT_BUDGET,
) -> Results:
    contenders = [
        c
        for c in CONTENDERS
        if c.shown_on(target.version)
        and (c is BASELINE or not only or any(text in c.name for text in only))
    ]
    unavailable: dict[str, str] = {}
    for contender in contenders:
        if contender.needs_debugpy and not with_debugpy:
            unavailable[contender.name] = "skipped"
        elif contender.probe:
            done = subprocess.run(
                [target.python, *contender.probe],
                capture_output=True,
                timeout=120,
                cwd=target.home,
                env=target.env,
            )
            if done.returncode != 0:
                unavailable[contender.name] = "not available"
    results = Results(target, description, cases, contenders, unavailable)
    active = [c for c in contenders if c.name not in unavailable]

    # One unrecorded plain run per workload: page cache, .pyc files, and a
    # check that the workloads themselves work.
    timeouts: dict[str, float] = {}
    for scenario in cases:
        key = (BASELINE.name, scenario.label)
        try:
            seconds = timed_run(BASELINE, target, scenario, 120.0)
        except Failed as exc:
            results.failures[key] = str(exc)
            continue
        timeouts[scenario.label] = 60.0 + 100.0 * seconds

    for round_index in range(repeat):
        for scenario in cases:
            if scenario.label not in timeouts:
                continue
            shift = round_index % len(active)
            for contender in active[shift:] + active[:shift]:
                key = (contender.name, scenario.label)
                so_far = results.times.setdefault(key, [])
                if key in results.failures or sum(so_far) > budget:
                    continue
                before = children_cpu()
                try:
                    seconds = timed_run(
                        contender, target, scenario, timeouts[scenario.label]
                    )
                except Failed as exc:
                    results.failures[key] = str(exc)
                    progress(f"{contender.name} | {scenario.label}: FAILED")
                    continue
                so_far.append(seconds)
                results.rounds.setdefault(key, []).append(round_index)
                results.cpu.setdefault(key, []).append(children_cpu() - before)
                progress(
                    f"round {round_index + 1}/{repeat} {contender.name}"
                    f" | {scenario.label}: {seconds:.2f} s"
                )
    for contender in active:
        if contender is not BASELINE:
            results.controls[contender.name] = stops_when_true(contender, target)
    return results


def children_cpu() -> float:
    """CPU seconds of every child process waited for so far (and theirs)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def ratio_table(
    results: Results,
    title: str,
    runs: dict[tuple[str, str], list[float]],
    statistic: Callable[[list[float]], float],
) -> list[str]:
    """A table of *statistic* of each cell's *runs* over the baseline's."""

    def cell(contender: str, label: str) -> float | None:
        base = runs.get((BASELINE.name, label))
        found = runs.get((contender, label))
        return statistic(found) / statistic(base) if base and found else None

    return table_of(results, title, cell)


def paired_ratios(results: Results, contender: str, label: str) -> list[float]:
    """Each run of a cell over the baseline's run of the same round."""
    base = dict(
        zip(
            results.rounds.get((BASELINE.name, label), []),
            results.times.get((BASELINE.name, label), []),
            strict=True,
        )
    )
    found = zip(
        results.rounds.get((contender, label), []),
        results.times.get((contender, label), []),
        strict=True,
    )
    return [seconds / base[index] for index, seconds in found if index in base]


def paired_table(results: Results) -> list[str]:
    """The median of each cell's paired ratios (``paired_ratios``)."""

    def cell(contender: str, label: str) -> float | None:
        ratios = paired_ratios(results, contender, label)
        return statistics.median(ratios) if ratios else None

    return table_of(
        results,
        "Wall time paired: each run over plain python's run of the same round"
        " (made a few seconds before or after it), the median of those ratios:",
        cell,
    )


def table_of(
    results: Results, title: str, cell: Callable[[str, str], float | None]
) -> list[str]:
    """A table of ratios, ``cell(contender's name, scenario's label)`` each."""
    cases = results.scenarios
    lines = [
        "",
        title,
        "",
        "| contender | " + " | ".join(s.label for s in cases) + " |",
        "|---|" + "---:|" * len(cases),
    ]
    for contender in results.contenders:
        if contender.name in results.unavailable:
            continue
        values = [cell(contender.name, scenario.label) for scenario in cases]
        cells = ["n/a" if value is None else ratio(value) for value in values]
        lines.append(f"| {contender.name} | " + " | ".join(cells) + " |")
    return lines


def ratio(value: float) -> str:
    return f"{value:.2f}{TIMES}"


def render(results: Results, repeat: int, budget: float) -> list[str]:
    cases = results.scenarios
    lines = [
        f"## {results.description}",
        "",
        "| contender | "
        + " | ".join(s.label for s in cases)
        + " | hot bp stops when true |",
        "|---|" + "---:|" * len(cases) + ":---:|",
    ]
    notes: list[str] = []
    fewer = False
    for contender in results.contenders:
        cells = []
        for scenario in cases:
            key = (contender.name, scenario.label)
            base = results.times.get((BASELINE.name, scenario.label))
            found = results.times.get(key)
            if contender.name in results.unavailable:
                cells.append(results.unavailable[contender.name])
            elif key in results.failures:
                notes.append(
                    f"{contender.name} | {scenario.label}: {results.failures[key]}"
                )
                cells.append(f"FAILED [{len(notes)}]")
            elif not base or not found:
                cells.append("n/a (no baseline)")
            else:
                mark = "*" if len(found) < repeat else ""
                fewer = fewer or bool(mark)
                cells.append(ratio(min(found) / min(base)) + mark)
        control = results.controls.get(contender.name, "")
        if contender.name in results.unavailable and contender is not BASELINE:
            control = results.unavailable[contender.name]
        lines.append(f"| {contender.name} | " + " | ".join(cells) + f" | {control} |")
    baseline = ", ".join(
        f"{s.script.name} {s.size}: "
        + (
            f"{min(times):.3f} s"
            if (times := results.times.get((BASELINE.name, s.label)))
            else "n/a"
        )
        for s in cases
    )
    lines += [
        "",
        f"Baseline, plain python (for reference only; minimum of {repeat}):"
        f" {baseline}.",
    ]
    if fewer:
        lines.append(
            f"\\* fewer than {repeat} runs: their runs took over {budget:.0f} s."
        )
    # The minimum keeps the luckiest run of each cell; on this machine one
    # lucky baseline run moves a whole column.  The medians show that noise.
    lines += ratio_table(
        results,
        "Wall time again, the median of each cell's runs over plain python's median:",
        results.times,
        statistics.median,
    )
    # Each round runs the contenders one after the other: a contender's run
    # and the baseline's of the same round share the machine's state of the
    # moment far more than two minimums of runs minutes apart do.
    lines += paired_table(results)
    # CPU time: steadier than wall time on a busy machine.
    lines += ratio_table(
        results,
        "CPU time (user + system, every process of the run), as a ratio to plain"
        " python's:",
        results.cpu,
        min,
    )
    return lines + failure_lines(notes)


def failure_lines(notes: list[str]) -> list[str]:
    """The numbered notes on failed cells, under a table (none: nothing)."""
    if not notes:
        return []
    return [
        "",
        "Failures:",
        "",
        *(
            f"{number}. " + note.replace("\n", "\n    ")
            for number, note in enumerate(notes, start=1)
        ),
    ]


def new_parser(description: str) -> argparse.ArgumentParser:
    """A benchmark's command line, with ``--python`` (repeatable)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--python",
        action="append",
        metavar="VERSION_OR_PATH",
        help="an interpreter to measure, e.g. 3.12 (repeatable; default: "
        + " and ".join(DEFAULT_PYTHONS)
        + ")",
    )
    return parser


def main() -> None:
    parser = new_parser(__doc__.split("\n")[0])
    parser.add_argument(
        "--scale",
        type=float,
        default=1.0,
        help="multiply workload sizes by this (default 1)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="runs per cell, the minimum is kept (default 3)",
    )
    parser.add_argument(
        "--budget",
        type=float,
        default=REPEAT_BUDGET,
        metavar="SECONDS",
        help=(
            "a cell whose runs add up to more than this is not run again"
            f" (default {REPEAT_BUDGET:.0f})"
        ),
    )
    parser.add_argument(
        "--quick", action="store_true", help="a smoke run: --scale 0.25 --repeat 1"
    )
    parser.add_argument(
        "--no-debugpy", dest="debugpy", action="store_false", help="leave debugpy out"
    )
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="TEXT",
        help="measure only the rows whose name contains TEXT (repeatable;"
        " plain python always runs)",
    )
    parser.add_argument(
        "--column",
        action="append",
        default=[],
        metavar="TEXT",
        help="measure only the columns whose label contains TEXT (repeatable)",
    )
    parser.add_argument(
        "--cache",
        type=Path,
        default=DEFAULT_CACHE,
        help="where the throwaway venvs live"
        f" (default {DEFAULT_CACHE.relative_to(REPO)})",
    )
    args = parser.parse_args()
    if args.quick:
        args.scale, args.repeat = args.scale * 0.25, 1
    started = time.perf_counter()
    cases = [
        case
        for case in scenarios(args.scale)
        if not args.column or any(text in case.label for text in args.column)
    ]
    print(
        "Run to completion with a breakpoint that never stops: wall time as a"
        f" ratio to plain python in the same run; {os.cpu_count()} CPUs.\n"
    )
    for spec in args.python or DEFAULT_PYTHONS:
        try:
            python, version = prepare(
                spec, args.cache.resolve(), with_debugpy=args.debugpy
            )
            description = describe(python)
        except Failed as exc:
            print(f"## Python {spec}: cannot be measured\n\n{exc}\n", flush=True)
            continue
        with tempfile.TemporaryDirectory(prefix="dapper-trio-overhead-") as home:
            target = Target(python, version, home)
            results = bench(
                target,
                description,
                cases,
                args.repeat,
                with_debugpy=args.debugpy,
                only=args.only,
                budget=args.budget,
            )
        print("\n".join(render(results, args.repeat, args.budget)) + "\n", flush=True)
    if args.quick:
        print(
            "--quick: one run per cell and small workloads, on which start-up"
            " weighs more: a smoke test, not a measurement.\n"
        )
    print(f"(took {time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()

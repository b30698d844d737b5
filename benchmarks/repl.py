"""How the REPL feels: dapper-trio against stdlib pdb and pdbpp, at a real terminal.

Run ``python benchmarks/repl.py`` (a few minutes) or ``--quick`` (under a
minute); ``--python PATH`` runs every contender with another interpreter
(which needs dapper-trio, trio and pdbpp installed).

Every program runs on a pty driven by pexpect, as a person at a terminal
would drive it, and three things are measured:

1. time from launch to the first prompt, for ``python -m pdb`` (the real
   stdlib pdb: pdbpp's hijack is switched off with ``PDBPP_HIJACK_PDB=0``
   and the prompt is checked to be ``(Pdb) ``), ``python -m pdbpp`` and
   ``dapper-trio run`` in-process and in its default subprocess mode, all
   stopping at the first line of the same trio program.  The baseline is
   ``python -c 'import trio, pdbpp'`` run to completion: no trio-aware pdbpp
   REPL can start faster.  (stdlib pdb stops before the program imports
   trio, so it is no floor.)
2. milliseconds per ``next`` round trip: send ``n``, wait for the prompt,
   repeat, on a loop at module level and on a loop inside a trio task.  The
   baseline is a bare pty round trip: a tiny program that reads a line and
   prints a prompt.
3. wall time (and CPU time of the whole process tree) to run a program to
   completion without stopping (``-c``) with one breakpoint set in a module
   the program imports but whose breakpoint line never runs, for a trio
   workload (tasks passing items through memory channels) and a CPU workload
   (Python function calls), under stdlib pdb and both modes of dapper-trio.
   The baseline is the same program under plain ``python``; the workloads are
   sized (calibrated at the start) so that it takes about 1.2 s (0.3 s with
   ``--quick``).

Every contender gets the same environment: ``TERM=dumb``, ``PDBPP_COLORS=0``,
an empty temporary ``HOME`` and working directory (no ``.pdbrc``, no
``.pdbrc.py``), and none of the variables in ``UNSET`` (``PYTHONBREAKPOINT``,
``PYTHONSTARTUP``, ``PYTHONUNBUFFERED``...).  Each figure is the
median of several runs; the contenders of a table run in turn, in a rotated
order each round, so all of them see the same noise.  Only ratios to a
baseline measured in the same run mean anything on a shared machine.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pexpect

WORKLOADS = Path(__file__).resolve().parent / "workloads"
PDB_PROMPT = "(Pdb) "
PDBPP_PROMPT = "(Pdb++) "
PDB_FINISHED = "The program finished and will be restarted"
DONE = "workload done:"
#: Variables a person's terminal would not have, or that change what is
#: measured (PYTHONUNBUFFERED: a write per print() item instead of per line).
UNSET = (
    "PDBPP_HIJACK_PDB",
    "PYTHONBREAKPOINT",
    "PYTHONDEVMODE",
    "PYTHONINSPECT",
    "PYTHONPROFILEIMPORTTIME",
    "PYTHONSTARTUP",
    "PYTHONTRACEMALLOC",
    "PYTHONUNBUFFERED",
    "PYTHONVERBOSE",
    "PYTHONWARNINGS",
)
#: Targets from the issue.
STARTUP_TARGET = {"dapper-trio in-process": 1.3, "dapper-trio subprocess": 2.0}


@dataclass(frozen=True)
class Plan:
    startup_rounds: int
    step_rounds: int
    steps: int
    completion_rounds: int
    workload_seconds: float  # what plain python should take on each workload


FULL = Plan(
    startup_rounds=9,
    step_rounds=4,
    steps=500,
    completion_rounds=3,
    workload_seconds=1.2,
)
QUICK = Plan(
    startup_rounds=3,
    step_rounds=1,
    steps=100,
    completion_rounds=1,
    workload_seconds=0.3,
)


def _children_cpu() -> float:
    """CPU seconds of every child this process has reaped, and their children.

    Each run is reaped before the next starts, so the difference across one
    run is that run's process tree (a supervisor reaps its debuggee).
    """
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def cpu_seconds(pids: Sequence[int]) -> float | None:
    """CPU time used so far by the processes *pids* (all threads), if readable.

    Reads each process's CPU-time clock (clock_getcpuclockid's clock id, as
    Linux builds it), which counts nanoseconds rather than clock ticks.
    """
    if not sys.platform.startswith("linux"):
        return None
    total = 0.0
    for pid in pids:
        try:
            total += time.clock_gettime(((~pid) << 3) | 2)
        except OSError:
            return None
    return total


def line_of(path: Path, mark: str) -> int:
    """The number of the line ending in ``# mark: <mark>`` in *path*."""
    needle = f"# mark: {mark}"
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if line.rstrip().endswith(needle):
            return number
    raise LookupError(f"no line marked {mark!r} in {path}")


# -- running one program on a pty ---------------------------------------------------


class Failed(Exception):
    """A contender did not behave as the benchmark expects."""


class Session:
    """One command on a pty; every wait is bounded by *timeout*."""

    def __init__(
        self, argv: Sequence[str], env: dict[str, str], cwd: str, timeout: float
    ) -> None:
        self.argv = list(argv)
        self.timeout = timeout
        self.output: list[str] = []
        self._children_cpu = _children_cpu()
        self.started = time.perf_counter()
        self.child = pexpect.spawn(
            argv[0],
            list(argv[1:]),
            env=env,
            cwd=cwd,
            encoding="utf-8",
            codec_errors="replace",
            timeout=timeout,
            dimensions=(50, 160),
        )
        # pexpect sleeps 50 ms before every send and 100 ms after closing a
        # pty by default; neither belongs in a measurement.
        self.child.delaybeforesend = None
        self.child.ptyproc.delayafterclose = 0.0

    def expect(self, patterns: list[str] | list[object]) -> int:
        """Wait for one of *patterns* (exact strings or pexpect.EOF)."""
        try:
            index: int = self.child.expect_exact(patterns, timeout=self.timeout)
        except pexpect.TIMEOUT:
            raise self.failure(f"timed out waiting for {patterns!r}") from None
        except pexpect.EOF:
            raise self.failure(f"exited while waiting for {patterns!r}") from None
        self.output.append(self.child.before)
        if isinstance(self.child.after, str):
            self.output.append(self.child.after)
        return index

    def prompt(self, prompt: str) -> float:
        """Wait for the first prompt, check it is *prompt*; seconds since spawn."""
        index = self.expect([PDB_PROMPT, PDBPP_PROMPT])
        elapsed = time.perf_counter() - self.started
        found = (PDB_PROMPT, PDBPP_PROMPT)[index]
        if found != prompt:
            raise self.failure(f"the prompt is {found!r}, expected {prompt!r}")
        return elapsed

    def end(self) -> float:
        """Wait for the program to close the terminal; seconds since spawn."""
        self.expect([pexpect.EOF])
        elapsed = time.perf_counter() - self.started
        self.reap()
        return elapsed

    def quit(self) -> None:
        """Quit the debugger at its prompt and wait for the process to end."""
        self.child.send("q\n")
        self.end()

    def reap(self) -> None:
        deadline = time.monotonic() + self.timeout
        while self.child.isalive():
            if time.monotonic() > deadline:
                raise self.failure("closed its terminal but did not exit")
            time.sleep(0.002)
        self.child.close()

    def cpu_used(self) -> float:
        """CPU seconds of the whole process tree, once it has been reaped."""
        return _children_cpu() - self._children_cpu

    def processes(self) -> list[int]:
        """The child and its descendants (Linux: from /proc; else just the child)."""
        children: dict[int, list[int]] = {}
        try:
            entries = os.listdir("/proc")
        except OSError:
            return [self.child.pid]
        for entry in entries:
            if not entry.isdigit():
                continue
            try:
                stat = Path("/proc", entry, "stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rpartition(")")[2].split()[1])
            children.setdefault(ppid, []).append(int(entry))
        found, todo = [], [self.child.pid]
        while todo:
            pid = todo.pop()
            found.append(pid)
            todo += children.get(pid, [])
        return found

    def text(self) -> str:
        return "".join(self.output)

    def failure(self, what: str) -> Failed:
        tail = (self.text() + str(self.child.before or ""))[-1500:]
        return Failed(f"{' '.join(self.argv)}: {what}; output ends:\n{tail}")

    def close(self) -> None:
        """Kill whatever is still running (SIGHUP, SIGINT, then SIGKILL)."""
        if not self.child.closed:
            self.child.close(force=True)


# -- contenders -------------------------------------------------------------------


@dataclass(frozen=True)
class Debugger:
    """How to run a script under one debugger (or none)."""

    name: str
    kind: str  # "python", "pdb", "pdbpp", "in-process", "subprocess"

    @property
    def prompt(self) -> str:
        return PDB_PROMPT if self.kind == "pdb" else PDBPP_PROMPT

    def env(self, base: dict[str, str]) -> dict[str, str]:
        if self.kind == "pdb":
            return {**base, "PDBPP_HIJACK_PDB": "0"}
        return base

    def argv(
        self,
        python: str,
        script: Path,
        args: Sequence[str] = (),
        *,
        breakpoints: Sequence[str] = (),
        stop_on_entry: bool = True,
    ) -> list[str]:
        if self.kind == "python":
            return [python, str(script), *args]
        if self.kind in ("pdb", "pdbpp"):
            commands = [f"b {spec}" for spec in breakpoints]
            if not stop_on_entry:
                commands.append("c")
            options = [part for command in commands for part in ("-c", command)]
            return [python, "-m", self.kind, *options, str(script), *args]
        options = ["--in-process"] if self.kind == "in-process" else []
        if not stop_on_entry:
            options.append("-c")
        for spec in breakpoints:
            options += ["-b", spec]
        return [python, "-m", "dapper_trio", "run", *options, str(script), *args]


PLAIN = Debugger("python", "python")
PDB = Debugger("stdlib pdb", "pdb")
PDBPP = Debugger("pdbpp", "pdbpp")
DT_IN = Debugger("dapper-trio in-process", "in-process")
DT_SUB = Debugger("dapper-trio subprocess", "subprocess")
DEBUGGERS = [PDB, PDBPP, DT_IN, DT_SUB]


@dataclass
class Bench:
    python: str
    plan: Plan
    home: str  # empty HOME and working directory for every contender
    timeout: float = 60.0
    env: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        env = dict(os.environ)
        for name in UNSET:
            env.pop(name, None)
        env.update(
            {"TERM": "dumb", "PDBPP_COLORS": "0", "HOME": self.home, "COLUMNS": "160"}
        )
        self.env = env

    def session(
        self, argv: Sequence[str], env: dict[str, str] | None = None
    ) -> Session:
        return Session(argv, env or self.env, self.home, self.timeout)


def interleaved(
    runs: dict[str, Callable[[], float]], rounds: int, *, warm_up: bool = True
) -> dict[str, float]:
    """Median of each run over *rounds* rounds, one of each per round.

    The order rotates every round, so no contender always follows the same
    one; unless *warm_up* is false, an unrecorded round first fills the page
    cache.
    """
    names = list(runs)
    if warm_up:
        for name in names:
            runs[name]()
    found: dict[str, list[float]] = {name: [] for name in names}
    for index in range(rounds):
        shift = index % len(names)
        for name in names[shift:] + names[:shift]:
            found[name].append(runs[name]())
    return {name: statistics.median(values) for name, values in found.items()}


# -- 1. first prompt -----------------------------------------------------------------

FLOOR = "python -c 'import trio, pdbpp' (floor)"
BARE_PYTHON = "python -c pass"
SUPERVISOR_IMPORTS = "python -c 'import dapper_trio._cli, ._backends'"


def startup(bench: Bench) -> dict[str, float]:
    """Seconds from spawn to the first prompt (or to the end, for the floors)."""
    script = WORKLOADS / "channels.py"

    def to_end(argv: list[str]) -> Callable[[], float]:
        def run() -> float:
            session = bench.session(argv)
            try:
                return session.end()
            finally:
                session.close()

        return run

    def to_prompt(debugger: Debugger) -> Callable[[], float]:
        argv = debugger.argv(bench.python, script, ["1000"])

        def run() -> float:
            session = bench.session(argv, debugger.env(bench.env))
            try:
                elapsed = session.prompt(debugger.prompt)
                session.quit()
                return elapsed
            finally:
                session.close()

        return run

    runs = {
        FLOOR: to_end([bench.python, "-c", "import trio, pdbpp"]),
        BARE_PYTHON: to_end([bench.python, "-c", "pass"]),
        SUPERVISOR_IMPORTS: to_end(
            [bench.python, "-c", "import dapper_trio._cli, dapper_trio._backends"]
        ),
    }
    runs.update({debugger.name: to_prompt(debugger) for debugger in DEBUGGERS})
    return interleaved(runs, bench.plan.startup_rounds)


# -- 2. next round trips -------------------------------------------------------------

BARE_PTY = "bare pty round trip (floor)"
BARE_READLINE = "bare input() with readline"
BARE_PROGRAMS = {
    BARE_PTY: (
        "import sys\n"
        "while True:\n"
        "    sys.stdout.write('(Pdb) '); sys.stdout.flush()\n"
        "    if not sys.stdin.readline(): break\n"
    ),
    BARE_READLINE: (
        "import readline\nwhile True:\n    input('(Pdb) ')\n"  # ends on EOFError
    ),
}


@dataclass(frozen=True)
class StepScenario:
    label: str
    script: Path
    mark: str | None  # where to stop first (None: the first line)


LOOP_LINES = ("-> for number in range(", "-> total += number")
SCENARIOS = [
    StepScenario("loop at module level", WORKLOADS / "loop.py", None),
    StepScenario("loop in a trio task", WORKLOADS / "task_loop.py", "step here"),
]


@dataclass
class StepResult:
    ms: dict[str, float]  # median milliseconds per round trip
    cpu_ms: dict[str, float | None]  # median CPU ms per step of the program's tree
    chars: dict[str, float]  # characters the terminal receives per round trip


def stepping(bench: Bench, scenario: StepScenario) -> StepResult:
    steps = bench.plan.steps
    chars: dict[str, float] = {}
    cpu: dict[str, list[float]] = {}
    expected = (
        None
        if scenario.mark is None
        else f"{scenario.script}:{line_of(scenario.script, scenario.mark)}"
    )

    def drive(name: str, session: Session, prompt: str) -> float:
        for _ in range(10):  # warm up: reach the loop, fill caches
            session.child.send("n\n")
            session.expect([prompt])
        size = 0
        pids = session.processes()
        cpu_started = cpu_seconds(pids)
        started = time.perf_counter()
        for _ in range(steps):
            session.child.send("n\n")
            session.child.expect_exact(prompt)
            size += len(session.child.before) + len(prompt)
        elapsed = time.perf_counter() - started
        cpu_ended = cpu_seconds(pids)
        if cpu_started is not None and cpu_ended is not None:
            cpu.setdefault(name, []).append((cpu_ended - cpu_started) / steps * 1000)
        chars[name] = size / steps
        return elapsed / steps * 1000

    def bare(name: str) -> Callable[[], float]:
        argv = [bench.python, "-c", BARE_PROGRAMS[name]]

        def run() -> float:
            session = bench.session(argv)
            try:
                session.prompt(PDB_PROMPT)
                result = drive(name, session, PDB_PROMPT)
                session.child.sendeof()
                session.end()
                return result
            finally:
                session.close()

        return run

    def debugged(debugger: Debugger) -> Callable[[], float]:
        breakpoints = [] if expected is None else [expected]
        argv = debugger.argv(
            bench.python,
            scenario.script,
            breakpoints=breakpoints,
            stop_on_entry=expected is None,
        )

        def run() -> float:
            session = bench.session(argv, debugger.env(bench.env))
            try:
                session.prompt(debugger.prompt)
                if expected is not None and f"({expected.rpartition(':')[2]})" not in (
                    session.text()
                ):
                    raise session.failure(f"did not stop at {expected}")
                result = drive(debugger.name, session, debugger.prompt)
                last = session.child.before
                if not any(line in last for line in LOOP_LINES):
                    raise session.failure(f"stepping left the loop: {last!r}")
                session.quit()
                return result
            finally:
                session.close()

        return run

    runs = {name: bare(name) for name in BARE_PROGRAMS}
    runs.update({debugger.name: debugged(debugger) for debugger in DEBUGGERS})
    ms = interleaved(runs, bench.plan.step_rounds, warm_up=False)
    cpu_ms = {
        name: statistics.median(cpu[name]) if cpu.get(name) else None for name in ms
    }
    return StepResult(ms, cpu_ms, chars)


# -- 3. run to completion ------------------------------------------------------------


@dataclass(frozen=True)
class Workload:
    label: str
    script: Path
    probe: int  # a size that takes plain python about 0.4 s on top of its start


WORKLOAD_LIST = [
    Workload("trio: tasks and memory channels", WORKLOADS / "channels.py", 8000),
    Workload("CPU: Python function calls", WORKLOADS / "calls.py", 300),
]


def plain_run(
    bench: Bench, workload: Workload, size: int, cpu: list[float] | None = None
) -> float:
    session = bench.session(PLAIN.argv(bench.python, workload.script, [str(size)]))
    try:
        elapsed = session.end()
    finally:
        session.close()
    if DONE not in session.text() or session.child.exitstatus != 0:
        raise session.failure("the workload did not finish cleanly")
    if cpu is not None:
        cpu.append(session.cpu_used())
    return elapsed


def calibrate(bench: Bench, workload: Workload) -> int:
    """The size at which plain python takes about ``plan.workload_seconds``."""
    probe = workload.probe
    times = interleaved(
        {
            "empty": lambda: plain_run(bench, workload, 0),
            "probe": lambda: plain_run(bench, workload, probe),
        },
        3,
    )
    empty, target = times["empty"], bench.plan.workload_seconds
    size, elapsed = probe, times["probe"]
    # Two passes: from the probe, then from a run at the size it suggests
    # (longer, so less at the mercy of noise).  The work itself always gets at
    # least half of the target, should noise make the empty run look that slow.
    for final in (False, True):
        per_unit = max(elapsed - empty, 0.05) / size
        size = max(1, round(max(target - empty, target / 2) / per_unit))
        if not final:
            elapsed = statistics.median(
                [plain_run(bench, workload, size) for _ in range(3)]
            )
    return size


@dataclass
class CompletionResult:
    workload: Workload
    size: int
    wall: dict[str, float]  # median seconds from spawn to the program's end
    cpu: dict[str, float]  # median CPU seconds of the process tree


def completion(bench: Bench, workload: Workload, size: int) -> CompletionResult:
    never = WORKLOADS / "_never.py"
    spec = f"{never}:{line_of(never, 'breakpoint')}"
    args = [str(size)]
    bench_timeout = bench.timeout
    cpu: dict[str, list[float]] = {PLAIN.name: []}

    def debugged(debugger: Debugger) -> Callable[[], float]:
        argv = debugger.argv(
            bench.python,
            workload.script,
            args,
            breakpoints=[spec],
            stop_on_entry=False,
        )

        def run() -> float:
            session = bench.session(argv, debugger.env(bench.env))
            session.timeout = bench_timeout * 5
            try:
                if debugger.kind in ("pdb", "pdbpp"):
                    # pdb restarts a program that ends: its message is the end.
                    index = session.expect([PDB_FINISHED, debugger.prompt])
                    elapsed = time.perf_counter() - session.started
                    if index != 0:
                        raise session.failure("stopped before the program ended")
                    session.expect([debugger.prompt])
                    session.quit()
                else:
                    elapsed = session.end()
                    if session.child.exitstatus != 0:
                        raise session.failure("exited with a failure status")
            finally:
                session.close()
            text = session.text()
            if "Breakpoint 1 at" not in text or DONE not in text:
                raise session.failure("no breakpoint was set or the program failed")
            if debugger.prompt in text.partition(DONE)[0]:
                raise session.failure("stopped before the program ended")
            cpu.setdefault(debugger.name, []).append(session.cpu_used())
            return elapsed

        return run

    runs = {PLAIN.name: lambda: plain_run(bench, workload, size, cpu[PLAIN.name])}
    runs.update(
        {debugger.name: debugged(debugger) for debugger in (PDB, DT_IN, DT_SUB)}
    )
    wall = interleaved(runs, bench.plan.completion_rounds, warm_up=False)
    return CompletionResult(
        workload,
        size,
        wall,
        {name: statistics.median(values) for name, values in cpu.items()},
    )


# -- report --------------------------------------------------------------------------


def versions(python: str) -> str:
    """What runs: the interpreter, trio, pdbpp and dapper-trio (and its commit)."""
    code = (
        "import os, sys, trio, pdbpp_utils, dapper_trio\n"
        "print(sys.version.split()[0], sys.implementation.name, trio.__version__,"
        " pdbpp_utils.__version__, dapper_trio.__version__,"
        " os.path.dirname(dapper_trio.__file__))"
    )
    try:
        found = subprocess.run(
            [python, "-c", code], capture_output=True, text=True, timeout=60
        )
    except OSError as exc:
        sys.exit(f"repl.py: cannot run {python}: {exc}")
    if found.returncode != 0:
        sys.exit(
            f"repl.py: {python} needs trio, pdbpp and dapper-trio installed:\n"
            + found.stderr.strip()
        )
    version, implementation, trio_version, pdbpp_version, ours, where = (
        found.stdout.split(maxsplit=5)
    )
    return (
        f"Python {version} ({implementation}, {python}), trio {trio_version},"
        f" pdbpp {pdbpp_version}, dapper-trio {ours}{source_revision(where.strip())};"
        f" {os.cpu_count()} CPUs"
    )


def source_revision(package: str) -> str:
    """Where a git checkout is: " at COMMIT", plus "+changes" if modified."""
    try:
        head = subprocess.run(
            ["git", "-C", package, "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        dirty = subprocess.run(
            ["git", "-C", package, "status", "--porcelain", "--", "."],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    if head.returncode != 0:
        return ""
    return f" at {head.stdout.strip()}" + ("+changes" if dirty.stdout.strip() else "")


def verdict(met: bool) -> str:
    return "MET" if met else "MISSED"


def render_startup(found: dict[str, float], plan: Plan) -> list[str]:
    floor = found[FLOOR]
    lines = [
        "## 1. Launch to first prompt (stopping at line 1 of a trio program)",
        "",
        "| contender | median ms | x floor |",
        "|---|---:|---:|",
    ]
    lines += [
        f"| {name} | {value * 1000:.0f} | {value / floor:.2f} |"
        for name, value in found.items()
    ]
    lines += [
        "",
        f"Median of {plan.startup_rounds} interleaved runs.  floor: the imports any"
        " trio-aware pdbpp REPL needs, run to completion (stdlib pdb stops before"
        " the program imports trio).  The `python -c` rows after it are"
        " references, run to completion: the interpreter alone, and what the"
        " supervisor of subprocess mode imports before it starts the debuggee.",
    ]
    for name, target in STARTUP_TARGET.items():
        ratio = found[name] / floor
        lines.append(
            f"Target: {name} first prompt <= {target}x floor: {ratio:.2f}x -"
            f" {verdict(ratio <= target)}"
            + ("" if ratio <= target else f" by {ratio / target - 1:.1%}")
        )
    return lines


def render_steps(
    results: list[tuple[StepScenario, StepResult]], plan: Plan
) -> list[str]:
    lines = [f"## 2. `next` round trip ({plan.steps} steps through the pty)"]
    for scenario, result in results:
        floor = result.ms[BARE_PTY]
        reference = result.ms[PDBPP.name]
        lines += [
            "",
            f"### {scenario.label} ({scenario.script.name})",
            "",
            "| contender | median ms/step | x floor | x pdbpp | CPU ms/step"
            " | chars/step |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for name, value in result.ms.items():
            cpu = result.cpu_ms[name]
            lines.append(
                f"| {name} | {value:.3f} | {value / floor:.2f}"
                f" | {value / reference:.2f}"
                f" | {'n/a' if cpu is None else f'{cpu:.3f}'}"
                f" | {result.chars[name]:.0f} |"
            )
    lines += [
        "",
        f"Median of {plan.step_rounds} interleaved sessions of {plan.steps} steps"
        " (after 10 unrecorded ones).  floor: a program that reads a line and"
        " writes a prompt.  The readline row is the same with input() and GNU"
        " readline: with TERM=dumb pyrepl declines the terminal and every pdb here"
        " reads commands with input() and GNU readline.",
        "CPU ms/step: CPU time of the program's whole process tree (supervisor,"
        " debuggee and its threads) per step, less noisy than the wall time.",
        "chars/step: what the terminal receives per step (echo, location, prompt)."
        "  dapper-trio adds its header line to every stop and pdbpp's"
        " 'N frames hidden' line for its own frames: default output, left on.",
    ]
    for scenario, result in results:
        for label, found in (("wall", result.ms), ("CPU", result.cpu_ms)):
            reference = found[PDBPP.name]
            for debugger in (DT_IN, DT_SUB):
                value = found[debugger.name]
                if value is None or reference is None:
                    continue
                ratio = value / reference
                lines.append(
                    f"Target ({scenario.label}, {label} time): {debugger.name} per"
                    f" step <= pdbpp's: {ratio:.2f}x pdbpp - {verdict(ratio <= 1.0)}"
                    + ("" if ratio <= 1.0 else f" by {ratio - 1:.0%}")
                )
    return lines


def render_completion(results: list[CompletionResult], plan: Plan) -> list[str]:
    lines = ["## 3. Run to completion, one breakpoint that never hits (`-c`)"]
    for result in results:
        wall, cpu = result.wall, result.cpu
        lines += [
            "",
            f"### {result.workload.label} ({result.workload.script.name}"
            f" {result.size})",
            "",
            "| contender | median wall s | x python | median CPU s | CPU x python |",
            "|---|---:|---:|---:|---:|",
        ]
        lines += [
            f"| {name} | {wall[name]:.2f} | {wall[name] / wall[PLAIN.name]:.2f}"
            f" | {cpu[name]:.2f} | {cpu[name] / cpu[PLAIN.name]:.2f} |"
            for name in wall
        ]
    lines += [
        "",
        f"Median of {plan.completion_rounds} interleaved runs.  wall: from spawn to"
        " the program's end (for pdb: to its 'The program finished' message).  CPU:"
        " user+system time of the whole process tree (for pdb: including its"
        " restart to line 1 and quitting), which other load on the machine"
        " disturbs less than wall time.",
        "stdlib pdb: `python -m pdb -c 'b FILE:LINE' -c c`; dapper-trio:"
        " `dapper-trio run -c -b FILE:LINE`.",
    ]
    for result in results:
        for label, found in (("wall", result.wall), ("CPU", result.cpu)):
            pdb_overhead = found[PDB.name] / found[PLAIN.name] - 1
            for debugger in (DT_IN, DT_SUB):
                overhead = found[debugger.name] / found[PLAIN.name] - 1
                met = overhead <= pdb_overhead
                lines.append(
                    f"Target ({result.workload.label}, {label} time):"
                    f" {debugger.name} overhead <= stdlib pdb's: {overhead:+.0%}"
                    f" against {pdb_overhead:+.0%} - {verdict(met)}"
                    + (
                        ""
                        if met or pdb_overhead <= 0
                        else f" by {overhead / pdb_overhead - 1:.1%} of pdb's overhead"
                    )
                )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer, shorter runs")
    parser.add_argument(
        "--python",
        default=sys.executable,
        help="the interpreter every contender runs with (default: this one)",
    )
    args = parser.parse_args()
    plan = QUICK if args.quick else FULL
    python = shutil.which(args.python) or args.python
    started = time.perf_counter()
    print(versions(python))
    with tempfile.TemporaryDirectory(prefix="dapper-trio-repl-bench-") as home:
        bench = Bench(python, plan, home)
        inherited = " ".join(
            f"{name}={value}"
            for name, value in sorted(bench.env.items())
            if name.startswith("PYTHON")
        )
        print(
            "Environment: TERM=dumb PDBPP_COLORS=0, empty HOME and cwd, a 50x160 pty"
            " driven by pexpect"
            + (f"; inherited: {inherited}" if inherited else "")
            + ".\n"
        )
        print("\n".join(render_startup(startup(bench), plan)), flush=True)
        print()
        steps = [(scenario, stepping(bench, scenario)) for scenario in SCENARIOS]
        print("\n".join(render_steps(steps, plan)), flush=True)
        print()
        results = []
        for workload in WORKLOAD_LIST:
            size = calibrate(bench, workload)
            results.append(completion(bench, workload, size))
        print("\n".join(render_completion(results, plan)))
    if args.quick:
        print(
            "\n--quick: few runs per figure and small workloads, on which start-up"
            " weighs more: a smoke test, not a measurement."
        )
    print(f"\n(took {time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()

"""DAP adapters head to head: ``dapper-trio dap`` against debugpy, one client.

Run ``python benchmarks/dap.py`` (a few minutes, plus a few the first time,
which builds the throwaway venvs of ``overhead.py`` in ``benchmarks/.venvs``
and reuses them after) or ``--quick`` (a smoke run); ``--python 3.13``
(repeatable; default 3.11 and 3.12) picks the interpreters, ``--repeat``
how many runs each cell is the best of, ``--steps`` how many ``next``
requests a stepping run sends, ``--no-debugpy`` leaves debugpy out.

Every contender is an adapter speaking DAP on its stdin and stdout, driven by
the same client (``dap_client.py``) in the same way an editor drives it:
initialize, launch, setBreakpoints, configurationDone, then what the column
measures.  The columns:

1. *start -> stop*: seconds from starting the adapter to the first
   ``stopped`` event, for a breakpoint on the first line of a trio task
   (``workloads/task_loop.py``): the adapter's start-up, the launch
   sequence, starting the program, the debugger and trio, and reaching the
   breakpoint.  (Until 2026-12-02 this column started at the ``launch``
   request; dapper-trio's adapter now answers ``initialize`` before it has
   finished starting, so that no longer measured the same thing.)
2. *next, trio task* and *next, module loop*: milliseconds per ``next``
   round trip -- the request, its response and the next ``stopped`` event --
   averaged over ``--steps`` steps (default 200), from the breakpoint on,
   in a loop inside a trio task (``task_loop.py``) and at module level
   (``loop.py``).
3. *cold-file bp*: the wall time of a run to completion with a breakpoint in
   a file the program imports but never runs (``workloads/_never.py``), as a
   ratio to plain ``python workload.py`` measured in the same run, for the
   CPU workload (``calls.py``) and the trio one (``channels.py``), sized as
   in ``overhead.py``; timed from starting the adapter to its ``terminated``
   event, as there (its code does the timing).  The same runs in CPU time
   (every process of the run) are given under the table: on a busy machine
   they move far less than wall time.
4. *output, 20 MB*: the same for a program that prints 200,000 lines of
   100 characters (``workloads/output.py``), which every adapter sends to
   the client as ``output`` events; plain python writes them to a pty,
   as at a terminal.  What it measures is how fast output gets through,
   with dapper-trio's bounds on it (``docs/editors.md``, "Program
   output").

The rows: plain python (the baseline of column 3); debugpy 1.8
(``python -m debugpy.adapter``); ``dapper-trio dap`` (the program in a child
process, as by default: the spare debuggee forked at the adapter's start);
the same with ``"python"`` named in ``launch`` (a fresh interpreter, as for
a launch whose ``env`` sets a variable read at start-up); ``dapper-trio
dap`` with ``"inProcess": true`` (the program in a thread of the adapter's
process).  Under the table, each
dapper-trio row is compared with debugpy: the target is to be no slower on
any column.

Each cell is the best of ``--repeat`` runs (default 3), the contenders taking
turns in a rotated order in each round, so all of them see the same noise.
Only ratios mean much on a shared machine.  A cell says FAILED, with the
reason under the table, if the adapter did not behave: a breakpoint not
verified, a step that never stopped, a run that did not print the
workload's "workload done:" line or ended with a status other than 0.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import overhead
from dap_client import Adapter, Breakpoint, DapError, stop_and_step
from overhead import (
    BASELINE,
    DEFAULT_CACHE,
    DEFAULT_PYTHONS,
    REPO,
    TIMES,
    WORKLOADS,
    Contender,
    Failed,
    Target,
)

TASK_LOOP = WORKLOADS / "task_loop.py"
LOOP = WORKLOADS / "loop.py"
OUTPUT = WORKLOADS / "output.py"

DEBUGPY = next(c for c in overhead.CONTENDERS if c.needs_debugpy)
DAPPER = Contender("dapper-trio dap", "dap", adapter=("-m", "dapper_trio", "dap"))
DAPPER_IN_PROCESS = Contender(
    "dapper-trio dap, inProcess",
    "dap",
    adapter=("-m", "dapper_trio", "dap"),
    launch=lambda python: {"inProcess": True},
)
# A launch that names its interpreter (or sets a variable the interpreter
# reads at start-up) gets a fresh one instead of the adapter's spare.
DAPPER_FRESH = Contender(
    "dapper-trio dap, fresh interpreter",
    "dap",
    adapter=("-m", "dapper_trio", "dap"),
    launch=lambda python: {"python": [python]},
)
OURS = [DAPPER, DAPPER_FRESH, DAPPER_IN_PROCESS]
CONTENDERS = [DEBUGPY, *OURS]

LAUNCH = "start -> stop"
NEXT_TRIO = "next, trio task"
NEXT_MODULE = "next, module loop"
COLD_CPU = "cold-file bp, CPU"
COLD_TRIO = "cold-file bp, trio"
OUTPUT_COLUMN = "output, 20 MB"
#: The columns timed as a ratio to plain python.
RUNS = (COLD_CPU, COLD_TRIO, OUTPUT_COLUMN)
COLUMNS = [LAUNCH, NEXT_TRIO, NEXT_MODULE, *RUNS]


def progress(message: str) -> None:
    print(f"[dap] {message}", file=sys.stderr, flush=True)


@dataclass
class Results:
    description: str
    contenders: list[Contender]
    unavailable: set[str]
    #: (row, column) -> the value of each run: seconds, or ms per step
    values: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    #: (row, cold-file column) -> CPU seconds of each run (every process)
    cpu: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    failures: dict[tuple[str, str], str] = field(default_factory=dict)

    def best(self, row: str, column: str) -> float | None:
        found = self.values.get((row, column))
        return min(found) if found else None


def adapter_of(contender: Contender, target: Target) -> Adapter:
    return Adapter(
        contender.name,
        [target.python, *contender.adapter],
        contender.launch(target.python) if contender.launch else {},
    )


def stepping(
    contender: Contender, target: Target, script: Path, line: int, steps: int
) -> tuple[float, float]:
    """(seconds from launch to the stop, mean ms per next) of one run."""
    try:
        run = stop_and_step(
            adapter_of(contender, target),
            script,
            [],
            Breakpoint(script, line),
            steps,
            env=target.env_for(contender),
            cwd=target.home,
            timeout=120.0,
        )
    except DapError as exc:
        raise Failed(str(exc)) from None
    if run.lines[0] != line:
        raise Failed(f"stopped at line {run.lines[0]}, not {line}")
    return run.to_first_stop, statistics.fmean(run.steps) * 1000


def bench(
    target: Target,
    description: str,
    repeat: int,
    steps: int,
    scale: float,
    *,
    with_debugpy: bool,
) -> Results:
    contenders = [BASELINE, *CONTENDERS]
    results = Results(
        description, contenders, set() if with_debugpy else {DEBUGPY.name}
    )
    # overhead.py's cold-file scenarios, sized as there.
    by_label = {scenario.label: scenario for scenario in overhead.scenarios(scale)}
    cold = {
        COLD_CPU: by_label["CPU, cold-file bp"],
        COLD_TRIO: by_label["trio, cold-file bp"],
        OUTPUT_COLUMN: overhead.Scenario(
            OUTPUT_COLUMN,
            OUTPUT,
            max(10, round(200_000 * scale)),
            by_label["CPU, cold-file bp"].breakpoint,
        ),
    }
    task_line = overhead.line_of(TASK_LOOP, "# mark: step here")
    module_line = overhead.line_of(LOOP, "total = 0")
    timeouts = {}
    for column, scenario in cold.items():  # warm the caches, check the workloads
        try:
            seconds = overhead.timed_run(BASELINE, target, scenario, 120.0)
        except Failed as exc:
            results.failures[BASELINE.name, column] = str(exc)
            continue
        timeouts[column] = 60.0 + 100.0 * seconds
    active = [c for c in CONTENDERS if c.name not in results.unavailable]

    def record(row: str, column: str, measure: Callable[[], float]) -> None:
        key = (row, column)
        if key in results.failures:
            return
        try:
            value = measure()
        except Failed as exc:
            results.failures[key] = str(exc)
            progress(f"{row} | {column}: FAILED")
            return
        results.values.setdefault(key, []).append(value)

    for round_index in range(repeat):
        shift = round_index % len(active)
        order = active[shift:] + active[:shift]
        for contender in order:
            try:
                first, per_step = stepping(
                    contender, target, TASK_LOOP, task_line, steps
                )
            except Failed as exc:
                results.failures[contender.name, LAUNCH] = str(exc)
                results.failures[contender.name, NEXT_TRIO] = str(exc)
            else:
                record(contender.name, LAUNCH, lambda first=first: first)
                record(contender.name, NEXT_TRIO, lambda value=per_step: value)
            record(
                contender.name,
                NEXT_MODULE,
                lambda contender=contender: stepping(
                    contender, target, LOOP, module_line, steps
                )[1],
            )
            progress(
                f"round {round_index + 1}/{repeat} {contender.name}: stepping done"
            )
        for column, scenario in cold.items():
            if column not in timeouts:
                continue
            for contender in [BASELINE, *order]:
                before = overhead.children_cpu()
                record(
                    contender.name,
                    column,
                    lambda contender=contender, scenario=scenario, column=column: (
                        overhead.timed_run(
                            contender, target, scenario, timeouts[column]
                        )
                    ),
                )
                results.cpu.setdefault((contender.name, column), []).append(
                    overhead.children_cpu() - before
                )
            progress(f"round {round_index + 1}/{repeat} {column} done")
    return results


def cell(results: Results, row: str, column: str, notes: list[str]) -> str:
    key = (row, column)
    if row in results.unavailable:
        return "skipped"
    if key in results.failures:
        notes.append(f"{row} | {column}: {results.failures[key]}")
        return f"FAILED [{len(notes)}]"
    value = results.best(row, column)
    if value is None:
        return "" if row == BASELINE.name and column not in RUNS else "n/a"
    if column == LAUNCH:
        return f"{value:.3f} s"
    if column in (NEXT_TRIO, NEXT_MODULE):
        return f"{value:.2f} ms"
    base = results.best(BASELINE.name, column)
    if row == BASELINE.name:
        return f"1.00{TIMES} ({value:.2f} s)"
    return f"{value / base:.2f}{TIMES}" if base else "n/a (no baseline)"


def cpu_ratio(results: Results, row: str, column: str) -> str:
    base = results.cpu.get((BASELINE.name, column))
    found = results.cpu.get((row, column))
    if not base or not found or (row, column) in results.failures:
        return "n/a"
    return f"{min(found) / min(base):.2f}{TIMES}"


def render(results: Results, repeat: int, steps: int) -> list[str]:
    lines = [
        f"## {results.description}",
        "",
        "| contender | " + " | ".join(COLUMNS) + " |",
        "|---|" + "---:|" * len(COLUMNS),
    ]
    notes: list[str] = []
    for contender in results.contenders:
        cells = [cell(results, contender.name, column, notes) for column in COLUMNS]
        lines.append(f"| {contender.name} | " + " | ".join(cells) + " |")
    lines += [
        "",
        f"Best of {repeat} runs; next: the mean of {steps} steps of a run."
        " Cold-file bp and output: wall time as a ratio to plain python (its time"
        " beside it);"
        " in CPU time (user + system, every process of the run; steadier on a"
        " busy machine): "
        + ", ".join(
            f"{row} {column} {cpu_ratio(results, row, column)}"
            for row in (contender.name for contender in OURS)
            for column in RUNS
        )
        + " (debugpy's processes are not all reaped by their parents, so"
        " their CPU time cannot be counted this way).",
    ]
    if DEBUGPY.name not in results.unavailable:
        lines.append("")
        for contender in OURS:
            verdicts = []
            for column in COLUMNS:
                ours = results.best(contender.name, column)
                theirs = results.best(DEBUGPY.name, column)
                if ours is None or theirs is None:
                    verdicts.append(f"{column}: n/a")
                    continue
                verdict = "faster" if ours < theirs else "NOT FASTER"
                verdicts.append(
                    f"{column} {ours / theirs:.2f}{TIMES} of debugpy's ({verdict})"
                )
            lines.append(f"* {contender.name}: " + "; ".join(verdicts) + ".")
    return lines + overhead.failure_lines(notes)


def main() -> None:
    parser = overhead.new_parser(__doc__.split("\n")[0])
    parser.add_argument(
        "--repeat", type=int, default=3, help="runs per cell, the best is kept"
    )
    parser.add_argument(
        "--steps", type=int, default=200, help="next requests per stepping run"
    )
    parser.add_argument(
        "--scale", type=float, default=1.0, help="multiply cold-file workload sizes"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a smoke run: --repeat 1 --steps 50 --scale 0.25",
    )
    parser.add_argument(
        "--no-debugpy", dest="debugpy", action="store_false", help="leave debugpy out"
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
        args.repeat, args.steps, args.scale = 1, 50, args.scale * 0.25
    started = time.perf_counter()
    print(
        "DAP adapters driven by one client (benchmarks/dap_client.py);"
        f" {os.cpu_count()} CPUs.\n"
    )
    for spec in args.python or DEFAULT_PYTHONS:
        try:
            python, version = overhead.prepare(
                spec, args.cache.resolve(), with_debugpy=args.debugpy
            )
            description = overhead.describe(python)
        except Failed as exc:
            print(f"## Python {spec}: cannot be measured\n\n{exc}\n", flush=True)
            continue
        with tempfile.TemporaryDirectory(prefix="dapper-trio-dap-bench-") as home:
            target = Target(python, version, home)
            results = bench(
                target,
                description,
                args.repeat,
                args.steps,
                args.scale,
                with_debugpy=args.debugpy,
            )
        print("\n".join(render(results, args.repeat, args.steps)) + "\n", flush=True)
    if args.quick:
        print("--quick: one run per cell, small workloads: a smoke test.\n")
    print(f"(took {time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()

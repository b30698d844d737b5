"""Debug mode of actor trees: spawn-to-ready, terminal handoff, 20 breakpoints.

Run ``python benchmarks/tree.py`` (about a minute) or ``--quick``.  Four
tables, each against a baseline measured in the same run (only ratios mean
anything on a shared machine):

1. spawn-to-ready: ``start_actor()`` returning (then ``cancel_actor()``),
   without and with debug mode, against ``trio.run_process([python, "-c",
   "pass"])``;
2. terminal handoff, at a real terminal (pexpect on a pty): with several
   actors queued for the terminal, the time from sending ``c`` in one
   actor's REPL to the next actor's prompt on screen, against a REPL round
   trip in one process (``p 1`` -> prompt);
3. N actors that each hit one breakpoint, the user answering ``c`` at each
   prompt at once: launch to exit, against the same program with
   ``PYTHONBREAKPOINT=0`` (the breakpoints do nothing);
4. what joining a session costs every Python process a debugged program
   starts (the ``sitecustomize`` hook, see ``dapper_trio._tree_join``):
   ``python -c pass`` with the session in its environment, against without.

Target: handoff under 50 ms.  Most of a handoff used to be the next
process importing pdbpp's line editor and building its reader for its
first REPL; it now does that while it waits
(``dapper_trio._actor_debug._prepare_repl``).  The machine's load shows in
every row: compare the handoff with the round trip.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pexpect
import trio

import dapper_trio
from dapper_trio._tree_join import HOOK_DIR, PATH_ENV, SESSION_ENV

WORKLOADS = Path(__file__).resolve().parent / "workloads"
PROMPT = r"\(Pdb\+\+\) "


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONBREAKPOINT", None)
    env.update(TERM="xterm-256color", PDBPP_COLORS="0")
    env.update(extra)
    return env


async def _timed(fn: Callable[[], Awaitable[object]]) -> float:
    started = time.perf_counter()
    await fn()
    return time.perf_counter() - started


async def spawn_times(rounds: int) -> dict[str, list[float]]:
    """Medians' raw samples: run_process(pass), start_actor with/without debug."""
    samples: dict[str, list[float]] = {"pass": [], "actor": [], "actor-debug": []}

    async def run_pass() -> None:
        await trio.run_process([sys.executable, "-c", "pass"])

    async def actor(debug: bool) -> float:
        async with dapper_trio.open_actor_nursery(debug_mode=debug) as an:
            started = time.perf_counter()
            portal = await an.start_actor("bench")
            elapsed = time.perf_counter() - started
            await portal.cancel_actor()
        return elapsed

    for _ in range(rounds):
        samples["pass"].append(await _timed(run_pass))
        samples["actor"].append(await actor(False))
        samples["actor-debug"].append(await actor(True))
    return samples


def _spawn(count: int, **env: str) -> pexpect.spawn:
    child = pexpect.spawn(
        sys.executable,
        [str(WORKLOADS / "tree_race.py"), str(count)],
        env=_env(**env),
        encoding="utf-8",
        timeout=120,
        dimensions=(50, 160),
    )
    child.delaybeforesend = None  # pexpect sleeps 50 ms before each send
    return child


def handoffs(count: int) -> tuple[list[float], list[float]]:
    """(handoff times, ``p 1`` round trips) with *count* actors queued."""
    child = _spawn(count)
    handoff: list[float] = []
    round_trip: list[float] = []
    try:
        child.expect(PROMPT)
        time.sleep(2.0 + 0.1 * count)  # let every other actor queue up
        for i in range(count):
            for _ in range(3):
                started = time.perf_counter()
                child.sendline("p 1")
                child.expect(PROMPT)
                round_trip.append(time.perf_counter() - started)
            started = time.perf_counter()
            child.sendline("c")
            if i < count - 1:
                child.expect(PROMPT)
                handoff.append(time.perf_counter() - started)
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    return handoff, round_trip


def serve_all(count: int, *, breakpoints: bool) -> float:
    """Launch to exit of tree_race.py, answering ``c`` at every prompt."""
    env = {} if breakpoints else {"PYTHONBREAKPOINT": "0"}
    started = time.perf_counter()
    child = _spawn(count, **env)
    try:
        while child.expect([PROMPT, pexpect.EOF]) == 0:
            child.sendline("c")
    finally:
        child.close(force=True)
    return time.perf_counter() - started


def hook_startup(rounds: int) -> tuple[list[float], list[float]]:
    """``python -c pass`` without and with a session in its environment."""
    plain = _env()
    joined = _env(PYTHONPATH=HOOK_DIR)
    joined[SESSION_ENV] = json.dumps({"address": "unix:@nowhere", "token": "0"})
    joined[PATH_ENV] = "1\x1froot"
    samples: tuple[list[float], list[float]] = ([], [])
    for _ in range(rounds):
        for env, into in ((plain, samples[0]), (joined, samples[1])):
            started = time.perf_counter()
            subprocess.run([sys.executable, "-c", "pass"], env=env, check=True)
            into.append(time.perf_counter() - started)
    return samples


def _ms(values: list[float]) -> str:
    return f"{1000 * statistics.median(values):8.1f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer runs")
    args = parser.parse_args()
    rounds = 3 if args.quick else 10
    racers = 20
    print(
        f"Python {sys.version.split()[0]}, trio {trio.__version__},"
        f" {os.cpu_count()} CPUs"
    )

    spawn = trio.run(spawn_times, rounds)
    base = statistics.median(spawn["pass"])
    print(f"\n1. spawn-to-ready (medians of {rounds})\n")
    print("| what | time | ratio |\n|---|---:|---:|")
    for key, label in [
        ("pass", 'trio.run_process([python, "-c", "pass"])'),
        ("actor", "start_actor()"),
        ("actor-debug", "start_actor() in debug mode"),
    ]:
        value = statistics.median(spawn[key])
        print(f"| {label} | {_ms(spawn[key])} | {value / base:5.2f} |")

    handoff, round_trip = handoffs(5 if args.quick else 10)
    print(
        f"\n2. terminal handoff ({len(handoff)} handoffs, {len(round_trip)} round"
        " trips; medians)\n"
    )
    print("| what | time | ratio |\n|---|---:|---:|")
    rt = statistics.median(round_trip)
    print(f"| REPL round trip (p 1) | {_ms(round_trip)} | 1.00 |")
    print(
        f"| handoff: c -> next actor's prompt | {_ms(handoff)} |"
        f" {statistics.median(handoff) / rt:5.2f} |"
    )
    print(f"| handoff, worst | {1000 * max(handoff):8.1f} ms | |")

    totals = [
        serve_all(racers, breakpoints=True) for _ in range(1 if args.quick else 3)
    ]
    plain = [
        serve_all(racers, breakpoints=False) for _ in range(1 if args.quick else 3)
    ]
    print(f"\n3. {racers} actors, one breakpoint each, c at every prompt (medians)\n")
    print("| what | time | ratio |\n|---|---:|---:|")
    print(f"| PYTHONBREAKPOINT=0 (no REPL) | {_ms(plain)} | 1.00 |")
    print(
        f"| {racers} REPLs served | {_ms(totals)} |"
        f" {statistics.median(totals) / statistics.median(plain):5.2f} |"
    )
    extra = (statistics.median(totals) - statistics.median(plain)) / racers
    print(f"| per REPL, over no REPL | {1000 * extra:8.1f} ms | |")

    without, with_hook = hook_startup(10 if args.quick else 30)
    print("\n4. start-up of a Python process a debugged program starts (medians)\n")
    print("| what | time | ratio |\n|---|---:|---:|")
    print(f"| python -c pass | {_ms(without)} | 1.00 |")
    print(
        f"| python -c pass, joining the session | {_ms(with_hook)} |"
        f" {statistics.median(with_hook) / statistics.median(without):5.2f} |"
    )


if __name__ == "__main__":
    main()

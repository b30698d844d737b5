"""Worker pool throughput: dapper-trio against multiprocessing and concurrent.futures.

Run ``python benchmarks/pool.py`` (a few minutes) or ``--quick`` (under a
minute).  For each workload -- 10,000 trivial calls, and 1,000 calls of 1 ms
of CPU work -- with 1 and 4 workers, it measures calls per second of:

* ``dapper_trio.open_worker_pool``: ``await pool.run(fn)``, with recycling
  off (``max_worker_requests=None``, ``max_worker_age=math.inf``) as the
  baselines never replace a worker, and again with every option at its
  default (a worker is recycled after 1000 calls: a process start-up);
* ``concurrent.futures.ProcessPoolExecutor``: ``executor.submit(fn).result()``
  in ``trio.to_thread.run_sync`` (how a trio program uses it);
* ``multiprocessing.Pool``: ``pool.apply_async(fn).get()``, the same way.

Every pool is started (and warmed up with one call per worker) before the
clock starts, with the "spawn" start method for the baselines (forking a
process that runs trio is unsafe, and our workers are spawned too).  The
same 32 concurrent trio tasks make the calls in every case; each figure is
the median of several runs, interleaved so that all see the same noise.
Only the ratios should be quoted.  Target: at least as fast as
``ProcessPoolExecutor`` for trivial calls.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import math
import multiprocessing
import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import trio

import dapper_trio

CALLERS = 32


# -- the work (module level: the workers import it from __main__) ------------


def spin_sync(seconds: float) -> None:
    """Burn CPU for *seconds*."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def noop_sync() -> None:
    """Nothing at all."""


async def spin(seconds: float) -> None:
    """Burn CPU for *seconds* (blocking the worker's loop, as real work does)."""
    spin_sync(seconds)


async def noop() -> None:
    """Nothing at all."""


# -- drivers ----------------------------------------------------------------


async def _drive(calls: int, one_call: Callable[[], Awaitable[object]]) -> float:
    """Make *calls* calls from CALLERS tasks; return calls per second."""
    left = calls

    async def caller() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            await one_call()

    started = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(CALLERS):
            nursery.start_soon(caller)
    return calls / (time.perf_counter() - started)


async def ours(workers: int, calls: int, work: float, **options: Any) -> float:
    async with dapper_trio.open_worker_pool(workers, **options) as pool:
        await pool.wait_ready()
        if work:
            return await _drive(calls, lambda: pool.run(spin, work))
        return await _drive(calls, lambda: pool.run(noop))


async def ours_no_recycling(workers: int, calls: int, work: float) -> float:
    # Like the baselines, which never replace a worker.
    return await ours(
        workers, calls, work, max_worker_requests=None, max_worker_age=math.inf
    )


async def executor(workers: int, calls: int, work: float) -> float:
    context = multiprocessing.get_context("spawn")
    limiter = trio.CapacityLimiter(CALLERS)
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as ex:
        warm = [ex.submit(spin_sync, 0.05) for _ in range(workers)]
        await trio.to_thread.run_sync(lambda: [f.result() for f in warm])

        def call() -> None:
            if work:
                ex.submit(spin_sync, work).result()
            else:
                ex.submit(noop_sync).result()

        return await _drive(
            calls, lambda: trio.to_thread.run_sync(call, limiter=limiter)
        )


async def mp_pool(workers: int, calls: int, work: float) -> float:
    context = multiprocessing.get_context("spawn")
    limiter = trio.CapacityLimiter(CALLERS)
    with context.Pool(workers) as pool:
        warm = [pool.apply_async(spin_sync, (0.05,)) for _ in range(workers)]
        await trio.to_thread.run_sync(lambda: [r.get() for r in warm])

        def call() -> None:
            if work:
                pool.apply_async(spin_sync, (work,)).get()
            else:
                pool.apply_async(noop_sync).get()

        return await _drive(
            calls, lambda: trio.to_thread.run_sync(call, limiter=limiter)
        )


SYSTEMS = {
    "dapper-trio": ours_no_recycling,
    "dapper-trio, defaults": ours,
    "ProcessPoolExecutor": executor,
    "multiprocessing.Pool": mp_pool,
}


async def measure(rounds: int, scale: float) -> list[tuple[str, int, dict[str, float]]]:
    rows = []
    for label, calls, work in [
        ("trivial", 10_000, 0.0),
        ("1 ms CPU", 1_000, 0.001),
    ]:
        calls = max(100, int(calls * scale))
        for workers in (1, 4):
            samples: dict[str, list[float]] = {name: [] for name in SYSTEMS}
            for _ in range(rounds):
                for name, system in SYSTEMS.items():
                    samples[name].append(await system(workers, calls, work))
            medians = {name: statistics.median(s) for name, s in samples.items()}
            rows.append((f"{calls:,} calls, {label}", workers, medians))
            print(f"  done: {calls:,} calls, {label}, {workers} workers", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="one round, fewer calls")
    args = parser.parse_args()
    rounds, scale = (1, 0.3) if args.quick else (3, 1.0)
    print(
        f"Python {sys.version.split()[0]}, trio {trio.__version__},"
        f" {os.cpu_count()} CPUs, {CALLERS} concurrent callers,"
        f" median of {rounds}"
    )
    rows = trio.run(measure, rounds, scale)
    print()
    print(
        "| workload | workers | dapper-trio | ProcessPoolExecutor |"
        " multiprocessing.Pool | ours / PPE | ours / mp.Pool |"
        " dapper-trio, defaults | defaults / PPE |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for label, workers, medians in rows:
        ours_rate = medians["dapper-trio"]
        defaults = medians["dapper-trio, defaults"]
        ppe = medians["ProcessPoolExecutor"]
        mpp = medians["multiprocessing.Pool"]
        print(
            f"| {label} | {workers} | {ours_rate:,.0f} | {ppe:,.0f} | {mpp:,.0f} |"
            f" {ours_rate / ppe:.2f} | {ours_rate / mpp:.2f} | {defaults:,.0f} |"
            f" {defaults / ppe:.2f} |"
        )
    print()
    print(
        "Calls per second.  'dapper-trio' never recycles a worker, like the"
        " baselines; 'dapper-trio, defaults' recycles each worker every 1000"
        " calls (a process start-up each time)."
    )


if __name__ == "__main__":
    main()

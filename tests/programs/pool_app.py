"""A debug-mode worker pool whose worker stops in the REPL twice (see test_pool.py).

First in a background task while the worker is idle: the health checks (every
0.1 s, 0.3 s to answer) and the age limit (1.2 s) must leave it alone until
it leaves the REPL.  Then in a call still running when the pool shuts down:
the shutdown timeout (0.3 s) must wait for it.
"""

import os
import sys

import trio

import dapper_trio

sys.path.insert(0, os.environ["POOL_APP_TESTS"])  # tests/, for pool_fns
import pool_fns

READY = dapper_trio.WorkerState.READY


async def main() -> None:
    async with trio.open_nursery() as outer:
        async with dapper_trio.open_worker_pool(
            1,
            debug_mode=True,
            health_check_interval=0.1,
            health_check_timeout=0.3,
            max_worker_age=1.2,
            shutdown_timeout=0.3,
        ) as pool:
            pid = await pool.run(pool_fns.getpid)
            print(f"worker pid {pid}", flush=True)
            await pool.run(pool_fns.pause_soon, 0.2)

            def first() -> dapper_trio.WorkerInfo:
                return next(info for info in pool.workers() if info.pid == pid)

            while not first().in_debugger:
                await trio.sleep(0.01)
            touched = False
            while first().in_debugger:
                info = first()
                touched |= info.recycle is not None or info.state is not READY
                await trio.sleep(0.01)
            stats = pool.statistics()
            print(
                f"while in the REPL: touched {touched}, health-check failures"
                f" {stats.health_check_failures}, restarts {stats.restarts}",
                flush=True,
            )
            await pool.run(pool_fns.getpid)
            recycles = pool.statistics().recycles["max_age"]
            print(f"after the REPL: recycled for its age {recycles}", flush=True)

            async def last_call() -> None:
                # After "c" it still needs 0.1 s, within shutdown_timeout.
                try:
                    result = await pool.run(pool_fns.pause_in_call, "busy", 0.1)
                except Exception as exc:
                    print("last call failed:", repr(exc), flush=True)
                else:
                    print("last call returned", result, flush=True)

            outer.start_soon(last_call)
            while pool.statistics().calls_in_flight == 0:
                await trio.sleep(0.01)
        print("pool closed", flush=True)


trio.run(main)

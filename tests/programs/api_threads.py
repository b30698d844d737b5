"""Two worker threads hit breakpoint() at the same moment.

Run with PYTHONBREAKPOINT=dapper_trio.set_trace.  Nothing is printed until
both threads are done, so the program's own output never mixes with a REPL.
"""

import threading

import trio

barrier = threading.Barrier(2)


def work(label):
    mine = f"value of {label}"
    barrier.wait(timeout=10)
    breakpoint()  # mark: worker-breakpoint
    return mine


async def runner(label, results):
    results[label] = await trio.to_thread.run_sync(
        work, label, thread_name=f"worker-{label}"
    )


async def main():
    results = {}
    async with trio.open_nursery() as nursery:
        nursery.start_soon(runner, "one", results, name="runner-one")
        nursery.start_soon(runner, "two", results, name="runner-two")
    print("results", sorted(results.values()), flush=True)


trio.run(main)

"""Sync pauses in a trio app run with plain python.

``set_trace`` calls dapper_trio.set_trace() in a sync function a task calls;
``builtin`` uses the builtin breakpoint() (run it with
PYTHONBREAKPOINT=dapper_trio.set_trace) in a task, in a sync function the task
calls and in a worker thread.
"""

import sys

import trio

import dapper_trio


def helper(v):
    w = v + 1
    dapper_trio.set_trace()  # mark: set-trace
    return w


def sync_helper(v):
    w = v + 1
    breakpoint()  # mark: sync-breakpoint
    return w


def in_thread(v):
    w = v * 10
    breakpoint()  # mark: thread-breakpoint
    return w


async def main():
    x = 1
    if sys.argv[1] == "set_trace":
        x = helper(x)
    else:
        breakpoint()  # mark: task-breakpoint
        x = sync_helper(x)
        x = await trio.to_thread.run_sync(in_thread, x, thread_name="api-worker")
    print("values", x, flush=True)


trio.run(main)

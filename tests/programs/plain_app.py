"""A trio app run with plain python that pauses itself."""

import sys

import trio

import dapper_trio


def sync_helper(v):
    breakpoint()  # mark: sync-breakpoint
    return v + 1


def in_thread(v):
    w = v * 10
    breakpoint()  # mark: thread-breakpoint
    return w


async def main():
    x = 41
    with trio.CancelScope() as cs:
        cs.cancel(reason="testing")
        await dapper_trio.breakpoint()  # mark: cancelled-breakpoint
        print("not reached")
    print("cancelled_caught", cs.cancelled_caught)
    if "sync" in sys.argv[1:]:
        x = sync_helper(x)
        x = await trio.to_thread.run_sync(in_thread, x)
    print("values", x, flush=True)
    try:
        await trio.sleep(1000)  # mark: final-sleep
    except BaseException as exc:
        print("got", type(exc).__name__, flush=True)
        raise


trio.run(main)

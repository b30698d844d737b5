"""A program run by ``dapper-trio run`` whose other processes join its session.

``tree_join_app.py SCENARIO``:

* ``subprocess``: start ``tree_join_mid.py`` with ``trio.run_process``; it
  starts ``tree_join_leaf.py`` with ``subprocess.run``, which calls the
  builtin ``breakpoint()`` once this process has made the flag file, just
  before it stops at its own breakpoint.
* ``leaf``: the same, without this process's breakpoint.
* ``own-env``: start ``tree_join_leaf.py`` directly, with an environment of
  its own (``PATH`` and ``TREE_FLAG`` only).
* ``mp-spawn`` / ``mp-fork``: a ``multiprocessing`` child whose target raises.

The flag file is ``TREE_FLAG`` (default: one in the temporary directory,
removed at the end).
"""

import multiprocessing
import os
import sys
import tempfile
from pathlib import Path

import trio

import dapper_trio

HERE = Path(__file__).resolve().parent


def divide(numerator: int) -> float:
    """A multiprocessing target that fails."""
    denominator = numerator - numerator
    return numerator / denominator  # mark: mp-fail


async def main() -> None:
    scenario = sys.argv[1]
    if "TREE_FLAG" not in os.environ:
        default = Path(tempfile.gettempdir(), f"tree_join_app.{os.getpid()}.flag")
        os.environ["TREE_FLAG"] = str(default)
    flag = trio.Path(os.environ["TREE_FLAG"])
    try:
        if scenario in ("subprocess", "leaf"):
            async with trio.open_nursery() as nursery:
                middle = [sys.executable, str(HERE / "tree_join_mid.py")]
                nursery.start_soon(trio.run_process, middle)
                if scenario == "subprocess":
                    print("root pauses", flush=True)
                    await flag.write_text("paused")
                    await dapper_trio.breakpoint()  # mark: root-pause
                else:
                    await flag.write_text("go")
            print("middle done", flush=True)
        elif scenario == "own-env":
            await flag.write_text("go")
            leaf = [sys.executable, str(HERE / "tree_join_leaf.py")]
            env = {"PATH": os.environ["PATH"], "TREE_FLAG": str(flag)}
            await trio.run_process(leaf, env=env)
            print("leaf exit code 0", flush=True)
        elif scenario.startswith("mp-"):
            context = multiprocessing.get_context(scenario[3:])
            process = context.Process(target=divide, args=(7,), name="divider")
            process.start()
            await trio.to_thread.run_sync(process.join)
            print(f"divider exit code {process.exitcode}", flush=True)
        print("root done", flush=True)
    finally:
        await flag.unlink(missing_ok=True)


if __name__ == "__main__":
    trio.run(main)

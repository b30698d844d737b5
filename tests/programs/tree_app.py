"""A debug-mode actor tree; ``tree_app.py SCENARIO [CRASH_REPL]``."""

import functools
import os
import sys

import tree_broken
import tree_fns
import trio

import dapper_trio


async def main() -> None:
    scenario = sys.argv[1]
    policy = sys.argv[2] if len(sys.argv) > 2 else "origin"
    async with dapper_trio.open_actor_nursery(
        debug_mode=True, crash_repl=policy, grace_period=1.0
    ) as an:
        if scenario == "root":
            print("root before", flush=True)
            await dapper_trio.breakpoint()  # mark: root-pause
            print("root after", await an.run_in_actor(tree_fns.pause, "child"))
        elif scenario == "nest":
            depth = int(os.environ.get("TREE_DEPTH", "2"))
            print("result", await an.run_in_actor(tree_fns.nest_pause, depth, "deep"))
        elif scenario == "sync":
            print("result", await an.run_in_actor(tree_fns.pause_sync, "kid"))
        elif scenario == "race":
            count = int(os.environ.get("TREE_RACE", "2"))
            async with trio.open_nursery() as nursery:
                for i in range(count):
                    racer = functools.partial(an.run_in_actor, name=f"racer{i}")
                    nursery.start_soon(racer, tree_fns.pause, f"racer{i}")
            print("all racers done", flush=True)
        elif scenario == "crash":
            depth = int(os.environ.get("TREE_DEPTH", "0"))
            await an.run_in_actor(tree_fns.nest_fail, depth, "boom", name="crasher")
        elif scenario == "half":
            print("result", await an.run_in_actor(tree_broken.work, name="half"))
        elif scenario == "doomed":
            # Once one child is in its REPL, start another, which dies while
            # starting (see tree_site/sitecustomize.py).
            flag = trio.Path(os.environ["TREE_FLAG"])
            async with trio.open_nursery() as nursery:
                nursery.start_soon(
                    an.run_in_actor, tree_fns.pause_with_finally, "survivor", str(flag)
                )
                while not await flag.exists():
                    await trio.sleep(0.02)
                await an.start_actor("doomed")
        elif scenario == "subproc":
            # A child runs a script that stops at breakpoint() (once the flag
            # file exists), while a sibling prints.
            await trio.Path(os.environ["TREE_FLAG"]).write_text("go")
            async with trio.open_nursery() as nursery:
                nursery.start_soon(an.run_in_actor, tree_fns.chatter, "noisy", 20)
                code = await an.run_in_actor(tree_fns.run_script, "tree_join_leaf.py")
            print("leaf exit code", code)
        elif scenario == "chatter":
            async with trio.open_nursery() as nursery:
                nursery.start_soon(an.run_in_actor, tree_fns.pause, "quiet")
                await trio.sleep(1.0)
                nursery.start_soon(an.run_in_actor, tree_fns.chatter, "noisy", 20)
        elif scenario == "cancel":
            # Cancel the call once the child is in its REPL (it makes the flag
            # file just before pausing).
            flag = trio.Path(os.environ["TREE_FLAG"])
            async with trio.open_nursery() as nursery:
                nursery.start_soon(
                    an.run_in_actor, tree_fns.pause_with_finally, "victim", str(flag)
                )
                while not await flag.exists():
                    await trio.sleep(0.02)
                await trio.sleep(0.3)
                nursery.cancel_scope.cancel()
            print("cancel applied", flush=True)
        elif scenario == "ctrl-c":
            portal = await an.start_actor("sleeper")
            print("tree running", flush=True)
            await portal.run(tree_fns.pause_with_finally, "sleeper")
        else:
            raise SystemExit(f"unknown scenario {scenario}")
    print("tree done", flush=True)


trio.run(main)

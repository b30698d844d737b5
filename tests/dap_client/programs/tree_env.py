"""A trio program that prints what it sees of a nested-process tree session.

Under a DAP client there must be none: no ``DAPPER_TRIO_TREE*`` variable, no
tree hook on ``PYTHONPATH``, no ``PYTHONBREAKPOINT`` pointing at dapper-trio.
It prints one line, ``tree: {...}``, with whatever of those it found.
"""

import json
import os

import trio


async def main() -> None:
    found = {
        name: value
        for name, value in os.environ.items()
        if name.startswith("DAPPER_TRIO_TREE")
        or (name == "PYTHONPATH" and "_tree_hook" in value)
        or (name == "PYTHONBREAKPOINT" and value.startswith("dapper_trio"))
    }
    print("tree:", json.dumps(found, sort_keys=True), flush=True)  # mark: print


trio.run(main)

"""A module that cannot be imported in a child actor: it reads ``sys.argv[1]``.

The parent imports it fine (it has arguments); a child actor's ``sys.argv``
has none, so importing it there -- to run ``work`` -- fails half-way through
the child's start.
"""

import sys

SCENARIO = sys.argv[1]  # mark: broken-import


async def work() -> str:
    """Never reached in a child."""
    return SCENARIO

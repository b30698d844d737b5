"""What the worker pool runs in its worker processes (besides the user's calls).

Kept tiny, with nothing to import: a worker imports it on its first health
check.
"""

from __future__ import annotations

import os


async def ping() -> int:
    """The health check: answer at once with this process's pid."""
    return os.getpid()

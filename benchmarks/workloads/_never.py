"""Imported by every workload; the line marked below never runs.

``benchmarks/repl.py`` sets its one breakpoint there, so a debugger has a
breakpoint to check for while the program runs, but never stops.
"""


def never_called() -> str:
    return "unreachable"  # mark: breakpoint

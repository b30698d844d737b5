"""Run one tracing_program function under ScriptedDebugger; print a JSON transcript.

For what tests/test_tracing.py must check in a fresh process: the tracing
backend is chosen once per process (``_tracing.current_tracer``), from
``DAPPER_TRIO_TRACER``.

usage: tracing_runner.py [--take-tool-id] FUNCTION MARK ARG

With ``--take-tool-id`` another tool holds ``sys.monitoring.DEBUGGER_ID``
(as debugpy does on 3.12+) before the debugger starts.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--take-tool-id", action="store_true")
    parser.add_argument("function")
    parser.add_argument("mark")
    parser.add_argument("arg", type=int)
    args = parser.parse_args()
    monitoring = getattr(sys, "monitoring", None)
    if args.take_tool_id and monitoring is not None:
        monitoring.use_tool_id(monitoring.DEBUGGER_ID, "other")

    import tracing_program
    from scripted import ScriptedDebugger, line_of

    from dapper_trio import _tracing

    tracer = _tracing.current_tracer()
    dbg = ScriptedDebugger()
    filename = tracing_program.__file__
    dbg.set_break(filename, line_of(filename, args.mark))
    function = getattr(tracing_program, args.function)
    result = dbg.run(tracing_program.call, function, args.arg, start="continue")
    dbg.clear_all_breaks()
    print(
        json.dumps(
            {
                "tracer": tracer.name,
                "result": result,
                "stops": [[*stop.entry(), stop.reason] for stop in dbg.stops],
            }
        )
    )


if __name__ == "__main__":
    main()

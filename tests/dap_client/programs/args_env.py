"""A plain program launched as a module (``"module": "args_env"``).

It prints one JSON line: its arguments, working directory, the variable
``DAPPER_TRIO_TEST_VALUE`` and ``__name__``; then one line on stderr.
"""

import json
import os
import sys

seen = {
    "argv": sys.argv[1:],
    "cwd": os.getcwd(),
    "value": os.environ.get("DAPPER_TRIO_TEST_VALUE"),
    "name": __name__,
}
print(json.dumps(seen), flush=True)  # mark: print
print("args_env: done", file=sys.stderr, flush=True)

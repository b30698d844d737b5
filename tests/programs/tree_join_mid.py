"""Started by tree_join_app.py: start tree_join_leaf.py with subprocess.run."""

import subprocess
import sys
from pathlib import Path

leaf = Path(__file__).resolve().parent / "tree_join_leaf.py"
result = subprocess.run([sys.executable, str(leaf)], check=False)
print(f"leaf exit code {result.returncode}", flush=True)

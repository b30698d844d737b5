"""Started by tree_join_mid.py: once the root made the flag file, breakpoint()."""

import os
import time
from pathlib import Path

secret = "leaf secret"
flag = Path(os.environ["TREE_FLAG"])
while not flag.exists():  # bounded by the test's time limit
    time.sleep(0.02)
breakpoint()  # mark: leaf-pause
print("leaf after", flush=True)

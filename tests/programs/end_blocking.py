"""A plain sync script, no trio, that blocks in time.sleep."""

import time

try:
    print("blocking", flush=True)
    time.sleep(1000)  # mark: block
finally:
    print("finally ran", flush=True)

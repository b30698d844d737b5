"""Output workload: a chatty program.

``python output.py N`` prints N lines of 100 characters (N = 200,000 is
20 MB) through ``sys.stdout``, then the line every workload ends with.
"""

import sys

import _never  # noqa: F401  (holds the benchmark's breakpoint; never called)


def main(lines: int) -> None:
    body = "x" * 90
    write = sys.stdout.write
    for i in range(lines):
        write(f"{i:08d} {body}\n")
    print(f"workload done: {lines} lines")


if __name__ == "__main__":
    main(int(sys.argv[1]))

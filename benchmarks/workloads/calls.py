"""CPU workload: heavy in Python function calls, no trio at run time.

``python calls.py N`` runs N rounds of a small 2-D simulation written with a
vector class: every loop iteration makes five method and constructor calls of
a few bytecodes each, which is what a settrace debugger pays for.  Prints a
checksum at the end.
"""

import sys

import _never  # noqa: F401  (holds the benchmark's breakpoint; never called)


class Vector:
    __slots__ = ("x", "y")

    def __init__(self, x: float, y: float) -> None:
        self.x = x
        self.y = y

    def add(self, other: "Vector") -> "Vector":
        return Vector(self.x + other.x, self.y + other.y)

    def scaled(self, factor: float) -> "Vector":
        return Vector(self.x * factor, self.y * factor)

    def norm1(self) -> float:
        return abs(self.x) + abs(self.y)


def simulate(steps: int) -> float:
    position = Vector(0.0, 0.0)
    velocity = Vector(1.0, 0.5)
    total = 0.0
    for _ in range(steps):
        velocity = velocity.add(Vector(-position.x * 0.01, -position.y * 0.01))
        position = position.add(velocity.scaled(0.1))
        total += position.norm1()
    return total


def main(rounds: int) -> float:
    return sum(simulate(1000) for _ in range(rounds))


if __name__ == "__main__":
    rounds = int(sys.argv[1])
    print(f"workload done: {rounds} rounds, checksum {main(rounds):.6f}")

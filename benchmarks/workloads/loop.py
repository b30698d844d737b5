"""Stepping workload: a long loop of simple lines at module level.

``next`` alternates between the ``for`` line and its body for as long as
anyone cares to step.
"""

total = 0
for number in range(10_000_000):
    total += number
print(total)

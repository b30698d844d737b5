"""A program without trio: functions to break in, values to change, an
exception raised and caught, and code compiled from a string."""

import linecache

import dapper_trio

GENERATED = """\
def generated(x):
    dapper_trio.set_trace()
    return x * 2
"""


def scale(values: list[int], factor: int) -> list[int]:
    result = [value * factor for value in values]  # mark: scale
    return result


def risky(text: str) -> int:
    try:
        return int(text)  # mark: risky
    except ValueError:
        return -1


def main() -> None:
    values = [1, 2, 3]
    scaled = scale(values, 2)
    print("scaled:", scaled)
    print("risky:", risky("nope"))
    lines = GENERATED.splitlines(keepends=True)
    linecache.cache["<generated>"] = (len(GENERATED), None, lines, "<generated>")
    namespace = {"dapper_trio": dapper_trio}
    exec(compile(GENERATED, "<generated>", "exec"), namespace)
    print("generated:", namespace["generated"](21))


main()

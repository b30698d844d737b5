"""The adapter's pure parts: code lines, hit conditions, variables, arguments."""

from __future__ import annotations

from pathlib import Path

import pytest

from dapper_trio._dap_lines import (
    SourceUnavailable,
    code_lines,
    file_code_lines,
    parse_hit_condition,
)
from dapper_trio._dap_server import Arguments, RequestError, check_breakpoints
from dapper_trio._dap_variables import MAX_VALUE_LENGTH, VariableTable, safe_repr

SOURCE = '''"""doc"""

# a comment
async def f(x):
    y = x + 1

    return y
'''


def test_code_lines_skip_blank_and_comment_lines() -> None:
    """Blank and comment lines hold no code; statements and defs do."""
    assert sorted(code_lines(SOURCE)) == [1, 4, 5, 7]


def test_code_lines_of_broken_or_missing_files(tmp_path: Path) -> None:
    """A file that does not compile or does not exist says why."""
    broken = tmp_path / "broken.py"
    broken.write_text("def (:\n")
    with pytest.raises(SourceUnavailable, match="does not compile"):
        file_code_lines(str(broken))
    with pytest.raises(SourceUnavailable, match="cannot read"):
        file_code_lines(str(tmp_path / "missing.py"))


@pytest.mark.parametrize(
    ("text", "hits", "expected"),
    [
        ("3", [1, 2, 3, 4], [False, False, True, False]),
        ("==2", [2, 3], [True, False]),
        (">= 2", [1, 2, 5], [False, True, True]),
        ("> 2", [2, 3], [False, True]),
        ("<2", [1, 2], [True, False]),
        ("<=2", [2, 3], [True, False]),
        ("%2", [1, 2, 3, 4], [False, True, False, True]),
    ],
)
def test_hit_conditions(text: str, hits: list[int], expected: list[bool]) -> None:
    """Each hit-condition form compares the hit count as debugpy does."""
    test = parse_hit_condition(text)
    assert [test(hit) for hit in hits] == expected


def test_bad_hit_condition_is_refused() -> None:
    """A hit condition that is not a comparison with a number is an error."""
    with pytest.raises(ValueError, match="is not N"):
        parse_hit_condition("sometimes")


def test_check_breakpoints_verifies_code_lines_only(tmp_path: Path) -> None:
    """Only breakpoints on code lines with valid conditions are set."""
    path = tmp_path / "prog.py"
    path.write_text(SOURCE)
    results, specs = check_breakpoints(
        str(path),
        [{"line": 5, "condition": "x > 1"}, {"line": 2}, {"line": 7, "condition": "("}],
        first_id=10,
    )
    assert [(r["id"], r["verified"]) for r in results] == [
        (10, True),
        (11, False),
        (12, False),
    ]
    assert specs == [{"line": 5, "condition": "x > 1"}]


def test_arguments_name_the_culprit() -> None:
    """Missing or wrongly typed arguments raise errors naming them."""
    arguments = Arguments("launch", {"program": 1, "args": ["a", 2], "flag": "yes"})
    with pytest.raises(RequestError, match="'program' must be a string, not a number"):
        arguments.string("program")
    with pytest.raises(RequestError, match="'args' must be an array of strings"):
        arguments.strings("args")
    with pytest.raises(RequestError, match="'flag' must be a boolean, not a string"):
        arguments.boolean("flag")
    with pytest.raises(RequestError, match="missing argument 'cwd'"):
        arguments.string("cwd", required=True)
    with pytest.raises(RequestError, match="'arguments' must be an object"):
        Arguments("next", [1])


def test_variables_page_and_name_children() -> None:
    """Sequences page with start/count; dicts and objects name children."""
    table = VariableTable()

    class Point:
        def __init__(self) -> None:
            self.x, self.y = 1, 2

    scope = table.add_mapping({"items": list(range(10)), "d": {"k": 1}, "p": Point()})
    top = {v["name"]: v for v in table.variables(scope)}
    assert top["items"]["indexedVariables"] == 10
    page = table.variables(top["items"]["variablesReference"], 3, 2)
    assert [(v["name"], v["evaluateName"]) for v in page] == [
        ("3", "items[3]"),
        ("4", "items[4]"),
    ]
    entries = table.variables(top["d"]["variablesReference"])
    assert [(v["name"], v["evaluateName"]) for v in entries] == [("'k'", "d['k']")]
    fields = table.variables(top["p"]["variablesReference"])
    assert [(v["name"], v["evaluateName"]) for v in fields] == [
        ("x", "p.x"),
        ("y", "p.y"),
    ]
    table.clear()
    with pytest.raises(LookupError, match="not valid now"):
        table.variables(scope)


def test_safe_repr_survives_bad_reprs_and_truncates() -> None:
    """A raising repr is described; a long one is cut."""

    class Bad:
        def __repr__(self) -> str:
            raise RuntimeError("nope")

    assert safe_repr(Bad()) == "<repr of Bad failed: RuntimeError: nope>"
    assert len(safe_repr("x" * 5000)) == MAX_VALUE_LENGTH

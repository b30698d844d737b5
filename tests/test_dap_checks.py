"""The adapter's pure parts: code lines, hit conditions, variables, arguments,
function names, completions, the exception filters' rules."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest
import trio

from dapper_trio._dap_completions import complete
from dapper_trio._dap_exceptions import raised_here
from dapper_trio._dap_functions import SearchPath, resolve
from dapper_trio._dap_lines import (
    SourceUnavailable,
    code_lines,
    file_code_lines,
    parse_hit_condition,
)
from dapper_trio._dap_requests import Arguments, RequestError
from dapper_trio._dap_server import check_breakpoints
from dapper_trio._dap_variables import (
    MAX_VALUE_LENGTH,
    NotAssignable,
    VariableTable,
    safe_repr,
)

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
    assert specs == [{"line": 5, "id": 10, "condition": "x > 1"}]


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


# -- function breakpoints ----------------------------------------------------------

FUNCTIONS = '''"""doc"""
import functools


def top(x):
    def inner(y):
        return y
    return inner(x)


class Server:
    def handle(self, request):
        return request

    @functools.lru_cache
    def cached(self):
        return 1
'''


def _search(tmp_path: Path) -> SearchPath:
    main = tmp_path / "prog.py"
    main.write_text(FUNCTIONS)
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "jobs.py").write_text("def run():\n    return 1\n")
    return SearchPath(str(main), (str(tmp_path),), str(tmp_path))


def test_function_names_resolve_in_the_main_file_and_in_modules(
    tmp_path: Path,
) -> None:
    """Qualified names, <locals> optional, modules found without importing."""
    search = _search(tmp_path)

    def where(name: str) -> list[tuple[str, int, str]]:
        return [
            (Path(found.filename).name, found.line, found.funcname)
            for found in resolve(name, search)
        ]

    assert where("top") == [("prog.py", 5, "top")]
    assert where("top.inner") == [("prog.py", 6, "inner")]
    assert where("top.<locals>.inner") == [("prog.py", 6, "inner")]
    assert where("Server.handle") == [("prog.py", 12, "handle")]
    assert where("Server.cached") == [("prog.py", 15, "cached")]
    assert where("pkg.jobs.run") == [("jobs.py", 1, "run")]
    assert where("pkg.jobs:run") == [("jobs.py", 1, "run")]
    assert where("pkg/jobs.py:run") == [("jobs.py", 1, "run")]
    assert "pkg.jobs" not in sys.modules


def test_function_names_that_cannot_be_found_say_where_they_were_looked_for(
    tmp_path: Path,
) -> None:
    """A missing function, module or package names what was searched."""
    search = _search(tmp_path)
    with pytest.raises(
        LookupError, match=r"no function 'nope' found \(looked in prog\.py\)"
    ):
        resolve("nope", search)
    with pytest.raises(LookupError, match=r"no function 'pkg\.jobs\.nope' found"):
        resolve("pkg.jobs.nope", search)
    with pytest.raises(LookupError, match="no module named 'missing'"):
        resolve("missing:f", search)
    (tmp_path / "native.so").write_bytes(b"")
    with pytest.raises(LookupError, match="module 'native' has no Python source"):
        resolve("native:f", search)
    with pytest.raises(LookupError, match="needs a name"):
        resolve("  ", search)
    with pytest.raises(LookupError, match="expected MODULE:NAME"):
        resolve("pkg.jobs:", search)


# -- completions ----------------------------------------------------------------


def test_completions_of_names_and_attributes() -> None:
    """Names, then attributes after a dot; private names only once '_' is typed."""
    namespace = {"numbers": [1], "number_two": 2, "_hidden": 0, "os": os}
    labels = [item["label"] for item in complete("x = numb", 9, namespace)]
    assert labels == ["number_two", "numbers"]
    item = complete("x = numb", 9, namespace)[0]
    assert (item["start"], item["length"], item["type"]) == (5, 4, "variable")
    assert [i["label"] for i in complete("os.pat", 7, namespace)] == [
        "path",
        "pathconf",
        "pathconf_names",
        "pathsep",
    ]
    assert complete("_hi", 4, namespace)[0]["label"] == "_hidden"
    assert "_hidden" not in [i["label"] for i in complete("", 1, namespace)]
    assert complete("nothing.here", 13, namespace) == []
    assert [i["type"] for i in complete("whil", 5, namespace)] == ["keyword"]


# -- setVariable --------------------------------------------------------------


def test_set_variable_changes_items_entries_and_attributes() -> None:
    """Lists, dicts and objects take new values; tuples and sets refuse."""
    table = VariableTable()

    class Point:
        def __init__(self) -> None:
            self.x = 1

    values: dict[str, Any] = {
        "items": [1, 2],
        "entries": {"k": 1},
        "point": Point(),
        "pair": (1, 2),
    }
    scope = table.add_mapping(values, evaluate=lambda text: eval(text, {}, values))
    top = {v["name"]: v for v in table.variables(scope)}
    changed = table.assign(top["items"]["variablesReference"], "1", "items[0] + 40")
    assert (changed["value"], values["items"]) == ("41", [1, 41])
    table.assign(top["entries"]["variablesReference"], "'k'", "'v'")
    assert values["entries"] == {"k": "v"}
    table.assign(top["point"]["variablesReference"], "x", "[3]")
    assert values["point"].x == [3]
    with pytest.raises(NotAssignable, match="read-only"):
        table.assign(top["pair"]["variablesReference"], "0", "5")
    with pytest.raises(LookupError, match="no variable 'z'"):
        table.assign(top["point"]["variablesReference"], "z", "5")
    with pytest.raises(NotAssignable):
        table.assign(scope, "items", "[]")  # no assigner given for the scope


# -- exception filters --------------------------------------------------------


def test_raised_here_is_the_first_user_frame_an_exception_reaches() -> None:
    """Raised in the user's code counts once, where it was raised."""

    def inner() -> None:
        raise ValueError("x")

    def outer() -> None:
        inner()

    try:
        outer()
    except ValueError as exc:
        caught = exc
    tb = caught.__traceback__
    assert tb is not None
    outer_tb = tb.tb_next
    assert outer_tb is not None
    inner_tb = outer_tb.tb_next
    assert inner_tb is not None
    test_frame = tb.tb_frame
    assert raised_here(inner_tb.tb_frame, caught, inner_tb)
    assert not raised_here(outer_tb.tb_frame, caught, outer_tb)
    assert not raised_here(test_frame, caught, tb)
    assert not raised_here(inner_tb.tb_frame, trio.Cancelled._create(), None)

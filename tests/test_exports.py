"""The public surface: everything re-exported, nothing private leaking."""

from __future__ import annotations

import importlib
import pkgutil

import dapper_trio


def test_all_names_exist_and_are_public() -> None:
    """Every name in __all__ exists; none is private (__version__ aside)."""
    for name in dapper_trio.__all__:
        assert hasattr(dapper_trio, name), name
        assert not name.startswith("_") or name == "__version__"


def test_public_objects_come_from_private_modules() -> None:
    """Implementation modules are private; the package only re-exports."""
    for info in pkgutil.iter_modules(dapper_trio.__path__):
        assert info.name.startswith("_"), f"public module dapper_trio.{info.name}"
    for name in dapper_trio.__all__:
        value = getattr(dapper_trio, name)
        module = getattr(value, "__module__", None)
        if module is not None and module.startswith("dapper_trio"):
            assert module.split(".")[1].startswith("_"), (name, module)


def test_no_public_name_forgotten() -> None:
    """Every exception a private module declares public is exported."""
    exported = {getattr(dapper_trio, name) for name in dapper_trio.__all__}
    for info in pkgutil.iter_modules(dapper_trio.__path__):
        module = importlib.import_module(f"dapper_trio.{info.name}")
        for name in getattr(module, "__all__", ()):
            value = getattr(module, name)
            if isinstance(value, type) and issubclass(value, BaseException):
                assert value in exported, f"exception {info.name}.{name} not exported"


def test_lazy_table_matches_type_checking_imports() -> None:
    """The lazy-loading table and the imports type checkers see list the same names."""
    import ast
    from pathlib import Path

    tree = ast.parse(Path(dapper_trio.__file__).read_text())
    guarded = next(
        node
        for node in tree.body
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING"
    )
    seen = {
        alias.asname or alias.name: node.module
        for node in guarded.body
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    }
    assert seen == dapper_trio._EXPORTS
    assert set(dapper_trio.__all__) == {*seen, "__version__"}


def test_importing_the_command_line_does_not_import_trio() -> None:
    """`dapper-trio run` can start the debuggee before trio is imported, nor
    typing, dataclasses or inspect (a third of its imports before the
    debuggee starts, see _records)."""
    import subprocess
    import sys

    code = (
        "import sys, dapper_trio._cli, dapper_trio._spawn, dapper_trio._targets;"
        "print(sorted({'trio', 'typing', 'dataclasses', 'inspect'} & set(sys.modules)))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert result.stdout.strip() == "[]"

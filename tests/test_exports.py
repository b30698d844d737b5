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

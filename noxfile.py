"""Developer sessions: tests on every available Python, lint, typecheck, docs.

The tested matrix is 3.10-3.12 (3.13 is declared in pyproject but pdbpp 0.12.1
does not import on 3.13.0; see docs/compatibility.md).  Interpreters that are
missing are skipped when run by hand; on CI (``CI`` set) nox treats a missing
interpreter as an error, so .ci/run always exercises both tracing code paths.
"""

from __future__ import annotations

import os

import nox

nox.options.sessions = ["tests", "lint", "typecheck", "docs"]
nox.options.reuse_existing_virtualenvs = True
nox.options.error_on_missing_interpreters = bool(os.environ.get("CI"))

PYTHONS = ["3.10", "3.11", "3.12"]


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    """Run the whole test suite on one interpreter."""
    session.install("-e", ".[test]")
    session.run("python", "-m", "pytest", *session.posargs)
    if session.python not in ("3.10", "3.11"):
        # 3.12+ defaults to the sys.monitoring tracer: run everything again
        # with the settrace one, which 3.10/3.11 use (docs/internals.md).
        session.run(
            "python",
            "-m",
            "pytest",
            *session.posargs,
            env={"DAPPER_TRIO_TRACER": "settrace"},
        )


@nox.session(python="3.11")
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check."""
    session.install("ruff>=0.15")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(python="3.11")
def typecheck(session: nox.Session) -> None:
    """mypy --strict over the package."""
    # exceptiongroup: mypy checks as Python 3.10 (pyproject), where the
    # backport is what provides ExceptionGroup, whatever runs mypy.
    session.install("-e", ".[test]", "mypy>=1.15", "exceptiongroup")
    session.run("mypy", "--strict", "dapper_trio")


@nox.session(python="3.11")
def docs(session: nox.Session) -> None:
    """Check generated docs are current and every public name is documented."""
    session.install("-e", ".")
    session.run("python", "docs/_tools/check_docs.py")

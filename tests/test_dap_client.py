"""Microsoft's DAP client (``@vscode/debugadapter-testsupport``) against our adapter.

The JavaScript tests live in tests/dap_client (mocha).  This test installs
their dependencies from the committed package-lock.json when node_modules is
missing (``npm ci``), runs them against this interpreter's ``dapper-trio``
(and its ``python``, for the programs the attach tests start), and fails
with mocha's report if any of them fails.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

CLIENT_DIR = Path(__file__).parent / "dap_client"
NPM_CI_TIMEOUT = 300
MOCHA_TIMEOUT = 600


def _dapper_trio_executable() -> str:
    """The ``dapper-trio`` script of this interpreter's environment."""
    candidate = Path(sys.executable).parent / "dapper-trio"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("dapper-trio")
    assert found is not None, "dapper-trio is not installed in this environment"
    return found


def _run(command: list[str], timeout: float, env: dict[str, str]) -> str:
    try:
        completed = subprocess.run(
            command,
            cwd=CLIENT_DIR,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        output = exc.output if isinstance(exc.output, str) else ""
        pytest.fail(f"{' '.join(command)} took over {timeout} s:\n{output}")
    if completed.returncode != 0:
        pytest.fail(
            f"{' '.join(command)} failed (status {completed.returncode}):\n"
            f"{completed.stdout}",
            pytrace=False,
        )
    return completed.stdout


@pytest.mark.timeout(NPM_CI_TIMEOUT + MOCHA_TIMEOUT + 30)
def test_microsoft_dap_client_suite_passes() -> None:
    """Every mocha test driving ``dapper-trio dap`` with DebugClient passes."""
    npm = shutil.which("npm")
    npx = shutil.which("npx")
    assert npm is not None, "npm is needed to run tests/dap_client"
    assert npx is not None, "npx is needed to run tests/dap_client"
    env = dict(os.environ)
    env["DAPPER_TRIO_DAP"] = _dapper_trio_executable()
    env["DAPPER_TRIO_PYTHON"] = sys.executable
    if not (CLIENT_DIR / "node_modules" / "@vscode").is_dir():
        _run([npm, "ci", "--no-audit", "--no-fund"], NPM_CI_TIMEOUT, env)
    report = _run([npx, "--no-install", "mocha"], MOCHA_TIMEOUT, env)
    assert " passing" in report, report
    assert " failing" not in report, report

"""Drive a debugger session at a real terminal (pexpect over a pty).

Everything a person does at the terminal is tested through ``Terminal``: it
spawns a command on a pty, waits for prompts with a time bound on every wait,
and returns what the program printed with ANSI escapes and pyrepl's redraw
sequences stripped, so tests can assert on plain text.
"""

from __future__ import annotations

import os
import re
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pexpect

PROMPT = r"\(Pdb\+\+\) "
PROGRAMS = Path(__file__).parent / "programs"
# CSI sequences, single-character escapes (keypad mode), OSC titles.
_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[=>]|\x1b\][^\x07]*\x07")


def clean(text: str) -> str:
    """Strip terminal control sequences and carriage returns."""
    return _ANSI.sub("", text).replace("\r", "")


def line_of(path: Path, mark: str) -> int:
    """The line number of the line holding ``# mark: <mark>`` in *path*."""
    needle = f"# mark: {mark}"
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if line.rstrip().endswith(needle):
            return number
    raise LookupError(f"no line marked {mark!r} in {path}")


def dapper_command() -> list[str]:
    """The ``dapper-trio`` command, run by this interpreter."""
    return [sys.executable, "-m", "dapper_trio"]


def terminal_env(**extra: str) -> dict[str, str]:
    """The environment for a terminal session: isolated HOME, no colours."""
    env = dict(os.environ)
    env.pop("PYTHONBREAKPOINT", None)
    env.update(
        {
            "TERM": "xterm-256color",
            "PDBPP_COLORS": "0",
            "PYTHONUNBUFFERED": "1",
            "PYTHONDONTWRITEBYTECODE": "1",
        }
    )
    env.update(extra)
    return env


_SLOW_SUPERVISOR = """\
import os, sys, time

SUPERVISOR = os.getpid()  # the debuggee is a fork of it: not slowed

class SlowSupervisor:
    def find_spec(self, name, path=None, target=None):
        if name == "dapper_trio._backends" and os.getpid() == SUPERVISOR:
            sys.meta_path.remove(self)
            time.sleep(float(os.environ["SUPERVISOR_DELAY"]))
            with open(os.environ["SUPERVISOR_SERVES"], "w"):
                pass
        return None

sys.meta_path.insert(0, SlowSupervisor())
"""


def slow_supervisor_env(directory: Path, delay: float) -> tuple[dict[str, str], Path]:
    """A ``terminal_env`` in which ``dapper-trio run``'s supervisor starts to
    serve *delay* seconds late (its loop, ``_backends``, is slow to import),
    as on a loaded machine; and the file that exists once it serves."""
    site = directory / "slow-supervisor"
    site.mkdir()
    (site / "sitecustomize.py").write_text(_SLOW_SUPERVISOR)
    serves = directory / "supervisor-serves"
    env = terminal_env(
        PYTHONPATH=str(site), SUPERVISOR_DELAY=str(delay), SUPERVISOR_SERVES=str(serves)
    )
    return env, serves


def _as_from_a_terminal() -> None:
    # A person starts programs from a terminal with SIGINT at its default.
    # Whoever started pytest (a CI runner's background job, say) may have
    # left it ignored, and an ignored signal stays ignored across exec.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class Terminal:
    """One command running on a pty, with bounded waits."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        cwd: Path | str = PROGRAMS,
        env: dict[str, str] | None = None,
        timeout: float = 20.0,
    ) -> None:
        self.timeout = timeout
        self.transcript: list[str] = []
        self.child = pexpect.spawn(
            argv[0],
            list(argv[1:]),
            cwd=str(cwd),
            env=env if env is not None else terminal_env(),
            encoding="utf-8",
            codec_errors="replace",
            timeout=timeout,
            dimensions=(50, 160),
            preexec_fn=_as_from_a_terminal,
        )

    # -- waiting ------------------------------------------------------------

    def expect(self, pattern: str | list[object], timeout: float | None = None) -> int:
        index: int = self.child.expect(pattern, timeout=timeout or self.timeout)
        self.transcript.append(clean(self.child.before) + clean(str(self.child.after)))
        return index

    def expect_text(self, text: str, timeout: float | None = None) -> None:
        """Wait until *text* is on screen, even if drawn with escapes in between.

        pyrepl draws typed and completed text a character at a time with
        cursor-control sequences between the characters.
        """
        gap = r"(?:\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[=>]|\r)*"
        pattern = gap.join(re.escape(char) for char in text)
        self.expect(pattern, timeout)

    def expect_prompt(self, timeout: float | None = None) -> str:
        """Wait for the REPL prompt; return the cleaned output before it."""
        self.child.expect(PROMPT, timeout=timeout or self.timeout)
        out = clean(self.child.before)
        self.transcript.append(out + "(Pdb++) ")
        return out

    def cmd(self, line: str, timeout: float | None = None) -> str:
        """Type *line* at the prompt; return the output up to the next prompt."""
        self.child.sendline(line)
        out = self.expect_prompt(timeout)
        # Drop the echo of the command itself.
        first, _, rest = out.partition("\n")
        return rest if line in first or not first.strip() else out

    def send(self, text: str) -> None:
        self.child.send(text)

    def sendline(self, line: str) -> None:
        self.child.sendline(line)

    def interrupt(self) -> None:
        """Press Ctrl-C."""
        self.child.sendintr()

    def expect_exit(self, timeout: float | None = None) -> str:
        """Wait for the program to end; return its remaining output."""
        self.child.expect(pexpect.EOF, timeout=timeout or self.timeout)
        out = clean(self.child.before)
        self.transcript.append(out)
        self._reap(timeout or self.timeout)
        return out

    def continue_to_end(self, *expected: str, status: int = 0) -> str:
        """``c`` at the prompt: the program runs to its end without stopping
        again, prints each of *expected* and exits with *status*."""
        self.sendline("c")
        rest = self.expect_exit()
        for text in expected:
            assert text in rest, f"{text!r} not in the program's last output"
        assert "(Pdb++)" not in rest
        assert self.exitstatus == status
        return rest

    def _reap(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.child.isalive():
            if time.monotonic() > deadline:
                raise TimeoutError("the process closed its terminal but did not exit")
            time.sleep(0.02)
        self.child.close()

    @property
    def exitstatus(self) -> int | None:
        status: int | None = self.child.exitstatus
        return status

    @property
    def signalstatus(self) -> int | None:
        status: int | None = self.child.signalstatus
        return status

    def close(self) -> None:
        """Close the terminal (the user closes the window): SIGHUP."""
        if self.child.isalive() or not self.child.closed:
            self.child.close(force=True)

    def __enter__(self) -> Terminal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def text(self) -> str:
        return "".join(self.transcript)


def run_argv(mode: str, *rest: str) -> list[str]:
    """``dapper-trio run [--in-process] REST...`` as an argv for *mode*."""
    argv = [*dapper_command(), "run"]
    if mode == "in-process":
        argv.append("--in-process")
    return [*argv, *rest]


def run_under_debugger(
    script: str,
    *args: str,
    mode: str,
    options: Sequence[str] = (),
    env: dict[str, str] | None = None,
    cwd: Path | str = PROGRAMS,
) -> Terminal:
    """``dapper-trio run [--in-process] [options] script args`` on a pty."""
    return Terminal(run_argv(mode, *options, script, *args), cwd=cwd, env=env)

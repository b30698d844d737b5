"""Capture real terminal sessions into the docs.

Each transcript in docs/*.md sits between a tag and a fenced block::

    <!-- transcript: NAME sha256=0123456789abcdef -->
    ```text
    ...what the terminal showed...
    ```

``python docs/_tools/capture.py --write [NAME...]`` runs each session below
at a real terminal (pexpect over a pty, as a person would type it), and
rewrites its block.  The digest lets ``check_docs.py`` reject a transcript
edited by hand.  The only change made to what the terminal showed: escape
sequences are removed and the repository's absolute path is shortened to
``~/dapper-trio``.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import sys
import time
from pathlib import Path

import pexpect

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(Path(__file__).parent))

from check_docs import TRANSCRIPT, transcript_digest  # noqa: E402
from terminal import clean, terminal_env  # noqa: E402

PROMPT = r"\(Pdb\+\+\) "


@dataclasses.dataclass
class Session:
    """One scripted terminal session."""

    command: str  # as the reader would type it, run through bash
    steps: list[tuple[str, str]]  # ("cmd", line) | ("intr", "") | ("exit", line)
    cwd: Path = ROOT
    env: dict[str, str] = dataclasses.field(default_factory=dict)
    settle: float = 0.0  # seconds to let the program run before the first step


SESSIONS: dict[str, tuple[str, Session]] = {
    "readme": (
        "../README.md",
        Session(
            "dapper-trio run -c -b examples/pipeline.py:24 examples/pipeline.py",
            [("cmd", "tasks"), ("cmd", "p number, totals"), ("exit", "q")],
        ),
    ),
    "quickstart": (
        "terminal.md",
        Session(
            "dapper-trio run -c -b examples/pipeline.py:23 examples/pipeline.py",
            [
                ("cmd", "tasks"),
                ("cmd", "p number, name"),
                ("cmd", "where"),
                ("cmd", "scopes"),
                ("cmd", "cl 1"),
                ("exit", "c"),
            ],
        ),
    ),
    "entry": (
        "terminal.md",
        Session(
            "dapper-trio run examples/pipeline.py",
            [
                ("cmd", "b 24"),
                ("cmd", "c"),
                ("cmd", "next"),
                ("cmd", "next"),
                ("cmd", "next"),
            ],
        ),
    ),
    "stepping": (
        "terminal.md",
        Session(
            "dapper-trio run -c -b tests/programs/tasks_demo.py:27 "
            "tests/programs/tasks_demo.py",
            [
                ("cmd", "cl 1"),
                ("cmd", "step"),
                ("cmd", "step"),
                ("cmd", "next"),
                ("cmd", "return"),
                ("cmd", "next"),
                ("cmd", "task worker-a"),
                ("cmd", "where"),
                ("cmd", "task"),
                ("exit", "c"),
            ],
        ),
    ),
    "post-mortem": (
        "terminal.md",
        Session(
            "dapper-trio run -c tests/programs/crash_group.py",
            [
                ("cmd", "exceptions"),
                ("cmd", "exceptions 1"),
                ("cmd", "p n"),
                ("exit", "c"),
            ],
        ),
    ),
    "ctrl-c": (
        "terminal.md",
        Session(
            "dapper-trio run -c tests/programs/sleeper.py",
            [("intr", ""), ("cmd", "tasks"), ("exit", "q")],
            settle=1.0,
        ),
    ),
    "tree-debug": (
        "actors.md",
        Session(
            "python tests/programs/tree_app.py nest",
            [("cmd", "procs"), ("exit", "c")],
        ),
    ),
    "tree-join": (
        "actors.md",
        Session(
            "dapper-trio run -c tests/programs/tree_join_app.py leaf",
            [("cmd", "procs"), ("cmd", "p secret"), ("exit", "c")],
        ),
    ),
    "tree-join-env": (
        "actors.md",
        Session(
            "dapper-trio run -c tests/programs/tree_join_app.py own-env",
            [("cmd", "procs"), ("cmd", "p sorted(os.environ)"), ("exit", "c")],
        ),
    ),
    "breakpoint-api": (
        "terminal.md",
        Session(
            "python tests/programs/plain_app.py",
            [("cmd", "scopes"), ("cmd", "p x"), ("exit", "q")],
        ),
    ),
}


def run_session(session: Session) -> str:
    env = terminal_env(**session.env)
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    env["PS1"] = "$ "
    child = pexpect.spawn(
        "bash",
        ["--norc", "--noprofile", "-c", session.command],
        cwd=str(session.cwd),
        env=env,
        encoding="utf-8",
        timeout=30,
        dimensions=(40, 110),
    )
    shown = [f"$ {session.command}\n"]
    try:
        if session.settle:
            time.sleep(session.settle)
        else:
            child.expect(PROMPT)
            shown.append(clean(child.before) + "(Pdb++) ")
        for kind, text in session.steps:
            if kind == "intr":
                child.sendintr()
                child.expect(PROMPT)
                shown.append(clean(child.before) + "(Pdb++) ")
                continue
            child.sendline(text)
            if kind == "exit":
                child.expect(pexpect.EOF)
                shown.append(_after_echo(clean(child.before), text))
                break
            child.expect(PROMPT)
            shown.append(_after_echo(clean(child.before), text) + "(Pdb++) ")
    finally:
        child.close(force=True)
    return _normalise("".join(shown))


def _after_echo(output: str, typed: str) -> str:
    # pyrepl echoes what was typed; keep it once, on the prompt's line.
    first, _, rest = output.partition("\n")
    if typed in first:
        return f"{typed}\n{rest}"
    return f"{typed}\n{output}"


def _normalise(text: str) -> str:
    text = text.replace(str(ROOT), "~/dapper-trio")
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.rstrip() + "\n"


def write(names: list[str]) -> None:
    for name in names:
        page_name, session = SESSIONS[name]
        page = DOCS / page_name
        text = page.read_text()
        body = run_session(session)
        block = (
            f"<!-- transcript: {name} sha256={transcript_digest(body)} -->\n"
            f"```text\n{body}```"
        )
        matches = [m for m in TRANSCRIPT.finditer(text) if m["name"] == name]
        if not matches:
            raise SystemExit(f"{page_name} has no transcript block named {name!r}")
        match = matches[0]
        page.write_text(text[: match.start()] + block + text[match.end() :])
        print(f"captured {name} into {page_name}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="capture and rewrite")
    parser.add_argument("names", nargs="*", help="sessions to capture (default: all)")
    args = parser.parse_args()
    names = args.names or list(SESSIONS)
    if not args.write:
        for name in names:
            print(run_session(SESSIONS[name][1]))
        return
    write(names)


if __name__ == "__main__":
    main()

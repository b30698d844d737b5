"""Check the documentation: generated parts current, API documented, links sound.

Run by ``nox -s docs`` (and by tests/test_project.py):

* the lifecycle diagrams in docs/lifecycle.md match the transition tables;
* every public name of ``dapper_trio`` (its ``__all__``) is documented in
  docs/api.md;
* every relative link in docs/*.md and README.md points to a file that exists;
* every transcript block in docs/ came from a real run (captured by
  docs/_tools/capture.py, which tags it) and has not been edited by hand.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
LINK = re.compile(r"\[[^\]]*\]\(([^)#\s]+)(?:#[^)]*)?\)")
TRANSCRIPT = re.compile(
    r"<!-- transcript: (?P<name>[\w-]+) sha256=(?P<digest>[0-9a-f]{16}) -->\n"
    r"```text\n(?P<body>.*?)```",
    re.S,
)


def check_generated() -> list[str]:
    result = subprocess.run(
        [sys.executable, str(DOCS / "_tools" / "lifecycle_diagram.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        return [f"docs/lifecycle.md is stale: {result.stdout}{result.stderr}".strip()]
    return []


def check_api() -> list[str]:
    sys.path.insert(0, str(ROOT))
    import dapper_trio

    api = (DOCS / "api.md").read_text()
    return [
        f"docs/api.md does not document dapper_trio.{name}"
        for name in dapper_trio.__all__
        if name != "__version__" and f"`{name}" not in api and f"{name}(" not in api
    ]


def check_links() -> list[str]:
    pages = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]
    return [
        f"{page.relative_to(ROOT)}: broken link {target}"
        for page in pages
        for target in LINK.findall(page.read_text())
        if "://" not in target
        and not target.startswith("mailto:")
        and not (page.parent / target).exists()
    ]


def transcript_digest(body: str) -> str:
    return hashlib.sha256(body.encode()).hexdigest()[:16]


def check_transcripts() -> list[str]:
    return [
        f"{page.relative_to(ROOT)}: transcript {match['name']!r} was edited by "
        "hand; recapture it with docs/_tools/capture.py"
        for page in [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]
        for match in TRANSCRIPT.finditer(page.read_text())
        if transcript_digest(match["body"]) != match["digest"]
    ]


def main() -> int:
    problems = check_generated() + check_api() + check_links() + check_transcripts()
    for problem in problems:
        print(problem)
    if not problems:
        print("docs: OK")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())

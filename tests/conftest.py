"""Test harness: every test is bounded in time and must leave nothing behind.

Two autouse fixtures enforce the project's quality bar for every test:

* ``_time_bound`` arms a real-time interval timer (default 60 s, change it with
  ``@pytest.mark.timeout(seconds)``).  When it fires, every thread's stack is
  dumped and the test fails with ``TestTimedOut``.  A hung test fails; it never
  stalls CI.

* ``_no_leaks`` tags the test with a unique marker in the environment
  (``DAPPER_TRIO_TEST_TAG``) that every process the test starts inherits, and
  points ``DAPPER_TRIO_RUNTIME_DIR`` (where IPC socket files live) at a fresh
  private directory.  After the test it fails if any process carrying the tag
  is still alive -- including orphans reparented to init and zombies -- or if
  any file is left in the runtime directory.  Leaked processes are killed so
  one failure does not poison the tests after it.
"""

from __future__ import annotations

import faulthandler
import os
import shutil
import signal
import sys
import tempfile
import time
import types
import uuid
from collections.abc import Iterator

import pytest

TAG_VARIABLE = "DAPPER_TRIO_TEST_TAG"
RUNTIME_VARIABLE = "DAPPER_TRIO_RUNTIME_DIR"
DEFAULT_TIMEOUT = 60.0
# How long a test's processes may take to finish exiting after the test body
# returns (a reaped child's grandchild may still be unwinding).
LEAK_GRACE = 5.0


class TestTimedOut(Exception):
    """Raised into a test that exceeded its time bound."""

    __test__ = False  # not a test class, despite the name


def _tagged_processes(tag: str) -> list[tuple[int, str, str]]:
    """Return (pid, state, cmdline) of live processes whose environment has *tag*."""
    found = []
    needle = f"{TAG_VARIABLE}={tag}".encode()
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                environ = f.read()
            if needle not in environ.split(b"\0"):
                continue
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read().decode(errors="replace")
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue  # gone already, or not ours to read
        state = stat.rpartition(")")[2].split()[0]
        found.append((int(entry), state, cmdline.strip()))
    return found


def _reap_own_zombies() -> None:
    """Collect exit statuses of our own exited children (pexpect may leave them)."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


@pytest.fixture(autouse=True)
def _no_leaks(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    tag = uuid.uuid4().hex
    runtime_dir = tempfile.mkdtemp(prefix="dt-")
    monkeypatch.setenv(TAG_VARIABLE, tag)
    monkeypatch.setenv(RUNTIME_VARIABLE, runtime_dir)
    try:
        yield
        if request.node.get_closest_marker("allow_leaks"):
            return
        deadline = time.monotonic() + LEAK_GRACE
        leaked = _tagged_processes(tag)
        while leaked and time.monotonic() < deadline:
            time.sleep(0.05)
            leaked = _tagged_processes(tag)
        # A zombie child of ours is a leak too: the test forgot to reap it.
        leftovers = sorted(os.listdir(runtime_dir))
        problems = []
        if leaked:
            problems.append(
                "processes left behind:\n"
                + "\n".join(f"  pid {p} [{s}] {c}" for p, s, c in leaked)
            )
        if leftovers:
            problems.append(f"files left in the runtime dir: {leftovers}")
        if problems:
            pytest.fail("\n".join(problems), pytrace=False)
    finally:
        for pid, _, _ in _tagged_processes(tag):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        _reap_own_zombies()
        shutil.rmtree(runtime_dir, ignore_errors=True)


@pytest.fixture(autouse=True)
def _time_bound(request: pytest.FixtureRequest) -> Iterator[None]:
    marker = request.node.get_closest_marker("timeout")
    seconds = float(marker.args[0]) if marker else DEFAULT_TIMEOUT

    def on_timeout(signum: int, frame: types.FrameType | None) -> None:
        faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
        raise TestTimedOut(f"test exceeded its time bound of {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, on_timeout)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)

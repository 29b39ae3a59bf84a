"""The leak guard of tests/leaks.py finds a process that carries the session's marker, waits
for one that is exiting, and kills what is left."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

from tests.leaks import MARKER_ENV, carrying, kill_all, survivors


def spawn(marker: str, seconds: float) -> subprocess.Popen[bytes]:
    env = {**os.environ, MARKER_ENV: marker}
    return subprocess.Popen([sys.executable, "-c", f"import time; time.sleep({seconds})"], env=env)


def test_a_process_left_running_is_found_and_killed() -> None:
    marker = f"leak-test-{uuid.uuid4().hex}"
    entry = f"{MARKER_ENV}={marker}".encode()
    leaked, other = spawn(marker, 60), spawn(f"other-{marker}", 60)
    try:
        found = survivors(entry, grace_s=0.5)
        assert list(found) == [leaked.pid], found  # not the one of another session
        assert "time.sleep(60)" in found[leaked.pid]
        kill_all(found)
        assert leaked.wait(timeout=10) == -9
        assert carrying(entry) == {}
    finally:
        for process in (leaked, other):
            process.kill()
            process.wait()


def test_a_process_that_exits_within_the_grace_is_not_reported() -> None:
    marker = f"leak-test-{uuid.uuid4().hex}"
    exiting = spawn(marker, 0.3)
    try:
        assert survivors(f"{MARKER_ENV}={marker}".encode(), grace_s=10.0) == {}
    finally:
        exiting.wait()


HELPER_CHECK = """
import os, subprocess, sys, time
from multiprocessing import resource_tracker
from tests.leaks import MARKER_ENV, carrying
resource_tracker.ensure_running()  # a helper of this process, which ends with it
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
marker = f"{MARKER_ENV}={os.environ[MARKER_ENV]}".encode()
deadline = time.monotonic() + 5.0
# Just after exec the kernel may show the child's environment empty for a moment.
while not (found := carrying(marker)) and time.monotonic() < deadline:
    time.sleep(0.05)
child.kill()
print(sorted(found) == [child.pid], len(found))
"""


def test_multiprocessing_helpers_of_the_session_itself_are_not_leaks() -> None:
    marker = f"leak-test-{uuid.uuid4().hex}"
    result = subprocess.run(
        [sys.executable, "-c", HELPER_CHECK],
        env={**os.environ, MARKER_ENV: marker},
        cwd=Path(__file__).resolve().parent.parent,
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert result.stdout.split() == ["True", "1"], result.stdout + result.stderr

"""Fixtures: a running local cluster and a ``pbkv dashboard`` process serving it."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster.conftest import cluster_dir, running
from tests.cluster.helpers import PING_INTERVAL

__all__ = ["cluster_dir", "dashboard_url", "running"]

DASHBOARD_START_TIMEOUT_S = 20.0


@pytest.fixture
def dashboard_url(running: Path) -> Iterator[str]:
    """``pbkv dashboard --dir CLUSTER --listen 127.0.0.1:0`` started as a process; its URL."""
    argv = [sys.executable, "-m", "pbkv", "dashboard", "--dir", str(running)]
    process = subprocess.Popen(
        [*argv, "--listen", "127.0.0.1:0", "--poll-interval", PING_INTERVAL],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        found = re.search(r"http://127\.0\.0\.1:\d+/", line)
        assert found, f"dashboard did not print its URL: {line!r}"
        yield found.group(0)
    finally:
        process.terminate()
        try:
            process.wait(timeout=DASHBOARD_START_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

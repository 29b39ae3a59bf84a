"""The dashboard process of a local cluster (``pbkv cluster up --dashboard``).

Theory of operation: the dashboard runs as one more detached process (``pbkv dashboard --dir
DIR``), so ``cluster up`` returns at once like without it. Its pid, command line and URL are
recorded in ``DIR/dashboard.json`` before anything else can go wrong, its output goes to
``DIR/dashboard.out`` (not under ``logs/``: it is not a node of the cluster), and ``down`` stops
it by pid like every other process. With port 0 the URL is read back from the line the process
prints when it listens.
"""

from __future__ import annotations

import json
import re
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from pbkv.cluster import processes
from pbkv.cluster.targets import ClusterError
from pbkv.errors import PbkvError
from pbkv.runtime.config import parse_address

LISTEN_DEFAULT: Final = "127.0.0.1:8080"
START_TIMEOUT_S: Final = 15.0
POLL_S: Final = 0.05
POLL_INTERVAL_S: Final = 0.25
"""How often the dashboard of a local cluster reads its status (the page's refresh)."""
RECORD_FILE: Final = "dashboard.json"
OUTPUT_FILE: Final = "dashboard.out"
_URL: Final = re.compile(r"dashboard: (http://\S+)")


class DashboardError(PbkvError):
    """The dashboard process could not be started; the message says why."""

    exit_code = 5


@dataclass(frozen=True, slots=True)
class DashboardRecord:
    pid: int
    argv: tuple[str, ...]
    url: str


def record_path(directory: Path) -> Path:
    return directory / RECORD_FILE


def load(directory: Path) -> DashboardRecord | None:
    """The recorded dashboard process, or None."""
    try:
        data = json.loads(record_path(directory).read_text())
        return DashboardRecord(int(data["pid"]), tuple(data["argv"]), str(data["url"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _save(directory: Path, record: DashboardRecord) -> None:
    data = {"pid": record.pid, "argv": list(record.argv), "url": record.url}
    record_path(directory).write_text(json.dumps(data) + "\n")


def check_listen(listen: str) -> None:
    """Refuse, before anything starts, an address the dashboard could not listen on: a port
    in use, a host that is not this machine's (``ClusterError``, exit 4); ``ConfigError`` (exit
    2) for one that is not ``HOST:PORT``."""
    host, port = parse_address(listen)
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(address)
    except OSError as error:
        raise ClusterError(
            f"the dashboard cannot listen on {listen}: {error.strerror or error}; choose "
            "another --dashboard-listen (port 0: any free port)"
        ) from None


def start(directory: Path, argv: tuple[str, ...], listen: str = LISTEN_DEFAULT) -> str:
    """Start ``argv`` (a ``pbkv dashboard`` command line without ``--listen``) detached and
    wait until it prints its URL; returns the URL.

    Raises:
        DashboardError: it exited or did not listen within ``START_TIMEOUT_S``.
    """
    stop(directory)
    full = (*argv, "--listen", listen, "--poll-interval", str(POLL_INTERVAL_S))
    output = directory / OUTPUT_FILE
    offset = output.stat().st_size if output.exists() else 0
    pid = processes.spawn(full, output)
    _save(directory, DashboardRecord(pid, full, ""))
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        text = output.read_bytes()[offset:].decode("utf-8", "replace")
        found = _URL.search(text)
        if found:
            _save(directory, DashboardRecord(pid, full, found.group(1)))
            return found.group(1)
        # Our own child, not yet reaped, so its pid cannot have been reused: no command-line
        # check (right after exec the kernel may still show an empty one, which read as
        # "another process": seen in CI under load as "did not start" with it running).
        if processes.process_state(pid) == "dead":
            last = text.strip().splitlines()[-1:] or ["(no output)"]
            record_path(directory).unlink(missing_ok=True)
            raise DashboardError(f"the dashboard did not start: {last[0]}")
        time.sleep(POLL_S)
    stop(directory)
    raise DashboardError(f"the dashboard did not listen within {START_TIMEOUT_S:g} s")


def stop(directory: Path) -> DashboardRecord | None:
    """Stop the recorded dashboard if it runs; returns it if it was running."""
    record = load(directory)
    if record is None:
        return None
    running = processes.process_state(record.pid, record.argv) != "dead"
    if running:
        processes.stop([record.pid])
    record_path(directory).unlink(missing_ok=True)
    return record if running else None

"""Operating-system side of the cluster manager: spawn, inspect, signal and stop processes.

Theory of operation: every process is started detached (its own session, stdin from /dev/null,
stdout and stderr appended to its log file), so it outlives the ``pbkv cluster`` command that
started it and a Ctrl-C in that terminal does not reach it. It is found again only by the pid
recorded in the state file. Before trusting a pid we check that it still runs the command line
we started (``/proc/PID/cmdline``): a pid reused by an unrelated program is never signalled.

Liveness is ``os.kill(pid, 0)`` plus the state letter in ``/proc/PID/stat``: ``T``/``t`` is a
paused (SIGSTOP) process, ``Z``/``X`` is a dead one that its parent has not reaped yet. When the
process is our own child (the demo and tests start clusters in-process) we reap it so it does
not linger as a zombie.

Ports: ``free_ports`` draws free ports below the kernel's ephemeral range (every local cluster
of pbkv: ``pbkv cluster``, the benchmark's own clusters and Redis pairs). ``ProcessGroup`` is the
benchmark's way to run children: attached (not detached), logging to a temporary directory,
stopped together (SIGTERM, then SIGKILL after ``GROUP_STOP_TIMEOUT_S``), and on Linux each gets
SIGTERM when its parent dies, even by SIGKILL.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Final, Literal, Self

from pbkv.errors import PbkvError

ProcessState = Literal["alive", "paused", "dead"]


class PortRangeError(PbkvError):
    """``$PBKV_FREE_PORT_RANGE`` is not a range of ports (exit 2, usage)."""

    exit_code = 2


STOP_GRACE_S: Final = 2.0
"""How long ``stop`` waits after SIGTERM before it sends SIGKILL."""
POLL_INTERVAL_S: Final = 0.02
FREE_PORT_RANGE: Final = (20000, 32768)
FREE_PORT_RANGE_ENV: Final = "PBKV_FREE_PORT_RANGE"
"""``LOW-HIGH``: the ports ``--base-port 0`` draws from instead (several clusters or test
workers on one host, each in its own slice, never draw each other's ports)."""
EPHEMERAL_RANGE_DEFAULT: Final = (32768, 60999)
FREE_PORT_ATTEMPTS_MAX: Final = 1000
GROUP_STOP_TIMEOUT_S: Final = 5.0
PR_SET_PDEATHSIG: Final = 1
EXEC_SETTLE_S: Final = 0.5
"""How long an empty command line is read again before the pid counts as another process."""
EXEC_SETTLE_POLL_S: Final = 0.01

SIGNALS: Final[dict[str, signal.Signals]] = {
    "KILL": signal.SIGKILL,
    "TERM": signal.SIGTERM,
    "STOP": signal.SIGSTOP,
    "CONT": signal.SIGCONT,
    "INT": signal.SIGINT,
}


def spawn(argv: Sequence[str], log_file: Path, env: dict[str, str] | None = None) -> int:
    """Start ``argv`` detached, output appended to ``log_file``; return its pid."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "ab") as log:
        process = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
            env=env,
        )
    return process.pid


def _reap(pid: int) -> bool:
    """Reap ``pid`` if it is our exited child; True when it was (so it is gone)."""
    try:
        reaped, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return False
    return reaped == pid


def _proc_stat_letter(pid: int) -> str | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # ``pid (comm) S ...``: comm may contain spaces and parentheses, the letter follows the last ')'
    return text[text.rfind(")") + 2 :][:1] or None


def _cmdline(pid: int) -> tuple[str, ...] | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return tuple(part.decode("utf-8", "replace") for part in raw.split(b"\0") if part)


def process_state(pid: int, argv: Sequence[str] | None = None) -> ProcessState:
    """``alive``, ``paused`` (stopped by a signal) or ``dead``.

    A pid that now runs another command than ``argv`` counts as dead.
    """
    if pid <= 0 or _reap(pid):
        return "dead"
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return "dead"
    except PermissionError:
        return "dead"  # exists but is not ours
    letter = _proc_stat_letter(pid)
    if letter in ("Z", "X"):
        return "dead"
    if argv is not None and not _matches(pid, argv):
        return "dead"
    if letter in ("T", "t"):
        return "paused"
    return "alive"


def _matches(pid: int, argv: Sequence[str]) -> bool:
    found = _cmdline(pid)
    deadline = time.monotonic() + EXEC_SETTLE_S
    while found == () and time.monotonic() < deadline:
        # Mid-exec (the close-on-exec that wakes the spawner comes before the new arguments
        # are set up) a process shows an empty command line for a moment; a kernel thread
        # shows one for good.
        time.sleep(EXEC_SETTLE_POLL_S)
        found = _cmdline(pid)
    if found is None:
        return not Path("/proc/self").exists()
    # The interpreter path may be spelled differently (symlinks); compare the arguments.
    return found[1:] == tuple(argv[1:])


def catches(pid: int, signum: signal.Signals) -> bool:
    """Whether ``pid`` has a handler for ``signum`` (``SigCgt`` of ``/proc/PID/status``): a
    signal it does not catch may end it (SIGHUP does, to a pbkv process without files to
    reload or of a release before reloads)."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    for line in text.splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) >> (signum - 1) & 1)
    return False


def send_signal(pid: int, signum: signal.Signals) -> bool:
    """Send ``signum``; False when the process is already gone."""
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        return False
    return True


def wait_dead(pid: int, timeout_s: float) -> bool:
    """Wait until ``pid`` is dead (reaping it if it is our child); True if it died in time."""
    deadline = time.monotonic() + timeout_s
    while True:
        if process_state(pid) == "dead":
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL_INTERVAL_S)


def stop(pids: Iterable[int], grace_s: float = STOP_GRACE_S) -> None:
    """Stop every pid: SIGCONT (a paused process cannot act on SIGTERM), SIGTERM, wait up to
    ``grace_s`` for all of them together, then SIGKILL the survivors."""
    live = [pid for pid in pids if process_state(pid) != "dead"]
    for pid in live:
        send_signal(pid, signal.SIGTERM)
        send_signal(pid, signal.SIGCONT)
    deadline = time.monotonic() + grace_s
    while live and time.monotonic() < deadline:
        live = [pid for pid in live if process_state(pid) != "dead"]
        if live:
            time.sleep(POLL_INTERVAL_S)
    for pid in live:
        send_signal(pid, signal.SIGKILL)
    for pid in live:
        wait_dead(pid, 1.0)


def port_free(host: str, port: int) -> bool:
    """True if nothing listens on ``host:port`` and we may bind it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as error:
            if error.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return EPHEMERAL_RANGE_DEFAULT


def free_port_range() -> tuple[int, int]:
    """``FREE_PORT_RANGE``, or ``$PBKV_FREE_PORT_RANGE`` (``LOW-HIGH``, HIGH excluded) when it
    is set; a value that is not two ports in order is a one-line ``PbkvError`` (exit 2)."""
    text = os.environ.get(FREE_PORT_RANGE_ENV, "").strip()
    if not text:
        return FREE_PORT_RANGE
    low_text, _, high_text = text.partition("-")
    try:
        low, high = int(low_text), int(high_text)
    except ValueError:
        low = high = 0
    if not 1024 <= low < high <= 65536:
        raise PortRangeError(
            f"${FREE_PORT_RANGE_ENV}={text!r}: expected LOW-HIGH, 1024 <= LOW < HIGH <= 65536"
        )
    return low, high


def free_ports(host: str, count: int, exclude: Iterable[int] = ()) -> list[int]:
    """``count`` distinct ports that are free right now, drawn at random below the kernel's
    ephemeral range: an outgoing connection never takes one, so a restarted process gets its
    port back. There is a small window before the processes bind them; a process that loses
    that race fails to start, and ``up`` reports it.
    """
    excluded = set(exclude)
    low, high = free_port_range()
    ephemeral_low, _ = _ephemeral_range()
    if low < ephemeral_low <= high:  # keep below it; a range wholly inside it stays as given
        high = ephemeral_low
    rng = random.SystemRandom()
    ports: list[int] = []
    for _ in range(FREE_PORT_ATTEMPTS_MAX):
        port = rng.randrange(low, high)
        if port in excluded or port in ports:
            continue
        if port_free(host, port):
            ports.append(port)
            if len(ports) == count:
                return ports
    raise OSError(f"no {count} free ports found in {low}-{high}")


def free_port(host: str = "127.0.0.1") -> int:
    """One free port (``free_ports``)."""
    return free_ports(host, 1)[0]


def tail(path: Path, lines: int = 10, offset: int = 0) -> list[str]:
    """The last ``lines`` lines of a text file after byte ``offset`` (empty if unreadable)."""
    try:
        with open(path, "rb") as stream:
            stream.seek(0, os.SEEK_END)
            size = stream.tell()
            stream.seek(max(offset, size - 64 * 1024))
            data = stream.read()
    except OSError:
        return []
    return data.decode("utf-8", "replace").splitlines()[-lines:]


# --- attached groups of children (the benchmark's) ------------------------------------------------


def die_with_parent(signum: int = signal.SIGTERM) -> bool:
    """Ask Linux to send this process ``signum`` when its parent dies, however it dies (the
    benchmark's servers, the simulator's sweep workers); False where that cannot be asked."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signum)
    except (OSError, AttributeError):
        return False
    return True


def _die_with_parent() -> None:
    """In the child, before exec: get SIGTERM when the parent dies (Linux), so a benchmark
    killed with SIGKILL leaves no servers behind."""
    die_with_parent(signal.SIGTERM)


class ProcessGroup:
    """Processes started together and stopped together; subclasses define ``start``."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.directory: Path | None = None
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self) -> Self:
        raise NotImplementedError

    def make_directory(self) -> Path:
        self.directory = Path(tempfile.mkdtemp(prefix=self.prefix))
        return self.directory

    def spawn(self, arguments: Sequence[str], log_file: Path) -> subprocess.Popen[bytes]:
        """Start ``arguments`` with stdout and stderr going to ``log_file``."""
        with log_file.open("wb") as log:
            process = subprocess.Popen(
                list(arguments),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,  # noqa: PLW1509
            )
        self.processes.append(process)
        return process

    def exited(self) -> subprocess.Popen[bytes] | None:
        """A process of the group that has exited, if any."""
        return next((process for process in self.processes if process.poll() is not None), None)

    def stop(self) -> None:
        """Stop every process and remove the directory (idempotent)."""
        for process in reversed(self.processes):
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=GROUP_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.processes.clear()
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        with contextlib.suppress(Exception):
            self.stop()

"""The cluster state file: which processes ``pbkv cluster`` started, where, and how.

Theory of operation: ``pbkv cluster up`` writes ``DIR/cluster.json`` once every process is
spawned and rewrites it after every change (``restart``, ``add``). Every other command reads it;
nothing else is shared between invocations. The file is written atomically (a temporary file in
the same directory, fsync, rename), so a reader never sees half a file, even when two commands
race. ``down`` removes it; the ``down`` of a durable cluster (``up --durable``) renames it
``DIR/cluster.stopped.json`` instead, the stopped record ``up --resume`` starts the same cluster
again from (``pbkv.cluster.resume``). Logs stay in ``DIR/logs/NAME.log`` after ``down``.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Final, Literal

from pbkv.errors import PbkvError

STATE_FILE_NAME: Final = "cluster.json"
STOPPED_FILE_NAME: Final = "cluster.stopped.json"
STATE_FORMAT_VERSION: Final = 1
LOGS_DIR_NAME: Final = "logs"
VIEWSERVER_NAME: Final = "viewserver"

Kind = Literal["viewserver", "server", "etcd"]
KINDS: Final[tuple[Kind, ...]] = ("viewserver", "server", "etcd")


class StateError(PbkvError):
    """The state file is missing, unreadable or not ours (exit 4, refused)."""

    exit_code = 4


@dataclass(frozen=True, slots=True)
class ProcessRecord:
    """One process the manager started.

    Attributes:
        name: the manager's short name (``viewserver``, ``s1``, ``s2`` ...); the protocol name of
            a node is its ``address``.
        kind: ``viewserver``, ``server`` or ``etcd`` (a member of the etcd cluster a view
            service replicated on etcd keeps its state in: ``pbkv cluster up --etcd``).
        role_at_start: the role it was expected to take when it was started (``viewserver``,
            ``primary``, ``backup``, ``idle``); the live role comes from the view service.
        address: ``host:port`` it listens on (and its protocol name).
        pid: its process id (changes on ``restart``).
        admin_port: its loopback admin (fault-injection) port.
        metrics_port: its Prometheus metrics port.
        log_file: where its stdout and stderr go.
        argv: the exact command line it was started with (used by ``restart``).
        started_at: wall-clock time (``time.time()``) of its latest start.
        restarts: how many times ``restart`` started it again.
    """

    name: str
    kind: Kind
    role_at_start: str
    address: str
    pid: int
    admin_port: int
    metrics_port: int
    log_file: str
    argv: tuple[str, ...]
    started_at: float
    restarts: int = 0
    env: tuple[tuple[str, str], ...] = ()
    """The ``PBKV_<COMMAND>_<OPTION>`` settings it was first started with: ``restart`` from
    another shell must not quietly drop them (review: a server restarted without the
    ``PBKV_SERVER_VALUE_BYTES_MAX`` of its peers ran with other limits)."""

    @property
    def admin_address(self) -> str:
        return f"127.0.0.1:{self.admin_port}"


@dataclass(frozen=True, slots=True)
class ClusterState:
    """Everything ``DIR/cluster.json`` holds.

    Attributes:
        directory: the cluster directory (not stored: it is where the file is).
        viewserver: the view service's address.
        ping_interval_s: servers' ping interval, as passed to every process.
        dead_pings: missed pings after which the view service declares a server dead.
        base_port: the first port of the range, or 0 when ports were picked free.
        created_at: wall-clock time of ``up``.
        processes: view service first, then servers in start order.
        fsync: the servers keep their state on disk with this fsync policy (``up --durable``);
            None: in memory only.
        backups: K, the most backups a view names (``pbkv viewserver --backups``).
        read_leases: the view service grants the primary read leases (``up --read-leases``).
        forget_after_s: the view service drops a server silent this long that holds no role
            (``up --forget-after-s``); None: the view service's default (and in a file written
            before the option existed).
    """

    directory: Path
    viewserver: str
    ping_interval_s: float
    dead_pings: int
    base_port: int
    created_at: float
    processes: tuple[ProcessRecord, ...] = field(default=())
    fsync: str | None = None
    backups: int = 1
    read_leases: bool = False
    forget_after_s: float | None = None

    def find(self, name: str) -> ProcessRecord | None:
        """The process named ``name`` or listening on address ``name``."""
        for record in self.processes:
            if name in (record.name, record.address):
                return record
        return None

    def servers(self) -> tuple[ProcessRecord, ...]:
        return tuple(p for p in self.processes if p.kind == "server")

    def viewservers(self) -> tuple[ProcessRecord, ...]:
        """The view service process, or the members of one replicated on etcd."""
        return tuple(p for p in self.processes if p.kind == "viewserver")

    def replace_process(self, record: ProcessRecord) -> ClusterState:
        """A copy with the process of the same name replaced (or appended if new)."""
        names = [p.name for p in self.processes]
        if record.name in names:
            processes = tuple(record if p.name == record.name else p for p in self.processes)
        else:
            processes = (*self.processes, record)
        return replace(self, processes=processes)

    def to_json(self) -> dict[str, Any]:
        return {
            "version": STATE_FORMAT_VERSION,
            "viewserver": self.viewserver,
            "ping_interval_s": self.ping_interval_s,
            "dead_pings": self.dead_pings,
            "base_port": self.base_port,
            "created_at": self.created_at,
            "processes": [_record_json(p) for p in self.processes],
            "fsync": self.fsync,
            "backups": self.backups,
            "read_leases": self.read_leases,
            "forget_after_s": self.forget_after_s,
        }


def _record_json(record: ProcessRecord) -> dict[str, Any]:
    data = asdict(record)
    data["argv"] = list(record.argv)
    data["env"] = [list(pair) for pair in record.env]
    return data


def state_path(directory: Path) -> Path:
    return directory / STATE_FILE_NAME


def logs_dir(directory: Path) -> Path:
    return directory / LOGS_DIR_NAME


def save_state(state: ClusterState) -> None:
    """Write ``DIR/cluster.json`` atomically (temp file, fsync, rename)."""
    state.directory.mkdir(parents=True, exist_ok=True)
    text = json.dumps(state.to_json(), indent=2, sort_keys=True) + "\n"
    fd, temp_name = tempfile.mkstemp(prefix=".cluster.", suffix=".tmp", dir=state.directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temp_name, state_path(state.directory))
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise


def load_state(directory: Path) -> ClusterState:
    """Read ``DIR/cluster.json``.

    Raises:
        StateError: no cluster in ``directory`` or the file is damaged.
    """
    if not state_path(directory).exists() and stopped_path(directory).exists():
        raise StateError(
            f"no cluster runs in {directory}: a stopped durable cluster is kept there; start it "
            f"again with `pbkv cluster up --resume --dir {directory}`"
        )
    return _load(directory, state_path(directory))


def load_stopped(directory: Path) -> ClusterState:
    """Read ``DIR/cluster.stopped.json``, the record of a durable cluster ``down`` stopped.

    Raises:
        StateError: no such record in ``directory`` or the file is damaged.
    """
    return _load(directory, stopped_path(directory))


def _load(directory: Path, path: Path) -> ClusterState:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise StateError(
            f"no cluster in {directory} (no {path.name}); start one with `pbkv cluster up`"
        ) from None
    except (OSError, ValueError) as error:
        raise StateError(f"cannot read {path}: {error}") from None
    try:
        state = _state_from_json(directory, data)
    except (KeyError, TypeError, ValueError) as error:
        raise StateError(f"{path} is damaged ({error!r}); remove it by hand") from None
    from pbkv.cluster.credentials import install

    install(directory)  # whoever talks to this cluster presents its secret (and TLS)
    return state


def _state_from_json(directory: Path, data: dict[str, Any]) -> ClusterState:
    if data.get("version") != STATE_FORMAT_VERSION:
        raise ValueError(f"unknown version {data.get('version')!r}")
    processes = tuple(
        ProcessRecord(
            name=str(p["name"]),
            kind=next((kind for kind in KINDS if kind == p["kind"]), "server"),
            role_at_start=str(p["role_at_start"]),
            address=str(p["address"]),
            pid=int(p["pid"]),
            admin_port=int(p["admin_port"]),
            metrics_port=int(p["metrics_port"]),
            log_file=str(p["log_file"]),
            argv=tuple(str(a) for a in p["argv"]),
            started_at=float(p["started_at"]),
            restarts=int(p.get("restarts", 0)),
            env=tuple((str(k), str(v)) for k, v in p.get("env", [])),
        )
        for p in data["processes"]
    )
    return ClusterState(
        directory=directory,
        viewserver=str(data["viewserver"]),
        ping_interval_s=float(data["ping_interval_s"]),
        dead_pings=int(data["dead_pings"]),
        base_port=int(data["base_port"]),
        created_at=float(data["created_at"]),
        processes=processes,
        fsync=None if data.get("fsync") is None else str(data["fsync"]),
        backups=int(data.get("backups", 1)),
        read_leases=bool(data.get("read_leases", False)),
        forget_after_s=_optional_float(data.get("forget_after_s")),
    )


def _optional_float(value: Any) -> float | None:
    return None if value is None else float(value)


def remove_state(directory: Path) -> None:
    state_path(directory).unlink(missing_ok=True)


def stopped_path(directory: Path) -> Path:
    return directory / STOPPED_FILE_NAME


def keep_stopped(directory: Path) -> None:
    """Turn the state file into the stopped record (a rename: atomic). A stopped record that
    is already there and names a process the state file does not wins: it is the one an
    interrupted ``up --resume`` was starting from (its state file records only what it had
    started)."""
    if stopped_path(directory).exists() and not _records_every_stopped(directory):
        remove_state(directory)
    else:
        os.replace(state_path(directory), stopped_path(directory))


def _records_every_stopped(directory: Path) -> bool:
    try:
        stopped = {p.name for p in load_stopped(directory).processes}
        current = {p.name for p in _load(directory, state_path(directory)).processes}
    except StateError:  # a damaged record: the state file is the one to keep
        return True
    return stopped <= current


def remove_stopped(directory: Path) -> None:
    stopped_path(directory).unlink(missing_ok=True)

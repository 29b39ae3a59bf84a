"""Where a local cluster (``pbkv cluster up``) keeps its processes' data, and what ``up`` may
delete there.

A durable cluster's servers keep their state in ``DIR/data/NAME`` and the view service its view
in ``DIR/viewserver.data``. A new cluster starts empty, so ``up`` deletes what a previous one
left: only files pbkv writes (``is_pbkv_file``: the storage engine's log and snapshots, the
view file; under ``DIR/etcd`` the etcd members' data directories, under ``DIR/tls`` the
certificates and keys pbkv issued, in ``DIR/logs`` the processes' logs), never anything else
(refused, even with ``--fresh``), and a durable cluster's data only with ``--fresh``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Final

from pbkv.cluster.credentials import tls_dir
from pbkv.cluster.etcd import ETCD_DIR_NAME
from pbkv.cluster.state import logs_dir, stopped_path
from pbkv.cluster.targets import ClusterError
from pbkv.runtime.persist import TEMPORARY_SUFFIX, VIEW_FILE
from pbkv.storage.recovery import is_data_file

_PROCESS = r"(viewserver\d*|s\d+|etcd\d+)"
TLS_FILE: Final = re.compile(rf"(ca|client|{_PROCESS})\.(pem|key)")
"""What ``DIR/tls`` holds (``pbkv.cluster.credentials``): the CA's, the tools' and each
process's certificate and key."""
LOG_FILE: Final = re.compile(rf"(cluster|{_PROCESS})\.log")
"""The logs ``up`` starts anew in ``DIR/logs``: each process's and the cluster layer's."""
ETCD_MEMBER_DIR: Final = re.compile(r"etcd\d+\.data")
"""An etcd member's data directory in ``DIR/etcd``: what is in it, that etcd wrote."""


def server_data_dir(directory: Path, name: str) -> Path:
    """Where a durable server of the cluster keeps its state (``up --durable``)."""
    return servers_data_dir(directory) / name


def servers_data_dir(directory: Path) -> Path:
    """Where the durable servers of the cluster keep their states, one directory each."""
    return directory / "data"


def viewserver_data_dir(directory: Path) -> Path:
    """Where the cluster's view service keeps its view: ``restart viewserver`` resumes it (a
    view service that forgot it would hand view 1 to the first server that pings: issue #8)."""
    return directory / "viewserver.data"


def is_pbkv_file(name: str) -> bool:
    """What a server's (the storage engine's) or the view service's data directory holds:
    nothing else is ever deleted."""
    view_files = (VIEW_FILE, Path(VIEW_FILE).with_suffix(TEMPORARY_SUFFIX).name)
    return is_data_file(name) or name in view_files


def deleted_by_up(directory: Path) -> tuple[tuple[Path, str, Callable[[Path], bool]], ...]:
    """What a new cluster deletes in ``directory`` (``manager.up``): each directory, the files
    of it deleted (a glob pattern), and whether one of them (its path in that directory) is a
    file pbkv writes there."""
    return (
        (servers_data_dir(directory), "**/*", lambda path: is_pbkv_file(path.name)),
        (viewserver_data_dir(directory), "**/*", lambda path: is_pbkv_file(path.name)),
        (directory / ETCD_DIR_NAME, "**/*", _in_etcd_member_dir),
        (tls_dir(directory), "**/*", lambda path: TLS_FILE.fullmatch(str(path)) is not None),
        (logs_dir(directory), "*.log", lambda path: LOG_FILE.fullmatch(path.name) is not None),
    )


def _in_etcd_member_dir(path: Path) -> bool:
    return len(path.parts) > 1 and ETCD_MEMBER_DIR.fullmatch(path.parts[0]) is not None


def foreign_files(directory: Path) -> list[str]:
    """Files a new cluster would delete in ``directory`` that pbkv did not write."""
    foreign = []
    for root, deleted, ours in deleted_by_up(directory):
        if root.is_dir():
            for path in root.glob(deleted):
                if path.is_file() and not ours(path.relative_to(root)):
                    foreign.append(str(path.relative_to(directory)))
        elif root.exists():
            foreign.append(str(root.relative_to(directory)))
    return sorted(foreign)


def refuse_durable_data(directory: Path, fresh: bool) -> None:
    """A new cluster starts empty, deleting what a previous one left in ``directory``: never
    files pbkv did not write (refused, even with ``fresh``), and the servers' data of a durable
    cluster only with ``fresh``."""
    foreign = foreign_files(directory)
    if foreign:
        raise ClusterError(
            f"{directory} holds files pbkv did not write where a new cluster deletes what the "
            f"last one left ({', '.join(foreign[:3])}{' ...' if len(foreign) > 3 else ''}): "
            "use another --dir"
        )
    holders = data_holders(directory)
    if holders and not fresh:
        resume = ""
        if stopped_path(directory).exists():
            resume = "--resume to start that cluster again, "
        raise ClusterError(
            f"{servers_data_dir(directory)} holds the data of a previous durable cluster "
            f"({', '.join(holders)}) and a new cluster would delete it: add {resume}--fresh to "
            "delete it (and the previous view and logs) and start empty, or use another --dir"
        )


def data_holders(directory: Path) -> list[str]:
    """The servers whose data directory in ``directory`` holds a file."""
    data = servers_data_dir(directory)
    try:
        return sorted(d.name for d in data.iterdir() if any(f.is_file() for f in d.rglob("*")))
    except OSError:  # no such directory (or not one)
        return []

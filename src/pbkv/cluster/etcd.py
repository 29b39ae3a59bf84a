"""A local etcd cluster (Debian's ``etcd``, installed by ``scripts/ensure_etcd.sh``) for the
view service replicated on etcd: ``pbkv cluster up --etcd``, the tests and the audit script.

Theory of operation. Each member listens on 127.0.0.1 only (a client port and a peer port drawn
by ``free_ports``) with its own data directory. Heartbeat and election timeouts are shortened
(``ETCD_HEARTBEAT_MS``, ``ETCD_ELECTION_MS``): on loopback they are safe, and they lower etcd's
minimum lease TTL (1.5 election timeouts) to below one second, so a view service lease of
``--etcd-lease-ttl-s 1`` is granted as asked. ``EtcdCluster`` runs the members as children of
this process (tests, scripts); ``member_argv`` is the command line the cluster manager starts
detached. In a ``--tls`` cluster (``tls``: its ``tls/`` directory) the members serve their
clients over TLS and demand a certificate of the cluster's CA (``--client-cert-auth``), each
with a certificate of its own; the view services present theirs (``--etcd-cert``). The members
talk to each other over TLS too (``https://`` peer URLs, ``--peer-client-cert-auth``), each
presenting the same certificate (it is issued for client and server use), so a process that
reaches a peer port without a certificate of the cluster's CA can neither join nor read the
raft stream.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Final, Self

from pbkv.cluster import credentials
from pbkv.cluster.processes import free_ports
from pbkv.cluster.state import ClusterState, ProcessRecord, logs_dir
from pbkv.errors import PbkvError

ETCD_BINARY: Final = "etcd"
ETCD_HEARTBEAT_MS: Final = 50
ETCD_ELECTION_MS: Final = 500
ETCD_START_TIMEOUT_S: Final = 20.0
ETCD_STOP_TIMEOUT_S: Final = 5.0
ETCD_DIR_NAME: Final = "etcd"
ETCD_MEMBERS: Final = 3
STATUS_JSON: Final = ("endpoint", "status", "-w", "json")


class EtcdMissing(PbkvError):
    """``etcd`` is not installed (``scripts/ensure_etcd.sh`` installs Debian's)."""


@dataclass(frozen=True, slots=True)
class EtcdMember:
    name: str
    client_port: int
    peer_port: int
    data_dir: Path
    log_file: Path

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.client_port}"

    def peer_url(self, tls: bool = False) -> str:
        return f"{'https' if tls else 'http'}://127.0.0.1:{self.peer_port}"


def etcd_binary() -> str:
    path = shutil.which(ETCD_BINARY)
    if path is None:
        raise EtcdMissing(
            "etcd is not installed: run scripts/ensure_etcd.sh (apt-get install etcd-server)"
        )
    return path


def plan_members(directory: Path, count: int = 3) -> list[EtcdMember]:
    """``count`` members with free ports and data directories under ``directory``."""
    ports = free_ports("127.0.0.1", 2 * count)
    return [
        EtcdMember(
            f"etcd{index + 1}",
            ports[2 * index],
            ports[2 * index + 1],
            directory / f"etcd{index + 1}.data",
            directory / f"etcd{index + 1}.log",
        )
        for index in range(count)
    ]


def member_argv(
    member: EtcdMember, members: list[EtcdMember], new: bool = True, tls: Path | None = None
) -> list[str]:
    """The command line of one member of ``members``; ``tls``: serve clients over TLS with the
    certificates of that directory (``tls/ETCDN.pem``, made by the caller), and talk to the
    other members over TLS with the same certificate."""
    secure = tls is not None
    initial = ",".join(f"{m.name}={m.peer_url(secure)}" for m in members)
    client_url = f"{'https' if secure else 'http'}://{member.endpoint}"
    argv = [
        etcd_binary(),
        "--name", member.name,
        "--data-dir", str(member.data_dir),
        "--listen-client-urls", client_url,
        "--advertise-client-urls", client_url,
        "--listen-peer-urls", member.peer_url(secure),
        "--initial-advertise-peer-urls", member.peer_url(secure),
        "--initial-cluster", initial,
        "--initial-cluster-state", "new" if new else "existing",
        "--initial-cluster-token", f"pbkv-{members[0].client_port}",
        "--heartbeat-interval", str(ETCD_HEARTBEAT_MS),
        "--election-timeout", str(ETCD_ELECTION_MS),
        "--log-level", "warn",
    ]  # fmt: skip
    if tls is not None:
        cert, key, ca = (str(tls / f"{member.name}.pem"), str(tls / f"{member.name}.key"),
                         str(tls / "ca.pem"))  # fmt: skip
        argv += ["--cert-file", cert, "--key-file", key, "--trusted-ca-file", ca,
                 "--client-cert-auth", "--peer-cert-file", cert, "--peer-key-file", key,
                 "--peer-trusted-ca-file", ca, "--peer-client-cert-auth"]  # fmt: skip
    return argv


def endpoints_text(members: list[EtcdMember]) -> str:
    """``http://h:p,...`` as ``--etcd`` takes it."""
    return ",".join(f"http://{member.endpoint}" for member in members)


def wait_healthy(
    members: list[EtcdMember], timeout_s: float = ETCD_START_TIMEOUT_S, tls: Path | None = None
) -> None:
    """Until a put through each of ``members`` succeeds (a quorum is up and they are part of
    it); ``tls``: over TLS with that directory's client certificate. Raises ``PbkvError``."""
    for member in members:
        _wait_put(member.endpoint, timeout_s, tls)


def _wait_put(endpoint: str, timeout_s: float, tls: Path | None = None) -> None:
    etcdctl = shutil.which("etcdctl")
    deadline = time.monotonic() + timeout_s
    last = ""
    secure: list[str] = []
    if tls is not None:
        endpoint = f"https://{endpoint}"
        secure = ["--cacert", str(tls / "ca.pem"), "--cert", str(tls / "client.pem"),
                  "--key", str(tls / "client.key")]  # fmt: skip
    while time.monotonic() < deadline:
        if etcdctl is None:
            raise EtcdMissing("etcdctl is not installed (apt-get install etcd-client)")
        result = subprocess.run(
            [etcdctl, "--endpoints", endpoint, *secure, "--command-timeout=1s", "put",
             "/pbkv-probe", "1"],
            capture_output=True,
            text=True,
            check=False,
            env={"ETCDCTL_API": "3", "PATH": "/usr/bin:/bin"},
        )  # fmt: skip
        if result.returncode == 0:
            return
        lines = (result.stderr or result.stdout).strip().splitlines()
        last = lines[-1] if lines else f"etcdctl exited with {result.returncode}"
        time.sleep(0.1)
    raise PbkvError(f"etcd did not become healthy in {timeout_s:g} s: {last}")


class EtcdCluster:
    """``count`` etcd members as children of this process; see the module docstring."""

    def __init__(self, directory: Path, count: int = 3) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.members = plan_members(directory, count)
        self.processes: list[subprocess.Popen[bytes] | None] = [None] * count

    @property
    def endpoints(self) -> str:
        return endpoints_text(self.members)

    def start(self) -> Self:
        for index in range(len(self.members)):
            self.spawn(index, new=True)
        wait_healthy(self.members)
        return self

    def spawn(self, index: int, new: bool = False) -> None:
        member = self.members[index]
        argv = member_argv(member, self.members, new=new)
        with open(member.log_file, "ab") as log:
            self.processes[index] = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )

    def leader_index(self) -> int | None:
        """Which member is etcd's own (raft) leader, if one answers."""
        etcdctl = shutil.which("etcdctl")
        if etcdctl is None:
            raise EtcdMissing("etcdctl is not installed (apt-get install etcd-client)")
        endpoints = ",".join(member.endpoint for member in self.members)
        result = subprocess.run(
            [etcdctl, "--endpoints", endpoints, "--command-timeout=1s", *STATUS_JSON],
            capture_output=True,
            text=True,
            check=False,
            env={"ETCDCTL_API": "3", "PATH": "/usr/bin:/bin"},
        )
        with contextlib.suppress(ValueError, KeyError, TypeError):
            for entry in json.loads(result.stdout or "[]"):
                status = entry["Status"]
                if status["leader"] == status["header"]["member_id"]:
                    ports = [m.endpoint for m in self.members]
                    return ports.index(entry["Endpoint"].removeprefix("http://"))
        return None

    def kill(self, index: int) -> None:
        """kill -9 one member (its data directory stays: ``restart`` brings it back)."""
        process = self.processes[index]
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGCONT)
            process.kill()
            process.wait(ETCD_STOP_TIMEOUT_S)

    def pause(self, index: int) -> None:
        process = self.processes[index]
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGSTOP)

    def resume(self, index: int) -> None:
        process = self.processes[index]
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGCONT)

    def restart(self, index: int) -> None:
        """Start a killed member again on its data directory; returns once it serves."""
        self.kill(index)
        self.spawn(index, new=False)
        wait_healthy([self.members[index]])

    def close(self) -> None:
        for index in range(len(self.members)):
            with contextlib.suppress(OSError, subprocess.TimeoutExpired):
                self.kill(index)


# --- records for the cluster manager (pbkv cluster up --etcd) ---------------------------------


def etcd_records(state: ClusterState, taken: set[int]) -> list[ProcessRecord]:
    """Three etcd members on free ports (``pbkv.cluster.etcd``), data in ``DIR/etcd/``; over
    TLS in a ``--tls`` cluster, each with a certificate of the cluster's CA."""
    members = plan_members(state.directory / ETCD_DIR_NAME, ETCD_MEMBERS)
    while any(m.client_port in taken or m.peer_port in taken for m in members):
        members = plan_members(state.directory / ETCD_DIR_NAME, ETCD_MEMBERS)
    taken.update(port for m in members for port in (m.client_port, m.peer_port))
    tls = cluster_tls(state.directory)
    for member in members if tls is not None else ():
        credentials.ensure_certificate(state.directory, member.name)
    return [
        ProcessRecord(
            name=member.name,
            kind="etcd",
            role_at_start="etcd",
            address=member.endpoint,
            pid=0,
            admin_port=member.peer_port,
            metrics_port=0,
            log_file=str(logs_dir(state.directory) / f"{member.name}.log"),
            argv=tuple(member_argv(member, members, tls=tls)),
            started_at=0.0,
        )
        for member in members
    ]


def cluster_tls(directory: Path) -> Path | None:
    """The ``tls/`` directory of a ``--tls`` cluster, else None."""
    return credentials.tls_dir(directory) if credentials.uses_tls(directory) else None


def endpoints_of(records: list[ProcessRecord], directory: Path) -> str:
    """The ``--etcd`` endpoints of the members ``records`` (``https://`` in a TLS cluster)."""
    scheme = "https" if cluster_tls(directory) is not None else "http"
    return ",".join(f"{scheme}://{record.address}" for record in records)


def viewserver_on_etcd(record: ProcessRecord, endpoints: str, port: int) -> ProcessRecord:
    """``record``'s command line with ``--etcd`` in place of its data directory; with TLS, its
    own certificate presented to etcd too."""
    argv = list(record.argv)
    at = argv.index("--data-dir")
    argv[at : at + 2] = ["--etcd", endpoints, "--etcd-prefix", f"/pbkv/cluster-{port}"]
    if "--tls-cert" in argv:
        for ours, etcds in (("--tls-ca", "--etcd-ca"), ("--tls-cert", "--etcd-cert"),
                            ("--tls-key", "--etcd-key")):  # fmt: skip
            argv += [etcds, argv[argv.index(ours) + 1]]
    return replace(record, argv=tuple(argv))


def member_record(first: ProcessRecord, record: ProcessRecord) -> ProcessRecord:
    """Another view service member: ``first``'s command line with ``record``'s ports."""
    argv = list(first.argv)
    for flag, value in (
        ("--listen", record.address),
        ("--admin-port", str(record.admin_port)),
        ("--metrics-port", str(record.metrics_port)),
    ):
        argv[argv.index(flag) + 1] = value
    return replace(record, argv=tuple(argv))


def wait_records_healthy(
    records: list[ProcessRecord], timeout_s: float, tls: Path | None = None
) -> None:
    """``wait_healthy`` for the members a cluster state records."""
    members = [
        EtcdMember(p.name, int(p.address.rsplit(":", 1)[1]), p.admin_port, Path(), Path())
        for p in records
    ]
    wait_healthy(members, timeout_s, tls)

"""The view service on an etcd that serves its clients over TLS and demands their certificate
(``--client-cert-auth``), as a production etcd does: ``pbkv viewserver --etcd https://...
--etcd-ca --etcd-cert --etcd-key``. Before, ``https://`` endpoints were refused and such an etcd
could not hold pbkv's view at all.

A real etcd member runs with ``--cert-file/--key-file/--trusted-ca-file --client-cert-auth``;
two view service members lead and follow through it, servers join, clients write; the view is
in etcd under the prefix, read back with etcdctl over TLS. A member without a certificate, or
trusting another CA, never leads and says why in its log. With etcd's authentication on, a
member logs in as a user allowed under its prefix (its certificate names a user etcd does not
know, so only the login lets it write); a wrong password never leads.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import pbkv
from pbkv.cluster import credentials
from pbkv.cluster.etcd import member_argv, plan_members
from tests.cluster.helpers import pbkv as pbkv_command
from tests.conftest import STARTUP_TIMEOUT_S
from tests.etcd.conftest import EtcdViewCluster

PASSWORD = "pbkv-etcd-password"
ROOT_PASSWORD = "root-etcd-password"


class TlsEtcd:
    """One etcd member serving clients over TLS with client-certificate authentication."""

    def __init__(self, directory: Path, pki: Path, extra: tuple[str, ...] = ()) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        [self.member] = plan_members(directory, 1)
        self.pki = pki
        self.extra = extra  # more etcd flags
        self.process: subprocess.Popen[bytes] | None = None
        self.login: list[str] = []

    def enable_auth(self, prefix: str) -> None:
        """etcd's authentication on: user ``pbkv`` (password ``PASSWORD``) may read and write
        under ``prefix``, nobody else but root."""
        for command in (["user", "add", f"root:{ROOT_PASSWORD}"], ["role", "add", "pbkv"],
                        ["role", "grant-permission", "pbkv", "--prefix=true", "readwrite", prefix],
                        ["user", "add", f"pbkv:{PASSWORD}"], ["user", "grant-role", "pbkv", "pbkv"],
                        ["auth", "enable"]):  # fmt: skip
            result = self.etcdctl(*command)
            assert result.returncode == 0, (command, result.stderr)
        self.login = ["--user", f"root:{ROOT_PASSWORD}"]

    @property
    def endpoint(self) -> str:
        return f"https://{self.member.endpoint}"

    def etcdctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        tls = ["--cacert", str(self.pki / "ca.pem"), "--cert", str(self.pki / "client.pem"),
               "--key", str(self.pki / "client.key"), *self.login]  # fmt: skip
        command = [shutil.which("etcdctl") or "etcdctl", "--endpoints", self.endpoint, *tls]
        return subprocess.run(
            [*command, "--command-timeout=2s", *args], capture_output=True, text=True,
            env={"ETCDCTL_API": "3", "PATH": "/usr/bin:/bin"}, check=False, timeout=30,
        )  # fmt: skip

    def start(self) -> TlsEtcd:
        plain = f"http://{self.member.endpoint}"
        argv = [
            self.endpoint if word == plain else word
            for word in member_argv(self.member, [self.member])
        ]
        pki = self.pki
        argv += ["--cert-file", str(pki / "etcd.pem"), "--key-file", str(pki / "etcd.key"),
                 "--trusted-ca-file", str(pki / "ca.pem"), "--client-cert-auth",
                 *self.extra]  # fmt: skip
        with open(self.member.log_file, "ab") as log:
            self.process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while self.etcdctl("put", "/probe", "1").returncode != 0:
            assert time.monotonic() < deadline, self.member.log_file.read_text()[-2000:]
            time.sleep(0.1)
        return self

    def close(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def pki(tmp_path: Path) -> Path:
    """A CA with certificates for etcd, the view service and clients, and a foreign CA."""
    credentials.create_ca(tmp_path)
    for name in ("etcd", "viewserver"):
        credentials.ensure_certificate(tmp_path, name)
    credentials.create_ca(tmp_path / "foreign")  # a CA that signed nothing of etcd's
    return credentials.tls_dir(tmp_path)


@pytest.fixture
def tls_etcd(tmp_path: Path, pki: Path) -> Iterator[TlsEtcd]:
    etcd = TlsEtcd(tmp_path / "etcd", pki)
    try:
        yield etcd.start()
    finally:
        etcd.close()


def etcd_flags(pki: Path, ca: Path | None = None, certificate: bool = True) -> list[str]:
    flags = ["--etcd-ca", str(ca or pki / "ca.pem")]
    if certificate:
        flags += [
            "--etcd-cert",
            str(pki / "viewserver.pem"),
            "--etcd-key",
            str(pki / "viewserver.key"),
        ]
    return flags


def logged_in_member(
    tmp_path: Path, etcd: TlsEtcd, pki: Path, password: str = PASSWORD, ca: Path | None = None
) -> tuple[EtcdViewCluster, Path]:
    """A one-member view service of an etcd with authentication on, logging in as ``pbkv``
    with ``password`` (in the returned password file); ``ca``: its ``--etcd-ca``."""
    cluster = EtcdViewCluster(tmp_path / "cluster", etcd.endpoint, members=1, dead_pings=40)
    etcd.enable_auth(cluster.prefix)
    password_file = tmp_path / "etcd-password"
    password_file.write_text(password + "\n")
    # etcd checks a password with bcrypt: on a loaded machine a login can outlast the default
    # 0.3 s, and every attempt would end in TimeoutError (seen under a CPU hog).
    cluster.viewservers[0].args += [*etcd_flags(pki, ca=ca), "--etcd-user", "pbkv",
                                    "--etcd-password-file", str(password_file),
                                    "--etcd-request-timeout-s", "1"]  # fmt: skip
    return cluster, password_file


def started(
    directory: Path, etcd: TlsEtcd, members: list[list[str]], servers: int
) -> EtcdViewCluster:
    cluster = EtcdViewCluster(directory, etcd.endpoint, members=len(members), dead_pings=40)
    for node, flags in zip(cluster.viewservers, members, strict=True):
        node.args += flags
    try:
        cluster.start(servers)
    except BaseException:
        cluster.close()
        raise
    return cluster


def test_view_services_lead_and_follow_through_an_etcd_that_demands_tls(
    tmp_path: Path, pki: Path, tls_etcd: TlsEtcd
) -> None:
    cluster = started(tmp_path / "cluster", tls_etcd, [etcd_flags(pki)] * 2, servers=2)
    try:
        with pbkv.Client(cluster.address, timeout=15.0) as kv:
            kv.put("over", "tls")
            assert kv.get("over") == "tls"
        stored = tls_etcd.etcdctl("get", f"{cluster.prefix}/view", "--print-value-only")
        assert stored.returncode == 0 and str(cluster.view().number) in stored.stdout, stored
        assert "leading" in cluster.leader().log_text()
    finally:
        cluster.close()


@pytest.mark.parametrize("wrong", ["no-certificate", "foreign-ca"])
def test_a_member_etcd_refuses_never_leads_and_says_why(
    tmp_path: Path, pki: Path, tls_etcd: TlsEtcd, wrong: str
) -> None:
    flags = {
        "no-certificate": etcd_flags(pki, certificate=False),
        "foreign-ca": etcd_flags(pki, ca=pki.parent / "foreign" / "tls" / "ca.pem"),
    }[wrong]
    cluster = EtcdViewCluster(tmp_path / "cluster", tls_etcd.endpoint, members=1, dead_pings=40)
    member = cluster.viewservers[0]
    member.args += flags
    try:
        member.start()
        said = {
            "no-certificate": "client_certificate=no",
            "foreign-ca": "CERTIFICATE_VERIFY_FAILED",
        }
        deadline = time.monotonic() + 10.0
        # An attempt may time out on a loaded machine before the handshake's verdict: wait
        # for the reason rather than for the first etcd_unreachable line.
        while not ("etcd_unreachable" in member.log_text() and said[wrong] in member.log_text()):
            assert time.monotonic() < deadline, member.log_text()[-2000:]
            time.sleep(0.1)
        time.sleep(1.0)  # etcd refuses every attempt: never a leader
        text = member.log_text()
        assert " leading " not in text, text
        assert not [line for line in text.splitlines() if not line.startswith("20")], text[-2000:]
    finally:
        cluster.close()


@pytest.mark.parametrize("password", [PASSWORD, "not-the-password"])
def test_a_member_logs_in_to_an_etcd_with_authentication_on(
    tmp_path: Path, pki: Path, tls_etcd: TlsEtcd, password: str
) -> None:
    """The view service's certificate names a user etcd does not know (``viewserver``): only
    the login as ``pbkv`` lets it write under the prefix."""
    cluster, _ = logged_in_member(tmp_path, tls_etcd, pki, password)
    member = cluster.viewservers[0]
    try:
        if password == PASSWORD:
            cluster.start(servers=2)
            with pbkv.Client(cluster.address, timeout=15.0) as kv:
                kv.put("logged", "in")
            stored = tls_etcd.etcdctl("get", f"{cluster.prefix}/view", "--print-value-only")
            assert str(cluster.view().number) in stored.stdout, stored
            assert "request_timeout_s=1.0 " in member.log_text()  # the flag is in force
            return
        member.start()
        deadline = time.monotonic() + 10.0
        # Not the first etcd_unreachable line: on a loaded machine an attempt may time out
        # before etcd's verdict arrives; the member retries and must then say why.
        while "authentication failed" not in member.log_text():
            assert time.monotonic() < deadline, member.log_text()[-2000:]
            time.sleep(0.1)
        assert " leading " not in member.log_text()
    finally:
        cluster.close()


def test_a_member_logged_in_rides_out_a_restart_of_etcd(
    tmp_path: Path, pki: Path, tls_etcd: TlsEtcd
) -> None:
    """After etcd restarts the member leads and stores views: servers that join then form a
    view it writes to etcd. Whether it lost its leadership meanwhile depends on how fast etcd
    came back (it keeps leases over a restart), so the test asks only for the outcome. (etcd
    3.4 also still accepts a token issued before its restart, measured: the frozen member's
    test below is the one that needs a new login.)"""
    cluster, _ = logged_in_member(tmp_path, tls_etcd, pki)
    try:
        cluster.start(servers=0)
        tls_etcd.close()
        tls_etcd.start()
        for _ in range(2):
            cluster.add_server()
        with pbkv.Client(cluster.address, timeout=15.0) as kv:
            kv.put("after", "restart")
        number = cluster.view().number
        stored = tls_etcd.etcdctl("get", f"{cluster.prefix}/view", "--print-value-only")
        assert stored.returncode == 0 and f'"number":{number}' in stored.stdout.replace(" ", "")
    finally:
        cluster.close()


def test_a_member_logs_in_again_when_its_token_expired_while_it_was_frozen(
    tmp_path: Path, pki: Path
) -> None:
    """A token lives ``--auth-token-ttl`` seconds after its last use (1 s here): a member frozen
    for 3 s wakes up with a token etcd forgot and must log in again before it can store the
    next view (the primary's failover)."""
    etcd = TlsEtcd(tmp_path / "etcd", pki, extra=("--auth-token-ttl", "1")).start()
    cluster, _ = logged_in_member(tmp_path, etcd, pki)
    member = cluster.viewservers[0]
    try:
        cluster.start(servers=3)
        with pbkv.Client(cluster.address, timeout=15.0) as kv:
            kv.put("before", "freeze")
        before, primary = cluster.view().number, cluster.primary()
        member.stop()
        time.sleep(3.0)
        member.cont()
        primary.kill()
        with pbkv.Client(cluster.address, timeout=20.0) as kv:
            kv.put("after", "thaw")
            assert kv.get("before") == "freeze"
        after = cluster.view().number
        assert after > before
        stored = etcd.etcdctl("get", f"{cluster.prefix}/view", "--print-value-only")
        assert stored.returncode == 0 and f'"number":{after}' in stored.stdout.replace(" ", "")
    finally:
        cluster.close()
        etcd.close()


@pytest.mark.parametrize("wrong", ["password", "ca"])
def test_a_member_refused_by_etcd_leads_once_its_files_are_mended_and_reloaded(
    tmp_path: Path, pki: Path, tls_etcd: TlsEtcd, wrong: str
) -> None:
    """SIGHUP reads the etcd security files again (``pbkv.runtime.reload``): a member started
    with a wrong password, or trusting a CA that did not sign etcd's certificate, never leads;
    with the file mended and the signal sent, its next client uses it and it leads."""
    ca_file = tmp_path / "etcd-ca.pem"
    foreign = pki.parent / "foreign" / "tls" / "ca.pem"
    ca_file.write_bytes((foreign if wrong == "ca" else pki / "ca.pem").read_bytes())
    password = "not-the-password" if wrong == "password" else PASSWORD
    cluster, password_file = logged_in_member(tmp_path, tls_etcd, pki, password, ca_file)
    member = cluster.viewservers[0]
    said = {"password": "authentication failed", "ca": "CERTIFICATE_VERIFY_FAILED"}[wrong]
    try:
        member.start()
        deadline = time.monotonic() + 10.0
        while said not in member.log_text():
            assert time.monotonic() < deadline, member.log_text()[-2000:]
            time.sleep(0.1)
        member.signal(signal.SIGHUP)  # the files unchanged: still refused
        time.sleep(1.0)
        assert " leading " not in member.log_text() and member.alive
        password_file.write_text(PASSWORD)
        ca_file.write_bytes((pki / "ca.pem").read_bytes())
        member.signal(signal.SIGHUP)
        deadline = time.monotonic() + 15.0
        while " leading " not in member.log_text():
            assert time.monotonic() < deadline, member.log_text()[-2000:]
            time.sleep(0.1)
        assert member.log_text().count("credentials_reloaded rotating=- etcd=reloaded") == 2
    finally:
        cluster.close()


@pytest.mark.parametrize(
    ("flags", "said"),
    [
        (["--etcd-ca", "/dev/zero"], "--etcd-ca /dev/zero is over 1048576 bytes"),
        (["--etcd-ca", "/nonexistent.pem"], "cannot read --etcd-ca /nonexistent.pem"),
        (["--etcd-cert", "CERT"], "--etcd-cert and --etcd-key go together"),
        (["--etcd-user", "u", "--etcd-password-file", "/dev/zero"], "is over 4096 bytes"),
        (["--etcd-user", "u"], "--etcd-user and --etcd-password-file go together"),
        (["--etcd-request-timeout-s", "1.5"], "must not exceed --etcd-lease-ttl-s (1)"),
        (["--etcd-request-timeout-s", "0"], "0.0 is not in the range 0.05<=x<=60.0"),
    ],
)
def test_bad_etcd_security_flags_are_one_line_exit_2(
    pki: Path, flags: list[str], said: str
) -> None:
    """Checked before anything starts; a device given by mistake is refused, not read forever."""
    flags = [str(pki / "viewserver.pem") if flag == "CERT" else flag for flag in flags]
    command = ["viewserver", "--listen", "127.0.0.1:0", "--etcd", "https://127.0.0.1:1"]
    result = pbkv_command(*command, *flags)
    assert result.returncode == 2 and said in result.stderr, result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr

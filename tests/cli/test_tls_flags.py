"""TLS flags that cannot take effect are refused, naming the missing flag, and a ``--tls-ca`` must
be a CA file (review: ``pbkv server --tls-ca ca.pem`` without ``--tls-cert`` started in
plaintext; the client took ``--tls-key`` without ``--tls-cert``; a missing CA file went
unnoticed until a connection)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pbkv.cluster.credentials import CA_FILE, create_ca, ensure_certificate, tls_dir
from tests.cli.helpers import UNREACHABLE, one_line, run_pbkv

SERVER = ("server", "--listen", "127.0.0.1:0", "--viewserver", UNREACHABLE)


@pytest.fixture
def ca(tmp_path: Path) -> str:
    create_ca(tmp_path)
    return str(tls_dir(tmp_path) / CA_FILE)


def test_a_node_refuses_tls_flags_without_a_certificate(ca: str, tmp_path: Path) -> None:
    for flags, missing in ((("--tls-ca", ca), "--tls-ca"), (("--tls-key", ca), "--tls-key")):
        line = one_line(run_pbkv(*SERVER, *flags, cwd=tmp_path, timeout=20))
        assert (
            line == f"pbkv: error: {missing} needs --tls-cert (without it {missing} has no effect)"
        )


def test_a_client_refuses_a_key_without_a_certificate(ca: str) -> None:
    line = one_line(run_pbkv("--tls-key", ca, "get", "k", "--viewserver", UNREACHABLE))
    assert "--tls-key needs --tls-cert" in line
    alone = run_pbkv("--tls-ca", ca, "get", "k", "--viewserver", UNREACHABLE)  # verifies servers
    assert alone.returncode == 3, alone.stderr  # unreachable, not refused


@pytest.mark.parametrize("where", ["client", "node"])
def test_a_ca_file_must_exist_and_hold_certificates(where: str, tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    for path, reason in ((tmp_path / "missing.pem", "No such file"), (garbage, "NO_CERTIFICATE")):
        args: tuple[str, ...] = ("--tls-ca", str(path), "get", "k", "--viewserver", UNREACHABLE)
        if where == "node":
            args = (*SERVER, "--tls-ca", str(path), "--tls-cert", str(path))
        line = one_line(run_pbkv(*args, cwd=tmp_path, timeout=20))
        assert f"cannot load the CA certificates {path}: {reason}" in line


def test_tls_flags_before_the_command_name_apply_to_a_node(ca: str, tmp_path: Path) -> None:
    """Re-review: ``pbkv --tls-cert C --tls-key K server ...`` (or ``PBKV_TLS_CERT``) served in
    plaintext: a node read only the flags after its name. Given before it, they are the node's
    certificate files too, with the same refusal when the certificate is missing."""
    line = one_line(run_pbkv("--tls-ca", ca, *SERVER, cwd=tmp_path, timeout=20))
    assert "--tls-ca needs --tls-cert" in line
    ensure_certificate(tmp_path, "node")
    folder = tls_dir(tmp_path)
    flags = ("--tls-cert", str(folder / "node.pem"), "--tls-key", str(folder / "node.key"))
    server = subprocess.Popen(
        [sys.executable, "-m", "pbkv", *flags, *SERVER, "--auth-token-file", token(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=tmp_path,
    )
    try:
        assert server.stdout is not None
        line = server.stdout.readline()
        while line and "auth_" not in line:
            line = server.stdout.readline()
    finally:
        server.kill()
        server.wait()
    assert "tls=on" in line, line


def token(directory: Path) -> str:
    path = directory / "token"
    path.write_text("t" * 32)
    return str(path)

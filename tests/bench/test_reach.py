"""The one reachability rule of ``pbkv bench`` (``pbkv.bench.reach``): the same line and exit
status whatever named the system. Before, the command line checked ``--viewserver`` and
``--redis`` itself (exit 3) and the runner checked again with its own words, so a
``--cluster-dir`` whose view service did not answer was exit 2, ``cannot reach the pbkv service``
with an empty reason."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from pbkv.bench import runner
from pbkv.bench.loadgen import LoadSpec
from pbkv.bench.reach import Unreachable, preflight
from pbkv.cluster.processes import free_port
from pbkv.errors import PbkvError


@contextmanager
def silent_address() -> Iterator[str]:
    """An address that accepts connections (the kernel does) and never answers."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        yield f"127.0.0.1:{silent.getsockname()[1]}"


def test_nothing_listening_is_unavailable_at_once() -> None:
    address = f"127.0.0.1:{free_port()}"
    with pytest.raises(Unreachable, match=f"^cannot reach the view service at {address}$"):
        preflight("pbkv", address)
    with pytest.raises(Unreachable, match=f"^cannot reach the Redis server at {address}$"):
        preflight("redis", address)
    assert Unreachable.exit_code == 3


def test_a_silent_system_is_unavailable_with_the_reason() -> None:
    with silent_address() as address, pytest.raises(Unreachable) as raised:
        preflight("redis", address)
    assert str(raised.value) == f"no answer from the Redis server at {address}: timed out"


def test_the_null_backend_has_nothing_to_check() -> None:
    preflight("null", "127.0.0.1:1")


def test_a_bad_address_is_a_usage_error() -> None:
    with pytest.raises(PbkvError) as raised:
        preflight("redis", "nonsense")
    assert raised.value.exit_code == 2


def test_a_cluster_directory_whose_view_service_is_silent_says_so_as_viewserver_does(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with silent_address() as address:
        target = runner._Target(address, None, ["pbkv cluster in DIR"])
        monkeypatch.setattr(runner, "_cluster_dir_target", lambda *args: target)
        spec = LoadSpec(clients=1, duration_s=0.1, warmup_s=0)
        options = runner.BenchOptions(spec=spec, cluster_dir=Path("DIR"))
        with pytest.raises(Unreachable) as raised:
            runner.run_once(options)
    assert str(raised.value) == f"no answer from the view service at {address}: timed out"


@pytest.mark.integration
def test_a_client_secret_passes_the_check_as_it_passes_for_the_generator(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The check presents the client role, as the generator's clients do: the command line
    asked in the peer role, so a client secret (``--client-token-file``) was refused, exit 4."""
    (tmp_path / "peer").write_text("peer-secret-0123456789")
    (tmp_path / "client").write_text("client-secret-0123456789")
    address = f"127.0.0.1:{free_port()}"
    arguments = ["--listen", address, "--no-data-dir", "--auth-token-file", str(tmp_path / "peer")]
    arguments += ["--client-token-file", str(tmp_path / "client")]
    command = [sys.executable, "-m", "pbkv", "viewserver", *arguments]
    with subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as vs:
        try:
            monkeypatch.setenv("PBKV_AUTH_TOKEN", "client-secret-0123456789")
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                try:
                    preflight("pbkv", address)
                    return
                except Unreachable:
                    time.sleep(0.05)  # not listening yet
            pytest.fail("the view service did not answer in 10 s")
        finally:
            vs.kill()

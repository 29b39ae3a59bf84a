"""The deployment files refer to real pbkv commands, flags and ports: the compose file and the
systemd units are parsed and checked against the CLI itself; the container is built where
Docker is available."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

from pbkv.cli.main import ENV_PREFIX, cli

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "compose.yaml"
UNITS = sorted((ROOT / "deploy" / "systemd").glob("*.service"))


def _command(name: str) -> click.Command:
    ctx = cli.make_context("pbkv", ["--help"], resilient_parsing=True)
    command = cli.get_command(ctx, name)
    assert command is not None, f"no pbkv command {name!r}"
    return command


def _flags(command: click.Command) -> set[str]:
    return {opt for param in command.params for opt in param.opts if opt.startswith("--")}


def check_argv(argv: list[str]) -> dict[str, str]:
    """Fail unless ``argv`` (after ``pbkv``) is a command with only its own flags; returns the
    flags' values."""
    command = _command(argv[0])
    known = _flags(command)
    values: dict[str, str] = {}
    for index, word in enumerate(argv[1:], start=1):
        if word.startswith("--"):
            assert word in known, f"pbkv {argv[0]} has no flag {word}"
            values[word] = argv[index + 1] if index + 1 < len(argv) else ""
    return values


def _port(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


def test_the_compose_cluster_is_a_view_service_and_three_servers_with_real_flags() -> None:
    compose: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    services = compose["services"]
    assert {"viewserver", "s1", "s2", "s3"} <= set(services)
    listens: dict[str, int] = {}
    for name, service in services.items():
        values = check_argv([str(word) for word in service["command"]])
        if "--listen" in values:
            listens[name] = _port(values["--listen"])
        if service["command"][0] == "server":
            viewserver, _, port = values["--viewserver"].rpartition(":")
            assert viewserver in services and listens.get(viewserver) == int(port)
            assert values["--advertise"] == f"{name}:{listens[name]}"  # peers can reach it
            assert _port(values["--metrics-listen"]) == 9100
    for mapping in services["viewserver"].get("ports", []):
        assert int(str(mapping).rsplit(":", 1)[1]) == listens["viewserver"]
    prometheus = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text())
    targets = prometheus["scrape_configs"][0]["static_configs"][0]["targets"]
    assert sorted(targets) == sorted(f"{n}:9100" for n in ("viewserver", "s1", "s2", "s3"))


def test_every_compose_process_is_durable_in_a_volume_the_image_lets_it_write() -> None:
    """A server without --data-dir keeps everything in memory (a host restart loses it all),
    and a volume mounted where the image has no directory of pbkv's is root's: the process
    refuses to start ("cannot write in data directory")."""
    compose: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    created = _directories_created_as_pbkv(ROOT / "Dockerfile")
    for name in ("viewserver", "s1", "s2", "s3"):
        service = compose["services"][name]
        values = check_argv([str(word) for word in service["command"]])
        data_dir = values.get("--data-dir")
        assert data_dir, f"{name} runs without --data-dir"
        if service["command"][0] == "server":
            assert values.get("--fsync") == "always", name
        mounts = {str(m).split(":")[1]: str(m).split(":")[0] for m in service.get("volumes", [])}
        assert data_dir in mounts, f"{name}: no volume at {data_dir}"
        assert mounts[data_dir] in compose["volumes"], name
        assert data_dir in created, f"{data_dir} is not created by the image's user"
    volumes = [
        str(m).split(":")[0] for s in compose["services"].values() for m in s.get("volumes", [])
    ]
    assert len(volumes) == len(set(volumes)), "two processes share a data volume"


def _directories_created_as_pbkv(dockerfile: Path) -> set[str]:
    """Paths ``RUN mkdir -p`` makes after ``USER pbkv`` in the last stage."""
    created: set[str] = set()
    as_pbkv = False
    for line in dockerfile.read_text().splitlines():
        if line.startswith("FROM "):
            as_pbkv = False
        elif line.startswith("USER "):
            as_pbkv = line.split()[1] == "pbkv"
        elif as_pbkv and line.startswith("RUN mkdir -p "):
            created.update(line.removeprefix("RUN mkdir -p ").split())
    return created


def test_the_check_catches_a_flag_that_does_not_exist() -> None:
    with pytest.raises(AssertionError, match="no flag --metrics-addr"):
        check_argv(["server", "--metrics-addr", "0.0.0.0:9100"])


def _unit(path: Path) -> tuple[list[str], dict[str, str]]:
    """``ExecStart`` (after the pbkv executable) and the ``Environment=`` variables."""
    argv: list[str] = []
    env: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if line.startswith("ExecStart="):
            words = line.removeprefix("ExecStart=").split()
            assert words[0].endswith("/pbkv"), line
            argv = words[1:]
        elif line.startswith("Environment="):
            name, _, value = line.removeprefix("Environment=").partition("=")
            env[name] = value
    return argv, env


@pytest.mark.parametrize("unit", UNITS, ids=[u.name for u in UNITS])
def test_systemd_units_use_real_flags_and_environment_variables(unit: Path) -> None:
    argv, env = _unit(unit)
    check_argv(argv)
    flags = _flags(_command(argv[0]))
    prefix = f"{ENV_PREFIX}_{argv[0].upper()}_"
    documented = re.findall(r"(PBKV_[A-Z_]+)=", unit.read_text())
    for variable in {*env, *documented}:
        if variable == "PBKV_VIEWSERVER":
            continue  # the view service's address: the --viewserver option's own envvar
        assert variable.startswith(prefix), variable
        flag = "--" + variable.removeprefix(prefix).lower().replace("_", "-")
        assert flag in flags, f"{variable}: pbkv {argv[0]} has no {flag}"


def _settings(path: Path) -> dict[str, list[str]]:
    """Every ``Key=value`` of a unit, by key (comments left out)."""
    settings: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        key, equals, value = line.partition("=")
        if equals and not line.startswith("#"):
            settings.setdefault(key, []).append(value)
    return settings


def sandbox_problems(path: Path) -> list[str]:
    """Why the unit's process could not keep its state: no ``--data-dir``, one the sandbox
    (``ProtectSystem=strict``) leaves read-only, or a server that acknowledges writes before
    they are on disk."""
    argv, _ = _unit(path)
    values = check_argv(argv)
    data_dir = values.get("--data-dir")
    if data_dir is None:
        return [f"{path.name}: no --data-dir: its state would live in memory only"]
    settings = _settings(path)
    writable = [f"/var/lib/{d}" for v in settings.get("StateDirectory", []) for d in v.split()]
    writable += [d for v in settings.get("ReadWritePaths", []) for d in v.split()]
    problems = []
    if settings.get("ProtectSystem") == ["strict"] and not any(
        data_dir == d or data_dir.startswith(d.rstrip("/") + "/") for d in writable
    ):
        problems.append(f"{path.name}: --data-dir {data_dir} is read-only under ProtectSystem")
    if argv[0] == "server" and values.get("--fsync", "always") != "always":
        problems.append(f"{path.name}: --fsync {values['--fsync']} loses writes in a power cut")
    return problems


@pytest.mark.parametrize("unit", UNITS, ids=[u.name for u in UNITS])
def test_every_unit_keeps_its_state_in_a_directory_it_may_write(unit: Path) -> None:
    assert sandbox_problems(unit) == []


def test_the_sandbox_check_catches_a_server_unit_in_memory_or_read_only(tmp_path: Path) -> None:
    """The server unit once ran ``pbkv server`` with no --data-dir: a production cluster that
    lost everything when its two replicas went down together."""
    unit = tmp_path / "pbkv-server@.service"
    unit.write_text("[Service]\nProtectSystem=strict\nExecStart=/usr/local/bin/pbkv server\n")
    assert "no --data-dir" in sandbox_problems(unit)[0]
    unit.write_text(
        "[Service]\nProtectSystem=strict\n"
        "ExecStart=/usr/local/bin/pbkv server --data-dir /var/lib/pbkv/%i\n"
    )
    assert "read-only" in sandbox_problems(unit)[0]


def test_the_view_service_unit_starts_from_its_environment_alone(tmp_path: Path) -> None:
    argv, env = _unit(ROOT / "deploy" / "systemd" / "pbkv-viewserver.service")
    env = {**env, "PBKV_VIEWSERVER_LISTEN": "127.0.0.1:0"}
    env["PBKV_VIEWSERVER_METRICS_LISTEN"] = "127.0.0.1:0"
    argv = [word.replace("/var/lib/pbkv", str(tmp_path)) for word in argv]
    process = subprocess.Popen(
        [sys.executable, "-m", "pbkv", *argv],
        env={**os.environ, **env},
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stderr is not None
        seen = [process.stderr.readline() for _ in range(2)]
        assert "metrics_listening address=127.0.0.1:" in seen[0], seen
        assert " listening address=127.0.0.1:" in seen[1], seen
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_the_deploy_files_point_at_sections_the_guide_has() -> None:
    """The units and the alert rules send an operator to `docs/guide.md §12b` for the
    procedures (replace a server, rolling restart, backup, rotation): that section exists."""
    headings = re.findall(r"^#+ (\d+[a-z]?)\. ", (ROOT / "docs" / "guide.md").read_text(), re.M)
    files = [*UNITS, ROOT / "deploy" / "prometheus.yml", ROOT / "deploy" / "prometheus-alerts.yml"]
    cited = {ref for path in files for ref in re.findall(r"§(\d+[a-z]?)", path.read_text())}
    assert "12b" in cited
    assert cited - set(headings) == set()


def _docker_works() -> bool:
    if shutil.which("docker") is None:
        return False
    probe = subprocess.run(["docker", "info"], capture_output=True, timeout=30, check=False)
    return probe.returncode == 0


def test_the_container_builds_and_runs_as_a_non_root_user() -> None:
    if not _docker_works():
        pytest.skip("docker is not installed or its daemon is not running here")
    tag = "pbkv:test"
    subprocess.run(["docker", "build", "-t", tag, str(ROOT)], check=True, timeout=600)
    user = subprocess.run(
        ["docker", "run", "--rm", "--entrypoint", "id", tag, "-u"],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    assert user.stdout.strip() != "0"
    version = subprocess.run(
        ["docker", "run", "--rm", tag, "--version"],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    assert version.stdout.startswith("pbkv, version")

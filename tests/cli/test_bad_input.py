"""Bad input is one line and exit 2, never a traceback with exit 1 (which means "not found" or
"not linearizable"): arguments and files that are not UTF-8, digits that are not ASCII, a closed
standard input, a seed beyond 64 bits; and whatever else escapes is exit 70 with one line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pbkv.cli import main as cli_main
from pbkv.cli.client_commands import shell_line
from pbkv.runtime.config import ConfigError, parse_address
from tests.cli.helpers import UNREACHABLE, one_line, run_pbkv


@pytest.mark.parametrize(
    ("args", "what"),
    [
        (("put", b"\xff", "v"), "key"),
        (("put", "k", b"v\xfe"), "value"),
        (("append", "k", b"\xed\xa0\x80"), "value"),  # an encoded surrogate
        (("get", b"k\xff"), "key"),
        (("delete", b"\xff"), "key"),
    ],
)
def test_a_key_or_value_that_is_not_utf8_is_a_usage_error(
    args: tuple[str | bytes, ...], what: str
) -> None:
    line = one_line(run_pbkv(*args, "--viewserver", UNREACHABLE))
    assert f"{what} must be valid UTF-8" in line


def test_a_history_that_is_not_utf8_is_bad_input_naming_the_line(tmp_path: Path) -> None:
    history = tmp_path / "h.jsonl"
    good = '{"client": "c1", "op": "get", "key": "k", "value": null, "invoke": 1, '
    good += '"complete": 2, "result": null}\n'
    history.write_bytes(good.encode() + b"\xff\xfe\n")
    line = one_line(run_pbkv("check-history", str(history)))
    assert "line 2: not UTF-8" in line and str(history) in line


def test_the_shell_with_standard_input_closed_is_a_usage_error() -> None:
    result = subprocess.run(
        ["sh", "-c", 'exec "$0" -m pbkv shell --viewserver 127.0.0.1:1 <&-', sys.executable],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert "standard input is closed" in one_line(result)


def test_a_shell_line_that_is_not_utf8_is_one_error() -> None:
    with pytest.raises(ValueError, match="not valid UTF-8"):
        shell_line(None, UNREACHABLE, "GET \udcff")  # type: ignore[arg-type]  # never used


@pytest.mark.parametrize(
    "text", ["127.0.0.1:²", "127.0.0.1:٣", "127.0.0.1:" + "9" * 5000, "\udcff:1", "x" * 70 + ":1"]
)
def test_an_address_needs_ascii_digits_and_a_host_name(text: str) -> None:
    with pytest.raises(ConfigError, match="bad address"):
        parse_address(text)


def test_addresses_that_are_not_host_port_are_usage_errors() -> None:
    one_line(run_pbkv("get", "k", "--viewserver", "127.0.0.1:²"))
    one_line(run_pbkv("get", "k", "--viewserver", "127.0.0.1:٣"))
    one_line(run_pbkv("server", "--listen", "127.0.0.1:²", "--viewserver", UNREACHABLE))
    one_line(run_pbkv("get", "k", "--viewserver", b"\xff:1"))


def test_a_seed_beyond_64_bits_is_a_usage_error(tmp_path: Path) -> None:
    result = run_pbkv("cluster", "unreliable", "s1", "--seed", "9" * 20, "--dir", "c", cwd=tmp_path)
    assert "--seed" in one_line(result)


def _raise(*args: Any, **kwargs: Any) -> None:
    raise RuntimeError("an unexpected\nproblem")


def test_an_unexpected_error_is_one_line_and_exit_70(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("PBKV_DEBUG", raising=False)
    monkeypatch.setattr(cli_main.cli, "main", _raise)
    with pytest.raises(SystemExit) as exited:
        cli_main.main()
    assert exited.value.code == 70
    assert capsys.readouterr().err == (
        "pbkv: internal error: RuntimeError: an unexpected problem "
        "(please report; PBKV_DEBUG=1 shows the traceback)\n"
    )
    monkeypatch.setenv("PBKV_DEBUG", "1")
    with pytest.raises(RuntimeError):
        cli_main.main()


@pytest.mark.parametrize(("option", "value"), [("--clients", "100000"), ("--procs", "100000")])
def test_bench_refuses_more_clients_or_processes_than_it_can_run(option: str, value: str) -> None:
    """Review: 'bench --clients 100000 --procs 100000' would fork 100,000 generators."""
    assert "is not in the range" in one_line(run_pbkv("bench", option, value))

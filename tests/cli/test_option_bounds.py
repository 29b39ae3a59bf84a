"""Every float option is finite and bounded: ``nan``, ``inf`` and absurd magnitudes are usage
errors (exit 2, one line), from the command line and from the environment alike, instead of
hanging or crashing whatever takes them (review: ``--timeout nan`` tracebacks, ``--budget inf``
never ends, ``cluster up --ping-interval 1e300`` hangs)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import click
import pytest

from pbkv.cli.main import cli
from tests.cli.helpers import one_line, run_pbkv


def _commands(group: click.Group, path: tuple[str, ...]) -> Iterator[tuple[str, click.Command]]:
    ctx = click.Context(group)
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        assert command is not None
        yield " ".join((*path, name)), command
        if isinstance(command, click.Group):
            yield from _commands(command, (*path, name))


def float_options() -> list[tuple[str, click.Option]]:
    found = [
        (f"{where} {option.opts[0]}", option)
        for where, command in [("pbkv", cli), *_commands(cli, ("pbkv",))]
        for option in command.params
        if isinstance(option, click.Option) and isinstance(option.type, click.types.FloatParamType)
    ]
    assert len(found) > 40, found  # the node, client, cluster, bench and sim options are in
    return found


@pytest.mark.parametrize("text", ["nan", "NaN", "inf", "1e400", "1e300"])
def test_every_float_option_refuses_non_finite_and_huge_values(text: str) -> None:
    accepted = []
    for where, option in float_options():
        try:
            option.type.convert(text, option, None)
        except click.BadParameter:
            continue
        accepted.append(where)
    assert not accepted, f"{text} accepted by {accepted}"


def test_every_float_option_shows_its_upper_bound_in_help() -> None:
    unbounded = [w for w, o in float_options() if getattr(o.type, "max", None) is None]
    assert not unbounded, unbounded


LATER_USAGE_ERROR = ("--servers", "100")
"""Refused by every version after the option before it: the old code, which took that option,
stops here instead of starting a cluster."""


@pytest.mark.parametrize(
    ("args", "env", "option"),
    [
        (("get", "k", "--timeout", "nan", "--viewserver", "127.0.0.1:1"), {}, "--timeout"),
        (("get", "k", "--viewserver", "127.0.0.1:1"), {"PBKV_GET_TIMEOUT": "nan"}, "--timeout"),
        (("check-history", os.devnull, "--budget", "inf"), {}, "--budget"),
        (("cluster", "up", "--ping-interval", "1e300", *LATER_USAGE_ERROR), {}, "--ping-interval"),
        (("sim", "--seed", "1", "--crash-rate", "nan"), {}, "--crash-rate"),
        (("cluster", "up", "--dead-pings", "9" * 20, *LATER_USAGE_ERROR), {}, "--dead-pings"),
        (
            ("viewserver", "--listen", "127.0.0.1:0", "--dead-pings", "1001", "--backups", "0"),
            {},
            "--dead-pings",
        ),
    ],
)
def test_a_non_finite_or_out_of_bound_value_is_one_line_and_exit_2(
    args: tuple[str, ...], env: dict[str, str], option: str, tmp_path: Path
) -> None:
    assert f"'{option}'" in one_line(run_pbkv(*args, cwd=tmp_path, env=env))

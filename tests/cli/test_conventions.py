"""Operator conventions of the CLI: one exit-code table in every --help, an example in every
--help, one-line help never cut off, every option from the environment, `set` as `put`."""

from __future__ import annotations

from click.testing import CliRunner

from pbkv.cli.main import cli, first_sentence
from tests.cli.helpers import run_pbkv as pbkv
from tests.conftest import Cluster


def _all_commands() -> list[list[str]]:
    ctx = cli.make_context("pbkv", ["--help"], resilient_parsing=True)
    found = []
    for name in cli.list_commands(ctx):
        command = cli.get_command(ctx, name)
        assert command is not None
        found.append([name])
        for sub in getattr(command, "commands", {}):
            found.append([name, sub])
    return found


def test_every_help_has_an_example_and_the_one_exit_code_table() -> None:
    runner = CliRunner()
    commands = _all_commands()
    assert len(commands) > 25  # the cluster subcommands are included
    for words in commands:
        result = runner.invoke(cli, [*words, "--help"], terminal_width=100)
        assert result.exit_code == 0, (words, result.output)
        assert "Example" in result.output, words
        assert "Exit codes: 0 ok, 1 not found" in result.output, words
        assert "4 refused" in result.output, words


def test_every_paragraph_of_a_help_starts_at_the_help_margin() -> None:
    """`pbkv demo --help` printed its text after the summary 4 columns to the right, with runs
    of blanks inside (its scenario list, appended at column 0, kept click from dedenting it)."""
    runner = CliRunner()
    for words in _all_commands():
        text = runner.invoke(cli, [*words, "--help"], terminal_width=100).output
        paragraphs = text.split("Options:")[0].split("\n\n")[1:]
        for first in (p.strip("\n").splitlines()[0] for p in paragraphs if p.strip()):
            assert first.startswith("  ") and first[2] != " ", (words, first)


def test_command_lists_never_cut_a_help_line_off() -> None:
    runner = CliRunner()
    for words in ([], ["cluster"]):
        listing = runner.invoke(cli, [*words, "--help"]).output.split("Commands:")[1]
        assert "..." not in listing, listing
    assert first_sentence("Kill it. Then more.\n\nDetails.") == "Kill it"
    assert first_sentence("One line\nwrapped.") == "One line wrapped"


def test_every_option_reads_the_environment() -> None:
    result = pbkv("get", "k", env={"PBKV_GET_TIMEOUT": "-1"})
    assert result.returncode == 2 and "--timeout" in result.stderr, result.stderr
    result = pbkv("cluster", "up", env={"PBKV_CLUSTER_UP_SERVERS": "0"})
    assert result.returncode == 2 and "--servers" in result.stderr, result.stderr


def test_set_is_put_and_a_missing_key_is_not_an_outage(shared_cluster: Cluster) -> None:
    address = shared_cluster.address
    assert pbkv("set", "conventions-k", "v1", "--viewserver", address).returncode == 0
    got = pbkv("get", "conventions-k", env={"PBKV_VIEWSERVER": address})
    assert (got.returncode, got.stdout) == (0, "v1\n")
    missing = pbkv("get", "conventions-missing", "--viewserver", address)
    assert (missing.returncode, missing.stderr) == (1, "not found\n")

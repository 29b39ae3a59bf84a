"""The CLI's lazy command table matches what the command modules export."""

from __future__ import annotations

import importlib
import subprocess
import sys

from pbkv.cli.main import COMMAND_MODULES, cli


def test_table_names_exactly_the_commands_each_module_exports() -> None:
    exported = {
        command.name: module_name
        for module_name in set(COMMAND_MODULES.values())
        for command in importlib.import_module(module_name).COMMANDS
    }
    assert exported == COMMAND_MODULES


def test_every_listed_command_loads() -> None:
    ctx = cli.make_context("pbkv", ["--help"], resilient_parsing=True)
    for name in cli.list_commands(ctx):
        command = cli.get_command(ctx, name)
        assert command is not None and command.name == name


def test_a_client_command_does_not_import_the_simulator_or_the_benchmark() -> None:
    probe = (
        "import sys\n"
        "from pbkv.cli.main import cli\n"
        "try:\n"
        "    cli.main(['get', '--help'], standalone_mode=False)\n"
        "finally:\n"
        "    heavy = [m for m in ('pbkv.sim', 'pbkv.bench', 'pbkv.demo') if m in sys.modules]\n"
        "    print('HEAVY', heavy)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert "HEAVY []" in result.stdout, result.stdout

"""Entry point of the ``pbkv`` command.

Commands live in sibling modules, each exporting ``COMMANDS: list[click.Command]``. This module
names them in ``COMMAND_MODULES``, imports a module only when one of its commands runs, and turns
every error into one line on stderr and a non-zero exit code (2 for usage errors and unreachable
services, 1 for other failures), never a traceback.
"""

from __future__ import annotations

import importlib
import sys

import click

from pbkv import __version__
from pbkv.errors import PbkvError

COMMAND_MODULES: dict[str, str] = {
    "viewserver": "pbkv.cli.node_commands",
    "server": "pbkv.cli.node_commands",
    "put": "pbkv.cli.client_commands",
    "append": "pbkv.cli.client_commands",
    "get": "pbkv.cli.client_commands",
    "delete": "pbkv.cli.client_commands",
    "status": "pbkv.cli.client_commands",
    "dump": "pbkv.cli.client_commands",
    "shell": "pbkv.cli.client_commands",
    "check-history": "pbkv.cli.check_commands",
    "sim": "pbkv.cli.sim_commands",
    "cluster": "pbkv.cli.cluster_commands",
    "demo": "pbkv.cli.demo_commands",
    "bench": "pbkv.cli.bench_commands",
    "dashboard": "pbkv.cli.dashboard_commands",
}
"""Which module holds each command. Modules are imported only when their command runs, so a
one-shot ``pbkv get`` does not pay for the simulator, the demo or the benchmark."""

EXIT_FAILURE = 1
EXIT_USAGE = 2


class LazyGroup(click.Group):
    """A group whose subcommands are imported from ``COMMAND_MODULES`` on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMAND_MODULES)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        module_name = COMMAND_MODULES.get(cmd_name)
        if module_name is None:
            return None
        module = importlib.import_module(module_name)
        return next((c for c in module.COMMANDS if c.name == cmd_name), None)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="pbkv")
def cli() -> None:
    """pbkv: a primary-backup replicated key-value store.

    \b
    Example (a cluster by hand, each in its own terminal):
      pbkv viewserver --listen 127.0.0.1:7000
      pbkv server --listen 127.0.0.1:7001 --viewserver 127.0.0.1:7000
      pbkv put greeting hello
    """


def main() -> None:
    """Run the CLI; map errors to one line and an exit code."""
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        sys.stderr.write("pbkv: aborted\n")
        sys.exit(EXIT_FAILURE)
    except click.UsageError as error:
        command = error.ctx.command_path if error.ctx is not None else "pbkv"
        sys.stderr.write(f"pbkv: error: {error.format_message()} (see '{command} --help')\n")
        sys.exit(EXIT_USAGE)
    except click.ClickException as error:
        sys.stderr.write(f"pbkv: error: {error.format_message()}\n")
        sys.exit(error.exit_code)
    except PbkvError as error:
        sys.stderr.write(f"pbkv: error: {error}\n")
        sys.exit(getattr(error, "exit_code", EXIT_FAILURE))
    except KeyboardInterrupt:
        sys.stderr.write("pbkv: interrupted\n")
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(EXIT_FAILURE)
    except OSError as error:
        sys.stderr.write(f"pbkv: error: {error.strerror or error}\n")
        sys.exit(EXIT_USAGE)

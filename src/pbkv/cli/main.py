"""Entry point of the ``pbkv`` command.

Commands live in sibling modules, each exporting ``COMMANDS: list[click.Command]``; this module
only assembles the group and turns every error into one line on stderr and a non-zero exit code
(2 for usage errors and unreachable services, 1 for other failures), never a traceback.
"""

from __future__ import annotations

import importlib
import sys

import click

from pbkv import __version__
from pbkv.errors import PbkvError

COMMAND_MODULES = (
    "pbkv.cli.node_commands",
    "pbkv.cli.client_commands",
    "pbkv.cli.check_commands",
    "pbkv.cli.sim_commands",
    "pbkv.cli.cluster_commands",
    "pbkv.cli.demo_commands",
    "pbkv.cli.bench_commands",
)

EXIT_FAILURE = 1
EXIT_USAGE = 2


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="pbkv")
def cli() -> None:
    """pbkv: a primary-backup replicated key-value store.

    \b
    Example (a cluster by hand, each in its own terminal):
      pbkv viewserver --listen 127.0.0.1:7000
      pbkv server --listen 127.0.0.1:7001 --viewserver 127.0.0.1:7000
      pbkv put greeting hello
    """


def _register_commands() -> None:
    for module_name in COMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name == module_name:
                continue
            raise
        for command in getattr(module, "COMMANDS", []):
            cli.add_command(command)


_register_commands()


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

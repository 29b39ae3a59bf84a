"""Entry point of the ``pbkv`` command.

Commands live in sibling modules, each exporting ``COMMANDS: list[click.Command]``. This module
names them in ``COMMAND_MODULES``, imports a module only when one of its commands runs, and turns
every error into one line on stderr and an exit code from the one table of ``pbkv.cli.exits``
(shown in every command's ``--help``), never a traceback. Every option can also be given in the
environment: ``PBKV_<COMMAND>_<OPTION>`` (click's ``auto_envvar_prefix``).
"""

from __future__ import annotations

import importlib
import os
import select
import sys

import click

from pbkv import __version__
from pbkv.cli.exits import (
    EXIT_CODES_HELP,
    EXIT_FAILED,
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
)
from pbkv.cli.node_commands import refuse_without_cert, tls_options
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

ENV_PREFIX = "PBKV"
DEBUG_ENV = "PBKV_DEBUG"
"""Set to 1: an internal error shows its traceback instead of one line."""
ALIASES: dict[str, str] = {"set": "put"}
"""Other names of commands (``set`` as in redis-cli)."""


class LazyGroup(click.Group):
    """A group whose subcommands are imported from ``COMMAND_MODULES`` on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMAND_MODULES)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        cmd_name = ALIASES.get(cmd_name, cmd_name)
        module_name = COMMAND_MODULES.get(cmd_name)
        if module_name is None:
            return None
        module = importlib.import_module(module_name)
        command: click.Command | None = next(
            (c for c in module.COMMANDS if c.name == cmd_name), None
        )
        if command is not None:
            _conventions(command)
        return command

    def invoke(self, ctx: click.Context) -> object:
        """Run the command; when what reads its output went away (``pbkv cluster logs | head
        -1``), stop quietly with exit 0, as Unix tools do, instead of click's exit 1."""
        try:
            return super().invoke(ctx)
        except BrokenPipeError as error:
            if not _stdout_closed():  # a socket's: not about our output
                raise PipeClosed(f"{error.strerror or error}: the other side closed") from None
            _discard_stdout()
            sys.exit(EXIT_OK)


class PipeClosed(PbkvError):
    """A connection closed under a write (exit 5, failed)."""

    exit_code = EXIT_FAILED


def _stdout_closed() -> bool:
    """Whether standard output is a pipe (or socket) whose reader went away: ``POLLERR``."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _, events in poller.poll(0))
    except (OSError, ValueError, AttributeError):  # no descriptor (captured output)
        return False


def _discard_stdout() -> None:
    """Point standard output at /dev/null, so that flushing what is still buffered at exit
    does not fail again (``Exception ignored ... BrokenPipeError``, exit 120)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def _conventions(command: click.Command) -> None:
    """Every command's --help ends with the one exit-code table, and its one-line help in the
    command lists is its whole first sentence, never cut off (groups: each subcommand too)."""
    if command.epilog is None or EXIT_CODES_HELP not in command.epilog:
        command.epilog = EXIT_CODES_HELP
    if command.short_help is None and command.help:
        command.short_help = first_sentence(command.help)
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            _conventions(sub)


def first_sentence(text: str) -> str:
    """The first paragraph's first sentence (without its period), on one line."""
    paragraph = " ".join(text.strip().split("\n\n")[0].split())
    sentence, dot, _ = paragraph.partition(". ")
    return sentence.rstrip(".") if dot or paragraph.endswith(".") else paragraph


@click.group(
    cls=LazyGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog=EXIT_CODES_HELP,
)
@click.version_option(__version__, prog_name="pbkv")
@click.option(
    "--auth-token-file",
    type=click.Path(dir_okay=False),
    default=None,
    metavar="FILE",
    help="Secret to present to the cluster (default: $PBKV_AUTH_TOKEN, else the secret of the "
    "cluster directory, else none).",
)
@tls_options
def cli(
    auth_token_file: str | None, tls_cert: str | None, tls_key: str | None, tls_ca: str | None
) -> None:
    """pbkv: a primary-backup replicated key-value store.

    \b
    Example (a cluster by hand, each in its own terminal):
      pbkv viewserver --listen 127.0.0.1:7000
      pbkv server --listen 127.0.0.1:7001 --viewserver 127.0.0.1:7000
      pbkv put greeting hello      (or: pbkv set greeting hello)

    \b
    Every option may come from the environment as PBKV_<COMMAND>_<OPTION>,
    e.g. PBKV_SERVER_LISTEN=0.0.0.0:7001 or PBKV_CLUSTER_UP_SERVERS=5.
    Shell completion: eval "$(_PBKV_COMPLETE=bash_source pbkv)" (zsh_source, fish_source).
    """
    from pbkv.cli.names import cluster_dir
    from pbkv.cluster.credentials import install
    from pbkv.runtime.auth import load_token_file, set_cli_token
    from pbkv.runtime.security import set_cli_tls
    from pbkv.runtime.tls import TlsOptions

    refuse_without_cert(tls_cert, tls_key=tls_key)  # a client's --tls-ca alone verifies servers
    install(cluster_dir(), chosen=False)
    if auth_token_file is not None:
        set_cli_token(load_token_file(auth_token_file))
    if tls_ca is not None or tls_cert is not None:
        set_cli_tls(TlsOptions(tls_cert, tls_key, tls_ca))


def main() -> None:
    """Run the CLI; map errors to one line and an exit code (an unexpected one: exit 70, with
    the traceback only when ``PBKV_DEBUG=1``)."""
    try:
        cli.main(standalone_mode=False, auto_envvar_prefix=ENV_PREFIX)
    except click.exceptions.Abort:
        sys.stderr.write("pbkv: aborted\n")
        sys.exit(EXIT_INTERRUPTED)
    except click.UsageError as error:
        command = error.ctx.command_path if error.ctx is not None else "pbkv"
        sys.stderr.write(f"pbkv: error: {error.format_message()} (see '{command} --help')\n")
        sys.exit(EXIT_USAGE)
    except click.ClickException as error:
        sys.stderr.write(f"pbkv: error: {error.format_message()}\n")
        sys.exit(error.exit_code)
    except PbkvError as error:
        sys.stderr.write(f"pbkv: error: {error}\n")
        sys.exit(error.exit_code)
    except KeyboardInterrupt:
        sys.stderr.write("pbkv: interrupted\n")
        sys.exit(EXIT_INTERRUPTED)
    except BrokenPipeError:
        sys.exit(EXIT_FAILED)
    except OSError as error:
        sys.stderr.write(f"pbkv: error: {os_error_text(error)}\n")
        sys.exit(EXIT_USAGE)
    except Exception as error:
        if os.environ.get(DEBUG_ENV, "") not in ("", "0"):
            raise
        sys.stderr.write(internal_error_line(error) + "\n")
        sys.exit(EXIT_INTERNAL)


def os_error_text(error: OSError) -> str:
    """``REASON: FILE`` (``REASON: FILE -> FILE2`` for a rename), or the reason alone."""
    text = error.strerror or str(error)
    for separator, name in ((": ", error.filename), (" -> ", error.filename2)):
        if name is not None:
            text += separator + (os.fsdecode(name) if isinstance(name, str | bytes) else str(name))
    return text


def internal_error_line(error: Exception) -> str:
    """The one line for an error no handler expected (a bug): its type and message."""
    message = " ".join(str(error).split())
    return (
        f"pbkv: internal error: {type(error).__name__}: {message} "
        f"(please report; {DEBUG_ENV}=1 shows the traceback)"
    )

"""``pbkv check-history``: decide whether a recorded key-value history is linearizable.

Exit codes (a contract with outside tools): 0 linearizable, 1 not linearizable (with an
explanation), 2 unreadable or malformed file, 3 undecided within ``--budget``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from pbkv.check import HistoryError, check_history, format_result, load_history
from pbkv.cli.params import SECONDS

EXIT_LINEARIZABLE = 0
EXIT_VIOLATION = 1
EXIT_BAD_INPUT = 2
EXIT_UNKNOWN = 3


@click.command("check-history")
@click.argument("history_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--budget",
    "budget_s",
    type=SECONDS,
    default=10.0,
    show_default=True,
    help="Seconds the search may take before answering 'unknown' (exit 3).",
)
def check_history_command(history_file: Path, budget_s: float) -> None:
    """Check a history (JSON lines, one operation each) for linearizability.

    \b
    Each line: {"client": "c1", "op": "get|put|append|delete", "key": "k",
                "value": "v" or null, "invoke": 12.5, "complete": 12.9 or null,
                "result": "v" or null}
    `complete` null: the operation never returned (it may or may not have happened).

    \b
    Exit codes: 0 linearizable, 1 not linearizable, 2 bad input, 3 undecided in --budget.

    \b
    Example:
      pbkv check-history run.jsonl --budget 30
    """
    try:
        operations = load_history(history_file)
    except HistoryError as error:
        click.echo(f"pbkv: error: {history_file}: {error}", err=True)
        sys.exit(EXIT_BAD_INPUT)
    except OSError as error:
        click.echo(f"pbkv: error: cannot read {history_file}: {error.strerror}", err=True)
        sys.exit(EXIT_BAD_INPUT)
    result = check_history(operations, budget_s=budget_s)
    click.echo(format_result(result))
    codes = {"ok": EXIT_LINEARIZABLE, "violation": EXIT_VIOLATION, "unknown": EXIT_UNKNOWN}
    sys.exit(codes[result.verdict])


COMMANDS = [check_history_command]

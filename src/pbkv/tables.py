"""The one table renderer of pbkv (``rich`` underneath): every table a command prints.

Plain text tables have one header line and one line per row, columns separated by spaces, so
scripts can split them; ``rule=True`` adds a line of dashes under the header. With ``styles``
a cell whose text is a key gets that colour (ANSI): ``click.echo`` strips colours when stdout is
not a terminal, so piped output stays plain. ``markdown=True`` gives a Markdown table (for the
records in docs/ and the demo report).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from io import StringIO
from typing import Final

from rich.box import Box
from rich.console import Console
from rich.table import Table
from rich.text import Text

RULE_BOX: Final = Box("    \n    \n -  \n    \n    \n    \n    \n    \n")
"""No borders; a line of dashes under the header."""
TRAILING_BLANKS: Final = re.compile(r"\s+((?:\x1b\[[0-9;]*m)*)$")
"""The padding of a line's last cell, also inside its colour (kept when colours are stripped)."""
WIDTH_MAX: Final = 1000
"""Tables are never wrapped or cut to a terminal's width: one row, one line."""


def render_table(
    header: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    markdown: bool = False,
    right: bool = False,
    rule: bool = False,
    styles: Mapping[str, str] | None = None,
    bold_header: bool = False,
) -> str:
    """The table as text (no trailing newline).

    Args:
        header: column titles.
        rows: cells as text, one sequence per row, as many as ``header``.
        markdown: a Markdown table instead of aligned text.
        right: right-align every column (numbers).
        rule: a line of dashes under the header.
        styles: colour (a rich/click colour name) of cells with exactly that text.
        bold_header: the header in bold (terminals only, like every style).
    """
    if markdown:
        lines = [
            "| " + " | ".join(header) + " |",
            "|" + ("---:|" if right else "---|") * len(header),
        ]
        lines.extend("| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |"
                     for row in rows)  # fmt: skip
        return "\n".join(lines)
    table = Table(
        box=RULE_BOX if rule else None,
        show_edge=False,
        pad_edge=False,
        padding=(0, 1),
        header_style="bold" if bold_header else "",
    )
    for title in header:
        table.add_column(title, justify="right" if right else "left", no_wrap=True)
    colours = styles or {}
    for row in rows:
        table.add_row(*(Text(cell, style=colours.get(cell, "")) for cell in row))
    buffer = StringIO()
    coloured = bool(styles) or bold_header
    console = Console(
        file=buffer,
        width=WIDTH_MAX,
        color_system="standard" if coloured else None,
        force_terminal=coloured,
        highlight=False,
    )
    console.print(table)
    lines = buffer.getvalue().rstrip("\n").split("\n")
    return "\n".join(TRAILING_BLANKS.sub(r"\1", line) for line in lines)

"""The one table renderer: no line ends in blanks, coloured or not (walk-through review:
`pbkv cluster status` piped ended its header and its `idle` rows in the padding of the last
column, kept inside the colour codes that click strips)."""

from __future__ import annotations

import click

from pbkv.tables import render_table


def test_no_line_ends_in_blanks_once_colours_are_stripped() -> None:
    rows = [["s1", "serving"], ["s3", "idle"]]
    for styles, bold in (({"idle": "dim", "serving": "green"}, True), (None, False)):
        text = click.unstyle(render_table(["NAME", "PHASE"], rows, styles=styles, bold_header=bold))
        assert text.split("\n") == ["NAME  PHASE", "s1    serving", "s3    idle"], text

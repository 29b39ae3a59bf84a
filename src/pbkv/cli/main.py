"""Entry point of the ``pbkv`` command (placeholder until the CLI lands)."""

from __future__ import annotations

import sys


def main() -> None:
    sys.stderr.write("pbkv: the command-line interface is not built yet\n")
    sys.exit(2)

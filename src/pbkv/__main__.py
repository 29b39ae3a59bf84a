"""``python -m pbkv`` runs the command-line interface."""

from pbkv.cli.main import main

main()

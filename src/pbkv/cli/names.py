"""Node names on the command line: ``HOST:PORT`` everywhere, and inside a local cluster's
directory the same names as ``pbkv cluster`` (``s1``, ``primary``, ``backup``, ``viewserver``).

The cluster directory is ``$PBKV_CLUSTER_DIR`` or ``./.pbkv``. An address is used as given; a
name is looked up in that cluster's state file (roles through its view service) when the command
runs, and a name that cannot be resolved is a usage error with the reason.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Final

import click

from pbkv.runtime.config import VIEWSERVER_DEFAULT, ConfigError, parse_address

CLUSTER_DIR_ENV: Final = "PBKV_CLUSTER_DIR"
CLUSTER_DIR_DEFAULT: Final = ".pbkv"


def cluster_dir() -> Path:
    return Path(os.environ.get(CLUSTER_DIR_ENV) or CLUSTER_DIR_DEFAULT)


def resolve_name(name: str) -> str:
    """The address of cluster process ``name`` (``s1``, ``primary`` ...) in ``cluster_dir()``.

    Raises:
        PbkvError: no cluster there, or no such process or role (the message says which).
    """
    from pbkv.cluster.state import load_state
    from pbkv.cluster.targets import resolve

    return resolve(load_state(cluster_dir()), name).address


def default_viewserver() -> str:
    """The view service of the local cluster in ``cluster_dir()`` if there is one, else
    ``127.0.0.1:7000`` (``$PBKV_VIEWSERVER`` wins over both: it is the option's envvar)."""
    from pbkv.cluster.state import load_state
    from pbkv.errors import PbkvError

    if not (cluster_dir() / "cluster.json").exists():
        return VIEWSERVER_DEFAULT
    try:
        return load_state(cluster_dir()).viewserver
    except PbkvError:
        return VIEWSERVER_DEFAULT


class NodeType(click.ParamType):  # type: ignore[type-arg]  # generic from click 8.2
    """``HOST:PORT``, or a process name of the local cluster (resolved when parsed)."""

    name = "NODE"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        from pbkv.errors import PbkvError

        text = str(value)
        if "," in text:
            from pbkv.runtime.group import split_members

            try:
                return ",".join(split_members(text))
            except ConfigError as error:
                self.fail(str(error), param, ctx)
        if ":" in text:
            try:
                parse_address(text)
            except ConfigError as error:
                self.fail(str(error), param, ctx)
            return text
        try:
            return resolve_name(text)
        except PbkvError as error:
            self.fail(f"{text!r} is neither HOST:PORT nor a cluster name: {error}", param, ctx)


NODE = NodeType()


def cluster_dir_option(function: Any) -> Any:
    """``--dir`` of the ``pbkv cluster`` commands."""
    return click.option(
        "--dir",
        "directory",
        type=click.Path(file_okay=False, path_type=Path),
        default=CLUSTER_DIR_DEFAULT,
        envvar=CLUSTER_DIR_ENV,
        show_default=True,
        help="Directory of the cluster's state file and logs (env PBKV_CLUSTER_DIR).",
    )(function)

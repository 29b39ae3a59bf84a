"""Parameter types shared by the commands: bounded finite numbers, seeds, UTF-8 text, output
files.

Every float option of ``pbkv`` is a ``FiniteFloat``: ``click.FloatRange`` accepts ``nan``
(every comparison with it is false) and, without an upper bound, ``inf`` and ``1e300``, which
then hang or crash whatever takes them (a timeout, a ping interval, a sleep). A ``FiniteFloat``
refuses both and always has an upper bound, which ``--help`` shows with the range
(``[0<x<=86400]``). The bounds are named here, each with its unit.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Final

import click

from pbkv.runtime.faults import DELAY_MS_MAX

SECONDS_MAX: Final = 86_400.0
"""Seconds: the most any timeout, duration or budget may be (a day)."""
INTERVAL_S_MAX: Final = 3_600.0
"""Seconds: the most a refresh interval or a pause between steps may be (an hour)."""
PING_INTERVAL_S_MAX: Final = 60.0
"""Seconds: the most a ping interval may be (a failover takes several of them)."""
DEAD_PINGS_MAX: Final = 1_000
"""Missed pings at most before a server is declared dead (beyond, a dead server never is)."""
SEED_MAX: Final = 2**63 - 1
"""The largest seed: seeds travel as signed 64-bit integers."""


class FiniteFloat(click.FloatRange):
    """A float in ``[min, max]`` (``min_open``: above ``min``); never NaN or infinite."""

    name = "float range"

    def __init__(self, min: float, max: float, *, min_open: bool = False) -> None:
        super().__init__(min, max, min_open=min_open)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = click.FLOAT.convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return super().convert(number, param, ctx)


SECONDS: Final = FiniteFloat(0.0, SECONDS_MAX, min_open=True)
"""A positive timeout or duration in seconds, at most a day."""
SECONDS_OR_ZERO: Final = FiniteFloat(0.0, SECONDS_MAX)
PING_INTERVAL: Final = FiniteFloat(0.0, PING_INTERVAL_S_MAX, min_open=True)
FRACTION: Final = FiniteFloat(0.0, 1.0)
"""A probability or a ratio."""
DELAY_MS: Final = FiniteFloat(0.0, DELAY_MS_MAX)
"""An injected delay in milliseconds (a message's, an fsync's)."""
SEED: Final = click.IntRange(0, SEED_MAX)
DEAD_PINGS: Final = click.IntRange(1, DEAD_PINGS_MAX)


class Utf8Text(click.ParamType):  # type: ignore[type-arg]  # generic from click 8.2
    """Text that is valid UTF-8: an argument with other bytes (``$'\\xff'``, which Python
    carries as lone surrogates) is refused instead of failing when it is encoded."""

    name = "TEXT"

    def __init__(self, what: str) -> None:
        self.what = what

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        text = str(value)
        if not is_utf8(text):
            self.fail(f"{self.what} must be valid UTF-8", param, ctx)
        return text


def is_utf8(text: str) -> bool:
    """False for text with lone surrogates: bytes that were not UTF-8, decoded with
    ``surrogateescape`` (as Python decodes arguments and, in the shell, standard input)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


KEY: Final = Utf8Text("key")
VALUE: Final = Utf8Text("value")


def writable_file(ctx: click.Context, param: click.Parameter, value: Path | None) -> Path | None:
    """An option callback: check that the file ``value`` can be written, before a long command
    runs and only then writes it (``demo --report``, ``bench --plot``). It is opened for
    appending and, if it did not exist, removed again."""
    if value is None:
        return None
    existed = value.exists()
    try:
        with value.open("a"):
            pass
    except OSError as error:
        raise click.BadParameter(f"cannot write {value}: {error.strerror or error}") from None
    if not existed:
        value.unlink(missing_ok=True)
    return value

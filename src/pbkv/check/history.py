"""Recorded client histories: the ``Operation`` value type and its JSON-lines format.

Theory of operation: a history is what clients observed, nothing more. Each ``Operation`` is one
client call with the time it was invoked and the time it returned (``complete``). An operation
that never returned (client crashed, timed out, gave up) has ``complete = None``: it is
*indeterminate* - it may or may not have taken effect, at any point after ``invoke``. Times are
in any unit, as long as every client of one history uses the same clock.

On disk a history is JSON lines, one object per operation, every field present::

    {"client": "c1", "op": "put", "key": "k", "value": "v", "invoke": 12.5,
     "complete": 12.9, "result": null}

``value`` is the argument of ``put``/``append`` and ``null`` for ``get``/``delete``; ``result``
is what a ``get`` returned (``null`` = key missing) and is ignored for writes. Decoding uses a
reused ``msgspec`` decoder into a typed struct, so shape and type errors come from msgspec's
validator; the semantic rules are checked too: a value exactly for the writes that take one (by
the parser), finite times and ``complete >= invoke`` (by ``Operation`` itself, for every
producer of histories). Every problem becomes one
``HistoryError`` line that names the 1-based line number.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal, TypeAlias

import msgspec

OpKind: TypeAlias = Literal["get", "put", "append", "delete"]
OP_KINDS: Final[tuple[OpKind, ...]] = ("get", "put", "append", "delete")
WRITES_WITH_VALUE: Final[frozenset[str]] = frozenset({"put", "append"})


class HistoryError(ValueError):
    """A history file or line that cannot be read; the message is one line naming the line."""


@dataclass(frozen=True, slots=True)
class Operation:
    """One client call as observed by the client.

    Attributes:
        client: who issued it; each client is expected to be sequential (not required).
        op: ``get``, ``put`` (set), ``append`` (concatenate onto the value, ``""`` if missing)
            or ``delete``.
        key: the key it touched.
        value: the argument of ``put``/``append``; ``None`` for ``get``/``delete``.
        invoke: when the call was made.
        complete: when it returned, or ``None`` if it never did (indeterminate).
        result: what a ``get`` returned (``None`` = key missing); ignored for writes.

    Raises:
        ValueError: on an unknown op, a non-finite time or ``complete < invoke``. (A missing
            put/append value counts as ``""``; a get/delete value is ignored.)
    """

    client: str
    op: OpKind
    key: str
    value: str | None
    invoke: float
    complete: float | None
    result: str | None

    def __post_init__(self) -> None:
        problem = _operation_problem(self)
        if problem:
            raise ValueError(problem)

    @property
    def is_write(self) -> bool:
        """True for put, append and delete."""
        return self.op != "get"

    def describe(self) -> str:
        """``c1 put 'v' [1.0, 2.0]`` / ``c2 get -> None [3.0, never returned]``."""
        if self.op == "get":
            what = f"get -> {self.result!r}"
        elif self.op == "delete":
            what = "delete"
        else:
            what = f"{self.op} {self.value!r}"
        end = "never returned" if self.complete is None else f"{self.complete!r}"
        return f"{self.client} {what} [{self.invoke!r}, {end}]"


def next_value(op: Operation, value: str | None) -> str | None:
    """The key's value after ``op`` takes effect on ``value`` (None = missing): put sets,
    append concatenates onto the value (``""`` if missing), delete removes, get changes
    nothing. The reference semantics of every check in this package."""
    match op.op:
        case "get":
            return value
        case "put":
            return op.value or ""
        case "append":
            return (value or "") + (op.value or "")
        case "delete":
            return None


def replay_effects(planned: Sequence[tuple[Operation, float | None]]) -> list[Operation]:
    """Model a correct store: apply each operation's effect at its instant (None: it never took
    effect), in instant order, and fill in what each get returned.

    Args:
        planned: operations (get results ignored) paired with when they took effect.

    Returns:
        The operations in the given order, gets with their results; a linearizable history
        whenever every instant lies within its operation's interval (or after the invoke of an
        indeterminate one). Simulators and tests use it to produce histories.
    """
    store: dict[str, str | None] = {}
    results: dict[int, str | None] = {}
    happened = sorted((at, n) for n, (_, at) in enumerate(planned) if at is not None)
    for _, n in happened:
        op = planned[n][0]
        results[n] = store.get(op.key)
        store[op.key] = next_value(op, store.get(op.key))
    return [
        dataclasses.replace(op, result=results.get(n)) if op.op == "get" else op
        for n, (op, _) in enumerate(planned)
    ]


def _operation_problem(op: Operation) -> str:
    """Why ``op`` cannot be checked, or ``""``."""
    if op.op not in OP_KINDS:
        return f"unknown op {op.op!r} (expected one of {', '.join(OP_KINDS)})"
    if not math.isfinite(op.invoke):
        return f"invoke must be a finite number, got {op.invoke!r}"
    if op.complete is not None:
        if not math.isfinite(op.complete):
            return f"complete must be a finite number or null, got {op.complete!r}"
        if op.complete < op.invoke:
            return f"complete {op.complete!r} is before invoke {op.invoke!r}"
    return ""


class _Record(msgspec.Struct):
    """Wire shape of one history line; every field is required."""

    client: str
    op: OpKind
    key: str
    value: str | None
    invoke: float
    complete: float | None
    result: str | None


_DECODER: Final = msgspec.json.Decoder(_Record)
_ENCODER: Final = msgspec.json.Encoder()


def parse_history_lines(lines: Iterable[str]) -> list[Operation]:
    """Parse JSON-lines history text.

    Args:
        lines: one JSON object per line; trailing newlines and blank lines are fine.

    Returns:
        The operations in file order.

    Raises:
        HistoryError: on the first malformed line, e.g. ``line 3: Object missing required
            field `key```.
    """
    ops: list[Operation] = []
    for number, line in enumerate(lines, start=1):
        text = line.strip()
        if text:
            ops.append(_parse_line(number, text))
    return ops


def _parse_line(number: int, text: str) -> Operation:
    try:
        record = _DECODER.decode(text)
    except msgspec.ValidationError as error:
        raise HistoryError(_one_line(f"line {number}: {error}")) from None
    except msgspec.DecodeError as error:
        raise HistoryError(_one_line(f"line {number}: bad JSON: {error}")) from None
    if record.op in WRITES_WITH_VALUE and record.value is None:
        raise HistoryError(f"line {number}: {record.op} needs a string value, got null")
    if record.op not in WRITES_WITH_VALUE and record.value is not None:
        raise HistoryError(f"line {number}: {record.op} takes no value, got {record.value!r}")
    try:
        return Operation(
            client=record.client,
            op=record.op,
            key=record.key,
            value=record.value,
            invoke=record.invoke,
            complete=record.complete,
            result=record.result,
        )
    except ValueError as error:
        raise HistoryError(_one_line(f"line {number}: {error}")) from None


def _one_line(message: str) -> str:
    return " ".join(message.split())


def load_history(path: str | Path) -> list[Operation]:
    """Read a JSON-lines history file.

    Args:
        path: the file to read (UTF-8).

    Returns:
        The operations in file order.

    Raises:
        HistoryError: on a malformed line or one that is not UTF-8 (the message names the
            line number).
        OSError: if the file cannot be read.
    """
    with open(path, "rb") as stream:
        return parse_history_lines(_utf8_lines(stream))


def _utf8_lines(stream: Iterable[bytes]) -> Iterator[str]:
    """Each line decoded on its own, so that bytes that are not UTF-8 are a ``HistoryError``
    naming their line rather than a ``UnicodeDecodeError`` for the whole file."""
    for number, raw in enumerate(stream, start=1):
        try:
            yield raw.decode("utf-8")
        except UnicodeDecodeError as error:
            raise HistoryError(
                f"line {number}: not UTF-8 (byte 0x{raw[error.start]:02x} at column "
                f"{error.start + 1})"
            ) from None


def dump_history_lines(ops: Iterable[Operation]) -> Iterator[str]:
    """Render operations as JSON lines, each ending in ``"\\n"``.

    Args:
        ops: the operations, written in the order given.

    Returns:
        An iterator of lines; ``"".join(...)`` is a file that ``parse_history_lines`` reads
        back to equal operations.
    """
    for op in ops:
        record = _Record(
            client=op.client,
            op=op.op,
            key=op.key,
            value=op.value,
            invoke=op.invoke,
            complete=op.complete,
            result=op.result,
        )
        yield _ENCODER.encode(record).decode("utf-8") + "\n"


def save_history(path: str | Path, ops: Iterable[Operation]) -> None:
    """Write operations to ``path`` as JSON lines (see ``dump_history_lines``)."""
    with open(path, "w", encoding="utf-8") as stream:
        stream.writelines(dump_history_lines(ops))

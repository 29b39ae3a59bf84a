"""What the simulated clients observed: invocations, completions and results.

Theory of operation. The world records an ``Invocation`` when a client submits an operation and
completes it when the client session delivers its result. Times are ``tick + k * 1e-6`` where
``k`` counts history events inside the tick, so two events in the same tick keep their real order
(a completion delivered before a submission in the same tick precedes it) while the integer part
stays the readable tick. An operation whose session gave up (``unavailable``: the caller's
timeout) or that was still open when the run ended is *indeterminate*: ``complete`` is None and the
linearizability checker may place it anywhere after its invocation, or drop it. So is every open
operation of a client that crashed (status ``crashed``). An operation refused with a final error
(``too_large``, ``invalid``) took no effect: it is left out of the checked history, so a read of
its value would be a read of a value nobody wrote (unless N3 lets a late copy apply it after
its client's eviction: then it is indeterminate).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pbkv.check.history import Operation as CheckedOperation
from pbkv.core.messages import Append, Delete, Get, Operation, Put

INDETERMINATE_STATUSES = frozenset({"unavailable", "crashed"})
"""Statuses after which the client cannot know whether the operation took effect."""
REFUSED_STATUSES = frozenset({"too_large", "invalid"})
"""Final errors: the operation took no effect."""


@dataclass(slots=True)
class Invocation:
    """One client call: what was asked, when, and (once known) how it ended."""

    client: str
    seq: int
    op: Operation
    invoke: float
    complete: float | None = None
    status: str | None = None
    result: str | None = None

    @property
    def kind(self) -> str:
        match self.op:
            case Get():
                return "get"
            case Put():
                return "put"
            case Append():
                return "append"
            case Delete():
                return "delete"

    @property
    def value(self) -> str | None:
        op = self.op
        return op.value if isinstance(op, Put | Append) else None

    def describe(self) -> str:
        head = f"{self.client}#{self.seq} {self.kind} {self.op.key}"
        if self.value is not None:
            head += f" {self.value!r}"
        if self.status is None:
            return f"{head} invoked {self.invoke:g}, open"
        tail = f" -> {self.result!r}" if self.kind == "get" and self.status == "ok" else ""
        end = "never" if self.complete is None else f"{self.complete:g}"
        return f"{head} [{self.invoke:g}, {end}] {self.status}{tail}"

    def checked(self, reading: Callable[[str], str] | None = None) -> CheckedOperation:
        """The record in the linearizability checker's terms (``reading`` rewrites a get's
        result: the N3 normalisation, ``sessions.without_permitted_copies``)."""
        definite = self.status == "ok"
        result = self.result if definite else None
        if reading is not None and result is not None:
            result = reading(result)
        return CheckedOperation(
            client=self.client,
            op=self.kind,  # type: ignore[arg-type]
            key=self.op.key,
            value=self.value,
            invoke=self.invoke,
            complete=self.complete if definite else None,
            result=result,
        )


class History:
    """Every invocation of one run, in invocation order."""

    __slots__ = ("open", "records")

    def __init__(self) -> None:
        self.records: list[Invocation] = []
        self.open: dict[tuple[str, int], Invocation] = {}

    def invoke(self, client: str, seq: int, op: Operation, time: float) -> Invocation:
        record = Invocation(client, seq, op, time)
        self.records.append(record)
        self.open[(client, seq)] = record
        return record

    def complete(
        self, client: str, seq: int, status: str, value: str | None, time: float
    ) -> Invocation | None:
        """Close an open invocation; None if it was not open (a second delivery)."""
        record = self.open.pop((client, seq), None)
        if record is None:
            return None
        record.status = status
        if status not in INDETERMINATE_STATUSES:
            record.complete = time
        if isinstance(record.op, Get):
            record.result = value
        return record

    def abandon(self, client: str) -> list[Invocation]:
        """Close every open invocation of ``client`` (it crashed) as indeterminate."""
        abandoned = [record for key, record in self.open.items() if key[0] == client]
        for record in abandoned:
            del self.open[(client, record.seq)]
            record.status = "crashed"
        return abandoned

    def outstanding(self) -> list[Invocation]:
        return list(self.open.values())

    def operations(
        self,
        reading: Callable[[str], str] | None = None,
        may_apply_late: Callable[[Invocation], bool] | None = None,
    ) -> list[CheckedOperation]:
        """The history for ``pbkv.check.check_history``, without refused operations, except
        those ``may_apply_late`` says a late copy may still apply (N3: the table that remembered
        the refusal forgot the client): they are indeterminate."""
        return [
            record.checked(reading)
            for record in self.records
            if record.status not in REFUSED_STATUSES
            or (may_apply_late is not None and may_apply_late(record))
        ]

    def completed(self) -> int:
        return sum(1 for record in self.records if record.status == "ok")

    def indeterminate(self) -> int:
        return sum(1 for record in self.records if record.status != "ok")

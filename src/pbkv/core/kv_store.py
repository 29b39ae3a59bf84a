"""The replicated application: a string key-value store plus its exactly-once table.

Theory of operation: primary and backup run the very same deterministic ``execute`` on the very
same sequence of requests (the replication stream), so they reach the same store *and* the same
exactly-once table (invariant P5). Nothing here reads a clock or a random source.

Exactly-once (invariants C1-C3): each client names its operations ``(client_id, seq)`` and tells,
with every request, ``completed_below``: all of its sequence numbers below it are finished. The
table keeps, per client, that watermark and the set of write sequence numbers at or above it that
were applied. A write whose number is in the set is a retry: it returns ``ok`` without touching
the store. A request below the watermark is answered ``stale`` and never applied: the client has
already finished with it. Gets are never recorded: re-executing a retried read at a later point
inside its own interval is still linearizable. A refusal that depends on the state (an append
that would take the value over its limit) is final for the client, so it is recorded too: a
retry or a late copy gets ``too_large`` again and is never applied after a later write made
room (found by the simulator's size workload).

Bounds: at most ``window`` outstanding numbers per client (a request at or beyond
``completed_below + window`` is refused as ``invalid``); client ids of at most
``client_id_bytes_max`` bytes; at most ``sessions_max`` clients and ``sessions_bytes_max`` bytes
of table (an estimate of its memory), evicting the least recently active in O(1)
(deterministic: the order is that of the stream). Eviction is the one known gap in exactly-once
(non-promise N3 in docs/protocol.md).

Admission (``admit``) checks, without any state, every size a client controls: the client id,
the key, and the value of a put or an append. A request that fails it never enters the
replication stream, so every request in the stream fits a frame (``pbkv.core.sizes``).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

import msgspec
from mypy_extensions import mypyc_attr

from pbkv.core.message_classes import APPEND, GET, PUT
from pbkv.core.messages import Request, SessionRecord, Status
from pbkv.core.picklable import reduce_by_constructor
from pbkv.core.sizes import text_bytes, written_value

__all__ = ["KVStore", "Limits", "Outcome", "text_bytes"]

RECORD_COST_BYTES: Final = 200
"""Memory one client's record costs besides its id and applied numbers (an estimate)."""
APPLIED_COST_BYTES: Final = 64
"""Memory one remembered applied number costs (an estimate)."""
MOVE_TO_END: Final = OrderedDict.move_to_end
"""Compiled, a C static called directly, not a method looked up at each request."""


@dataclass(frozen=True, slots=True)
class Limits:
    """Size limits checked deterministically on both replicas."""

    key_bytes_max: int = 1024
    value_bytes_max: int = 1024 * 1024
    client_id_bytes_max: int = 128
    sessions_max: int = 100_000
    sessions_bytes_max: int = 64 * 1024 * 1024
    window: int = 4096

    def __reduce__(self) -> tuple[type[Any], tuple[object, ...]]:
        """Rebuilt from its fields when unpickled (picklable.py: compiled, it must be)."""
        return reduce_by_constructor(self)


class ClientRecord:
    """A client's exactly-once record (C1). A plain class, not a msgspec Struct or a
    dataclass: compiled, it is native (its fields read directly, several times a request; its
    ``__init__`` compiled too, ``client_session.PendingOperation``). ``refused``: numbers
    refused for a reason that depends on the state (an append over the value limit),
    remembered so that no copy of them is applied later."""

    __slots__ = ("applied", "completed_below", "refused")

    def __init__(
        self,
        completed_below: int = 0,
        applied: set[int] | None = None,
        refused: set[int] | None = None,
    ) -> None:
        self.completed_below = completed_below
        self.applied: set[int] = set() if applied is None else applied
        self.refused: set[int] = set() if refused is None else refused


class Outcome(msgspec.Struct, frozen=True, gc=False):
    """What a request did (a Struct: built per request, cheaper than a frozen dataclass)."""

    status: Status
    value: str | None = None
    detail: str = ""


OK = Outcome("ok")


# Subclassed by a broken variant in tests/sim.
@mypyc_attr(allow_interpreted_subclasses=True)
class KVStore:
    """Store plus exactly-once table; ``execute`` is the only mutator on the request path."""

    __slots__ = ("data", "evictions", "limits", "session_bytes", "sessions")

    def __init__(self, limits: Limits | None = None) -> None:
        self.limits = limits or Limits()
        self.data: dict[str, str] = {}
        # Least recently active first: eviction pops the front in O(1) (an OrderedDict is a
        # linked list; a plain dict's first entry gets slower after many deletions).
        self.sessions: OrderedDict[str, ClientRecord] = OrderedDict()
        self.session_bytes = 0
        self.evictions = 0

    def admit(self, request: Request) -> Outcome | None:
        """A final refusal if a size the client controls is over its limit, else None. Needs no
        state, so a primary can refuse before the request enters the stream."""
        limits = self.limits
        op = request.op
        value = written_value(op)
        # UTF-8 takes at most 4 bytes a character: shorter texts cannot be over their limits.
        if (
            4 * len(request.client_id) <= limits.client_id_bytes_max
            and 4 * len(op.key) <= limits.key_bytes_max
            and 4 * len(value) <= limits.value_bytes_max
        ):
            return None
        if text_bytes(request.client_id) > limits.client_id_bytes_max:
            return Outcome(
                "invalid", detail=f"client id exceeds {limits.client_id_bytes_max} bytes"
            )
        if text_bytes(op.key) > limits.key_bytes_max:
            return Outcome("too_large", detail=f"key exceeds {limits.key_bytes_max} bytes")
        if text_bytes(value) > limits.value_bytes_max:
            return Outcome("too_large", detail=f"value exceeds {limits.value_bytes_max} bytes")
        return None

    def execute(self, request: Request) -> Outcome:
        """Apply ``request`` at most once and return its outcome."""
        # The request path of both replicas: plain type checks and few calls, on purpose.
        op = request.op
        kind = type(op)
        key, client_id = op.key, request.client_id  # each read of a message's field is a lookup
        limits = self.limits
        if kind is PUT or kind is APPEND:
            value: str = op.value  # type: ignore[union-attr]
            oversized = text_bytes(value) > limits.value_bytes_max
        else:
            oversized = False
        # UTF-8 takes at most 4 bytes a character: shorter texts cannot be over their limits.
        if (
            oversized
            or 4 * len(key) > limits.key_bytes_max
            or 4 * len(client_id) > limits.client_id_bytes_max
        ):
            refusal = self.admit(request)
            if refusal is not None:
                return refusal  # needs no state: a late copy is refused the same way
        seq = request.seq
        record = self._touch(client_id, request.completed_below)
        if seq < record.completed_below:
            return Outcome("stale", detail="operation already finished at the client")
        if seq >= record.completed_below + limits.window:
            return Outcome("invalid", detail="too many operations outstanding for one client")
        if kind is GET:
            return Outcome("ok", self.data.get(key))
        applied = record.applied
        if seq in applied:
            return OK  # a retry: an applied append that no longer fits still answers ok (C1)
        if (record.refused and seq in record.refused) or (
            kind is APPEND and self._append_too_large(key, value)
        ):
            return self._refuse(record, seq)
        applied.add(seq)
        self.session_bytes += APPLIED_COST_BYTES
        if kind is PUT:
            self.data[key] = value
        elif kind is APPEND:
            self.data[key] = self.data.get(key, "") + value
        else:
            self.data.pop(key, None)
        return OK

    def _append_too_large(self, key: str, value: str) -> bool:
        stored = self.data.get(key, "")
        return text_bytes(stored) + text_bytes(value) > self.limits.value_bytes_max

    def _refuse(self, record: ClientRecord, seq: int) -> Outcome:
        """A refusal that depends on the state is remembered like an application, so a retry or
        a late copy gets the same final answer and is never applied later (C1)."""
        if seq not in record.refused:
            record.refused.add(seq)
            self.session_bytes += APPLIED_COST_BYTES
        limit = self.limits.value_bytes_max
        return Outcome("too_large", detail=f"value exceeds {limit} bytes")

    def _touch(self, client_id: str, completed_below: int) -> ClientRecord:
        """Find or create the client's record, mark it most recent, advance its watermark."""
        sessions = self.sessions
        record = sessions.get(client_id)
        if record is None:
            self._make_room(client_id)
            record = sessions[client_id] = ClientRecord(completed_below)
            self.session_bytes += RECORD_COST_BYTES + text_bytes(client_id)
        else:
            MOVE_TO_END(sessions, client_id)
        if completed_below > record.completed_below:
            record.completed_below = completed_below
            applied = record.applied
            if applied:
                if all_below(applied, completed_below):  # the usual case: all finished
                    self.session_bytes -= APPLIED_COST_BYTES * len(applied)
                    applied.clear()
                else:
                    record.applied = self._forget_below(applied, completed_below)
            if record.refused:
                record.refused = self._forget_below(record.refused, completed_below)
        return record

    def _forget_below(self, numbers: set[int], completed_below: int) -> set[int]:
        before = len(numbers)
        if all_below(numbers, completed_below):
            numbers.clear()  # the usual case: everything recorded is now finished
        else:
            numbers = {seq for seq in numbers if seq >= completed_below}
        self.session_bytes -= APPLIED_COST_BYTES * (before - len(numbers))
        return numbers

    def _make_room(self, client_id: str) -> None:
        """Evict the least recently active clients until a new record for ``client_id`` fits
        both bounds (C3, N3). Deterministic: both replicas evict the same records."""
        sessions, limits = self.sessions, self.limits
        needed = RECORD_COST_BYTES + text_bytes(client_id)
        while sessions and (
            len(sessions) >= limits.sessions_max
            or self.session_bytes + needed > limits.sessions_bytes_max
        ):
            evicted_id, evicted = sessions.popitem(last=False)
            self.session_bytes -= record_bytes(evicted_id, evicted)
            self.evictions += 1

    # --- state transfer --------------------------------------------------------------------

    def session_records(self) -> tuple[SessionRecord, ...]:
        """The exactly-once table in eviction order, for a state transfer."""
        return tuple(
            SessionRecord(
                client_id,
                record.completed_below,
                tuple(sorted(record.applied)),
                tuple(sorted(record.refused)),
            )
            for client_id, record in self.sessions.items()
        )

    def install(self, data: dict[str, str], sessions: Iterable[SessionRecord]) -> None:
        """Replace the whole state with a transferred one."""
        self.data = data
        self.sessions = OrderedDict(
            (
                record.client_id,
                ClientRecord(record.completed_below, set(record.applied), set(record.refused)),
            )
            for record in sessions
        )
        self.session_bytes = sum(
            record_bytes(client_id, record) for client_id, record in self.sessions.items()
        )


def record_bytes(client_id: str, record: ClientRecord) -> int:
    """The memory a client's record is charged against ``sessions_bytes_max``."""
    numbers = len(record.applied) + len(record.refused)
    return RECORD_COST_BYTES + text_bytes(client_id) + APPLIED_COST_BYTES * numbers


def all_below(numbers: set[int], bound: int) -> bool:
    """Whether every number of ``numbers`` is below ``bound`` (not ``max``: compiled, ``all``
    over a generator becomes a loop, without a call into a builtin, about a thousand
    instructions a request)."""
    return all(number < bound for number in numbers)

"""The client session: finds the primary, numbers operations, retries until done or timed out.

Theory of operation. A session has a random ``client_id`` and numbers its operations
``0, 1, 2 ...``; ``(client_id, seq)`` identifies an operation everywhere, so a retry is recognised
and never applied twice (C1). With every request it reports ``completed_below``, the number
below which every operation has finished (answered, or abandoned at its deadline), which lets
the servers forget them (C2). At most ``requests_in_flight_max`` numbers are open at once; later
submissions wait in a bounded local queue (C3).

The session caches the view and asks the view service only when it has no view, when a server
answered "wrong server", or when a request went unanswered for its retry interval (C4). Retries
back off exponentially from ``retry_initial_ticks`` to ``retry_max_ticks`` with jitter drawn from
the injected random source, and stop at the operation's deadline, when the caller is told
``unavailable``. An operation that timed out may or may not have taken effect; it will not take
effect later once a higher watermark has reached the primary (requests below the watermark are
refused as ``stale``).

When the host learns that retrying cannot succeed (a server refused the connection for good: a
wrong secret, TLS that does not match), ``abandon_all`` ends every operation in flight at once,
exactly as its deadline would: ``unavailable``, and the watermark moves past them.
"""

from __future__ import annotations

import heapq
import random
from collections import deque
from dataclasses import dataclass
from typing import Any

from pbkv.core.effects import Outbox
from pbkv.core.message_classes import REPLY, REQUEST, VIEW_REPLY
from pbkv.core.messages import (
    AnyMessage,
    GetView,
    Operation,
    Reply,
    Status,
    View,
)
from pbkv.core.picklable import reduce_by_constructor

FINAL_STATUSES = frozenset({"ok", "too_large", "invalid", "stale"})
QUEUE_FULL_DETAIL = "client queue full"
"""The detail of an ``unavailable`` operation refused before it was ever sent: it took no
effect anywhere, unlike one that timed out (N4)."""


@dataclass(frozen=True, slots=True)
class ClientConfig:
    retry_initial_ticks: int = 10
    retry_max_ticks: int = 25
    timeout_ticks: int = 3000
    requests_in_flight_max: int = 1024
    requests_queued_max: int = 100_000
    view_query_retry_ticks: int = 10

    def __reduce__(self) -> tuple[type[Any], tuple[object, ...]]:
        """Rebuilt from its fields when unpickled (picklable.py: compiled, it must be)."""
        return reduce_by_constructor(self)


class PendingOperation:
    """An operation in flight. A plain class, not a msgspec Struct or a dataclass: compiled by
    mypyc it is native, so its fields are read and written directly, and its ``__init__`` too
    (a dataclass's is generated at import, and runs interpreted; count_instructions.py)."""

    __slots__ = ("attempts", "deadline_tick", "op", "retry_tick")

    def __init__(self, op: Operation, deadline_tick: int) -> None:
        self.op = op
        self.deadline_tick = deadline_tick
        self.retry_tick = 0
        self.attempts = 0


def due_tick(pending: PendingOperation) -> int:
    """When ``pending``'s timer fires: its retry or its deadline, whichever comes first (a
    queued operation, never sent, has only its deadline)."""
    if pending.attempts > 0:
        return min(pending.retry_tick, pending.deadline_tick)
    return pending.deadline_tick


class ClientSession:
    """Pure state machine for one client; see the module docstring."""

    def __init__(
        self,
        view_service: str,
        rng: random.Random,
        config: ClientConfig | None = None,
        client_id: str | None = None,
    ) -> None:
        self.view_service = view_service
        self.rng = rng
        self.config = config or ClientConfig()
        # The caller may choose the id (the simulator draws ids up to and over the size limit);
        # it must be unique among the clients of a cluster.
        self.client_id = f"{rng.getrandbits(64):016x}" if client_id is None else client_id
        self.view: View | None = None
        self.now = 0
        self.next_seq = 0
        self.completed_below = 0
        self.finished: set[int] = set()
        self.operations: dict[int, PendingOperation] = {}
        self.waiting: deque[int] = deque()
        self.view_query_tick: int | None = None
        self.retries = 0
        self.last_refusal = ""
        """The last ``wrong_server`` detail: why no server completed the operation."""
        # (tick, seq): when an operation's retry or deadline is due; may hold stale entries.
        self.timers: list[tuple[int, int]] = []
        # Operations whose timer changed since the last tick, not yet in ``timers``: most
        # finish before the next tick and never cost a heap entry (a push, later a pop).
        self.unscheduled: list[int] = []

    # --- entry points ------------------------------------------------------------------------

    def submit(self, op: Operation, out: Outbox, timeout_ticks: int | None = None) -> int:
        """Start ``op``; its result arrives later as a ``Deliver`` effect with the returned seq."""
        seq = self.next_seq
        self.next_seq += 1
        if len(self.waiting) >= self.config.requests_queued_max:
            self.finish(seq, out, "unavailable", detail=QUEUE_FULL_DETAIL)
            return seq
        config = self.config
        deadline = self.now + (config.timeout_ticks if timeout_ticks is None else timeout_ticks)
        self.operations[seq] = PendingOperation(op, deadline)
        if seq < self.completed_below + config.requests_in_flight_max:
            self.send_request(seq, out)  # sets its timer
        else:
            self.set_timer(seq)
            self.waiting.append(seq)
        return seq

    def on_message(self, source: str, message: AnyMessage, out: Outbox) -> None:
        kind = type(message)  # plain type checks: a match asks the metaclass (instancecheck)
        if kind is REPLY:
            self.on_reply(message, out)  # type: ignore[arg-type]
        elif kind is VIEW_REPLY and source == self.view_service:
            self.on_view(message.view, out)  # type: ignore[union-attr]
        self.check_invariants()

    def on_tick(self, out: Outbox) -> None:
        self.now += 1
        self.schedule()
        timers = self.timers
        while timers and timers[0][0] <= self.now:
            _, seq = heapq.heappop(timers)
            pending = self.operations.get(seq)
            if pending is None:
                continue  # finished since this timer was set
            if self.now >= pending.deadline_tick:
                self.finish(seq, out, "unavailable", detail=self.unavailable_detail())
            elif pending.attempts > 0 and self.now >= pending.retry_tick:
                self.retries += 1
                self.query_view(out)
                self.send_request(seq, out)
        if self.view is None or self.view.primary is None:
            self.query_view(out)
        self.check_invariants()

    def abandon_all(self, out: Outbox, detail: str) -> None:
        """End every operation in flight as its deadline would (``unavailable``, ``detail``):
        queued ones first, so that none is sent on the way."""
        self.waiting.clear()
        for seq in list(self.operations):
            self.finish(seq, out, "unavailable", detail=detail)
        self.check_invariants()

    def set_timer(self, seq: int) -> None:
        """Wake ``seq`` when its retry or its deadline is due, whichever comes first (one timer
        per operation; when it fires, the other is set). The timer enters the heap at the next
        tick, if ``seq`` is still open then (``schedule``); both times are at least a tick
        away, so none is late for it. Bounded (C3): past ``4 * in_flight + 64`` entries the
        list keeps only the open operations, each once."""
        unscheduled = self.unscheduled
        unscheduled.append(seq)
        operations = self.operations
        if len(unscheduled) > 4 * len(operations) + 64:
            self.unscheduled = list(dict.fromkeys(s for s in unscheduled if s in operations))

    def schedule(self) -> None:
        """Move the timers of the operations still open from ``unscheduled`` into the heap.
        Stale heap entries are skipped when they fire; the heap is rebuilt from the live
        operations when they outnumber them (bounded, C3)."""
        operations, timers = self.operations, self.timers
        for seq in self.unscheduled:
            pending = operations.get(seq)
            if pending is not None:
                heapq.heappush(timers, (due_tick(pending), seq))
        self.unscheduled = []
        if len(timers) > 4 * len(operations) + 64:
            live = [(due_tick(pending), seq) for seq, pending in operations.items()]
            heapq.heapify(live)
            self.timers = live

    @property
    def in_flight(self) -> int:
        return len(self.operations)

    # --- sending -----------------------------------------------------------------------------

    def send_request(self, seq: int, out: Outbox) -> None:
        pending = self.operations[seq]
        pending.attempts += 1
        pending.retry_tick = self.now + self.backoff_ticks(pending.attempts)
        self.set_timer(seq)
        view = self.view
        if view is None or view.primary is None:
            self.query_view(out)
            return
        out.send(view.primary, REQUEST(self.client_id, seq, self.completed_below, pending.op))

    def backoff_ticks(self, attempts: int) -> int:
        config = self.config
        ceiling = min(config.retry_max_ticks, config.retry_initial_ticks << min(attempts - 1, 16))
        return max(1, int(ceiling * (0.5 + 0.5 * self.rng.random())))  # uniform(0.5, 1.0)

    def query_view(self, out: Outbox) -> None:
        """Ask the view service, at most once per ``view_query_retry_ticks`` (C4)."""
        last = self.view_query_tick
        if last is not None and self.now - last < self.config.view_query_retry_ticks:
            return
        self.view_query_tick = self.now
        out.send(self.view_service, GetView())

    # --- receiving ---------------------------------------------------------------------------

    def on_reply(self, reply: Reply, out: Outbox) -> None:
        seq, status = reply.seq, reply.status  # each read of a message's field is a lookup
        pending = self.operations.get(seq)
        if pending is None or reply.client_id != self.client_id:
            return  # a duplicate or late reply for something already finished
        if status in FINAL_STATUSES:
            self.finish(seq, out, status, reply.value, reply.detail)
            return
        if status == "wrong_server":
            self.last_refusal = reply.detail[:200]
            self.query_view(out)

    def on_view(self, view: View, out: Outbox) -> None:
        current = self.view
        if current is not None and view.number <= current.number:
            return
        self.view = view
        if view.primary is None:
            return
        for seq, pending in self.operations.items():
            if pending.attempts > 0:
                self.send_request(seq, out)

    def unavailable_detail(self) -> str:
        detail = "no primary completed it in time"
        if self.last_refusal:
            detail += f" (last refusal: {self.last_refusal})"
        return detail

    def finish(
        self,
        seq: int,
        out: Outbox,
        status: Status,
        value: str | None = None,
        detail: str = "",
    ) -> None:
        operations = self.operations
        if seq in operations:
            del operations[seq]
        assert status in FINAL_STATUSES or status == "unavailable"
        out.deliver(seq, status, value, detail)
        finished = self.finished
        if seq == self.completed_below and not finished:
            self.completed_below = seq + 1  # the usual case: the oldest open one finished
        else:
            finished.add(seq)
            while self.completed_below in finished:
                finished.discard(self.completed_below)
                self.completed_below += 1
        limit = self.completed_below + self.config.requests_in_flight_max
        while self.waiting and self.waiting[0] < limit:
            waiting_seq = self.waiting.popleft()
            if waiting_seq in self.operations:
                self.send_request(waiting_seq, out)

    def check_invariants(self) -> None:
        assert self.completed_below <= self.next_seq
        assert not self.finished or min(self.finished) >= self.completed_below

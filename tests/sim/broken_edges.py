"""Deliberately broken variants for the edges of the model (issue 8), test code only.

Each undoes one fix of issue 8 (or one rule the simulator's N3-aware check relies on) by
overriding one method of the real core, so ``test_broken_edges`` can show that the simulator
catches it: by a seed of a sweep, or by a scripted scenario where a sweep is not the right tool.
"""

from __future__ import annotations

import random

from pbkv.core.durable import RecoveredState
from pbkv.core.effects import Outbox
from pbkv.core.kv_store import KVStore, Outcome
from pbkv.core.messages import AnyMessage, Forward, ForwardReply, Ping, Request, View
from pbkv.core.replica import Replica, ReplicaConfig
from pbkv.core.replica_base import BackupStream
from pbkv.core.view_service import UNKNOWN_INCARNATION, ServerInfo, ViewService


class _ForgetfulStore(KVStore):
    """Forgets which writes of a client it applied each time the client sends again."""

    def execute(self, request: Request) -> Outcome:
        record = self.sessions.get(request.client_id)
        if record is not None:
            record.applied.clear()
        return super().execute(request)


class _ReplicaWithStore(Replica):
    """A replica whose store, also the one it recovers from its disk, is a ``store_class``."""

    store_class: type[KVStore] = KVStore

    def __init__(
        self,
        name: str,
        view_service: str,
        rng: random.Random,
        config: ReplicaConfig | None = None,
        recovered: RecoveredState | None = None,
    ) -> None:
        super().__init__(name, view_service, rng, config)
        self.store = self.store_class(self.config.limits)
        if recovered is not None:
            store = self.store_class(self.config.limits)
            store.install(dict(recovered.store.data), recovered.store.session_records())
            recovered.store = store
            self.recover(recovered)


class AppliesRetriesAgain(_ReplicaWithStore):
    """Breaks C1: a retry of an applied write is applied again (as N3 allows only after the
    client's eviction); the N3-aware append check must still catch it."""

    store_class = _ForgetfulStore


class AdmitsOversizedRequests(Replica):
    """Undoes finding 1's admission: the primary lets any request into the stream (the sizes a
    client controls are no longer checked before the request is logged and forwarded)."""

    def admit(self, request: Request) -> Outcome | None:
        del request
        return None


class CutsBatchesWithoutTheFrameLimit(Replica):
    """Undoes finding 1's batch cutting: a forward carries every unsent position up to the
    request count, whatever its encoded size (the frame limit drops it: the stream wedges)."""

    def send_stream(self, backup: str, stream: BackupStream, out: Outbox) -> None:
        while stream.sent < self.next_index and (
            len(stream.inflight_ends) < self.config.forwards_in_flight_max
        ):
            start = stream.sent
            offset = start - self.acked_index
            end = min(len(self.log), offset + self.config.forward_batch_requests_max)
            requests = tuple(entry.request for entry in self.log[offset:end])
            out.send(backup, Forward(self.view.number, self.name, start, requests))
            stream.sent = start + len(requests)
            stream.inflight_ends.append(stream.sent)


class TrustsAnySource(Replica):
    """Undoes finding 5: replies count from anyone (a forged ``ForwardReply`` acknowledges
    writes the backup never saw; a forged ``PingReply`` moves the replica to any view)."""

    def trusted_source(self, source: str, message: AnyMessage) -> bool:
        del source, message
        return True

    def on_forward_reply(self, source: str, reply: ForwardReply, out: Outbox) -> None:
        # Per-backup progress would ignore a stranger's reply: count it for the first backup.
        backup = source if source in self.view.backups else self.view.backup
        super().on_forward_reply(backup or source, reply, out)


class ForgetsReportedViews(ViewService):
    """Undoes finding 3: a view service with no state ignores the views the servers report
    and hands out view 1 to the first server it hears (two different views with one number)."""

    def reported_view_number(self) -> int:
        return 0

    def first_view(self) -> View | None:
        first = next((name for name in self.servers if self.alive(name)), None)
        return None if first is None else View(1, first, ())


class AcceptsRetiredIncarnations(ViewService):
    """Undoes finding 4: any ping with another incarnation is taken as a restart at once, so a
    late ping from a dead process flips the view service back to it."""

    def accept_incarnation(self, info: ServerInfo, ping: Ping, out: Outbox) -> bool:
        if info.incarnation not in (UNKNOWN_INCARNATION, ping.incarnation):
            out.log("server_restarted", self.view.number, server=ping.name)
        info.incarnation = ping.incarnation
        return True


__all__ = [
    "AcceptsRetiredIncarnations",
    "AdmitsOversizedRequests",
    "AppliesRetriesAgain",
    "CutsBatchesWithoutTheFrameLimit",
    "ForgetsReportedViews",
    "TrustsAnySource",
]


class _CharacterCountingStore(KVStore):
    """Judges an append's growth against ``value_bytes_max`` in characters, not UTF-8 bytes."""

    def _append_too_large(self, key: str, value: str) -> bool:
        return len(self.data.get(key, "")) + len(value) > self.limits.value_bytes_max


class JudgesAppendsInCharacters(_ReplicaWithStore):
    """Breaks the byte limits (§10): a key's value may grow by appends past ``value_bytes_max``
    bytes as long as it has no more characters than that. Invisible with one-byte characters:
    caught only by the seeds whose values are padded with wider ones (``sim/sizes.py``)."""

    store_class = _CharacterCountingStore


class AssumesRequestsFitABatch(Replica):
    """Undoes the fix of a review finding: the primary assumes every admitted request fits a
    forward batch, as it did until values could be as large as the batch bound (it crashed on
    a 1 MiB value, then the backup promoted in its place did too)."""

    def send_stream(self, backup: str, stream: BackupStream, out: Outbox) -> None:
        if stream.sent < self.next_index:
            first = self.log[stream.sent - self.acked_index]
            assert first.size <= self.config.forward_batch_bytes_max, "request over a batch"
        super().send_stream(backup, stream, out)

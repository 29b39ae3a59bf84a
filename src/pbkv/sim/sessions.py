"""Session eviction (N3): when the simulator lets an appended value be applied twice.

Theory of operation. The exactly-once table holds at most ``sessions_max`` clients and evicts
the least recently active one (``KVStore._touch``). docs/protocol.md N3: a retry, or a network
duplicate, of an operation that was applied before its client was evicted is applied again. So
with a small table an appended value may legitimately appear twice, and only then: the check
``append-at-most-once`` must allow exactly that and nothing more, or it stops catching a replica
that applies a retry twice for another reason.

``EvictionWatch`` observes every replica's table after each of its handler calls (only in runs
whose table is small enough to evict, ``sessions_max <= WATCHED_SESSIONS_MAX``). When the
store's eviction counter moved in that call, every watched client whose record is now missing,
or is another record object than after the previous call (evicted and created again within one
batch of messages), was evicted there, at the history clock's time (``World.clock``: an
invocation earlier in the same tick is before it, a later one after). A duplicated appended
value is permitted when its client was evicted at or after the append was invoked (the first
copy was applied before, the second after). Runs with
a small table write only by appends (``params._evicting``): a put or delete applied twice
could not be told from a bug. Such a value is an N3 double apply: the world
reports it in the run's statistics, and the linearizability check sees each read with the later
copies of permitted values removed (``without_permitted_copies``), so every other anomaly in the
same history is still found.
"""

from __future__ import annotations

from typing import Final

from pbkv.core.kv_store import KVStore

WATCHED_SESSIONS_MAX: Final = 64
"""Tables at most this large are watched for evictions; larger ones never evict in the sim."""


class EvictionWatch:
    """Which clients were evicted from which replica's exactly-once table, and when."""

    __slots__ = ("active", "client_names", "last_eviction", "seen", "sessions_max")

    def __init__(self, sessions_max: int) -> None:
        self.sessions_max = sessions_max
        self.active = sessions_max <= WATCHED_SESSIONS_MAX
        self.client_names: dict[str, str] = {}
        self.last_eviction: dict[str, float] = {}
        # Per replica: (its store, the store's eviction count, each watched client's record).
        self.seen: dict[str, tuple[KVStore, int, dict[str, object]]] = {}

    def client_started(self, name: str, client_id: str) -> None:
        self.client_names[client_id] = name

    def observe(self, replica: str, store: KVStore, now: float) -> None:
        """After a handler of ``replica``; ``now``: the history clock at that point (the time of
        the last history event, so an invocation earlier in the tick is at or before it and one
        later after it)."""
        sessions = store.sessions
        records: dict[str, object] = {cid: sessions.get(cid) for cid in self.client_names}
        before = self.seen.get(replica)
        self.seen[replica] = (store, store.evictions, records)
        if before is None or before[0] is not store or before[1] == store.evictions:
            return
        last_records = before[2]
        for client_id, name in self.client_names.items():
            record = records[client_id]
            if record is None or record is not last_records.get(client_id, record):
                self.last_eviction[name] = now

    def evicted_since(self, client: str, time: float) -> bool:
        """Whether ``client`` was evicted somewhere at or after history time ``time``."""
        last = self.last_eviction.get(client)
        return last is not None and last >= time


def without_permitted_copies(value: str, permitted: set[str]) -> str:
    """``value`` with every occurrence after the first of each permitted token removed."""
    for token in sorted(permitted):
        first = value.find(token)
        if first < 0:
            continue
        end = first + len(token)
        value = value[:end] + value[end:].replace(token, "")
    return value

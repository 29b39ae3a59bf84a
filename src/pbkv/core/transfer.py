"""State transfer: moving a complete replica state to a new backup in bounded chunks.

Theory of operation. When a primary enters a view with a backup, it freezes its state (client
requests arriving meanwhile wait in a bounded queue, so the snapshot cannot race with writes —
invariant P6) and sends it as a sequence of ``StateTransfer`` chunks, stop-and-wait: chunk k+1
leaves only after the backup acknowledged chunk k, and an unacknowledged chunk is resent after
``transfer_retry_ticks``. Each chunk holds at most ``transfer_chunk_bytes`` of keys and values
(one item at least), then the exactly-once table's records; the last chunk also carries the
stream position at which forwarding continues. The backup assembles chunks strictly in order
into a staging area and installs it atomically when the last chunk arrives, so a half-received
transfer never becomes the backup's state.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pbkv.core.kv_store import KVStore, text_bytes
from pbkv.core.messages import SessionRecord, StateTransfer, View

ITEM_OVERHEAD_BYTES = 8
SESSION_OVERHEAD_BYTES = 24


@dataclass(slots=True)
class OutgoingTransfer:
    """Primary side: the frozen snapshot and which chunk is in flight."""

    view: View
    primary: str
    items: list[tuple[str, str]]
    sessions: tuple[SessionRecord, ...]
    stream_index: int
    chunk_bytes: int
    chunk_index: int = 0
    item_cursor: int = 0
    session_cursor: int = 0
    current: StateTransfer | None = None
    sent_tick: int = 0
    bytes_sent: int = 0

    @classmethod
    def of(
        cls, store: KVStore, view: View, primary: str, stream_index: int, chunk_bytes: int
    ) -> OutgoingTransfer:
        return cls(
            view=view,
            primary=primary,
            items=list(store.data.items()),
            sessions=store.session_records(),
            stream_index=stream_index,
            chunk_bytes=chunk_bytes,
        )

    def next_chunk(self) -> StateTransfer:
        """Cut the next chunk (call once per chunk; ``current`` keeps it for resends)."""
        budget = self.chunk_bytes
        items_start = self.item_cursor
        while self.item_cursor < len(self.items) and (
            budget > 0 or self.item_cursor == items_start
        ):
            key, value = self.items[self.item_cursor]
            budget -= text_bytes(key) + text_bytes(value) + ITEM_OVERHEAD_BYTES
            self.item_cursor += 1
        sessions_start = self.session_cursor
        while self.session_cursor < len(self.sessions) and budget > 0:
            record = self.sessions[self.session_cursor]
            budget -= SESSION_OVERHEAD_BYTES + len(record.client_id) + 8 * len(record.applied)
            self.session_cursor += 1
        last = self.item_cursor == len(self.items) and self.session_cursor == len(self.sessions)
        chunk = StateTransfer(
            view=self.view,
            primary=self.primary,
            chunk_index=self.chunk_index,
            items=tuple(self.items[items_start : self.item_cursor]),
            last=last,
            sessions=self.sessions[sessions_start : self.session_cursor],
            stream_index=self.stream_index if last else 0,
        )
        self.bytes_sent += self.chunk_bytes - budget
        self.chunk_index += 1
        self.current = chunk
        return chunk


@dataclass(slots=True)
class IncomingTransfer:
    """Backup side: chunks received so far for one view, in order."""

    view_number: int
    next_chunk: int = 0
    data: dict[str, str] = field(default_factory=dict)
    sessions: list[SessionRecord] = field(default_factory=list)
    bytes_received: int = 0

    def add(self, chunk: StateTransfer) -> None:
        assert chunk.chunk_index == self.next_chunk
        self.data.update(chunk.items)
        self.sessions.extend(chunk.sessions)
        self.bytes_received += sum(text_bytes(k) + text_bytes(v) for k, v in chunk.items)
        self.next_chunk += 1

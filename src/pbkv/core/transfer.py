"""State transfer: moving a complete replica state to a new backup in bounded chunks.

Theory of operation. When a primary enters a view with a backup, it freezes its state (client
requests arriving meanwhile wait in a bounded queue, so the snapshot cannot race with writes —
invariant P6) and sends it as a sequence of ``StateTransfer`` chunks, stop-and-wait: chunk k+1
leaves only after the backup acknowledged chunk k, and an unacknowledged chunk is resent after
``transfer_retry_ticks``. A chunk holds items, then exactly-once records, up to
``transfer_chunk_bytes`` of their encoded size, and never more than a frame can carry with the
chunk's header (``pbkv.core.sizes``): it takes one more item or record only if it still fits,
except that every chunk takes at least one (which the size settings check guarantees fits). The
last chunk carries the stream position at which forwarding continues. Every chunk names the
backup process it is for (``target_incarnation``, P8), so a restarted process at the same
address cannot install a stale duplicate. The backup assembles chunks strictly in order into a
staging area and installs it atomically when the last chunk arrives, so a half-received transfer
never becomes the backup's state. Both sides count ``bytes`` the same way: the encoded-size
bound of the items and records, so the two log lines of one transfer agree.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pbkv.core.kv_store import KVStore
from pbkv.core.messages import SessionRecord, StateTransfer, View
from pbkv.core.sizes import item_bytes, session_bytes, transfer_header_bytes


def record_bytes(record: SessionRecord) -> int:
    return session_bytes(record.client_id, len(record.applied) + len(record.refused))


@dataclass(slots=True)
class OutgoingTransfer:
    """Primary side: the frozen snapshot and which chunk is in flight."""

    view: View
    primary: str
    items: list[tuple[str, str]]
    sessions: tuple[SessionRecord, ...]
    stream_index: int
    chunk_bytes: int
    target_incarnation: int = 0
    chunk_index: int = 0
    item_cursor: int = 0
    session_cursor: int = 0
    current: StateTransfer | None = None
    sent_tick: int = 0
    bytes_sent: int = 0

    @classmethod
    def of(
        cls,
        store: KVStore,
        view: View,
        primary: str,
        stream_index: int,
        chunk_bytes: int,
        frame_bytes_max: int,
        target_incarnation: int = 0,
    ) -> OutgoingTransfer:
        header = transfer_header_bytes((*view.members(), primary))
        return cls(
            view=view,
            primary=primary,
            items=list(store.data.items()),
            sessions=store.session_records(),
            stream_index=stream_index,
            chunk_bytes=max(1, min(chunk_bytes, frame_bytes_max - header)),
            target_incarnation=target_incarnation,
        )

    def next_chunk(self) -> StateTransfer:
        """Cut the next chunk (call once per chunk; ``current`` keeps it for resends)."""
        budget = self.chunk_bytes
        items, sessions = self.items, self.sessions
        items_start, sessions_start = self.item_cursor, self.session_cursor
        while self.item_cursor < len(items):
            size = item_bytes(*items[self.item_cursor])
            if size > budget and self.item_cursor > items_start:
                break
            budget -= size
            self.item_cursor += 1
        while self.session_cursor < len(sessions):
            size = record_bytes(sessions[self.session_cursor])
            empty = self.item_cursor == items_start and self.session_cursor == sessions_start
            if size > budget and not empty:
                break
            budget -= size
            self.session_cursor += 1
        last = self.item_cursor == len(items) and self.session_cursor == len(sessions)
        chunk = StateTransfer(
            view=self.view,
            primary=self.primary,
            chunk_index=self.chunk_index,
            items=tuple(items[items_start : self.item_cursor]),
            last=last,
            sessions=sessions[sessions_start : self.session_cursor],
            stream_index=self.stream_index if last else 0,
            target_incarnation=self.target_incarnation,
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
        self.bytes_received += sum(item_bytes(k, v) for k, v in chunk.items)
        self.bytes_received += sum(record_bytes(record) for record in chunk.sessions)
        self.next_chunk += 1

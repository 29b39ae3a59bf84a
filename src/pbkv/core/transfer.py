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

Catch-up (P10). Chunk 0 is a probe: the backup answers with the stream position its own state
holds and the lineage tag of the position before it (the view whose primary assigned it). If
the primary's backlog still holds that position with the same tag, the backup's state is a
prefix of the primary's stream (one primary per view, V1, assigns each position once: the
log-matching argument of Raft), and the transfer carries only the positions after it
(``suffix``), which the backup applies in order through the same ``execute``. Otherwise, or when
the backlog has let that position go, the complete state follows as above.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pbkv.core.kv_store import KVStore
from pbkv.core.messages import Request, SessionRecord, StateTransfer, View
from pbkv.core.sizes import (
    SUFFIX_ENTRY_OVERHEAD_BYTES,
    item_bytes,
    request_bytes_bound,
    session_bytes,
    transfer_header_bytes,
)


def record_bytes(record: SessionRecord) -> int:
    return session_bytes(record.client_id, len(record.applied) + len(record.refused))


@dataclass(slots=True)
class OutgoingTransfer:
    """Primary side: the frozen state, what is sent of it, and which chunk is in flight.

    It starts as a probe (chunk 0); the backup's answer makes it ``full`` (``use_state``) or
    ``suffix`` (``use_suffix``)."""

    view: View
    primary: str
    stream_index: int
    stream_tag: int
    chunk_bytes: int
    target_incarnation: int = 0
    mode: str = "probe"
    items: list[tuple[str, str]] = field(default_factory=list)
    sessions: tuple[SessionRecord, ...] = ()
    suffix: list[tuple[int, Request]] = field(default_factory=list)
    suffix_start: int = 0
    chunk_index: int = 0
    item_cursor: int = 0
    session_cursor: int = 0
    current: StateTransfer | None = None
    sent_tick: int = 0
    bytes_sent: int = 0

    @classmethod
    def of(
        cls,
        view: View,
        primary: str,
        stream_index: int,
        stream_tag: int,
        chunk_bytes: int,
        frame_bytes_max: int,
        target_incarnation: int = 0,
    ) -> OutgoingTransfer:
        header = transfer_header_bytes((*view.members(), primary))
        return cls(
            view=view,
            primary=primary,
            stream_index=stream_index,
            stream_tag=stream_tag,
            chunk_bytes=max(1, min(chunk_bytes, frame_bytes_max - header)),
            target_incarnation=target_incarnation,
        )

    def probe_chunk(self) -> StateTransfer:
        """Chunk 0: asks the backup for its position (its answer chooses suffix or full)."""
        chunk = StateTransfer(
            self.view, self.primary, 0, (), False, probe=True,
            target_incarnation=self.target_incarnation,
        )  # fmt: skip
        self.chunk_index, self.current = 1, chunk
        return chunk

    def use_state(self, store: KVStore) -> None:
        """Send the complete state (the store is frozen while the transfer runs: P6)."""
        self.mode = "full"
        self.items = list(store.data.items())
        self.sessions = store.session_records()

    def use_suffix(self, start: int, entries: list[tuple[int, Request]]) -> None:
        """Send only positions ``start`` .. ``stream_index - 1`` (P10)."""
        assert start + len(entries) == self.stream_index
        self.mode = "suffix"
        self.suffix_start, self.suffix = start, entries

    def next_chunk(self) -> StateTransfer:
        """Cut the next chunk (call once per chunk; ``current`` keeps it for resends)."""
        chunk = self.next_suffix_chunk() if self.mode == "suffix" else self.next_state_chunk()
        self.chunk_index += 1
        self.current = chunk
        return chunk

    def next_suffix_chunk(self) -> StateTransfer:
        budget = self.chunk_bytes
        entries, start = self.suffix, self.item_cursor
        while self.item_cursor < len(entries):
            size = SUFFIX_ENTRY_OVERHEAD_BYTES + request_bytes_bound(entries[self.item_cursor][1])
            if size > budget and self.item_cursor > start:
                break
            budget -= size
            self.item_cursor += 1
        last = self.item_cursor == len(entries)
        self.bytes_sent += self.chunk_bytes - budget
        return StateTransfer(
            view=self.view,
            primary=self.primary,
            chunk_index=self.chunk_index,
            items=(),
            last=last,
            stream_index=self.stream_index if last else 0,
            target_incarnation=self.target_incarnation,
            suffix_start=self.suffix_start + start,
            suffix=tuple(entries[start : self.item_cursor]),
            stream_tag=self.stream_tag if last else 0,
        )

    def next_state_chunk(self) -> StateTransfer:
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
        self.bytes_sent += self.chunk_bytes - budget
        return StateTransfer(
            view=self.view,
            primary=self.primary,
            chunk_index=self.chunk_index,
            items=tuple(items[items_start : self.item_cursor]),
            last=last,
            sessions=sessions[sessions_start : self.session_cursor],
            stream_index=self.stream_index if last else 0,
            target_incarnation=self.target_incarnation,
            stream_tag=self.stream_tag if last else 0,
        )


@dataclass(slots=True)
class IncomingTransfer:
    """Backup side: chunks received so far for one view, in order (chunk 0 is the probe)."""

    view_number: int
    next_chunk: int = 1
    data: dict[str, str] = field(default_factory=dict)
    sessions: list[SessionRecord] = field(default_factory=list)
    bytes_received: int = 0
    positions: int = 0

    def add(self, chunk: StateTransfer) -> None:
        """Stage a chunk of the complete state (a suffix chunk is applied, not staged)."""
        assert chunk.chunk_index == self.next_chunk
        self.data.update(chunk.items)
        self.sessions.extend(chunk.sessions)
        self.bytes_received += sum(item_bytes(k, v) for k, v in chunk.items)
        self.bytes_received += sum(record_bytes(record) for record in chunk.sessions)
        self.next_chunk += 1

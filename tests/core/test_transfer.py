"""State transfer chunking (P4): bounded chunks, in order, installed only when complete."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pbkv.core.kv_store import KVStore
from pbkv.core.messages import Append, Put, Request, SessionRecord, StateTransfer, View
from pbkv.core.sizes import item_bytes, session_bytes
from pbkv.core.transfer import IncomingTransfer, OutgoingTransfer

VIEW = View(4, "p", ("b",))
FRAME = 1 << 24


def chunks_of(
    store: KVStore, chunk_bytes: int, stream_index: int = 7, frame: int = FRAME
) -> list[StateTransfer]:
    outgoing = OutgoingTransfer.of(VIEW, "p", stream_index, 0, chunk_bytes, frame)
    assert outgoing.probe_chunk().probe
    outgoing.use_state(store)
    chunks = [outgoing.next_chunk()]
    while not chunks[-1].last:
        chunks.append(outgoing.next_chunk())
        assert len(chunks) < 10_000
    assert outgoing.current == chunks[-1]
    return chunks


def store_with(items: dict[str, str], clients: int = 0) -> KVStore:
    store = KVStore()
    for seq, (key, value) in enumerate(items.items()):
        store.execute(Request("writer", seq, 0, Put(key, value)))
    for index in range(clients):
        store.execute(Request(f"client-{index}", 3, 2, Append("log", "x")))
    return store


def install(chunks: list[StateTransfer]) -> tuple[KVStore, IncomingTransfer]:
    incoming = IncomingTransfer(VIEW.number)
    for chunk in chunks:
        incoming.add(chunk)
    store = KVStore()
    store.install(incoming.data, incoming.sessions)
    return store, incoming


def test_empty_store_is_one_last_chunk_carrying_the_stream_position() -> None:
    [chunk] = chunks_of(KVStore(), 100, stream_index=42)
    assert chunk == StateTransfer(VIEW, "p", 1, (), True, (), 42)


def test_chunks_are_bounded_ordered_and_only_the_last_carries_the_stream_position() -> None:
    items = {f"key{i:03}": "v" * (i % 7) for i in range(50)}
    store = store_with(items, clients=5)
    chunks = chunks_of(store, 64)
    assert len(chunks) > 5
    assert [c.chunk_index for c in chunks] == list(range(1, len(chunks) + 1))
    assert all(c.stream_index == 0 for c in chunks[:-1]) and chunks[-1].stream_index == 7
    for chunk in chunks:
        # A chunk never exceeds its budget, unless it carries a single item or record.
        sizes = [item_bytes(k, v) for k, v in chunk.items] + [
            session_bytes(r.client_id, len(r.applied)) for r in chunk.sessions
        ]
        assert sum(sizes) <= 64 or len(sizes) == 1
    sent_items = [item for chunk in chunks for item in chunk.items]
    assert sent_items == list(store.data.items())
    sessions = [record for chunk in chunks for record in chunk.sessions]
    assert tuple(sessions) == store.session_records()
    # The table follows the items: no chunk carries items after one that carried sessions.
    first_session_chunk = next(i for i, c in enumerate(chunks) if c.sessions)
    assert all(not c.items for c in chunks[first_session_chunk + 1 :])


def test_an_item_larger_than_a_chunk_travels_whole_and_alone() -> None:
    store = store_with({"small": "s", "huge": "h" * 500, "tail": "t"})
    chunks = chunks_of(store, 50)
    assert chunks[0].items == (("small", "s"),)
    assert chunks[1].items == (("huge", "h" * 500),)
    assert chunks[2].items[0] == ("tail", "t")
    assert install(chunks)[0].data == store.data


def test_chunks_never_exceed_the_frame_limit_whatever_the_chunk_setting() -> None:
    """Finding 2 of the edge review: 1 MiB chunks under a 1 MiB frame limit jammed the first
    transfer. The chunk budget is cut to what a frame carries with the chunk's header."""
    frame = 4096
    store = store_with({f"k{i}": "v" * 1000 for i in range(20)}, clients=40)
    chunks = chunks_of(store, 1 << 20, frame=frame)
    encoder = msgspec.msgpack.Encoder()
    assert len(chunks) > 4
    assert all(len(encoder.encode(chunk)) <= frame for chunk in chunks)
    assert install(chunks)[0].data == store.data


def test_a_long_client_id_record_still_fits_its_chunk() -> None:
    """Finding 1: a session record with a long id made every chunk too large."""
    store = KVStore()
    store.install({}, [SessionRecord("c" * 2000, 0, tuple(range(100)))])
    frame = 4096
    [chunk] = chunks_of(store, 1 << 20, frame=frame)
    assert len(msgspec.msgpack.Encoder().encode(chunk)) <= frame


def test_snapshot_is_frozen_when_the_complete_state_is_chosen() -> None:
    store = store_with({"a": "1"})
    outgoing = OutgoingTransfer.of(VIEW, "p", 1, 0, 1000, FRAME)
    outgoing.probe_chunk()
    outgoing.use_state(store)
    store.execute(Request("writer", 99, 0, Put("b", "2")))
    chunk = outgoing.next_chunk()
    assert chunk.items == (("a", "1"),) and chunk.last


def test_incoming_transfer_accepts_chunks_strictly_in_order() -> None:
    chunks = chunks_of(store_with({f"k{i}": "v" for i in range(10)}), 20)
    incoming = IncomingTransfer(VIEW.number)
    incoming.add(chunks[0])
    with pytest.raises(AssertionError):
        incoming.add(chunks[2])
    with pytest.raises(AssertionError):
        incoming.add(chunks[0])
    assert incoming.next_chunk == 2


def suffix_chunks(
    entries: list[tuple[int, Request]], chunk_bytes: int, frame: int = FRAME
) -> list[StateTransfer]:
    outgoing = OutgoingTransfer.of(VIEW, "p", 5 + len(entries), 3, chunk_bytes, frame)
    outgoing.probe_chunk()
    outgoing.use_suffix(5, entries)
    chunks = [outgoing.next_chunk()]
    while not chunks[-1].last:
        chunks.append(outgoing.next_chunk())
    return chunks


def test_catch_up_chunks_carry_the_suffix_in_order_and_the_last_the_position_and_tag() -> None:
    """P10: a suffix travels in chunks cut by size, each naming where it starts."""
    entries = [(3, Request("w", i, i, Put(f"k{i}", "v" * 30))) for i in range(40)]
    chunks = suffix_chunks(entries, 200)
    assert len(chunks) > 5
    assert [c.suffix_start for c in chunks] == [
        5 + sum(len(c.suffix) for c in chunks[:i]) for i in range(len(chunks))
    ]
    assert [entry for c in chunks for entry in c.suffix] == entries
    assert (chunks[-1].stream_index, chunks[-1].stream_tag) == (45, 3)
    assert all(c.stream_index == 0 and not c.items for c in chunks[:-1])


def test_catch_up_chunks_never_exceed_the_frame_limit() -> None:
    frame = 4096
    entries = [(2, Request("c" * 100, i, i, Put("k" * 50, "v" * 1500))) for i in range(12)]
    chunks = suffix_chunks(entries, 1 << 20, frame=frame)
    encoder = msgspec.msgpack.Encoder()
    assert len(chunks) >= 6
    assert all(len(encoder.encode(chunk)) <= frame for chunk in chunks)


def test_an_empty_suffix_is_one_last_chunk() -> None:
    [chunk] = suffix_chunks([], 100)
    assert chunk.last and chunk.suffix == () and chunk.suffix_start == 5


@settings(max_examples=80, deadline=None)
@given(
    st.dictionaries(st.text(max_size=6), st.text(max_size=40), max_size=30),
    st.integers(0, 8),
    st.integers(1, 200),
)
def test_property_transfer_round_trip(items: dict[str, str], clients: int, chunk: int) -> None:
    store = store_with(items, clients)
    copy, incoming = install(chunks_of(store, chunk))
    assert copy.data == store.data
    assert copy.session_records() == store.session_records()
    data = store.data.items()
    records = store.session_records()
    expected = sum(item_bytes(k, v) for k, v in data)
    expected += sum(session_bytes(r.client_id, len(r.applied)) for r in records)
    assert incoming.bytes_received == expected

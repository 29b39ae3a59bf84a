"""State transfer chunking (P4): bounded chunks, in order, installed only when complete."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pbkv.core.kv_store import KVStore, text_bytes
from pbkv.core.messages import Append, Put, Request, StateTransfer, View
from pbkv.core.transfer import ITEM_OVERHEAD_BYTES, IncomingTransfer, OutgoingTransfer

VIEW = View(4, "p", ("b",))


def chunks_of(store: KVStore, chunk_bytes: int, stream_index: int = 7) -> list[StateTransfer]:
    outgoing = OutgoingTransfer.of(store, VIEW, "p", stream_index, chunk_bytes)
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
    assert chunk == StateTransfer(VIEW, "p", 0, (), True, (), 42)


def test_chunks_are_bounded_ordered_and_only_the_last_carries_the_stream_position() -> None:
    items = {f"key{i:03}": "v" * (i % 7) for i in range(50)}
    store = store_with(items, clients=5)
    chunks = chunks_of(store, 64)
    assert len(chunks) > 5
    assert [c.chunk_index for c in chunks] == list(range(len(chunks)))
    assert all(c.stream_index == 0 for c in chunks[:-1]) and chunks[-1].stream_index == 7
    for chunk in chunks:
        # An item is added while the budget is not spent: a chunk overshoots by its last item.
        sizes = [text_bytes(k) + text_bytes(v) + ITEM_OVERHEAD_BYTES for k, v in chunk.items]
        assert sum(sizes[:-1]) < 64
    sent_items = [item for chunk in chunks for item in chunk.items]
    assert sent_items == list(store.data.items())
    sessions = [record for chunk in chunks for record in chunk.sessions]
    assert tuple(sessions) == store.session_records()
    # The table follows the items: no chunk carries items after one that carried sessions.
    first_session_chunk = next(i for i, c in enumerate(chunks) if c.sessions)
    assert all(not c.items for c in chunks[first_session_chunk + 1 :])


def test_an_item_larger_than_a_chunk_travels_whole_and_closes_its_chunk() -> None:
    store = store_with({"small": "s", "huge": "h" * 500, "tail": "t"})
    chunks = chunks_of(store, 50)
    assert chunks[0].items[-1] == ("huge", "h" * 500)
    assert chunks[1].items == (("tail", "t"),)
    assert install(chunks)[0].data == store.data


def test_snapshot_is_frozen_at_the_start() -> None:
    store = store_with({"a": "1"})
    outgoing = OutgoingTransfer.of(store, VIEW, "p", 1, 1000)
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
    assert incoming.next_chunk == 1


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
    assert incoming.bytes_received == sum(text_bytes(k) + text_bytes(v) for k, v in data)

"""KVStore: the application and its exactly-once table (C1-C3, P5)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from pbkv.core.effects import Log
from pbkv.core.kv_store import ClientRecord, KVStore, Limits, Outcome
from pbkv.core.messages import Append, Delete, Get, Operation, Put, Request
from pbkv.core.sizes import written_value


def req(seq: int, op: Operation, client: str = "c", completed_below: int = 0) -> Request:
    return Request(client, seq, completed_below, op)


def test_put_append_delete_get() -> None:
    store = KVStore()
    assert store.execute(req(0, Get("k"))) == Outcome("ok", None)
    assert store.execute(req(1, Append("k", "a"))) == Outcome("ok")  # missing key appends to ""
    assert store.execute(req(2, Append("k", "b"))) == Outcome("ok")
    assert store.execute(req(3, Get("k"))) == Outcome("ok", "ab")
    assert store.execute(req(4, Put("k", "x"))) == Outcome("ok")
    assert store.execute(req(5, Get("k"))) == Outcome("ok", "x")
    assert store.execute(req(6, Delete("k"))) == Outcome("ok")
    assert store.execute(req(7, Delete("k"))) == Outcome("ok")  # deleting a missing key is fine
    assert store.execute(req(8, Get("k"))) == Outcome("ok", None)
    assert store.data == {}


def test_retried_write_is_not_applied_again() -> None:
    store = KVStore()
    append = req(0, Append("k", "a"))
    assert store.execute(append) == Outcome("ok")
    assert store.execute(append) == Outcome("ok")
    assert store.data == {"k": "a"}
    store.execute(req(1, Put("k", "b")))
    store.execute(append)  # a very late retry, still above the watermark
    assert store.data == {"k": "b"}


def test_retried_append_near_the_size_limit_still_answers_ok() -> None:
    """Bug found: the size check ran before the duplicate check, so a retry of an append that
    had been applied (the value now includes it) was answered ``too_large``, a final error for an
    operation that did take effect (C1)."""
    store = KVStore(Limits(value_bytes_max=8))
    append = req(0, Append("k", "abcdef"))
    assert store.execute(append) == Outcome("ok")
    assert store.execute(append) == Outcome("ok")
    assert store.data == {"k": "abcdef"}
    assert store.execute(req(1, Append("k", "xyz"))).status == "too_large"


def test_retried_read_is_executed_again() -> None:
    store = KVStore()
    get = req(0, Get("k"))
    assert store.execute(get).value is None
    store.execute(req(1, Put("k", "v")))
    assert store.execute(get).value == "v"  # reads are never recorded
    assert store.sessions["c"].applied == {1}


def test_request_below_the_watermark_is_stale_and_not_applied() -> None:
    store = KVStore()
    store.execute(req(5, Put("k", "v"), completed_below=3))
    outcome = store.execute(req(2, Put("k", "late"), completed_below=2))
    assert outcome.status == "stale" and outcome.detail
    assert store.data == {"k": "v"}
    assert store.sessions["c"].completed_below == 3  # the watermark never moves back


def test_request_beyond_the_window_is_invalid() -> None:
    store = KVStore(Limits(window=4))
    assert store.execute(req(4, Put("k", "v"))).status == "invalid"
    assert store.data == {}
    assert store.execute(req(3, Put("k", "v"))).status == "ok"
    assert store.execute(req(6, Put("k", "w"), completed_below=3)).status == "ok"
    assert store.data == {"k": "w"}


def test_watermark_prunes_the_applied_set() -> None:
    store = KVStore()
    for seq in range(4):
        store.execute(req(seq, Append("k", str(seq))))
    assert store.sessions["c"].applied == {0, 1, 2, 3}
    store.execute(req(4, Get("k"), completed_below=3))
    assert store.sessions["c"].applied == {3}
    assert store.sessions["c"].completed_below == 3


def test_least_recently_active_client_is_evicted_deterministically() -> None:
    store = KVStore(Limits(sessions_max=2))
    store.execute(req(0, Put("a", "1"), client="A"))
    store.execute(req(0, Put("b", "1"), client="B"))
    store.execute(req(1, Get("a"), client="A"))  # A is now the most recent
    store.execute(req(0, Put("c", "1"), client="C"))
    assert list(store.sessions) == ["A", "C"]
    # N3: B forgotten, so its retry applies again (the known gap).
    store.execute(req(0, Put("b", "2"), client="B"))
    assert list(store.sessions) == ["C", "B"] and store.data["b"] == "2"


def test_session_records_and_install_round_trip() -> None:
    store = KVStore()
    store.execute(req(0, Put("a", "1"), client="A"))
    store.execute(req(3, Append("b", "2"), client="B", completed_below=2))
    store.execute(req(1, Append("a", "1"), client="A"))
    records = store.session_records()
    assert [(r.client_id, r.completed_below, r.applied) for r in records] == [
        ("B", 2, (3,)),
        ("A", 0, (0, 1)),
    ]
    copy = KVStore()
    copy.execute(req(0, Put("junk", "x"), client="Z"))
    copy.install(dict(store.data), records)
    assert copy.data == store.data and copy.session_records() == records
    assert copy.execute(req(1, Append("a", "1"), client="A")) == Outcome("ok")
    assert copy.data == store.data


def test_an_installed_table_evicts_exactly_as_the_table_it_came_from() -> None:
    """P5, C3: a backup that installed a transfer must evict the same sessions as its primary
    when ``sessions_bytes_max`` is reached, so the installed table is charged the same bytes;
    charged less, it would keep a session the primary evicted and the replicas diverge."""
    limits = Limits(sessions_bytes_max=1000)
    primary = KVStore(limits)
    for index in range(4):
        primary.execute(req(index, Put("k", str(index)), client=f"client{index}"))
    backup = KVStore(limits)
    backup.install(dict(primary.data), primary.session_records())
    assert backup.session_bytes == primary.session_bytes
    late = req(0, Put("k", "late"), client="newcomer")
    primary.execute(late)
    backup.execute(late)
    assert primary.evictions > 0
    assert backup.session_records() == primary.session_records()


def test_oversized_keys_and_values_are_refused_with_a_detail() -> None:
    store = KVStore(Limits(key_bytes_max=4, value_bytes_max=6))
    assert store.execute(req(0, Get("kkkkk"))) == Outcome("too_large", None, "key exceeds 4 bytes")
    assert store.execute(req(1, Put("k", "é" * 4))).detail == "value exceeds 6 bytes"  # UTF-8
    assert store.execute(req(2, Put("k", "vvvvvv"))).status == "ok"
    assert store.execute(req(3, Append("k", "v"))).status == "too_large"
    assert store.data == {"k": "vvvvvv"}


def test_an_append_reaching_exactly_the_value_limit_is_applied() -> None:
    """The limit is the largest value allowed (``value_bytes_max`` bytes, P9): an append that
    makes the value exactly that long is applied, one byte more is refused, in UTF-8 bytes."""
    store = KVStore(Limits(value_bytes_max=6))
    assert store.execute(req(0, Put("k", "ab"))) == Outcome("ok")
    assert store.execute(req(1, Append("k", "cdef"))) == Outcome("ok")
    assert store.data == {"k": "abcdef"}
    assert store.execute(req(2, Put("j", "abcd"))) == Outcome("ok")
    assert store.execute(req(3, Append("j", "é"))) == Outcome("ok")  # 2 bytes: 6 in all
    assert store.execute(req(4, Append("j", "x"))).status == "too_large"
    assert store.data["j"] == "abcdé"


# --- properties --------------------------------------------------------------------------------

LIMITS = Limits(key_bytes_max=2, value_bytes_max=6, sessions_max=2, window=4)

operations = st.one_of(
    st.builds(Get, st.sampled_from(["a", "b", "ccc"])),
    st.builds(Put, st.sampled_from(["a", "b"]), st.sampled_from(["", "x", "yy", "zzzzzzz"])),
    st.builds(Append, st.sampled_from(["a", "b"]), st.sampled_from(["x", "yyy"])),
    st.builds(Delete, st.sampled_from(["a", "b"])),
)


@st.composite
def requests(draw: st.DrawFn) -> Request:
    """A request a real client could send: every number below ``completed_below`` is finished,
    so ``completed_below <= seq``."""
    seq = draw(st.integers(0, 7))
    completed_below = draw(st.integers(0, seq))
    return Request(draw(st.sampled_from(["A", "B", "C"])), seq, completed_below, draw(operations))


def state(store: KVStore) -> object:
    return (dict(store.data), store.session_records())


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(requests(), st.booleans()), max_size=40))
def test_property_executing_a_request_twice_equals_once(steps: list[tuple[Request, bool]]) -> None:
    once, twice = KVStore(LIMITS), KVStore(LIMITS)
    for request, duplicate in steps:
        first = twice.execute(request)
        assert once.execute(request) == first
        if duplicate:
            again = twice.execute(request)
            assert again == first, f"{request}: {first} then {again}"
        assert state(twice) == state(once)


@settings(max_examples=100, deadline=None)
@given(st.lists(requests(), max_size=40), st.lists(st.integers(0, 39), max_size=10))
def test_property_two_stores_executing_the_same_stream_end_identical(
    stream: list[Request], duplicates: list[int]
) -> None:
    for index in duplicates:  # retries anywhere later in the stream
        if index < len(stream):
            stream = [*stream, stream[index]]
    primary, backup = KVStore(LIMITS), KVStore(LIMITS)
    outcomes = [primary.execute(request) for request in stream]
    assert [backup.execute(request) for request in stream] == outcomes
    assert state(primary) == state(backup)


def test_written_value_is_what_an_operation_writes() -> None:
    assert written_value(Put("k", "put")) == "put"
    assert written_value(Append("k", "more")) == "more"
    assert written_value(Get("k")) == ""
    assert written_value(Delete("k")) == ""


def test_each_client_record_has_its_own_sets() -> None:
    """C1: a number applied for one client must not count as applied for another (records
    built with the defaults must not share them)."""
    first, second = ClientRecord(), ClientRecord()
    first.applied.add(1)
    first.refused.add(2)
    assert second.applied == set() and second.refused == set()
    store = KVStore()
    store.execute(Request("a", 0, 0, Put("k", "1")))
    assert store.execute(Request("b", 0, 0, Put("k", "2"))) == Outcome("ok")
    assert store.data["k"] == "2"  # b's seq 0 was applied, not taken for a's retry


def test_log_effects_do_not_share_their_fields() -> None:
    first, second = Log("a", 1), Log("b", 1)
    first.fields["x"] = 1
    assert second.fields == {}

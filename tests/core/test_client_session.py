"""ClientSession driven by hand: one test per rule (C1-C4)."""

from __future__ import annotations

import random

from pbkv.core.client_session import ClientConfig, ClientSession
from pbkv.core.effects import Deliver, Effect, Outbox
from pbkv.core.messages import (
    AnyMessage,
    Get,
    GetView,
    Operation,
    Put,
    Reply,
    Request,
    Status,
    View,
    ViewReply,
)
from tests.core.harness import delivered, sends, sent

CONFIG = ClientConfig(
    retry_initial_ticks=4,
    retry_max_ticks=12,
    timeout_ticks=1000,
    requests_in_flight_max=4,
    requests_queued_max=8,
    view_query_retry_ticks=3,
)
V1 = View(1, "p")
PUT = Put("k", "v")


class Driver:
    def __init__(self, config: ClientConfig = CONFIG, seed: int = 7) -> None:
        self.session = ClientSession("vs", random.Random(seed), config)
        self.effects: list[Effect] = []

    def keep(self, out: Outbox) -> list[Effect]:
        effects = out.take()
        self.effects += effects
        return effects

    def submit(self, op: Operation = PUT, timeout_ticks: int | None = None) -> int:
        out = Outbox()
        seq = self.session.submit(op, out, timeout_ticks)
        self.keep(out)
        return seq

    def receive(self, message: AnyMessage, source: str = "p") -> list[Effect]:
        out = Outbox()
        self.session.on_message(source, message, out)
        return self.keep(out)

    def reply(self, seq: int, status: Status = "ok", value: str | None = None) -> list[Effect]:
        return self.receive(Reply(self.session.client_id, seq, status, value))

    def tick(self, count: int = 1) -> list[Effect]:
        effects: list[Effect] = []
        for _ in range(count):
            out = Outbox()
            self.session.on_tick(out)
            effects += self.keep(out)
        return effects

    def with_view(self, view: View = V1) -> Driver:
        self.receive(ViewReply(view), source="vs")
        return self

    def get_views(self) -> int:
        return len(sent(self.effects, GetView, target="vs"))


def test_c4_asks_the_view_service_when_it_has_no_view() -> None:
    d = Driver()
    seq = d.submit(Put("k", "v"))
    assert [(s.target, s.message) for s in sends(d.effects)] == [("vs", GetView())]
    effects = d.receive(ViewReply(V1), source="vs")
    client = d.session.client_id
    assert [(s.target, s.message) for s in sends(effects)] == [
        ("p", Request(client, seq, 0, Put("k", "v")))
    ]


def test_c4_view_without_primary_is_not_used_and_the_query_repeats_at_a_bounded_rate() -> None:
    d = Driver()
    d.submit()
    assert not sends(d.receive(ViewReply(View(0)), source="vs"))
    d.tick(9)
    assert d.get_views() == 4  # ticks 0, 3, 6, 9: one per view_query_retry_ticks
    assert not sent(d.effects, Request)


def test_c4_caches_the_view_no_get_view_per_operation() -> None:
    """6.824 [P1] "Count RPCs to viewserver" / DSLabs [DP05]: 100 operations, one GetView."""
    d = Driver()
    for i in range(100):
        seq = d.submit(Put(f"xk{i}", str(i)))
        if i == 0:
            d.with_view()
        d.tick()
        d.reply(seq)
    assert d.get_views() == 1
    assert len(sent(d.effects, Request)) == 100
    assert [r.status for r in delivered(d.effects)] == ["ok"] * 100


def test_c4_wrong_server_refreshes_the_view_and_resends_to_the_new_primary() -> None:
    d = Driver(ClientConfig(retry_initial_ticks=50, view_query_retry_ticks=3)).with_view()
    seq = d.submit(Get("k"))
    d.tick(3)
    assert d.get_views() == 0
    effects = d.reply(seq, "wrong_server")
    assert sent(effects, GetView, target="vs") == [GetView()]
    d.reply(seq, "wrong_server")
    assert d.get_views() == 1  # refreshes are rate-limited
    assert not delivered(d.effects)
    effects = d.receive(ViewReply(View(2, "b")), source="vs")
    assert sent(effects, Request, target="b") == [Request(d.session.client_id, seq, 0, Get("k"))]
    d.receive(Reply(d.session.client_id, seq, "ok", "v"), source="b")
    assert delivered(d.effects) == [Deliver(seq, "ok", "v")]


def test_c4_an_older_view_is_ignored() -> None:
    d = Driver().with_view(View(3, "p"))
    d.submit()
    assert not sends(d.receive(ViewReply(View(2, "q")), source="vs"))
    assert d.session.view == View(3, "p")


def retry_ticks(seed: int, ticks: int = 120) -> list[int]:
    d = Driver(seed=seed).with_view()
    d.submit()
    schedule = []
    for now in range(1, ticks + 1):
        if sent(d.tick(), Request):
            schedule.append(now)
    return schedule


def test_c4_retries_back_off_exponentially_bounded_and_jittered_from_the_rng() -> None:
    schedule = retry_ticks(seed=1)
    gaps = [b - a for a, b in zip([0, *schedule], schedule, strict=False)]
    assert len(gaps) > 8
    assert CONFIG.retry_initial_ticks // 2 <= gaps[0] <= CONFIG.retry_initial_ticks
    assert all(1 <= gap <= CONFIG.retry_max_ticks for gap in gaps)
    assert all(gap >= CONFIG.retry_max_ticks // 2 for gap in gaps[2:])  # at the cap, jittered
    assert len(set(gaps[2:])) > 1
    assert retry_ticks(seed=1) == schedule  # same seed, same schedule
    assert retry_ticks(seed=2) != schedule


def test_c4_unanswered_request_also_refreshes_the_view() -> None:
    d = Driver().with_view()
    d.submit()
    d.tick(CONFIG.retry_initial_ticks)
    assert d.get_views() == 1


def test_deadline_delivers_unavailable_and_stops_retrying() -> None:
    d = Driver().with_view()
    seq = d.submit(timeout_ticks=30)
    d.tick(29)
    assert not delivered(d.effects)
    effects = d.tick()
    assert delivered(effects) == [
        Deliver(seq, "unavailable", None, "no primary completed it in time")
    ]
    assert not sent(d.tick(50), Request)
    assert not d.reply(seq)  # a late answer changes nothing
    assert len(delivered(d.effects)) == 1


def test_c1_duplicate_replies_are_delivered_once() -> None:
    d = Driver().with_view()
    seq = d.submit()
    d.reply(seq)
    d.reply(seq)
    d.reply(seq, "wrong_server")
    assert delivered(d.effects) == [Deliver(seq, "ok")]


def test_reply_for_another_client_is_ignored() -> None:
    d = Driver().with_view()
    seq = d.submit()
    d.receive(Reply("someone-else", seq, "ok"))
    assert not delivered(d.effects)


def test_final_errors_are_delivered_and_busy_is_retried_later() -> None:
    d = Driver().with_view()
    big, busy = d.submit(Put("k", "v" * 10)), d.submit()
    d.receive(Reply(d.session.client_id, big, "too_large", None, "value exceeds 8 bytes"))
    assert delivered(d.effects) == [Deliver(big, "too_large", None, "value exceeds 8 bytes")]
    assert not sends(d.reply(busy, "busy"))
    assert sent(d.tick(CONFIG.retry_initial_ticks), Request, target="p")
    d.reply(busy)
    assert delivered(d.effects)[-1] == Deliver(busy, "ok")


def test_c3_pipelining_keeps_at_most_the_window_open() -> None:
    d = Driver().with_view()
    seqs = [d.submit(Put("k", str(i))) for i in range(10)]
    assert [r.seq for r in sent(d.effects, Request)] == [0, 1, 2, 3]
    assert not sends(d.reply(2))  # out of order: the window's low edge has not moved
    [released] = sent(d.reply(0), Request)
    assert (released.seq, released.completed_below) == (4, 1)
    effects = d.reply(1)
    assert [(r.seq, r.completed_below) for r in sent(effects, Request)] == [(5, 3), (6, 3)]
    assert d.session.completed_below == 3
    for seq in seqs[3:]:
        d.reply(seq)
    assert sorted(r.seq for r in delivered(d.effects)) == seqs
    assert d.session.completed_below == 10 and not d.session.waiting


def test_c3_client_queue_is_bounded() -> None:
    d = Driver().with_view()
    seqs = [d.submit() for _ in range(CONFIG.requests_in_flight_max + CONFIG.requests_queued_max)]
    assert not delivered(d.effects)
    refused = d.submit()
    assert delivered(d.effects) == [Deliver(refused, "unavailable", None, "client queue full")]
    assert refused == seqs[-1] + 1


def test_c2_completed_below_advances_past_timed_out_operations() -> None:
    d = Driver().with_view()
    lost = d.submit(timeout_ticks=5)
    done = d.submit()
    d.reply(done)
    assert d.session.completed_below == 0  # ``lost`` is still open
    d.tick(5)
    assert delivered(d.effects)[-1] == Deliver(
        lost, "unavailable", None, "no primary completed it in time"
    )
    assert d.session.completed_below == 2
    d.submit(Get("k"))
    assert sent(d.effects, Request)[-1].completed_below == 2


def test_queued_operation_released_by_a_timeout_is_sent_once() -> None:
    """Bug found: an operation waiting for the window, released when an earlier one timed out
    during a tick, was sent again (and counted as a retry, with a doubled backoff) later in the
    same tick."""
    d = Driver(ClientConfig(requests_in_flight_max=1, retry_initial_ticks=50)).with_view()
    d.submit(timeout_ticks=5)
    waiting = d.submit()
    d.tick(4)
    effects = d.tick()
    assert [r.seq for r in sent(effects, Request)] == [waiting]
    assert d.session.retries == 0


def test_check_invariants_hold_after_every_entry_point() -> None:
    d = Driver().with_view()
    for i in range(20):
        d.submit(timeout_ticks=3 + i % 5)
        d.tick()
        if i % 3 == 0:
            d.reply(i)
    d.tick(20)
    assert d.session.completed_below == d.session.next_seq == 20
    assert d.session.in_flight == 0


def test_abandon_all_ends_sent_and_queued_operations_at_once_sending_nothing() -> None:
    """A refusal for good (the host saw a wrong secret or TLS mismatch): every operation in
    flight, sent or still queued behind the window, ends as its deadline would, without any
    request leaving on the way; the watermark moves past them and the session goes on."""
    d = Driver().with_view()
    seqs = [d.submit(Put(f"k{i}", "v")) for i in range(6)]  # window 4: two wait
    out = Outbox()
    d.session.abandon_all(out, "authentication failed: wrong secret")
    effects = d.keep(out)
    assert not sends(effects)
    assert [(r.seq, r.status) for r in delivered(effects)] == [(s, "unavailable") for s in seqs]
    assert all(r.detail == "authentication failed: wrong secret" for r in delivered(effects))
    assert d.session.in_flight == 0 and d.session.completed_below == 6
    later = d.submit(Put("after", "v"))
    [request] = [s.message for s in sends(d.effects[-1:])]
    assert isinstance(request, Request) and request.seq == later == 6
    assert request.completed_below == 6  # the servers may forget the abandoned ones (C2)


def test_c3_timers_stay_bounded_and_an_operation_answered_within_its_tick_costs_none() -> None:
    """Timers enter the heap at the next tick only for operations still open (``schedule``):
    a closed loop answered within the tick leaves the heap empty, and neither the heap nor
    the list waiting for a tick grows with the number of operations."""
    d = Driver().with_view()
    session = d.session
    for _ in range(2000):
        d.reply(d.submit())
    assert len(session.unscheduled) <= 64
    d.tick()
    assert session.timers == [] and session.unscheduled == []
    for _ in range(2000):  # one always open across ticks: its timer is scheduled, once
        held = d.submit()
        d.tick()
        d.reply(held)
        bound = 4 * session.in_flight + 64
        assert len(session.timers) <= bound and len(session.unscheduled) <= bound
    assert len(sent(d.effects, Request)) == 4000  # nothing retried: no timer fired early


def test_a_timer_set_between_ticks_fires_on_time() -> None:
    d = Driver().with_view()
    seq = d.submit(timeout_ticks=3)
    d.tick(2)
    assert not delivered(d.effects)
    assert [effect.seq for effect in delivered(d.tick())] == [seq]

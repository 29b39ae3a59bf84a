"""V15, the rescue by the backup a view lost, rule by rule (docs/protocol.md V15, P7).

The view service is driven by hand (``test_view_service.Driver``): view 2 = (s1, s2) is
acknowledged, s2 is judged dead and replaced by s3 in view 3 (V7), then s1 is judged dead
before s3 synced. The replica's side (a retained store, the fence, serving from a retained
store) runs on ``test_replica.Net``.
"""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from pbkv.core.effects import Outbox, PersistView, Send
from pbkv.core.messages import Ping, PingReply, Put, StateTransfer, StateTransferReply, View
from pbkv.core.replica import Phase, Role
from pbkv.core.view_service import ViewService
from pbkv.runtime.config import ConfigError
from pbkv.runtime.persist import VIEW_FILE, PersistedView, ViewStore
from tests.core.harness import logged, sent
from tests.core.test_replica import CONFIG as REPLICA_CONFIG
from tests.core.test_replica import Net
from tests.core.test_view_service import CONFIG, DEAD, Driver


def ping(
    d: Driver,
    name: str,
    view_number: int = 0,
    synced: int = 0,
    retained: int = 0,
    fenced: int = 0,
) -> PingReply:
    """``name`` pings with the V15 fields; returns the reply to it."""
    incarnation = d.incarnations.setdefault(name, 100 * (len(d.incarnations) + 1))
    message = Ping(
        name, view_number, incarnation, synced, retained_view=retained, fenced_view=fenced
    )
    replies = sent(d.handle(name, message), PingReply, target=name)
    assert replies, f"no reply to {name}'s ping"
    return replies[-1]


def replaced_then_primary_lost(d: Driver, retained: int = 2) -> PingReply:
    """View 2 (s1, s2) acknowledged; s2 dies and view 3 = (s1, s3) follows (V7); then s1 dies
    while s2 is back, idle, reporting ``retained``, and s3 pings unsynced. Returns the last
    reply to s3."""
    d.setup_view("s1", "s2")
    ping(d, "s3")
    for _ in range(DEAD + 1):
        ping(d, "s1", 2)
        ping(d, "s3")
        d.tick()
    assert d.vs.view == View(3, "s1", ("s3",))
    reply = ping(d, "s3")
    for _ in range(DEAD + 1):
        ping(d, "s2", 3, retained=retained)
        reply = ping(d, "s3")
        d.tick()
    assert not d.vs.alive("s1")
    return reply


def test_the_backup_a_view_lost_takes_over_once_the_next_view_is_fenced() -> None:
    d = Driver()
    reply = replaced_then_primary_lost(d)
    assert reply.fence_view == 3, "V15: the backup of view 3 is asked to fence it"
    [requested] = logged(d.effects, "view_fence_requested")
    assert requested.fields == {"rescuer": "s2", "backups": "s3"}
    pushed = [e for e in d.effects if isinstance(e, Send) and e.target == "s3"]
    assert any(isinstance(e.message, PingReply) and e.message.fence_view == 3 for e in pushed), (
        "the request is pushed at once, not only in the replies to later pings"
    )
    assert d.vs.view.number == 3, "no rescue before a backup reports the fence"
    assert "fencing view 3" in d.vs.waiting()
    reply = ping(d, "s3", fenced=3)
    assert d.vs.view == View(4, "s2", ("s3",))
    [rescued] = logged(d.last, "view_rescued")
    assert rescued.fields == {"primary": "s2", "retained_view": 2}
    assert reply.view == d.vs.view
    saved = [e for e in d.effects if isinstance(e, PersistView)][-1]
    assert (saved.rescue_view, saved.rescuers) == (2, (("s2", d.incarnations["s2"]),))
    to_s2 = [r for r in sent(d.last, PingReply, target="s2") if r.view.number == 4]
    assert to_s2 and to_s2[-1].incarnation == d.incarnations["s2"], "P7: formed with s2"


def test_no_rescue_while_the_fence_is_not_reported() -> None:
    d = Driver()
    replaced_then_primary_lost(d)
    for _ in range(3 * DEAD):
        ping(d, "s2", 3, retained=2)
        ping(d, "s3")
        d.tick()
    assert d.vs.view.number == 3


def test_a_fenced_backup_that_synced_first_is_promoted_instead() -> None:
    """Its sync came before the fence: it may hold writes answered in view 3 (V6 applies)."""
    d = Driver()
    replaced_then_primary_lost(d)
    ping(d, "s3", 0, synced=3, fenced=3)
    assert d.vs.view == View(4, "s3", ("s2",))


@pytest.mark.parametrize("retained", [0, 1])
def test_no_rescue_by_a_server_that_did_not_keep_the_last_acknowledged_state(
    retained: int,
) -> None:
    d = Driver()
    replaced_then_primary_lost(d, retained=retained)
    ping(d, "s3", fenced=3)
    assert d.vs.view.number == 3


@pytest.mark.parametrize("restarted", ["s2", "s3"])
def test_no_rescue_on_the_word_of_a_restarted_process(restarted: str) -> None:
    """V8: a new process at the rescuer's address (s2) lost the store the basis vouches for; one
    at the backup's (s3) says nothing of what its predecessor synced or confirmed in view 3."""
    d = Driver()
    replaced_then_primary_lost(d)
    d.restart(restarted)
    for _ in range(DEAD + 1):
        ping(d, "s2", 0 if restarted == "s2" else 3, retained=2)
        ping(d, "s3", fenced=3)
        d.tick()
    assert d.vs.view.number == 3


def test_no_rescue_after_two_unacknowledged_views() -> None:
    """View 3 (s1, s3) and then view 4 (s1, s4) when s3 dies too: writes answered in view 3
    cannot be ruled out by fencing view 4."""
    d = Driver()
    d.setup_view("s1", "s2")
    ping(d, "s3")
    ping(d, "s4")
    for _ in range(DEAD + 1):
        ping(d, "s1", 2)
        ping(d, "s3")
        ping(d, "s4")
        d.tick()
    assert d.vs.view == View(3, "s1", ("s3",))
    for _ in range(DEAD + 1):
        ping(d, "s1", 2)
        ping(d, "s4")
        d.tick()
    assert d.vs.view == View(4, "s1", ("s4",))
    for _ in range(DEAD + 1):
        ping(d, "s2", 4, retained=2)
        assert ping(d, "s4").fence_view == 0, "no fence is asked for: no rescue may follow"
        d.tick()
    assert not d.vs.alive("s1")
    ping(d, "s4", fenced=4)  # even a fence reported unasked does not allow it
    assert d.vs.view.number == 4


def test_a_fenced_backup_leaves_the_view_if_the_primary_is_back() -> None:
    d = Driver()
    replaced_then_primary_lost(d)
    ping(d, "s1", 2)  # s1 was alive after all: the rescue is off, but s3 is fenced
    assert d.vs.view.number == 3
    ping(d, "s3", fenced=3)
    assert d.vs.view == View(4, "s1", ("s2",)), "V7: a fenced backup can serve view 3 no more"


def test_the_basis_survives_a_restart_of_the_view_service(tmp_path: Path) -> None:
    d = Driver()
    replaced_then_primary_lost(d)
    store = ViewStore(tmp_path)
    store.save([e for e in d.effects if isinstance(e, PersistView)][-1])
    store.close()
    reloaded = ViewStore(tmp_path).load()
    assert reloaded is not None and reloaded.rescue_view == 2
    restored = Driver()
    restored.vs = ViewService.restore("vs", CONFIG, reloaded)
    restored.incarnations = dict(d.incarnations)
    for _ in range(DEAD + 1):
        ping(restored, "s2", 3, retained=2)
        ping(restored, "s3", fenced=3)
        restored.tick()
    assert restored.vs.view == View(4, "s2", ("s3",))


@pytest.mark.parametrize(
    ("field", "value", "problem"),
    [
        ("rescue_view", 9, "last acknowledged view 9 outside 0..3"),
        ("rescuers", (("s2", 0),), "bad rescuer record"),
        ("rescuers", (("s2", 5), ("s2", 6)), "a rescuer appears twice"),
    ],
)
def test_a_saved_basis_that_save_could_not_have_written_is_corrupt(
    tmp_path: Path, field: str, value: object, problem: str
) -> None:
    good = PersistedView(1, 3, "s1", ("s3",), False, rescue_view=2, rescuers=(("s2", 5),))
    store = ViewStore(tmp_path)
    (tmp_path / VIEW_FILE).write_bytes(msgspec.json.encode(good))
    assert store.load() is not None
    bad = msgspec.structs.replace(good, **{field: value})
    (tmp_path / VIEW_FILE).write_bytes(msgspec.json.encode(bad))
    with pytest.raises(ConfigError, match=problem):
        store.load()


@pytest.mark.parametrize("field", ["retained_view", "fenced_view"])
def test_a_ping_with_an_impossible_v15_field_is_refused(field: str) -> None:
    d = Driver()
    d.setup_view("s1", "s2")
    bad = msgspec.structs.replace(Ping("s2", 2, 99, 2), **{field: 1 << 62})
    out = Outbox()
    d.vs.on_message("s2", bad, out)
    assert not sent(out.take(), PingReply), "refused: no reply"


# --- the replica's side -------------------------------------------------------------------------


def test_a_synced_backup_that_becomes_idle_keeps_its_store_and_reports_it() -> None:
    net = Net()
    _, b = net.serving_pair()
    assert net.put("k", "v", 0).status == "ok"
    net.announce(View(3, "p", ("c",)), "b")
    assert (b.role, b.retained_view, b.store.data) == (Role.IDLE, 2, {"k": "v"})
    [report] = sent(net.tick("b", REPLICA_CONFIG.ping_interval_ticks), Ping)
    assert report.retained_view == 2 and not report.holds_state
    net.announce(View(5, "x", ("b",)), "b")
    assert b.retained_view == 0, "a new role may change the store: the report ends"


def test_a_fenced_backup_refuses_the_fenced_views_transfer() -> None:
    net = Net()
    net.announce(View(3, "p", ("b",)), "b")
    b = net.r["b"]
    effects = net.wire.send(
        "vs", "b", PingReply(View(3, "p", ("b",)), b.incarnation, (), fence_view=3)
    )
    assert logged(effects, "view_fenced") and b.fenced_view == 3
    chunk = StateTransfer(
        View(3, "p", ("b",)), "p", 0, (("k", "v"),), True, target_incarnation=b.incarnation
    )
    [reply] = sent(net.wire.send("p", "b", chunk), StateTransferReply)
    assert not reply.accepted and b.phase is Phase.UNSYNCED and b.store.data == {}
    [report] = sent(net.tick("b", REPLICA_CONFIG.ping_interval_ticks), Ping)
    assert (report.fenced_view, report.synced_view) == (3, 0)


def test_a_fence_drops_the_transfer_in_progress() -> None:
    """V15: a backup told to fence its view drops a transfer in progress for it: no later chunk
    of that view is accepted, so what it staged could only be held, never installed."""
    net = Net()
    view = View(3, "p", ("b",))
    net.announce(view, "b")
    b = net.r["b"]
    probe = StateTransfer(view, "p", 0, (), False, probe=True, target_incarnation=b.incarnation)
    first = StateTransfer(view, "p", 1, (("k", "v"),), False, target_incarnation=b.incarnation)
    for chunk in (probe, first):
        [reply] = sent(net.wire.send("p", "b", chunk), StateTransferReply)
        assert reply.accepted
    assert b.incoming is not None and b.incoming.data == {"k": "v"}
    net.wire.send("vs", "b", PingReply(view, b.incarnation, (), fence_view=3))
    assert b.fenced_view == 3 and b.incoming is None


def test_a_fence_above_the_held_view_is_ignored() -> None:
    net = Net()
    net.announce(View(3, "p", ("b",)), "b")
    b = net.r["b"]
    net.wire.send("vs", "b", PingReply(View(3, "p", ("b",)), b.incarnation, (), fence_view=7))
    assert b.fenced_view == 0


def test_an_idle_server_named_primary_with_its_incarnation_serves_its_retained_store() -> None:
    net = Net()
    _, b = net.serving_pair()
    assert net.put("k", "v", 0).status == "ok"
    net.announce(View(3, "p", ("c",)), "b")
    effects = net.announce(View(4, "b"), "b")
    assert logged(effects, "primary_from_retained_state")
    assert (b.role, b.phase, b.store.data["k"]) == (Role.PRIMARY, Phase.SERVING, "v")
    net.request(1, Put("k", "w"), target="b")
    assert net.replies()[-1].status == "ok" and b.store.data["k"] == "w"


def test_an_idle_server_named_primary_without_its_incarnation_refuses() -> None:
    net = Net()
    _, b = net.serving_pair()
    net.announce(View(3, "p", ("c",)), "b")
    net.wire.send("vs", "b", PingReply(View(4, "b"), 0))
    assert (b.role, b.phase) == (Role.PRIMARY, Phase.UNSYNCED), "P7 holds without V15's naming"

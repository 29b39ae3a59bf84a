"""V16 (a disk belongs to one cluster) and V17 (one view, one set of limits), in the core.

Found by review: a server started on another cluster's data directory was accepted. After a
total outage the view service could make it primary (V12 picks the longest complete disk) and
serve that other cluster's values; as a backup, the state transfer would overwrite its disk. A
server started with other size limits than its view's primary would apply the same requests
with other outcomes (P5) and diverge silently.
"""

from __future__ import annotations

import dataclasses
import random

from pbkv.core.admission import reported_limits
from pbkv.core.durable import RecoveredState, Snapshot, ViewRecord
from pbkv.core.effects import Effect, Outbox, Persist, PersistView
from pbkv.core.kv_store import Limits
from pbkv.core.messages import CLUSTER_ID_LIMIT, Ping, PingReply, Put, Reply, Request, View
from pbkv.core.replica import Phase, Replica, ReplicaConfig, Role
from pbkv.core.view_service import ViewService, ViewServiceConfig
from tests.core.harness import logged, sent
from tests.core.test_durable import durable_cluster

OURS, THEIRS = 7, 8
CONFIG = ViewServiceConfig(dead_after_ticks=5, restart_quiet_ticks=0, first_view_grace_ticks=0)
DURABLE = ReplicaConfig(ping_interval_ticks=5, durable=True)


VIEW_1 = View(1, "s1")


def service(view: View = VIEW_1, **changes: object) -> ViewService:
    """A view service of cluster ``OURS`` holding ``view`` (acknowledged), members known."""
    config = dataclasses.replace(CONFIG, **changes)  # type: ignore[arg-type]
    incarnations = {member: 1 + index for index, member in enumerate(view.members())}
    if view.number == 0:
        return ViewService("vs", config, cluster_id=OURS)
    return ViewService("vs", config, view, True, incarnations, cluster_id=OURS)


def ping(vs: ViewService, name: str, incarnation: int, **fields: object) -> Outbox:
    out = Outbox()
    vs.on_message(name, Ping(name, fields.pop("view_number", 0), incarnation, **fields), out)  # type: ignore[arg-type]
    return out


def tick(vs: ViewService, count: int) -> None:
    for _ in range(count):
        vs.on_tick(Outbox())


# --- the server side: its disk records the cluster, and it takes views from that one only ------


def test_a_durable_server_records_its_cluster_with_its_views_and_reports_it() -> None:
    c = durable_cluster("s1", "s2")
    cluster_id = c.view_service.cluster_id
    assert c.call("c1", Put("k", "v")).status == "ok"
    for name in ("s1", "s2"):
        effects = c.wire.disks[name]
        records = [r for e in effects if isinstance(e, Persist) for r in e.records]
        snapshots = [e.snapshot for e in effects if not isinstance(e, Persist)]
        named = [r.cluster_id for r in records if isinstance(r, ViewRecord)]
        named += [s.cluster_id for s in snapshots]
        assert named and set(named) == {cluster_id}, name
        assert c.replicas[name].cluster_id == cluster_id
    c.crash("s2")
    assert c.recover("s2").cluster_id == cluster_id  # replayed from the disk


def recovered_replica(cluster_id: int, config: ReplicaConfig = DURABLE) -> Replica:
    """Server p restarted on a disk complete for view 3 of cluster ``cluster_id``."""
    snapshot = Snapshot({"k": "theirs"}, (), 5, 3, 3, config.limits, cluster_id)
    state = RecoveredState.replay(snapshot, [], config.limits)
    assert state.cluster_id == cluster_id
    return Replica("p", "vs", random.Random(1), config, state)


def test_a_server_takes_no_view_from_another_clusters_view_service() -> None:
    replica = recovered_replica(THEIRS)
    out = Outbox()
    for _ in range(3):
        replica.on_message("vs", PingReply(View(4, "p"), replica.incarnation, cluster_id=OURS), out)
    effects = out.take()
    assert replica.view.number == 0 and replica.role is Role.IDLE
    assert len(logged(effects, "cluster_mismatch")) == 1  # once, not per reply
    assert "holds cluster 0000000000000008" in replica.health()
    replica.on_tick(Outbox())
    for _ in range(DURABLE.ping_interval_ticks):
        pings = sent(_ticked(replica), Ping, target="vs")
        if pings:
            assert pings[-1].cluster_id == THEIRS and pings[-1].health
            break
    else:
        raise AssertionError("no ping")
    # Its own cluster's view service: it takes the view and the role.
    replica.on_message("vs", PingReply(View(4, "p"), replica.incarnation, cluster_id=THEIRS), out)
    assert replica.view.number == 4 and replica.phase is Phase.SERVING
    assert replica.health() == ""


def _ticked(replica: Replica) -> list[Effect]:
    out = Outbox()
    replica.on_tick(out)
    return out.take()


def test_a_server_without_a_disk_belongs_to_any_cluster() -> None:
    replica = Replica("p", "vs", random.Random(1), ReplicaConfig(ping_interval_ticks=5))
    out = Outbox()
    replica.on_message("vs", PingReply(View(1, "p"), replica.incarnation, cluster_id=OURS), out)
    assert replica.phase is Phase.SERVING
    replica.on_message("vs", PingReply(View(2, "p"), replica.incarnation, cluster_id=THEIRS), out)
    assert replica.view.number == 2 and replica.cluster_id == 0  # nothing recorded, no check


def test_a_disk_written_before_cluster_ids_joins_the_first_cluster_that_gives_it_a_view() -> None:
    replica = recovered_replica(0)
    out = Outbox()
    replica.on_message("vs", PingReply(View(4, "p"), replica.incarnation, cluster_id=OURS), out)
    replica.on_tick(out)
    records = [r for e in out.take() if isinstance(e, Persist) for r in e.records]
    assert ViewRecord(4, OURS) in records and replica.cluster_id == OURS


# --- the view service side: V16 -------------------------------------------------------------


def test_a_disk_of_another_cluster_is_never_made_primary_after_a_total_outage() -> None:
    """V12 alone would pick s1: complete for the view, with the longer stream."""
    vs = service(View(4, "s1", ("s2",)))
    out = ping(vs, "s1", 11, durable_view=4, durable_index=999, cluster_id=THEIRS)
    assert logged(out.take(), "server_of_another_cluster")
    tick(vs, 12)
    for _ in range(3):
        ping(vs, "s1", 11, durable_view=4, durable_index=999, cluster_id=THEIRS)
    assert vs.view.number == 4
    [s1] = [s for s in vs.status().servers if s.name == "s1"]
    assert "its disk holds cluster 0000000000000008" in s1.health
    ping(vs, "s2", 22, durable_view=4, durable_index=10, cluster_id=OURS)
    assert vs.view == View(5, "s2", ())


def test_a_server_of_another_cluster_is_never_made_a_backup() -> None:
    vs = service()
    ping(vs, "s1", 1, view_number=1, cluster_id=OURS)
    ping(vs, "s9", 9, cluster_id=THEIRS)
    assert vs.view == View(1, "s1")
    ping(vs, "s3", 3)  # a fresh disk (or none): welcome
    assert vs.view == View(2, "s1", ("s3",))
    reply = sent(ping(vs, "s3", 3).take(), PingReply, target="s3")[-1]
    assert reply.cluster_id == OURS


def test_a_new_cluster_forms_its_first_view_only_with_a_server_of_no_cluster() -> None:
    vs = service(View(0))
    ping(vs, "s9", 9, cluster_id=THEIRS)
    tick(vs, 1)
    assert vs.view.number == 0
    # No view yet, no cluster announced: a reply cannot make s9 refuse anything.
    assert sent(ping(vs, "s9", 9, cluster_id=THEIRS).take(), PingReply)[-1].cluster_id == 0
    ping(vs, "s1", 1)
    assert vs.view == View(1, "s1")


def test_force_new_cluster_goes_on_with_the_cluster_of_its_primary() -> None:
    vs = ViewService.restore("vs", dataclasses.replace(CONFIG, force_new_cluster=True), None)
    fresh_id = vs.cluster_id
    ping(vs, "s1", 1, view_number=6, held_view=6, holds_state=True, cluster_id=THEIRS)
    tick(vs, 6)
    assert vs.view == View(7, "s1") and vs.cluster_id == THEIRS != fresh_id
    out = ping(vs, "s1", 1, view_number=6, held_view=7, holds_state=True, cluster_id=THEIRS)
    assert sent(out.take(), PingReply)[-1].cluster_id == THEIRS


def test_a_fresh_view_service_draws_its_cluster_and_saves_it_with_its_views() -> None:
    a = ViewService.restore("vs", CONFIG, None, random.Random(1))
    b = ViewService.restore("vs", CONFIG, None, random.Random(2))
    assert 0 < a.cluster_id < CLUSTER_ID_LIMIT and a.cluster_id != b.cluster_id
    out = ping(a, "s1", 1)
    [saved] = [e for e in out.take() if isinstance(e, PersistView)]
    assert saved.cluster_id == a.cluster_id
    again = ViewService.restore("vs", CONFIG, saved, random.Random(3))
    assert again.cluster_id == a.cluster_id


def test_state_saved_before_cluster_ids_gets_one_saved_at_the_first_tick() -> None:
    """Else a second restart would draw another id than the one servers heard and recorded."""
    old = PersistView(View(3, "s1"), True, (("s1", 1),))
    vs = ViewService.restore("vs", CONFIG, old, random.Random(5))
    assert vs.cluster_id != 0
    out = Outbox()
    vs.on_tick(out)
    [saved] = [e for e in out.take() if isinstance(e, PersistView)]
    assert saved.cluster_id == vs.cluster_id
    out = Outbox()
    vs.on_tick(out)
    assert not [e for e in out.take() if isinstance(e, PersistView)]


def test_pings_with_an_impossible_cluster_id_or_limits_are_refused() -> None:
    vs = service()
    for fields in ({"cluster_id": CLUSTER_ID_LIMIT}, {"cluster_id": -1}, {"limits": (1,) * 17}):
        out = ping(vs, "s5", 5, **fields)
        assert logged(out.take(), "ping_malformed") or vs.refused["ping_malformed"]
        assert "s5" not in vs.servers


# --- V17: every member of a view runs under the same limits ----------------------------------


SMALL = Limits(value_bytes_max=64)


def test_a_server_with_other_limits_is_never_made_a_backup() -> None:
    vs = service()
    ping(vs, "s1", 1, view_number=1, limits=reported_limits(Limits()))
    out = ping(vs, "s2", 2, limits=reported_limits(SMALL))
    assert logged(out.take(), "server_limits_differ")
    assert vs.view == View(1, "s1")
    [s2] = [s for s in vs.status().servers if s.name == "s2"]
    assert "other size limits than primary s1" in s2.health
    ping(vs, "s3", 3, limits=reported_limits(Limits()))
    assert vs.view == View(2, "s1", ("s3",))


def test_a_replica_reports_the_limits_it_executes_under() -> None:
    config = ReplicaConfig(ping_interval_ticks=1, limits=SMALL)
    replica = Replica("p", "vs", random.Random(1), config)
    pings = sent(_ticked(replica), Ping, target="vs")
    assert pings[-1].limits == dataclasses.astuple(SMALL)


def test_only_the_serving_primary_judges_a_request_by_its_limits() -> None:
    """Found by the simulator's restarts with other limits: a server that was not serving
    answered a final ``too_large`` by its own (smaller) limits for a value the view's primary
    would store; the client gave up. It now says ``wrong_server`` and the client asks again."""
    idle = Replica("s3", "vs", random.Random(1), ReplicaConfig(limits=SMALL))
    out = Outbox()
    request = Request("c1", 0, 0, Put("k", "x" * 100))
    idle.on_message("c1", request, out)
    [reply] = sent(out.take(), Reply, target="c1")
    assert reply.status == "wrong_server"
    primary = Replica("p", "vs", random.Random(2), ReplicaConfig(limits=SMALL))
    primary.on_message("vs", PingReply(View(1, "p"), primary.incarnation, cluster_id=OURS), out)
    out.take()
    primary.on_message("c1", request, out)
    [reply] = sent(out.take(), Reply, target="c1")
    assert reply.status == "too_large"  # the serving primary's limits are the view's


def test_an_id_drawn_for_old_state_is_announced_only_once_saved() -> None:
    """A reply naming an id the service has not saved yet could be recorded by a server, and a
    restart of the service before it saves would draw another (etcd: another leader)."""
    old = PersistView(View(3, "s1"), True, (("s1", 1),))
    vs = ViewService.restore("vs", CONFIG, old, random.Random(5))
    assert sent(ping(vs, "s1", 1, view_number=3).take(), PingReply)[-1].cluster_id == 0
    vs.on_tick(Outbox())  # saves it
    assert sent(ping(vs, "s1", 1, view_number=3).take(), PingReply)[-1].cluster_id == vs.cluster_id


def test_a_recovered_spare_says_it_waits_for_a_role_not_that_it_is_stuck() -> None:
    """An operator saw "recovered from disk (complete for view 3); waiting (V12)" for as long
    as a restarted durable server stayed a spare, and took it for a stuck server."""
    replica = recovered_replica(OURS)
    health = replica.health()
    assert health.startswith("recovered from disk (complete for view 3); a spare"), health
    assert "names it in a view (V12)" in health and "waiting" not in health

"""Deliberately broken durability (issue 10), one overridden method each (test code only).

``AcknowledgesBeforeFsync`` breaks D1: its records never ask for a sync, so under ``always`` a
reply or a confirmation leaves before the write it answers is durable. ``SendsBeforePersist``
breaks D1 the other way: the host gets the replies before the records they depend on.
``PromotesBehindServer`` breaks V12: after a total outage it promotes the member with the
shortest disk, whatever view that disk is complete for. ``PromotesAnotherClustersDisk`` breaks
V16 at the view service: a recovered member whose disk holds another cluster's state may be
promoted; ``AdoptsAnyCluster`` breaks it at the server, which takes a role from any cluster's
view service. ``trusts_repaired_disk`` replaces the core's ``repaired_view`` (the hosts' rule
after ``--repair``): a repaired disk keeps vouching for the views its lost history recorded.
``IgnoresLimits`` breaks V17: a server whose size limits differ from the primary's may become
its backup.
"""

from __future__ import annotations

from pbkv.core.admission import exclusion
from pbkv.core.effects import Outbox, Persist
from pbkv.core.messages import ForwardReply, Reply, StateTransferReply
from pbkv.core.replica import Replica
from pbkv.core.view_service import ViewService


class AcknowledgesBeforeFsync(Replica):
    """Every ``Persist`` goes out with ``sync=False``: acknowledged writes may sit in the page
    cache when the power goes."""

    def flush_durable(self, out: Outbox) -> None:
        start = len(out.effects)
        super().flush_durable(out)
        effects = out.effects
        for index in range(start, len(effects)):
            effect = effects[index]
            if isinstance(effect, Persist):
                effects[index] = Persist(effect.records, sync=False)


class SendsBeforePersist(Replica):
    """Replies and confirmations are sent at once, before the ``Persist`` of the records they
    answer (a host that runs sends before the sync)."""

    def send_after_persist(
        self, out: Outbox, target: str, message: Reply | ForwardReply | StateTransferReply
    ) -> None:
        out.send(target, message)


class PromotesBehindServer(ViewService):
    """V12 without its rule: any member that recovered a disk may be promoted, the shortest
    first, whatever view its disk is complete for."""

    def recovered_member(self) -> str | None:
        candidates = [
            member
            for member in self.view.members()
            if self.alive(member) and self.servers[member].durable_view > 0
        ]
        if not candidates:
            return None
        return min(candidates, key=lambda member: self.servers[member].durable_index)


class PromotesAnotherClustersDisk(ViewService):
    """V12 without V16: a member whose disk is complete for the view may be promoted even when
    that disk holds another cluster's state (the longest stream wins, as in V12)."""

    def recovered_member(self) -> str | None:
        candidates = [
            member
            for member in self.view.members()
            if self.alive(member) and self.complete_for_view(member)
        ]
        if not candidates:
            return None
        return max(candidates, key=lambda member: self.servers[member].durable_index)


class AdoptsAnyCluster(Replica):
    """Without V16 on the server side: takes a view from any view service, whatever cluster
    its disk holds."""

    def of_another_cluster(self, cluster_id: int, out: Outbox) -> bool:
        self.view_cluster_id = cluster_id or self.view_cluster_id
        return False


class IgnoresLimits(ViewService):
    """V17 undone: an idle server is picked as a backup whatever limits it reported."""

    def pick_idle(self, primary: str, exclude: list[str]) -> str | None:
        for name in self.servers:
            if name == primary or name in exclude or not self.alive(name):
                continue
            if exclusion(self, name, None) is not None:  # no primary: no limits to compare
                continue
            if name in self.view.members() and self.member_ok(name):
                continue
            return name
        return None


def trusts_repaired_disk(durable_view: int, noted: int | None) -> int | None:
    """V12 after ``--repair`` undone (review finding): the repaired history is trusted."""
    del durable_view, noted
    return None


__all__ = [
    "AcknowledgesBeforeFsync",
    "AdoptsAnyCluster",
    "IgnoresLimits",
    "PromotesAnotherClustersDisk",
    "PromotesBehindServer",
    "SendsBeforePersist",
    "trusts_repaired_disk",
]

"""Deliberately broken durability (issue 10), one overridden method each (test code only).

``AcknowledgesBeforeFsync`` breaks D1: its records never ask for a sync, so under ``always`` a
reply or a confirmation leaves before the write it answers is durable. ``SendsBeforePersist``
breaks D1 the other way: the host gets the replies before the records they depend on.
``PromotesBehindServer`` breaks V12: after a total outage it promotes the member with the
shortest disk, whatever view that disk is complete for.
"""

from __future__ import annotations

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


__all__ = ["AcknowledgesBeforeFsync", "PromotesBehindServer", "SendsBeforePersist"]

"""Deliberately broken variants of V15, the rescue of a cluster whose primary is lost just
after its backup was replaced (test code only), one overridden method each.

``tests/sim/test_rescue.py`` shows the simulator catches each as a lost acknowledged write
(linearizability), on a scripted one-way cut where the real core loses nothing.
"""

from __future__ import annotations

from pbkv.core.messages import View
from pbkv.core.replica import Replica
from pbkv.core.replica_base import Role
from pbkv.core.view_service import ViewService


class RescuesWithoutFence(ViewService):
    """Breaks V15: promotes the backup the last acknowledged view lost as soon as the primary
    of the view that replaced it fails, without fencing that view first (the obvious fix of the
    open hole, written down in session 24 as unsafe)."""

    def rescue_view(self) -> View | None:
        chosen = self.rescue_pending()
        if chosen is None:
            return None
        return self.make_view(chosen, [b for b in self.view.backups if self.member_ok(b)])


class IgnoresFence(Replica):
    """Breaks V15 on the backup: it reports the fence but keeps accepting the fenced view's
    transfer and forwards (its ``synced_view`` report is then not final)."""

    def accepts_from(self, view_number: int, primary: str) -> bool:
        return (
            self.role is Role.BACKUP
            and view_number == self.view.number
            and primary == self.view.primary
        )

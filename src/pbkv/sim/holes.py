"""Holes the simulator found in the core that are still open, and the switch that probes them.

Theory of operation. A sweep is a regression check only while it is clean: one known, open hole
that fails a few seeds in a hundred hides every new failure behind it. So each open hole is
named here, and the one adversary ingredient that reaches it is left out of the default runs:
the draws still happen (the random streams do not move), only the effect is dropped. Each hole
has a scripted test marked ``xfail(strict=True)`` that reproduces it (``tests/sim/
test_edge_holes.py``); when the core closes a hole, its test passes, strict xfail fails, and the
fix removes the name here and the mark there. ``pbkv sim --probe-open-holes`` (``Overrides.
probe_open_holes``) runs with every ingredient on, as found; it is part of the replay line.
"""

from __future__ import annotations

from typing import Final

FORGED_TRANSFER_WILDCARD: Final = "forged-transfer-wildcard"
"""A forged ``StateTransfer`` with ``target_incarnation=0`` (unknown) is accepted by a backup
awaiting its transfer: it installs the forger's empty state (P8, issue 8 finding 5)."""
FORGED_RESTART_LOCKOUT: Final = "forged-restart-lockout"
"""A forged restart ``Ping`` accepted while the real server was quiet retires the real
incarnation: its pings are refused for good (V10, liveness)."""
STATELESS_VIEW_REISSUE: Final = "stateless-view-reissue"
"""A view service restarted without its state issues a view number again once the servers
that reported a higher view are gone, or before it heard them (V1, V11, issue 8 finding 3)."""

STATELESS_VIEW_PARTITIONED: Final = "stateless-view-partitioned"
"""A view service restarted without its state listens for a dead interval before it forms view 1
(V11); if every server that holds a view is cut off from it all that time, it forms view 1 over
a fresh server and later issues numbers the old view service issued (V1, split brain). Also: an
unsynced backup pings view 0 but keeps its higher view number, so a new cluster formed over it
stalls for good when it refuses the new primary's forwards (P3; ``pbkv sim --seed 200
--client-crash-rate 0 --probe-open-holes``). While open, view-service crashes keep the disk."""

OPEN_HOLES: Final[frozenset[str]] = frozenset({STATELESS_VIEW_PARTITIONED})
"""The first three above were closed by the core (0524b24); ``primary-cut-after-replacement``
(a primary cut off from the service just after its backup was replaced, found 2026-12-01 by a
lasting cut) was closed by V15 (``core/rescue.py``; its story is ``tests/sim/test_rescue.py``)."""


def left_out(hole: str, probing: bool) -> bool:
    """Whether the ingredient reaching ``hole`` is left out of this run."""
    return hole in OPEN_HOLES and not probing

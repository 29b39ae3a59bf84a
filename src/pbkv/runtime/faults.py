"""Fault injection at the runtime's send/receive boundary (partitions and an unreliable
network) and on a server's disk (a slow disk).

Driven from the admin port (``pbkv.runtime.admin``). Peers are node names (advertised
``host:port``). An outgoing message is attributed to the address it is sent to, or for a reply
on an inbound connection to the name learned from that connection's earlier messages; an
incoming message to the name it carries (``Ping.name``, ``Forward.primary``,
``StateTransfer.primary``; a ``PingReply`` comes from the view service) or else to the outbound
connection's address. Client traffic carries no name and is never partitioned.

A slow disk (``disk_delay_s``) adds that long to every fsync of a server's data directory
(``pbkv.runtime.disk``): with ``--fsync always`` the process waits for it between handlers, its
pings included, exactly as it waits for a slow real disk (protocol.md N6).

Nothing here is a protocol decision: a dropped message is exactly a lost message, and a slow
fsync a slow disk, which the protocol tolerates. When no network fault is set, ``active`` is
False and the network skips all of this.
"""

from __future__ import annotations

import random
from typing import Final, Literal

from pbkv.core.messages import AnyMessage, Forward, Ping, PingReply, StateTransfer

Direction = Literal["both", "in", "out"]
DELAY_MS_MAX: Final = 60_000.0


def sender_name(message: AnyMessage, view_service: str | None) -> str | None:
    """The node name a message says it comes from, if it says."""
    match message:
        case Ping():
            return message.name
        case Forward() | StateTransfer():
            return message.primary
        case PingReply():
            return view_service
        case _:
            return None


class Faults:
    """The current faults of one process and how many messages they dropped."""

    def __init__(self) -> None:
        self.blocked_in: set[str] = set()
        self.blocked_out: set[str] = set()
        self.drop_probability = 0.0
        self.delay_s_max = 0.0
        self.rng = random.Random(0)
        self.active = False
        self.dropped_in = 0
        self.dropped_out = 0
        self.delayed_out = 0
        self.disk_delay_s = 0.0

    def partition(self, peers: tuple[str, ...], direction: Direction) -> None:
        """Drop messages from (``in``), to (``out``) or both ways with each of ``peers``."""
        if direction in ("both", "in"):
            self.blocked_in.update(peers)
        if direction in ("both", "out"):
            self.blocked_out.update(peers)
        self._update()

    def unreliable(self, drop: float, delay_ms: float, seed: int | None) -> None:
        """Drop each outgoing message with probability ``drop``; delay the others by a uniform
        random 0..``delay_ms``. ``seed`` reseeds the random source (reproducible runs)."""
        if not 0.0 <= drop <= 1.0 or not 0.0 <= delay_ms <= DELAY_MS_MAX:
            raise ValueError(f"need 0 <= drop <= 1 and 0 <= delay_ms <= {DELAY_MS_MAX:g}")
        self.drop_probability = drop
        self.delay_s_max = delay_ms / 1000.0
        if seed is not None:
            self.rng.seed(seed)
        self._update()

    def slow_disk(self, delay_ms: float) -> None:
        """Add ``delay_ms`` to every fsync of the data directory (0: a normal disk again)."""
        if not 0.0 <= delay_ms <= DELAY_MS_MAX:
            raise ValueError(f"need 0 <= delay_ms <= {DELAY_MS_MAX:g}")
        self.disk_delay_s = delay_ms / 1000.0

    def heal(self) -> None:
        """Remove every partition, make the network reliable and the disk normal again."""
        self.blocked_in.clear()
        self.blocked_out.clear()
        self.drop_probability = 0.0
        self.delay_s_max = 0.0
        self.disk_delay_s = 0.0
        self._update()

    def _update(self) -> None:
        self.active = bool(
            self.blocked_in or self.blocked_out or self.drop_probability or self.delay_s_max
        )

    def blocks_in(self, sender: str | None) -> bool:
        if sender is not None and sender in self.blocked_in:
            self.dropped_in += 1
            return True
        return False

    def outgoing_delay(self, peer: str | None) -> float | None:
        """Seconds to hold an outgoing message for, or None to drop it."""
        if peer is not None and peer in self.blocked_out:
            self.dropped_out += 1
            return None
        if self.drop_probability and self.rng.random() < self.drop_probability:
            self.dropped_out += 1
            return None
        if self.delay_s_max:
            self.delayed_out += 1
            return self.rng.uniform(0.0, self.delay_s_max)
        return 0.0

    def counters(self) -> dict[str, int]:
        return {
            "fault_dropped_in": self.dropped_in,
            "fault_dropped_out": self.dropped_out,
            "fault_delayed_out": self.delayed_out,
        }

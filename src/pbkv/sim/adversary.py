"""Adversaries: hostile clients that send oversized raw requests, and a forger of protocol messages.

Theory of operation. An adversary is a node of the world like any other (it has a name, the
network carries its messages through the same codec and frame limit, replies reach it), but it
has no protocol state machine: ``Adversary`` only records the replies it gets, and
``AdversaryDriver`` (a ``before_tick`` hook with its own seeded random source) decides what it
sends. The driver is omniscient (it reads the world's current view and the primary's stream
position), which makes its forgeries as damaging as forgeries can be; what it cannot know is
what a network attacker cannot learn either: incarnations, which it draws at random.

*Hostile client* ``h1`` sends raw ``Request``s straight to the primary (now and then to another
server): bursts of up to eight valid requests with client id, key and value at their limits
(admitted; batches and transfer chunks must be cut around them), or one with something over a
limit: a client id of up to one and a half frames, a value or a
key over its limit, or a number beyond the client's window. Each must be refused
(``too_large``/``invalid``; ``busy`` and ``wrong_server`` are fine too) and none may stop
replication: an ``ok`` is a ``hostile-admitted`` violation at once, a wedge shows up as a
liveness violation after healing. Its keys (``x0``, ``x1``) are not the workload's, so even a
hostile write that slipped through would not disturb the clients' history.

*Forger* ``f1`` sends, under its own name, the replies and announcements only a view service,
a backup or a primary should send: ``PingReply`` (a view numbered just above the current one
or near 2^63, without a primary, or naming the primary alone), ``ForwardReply`` (accepting any
stream position up to the primary's, or refusing), ``StateTransferReply``, ``StateTransfer``
(an empty chunk in the primary's name, for any backup: ``target_incarnation`` 0) and restart
``Ping``s (a server's name with a random incarnation). The core must judge a message by who
sent it (issue 8, finding 5). Ingredients that reach a known open hole of the core are left
out unless probing (``holes.py``).

Both stop at the end of the fault phase (``stop``), so the liveness phase judges recovery.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from pbkv.core.effects import Outbox
from pbkv.core.messages import (
    AnyMessage,
    Append,
    ForwardReply,
    Get,
    Operation,
    Ping,
    PingReply,
    Put,
    Reply,
    Request,
    StateTransfer,
    StateTransferReply,
    View,
)
from pbkv.sim.holes import FORGED_RESTART_LOCKOUT, FORGED_TRANSFER_WILDCARD, left_out
from pbkv.sim.sizes import client_id_bytes_max

if TYPE_CHECKING:
    from pbkv.sim.cluster import World

HOSTILE_NAME: Final = "h1"
FORGER_NAME: Final = "f1"
HOSTILE_KEYS: Final = ("x0", "x1")
VIEW_NUMBER_HUGE: Final = 2**63 - 1
PER_TICKS: Final = 1000
REFUSALS_REMEMBERED_MAX: Final = 4096
AT_LIMIT_SHARE: Final = 0.3
"""Share of hostile events that are a burst of valid requests at the size limits."""
AT_LIMIT_BURST_MAX: Final = 8
AT_LIMIT_REQUESTS_MAX: Final = 40
"""At most this many valid at-limit requests per run: they are applied and replicated like the
workload's, and an unbounded number of them would only measure how fast a backlog drains."""


@dataclass(slots=True)
class AdversaryStats:
    sent: int = 0
    replies: int = 0
    refused: int = 0


class Adversary:
    """The state of an adversary node: what it asked for, and the replies it got."""

    view: View | None = None

    def __init__(self, name: str) -> None:
        self.name = name
        self.expected: dict[tuple[str, int], str] = {}
        self.admitted: list[str] = []
        self.stats = AdversaryStats()

    def on_message(self, source: str, message: AnyMessage, out: Outbox) -> None:
        del out
        if type(message) is not Reply:
            return
        assert isinstance(message, Reply)
        self.stats.replies += 1
        what = self.expected.pop((message.client_id, message.seq), None)
        if what is None:
            return
        if message.status == "ok":
            self.admitted.append(f"{source} answered ok to a request with {what}")
        else:
            self.stats.refused += 1

    def on_tick(self, out: Outbox) -> None:
        del out

    def sent(self, request: Request, what: str) -> None:
        self.stats.sent += 1
        if len(self.expected) >= REFUSALS_REMEMBERED_MAX:
            del self.expected[next(iter(self.expected))]
        self.expected[(request.client_id, request.seq)] = what


class AdversaryDriver:
    """Makes ``h1`` and ``f1`` send; install with ``world.before_tick.append(driver.step)``."""

    def __init__(
        self, hostile_rate: float, forge_rate: float, rng: random.Random, probing: bool = False
    ) -> None:
        self.probing = probing
        self.hostile_rate = hostile_rate / PER_TICKS
        self.forge_rate = forge_rate / PER_TICKS
        self.rng = rng
        self.seq = 0
        self.at_limit_left = AT_LIMIT_REQUESTS_MAX
        self.active = True
        self._forgeries: tuple[Callable[[World], tuple[str, AnyMessage] | None], ...] = (
            self.ping_reply,
            self.ping_reply,
            self.forward_reply,
            self.forward_reply,
            self.forward_reply,
            self.transfer_reply,
            self.transfer_chunk,
            self.restart_ping,
        )

    def stop(self) -> None:
        self.active = False

    def step(self, world: World) -> None:
        if not self.active:
            return
        rng = self.rng
        if self.hostile_rate and rng.random() < self.hostile_rate and world.is_up(HOSTILE_NAME):
            self.send_hostile(world)
        if self.forge_rate and rng.random() < self.forge_rate and world.is_up(FORGER_NAME):
            forged = rng.choice(self._forgeries)(world)
            if forged is not None:
                world.inject(FORGER_NAME, *forged)

    # --- hostile client ----------------------------------------------------------------------

    def send_hostile(self, world: World) -> None:
        rng = self.rng
        servers = world.servers()
        primary = world.current_view().primary
        target = primary if primary is not None and rng.random() < 0.8 else rng.choice(servers)
        if rng.random() < AT_LIMIT_SHARE:
            burst = min(rng.randint(1, AT_LIMIT_BURST_MAX), self.at_limit_left)
            self.at_limit_left -= burst
            for _ in range(burst):
                world.inject(HOSTILE_NAME, target, self.at_limit_request(world))
            return
        request, what = self.hostile_request(world)
        adversary = world.adversary(HOSTILE_NAME)
        assert adversary is not None
        adversary.sent(request, what)
        world.inject(HOSTILE_NAME, target, request)

    def at_limit_request(self, world: World) -> Request:
        """A valid request as large as the limits allow (id, key and value at their caps):
        admitted, and a burst of them is what batches and chunks must be cut around."""
        rng = self.rng
        limits = world.limits
        self.seq += 1
        client_id = f"{rng.getrandbits(64):016x}".ljust(client_id_bytes_max(limits), "i")
        key = rng.choice(HOSTILE_KEYS).ljust(limits.key_bytes_max, "k")
        return Request(client_id, 0, 0, Put(key, "v" * limits.value_bytes_max))

    def hostile_request(self, world: World) -> tuple[Request, str]:
        rng = self.rng
        limits = world.limits
        frame = world.config.frame_bytes_max
        self.seq += 1
        seq = self.seq
        client_id = f"{rng.getrandbits(64):016x}"
        key = rng.choice(HOSTILE_KEYS)
        small = "v" * rng.randint(0, 16)
        over_frame = rng.randint(1, frame * 3 // 2)
        kind = rng.randrange(4)
        if kind == 0:
            size = client_id_bytes_max(limits) + min(over_frame, rng.choice((1, 64, over_frame)))
            client_id = client_id.ljust(size, "i")
            op: Operation = rng.choice((Put(key, small), Append(key, small), Get(key)))
            return Request(client_id, seq, seq, op), f"a client id of {size} bytes"
        if kind == 1:
            size = limits.value_bytes_max + min(over_frame, rng.choice((1, 512, over_frame)))
            value = "v" * size
            op = Put(key, value) if rng.random() < 0.5 else Append(key, value)
            return Request(client_id, seq, seq, op), f"a value of {size} bytes"
        if kind == 2:
            size = limits.key_bytes_max + rng.randint(1, 2 * limits.key_bytes_max)
            op = Put("k" * size, small) if rng.random() < 0.5 else Get("k" * size)
            return Request(client_id, seq, seq, op), f"a key of {size} bytes"
        beyond = seq + limits.window + rng.randint(0, 1000)
        return Request(client_id, beyond, seq, Put(key, small)), "a number beyond the window"

    # --- forger ------------------------------------------------------------------------------

    def some_server(self, world: World) -> str:
        return self.rng.choice(world.servers())

    def ping_reply(self, world: World) -> tuple[str, AnyMessage]:
        rng = self.rng
        current = world.current_view()
        number = rng.choice((current.number + 1, current.number + rng.randint(1, 5)))
        number = VIEW_NUMBER_HUGE if rng.random() < 0.2 else number
        target = rng.choice([*current.members(), self.some_server(world)])
        shape = rng.randrange(3)
        if shape == 0:
            view = View(number)  # no primary
        elif shape == 1:
            view = View(number, current.primary or target)  # the primary alone
        else:
            view = View(number, self.some_server(world), (self.some_server(world),))
        if view.primary is not None and view.primary in view.backups:
            view = View(number, view.primary)
        return target, PingReply(view, rng.getrandbits(62) if rng.random() < 0.5 else 0)

    def forward_reply(self, world: World) -> tuple[str, AnyMessage] | None:
        rng = self.rng
        current = world.current_view()
        if current.primary is None:
            return None
        replica = world.replica(current.primary)
        high = 0 if replica is None else replica.next_index
        low = 0 if replica is None else replica.acked_index
        index = rng.randint(low, max(low, high))
        accepted = rng.random() < 0.8
        return current.primary, ForwardReply(current.number, index, accepted, current.number)

    def transfer_reply(self, world: World) -> tuple[str, AnyMessage] | None:
        rng = self.rng
        current = world.current_view()
        if current.primary is None:
            return None
        replica = world.replica(current.primary)
        chunk = 0
        outgoing = None if replica is None else next(iter(replica.outgoings.values()), None)
        if outgoing is not None and outgoing.current is not None:
            chunk = outgoing.current.chunk_index
        reply = StateTransferReply(current.number, chunk, rng.random() < 0.7)
        return current.primary, reply

    def transfer_chunk(self, world: World) -> tuple[str, AnyMessage] | None:
        rng = self.rng
        current = world.current_view()
        if current.primary is None or current.backup is None:
            return None
        guess = 1 + rng.getrandbits(62)
        wildcard = not left_out(FORGED_TRANSFER_WILDCARD, self.probing)
        chunk = StateTransfer(
            view=current,
            primary=current.primary,
            chunk_index=rng.randint(0, 2),
            items=(),
            last=rng.random() < 0.7,
            stream_index=rng.randint(0, 50),
            target_incarnation=0 if wildcard else guess,
        )
        return current.backup, chunk

    def restart_ping(self, world: World) -> tuple[str, AnyMessage] | None:
        rng = self.rng
        current = world.current_view()
        name = self.some_server(world)
        number = rng.choice((0, current.number))
        synced = rng.choice((0, current.number))
        # It also claims a retained store and a fence (V15), from the same draws: neither may
        # make a rescuer or prove a view fenced, as they count only from the member's process.
        ping = Ping(
            name, number, 1 + rng.getrandbits(62), synced, retained_view=synced, fenced_view=number
        )
        if left_out(FORGED_RESTART_LOCKOUT, self.probing):
            return None
        return world.view_service_name(), ping


__all__ = ["FORGER_NAME", "HOSTILE_NAME", "Adversary", "AdversaryDriver"]

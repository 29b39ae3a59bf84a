"""The simulated network: seeded loss, duplication, delay, reordering, partitions and holds.

Theory of operation. Every message is encoded with ``pbkv.wire.MESSAGES`` when it is sent and
decoded when it is delivered, so the simulator exercises exactly the bytes the real runtime
carries. A sent message becomes an ``Envelope`` in a heap keyed by ``(delivery_tick, sequence)``;
the sequence number is global and increasing, so two messages due in the same tick are delivered
in the order they were sent (after their delays were drawn), and the whole schedule is a function
of the seed.

At send time, in this order, with the network's own ``random.Random``:

1. a partition that cuts ``source -> target`` drops the message (counted as ``cut``);
2. with probability ``drop_rate`` the message is lost;
3. the delay is drawn uniformly from ``delay_min_ticks .. delay_max_ticks``; with probability
   ``reorder_rate`` an extra delay up to ``reorder_delay_max_ticks`` is added, which is what
   reorders messages between the same two nodes;
4. with probability ``duplicate_rate`` a second copy is queued with its own drawn delay.

The bytes go through the same limit as the runtime's frames: a message whose encoding exceeds
the codec's ``frame_bytes_max`` is not sent at all, counted as ``oversized`` and reported to
``on_oversized`` (the world traces it), exactly what ``runtime/host.py`` does with a frame it
cannot send (``frames_oversized_out``). The receiving end of a real connection refuses such a
frame too, so refusing it at the sender is the same outcome with one check. The limit check
comes first, before any random draw, so it does not shift the network's random stream.

At delivery time the cut is checked again (a message in flight when a partition forms is lost).
A *hold* filter (scenario tests) diverts matching messages into ``held`` instead of the heap; the
test releases them later in any order it likes. Nothing here knows about nodes being up or
paused: the world decides what a delivery to a crashed or paused node means.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Final

from pbkv.core.messages import AnyMessage
from pbkv.wire import MESSAGES, Codec

DELAY_MIN_TICKS_FLOOR: Final = 1
"""A message is never delivered in the tick it was sent: handlers run to completion first."""


@dataclass(frozen=True, slots=True)
class NetworkParams:
    """Per-message fault probabilities and delays (all drawn per message from the network seed)."""

    drop_rate: float = 0.0
    duplicate_rate: float = 0.0
    delay_min_ticks: int = 1
    delay_max_ticks: int = 3
    reorder_rate: float = 0.0
    reorder_delay_max_ticks: int = 30

    def __post_init__(self) -> None:
        if not DELAY_MIN_TICKS_FLOOR <= self.delay_min_ticks <= self.delay_max_ticks:
            raise ValueError("need 1 <= delay_min_ticks <= delay_max_ticks")
        for rate in (self.drop_rate, self.duplicate_rate, self.reorder_rate):
            if not 0.0 <= rate <= 1.0:
                raise ValueError("rates must lie in [0, 1]")


@dataclass(frozen=True, slots=True)
class Envelope:
    """One message in flight (or held): the bytes that travel, plus who sent it to whom."""

    source: str
    target: str
    payload: bytes


HoldFilter = Callable[[str, str, AnyMessage], bool]
OversizedHook = Callable[[str, str, AnyMessage, int], None]
"""Called with (source, target, message, encoded size) for a message over the frame limit."""


@dataclass(slots=True)
class NetworkStats:
    sent: int = 0
    delivered: int = 0
    dropped: int = 0
    cut: int = 0
    duplicated: int = 0
    oversized: int = 0
    captured: int = 0


@dataclass(slots=True)
class Partition:
    """A named set of directed links that do not carry messages while the partition lasts."""

    name: str
    links: frozenset[tuple[str, str]]
    shape: str = ""

    def describe(self) -> str:
        return self.shape or f"{len(self.links)} links"


def isolate(name: str, node: str, everyone: Iterable[str]) -> Partition:
    """Cut every link to and from ``node``."""
    links = set()
    for other in everyone:
        if other != node:
            links.add((node, other))
            links.add((other, node))
    return Partition(name, frozenset(links), f"isolate {node}")


def split(name: str, side_a: Iterable[str], side_b: Iterable[str]) -> Partition:
    """Cut every link between the two sides, both ways."""
    side_a, side_b = list(side_a), list(side_b)
    links = set()
    for a in side_a:
        for b in side_b:
            links.add((a, b))
            links.add((b, a))
    left, right = ",".join(side_a), ",".join(side_b)
    return Partition(name, frozenset(links), f"split {left} | {right}")


def one_way(name: str, source: str, target: str) -> Partition:
    """Cut only ``source -> target``; replies still flow the other way."""
    return Partition(name, frozenset({(source, target)}), f"one-way {source} -/-> {target}")


@dataclass(slots=True)
class Network:
    """Seeded message transport; see the module docstring."""

    rng: random.Random
    params: NetworkParams = field(default_factory=NetworkParams)
    heap: list[tuple[int, int, Envelope]] = field(default_factory=list)
    sequence: int = 0
    partitions: dict[str, Partition] = field(default_factory=dict)
    blocked: frozenset[tuple[str, str]] = frozenset()
    hold_filter: HoldFilter | None = None
    held: list[Envelope] = field(default_factory=list)
    stats: NetworkStats = field(default_factory=NetworkStats)
    codec: Codec[AnyMessage] = MESSAGES
    on_oversized: OversizedHook | None = None
    captures: dict[str, list[Envelope]] = field(default_factory=dict)
    capture_max: int = 64

    # --- partitions ---------------------------------------------------------------------------

    def add_partition(self, partition: Partition) -> None:
        self.partitions[partition.name] = partition
        self._recompute_blocked()

    def remove_partition(self, name: str) -> bool:
        """Heal one partition; False if it was not in force."""
        if self.partitions.pop(name, None) is None:
            return False
        self._recompute_blocked()
        return True

    def heal_all(self) -> None:
        self.partitions.clear()
        self.blocked = frozenset()

    def _recompute_blocked(self) -> None:
        links: set[tuple[str, str]] = set()
        for partition in self.partitions.values():
            links |= partition.links
        self.blocked = frozenset(links)

    def is_cut(self, source: str, target: str) -> bool:
        return (source, target) in self.blocked

    # --- sending ------------------------------------------------------------------------------

    def send(self, now: int, source: str, target: str, message: AnyMessage) -> bytes | None:
        """Encode and queue ``message``; returns the payload, or None if it was lost at once."""
        stats = self.stats
        stats.sent += 1
        if (source, target) in self.blocked:
            stats.cut += 1
            return None
        codec = self.codec
        payload = codec.encode(message)
        if len(payload) > codec.frame_bytes_max:
            stats.oversized += 1
            if self.on_oversized is not None:
                self.on_oversized(source, target, message, len(payload))
            return None
        params = self.params
        rng = self.rng
        if params.drop_rate and rng.random() < params.drop_rate:
            stats.dropped += 1
            return None
        envelope = Envelope(source, target, payload)
        if self.captures and source in self.captures:
            captured = self.captures[source]
            if len(captured) < self.capture_max:
                stats.captured += 1
                captured.append(envelope)
                return payload
        if self.hold_filter is not None and self.hold_filter(source, target, message):
            self.held.append(envelope)
            return payload
        self._enqueue(now, envelope)
        if params.duplicate_rate and rng.random() < params.duplicate_rate:
            stats.duplicated += 1
            self._enqueue(now, envelope)
        return payload

    def _enqueue(self, now: int, envelope: Envelope) -> None:
        params = self.params
        rng = self.rng
        if params.delay_max_ticks == params.delay_min_ticks:
            delay = params.delay_min_ticks
        else:
            delay = rng.randint(params.delay_min_ticks, params.delay_max_ticks)
        if params.reorder_rate and rng.random() < params.reorder_rate:
            delay += rng.randint(1, params.reorder_delay_max_ticks)
        self.push(now + delay, envelope)

    def push(self, tick: int, envelope: Envelope) -> None:
        """Queue ``envelope`` for delivery at ``tick`` (after everything already due then)."""
        self.sequence += 1
        heapq.heappush(self.heap, (tick, self.sequence, envelope))

    # --- holding (scenario tests) -------------------------------------------------------------

    def release(self, now: int, envelopes: Iterable[Envelope] | None = None) -> None:
        """Deliver held messages next tick, in the order given (default: the order held)."""
        chosen = list(self.held if envelopes is None else envelopes)
        for envelope in chosen:
            self.held.remove(envelope)
            self.push(now + 1, envelope)

    def discard_held(self, envelopes: Iterable[Envelope] | None = None) -> None:
        """Lose held messages for good."""
        chosen = list(self.held if envelopes is None else envelopes)
        for envelope in chosen:
            self.held.remove(envelope)
            self.stats.dropped += 1

    # --- capturing a sender's messages (delayed across its restart) -------------------------

    def capture(self, source: str) -> None:
        """From now on keep (up to ``capture_max``) messages ``source`` sends instead of
        queueing them; ``release_captured`` lets them go later."""
        self.captures.setdefault(source, [])

    def stop_capture(self, source: str) -> list[Envelope]:
        """Stop capturing ``source``; returns what was kept."""
        return self.captures.pop(source, [])

    # --- delivering ---------------------------------------------------------------------------

    def next_due(self, now: int) -> Envelope | None:
        """Pop the next envelope due at or before ``now`` whose link is not cut, or None."""
        heap = self.heap
        while heap and heap[0][0] <= now:
            envelope = heapq.heappop(heap)[2]
            if (envelope.source, envelope.target) in self.blocked:
                self.stats.cut += 1
                continue
            return envelope
        return None

    def peek_due(self, now: int) -> Envelope | None:
        """The envelope ``next_due`` would return, left in place (cut ones are dropped)."""
        heap = self.heap
        while heap and heap[0][0] <= now:
            envelope = heap[0][2]
            if (envelope.source, envelope.target) not in self.blocked:
                return envelope
            heapq.heappop(heap)
            self.stats.cut += 1
        return None

    def in_flight(self) -> int:
        return len(self.heap)


def decode(envelope: Envelope) -> AnyMessage:
    """The message an envelope carries (the receiving end of the wire)."""
    return MESSAGES.decode(envelope.payload)

"""Sizes in the simulated world: the limits of one run, and values and ids up to and over them.

Theory of operation. The runtime carries every message in a frame of at most
``frame_bytes_max`` bytes and the core limits what a client controls (key, value, client id).
A hole at these edges (finding 1 of issue 8: one oversized request wedged replication for good)
is invisible to a simulator whose values are a few bytes long and whose network has no frame
limit. So each seed draws its own limits, small enough that reaching them is cheap (frames of
40-64 KiB instead of 16 MiB, values up to 1-8 KiB, transfer chunks and forward batches of a few
KiB), and consistent with each other as the core requires; the network's codec gets the frame
limit, the replicas get the rest. ``SizeParams`` also says how the workload uses them: how large
values get, how often one is over the limit, and how long each client's id is (sometimes over
the limit: every operation of such a client must be refused, never applied).

Sizes are swarm-drawn like the faults: most seeds keep short values, some fill values to the
limit, some send a share of writes over it. Limits are UTF-8 bytes, and a character takes one to
four of them, so each seed also draws the character values are padded with (``PADS``: one byte
in two seeds of five, then two, three or four): a byte limit judged in characters anywhere
(admission, an append's growth, a batch cut) lets a value through that the checks below refuse.

Two checks use them (``World._delivered``): a simulated client is told ``too_large`` or
``invalid`` only for what it sent over a limit (``allowed_final_error``), and never ``ok`` for
it (``over_limit``); and no read returns a value over ``value_bytes_max`` bytes.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from typing import Final, Literal

from pbkv.core.kv_store import Limits, text_bytes
from pbkv.core.messages import Append, Get, Operation, Put
from pbkv.core.replica import ReplicaConfig
from pbkv.core.sizes import written_value

KIB: Final = 1024
CLIENT_ID_BYTES_DEFAULT: Final = 16
"""A session's own id: 64 random bits in hex."""
PADS: Final = (".", ".", "\u00e9", "\u20ac", "\U0001f600")
"""The characters values are padded with, one drawn per seed: 1, 1, 2, 3 and 4 UTF-8 bytes."""


def client_id_bytes_max(limits: Limits) -> int:
    return limits.client_id_bytes_max


@dataclass(frozen=True, slots=True)
class SizeParams:
    """The limits of one run and how the workload reaches them."""

    frame_bytes_max: int = 64 * KIB
    value_bytes_max: int = 8 * KIB
    key_bytes_max: int = 256
    chunk_bytes: int = 16 * KIB
    batch_bytes_max: int = 16 * KIB
    sessions_max: int = 100_000
    value_fill: float = 0.0
    """Share of writes whose value is padded to a random size up to the limit."""
    oversize_rate: float = 0.0
    """Share of writes whose value is over ``value_bytes_max``."""
    client_id_bytes: tuple[int, ...] = ()
    pad: str = "."
    """The character values are padded with (``PADS``)."""

    def limits(self, base: Limits) -> Limits:
        return replace(
            base,
            key_bytes_max=self.key_bytes_max,
            value_bytes_max=self.value_bytes_max,
            sessions_max=self.sessions_max,
        )

    def replica(self, base: ReplicaConfig) -> ReplicaConfig:
        """``base`` with these limits; a tiny drawn chunk (many chunks) is kept."""
        return replace(
            base,
            transfer_chunk_bytes=min(base.transfer_chunk_bytes, self.chunk_bytes),
            forward_batch_bytes_max=self.batch_bytes_max,
            frame_bytes_max=self.frame_bytes_max,
            limits=self.limits(base.limits),
        )

    def describe(self) -> str:
        ids = ",".join(str(size) for size in self.client_id_bytes) or "default"
        sessions = "" if self.sessions_max >= 100_000 else f" sessions_max={self.sessions_max}"
        pad = "" if self.pad == "." else f" pad=U+{ord(self.pad):04X}"
        return (
            f"sizes: frame={self.frame_bytes_max}B value<={self.value_bytes_max}B "
            f"key<={self.key_bytes_max}B chunk={self.chunk_bytes}B batch={self.batch_bytes_max}B"
            f"{sessions} fill={self.value_fill:.2f} oversize={self.oversize_rate:.2f} ids={ids}"
            f"{pad}"
        )


def draw_size_params(rng: random.Random, clients: int) -> SizeParams:
    """Swarm: per seed, the limits, how full values get, how often one is over the limit, and
    each client's id length (now and then over the cap)."""
    frame = rng.choice((64 * KIB, 64 * KIB, 40 * KIB))
    value = rng.choice((8 * KIB, 8 * KIB, 1 * KIB))
    cap = Limits().client_id_bytes_max

    def id_bytes() -> int:
        roll = rng.random()
        if roll < 0.8:
            return CLIENT_ID_BYTES_DEFAULT
        return (
            rng.randint(CLIENT_ID_BYTES_DEFAULT, cap) if roll < 0.95 else cap + rng.randint(1, 64)
        )

    return SizeParams(
        frame_bytes_max=frame,
        value_bytes_max=value,
        key_bytes_max=rng.choice((256, 1024)),
        chunk_bytes=frame // 4,
        batch_bytes_max=frame // 4,
        sessions_max=rng.choice((100_000,) * 6 + (2, 4)),
        value_fill=rng.choice((0.0, 0.0, 0.2, 1.0)),
        oversize_rate=rng.choice((0.0, 0.0, 0.0, 0.03, 0.15)),
        client_id_bytes=tuple(id_bytes() if rng.random() < 0.3 else 0 for _ in range(clients)),
    )


def sized_client_id(rng: random.Random, size: int) -> str | None:
    """A unique client id of ``size`` bytes (random hex, padded), or None for the default."""
    if size <= 0:
        return None
    head = f"{rng.getrandbits(64):016x}"
    return head[:size] if size <= len(head) else head + "-" * (size - len(head))


def draw_pad(rng: random.Random) -> str:
    return rng.choice(PADS)


def padded(text: str, size: int, closing: str = "", pad: str = ".") -> str:
    """``text`` + ``pad`` repeated + ``closing``: as many UTF-8 bytes as ``size`` allows (up to
    the width of one ``pad`` fewer), or no padding when ``text`` and ``closing`` are longer."""
    room = size - text_bytes(text) - text_bytes(closing)
    return text + pad * max(0, room // len(pad.encode())) + closing


OverLimit = Literal["client id", "key", "value"]


def over_limit(op: Operation, client_id: str, limits: Limits) -> OverLimit | None:
    """Which limit, in UTF-8 bytes, what a client sent is over (None: within them all); such
    an operation is refused, never applied or answered ``ok``."""
    if text_bytes(client_id) > client_id_bytes_max(limits):
        return "client id"
    if text_bytes(op.key) > limits.key_bytes_max:
        return "key"
    if text_bytes(written_value(op)) > limits.value_bytes_max:
        return "value"
    return None


def allowed_final_error(op: Operation, client_id: str, status: str, limits: Limits) -> bool:
    """Whether a simulated client may be told ``status`` for ``op``: only for what it sent
    over a limit (an append may outgrow the value limit with what the key holds already)."""
    if status == "stale":
        return False
    over = over_limit(op, client_id, limits)
    if over == "client id":
        return True
    return status == "too_large" and (over is not None or isinstance(op, Append))


def value_size(rng: random.Random, sizes: SizeParams, op: type[Operation]) -> int:
    """How large the next written value is: small, filled up to the limit, or over it.
    Appends fill to an eighth of the limit at most, so a key takes several before it is full."""
    if op is Get:
        return 0
    limit = sizes.value_bytes_max
    if sizes.oversize_rate and rng.random() < sizes.oversize_rate:
        return rng.randint(limit + 1, 2 * limit)
    if sizes.value_fill and rng.random() < sizes.value_fill:
        return rng.randint(0, limit if op is Put else limit // 8)
    return 0

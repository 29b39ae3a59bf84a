"""Protocol messages and views: the vocabulary every node speaks.

Theory of operation: every message is an immutable msgspec ``Struct`` with a short tag, so the
wire layer can decode an untrusted frame straight into exactly one of these types (or reject it).
The core never sees bytes; it sees these values. A ``View`` is authoritative for its number: the
view service never issues two different views with the same number (invariant V1), so any node
may adopt a view with a higher number from any message that carries one.

Messages that need the sender's identity carry its name explicitly (``Ping.name``,
``Forward.primary``, ``StateTransfer.primary``); replies go back to the ``source`` the host gave
for the request, which for clients is an opaque connection id.
"""

from __future__ import annotations

from typing import Final, Literal

import msgspec

NO_VIEW_NUMBER: Final = 0
NO_CLUSTER: Final = 0
"""The cluster id of a server whose disk holds no cluster's state, or of none at all (V16)."""
CLUSTER_ID_LIMIT: Final = 1 << 63
"""Cluster ids are 1 .. this - 1; a ping naming another is malformed (V10, V16)."""


def cluster_label(cluster_id: int) -> str:
    """How operators see a cluster id: 16 hexadecimal digits ("-" for none)."""
    return f"{cluster_id:016x}" if cluster_id != NO_CLUSTER else "-"


class View(msgspec.Struct, frozen=True, array_like=True):
    """One configuration: a number, the primary, and an ordered tuple of backups (at most
    ``view_service.BACKUPS_MAX``)."""

    number: int
    primary: str | None = None
    backups: tuple[str, ...] = ()

    @property
    def backup(self) -> str | None:
        """The first backup, or None."""
        return self.backups[0] if self.backups else None

    def members(self) -> tuple[str, ...]:
        """Primary then backups."""
        return ((self.primary,) if self.primary is not None else ()) + self.backups

    def describe(self) -> str:
        """Human-readable one-liner: ``view 3 (primary=a, backup=b)``."""
        backup = ",".join(self.backups) if self.backups else "-"
        return f"view {self.number} (primary={self.primary or '-'}, backup={backup})"


INITIAL_VIEW: Final = View(NO_VIEW_NUMBER)


class Message(msgspec.Struct, frozen=True, array_like=True, tag_field="t"):
    """Base of every protocol message."""


# --- client operations -------------------------------------------------------------------------


class Get(msgspec.Struct, frozen=True, array_like=True, tag="get"):
    key: str


class Put(msgspec.Struct, frozen=True, array_like=True, tag="put"):
    key: str
    value: str


class Append(msgspec.Struct, frozen=True, array_like=True, tag="append"):
    key: str
    value: str


class Delete(msgspec.Struct, frozen=True, array_like=True, tag="delete"):
    key: str


Operation = Get | Put | Append | Delete


Status = Literal["ok", "wrong_server", "busy", "too_large", "stale", "invalid", "unavailable"]
"""Outcome of a client request. ``ok`` is the only success; ``wrong_server`` and ``busy`` mean
"retry, maybe elsewhere"; ``too_large`` and ``invalid`` are final errors for the caller; ``stale``
answers a request the client has already given up on; ``unavailable`` is produced only by the
client session when the caller's timeout expires."""


# --- client <-> view service / primary ----------------------------------------------------------


class GetView(Message, frozen=True, tag="gv"):
    """Client asks the view service for the current view."""


class ViewReply(Message, frozen=True, tag="gvr"):
    view: View


class Request(Message, frozen=True, tag="rq"):
    """A client operation. ``(client_id, seq)`` is its unique id; every ``seq`` below
    ``completed_below`` is finished (answered or abandoned) at the client, so servers may forget
    it (invariant C2)."""

    client_id: str
    seq: int
    completed_below: int
    op: Operation


class Reply(Message, frozen=True, tag="rp"):
    client_id: str
    seq: int
    status: Status
    value: str | None = None
    detail: str = ""


# --- server <-> view service --------------------------------------------------------------------


class Ping(Message, frozen=True, tag="pg"):
    """Liveness and acknowledgement. ``view_number`` is the view the server acknowledges (for a
    primary: only once its backup is synced); ``incarnation`` is drawn at process start so a
    restart is recognisable; ``synced_view`` is the view for which this server, as backup,
    completed a state transfer (0 if none)."""

    name: str
    view_number: int
    incarnation: int
    synced_view: int = 0
    holds_state: bool = False
    """The server holds a complete replica state (a synced primary or backup)."""
    backup_silent_view: int = 0
    backup_silent_ticks: int = 0
    """A primary waiting for its backup (of view ``backup_silent_view``) reports how long the
    backup has not answered; past the dead interval the view service replaces it (V10)."""
    backup_silent: str = ""
    """Which backup is silent ("": the first; with K backups, the one silent longest)."""
    health: str = ""
    """Why the server cannot serve or make progress, for operators ("" when fine)."""
    durable_view: int = 0
    """The view this server's disk holds a complete state for (0: none, or no disk; V12)."""
    durable_index: int = 0
    """The stream position its disk holds up to (its length), to choose among recovered."""
    held_view: int = 0
    """The number of the view this server holds, whatever its role in it (``view_number`` is
    0 for a backup that is not synced yet): a view service without its state must not reuse
    it (V11)."""
    clock_tick: int = -1
    """The sender's lease clock (real elapsed ticks, R1) when it sent this ping; -1: no lease
    asked (an older server). Echoed in the reply as ``ping_clock``."""
    retained_view: int = 0
    """An idle server that left a view as a synced backup: the view its store was complete
    for, unchanged since (0: none). The view service may promote it under V15."""
    fenced_view: int = 0
    """The highest view this server was told to fence (V15): it accepts no forward and no
    transfer chunk of that view or any below it, so ``synced_view`` in this ping is final
    for them."""
    cluster_id: int = 0
    """The cluster whose state this server's disk holds (V16; 0: none, or no disk)."""
    limits: tuple[int, ...] = ()
    """The size limits this server executes requests under (``Limits`` in field order; empty:
    not reported). Every member of a view must have the same (V17)."""


class PingReply(Message, frozen=True, tag="pgr"):
    """``incarnation``: the pinging server's own incarnation, echoed when ``view`` was formed
    with exactly that process (0 otherwise: not a member, another process, or unknown). A fresh
    server may take the primary role of view 1 only if the reply names it (P7, V8).
    ``backup_incarnations``: for the view's primary only, the incarnation of each backup the
    view was formed with (0: unknown), so state transfers name their target (P8)."""

    view: View
    incarnation: int = 0
    backup_incarnations: tuple[int, ...] = ()
    lease_ticks: int = 0
    """Read leases (R1-R5): how long, on the pinger's own clock from ``ping_clock``, the view's
    primary may answer reads alone; 0: leases are off."""
    ping_clock: int = -1
    """The ``clock_tick`` of the ping this replies to; -1 for a view pushed unasked (no lease)."""
    fence_view: int = 0
    """V15: accept nothing more for views up to this one (at most ``view.number``; 0: no
    fence), and report it in every ping as ``fenced_view``."""
    cluster_id: int = 0
    """The cluster this view service serves (V16; 0 while it has no view): a server whose disk
    holds another cluster's state takes no role in its views."""


class StatusRequest(Message, frozen=True, tag="st"):
    """Operator asks any node for its status."""


class ServerStatus(msgspec.Struct, frozen=True, array_like=True):
    """One server as the view service sees it. Incarnations are not published: knowing one is
    what a forged ping would need (V10)."""

    name: str
    last_ping_age_ticks: int
    view_number: int
    synced_view: int
    alive: bool
    holds_state: bool = False
    health: str = ""


class ViewServiceStatus(Message, frozen=True, tag="str"):
    view: View
    acknowledged: bool
    backup_synced: bool
    servers: tuple[ServerStatus, ...]
    views_created: int
    servers_declared_dead: int
    now_ticks: int
    waiting: str = ""
    """Why the service cannot change to the view the cluster needs ("" when it can)."""
    lease_ticks: int = 0
    """Read leases: the lease the primary is granted (0: leases off)."""
    lease_clear_ticks: int = 0
    """Read leases: ticks until the primary's lease has surely run out by this service's clock
    (the most it may have left); no other server becomes primary before (R3)."""
    cluster_id: int = 0
    """The cluster this service serves (V16; 0 while it has no view)."""


# --- primary <-> backup -------------------------------------------------------------------------


class Forward(Message, frozen=True, tag="fw"):
    """A batch of requests at consecutive stream positions ``start_index ..`` (possibly none).
    ``read_round``: the newest read round when it was sent (0: none yet), which the backup
    echoes; a read waits for an echo of a round sent after it arrived (P2)."""

    view_number: int
    primary: str
    start_index: int
    requests: tuple[Request, ...]
    read_round: int = 0


class ForwardReply(Message, frozen=True, tag="fwr"):
    """``next_index``: every position below it is applied at the backup (which one: the
    connection it came on, ``source``). ``accepted`` False means
    the backup refuses the sender as primary of ``view_number`` (invariant P3)."""

    view_number: int
    next_index: int
    accepted: bool
    backup_view_number: int = 0
    read_round: int = 0
    """The ``read_round`` of the forward it answers (P2)."""


class SessionRecord(msgspec.Struct, frozen=True, array_like=True):
    """Exactly-once state of one client, as carried in a state transfer."""

    client_id: str
    completed_below: int
    applied: tuple[int, ...]
    refused: tuple[int, ...] = ()


class StateTransfer(Message, frozen=True, tag="xf"):
    """One chunk of the transfer that brings a new backup to the primary's state for ``view``.

    Chunk 0 is a probe (``probe``): it carries nothing and asks the backup where its own state
    stands. Later chunks carry either the complete state (``items`` then ``sessions``) or, when
    the backup's state is a prefix of the primary's stream that the primary still holds, only
    the positions it misses (``suffix``: (lineage tag, request) pairs from ``suffix_start``,
    P10). The last chunk carries the stream position at which forwarding continues and the
    lineage tag of the position before it."""

    view: View
    primary: str
    chunk_index: int
    items: tuple[tuple[str, str], ...]
    last: bool
    sessions: tuple[SessionRecord, ...] = ()
    stream_index: int = 0
    target_incarnation: int = 0
    """The backup process this transfer is for (0: unknown); another process ignores it (P8)."""
    probe: bool = False
    suffix_start: int = -1
    """-1: a chunk of the complete state; else the stream position of ``suffix[0]``."""
    suffix: tuple[tuple[int, Request], ...] = ()
    stream_tag: int = 0


class StateTransferReply(Message, frozen=True, tag="xfr"):
    """``position``/``position_tag``: the stream position the backup's own state holds and the
    lineage tag of the position before it (what a probe asks)."""

    view_number: int
    chunk_index: int
    accepted: bool
    position: int = 0
    position_tag: int = 0


class Dump(Message, frozen=True, tag="dp"):
    """Operator reads a server's own state directly, one page at a time."""

    offset: int = 0
    limit: int = 10_000


class DumpReply(Message, frozen=True, tag="dpr"):
    name: str
    role: str
    phase: str
    view: View
    synced: bool
    total_keys: int
    offset: int
    items: tuple[tuple[str, str], ...]
    sessions: int


class ErrorReply(Message, frozen=True, tag="err"):
    """Sent by a host for a message it cannot process (wrong node kind, bad admin request)."""

    reason: str


WRONG_NODE_PREFIX: Final = "wrong node: "
"""How an ``ErrorReply`` begins when a client's message reached the wrong kind of node (a
``GetView`` at a server, a ``Request`` at the view service): a retry there cannot succeed."""


def wrong_node(name: str, kind: str) -> ErrorReply:
    """The answer of node ``name``, a ``kind``, to a message meant for the other kind."""
    other = "a server" if kind == "the view service" else "the view service"
    return ErrorReply(f"{WRONG_NODE_PREFIX}{name} is {kind}, not {other}")


class NotLeader(Message, frozen=True, tag="nl"):
    """A view service replica that is not the leader answers every view-service request with
    this (docs/protocol.md §13): ``leader`` is the leader's address ("" when none is known),
    ``reason`` why there is none (etcd unreachable ...). Hosts consume it to re-target their
    view-service messages; no core ever sees it."""

    leader: str = ""
    reason: str = ""


AnyMessage = (
    GetView
    | ViewReply
    | Request
    | Reply
    | Ping
    | PingReply
    | StatusRequest
    | ViewServiceStatus
    | Forward
    | ForwardReply
    | StateTransfer
    | StateTransferReply
    | Dump
    | DumpReply
    | ErrorReply
    | NotLeader
)

"""The view service as a list of addresses: which member to talk to, and how to find the leader.

With ``--etcd`` the view service runs as several processes of which one, elected through etcd,
is the leader; the others answer every view-service request with ``NotLeader(leader)``
(docs/protocol.md §13). Servers and clients are given the whole list (``--viewserver A,B,C``,
``pbkv.Client("A,B,C")``, ``PBKV_VIEWSERVER=A,B,C``) and this module keeps, per list, the
member they currently address:

* a ``NotLeader`` naming another member moves there; one naming nobody (the member knows no
  leader) or a stranger moves to the next member in the list (a redirect may only name a
  listed member, so a follower cannot send anyone elsewhere);
* a member that cannot be connected to, or that has not answered anything for
  ``silence_s`` while being addressed (a paused or partitioned process keeps its connection
  open), is left for the next one, and for ``silence_s`` after that it is *abandoned*: a
  redirect naming it (followers name the old leader until its lease expires) moves on to the
  next member instead, so senders cycle through the followers, one per message, and reach the
  new leader within a message or two of its election rather than bouncing back to the dead
  one and waiting out another silence.

The cores never see any of this: they address the list by its name (the list as given,
``"A,B,C"``), and every message from any member is reported as coming from that name, so a
replica's "is this reply from the view service" check (V10) holds for whichever member is the
leader. A list of one address is not a group: nothing changes for a single view service.

``call_view_service`` is the same walk for one-shot operator requests (``pbkv status``,
``Client.view()``).
"""

from __future__ import annotations

import asyncio
from typing import Final, TypeVar

from pbkv.core.messages import AnyMessage, NotLeader
from pbkv.runtime.config import ConfigError, parse_address
from pbkv.runtime.rpc import Channel, async_call
from pbkv.runtime.security import Security
from pbkv.wire import Codec

T = TypeVar("T")
SILENCE_S_DEFAULT: Final = 1.0
MEMBERS_MAX: Final = 16


def split_members(text: str) -> tuple[str, ...]:
    """``"A,B,C"`` to its addresses (each ``HOST:PORT``, no duplicates, at most
    ``MEMBERS_MAX``); raises ``ConfigError``."""
    members = tuple(part.strip() for part in text.split(",") if part.strip())
    if not members:
        raise ConfigError(f"bad view service list {text!r}: expected HOST:PORT[,HOST:PORT...]")
    if len(members) > MEMBERS_MAX:
        raise ConfigError(f"view service list of {len(members)} members (at most {MEMBERS_MAX})")
    if len(set(members)) != len(members):
        raise ConfigError(f"view service list {text!r} names a member twice")
    for member in members:
        parse_address(member)
    return members


class ViewServiceGroup:
    """The member of one view service list that messages for the list go to."""

    def __init__(self, members: tuple[str, ...], silence_s: float = SILENCE_S_DEFAULT) -> None:
        self.name = ",".join(members)
        self.members = members
        self.current = members[0]
        self.silence_s = silence_s
        self.last_heard = 0.0
        self.addressed_since = 0.0
        self.switches = 0
        self.abandoned = ""
        self.abandoned_until = 0.0

    def target(self, now: float) -> str:
        """Where a message for the list goes now (leaving a member silent for too long)."""
        if self.addressed_since == 0.0:
            self.addressed_since = now
        quiet_since = max(self.last_heard, self.addressed_since)
        if now - quiet_since > self.silence_s:
            self.abandon(now)
        return self.current

    def heard(self, member: str, now: float) -> None:
        if member == self.current:
            self.last_heard = now
        if member == self.abandoned:
            self.abandoned = ""

    def abandon(self, now: float) -> None:
        """Leave the current member and ignore redirects to it for ``silence_s``."""
        self.abandoned, self.abandoned_until = self.current, now + self.silence_s
        self.move(self.next_member(now), now)

    def on_not_leader(self, member: str, leader: str, now: float) -> None:
        """``member`` is not the leader and names ``leader`` ("" if it knows none)."""
        if member != self.current:
            return  # a late answer from a member already left
        abandoned = leader == self.abandoned and now < self.abandoned_until
        if leader in self.members and leader != member and not abandoned:
            self.move(leader, now)
        else:
            self.move(self.next_member(now), now)

    def on_unreachable(self, member: str, now: float) -> None:
        if member == self.current:
            self.abandon(now)

    def next_member(self, now: float = 0.0) -> str:
        """The member after the current one, passing over an abandoned one when possible."""
        index = self.members.index(self.current)
        for step in range(1, len(self.members) + 1):
            member = self.members[(index + step) % len(self.members)]
            if member != self.abandoned or now >= self.abandoned_until:
                return member
        return self.members[(index + 1) % len(self.members)]

    def move(self, member: str, now: float) -> None:
        if member != self.current:
            self.switches += 1
        self.current = member
        self.addressed_since = now
        self.last_heard = 0.0


async def call_view_service(
    members: tuple[str, ...],
    message: T,
    codec: Codec[T],
    timeout_s: float,
    security: Security | None = None,
) -> tuple[str, T]:
    """Send ``message`` to the list's leader (following ``NotLeader``) and return who answered
    and the answer; raises ``OSError`` (``TimeoutError`` included) when none did in time."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    member, error = members[0], "no member tried"
    for _ in range(3 * len(members)):
        remaining = deadline - loop.time()
        if remaining <= 0:
            break
        try:
            reply = await async_call(member, message, codec, min(remaining, 1.0), security)
        except OSError as failure:
            error = f"{member}: {failure or type(failure).__name__}"
            member = member_after(members, member, "")
            continue
        if not isinstance(reply, NotLeader):
            return member, reply
        error = f"{member} is not the leader and knows none"
        member = member_after(members, member, reply.leader)
        if not reply.leader:
            await asyncio.sleep(min(0.1, max(0.0, deadline - loop.time())))
    raise TimeoutError(f"no view service leader answered ({error})")


def call_view_service_blocking(
    members: tuple[str, ...],
    message: T,
    codec: Codec[T],
    timeout_s: float,
    security: Security | None = None,
) -> tuple[str, T]:
    """``call_view_service`` for blocking callers (the CLI)."""
    member, last = members[0], "no member tried"
    for _ in range(2 * len(members)):
        try:
            with Channel(member, codec, timeout_s, security) as channel:
                reply = channel.call(message)
        except OSError as failure:
            last = f"{member}: {failure or type(failure).__name__}"
            member = member_after(members, member, "")
            continue
        if not isinstance(reply, NotLeader):
            return member, reply
        last = f"{member} is not the leader and knows none"
        member = member_after(members, member, reply.leader)
    raise TimeoutError(f"no view service leader answered ({last})")


def member_after(members: tuple[str, ...], member: str, leader: str) -> str:
    """Where to go after ``member``: the ``leader`` it named if listed, else the next one."""
    if leader in members and leader != member:
        return leader
    return members[(members.index(member) + 1) % len(members)]


def is_not_leader(message: AnyMessage) -> bool:
    return type(message) is NotLeader

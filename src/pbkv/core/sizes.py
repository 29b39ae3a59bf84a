"""Encoded sizes: upper bounds on what a message costs on the wire, and the size settings check.

Theory of operation. Every message travels as one frame, and a frame over ``frame_bytes_max``
is refused by its receiver (the runtime's codec, and the simulator's, which applies the same
limit). A message that can never fit would be resent forever: the replication stream would wedge
behind it (finding 1 of the edge review). So the core never builds a message it cannot prove
fits:

* a client request enters the replication stream only if every field the client controls is
  within its limit (``admit``); its encoded size is then at most ``request_bytes_bound``;
* forwards and state-transfer chunks are cut by these bounds, never past the frame limit;
* ``check_size_settings`` refuses, at start, any combination of limits in which a maximal request,
  reply, item or exactly-once record cannot fit a frame together with its message header.

The bounds count MessagePack's worst case for each piece: 5 bytes of header for a string or an
array, 9 for an integer, plus the UTF-8 bytes of each string. They are upper bounds, so a message
cut with them always fits; they are never used for anything but cutting and checking.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from pbkv.core.message_classes import APPEND, PUT
from pbkv.core.messages import Operation, Request

FRAME_BYTES_MAX_DEFAULT: Final = 16 * 1024 * 1024
"""Largest frame a connection accepts by default (the runtime's and the simulator's codec)."""
IS_ASCII: Final = str.isascii
"""``IS_ASCII(text)`` is ``text.isascii()``: compiled, the method is a C static called directly,
not looked up on the string at each call (``count_instructions.py``: ~150 instructions less)."""
NAME_BYTES_MAX: Final = 255
"""Longest server name (``host:port``) the protocol carries; longer ones are refused."""
REQUEST_OVERHEAD_BYTES: Final = 64
"""A ``Request`` and its operation without the bytes of client id, key and value (worst case)."""
REPLY_OVERHEAD_BYTES: Final = 64
REPLY_DETAIL_BYTES_MAX: Final = 512
"""The longest ``detail`` text a server puts in a reply."""
FORWARD_HEADER_BYTES: Final = 64
"""A ``Forward`` without its primary's name and its requests."""
TRANSFER_HEADER_BYTES: Final = 160
"""A ``StateTransfer`` without the names of the view's members and the primary."""
SUFFIX_ENTRY_OVERHEAD_BYTES: Final = 16
"""One (lineage tag, request) pair of a catch-up chunk, besides the request itself."""
NAME_OVERHEAD_BYTES: Final = 5
ITEM_OVERHEAD_BYTES: Final = 16
SESSION_OVERHEAD_BYTES: Final = 40
SEQ_BYTES: Final = 9


def text_bytes(text: str) -> int:
    """UTF-8 size of ``text`` without encoding when it is ASCII (the common case)."""
    return len(text) if IS_ASCII(text) else len(text.encode())


def clip_detail(text: str) -> str:
    """``text`` cut to ``REPLY_DETAIL_BYTES_MAX`` bytes of UTF-8 (never inside a character)."""
    if text_bytes(text) <= REPLY_DETAIL_BYTES_MAX:
        return text
    return text.encode()[:REPLY_DETAIL_BYTES_MAX].decode(errors="ignore")


def request_bytes_bound(request: Request) -> int:
    """Upper bound on the encoded size of ``request``."""
    op = request.op
    value = written_value(op)
    client_id, key = request.client_id, op.key
    return REQUEST_OVERHEAD_BYTES + text_bytes(client_id) + text_bytes(key) + text_bytes(value)


def forward_header_bytes(primary: str) -> int:
    return FORWARD_HEADER_BYTES + NAME_OVERHEAD_BYTES + text_bytes(primary)


def transfer_header_bytes(names: Iterable[str]) -> int:
    """A chunk's bytes besides its items and records; ``names``: the view's members and the
    sending primary."""
    return TRANSFER_HEADER_BYTES + sum(NAME_OVERHEAD_BYTES + text_bytes(name) for name in names)


def item_bytes(key: str, value: str) -> int:
    return ITEM_OVERHEAD_BYTES + text_bytes(key) + text_bytes(value)


def session_bytes(client_id: str, applied_count: int) -> int:
    return SESSION_OVERHEAD_BYTES + text_bytes(client_id) + SEQ_BYTES * applied_count


def check_size_settings(
    frame_bytes_max: int,
    key_bytes_max: int,
    value_bytes_max: int,
    client_id_bytes_max: int,
    window: int,
    members_max: int = 2,
) -> str | None:
    """None if every message a replica may have to send fits a frame under these settings;
    otherwise one line naming the settings that conflict (the process refuses to start)."""
    names = NAME_OVERHEAD_BYTES + NAME_BYTES_MAX
    request = REQUEST_OVERHEAD_BYTES + client_id_bytes_max + key_bytes_max + value_bytes_max
    needs = {
        "a maximal request in a forward": FORWARD_HEADER_BYTES + names + request,
        "a maximal reply": REPLY_OVERHEAD_BYTES
        + client_id_bytes_max
        + value_bytes_max
        + REPLY_DETAIL_BYTES_MAX,
        "a maximal key and value in a state-transfer chunk": TRANSFER_HEADER_BYTES
        + (members_max + 1) * names
        + ITEM_OVERHEAD_BYTES
        + key_bytes_max
        + value_bytes_max,
        "a maximal request in a catch-up chunk": TRANSFER_HEADER_BYTES
        + (members_max + 1) * names
        + SUFFIX_ENTRY_OVERHEAD_BYTES
        + request,
        "a maximal exactly-once record in a state-transfer chunk": TRANSFER_HEADER_BYTES
        + (members_max + 1) * names
        + SESSION_OVERHEAD_BYTES
        + client_id_bytes_max
        + SEQ_BYTES * window,
    }
    for what, size in needs.items():
        if size > frame_bytes_max:
            return (
                f"--frame-bytes-max {frame_bytes_max} cannot carry {what} ({size} bytes with "
                f"--key-bytes-max {key_bytes_max}, --value-bytes-max {value_bytes_max}, "
                f"client ids of {client_id_bytes_max} bytes): raise the frame limit or lower "
                "the others"
            )
    return None


def written_value(op: Operation) -> str:
    """The value ``op`` writes, "" for a get or a delete. Not ``getattr(op, "value", "")``:
    compiled by mypyc, that raises and swallows an AttributeError for every get and delete (5 %
    of a leased-read primary's CPU, perf; docs/performance.md). Nor ``isinstance(op, (Put,
    Append))``: for a get or a delete that asks msgspec's metaclass for ``__instancecheck__``
    twice (``scripts/count_instructions.py``)."""
    kind = type(op)
    if kind is PUT or kind is APPEND:
        return op.value  # type: ignore[union-attr]
    return ""

"""Whether the system under test answers: the one check ``pbkv bench`` makes before any
generator starts, whatever named the system (``--viewserver``, ``--redis``, ``--cluster-dir``,
``--local-cluster``).

Two steps, so that each failure says what it is, in the words of ``pbkv status``:

1. something accepts a TCP connection (at any member of a list ``A,B,C``) within
   ``CONNECT_TIMEOUT_S``, else ``cannot reach the view service at A`` (``Connection refused``
   comes back at once instead of after the whole timeout);
2. it answers one request within ``ANSWER_TIMEOUT_S`` (pbkv: ``GetView``, presented as the
   generator's clients present themselves; Redis: ``PING``, left to the generator's first
   connection over TLS), else ``no answer from the view service at A: timed out``.

Both are exit 3, unavailable. A refusal no retry can pass (a wrong secret, the wrong kind of
node) raises the client's own error instead (``pbkv.client.refusal_error``: exit 4 or 2).
"""

from __future__ import annotations

import socket
from typing import Final

from pbkv.bench.redis_pair import redis_command
from pbkv.client import refusal_error
from pbkv.core.messages import ErrorReply, GetView
from pbkv.errors import AuthenticationFailed, PbkvError
from pbkv.runtime.config import parse_address
from pbkv.runtime.group import call_view_service_blocking, split_members
from pbkv.runtime.rpc import Channel
from pbkv.runtime.security import client_security, resolve_tls
from pbkv.wire import MESSAGES, ProtocolError

CONNECT_TIMEOUT_S: Final = 2.0
ANSWER_TIMEOUT_S: Final = 3.0
SYSTEM_NAMES: Final = {"pbkv": "view service", "redis": "Redis server"}
"""What the check calls the process it asks, per backend (``null`` has none)."""


class Unreachable(PbkvError):
    """The system under test did not accept a connection or did not answer (exit 3)."""

    exit_code = 3


def preflight(backend: str, address: str) -> None:
    """Fail fast, with one line, when the system under test at ``address`` does not answer.

    Args:
        backend: ``pbkv`` (``address`` is the view service), ``redis`` (the primary) or
            ``null`` (nothing to check).
        address: ``HOST:PORT``, or for pbkv a list ``A,B,C``.

    Raises:
        Unreachable: nothing accepted a connection, or nothing answered in time (exit 3).
        AuthenticationFailed, WrongNode: refused for good (exit 4, 2).
        ConfigError: ``address`` is not an address (exit 2).
    """
    what = SYSTEM_NAMES.get(backend)
    if what is None:
        return
    if not _accepts(address):
        raise Unreachable(f"cannot reach the {what} at {address}")
    try:
        if backend == "pbkv":
            _ask_view_service(address)
        elif resolve_tls() is None:  # over TLS the generator's first connection checks it
            redis_command(*parse_address(address), "PING", timeout_s=ANSWER_TIMEOUT_S)
    except AuthenticationFailed:
        raise  # a refusal for good (exit 4), not an absence
    except (OSError, ProtocolError) as error:
        raise Unreachable(f"no answer from the {what} at {address}: {error}") from None


def _accepts(address: str) -> bool:
    """Whether any member of ``address`` accepts a TCP connection."""
    for member in split_members(address):
        try:
            socket.create_connection(parse_address(member), CONNECT_TIMEOUT_S).close()
            return True
        except OSError:
            continue
    return False


def _ask_view_service(address: str) -> None:
    """One ``GetView``, with the credentials the generator's clients present (the client role:
    a client secret is refused for the peer role operator tools claim)."""
    members = split_members(address)
    security = client_security(None, None)
    if len(members) > 1:
        _, reply = call_view_service_blocking(
            members, GetView(), MESSAGES, ANSWER_TIMEOUT_S, security
        )
    else:
        with Channel(address, MESSAGES, ANSWER_TIMEOUT_S, security) as channel:
            reply = channel.call(GetView())
    if isinstance(reply, ErrorReply) and (refused := refusal_error(address, reply.reason)):
        raise refused

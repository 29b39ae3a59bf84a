"""One-shot protocol requests over a blocking socket: connect, send one frame, read one reply.

The cluster manager and the demo use this to ask a node something directly (the view service's
status, a server's ``Dump``, a raw ``Request`` to a server that may have been deposed) without a
client session: no retries, no view cache, nothing hidden. A node that does not answer within
the timeout raises ``NoAnswer``, which for the demo is itself an observation.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final

from pbkv.core.messages import (
    AnyMessage,
    Dump,
    DumpReply,
    Get,
    GetView,
    Reply,
    Request,
    StatusRequest,
    View,
    ViewReply,
    ViewServiceStatus,
)
from pbkv.errors import PbkvError
from pbkv.runtime import rpc as runtime_rpc
from pbkv.runtime.group import call_view_service_blocking, split_members
from pbkv.wire import MESSAGES, ProtocolError

RPC_TIMEOUT_S_DEFAULT: Final = 1.0
NO_SUCH_KEY: Final = "no such key"
"""What a probe prints after ``ok:`` when the primary holds no such key (its value None)."""


class NoAnswer(PbkvError):
    """The node could not be reached or did not answer in time (exit 3, unavailable)."""

    exit_code = 3


def call(address: str, message: AnyMessage, timeout_s: float = RPC_TIMEOUT_S_DEFAULT) -> AnyMessage:
    """Send ``message`` to ``address`` and return the first message that comes back.

    Raises:
        NoAnswer: connection refused, reset or closed, or no whole reply within ``timeout_s``.
    """
    with no_answer_from(address, timeout_s):
        if "," in address:  # a view service replicated on etcd: its leader answers
            members = split_members(address)
            return call_view_service_blocking(members, message, MESSAGES, timeout_s)[1]
        return runtime_rpc.call(address, message, MESSAGES, timeout_s)


@contextmanager
def no_answer_from(address: str, timeout_s: float) -> Iterator[None]:
    """A failed exchange with ``address`` as ``NoAnswer``, in one line."""
    try:
        yield
    except TimeoutError:
        raise NoAnswer(f"{address} did not answer within {timeout_s:g} s") from None
    except ProtocolError as error:
        raise NoAnswer(f"{address} answered garbage: {error}") from None
    except OSError as error:
        raise NoAnswer(f"cannot reach {address}: {error.strerror or error}") from None


def probe_get(address: str, key: str, timeout_s: float = RPC_TIMEOUT_S_DEFAULT) -> str:
    """Send one raw ``Request(get key)`` straight to ``address``, bypassing the client library
    (no retry, no view, a fresh client id): returns ``ok: 'VALUE'`` (``ok: no such key`` when
    the primary holds no KEY), the server's refusal with its detail when it gave one
    (``wrong_server: A is backup (synced) in view 5``, ``busy`` ...), or ``no answer``."""
    request = Request(f"probe-{secrets.token_hex(4)}", 0, 0, Get(key))
    try:
        reply = call(address, request, timeout_s)
    except NoAnswer:
        return "no answer"
    if not isinstance(reply, Reply):
        return f"unexpected {type(reply).__name__}"
    if reply.status != "ok":
        return f"{reply.status}: {reply.detail}" if reply.detail else reply.status
    return f"ok: {NO_SUCH_KEY if reply.value is None else repr(reply.value)}"


def get_view(viewserver: str, timeout_s: float = RPC_TIMEOUT_S_DEFAULT) -> View:
    """The view service's current view."""
    reply = call(viewserver, GetView(), timeout_s)
    if not isinstance(reply, ViewReply):
        raise NoAnswer(f"{viewserver} answered {type(reply).__name__}, not a view")
    return reply.view


def viewserver_status(
    viewserver: str, timeout_s: float = RPC_TIMEOUT_S_DEFAULT
) -> ViewServiceStatus:
    """The view service's full status (view, acknowledgement, every server's last ping)."""
    reply = call(viewserver, StatusRequest(), timeout_s)
    if not isinstance(reply, ViewServiceStatus):
        raise NoAnswer(f"{viewserver} answered {type(reply).__name__}, not a status")
    return reply


def dump_header_and_certificate(
    server: str, timeout_s: float = RPC_TIMEOUT_S_DEFAULT
) -> tuple[DumpReply, float | None]:
    """A server's own view of itself (a dump of no keys) and, with TLS, when the certificate
    it presented on that connection expires (Unix time; None without TLS).

    Raises:
        NoAnswer: as ``call``.
    """
    with (
        no_answer_from(server, timeout_s),
        runtime_rpc.Channel(server, MESSAGES, timeout_s) as channel,
    ):
        reply = channel.call(Dump(offset=0, limit=0))
        expiry = channel.certificate_expiry_s()
    if not isinstance(reply, DumpReply):
        raise NoAnswer(f"{server} answered {type(reply).__name__}, not a dump")
    return reply, expiry


def dump_page(
    server: str, offset: int = 0, limit: int = 10_000, timeout_s: float = RPC_TIMEOUT_S_DEFAULT
) -> DumpReply:
    """One page of a server's own store."""
    reply = call(server, Dump(offset=offset, limit=limit), timeout_s)
    if not isinstance(reply, DumpReply):
        raise NoAnswer(f"{server} answered {type(reply).__name__}, not a dump")
    return reply


def dump_all(
    server: str, timeout_s: float = RPC_TIMEOUT_S_DEFAULT
) -> tuple[DumpReply, dict[str, str]]:
    """A server's whole store (all pages) with the first page's header."""
    first = dump_page(server, 0, timeout_s=timeout_s)
    items = dict(first.items)
    offset = len(first.items)
    while offset < first.total_keys:
        page = dump_page(server, offset, timeout_s=timeout_s)
        if not page.items:
            break
        items.update(page.items)
        offset += len(page.items)
    return first, items

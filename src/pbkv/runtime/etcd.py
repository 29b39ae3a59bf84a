"""Leadership and the view in etcd: election by lease, fenced writes (docs/design.md §etcd).

Theory of operation. Every view service process of one cluster (same ``--etcd-prefix``) holds
its own lease of ``lease_ttl_s`` and keeps it alive every third of it. A process campaigns with
one transaction: *if* ``PREFIX/leader`` does not exist (``create_revision == 0``) *then* put it,
attached to its lease, naming its address; *else* read it. The winner's fencing token is the
key's ``create_revision``: it changes with every new leader and never repeats. Every write of
the view is a transaction *if* ``create_revision(PREFIX/leader) == token`` *then* put
``PREFIX/view``, so a deposed leader's write fails at etcd whatever its clocks say (V13).

A leader decides only while it is sure its key still exists. etcd expires a lease ``TTL``
after it *received* the last keepalive, and it received it after it was *sent*; so the leader
counts ``TTL - step_down_margin_s`` from the send of the last keepalive etcd acknowledged, and
stops deciding at that deadline (``leading()`` turns False) even if it cannot talk to etcd
at all. The margin covers clock rate differences between the two machines and the loop's
lateness (a tick is 10 ms). A keepalive that etcd answers with "no such lease" (it expired)
ends leadership at once; one that fails in transport is retried on the next endpoint until the
deadline, so losing one etcd member does not change the leader.

Endpoints are used one at a time; a failed or slow request (``request_timeout_s``) moves to the
next one. No watch is kept: a follower repeats its campaign transaction every
``campaign_interval_s``, which both learns the leader and takes over once the key is gone.

A view in etcd of another format version (``persist.other_format_version``: a newer release
wrote it, and this member runs after a downgrade) is one this release can neither restore nor
overwrite: a member that wins and reads one logs ``view_refused``, hands the leader key back,
campaigns no more and tells its host (``on_refused``), which stops the process with that line.
Before, it took the view for a corrupt one, gave up and won again a few times a second, forever.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any, Final, TypeVar

import aetcd
import msgspec

from pbkv.core.effects import PersistView
from pbkv.core.messages import View
from pbkv.runtime.config import (
    ETCD_LEASE_TTL_S_DEFAULT,
    ETCD_PREFIX_DEFAULT,
    ETCD_REQUEST_TIMEOUT_S_DEFAULT,
    ConfigError,
    parse_address,
)
from pbkv.runtime.etcd_tls import EtcdAuth, EtcdTls, etcd_client
from pbkv.runtime.logging import EventLogger
from pbkv.runtime.persist import (
    PersistedView,
    encode_view,
    other_format_version,
    restored_state,
    view_problem,
)

T = TypeVar("T")
STEP_DOWN_MARGIN_S_DEFAULT: Final = 0.25
CAMPAIGN_INTERVAL_S_DEFAULT: Final = 0.1
VIEW_BYTES_MAX: Final = 1024 * 1024
REASON_CHARS_MAX: Final = 400
"""Of an error's first line, in ``etcd_unreachable``: gRPC says what failed last (a TLS
handshake's verdict comes after 200 characters of addresses and codes)."""


class EtcdUnavailable(Exception):
    """No endpoint answered in time."""


class LeaseLost(Exception):
    """etcd no longer knows our lease (it expired)."""


class OtherFormatVersion(ValueError):
    """The stored view was written by another format version of pbkv (``decode_view``);
    ``written`` says which: ``written by another pbkv format version (2; ...)``."""

    def __init__(self, written: str) -> None:
        self.written = written
        super().__init__(f"stored view {written}")


@dataclass(frozen=True, slots=True)
class EtcdOptions:
    """Where the cluster's state lives and the timing of leadership (seconds)."""

    endpoints: tuple[str, ...]
    prefix: str = ETCD_PREFIX_DEFAULT
    lease_ttl_s: int = ETCD_LEASE_TTL_S_DEFAULT
    request_timeout_s: float = ETCD_REQUEST_TIMEOUT_S_DEFAULT
    step_down_margin_s: float = STEP_DOWN_MARGIN_S_DEFAULT
    campaign_interval_s: float = CAMPAIGN_INTERVAL_S_DEFAULT
    tls: EtcdTls | None = None
    """TLS to etcd (``https://`` endpoints); None: plaintext."""
    auth: EtcdAuth | None = None
    """etcd's own authentication (``--etcd-user``); None: none."""
    reload_from: Callable[[], EtcdOptions] | None = None
    """Reads the ``--etcd-ca/-cert/-key`` and password files again (SIGHUP); None: none given."""

    @property
    def leader_key(self) -> bytes:
        return f"{self.prefix}/leader".encode()

    @property
    def view_key(self) -> bytes:
        return f"{self.prefix}/view".encode()


def parse_endpoints(text: str) -> tuple[str, ...]:
    """``http://h:p,h:p`` or ``https://h:p,...`` (as etcdctl takes them) to ``("h:p", ...)``;
    raises ``ConfigError`` (also for a list mixing the two: TLS is one setting of the view
    service, ``endpoints_use_tls``)."""
    endpoints = []
    for given in text.split(","):
        address = given.strip().removeprefix("https://").removeprefix("http://").rstrip("/")
        if address:
            parse_address(address)
            endpoints.append(address)
    if not endpoints:
        raise ConfigError(f"bad etcd endpoints {text!r}: expected HOST:PORT[,HOST:PORT...]")
    endpoints_use_tls(text)
    return tuple(endpoints)


def endpoints_use_tls(text: str) -> bool:
    """Whether the endpoints are ``https://`` ones; ``ConfigError`` when some are and some not."""
    schemes = {given.strip().startswith("https://") for given in text.split(",") if given.strip()}
    if len(schemes) > 1:
        raise ConfigError(f"etcd endpoints {text!r} mix https:// and plaintext ones")
    return schemes == {True}


def check_prefix(prefix: str) -> str:
    if not prefix.startswith("/") or prefix.endswith("/") or len(prefix) > 200:
        raise ConfigError(f"bad --etcd-prefix {prefix!r}: expected /NAME[/NAME...]")
    return prefix


def decode_view(raw: bytes) -> PersistView:
    """The stored view, validated like the view file; raises ``ValueError``, and of it
    ``OtherFormatVersion`` for a view of another format version."""
    if len(raw) > VIEW_BYTES_MAX:
        raise ValueError(f"stored view larger than {VIEW_BYTES_MAX} bytes")
    other = other_format_version(raw)
    if other is not None:
        raise OtherFormatVersion(other)
    try:
        saved = msgspec.json.decode(raw, type=PersistedView)
    except (msgspec.DecodeError, msgspec.ValidationError) as error:
        raise ValueError(f"stored view unreadable: {error}") from None
    problem = view_problem(saved)
    if problem is not None:
        raise ValueError(f"stored view corrupt: {problem}")
    return restored_state(saved)


class Endpoints:
    """One etcd client at a time over a list of endpoints; a failure moves to the next."""

    def __init__(
        self,
        endpoints: tuple[str, ...],
        timeout_s: float,
        tls: EtcdTls | None = None,
        auth: EtcdAuth | None = None,
    ) -> None:
        self.endpoints = endpoints
        self.timeout_s = timeout_s
        self.auth = auth
        self.credentials = None if tls is None else tls.credentials()
        self.index = 0
        self.client: aetcd.Client | None = None
        self.failures = 0
        self.last_error = ""

    def renew(self, tls: EtcdTls | None, auth: EtcdAuth | None) -> None:
        """Credentials reloaded (SIGHUP): the next client made (after a failure) uses them;
        the current one keeps its channel and login."""
        self.auth = auth
        self.credentials = None if tls is None else tls.credentials()

    def current(self) -> aetcd.Client:
        if self.client is None:
            host, port = parse_address(self.endpoints[self.index])
            self.client = etcd_client(host, port, self.timeout_s, self.credentials, self.auth)
        return self.client

    async def call(
        self, operation: Callable[[aetcd.Client], Awaitable[T]], deadline: float
    ) -> tuple[T, float]:
        """``operation`` on the first endpoint that answers before ``deadline`` (loop time);
        returns its result and when the answered attempt started. Raises ``EtcdUnavailable``."""
        loop = asyncio.get_running_loop()
        for _ in range(2 * len(self.endpoints)):
            started = loop.time()
            remaining = min(self.timeout_s, deadline - started)
            if remaining <= 0:
                break
            try:
                async with asyncio.timeout(remaining):
                    return await operation(self.current()), started
            except asyncio.CancelledError as error:
                # gRPC raises CancelledError for a call it cancelled itself (a stream the
                # server ended, a closed channel): a failed call, unless our task is cancelled.
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise
                await self.failed("call cancelled by the gRPC library", error)
            except (aetcd.ClientError, TimeoutError, OSError) as error:
                await self.failed(_describe(error), error)
        raise EtcdUnavailable(self.last_error or "deadline passed")

    async def failed(self, reason: str, error: BaseException) -> None:
        self.last_error = f"{self.endpoints[self.index]}: {reason}"
        if _lease_not_found(error):
            raise LeaseLost(self.last_error) from None
        self.failures += 1
        await self.rotate()

    async def rotate(self) -> None:
        client, self.client = self.client, None
        self.index = (self.index + 1) % len(self.endpoints)
        if client is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(self.timeout_s):
                    await client.close()

    async def close(self) -> None:
        client, self.client = self.client, None
        if client is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(self.timeout_s):
                    await client.close()


def _describe(error: BaseException) -> str:
    text = str(error).splitlines()[0] if str(error) else ""
    return text[:REASON_CHARS_MAX] or type(error).__name__


def _lease_not_found(error: BaseException) -> bool:
    return "lease not found" in str(error)


class Leadership:
    """Campaigns for ``name`` and keeps its lease; see the module docstring.

    ``on_elected(saved, token)`` runs when this process wins (with the view loaded from etcd);
    ``on_lost(reason)`` when it must stop deciding; ``on_refused(reason)`` when it won and found
    a view of another format version (it campaigns no more). ``leader`` is the leader's address
    as last read ("" unknown); ``problem`` why no leader can be elected right now ("" when
    fine); ``refused`` the reason it gave up for good ("" while it campaigns).
    """

    def __init__(
        self,
        name: str,
        options: EtcdOptions,
        logger: EventLogger,
        on_elected: Callable[[PersistView | None, int], None],
        on_lost: Callable[[str], None],
        on_refused: Callable[[str], None] | None = None,
    ) -> None:
        self.name = name
        self.options = options
        self.logger = logger
        self.on_elected = on_elected
        self.on_lost = on_lost
        self.on_refused = on_refused
        self.refused = ""
        self.etcd = Endpoints(
            options.endpoints, options.request_timeout_s, options.tls, options.auth
        )
        self.loop = asyncio.get_running_loop()
        self.lease_id: int | None = None
        self.valid_until = 0.0  # loop time: the lease is surely alive at etcd until then
        self.token = 0  # create_revision of our leader key while leading, else 0
        self.leader = ""
        self.problem = "not connected to etcd yet"
        self.logged_problem = ""
        """The problem the last ``etcd_unreachable`` line named."""
        self.tasks: list[asyncio.Task[None]] = []
        self.revoking: asyncio.Task[None] | None = None
        self.known_view: View | None = None
        """The newest view read from etcd or written by us: what a follower tells clients
        when no member leads (views are authoritative for their number, V1)."""

    def prepare_reload(self) -> Callable[[], dict[str, Any]]:
        """A ``ReloadHook``: read the etcd security files again (``ConfigError``); what it
        returns makes the next etcd client use them."""
        assert self.options.reload_from is not None
        fresh = self.options.reload_from()

        def adopt() -> dict[str, Any]:
            self.options = replace(self.options, tls=fresh.tls, auth=fresh.auth)
            self.etcd.renew(fresh.tls, fresh.auth)
            return {"etcd": "reloaded"}

        return adopt

    def start(self) -> None:
        self.tasks = [
            self.loop.create_task(self.keep_lease()),
            self.loop.create_task(self.campaign()),
        ]

    async def stop(self) -> None:
        """Stop; a leader revokes its lease so a follower takes over at once."""
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        lease_id, self.lease_id = self.lease_id, None
        if lease_id is not None:
            await self.revoke(lease_id)
        await self.etcd.close()

    def note_problem(self, problem: str) -> None:
        """Remember why no leader can be elected (or "" when etcd answers); log changes, at
        most one line a second. A change held back by that limit is logged at a later attempt
        that meets the same problem: a timeout followed at once by etcd's real verdict (a
        refused login) must not leave the timeout as the last word in the log."""
        if problem and problem != self.logged_problem:
            if self.logger.limited("etcd_problem", 1.0, "etcd_unreachable", reason=problem):
                self.logged_problem = problem
        elif not problem and self.problem:
            self.logger.event("etcd_reachable")
            self.logged_problem = ""
        self.problem = problem

    def leading(self, now: float) -> bool:
        return self.token != 0 and now < self.valid_until

    def deadline(self) -> float:
        return self.valid_until

    # --- the lease ---------------------------------------------------------------------------

    async def keep_lease(self) -> None:
        interval_s = self.options.lease_ttl_s / 3.0
        while not self.refused:
            try:
                if self.lease_id is None:
                    await self.grant()
                else:
                    await self.keepalive()
            except Exception as error:  # a client library surprise must not end the loop
                self.unexpected("keepalive", error)
            await asyncio.sleep(interval_s if self.lease_id is not None else 0.1)

    def unexpected(self, what: str, error: Exception) -> None:
        """An error the etcd client raised that is none of its documented ones: counted as
        etcd being unreachable, logged with its type (rate-limited), and the loop goes on."""
        self.note_problem(f"etcd unreachable: {_describe(error)}")
        self.logger.limited(
            f"etcd_error:{what}", 1.0, "etcd_error", during=what, error=type(error).__name__
        )

    async def grant(self) -> None:
        options = self.options
        deadline = self.loop.time() + options.request_timeout_s * len(options.endpoints)
        try:
            lease, sent = await self.etcd.call(lambda c: c.lease(options.lease_ttl_s), deadline)
        except (EtcdUnavailable, LeaseLost) as error:
            self.note_problem(f"etcd unreachable: {error}")
            return
        self.lease_id = int(lease.id)
        self.valid_until = sent + int(lease.ttl) - options.step_down_margin_s

    async def keepalive(self) -> None:
        lease_id = self.lease_id
        assert lease_id is not None
        try:
            reply, sent = await self.etcd.call(
                lambda c: c.refresh_lease(lease_id), max(self.valid_until, self.loop.time() + 0.1)
            )
        except EtcdUnavailable as error:
            self.note_problem(f"etcd unreachable: {error}")
            if self.token and self.loop.time() >= self.valid_until:
                self.lose(f"no keepalive acknowledged within the lease ({error})")
            return
        except LeaseLost as error:
            self.lease_expired(str(error))
            return
        if reply is None or int(reply.TTL) <= 0:
            self.lease_expired("etcd answered the keepalive with no lease")
            return
        if self.token:
            self.note_problem("")
        self.valid_until = sent + int(reply.TTL) - self.options.step_down_margin_s

    def lease_expired(self, reason: str) -> None:
        self.lease_id = None
        self.valid_until = 0.0
        if self.token:
            self.lose(f"lease expired at etcd: {reason}")

    def lose(self, reason: str, revoke: bool = False) -> None:
        """Stop leading now (idempotent). ``revoke``: also end the lease, so another member
        may win at once; without it the lease is kept alive and, if etcd still holds our key
        on it when a keepalive gets through again, we lead again (``campaign_once``)."""
        if not self.token:
            return
        self.token = 0
        self.leader = ""
        self.logger.event("leadership_lost", reason=reason)
        self.on_lost(reason)
        if revoke and self.lease_id is not None:
            lease_id, self.lease_id = self.lease_id, None
            self.valid_until = 0.0
            self.revoking = self.loop.create_task(self.revoke(lease_id))

    async def revoke(self, lease_id: int) -> None:
        """Best effort: end a lease of ours (and the leader key on it) so another may win now."""
        deadline = self.loop.time() + self.options.request_timeout_s
        with contextlib.suppress(EtcdUnavailable, LeaseLost):
            await self.etcd.call(lambda c: c.revoke_lease(lease_id), deadline)

    # --- the campaign ------------------------------------------------------------------------

    async def campaign(self) -> None:
        while not self.refused:
            try:
                if not self.token and self.lease_id is not None:
                    await self.campaign_once()
                elif self.token and not self.leading(self.loop.time()):
                    self.lose("lease deadline passed")
            except Exception as error:  # as in keep_lease
                self.unexpected("campaign", error)
            await asyncio.sleep(self.options.campaign_interval_s)

    async def campaign_once(self) -> None:
        options, lease_id = self.options, self.lease_id
        key = options.leader_key

        async def attempt(c: aetcd.Client) -> tuple[bool, Any]:
            result: tuple[bool, Any] = await c.transaction(
                compare=[c.transactions.create(key) == 0],
                success=[c.transactions.put(key, self.name.encode(), lease=lease_id)],
                failure=[c.transactions.get(key), c.transactions.get(options.view_key)],
            )
            return result

        deadline = self.loop.time() + options.request_timeout_s * len(options.endpoints)
        try:
            (won, responses), _ = await self.etcd.call(attempt, deadline)
        except LeaseLost as error:
            self.leader = ""
            self.lease_expired(str(error))
            return
        except EtcdUnavailable as error:
            self.note_problem(f"etcd unreachable: {error}")
            self.leader = ""
            await self.read_view_locally()
            return
        self.note_problem("")
        if not won:
            found = responses[0] if responses else []
            self.leader = found[0][0].decode(errors="replace") if found else ""
            self.learn_view(responses[1] if len(responses) > 1 else [])
            if found and self.ours(found[0][1]):
                await self.take_office(int(found[0][1].create_revision), reclaimed=True)
            return
        token = int(responses[0].response_put.header.revision)
        await self.take_office(token)

    def learn_view(self, found: Any) -> None:
        with contextlib.suppress(ValueError, IndexError):
            self.known_view = decode_view(found[0][0]).view

    async def read_view_locally(self) -> None:
        """Without a quorum: the view as the one member we reach last applied it (a
        serializable read), so followers can still tell clients the view that serves."""
        key = self.options.view_key
        deadline = self.loop.time() + self.options.request_timeout_s
        with contextlib.suppress(EtcdUnavailable, LeaseLost, ValueError):
            got, _ = await self.etcd.call(lambda c: c.get(key, serializable=True), deadline)
            if got is not None:
                self.known_view = decode_view(got.value).view

    def ours(self, key: Any) -> bool:
        """Whether the leader key is the one we created on our lease, which is still alive:
        no one can have led since (a new leader creates the key anew), so its create_revision
        is still our token (a leader that stepped down when etcd was slow to answer)."""
        return (
            self.lease_id is not None
            and int(key.lease) == self.lease_id
            and self.loop.time() < self.valid_until
        )

    async def take_office(self, token: int, reclaimed: bool = False) -> None:
        """Load the view written by the previous leaders, then lead."""
        deadline = self.loop.time() + self.options.request_timeout_s * 3
        try:
            got, _ = await self.etcd.call(lambda c: c.get(self.options.view_key), deadline)
            saved = decode_view(got.value) if got is not None else None
        except (EtcdUnavailable, LeaseLost) as error:
            self.note_problem(f"etcd unreachable: {error}")
            await self.give_up_office()
            return
        except OtherFormatVersion as error:
            await self.refuse(error.written)
            return
        except ValueError as error:
            self.note_problem(str(error))
            self.logger.event("view_unreadable", reason=str(error))
            await self.give_up_office()
            return
        if not self.loop.time() < self.valid_until or self.lease_id is None:
            return
        self.token = token
        self.leader = self.name
        self.known_view = saved.view if saved is not None else None
        event = "leadership_reclaimed" if reclaimed else "leadership_won"
        self.logger.event(event, token=token, view=_describe_saved(saved))
        self.on_elected(saved, token)

    async def refuse(self, written: str) -> None:
        """A stored view this release must neither restore nor overwrite (``written``: by
        which version): give the leader key back, campaign no more (both loops end) and tell
        the host."""
        key = self.options.view_key.decode(errors="replace")
        self.refused = (
            f"view {key} in etcd was {written}: start the release that wrote it "
            "(this one leaves it as it is)"
        )
        self.problem = self.refused
        self.logger.event("view_refused", key=key, reason=written)
        await self.give_up_office()
        if self.on_refused is not None:
            self.on_refused(self.refused)

    async def give_up_office(self) -> None:
        lease_id, self.lease_id = self.lease_id, None
        self.valid_until = 0.0
        if lease_id is not None:
            await self.revoke(lease_id)

    # --- fenced writes -----------------------------------------------------------------------

    async def write_view(self, state: PersistView) -> bool:
        """Write the view if we still lead (V13); False when fenced or etcd did not answer
        before our deadline (leadership is then lost)."""
        token, key = self.token, self.options.leader_key
        if not token:
            return False
        value = encode_view(state)

        async def attempt(c: aetcd.Client) -> bool:
            won, _ = await c.transaction(
                compare=[c.transactions.create(key) == token],
                success=[c.transactions.put(self.options.view_key, value)],
                failure=[],
            )
            return bool(won)

        try:
            written, _ = await self.etcd.call(attempt, self.valid_until)
        except (EtcdUnavailable, LeaseLost) as error:
            self.lose(f"view {state.view.number} not written: {error}")
            return False
        if not written:
            self.lose(f"fenced: leader key no longer has create_revision {token}", revoke=True)
            return False
        self.known_view = state.view
        return True


def _describe_saved(saved: PersistView | None) -> str:
    return "none" if saved is None else saved.view.describe()

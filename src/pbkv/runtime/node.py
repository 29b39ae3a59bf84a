"""The host of one core state machine (view service or replica) in an asyncio process.

It makes no protocol decision: it feeds every received message and every tick into the core,
one call at a time on the loop thread, and executes the resulting effects in order — ``Send``
through the network, ``Log`` as an event line, ``PersistView`` durably before anything after
it. An exception escaping the core is a bug: it is logged with its traceback and the process
exits with status 70 instead of serving on in an unknown state. A view that cannot be saved is a
lost durability guarantee: one ``persist_failed`` line, exit status 70. SIGTERM and SIGINT stop
the process cleanly with status 0.

At start the soft limit on open files is raised to the hard limit, and the inbound connection
cap is kept ``FD_RESERVE`` below it (outbound peers, the listener, log and view files, and the
admin and metrics ports' own connection caps), so the cap, not the kernel, decides who is
refused.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import random
import resource
import signal
import time
from collections.abc import Callable
from itertools import repeat
from typing import Final

from mypy_extensions import mypyc_attr

from pbkv.core.durable import RecoveredState
from pbkv.core.effects import (
    Deliver,
    Effect,
    Log,
    Outbox,
    Persist,
    PersistSnapshot,
    PersistView,
    Send,
)
from pbkv.core.kv_store import Limits
from pbkv.core.message_classes import REPLY, REQUEST
from pbkv.core.messages import AnyMessage, Forward, cluster_label
from pbkv.core.replica import Replica
from pbkv.core.sizes import NAME_BYTES_MAX, text_bytes
from pbkv.core.view_service import ViewService
from pbkv.runtime.admin import ADMIN_CONNECTIONS_MAX, AdminServer, AdminStatusReply, fault_state
from pbkv.runtime.busy_poll import busy_poller_starter
from pbkv.runtime.config import (
    EXIT_INTERNAL_ERROR,
    ConfigError,
    NodeOptions,
    format_address,
    parse_address,
)
from pbkv.runtime.disk import ReplicaDisk, StorageOptions
from pbkv.runtime.faults import Faults
from pbkv.runtime.group import split_members
from pbkv.runtime.host import Network
from pbkv.runtime.logging import EventLogger
from pbkv.runtime.loop import HeapFreezer, Ticker, run
from pbkv.runtime.metric_tally import ServerObservations
from pbkv.runtime.metrics import HttpLimits, Metrics
from pbkv.runtime.persist import ViewStore
from pbkv.runtime.reload import CredentialReloader, ReloadHook, close_all
from pbkv.runtime.security import Security, log_security, node_security
from pbkv.storage import StorageError

Core = ViewService | Replica
REFUSAL_LOG_INTERVAL_S: Final = 1.0
FD_RESERVE: Final = 128 + ADMIN_CONNECTIONS_MAX + HttpLimits().connections_max
LOOP_LATE_LOG_S: Final = 0.1  # a tick this late is logged: pings may be missed
FD_SOFT_LIMIT_TARGET_MAX: Final = 1 << 20


def lease_clock_s() -> float:
    """Seconds on a clock that never stops while the process or the machine is stopped or
    suspended (``CLOCK_BOOTTIME`` on Linux, else the monotonic clock): the read lease (R4)."""
    boottime = getattr(time, "CLOCK_BOOTTIME", None)
    if boottime is not None:
        return time.clock_gettime(boottime)
    return time.monotonic()


def raise_file_limit() -> int:
    """Raise RLIMIT_NOFILE's soft limit to the hard limit (at most 2**20); the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = FD_SOFT_LIMIT_TARGET_MAX if hard == resource.RLIM_INFINITY else hard
    target = min(target, FD_SOFT_LIMIT_TARGET_MAX)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return int(soft) if soft != resource.RLIM_INFINITY else FD_SOFT_LIMIT_TARGET_MAX


def any_request(messages: list[AnyMessage]) -> bool:
    return any(type(message) is REQUEST for message in messages)


# Subclassed by runtime.leader, which is not compiled.
@mypyc_attr(allow_interpreted_subclasses=True)
class NodeHost:
    """Runs ``core`` on the current loop; see the module docstring."""

    def __init__(
        self,
        kind: str,
        core: Core,
        network: Network,
        logger: EventLogger,
        store: ViewStore | None = None,
        disk: ReplicaDisk | None = None,
    ) -> None:
        self.kind = kind
        self.disk = disk
        if disk is not None:
            disk.on_failure, disk.faults = self.storage_failed, network.faults
        self.core = core
        self.network = network
        self.logger = logger
        self.store = store
        self.outbox = Outbox()
        self.loop = asyncio.get_running_loop()
        self.inbox: list[tuple[str, AnyMessage]] = []
        self.metrics: Metrics | None = None
        self.observed: ServerObservations | None = None  # metrics.observed, one lookup less
        self.admin: AdminServer | None = None
        self.admin_address = ""
        self.ticker: Ticker | None = None
        self.freezer: HeapFreezer | None = None
        self.signals: tuple[signal.Signals, ...] = ()
        self.credentials = CredentialReloader(None, None, logger)
        self.reload_hooks: list[ReloadHook] = []  # more files a SIGHUP reads (etcd's)
        self.failed = False
        self.clock_origin_s: float | None = None
        self.tick_interval_s = 0.01
        self.exit_code = 0
        self.stopped = asyncio.Event()
        network.receive = self.receive
        logger.view_number = lambda: core.view.number

    # --- inputs ------------------------------------------------------------------------------

    def receive(self, source: str, messages: list[AnyMessage]) -> None:
        if self.failed:
            return
        observed = self.observed
        if observed is not None:
            observed.received(messages)
        core = self.core
        if isinstance(core, Replica):
            inbox = self.inbox
            if not inbox and (core.stream_idle() or not any_request(messages)):
                # Nothing to gather: handled at once, so a lone request's forward leaves now
                # and a backup's answer or confirmation is not held for a loop iteration.
                self.inbox = list(zip(repeat(source), messages))
                self.process_inbox()
                return
            # Requests while forwards are in flight, or behind messages already waiting: the
            # rest of this loop iteration joins them in one batch at its end, so the primary
            # sends one forward for all of it (group commit), in arrival order.
            if not inbox:
                self.loop.call_soon(self.process_inbox)
            inbox.extend(zip(repeat(source), messages))
            return
        out = self.outbox
        try:
            for message in messages:
                core.on_message(source, message, out)
        except Exception as error:
            self.fatal(error)
            return
        self.execute(out.take())

    def process_inbox(self) -> None:
        batch, self.inbox = self.inbox, []
        core, out = self.core, self.outbox
        if self.failed or not isinstance(core, Replica):
            return
        self.sync_clock(core)
        try:
            core.on_messages(batch, out)
        except Exception as error:
            self.fatal(error)
            return
        self.execute(out.take())
        self.network.flush()

    def tick(self, count: int) -> None:
        if self.failed:
            return
        ticker = self.ticker
        if count > 1 and ticker is not None and ticker.late_s >= LOOP_LATE_LOG_S:
            self.network.count("ticks_late")
            self.logger.limited(
                "loop_late", 1.0, "loop_late", late_ms=round(ticker.late_s * 1000.0), ticks=count
            )
        core, out = self.core, self.outbox
        if isinstance(core, Replica):
            self.sync_clock(core)
        try:
            for _ in range(count):
                core.on_tick(out)
        except Exception as error:
            self.fatal(error)
            return
        self.execute(out.take())
        if self.disk is not None and not self.failed and isinstance(core, Replica):
            try:
                self.disk.on_tick(core, self.loop)
            except StorageError as error:
                self.storage_failed(str(error))

    def sync_clock(self, core: Replica) -> None:
        """Tell the replica the real time since start, in ticks, before it handles anything:
        its read lease is judged by it (R4). Protocol ticks are capped after a pause (the
        ticker's catch-up); this clock is not, so a SIGSTOP shows as a jump. It counts time
        the machine was suspended too (``CLOCK_BOOTTIME``, where the system has it)."""
        if self.clock_origin_s is not None:
            elapsed = lease_clock_s() - self.clock_origin_s
            core.observe_clock(int(elapsed / self.tick_interval_s))

    # --- effects -----------------------------------------------------------------------------

    def execute(self, effects: list[Effect]) -> None:
        network = self.network  # called on the object, not a bound method: a native call
        metrics = self.metrics
        for effect in effects:
            if type(effect) is Send:  # the hot path: a plain type check, no pattern match
                message = effect.message
                network.send(effect.target, message)
                if metrics is not None or (
                    type(message) is REPLY and message.status == "wrong_server"
                ):
                    self.observe_sent(message)
                continue
            match effect:
                case Log():
                    self.logger.write(effect.event, effect.view_number, effect.fields)
                    if metrics is not None:
                        metrics.on_log(effect)
                case PersistView():
                    if self.store is not None and not self.persist(effect):
                        return
                case Deliver():
                    self.fatal(AssertionError("a node core delivered a client result"))
                    return
                case Persist() | PersistSnapshot():
                    if not self.write_disk(effect):
                        return

    def observe_sent(self, message: AnyMessage) -> None:
        observed = self.observed
        if type(message) is REPLY:
            if message.status == "wrong_server":
                self.logger.limited(
                    "wrong_server",
                    REFUSAL_LOG_INTERVAL_S,
                    "client_refused",
                    reason="wrong server",
                    detail=message.detail,
                )
            if observed is not None:
                observed.reply_sent(message)
        elif observed is not None and type(message) is Forward:
            observed.forward_sent(message)

    def persist(self, state: PersistView) -> bool:
        assert self.store is not None
        try:
            self.store.save(state)
        except OSError as error:
            self.failed = True
            self.exit_code = EXIT_INTERNAL_ERROR
            path = error.filename or str(self.store.path)
            self.logger.event("persist_failed", path=path, error=error.strerror or str(error))
            self.stopped.set()
            return False
        return True

    def write_disk(self, effect: Persist | PersistSnapshot) -> bool:
        """Carry out a durable effect before anything after it (D1); False: the process stops."""
        disk = self.disk
        if disk is None:
            self.fatal(AssertionError("a durable replica core in a host without a disk"))
            return False
        try:
            if type(effect) is Persist:
                # What the core sent before this write (forwards) may leave now: the backup
                # works while we fsync. What follows it (answers) waits for the fsync (D1).
                self.network.flush()
                disk.persist(effect)
            else:
                assert type(effect) is PersistSnapshot
                disk.install(effect)
        except (StorageError, ValueError) as error:
            self.storage_failed(str(error))
            return False
        return True

    def storage_failed(self, reason: str) -> None:
        """The disk failed: what follows cannot be acknowledged. One line, exit status 70; a
        restart recovers what really is on disk."""
        if self.failed:
            return
        self.failed = True
        self.exit_code = EXIT_INTERNAL_ERROR
        self.logger.event("storage_failed", error=reason.splitlines()[0] if reason else "")
        self.stopped.set()

    def fatal(self, error: BaseException, event: str = "fatal") -> None:
        """A bug or a lost durability guarantee: log, stop, exit non-zero."""
        self.failed = True
        self.exit_code = EXIT_INTERNAL_ERROR
        self.logger.exception(event, error)
        self.stopped.set()

    # --- life cycle --------------------------------------------------------------------------

    async def start(self, options: NodeOptions, handle_signals: bool = True) -> None:
        loop = asyncio.get_running_loop()
        security = options.security
        admin_security = security.admin() if security is not None else None
        self.credentials = CredentialReloader(
            security, admin_security, self.logger, self.reload_hooks, self.close_inbound
        )
        if options.metrics_port is not None:
            self.metrics = Metrics(lambda: self.core.view.number, self.role, self.metrics_gauges)
            if self.credentials.tls:
                self.metrics.certificate_gauge(self.credentials.expiry_timestamp_s)
            self.observed = self.metrics.observed
            if self.disk is not None:
                self.disk.on_sync = self.metrics.disk_syncs.observe
            port = self.metrics.serve(options.metrics_port, options.metrics_host)
            address = format_address(options.metrics_host, port)
            self.logger.event("metrics_listening", address=address)
        if options.admin_port is not None:
            self.admin = AdminServer(
                self.network.faults, self.status, self.logger, admin_security, self.disk is not None
            )
            port = await self.admin.listen(options.admin_port, options.admin_host)
            self.admin_address = format_address(options.admin_host, port)
            self.logger.event("admin_listening", address=self.admin_address)
        timing = options.timing
        self.tick_interval_s = timing.tick_interval_s
        self.clock_origin_s = lease_clock_s()
        self.ticker = Ticker(loop, timing.tick_interval_s, self.tick, timing.tick_catch_up_max)
        self.ticker.start()
        self.freezer = HeapFreezer(loop)
        self.freezer.start()
        if handle_signals:
            self.signals = (signal.SIGTERM, signal.SIGINT)
        for signal_number in self.signals:
            loop.add_signal_handler(signal_number, self.request_stop, signal_number)
        if handle_signals and self.credentials.reloadable:  # else SIGHUP still ends the process
            loop.add_signal_handler(signal.SIGHUP, self.credentials.request)
            self.signals += (signal.SIGHUP,)
        if self.credentials.tls:
            self.logger.event("tls_certificate", **self.credentials.certificate_fields())
        await self.network.start_serving()

    def close_inbound(self, reason: str) -> int:
        """Close every inbound connection, admin port included (a revoking reload)."""
        admin = self.admin.connections if self.admin is not None else ()
        return close_all([*self.network.inbound.values(), *admin], reason)

    def request_stop(self, signal_number: int | None = None) -> None:
        """Stop serving (on a signal, or when called: in-process hosts and tests)."""
        cause = "request" if signal_number is None else signal.Signals(signal_number).name
        self.logger.event("stopping", cause=cause)
        self.stopped.set()

    async def run_until_stopped(self) -> int:
        await self.stopped.wait()
        loop = asyncio.get_running_loop()
        for signal_number in self.signals:
            loop.remove_signal_handler(signal_number)
        if self.ticker is not None:
            self.ticker.stop()
        if self.freezer is not None:
            self.freezer.stop()
        if self.admin is not None:
            self.admin.close()
        await self.network.close()
        if self.metrics is not None:
            self.metrics.close()
        if self.disk is not None:
            self.close_disk()
        self.logger.event("stopped", exit_code=self.exit_code)
        return self.exit_code

    def close_disk(self) -> None:
        assert self.disk is not None
        try:
            self.disk.close()
        except StorageError as error:
            self.logger.event("storage_close_failed", error=str(error))
            self.exit_code = self.exit_code or EXIT_INTERNAL_ERROR

    # --- introspection -----------------------------------------------------------------------

    def role(self) -> str:
        core = self.core
        return core.role.value if isinstance(core, Replica) else "viewservice"

    def metrics_gauges(self) -> dict[str, float]:
        core = self.core
        gauges = {"connections": float(len(self.network.inbound))}
        if isinstance(core, Replica):
            gauges["keys"] = float(len(core.store.data))
        else:
            gauges["ack"] = float(core.acknowledged)
            gauges["synced"] = float(core.backup_synced)
        return gauges

    def status(self) -> AdminStatusReply:
        core = self.core
        if isinstance(core, Replica):
            phase, keys, counters = core.phase.value, len(core.store.data), dict(core.counters)
            if core.lease_until >= 0:  # a primary granted a read lease (R1): what is left
                self.sync_clock(core)
                left_s = core.lease_remaining_ticks() * self.tick_interval_s
                counters["lease_remaining_ms"] = round(left_s * 1000)
        else:
            phase, keys = "-", 0
            counters = {"views_created": core.views_created}
            counters["servers_declared_dead"] = core.servers_declared_dead
        counters |= self.network.counters | self.network.faults.counters()
        if self.disk is not None:
            counters |= self.disk.counters()
        return AdminStatusReply(
            pid=os.getpid(),
            kind=self.kind,
            name=core.name,
            role=self.role(),
            phase=phase,
            view=core.view,
            keys=keys,
            counters=counters,
            faults=fault_state(self.network.faults),
        )


async def serve(
    kind: str,
    options: NodeOptions,
    build_core: Callable[[str], Core],
    view_service: str | None = None,
    store: ViewStore | None = None,
    on_started: Callable[[NodeHost], None] | None = None,
    handle_signals: bool = True,
    open_disk: Callable[[EventLogger], ReplicaDisk] | None = None,
) -> int:
    """Open the disk (if any), bind, build the core under its name, serve until stopped;
    returns the exit status. ``on_started`` receives the running host (``request_stop()`` ends
    it)."""
    logger = EventLogger(kind, options.listen, lambda: 0, options.log_format)
    if options.security is None:  # in-process hosts: the secret of $PBKV_AUTH_TOKEN, if any
        options = dataclasses.replace(options, security=node_security(None, None, None))
    check_binds(options, parse_address(options.listen)[0])
    disk = None if open_disk is None else open_disk(logger)

    def make_host(name: str, network: Network, logger: EventLogger) -> NodeHost:
        return NodeHost(kind, build_core(name), network, logger, store, disk)

    try:
        return await serve_host(
            options, make_host, on_started, handle_signals, kind, view_service, logger
        )
    except BaseException:
        if disk is not None:
            disk.close()  # idempotent: the host closes it too when it ran
        raise


async def serve_host(
    options: NodeOptions,
    make_host: Callable[[str, Network, EventLogger], NodeHost],
    on_started: Callable[[NodeHost], None] | None = None,
    handle_signals: bool = True,
    kind: str = "viewserver",
    view_service: str | None = None,
    logger: EventLogger | None = None,
) -> int:
    """Bind, build the host with ``make_host(name, network, logger)``, serve until stopped;
    returns the exit status (``serve`` for one core; the replicated view service's own host)."""
    if logger is None:
        logger = EventLogger(kind, options.listen, lambda: 0, options.log_format)
    security = options.security
    network = Network(options.network, logger, Faults(), view_service, security=security)
    files_max = raise_file_limit()
    if network.inbound_connections_max > files_max - FD_RESERVE:
        network.inbound_connections_max = max(1, files_max - FD_RESERVE)
        logger.event(
            "connections_max_lowered",
            connections_max=network.inbound_connections_max,
            reason=f"open files limit {files_max}",
        )
    host, port = parse_address(options.listen)
    bound = format_address(host, await network.listen(host, port))
    name = options.advertise or bound
    logger.name = name
    node = make_host(name, network, logger)
    await node.start(options, handle_signals)
    logger.event("listening", address=bound, pid=os.getpid())
    log_security(logger, security)
    if on_started is not None:
        on_started(node)
    return await node.run_until_stopped()


def check_binds(options: NodeOptions, host: str) -> None:
    """Without a secret, only loopback addresses (unless ``--insecure``); ``ConfigError``."""
    security = options.security or Security()
    security.check_bind(host, options.insecure)
    if options.admin_port is not None:
        security.check_bind(options.admin_host, options.insecure, "--admin-listen")


def run_viewserver(
    options: NodeOptions, data_dir: str | None, force_new_cluster: bool = False, backups: int = 1
) -> int:
    """Run a view service process until SIGTERM/SIGINT; returns the exit status. ``data_dir``
    None keeps no state (``--no-data-dir``: unsafe to restart). Raises ``ConfigError`` when the
    directory cannot be used or holds a corrupt view."""
    store = ViewStore(data_dir) if data_dir is not None else None
    saved = store.load() if store is not None else None
    config = dataclasses.replace(options.timing.view_service_config(), backups_max=backups)
    if force_new_cluster:  # V11: number views above every view the servers report
        config = dataclasses.replace(config, force_new_cluster=True)

    def build(name: str) -> Core:
        return ViewService.restore(name, config, saved, random.SystemRandom())

    def started(node: NodeHost) -> None:
        if store is None:
            node.logger.event(
                "view_not_persisted",
                warning="with --no-data-dir a restart of the view service forgets the view",
            )
        elif saved is not None:
            assert isinstance(node.core, ViewService)
            node.logger.event(
                "view_restored",
                view=saved.view.describe(),
                acknowledged=saved.acknowledged,
                cluster=cluster_label(node.core.cluster_id),
                path=str(store.path),
            )
        else:
            node.logger.event("view_store_ready", path=str(store.path))

    try:
        return run(serve("viewserver", options, build, None, store, started))
    finally:
        if store is not None:
            store.close()


def run_server(
    options: NodeOptions,
    view_service: str,
    limits: Limits,
    storage: StorageOptions | None = None,
    backlog_bytes_max: int | None = None,
) -> int:
    """Run a replica server process until SIGTERM/SIGINT; returns the exit status. With
    ``storage`` its state lives on disk (recovered at start); raises ``StorageError`` (one
    line) when the data directory cannot be used or is damaged. ``view_service`` is one
    address or the list of a view service replicated on etcd."""
    split_members(view_service)
    check_server_name(options.advertise or options.listen, options.advertise is not None)
    config = options.timing.replica_config(limits, options.network.frame_bytes_max)
    config = dataclasses.replace(config, durable=storage is not None)
    if backlog_bytes_max is not None:
        config = dataclasses.replace(config, backlog_bytes_max=backlog_bytes_max)
    recovered: list[RecoveredState | None] = [None]

    def open_disk(logger: EventLogger) -> ReplicaDisk:
        assert storage is not None
        disk, recovered[0] = ReplicaDisk.open(storage, limits, logger, options.timing.slow_sync_s)
        return disk

    def build(name: str) -> Core:
        return Replica(name, view_service, random.Random(), config, recovered[0])

    polling = busy_poller_starter(options.busy_poll_us)  # pbkv server --busy-poll-us
    opener = None if storage is None else open_disk
    return run(serve("server", options, build, view_service, None, polling, open_disk=opener))


def check_server_name(name: str, advertised: bool) -> None:
    """A server's name is where peers and clients reach it: refuse, at start, one they cannot
    reach (a wildcard, N5) or one over the protocol's length limit."""
    host, _ = parse_address(name)
    if host in ("0.0.0.0", "::", ""):
        flag = "--advertise" if advertised else "--listen"
        raise ConfigError(
            f"{flag} {name}: peers cannot reach a wildcard address; "
            "give --advertise HOST:PORT with an address they can reach"
        )
    if text_bytes(name) > NAME_BYTES_MAX:
        raise ConfigError(f"server name {name[:40]}... is over {NAME_BYTES_MAX} bytes")

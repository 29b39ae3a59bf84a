"""Runtime configuration: addresses, named limits, and the one place where seconds become ticks.

The core counts ticks and never reads a clock; the runtime ticks every ``tick_interval_s`` and
converts every duration given in seconds (command-line flags, the client's ``timeout``) with
``ticks()`` when a node or client starts. Nothing else in the code base converts time units.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from pbkv.core import ClientConfig, Limits, ReplicaConfig, ViewServiceConfig
from pbkv.core.view_service_state import FORGET_AFTER_DEAD_INTERVALS_MIN
from pbkv.errors import PbkvError
from pbkv.wire import FRAME_BYTES_MAX_DEFAULT

if TYPE_CHECKING:
    from pbkv.runtime.security import Security

TICK_INTERVAL_S: Final = 0.01
PING_INTERVAL_S_DEFAULT: Final = 0.1
DEAD_PINGS_DEFAULT: Final = 5
FORGET_AFTER_S_DEFAULT: Final = 60.0
"""How long the view service keeps a silent server that holds no role in its table."""
SLOW_SYNC_SHARE: Final = 0.25
"""The share of the dead interval from which an fsync is reported slow (``Timing.slow_sync_s``)."""
CLIENT_TIMEOUT_S_DEFAULT: Final = 30.0
CLIENT_RETRY_INITIAL_S: Final = 0.1
CLIENT_RETRY_MAX_S: Final = 0.25
CLIENT_VIEW_QUERY_RETRY_S: Final = 0.1
VIEWSERVER_ENV: Final = "PBKV_VIEWSERVER"
VIEWSERVER_DEFAULT: Final = "127.0.0.1:7000"
ADMIN_HOST: Final = "127.0.0.1"
ETCD_PREFIX_DEFAULT: Final = "/pbkv/default"
ETCD_LEASE_TTL_S_DEFAULT: Final = 1
ETCD_REQUEST_TIMEOUT_S_DEFAULT: Final = 0.3
EXIT_USAGE: Final = 2
EXIT_INTERNAL_ERROR: Final = 70


class ConfigError(PbkvError):
    """A bad argument or an environment the process cannot start in (exit code 2)."""

    exit_code = EXIT_USAGE


def ticks(seconds: float, tick_interval_s: float = TICK_INTERVAL_S) -> int:
    """Seconds to a whole number of ticks, at least one."""
    return max(1, round(seconds / tick_interval_s))


PORT_MAX: Final = 65535


def parse_address(text: str) -> tuple[str, int]:
    """``host:port`` (or ``[v6]:port``) to ``(host, port)``; raises ``ConfigError``.

    The port is ASCII digits, 0 to ``PORT_MAX`` (``str.isdigit`` alone also takes ``²`` and
    ``٣``, which ``int`` refuses or reads as another port); the host is a name the resolver
    can encode (IDNA: not a label over 63 characters, not bytes that are not UTF-8).
    """
    host, sep, port_text = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not _is_port(port_text):
        raise ConfigError(f"bad address {text!r}: expected HOST:PORT (port 0-{PORT_MAX})")
    if not _is_host(host):
        raise ConfigError(f"bad address {text!r}: {host!r} is not a host name")
    return host, int(port_text)


def _is_port(text: str) -> bool:
    return text.isascii() and text.isdigit() and len(text) <= 5 and int(text) <= PORT_MAX


def _is_host(host: str) -> bool:
    try:
        host.encode("idna")
    except UnicodeError:
        return False
    return True


def format_address(host: str, port: int) -> str:
    """The inverse of ``parse_address``."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


BUFFERS_BYTES_MAX_DEFAULT: Final = 256 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class NetworkLimits:
    """Bounds of the transport; every table and buffer has one (docs/protocol.md §11).

    Memory: a partial frame is at most ``frame_bytes_max`` per connection, and all partial
    frames together at most ``receive_buffers_bytes_max`` (over it, the connection holding the
    largest partial frame is closed); unsent bytes are at most ``send_buffer_bytes_max`` per
    connection and ``send_buffers_bytes_max`` in all (over either, a frame is dropped: a lost
    message). Fairness: a connection hands at most ``messages_per_turn_max`` messages to the
    core per loop iteration. Backpressure: an inbound connection is not read while its unsent
    bytes exceed ``send_high_water_bytes`` or ``connection_requests_in_flight_max`` of its
    requests are unanswered; one that cannot send for ``send_stall_timeout_s`` is closed.
    Connections: inbound ones are closed after ``idle_timeout_s`` without a byte, or when a
    frame takes longer than ``frame_timeout_s`` to arrive; at ``inbound_connections_max`` the
    least recently active one is closed for a newcomer if it was quiet for
    ``evict_quiet_min_s``, else the newcomer is refused.
    """

    frame_bytes_max: int = FRAME_BYTES_MAX_DEFAULT
    send_buffer_bytes_max: int = 2 * FRAME_BYTES_MAX_DEFAULT
    receive_buffers_bytes_max: int = BUFFERS_BYTES_MAX_DEFAULT // 2
    send_buffers_bytes_max: int = BUFFERS_BYTES_MAX_DEFAULT // 2
    send_high_water_bytes: int = 256 * 1024
    connection_requests_in_flight_max: int = 1024
    messages_per_turn_max: int = 256
    connect_buffer_bytes_max: int = 4 * 1024 * 1024
    inbound_connections_max: int = 10_000
    outbound_peers_max: int = 4096
    idle_timeout_s: float = 300.0
    frame_timeout_s: float = 30.0
    send_stall_timeout_s: float = 30.0
    in_flight_stall_s: float = 5.0
    evict_quiet_min_s: float = 1.0
    housekeeping_interval_s: float = 0.25
    connect_timeout_s: float = 1.0
    reconnect_backoff_initial_s: float = 0.02
    reconnect_backoff_max_s: float = 0.5

    def __post_init__(self) -> None:
        if self.receive_buffers_bytes_max < self.frame_bytes_max + 4:
            raise ConfigError(
                f"--buffers-bytes-max must leave room for a whole frame on receive "
                f"({2 * (self.frame_bytes_max + 4)} bytes at --frame-bytes-max "
                f"{self.frame_bytes_max})"
            )
        if self.send_buffers_bytes_max < self.send_buffer_bytes_max:
            raise ConfigError(
                f"--buffers-bytes-max must leave room for one connection's send buffer "
                f"({2 * self.send_buffer_bytes_max} bytes at --frame-bytes-max "
                f"{self.frame_bytes_max})"
            )

    @classmethod
    def from_flags(
        cls,
        frame_bytes_max: int = FRAME_BYTES_MAX_DEFAULT,
        buffers_bytes_max: int = BUFFERS_BYTES_MAX_DEFAULT,
        connections_max: int = 10_000,
        idle_timeout_s: float = 300.0,
        frame_timeout_s: float = 30.0,
    ) -> NetworkLimits:
        """The limits a node's command line sets: ``buffers_bytes_max`` is split in halves
        between partial frames and send buffers."""
        return cls(
            frame_bytes_max=frame_bytes_max,
            send_buffer_bytes_max=2 * frame_bytes_max,
            receive_buffers_bytes_max=buffers_bytes_max // 2,
            send_buffers_bytes_max=buffers_bytes_max // 2,
            inbound_connections_max=connections_max,
            idle_timeout_s=idle_timeout_s,
            frame_timeout_s=frame_timeout_s,
        )


@dataclass(frozen=True, slots=True)
class Timing:
    """Durations in seconds, as given on the command line, and their conversion to ticks."""

    tick_interval_s: float = TICK_INTERVAL_S
    ping_interval_s: float = PING_INTERVAL_S_DEFAULT
    dead_pings: int = DEAD_PINGS_DEFAULT
    tick_catch_up_max: int = 10
    read_leases: bool = False
    """The view service grants the primary read leases (protocol.md R1-R5)."""
    clock_drift_max: float = 0.01
    """The assumed bound on clock rate drift, as a fraction (R1)."""
    forget_after_s: float | None = None
    """The view service drops a server silent this long that holds no role from its table
    (None: ``FORGET_AFTER_S_DEFAULT``, or ``forget_after_s_min`` when that is longer)."""

    def __post_init__(self) -> None:
        if not self.tick_interval_s > 0:
            raise ConfigError("the tick interval must be positive")
        if not self.ping_interval_s >= self.tick_interval_s:
            raise ConfigError(f"--ping-interval must be at least {self.tick_interval_s} seconds")
        if self.dead_pings < 1:
            raise ConfigError("--dead-pings must be at least 1")
        forget, shortest = self.forget_after_s, self.forget_after_s_min
        if forget is not None and not shortest <= forget < float("inf"):
            raise ConfigError(
                f"--forget-after-s must be finite and at least {FORGET_AFTER_DEAD_INTERVALS_MIN} "
                f"dead intervals ({shortest:g} s: --dead-pings x --ping-interval each)"
            )
        error = self.view_service_config().check()
        if error is not None:
            raise ConfigError(error)

    @property
    def dead_interval_s(self) -> float:
        return self.dead_pings * self.ping_interval_s

    @property
    def forget_after_s_min(self) -> float:
        return FORGET_AFTER_DEAD_INTERVALS_MIN * self.dead_interval_s

    @property
    def slow_sync_s(self) -> float:
        """An fsync this long or longer is logged (``disk_sync_slow``): a quarter of the dead
        interval, where a server's pings, waiting behind it, start to look late (N6)."""
        return self.dead_interval_s * SLOW_SYNC_SHARE

    @property
    def ping_interval_ticks(self) -> int:
        return ticks(self.ping_interval_s, self.tick_interval_s)

    def view_service_config(self) -> ViewServiceConfig:
        dead_after_ticks = self.dead_pings * self.ping_interval_ticks
        if self.forget_after_s is None:
            forget_after_ticks = max(
                ticks(FORGET_AFTER_S_DEFAULT, self.tick_interval_s),
                FORGET_AFTER_DEAD_INTERVALS_MIN * dead_after_ticks,
            )
        else:
            forget_after_ticks = ticks(self.forget_after_s, self.tick_interval_s)
        return ViewServiceConfig(
            dead_after_ticks=dead_after_ticks,
            forget_after_ticks=forget_after_ticks,
            read_leases=self.read_leases,
            clock_drift_max=self.clock_drift_max,
        )

    def replica_config(
        self, limits: Limits, frame_bytes_max: int = FRAME_BYTES_MAX_DEFAULT
    ) -> ReplicaConfig:
        """The replica's timers and limits; raises ``ConfigError`` when the size settings
        cannot carry a maximal value or record in one frame (``check_size_settings``)."""
        config = ReplicaConfig(
            ping_interval_ticks=self.ping_interval_ticks,
            backup_silent_ticks=self.dead_pings * self.ping_interval_ticks,
            frame_bytes_max=frame_bytes_max,
            limits=limits,
        )
        error = config.check()
        if error is not None:
            raise ConfigError(error)
        return config

    def client_config(self, timeout_s: float) -> ClientConfig:
        interval = self.tick_interval_s
        return ClientConfig(
            retry_initial_ticks=ticks(CLIENT_RETRY_INITIAL_S, interval),
            retry_max_ticks=ticks(CLIENT_RETRY_MAX_S, interval),
            timeout_ticks=ticks(timeout_s, interval),
            view_query_retry_ticks=ticks(CLIENT_VIEW_QUERY_RETRY_S, interval),
        )


@dataclass(frozen=True, slots=True)
class NodeOptions:
    """Everything a view service or server process is started with."""

    listen: str
    timing: Timing = field(default_factory=Timing)
    network: NetworkLimits = field(default_factory=NetworkLimits)
    advertise: str | None = None
    admin_port: int | None = None
    admin_host: str = ADMIN_HOST
    metrics_port: int | None = None
    metrics_host: str = ADMIN_HOST
    log_format: str = "human"
    security: Security | None = None
    insecure: bool = False
    busy_poll_us: int = 0
    """Keep the loop turning this long after each input instead of sleeping (``busy_poll``)."""


def read_small_file(path: str, flag: str, limit: int) -> bytes:
    """At most ``limit`` bytes of ``path``; ``ConfigError`` naming ``flag`` when it cannot be
    read or is larger (``/dev/zero`` given by mistake is refused, not read forever)."""
    try:
        with open(path, "rb") as file:
            data = file.read(limit + 1)
    except OSError as error:
        raise ConfigError(f"cannot read {flag} {path}: {error.strerror or error}") from None
    if len(data) > limit:
        raise ConfigError(f"{flag} {path} is over {limit} bytes")
    return data

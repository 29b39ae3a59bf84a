"""TLS between the view service and etcd.

Theory of operation. etcd serves its clients over TLS with ``--cert-file/--key-file`` (and with
``--client-cert-auth`` demands a certificate of a CA it trusts, ``--trusted-ca-file``). The
aetcd client opens plaintext gRPC channels only, so ``TlsEtcdClient`` is an aetcd client whose
``connect`` opens a gRPC TLS channel instead; every request, error and retry is still aetcd's.
``EtcdTls`` is what the view service is given (``--etcd-ca``, ``--etcd-cert``, ``--etcd-key``);
its files are read once, at start, and a file that cannot be read is a ``ConfigError`` (one
line, exit 2). The server's certificate is verified against ``--etcd-ca`` (the system's CAs
without it) and its name against the endpoint's host, as etcdctl does.
"""

from __future__ import annotations

from dataclasses import dataclass

import aetcd
import grpc
from aetcd import rpc, watcher

from pbkv.runtime.config import ConfigError


@dataclass(frozen=True, slots=True)
class EtcdTls:
    """Paths of PEM files: ``ca`` verifies etcd (None: the system's CAs); ``cert``/``key``: this
    process's certificate, for an etcd with ``--client-cert-auth``."""

    ca: str | None = None
    cert: str | None = None
    key: str | None = None

    def __post_init__(self) -> None:
        if (self.cert is None) != (self.key is None):
            raise ConfigError("--etcd-cert and --etcd-key go together")

    def credentials(self) -> grpc.ChannelCredentials:
        """The gRPC channel credentials; ``ConfigError`` naming an unreadable file."""
        return grpc.ssl_channel_credentials(
            root_certificates=_read(self.ca, "--etcd-ca"),
            private_key=_read(self.key, "--etcd-key"),
            certificate_chain=_read(self.cert, "--etcd-cert"),
        )


def _read(path: str | None, flag: str) -> bytes | None:
    if path is None:
        return None
    try:
        with open(path, "rb") as file:
            data = file.read()
    except OSError as error:
        raise ConfigError(f"cannot read {flag} {path}: {error.strerror or error}") from None
    if b"-----BEGIN " not in data:
        raise ConfigError(f"{flag} {path} holds no PEM data")
    return data


class TlsEtcdClient(aetcd.Client):  # type: ignore[misc]  # aetcd is untyped
    """An aetcd client over a gRPC TLS channel (aetcd 1.x; see the module docstring)."""

    def __init__(
        self, host: str, port: int, credentials: grpc.ChannelCredentials, timeout: float
    ) -> None:
        super().__init__(host, port, timeout=timeout)
        self._credentials = credentials

    async def connect(self) -> None:
        """What ``aetcd.Client.connect`` does, with a TLS channel (no await: no other task can
        see it half done)."""
        if self._connected.is_set():
            return
        target = f"{self._host}:{self._port}"
        options = list(self._options.items())
        self.channel = grpc.aio.secure_channel(target, self._credentials, options=options)
        self.kvstub = rpc.KVStub(self.channel)
        self.clusterstub = rpc.ClusterStub(self.channel)
        self.leasestub = rpc.LeaseStub(self.channel)
        self.maintenancestub = rpc.MaintenanceStub(self.channel)
        self._watcher = watcher.Watcher(
            rpc.WatchStub(self.channel), timeout=self._timeout, metadata=self.metadata
        )
        self._connected.set()


def etcd_client(
    host: str, port: int, timeout_s: float, credentials: grpc.ChannelCredentials | None
) -> aetcd.Client:
    """A client of the etcd member at ``host:port``: over TLS when ``credentials`` are given."""
    if credentials is None:
        return aetcd.Client(host, port, timeout=timeout_s)
    return TlsEtcdClient(host, port, credentials, timeout_s)

"""TLS and authentication between the view service and etcd.

Theory of operation. etcd serves its clients over TLS with ``--cert-file/--key-file`` (and with
``--client-cert-auth`` demands a certificate of a CA it trusts, ``--trusted-ca-file``). The
aetcd client opens plaintext gRPC channels only, so ``TlsEtcdClient`` is an aetcd client whose
``connect`` opens a gRPC TLS channel instead; every request, error and retry is still aetcd's.
``EtcdTls`` is what the view service is given (``--etcd-ca``, ``--etcd-cert``, ``--etcd-key``);
its files are read once, at start (bounded), and a file that cannot be read is a
``ConfigError`` (one line, exit 2). The server's certificate is verified against
``--etcd-ca`` (the system's CAs without it) and its name against the endpoint's host, as
etcdctl does.

With etcd's own authentication on (``etcdctl auth enable``), ``EtcdAuth`` (``--etcd-user``,
``--etcd-password-file``) logs in when a client connects, as aetcd does over plaintext: the
token etcd returns goes with every request, and a client that fails (an expired token among
other causes) is replaced by a new one, which logs in again (``Endpoints.rotate``).
"""

from __future__ import annotations

import asyncio
import dataclasses
from dataclasses import dataclass
from typing import Final

import aetcd
import grpc
from aetcd import rpc, watcher

from pbkv.runtime.auth import TOKEN_FILE_BYTES_MAX
from pbkv.runtime.config import ConfigError, read_small_file

PEM_FILE_BYTES_MAX: Final = 1024 * 1024
"""A CA bundle, certificate chain or key file larger than this is refused (not read whole)."""


def _pem(path: str | None, flag: str) -> bytes | None:
    if path is None:
        return None
    data = read_small_file(path, flag, PEM_FILE_BYTES_MAX)
    if b"-----BEGIN " not in data:
        raise ConfigError(f"{flag} {path} holds no PEM data")
    return data


@dataclass(frozen=True, slots=True)
class EtcdTls:
    """PEM data read at start (``load``): ``ca`` verifies etcd (None: the system's CAs);
    ``cert``/``key``: this process's certificate, for an etcd with ``--client-cert-auth``."""

    ca: bytes | None = None
    cert: bytes | None = None
    key: bytes | None = dataclasses.field(default=None, repr=False)

    @classmethod
    def load(cls, ca: str | None, cert: str | None, key: str | None) -> EtcdTls:
        """From the files of ``--etcd-ca``, ``--etcd-cert``, ``--etcd-key``; ``ConfigError``
        (one line) for an unreadable, oversized or non-PEM file, or half a key pair."""
        if (cert is None) != (key is None):
            raise ConfigError("--etcd-cert and --etcd-key go together")
        return cls(_pem(ca, "--etcd-ca"), _pem(cert, "--etcd-cert"), _pem(key, "--etcd-key"))

    def credentials(self) -> grpc.ChannelCredentials:
        """The gRPC channel credentials (no file is read again)."""
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca, private_key=self.key, certificate_chain=self.cert
        )


@dataclass(frozen=True, slots=True)
class EtcdAuth:
    """An etcd user and its password (read from ``--etcd-password-file``)."""

    user: str
    password: str = dataclasses.field(repr=False)

    @classmethod
    def from_file(cls, user: str, password_file: str) -> EtcdAuth:
        """``ConfigError`` for an unreadable, oversized, non-UTF-8 or empty file (one trailing
        newline is dropped)."""
        flag = "--etcd-password-file"
        data = read_small_file(password_file, flag, TOKEN_FILE_BYTES_MAX)
        try:
            password = data.decode("utf-8").removesuffix("\n")
        except UnicodeDecodeError:
            raise ConfigError(f"{flag} {password_file} is not UTF-8 text") from None
        if not user or not password:
            raise ConfigError("--etcd-user and its --etcd-password-file must not be empty")
        return cls(user, password)


class TlsEtcdClient(aetcd.Client):  # type: ignore[misc]  # aetcd is untyped
    """An aetcd client over a gRPC TLS channel (aetcd 1.x; see the module docstring)."""

    _is_connecting: bool  # aetcd's, set in its __init__

    def __init__(
        self,
        host: str,
        port: int,
        credentials: grpc.ChannelCredentials,
        timeout: float,
        auth: EtcdAuth | None = None,
    ) -> None:
        user, password = (None, None) if auth is None else (auth.user, auth.password)
        super().__init__(host, port, username=user, password=password, timeout=timeout)
        self._credentials = credentials

    async def connect(self) -> None:
        """What ``aetcd.Client.connect`` does, with a TLS channel. Errors reach the caller
        through the aetcd method that connected (its error handling turns gRPC's into aetcd's)."""
        if self._connected.is_set():
            return
        if self._is_connecting:  # another task logs in: wait for it
            await asyncio.wait_for(self._connected.wait(), self._connect_wait_timeout)
            return
        self._is_connecting = True
        try:
            target = f"{self._host}:{self._port}"
            options = list(self._options.items())
            self.channel = grpc.aio.secure_channel(target, self._credentials, options=options)
            if self._username is not None and self._password is not None:
                self.auth_stub = rpc.AuthStub(self.channel)
                request = rpc.AuthenticateRequest(name=self._username, password=self._password)
                reply = await self.auth_stub.Authenticate(request, timeout=self._timeout)
                self.metadata = (("token", reply.token),)
            self.kvstub = rpc.KVStub(self.channel)
            self.clusterstub = rpc.ClusterStub(self.channel)
            self.leasestub = rpc.LeaseStub(self.channel)
            self.maintenancestub = rpc.MaintenanceStub(self.channel)
            self._watcher = watcher.Watcher(
                rpc.WatchStub(self.channel), timeout=self._timeout, metadata=self.metadata
            )
            self._connected.set()
        finally:
            self._is_connecting = False


def etcd_client(
    host: str,
    port: int,
    timeout_s: float,
    credentials: grpc.ChannelCredentials | None,
    auth: EtcdAuth | None = None,
) -> aetcd.Client:
    """A client of the etcd member at ``host:port``: over TLS when ``credentials`` are given,
    logged in as ``auth`` when given."""
    if credentials is not None:
        return TlsEtcdClient(host, port, credentials, timeout_s, auth)
    user, password = (None, None) if auth is None else (auth.user, auth.password)
    return aetcd.Client(host, port, username=user, password=password, timeout=timeout_s)

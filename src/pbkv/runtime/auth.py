"""Connection authentication: a mutual challenge-response on shared secrets (docs/design.md).

Theory of operation. Every connection to a process that holds a secret starts with three small
frames (the usual 4-byte length header, a payload of at most ``HANDSHAKE_FRAME_BYTES_MAX``
bytes, never decoded as a protocol message) before anything else is read:

1. ``HELLO`` (client -> server): magic, version, the role claimed (``peer`` or ``client``) and
   a fresh 32-byte nonce ``cn``.
2. ``CHALLENGE`` (server -> client): a fresh nonce ``sn`` and
   ``HMAC-SHA256(key(role), LABEL | "server" | role | cn | sn)`` for each key the server accepts
   for that role (one, or two while a secret is rotated): the server proves it holds the secret
   of that role before the client reveals anything (a fake server is detected); the client
   accepts the challenge when one of the MACs is its own key's.
3. ``PROOF`` (client -> server): ``HMAC-SHA256(key(role), LABEL | "client" | role | cn | sn)``;
   the server accepts it under any key it accepts for the role.
4. ``OK`` (server -> client); from here on the connection carries protocol frames.

Rotation without downtime: a process presents one secret (its own, ``--auth-token-file``) and
may accept one more for the same role (``--auth-accept-token-file``, and for clients
``--client-accept-token-file``). Rolling restarts move a cluster from secret A to B in three
steps, every process accepting what every other presents at each step: present A accepting B;
present B accepting A; present B alone (docs/guide.md §12b).

The secret never crosses the wire; both MACs cover both nonces, so a captured handshake replays
into nothing (the other side's nonce is new each time); the direction label keeps a server's
MAC from serving as a client's proof (no reflection); the role is inside the MAC, so a client
token cannot claim the peer role. MACs are compared with ``hmac.compare_digest``. Anything else
(a protocol frame first, a frame over the bound, a bad length, a wrong MAC) is an ``AuthError``:
the connection gets one error frame and is closed by its owner.

This module is pure (nonces are passed in; no sockets, clocks or global state besides the
process's default token, below) so the handshake is unit-tested byte by byte.

Secrets: a *peer* token (servers, view service, admin and operator tools) and a *client* token
(read-write clients; the peer token when none is given). ``load_token_file`` reads one, refusing
an unreadable, empty or short (< ``TOKEN_BYTES_MIN``) file with one line (``ConfigError``).
Which token a tool or client uses when none is passed: ``resolve_token``.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

from pbkv.runtime.config import ConfigError, read_small_file

MAGIC: Final = b"PBKA"
VERSION: Final = 1
NONCE_BYTES: Final = 32
MAC_BYTES: Final = 32
HANDSHAKE_FRAME_BYTES_MAX: Final = 256
ACCEPTED_KEYS_MAX: Final = 2
"""Keys a listener accepts for one role: its own, and one more while a secret is rotated."""
CHALLENGE_BODY_BYTES: Final = tuple(
    NONCE_BYTES + keys * MAC_BYTES for keys in range(1, ACCEPTED_KEYS_MAX + 1)
)
"""The lengths a challenge may have: the server's nonce and one MAC per key it accepts."""
TOKEN_BYTES_MIN: Final = 16
TOKEN_FILE_BYTES_MAX: Final = 4096
LABEL: Final = b"pbkv-auth-v1"
TOKEN_ENV: Final = "PBKV_AUTH_TOKEN"
HEADER: Final = struct.Struct(">I")

Role = Literal["peer", "client"]
ROLE_CODES: Final[dict[Role, bytes]] = {"peer": b"p", "client": b"c"}
ROLES_BY_CODE: Final[dict[bytes, Role]] = {code: role for role, code in ROLE_CODES.items()}
KIND_HELLO: Final = b"H"
KIND_CHALLENGE: Final = b"C"
KIND_PROOF: Final = b"P"
KIND_OK: Final = b"O"
PREFIX_BYTES: Final = len(MAGIC) + 2
HANDSHAKE_TIMEOUT_TEXT: Final = "handshake not completed within"
"""How a refusal for a slow handshake begins: the one refusal a retry may pass."""


SECRET_REQUIRED: Final = (
    "the client presented no secret, and this node requires one (pbkv --auth-token-file FILE "
    "or $PBKV_AUTH_TOKEN; in Python, pbkv.Client(token=...))"
)
"""Why a connection that began without the handshake is refused: say what to give."""


class AuthError(Exception):
    """The handshake failed; the message is the one-line reason."""


def mac(
    key: bytes, direction: bytes, role: Role, client_nonce: bytes, server_nonce: bytes
) -> bytes:
    """HMAC-SHA256 over the label, the direction (``server``/``client``), role and both nonces."""
    data = b"|".join((LABEL, direction, ROLE_CODES[role], client_nonce, server_nonce))
    return hmac.new(key, data, hashlib.sha256).digest()


def frame(kind: bytes, body: bytes = b"") -> bytes:
    """One handshake frame: header, magic, version, kind, body."""
    payload = MAGIC + bytes((VERSION,)) + kind + body
    return HEADER.pack(len(payload)) + payload


def parse(payload: bytes, kind: bytes, body_bytes: int | tuple[int, ...]) -> bytes:
    """The body of a handshake payload of ``kind`` and of one of the lengths ``body_bytes``;
    ``AuthError`` for anything else."""
    if payload[: len(MAGIC)] != MAGIC:
        raise AuthError(f"not an authentication handshake: {SECRET_REQUIRED}")
    if len(payload) < PREFIX_BYTES:
        raise AuthError(f"handshake of {len(payload)} bytes, shorter than its prefix")
    if payload[len(MAGIC)] != VERSION:
        raise AuthError(f"handshake version {payload[len(MAGIC)]} unsupported (want {VERSION})")
    if payload[len(MAGIC) + 1 : PREFIX_BYTES] != kind:
        raise AuthError(f"expected handshake step {kind.decode()}")
    body = payload[PREFIX_BYTES:]
    lengths = body_bytes if isinstance(body_bytes, tuple) else (body_bytes,)
    if len(body) not in lengths:
        wanted = " or ".join(map(str, lengths))
        raise AuthError(f"handshake step {kind.decode()} of {len(body)} bytes, not {wanted}")
    return body


@dataclass(frozen=True, slots=True)
class ServerSecrets:
    """What a listener accepts: the peer token, and the client token (None: clients must prove
    the peer token; ``clients=False``: the client role is refused, as on the admin port); each
    with one more accepted while it is rotated (``peer_also``, ``client_also``)."""

    peer: bytes
    client: bytes | None = None
    clients: bool = True
    peer_also: bytes | None = None
    client_also: bytes | None = None

    def keys(self, role: Role) -> tuple[bytes, ...]:
        """The keys accepted for ``role``, this process's own first."""
        if role == "client" and not self.clients:
            raise AuthError("the client role is not accepted on this port")
        if role == "client" and self.client is not None:
            own, also = self.client, self.client_also
        else:
            own, also = self.peer, self.peer_also
        return (own,) if also is None or also == own else (own, also)


class ServerHandshake:
    """The listener's side; ``feed`` each handshake payload, send what it returns."""

    def __init__(self, secrets: ServerSecrets, nonce: bytes) -> None:
        self.secrets = secrets
        self.nonce = nonce
        self.role: Role | None = None
        self.client_nonce = b""
        self.done = False

    def feed(self, payload: bytes) -> bytes:
        if self.role is None:
            body = parse(payload, KIND_HELLO, 1 + NONCE_BYTES)
            role = ROLES_BY_CODE.get(body[:1])
            if role is None:
                raise AuthError("unknown role in handshake")
            keys = self.secrets.keys(role)
            self.role, self.client_nonce = role, body[1:]
            proofs = [mac(key, b"server", role, self.client_nonce, self.nonce) for key in keys]
            return frame(KIND_CHALLENGE, self.nonce + b"".join(proofs))
        if self.done:
            raise AuthError("handshake already complete")
        body = parse(payload, KIND_PROOF, MAC_BYTES)
        role, client_nonce = self.role, self.client_nonce
        matches = [
            hmac.compare_digest(body, mac(key, b"client", role, client_nonce, self.nonce))
            for key in self.secrets.keys(role)  # every key, so the time says nothing of which
        ]
        if not any(matches):
            raise AuthError(f"wrong secret for the {self.role} role")
        self.done = True
        return frame(KIND_OK)


class ClientHandshake:
    """The connecting side: ``hello()`` first, then ``feed`` each payload the server sends."""

    def __init__(self, token: bytes, role: Role, nonce: bytes) -> None:
        self.token = token
        self.role: Role = role
        self.nonce = nonce
        self.server_nonce: bytes | None = None
        self.done = False

    def hello(self) -> bytes:
        return frame(KIND_HELLO, ROLE_CODES[self.role] + self.nonce)

    def feed(self, payload: bytes) -> bytes:
        if self.server_nonce is None:
            body = parse(payload, KIND_CHALLENGE, CHALLENGE_BODY_BYTES)
            server_nonce, proofs = body[:NONCE_BYTES], body[NONCE_BYTES:]
            expected = mac(self.token, b"server", self.role, self.nonce, server_nonce)
            matches = [
                hmac.compare_digest(proofs[at : at + MAC_BYTES], expected)
                for at in range(0, len(proofs), MAC_BYTES)
            ]
            if not any(matches):
                raise AuthError(
                    "the server does not hold our secret (a wrong token here, or not the "
                    "cluster's server)"
                )
            self.server_nonce = server_nonce
            return frame(
                KIND_PROOF, mac(self.token, b"client", self.role, self.nonce, server_nonce)
            )
        if self.done:
            raise AuthError("handshake already complete")
        parse(payload, KIND_OK, 0)
        self.done = True
        return b""


class HandshakeReader:
    """Splits handshake frames off a byte stream, at most ``HANDSHAKE_FRAME_BYTES_MAX`` each
    (a bigger length is an ``AuthError`` at once: nothing waits for it)."""

    def __init__(self) -> None:
        self.buffer = bytearray()

    def feed(self, data: bytes) -> None:
        self.buffer += data
        if len(self.buffer) > 2 * (HEADER.size + HANDSHAKE_FRAME_BYTES_MAX):
            raise AuthError("too many bytes before the handshake completed")

    def next(self) -> bytes | None:
        """The next whole payload, or None."""
        buffer = self.buffer
        if len(buffer) < HEADER.size:
            return None
        (length,) = HEADER.unpack_from(buffer)
        if length > HANDSHAKE_FRAME_BYTES_MAX:
            raise AuthError(f"frame of {length} bytes before authentication: {SECRET_REQUIRED}")
        if len(buffer) < HEADER.size + length:
            return None
        payload = bytes(buffer[HEADER.size : HEADER.size + length])
        del buffer[: HEADER.size + length]
        return payload

    def rest(self) -> bytes:
        rest, self.buffer = bytes(self.buffer), bytearray()
        return rest


# --- tokens ----------------------------------------------------------------------------------


def check_token(token: bytes, origin: str) -> bytes:
    """``token`` without surrounding whitespace; ``ConfigError`` when empty or too short."""
    token = token.strip()
    if not token:
        raise ConfigError(f"{origin} is empty")
    if len(token) < TOKEN_BYTES_MIN:
        raise ConfigError(f"{origin} holds {len(token)} bytes, fewer than {TOKEN_BYTES_MIN}")
    return token


def load_token_file(path: str | Path) -> bytes:
    """The secret in ``path`` (surrounding whitespace removed); ``ConfigError`` with one line
    when it cannot be read, is empty, shorter than ``TOKEN_BYTES_MIN`` or over 4 KiB."""
    data = read_small_file(str(path), "token file", TOKEN_FILE_BYTES_MAX)
    return check_token(data, f"token file {path}")


def load_accept_token_file(path: str | Path) -> bytes | None:
    """The second secret an ``--*-accept-token-file`` holds, or None when the file is empty
    (whitespace only): the slot a rotation fills and empties again, with reloads (SIGHUP)
    instead of restarts. Otherwise as ``load_token_file``."""
    data = read_small_file(str(path), "token file", TOKEN_FILE_BYTES_MAX)
    return check_token(data, f"token file {path}") if data.strip() else None


def env_token() -> bytes | None:
    """``$PBKV_AUTH_TOKEN`` (checked), or None when unset or empty."""
    text = os.environ.get(TOKEN_ENV, "")
    return check_token(text.encode(), f"${TOKEN_ENV}") if text.strip() else None


_override: bytes | None = None  # --auth-token-file of a CLI command
_cluster: bytes | None = None  # the secret of the cluster directory a command works on
_fallback: bytes | None = None  # the secret of ./.pbkv (or $PBKV_CLUSTER_DIR), if any


def set_cli_token(token: bytes | None) -> None:
    """The token a ``pbkv`` command was given with ``--auth-token-file``."""
    global _override
    _override = token


def set_cluster_token(token: bytes | None, chosen: bool = True) -> None:
    """The secret of a local cluster directory: ``chosen`` when the command works on that
    cluster (it wins over ``$PBKV_AUTH_TOKEN``), else the default directory's (it does not)."""
    global _cluster, _fallback
    if chosen:
        _cluster = token
    else:
        _fallback = token


def resolve_token(explicit: bytes | str | None = None) -> bytes | None:
    """The token to present: ``explicit``, else the CLI's ``--auth-token-file``, else the secret
    of the cluster directory the command works on, else ``$PBKV_AUTH_TOKEN``, else the secret of
    the default cluster directory; None: connect without one."""
    if explicit is not None:
        raw = explicit.encode() if isinstance(explicit, str) else explicit
        return check_token(raw, "the token")
    if _override is not None:
        return _override
    if _cluster is not None:
        return _cluster
    return env_token() or _fallback

"""The authentication handshake as pure functions: every step, every way it must fail."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest

from pbkv.runtime import auth
from pbkv.runtime.auth import (
    AuthError,
    ClientHandshake,
    HandshakeReader,
    ServerHandshake,
    ServerSecrets,
)
from pbkv.runtime.config import ConfigError

PEER = b"peer-secret-0123456789abcdef"
CLIENT = b"client-secret-0123456789abcdef"


def payloads(data: bytes) -> list[bytes]:
    reader = HandshakeReader()
    reader.feed(data)
    found = []
    while (payload := reader.next()) is not None:
        found.append(payload)
    return found


def run(server: ServerHandshake, client: ClientHandshake) -> None:
    """Drive both sides to the end, as the connections do."""
    (challenge,) = payloads(server.feed(payloads(client.hello())[0]))
    (proof,) = payloads(client.feed(challenge))
    (ok,) = payloads(server.feed(proof))
    client.feed(ok)


def nonce() -> bytes:
    return secrets.token_bytes(auth.NONCE_BYTES)


@pytest.mark.parametrize(("role", "token"), [("peer", PEER), ("client", CLIENT)])
def test_both_roles_complete_with_their_own_secret(role: auth.Role, token: bytes) -> None:
    server = ServerHandshake(ServerSecrets(PEER, CLIENT), nonce())
    client = ClientHandshake(token, role, nonce())
    run(server, client)
    assert server.done and client.done and server.role == role


def test_a_wrong_secret_is_refused_by_the_server_and_a_fake_server_is_caught() -> None:
    server = ServerHandshake(ServerSecrets(PEER), nonce())
    client = ClientHandshake(b"not-the-secret-0123456789", "peer", nonce())
    (challenge,) = payloads(server.feed(payloads(client.hello())[0]))
    with pytest.raises(AuthError, match="does not hold"):
        client.feed(challenge)  # the server proved another secret: the client stops here
    forged_proof = auth.frame(auth.KIND_PROOF, b"\0" * auth.MAC_BYTES)
    with pytest.raises(AuthError, match="wrong secret"):
        server.feed(payloads(forged_proof)[0])
    assert not server.done


def test_a_client_token_cannot_claim_the_peer_role() -> None:
    server = ServerHandshake(ServerSecrets(PEER, CLIENT), nonce())
    client = ClientHandshake(CLIENT, "peer", nonce())
    (challenge,) = payloads(server.feed(payloads(client.hello())[0]))
    with pytest.raises(AuthError):
        client.feed(challenge)


def test_a_captured_handshake_does_not_replay() -> None:
    first = ServerHandshake(ServerSecrets(PEER), nonce())
    client = ClientHandshake(PEER, "peer", nonce())
    hello = payloads(client.hello())[0]
    (challenge,) = payloads(first.feed(hello))
    (proof,) = payloads(client.feed(challenge))
    second = ServerHandshake(ServerSecrets(PEER), nonce())  # a new connection: a new nonce
    second.feed(hello)
    with pytest.raises(AuthError, match="wrong secret"):
        second.feed(proof)


def test_the_server_proof_is_not_a_client_proof() -> None:
    """Reflection: the MAC a server sends cannot be sent back as the client's proof."""
    server = ServerHandshake(ServerSecrets(PEER), nonce())
    client = ClientHandshake(b"x" * 16, "peer", nonce())
    (challenge,) = payloads(server.feed(payloads(client.hello())[0]))
    server_mac = challenge[-auth.MAC_BYTES :]
    with pytest.raises(AuthError):
        server.feed(payloads(auth.frame(auth.KIND_PROOF, server_mac))[0])


def test_the_admin_port_refuses_the_client_role() -> None:
    server = ServerHandshake(ServerSecrets(PEER, clients=False), nonce())
    hello = payloads(ClientHandshake(PEER, "client", nonce()).hello())[0]
    with pytest.raises(AuthError, match="client role"):
        server.feed(hello)


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"\x93\xa2rq\x01",  # a protocol message instead of a handshake
        auth.MAGIC + b"\x02H" + b"p" + b"n" * 32,  # another version
        auth.MAGIC + b"\x01P" + b"m" * 32,  # a proof before a hello
        auth.MAGIC + b"\x01H" + b"p" + b"n" * 31,  # a nonce one byte short
        auth.MAGIC + b"\x01H" + b"p" + b"n" * 33,  # one byte long
        auth.MAGIC + b"\x01H" + b"x" + b"n" * 32,  # an unknown role
    ],
)
def test_malformed_hellos_are_refused(payload: bytes) -> None:
    with pytest.raises(AuthError):
        ServerHandshake(ServerSecrets(PEER), nonce()).feed(payload)


def test_the_reader_refuses_a_large_frame_at_its_header_and_bounds_its_buffer() -> None:
    reader = HandshakeReader()
    reader.feed(auth.HEADER.pack(auth.HANDSHAKE_FRAME_BYTES_MAX + 1))
    with pytest.raises(AuthError, match="before authentication"):
        reader.next()
    with pytest.raises(AuthError, match="too many bytes"):
        HandshakeReader().feed(b"\0\0\0\x10" * 200)


def test_a_split_frame_waits_for_its_rest() -> None:
    data = ClientHandshake(PEER, "peer", nonce()).hello()
    reader = HandshakeReader()
    reader.feed(data[:5])
    assert reader.next() is None
    reader.feed(data[5:] + b"rest")
    assert reader.next() == data[auth.HEADER.size :]
    assert reader.rest() == b"rest"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "is empty"),
        (b"  \n", "is empty"),
        (b"short\n", "fewer than 16"),
        (None, "cannot read"),
    ],
)
def test_unusable_token_files_are_one_line_config_errors(
    tmp_path: Path, content: bytes | None, message: str
) -> None:
    path = tmp_path / "token"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ConfigError, match=message):
        auth.load_token_file(path)


def test_a_token_file_is_read_without_its_newline(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_bytes(PEER + b"\n")
    assert auth.load_token_file(path) == PEER


@pytest.mark.parametrize("cut", range(len(auth.MAGIC), auth.PREFIX_BYTES))
def test_a_handshake_cut_inside_its_prefix_is_refused_with_one_line(cut: int) -> None:
    """A 4- or 5-byte payload (the magic, nothing after) used to raise IndexError in the
    connection's data_received, logging a traceback per connection."""
    hello = payloads(ClientHandshake(PEER, "peer", nonce()).hello())[0]
    server = ServerHandshake(ServerSecrets(PEER), nonce())
    with pytest.raises(AuthError, match="shorter than its prefix"):
        server.feed(hello[:cut])


# --- rotation: one more secret accepted, never presented ---------------------------------------

NEW_PEER = b"new-peer-secret-0123456789abcdef"
NEW_CLIENT = b"new-client-secret-0123456789abcdef"


@pytest.mark.parametrize("token", [PEER, NEW_PEER])
def test_while_rotating_a_listener_accepts_either_peer_secret(token: bytes) -> None:
    server = ServerHandshake(ServerSecrets(PEER, peer_also=NEW_PEER), nonce())
    client = ClientHandshake(token, "peer", nonce())
    run(server, client)
    assert server.done and client.done


def test_while_rotating_a_third_secret_is_still_refused_and_a_fake_server_caught() -> None:
    server = ServerHandshake(ServerSecrets(PEER, peer_also=NEW_PEER), nonce())
    client = ClientHandshake(b"neither-secret-0123456789abcdef", "peer", nonce())
    (challenge,) = payloads(server.feed(payloads(client.hello())[0]))
    assert len(challenge) == auth.PREFIX_BYTES + auth.NONCE_BYTES + 2 * auth.MAC_BYTES
    with pytest.raises(AuthError, match="does not hold"):
        client.feed(challenge)  # neither MAC is under the client's key
    forged = auth.frame(auth.KIND_PROOF, b"\0" * auth.MAC_BYTES)
    with pytest.raises(AuthError, match="wrong secret"):
        server.feed(payloads(forged)[0])


@pytest.mark.parametrize("token", [CLIENT, NEW_CLIENT])
def test_while_rotating_the_client_secret_either_passes_but_never_as_a_peer(token: bytes) -> None:
    secrets_ = ServerSecrets(PEER, CLIENT, client_also=NEW_CLIENT)
    run(ServerHandshake(secrets_, nonce()), ClientHandshake(token, "client", nonce()))
    server = ServerHandshake(secrets_, nonce())
    client = ClientHandshake(token, "peer", nonce())
    (challenge,) = payloads(server.feed(payloads(client.hello())[0]))
    with pytest.raises(AuthError):
        client.feed(challenge)


def test_the_admin_port_accepts_the_second_peer_secret_too() -> None:
    from pbkv.runtime.security import Security

    admin = Security(PEER, "peer", ServerSecrets(PEER, CLIENT, True, NEW_PEER)).admin().secrets
    assert admin is not None and admin.keys("peer") == (PEER, NEW_PEER)
    with pytest.raises(AuthError, match="client role"):
        admin.keys("client")


def test_a_challenge_with_more_macs_than_accepted_keys_is_refused() -> None:
    body = b"n" * auth.NONCE_BYTES + b"m" * (auth.ACCEPTED_KEYS_MAX + 1) * auth.MAC_BYTES
    client = ClientHandshake(PEER, "peer", nonce())
    client.hello()
    with pytest.raises(AuthError, match="bytes, not"):
        client.feed(payloads(auth.frame(auth.KIND_CHALLENGE, body))[0])


@pytest.mark.parametrize("content", [NEW_PEER, b"", b"\n"])
@pytest.mark.parametrize(
    ("files", "says"),
    [
        ({"accept_token_file": "new"}, "--auth-accept-token-file needs the peer secret"),
        ({"client_accept_token_file": "new"}, "--client-accept-token-file needs --client"),
    ],
)
def test_a_second_secret_without_the_first_is_a_config_error(
    files: dict[str, str],
    says: str,
    content: bytes,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The flag, not the file's content, needs the first secret: an empty accept file (no
    rotation under way) is refused too, or filling it and reloading would fail later."""
    from pbkv.runtime.security import node_security

    monkeypatch.delenv(auth.TOKEN_ENV, raising=False)
    (tmp_path / "new").write_bytes(content)
    paths = {name: str(tmp_path / value) for name, value in files.items()}
    peer = str(tmp_path / "peer") if "client_accept_token_file" in files else None
    if peer is not None:
        (tmp_path / "peer").write_bytes(PEER)
    with pytest.raises(ConfigError, match=says):
        node_security(peer, None, None, **paths)  # type: ignore[arg-type]


def test_a_proof_made_for_the_client_role_does_not_pass_for_the_peer_role() -> None:
    """A3: the role is inside both MACs. Where the client token is the peer secret (the
    default), a proof for the client role still cannot complete a handshake that claimed the
    peer role, even on the same nonces (a relay cannot turn a client into a peer)."""
    client_nonce, server_nonce = nonce(), nonce()
    as_client = ClientHandshake(PEER, "client", client_nonce)
    as_peer = ClientHandshake(PEER, "peer", client_nonce)
    for_client = ServerHandshake(ServerSecrets(PEER), server_nonce)
    (challenge,) = payloads(for_client.feed(payloads(as_client.hello())[0]))
    (client_proof,) = payloads(as_client.feed(challenge))
    for_peer = ServerHandshake(ServerSecrets(PEER), server_nonce)
    (peer_challenge,) = payloads(for_peer.feed(payloads(as_peer.hello())[0]))
    assert peer_challenge != challenge  # the server's proof names the role as well
    with pytest.raises(AuthError, match="wrong secret for the peer role"):
        for_peer.feed(client_proof)


def test_a_token_of_16_bytes_is_enough_and_a_file_over_4_kib_is_refused_not_cut(
    tmp_path: Path,
) -> None:
    """A5: ``TOKEN_BYTES_MIN`` (16 bytes) is a minimum a token may meet; a token file over
    ``TOKEN_FILE_BYTES_MAX`` (4 KiB) stops the start with one line instead of being read in
    part (a secret cut at 4 KiB would differ from what other processes read whole)."""
    assert auth.check_token(b"x" * auth.TOKEN_BYTES_MIN, "t") == b"x" * auth.TOKEN_BYTES_MIN
    with pytest.raises(ConfigError, match="fewer than 16"):
        auth.check_token(b"x" * (auth.TOKEN_BYTES_MIN - 1), "t")
    path = tmp_path / "token"
    path.write_bytes(b"x" * auth.TOKEN_FILE_BYTES_MAX)
    assert auth.load_token_file(path) == b"x" * auth.TOKEN_FILE_BYTES_MAX
    path.write_bytes(b"x" * (auth.TOKEN_FILE_BYTES_MAX + 1))
    with pytest.raises(ConfigError, match="is over 4096 bytes"):
        auth.load_token_file(path)


def test_without_a_secret_loopback_names_bind_and_other_addresses_need_insecure() -> None:
    """A5: without a secret a process listens on loopback only (``localhost`` included),
    elsewhere with ``--insecure`` alone; with a secret anywhere."""
    from pbkv.runtime.security import Security

    bare = Security()
    for host in ("127.0.0.1", "::1", "localhost", "127.1.2.3"):
        bare.check_bind(host, insecure=False)
    for host in ("0.0.0.0", "10.0.0.1", "example.com"):
        with pytest.raises(ConfigError, match="loopback only"):
            bare.check_bind(host, insecure=False)
        bare.check_bind(host, insecure=True)
        Security(secrets=ServerSecrets(PEER)).check_bind(host, insecure=False)


def test_a_client_token_without_the_peer_secret_is_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A3: the client token is accepted besides the peer secret, never instead of it (without
    the check the node starts holding no secret at all, the client token silently unused)."""
    from pbkv.runtime.security import node_security

    monkeypatch.delenv(auth.TOKEN_ENV, raising=False)
    (tmp_path / "client").write_bytes(CLIENT)
    with pytest.raises(ConfigError, match="--client-token-file needs the peer secret"):
        node_security(None, str(tmp_path / "client"), None)


def test_an_empty_accept_file_accepts_nothing_more_and_a_filled_one_is_read_on_reload(
    tmp_path: Path,
) -> None:
    """The accept file is the slot a rotation by SIGHUP fills and empties
    (``pbkv.runtime.reload``): empty, one key is accepted and nothing rotates; filled and
    reloaded, two; holding the presented secret itself, still one."""
    from pbkv.runtime.security import node_security, rotating_roles

    peer, accept = tmp_path / "peer", tmp_path / "accept"
    peer.write_bytes(PEER)
    accept.write_bytes(b" \n")
    built = node_security(str(peer), None, None, accept_token_file=str(accept))
    assert built.secrets is not None and built.secrets.keys("peer") == (PEER,)
    assert rotating_roles(built.secrets) == "-"
    assert built.reload_from is not None
    accept.write_bytes(NEW_PEER)
    again = built.reload_from()
    assert again.secrets is not None and again.secrets.keys("peer") == (PEER, NEW_PEER)
    assert rotating_roles(again.secrets) == "peer"
    accept.write_bytes(PEER)
    same = built.reload_from()
    assert same.secrets is not None and rotating_roles(same.secrets) == "-"


def test_a_process_without_secret_or_tls_files_has_nothing_to_reload(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from pbkv.runtime.security import node_security

    monkeypatch.setenv(auth.TOKEN_ENV, PEER.decode())
    assert node_security(None, None, None).reload_from is None

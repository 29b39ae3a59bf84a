"""Exceptions raised by the public API."""

from __future__ import annotations


class PbkvError(Exception):
    """Base of every pbkv error. ``exit_code`` is the CLI's exit status for it (the table is in
    ``pbkv.cli.exits``): 5, failed, unless a subclass says otherwise."""

    exit_code = 5


class Unavailable(PbkvError):
    """No primary completed the operation within the caller's timeout. The operation may or may
    not have taken effect."""

    exit_code = 3


class RequestRejected(PbkvError):
    """The cluster refused the operation for good (for example a key or value over the size
    limit). It did not take effect."""

    exit_code = 4


class AuthenticationFailed(PbkvError):
    """A server refused our connection for good: a wrong or missing secret, or TLS that does
    not match (certificate, CA, plaintext against TLS). Retrying does not help. When the
    cluster had answered this client before (the secret or certificate changed under it), a
    write in flight may still have taken effect through an earlier connection, and the message
    says so; on a first contact nothing reached any node."""

    exit_code = 4


class WrongNode(PbkvError):
    """The address given is the wrong kind of pbkv node (a server where the view service was
    expected, or the other way round): nothing was done there."""

    exit_code = 2


def written_by_another_version(found: str | int, reads: int) -> str:
    """The words of every refusal of state written by another format version of pbkv (a
    server's segments and snapshots, the view file, the view in etcd), so one search of a log
    finds them all: ``written by another pbkv format version (2; this release reads 1)``."""
    return f"written by another pbkv format version ({found}; this release reads {reads})"

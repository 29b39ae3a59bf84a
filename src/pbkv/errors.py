"""Exceptions raised by the public API."""

from __future__ import annotations


class PbkvError(Exception):
    """Base of every pbkv error."""


class Unavailable(PbkvError):
    """No primary completed the operation within the caller's timeout. The operation may or may
    not have taken effect."""


class RequestRejected(PbkvError):
    """The cluster refused the operation for good (for example a key or value over the size
    limit). It did not take effect."""

"""pbkv: a fault-tolerant primary-backup replicated key-value store.

Public API::

    import pbkv
    with pbkv.Client("127.0.0.1:7000", timeout=30.0) as kv:
        kv.put("k", "v")

See README.md for the quick start and docs/protocol.md for the guarantees.
"""

from __future__ import annotations

from importlib import metadata
from typing import TYPE_CHECKING, Any

from pbkv.core.messages import View
from pbkv.errors import AuthenticationFailed, PbkvError, RequestRejected, Unavailable, WrongNode

try:  # the one place the version lives is pyproject.toml; installed metadata carries it
    __version__ = metadata.version("pbkv")
except metadata.PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = [
    "AsyncClient",
    "AuthenticationFailed",
    "Client",
    "PbkvError",
    "RequestRejected",
    "TlsOptions",
    "Unavailable",
    "View",
    "WrongNode",
    "__version__",
]

if TYPE_CHECKING:
    from pbkv.client import AsyncClient, Client, TlsOptions


def __getattr__(name: str) -> Any:
    # The clients pull in asyncio; import them lazily so `import pbkv` stays light.
    if name in ("Client", "AsyncClient", "TlsOptions"):
        from pbkv import client

        return getattr(client, name)
    raise AttributeError(name)

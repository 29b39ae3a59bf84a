"""pbkv.core: the sans-I/O protocol. Pure state machines, no clocks, sockets or global random.

Entry points are the same for every host: ``on_message(source, message, out)`` and
``on_tick(out)``, plus ``submit(operation, out)`` for the client session. Handlers append effects
to an ``Outbox``; the host executes them in order. See docs/protocol.md for the invariants cited
throughout (V*, P*, C*).
"""

from pbkv.core.client_session import ClientConfig, ClientSession
from pbkv.core.effects import Deliver, Effect, Log, Outbox, PersistView, Send
from pbkv.core.kv_store import KVStore, Limits
from pbkv.core.messages import (
    INITIAL_VIEW,
    Append,
    Delete,
    Get,
    Operation,
    Put,
    View,
)
from pbkv.core.replica import Phase, Replica, ReplicaConfig, Role
from pbkv.core.view_service import ViewService, ViewServiceConfig

__all__ = [
    "INITIAL_VIEW",
    "Append",
    "ClientConfig",
    "ClientSession",
    "Delete",
    "Deliver",
    "Effect",
    "Get",
    "KVStore",
    "Limits",
    "Log",
    "Operation",
    "Outbox",
    "PersistView",
    "Phase",
    "Put",
    "Replica",
    "ReplicaConfig",
    "Role",
    "Send",
    "View",
    "ViewService",
    "ViewServiceConfig",
]

"""The admin port's bounds (``pbkv.runtime.admin``): a full port makes room for the operator."""

from __future__ import annotations

import asyncio
import io

from pbkv.core.messages import View
from pbkv.runtime.admin import (
    ADMIN_CONNECTIONS_MAX,
    AdminServer,
    AdminStatus,
    AdminStatusReply,
    fault_state,
    send_admin_async,
)
from pbkv.runtime.faults import Faults
from pbkv.runtime.logging import EventLogger
from pbkv.runtime.security import Security


def test_a_full_admin_port_makes_room_for_the_operator() -> None:
    """Review: 64 idle connections (or connections re-opened as their handshakes time out)
    locked the admin port: every `pbkv cluster heal` failed. At the cap the oldest connection
    now makes room for the newcomer."""
    faults = Faults()
    reply = AdminStatusReply(1, "server", "s1", "idle", "idle", View(0), 0, {}, fault_state(faults))
    logger = EventLogger("server", "s1", lambda: 1, stream=io.StringIO())
    server = AdminServer(faults, lambda: reply, logger)

    async def main() -> object:
        port = await server.listen(0)
        idle = [
            await asyncio.open_connection("127.0.0.1", port) for _ in range(ADMIN_CONNECTIONS_MAX)
        ]
        await asyncio.sleep(0.1)
        try:
            return await send_admin_async(f"127.0.0.1:{port}", AdminStatus(), 5.0, Security())
        finally:
            for _, writer in idle:
                writer.close()
            server.close()

    assert asyncio.run(main()) == reply

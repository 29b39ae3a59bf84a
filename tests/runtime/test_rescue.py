"""V15 on real processes: the primary is cut off from the view service just after its backup
was replaced, and the replaced backup takes over once the new view is fenced.

Before V15 (the open hole ``primary-cut-after-replacement``) the cluster waited here until the
primary's cut healed, and every operation timed out.
"""

from __future__ import annotations

import asyncio

import pbkv
from pbkv.core.view_service import ViewService
from pbkv.runtime.admin import Heal, Partition, send_admin_async
from pbkv.runtime.config import Timing

from .inprocess import local_cluster

# A dead interval of 0.5 s (10 pings of 50 ms).
TIMING = Timing(ping_interval_s=0.05, dead_pings=10)


def test_the_replaced_backup_takes_over_when_the_primary_is_cut_off_for_good() -> None:
    dead_s = TIMING.dead_pings * TIMING.ping_interval_s

    async def main() -> None:
        async with local_cluster(servers=3, admin=True, timing=TIMING) as cluster:
            primary, backup, spare = cluster.servers
            core = cluster.viewserver.node.core
            assert isinstance(core, ViewService)
            viewserver_admin = cluster.viewserver.node.admin_address
            async with pbkv.AsyncClient(cluster.address, timeout=30.0) as kv:
                await kv.put("k", "acknowledged in view 2")
                assert core.acknowledged and core.view.backups == (backup.name,)
                # The primary stops hearing the view service; the backup's pings stop counting,
                # and the service replaces it in a view the primary never learns (the order
                # holds whatever the host's load); only then are the primary's pings cut too.
                vs_address = cluster.address
                await send_admin_async(primary.node.admin_address, Partition((vs_address,), "in"))
                await send_admin_async(viewserver_admin, Partition((backup.name,), "in"))
                async with asyncio.timeout(10 * dead_s):
                    while core.view.backups != (spare.name,):
                        await asyncio.sleep(0.01)
                await send_admin_async(primary.node.admin_address, Partition((vs_address,), "out"))
                assert core.view.primary == primary.name and not core.status().acknowledged
                # The backup is heard again: it learns view 3 and leaves view 2, idle, keeping
                # its store; once the primary is judged dead, view 3 is fenced at the spare and
                # the backup is made primary of view 4.
                await send_admin_async(viewserver_admin, Heal())
                async with asyncio.timeout(10 * dead_s):
                    while core.view.primary != backup.name:
                        await asyncio.sleep(0.01)
                assert (core.view.number, core.view.backups) == (4, (spare.name,))
                assert await kv.get("k") == "acknowledged in view 2"
                await kv.put("k", "written after the rescue")
                assert await kv.get("k") == "written after the rescue"

    asyncio.run(main())

"""Audit of a view service replicated on etcd: no two different views with one number (V1),
and no server ever held a view etcd does not hold (V9, V13).

Theory of operation. etcd keeps every revision of ``PREFIX/view`` until it is compacted (pbkv
never compacts), so ``view_history`` walks the key backwards: read it at the newest revision,
then at one below the ``mod_revision`` found, and so on; each step is one write of the view by
some leader. ``audit`` then checks, over that history and the log lines in which servers
learned views (``view_learned ... view="view N (primary=P, backup=B)"``) and view services
changed them (``view=N view_change primary=P backup=B``):

* each view number names one configuration everywhere (etcd, every server, every leader);
* view numbers never go down from one write to the next;
* every view a server learned or a view service announced is in etcd's history.

Read the logs *before* the history while the cluster still runs: a view written in between is
then in the history, where the other order would report it as "never written".
"""

from __future__ import annotations

import asyncio
import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Final

from pbkv.runtime.etcd import Endpoints, decode_view, parse_endpoints

HISTORY_WRITES_MAX: Final = 100_000
SERVER_VIEW: Final = re.compile(r'view_learned .*view="view (\d+) \(primary=(\S+), backup=(\S+)\)"')
SERVICE_VIEW: Final = re.compile(r" view=(\d+) view_change primary=(\S+) backup=(\S+)")

Config = tuple[str, str]
"""(primary, backups joined by ","; "-" for none): what a view number must always name."""


@dataclass(slots=True)
class AuditReport:
    writes: int = 0
    numbers: int = 0
    log_views: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


async def view_history(endpoints: str, prefix: str) -> list[tuple[int, int, Config]]:
    """Every stored write of ``PREFIX/view``, oldest first: (revision, number, config)."""
    from aetcd import rpc

    etcd = Endpoints(parse_endpoints(endpoints), 5.0)
    key = f"{prefix}/view".encode()
    history: list[tuple[int, int, Config]] = []
    loop = asyncio.get_running_loop()

    async def read(client: Any, revision: int) -> Any:
        await client.connect()
        request = rpc.RangeRequest(key=key, revision=revision)
        return await client.kvstub.Range(request, timeout=5.0)

    revision = 0  # 0: the newest
    try:
        for _ in range(HISTORY_WRITES_MAX):
            response, _ = await etcd.call(
                functools.partial(read, revision=revision), loop.time() + 30.0
            )
            if not response.kvs:
                break
            kv = response.kvs[0]
            view = decode_view(kv.value).view
            config = (view.primary or "-", ",".join(view.backups) or "-")
            history.append((int(kv.mod_revision), view.number, config))
            if kv.version <= 1:
                break
            revision = int(kv.mod_revision) - 1
    finally:
        await etcd.close()
    history.reverse()
    return history


def log_views(lines: Iterable[str]) -> list[tuple[int, Config, str]]:
    """(number, config, line) of every view a server learned or a view service announced."""
    found = []
    for line in lines:
        match = SERVER_VIEW.search(line) or SERVICE_VIEW.search(line)
        if match is not None:
            number, primary, backup = match.groups()
            found.append((int(number), (primary, backup), line.strip()))
    return found


def audit(history: list[tuple[int, int, Config]], lines: Iterable[str]) -> AuditReport:
    """Check ``history`` (``view_history``) and log ``lines``; see the module docstring."""
    report = AuditReport(writes=len(history))
    named: dict[int, Config] = {}
    previous = 0
    for revision, number, config in history:
        if number < previous:
            report.problems.append(f"revision {revision}: view {number} after view {previous}")
        previous = max(previous, number)
        known = named.setdefault(number, config)
        if known != config:
            report.problems.append(
                f"revision {revision}: view {number} is {config}, earlier {known} (V1)"
            )
    report.numbers = len(named)
    for number, config, line in log_views(lines):
        report.log_views += 1
        stored = named.get(number)
        if stored is None:
            report.problems.append(f"view {number} was never written to etcd: {line}")
        elif stored != config:
            report.problems.append(f"view {number} is {stored} in etcd but {config}: {line}")
    return report

"""Watching the view service as the demo runs: every view, when it appeared, when it was
acknowledged.

A background thread asks the view service for its status every ``poll_s`` (a
``StatusRequest`` on one kept-open connection), records each new view with the time it was
first seen and the time its primary acknowledged it, and calls ``on_view`` so the narration
shows view changes as they
happen. Scenario code waits on it with ``wait_until``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from pbkv.core.messages import AnyMessage, NotLeader, StatusRequest, View, ViewServiceStatus
from pbkv.runtime.group import member_after, split_members
from pbkv.runtime.rpc import Channel
from pbkv.wire import MESSAGES, ProtocolError

POLL_S_DEFAULT: Final = 0.01
STATUS_TIMEOUT_S: Final = 0.5


@dataclass(slots=True)
class ViewRecord:
    """One view as the demo saw it (times are ``time.monotonic()`` and ``time.time()``)."""

    view: View
    seen_at: float
    seen_wall: float
    acknowledged_at: float | None = None


class WaitTimeout(Exception):
    """The cluster did not reach the awaited state in time."""


class ViewWatcher:
    """Polls the view service in a thread; see the module docstring."""

    def __init__(
        self,
        viewserver: str,
        on_view: Callable[[ViewRecord], None] | None = None,
        on_acknowledged: Callable[[ViewRecord], None] | None = None,
        poll_s: float = POLL_S_DEFAULT,
    ) -> None:
        self.viewserver = viewserver
        self.on_view = on_view
        self.on_acknowledged = on_acknowledged
        self.poll_s = poll_s
        self.views: list[ViewRecord] = []
        self.status: ViewServiceStatus | None = None
        self._changed = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pbkv-demo-watch", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(2.0)

    def _run(self) -> None:
        channel: Channel[AnyMessage] | None = None
        members = split_members(self.viewserver)  # several: replicated on etcd, follow its leader
        member = members[0]
        while not self._stop.is_set():
            try:
                if channel is None:
                    channel = Channel(member, MESSAGES, STATUS_TIMEOUT_S)
                reply = channel.call(StatusRequest())
            except (OSError, ProtocolError):
                if channel is not None:
                    channel.close()
                channel = None
                reply = None
                member = member_after(members, member, "")
            if isinstance(reply, NotLeader):
                assert channel is not None
                channel.close()
                channel = None
                member = member_after(members, member, reply.leader)
            if isinstance(reply, ViewServiceStatus):
                self._observe(reply)
            self._stop.wait(self.poll_s)
        if channel is not None:
            channel.close()

    def _observe(self, status: ViewServiceStatus) -> None:
        now, wall = time.monotonic(), time.time()
        new: ViewRecord | None = None
        acknowledged: ViewRecord | None = None
        with self._changed:
            self.status = status
            latest = self.views[-1] if self.views else None
            if status.view.number and (latest is None or status.view.number > latest.view.number):
                new = latest = ViewRecord(status.view, now, wall)
                self.views.append(new)
            if (
                latest is not None
                and status.acknowledged
                and latest.acknowledged_at is None
                and latest.view.number == status.view.number
            ):
                latest.acknowledged_at = now
                acknowledged = latest
            self._changed.notify_all()
        if new is not None and self.on_view is not None:
            self.on_view(new)
        if acknowledged is not None and self.on_acknowledged is not None:
            self.on_acknowledged(acknowledged)

    def current(self) -> ViewServiceStatus | None:
        with self._changed:
            return self.status

    def record_of(self, number: int) -> ViewRecord | None:
        with self._changed:
            for record in self.views:
                if record.view.number == number:
                    return record
        return None

    def wait_until(
        self, ready: Callable[[ViewServiceStatus], bool], timeout_s: float, what: str
    ) -> ViewServiceStatus:
        """The first status for which ``ready`` holds.

        Raises:
            WaitTimeout: not within ``timeout_s`` (the message says ``what`` was awaited).
        """
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while True:
                status = self.status
                if status is not None and ready(status):
                    return status
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    shown = status.view.describe() if status else "no answer from the view service"
                    raise WaitTimeout(
                        f"timed out after {timeout_s:g} s waiting for {what} ({shown})"
                    )
                self._changed.wait(remaining)

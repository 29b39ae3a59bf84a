"""Read leases on real processes (protocol.md §14, R2-R4): a primary that was frozen past the
dead interval never answers a read the new view overwrote, even when the read was already on
its (authenticated, open) connection when it resumed.

The read waits in the kernel while the primary is stopped; on SIGCONT the process handles it
at once, before any ping reply can tell it about the new view. Only the lease clock, read
from ``CLOCK_BOOTTIME`` before the batch is handled (R4), can tell it that its lease ran out.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from pbkv.cluster.rpc import get_view
from pbkv.cluster.state import load_state
from pbkv.core.messages import Get, Reply, Request
from pbkv.runtime.rpc import Channel
from pbkv.wire import MESSAGES
from tests.cluster.helpers import ok, pbkv, up, wait_for

pytestmark = pytest.mark.integration


def test_a_resumed_primary_never_answers_a_read_the_new_view_overwrote(
    cluster_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    up(cluster_dir, "--read-leases")
    monkeypatch.setenv("PBKV_AUTH_TOKEN", (cluster_dir / "auth-token").read_text().strip())
    state = load_state(cluster_dir)
    viewserver = state.viewserver
    secret = ("--auth-token-file", str(cluster_dir / "auth-token"))
    ok(pbkv(*secret, "put", "k", "old", "--viewserver", viewserver))
    view = get_view(viewserver)
    assert view.primary is not None
    primary = state.find(view.primary)
    assert primary is not None
    with Channel(view.primary, MESSAGES, timeout_s=2.0) as channel:
        first = channel.call(Request("lease-test", 0, 0, Get("k")))
        assert isinstance(first, Reply) and first.value == "old"
        os.kill(primary.pid, signal.SIGSTOP)
        try:
            wait_for(
                lambda: get_view(viewserver).primary not in (None, view.primary),
                timeout=10.0,
                what="a new primary",
            )
            ok(pbkv(*secret, "put", "k", "new", "--viewserver", viewserver))
            channel.send(Request("lease-test", 1, 1, Get("k")))  # waits in the kernel
        finally:
            os.kill(primary.pid, signal.SIGCONT)
        try:
            answer = channel.receive()
        except (TimeoutError, ConnectionError):
            return  # no answer at all is no stale answer
    assert isinstance(answer, Reply)
    assert not (answer.status == "ok" and answer.value == "old"), answer

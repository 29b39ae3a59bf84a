"""Scripted scenarios at the edges of the model (issue 8): sizes, frames, refusals."""

from __future__ import annotations

from pbkv.core.kv_store import Limits
from pbkv.core.messages import Append, Put, Request
from pbkv.core.replica import ReplicaConfig
from pbkv.sim import make_world
from tests.sim.harness import assert_linearizable, call, get, holding, put, wait_view

VALUE_BYTES_MAX = 1024


def test_an_append_refused_as_too_large_is_not_applied_by_a_late_copy() -> None:
    """An append is refused (the key is nearly full); a copy of the same request, delayed in
    the network, arrives after a put made room. The client was told ``too_large``, a final
    answer: the late copy must not apply it."""
    config = ReplicaConfig(limits=Limits(value_bytes_max=VALUE_BYTES_MAX))
    world = make_world(servers=2, clients=2, replica=config)
    wait_view(world, "s1", "s2")
    put(world, "c1", "k", "x" * (VALUE_BYTES_MAX - 8))
    copies = holding(
        world, lambda s, t, m: s == "c2" and isinstance(m, Request) and type(m.op) is Append
    )
    refused = world.submit("c2", Append("k", "<late-append>"))
    world.run_until(lambda _: bool(copies), 100)
    world.network.hold_filter = None
    late = copies.pop()
    world.network.push(world.now + 1, late)  # the first copy: refused
    world.run_until(lambda _: refused.status is not None, 200)
    assert refused.status == "too_large"
    put(world, "c1", "k", "short")
    world.network.push(world.now + 1, late)  # the late copy of the same request
    world.run(20)
    assert call(world, "c1", Put("other", "v")).status == "ok"
    assert "<late-append>" not in (get(world, "c1", "k") or "")


# --- the frame limit --------------------------------------------------------------------------


def test_a_message_over_the_frame_limit_is_dropped_counted_and_traced() -> None:
    """As the runtime's host does with a frame it cannot send: nothing leaves, a counter and
    a trace line say so, and the rest of the cluster carries on."""
    world = make_world(servers=2, clients=1, frame_bytes_max=4096)
    wait_view(world, "s1", "s2")
    big = world.submit("c1", Put("k", "v" * 5000))
    world.run(100)
    assert big.status is None  # the request never reached the primary
    assert world.network.stats.oversized >= 1
    assert world.stats.oversized == world.network.stats.oversized
    assert any("oversized c1 -> s1 Request" in line for line in world.trace.recent())
    world.crash("c1")
    world.restart("c1")
    put(world, "c1", "k", "small")
    assert get(world, "c1", "k") == "small"


# --- client crashes ---------------------------------------------------------------------------


def test_a_crashed_client_leaves_its_open_operations_indeterminate() -> None:
    world = make_world(servers=2, clients=1)
    wait_view(world, "s1", "s2")
    put(world, "c1", "k", "1")
    open_put = world.submit("c1", Put("k", "2"))
    world.crash("c1")
    assert open_put.status == "crashed" and open_put.complete is None
    assert not world.history.outstanding()
    world.restart("c1")
    value = get(world, "c1", "k")
    assert value in ("1", "2")  # the crashed put may or may not have taken effect
    assert_linearizable(world)

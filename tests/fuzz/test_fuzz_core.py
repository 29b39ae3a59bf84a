"""Fuzzing every core handler with hostile-but-valid messages, in every role.

A cluster of the real state machines (``tests/core/harness.py``: a view service, a primary
``a``, its synced backup ``b``, an idle ``c`` and a client) is brought to a stable view, then a
drawn sequence of steps runs against it through the public entry points only
(``on_message(source, message, out)``, ``on_tick(out)``, ``submit``): any message of the
protocol from any source (a stranger, a client connection, or a forged peer name) to any node,
ticks, honest client operations, and delivery of the honest traffic in flight. After every step
each node's ``check_invariants()`` runs; nothing may raise. Forgeries may make the cluster
misbehave (issue #8, finding 5, is the lead's); they must never crash a node.
"""

from __future__ import annotations

import pytest
from hypothesis import Phase, given, settings
from hypothesis import strategies as st

from pbkv.core.effects import Outbox
from pbkv.core.messages import AnyMessage, ForwardReply, Get, Operation, Put
from pbkv.core.replica import Replica
from tests.conftest import patches_compiled_code
from tests.core.harness import VIEW_SERVICE, Cluster

from .runner import long, run, short
from .strategies import SERVERS, messages, sources, structs

NODES = (VIEW_SERVICE, *SERVERS)
CLIENT = "client"

Step = tuple[str, object, object, object]
operations = st.one_of(
    st.builds(Put, st.sampled_from(("k", "k2")), st.sampled_from(("v", "w"))),
    st.builds(Get, st.sampled_from(("k", "k2"))),
)
steps = st.lists(
    st.one_of(
        st.tuples(st.just("message"), st.sampled_from(NODES), sources(), messages()),
        st.tuples(st.just("tick"), st.sampled_from(NODES), st.none(), st.none()),
        st.tuples(st.just("submit"), operations, st.none(), st.none()),
        st.tuples(st.just("settle"), st.none(), st.none(), st.none()),
    ),
    max_size=25,
)


def stable_cluster() -> Cluster:
    cluster = Cluster(seed=1)
    for name in SERVERS:
        cluster.start(name)
    cluster.client(CLIENT)
    cluster.wait_for_view(SERVERS[0], SERVERS[1])
    return cluster


def check_invariants(cluster: Cluster) -> None:
    cluster.view_service.check_invariants()
    for replica in cluster.replicas.values():
        replica.check_invariants()
    for session in cluster.clients.values():
        session.check_invariants()


def apply(cluster: Cluster, step: Step) -> None:
    kind, first, second, third = step
    wire = cluster.wire
    if kind == "message":
        assert isinstance(first, str) and isinstance(second, str)
        node = wire.nodes[first]
        out = Outbox()
        node.on_message(second, third, out)  # type: ignore[arg-type]
        wire.collect(first, out)
    elif kind == "tick":
        assert isinstance(first, str)
        wire.tick([first])
    elif kind == "submit":
        operation: Operation = first  # type: ignore[assignment]
        wire.submit(CLIENT, operation)
    else:
        wire.settle(steps_max=2000, keep=None)


def check_hostile_steps(drawn: list[Step]) -> None:
    cluster = stable_cluster()
    for step in drawn:
        try:
            apply(cluster, step)
        except AssertionError as error:
            if "did not settle" in str(error):
                continue  # a forged message can make two nodes talk forever: not a crash
            raise
        check_invariants(cluster)


def check_one_message_to_each_role(source: str, message: AnyMessage) -> None:
    cluster = stable_cluster()
    for node in NODES:
        apply(cluster, ("message", node, source, message))
        check_invariants(cluster)
    cluster.run(30)  # the consequences play out with honest traffic and timers
    check_invariants(cluster)


_steps = (steps,)
_one = (sources(), messages())


def test_fuzz_core_handlers_survive_hostile_sequences() -> None:
    run(short(given(*_steps)(check_hostile_steps)), long(given(*_steps)(check_hostile_steps)))


def test_fuzz_every_role_survives_any_one_message() -> None:
    run(
        short(given(*_one)(check_one_message_to_each_role)),
        long(given(*_one)(check_one_message_to_each_role)),
    )


@patches_compiled_code
def test_the_core_fuzzer_catches_a_broken_replica(monkeypatch: pytest.MonkeyPatch) -> None:
    """The harness is trusted only because it catches this: a replica that believes any
    ``ForwardReply`` (its acknowledged position passes its log's end)."""
    original = Replica.handle

    def broken(self: Replica, source: str, message: AnyMessage, out: Outbox) -> None:
        if isinstance(message, ForwardReply) and message.next_index > self.next_index:
            self.acked_index = message.next_index
        original(self, source, message, out)

    monkeypatch.setattr(Replica, "handle", broken)
    replies = (sources(), structs(ForwardReply))  # the generator at work, on one message type
    caught = settings(max_examples=200, deadline=None, database=None, phases=[Phase.generate])(
        given(*replies)(check_one_message_to_each_role)
    )
    with pytest.raises(AssertionError):
        caught()

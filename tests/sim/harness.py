"""Helpers for scripted simulator scenarios: wait for a view, call an operation, check history."""

from __future__ import annotations

from collections.abc import Callable

from pbkv.check import check_history, format_result
from pbkv.core.messages import AnyMessage, Append, Get, Operation, Put, View
from pbkv.core.replica import Phase
from pbkv.sim import Envelope, Invocation, World
from pbkv.sim.invariants import duplicated_tokens
from pbkv.sim.network import decode

TICKS_MAX = 1500


def until(world: World, condition: Callable[[World], bool], ticks_max: int = TICKS_MAX) -> None:
    assert world.run_until(condition, ticks_max), f"condition not reached by tick {world.now}"


def view_is(world: World, primary: str, backup: str | None = None) -> bool:
    view = world.current_view()
    return view.primary == primary and view.backup == backup


def serving(world: World, name: str) -> bool:
    replica = world.replica(name)
    return replica is not None and replica.phase is Phase.SERVING


def wait_view(
    world: World, primary: str, backup: str | None = None, ticks_max: int = TICKS_MAX
) -> View:
    """Wait until the view service names ``(primary, backup)`` and the primary serves in it."""

    def ready(w: World) -> bool:
        replica = w.replica(primary)
        return (
            view_is(w, primary, backup)
            and replica is not None
            and replica.view == w.current_view()
            and replica.phase is Phase.SERVING
        )

    until(world, ready, ticks_max)
    return world.current_view()


def call(world: World, client: str, op: Operation, ticks_max: int = TICKS_MAX) -> Invocation:
    """Submit ``op`` and run until it completes."""
    record = world.submit(client, op)
    until(world, lambda _: record.status is not None, ticks_max)
    return record


def put(world: World, client: str, key: str, value: str) -> None:
    assert call(world, client, Put(key, value)).status == "ok"


def append(world: World, client: str, key: str, value: str) -> None:
    assert call(world, client, Append(key, value)).status == "ok"


def get(world: World, client: str, key: str, ticks_max: int = TICKS_MAX) -> str | None:
    record = call(world, client, Get(key), ticks_max)
    assert record.status == "ok"
    return record.result


def assert_linearizable(world: World) -> None:
    result = check_history(world.history.operations(), budget_s=10.0)
    assert result.verdict == "ok", format_result(result)


def assert_not_linearizable(world: World) -> None:
    """The checker catches the history (a broken variant's lost write or stale read)."""
    result = check_history(world.history.operations(), budget_s=10.0)
    assert result.verdict == "violation", format_result(result)


def assert_no_duplicate_appends(world: World) -> None:
    for name, replica in world.replicas().items():
        if replica is None:
            continue
        for key, value in replica.store.data.items():
            assert not duplicated_tokens(value), f"{name} {key}: {value}"


def holding(world: World, predicate: Callable[[str, str, AnyMessage], bool]) -> list[Envelope]:
    """Divert matching messages into ``world.network.held`` from now on; returns that list."""
    world.network.hold_filter = predicate
    return world.network.held


def held_messages(world: World) -> list[tuple[Envelope, AnyMessage]]:
    return [(envelope, decode(envelope)) for envelope in world.network.held]

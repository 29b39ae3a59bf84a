"""The randomized client workload: a few clients, a few keys, unique values.

Theory of operation. Each client keeps at most ``pipeline`` operations open (1: sequential): when
it has room it thinks for a drawn number of ticks and submits the next operation, until it has
issued ``ops_per_client``; an operation ends with its result or when the session gives up at the
timeout. Pipelined operations of one client are concurrent, as they are for the real client.

Operations are drawn from a weighted mix of get/put/append/delete over keys ``k0 ..``; every put
value (``c1.7``) and every appended value (``<c1.7>``) is unique in the run, so a lost write, a
write applied twice or a read of a value nobody wrote cannot hide. The workload runs in the
world's ``after_tick`` hook with its own seeded ``random.Random``; ``stop`` ends new submissions
(the liveness phase only waits for what is already open). Value sizes follow the run's
``SizeParams`` (``sizes.py``): short, padded up to the value limit, or now and then over it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from pbkv.core.messages import Append, Delete, Get, Operation, Put
from pbkv.sim.cluster import World
from pbkv.sim.invariants import append_token
from pbkv.sim.sizes import SizeParams, padded, value_size


@dataclass(frozen=True, slots=True)
class WorkloadParams:
    """What the clients do; drawn from the seed unless overridden."""

    clients: int = 2
    keys: int = 2
    ops_per_client: int = 20
    get_weight: int = 3
    put_weight: int = 2
    append_weight: int = 4
    delete_weight: int = 1
    think_ticks_max: int = 20
    timeout_ticks: int = 1_000_000
    pipeline: int = 1
    in_flight_max: int = 1024

    def describe(self) -> str:
        mix = (
            f"get:put:append:delete={self.get_weight}:{self.put_weight}:"
            f"{self.append_weight}:{self.delete_weight}"
        )
        timeout = "none" if self.timeout_ticks >= 1_000_000 else str(self.timeout_ticks)
        return (
            f"clients={self.clients} keys={self.keys} ops/client={self.ops_per_client} {mix} "
            f"think<={self.think_ticks_max} pipeline={self.pipeline} "
            f"in_flight_max={self.in_flight_max} timeout={timeout}"
        )


def key_names(count: int) -> list[str]:
    return [f"k{index}" for index in range(count)]


class Workload:
    """Drives the clients of a world; install with ``world.after_tick.append(workload.step)``."""

    def __init__(
        self,
        params: WorkloadParams,
        rng: random.Random,
        clients: list[str],
        sizes: SizeParams | None = None,
    ) -> None:
        self.params = params
        self.sizes = sizes or SizeParams()
        self.rng = rng
        self.clients = clients
        self.keys = key_names(params.keys)
        self.remaining = dict.fromkeys(clients, params.ops_per_client)
        self.next_at: dict[str, int | None] = dict.fromkeys(clients)
        self.counter = dict.fromkeys(clients, 0)
        self.active = True
        self.pipeline = max(1, params.pipeline)
        self._kinds = ("get", "put", "append", "delete")
        self._weights = (
            params.get_weight,
            params.put_weight,
            params.append_weight,
            params.delete_weight,
        )

    def stop(self) -> None:
        self.active = False

    def done(self) -> bool:
        return all(count == 0 for count in self.remaining.values())

    def step(self, world: World) -> None:
        if not self.active:
            return
        now = world.now
        for client in self.clients:
            if self.remaining[client] == 0 or not world.is_up(client):
                continue
            if world.session(client).in_flight >= self.pipeline:
                continue
            next_at = self.next_at[client]
            if next_at is None:
                next_at = self.next_at[client] = now + self.rng.randint(
                    0, self.params.think_ticks_max
                )
            if now < next_at:
                continue
            self.next_at[client] = None
            self.remaining[client] -= 1
            world.submit(client, self.draw(client))

    def draw(self, client: str) -> Operation:
        rng = self.rng
        kind = rng.choices(self._kinds, self._weights)[0]
        key = rng.choice(self.keys)
        number = self.counter[client] = self.counter[client] + 1
        if kind == "get":
            return Get(key)
        if kind == "put":
            size = value_size(rng, self.sizes, Put)
            return Put(key, padded(f"{client}.{number}", size, pad=self.sizes.pad))
        if kind == "append":
            token = append_token(client, number)
            size = value_size(rng, self.sizes, Append)
            return Append(key, token if not size else padded(token[:-1], size, ">", self.sizes.pad))
        return Delete(key)

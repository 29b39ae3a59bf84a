"""CPU per operation of the request path, in one process, without sockets or an event loop.

Why: on the shared two-core VM the end-to-end benchmark's throughput moves by a third from run
to run (docs/performance.md, "The Python floor"), so a change worth 5 % cannot be seen there.
This drives the real cores (client sessions, a primary and a backup, with the view service
forming their view) and passes every message through the wire codec (frame, then decode) as
the hosts do, but delivers by hand: each round every client submits one operation, the primary
handles them as one batch (group commit), the backup the forward, the primary the confirmation,
the clients their replies. What it leaves out (sockets, uvloop, the host's bounds) is the same
before and after a change to the cores, the codec or the effects.

Two measures per side (clients, primary, backup), per operation:

- ``µs/op``: CPU time (``time.process_time_ns``, so time the VM lost to other guests does not
  count), median of ``--repeat`` runs. Still noisy here: the two vCPUs differ in speed by about
  8 % and drift; compare trees by running both at once, each pinned to a core, swapping cores.
- ``calls/op`` (``--calls``): Python function calls per operation, counted by ``cProfile``.
  Deterministic, so it shows a change of one call per operation that timing cannot.

``--durable`` prices a data directory: ``core`` runs durable replicas (each hands its host a
record per stream position, D1) without executing their ``Persist`` effects; ``disk`` also
executes them on a real write-ahead log in a temporary directory with ``--fsync no`` (the
encoding, checksums and one ``write`` per batch, not the fsync, which ``everysec`` does once a
second in a worker thread).

Usage: ``python scripts/bench_core_path.py [--clients 64] [--rounds 1500] [--repeat 5]
[--write-ratio 1.0] [--durable none|core|disk] [--calls] [--json]``. To compare two trees,
run it with each tree's ``src`` first on ``PYTHONPATH``.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import json
import pstats
import random
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Iterable

from pbkv.core.client_session import ClientSession
from pbkv.core.effects import Deliver, Outbox, Persist, Send
from pbkv.core.kv_store import Limits
from pbkv.core.messages import AnyMessage, Get, Put
from pbkv.core.replica import Phase, Replica
from pbkv.core.replica_base import ReplicaConfig
from pbkv.core.view_service import ViewService, ViewServiceConfig
from pbkv.runtime.disk import ReplicaDisk, StorageOptions
from pbkv.runtime.logging import EventLogger
from pbkv.wire import MESSAGES, Codec, FrameReader

VIEW_SERVICE, PRIMARY, BACKUP = "vs", "p", "b"
DURABILITY = ("none", "core", "disk")
SETUP_TICKS_MAX = 2_000
FREEZE_EVERY_ROUNDS = 100

Batch = list[tuple[str, AnyMessage]]


class Rig:
    """A view service, a primary, a backup and ``clients`` sessions, wired by hand."""

    def __init__(self, clients: int, seed: int, durable: str = "none") -> None:
        self.codec: Codec[AnyMessage] = MESSAGES
        self.view_service = ViewService(VIEW_SERVICE, ViewServiceConfig())
        config = ReplicaConfig(durable=durable != "none")
        self.primary = Replica(PRIMARY, VIEW_SERVICE, random.Random(seed), config)
        self.backup = Replica(BACKUP, VIEW_SERVICE, random.Random(seed + 1), config)
        self.disks: dict[str, ReplicaDisk] = {}
        if durable == "disk":
            for name in (PRIMARY, BACKUP):
                options = StorageOptions(tempfile.mkdtemp(prefix="pbkv-core-path-"), fsync="no")
                logger = EventLogger(name, "server", int, enabled=False)
                self.disks[name] = ReplicaDisk.open(options, Limits(), logger)[0]
        self.clients = {
            f"c{i}": ClientSession(VIEW_SERVICE, random.Random(seed * 1000 + i))
            for i in range(clients)
        }
        self.inboxes: dict[str, list[tuple[str, bytes]]] = {}
        self.done = 0

    def post(self, source: str, effects: Iterable[object]) -> None:
        """Frame every ``Send`` into its target's inbox (the encoding half of a host's work);
        with ``--durable disk``, append each ``Persist`` to the replica's log first."""
        frame = self.codec.frame
        inboxes = self.inboxes
        disk = self.disks.get(source)
        for effect in effects:
            if type(effect) is Send:
                inboxes.setdefault(effect.target, []).append((source, frame(effect.message)))
            elif type(effect) is Deliver:
                self.done += 1
            elif type(effect) is Persist and disk is not None:
                disk.persist(effect)

    def take(self, name: str) -> Batch:
        """Decode what waits for ``name`` (the decoding half)."""
        reader: FrameReader[AnyMessage] = FrameReader(self.codec)
        batch: Batch = []
        for source, frame in self.inboxes.pop(name, []):
            batch.extend((source, message) for message in reader.feed(frame))
        return batch

    def run_replica(self, replica: Replica) -> None:
        batch = self.take(replica.name)
        if batch:
            out = Outbox()
            replica.on_messages(batch, out)
            self.post(replica.name, out.take())

    def run_clients(self) -> None:
        for name, session in self.clients.items():
            batch = self.take(name)
            if batch:
                out = Outbox()
                for source, message in batch:
                    session.on_message(source, message, out)
                self.post(name, out.take())

    def run_view_service(self) -> None:
        out = Outbox()
        for source, message in self.take(VIEW_SERVICE):
            self.view_service.on_message(source, message, out)
        self.post(VIEW_SERVICE, out.take())

    def tick_all(self) -> None:
        nodes: list[tuple[str, ViewService | Replica | ClientSession]] = [
            (VIEW_SERVICE, self.view_service),
            (PRIMARY, self.primary),
            (BACKUP, self.backup),
            *self.clients.items(),
        ]
        for name, node in nodes:
            out = Outbox()
            node.on_tick(out)
            self.post(name, out.take())

    def form_view(self) -> None:
        """Tick and deliver until the primary serves with a synced backup and every client
        knows the view."""
        for _ in range(SETUP_TICKS_MAX):
            self.tick_all()
            for _ in range(4):
                self.run_view_service()
                self.run_replica(self.primary)
                self.run_replica(self.backup)
                self.run_clients()
            if (
                self.primary.phase is Phase.SERVING
                and self.view_service.view.backups == (BACKUP,)
                and all(s.view is not None and s.view.primary for s in self.clients.values())
            ):
                self.inboxes.clear()
                return
        raise SystemExit("setup: the view never formed")


class Meter:
    """CPU time, or with ``calls`` Python calls, spent by each side."""

    SIDES = ("client", "primary", "backup")

    def __init__(self, calls: bool) -> None:
        self.calls = calls
        self.ns = dict.fromkeys(self.SIDES, 0)
        self.profiles = {side: cProfile.Profile() for side in self.SIDES}

    def run(self, side: str, work: Callable[[], object]) -> None:
        if self.calls:
            profile = self.profiles[side]
            profile.enable()
            work()
            profile.disable()
            return
        start = time.process_time_ns()  # CPU time: a vCPU the host took away does not count
        work()
        self.ns[side] += time.process_time_ns() - start

    def per_operation(self, operations: int) -> dict[str, float]:
        if not self.calls:
            return {f"{side}_us": self.ns[side] / operations / 1000 for side in self.SIDES}
        counts = {}
        for side, profile in self.profiles.items():
            table = pstats.Stats(profile).stats  # type: ignore[attr-defined]
            counts[f"{side}_calls"] = sum(row[1] for row in table.values()) / operations
        return counts


def measure(
    clients: int, rounds: int, write_ratio: float, seed: int, calls: bool, durable: str = "none"
) -> dict[str, float]:
    rig = Rig(clients, seed, durable)
    rig.form_view()
    rng = random.Random(seed)
    value = "v" * 64
    meter = Meter(calls)

    def submit_all() -> None:
        for name, session in rig.clients.items():
            out = Outbox()
            key = f"key{rng.randrange(10_000)}"
            op = Put(key, value) if rng.random() < write_ratio else Get(key)
            session.submit(op, out)
            rig.post(name, out.take())

    for round_number in range(rounds):
        if round_number % FREEZE_EVERY_ROUNDS == 0:
            gc.freeze()  # as the servers' HeapFreezer does every second (runtime/loop.py)
        meter.run("client", submit_all)
        meter.run("primary", lambda: rig.run_replica(rig.primary))  # requests: one forward
        meter.run("backup", lambda: rig.run_replica(rig.backup))  # the forward: one reply
        meter.run("primary", lambda: rig.run_replica(rig.primary))  # confirmed: the replies
        meter.run("client", rig.run_clients)
    operations = rounds * clients
    for disk in rig.disks.values():
        shutil.rmtree(disk.log.directory, ignore_errors=True)
        disk.close()
    if rig.done != operations:
        raise SystemExit(f"only {rig.done} of {operations} operations completed")
    return meter.per_operation(operations)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=1500)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--write-ratio", type=float, default=1.0)
    parser.add_argument("--durable", choices=DURABILITY, default="none")
    parser.add_argument("--calls", action="store_true", help="count calls instead of timing")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    runs = [
        measure(args.clients, args.rounds, args.write_ratio, seed, args.calls, args.durable)
        for seed in range(1, args.repeat + 1)
    ]
    result = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
    unit = "calls" if args.calls else "us"
    result[f"total_{unit}"] = sum(result.values())
    if args.json:
        print(json.dumps(result))
        return
    shown = "calls/op" if args.calls else "µs/op"
    print(
        f"{args.clients} clients, write ratio {args.write_ratio}, durable {args.durable}, "
        f"median of {args.repeat}: "
        + ", ".join(f"{key.rsplit('_', 1)[0]} {value:.2f} {shown}" for key, value in result.items())
    )


if __name__ == "__main__":
    main()

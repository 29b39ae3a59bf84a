"""The fault methods of the simulated world: crash, restart, pause, partition, inject.

Theory of operation. *Crash* drops the machine, its timers, the messages queued for it while
paused and the sends its slow disk held; a durable replica's disk loses what was not synced
(``disk.py``). *Restart* starts a new incarnation under the same name (``World._start``): a
durable replica recovers from its disk or refuses to start on a damaged log. A *whole-cluster
crash* crashes the view service and every server at once (a power cut). *Pause* freezes a node
(its messages wait in its inbox), *partition* cuts directed links, *inject* sends as an
adversary. Each fault is traced. ``World`` inherits these methods; they are kept here so the
world's module stays about its one job, time and effects.
"""

from __future__ import annotations

from dataclasses import replace

from pbkv.core.effects import PersistView
from pbkv.core.messages import AnyMessage
from pbkv.sim.disk import DiskHost
from pbkv.sim.history import History, Invocation
from pbkv.sim.network import Envelope, Network, NetworkParams, Partition
from pbkv.sim.nodes import VIEW_SERVICE_NAME, ClusterConfig, Node, WorldStats
from pbkv.sim.sessions import EvictionWatch
from pbkv.sim.trace import Trace


class WorldFaults:
    """Mixin of ``World``: the fault methods (see the module docstring)."""

    nodes: dict[str, Node]
    config: ClusterConfig
    network: Network
    trace: Trace
    history: History
    stats: WorldStats
    now: int
    disk: dict[str, PersistView]
    disks: DiskHost | None
    appends: dict[str, Invocation]
    evictions: EvictionWatch

    def _start(self, node: Node) -> bool:
        raise NotImplementedError

    def servers(self) -> list[str]:
        raise NotImplementedError

    def crash(self, name: str) -> bool:
        """Lose the node's memory, timers and queued messages; False if it was already down."""
        node = self.nodes[name]
        if node.machine is None:
            return False
        node.machine = None
        node.paused = False
        self.stats.lost_in_pause += len(node.inbox)
        node.inbox.clear()
        node.held.clear()
        node.busy_until = 0
        self.stats.crashes += 1
        loss = ""
        if self.disks is not None and node.kind == "replica":
            loss = self.disks.crash(name)
        self.trace.fault(self.now, f"crash {name}{loss}")
        if node.kind == "client":
            for record in self.history.abandon(name):
                self.trace.client(self.now, "crashed", name, record.seq, "indeterminate")
        return True

    def restart(self, name: str, lose_state: bool = False) -> bool:
        """Start a new incarnation under ``name``; False if it is running. ``lose_state``: the
        view service's disk is gone too (it starts with no view, N2)."""
        node = self.nodes[name]
        if node.machine is not None:
            return False
        if lose_state:
            self.disk.pop(name, None)
            self.stats.disks_lost += 1
        if not self._start(node):
            return False
        self.stats.restarts += 1
        self.trace.fault(self.now, f"restart {name}" + (" without its state" if lose_state else ""))
        return True

    def crash_cluster(self) -> list[str]:
        """Crash the view service and every server at once (a power cut); the crashed names."""
        self.stats.cluster_crashes += 1
        self.trace.fault(self.now, "whole-cluster crash")
        return [name for name in [VIEW_SERVICE_NAME, *self.servers()] if self.crash(name)]

    def force_new_cluster(self) -> None:
        """The operator's answer to N2: restart the view service with ``force_new_cluster``
        (V11), from whatever its disk holds."""
        config = replace(self.config.view_service, force_new_cluster=True)
        self.config = replace(self.config, view_service=config)
        self.crash(VIEW_SERVICE_NAME)
        self.restart(VIEW_SERVICE_NAME)
        self.trace.fault(self.now, "operator restarted vs with force_new_cluster")

    def release_captured(self, envelopes: list[Envelope]) -> None:
        """Let messages captured from a sender go (delivered next tick, in order)."""
        for envelope in envelopes:
            self.network.push(self.now + 1, envelope)
        if envelopes:
            self.trace.fault(self.now, f"release {len(envelopes)} captured messages")

    def pause(self, name: str) -> bool:
        node = self.nodes[name]
        if node.machine is None or node.paused:
            return False
        node.paused = True
        self.stats.pauses += 1
        self.trace.fault(self.now, f"pause {name}")
        return True

    def resume(self, name: str) -> bool:
        """Unfreeze a paused node; the messages that waited arrive next tick, in order."""
        node = self.nodes[name]
        if node.machine is None or not node.paused:
            return False
        node.paused = False
        for envelope in node.inbox:
            self.network.push(self.now + 1, envelope)
        node.inbox.clear()
        self.trace.fault(self.now, f"resume {name}")
        return True

    def partition(self, partition: Partition) -> None:
        """Cut the partition's links (messages already in flight on them are lost too)."""
        self.network.add_partition(partition)
        self.trace.fault(self.now, f"partition {partition.name}: {partition.describe()}")

    def heal(self, name: str) -> bool:
        healed = self.network.remove_partition(name)
        if healed:
            self.trace.fault(self.now, f"heal {name}")
        return healed

    def set_network(self, params: NetworkParams) -> None:
        self.network.params = params

    def inject(self, source: str, target: str, message: AnyMessage) -> None:
        """Send ``message`` as node ``source`` (an adversary) outside any state machine."""
        self.network.send(self.now, source, target, message)

    def _n3_permits(self, token: str) -> bool:
        """N3: a second copy of an appended value whose client was evicted since it began."""
        record = self.appends.get(token)
        return record is not None and self.evictions.evicted_since(record.client, record.invoke)

    def _oversized(self, source: str, target: str, message: AnyMessage, size: int) -> None:
        self.stats.oversized += 1
        what = f"oversized {source} -> {target} {type(message).__name__} of {size} bytes"
        self.trace.fault(self.now, what)

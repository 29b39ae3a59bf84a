"""The dashboard's buttons: faults on a local cluster, through the cluster layer only.

Each action is exactly what the matching ``pbkv cluster`` command does (``kill``, ``pause``,
``resume``, ``restart``, ``isolate`` as the page's "partition", ``heal``); the target is a
process name, an address, ``primary`` or ``backup``, resolved when the button is pressed. The
HTTP layer accepts these only from loopback clients, as JSON (so a page from another site
cannot post them without a CORS pre-flight, which this server never grants).
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from pbkv.cluster import faults, manager, targets
from pbkv.cluster.state import ClusterState, ProcessRecord, load_state
from pbkv.errors import PbkvError

ACTIONS: Final = ("kill", "pause", "resume", "restart", "partition", "heal")


class ActionError(Exception):
    """An action that cannot be done; the message is shown on the page."""


def run(directory: Path, action: str, target: str) -> str:
    """Do ``action`` to ``target`` in the cluster of ``directory``; returns one line of result.

    Raises:
        ActionError: unknown action, unknown target, or the cluster refused (message says why).
    """
    if action not in ACTIONS:
        raise ActionError(f"unknown action {action!r}: expected one of {', '.join(ACTIONS)}")
    try:
        state = load_state(directory)
        if action == "heal":
            done = faults.heal(state)
            return f"healed {len(done)} processes"
        record = _resolve(state, action, target)
        match action:
            case "kill":
                manager.kill(state, record, "KILL")
                return f"killed {record.name} ({record.address})"
            case "pause":
                manager.kill(state, record, "STOP")
                return f"paused {record.name} ({record.address})"
            case "resume":
                manager.resume(record, state)
                return f"resumed {record.name}"
            case "restart":
                manager.refuse_losing_data(state, record)
                _, started = manager.restart(state, record)
                return f"restarted {started.name} (pid {started.pid})"
            case _:
                faults.isolate(state, record.name)
                return f"partitioned {record.name} from every other process"
    except PbkvError as error:  # includes a missing state file and an unknown target
        raise ActionError(str(error)) from None
    except OSError as error:
        raise ActionError(f"{action} {target} failed: {error.strerror or error}") from None


def _resolve(state: ClusterState, action: str, target: str) -> ProcessRecord:
    """The process ``target`` names for ``action``, as the matching command resolves it:
    ``restart`` and ``resume`` name a stopped member of a replicated view service
    (``viewserver``), not the one still serving."""
    if action == "restart":
        return targets.resolve_stopped(state, target, "dead")
    if action == "resume":
        return targets.resolve_stopped(state, target, "paused")
    return targets.resolve(state, target)

"""Rotating a local cluster's secret without a restart: ``pbkv cluster rotate-secret``.

Theory of operation. Every server and view service ``pbkv cluster`` starts presents the secret
in ``auth-token`` and accepts, besides it, the one in ``auth-token.accept`` (empty: none;
``pbkv.cluster.credentials``), and reads both again on SIGHUP (``pbkv.runtime.reload``). A
rotation from secret A to a new random B is the guide's three steps (docs/guide.md §12b,
"Rotate the secret"), each one "write the files, reload every running process":

1. accept file B: every process presents A and accepts A and B;
2. token file B, accept file A: every process presents B and still accepts A;
3. accept file empty: every process presents and accepts B alone; A is refused from now on.

A step begins only once every running process took the one before (its own
``credentials_reloaded`` line, ``reloads.reload_processes``), so at every moment each process
accepts what every other presents, and a process that starts meanwhile reads the files of the
current step. When a process fails to take a step (its reload failed, or it did not answer),
the rotation stops there: the files stay those of that step, a marker (``auth-token.rotating``,
the step's number) says so, and nothing is lost, since no process has gone past a step another
has not taken. ``--continue`` reloads that step again (after the operator mended the cause) and
goes on; a new rotation is refused while the marker exists. The secret itself is never printed.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from pbkv.cluster import credentials, processes, reloads
from pbkv.cluster.state import ClusterState, ProcessRecord, load_state
from pbkv.cluster.targets import ClusterError, record_event

STEPS: Final = (
    "accept the new secret",
    "present the new secret, still accept the old",
    "refuse the old secret",
)
LOCK_FILE: Final = "auth-token.rotating.lock"
TAKEN: Final = frozenset({"reloaded", "not running"})
"""Outcomes that let the rotation go on: a process that stopped meanwhile reads the current
files when it starts again."""


@dataclass(frozen=True, slots=True)
class StepReport:
    """What the running processes made of one step (numbered from 1)."""

    step: int
    outcomes: tuple[reloads.ReloadOutcome, ...]

    @property
    def taken(self) -> bool:
        return all(outcome.outcome in TAKEN for outcome in self.outcomes)

    def lines(self) -> list[str]:
        """``step 1/3 (accept the new secret): s1 reloaded, ...``, then a line of detail for
        each process that did not take it."""
        said = ", ".join(f"{o.name} {o.outcome}" for o in self.outcomes) or "no process running"
        lines = [f"step {self.step}/{len(STEPS)} ({STEPS[self.step - 1]}): {said}"]
        for outcome in self.outcomes:
            if outcome.outcome not in TAKEN:
                lines.append(f"  {outcome.name}: {outcome.outcome}: {outcome.detail}")
        return lines


def marker_path(directory: Path) -> Path:
    return directory / credentials.ROTATION_MARKER


def forget(directory: Path) -> None:
    """No second secret accepted and no rotation under way (a new cluster in ``directory``)."""
    credentials.write_secret(credentials.accept_path(directory), "")
    marker_path(directory).unlink(missing_ok=True)


def stopped_at(directory: Path) -> int | None:
    """The step a rotation stopped at, or None when none is under way."""
    path = marker_path(directory)
    try:
        step = int(path.read_text().strip())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        step = 0
    if not 1 <= step <= len(STEPS):
        raise ClusterError(
            f"{path} does not name a step 1-{len(STEPS)}: when {credentials.ACCEPT_FILE} "
            "holds a secret, write 1 into it and `pbkv cluster rotate-secret --continue` (every "
            "step from there is safe); when it is empty, delete it"
        )
    return step


def stopped_note(directory: Path) -> str:
    """What ``pbkv cluster status`` says of a rotation that stopped part way ("" for none)."""
    try:
        step = stopped_at(directory)
    except ClusterError as error:
        return f"secret rotation: {error}"
    if step is None:
        return ""
    return (
        f"secret rotation stopped at step {step} of {len(STEPS)} ({STEPS[step - 1]}); "
        "`pbkv cluster rotate-secret --continue` finishes it"
    )


@contextmanager
def only_rotation(directory: Path) -> Iterator[None]:
    """Hold the directory's rotation lock (``flock``, released when the process ends however
    it ends): two rotations at once would interleave their files, and a process reloading
    between them could present a secret another no longer accepts."""
    path = directory / LOCK_FILE
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ClusterError(
                f"another `pbkv cluster rotate-secret` is running on {directory}; wait for it"
            ) from None
        yield
    finally:
        os.close(descriptor)


def rotate_secret(
    state: ClusterState,
    continuing: bool = False,
    on_step: Callable[[StepReport], None] | None = None,
) -> list[StepReport]:
    """Rotate ``state``'s secret (see the module docstring); ``continuing``: go on from the step a
    stopped rotation left. Returns one report per step run; the last one not ``taken`` means
    the rotation stopped there. ``ClusterError`` (nothing changed) when it cannot begin, or
    while another rotation runs."""
    with only_rotation(state.directory):
        return _rotate(state, continuing, on_step)


def _rotate(
    state: ClusterState, continuing: bool, on_step: Callable[[StepReport], None] | None
) -> list[StepReport]:
    directory = state.directory
    _running(state)  # refuses before any file changes
    start = _first_step(directory, continuing)
    if start == 1 and not continuing:
        _write_step(directory, 1, credentials.new_secret())
    reports = []
    for step in range(start, len(STEPS) + 1):
        if step > start:
            _write_step(directory, step)
        state = load_state(directory)  # a process restarted meanwhile has another pid
        report = StepReport(step, tuple(reloads.reload_processes(state, _running(state))))
        reports.append(report)
        record_event(state, "secret_rotation", step=step, taken=report.taken)
        if on_step is not None:
            on_step(report)
        if not report.taken:
            return reports
    marker_path(directory).unlink(missing_ok=True)
    credentials.install(directory)
    return reports


def _running(state: ClusterState) -> list[ProcessRecord]:
    """The servers and view services a step must reach; ``ClusterError`` for one that cannot
    take a step (paused; or started without an accept file, by an earlier release)."""
    records = []
    for record in state.processes:
        if record.kind not in ("server", "viewserver"):
            continue
        alive = processes.process_state(record.pid, record.argv)
        if alive == "paused":
            raise ClusterError(
                f"{record.name} is paused: it could not take a step; "
                f"`pbkv cluster resume {record.name}` first"
            )
        if alive != "alive":
            continue
        if credentials.ACCEPT_FLAG not in record.argv:
            raise ClusterError(
                f"{record.name} was started without {credentials.ACCEPT_FLAG} (by an earlier "
                f"release), so it cannot accept two secrets; `pbkv cluster restart "
                f"{record.name}` starts it with one"
            )
        records.append(record)
    return records


def _first_step(directory: Path, continuing: bool) -> int:
    stopped = stopped_at(directory)
    if continuing:
        if stopped is None:
            raise ClusterError("no rotation was stopped: nothing to continue")
        return stopped
    if stopped is not None:
        raise ClusterError(
            f"a rotation stopped at step {stopped} of {len(STEPS)}; once `pbkv cluster "
            "reload` says every process reloaded, `pbkv cluster rotate-secret --continue` "
            "finishes it"
        )
    return 1


def _write_step(directory: Path, step: int, secret: str = "") -> None:
    """The files of ``step`` (``secret``: the new one, for step 1), then the marker."""
    token, accept = credentials.token_path(directory), credentials.accept_path(directory)
    if step == 1:
        credentials.write_secret(accept, secret)
    elif step == 2:
        old, new = token.read_text().strip(), accept.read_text().strip()
        credentials.write_secret(accept, old)  # accepted still, from now on presented by none
        credentials.write_secret(token, new)
    else:
        credentials.write_secret(accept, "")
    credentials.write_secret(marker_path(directory), str(step))

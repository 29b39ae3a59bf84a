"""Last-writer analysis: an O(n log n) proof of the commonest violations (stale reads, lost
writes, values never written), tried before the exponential search.

Theory of operation: in any linearization, the value a get returns was produced by the last
write before it (or is the initial "missing"). That *last writer* must be a candidate for the
result ``r``: a put of exactly ``r``, an append whose value ``r`` ends with, or - when ``r`` is
None - a delete or the initial state. It must be allowed to precede the get (invoked no later
than the get returned). And no completed write may be *forced between* them: a write invoked
after the candidate completed and completed before the get was invoked would be linearized
after the candidate and before the get, so the candidate would not be last. If every candidate
is ruled out - or there is none - the history is not linearizable, and the get, its candidates
and one forcing write per candidate are a complete, human-checkable proof.

The test is sound but incomplete (it misses, for instance, a duplicated append or a new-old
inversion between two gets); the WGL search in ``pbkv.check.wgl`` remains the decision
procedure, and this pass only lets it stop early with a small witness. "Forced between" uses
strict inequalities, so intervals that touch count as concurrent, as in the search.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from pbkv.check.history import Operation

INITIAL: Final = -1  # stands for the initial "missing" state in ``LastWriterProof.sources``


@dataclass(frozen=True, slots=True)
class LastWriterProof:
    """Get ``get`` cannot have returned what it did.

    ``sources`` pairs every possible last writer (an index, or ``INITIAL``) with a completed
    write forced between it and the get; empty means nothing could ever produce the result.
    """

    get: int
    sources: tuple[tuple[int, int], ...]

    def indices(self) -> list[int]:
        """The get, the candidates and the forcing writes, sorted and without ``INITIAL``."""
        found = {self.get}
        for source, between in self.sources:
            found.add(between)
            if source != INITIAL:
                found.add(source)
        return sorted(found)


@dataclass(frozen=True, slots=True)
class _Writes:
    """Completed writes sorted by invoke, with suffix minima of their completion times."""

    invokes: list[float]
    earliest: list[tuple[float, int]]  # earliest[i] = min (complete, index) over writes[i:]

    def forced_after(self, time: float) -> tuple[float, int]:
        """(completion, index) of the first-completing write invoked strictly after ``time``."""
        return self.earliest[bisect.bisect_right(self.invokes, time)]


def find_last_writer_proof(ops: Sequence[Operation]) -> LastWriterProof | None:
    """Look for a get whose every possible last writer was certainly overwritten.

    Args:
        ops: the operations on one key.

    Returns:
        The first such get (in input order) with its proof, or None if none is found (which
        does not mean the history is linearizable).
    """
    completed = sorted(
        (op.invoke, complete, index)
        for index, op in enumerate(ops)
        if op.is_write and (complete := op.complete) is not None
    )
    earliest = [(math.inf, -1)] * (len(completed) + 1)
    for position in range(len(completed) - 1, -1, -1):
        _, complete, index = completed[position]
        earliest[position] = min(earliest[position + 1], (complete, index))
    writes = _Writes([invoke for invoke, _, _ in completed], earliest)
    puts: dict[str, list[int]] = {}
    appends: dict[str, list[int]] = {}
    deletes: list[int] = []
    for index, op in enumerate(ops):
        if op.op == "put":
            puts.setdefault(op.value or "", []).append(index)
        elif op.op == "append":
            appends.setdefault(op.value or "", []).append(index)
        elif op.op == "delete":
            deletes.append(index)
    lengths = sorted({len(value) for value in appends})
    for index, get in enumerate(ops):
        if get.op != "get" or get.complete is None:
            continue
        if get.result is None:
            candidates = [*deletes, INITIAL]
        else:
            candidates = list(puts.get(get.result, ()))
            for length in lengths:
                if length <= len(get.result):
                    suffix = get.result[len(get.result) - length :]
                    candidates += appends.get(suffix, ())
        proof = _rule_out(ops, writes, index, candidates)
        if proof is not None:
            return proof
    return None


def _rule_out(
    ops: Sequence[Operation], writes: _Writes, get: int, candidates: list[int]
) -> LastWriterProof | None:
    """The proof that no candidate can be the get's last writer, or None."""
    invoke, complete = ops[get].invoke, ops[get].complete
    assert complete is not None
    # Latest candidates first: they are the likeliest to survive, which ends the scan early.
    candidates.sort(key=lambda c: -math.inf if c == INITIAL else ops[c].invoke, reverse=True)
    sources: list[tuple[int, int]] = []
    for candidate in candidates:
        if candidate == INITIAL:
            ends = -math.inf
        else:
            if complete < ops[candidate].invoke:
                continue  # invoked after the get returned: cannot precede it
            finished = ops[candidate].complete
            if finished is None:
                return None  # may take effect at any time: cannot be ruled out
            ends = finished
        forced_complete, between = writes.forced_after(ends)
        if not forced_complete < invoke:
            return None
        sources.append((candidate, between))
    return LastWriterProof(get, tuple(sources))

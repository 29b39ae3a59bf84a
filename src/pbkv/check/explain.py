"""Explaining a linearizability violation: a small failing subset, and why it fails.

Theory of operation: a key's history failed the check; the explanation shrinks it to a small
subset that still fails, using only reductions that keep "subset fails => whole key fails"
true, so the subset is a genuine witness and never an artefact of removing a write someone
read. The starting point is the strongest one available:

- a last-writer proof (``pbkv.check.last_writer``): the get, its possible sources and the
  writes forced after them - already a small, complete argument, printed as such and kept;
- else the search's *frontier* (the latest return that stopped any attempt - usually the get
  that cannot be explained), alone with the writes invoked before it returned (dropping gets is
  always sound), given ``SINGLE_GET_SHARE`` of the time;
- else the smallest failing *time prefix*: the gets that completed by T and the writes invoked
  by T (a write invoked after T is linearized after every kept get, so it cannot matter);
  failing is monotone in T, so it gallops from the frontier's time and bisects.

Otherwise delta debugging follows (drop chunks, halving, latest first) over two sound
reductions:

- *drop gets*: a get never changes state, so removing one only removes a constraint;
- *drop unobserved writes*: a put/append whose non-empty value is contained in no kept get's
  result - in any linearization nothing reads it before a later put or delete overwrites it, so
  removing it leaves a valid linearization of the rest; likewise a delete when no kept get
  returned None or a value starting with a kept append's value (only such a get could be
  linearized after the delete and before the next put).

Every candidate subset is re-checked with the WGL search; the effort is bounded by
``MINIMIZE_MAX_CHECKS`` re-checks and the caller's deadline, keeping the smallest subset proved
so far. The report lists that subset one operation per line, the last-writer argument if there
is one, the longest linearizable prefix the search reached and the operation that blocked it.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Final

from pbkv.check.history import Operation, next_value
from pbkv.check.last_writer import INITIAL, LastWriterProof
from pbkv.check.wgl import SearchOutcome, relevant_operations, search_key

MINIMIZE_MAX_CHECKS: Final = 200
SINGLE_GET_SHARE: Final = 0.3  # of the time left, for trying one suspect get on its own
PRINT_LIMIT_OPS: Final = 40
PRINT_LIMIT_PREFIX: Final = 12


@dataclass
class _Shrinker:
    """Re-checks candidate subsets of one key's operations under a bounded effort."""

    ops: Sequence[Operation]
    deadline: float
    clock: Callable[[], float]
    witness: list[int]  # smallest subset proved to fail so far (indices into ``ops``)
    checks_left: int = MINIMIZE_MAX_CHECKS
    outcome: SearchOutcome | None = field(default=None)  # recorded search of ``witness``

    def exhausted(self) -> bool:
        return self.checks_left <= 0 or self.clock() > self.deadline

    def fails(self, subset: list[int], share: float = 1.0) -> bool:
        """True if ``subset`` is proved non-linearizable (it then becomes the witness) within
        ``share`` of the time left."""
        if self.exhausted():
            return False
        self.checks_left -= 1
        now = self.clock()
        deadline = now + share * (self.deadline - now)
        outcome = search_key([self.ops[i] for i in subset], deadline, self.clock, True)
        if outcome.verdict != "violation":
            return False
        self.witness, self.outcome = subset, outcome
        return True


def explain_violation(
    key: str,
    ops: Sequence[Operation],
    deadline: float,
    clock: Callable[[], float],
    hint: int | None = None,
    proof: LastWriterProof | None = None,
) -> tuple[tuple[Operation, ...], str]:
    """Shrink a failing key's operations and describe why they cannot be linearized.

    Args:
        key: the key, for the text.
        ops: all operations on ``key``; must be non-linearizable.
        deadline: stop shrinking (keeping the smallest proved-failing subset) after this.
        clock: the time source ``deadline`` refers to.
        hint: index in ``ops`` of the failed search's frontier operation, if known.
        proof: a last-writer proof for ``ops``, if one was found.

    Returns:
        The failing subset sorted by invoke time, and the multi-line explanation.
    """
    order = sorted(relevant_operations(ops), key=lambda i: (ops[i].invoke, i))
    shrinker = _Shrinker(ops, deadline, clock, witness=order)
    if proof is not None:  # already small, and it stands on its own
        shrinker.witness = sorted(proof.indices(), key=lambda i: (ops[i].invoke, i))
    else:
        if hint is None or not _one_get_fails(shrinker, order, hint):
            _shortest_failing_prefix(shrinker, order, hint)
            gets = _gets(ops, shrinker.witness)
            last = max(gets, key=lambda i: _completed(ops[i]), default=None)
            if last is not None and last != hint:
                _one_get_fails(shrinker, shrinker.witness, last)
        _delta_debug(shrinker, _gets)
        _delta_debug(shrinker, unobserved_writes)
        _delta_debug(shrinker, _gets)
    outcome = shrinker.outcome
    if outcome is None:
        outcome = search_key([ops[i] for i in shrinker.witness], deadline, clock, True)
    witness = tuple(ops[i] for i in shrinker.witness)
    why = _describe_proof(ops, proof) if proof is not None else []
    return witness, "\n".join(_describe(key, witness, len(ops), why, outcome))


def _completed(op: Operation) -> float:
    return op.complete if op.complete is not None else op.invoke


def _one_get_fails(shrinker: _Shrinker, current: list[int], get: int) -> bool:
    """Try ``get`` alone with the writes invoked before it returned (dropping gets is sound)."""
    ops = shrinker.ops
    until = ops[get].complete
    if ops[get].is_write or until is None:
        return False
    trial = [i for i in current if i == get or (ops[i].is_write and ops[i].invoke <= until)]
    return trial != current and shrinker.fails(trial, share=SINGLE_GET_SHARE)


def _shortest_failing_prefix(shrinker: _Shrinker, order: list[int], hint: int | None) -> None:
    """Search for the earliest get completion time T whose time prefix still fails.

    Failing is monotone in T. Starts at the hint's completion time and gallops from there
    (the culprit is usually near it), then bisects; an undecided check counts as passing.
    """
    ops = shrinker.ops
    times = sorted({_completed(ops[i]) for i in _gets(ops, order)})

    def fails(index: int) -> bool:
        until = times[index]
        return shrinker.fails(
            [
                i
                for i in order
                if (ops[i].invoke if ops[i].is_write else _completed(ops[i])) <= until
            ]
        )

    low, high = 0, len(times) - 1  # the answer is in [low, high] (high: assumed failing)
    start = high if hint is None else bisect.bisect_left(times, _completed(ops[hint]))
    step = 1
    if start < high and fails(start):
        high = start
        while high - step >= low and fails(high - step):
            high, step = high - step, step * 2
        low = max(low, high - step + 1)
    elif start < high:
        low = start + 1
        while low + step < high and not fails(low + step):
            low, step = low + step + 1, step * 2
        high = min(high, low + step)
    while low < high and not shrinker.exhausted():
        middle = (low + high) // 2
        if fails(middle):
            high = middle
        else:
            low = middle + 1


def _gets(ops: Sequence[Operation], current: list[int]) -> list[int]:
    return [i for i in current if not ops[i].is_write]


def unobserved_writes(ops: Sequence[Operation], current: list[int]) -> list[int]:
    """Writes whose effect no kept get can have seen (see the module docstring)."""
    gets = [ops[i] for i in current if not ops[i].is_write]
    seen = [result for get in gets if (result := get.result) is not None]
    appended = [ops[i].value or "" for i in current if ops[i].op == "append"]
    deletes_unseen = len(seen) == len(gets) and not any(
        result.startswith(value) for result in seen for value in appended
    )
    return [
        i
        for i in current
        if (ops[i].op == "delete" and deletes_unseen)
        or (
            ops[i].op in ("put", "append")
            and (value := ops[i].value)
            and not any(value in result for result in seen)
        )
    ]


def _delta_debug(
    shrinker: _Shrinker, candidates: Callable[[Sequence[Operation], list[int]], list[int]]
) -> None:
    """Drop chunks of ``candidates`` (halving, latest chunk first) while the rest still fails."""
    chunks = 2
    while not shrinker.exhausted():
        current = shrinker.witness
        droppable = candidates(shrinker.ops, current)
        if not droppable:
            return
        chunks = min(chunks, len(droppable))
        size = -(-len(droppable) // chunks)
        for start in reversed(range(0, len(droppable), size)):
            drop = frozenset(droppable[start : start + size])
            if shrinker.fails([i for i in current if i not in drop]):
                chunks = max(chunks - 1, 2)
                break
        else:
            if size == 1:
                return
            chunks = min(chunks * 2, len(droppable))


def _describe_proof(ops: Sequence[Operation], proof: LastWriterProof) -> list[str]:
    get = ops[proof.get]
    if not proof.sources:
        return [f"impossible: no write could ever have produced {get.result!r} ({get.describe()})"]
    head = (
        f"impossible: every write that could have produced {get.result!r} was overwritten "
        f"before this get began ({get.describe()}):"
    )
    lines: list[str] = []
    for source, between in proof.sources:
        origin = "the initial missing value" if source == INITIAL else ops[source].describe()
        lines.append(f"  {origin}, then {ops[between].describe()} ran entirely in between")
    return [head, *_bounded(lines, PRINT_LIMIT_OPS, "sources")]


def _describe(
    key: str, witness: tuple[Operation, ...], total: int, why: list[str], outcome: SearchOutcome
) -> list[str]:
    these = "this operation" if len(witness) == 1 else f"these {len(witness)} operations"
    lines = [
        f"key {key!r}: {these} (of {total} on the key) cannot be put in any order that "
        "respects both real time and what the gets returned:"
    ]
    lines += _bounded([f"  {op.describe()}" for op in witness], PRINT_LIMIT_OPS, "operations")
    lines += why
    if outcome.verdict != "violation":
        lines.append("(ran out of time re-checking this subset; no linearizable prefix shown)")
        return lines
    steps: list[str] = []
    state: str | None = None
    for index in outcome.longest:
        state = next_value(witness[index], state)
        steps.append(f"  {witness[index].describe()}  => value {state!r}")
    lines.append(f"longest linearizable prefix ({len(steps)} of {len(witness)}):")
    lines += _bounded(steps, PRINT_LIMIT_PREFIX, "steps") or ["  (none: nothing can go first)"]
    if outcome.blocker is not None:
        lines.append(_blocked(witness[outcome.blocker], state))
    return lines


def _blocked(blocker: Operation, value: str | None) -> str:
    where = f"at [{blocker.invoke!r}, {blocker.complete!r}]"
    if blocker.is_write:
        what = "delete" if blocker.op == "delete" else f"{blocker.op} {blocker.value!r}"
        return (
            f"stuck at: {what} by {blocker.client} {where} had to take effect by then, but "
            f"after this prefix (value {value!r}) no order lets every get see what it saw"
        )
    return (
        f"stuck at: get by {blocker.client} returned {blocker.result!r} {where}, but after "
        f"this prefix the value is {value!r} and no other order gets further"
    )


def _bounded(lines: list[str], limit: int, noun: str) -> list[str]:
    """The last ``limit`` lines, preceded by a count of the ones left out."""
    if len(lines) <= limit:
        return lines
    return [f"  ... {len(lines) - limit} earlier {noun} not shown", *lines[-limit:]]

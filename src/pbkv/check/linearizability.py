"""Linearizability checking of key-value histories: the driver and its result.

Theory of operation: a key-value store is a collection of independent registers, and
linearizability is compositional (Herlihy & Wing's locality; Porcupine's P-compositionality), so
a history is linearizable iff each key's sub-history is. ``check_history`` splits the history by
key and decides each key, smallest keys first so that a cheap violation is found before an
expensive key eats the budget:

1. the last-writer analysis (``pbkv.check.last_writer``), O(n log n), proves the common
   violations - stale reads, lost writes, values never written - outright;
2. otherwise the WGL search (``pbkv.check.wgl``) decides the key exactly, or runs out of time.

One deadline spans all keys. A key whose search passes it is ``unknown``, and the remaining keys
are still checked (each search stops at its first clock reading past the deadline) because a
violation anywhere is a definite answer. Only ``ok`` and ``violation`` are ever claimed; running
out of time is ``unknown``. A violation is then explained by ``pbkv.check.explain``, which may
take up to ``min(EXPLAIN_LIMIT_S, budget_s)`` more.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final, Literal

from pbkv.check.explain import explain_violation
from pbkv.check.history import Operation
from pbkv.check.last_writer import find_last_writer_proof
from pbkv.check.wgl import search_key

Verdict = Literal["ok", "violation", "unknown"]

EXPLAIN_LIMIT_S: Final = 1.0


@dataclass(frozen=True, slots=True)
class CheckResult:
    """Outcome of ``check_history``.

    Attributes:
        verdict: ``ok`` (linearizable), ``violation`` (proved not) or ``unknown`` (budget ran
            out before a decision).
        explanation: human-readable reason, one operation per line; empty for ``ok``.
        keys_checked: keys decided (ok or violation).
        keys_total: distinct keys in the history.
        elapsed_s: time spent, by the injected clock.
        key: the violating key, or for ``unknown`` the first key that ran out of time.
        operations: for a violation, a small failing subset of that key's operations, sorted
            by invoke time.
    """

    verdict: Verdict
    explanation: str
    keys_checked: int
    keys_total: int
    elapsed_s: float
    key: str | None = None
    operations: tuple[Operation, ...] = ()


def check_history(
    ops: Iterable[Operation],
    budget_s: float = 10.0,
    clock: Callable[[], float] = time.monotonic,
) -> CheckResult:
    """Decide whether a key-value history is linearizable.

    Semantics: every key starts missing; put sets, append concatenates onto the value (``""``
    if missing), delete removes, get returns the value or None. Operations whose intervals
    touch are concurrent. An operation with ``complete=None`` may have taken effect at any
    point after its invoke, or not at all.

    Args:
        ops: the history, in any order.
        budget_s: seconds (by ``clock``) the decision may take over all keys; explaining a
            violation may add up to ``min(EXPLAIN_LIMIT_S, budget_s)``.
        clock: monotonic time source in seconds; tests inject a fake one.

    Returns:
        The verdict with an explanation; ``unknown`` if the budget ran out, never a guess.
    """
    start = clock()
    deadline = start + budget_s
    by_key: dict[str, list[Operation]] = {}
    for op in ops:
        by_key.setdefault(op.key, []).append(op)
    order = sorted(by_key, key=lambda k: (len(by_key[k]), k))
    checked = 0
    timed_out: str | None = None
    for key in order:
        proof = find_last_writer_proof(by_key[key])
        hint: int | None = None
        if proof is None:
            outcome = search_key(by_key[key], deadline, clock)
            if outcome.verdict == "unknown":
                timed_out = key if timed_out is None else timed_out
                continue
            hint = outcome.frontier
        checked += 1
        if proof is not None or outcome.verdict == "violation":
            limit = clock() + min(EXPLAIN_LIMIT_S, budget_s)
            witness, text = explain_violation(key, by_key[key], limit, clock, hint, proof)
            total = len(order)
            return CheckResult("violation", text, checked, total, clock() - start, key, witness)
    elapsed = clock() - start
    if timed_out is None:
        return CheckResult("ok", "", checked, len(order), elapsed)
    text = (
        f"search budget of {budget_s:g} s ran out on key {timed_out!r} after {elapsed:.2f} s; "
        f"{checked} of {len(order)} keys were decided and none had a violation"
    )
    return CheckResult("unknown", text, checked, len(order), elapsed, timed_out)


def format_result(result: CheckResult) -> str:
    """Render a ``CheckResult`` as a short human report; the first line is the verdict."""
    counts = f"{result.keys_checked} of {result.keys_total} keys checked"
    timing = f"in {result.elapsed_s:.2f} s"
    match result.verdict:
        case "ok":
            return f"linearizable: all {result.keys_total} keys checked {timing}"
        case "violation":
            head = f"NOT linearizable: violation on key {result.key!r} ({counts} {timing})"
            return f"{head}\n{result.explanation}"
        case "unknown":
            head = f"unknown: no decision within the budget ({counts} {timing})"
            return f"{head}\n{result.explanation}"

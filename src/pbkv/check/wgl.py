"""Wing-Gong / Lowe (WGL) linearizability search for the operations on one key.

Theory of operation (the shape of Porcupine's ``checkSingle``, written afresh): every completed
operation contributes a *call* entry at its invoke time and a *return* entry at its complete
time; an indeterminate write contributes only a call entry (its return is at +infinity: it may
take effect at any point after its invoke, or never). Entries are sorted by time, calls before
returns at equal times, so intervals that merely touch count as concurrent - the lenient
choice: no violation ever depends on how ties were recorded. The entries form a doubly linked
list in two integer arrays. The search walks it from the head; the calls before the first
return entry (the *window*) are the operations that may be linearized next. At a call it tries
to linearize that operation: apply it to the register, *lift* the call and its return out of
the list (dancing links), push the choice and restart from the head. At a return entry the
operation it closes had to be linearized already, so it backtracks: pop, *unlift* (exact,
because lifts and unlifts are LIFO) and try the next call. It succeeds when every completed
operation is linearized, and proves a violation when no choice is left to revisit.

A configuration is (linearized operations as ``int`` bitsets, register value). Plain WGL is
exponential in the number of concurrent operations; these reductions keep it fast on real
histories, each exact (it never changes the verdict):

- *Irrelevant operations are dropped* (``relevant_operations``): indeterminate gets, and
  indeterminate puts/appends whose value is in no get result (see there).
- *Forced gets* (partial-order reduction): a get in the window that sees the current value is
  linearized at once, with no alternative tried - moving a get earlier to a point where it sees
  the same value never breaks a linearization.
- *Dead ends* (``_scan_window``): a get whose return comes before any write that could make its
  result true is unsatisfiable, so the configuration is abandoned at once.
- *Poison*: a value that no get result starts with can never be read, and appends keep it so
  until a put or delete; all such values are one state (``_Tables.poison``).
- *Memo with coverage*: a configuration from which the search failed is remembered when it is
  left, and rules out any configuration it covers - same value and same *core* operations, no
  fewer *spent* writes (completed writes whose effect no get can see: having one behind is never
  worse, as removing it from a linearization leaves one) and no more *optional* (indeterminate)
  writes (they may always be left out). Recording only finished configurations keeps the search
  complete: a covering configuration still on the stack proves nothing yet.

The clock is read every ``CLOCK_EVERY_STEPS`` steps; past the deadline the answer is
``unknown``, never a guess. On a violation the outcome also tells where the search got stuck
(the deepest attempt, and the latest return entry that stopped any attempt) - the raw material
for ``pbkv.check.explain``.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Final, Literal

from pbkv.check.history import Operation

CLOCK_EVERY_STEPS: Final = 1024
LOOKAHEAD_ENTRIES: Final = 48  # list entries examined for dead-end gets
SUBSTRING_WORK_LIMIT: Final = 50_000_000  # characters scanned per key to classify writes
MEMO_MAX_BYTES: Final = 512 * 1024 * 1024  # rough memory bound of one search's memo
_MEMO_ENTRY_OVERHEAD_BYTES: Final = 250  # a memo entry besides its bitsets (tuples, list, dict)
_CLOCK_MASK: Final = CLOCK_EVERY_STEPS - 1

_GET: Final = 0
_PUT: Final = 1
_APPEND: Final = 2
_DELETE: Final = 3
_KIND_CODES: Final[dict[str, int]] = {
    "get": _GET,
    "put": _PUT,
    "append": _APPEND,
    "delete": _DELETE,
}

_CORE: Final = 0  # a completed operation whose effect may be seen
_SPENT: Final = 1  # a completed write no get can see the effect of (it only destroys the value)
_OPTIONAL: Final = 2  # an indeterminate write: it may be left out

_HEAD: Final = 0
_PENDING: Final = -1  # match[] of a call entry whose operation never returned
_RETURN: Final = -2  # match[] of a return entry (and of the tail sentinel)

SearchVerdict = Literal["ok", "violation", "unknown"]


@dataclass(frozen=True, slots=True)
class SearchOutcome:
    """Result of searching one key's operations.

    For a violation, ``blocker`` (index into the searched sequence) is the operation whose
    return stopped the deepest attempt; with ``record_longest``, ``longest`` lists that
    attempt's operations in linearization order. ``frontier`` is the operation with the latest
    return that stopped any attempt: no attempt got past it, so it is the likeliest culprit.
    """

    verdict: SearchVerdict
    steps: int
    longest: tuple[int, ...] = ()
    blocker: int | None = None
    frontier: int | None = None


@dataclass(frozen=True, slots=True)
class _Tables:
    """The linked list and per-operation arrays for one search (never mutated)."""

    nxt: list[int]
    prv: list[int]
    entry_op: list[int]  # entry -> dense operation id (-1 for sentinels)
    match: list[int]  # call entry -> its return entry, _PENDING; return entry -> _RETURN
    kinds: list[int]  # dense id -> _GET/_PUT/_APPEND/_DELETE
    roles: list[int]  # dense id -> _CORE/_SPENT/_OPTIONAL: which bitset records it
    values: list[str]  # dense id -> put/append argument ("" otherwise)
    expect: list[str | None]  # dense id -> what a get returned
    original: list[int]  # dense id -> index in the searched sequence
    completed: int  # how many operations must be linearized
    results: list[str]  # every value some get returned, sorted
    poison: str  # stands for every value no get can ever see (longer than any result)


def search_key(
    ops: Sequence[Operation],
    deadline: float,
    clock: Callable[[], float],
    record_longest: bool = False,
) -> SearchOutcome:
    """Decide whether ``ops`` (all on one key, initially missing) are linearizable.

    Args:
        ops: the key's operations in any order; indeterminate gets are ignored.
        deadline: give up (verdict ``unknown``) once ``clock()`` exceeds this.
        clock: monotonic time source, read every ``CLOCK_EVERY_STEPS`` steps.
        record_longest: keep the longest linearizable prefix for explanations (costs
            O(depth) each time the deepest attempt grows).

    Returns:
        The verdict and, for a recorded violation, where the search got stuck.
    """
    tables = _prepare(ops)
    return _run(tables, deadline, clock, record_longest)


def relevant_operations(ops: Sequence[Operation]) -> list[int]:
    """Indices of the operations that can matter to linearizability, in input order.

    Drops indeterminate gets (they constrain nothing) and indeterminate puts/appends whose
    non-empty value occurs in no get result: nothing can have read such a write before a later
    put or delete overwrote it, so it may as well never have happened (exact, not a heuristic).
    """
    seen = _Substrings(op.result for op in ops if op.op == "get" and op.complete is not None)
    return [
        index
        for index, op in enumerate(ops)
        if op.complete is not None
        or op.op == "delete"
        or (op.op != "get" and (not op.value or seen.maybe_in(op.value)))
    ]


class _Substrings:
    """Answers "is this a substring of some get result?", conservatively once a work limit
    (``SUBSTRING_WORK_LIMIT`` characters scanned) is spent: then the answer is always yes."""

    def __init__(self, results: Iterable[str | None]) -> None:
        self.joined = "\x00".join(result for result in results if result is not None)
        self.work_left = SUBSTRING_WORK_LIMIT

    def maybe_in(self, value: str) -> bool:
        self.work_left -= len(self.joined)
        return self.work_left < 0 or "\x00" in value or value in self.joined


def _prepare(ops: Sequence[Operation]) -> _Tables:
    live = relevant_operations(ops)
    live.sort(key=lambda i: (ops[i].invoke, i))
    events: list[tuple[float, int, int]] = []  # (time, 0 call / 1 return, dense id)
    for dense, index in enumerate(live):
        op = ops[index]
        events.append((op.invoke, 0, dense))
        if op.complete is not None:
            events.append((op.complete, 1, dense))
    events.sort()
    size = len(events) + 2  # head, events, tail
    entry_op = [-1] * size
    match = [_RETURN] * size
    call_entry = [0] * len(live)
    for position, (_, is_return, dense) in enumerate(events, start=1):
        entry_op[position] = dense
        if is_return:
            match[call_entry[dense]] = position
        else:
            call_entry[dense] = position
            match[position] = _PENDING
    chosen = [ops[i] for i in live]
    results = sorted({op.result for op in chosen if op.op == "get" and op.result is not None})
    seen = _Substrings(results)
    return _Tables(
        nxt=[*range(1, size), -1],
        prv=[-1, *range(size - 1)],
        entry_op=entry_op,
        match=match,
        kinds=[_KIND_CODES[op.op] for op in chosen],
        roles=[_role(op, results, seen) for op in chosen],
        values=[op.value or "" for op in chosen],
        expect=[op.result for op in chosen],
        original=live,
        completed=sum(1 for op in chosen if op.complete is not None),
        results=results,
        poison="\x00" * (1 + max(map(len, results), default=0)),
    )


def _role(op: Operation, results: list[str], seen: _Substrings) -> int:
    if op.complete is None:
        return _OPTIONAL
    if op.op == "put" and not _seen_by_a_get(results, op.value or ""):
        return _SPENT
    if op.op == "append" and op.value and not seen.maybe_in(op.value):
        return _SPENT
    return _CORE


@dataclass(slots=True)
class _Deepest:
    """The deepest stack the search had to abandon, and where it got stuck."""

    depth: int = -1
    blocker: int = -1
    calls: tuple[int, ...] = ()
    frontier: int = -1  # the latest return entry any attempt was stopped by


def _run(
    tables: _Tables, deadline: float, clock: Callable[[], float], record: bool
) -> SearchOutcome:
    nxt, prv = list(tables.nxt), list(tables.prv)
    entry_op, match, kinds, values = tables.entry_op, tables.match, tables.kinds, tables.values
    roles, results, poison = tables.roles, tables.results, tables.poison
    entry_bytes = len(tables.kinds) // 8 + _MEMO_ENTRY_OVERHEAD_BYTES
    config = _Config(remaining=tables.completed, memo_room=MEMO_MAX_BYTES // entry_bytes)
    memo: _Memo = {}  # finished (failed) configurations
    calls: list[tuple[int, str | None]] = []  # (call entry, state before it) per choice
    deepest = _Deepest()
    entry = -1  # -1 = a configuration just reached: look for a forced get first
    steps = 0
    while config.remaining:
        steps += 1
        if not steps & _CLOCK_MASK and clock() > deadline:
            return SearchOutcome("unknown", steps)
        state = config.state
        forced = entry < 0
        if forced:
            entry = _scan_window(tables, nxt, state)
            if entry < 0:
                entry, forced = nxt[_HEAD], False
        ret = match[entry]
        if ret != _RETURN:  # a call entry: try to linearize its operation now
            op = entry_op[entry]
            kind = kinds[op]
            if kind == _GET and not forced:  # a get that matched was forced already
                entry = nxt[entry]
                continue
            if kind == _GET or (state is poison and kind == _APPEND):
                new_state = state
            else:
                new_state = _write(kind, state, values[op])
                if new_state is not None and not _seen_by_a_get(results, new_state):
                    new_state = poison  # all such values behave alike: see the module docstring
            if not config.covered(memo, roles[op], 1 << op, new_state):
                calls.append((entry, state))
                config.lift(roles[op], 1 << op, new_state, ret >= 0)
                _lift(nxt, prv, entry, ret)
                entry = -1
                continue
            if not forced:  # this configuration (or a better one) failed already
                entry = nxt[entry]
                continue
        # A return entry (its operation had to be linearized already) or a forced get that
        # fails: no alternative here. Backtrack past forced gets to the last write choice.
        if not forced and entry > deepest.frontier:
            deepest.frontier = entry  # entries are numbered in time order
        if len(calls) > deepest.depth:
            calls_made = tuple(entry_op[call] for call, _ in calls) if record else ()
            deepest.depth, deepest.blocker, deepest.calls = len(calls), entry_op[entry], calls_made
        entry = _unwind(tables, nxt, prv, calls, config, memo)
        if entry < 0:
            return _violation(tables, steps, deepest)
    return SearchOutcome("ok", steps)


_Memo = dict[tuple[int, str | None], list[tuple[int, int]]]


@dataclass(slots=True)
class _Config:
    """Where the search stands: linearized operations (three bitsets by role) and the value.

    A failed configuration also rules out every configuration it *covers*: same core set and
    value, no fewer spent puts (a spent put only destroys the value, so having it behind is
    never worse) and no more indeterminate writes (those may always be left out).
    """

    remaining: int  # completed operations still to linearize
    memo_room: int = 0  # failed configurations the memo may still take
    core: int = 0
    spent: int = 0
    optional: int = 0
    state: str | None = None

    def covered(self, memo: _Memo, role: int, bit: int, state: str | None) -> bool:
        """Whether linearizing an operation leads to a configuration known to fail."""
        core, spent, optional = self.core, self.spent, self.optional
        if role == _CORE:
            core |= bit
        elif role == _SPENT:
            spent |= bit
        else:
            optional |= bit
        failed = memo.get((core, state))
        return failed is not None and any(
            old_spent & spent == spent and old_optional & optional == old_optional
            for old_spent, old_optional in failed
        )

    def lift(self, role: int, bit: int, state: str | None, completed: bool) -> None:
        if role == _CORE:
            self.core |= bit
        elif role == _SPENT:
            self.spent |= bit
        else:
            self.optional |= bit
        self.state = state
        self.remaining -= completed

    def unlift(self, role: int, bit: int, state: str | None, completed: bool) -> None:
        if role == _CORE:
            self.core ^= bit
        elif role == _SPENT:
            self.spent ^= bit
        else:
            self.optional ^= bit
        self.state = state
        self.remaining += completed

    def finished(self, memo: _Memo) -> None:
        """Record that no linearization completes from here (while the memo has room: past
        that the search stays exact, only slower)."""
        if self.memo_room > 0:
            self.memo_room -= 1
            memo.setdefault((self.core, self.state), []).append((self.spent, self.optional))


def _write(kind: int, state: str | None, value: str) -> str | None:
    if kind == _PUT:
        return value
    if kind == _APPEND:
        return value if state is None else state + value
    return None


def _seen_by_a_get(results: list[str], value: str) -> bool:
    """Whether some get returned ``value`` or ``value`` extended by appends."""
    index = bisect.bisect_left(results, value)
    return index < len(results) and results[index].startswith(value)


def _lift(nxt: list[int], prv: list[int], entry: int, ret: int) -> None:
    """Unlink a call entry and its return entry (if any)."""
    before, after = prv[entry], nxt[entry]
    nxt[before], prv[after] = after, before
    if ret >= 0:
        before, after = prv[ret], nxt[ret]
        nxt[before], prv[after] = after, before


def _unwind(
    tables: _Tables,
    nxt: list[int],
    prv: list[int],
    calls: list[tuple[int, str | None]],
    config: _Config,
    memo: _Memo,
) -> int:
    """Undo choices up to and including the latest write (forced gets have no alternative).

    Every configuration left on the way has failed and is recorded in ``memo``. Returns the
    entry to try next, or -1 when no choice is left. Relinking in reverse order of the lifts
    restores the list exactly (dancing links).
    """
    entry_op, match, kinds, roles = tables.entry_op, tables.match, tables.kinds, tables.roles
    while calls:
        config.finished(memo)
        entry, state = calls.pop()
        op = entry_op[entry]
        ret = match[entry]
        config.unlift(roles[op], 1 << op, state, ret >= 0)
        if ret >= 0:
            nxt[prv[ret]] = ret
            prv[nxt[ret]] = ret
        nxt[prv[entry]] = entry
        prv[nxt[entry]] = entry
        if kinds[op] != _GET:
            return nxt[entry]
    return -1


def _scan_window(tables: _Tables, nxt: list[int], state: str | None) -> int:
    """Classify a configuration just reached, looking at the list from the head.

    Returns the call entry of a get that sees ``state`` and may go now (forced: linearize it
    next); else the return entry of a get that can never be satisfied (dead end, see below);
    else -1 (branch over the writes in the window, in list order).

    A get must be linearized before its return entry, so only operations whose calls come
    before that entry can precede it. The value it sees is then ``state``, or the value of one
    of those puts, or (after one of those deletes) missing or the value of one of those appends
    - in each case possibly extended by appends. A get whose result has none of these as a
    prefix is unsatisfiable. At most ``LOOKAHEAD_ENTRIES`` entries are examined.
    """
    match, entry_op, kinds, expect = tables.match, tables.entry_op, tables.kinds, tables.expect
    entry = nxt[_HEAD]
    while match[entry] != _RETURN:  # the window: operations that may be linearized next
        op = entry_op[entry]
        if kinds[op] == _GET and expect[op] == state:
            return entry
        entry = nxt[entry]
    puts: list[str] = []
    appends: list[str] = []
    deleted = state is None
    scan = nxt[_HEAD]
    for _ in range(LOOKAHEAD_ENTRIES):
        op = entry_op[scan]
        if op < 0:
            return -1
        kind = kinds[op]
        if match[scan] != _RETURN:
            if kind == _PUT:
                puts.append(tables.values[op])
            elif kind == _APPEND:
                appends.append(tables.values[op])
            elif kind == _DELETE:
                deleted = True
        elif kind == _GET:
            wanted = expect[op]
            if wanted is None:
                if not deleted:
                    return scan
            elif not (
                (state is not None and wanted.startswith(state))
                or _has_prefix(wanted, puts)
                or (deleted and _has_prefix(wanted, appends))
            ):
                return scan
        scan = nxt[scan]
    return -1


def _has_prefix(text: str, prefixes: list[str]) -> bool:
    return any(text.startswith(prefix) for prefix in prefixes)


def _violation(tables: _Tables, steps: int, deepest: _Deepest) -> SearchOutcome:
    original = tables.original
    return SearchOutcome(
        "violation",
        steps,
        longest=tuple(original[op] for op in deepest.calls),
        blocker=original[deepest.blocker] if deepest.blocker >= 0 else None,
        frontier=original[tables.entry_op[deepest.frontier]] if deepest.frontier >= 0 else None,
    )

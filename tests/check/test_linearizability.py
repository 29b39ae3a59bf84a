"""The linearizability checker: hand-written cases, budgets, and agreement with brute force.

The brute-force cross-check is what makes the checker trustworthy: on many small random
histories (linearizable by construction, or with one get result corrupted) it must agree with
an independent exhaustive search over all orders - so it neither misses bugs nor cries wolf.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Sequence

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pbkv.check import CheckResult, Operation, check_history, format_result
from pbkv.check.explain import unobserved_writes
from pbkv.check.history import OpKind, replay_effects
from pbkv.check.last_writer import find_last_writer_proof
from pbkv.check.wgl import relevant_operations, search_key


def put(client: str, key: str, value: str, invoke: float, complete: float | None) -> Operation:
    return Operation(client, "put", key, value, invoke, complete, None)


def append(client: str, key: str, value: str, invoke: float, complete: float | None) -> Operation:
    return Operation(client, "append", key, value, invoke, complete, None)


def delete(client: str, key: str, invoke: float, complete: float | None) -> Operation:
    return Operation(client, "delete", key, None, invoke, complete, None)


def get(client: str, key: str, result: str | None, invoke: float, complete: float) -> Operation:
    return Operation(client, "get", key, None, invoke, complete, result)


class FakeClock:
    """Advances ``step`` seconds every time it is read."""

    def __init__(self, step: float) -> None:
        self.now = 0.0
        self.step = step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


NOISE = [  # a linearizable key that must not be blamed
    put("n1", "noise", "1", 0, 1),
    get("n2", "noise", "1", 2, 3),
    append("n1", "noise", "2", 4, 5),
    get("n2", "noise", "12", 6, 7),
]


def check(ops: list[Operation]) -> CheckResult:
    return check_history([*NOISE, *ops], budget_s=5.0)


# --- Non-linearizable histories -------------------------------------------------------------

VIOLATIONS = {
    "stale read of an overwritten value": [
        put("c1", "a", "1", 0, 1),
        put("c1", "a", "2", 2, 3),
        get("c2", "a", "1", 4, 5),
    ],
    "stale read of a missing key": [
        put("c1", "a", "1", 0, 1),
        get("c2", "a", None, 2, 3),
    ],
    "read of a value never written": [
        put("c1", "a", "x", 0, 1),
        get("c2", "a", "y", 0.5, 3),
    ],
    "duplicated append": [
        append("c1", "a", "x", 0, 1),
        get("c2", "a", "xx", 2, 3),
    ],
    "lost append (sequential)": [
        append("c1", "a", "p", 0, 1),
        append("c1", "a", "q", 2, 3),
        get("c2", "a", "p", 4, 5),
    ],
    "lost append (concurrent appends)": [
        append("c1", "a", "p", 0, 3),
        append("c2", "a", "q", 1, 4),
        get("c3", "a", "q", 5, 6),
    ],
    "new-old inversion across clients": [
        put("c1", "a", "old", 0, 1),
        put("c1", "a", "new", 2, 10),
        get("c2", "a", "new", 3, 4),
        get("c3", "a", "old", 5, 6),
    ],
    "appends seen in two orders": [
        append("c1", "a", "p", 0, 10),
        append("c2", "a", "q", 0, 10),
        get("c3", "a", "pq", 0, 10),
        get("c4", "a", "qp", 0, 10),
    ],
    "ignored delete": [
        put("c1", "a", "v", 0, 1),
        delete("c1", "a", 2, 3),
        get("c2", "a", "v", 4, 5),
    ],
    "indeterminate write cannot un-happen": [
        put("c1", "a", "x", 0, None),
        get("c2", "a", "x", 1, 2),
        get("c2", "a", None, 3, 4),
    ],
}


@pytest.mark.parametrize("name", sorted(VIOLATIONS))
def test_violation_is_found_on_the_right_key(name: str) -> None:
    result = check(VIOLATIONS[name])
    assert result.verdict == "violation", format_result(result)
    assert result.key == "a"
    assert result.operations and all(op.key == "a" for op in result.operations)
    assert brute_force(result.operations) is False, "the witness must fail on its own"


def test_new_old_inversion_needs_the_search_not_just_last_writer() -> None:
    assert find_last_writer_proof(VIOLATIONS["new-old inversion across clients"]) is None
    outcome = search_key(VIOLATIONS["new-old inversion across clients"], 1e18, lambda: 0.0)
    assert outcome.verdict == "violation"


def test_explanation_names_key_operations_and_what_is_impossible() -> None:
    result = check(VIOLATIONS["stale read of an overwritten value"])
    text = result.explanation
    assert "key 'a'" in text
    assert "c2 get -> '1' [4, 5]" in text
    assert "c1 put '2' [2, 3]" in text
    assert "impossible" in text
    assert all(len(line) < 400 for line in text.splitlines())
    report = format_result(result)
    assert report.splitlines()[0].startswith("NOT linearizable: violation on key 'a'")


def test_explanation_of_a_search_only_violation_shows_the_prefix() -> None:
    result = check(VIOLATIONS["new-old inversion across clients"])
    assert "longest linearizable prefix" in result.explanation
    assert "stuck at:" in result.explanation
    assert len(result.operations) <= 4


def test_witness_is_small_in_a_long_history() -> None:
    rng = random.Random(7)
    ops = sequential_history(rng, 600, keys=("a", "b", "c"))
    last_a = max(i for i, op in enumerate(ops) if op.key == "a" and op.op == "get")
    first_a = next(op for op in ops if op.key == "a" and op.op == "put")
    stale = ops[last_a]
    ops[last_a] = get(stale.client, "a", first_a.value, stale.invoke, stale.complete or 0.0)
    if stale.result == first_a.value:
        pytest.skip("the seed happened to re-read the first value")
    result = check_history(ops, budget_s=5.0)
    assert result.verdict == "violation"
    assert result.key == "a"
    assert 2 <= len(result.operations) <= 4
    assert ops[last_a] in result.operations


# --- Linearizable histories -----------------------------------------------------------------

LINEARIZABLE = {
    "concurrent get sees the old value": [
        put("c1", "a", "1", 0, 1),
        put("c1", "a", "2", 2, 6),
        get("c2", "a", "1", 3, 4),
    ],
    "concurrent get sees the new value": [
        put("c1", "a", "1", 0, 1),
        put("c1", "a", "2", 2, 6),
        get("c2", "a", "2", 3, 4),
    ],
    "touching intervals are concurrent": [
        put("c1", "a", "1", 0, 1),
        get("c2", "a", None, 1, 2),
    ],
    "indeterminate write observed later took effect": [
        put("c1", "a", "x", 0, None),
        get("c2", "a", "x", 5, 6),
        get("c2", "a", "x", 7, 8),
    ],
    "indeterminate write never observed did not happen": [
        put("c1", "a", "x", 0, None),
        get("c2", "a", None, 5, 6),
        append("c1", "a", "y", 7, 8),
        get("c2", "a", "y", 9, 10),
    ],
    "indeterminate write takes effect long after its invoke": [
        put("c1", "a", "x", 0, None),
        put("c2", "a", "y", 1, 2),
        get("c2", "a", "y", 3, 4),
        get("c2", "a", "x", 5, 6),
    ],
    "indeterminate get constrains nothing": [
        put("c1", "a", "x", 0, 1),
        Operation("c2", "get", "a", None, 2, None, "nonsense"),
    ],
    "appends from several clients in overlap order": [
        append("c1", "a", "p", 0, 5),
        append("c2", "a", "q", 1, 6),
        append("c3", "a", "r", 2, 7),
        get("c4", "a", "q", 3, 4),
        get("c4", "a", "qrp", 8, 9),
    ],
    "delete then append starts from empty": [
        put("c1", "a", "v", 0, 1),
        delete("c1", "a", 2, 3),
        append("c2", "a", "w", 4, 5),
        get("c3", "a", "w", 6, 7),
    ],
}


@pytest.mark.parametrize("name", sorted(LINEARIZABLE))
def test_linearizable_history_is_ok(name: str) -> None:
    result = check(LINEARIZABLE[name])
    assert result.verdict == "ok", format_result(result)
    assert result.explanation == ""
    assert result.keys_checked == result.keys_total == 2
    assert format_result(result).startswith("linearizable: all 2 keys checked")


@pytest.mark.parametrize("order", ["pqr", "prq", "qpr", "qrp", "rpq", "rqp"])
def test_fully_concurrent_appends_allow_every_order(order: str) -> None:
    ops = [append(f"c{v}", "a", v, 0, 10) for v in "pqr"] + [get("c9", "a", order, 11, 12)]
    assert check_history(ops).verdict == "ok"


def test_empty_history_is_ok() -> None:
    result = check_history([])
    assert (result.verdict, result.keys_total) == ("ok", 0)


# --- Budgets ----------------------------------------------------------------------------------


def pathological(key: str, appends: int = 30, gets: int = 20, seed: int = 3) -> list[Operation]:
    """Fully concurrent appends and gets; linearizable, but only in one order the search
    has to discover."""
    rng = random.Random(seed)
    values = [f"{key}{n};" for n in range(appends)]
    true_order = rng.sample(values, len(values))
    ops = [append(f"w{n}", key, value, 0, 100) for n, value in enumerate(values)]
    for n in range(gets):
        seen = "".join(true_order[: rng.randrange(1, appends + 1)])
        ops.append(get(f"r{n}", key, seen, 0, 100))
    return ops


def test_tiny_budget_gives_unknown_not_a_verdict() -> None:
    result = check_history(pathological("p"), budget_s=0.01)
    assert result.verdict == "unknown"
    assert result.key == "p"
    assert "budget" in result.explanation
    assert format_result(result).startswith("unknown:")


def test_fake_clock_gives_unknown() -> None:
    clock = FakeClock(step=1.0)
    result = check_history(pathological("p"), budget_s=3.0, clock=clock)
    assert result.verdict == "unknown"
    assert result.elapsed_s >= 3.0


def test_budget_spans_all_keys() -> None:
    clock = FakeClock(step=1.0)
    ops = pathological("p") + pathological("q", seed=4)
    result = check_history([*NOISE, *ops], budget_s=3.0, clock=clock)
    assert result.verdict == "unknown"
    assert (result.keys_checked, result.keys_total) == (1, 3)


def test_violation_elsewhere_beats_unknown() -> None:
    broken = [put("c1", "z", str(n), 2 * n, 2 * n + 1) for n in range(60)]
    broken.append(get("c2", "z", "0", 200, 201))
    result = check_history(pathological("p") + broken, budget_s=0.05)
    assert result.verdict == "violation"
    assert result.key == "z"


# --- Agreement with brute force ----------------------------------------------------------------


def brute_force(ops: Sequence[Operation]) -> bool:
    """Linearizable? By trying every order that respects real time (all keys at once)."""
    live = [op for op in ops if op.is_write or op.complete is not None]
    required = frozenset(i for i, op in enumerate(live) if op.complete is not None)
    before = [
        [
            j
            for j, other in enumerate(live)
            if other.complete is not None and other.complete < op.invoke
        ]
        for op in live
    ]

    @functools.cache
    def extend(placed: frozenset[int], state: tuple[tuple[str, str], ...]) -> bool:
        if required <= placed:
            return True
        store = dict(state)
        for i, op in enumerate(live):
            if i in placed or any(j not in placed for j in before[i]):
                continue
            current = store.get(op.key)
            after = dict(store)
            if op.op == "get":
                if current != op.result:
                    continue
            elif op.op == "put":
                after[op.key] = op.value or ""
            elif op.op == "append":
                after[op.key] = (current or "") + (op.value or "")
            else:
                after.pop(op.key, None)
            if extend(placed | {i}, tuple(sorted(after.items()))):
                return True
        return False

    return extend(frozenset(), ())


KINDS: tuple[OpKind, ...] = ("get", "get", "put", "append", "append", "delete")
RESULTS = (None, "", "a", "b", "ab", "ba", "aa", "bb", "abb")


@st.composite
def small_histories(draw: st.DrawFn) -> list[Operation]:
    """Up to 7 operations on one or two keys: replayed from a random linearization, then maybe
    one get's result replaced by an arbitrary (often impossible) value."""
    count = draw(st.integers(1, 7))
    two_keys = draw(st.booleans())
    planned: list[tuple[Operation, float | None]] = []
    for n in range(count):
        kind = draw(st.sampled_from(KINDS))
        key = draw(st.sampled_from(("x", "y") if two_keys else ("x",)))
        value = draw(st.sampled_from(("a", "b", ""))) if kind in ("put", "append") else None
        invoke = float(draw(st.integers(0, 8)))
        complete = None if draw(st.integers(0, 6)) == 0 else invoke + draw(st.integers(0, 4))
        point = draw(st.floats(0.0, 1.0))
        effect: float | None = invoke + point * (6.0 if complete is None else complete - invoke)
        if complete is None and draw(st.booleans()):
            effect = None  # never took effect
        planned.append((Operation(f"c{n}", kind, key, value, invoke, complete, None), effect))
    ops = replay_effects(planned)
    gets = [i for i, op in enumerate(ops) if op.op == "get"]
    corrupt = draw(st.booleans())
    if gets and corrupt:
        i = draw(st.sampled_from(gets))
        ops[i] = Operation(
            ops[i].client,
            "get",
            ops[i].key,
            None,
            ops[i].invoke,
            ops[i].complete,
            draw(st.sampled_from(RESULTS)),
        )
    return ops


def assert_agrees(ops: list[Operation]) -> bool:
    expected = brute_force(ops)
    result = check_history(ops, budget_s=30.0)
    assert result.verdict == ("ok" if expected else "violation"), (ops, format_result(result))
    by_key: dict[str, list[Operation]] = {}
    for op in ops:
        by_key.setdefault(op.key, []).append(op)
    for key_ops in by_key.values():
        linearizable = brute_force(key_ops)
        outcome = search_key(key_ops, 1e18, lambda: 0.0)
        assert outcome.verdict == ("ok" if linearizable else "violation"), key_ops
        if find_last_writer_proof(key_ops) is not None:
            assert not linearizable, ("last-writer proof on a linearizable key", key_ops)
    if not expected:
        assert brute_force(result.operations) is False, ("witness is linearizable", ops)
    assert_reductions_are_sound(ops, expected)
    return expected


def assert_reductions_are_sound(ops: list[Operation], linearizable: bool) -> None:
    """Dropping irrelevant operations is exact; dropping an unobserved write keeps
    linearizability (so a failing subset without it proves the whole history fails)."""
    relevant = [ops[i] for i in relevant_operations(ops)]
    assert brute_force(relevant) == linearizable, ("relevant_operations is not exact", ops)
    if linearizable:
        everything = list(range(len(ops)))
        for dropped in unobserved_writes(ops, everything):
            rest = [op for i, op in enumerate(ops) if i != dropped]
            assert brute_force(rest), ("dropping an unobserved write broke", ops, dropped)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(small_histories())
def test_agrees_with_brute_force(ops: list[Operation]) -> None:
    assert_agrees(ops)


def test_agrees_with_brute_force_on_both_kinds_of_history() -> None:
    """Seeded sweep that also proves the cross-check is not vacuous: both verdicts occur."""
    rng = random.Random(2024)
    verdicts = [assert_agrees(random_small_history(rng)) for _ in range(1200)]
    assert verdicts.count(True) > 300
    assert verdicts.count(False) > 300


def random_small_history(rng: random.Random) -> list[Operation]:
    planned: list[tuple[Operation, float | None]] = []
    for n in range(rng.randint(2, 7)):
        kind = rng.choice(KINDS)
        value = rng.choice(("a", "b", "")) if kind in ("put", "append") else None
        invoke = float(rng.randint(0, 8))
        complete = None if rng.random() < 0.12 else invoke + rng.randint(0, 4)
        end = invoke + 6.0 if complete is None else complete
        effect = None if complete is None and rng.random() < 0.5 else rng.uniform(invoke, end)
        planned.append((Operation(f"c{n}", kind, "x", value, invoke, complete, None), effect))
    ops = replay_effects(planned)
    gets = [i for i, op in enumerate(ops) if op.op == "get"]
    if gets and rng.random() < 0.5:
        i = rng.choice(gets)
        old = ops[i]
        ops[i] = Operation(
            old.client, "get", "x", None, old.invoke, old.complete, rng.choice(RESULTS)
        )
    return ops


def concurrent_history(
    rng: random.Random, count: int, clients: int = 5, indeterminate: float = 0.05
) -> list[Operation]:
    """Sequential clients with overlapping calls on one key, linearizable by construction:
    each effect happens at a random instant of its call (or, for an indeterminate call, maybe
    later, maybe never). Values come from a tiny alphabet, so they repeat."""
    free = [0.0] * clients
    planned: list[tuple[Operation, float | None]] = []
    for _ in range(count):
        client = rng.randrange(clients)
        kind = rng.choice(KINDS)
        value = rng.choice(("a", "b", "c", "")) if kind in ("put", "append") else None
        invoke = free[client] + rng.randint(0, 2)
        complete = None if rng.random() < indeterminate else invoke + rng.randint(0, 6)
        free[client] = invoke + 3 if complete is None else complete
        end = invoke + 8.0 if complete is None else complete
        effect = None if complete is None and rng.random() < 0.5 else rng.uniform(invoke, end)
        op = Operation(f"c{client}", kind, "x", value, invoke, complete, None)
        planned.append((op, effect))
    return replay_effects(planned)


def test_agrees_with_brute_force_on_longer_concurrent_histories() -> None:
    """Long enough to exercise the lookahead, poison values and the memo's coverage rules."""
    rng = random.Random(99)
    verdicts = []
    for _ in range(60):
        ops = concurrent_history(rng, rng.randint(15, 28))
        gets = [i for i, op in enumerate(ops) if op.op == "get"]
        if gets and rng.random() < 0.6:
            i = rng.choice(gets)
            old = ops[i]
            ops[i] = Operation(
                old.client, "get", "x", None, old.invoke, old.complete, rng.choice(RESULTS)
            )
        verdicts.append(assert_agrees(ops))
    assert 10 < verdicts.count(True) < 50


def test_search_only_violation_in_a_long_history_gets_a_small_witness() -> None:
    rng = random.Random(5)
    planned: list[tuple[Operation, float | None]] = []
    for n in range(400):
        client = n % 6
        kind = rng.choice(KINDS)
        value = f"{n};" if kind in ("put", "append") else None
        invoke = n * 1.0
        planned.append(
            (Operation(f"c{client}", kind, "k", value, invoke, invoke + 5.5, None), invoke + 2.0)
        )
    ops = replay_effects(planned)
    last = max(i for i, op in enumerate(ops) if op.op == "get" and op.result)
    doubled = ops[last].result or ""
    doubled += doubled.split(";")[-2] + ";"
    old = ops[last]
    ops[last] = Operation(old.client, "get", "k", None, old.invoke, old.complete, doubled)
    if find_last_writer_proof(ops) is not None:
        pytest.skip("the last-writer pass caught it; this test is about the search")
    result = check_history(ops, budget_s=10.0)
    assert result.verdict == "violation"
    assert ops[last] in result.operations
    assert len(result.operations) <= 6, format_result(result)


# --- Sequential histories (property) ---------------------------------------------------------


def sequential_history(
    rng: random.Random, count: int, keys: tuple[str, ...] = ("a", "b")
) -> list[Operation]:
    """Non-overlapping operations with unique written values, results from a model store."""
    store: dict[str, str] = {}
    ops: list[Operation] = []
    now = 0.0
    for n in range(count):
        kind = rng.choice(KINDS)
        key = rng.choice(keys)
        value = f"v{n};" if kind in ("put", "append") else None
        result = store.get(key) if kind == "get" else None
        if kind == "put":
            store[key] = f"v{n};"
        elif kind == "append":
            store[key] = store.get(key, "") + f"v{n};"
        elif kind == "delete":
            store.pop(key, None)
        ops.append(Operation(f"c{n % 3}", kind, key, value, now, now + 1.0, result))
        now += 1.0 + rng.choice((0.5, 1.0, 3.0))
    return ops


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 60), st.data())
def test_sequential_histories_are_ok_and_a_corrupted_read_is_not(
    seed: int, count: int, data: st.DataObject
) -> None:
    ops = sequential_history(random.Random(seed), count)
    assert check_history(ops).verdict == "ok"
    gets = [i for i, op in enumerate(ops) if op.op == "get"]
    if not gets:
        return
    i = data.draw(st.sampled_from(gets))
    old = ops[i]
    ops[i] = Operation(old.client, "get", old.key, None, old.invoke, old.complete, "never;")
    result = check_history(ops)
    assert result.verdict == "violation"
    assert result.key == old.key
    assert ops[i] in result.operations

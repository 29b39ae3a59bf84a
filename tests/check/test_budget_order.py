"""How one time budget is shared by the keys: smallest first, and which key an unknown names.

``check_history`` decides keys smallest first so that a violation on a small key is found
before a large, hard key eats the budget; a key found only by the search (no last-writer
proof) that needs more than one clock reading (``CLOCK_EVERY_STEPS``) is where the order shows.
"""

from __future__ import annotations

from pbkv.check import Operation, check_history, format_result
from pbkv.check.last_writer import find_last_writer_proof
from pbkv.check.wgl import CLOCK_EVERY_STEPS, search_key
from tests.check.test_linearizability import NOISE, FakeClock, get, pathological, put


def inversion_after_many_puts(key: str, puts: int) -> list[Operation]:
    """``puts`` sequential puts nobody reads, then a new-old inversion across two readers: not
    linearizable, but only the search can tell, and only after walking past every put."""
    ops = [put("c1", key, f"v{n}", 2 * n, 2 * n + 1) for n in range(puts)]
    start = 2.0 * puts
    return [
        *ops,
        put("c1", key, "old", start, start + 1),
        put("c1", key, "new", start + 2, start + 10),
        get("c2", key, "new", start + 3, start + 4),
        get("c3", key, "old", start + 5, start + 6),
    ]


def test_a_smaller_key_is_decided_before_a_larger_one_eats_the_budget() -> None:
    small = inversion_after_many_puts("small", 700)
    assert find_last_writer_proof(small) is None
    steps = search_key(small, 1e18, lambda: 0.0).steps
    assert CLOCK_EVERY_STEPS < steps < 2 * CLOCK_EVERY_STEPS
    # Linearizable, but the search cannot finish it; unread puts make it the larger key.
    padding = [put("c9", "large", f"pad{n}", -2.0 * n - 2, -2.0 * n - 1) for n in range(800)]
    large = pathological("large") + padding
    assert len(large) > len(small)
    result = check_history(large + small, budget_s=3.0, clock=FakeClock(step=1.0))
    assert (result.verdict, result.key) == ("violation", "small"), format_result(result)


def test_unknown_names_the_first_key_that_ran_out_of_time() -> None:
    clock = FakeClock(step=1.0)
    ops = pathological("p") + pathological("q", seed=4)
    result = check_history([*NOISE, *ops], budget_s=3.0, clock=clock)
    assert (result.verdict, result.key) == ("unknown", "p")
    assert "ran out on key 'p'" in result.explanation

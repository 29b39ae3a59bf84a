"""The explanation's witness stands for the whole key: it is never an artefact of a write left
out that a kept get read, nor a subset whose re-check merely ran out of time.

``test_linearizability.py`` checks that every witness fails on its own, which an artefact does
too (a get of a value nobody wrote fails on its own); these cases check what it must contain.
"""

from __future__ import annotations

from pbkv.check import check_history
from pbkv.check.explain import explain_violation
from pbkv.check.last_writer import find_last_writer_proof
from pbkv.check.wgl import search_key
from tests.check.test_linearizability import FakeClock, get, pathological, put

# get 'v' returns when put 'v' is invoked (touching: concurrent, so put 'v' is its source),
# which forces put 'v' before the later get, and that one read 'x'. Not linearizable, and
# only the search shows it.
TOUCHING_SOURCE = [
    put("c1", "k", "x", 0, 1),
    get("c2", "k", "v", 3, 4),
    put("c3", "k", "v", 4, 10),
    get("c2", "k", "x", 5, 6),
]


def test_the_search_says_where_it_got_stuck() -> None:
    """``frontier`` and ``blocker`` are what the explanation starts from; here either of the
    two gets that cannot both be satisfied (which one depends on the search's pruning)."""
    outcome = search_key(TOUCHING_SOURCE, 1e18, lambda: 0.0)
    assert outcome.verdict == "violation"
    assert outcome.frontier in (1, 3)
    assert outcome.blocker in (1, 3)


def test_a_write_invoked_as_the_suspect_get_returned_stays_in_the_witness() -> None:
    """Cutting the history at the get's return must keep put 'v' (invoked at that instant):
    without it the get alone "fails" - a read of a value nobody wrote - which is not why the
    key fails."""
    assert find_last_writer_proof(TOUCHING_SOURCE) is None
    result = check_history(TOUCHING_SOURCE, budget_s=5.0)
    assert result.verdict == "violation"
    assert sorted(result.operations, key=lambda op: op.invoke) == TOUCHING_SOURCE
    assert "these 4 operations" in result.explanation


def test_a_subset_whose_re_check_runs_out_of_time_is_not_a_witness() -> None:
    """The first subset the shrinker tries (everything up to the appends' gets) is
    linearizable but too hard for the time it gets; undecided must count as passing, or the
    report would show a linearizable subset as the violation."""
    ops = pathological("k")
    impossible = get("z", "k", "never", 150, 200)
    ops.append(impossible)
    witness, text = explain_violation("k", ops, 3.5, FakeClock(step=1.0))
    assert impossible in witness
    assert "ran out of time re-checking" in text

"""The last-writer pass proves the common violations outright, with the right proof.

The brute-force cross-check in ``test_linearizability.py`` only compares verdicts, and the WGL
search decides every key the pass leaves alone, so a pass that quietly proved less (or named
the wrong writes) would go unnoticed there. These cases pin what the pass must find: which get
is impossible, every write that could have produced its result, and the completed write forced
between each such write and the get.
"""

from __future__ import annotations

import pytest

from pbkv.check import Operation, check_history
from pbkv.check.last_writer import INITIAL, LastWriterProof, find_last_writer_proof
from tests.check.test_linearizability import append, delete, get, put

# name: (history of one key, the proof the pass must give)
PROVED: dict[str, tuple[list[Operation], LastWriterProof]] = {
    "stale read of an overwritten value": (
        [put("c1", "a", "1", 0, 1), put("c1", "a", "2", 2, 3), get("c2", "a", "1", 4, 5)],
        LastWriterProof(2, ((0, 1),)),
    ),
    "stale read of the initial missing value": (
        [put("c1", "a", "1", 0, 1), get("c2", "a", None, 2, 3)],
        LastWriterProof(1, ((INITIAL, 0),)),
    ),
    # The only put of 'y' was invoked after the get returned: it cannot be the source.
    "read of a write that began after the read ended": (
        [put("c1", "a", "x", 0, 1), get("c2", "a", "y", 2, 3), put("c3", "a", "y", 4, 5)],
        LastWriterProof(1, ()),
    ),
    # The first write invoked after put '1' completed ends late; put '3', invoked later,
    # completes before the get: the forcing write is the earliest to complete, not the first.
    "stale read behind a long concurrent write": (
        [
            put("c1", "a", "1", 0, 1),
            put("c2", "a", "2", 2, 10),
            put("c3", "a", "3", 3, 4),
            get("c4", "a", "1", 5, 6),
        ],
        LastWriterProof(3, ((0, 2),)),
    ),
    "a completed delete ignored": (
        [put("c1", "a", "v", 0, 1), delete("c1", "a", 2, 3), get("c2", "a", "v", 4, 5)],
        LastWriterProof(2, ((0, 1),)),
    ),
    # Only the second get is stale: the pass must look past a get that is fine.
    "stale read after a good read": (
        [
            put("c1", "a", "1", 0, 1),
            get("c2", "a", "1", 2, 3),
            put("c1", "a", "2", 4, 5),
            get("c2", "a", "1", 6, 7),
        ],
        LastWriterProof(3, ((0, 2),)),
    ),
    # Two puts of '1', each overwritten: both are sources, each with its own forcing write.
    "every source of the value overwritten": (
        [
            put("c1", "a", "1", 0, 1),
            put("c1", "a", "2", 2, 3),
            put("c2", "a", "1", 4, 5),
            put("c2", "a", "3", 6, 7),
            get("c3", "a", "1", 8, 9),
        ],
        LastWriterProof(4, ((2, 3), (0, 1))),
    ),
    "lost acknowledged append": (
        [append("c1", "a", "p", 0, 1), append("c1", "a", "q", 2, 3), get("c2", "a", "p", 4, 5)],
        LastWriterProof(2, ((0, 1),)),
    ),
}


@pytest.mark.parametrize("name", sorted(PROVED))
def test_the_pass_proves_the_violation_with_every_source(name: str) -> None:
    ops, expected = PROVED[name]
    assert find_last_writer_proof(ops) == expected


@pytest.mark.parametrize("name", sorted(PROVED))
def test_the_witness_of_a_proof_is_the_get_its_sources_and_the_forcing_writes(name: str) -> None:
    """Leaving a source out would show a subset that fails for another reason (a value nobody
    wrote) instead of the real one (a value overwritten)."""
    ops, expected = PROVED[name]
    result = check_history(ops, budget_s=5.0)
    assert result.verdict == "violation"
    named = {expected.get} | {i for pair in expected.sources for i in pair if i != INITIAL}
    assert set(result.operations) == {ops[i] for i in named}
    assert expected.indices() == sorted(named)
    assert "impossible:" in result.explanation


NOT_PROVED = {
    "a write invoked exactly when the get returned may be its source": [
        put("c1", "a", "1", 0, 1),
        get("c2", "a", "2", 2, 3),
        put("c3", "a", "2", 3, 4),
    ],
    "a write completing exactly when the get began is not forced before it": [
        put("c1", "a", "1", 0, 1),
        put("c1", "a", "2", 2, 3),
        get("c2", "a", "1", 3, 4),
    ],
    "a write invoked exactly when the source completed may precede the source": [
        put("c1", "a", "1", 0, 1),
        put("c2", "a", "2", 1, 2),
        get("c3", "a", "1", 3, 4),
    ],
    "an indeterminate source may take effect at any time": [
        put("c1", "a", "1", 0, None),
        put("c2", "a", "2", 1, 2),
        get("c3", "a", "1", 3, 4),
    ],
}


@pytest.mark.parametrize("name", sorted(NOT_PROVED))
def test_touching_intervals_and_indeterminate_sources_are_never_proved(name: str) -> None:
    ops = NOT_PROVED[name]
    assert find_last_writer_proof(ops) is None
    assert check_history(ops).verdict == "ok"

"""Linearizability checking of recorded key-value histories.

Theory of operation: ``history`` defines the ``Operation`` record and its JSON-lines format;
``last_writer`` proves the common violations in O(n log n); ``wgl`` decides one key's operations
with the Wing-Gong/Lowe search; ``linearizability`` splits a history by key and runs both under
one time budget; ``explain`` shrinks a violation to a small failing subset and describes it.
Typical use::

    result = check_history(load_history("run.jsonl"), budget_s=10.0)
    print(format_result(result))
"""

from pbkv.check.history import (
    HistoryError,
    Operation,
    OpKind,
    dump_history_lines,
    load_history,
    next_value,
    parse_history_lines,
    replay_effects,
    save_history,
)
from pbkv.check.linearizability import CheckResult, check_history, format_result

__all__ = [
    "CheckResult",
    "HistoryError",
    "OpKind",
    "Operation",
    "check_history",
    "dump_history_lines",
    "format_result",
    "load_history",
    "next_value",
    "parse_history_lines",
    "replay_effects",
    "save_history",
]

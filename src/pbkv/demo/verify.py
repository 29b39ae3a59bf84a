"""The final verification: after the workload stopped, do the replicas hold what was promised?

Theory of operation: four checks on plain data (the primary's and the backup's own dumps, the
recorded history, and one final read of every key), so each can be tested on a deliberately
damaged dump without a cluster:

1. *replicas agree*: the primary and the backup hold exactly the same keys and values;
2. *nothing lost*: every acknowledged append token is in its key's value on the primary (and a
   final read of every key returned what the primary holds);
3. *nothing twice*: no append token appears more than once in any value on either replica (an
   operation applied twice, a retry that slipped past exactly-once);
4. *linearizable*: the recorded history, final reads included, passes ``pbkv.check``.

Each returns a ``Check`` with a one-line detail that names the first offending key.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from pbkv.check import Operation, check_history, format_result
from pbkv.demo.workload import TOKEN

CHECK_BUDGET_S_DEFAULT: Final = 20.0
SHOWN_MAX: Final = 3


@dataclass(frozen=True, slots=True)
class Check:
    """One verified claim: ``name`` says what was promised, ``detail`` what was seen."""

    name: str
    ok: bool
    detail: str = ""


def _shown(items: Sequence[str]) -> str:
    more = f" and {len(items) - SHOWN_MAX} more" if len(items) > SHOWN_MAX else ""
    return ", ".join(items[:SHOWN_MAX]) + more


def replicas_agree(primary: Mapping[str, str], backup: Mapping[str, str]) -> Check:
    """The backup holds exactly the primary's data."""
    name = "primary and backup hold the same data"
    only_primary = sorted(set(primary) - set(backup))
    only_backup = sorted(set(backup) - set(primary))
    differ = sorted(k for k in set(primary) & set(backup) if primary[k] != backup[k])
    problems: list[str] = []
    if only_primary:
        problems.append(f"missing on the backup: {_shown(only_primary)}")
    if only_backup:
        problems.append(f"only on the backup: {_shown(only_backup)}")
    if differ:
        key = differ[0]
        problems.append(
            f"values differ for {_shown(differ)} "
            f"(primary {_clip(primary[key])!r}, backup {_clip(backup[key])!r})"
        )
    if problems:
        return Check(name, False, "; ".join(problems))
    return Check(name, True, f"{len(primary)} keys, identical")


def _clip(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def acknowledged_present(
    primary: Mapping[str, str], history: Iterable[Operation], final_reads: Mapping[str, str | None]
) -> Check:
    """Every acknowledged append is on the primary, and the final reads saw the primary's data."""
    name = "every acknowledged write is present"
    missing: list[str] = []
    acknowledged = 0
    for op in history:
        if op.op == "append" and op.complete is not None and op.value and TOKEN.fullmatch(op.value):
            acknowledged += 1
            if op.value not in primary.get(op.key, ""):
                missing.append(f"{op.value} on {op.key}")
    if missing:
        return Check(name, False, f"{len(missing)} acknowledged appends missing: {_shown(missing)}")
    mismatched = sorted(k for k, v in final_reads.items() if primary.get(k) != v)
    if mismatched:
        key = mismatched[0]
        return Check(
            name,
            False,
            f"a final read of {key} returned {_clip(str(final_reads[key]))!r} but the primary "
            f"holds {_clip(str(primary.get(key)))!r}",
        )
    return Check(name, True, f"{acknowledged} acknowledged appends all present")


def nothing_applied_twice(replicas: Mapping[str, Mapping[str, str]]) -> Check:
    """No unique append token appears twice in any value (``replicas``: ``{label: data}``)."""
    name = "no write applied twice"
    tokens = 0
    for label, data in replicas.items():
        tokens = 0
        for key, value in data.items():
            counts = Counter(TOKEN.findall(value))
            tokens += len(counts)
            doubled = sorted(t for t, n in counts.items() if n > 1)
            if doubled:
                return Check(name, False, f"{label} {key} holds {_shown(doubled)} more than once")
    where = " on each replica" if len(replicas) > 1 else ""
    return Check(name, True, f"{tokens} unique appended tokens, each once{where}")


def linearizable(history: Sequence[Operation], budget_s: float = CHECK_BUDGET_S_DEFAULT) -> Check:
    """The recorded history is linearizable (``pbkv.check``)."""
    name = "the recorded history is linearizable"
    result = check_history(history, budget_s=budget_s)
    indeterminate = sum(1 for op in history if op.complete is None)
    if result.verdict == "ok":
        return Check(
            name,
            True,
            f"{len(history)} operations on {result.keys_total} keys, "
            f"{indeterminate} indeterminate, checked in {result.elapsed_s:.2f} s",
        )
    if result.verdict == "unknown":
        return Check(name, False, f"undecided within {budget_s:g} s: {result.explanation}")
    return Check(name, False, " ".join(format_result(result).split())[:500])


def verify(
    primary: Mapping[str, str],
    backup: Mapping[str, str] | None,
    history: Sequence[Operation],
    final_reads: Mapping[str, str | None],
    budget_s: float = CHECK_BUDGET_S_DEFAULT,
) -> list[Check]:
    """All four checks; ``backup`` None (no backup in the final view) fails the first."""
    checks = []
    if backup is None:
        checks.append(Check("primary and backup hold the same data", False, "no backup to compare"))
        replicas: dict[str, Mapping[str, str]] = {"primary": primary}
    else:
        checks.append(replicas_agree(primary, backup))
        replicas = {"primary": primary, "backup": backup}
    checks.append(acknowledged_present(primary, history, final_reads))
    checks.append(nothing_applied_twice(replicas))
    checks.append(linearizable(history, budget_s))
    return checks

"""The final verification catches deliberately damaged replicas.

A checker is trusted only after it is seen failing: each test feeds the checks a healthy state
and then the same state with one kind of damage, and expects exactly that damage to be named.
"""

from __future__ import annotations

from pbkv.check import Operation
from pbkv.demo.verify import (
    acknowledged_present,
    linearizable,
    nothing_applied_twice,
    replicas_agree,
    verify,
)


def _history() -> list[Operation]:
    return [
        Operation("c1", "append", "log-a", "[c1.1]", 0.0, 1.0, None),
        Operation("c2", "append", "log-a", "[c2.1]", 0.5, 1.5, None),
        Operation("c1", "put", "reg-a", "c1.2", 2.0, 3.0, None),
        Operation("c2", "get", "reg-a", None, 4.0, 5.0, "c1.2"),
        Operation("c3", "append", "log-a", "[c3.1]", 6.0, None, None),  # indeterminate
    ]


HEALTHY = {"log-a": "[c1.1][c2.1]", "reg-a": "c1.2"}
FINAL_READS: dict[str, str | None] = {"log-a": "[c1.1][c2.1]", "reg-a": "c1.2"}


def test_a_healthy_state_passes_every_check() -> None:
    checks = verify(HEALTHY, dict(HEALTHY), _history(), FINAL_READS, budget_s=5.0)
    assert [c.ok for c in checks] == [True, True, True, True], checks


def test_a_backup_with_a_divergent_value_fails() -> None:
    check = replicas_agree(HEALTHY, {**HEALTHY, "reg-a": "damaged"})
    assert not check.ok
    assert "values differ for reg-a" in check.detail and "'damaged'" in check.detail


def test_a_backup_missing_a_key_or_holding_an_extra_one_fails() -> None:
    missing = replicas_agree(HEALTHY, {"log-a": HEALTHY["log-a"]})
    assert not missing.ok and "missing on the backup: reg-a" in missing.detail
    extra = replicas_agree(HEALTHY, {**HEALTHY, "intruder": "x"})
    assert not extra.ok and "only on the backup: intruder" in extra.detail


def test_a_lost_acknowledged_append_fails() -> None:
    damaged = {**HEALTHY, "log-a": "[c1.1]"}
    check = acknowledged_present(damaged, _history(), {**FINAL_READS, "log-a": "[c1.1]"})
    assert not check.ok and "[c2.1] on log-a" in check.detail


def test_a_lost_indeterminate_append_is_allowed() -> None:
    assert acknowledged_present(HEALTHY, _history(), FINAL_READS).ok


def test_a_final_read_that_disagrees_with_the_primary_fails() -> None:
    check = acknowledged_present(HEALTHY, _history(), {**FINAL_READS, "reg-a": "stale"})
    assert not check.ok and "final read of reg-a returned 'stale'" in check.detail


def test_an_append_applied_twice_fails_on_either_replica() -> None:
    doubled = {**HEALTHY, "log-a": "[c1.1][c2.1][c2.1]"}
    on_backup = nothing_applied_twice({"primary": HEALTHY, "backup": doubled})
    assert not on_backup.ok and on_backup.detail == "backup log-a holds [c2.1] more than once"
    assert nothing_applied_twice({"primary": HEALTHY, "backup": HEALTHY}).ok


def test_a_non_linearizable_history_fails() -> None:
    stale_read = [
        *_history(),
        Operation("c1", "put", "reg-a", "c1.9", 10.0, 11.0, None),
        Operation("c2", "get", "reg-a", None, 12.0, 13.0, "c1.2"),  # reads the old value
    ]
    check = linearizable(stale_read, budget_s=5.0)
    assert not check.ok and "reg-a" in check.detail


def test_verify_reports_every_damage_at_once() -> None:
    damaged_backup = {**HEALTHY, "reg-a": "damaged", "log-a": "[c1.1][c1.1][c2.1]"}
    checks = verify(HEALTHY, damaged_backup, _history(), FINAL_READS, budget_s=5.0)
    assert [c.ok for c in checks] == [False, True, False, True]


def test_no_backup_at_the_end_fails_the_replica_check() -> None:
    checks = verify(HEALTHY, None, _history(), FINAL_READS, budget_s=5.0)
    assert not checks[0].ok and checks[0].detail == "no backup to compare"

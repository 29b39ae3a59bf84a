"""The etcd view audit's rules on hand-built histories and log lines (no etcd needed).

``tests/etcd/test_fencing.py`` runs the audit against a real etcd; these cases pin each rule
on its own: V1 (one configuration per view number), view numbers never going down from one
write to the next, and every view a server learned or a view service announced was written.
"""

from __future__ import annotations

from pbkv.check.etcd_audit import audit, log_views

HISTORY = [(10, 1, ("s1", "-")), (11, 2, ("s1", "s2")), (12, 2, ("s1", "s2")), (13, 3, ("s2", "-"))]


def learned(number: int, primary: str, backup: str) -> str:
    view = f'view="view {number} (primary={primary}, backup={backup})"'
    return f"2026-01-01T00:00:00Z server={primary} view={number} view_learned role=primary {view}"


def announced(number: int, primary: str, backup: str) -> str:
    return (
        f"2026-01-01T00:00:00Z server=vs view={number} view_change primary={primary} "
        f"backup={backup} previous_primary=- previous_backup=-"
    )


def test_a_consistent_history_and_logs_pass() -> None:
    """A view written again (acknowledged later) under its own number is no problem."""
    lines = [learned(2, "s1", "s2"), announced(3, "s2", "-"), "unrelated line view=3"]
    report = audit(HISTORY, lines)
    assert report.ok, report.problems
    assert (report.writes, report.numbers, report.log_views) == (4, 3, 2)


def test_two_configurations_under_one_number_break_v1() -> None:
    report = audit([*HISTORY, (14, 3, ("s3", "-"))], [])
    assert report.problems == ["revision 14: view 3 is ('s3', '-'), earlier ('s2', '-') (V1)"]


def test_every_write_below_the_highest_number_so_far_is_reported() -> None:
    history = [(1, 3, ("s1", "-")), (2, 1, ("s1", "-")), (3, 2, ("s1", "-"))]
    assert audit(history, []).problems == [
        "revision 2: view 1 after view 3",
        "revision 3: view 2 after view 3",
    ]


def test_a_logged_view_etcd_never_held_is_reported() -> None:
    lines = [learned(4, "s1", "-"), announced(5, "s2", "s1")]
    problems = audit(HISTORY, lines).problems
    assert len(problems) == 2
    assert problems[0].startswith("view 4 was never written to etcd: ")
    assert problems[1].startswith("view 5 was never written to etcd: ")


def test_a_logged_view_with_another_configuration_is_reported() -> None:
    for line in (learned(2, "s2", "s1"), announced(2, "s2", "s1")):
        problems = audit(HISTORY, [line]).problems
        assert problems == [f"view 2 is ('s1', 's2') in etcd but ('s2', 's1'): {line}"]


def test_log_views_reads_both_kinds_of_line_and_several_backups() -> None:
    lines = [learned(7, "a:1", "b:1,c:1"), announced(8, "b:1", "-"), "view_change view=9"]
    assert [(number, config) for number, config, _ in log_views(lines)] == [
        (7, ("a:1", "b:1,c:1")),
        (8, ("b:1", "-")),
    ]

"""`pbkv check-history`: the exit-code contract outside tools depend on (0/1/2/3)."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from pbkv.cli.check_commands import check_history_command


def write_history(path: Path, rows: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def op(
    client: str,
    kind: str,
    key: str,
    value: str | None,
    invoke: float,
    complete: float | None,
    result: str | None = None,
) -> dict[str, object]:
    return {
        "client": client,
        "op": kind,
        "key": key,
        "value": value,
        "invoke": invoke,
        "complete": complete,
        "result": result,
    }


def run(path: Path, *extra: str) -> tuple[int, str]:
    outcome = CliRunner().invoke(check_history_command, [str(path), *extra])
    return outcome.exit_code, outcome.output


def test_linearizable_history_exits_0(tmp_path: Path) -> None:
    path = write_history(
        tmp_path / "h.jsonl",
        [
            op("c1", "put", "a", "1", 0, 1),
            op("c2", "append", "a", "2", 0.5, 2),
            op("c3", "get", "a", None, 3, 4, "12"),
        ],
    )
    code, output = run(path)
    assert code == 0, output
    assert output.startswith("linearizable")


def test_stale_read_exits_1_and_names_the_key(tmp_path: Path) -> None:
    path = write_history(
        tmp_path / "h.jsonl",
        [
            op("c1", "put", "k", "old", 0, 1),
            op("c1", "put", "k", "new", 2, 3),
            op("c2", "get", "k", None, 4, 5, "old"),
        ],
    )
    code, output = run(path)
    assert code == 1
    assert "'k'" in output and "old" in output


def test_indeterminate_write_may_have_happened(tmp_path: Path) -> None:
    path = write_history(
        tmp_path / "h.jsonl",
        [
            op("c1", "put", "k", "x", 0, None),
            op("c2", "get", "k", None, 5, 6, "x"),
            op("c2", "get", "k", None, 7, 8, "x"),
        ],
    )
    assert run(path)[0] == 0


def test_malformed_file_exits_2_with_line_number(tmp_path: Path) -> None:
    path = tmp_path / "h.jsonl"
    path.write_text(json.dumps(op("c1", "put", "k", "x", 0, 1)) + "\n{not json\n")
    code, output = run(path)
    assert code == 2
    assert "line 2" in output


def test_missing_file_exits_2(tmp_path: Path) -> None:
    assert run(tmp_path / "absent.jsonl")[0] == 2


def test_undecided_within_budget_exits_3(tmp_path: Path) -> None:
    # 40 fully concurrent appends and a read of one particular order of all of them: every
    # subset of appends is a reachable state, so the search cannot finish in 50 ms.
    values = [f"v{i:02d}" for i in range(40)]
    rows = [op(f"c{i}", "append", "k", value, 0, 100) for i, value in enumerate(values)]
    rows.append(op("r", "get", "k", None, 0, 100, "".join(reversed(values))))
    code, output = run(write_history(tmp_path / "h.jsonl", rows), "--budget", "0.05")
    assert code == 3, output
    assert "budget" in output

"""History format: round trips, and every malformed line names its line number."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pbkv.check import (
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

GOOD = {
    "client": "c1",
    "op": "put",
    "key": "k",
    "value": "v",
    "invoke": 1.5,
    "complete": 2.25,
    "result": None,
}


def line(**changes: object) -> str:
    row = {**GOOD, **changes}
    return json.dumps(row)


def sample() -> list[Operation]:
    return [
        Operation("c1", "put", "k", "v", 0.0, 1.0, None),
        Operation("c2", "get", "k", None, 0.5, 2.0, "v"),
        Operation("c2", "get", "other", None, 3, 4, None),
        Operation("c3", "append", "k", "", 1.0, None, None),
        Operation("c3", "delete", "k", None, 5.0, 5.0, None),
        Operation("c4", "get", "k", None, 6.0, None, None),
        Operation("c\u00e9", "put", "k\n", 'multi\nline "quoted"', 1e-9, 1e9, None),
    ]


def test_round_trip_through_text() -> None:
    ops = sample()
    text = "".join(dump_history_lines(ops))
    assert text.count("\n") == len(ops)
    assert parse_history_lines(text.splitlines(keepends=True)) == ops


def test_round_trip_through_file(tmp_path: Path) -> None:
    path = tmp_path / "history.jsonl"
    save_history(path, sample())
    assert load_history(path) == sample()


def test_blank_lines_and_integer_times_are_fine() -> None:
    ops = parse_history_lines(["", line(invoke=1, complete=2), "   ", line()])
    assert [op.invoke for op in ops] == [1.0, 1.5]
    assert isinstance(ops[0].invoke, float)


def test_unknown_fields_are_ignored() -> None:
    assert parse_history_lines([line(extra="x")])[0].value == "v"


@pytest.mark.parametrize(
    ("bad", "fragment"),
    [
        ("{not json", "bad JSON"),
        ('{"client": "c1"', "bad JSON"),
        ("[1, 2]", "Expected `object`"),
        (json.dumps({k: v for k, v in GOOD.items() if k != "key"}), "missing required field `key`"),
        (json.dumps({k: v for k, v in GOOD.items() if k != "complete"}), "`complete`"),
        (line(client=7), "$.client"),
        (line(invoke="soon"), "$.invoke"),
        (line(complete=True), "$.complete"),
        (line(op="cas"), "'cas'"),
        (line(complete=1.0), "before invoke"),
        (line(complete=2.5).replace("2.5", "1e400"), "$.complete"),
        (line(complete=float("inf")), "bad JSON"),
        (line(value=None), "put needs a string value"),
        (line(op="append", value=None), "append needs a string value"),
        (line(op="get", value="v"), "get takes no value"),
        (line(op="delete", value="v"), "delete takes no value"),
        (line(result=3), "$.result"),
    ],
)
def test_malformed_line_names_line_number(bad: str, fragment: str) -> None:
    with pytest.raises(HistoryError) as caught:
        parse_history_lines([line(), "", bad, line()])
    message = str(caught.value)
    assert message.startswith("line 3: "), message
    assert fragment in message, message
    assert "\n" not in message


def test_history_error_is_a_value_error(tmp_path: Path) -> None:
    path = tmp_path / "h.jsonl"
    path.write_text(line() + "\n" + "nonsense\n")
    with pytest.raises(ValueError, match=r"^line 2: bad JSON"):
        load_history(path)


def test_operation_rejects_impossible_times() -> None:
    with pytest.raises(ValueError, match="before invoke"):
        Operation("c", "get", "k", None, 2.0, 1.0, None)
    with pytest.raises(ValueError, match="finite"):
        Operation("c", "get", "k", None, float("nan"), None, None)
    with pytest.raises(ValueError, match="unknown op"):
        Operation("c", "cas", "k", None, 1.0, None, None)  # type: ignore[arg-type]


def test_describe_is_one_line() -> None:
    assert Operation("c1", "put", "k", "v", 1.0, 2.0, None).describe() == "c1 put 'v' [1.0, 2.0]"
    get = Operation("c2", "get", "k", None, 1.0, None, None)
    assert get.describe() == "c2 get -> None [1.0, never returned]"


def test_next_value_semantics() -> None:
    def op(kind: OpKind, value: str | None = None) -> Operation:
        return Operation("c", kind, "k", value, 0.0, 1.0, None)

    assert next_value(op("append", "x"), None) == "x"
    assert next_value(op("append", "y"), "x") == "xy"
    assert next_value(op("put", ""), "x") == ""
    assert next_value(op("delete"), "x") is None
    assert next_value(op("get"), "x") == "x"


def test_replay_effects_orders_by_effect_instant_and_skips_non_effects() -> None:
    planned: list[tuple[Operation, float | None]] = [
        (Operation("c1", "append", "k", "a", 0.0, 9.0, None), 5.0),
        (Operation("c2", "append", "k", "b", 1.0, None, None), None),
        (Operation("c3", "append", "k", "c", 2.0, 9.0, None), 3.0),
        (Operation("c4", "get", "k", None, 4.0, 4.5, "ignored"), 4.0),
        (Operation("c4", "get", "k", None, 6.0, 7.0, None), 6.0),
        (Operation("c5", "get", "other", None, 6.0, 7.0, None), 6.5),
    ]
    results = [op.result for op in replay_effects(planned) if op.op == "get"]
    assert results == ["c", "ca", None]

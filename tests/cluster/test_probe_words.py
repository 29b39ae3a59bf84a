"""``pbkv cluster probe`` says what the server answered in words a student reads: a missing key
printed ``ok: None``, Python's word. The server is a stand-in (``monkeypatch``)."""

from __future__ import annotations

import pytest

from pbkv.cluster import rpc
from pbkv.core.messages import AnyMessage, Reply


def _answering(monkeypatch: pytest.MonkeyPatch, reply: Reply) -> None:
    def call(address: str, message: AnyMessage, timeout_s: float) -> Reply:
        return reply

    monkeypatch.setattr(rpc, "call", call)


def test_a_missing_key_is_no_such_key_not_none(monkeypatch: pytest.MonkeyPatch) -> None:
    _answering(monkeypatch, Reply("probe", 0, "ok", None))
    assert rpc.probe_get("127.0.0.1:7001", "nosuchkey") == "ok: no such key"  # was "ok: None"


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (Reply("probe", 0, "ok", "v"), "ok: 'v'"),
        (Reply("probe", 0, "ok", "None"), "ok: 'None'"),  # a value, quoted: not the words above
        (Reply("probe", 0, "ok", "no such key"), "ok: 'no such key'"),
        (Reply("probe", 0, "wrong_server"), "wrong_server"),
        (
            Reply("probe", 0, "wrong_server", None, "A is backup (synced) in view 5"),
            "wrong_server: A is backup (synced) in view 5",  # what the server said, for the lab
        ),
    ],
)
def test_values_and_refusals_are_printed_as_before(
    monkeypatch: pytest.MonkeyPatch, reply: Reply, expected: str
) -> None:
    _answering(monkeypatch, reply)
    assert rpc.probe_get("127.0.0.1:7001", "k") == expected

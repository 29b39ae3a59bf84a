"""``pbkv shell`` splits a line as ``shlex.split`` does, in linear time (review: shlex took 15 s
of CPU for a 1 MB ``SET`` line: it grows each word one character at a time)."""

from __future__ import annotations

import re
import shlex
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pbkv.cli.client_commands import shell_line
from pbkv.cli.words import split_words

MIB = 1 << 20


def _shlex_or_error(line: str) -> list[str] | str:
    try:
        return shlex.split(line)
    except ValueError as error:
        return str(error)


def _words_or_error(line: str) -> list[str] | str:
    try:
        return split_words(line)
    except ValueError as error:
        return str(error)


@settings(max_examples=2000, deadline=None)
@given(st.text(alphabet=" \t\r\n'\"\\a\xa0\x0bé", max_size=16))
def test_the_words_and_errors_are_those_of_shlex(line: str) -> None:
    assert _words_or_error(line) == _shlex_or_error(line)


class RecordingStore:
    def __init__(self) -> None:
        self.puts: list[tuple[str, str]] = []

    def put(self, key: str, value: str) -> None:
        self.puts.append((key, value))


def test_a_one_mib_set_line_takes_well_under_a_second() -> None:
    store = RecordingStore()
    lines = [f"SET k {'a' * MIB}", f"SET k '{'a b' * (MIB // 3)}'", f'SET k "{"x" * MIB}"']
    for line in lines:
        started = time.perf_counter()
        assert shell_line(store, "unused", line)  # type: ignore[arg-type]  # put is all it uses
        assert time.perf_counter() - started < 1.0, line[:20]
    assert [len(value) for _, value in store.puts] == [MIB, 3 * (MIB // 3), MIB]


def test_values_keep_their_meaning() -> None:
    store = RecordingStore()
    for line in ("SET k hello   world", 'PUT k "a  b"', "set k it\\'s", "SET k 'x'\"y\"z"):
        shell_line(store, "unused", line)  # type: ignore[arg-type]
    assert store.puts == [("k", "hello world"), ("k", "a  b"), ("k", "it's"), ("k", "xyz")]


@pytest.mark.parametrize(
    ("line", "said"),
    [
        ("GET", "usage: GET key"),
        ("get a b", "usage: GET key"),
        ("SET k", "usage: SET key value"),
        ("append", "usage: APPEND key value"),
        ("del", "usage: DEL key"),
        ("STATUS now", "usage: STATUS (no arguments)"),
        ("FOO bar baz", "bad command 'FOO'"),  # the command, not the whole (maybe 1 MiB) line
    ],
)
def test_a_known_command_with_the_wrong_words_gets_its_usage(line: str, said: str) -> None:
    store = RecordingStore()
    with pytest.raises(ValueError, match=f"^{re.escape(said)} \\(HELP lists the commands\\)$"):
        shell_line(store, "unused", line)  # type: ignore[arg-type]
    assert store.puts == []

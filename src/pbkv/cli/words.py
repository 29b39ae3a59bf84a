"""Splitting a ``pbkv shell`` line into words as ``shlex.split`` does, in linear time.

``shlex`` reads a line one character at a time and grows each word by string concatenation: a
``SET k <1 MiB value>`` line took 15 s of CPU (review). The same POSIX rules, with the same
results and errors (a property test compares them), by pieces instead of characters:
whitespace is space, tab, CR and LF; ``'...'`` is literal; inside ``"..."`` a backslash escapes
only ``"`` and ``\\``; elsewhere it escapes any character; adjacent pieces make one word. A line
without quotes or backslashes is split by one regular expression.
"""

from __future__ import annotations

import re
from typing import Final

_WHITESPACE: Final = re.compile(r"[ \t\r\n]+")
_QUOTING: Final = re.compile(r"""['"\\]""")
_PIECE: Final = re.compile(
    r"""(?P<space>[ \t\r\n]+)"""
    r"""|(?P<bare>[^ \t\r\n'"\\]+)"""
    r"""|'(?P<single>[^']*)'"""
    r'''|"(?P<double>[^"\\]*(?:\\.[^"\\]*)*)"'''
    r"""|\\(?P<escaped>.)""",
    re.DOTALL,
)
_DOUBLE_ESCAPE: Final = re.compile(r'\\(["\\])')
_ESCAPE_AT_END: Final = re.compile(r'\\|"[^"\\]*(?:\\.[^"\\]*)*\\', re.DOTALL)


def split_words(line: str) -> list[str]:
    """The words of ``line`` (``shlex.split`` semantics).

    Raises:
        ValueError: ``No closing quotation`` or ``No escaped character``, as ``shlex``.
    """
    if not _QUOTING.search(line):
        return [word for word in _WHITESPACE.split(line) if word]
    words: list[str] = []
    word: list[str] | None = None
    position = 0
    while position < len(line):
        piece = _PIECE.match(line, position)
        if piece is None:
            raise ValueError(_unfinished(line[position:]))
        position = piece.end()
        kind = piece.lastgroup
        if kind == "space":
            if word is not None:
                words.append("".join(word))
            word = None
            continue
        text = piece.group(kind or "")
        if kind == "double":
            text = _DOUBLE_ESCAPE.sub(r"\1", text)
        if word is None:
            word = []
        word.append(text)
    if word is not None:
        words.append("".join(word))
    return words


def _unfinished(rest: str) -> str:
    """Why no piece matches at ``rest``: a backslash with nothing after it to escape (also
    inside an open double quote), else a quote that never closes."""
    return "No escaped character" if _ESCAPE_AT_END.fullmatch(rest) else "No closing quotation"

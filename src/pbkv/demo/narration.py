"""One line of narration per step, with the time since the demo started, kept for the report.

``[ 3.2s] primary-failure: kill -9 primary 127.0.0.1:7102 (pid 4242)``. Lines come from the
scenario thread and from the view watcher thread, so ``say`` holds a lock. On a terminal the
time is dim, the scenario name coloured and view changes bold; piped, the text is plain.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Literal, TextIO

import click

LineKind = Literal["step", "command", "view", "check", "note"]
KIND_STYLES: Final[dict[str, dict[str, object]]] = {
    "view": {"bold": True, "fg": "cyan"},
    "command": {"fg": "yellow"},
    "note": {"dim": True},
}


@dataclass(frozen=True, slots=True)
class Line:
    """One narrated line.

    Attributes:
        elapsed_s: seconds since the demo started.
        wall: wall-clock time (``time.time()``), to match log lines.
        scenario: which scenario said it (``setup``, ``basic`` ...).
        kind: ``step``, ``command`` (an equivalent ``pbkv`` command), ``view``, ``check``,
            ``note``.
        text: the narration.
        ok: for checks, whether it passed.
    """

    elapsed_s: float
    wall: float
    scenario: str
    kind: LineKind
    text: str
    ok: bool | None = None

    def render(self) -> str:
        return f"[{self.elapsed_s:5.1f}s] {self.scenario}: {self.text}"


class Narrator:
    """Prints and records narration lines."""

    def __init__(
        self,
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
        colour: bool | None = None,
    ) -> None:
        self.stream = stream or sys.stdout
        self.clock = clock
        self.started = clock()
        self.colour = self.stream.isatty() if colour is None else colour
        self.lines: list[Line] = []
        self.scenario = "setup"
        self._lock = threading.Lock()

    def elapsed(self, moment: float | None = None) -> float:
        return (self.clock() if moment is None else moment) - self.started

    def say(
        self,
        text: str,
        kind: LineKind = "step",
        scenario: str | None = None,
        ok: bool | None = None,
    ) -> Line:
        with self._lock:
            line = Line(self.elapsed(), time.time(), scenario or self.scenario, kind, text, ok)
            self.lines.append(line)
            self._print(line)
        return line

    def command(self, text: str) -> Line:
        """An equivalent ``pbkv`` command a student can type to do the same step by hand."""
        return self.say(f"$ {text}", kind="command")

    def check(self, name: str, ok: bool, detail: str = "") -> Line:
        mark = "PASS" if ok else "FAIL"
        suffix = f" ({detail})" if detail else ""
        return self.say(f"{mark} {name}{suffix}", kind="check", ok=ok)

    def _print(self, line: Line) -> None:
        if not self.colour:
            self.stream.write(line.render() + "\n")
            self.stream.flush()
            return
        stamp = click.style(f"[{line.elapsed_s:5.1f}s]", dim=True)
        name = click.style(f"{line.scenario}:", fg="magenta")
        if line.kind == "check":
            text = click.style(line.text, fg="green" if line.ok else "red", bold=True)
        else:
            text = click.style(line.text, **KIND_STYLES.get(line.kind, {}))  # type: ignore[arg-type]
        self.stream.write(f"{stamp} {name} {text}\n")
        self.stream.flush()

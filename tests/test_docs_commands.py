"""The commands the documentation shows exist as written.

Every ``pbkv ...`` command line in README.md and docs/*.md (in code spans and code blocks) must
name subcommands the CLI has and options those subcommands (or the ``pbkv`` group) take; every
``make TARGET`` a target of the Makefile; every ``python -m pbkv.bench.suite`` or
``python scripts/NAME.py`` its script and the options that script's ``--help`` lists. Nothing is
run: a renamed flag or a removed command in the code fails here instead of in a reader's shell.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import click
import pytest

from pbkv.cli.main import cli

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = (ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")))
SPAN = re.compile(r"`([^`\n]+)`")
FENCE = re.compile(r"^\s*```")
SEPARATORS = re.compile(r"\s(?:&&|\|\||\||&|;)\s|;\s|\$\(|\)")
PREFIX = re.compile(
    r"^(?:\$\s+|(?:do|then|time|exec|nohup|sudo)\s+|(?:[A-Z_][A-Z0-9_]*=\S*\s+)+"
    r"|\S*\.venv[^/\s]*/bin/)+"
)
WORD = re.compile(r"^[a-z][a-z0-9-]*$")


def command_lines(text: str) -> Iterator[tuple[int, str]]:
    """(line number, command) for every code span and code-block line of a Markdown text."""
    in_block = False
    continued = ""  # a code-block line ending in a backslash goes on in the next
    for number, line in enumerate(text.splitlines(), start=1):
        if FENCE.match(line):
            in_block, continued = not in_block, ""
            continue
        if in_block and line.rstrip().endswith("\\"):
            continued += line.rstrip()[:-1] + " "
            continue
        pieces = [continued + line] if in_block else SPAN.findall(line)
        continued = ""
        for piece in pieces:
            for part in SEPARATORS.split(piece.split(" #")[0]):
                command = PREFIX.sub("", part.strip())
                if command:
                    yield number, command


def options_of(command: click.Command) -> dict[str, bool]:
    """Every option name of ``command`` -> whether it takes a value."""
    names: dict[str, bool] = {}
    for param in command.params:
        if isinstance(param, click.Option):
            for name in (*param.opts, *param.secondary_opts):
                names[name] = not (param.is_flag or param.count)
    names.update({"-h": False, "--help": False})
    return names


def pbkv_problems(words: list[str]) -> list[str]:
    """What in ``pbkv WORDS...`` the CLI would refuse as unknown (values are not judged)."""
    command: click.Command = cli
    context = click.Context(cli)
    problems: list[str] = []
    at_subcommand = True
    index = 0
    while index < len(words):
        word = words[index]
        index += 1
        if word.startswith("-") and len(word) > 1 and word != "--":
            names = word.split("=", 1)[0].split("/")  # `--tls-ca/--tls-cert`: either
            options = options_of(command)
            problems += [f"{command.name}: no option {n}" for n in names if n not in options]
            if options.get(names[0]) and "=" not in word:
                index += 1  # its value
            continue
        if at_subcommand and isinstance(command, click.Group):
            if not WORD.match(word):
                return problems  # a placeholder (`pbkv cluster ...`, `kill|pause`)
            found = command.get_command(context, word)
            if found is None:
                return [*problems, f"{command.name}: no subcommand {word!r}"]
            command = found
            continue
        at_subcommand = False
    return problems


@cache
def make_targets() -> frozenset[str]:
    text = (ROOT / "Makefile").read_text()
    return frozenset(re.findall(r"^([a-z][a-z0-9-]*)\s*:", text, re.MULTILINE))


@cache
def help_text(argv: tuple[str, ...]) -> str:
    done = subprocess.run(
        [sys.executable, *argv, "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, f"{' '.join(argv)} --help: {done.stderr.strip()[-300:]}"
    return done.stdout


def python_problems(words: list[str]) -> list[str]:
    """``python -m pbkv...`` or ``python scripts/X.py`` with options its --help lists."""
    program: tuple[str, ...]
    if words[:1] == ["-m"] and len(words) > 1 and words[1].startswith("pbkv."):
        program, rest = ("-m", words[1]), words[2:]
    elif words and words[0].startswith("scripts/") and words[0].endswith(".py"):
        if not (ROOT / words[0]).is_file():
            return [f"no script {words[0]}"]
        program, rest = (words[0],), words[1:]
    else:
        return []  # python itself, or a module that is not ours
    known = set(re.findall(r"(?<![\w-])(--?[a-z][a-z0-9-]*)", help_text(program)))
    unknown = [w.split("=", 1)[0] for w in rest if w.startswith("--")]
    return [f"{' '.join(program)}: no option {name}" for name in unknown if name not in known]


def problems_of(command: str) -> list[str]:
    try:
        words = shlex.split(command)
    except ValueError:
        return []  # prose in backticks, not a command
    if not words:
        return []
    head, rest = words[0], words[1:]
    if head == "pbkv":
        return pbkv_problems(rest)
    if head in ("python", "python3"):
        return python_problems(rest)
    if head == "make":
        targets = [w for w in rest if WORD.match(w)]
        return [f"make: no target {t}" for t in targets if t not in make_targets()]
    return []


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda path: path.name)
def test_every_documented_command_exists_as_written(document: Path) -> None:
    found = [
        f"{document.name}:{number}: `{command}`: {problem}"
        for number, command in command_lines(document.read_text())
        for problem in problems_of(command)
    ]
    assert not found, "\n".join(found)


@pytest.mark.parametrize(
    ("command", "problem"),
    [
        ("pbkv cluster up --servers 4 --backups 2", None),
        ("pbkv --tls-ca ca.pem bench --clients 64", None),
        ("pbkv cluster up --serverz 4", "no option --serverz"),
        ("pbkv clustr up", "no subcommand 'clustr'"),
        ("pbkv cluster kil primary", "no subcommand 'kil'"),
        ("pbkv sim --seeds=20 --jobz 2", "no option --jobz"),
        ("make tset", "no target tset"),
        ("python scripts/measure_floor.py --clients 1,16 --nope", "no option --nope"),
        ("python scripts/nothing.py", "no script scripts/nothing.py"),
    ],
)
def test_the_checker_names_what_does_not_exist(command: str, problem: str | None) -> None:
    problems = problems_of(command)
    if problem is None:
        assert problems == []
    else:
        assert len(problems) == 1 and problem in problems[0], problems


def test_commands_are_found_in_spans_blocks_and_after_prefixes() -> None:
    text = (
        "Run `.venv/bin/pbkv sim --seeds 3` or `PBKV_X=1 make demo && pbkv status`.\n"
        "```sh\n$ pbkv cluster up   # a comment --nope\n"
        "pbkv server --listen A \\\n  --data-dir D\n"
        "for p in s1 s2; do pbkv cluster kill $p & done; wait\n```\n"
    )
    assert [c for _, c in command_lines(text)] == [
        "pbkv sim --seeds 3",
        "make demo",
        "pbkv status",
        "pbkv cluster up",
        "pbkv server --listen A    --data-dir D",
        "for p in s1 s2",
        "pbkv cluster kill $p",
        "done",
        "wait",
    ]

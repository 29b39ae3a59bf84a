"""Tidy: the core stays sans-I/O and deterministic; the simulator never touches the runtime.

Walks the AST of every module in ``src/pbkv/core/`` and fails on imports of clocks, sockets,
threads, processes or the OS, on module-level ``random`` functions (hidden global state: the
core takes an injected ``random.Random``), and on opening files. ``src/pbkv/sim/`` must never
import asyncio or ``pbkv.runtime``. The checkers are run on small sources too, to prove they bite.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"
CORE = SRC / "pbkv" / "core"
SIM = SRC / "pbkv" / "sim"

FORBIDDEN_IN_CORE = frozenset(
    {
        "asyncio",
        "socket",
        "time",
        "threading",
        "os",
        "uuid",
        "subprocess",
        "selectors",
        # Same contract, other doors: clocks, hidden randomness, processes, files.
        "datetime",
        "secrets",
        "multiprocessing",
        "signal",
        "io",
        "pathlib",
        "shutil",
        "tempfile",
    }
)
FORBIDDEN_IN_SIM = ("asyncio", "pbkv.runtime")


def imported_modules(tree: ast.AST, package: str) -> list[tuple[int, str]]:
    """Every module an import statement names, absolute, with its line; ``from a import b``
    yields both ``a`` and ``a.b`` (b may be a submodule)."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parent = ".".join(parts[: len(parts) - node.level + 1])
                base = f"{parent}.{base}" if base else parent
            found.append((node.lineno, base))
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
    return found


def core_violations(source: str, filename: str = "<source>") -> list[str]:
    """What breaks the core's contract in ``source``, one line each."""
    tree = ast.parse(source, filename)
    problems: list[str] = []
    random_names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in FORBIDDEN_IN_CORE:
                    problems.append(f"{filename}:{node.lineno}: imports {alias.name}")
                if alias.name == "random":
                    random_names.add(alias.asname or "random")
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            if node.module.split(".")[0] in FORBIDDEN_IN_CORE:
                problems.append(f"{filename}:{node.lineno}: imports from {node.module}")
            if node.module == "random":
                problems += [
                    f"{filename}:{node.lineno}: imports random.{alias.name}"
                    for alias in node.names
                    if alias.name != "Random"
                ]
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in random_names
            and node.attr != "Random"
        ):
            problems.append(f"{filename}:{node.lineno}: uses module-level random.{node.attr}")
        elif isinstance(node, ast.Call):
            problems += call_violations(node, filename, random_names)
    return problems


def call_violations(call: ast.Call, filename: str, random_names: set[str]) -> list[str]:
    func = call.func
    name = (
        func.id
        if isinstance(func, ast.Name)
        else func.attr
        if isinstance(func, ast.Attribute)
        else ""
    )
    if name in ("open", "__import__", "import_module"):
        return [f"{filename}:{call.lineno}: calls {name}()"]
    unseeded = not call.args and not call.keywords
    if name == "Random" and unseeded:
        # random.Random() seeds itself from the OS: the core only uses the generator it is given.
        return [f"{filename}:{call.lineno}: creates an unseeded Random()"]
    return []


def sim_violations(source: str, package: str = "pbkv.sim", filename: str = "<source>") -> list[str]:
    tree = ast.parse(source, filename)
    return [
        f"{filename}:{line}: imports {module}"
        for line, module in imported_modules(tree, package)
        for forbidden in FORBIDDEN_IN_SIM
        if module == forbidden or module.startswith(forbidden + ".")
    ]


def modules(root: Path) -> list[Path]:
    return sorted(root.rglob("*.py"))


def package_of(path: Path) -> str:
    """The package relative imports in ``path`` resolve against (``__init__`` included)."""
    return ".".join(path.relative_to(SRC).parts[:-1])


def test_core_is_sans_io_and_deterministic() -> None:
    files = modules(CORE)
    assert len(files) >= 8, "the walk found the core"
    problems = [p for path in files for p in core_violations(path.read_text(), str(path))]
    assert problems == []


def test_simulator_never_imports_asyncio_or_the_runtime() -> None:
    files = modules(SIM)
    assert files, "the walk found the simulator"
    problems = [
        p for path in files for p in sim_violations(path.read_text(), package_of(path), str(path))
    ]
    assert problems == []


# --- the checkers bite ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("import time\n", "imports time"),
        ("import os.path\n", "imports os.path"),
        ("from socket import socket\n", "imports from socket"),
        ("import asyncio\n", "imports asyncio"),
        ("from threading import Lock\n", "imports from threading"),
        ("import uuid\nx = uuid.uuid4()\n", "imports uuid"),
        ("import random\nx = random.random()\n", "uses module-level random.random"),
        ("import random as r\nx = r.choice([1])\n", "uses module-level random.choice"),
        ("from random import shuffle\n", "imports random.shuffle"),
        ("import random\nrng = random.Random()\n", "creates an unseeded Random()"),
        ("data = open('f').read()\n", "calls open()"),
        ("import importlib\nm = importlib.import_module('time')\n", "calls import_module()"),
    ],
)
def test_core_checker_reports(source: str, expected: str) -> None:
    problems = core_violations(source)
    assert problems and expected in problems[0]


def test_core_checker_reports_the_line() -> None:
    assert core_violations("x = 1\n\nimport time\n", "m.py") == ["m.py:3: imports time"]


def test_core_checker_allows_an_injected_random() -> None:
    source = (
        "import random\n"
        "from random import Random\n"
        "def make(rng: random.Random, seed: int) -> Random:\n"
        "    child = random.Random(seed)\n"
        "    return Random(rng.getrandbits(64))\n"
    )
    assert core_violations(source) == []


@pytest.mark.parametrize(
    "source",
    [
        "import asyncio\n",
        "from asyncio import Queue\n",
        "import pbkv.runtime.host\n",
        "from pbkv.runtime import host\n",
        "from pbkv import runtime\n",
        "from ..runtime import host\n",
        "from .. import runtime\n",
    ],
)
def test_sim_checker_reports(source: str) -> None:
    assert sim_violations(source, package="pbkv.sim")


def test_sim_checker_allows_core_and_relative_sim_imports() -> None:
    source = "from pbkv.core import Replica\nfrom . import network\nfrom .trace import Trace\n"
    assert sim_violations(source, package="pbkv.sim") == []

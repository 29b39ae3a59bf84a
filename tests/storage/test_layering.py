"""Layering: the storage engine is a leaf library, and the sans-I/O layers never import it.

``pbkv.storage`` does file I/O and takes locks, so the core and the simulator must not reach
it (the core asks for disk work with effects; the simulator will model its own disk). The
engine itself needs nothing of pbkv but its error base class. The checker is run on small
sources too, to prove it bites.
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.core.test_tidy import SRC, imported_modules, modules, package_of

STORAGE = SRC / "pbkv" / "storage"
ALLOWED_IN_STORAGE = ("pbkv.storage", "pbkv.errors")


def forbidden_imports(source: str, package: str, forbidden: tuple[str, ...]) -> list[str]:
    """``line: module`` for each import of a module under one of ``forbidden``."""
    found = imported_modules(ast.parse(source), package)
    return [
        f"{line}: {name}"
        for line, name in found
        if any(name == prefix or name.startswith(prefix + ".") for prefix in forbidden)
    ]


def pbkv_imports_outside(source: str, package: str, allowed: tuple[str, ...]) -> list[str]:
    found = imported_modules(ast.parse(source), package)
    return [
        f"{line}: {name}"
        for line, name in found
        if (name == "pbkv" or name.startswith("pbkv."))
        and not any(name == prefix or name.startswith(prefix + ".") for prefix in allowed)
    ]


def test_core_and_simulator_never_import_the_storage_engine() -> None:
    problems = []
    for layer in ("core", "sim"):
        for path in modules(SRC / "pbkv" / layer):
            source = path.read_text()
            for problem in forbidden_imports(source, package_of(path), ("pbkv.storage",)):
                problems.append(f"{path.name}:{problem}")
    assert problems == []


def test_storage_imports_nothing_of_pbkv_but_its_errors() -> None:
    problems = []
    for path in modules(STORAGE):
        source = path.read_text()
        for problem in pbkv_imports_outside(source, package_of(path), ALLOWED_IN_STORAGE):
            problems.append(f"{path.name}:{problem}")
    assert problems == []


def test_the_checkers_bite() -> None:
    assert forbidden_imports("from pbkv.storage import DurableLog", "pbkv.core", ("pbkv.storage",))
    assert forbidden_imports("from ..storage import log", "pbkv.core", ("pbkv.storage",))
    assert not forbidden_imports("import pbkv.storagex", "pbkv.core", ("pbkv.storage",))
    assert pbkv_imports_outside("from pbkv.core import effects", "pbkv.storage", ALLOWED_IN_STORAGE)
    assert not pbkv_imports_outside("from . import files", "pbkv.storage", ALLOWED_IN_STORAGE)
    assert Path(STORAGE).is_dir()

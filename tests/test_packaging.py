"""Packaging: the version lives in one place, the licence and the dashboard's assets ship, and
``make demo`` installs pbkv without the developer tools."""

from __future__ import annotations

import re
import tomllib
from importlib import metadata, resources
from pathlib import Path

import pbkv

ROOT = Path(__file__).resolve().parents[1]


def test_the_version_comes_from_the_package_metadata_only() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert pbkv.__version__ == metadata.version("pbkv") == project["version"]
    pinned = [
        path
        for path in (ROOT / "src").rglob("*.py")
        if re.search(r"__version__ = [\"']\d+\.\d+", path.read_text())
    ]
    assert pinned == []  # no second copy of the version number in the code


def test_licence_classifiers_and_assets_ship() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == "MIT" and (ROOT / "LICENSE").read_text().startswith("MIT")
    assert "Programming Language :: Python :: 3.11" in project["classifiers"]
    assert metadata.metadata("pbkv")["License-Expression"] == "MIT"
    static = resources.files("pbkv.dashboard").joinpath("static")
    assert {"index.html", "app.js", "style.css"} <= {p.name for p in static.iterdir()}


def test_make_demo_installs_pbkv_without_the_dev_tools() -> None:
    makefile = (ROOT / "Makefile").read_text()
    demo_stamp = re.search(r"^demo: (\S+)", makefile, re.MULTILINE)
    assert demo_stamp and demo_stamp.group(1) == "$(RUN_STAMP)"
    recipe = makefile.split("$(RUN_STAMP): pyproject.toml")[1].split("\n\n")[0]
    assert "pip install --quiet -e ." in recipe and "[dev]" not in recipe
    assert re.search(r"^unit: \$\(STAMP\) browser", makefile, re.MULTILINE)  # chromium for tests

"""Build hook: with ``PBKV_COMPILE=1`` the request path is compiled to C with mypyc.

Everything else about the package is in ``pyproject.toml``. The compiled build is opt-in
(``make compiled``: a separate ``.venv-compiled``), because a compiled module shadows its source:
someone editing ``client.py`` in a compiled tree would run the old code. The modules listed are
the client's request path, the hosts' framing and connections, the metrics tallies and the
write-ahead log's encoding and appends (docs/performance.md, "The compiled build"); they behave
exactly as their source, which the tests check by running against both builds. mypyc needs
mypy in the build environment, so the compiled build is installed with
``--no-build-isolation`` into a venv that has it.
"""

from __future__ import annotations

import os

from setuptools import setup

COMPILED_MODULES = [
    "src/pbkv/core/client_session.py",
    "src/pbkv/core/effects.py",
    "src/pbkv/core/message_classes.py",
    "src/pbkv/core/sizes.py",
    "src/pbkv/core/kv_store.py",
    "src/pbkv/core/replica_base.py",
    "src/pbkv/core/backup.py",
    "src/pbkv/core/primary.py",
    "src/pbkv/core/replica.py",
    "src/pbkv/core/transfer.py",
    "src/pbkv/wire.py",
    "src/pbkv/client.py",
    "src/pbkv/runtime/host.py",
    "src/pbkv/runtime/connection.py",
    "src/pbkv/runtime/faults.py",  # Faults.active is read for every frame sent
    "src/pbkv/runtime/node.py",
    "src/pbkv/runtime/metric_tally.py",
    # The disk path of --fsync (not core/durable.py: compiled, its tagged msgspec records lose
    # their tags and the union of them cannot be decoded).
    "src/pbkv/storage/format.py",
    "src/pbkv/storage/log.py",
    "src/pbkv/runtime/disk.py",
]


def extensions() -> list[object]:
    if os.environ.get("PBKV_COMPILE") != "1":
        return []
    from mypyc.build import mypycify

    return list(mypycify(COMPILED_MODULES, opt_level="3"))


setup(ext_modules=extensions())

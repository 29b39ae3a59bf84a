"""Which build of pbkv is running: pure Python, or with its request path compiled by mypyc.

``PBKV_COMPILE=1`` at install time (``make compiled``, see ``setup.py``) compiles the client,
the replica core, the hosts and the wire codec to C extension modules from the same source.
Benchmarks record which build they measured; tests that patch a method skip under the
compiled build, where methods of compiled classes cannot be replaced.
"""

from __future__ import annotations

import importlib.machinery

import pbkv.wire


def compiled() -> bool:
    """Whether this process runs the compiled build (``pbkv.wire`` is an extension module)."""
    path = pbkv.wire.__file__ or ""
    return path.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES))


def describe() -> str:
    """``compiled (mypyc)`` or ``pure Python``, for reports (``make compiled`` checks it)."""
    return "compiled (mypyc)" if compiled() else "pure Python"

"""Pickling for the frozen configuration dataclasses of the compiled modules.

mypyc compiles a frozen dataclass into a native class whose pickled state cannot be restored:
unpickling assigns the fields one by one and the frozen ``__setattr__`` refuses
(``FrozenInstanceError``), so a simulator sweep's worker could not send its results (which
carry the run's ``Limits``) back to the parent. A class whose ``__reduce__`` returns
``reduce_by_constructor(self)`` is instead rebuilt by calling it with its fields, which works
compiled or not. Every field must be an ``__init__`` argument, in declaration order.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any


def reduce_by_constructor(obj: Any) -> tuple[type[Any], tuple[object, ...]]:
    """``(type, field values)``: pickle rebuilds ``obj`` by calling its class with them."""
    return type(obj), tuple(getattr(obj, f.name) for f in fields(obj))

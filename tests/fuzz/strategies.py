"""Hypothesis strategies for hostile-but-valid protocol messages.

``messages()`` draws any ``AnyMessage`` the codec would accept, built field by field from the
message types themselves (``msgspec.structs.fields``), so a field the lead adds to a message is
fuzzed without a change here. Values lean towards the interesting: names from a small pool that
contains the nodes under test (so forgeries hit real code paths), view numbers and indexes near
0 and at the edges of 64-bit integers, and now and then a long string.
"""

from __future__ import annotations

import types
import typing
from typing import Any, Final

import msgspec
from hypothesis import strategies as st

from pbkv.core.messages import AnyMessage

VIEW_SERVICE: Final = "vs"  # the name tests/core/harness.py gives its view service
SERVERS: Final = ("a:7001", "b:7002", "c:7003")
NAMES: Final = (VIEW_SERVICE, *SERVERS, "conn:1", "conn:2", "")
BIG: Final = (2**63 - 1, -(2**63), 2**31, -1, -2)

names = st.one_of(
    st.sampled_from(NAMES).filter(bool),
    st.sampled_from(NAMES),
    st.text(max_size=8),
    st.text(min_size=200, max_size=400),
)
numbers = st.one_of(st.integers(0, 6), st.integers(-3, 50), st.sampled_from(BIG))
texts = st.one_of(st.sampled_from(("k", "k2", "v", "")), st.text(max_size=16), names)


def for_type(kind: Any, field: str = "") -> st.SearchStrategy[Any]:
    """A strategy for values of ``kind`` (a message field's resolved type)."""
    origin = typing.get_origin(kind)
    args = typing.get_args(kind)
    if kind is int:
        return numbers
    if kind is bool:
        return st.booleans()
    if kind is float:
        return st.floats(allow_nan=False, allow_infinity=False, width=32)
    if kind is str:
        return names if field in ("name", "primary", "reason") or "server" in field else texts
    if kind is type(None):
        return st.none()
    if origin is typing.Literal:
        return st.sampled_from(args)
    if origin in (typing.Union, types.UnionType):
        return st.one_of(*(for_type(arg, field) for arg in args))
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return st.lists(for_type(args[0], field), max_size=4).map(tuple)
        return st.tuples(*(for_type(arg, field) for arg in args))
    if isinstance(kind, type) and issubclass(kind, msgspec.Struct):
        return structs(kind)
    raise NotImplementedError(f"no strategy for {kind!r} ({field})")


def structs(cls: type[msgspec.Struct]) -> st.SearchStrategy[Any]:
    fields = {f.name: _deferred(f.type, f.name) for f in msgspec.structs.fields(cls)}
    return st.builds(cls, **fields)


def _deferred(kind: Any, field: str) -> st.SearchStrategy[Any]:
    return st.deferred(lambda: for_type(kind, field))


def messages() -> st.SearchStrategy[AnyMessage]:
    """Any message of the protocol union."""
    return st.one_of(*(structs(cls) for cls in typing.get_args(AnyMessage)))


def sources() -> st.SearchStrategy[str]:
    """Who a message comes from: a node under test, a stranger, a client connection."""
    return st.sampled_from(NAMES)

"""The message classes the request path names, as ``Final`` names of a compiled module.

Theory of operation. ``pbkv.core.messages`` holds msgspec Structs, which stay interpreted (a
compiled module's tagged Structs lose their tags), so in a compiled module every read of a name
imported from it (``type(message) is Reply``, ``Reply(...)``) is a lookup in the module's
globals dictionary, about 130 instructions. A ``Final`` name of a compiled module is a C static,
which compiled importers read directly. The request path read message classes about 29 times an
operation (``scripts/count_instructions.py``, 2026-12-03); its hot functions use these names
instead. In the pure build they are the same classes under a second name; mypy narrows
``type(message) is REPLY`` as it does ``type(message) is Reply``.
"""

from __future__ import annotations

from typing import Final

from pbkv.core.messages import (
    Append,
    ErrorReply,
    Forward,
    ForwardReply,
    Get,
    Put,
    Reply,
    Request,
    ViewReply,
)

REQUEST: Final = Request
REPLY: Final = Reply
ERROR_REPLY: Final = ErrorReply
VIEW_REPLY: Final = ViewReply
GET: Final = Get
PUT: Final = Put
APPEND: Final = Append
FORWARD: Final = Forward
FORWARD_REPLY: Final = ForwardReply

"""The event trace: a running hash of everything that happened, the last events, and JSON lines.

Theory of operation. Reproducibility is checked by hashing the run: every delivery (tick, source,
target and the exact bytes), every fault and every client invocation and completion feed one
BLAKE2b digest, so the same seed must give the same ``digest()`` and a test compares them. The
last ``ring_size`` events are kept as cheap tuples and rendered only when a run fails. Only with
a trace file is each event turned into a JSON object (``--trace FILE``): that work is skipped
otherwise, so a sweep pays a few hundred nanoseconds per event.

JSON-lines format, one object per event, always with ``tick`` and ``event``:

* ``deliver``: ``source``, ``target``, ``message`` (the decoded message as plain data);
* ``fault``: ``what`` (human-readable), e.g. ``crash s2``;
* ``log``: ``node``, ``view``, ``name``, ``fields`` (a core ``Log`` effect);
* ``invoke`` / ``complete``: ``client``, ``seq``, ``op`` and ``status`` / ``value``;
* ``phase``: ``what`` (``faults``, ``heal``, ``final_reads``, ``end``).
"""

from __future__ import annotations

import hashlib
from collections import deque
from typing import IO, Any, Final

import msgspec

from pbkv.core.effects import Log
from pbkv.core.messages import AnyMessage
from pbkv.wire import MESSAGES, ProtocolError

RING_SIZE_DEFAULT: Final = 60
MESSAGE_TEXT_MAX: Final = 160

RingEntry = tuple[Any, ...]


class Trace:
    """Hash, recent-event ring and optional JSON-lines file of one run."""

    def __init__(self, stream: IO[str] | None = None, ring_size: int = RING_SIZE_DEFAULT) -> None:
        self._hash = hashlib.blake2b(digest_size=16)
        self.ring: deque[RingEntry] = deque(maxlen=ring_size)
        self.stream = stream
        self._encoder = msgspec.json.Encoder()

    def digest(self) -> str:
        """Hex digest of every event so far."""
        return self._hash.hexdigest()

    def _write(self, record: dict[str, Any]) -> None:
        assert self.stream is not None
        self.stream.write(self._encoder.encode(record).decode() + "\n")

    def deliver(self, tick: int, source: str, target: str, payload: bytes) -> None:
        self._hash.update(b"%d>%s>%s>" % (tick, source.encode(), target.encode()))
        self._hash.update(payload)
        self.ring.append(("deliver", tick, source, target, payload))

    def deliver_decoded(self, tick: int, source: str, target: str, message: AnyMessage) -> None:
        """JSON-lines record of a delivery (only called with a trace file)."""
        record = {
            "tick": tick,
            "event": "deliver",
            "source": source,
            "target": target,
            "message": msgspec.to_builtins(message),
        }
        self._write(record)

    def fault(self, tick: int, what: str) -> None:
        self._hash.update(b"%d!%s!" % (tick, what.encode()))
        self.ring.append(("fault", tick, what))
        if self.stream is not None:
            self._write({"tick": tick, "event": "fault", "what": what})

    def phase(self, tick: int, what: str) -> None:
        self._hash.update(b"%d#%s#" % (tick, what.encode()))
        self.ring.append(("phase", tick, what))
        if self.stream is not None:
            self._write({"tick": tick, "event": "phase", "what": what})

    def log(self, tick: int, node: str, effect: Log) -> None:
        self.ring.append(("log", tick, node, effect))
        if self.stream is not None:
            self._write(
                {
                    "tick": tick,
                    "event": "log",
                    "node": node,
                    "view": effect.view_number,
                    "name": effect.event,
                    "fields": {key: str(value) for key, value in effect.fields.items()},
                }
            )

    def client(self, tick: int, event: str, client: str, seq: int, text: str) -> None:
        self._hash.update(
            b"%d@%s@%s@%d@%s@" % (tick, event.encode(), client.encode(), seq, text.encode())
        )
        self.ring.append(("client", tick, event, client, seq, text))
        if self.stream is not None:
            self._write({"tick": tick, "event": event, "client": client, "seq": seq, "op": text})

    def recent(self) -> list[str]:
        """The last events, oldest first, one human-readable line each."""
        return [render(entry) for entry in self.ring]


def render(entry: RingEntry) -> str:
    """One ring entry as a line: ``t=120 s1 -> s2 Forward(...)``."""
    kind, tick = entry[0], entry[1]
    match kind:
        case "deliver":
            _, _, source, target, payload = entry
            return f"t={tick} {source} -> {target} {describe_payload(payload)}"
        case "log":
            _, _, node, effect = entry
            return f"t={tick} {node} [view {effect.view_number}] {effect.render()}"
        case "client":
            _, _, event, client, seq, text = entry
            return f"t={tick} {client} {event} #{seq} {text}"
        case _:
            return f"t={tick} {kind}: {entry[2]}"


def describe_payload(payload: bytes) -> str:
    try:
        text = repr(MESSAGES.decode(payload))
    except ProtocolError:
        text = f"<{len(payload)} undecodable bytes>"
    if len(text) > MESSAGE_TEXT_MAX:
        text = text[: MESSAGE_TEXT_MAX - 3] + "..."
    return text

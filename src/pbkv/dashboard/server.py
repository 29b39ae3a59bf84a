"""The dashboard's web server: one asyncio loop, one page, live updates by server-sent events.

Theory of operation: a poll task asks the ``Source`` for a snapshot every ``poll_interval_s``
(in a worker thread, since the cluster layer blocks on sockets) and hands it to every open
event stream. Each stream has a queue of one: a slow browser gets the newest snapshot, never a
backlog. A button press is a ``POST /api/action`` with a JSON body; it runs the cluster layer's
fault in a worker thread (the cluster layer records it in the cluster's event log, which the
timeline reads), and wakes the poll task at once so the page shows the effect without waiting
for the next tick.

Routes: ``GET /`` the page; ``GET /static/NAME`` its assets (shipped in the package, no CDN);
``GET /api/snapshot`` the latest snapshot as JSON; ``GET /events`` the event stream;
``POST /api/action`` a fault. Everything is bounded: connections, event streams, request head and
body sizes, and the time a client may take to send its request (``DashboardLimits``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Final

from pbkv.dashboard import actions
from pbkv.dashboard.source import ClusterSource, Source

ASSETS: Final = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}
LOOPBACK_HOSTS: Final = ("127.0.0.1", "::1", "::ffff:127.0.0.1")
_REASONS: Final = {
    200: "OK", 400: "Bad Request", 403: "Forbidden", 404: "Not Found",
    405: "Method Not Allowed", 409: "Conflict", 413: "Payload Too Large",
    415: "Unsupported Media Type", 503: "Service Unavailable",
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class DashboardLimits:
    """Bounds of the dashboard server (defaults in docs/guide.md).

    Attributes:
        poll_interval_s: seconds between two snapshots of the cluster.
        connections_max: HTTP connections at once (more are answered 503 and closed).
        event_streams_max: live event streams at once (browser tabs).
        request_bytes_max: largest request head (request line and headers).
        body_bytes_max: largest request body (an action is a few dozen bytes).
        request_timeout_s: time a client has to send its whole request.
    """

    poll_interval_s: float = 0.5
    connections_max: int = 64
    event_streams_max: int = 16
    request_bytes_max: int = 8_192
    body_bytes_max: int = 4_096
    request_timeout_s: float = 10.0


def asset(name: str) -> bytes:
    return resources.files("pbkv.dashboard").joinpath("static", name).read_bytes()


def _response(status: int, content_type: str, body: bytes) -> bytes:
    head = (
        f"HTTP/1.1 {status} {_REASONS[status]}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


def _json(status: int, data: Any) -> bytes:
    return _response(status, "application/json", json.dumps(data).encode())


@dataclass(slots=True)
class _Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    peer: str


class Dashboard:
    """Serves one ``Source`` to browsers; ``directory`` enables the fault buttons."""

    def __init__(
        self,
        source: Source,
        directory: Path | None = None,
        limits: DashboardLimits | None = None,
    ) -> None:
        self.source = source
        self.directory = directory if source.actions else None
        self.limits = limits or DashboardLimits()
        self.latest: dict[str, Any] = {"view": None, "nodes": [], "error": "starting"}
        self.streams: set[asyncio.Queue[bytes]] = set()
        self.connections = 0
        self.poke = asyncio.Event()
        self.server: asyncio.Server | None = None
        self.tasks: set[asyncio.Task[None]] = set()

    async def listen(self, host: str, port: int) -> int:
        """Bind and start serving and polling; returns the bound port."""
        self.server = await asyncio.start_server(
            self._handle, host, port, limit=self.limits.request_bytes_max
        )
        self._spawn(self._poll_forever())
        return int(self.server.sockets[0].getsockname()[1])

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for task in list(self.tasks):
            task.cancel()
        await asyncio.sleep(0)

    # --- polling ------------------------------------------------------------------------------

    async def _poll_forever(self) -> None:
        while True:
            try:
                snapshot = await asyncio.to_thread(self.source.snapshot)
            except Exception as error:  # a bug in a reader must not stop the page
                snapshot = {"view": None, "nodes": [], "error": f"cannot read status: {error}"}
            self.latest = snapshot
            self._broadcast(snapshot)
            self.poke.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.poke.wait(), self.limits.poll_interval_s)

    def _broadcast(self, snapshot: dict[str, Any]) -> None:
        frame = b"data: " + json.dumps(snapshot).encode() + b"\n\n"
        for queue in self.streams:
            if queue.full():
                queue.get_nowait()  # the browser is behind: it gets the newest only
            queue.put_nowait(frame)

    # --- HTTP ---------------------------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.connections >= self.limits.connections_max:
            writer.write(_response(503, "text/plain", b"too many connections\n"))
            writer.close()
            return
        self.connections += 1
        try:
            request = await self._read(reader, writer)
            if request is not None:
                await self._route(request, writer)
        except (ConnectionError, TimeoutError, asyncio.IncompleteReadError):
            pass
        except asyncio.LimitOverrunError:
            writer.write(_response(413, "text/plain", b"request too large\n"))
        finally:
            self.connections -= 1
            writer.close()

    async def _read(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> _Request | None:
        async with asyncio.timeout(self.limits.request_timeout_s):
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
            lines = head.split("\r\n")
            parts = lines[0].split()
            if len(parts) != 3:
                writer.write(_response(400, "text/plain", b"bad request line\n"))
                return None
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            length = int(headers.get("content-length", "0") or "0")
            if not 0 <= length <= self.limits.body_bytes_max:
                writer.write(_response(413, "text/plain", b"body too large\n"))
                return None
            body = await reader.readexactly(length) if length else b""
        peer = writer.get_extra_info("peername")
        host = str(peer[0]) if isinstance(peer, tuple) else ""
        return _Request(parts[0], parts[1].split("?", 1)[0], headers, body, host)

    async def _route(self, request: _Request, writer: asyncio.StreamWriter) -> None:
        method, path = request.method, request.path
        if method == "GET" and path == "/events":
            await self._stream(writer)
            return
        if method == "POST" and path == "/api/action":
            writer.write(await self._action(request))
        elif method != "GET":
            writer.write(_response(405, "text/plain", b"method not allowed\n"))
        elif path in ("/", "/index.html"):
            writer.write(_response(200, ASSETS["index.html"], asset("index.html")))
        elif path.startswith("/static/") and path[8:] in ASSETS:
            writer.write(_response(200, ASSETS[path[8:]], asset(path[8:])))
        elif path == "/api/snapshot":
            writer.write(_json(200, self.latest))
        else:
            writer.write(_response(404, "text/plain", b"not found\n"))
        await writer.drain()

    async def _stream(self, writer: asyncio.StreamWriter) -> None:
        if len(self.streams) >= self.limits.event_streams_max:
            writer.write(_response(503, "text/plain", b"too many event streams\n"))
            return
        queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize=1)
        queue.put_nowait(b"data: " + json.dumps(self.latest).encode() + b"\n\n")
        self.streams.add(queue)
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
            b"Cache-Control: no-store\r\nConnection: close\r\n\r\n"
        )
        try:
            while True:
                frame = await queue.get()
                writer.write(frame)
                async with asyncio.timeout(self.limits.request_timeout_s):
                    await writer.drain()
        finally:
            self.streams.discard(queue)

    async def _action(self, request: _Request) -> bytes:
        if self.directory is None:
            return _json(409, {"error": "this dashboard watches a view service: no faults"})
        if request.peer not in LOOPBACK_HOSTS:
            return _json(403, {"error": "faults are accepted from this machine only"})
        if not request.headers.get("content-type", "").startswith("application/json"):
            return _json(415, {"error": "send the action as application/json"})
        try:
            data = json.loads(request.body)
            action, target = str(data["action"]), str(data.get("target", ""))
        except (ValueError, KeyError, TypeError):
            return _json(400, {"error": 'expected {"action": ..., "target": ...}'})
        try:
            result = await asyncio.to_thread(actions.run, self.directory, action, target)
        except actions.ActionError as error:
            return _json(409, {"error": str(error)})
        finally:
            self.poke.set()  # show the effect now (the fault is in the cluster's event log)
        return _json(200, {"result": result})


async def serve(
    source: Source,
    host: str,
    port: int,
    directory: Path | None = None,
    limits: DashboardLimits | None = None,
    on_listening: Callable[[int], None] | None = None,
) -> None:
    """Serve until SIGINT or SIGTERM."""
    dashboard = Dashboard(source, directory, limits)
    bound = await dashboard.listen(host, port)
    if on_listening is not None:
        on_listening(bound)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await dashboard.close()


def cluster_source(directory: Path) -> ClusterSource:
    return ClusterSource(directory)

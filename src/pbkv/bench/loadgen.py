"""A backend-agnostic closed-loop load generator.

Theory of operation. ``clients`` workers each loop: pick a key uniformly from ``keys``, write a
``value_size``-byte value with probability ``write_ratio`` (else read), await the answer, record
the latency, repeat. Every worker has its own backend (its own connection or client session),
so C workers are C concurrent clients, each with one operation outstanding.

The run is one window: ``warmup_s`` of unrecorded load, then ``duration_s`` measured. An
operation counts when it *completes* inside the measured window; workers stop at the first
completion past its end. Latencies go into one preallocated-growth ``array('q')`` per process
(``time.perf_counter_ns``, no per-operation logging), completions into a 1 ms bitmap
(``pbkv.bench.stats``) for the failover gap.

With ``procs`` > 1 the workers are split over that many OS processes (``spawn``), each with one
asyncio loop (uvloop when importable). The parent connects nothing: it waits until every child
has its backends open, gives all of them the same start instant on the shared monotonic clock,
shows progress, runs the timed action (killing a primary) and merges the raw results exactly:
latency arrays are concatenated, bitmaps OR-ed.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import queue
import random
import string
import time
from array import array
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from pbkv.bench.stats import (
    THROUGHPUT_SLOT_NS,
    TIMELINE_RESOLUTION_NS,
    LatencySummary,
    latency_curve,
    longest_gap_ms,
    merge_counts,
    merge_latencies,
    merge_timelines,
    resumed_after_ns,
    throughput_slots,
    timeline_slots,
)

NS_PER_S: Final = 1_000_000_000
START_DELAY_NS: Final = 50_000_000
"""Margin between the parent choosing the start instant and the workers starting."""
ERROR_PAUSE_S: Final = 0.001
"""A worker whose operation failed waits this long before the next, so a refused connection
does not become a busy loop."""
ERROR_KINDS_MAX: Final = 8
PROGRESS_INTERVAL_NS: Final = 200_000_000
CHILD_READY_TIMEOUT_S: Final = 60.0
CHILD_RESULT_GRACE_S: Final = 60.0
"""How long after the window's end the parent waits for a child's result."""


class Backend(Protocol):
    """One client of the system under test."""

    async def write(self, key: str, value: str) -> None:
        """Store ``value`` under ``key``; return once the system acknowledged it."""

    async def read(self, key: str) -> None:
        """Read ``key`` (its value is discarded)."""

    async def close(self) -> None:
        """Release the connection."""

    def retries(self) -> int | None:
        """Operations this client re-sent, or None when the backend cannot tell."""


BackendFactory = Callable[[], Awaitable[Backend]]
"""Opens one backend; must be picklable (a module-level function or a ``functools.partial`` of
one) when ``procs`` > 1."""


@dataclass(frozen=True, slots=True)
class LoadSpec:
    """What to run. See ``pbkv bench --help`` for the meaning of each field."""

    clients: int = 16
    duration_s: float = 5.0
    warmup_s: float = 0.5
    write_ratio: float = 0.5
    keys: int = 10_000
    value_size: int = 64
    procs: int = 1
    seed: int = 1

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first field out of range."""
        if self.clients < 1:
            raise ValueError("clients must be at least 1")
        if not 1 <= self.procs <= self.clients:
            raise ValueError("procs must be between 1 and the number of clients")
        if self.duration_s <= 0 or self.warmup_s < 0:
            raise ValueError("duration must be positive and warm-up not negative")
        if not 0.0 <= self.write_ratio <= 1.0:
            raise ValueError("write ratio must be between 0 and 1")
        if self.keys < 1 or self.value_size < 0:
            raise ValueError("keys must be at least 1 and value size not negative")


@dataclass(slots=True)
class ProcessResult:
    """Raw figures of one process, mergeable with the others'."""

    latencies: bytes
    timeline: bytes
    throughput: bytes
    writes: int
    errors: int
    error_kinds: dict[str, int]
    retries: int | None


@dataclass(frozen=True, slots=True)
class LoadResult:
    """The merged outcome of a run."""

    spec: LoadSpec
    backend: str
    ops: int
    writes: int
    errors: int
    error_kinds: dict[str, int]
    retries: int | None
    latency: LatencySummary
    longest_gap_ms: float
    kill_at_s: float | None = None
    resumed_after_kill_ms: float | None = None
    notes: tuple[str, ...] = ()
    throughput: tuple[int, ...] = ()
    """Operations completed in each ``THROUGHPUT_SLOT_NS`` of the measured window."""
    latency_curve: tuple[tuple[float, float], ...] = ()
    """(percentile, ms) points of the latency distribution."""

    @property
    def reads(self) -> int:
        return self.ops - self.writes

    @property
    def ops_per_s(self) -> float:
        return self.ops / self.spec.duration_s


@dataclass(slots=True)
class TimedAction:
    """Something the parent does ``at_s`` seconds into the measured window (kill a primary)."""

    at_s: float
    action: Callable[[], None]
    fired_offset_ns: int | None = None
    """When the action started, in ns after the start of the measured window."""


@dataclass(slots=True)
class RunHooks:
    """Parent-side callbacks: ``progress(elapsed_s, total_s, ops_measured)`` a few times per
    second, and an optional timed action."""

    progress: Callable[[float, float, int], None] | None = None
    timed_action: TimedAction | None = None
    notes: list[str] = field(default_factory=list)


def make_keys(count: int) -> list[str]:
    """The key space: ``count`` fixed-width keys."""
    return [f"key:{index:09d}" for index in range(count)]


def make_value(size: int, seed: int) -> str:
    """A ``size``-byte ASCII value (letters, so every backend stores it verbatim)."""
    rng = random.Random(seed)
    return "".join(rng.choice(string.ascii_letters) for _ in range(size))


def clients_of_process(spec: LoadSpec, index: int) -> int:
    """How many of the ``spec.clients`` workers process ``index`` runs (round-robin split)."""
    return spec.clients // spec.procs + (1 if index < spec.clients % spec.procs else 0)


def run_with_loop(coroutine: Coroutine[Any, Any, Any]) -> Any:
    """Run ``coroutine`` on a fresh loop: uvloop when importable, else asyncio's default."""
    try:
        import uvloop

        loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = uvloop.new_event_loop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        loop_factory = None
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(coroutine)


class _Window:
    """One process's share of a run: its workers and their raw figures."""

    def __init__(self, spec: LoadSpec, seed: int) -> None:
        self.spec = spec
        self.rng = random.Random(seed)
        self.keys = make_keys(spec.keys)
        self.value = make_value(spec.value_size, spec.seed)
        self.latencies: array[int] = array("q")
        self.timeline = bytearray(timeline_slots(int(spec.duration_s * NS_PER_S)))
        self.counts: array[int] = array(
            "q", bytes(8 * throughput_slots(int(spec.duration_s * NS_PER_S)))
        )
        self.writes = 0
        self.errors = 0
        self.error_kinds: dict[str, int] = {}
        self.measure_start_ns = 0
        self.measure_end_ns = 0

    def set_begin(self, begin_ns: int) -> None:
        self.measure_start_ns = begin_ns + int(self.spec.warmup_s * NS_PER_S)
        self.measure_end_ns = self.measure_start_ns + int(self.spec.duration_s * NS_PER_S)

    async def worker(self, backend: Backend, seed: int) -> None:
        # Everything the loop touches is a local: this is the generator's hot path.
        rand = random.Random(seed).random
        keys = self.keys
        key_count = len(keys)
        value = self.value
        write_ratio = self.spec.write_ratio
        write = backend.write
        read = backend.read
        record = self.latencies.append
        timeline = self.timeline
        counts = self.counts
        slot_ns = THROUGHPUT_SLOT_NS
        start = self.measure_start_ns
        end = self.measure_end_ns
        clock = time.perf_counter_ns
        resolution = TIMELINE_RESOLUTION_NS
        writes = 0
        try:
            while True:
                key = keys[int(rand() * key_count)]
                is_write = rand() < write_ratio
                began = clock()
                try:
                    if is_write:
                        await write(key, value)
                    else:
                        await read(key)
                except Exception as error:
                    finished = clock()
                    if finished >= end:
                        return
                    if finished >= start:
                        self.record_error(error)
                    await asyncio.sleep(ERROR_PAUSE_S)
                    continue
                finished = clock()
                if finished >= start:
                    if finished >= end:
                        return
                    record(finished - began)
                    timeline[(finished - start) // resolution] = 1
                    counts[(finished - start) // slot_ns] += 1
                    writes += is_write
        finally:
            self.writes += writes

    def record_error(self, error: Exception) -> None:
        self.errors += 1
        kind = f"{type(error).__name__}: {error}"[:120]
        if kind in self.error_kinds or len(self.error_kinds) < ERROR_KINDS_MAX:
            self.error_kinds[kind] = self.error_kinds.get(kind, 0) + 1

    def result(self, retries: int | None) -> ProcessResult:
        return ProcessResult(
            latencies=self.latencies.tobytes(),
            timeline=bytes(self.timeline),
            throughput=self.counts.tobytes(),
            writes=self.writes,
            errors=self.errors,
            error_kinds=self.error_kinds,
            retries=retries,
        )


async def _open_backends(factory: BackendFactory, count: int) -> list[Backend]:
    backends: list[Backend] = []
    try:
        for _ in range(count):
            backends.append(await factory())
    except BaseException:
        await _close_backends(backends)
        raise
    return backends


async def _close_backends(backends: list[Backend]) -> int | None:
    retries: int | None = 0
    for backend in backends:
        count = backend.retries()
        retries = None if retries is None or count is None else retries + count
        with contextlib.suppress(Exception):
            await backend.close()
    return retries


async def _run_workers(
    window: _Window,
    backends: list[Backend],
    begin_ns: int,
    ticker: Callable[[], Coroutine[Any, Any, None]] | None = None,
) -> ProcessResult:
    window.set_begin(begin_ns)
    delay_ns = begin_ns - time.perf_counter_ns()
    if delay_ns > 0:
        await asyncio.sleep(delay_ns / NS_PER_S)
    tasks = [
        asyncio.create_task(window.worker(backend, window.rng.getrandbits(64)))
        for backend in backends
    ]
    ticking = asyncio.create_task(ticker()) if ticker is not None else None
    try:
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        if ticking is not None:
            ticking.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticking
    retries = await _close_backends(backends)
    return window.result(retries)


class _Controller:
    """The parent's periodic duties: progress and the timed action."""

    def __init__(self, spec: LoadSpec, hooks: RunHooks, begin_ns: int) -> None:
        self.hooks = hooks
        self.begin_ns = begin_ns
        self.measure_start_ns = begin_ns + int(spec.warmup_s * NS_PER_S)
        self.end_ns = self.measure_start_ns + int(spec.duration_s * NS_PER_S)
        self.total_s = spec.warmup_s + spec.duration_s
        self.next_progress_ns = begin_ns

    def action_due_ns(self) -> int | None:
        timed = self.hooks.timed_action
        if timed is None or timed.fired_offset_ns is not None:
            return None
        return self.measure_start_ns + int(timed.at_s * NS_PER_S)

    def next_wake_ns(self) -> int:
        due = self.action_due_ns()
        wake = min(self.next_progress_ns, self.end_ns)
        return wake if due is None else min(wake, due)

    def tick(self, ops_measured: int) -> None:
        now = time.perf_counter_ns()
        due = self.action_due_ns()
        timed = self.hooks.timed_action
        if timed is not None and due is not None and now >= due:
            timed.fired_offset_ns = now - self.measure_start_ns
            timed.action()
        if now >= self.next_progress_ns:
            self.next_progress_ns = now + PROGRESS_INTERVAL_NS
            if self.hooks.progress is not None:
                elapsed_s = min(max(now - self.begin_ns, 0) / NS_PER_S, self.total_s)
                self.hooks.progress(elapsed_s, self.total_s, ops_measured)


async def _run_in_process(
    spec: LoadSpec, factory: BackendFactory, hooks: RunHooks
) -> ProcessResult:
    window = _Window(spec, spec.seed)
    backends = await _open_backends(factory, spec.clients)
    begin_ns = time.perf_counter_ns() + START_DELAY_NS
    controller = _Controller(spec, hooks, begin_ns)

    async def ticker() -> None:
        while True:
            delay_ns = controller.next_wake_ns() - time.perf_counter_ns()
            await asyncio.sleep(max(delay_ns, 1_000_000) / NS_PER_S)
            controller.tick(len(window.latencies))

    result = await _run_workers(window, backends, begin_ns, ticker)
    controller.tick(len(window.latencies))
    return result


@dataclass(frozen=True, slots=True)
class _Shared:
    """What the parent and its generator processes share (multiprocessing primitives, handed
    to each child when it is spawned)."""

    channel: Any  # Queue of (index, "ready" | ProcessResult | error text)
    go: Any  # Event: the start instant is set
    begin: Any  # Value('q'): the start instant, perf_counter_ns
    progress: Any  # Array('q'): operations measured so far, per process


def _child_main(spec: LoadSpec, factory: BackendFactory, index: int, shared: _Shared) -> None:
    """Entry point of a generator process (runs under ``spawn``)."""
    try:
        result = run_with_loop(_child_run(spec, factory, index, shared))
        shared.channel.put((index, result))
    except BaseException as error:
        shared.channel.put((index, f"{type(error).__name__}: {error}"))


async def _child_run(
    spec: LoadSpec, factory: BackendFactory, index: int, shared: _Shared
) -> ProcessResult:
    window = _Window(spec, spec.seed * 1009 + index)
    backends = await _open_backends(factory, clients_of_process(spec, index))
    shared.channel.put((index, "ready"))
    if not await asyncio.to_thread(shared.go.wait, CHILD_READY_TIMEOUT_S):
        await _close_backends(backends)
        raise TimeoutError("the parent never gave the start signal")

    async def reporter() -> None:
        while True:
            await asyncio.sleep(PROGRESS_INTERVAL_NS / NS_PER_S / 2)
            shared.progress[index] = len(window.latencies)

    return await _run_workers(window, backends, shared.begin.value, reporter)


def _run_processes(spec: LoadSpec, factory: BackendFactory, hooks: RunHooks) -> list[ProcessResult]:
    context = multiprocessing.get_context("spawn")
    shared = _Shared(
        channel=context.Queue(),
        go=context.Event(),
        begin=context.Value("q", 0, lock=False),
        progress=context.Array("q", spec.procs, lock=False),
    )
    channel, begin, progress = shared.channel, shared.begin, shared.progress
    children = [
        context.Process(
            target=_child_main,
            args=(spec, factory, index, shared),
            name=f"pbkv-bench-{index}",
            daemon=True,
        )
        for index in range(spec.procs)
    ]
    for child in children:
        child.start()
    try:
        _await_children(children, channel, "ready", CHILD_READY_TIMEOUT_S)
        begin.value = time.perf_counter_ns() + START_DELAY_NS
        shared.go.set()
        controller = _Controller(spec, hooks, begin.value)
        results: dict[int, ProcessResult] = {}
        deadline_ns = controller.end_ns + int(CHILD_RESULT_GRACE_S * NS_PER_S)
        while len(results) < spec.procs:
            if time.perf_counter_ns() > deadline_ns:
                raise TimeoutError("a generator process did not report its result")
            wait_s = max(controller.next_wake_ns() - time.perf_counter_ns(), 1_000_000) / NS_PER_S
            with contextlib.suppress(queue.Empty):
                index, payload = channel.get(timeout=min(wait_s, 0.2))
                if not isinstance(payload, ProcessResult):
                    raise RuntimeError(f"generator process {index} failed: {payload}")
                results[index] = payload
            controller.tick(sum(progress))
            _check_alive(children, results)
        return [results[index] for index in range(spec.procs)]
    finally:
        for child in children:
            child.join(timeout=5.0)
            if child.is_alive():
                child.kill()
                child.join()


def _await_children(children: list[Any], channel: Any, expected: str, timeout_s: float) -> None:
    waiting = set(range(len(children)))
    deadline = time.monotonic() + timeout_s
    while waiting:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("generator processes did not open their connections in time")
        try:
            index, payload = channel.get(timeout=min(remaining, 0.5))
        except queue.Empty:
            _check_alive(children, {})
            continue
        if payload != expected:
            raise RuntimeError(f"generator process {index} failed: {payload}")
        waiting.discard(index)


def _check_alive(children: list[Any], finished: dict[int, ProcessResult]) -> None:
    for index, child in enumerate(children):
        if index not in finished and child.exitcode not in (None, 0):
            raise RuntimeError(f"generator process {index} died with exit code {child.exitcode}")


def merge_results(
    spec: LoadSpec, backend: str, parts: list[ProcessResult], hooks: RunHooks
) -> LoadResult:
    """Combine per-process figures into one ``LoadResult`` (exactly: nothing is re-sampled)."""
    latencies = merge_latencies(part.latencies for part in parts)
    timeline = merge_timelines(part.timeline for part in parts)
    error_kinds: dict[str, int] = {}
    for part in parts:
        for kind, count in part.error_kinds.items():
            error_kinds[kind] = error_kinds.get(kind, 0) + count
    retries: int | None = 0
    for part in parts:
        retries = None if retries is None or part.retries is None else retries + part.retries
    notes = list(hooks.notes)
    if retries is None:
        notes.append("retries: the backend exposes no retry counter")
    kill_at_s: float | None = None
    resumed_ms: float | None = None
    timed = hooks.timed_action
    if timed is not None and timed.fired_offset_ns is not None:
        kill_at_s = timed.fired_offset_ns / NS_PER_S
        resumed_ns = resumed_after_ns(timeline, timed.fired_offset_ns)
        resumed_ms = None if resumed_ns is None else resumed_ns / 1e6
    return LoadResult(
        spec=spec,
        backend=backend,
        ops=len(latencies),
        writes=sum(part.writes for part in parts),
        errors=sum(part.errors for part in parts),
        error_kinds=error_kinds,
        retries=retries,
        latency=LatencySummary.of(latencies),
        longest_gap_ms=longest_gap_ms(timeline),
        kill_at_s=kill_at_s,
        resumed_after_kill_ms=resumed_ms,
        notes=tuple(notes),
        throughput=tuple(merge_counts(part.throughput for part in parts)),
        latency_curve=latency_curve(latencies),
    )


def run_load(
    spec: LoadSpec, factory: BackendFactory, backend: str, hooks: RunHooks | None = None
) -> LoadResult:
    """Run the closed loop described by ``spec`` and return the merged result.

    Args:
        spec: the workload; ``spec.procs`` > 1 needs a picklable ``factory``.
        factory: opens one backend (one per client).
        backend: a name for reports (``pbkv``, ``redis``).
        hooks: progress display and an optional timed action, run in this process.

    Raises:
        ValueError: ``spec`` is out of range.
        RuntimeError, TimeoutError, OSError: a generator process or a connection failed.
    """
    spec.validate()
    hooks = hooks or RunHooks()
    if spec.procs == 1:
        parts = [run_with_loop(_run_in_process(spec, factory, hooks))]
    else:
        parts = _run_processes(spec, factory, hooks)
    return merge_results(spec, backend, parts, hooks)

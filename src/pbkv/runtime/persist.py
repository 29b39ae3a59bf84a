"""Durable view of the view service: written atomically (temp file, fsync, rename, fsync dir).

The core asks for it with a ``PersistView`` effect; the host writes it before executing any later
effect of the same handler, so no server hears of a view the service could forget (V9).

Opening a ``ViewStore`` proves the directory usable before the service answers anyone: it takes
an exclusive ``flock`` on ``LOCK`` (held for the life of the process, so a second view service
on the same directory is refused, and so is one on a server's data directory, whose ``LOCK``
the storage engine takes: the error says which kind of process holds it), then writes, fsyncs
and removes a probe at the very path of the temporary file. A read-only directory, a full disk
or a directory in the temporary file's place is then a one-line ``ConfigError`` (exit status 2)
at start, instead of a failure at the first view change. A saved view is validated as strictly
as a message from the wire (view numbers below the core's ``VIEW_NUMBER_LIMIT``, above which it
refuses pings): a file that could not have been written by ``save`` is "corrupt", with the
reason. A failed ``save`` raises an ``OSError`` whose ``filename`` is the file that failed (the
temporary file when its write or fsync did), for the host's ``persist_failed`` line.

A saved view names its format ``version``. One of another version (a newer release wrote it,
and this one was started on the directory after a downgrade) is refused at start with one
line saying so, whatever else it holds: its version is read first (``other_format_version``),
so a newer layout is never called corrupt, and the file is never overwritten, since nothing is
saved before the view is loaded. The view in etcd is read the same way (``runtime/etcd.py``).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
from pathlib import Path
from typing import Final

import msgspec

from pbkv.core.effects import PersistView
from pbkv.core.messages import CLUSTER_ID_LIMIT, View
from pbkv.core.sizes import NAME_BYTES_MAX
from pbkv.core.view_service_state import VIEW_NUMBER_LIMIT
from pbkv.errors import written_by_another_version
from pbkv.runtime.config import ConfigError

VIEW_FILE: Final = "view.json"
LOCK_FILE: Final = "LOCK"
TEMPORARY_SUFFIX: Final = ".tmp"
FORMAT_VERSION: Final = 1
VIEW_FILE_BYTES_MAX: Final = 16 * 1024 * 1024
SERVER_FILE: Final = re.compile(r"(wal-\d+\.log|snap-\d+\.snap)")
"""Files only a server keeps (``pbkv.storage.format``); its ``LOCK`` is the same file as ours."""


class PersistedView(msgspec.Struct, frozen=True):
    version: int
    number: int
    primary: str | None
    backups: tuple[str, ...]
    acknowledged: bool
    incarnations: tuple[tuple[str, int], ...] = ()
    carried: tuple[str, ...] = ()
    """V14: backups carried complete into this view (absent in files written before it)."""
    rescue_view: int = 0
    """V15: the last acknowledged view (absent in files written before it: no rescue)."""
    rescuers: tuple[tuple[str, int], ...] = ()
    """V15: its backups, each with its incarnation."""
    cluster_id: int = 0
    """V16: the cluster this service serves (absent in files written before it: drawn anew)."""


class SavedVersion(msgspec.Struct):
    """The one field every saved view has, whatever its format version."""

    version: int


def other_format_version(raw: bytes) -> str | None:
    """``written by another pbkv format version (N; ...)`` when ``raw`` is a saved view of
    another format version; None when it is of ours, or has no version to read (the full
    decode then says why it is corrupt)."""
    try:
        version = msgspec.json.decode(raw, type=SavedVersion).version
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    if version == FORMAT_VERSION:
        return None
    return written_by_another_version(version, FORMAT_VERSION)


def default_data_dir(host: str, port: int) -> str:
    """The directory ``pbkv viewserver`` uses without ``--data-dir`` (relative to the current
    directory), named after its listen address like etcd's ``default.etcd``."""
    safe_host = "".join(ch if ch.isalnum() or ch in ".-" else "_" for ch in host)
    return f"pbkv-viewserver-{safe_host}-{port}.data"


def view_problem(saved: PersistedView) -> str | None:
    """Why ``saved`` is not a view ``save`` could have written, or None when it is sound."""
    if not 0 <= saved.number < VIEW_NUMBER_LIMIT:  # the core refuses pings naming more
        return f"view number {saved.number} outside 0..2**62-1"
    names = [saved.primary, *saved.backups] if saved.primary is not None else [*saved.backups]
    for name in names:
        if not name or len(name.encode()) > NAME_BYTES_MAX:
            return f"server name of {len(name.encode())} bytes (1..{NAME_BYTES_MAX} allowed)"
    if (saved.primary is None) != (saved.number == 0):
        return "a view has a primary if and only if its number is above 0"
    if saved.primary is not None and saved.primary in saved.backups:
        return f"primary {saved.primary} is also a backup"
    if len(set(saved.backups)) != len(saved.backups):
        return "a backup appears twice"
    for name, incarnation in saved.incarnations:
        if not name or len(name.encode()) > NAME_BYTES_MAX or incarnation < 0:
            return f"bad incarnation record ({len(name.encode())}-byte name, {incarnation})"
    if not set(saved.carried) <= set(saved.backups):
        return "a carried backup is not a backup of the view"
    if len(set(saved.carried)) != len(saved.carried):
        return "a carried backup appears twice"
    if not 0 <= saved.cluster_id < CLUSTER_ID_LIMIT:
        return f"cluster id {saved.cluster_id} outside 0..2**63-1"
    return rescue_problem(saved)


def rescue_problem(saved: PersistedView) -> str | None:
    """Why the saved V15 basis is not one ``save`` could have written, or None."""
    if not 0 <= saved.rescue_view <= saved.number:
        return f"last acknowledged view {saved.rescue_view} outside 0..{saved.number}"
    if saved.rescuers and not saved.rescue_view:
        return "rescuers without a last acknowledged view"
    for name, incarnation in saved.rescuers:
        if not name or len(name.encode()) > NAME_BYTES_MAX or incarnation <= 0:
            return f"bad rescuer record ({len(name.encode())}-byte name, {incarnation})"
    if len({name for name, _ in saved.rescuers}) != len(saved.rescuers):
        return "a rescuer appears twice"
    return None


def restored_state(saved: PersistedView) -> PersistView:
    """The core's state from a saved view that ``view_problem`` found sound."""
    view = View(saved.number, saved.primary, saved.backups)
    return PersistView(
        view,
        saved.acknowledged,
        saved.incarnations,
        saved.carried,
        saved.rescue_view,
        saved.rescuers,
        saved.cluster_id,
    )


class ViewStore:
    """The view file in ``data_dir`` (created if missing), locked and probed; see the module
    docstring. Raises ``ConfigError`` when the directory cannot be used."""

    def __init__(self, data_dir: str | os.PathLike[str]) -> None:
        self.directory = Path(data_dir)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise ConfigError(
                f"cannot use data directory {str(self.directory)!r}: {_reason(error)}"
            ) from None
        self.path = self.directory / VIEW_FILE
        self.temporary = self.path.with_suffix(TEMPORARY_SUFFIX)
        self._lock_fd = self._lock()
        self._probe()

    def _lock(self) -> int:
        lock_path = self.directory / LOCK_FILE
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:
            raise ConfigError(f"cannot use data directory: {lock_path}: {_reason(error)}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ConfigError(
                f"data directory {str(self.directory)!r} is in use by {self._holder()}"
            ) from None
        except OSError as error:
            os.close(fd)
            raise ConfigError(f"cannot lock {lock_path}: {_reason(error)}") from None
        return fd

    def _holder(self) -> str:
        """Who holds the lock, as far as the directory's files tell: a server creates its log
        there as soon as it holds the same ``LOCK`` (``pbkv.storage``); a view service keeps
        at most its view file."""
        try:
            server = any(SERVER_FILE.fullmatch(path.name) for path in self.directory.iterdir())
        except OSError:
            return f"another pbkv process (lock {LOCK_FILE} held)"
        if server:
            return f"another pbkv process, a server (its log is there; lock {LOCK_FILE} held)"
        return f"another view service (lock {LOCK_FILE} held)"

    def _probe(self) -> None:
        """Write, fsync and remove a file where ``save`` writes its temporary file."""
        try:
            with open(self.temporary, "wb") as file:
                file.write(b"probe\n")
                file.flush()
                os.fsync(file.fileno())
            os.remove(self.temporary)
            self._sync_directory()
        except OSError as error:
            self.close()
            raise ConfigError(
                f"cannot write in data directory {str(self.directory)!r}: "
                f"{self.temporary}: {_reason(error)}"
            ) from None

    def close(self) -> None:
        """Release the lock (also released when the process ends)."""
        if self._lock_fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._lock_fd)
            self._lock_fd = -1

    def load(self) -> PersistView | None:
        """The last saved ``PersistView``, or None when nothing was saved."""
        try:
            with open(self.path, "rb") as file:
                raw = file.read(VIEW_FILE_BYTES_MAX + 1)
        except FileNotFoundError:
            return None
        except OSError as error:
            raise ConfigError(f"cannot read {str(self.path)!r}: {_reason(error)}") from None
        if len(raw) > VIEW_FILE_BYTES_MAX:
            raise self._corrupt(f"larger than {VIEW_FILE_BYTES_MAX} bytes")
        other = other_format_version(raw)
        if other is not None:
            raise ConfigError(
                f"view file {str(self.path)!r} was {other}: start the release that wrote it "
                "(this one leaves the file as it is)"
            )
        try:
            saved = msgspec.json.decode(raw, type=PersistedView)
        except (msgspec.DecodeError, msgspec.ValidationError) as error:
            raise self._corrupt(str(error)) from None
        problem = view_problem(saved)
        if problem is not None:
            raise self._corrupt(problem)
        return restored_state(saved)

    def _corrupt(self, reason: str) -> ConfigError:
        return ConfigError(f"corrupt view file {str(self.path)!r}: {reason}")

    def save(self, state: PersistView) -> None:
        """Replace the saved state atomically and durably. Raises ``OSError`` naming the file
        that failed in ``filename`` (a failed write leaves no temporary file behind)."""
        try:
            with open(self.temporary, "wb") as file:
                file.write(encode_view(state) + b"\n")
                file.flush()
                os.fsync(file.fileno())
        except OSError as error:
            with contextlib.suppress(OSError):
                os.remove(self.temporary)
            raise _naming(error, self.temporary) from None
        os.replace(self.temporary, self.path)
        self._sync_directory()

    def _sync_directory(self) -> None:
        try:
            directory = os.open(self.directory, os.O_RDONLY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)
        except OSError as error:
            raise _naming(error, self.directory) from None


def _reason(error: OSError) -> str:
    return error.strerror or str(error)


def _naming(error: OSError, path: Path) -> OSError:
    """``error`` with ``path`` as its file when the failed call named none (a write, an
    fsync): otherwise the host would blame the view file it never reached."""
    if error.filename is None:
        error.filename = str(path)
    return error


def encode_view(state: PersistView) -> bytes:
    """The saved form of the view service's state (the view file, and the etcd key)."""
    view = state.view
    record = PersistedView(
        FORMAT_VERSION,
        view.number,
        view.primary,
        view.backups,
        state.acknowledged,
        state.incarnations,
        state.carried,
        state.rescue_view,
        state.rescuers,
        state.cluster_id,
    )
    return msgspec.json.encode(record)

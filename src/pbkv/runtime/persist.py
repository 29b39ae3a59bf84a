"""Durable view of the view service: written atomically (temp file, fsync, rename, fsync dir).

The core asks for it with a ``PersistView`` effect; the host writes it before executing any later
effect of the same handler, so no server hears of a view the service could forget (V9).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final

import msgspec

from pbkv.core.effects import PersistView
from pbkv.core.messages import View
from pbkv.runtime.config import ConfigError

VIEW_FILE: Final = "view.json"
FORMAT_VERSION: Final = 1


class PersistedView(msgspec.Struct, frozen=True):
    version: int
    number: int
    primary: str | None
    backups: tuple[str, ...]
    acknowledged: bool
    incarnations: tuple[tuple[str, int], ...] = ()


class ViewStore:
    """The view file in ``data_dir`` (created if missing)."""

    def __init__(self, data_dir: str | os.PathLike[str]) -> None:
        self.directory = Path(data_dir)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise ConfigError(
                f"cannot use data directory {str(self.directory)!r}: {error}"
            ) from None
        self.path = self.directory / VIEW_FILE

    def load(self) -> PersistView | None:
        """The last saved ``PersistView``, or None when nothing was saved."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as error:
            raise ConfigError(f"cannot read {str(self.path)!r}: {error}") from None
        try:
            saved = msgspec.json.decode(raw, type=PersistedView)
        except msgspec.DecodeError as error:
            raise ConfigError(f"corrupt view file {str(self.path)!r}: {error}") from None
        if saved.version != FORMAT_VERSION:
            raise ConfigError(f"view file {str(self.path)!r} has unknown version {saved.version}")
        view = View(saved.number, saved.primary, saved.backups)
        return PersistView(view, saved.acknowledged, saved.incarnations)

    def save(self, state: PersistView) -> None:
        """Replace the saved state atomically and durably."""
        view = state.view
        record = PersistedView(
            FORMAT_VERSION,
            view.number,
            view.primary,
            view.backups,
            state.acknowledged,
            state.incarnations,
        )
        temporary = self.path.with_suffix(".tmp")
        with open(temporary, "wb") as file:
            file.write(msgspec.json.encode(record) + b"\n")
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, self.path)
        directory = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)

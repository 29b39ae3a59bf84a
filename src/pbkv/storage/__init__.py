"""Durable storage for a replica: a write-ahead log of opaque records plus snapshots.

One module per role:

- ``format``: the bytes on disk (checksummed frames of records, segment and snapshot headers);
- ``files``: file-system primitives (write, fsync, atomic rename, directory lock);
- ``recovery``: rebuild (snapshot, records) from a directory, or refuse with one line;
- ``log``: ``DurableLog``, appending with an fsync policy, rotation, compaction, install.

Typical use by a host::

    log, recovered = DurableLog.open(data_dir, "always")
    state = decode(recovered.snapshot); replay(recovered.records)
    log.append([encode(entry) for entry in batch])       # durable on return with "always"
    mark = log.begin_compaction()                        # main thread
    log.finish_compaction(mark, encode(state_at_mark))   # any thread; appends go on

The engine is not part of the sans-I/O core: the core will ask for appends and snapshots as
effects, and the runtime will call this package. See docs/design.md, "Durability: the storage
engine", for the format, the guarantees and the measurements behind the choice of engine.
"""

from pbkv.storage.errors import (
    StorageCorrupt,
    StorageError,
    StorageFormatVersion,
    StorageLocked,
)
from pbkv.storage.log import CompactionMark, DurableLog, FsyncPolicy
from pbkv.storage.recovery import Recovered

__all__ = [
    "CompactionMark",
    "DurableLog",
    "FsyncPolicy",
    "Recovered",
    "StorageCorrupt",
    "StorageError",
    "StorageFormatVersion",
    "StorageLocked",
]

"""Exit codes: one table for every ``pbkv`` command (shown in every command's ``--help``; the
same table is in docs/guide.md).

- 0 ok: done.
- 1 not found: ``get`` of a missing key; a check that found a violation (``check-history``,
  ``sim``).
- 2 usage: a bad flag, argument or input file; an address that cannot be bound.
- 3 unavailable: nothing answered in time (view service or server unreachable, an operation
  timed out: a put, append or delete may or may not have taken effect, a get changed nothing;
  a check undecided in time).
- 4 refused: refused for good (an operation rejected, ``wrong_server``, a cluster command that
  cannot be done now: already running, not running, unknown target, restart without
  ``--force``).
- 5 failed: anything else went wrong (a cluster that did not start, a file not written).
- 70 internal error: a node process hit a bug (the traceback is in its log), or a command
  did (one line naming the exception; ``PBKV_DEBUG=1`` shows the traceback).
- 130 interrupted: Ctrl-C.

A command whose standard output is closed under it (``pbkv cluster logs | head -1``) stops
quietly with 0, as Unix tools do.
"""

from __future__ import annotations

from typing import Final

EXIT_OK: Final = 0
EXIT_NOT_FOUND: Final = 1
EXIT_USAGE: Final = 2
EXIT_UNAVAILABLE: Final = 3
EXIT_REFUSED: Final = 4
EXIT_FAILED: Final = 5
EXIT_INTERNAL: Final = 70
EXIT_INTERRUPTED: Final = 130

EXIT_CODES_HELP: Final = (
    "\b\nExit codes: 0 ok, 1 not found (missing key, violation found), 2 usage error,\n"
    "3 unavailable (no answer in time), 4 refused, 5 failed, 70 internal error,\n"
    "130 interrupted."
)

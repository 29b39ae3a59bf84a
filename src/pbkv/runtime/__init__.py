"""pbkv.runtime: the asyncio host that runs the sans-I/O core over TCP. No protocol decisions.

Modules, by role:

* ``config``     — addresses, named limits, ``Timing`` (the one place seconds become ticks).
* ``loop``       — uvloop when installed; the drift-free ``Ticker`` with bounded catch-up.
* ``connection`` — one framed TCP connection (``asyncio.Protocol``), batched bounded writes.
* ``host``       — ``Network``: listener, inbound ``conn:N`` table, outbound pool with backoff.
* ``node``       — ``NodeHost`` feeds messages and ticks into a ``ViewService`` or ``Replica``
  and executes its effects in order; ``run_viewserver`` / ``run_server`` are the processes.
* ``persist``    — the view service's view file (atomic write, fsync, rename, fsync dir).
* ``faults``     — partitions and unreliability at the send/receive boundary; a slow disk.
* ``admin``      — the admin port (127.0.0.1 only): ``Partition``, ``Heal``, ``Unreliable``,
  ``SlowDisk``, ``AdminStatus``; ``send_admin(address, message)`` drives it from Python.
* ``metrics``    — Prometheus metrics on 127.0.0.1 (only when ``--metrics-port`` is given).
* ``logging``    — one event line per event, human or JSON, with node name and view number.
* ``rpc``        — blocking/awaited request-reply for operator tools (status, dump, admin).
"""

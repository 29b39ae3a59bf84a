"""What ``pbkv status`` says of the certificates the nodes present (with TLS).

Every node of a TLS cluster presents a certificate; one that expires stops the node from
being trusted by the others and by clients. ``pbkv status`` learns each one the way a client
would: it connects to every live server and to the view service, completes TLS and the
authentication handshake, reads the certificate the node presented and closes (no request, so
nothing is logged as unusual). The servers are asked in parallel, each bounded by the
command's timeout; one that cannot be reached shows ``-``. Within ``SOON_S`` (the alert
``PbkvTlsCertificateExpiresSoon``'s 14 days) the text says ``soon``, in red on a terminal.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, Final

from pbkv.runtime.group import split_members
from pbkv.runtime.rpc import presented_certificate_expiry, tool_security

SOON_S: Final = 14 * 86400.0
PROBES_IN_PARALLEL_MAX: Final = 16


def add_certificate_expiries(record: dict[str, Any], viewserver: str, timeout_s: float) -> None:
    """With TLS, ``certificate_expires`` (Unix time, or None when not reached) on each server
    of ``record`` and ``view_service_certificates`` (by member address); without, nothing."""
    security = tool_security()
    if security.client_tls is None:
        return
    members = split_members(viewserver)
    servers = [server["name"] for server in record["servers"] if server["alive"]]
    addresses = [*members, *servers]
    with ThreadPoolExecutor(max_workers=min(len(addresses), PROBES_IN_PARALLEL_MAX)) as pool:
        found = dict(
            zip(
                addresses,
                pool.map(
                    lambda address: presented_certificate_expiry(address, timeout_s, security),
                    addresses,
                ),
                strict=True,
            )
        )
    for server in record["servers"]:
        server["certificate_expires"] = found.get(server["name"])
    record["view_service_certificates"] = {member: found[member] for member in members}


def expiry_text(expires: float | None, now: float | None = None) -> tuple[str, bool]:
    """``2027-12-02 (364 d)``, ``2027-12-02 (5 h, soon)``, ``expired 2027-12-02`` or ``-``;
    and whether it is within ``SOON_S`` (or past)."""
    if expires is None:
        return "-", False
    left = expires - (time.time() if now is None else now)
    date = datetime.fromtimestamp(expires, UTC).strftime("%Y-%m-%d")
    if left <= 0:
        return f"expired {date}", True
    amount = f"{int(left // 3600)} h" if left < 2 * 86400 else f"{int(left // 86400)} d"
    soon = left < SOON_S
    return f"{date} ({amount}{', soon' if soon else ''})", soon


def view_service_lines(record: dict[str, Any]) -> list[str]:
    """One line per view service member whose certificate was read (or not)."""
    return [
        f"view service {address}: certificate expires {expiry_text(expires)[0]}"
        for address, expires in record.get("view_service_certificates", {}).items()
    ]

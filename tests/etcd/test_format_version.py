"""A downgrade of a view service replicated on etcd: the view in etcd was written by a newer
release (format version 2). A member that wins must neither restore nor overwrite it: it hands
the leader key back and stops with one line naming the key and both versions, exit status 2,
as a view service refuses such a view file at start. Before, it took the view for a corrupt one
(``view_unreadable reason="stored view corrupt: unknown version"``), gave the key back and won
again a few times a second, forever, never saying why it never served."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import aetcd
import pytest

from pbkv.cluster.etcd import EtcdCluster
from pbkv.core.effects import PersistView
from pbkv.core.messages import View
from pbkv.runtime.etcd import decode_view
from pbkv.runtime.persist import encode_view

NEWER = encode_view(PersistView(View(3, "127.0.0.1:1", ()), True)).replace(
    b'"version":1', b'"version":2'
)


async def put_and_read(etcd: EtcdCluster, key: bytes, value: bytes | None) -> tuple[bytes, int]:
    """Put ``value`` (None: only read); the value and its modification revision."""
    host, port = etcd.members[0].endpoint.split(":")
    async with aetcd.Client(host, int(port)) as client:
        if value is not None:
            await client.put(key, value)
        got = await client.get(key)
        return (b"", 0) if got is None else (got.value, int(got.mod_revision))


def test_a_member_that_finds_a_newer_view_in_etcd_stops_and_leaves_it(etcd: EtcdCluster) -> None:
    prefix = "/pbkv/downgrade"
    stored = asyncio.run(put_and_read(etcd, f"{prefix}/view".encode(), NEWER))
    argv = [sys.executable, "-m", "pbkv", "viewserver", "--listen", "127.0.0.1:0"]
    argv += ["--etcd", etcd.endpoints, "--etcd-prefix", prefix]
    result = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=20)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert "Traceback" not in result.stderr and " view_unreadable " not in result.stderr
    assert lines[-1] == (
        f"pbkv: error: view {prefix}/view in etcd was written by another pbkv format version "
        "(2; this release reads 1): start the release that wrote it (this one leaves it as it is)"
    )
    assert sum(" view_refused " in line for line in lines) == 1
    assert asyncio.run(put_and_read(etcd, f"{prefix}/view".encode(), None)) == stored
    assert asyncio.run(put_and_read(etcd, f"{prefix}/leader".encode(), None)) == (b"", 0)


def test_decode_view_names_the_version_not_corruption() -> None:
    with pytest.raises(ValueError, match=r"stored view written by another pbkv format version"):
        decode_view(NEWER)

"""`pbkv cluster up` without --tls where a --tls cluster ran (walk-through review): the command
had installed the directory's TLS for its own connections at start, `up` deleted tls/ and then
failed with exit 2 'cannot load TLS CA .../tls/ca.pem' (a second try worked)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from pbkv.cluster.credentials import create_ca, tls_dir
from tests.cluster.helpers import PING_INTERVAL, client, ok


def test_a_plain_cluster_comes_up_where_a_tls_cluster_ran(cluster_dir: Path) -> None:
    create_ca(cluster_dir)  # what `up --tls` left behind after `down`
    command = ["cluster", "up", "--base-port", "0", "--ping-interval", PING_INTERVAL]
    result = subprocess.run(
        [sys.executable, "-m", "pbkv", *command, "--servers", "1"],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        check=False,
        env={**os.environ, "PBKV_CLUSTER_DIR": str(cluster_dir)},  # as `cd` there would
    )
    ok(result)
    assert not tls_dir(cluster_dir).exists()
    client(cluster_dir, "put", "k", "v")

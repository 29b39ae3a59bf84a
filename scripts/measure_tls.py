"""The cost of authentication and TLS: docs/performance.md, "Authentication and TLS".

Starts, one after the other on loopback, a pbkv cluster (view service + 2 servers) plain, with
the secret, and with the secret over mutual TLS, and a Redis primary + replica plain and over
mutual TLS (``--tls-port``, ``--tls-replication yes``, ``--tls-auth-clients yes``); drives each
with the same closed-loop generator (``pbkv bench``, 50 % writes, writes on the replica before
the answer) at 1 and 64 clients for DURATION seconds, and measures the median time to open a
new authenticated connection (connect + TLS + handshake + one GetView answered). Prints one
markdown table. Usage: python scripts/measure_tls.py [DURATION_S [REPEAT]]  (defaults 3 and 3: the
median of 3 runs per cell; about 3 minutes).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pbkv.cluster import credentials
from pbkv.cluster.processes import free_port
from pbkv.core.messages import GetView, StatusRequest, ViewServiceStatus
from pbkv.runtime import rpc
from pbkv.runtime.security import Security, client_security
from pbkv.runtime.tls import TlsOptions
from pbkv.wire import MESSAGES

PBKV = [sys.executable, "-m", "pbkv"]
CLIENTS = (1, 64)
HANDSHAKES = 200
ENV = {k: v for k, v in os.environ.items() if k != "PBKV_AUTH_TOKEN"}


def start_pbkv(
    mode: str, token: Path, pki: Path, logs: Path
) -> tuple[list[subprocess.Popen[bytes]], str]:
    flags: list[str] = []
    if mode != "plain":
        flags += ["--auth-token-file", str(token)]
    if mode == "tls":
        flags += ["--tls-cert", str(pki / "node.pem"), "--tls-key", str(pki / "node.key"),
                  "--tls-ca", str(pki / "ca.pem"), "--tls-mutual"]  # fmt: skip
    viewserver = f"127.0.0.1:{free_port()}"
    argvs = [["viewserver", "--listen", viewserver, "--no-data-dir"]]
    argvs += [["server", "--listen", f"127.0.0.1:{free_port()}", "--viewserver", viewserver]]
    argvs += [["server", "--listen", f"127.0.0.1:{free_port()}", "--viewserver", viewserver]]
    started = []
    for index, argv in enumerate(argvs):
        log = open(logs / f"{mode}-{index}.log", "wb")  # noqa: SIM115
        started.append(subprocess.Popen([*PBKV, *argv, *flags], stderr=log, env=ENV))
        time.sleep(1.0)
    return started, viewserver


def cli_flags(mode: str, token: Path, pki: Path) -> list[str]:
    flags = [] if mode == "plain" else ["--auth-token-file", str(token)]
    if mode == "tls":
        flags += ["--tls-cert", str(pki / "client.pem"), "--tls-key", str(pki / "client.key"),
                  "--tls-ca", str(pki / "ca.pem")]  # fmt: skip
    return flags


def wait_serving(viewserver: str, security: Security) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            reply = rpc.call(viewserver, StatusRequest(), MESSAGES, 1.0, security)
            if isinstance(reply, ViewServiceStatus) and reply.acknowledged and reply.view.backup:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{viewserver} did not serve")


def bench(flags: list[str], target: list[str], clients: int, duration: float, repeat: int) -> float:
    """Median ops/s of ``repeat`` runs (the 1-client cells vary by 20 % run to run); SystemExit
    with pbkv's own error line if a run failed."""
    command = [*PBKV, *flags, "bench", *target, "--clients", str(clients),
               "--duration", str(duration), "--warmup", "0.5", "--json"]  # fmt: skip
    runs = []
    for _ in range(repeat):
        result = subprocess.run(command, capture_output=True, text=True, env=ENV, check=False)
        if result.returncode != 0:
            reason = (result.stderr.strip().splitlines() or [f"exit {result.returncode}"])[-1]
            raise SystemExit(f"measure_tls: pbkv bench failed: {reason}")
        runs.append(float(json.loads(result.stdout)["ops_per_s"]))
    return statistics.median(runs)


def handshake_ms(viewserver: str, security: Security) -> float:
    times = []
    for _ in range(HANDSHAKES):
        started = time.perf_counter()
        rpc.call(viewserver, GetView(), MESSAGES, 5.0, security)
        times.append((time.perf_counter() - started) * 1000.0)
    return statistics.median(times)


def start_redis(mode: str, pki: Path, directory: Path) -> tuple[list[subprocess.Popen[bytes]], int]:
    tls = ["--tls-cert-file", str(pki / "node.pem"), "--tls-key-file", str(pki / "node.key"),
           "--tls-ca-cert-file", str(pki / "ca.pem"), "--tls-auth-clients", "yes"]  # fmt: skip
    # The replica's first sync starts at once instead of after Redis's 5 s default; until it is
    # online a WAIT 1 0 blocks, and a short 1-client run measured that wait (50 or 0 ops/s).
    common = ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(directory),
              "--repl-diskless-sync-delay", "0"]  # fmt: skip
    ports = free_port(), free_port()
    processes = []
    for index, port in enumerate(ports):
        listen = (
            ["--port", str(port)]
            if mode == "plain"
            else ["--port", "0", "--tls-port", str(port), *tls]
        )
        replica = ["--replicaof", "127.0.0.1", str(ports[0])] if index else []
        if index and mode == "tls":
            replica += ["--tls-replication", "yes"]
        processes.append(
            subprocess.Popen(
                ["redis-server", *common, *listen, *replica], stdout=subprocess.DEVNULL
            )
        )
        time.sleep(1.0)
    cli = ["redis-cli", "-p", str(ports[0])]
    if mode == "tls":
        cli += ["--tls", "--cacert", str(pki / "ca.pem"), "--cert", str(pki / "client.pem"),
                "--key", str(pki / "client.key")]  # fmt: skip
    deadline = time.monotonic() + 20
    while (
        "state=online"
        not in subprocess.run(
            [*cli, "INFO", "replication"], capture_output=True, text=True, check=False
        ).stdout
    ):
        if time.monotonic() > deadline:
            raise RuntimeError("redis replication did not come up")
        time.sleep(0.2)
    return processes, ports[0]


def stop(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        process.terminate()
    for process in processes:
        process.wait(10)


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "duration", nargs="?", type=float, default=3.0, metavar="DURATION_S",
        help="measured seconds per run (default 3)",
    )  # fmt: skip
    parser.add_argument(
        "repeat", nargs="?", type=int, default=3, metavar="REPEAT",
        help="runs per cell, the median kept (default 3)",
    )  # fmt: skip
    arguments = parser.parse_args()
    if not 0 < arguments.duration <= 3600 or arguments.repeat < 1:
        parser.error("DURATION_S must be in (0, 3600] and REPEAT at least 1")
    return arguments


def main() -> None:
    arguments = parse_arguments()
    duration, repeat = arguments.duration, arguments.repeat
    directory = Path(tempfile.mkdtemp(prefix="pbkv-tls-bench-"))
    credentials.create_ca(directory)
    credentials.ensure_certificate(directory, "node")
    pki = credentials.tls_dir(directory)
    token = directory / "token"
    token.write_text(secrets.token_hex(32))
    rows: dict[str, dict[str, float]] = {}
    for mode in ("plain", "auth", "tls"):
        processes, viewserver = start_pbkv(mode, token, pki, directory)
        tls = TlsOptions(str(pki / "client.pem"), str(pki / "client.key"), str(pki / "ca.pem"))
        key = token.read_text() if mode != "plain" else None
        security = client_security(key, tls if mode == "tls" else None, "peer")
        try:
            wait_serving(viewserver, security)
            flags = cli_flags(mode, token, pki)
            row = {
                f"c{n}": bench(flags, ["--viewserver", viewserver], n, duration, repeat)
                for n in CLIENTS
            }
            row["handshake_ms"] = handshake_ms(viewserver, security)
            rows[f"pbkv {mode}"] = row
        finally:
            stop(processes)
    for mode in ("plain", "tls"):
        processes, port = start_redis(mode, pki, directory)
        try:
            flags = cli_flags(mode, token, pki)[2:] if mode == "tls" else []
            target = ["--backend", "redis", "--redis", f"127.0.0.1:{port}"]
            rows[f"redis {mode}"] = {
                f"c{n}": bench(flags, target, n, duration, repeat) for n in CLIENTS
            }
        finally:
            stop(processes)
    print("| system | 1 client ops/s | 64 clients ops/s | new connection, median |")
    print("|---|---:|---:|---:|")
    for name, row in rows.items():
        handshake = f"{row['handshake_ms']:.2f} ms" if "handshake_ms" in row else "-"
        print(f"| {name} | {row['c1']:,.0f} | {row['c64']:,.0f} | {handshake} |")
    for system, plain, secure in (
        ("pbkv", "pbkv plain", "pbkv tls"),
        ("redis", "redis plain", "redis tls"),
    ):
        ratios = [rows[secure][f"c{n}"] / rows[plain][f"c{n}"] for n in CLIENTS]
        print(f"{system}: TLS/plain = {ratios[0]:.2f} (1 client), {ratios[1]:.2f} (64 clients)")
    print(f"(duration {duration:g} s per run, median of {repeat} runs per cell; {directory})")


if __name__ == "__main__":
    main()

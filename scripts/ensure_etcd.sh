#!/usr/bin/env bash
# Make sure Debian's etcd (server and etcdctl) is installed: the view service replicated on
# etcd (issue 12) is tested against a real 3-member etcd that the tests start themselves on
# loopback ports. Called by `make test`; installs with apt-get when missing (as root, or with
# sudo). Debian 12 ships etcd 3.4, which is what pbkv is tested with.
set -euo pipefail

if command -v etcd >/dev/null 2>&1 && command -v etcdctl >/dev/null 2>&1; then
    exit 0
fi
echo "ensure_etcd: etcd is missing; installing Debian's etcd-server and etcd-client" >&2
sudo=""
if [ "$(id -u)" -ne 0 ]; then
    if ! command -v sudo >/dev/null 2>&1; then
        echo "ensure_etcd: run as root or install etcd: apt-get install etcd-server etcd-client" >&2
        exit 1
    fi
    sudo="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq >/dev/null
# The package's service must not start an etcd on the default ports: the tests start their own.
$sudo apt-get install -y -qq --no-install-recommends etcd-server etcd-client >/dev/null
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    $sudo systemctl disable --now etcd >/dev/null 2>&1 || true
fi
command -v etcd >/dev/null && command -v etcdctl >/dev/null

#!/usr/bin/env bash
# Make sure Debian's chromium is installed: the dashboard's browser test drives it headless
# through Playwright (never `playwright install`, which would download a browser of its own).
# Called by `make test`; installs with apt-get when missing (as root, or with sudo).
set -euo pipefail

if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then
    exit 0
fi
echo "ensure_chromium: chromium is missing; installing Debian's chromium" >&2
sudo=""
if [ "$(id -u)" -ne 0 ]; then
    if ! command -v sudo >/dev/null 2>&1; then
        echo "ensure_chromium: run as root or install chromium: apt-get install chromium" >&2
        exit 1
    fi
    sudo="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq >/dev/null
$sudo apt-get install -y -qq chromium >/dev/null
command -v chromium >/dev/null

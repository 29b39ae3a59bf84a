#!/usr/bin/env bash
# The test suite under every Python that pyproject.toml's classifiers name besides the default
# one (3.12 and 3.13): each in its own virtual environment, .venv-pyX.Y, made when missing.
# Interpreters: $PYTHONS (paths or commands, space-separated), else python3.12 and python3.13
# found on PATH or under ~/.pyenv/versions. One that is missing is reported and makes the run
# fail: a claim of support that nothing checked is not one.
# Usage: make test-pythons [PYTHONS="/opt/py312/bin/python3 python3.13"]
set -euo pipefail
cd "$(dirname "$0")/.."

find_python() {  # $1: a version such as 3.12; the first candidate that runs (a pyenv shim
    local candidate  # may be on PATH for a version it does not select)
    for candidate in "$(command -v "python$1" || true)" "$HOME"/.pyenv/versions/"$1".*/bin/python"$1"; do
        if [ -n "$candidate" ] && [ -x "$candidate" ] && "$candidate" -c "" >/dev/null 2>&1; then
            echo "$candidate"
            return
        fi
    done
    return 1
}

interpreters=()
if [ -n "${PYTHONS:-}" ]; then
    read -r -a interpreters <<<"$PYTHONS"
else
    for version in 3.12 3.13; do
        if ! found=$(find_python "$version"); then
            echo "test-pythons: no python$version on PATH or under ~/.pyenv/versions" >&2
            exit 1
        fi
        interpreters+=("$found")
    done
fi

failed=0
for interpreter in "${interpreters[@]}"; do
    version=$("$interpreter" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
    venv=".venv-py$version"
    if [ ! -x "$venv/bin/python" ]; then
        "$interpreter" -m venv "$venv"
        "$venv/bin/python" -m pip install --quiet --upgrade pip
    fi
    "$venv/bin/python" -m pip install --quiet -e '.[dev]'
    echo "test-pythons: Python $version ($interpreter)"
    if ! "$venv/bin/python" -m pytest -q -n "${TEST_WORKERS:-3}" -m "not slow" -p no:cacheprovider tests; then
        failed=1
    fi
done
exit "$failed"

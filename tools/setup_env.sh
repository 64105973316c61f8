#!/usr/bin/env bash
# Create (or refresh) the project virtualenv: bash tools/setup_env.sh [EXTRAS]
# Every package comes from tools/requirements.lock (the tested set, pinned), never from whatever the registry
# serves today; tools/check_lock.py then verifies the venv against the lock, also when nothing was installed.
# Idempotent: a stamp file records the pyproject/lock hash and extras already installed.
set -euo pipefail
cd "$(dirname "$0")/.."
extras=${1:-test}
venv=${SEQATTN_VENV:-.venv}
python=${PYTHON:-python3}
lock=$(pwd)/tools/requirements.lock

if [ ! -x "$venv/bin/python" ]; then
    echo "[setup] creating virtualenv $venv"
    "$python" -m venv "$venv"
fi
stamp="$venv/.seqattn-stamp-${extras//,/-}"
want=$(cat pyproject.toml "$lock" | sha256sum | cut -c1-16)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    echo "[setup] $venv is up to date (extras: $extras)"
else
    # PIP_CONSTRAINT reaches pip's isolated build environments too (the editable install's setuptools).
    export PIP_CONSTRAINT=$lock
    # byte-compiled at install (no --no-compile): runs with PYTHONDONTWRITEBYTECODE=1 would otherwise compile
    # every module from source in every process, which doubled the test suite's time
    pip=("$venv/bin/python" -m pip install --disable-pip-version-check -q -c "$lock")
    # torch first, from the locked release (a wheel on this machine's disk), so nothing later can pull another build.
    echo "[setup] installing torch and torchaudio (locked versions)"
    "${pip[@]}" torch torchaudio
    echo "[setup] installing seqattn[$extras] (locked versions: tools/requirements.lock)"
    "${pip[@]}" -e ".[$extras]"
    echo "$want" > "$stamp"
fi
"$venv/bin/python" tools/check_lock.py --lock "$lock"
echo "[setup] $venv matches tools/requirements.lock"

#!/usr/bin/env bash
# Create (or refresh) the project virtualenv: bash tools/setup_env.sh [EXTRAS]
# Idempotent: a stamp file records the pyproject/constraints hash and extras already installed.
set -euo pipefail
cd "$(dirname "$0")/.."
extras=${1:-test}
venv=${SEQATTN_VENV:-.venv}
python=${PYTHON:-python3}

if [ ! -x "$venv/bin/python" ]; then
    echo "[setup] creating virtualenv $venv"
    "$python" -m venv "$venv"
fi
stamp="$venv/.seqattn-stamp-${extras//,/-}"
want=$(cat pyproject.toml tools/constraints.txt | sha256sum | cut -c1-16)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    echo "[setup] $venv is up to date (extras: $extras)"
    exit 0
fi
pip=("$venv/bin/python" -m pip install --disable-pip-version-check -q -c tools/constraints.txt)
# torch first, from the pinned release, so nothing later can pull another build.
echo "[setup] installing torch and torchaudio (pinned)"
"${pip[@]}" torch==2.14.1 torchaudio==2.11.0
echo "[setup] installing seqattn[$extras]"
"${pip[@]}" -e ".[$extras]"
echo "$want" > "$stamp"
echo "[setup] done"

#!/usr/bin/env bash
# Fetch (here, where the package registry is reachable) the wheels that tools/gpu_check.sh carries to a GPU
# machine without one: Python 3.12, manylinux x86_64, no dependencies resolved (the list is complete).
#   bash tools/gpu_wheels.sh            -> .gpu_wheels/*.whl (git-ignored; the device tool carries it)
set -euo pipefail
cd "$(dirname "$0")/.."
dest=${1:-.gpu_wheels}
mkdir -p "$dest"
# soundfile loads cffi's _cffi_backend at import; jiwer needs rapidfuzz; flashlight-text is the beam search;
# babel gives the recipes' language names; pycparser is cffi's parser. Versions: the lock's.
python3 -m pip download --disable-pip-version-check -q --dest "$dest" --only-binary=:all: --python-version 3.12 \
    --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform any --no-deps \
    $(grep -iE '^(cffi|pycparser|soundfile|jiwer|rapidfuzz|click|flashlight-text|babel)==' tools/requirements.lock)
ls "$dest"

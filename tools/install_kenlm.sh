#!/usr/bin/env bash
# Build KenLM's lmplz and build_binary into tools/kenlm/bin (Kaldi's tools/ tradition).
# Run: bash tools/install_kenlm.sh        (idempotent; about 1.5 min on 2 cores)
# The C++ sources come from the `kenlm` source distribution on the package registry; Debian provides
# cmake, boost, zlib, bz2, lzma and eigen.
set -euo pipefail
cd "$(dirname "$0")"
prefix=$(pwd)/kenlm
if [ -x "$prefix/bin/lmplz" ] && [ -x "$prefix/bin/build_binary" ]; then
  echo "[kenlm] already built: $prefix/bin"; exit 0
fi
if [ "$(id -u)" -eq 0 ]; then
  pkgs=(cmake g++ libboost-program-options-dev libboost-system-dev libboost-thread-dev libboost-test-dev
        zlib1g-dev libbz2-dev liblzma-dev libeigen3-dev)
  apt-get install -y -q "${pkgs[@]}" > /dev/null 2>&1 || \
    { apt-get update -q > /dev/null 2>&1 && apt-get install -y -q "${pkgs[@]}" > /dev/null; }
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# the locked sdist (tools/requirements.lock); its build tools stay wheels
python3 -m pip download -q --no-deps --no-binary kenlm -c "$(pwd)/requirements.lock" -d "$work" kenlm
tar -xzf "$work"/kenlm-*.tar.gz -C "$work"
src=$(find "$work" -maxdepth 1 -type d -name 'kenlm-*' | head -1)
cmake -S "$src" -B "$work/build" -DCMAKE_BUILD_TYPE=Release -DKENLM_MAX_ORDER=6 > "$work/cmake.log" 2>&1 || \
  { cat "$work/cmake.log"; exit 1; }
cmake --build "$work/build" --target lmplz build_binary -j "$(nproc)" > "$work/build.log" 2>&1 || \
  { tail -40 "$work/build.log"; exit 1; }
mkdir -p "$prefix/bin"
cp "$work/build/bin/lmplz" "$work/build/bin/build_binary" "$prefix/bin/"
echo "[kenlm] built $prefix/bin/lmplz and $prefix/bin/build_binary"

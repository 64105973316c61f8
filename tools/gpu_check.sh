#!/usr/bin/env bash
# The one prepared GPU check: the CUDA tests (tests/test_cuda.py and every test marked `cuda`), then the
# GPU attention benchmark (tools/bench_gpu.py), results as JSON + markdown under $OUT (default bench_out/gpu).
#
# Run on a GPU machine from the repository root:   bash tools/gpu_check.sh
# It needs torch, torchaudio and transformers there, and no package registry: the other wheels it imports are
# carried in .gpu_wheels/ (see the command below) and the package runs from the source tree (PYTHONPATH=.),
# never `pip install`ed, so the machine's torch stays. Without a GPU every CUDA test skips with its reason and
# the benchmark is not run; the script then exits 0 after saying so.
#   pip download --dest .gpu_wheels --only-binary=:all: --python-version 3.12 \
#       --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 --no-deps \
#       soundfile jiwer rapidfuzz flashlight-text babel hypothesis sortedcontainers
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-bench_out/gpu}
python=${PYTHON:-python3}
mkdir -p "$out"
if [ -d .gpu_wheels ] && ls .gpu_wheels/*.whl > /dev/null 2>&1; then
  "$python" -m pip install --no-index --no-deps -q .gpu_wheels/*.whl 2>&1 | tail -3
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
"$python" - <<'PY' | tee "$out/device.txt"
import torch
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, available: {torch.cuda.is_available()}")
for i in range(torch.cuda.device_count()):
    print(f"cuda:{i}: {torch.cuda.get_device_name(i)}, bf16: {torch.cuda.is_bf16_supported()}")
PY
status=0
timeout "${TEST_TIMEOUT:-300}" "$python" -m pytest -q -rs -m cuda tests -p no:cacheprovider \
  --junitxml "$out/cuda_tests.xml" 2>&1 | tee "$out/cuda_tests.txt" || status=1
if ! "$python" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "[gpu_check] no CUDA GPU visible: the CUDA tests skipped (reasons above), no GPU benchmark was run"
  exit "$status"
fi
timeout "${BENCH_TIMEOUT:-240}" "$python" tools/bench_gpu.py --out-dir "$out" ${BENCH_ARGS:-} \
  2>&1 | tail -40 || status=1
echo "[gpu_check] results in $out (cuda_tests.xml, results.json, results.md); exit $status"
exit "$status"

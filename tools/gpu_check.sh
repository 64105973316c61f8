#!/usr/bin/env bash
# The one prepared GPU check, for a bare GPU machine (Python 3.12 with torch, torchaudio, transformers and
# triton; no package registry). Steps, each writing its results as it goes, under $OUT (default bench_out/gpu):
#   1. install the carried wheels (.gpu_wheels/, made by `bash tools/gpu_wheels.sh` where pip can download);
#   2. import everything the checks need and name what is missing (steps.txt), stopping there if anything is;
#   3. the CUDA tests (tests/test_cuda.py and every test marked `cuda`; cuda_tests.txt), then the device
#      checks that also run on the CPU (tests/test_device_checks.py, tests/test_flex_attention.py; steps.txt);
#   4. the benchmarks, each against its competitor in the same run, results rewritten after every row:
#      attention kernels (tools/bench_gpu.py: local +-128 at 32k and 128k tokens vs dense flash SDPA and
#      FlexAttention's own sliding window; attention/), a BASE pretraining step at 60 s crops vs HF
#      Wav2Vec2ForPreTraining (tools/bench_wav2vec2.py; pretraining/) and a 1-hour transcription vs the HF
#      pipeline (tools/bench_transcribe.py; transcription/).
# The package runs from the source tree (PYTHONPATH=.), never `pip install`ed, so the machine's torch stays.
# Time limits (seconds, each step): TEST_TIMEOUT 140, DEVICE_TIMEOUT 50, BENCH_TIMEOUT 110, PRETRAIN_TIMEOUT 80,
# TRANSCRIBE_TIMEOUT 80: under 8 minutes in all, so that a run and a rerun fit in 15 minutes of GPU time.
# Without a GPU every CUDA test skips with its reason, and the script stops there (exit 0 if nothing failed).
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-bench_out/gpu}
python=${PYTHON:-python3}
mkdir -p "$out"
started=$(date +%s)
note() { echo "[gpu_check +$(( $(date +%s) - started ))s] $*" | tee -a "$out/steps.txt"; }

py312=$("$python" -c 'import sys; print(int(sys.version_info[:2] == (3, 12)))')
if [ "$py312" != 1 ]; then
  note "$python is not Python 3.12: the carried (cp312) wheels are not installed; using its own packages"
elif ls .gpu_wheels/*.whl > /dev/null 2>&1; then
  note "installing $(ls .gpu_wheels/*.whl | wc -l) carried wheels"
  "$python" -m pip install --no-index --no-deps -q .gpu_wheels/*.whl 2>&1 | tail -3
else
  note "no .gpu_wheels/ (bash tools/gpu_wheels.sh makes it); the imports below say what that leaves missing"
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}

"$python" - <<'PY' > "$out/imports.tmp" 2>&1
import importlib, sys
needed = ["torch", "torchaudio", "transformers", "triton", "numpy", "yaml", "safetensors", "tqdm", "pytest",
          "xdist", "_cffi_backend", "soundfile", "jiwer", "rapidfuzz", "sentencepiece", "seqattn",
          "seqattn.nn", "seqattn.train.finetune", "seqattn.decode.transcribe"]
missing = []
for name in needed:
    try:
        module = importlib.import_module(name)
        print(f"ok       {name} {getattr(module, '__version__', '')}")
    except Exception as error:  # noqa: BLE001 - every failure is reported by name
        missing.append(name)
        print(f"MISSING  {name}: {type(error).__name__}: {error}")
if "torch" not in missing:
    import torch
    print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, available: {torch.cuda.is_available()}")
    for i in range(torch.cuda.device_count()):
        print(f"cuda:{i}: {torch.cuda.get_device_name(i)}, bf16: {torch.cuda.is_bf16_supported()}")
sys.exit(1 if missing else 0)
PY
imports=$?
tee -a "$out/steps.txt" < "$out/imports.tmp"
rm -f "$out/imports.tmp"
if [ "$imports" -ne 0 ]; then
  note "missing imports (above): nothing else was run"
  exit 2
fi

status=0
note "CUDA tests"
timeout "${TEST_TIMEOUT:-140}" "$python" -m pytest -q -rs -m cuda tests -p no:cacheprovider \
  2>&1 | tee "$out/cuda_tests.txt" | tail -25 || status=1
if ! "$python" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  note "no CUDA GPU visible: the CUDA tests skipped (reasons above); the device checks run in the CPU suite; no GPU benchmark was run"
  exit "$status"
fi
note "device checks (the CPU suite's fake-CUDA and flex tests, on this GPU machine's torch)"
timeout "${DEVICE_TIMEOUT:-50}" "$python" -m pytest -q tests/test_device_checks.py tests/test_flex_attention.py \
  -p no:cacheprovider -k "not ddp" 2>&1 | tail -5 | tee -a "$out/steps.txt" || status=1
note "attention benchmark"
timeout "${BENCH_TIMEOUT:-110}" "$python" tools/bench_gpu.py --out-dir "$out/attention" \
  ${BENCH_ARGS:---windows 128 --lengths 32768 131072 --reps 5} 2>&1 | tail -20 || status=1
note "pretraining step benchmark"
timeout "${PRETRAIN_TIMEOUT:-80}" "$python" tools/bench_wav2vec2.py --device cuda --preset base --crops 60 --reps 5 \
  --implementations hf seqattn_full seqattn_local --out-dir "$out/pretraining" 2>&1 | tail -12 || status=1
note "transcription benchmark"
timeout "${TRANSCRIBE_TIMEOUT:-80}" "$python" tools/bench_transcribe.py --device cuda --lengths 3600 --reps 1 \
  --implementations seqattn_local hf_pipeline --out-dir "$out/transcription" 2>&1 | tail -12 || status=1
note "results in $out (steps.txt, cuda_tests.txt, {attention,pretraining,transcription}/results.{json,md}: the 8 files the device tool returns); exit $status"
exit "$status"

#!/usr/bin/env bash
# The README's main job: the multilingual Indic demo recipe (installs what it needs).
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup_env.sh test
exec egs/indic_synth/asr/run.sh "$@"

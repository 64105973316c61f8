#!/usr/bin/env bash
# Hand a real corpus's prepared data dirs to the demo's later stages (pretraining or --pretrained model,
# fine-tuning, LMs, decoding, scoring). Called by egs/<corpus>/asr/run.sh from its own directory.
# usage: run_later_stages.sh STAGE STOP_STAGE NJ LANG_CODES FINETUNE_CONFIG [PRETRAINED_MODEL_DIR]
set -euo pipefail
stage=$1 stop_stage=$2 nj=$3 codes=$4 finetune_config=$5 pretrained=${6:-}
[ "$stop_stage" -ge 2 ] || exit 0
extra=()
[ -n "$pretrained" ] && extra=(--pretrained "$(cd "$pretrained" && pwd)")
# Real corpora train to convergence: generous time limits, the configs' max_updates decide. They keep the
# raw-waveform CNN (--frontend cnn), whose checkpoints (IndicWav2Vec) --pretrained takes, and build their
# LMs from their own transcripts (--lm-text train: the CLDR names are the synthetic corpus's domain).
exec "$(dirname "$0")/../run.sh" --stage $((stage > 2 ? stage : 2)) --stop-stage "$stop_stage" --nj "$nj" \
  --data "$(pwd)/data" --exp "$(pwd)/exp" --pretrain-langs "$codes" --asr-langs "$codes" --longform-lang= \
  --frontend cnn --finetune-config "$finetune_config" --pretrain-time 360000 --finetune-time 3600000 \
  --lm-text train "${extra[@]}"

#!/usr/bin/env bash
# Multilingual Indic demo on synthetic espeak-ng speech: corpus -> wav2vec 2.0 pretraining.
# (Fine-tuning, LM, decoding and scoring stages are added with the CTC issue.)
#
# Run:  ./run.sh [--stage 0] [--stop-stage 100] [--quick false] [--nj 2]
# Every stage logs to exp/log/ and leaves a marker in exp/done/, so a re-run skips finished work and an
# interrupted stage starts again (pretraining resumes from its last checkpoint).
set -euo pipefail
cd "$(dirname "$0")"
. ./path.sh
. ./cmd.sh

stage=0
stop_stage=100
quick=false
nj=2
seed=1
# Pretraining uses the unlabelled audio of many espeak-ng Indian voices (Indo-Aryan and Dravidian).
pretrain_langs=hi,bn,mr,gu,pa,or,as,ne,ta,te,kn,ml
pretrain_utts=120
pretrain_config=$SEQATTN_ROOT/recipes/wav2vec2/pretrain_small_cpu.yaml
pretrain_time=900
pretrain_overrides=""
. ./local/parse_options.sh "$@"

if [ "$quick" = true ]; then  # CI smoke run: every stage, tiny data, minutes
  pretrain_langs=hi,ta
  pretrain_utts=6
  pretrain_config=$SEQATTN_ROOT/recipes/wav2vec2/pretrain_tiny.yaml
  pretrain_time=120
  pretrain_overrides="optim.max_updates=20 optim.warmup_updates=5 run.save_every=10 run.log_every=5"
  data=data_quick; exp=exp_quick
else
  data=data; exp=exp
fi
mkdir -p $exp/log $exp/done

stage_banner() { echo "=== stage $1: $2 ($(date +%H:%M:%S))"; }
done_marker() { echo "$exp/done/$1"; }

if [ $stage -le 0 ] && [ $stop_stage -ge 0 ]; then
  stage_banner 0 "system dependencies"
  if ! command -v espeak-ng > /dev/null; then
    echo "installing espeak-ng and sox (apt)"
    (apt-get install -y espeak-ng sox > $exp/log/apt.log 2>&1 || \
     (apt-get update > /dev/null 2>&1 && apt-get install -y espeak-ng sox >> $exp/log/apt.log 2>&1)) || \
      { echo "could not install espeak-ng: see $exp/log/apt.log" >&2; exit 1; }
  fi
  python -c "import babel" 2> /dev/null || pip install -q babel
fi

if [ $stage -le 1 ] && [ $stop_stage -ge 1 ]; then
  stage_banner 1 "synthesise unlabelled pretraining audio ($pretrain_langs)"
  marker=$(done_marker synth_pretrain)
  if [ ! -f $marker ]; then
    python local/synthesize.py --out $data --langs $pretrain_langs --split train --utts $pretrain_utts \
      --seed $seed --nj $nj 2>&1 | tee $exp/log/synth_pretrain.log
    for lang in ${pretrain_langs//,/ }; do
      python -c "from seqattn.data.kaldi import read_data_dir; read_data_dir('$data/train_$lang')"
    done
    touch $marker
  else
    echo "already done ($marker)"
  fi
fi

if [ $stage -le 2 ] && [ $stop_stage -ge 2 ]; then
  stage_banner 2 "wav2vec 2.0 pretraining on all languages (temperature sampling)"
  marker=$(done_marker pretrain)
  if [ ! -f $marker ]; then
    sources=$(for lang in ${pretrain_langs//,/ }; do printf '{path: %s/train_%s, language: %s}, ' $data $lang $lang; done)
    seqattn pretrain $pretrain_config "data.train=[${sources%, }]" run.output_dir=$exp/pretrain \
      run.max_time_s=$pretrain_time $pretrain_overrides 2>&1 | tee $exp/log/pretrain.log
    touch $marker
  else
    echo "already done ($marker)"
  fi
  grep "train update" $exp/pretrain/train.log | tail -3
fi
echo "done: results under $(pwd)/$exp"

#!/usr/bin/env bash
# A multilingual Indic language model on the text of the ASR demo (egs/indic_synth/asr): 3 Indo-Aryan and
# 3 Dravidian languages in their own scripts, one character-level model with local + routing heads.
#   stage 0: text: the ASR recipe's sentences (same generator and seeds; CLDR words from babel), or its
#            data dirs' text files with --asr-data ../asr/data
#   stage 1: train-lm (recipes/lm/indic_char.yaml)
#   stage 2: eval-lm per language on the held-out test sentences (bits per byte compare across scripts)
#   stage 3: a generated sample
#   stage 4: RESULTS.md
#
# Run:  ./run.sh [--langs hi,mr,bn,ta,te,kn] [--asr-data ../asr/data] [--quick true]
set -euo pipefail
cd "$(dirname "$0")"
. ./path.sh
. ./local/stages.sh

stage=0
stop_stage=100
langs=hi,mr,bn,ta,te,kn
asr_data=""
config=$SEQATTN_ROOT/recipes/lm/indic_char.yaml
data=data
exp=exp
quick=false
. ./local/parse_options.sh "$@"

extra=""
text_opts=""
if [ "$quick" = true ]; then
  langs=hi,ta; text_opts="--train-utts 30 --test-utts 5"
  extra="optim.max_updates=6 run.save_every=3 validate_every=3 data.seq_len=32 data.batch_size=4"
fi
mkdir -p $data $exp/log $exp/done $exp/time
model=$exp/char

if run_stage 0 "text"; then
  python -c "import babel" 2> /dev/null || pip install -q babel
  python local/make_text.py --out $data --langs $langs ${asr_data:+--asr-data $asr_data} $text_opts \
    2>&1 | tee $exp/log/text.log
  finish_stage 0 text
fi

if run_stage 1 "train-lm"; then
  seqattn train-lm $config "data.train=[$data/train.txt]" "data.valid=[$data/valid.txt]" run.output_dir=$model \
    $extra 2>&1 | tee $exp/log/train.log
  best=$(cut -d' ' -f1 $model/checkpoints/BEST 2> /dev/null || cat $model/checkpoints/LAST)
  ln -sfn "checkpoints/$best" $model/best
  finish_stage 1 train
fi

if run_stage 2 "eval-lm per language"; then
  mkdir -p $model/eval
  for l in ${langs//,/ }; do
    seqattn eval-lm $model/best $data/test_$l.txt --context 128 --json $model/eval/test_$l.json --quiet
  done 2>&1 | tee $exp/log/eval.log
  finish_stage 2 eval
fi

if run_stage 3 "sample"; then
  seqattn generate $model/best "" --max-new-tokens 300 --temperature 0.8 --top-k 20 --seed 1 > $model/sample.txt
  finish_stage 3 sample
fi

if run_stage 4 "RESULTS.md"; then
  python local/lm_results.py --exp $exp --out $exp/RESULTS.md \
    --title "Results: a multilingual Indic character LM on the ASR demo's text" --command "egs/indic_synth/lm/run.sh $*"
  finish_stage 4 results
fi

#!/usr/bin/env bash
# WikiText-103 language modelling (Merity et al. 2016), the Routing Transformer paper's first benchmark.
#   stage 0: download wikitext-103-v1.zip (resumable; sha256 recorded then checked), or take --corpus-zip
#            PATH / --corpus-dir DIR (offline)
#   stage 1: data prep (local/prepare_wikitext.py): data/{train,valid,test}.txt, checked and counted
#   stage 2: train-lm with a word-level (default, the literature's setting) or sentencepiece tokenizer
#   stage 3: eval-lm on valid and test: sliding windows (--context, --stride), word perplexity
#   stage 4: RESULTS.md
#
# The default model is the paper-sized preset (recipes/lm/wikitext103.yaml: 14 layers, 1024 dims, 8 local +
# 8 routing heads with 8 clusters); it needs GPUs and days. `--config recipes/lm/wikitext103_cpu.yaml` trains a small model
# on a CPU, and --quick true runs every stage in seconds on the first lines of the data.
#
# Run:  ./run.sh [--units word|sentencepiece] [--corpus-zip wikitext-103-v1.zip] [--config ...] [--quick true]
set -euo pipefail
cd "$(dirname "$0")"
. ./path.sh
. ./local/stages.sh

stage=0
stop_stage=100
url=https://s3.amazonaws.com/research.metamind.io/wikitext/wikitext-103-v1.zip
corpus_zip=""        # a local copy of the zip (offline)
corpus_dir=""        # or an already unzipped release
units=word           # word or sentencepiece
sp_vocab=32000
config=$SEQATTN_ROOT/recipes/lm/wikitext103.yaml
context=512          # eval-lm window, and stride
stride=256
data=data
exp=exp
quick=false
. ./local/parse_options.sh "$@"

extra=""
if [ "$quick" = true ]; then
  config=$SEQATTN_ROOT/recipes/lm/wikitext103_cpu.yaml; sp_vocab=300; context=64; stride=32
  extra="optim.max_updates=6 run.save_every=3 validate_every=3 data.valid_tokens=512 data.seq_len=64 model.max_context=64 run.max_time_s=0"
fi
mkdir -p $data $exp/log $exp/done $exp/time

if run_stage 0 "download"; then
  if [ -z "$corpus_dir" ]; then
    if [ -z "$corpus_zip" ]; then
      corpus_zip=downloads/wikitext-103-v1.zip
      mkdir -p downloads
      curl -fL -C - -o $corpus_zip $url
      ./local/check_sha256.sh downloads/SHA256SUMS $corpus_zip wikitext-103-v1.zip
    fi
    corpus_dir=$data/raw  # unpacked afresh, next to the prepared data
    rm -rf $corpus_dir && mkdir -p $corpus_dir
    python -c "import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])" $corpus_zip $corpus_dir
  fi
  echo "$corpus_dir" > $exp/corpus_dir
  finish_stage 0 download
fi

if run_stage 1 "data prep"; then
  python local/prepare_wikitext.py --corpus "$(cat $exp/corpus_dir)" --out $data 2>&1 | tee $exp/log/prepare.log
  if [ "$quick" = true ]; then
    for split in train valid test; do head -n 200 $data/$split.txt > $data/$split.small && mv $data/$split.small $data/$split.txt; done
  fi
  finish_stage 1 data
fi

model=$exp/${units}
if run_stage 2 "train-lm ($units units)"; then
  if [ "$units" = word ]; then
    tokenizer="data.tokenizer.type=word"
  else
    tokenizer="data.tokenizer.type=sentencepiece data.tokenizer.vocab_size=$sp_vocab data.tokenizer.model_type=unigram"
  fi
  seqattn train-lm $config "data.train=[$data/train.txt]" "data.valid=[$data/valid.txt]" run.output_dir=$model \
    $tokenizer $extra 2>&1 | tee $exp/log/train_$units.log
  best=$(cut -d' ' -f1 $model/checkpoints/BEST 2> /dev/null || cat $model/checkpoints/LAST)
  ln -sfn "checkpoints/$best" $model/best
  finish_stage 2 train
fi

if run_stage 3 "eval-lm on valid and test"; then
  mkdir -p $model/eval
  for split in valid test; do
    seqattn eval-lm $model/best $data/$split.txt --context $context --stride $stride \
      --json $model/eval/${split}_sliding${context}_${stride}.json --quiet
  done 2>&1 | tee $exp/log/eval.log
  finish_stage 3 eval
fi

if run_stage 4 "RESULTS.md"; then
  python local/lm_results.py --exp $exp --out $exp/RESULTS.md --title "Results: WikiText-103 language modelling" \
    --command "egs/wikitext103/lm/run.sh $*"
  finish_stage 4 results
fi

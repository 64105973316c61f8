#!/usr/bin/env bash
# Character-level language models on tiny Shakespeare (Karpathy's char-rnn corpus, as in nanoGPT's
# shakespeare_char): the same data split and model size as nanoGPT's CPU run, with three attention choices.
#   stage 0: data: download input.txt (resumable; sha256 recorded then checked) or take --corpus PATH
#            (offline), then the 90/10 train/valid split
#   stage 1: train-lm for each of --variants: local (window 32), full, routing (2 local + 2 routing heads),
#            dilated (3 local + 1 dilated head reaching the whole context), global (3 local + 1 global head:
#            window 32 plus 4 summaries of the past blocks); with --seeds 1,2,3 each variant once per seed
#   stage 2: eval-lm on valid: blocks of 64 and sliding windows of 64 with stride 32
#   stage 3: a generated sample from each model
#   stage 4: RESULTS.md
#
# Run:  ./run.sh [--corpus /path/to/input.txt] [--variants local,full,routing] [--max-updates 2000] [--seeds 1,2,3]
#               [--threads 0] [--quick true]
set -euo pipefail
cd "$(dirname "$0")"
. ./path.sh
. ./local/stages.sh

stage=0
stop_stage=100
corpus=""            # a local copy of input.txt (offline use); default: download
url=https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt
variants=local,full,routing
max_updates=2000
seeds=""             # comma-separated training seeds: one model per variant and seed (exp/<variant>_seed<s>)
threads=0            # torch threads per training run (0: all cores)
config=$SEQATTN_ROOT/recipes/lm/tinyshakespeare_char.yaml
data=data
exp=exp
quick=false          # a seconds-long smoke run (tests): a 50 kB slice, 10 updates
. ./local/parse_options.sh "$@"

extra=""
if [ "$quick" = true ]; then
  max_updates=10; extra="validate_every=5 data.valid_tokens=512 run.save_every=5"
fi
mkdir -p $data $exp/log $exp/done $exp/time

variant_overrides() {  # the attention of each variant, on top of $config
  case $1 in
    local) echo "model.attention.local.heads=4 model.attention.routing.heads=0 model.routing_layers=0 model.attention.local.window_left=32" ;;
    full) echo "model.attention.local.heads=0 model.attention.routing.heads=0 model.routing_layers=0" ;;
    routing) echo "model.attention.local.heads=2 model.attention.routing.heads=2 model.routing_layers=-1 model.attention.local.window_left=32 model.attention.routing.clusters=4 model.attention.routing.window=32" ;;
    dilated) echo "model.attention.local.heads=3 model.attention.dilated.heads=1 model.attention.routing.heads=0 model.routing_layers=0 model.attention.local.window_left=32 model.attention.dilated.dilation=4 model.attention.dilated.window=16" ;;
    global) echo "model.attention.local.heads=3 model.attention.global_tokens.heads=1 model.attention.routing.heads=0 model.routing_layers=0 model.attention.local.window_left=32 model.attention.global_tokens.window=32 model.attention.global_tokens.tokens=4 model.attention.global_tokens.block=16" ;;
    *) echo "unknown variant $1 (local, full, routing, dilated, global)" >&2; return 1 ;;
  esac
}
runs=""  # run name:variant:seed for every model this invocation trains
for v in ${variants//,/ }; do
  variant_overrides $v > /dev/null
  if [ -z "$seeds" ]; then runs="$runs $v:$v:"; else
    for s in ${seeds//,/ }; do runs="$runs ${v}_seed$s:$v:$s"; done
  fi
done

if run_stage 0 "data"; then
  if [ -z "$corpus" ]; then
    corpus=downloads/input.txt
    mkdir -p downloads
    curl -fL -C - -o $corpus $url
    ./local/check_sha256.sh downloads/SHA256SUMS $corpus input.txt
  fi
  [ -s "$corpus" ] || { echo "corpus $corpus is missing or empty" >&2; exit 1; }
  python - "$corpus" $data "$quick" <<'PY'
import sys
from pathlib import Path
corpus, out, quick = sys.argv[1], Path(sys.argv[2]), sys.argv[3] == "true"
text = Path(corpus).read_text(encoding="utf-8")
if quick:
    text = text[:50000]
cut = int(len(text) * 0.9)  # nanoGPT's split: the first 90% trains, the last 10% validates
(out / "train.txt").write_text(text[:cut], encoding="utf-8")
(out / "valid.txt").write_text(text[cut:], encoding="utf-8")
print(f"{len(text)} characters: {cut} train, {len(text) - cut} valid")
PY
  finish_stage 0 data
fi

if run_stage 1 "train-lm: ${variants}${seeds:+ (seeds $seeds)}"; then
  for run in $runs; do
    IFS=: read -r name v s <<< "$run"
    seqattn train-lm $config "data.train=[$data/train.txt]" "data.valid=[$data/valid.txt]" \
      run.output_dir=$exp/$name optim.max_updates=$max_updates run.threads=$threads ${s:+run.seed=$s} \
      $(variant_overrides $v) $extra 2>&1 | tee $exp/log/train_$name.log
    best=$(cut -d' ' -f1 $exp/$name/checkpoints/BEST 2> /dev/null || cat $exp/$name/checkpoints/LAST)
    ln -sfn "checkpoints/$best" $exp/$name/best
  done
  finish_stage 1 train
fi

if run_stage 2 "eval-lm on valid"; then
  for run in $runs; do
    v=${run%%:*}
    mkdir -p $exp/$v/eval
    seqattn eval-lm $exp/$v/best $data/valid.txt --context 64 --json $exp/$v/eval/valid_blocks64.json --quiet
    seqattn eval-lm $exp/$v/best $data/valid.txt --context 64 --stride 32 --json $exp/$v/eval/valid_sliding64_32.json --quiet
  done 2>&1 | tee $exp/log/eval.log
  finish_stage 2 eval
fi

if run_stage 3 "samples"; then
  for run in $runs; do
    v=${run%%:*}
    seqattn generate $exp/$v/best "ROMEO:" --max-new-tokens 300 --temperature 0.8 --top-k 40 --seed 1 > $exp/$v/sample.txt
  done
  finish_stage 3 samples
fi

if run_stage 4 "RESULTS.md"; then
  python local/lm_results.py --exp $exp --out $exp/RESULTS.md --title "Results: char-level LMs on tiny Shakespeare" \
    --command "egs/tinyshakespeare/lm/run.sh $*"
  finish_stage 4 results
fi

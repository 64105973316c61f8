#!/usr/bin/env bash
# Where distance matters: does content routing beat a local window, and does MoBA-style block routing beat
# k-means routing? Every variant gets the same training wall-clock on this machine (tools/bench_routing.py).
#   stage 0: data: the code corpus, Python's own standard library split by module (no download; manifest.json
#            records every file's SHA-256)
#   stage 1: the routed kernels alone at each --contexts length: forward+backward time and peak memory
#   stage 2: multi-query associative recall: pairs at least two windows before their queries; accuracy
#   stage 3: byte-level LM of the code corpus; validation loss split by where each byte's copy source lies
#            (within the 256-token window, only beyond it, nowhere)
#   stage 4: RESULTS.md (the tables, from the runs' results.json)
# Variants: local only, local + k-means routing (ours and lucidrains' routing-transformer), local + block routing,
# full attention; each (variant, seed, context) trains in a fresh process for --seconds.
#
# Run:  ./run.sh [--contexts 4096,16384] [--seeds 0,1,2] [--seconds 240] [--variants local,kmeans,lucidrains,block,full]
#               [--quick true]
set -euo pipefail
cd "$(dirname "$0")"
. ./path.sh
. ./local/stages.sh

stage=0
stop_stage=100
contexts=4096,16384
seeds=0,1,2
seconds=240            # training wall-clock of every run
variants=local,kmeans,lucidrains,block,full
data=data
exp=exp
quick=false            # a seconds-long smoke run (tests)
. ./local/parse_options.sh "$@"

common=(--contexts ${contexts//,/ } --seeds ${seeds//,/ } --seconds $seconds --variants ${variants//,/ }
        --data-dir $data/code)
[ "$quick" = true ] && common+=(--quick)
mkdir -p $data $exp/done $exp/time

if run_stage 0 "data: the standard-library code corpus"; then
  python -c "import sys, json; from seqattn.data.code_corpus import build_code_corpus; \
m = build_code_corpus(sys.argv[1]); print({s: v['characters'] for s, v in m['splits'].items()})" $data/code
  finish_stage 0 data
fi
if run_stage 1 "kernel speed"; then
  python $SEQATTN_ROOT/tools/bench_routing.py --parts speed "${common[@]}" --out-dir $exp/speed
  finish_stage 1 speed
fi
if run_stage 2 "associative recall"; then
  python $SEQATTN_ROOT/tools/bench_routing.py --parts recall "${common[@]}" --out-dir $exp/recall
  finish_stage 2 recall
fi
if run_stage 3 "code LM"; then
  python $SEQATTN_ROOT/tools/bench_routing.py --parts code "${common[@]}" --out-dir $exp/code
  finish_stage 3 code
fi
if run_stage 4 "results"; then
  { echo "# Long-range tasks: results of this run"; echo
    for part in speed recall code; do
      [ -f $exp/$part/results.md ] && sed '1d' $exp/$part/results.md
    done; } > $exp/RESULTS.md
  echo "wrote $exp/RESULTS.md"
  finish_stage 4 results
fi

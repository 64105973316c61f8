#!/usr/bin/env bash
# MUCS 2021 subtask 1 (OpenSLR 103): multilingual ASR for Hindi, Marathi and Odia.
#   stage 0: download (resumable; sha256 of every archive recorded on first download, checked afterwards,
#            since OpenSLR publishes no checksums for this resource)
#   stage 1: data prep -> data/{train,dev,test}_{hi,mr,or} (dev = 5% of train), validated
#   stage 2+: the demo's later stages (egs/indic_synth/asr/run.sh): pretraining (or --pretrained MODEL_DIR,
#            e.g. a converted IndicWav2Vec checkpoint), CTC fine-tuning, LMs, decoding, scoring
#
# Run:  ./run.sh [--stage 0] [--stop-stage 100] [--pretrained exp/indicw2v_base] [--nj 8]
set -euo pipefail
cd "$(dirname "$0")"
. ./path.sh

stage=0
stop_stage=100
nj=4
languages=Hindi,Marathi,Odia
base_url=https://www.openslr.org/resources/103
downloads=downloads
pretrained=""
finetune_config=$SEQATTN_ROOT/recipes/wav2vec2/finetune_indicwav2vec.yaml
. ./local/parse_options.sh "$@"

if [ $stage -le 0 ] && [ $stop_stage -ge 0 ]; then
  echo "=== stage 0: download"
  mkdir -p $downloads
  for language in ${languages//,/ }; do
    for split in train test; do
      archive=${language}_${split}.tar.gz
      [ -f $downloads/$language/$split/transcription.txt ] && { echo "$language $split: unpacked"; continue; }
      wget -c -O $downloads/$archive $base_url/$archive  # -c resumes an interrupted download
      ../../indic_synth/asr/local/check_sha256.sh $downloads/SHA256SUMS $downloads/$archive $archive
      tmp=$downloads/.unpack_${language}_${split}; rm -rf $tmp; mkdir -p $tmp
      tar -xzf $downloads/$archive -C $tmp
      found=$(find $tmp -name transcription.txt | head -n 1)  # archives unpack to <Language>/<split>/ or <split>/
      [ -n "$found" ] || { echo "$archive: no transcription.txt inside" >&2; exit 1; }
      mkdir -p $downloads/$language && rm -rf $downloads/$language/$split
      mv "$(dirname "$found")" $downloads/$language/$split && rm -rf $tmp
    done
  done
fi

if [ $stage -le 1 ] && [ $stop_stage -ge 1 ]; then
  echo "=== stage 1: data preparation"
  python local/prepare_mucs.py --corpus $downloads --langs $languages --out data
  seqattn validate-data-dir data/train_* data/dev_* data/test_*
fi

codes=$(python -c "import sys; m={'Hindi':'hi','Marathi':'mr','Odia':'or'}; print(','.join(m[l] for l in sys.argv[1].split(',')))" $languages)
../../indic_synth/asr/local/run_later_stages.sh $stage $stop_stage $nj $codes $finetune_config "$pretrained"

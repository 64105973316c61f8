#!/usr/bin/env bash
# FLEURS (google/fleurs on the HF hub), Indic configs: multilingual ASR.
#   stage 0: download the dataset repository's own files (split TSVs and audio/<split>.tar.gz) with resumable
#            curl; the HF hub's LFS files carry sha256 ids, recorded on first download and checked afterwards.
#            Skipped with --hf-data: FLEURS already held as HF datasets (one save_to_disk DatasetDict or folder of
#            parquet files per config, e.g. <hf-data>/hi_in, with splits train/validation/test), read through
#            seqattn's HF datasets reader.
#   stage 1: data prep -> data/{train,dev,test}_<lang>, validated
#   stage 2+: the demo's later stages (egs/indic_synth/asr/run.sh), as in egs/mucs2021/asr
#
# Run:  ./run.sh [--configs hi_in,ta_in] [--pretrained exp/indicw2v_base] [--stage 0] [--hf-data DIR]
set -euo pipefail
cd "$(dirname "$0")"
. ./path.sh

stage=0
stop_stage=100
nj=4
configs=hi_in,mr_in,bn_in,ta_in,te_in,kn_in
base_url=https://huggingface.co/datasets/google/fleurs/resolve/main/data
downloads=downloads
pretrained=""
hf_data=""
finetune_config=$SEQATTN_ROOT/recipes/wav2vec2/finetune_indicwav2vec.yaml
. ./local/parse_options.sh "$@"

if [ $stage -le 0 ] && [ $stop_stage -ge 0 ] && [ -z "$hf_data" ]; then
  echo "=== stage 0: download"
  for config in ${configs//,/ }; do
    mkdir -p $downloads/$config/audio
    for split in train dev test; do
      curl -fL -C - -o $downloads/$config/$split.tsv $base_url/$config/$split.tsv
      if [ ! -d $downloads/$config/audio/$split ]; then
        archive=$downloads/$config/audio/$split.tar.gz
        curl -fL -C - -o $archive $base_url/$config/audio/$split.tar.gz  # -C - resumes
        ../../indic_synth/asr/local/check_sha256.sh $downloads/SHA256SUMS $archive $config/$split.tar.gz
        tar -xzf $archive -C $downloads/$config/audio  # unpacks to audio/<split>/
      fi
    done
  done
fi

if [ $stage -le 1 ] && [ $stop_stage -ge 1 ]; then
  echo "=== stage 1: data preparation"
  if [ -n "$hf_data" ]; then
    python local/prepare_fleurs.py --hf-data $hf_data --configs $configs --out data
  else
    python local/prepare_fleurs.py --corpus $downloads --configs $configs --out data
  fi
  seqattn validate-data-dir data/train_* data/dev_* data/test_*
fi

codes=$(echo $configs | sed 's/_[a-z]*//g')
../../indic_synth/asr/local/run_later_stages.sh $stage $stop_stage $nj $codes $finetune_config "$pretrained"

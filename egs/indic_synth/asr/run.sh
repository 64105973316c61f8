#!/usr/bin/env bash
# Multilingual Indic ASR demo on synthetic espeak-ng speech, end to end on a CPU:
#   corpus (espeak-ng voices, CLDR text: 2000 utterances in each of 6 labelled languages, and 10 more languages
#   of unlabelled audio when pretraining runs) -> one multilingual CTC model trained on the 6 labelled languages
#   (Indo-Aryan and Dravidian): a filterbank Conformer from scratch by default; with --pretrain true (the
#   default of --frontend cnn) after self-supervised pretraining on all 16 (temperature sampling; BEST-RQ for
#   the filterbank Conformer, wav2vec 2.0's contrastive loss for the raw-waveform CNN)
#   -> KenLM n-gram LMs + lexicons -> greedy and LM decoding of dev/test -> Kaldi-style scoring, RESULTS.md
#   -> a several-minute recording transcribed in one pass (CTM/SRT), a segments file and a piped wav.scp
#   -> analysis (attention locality, codebook use across languages, layer probes) and convert localize.
#
# Run:  ./run.sh [--stage 0] [--stop-stage 100] [--quick false] [--ablation false] [--nj 2]
#   --quick true     every stage on a tiny subset (the CI smoke run, a few minutes)
#   --pretrain true  pretrain first (stage 2) and fine-tune the pretrained model; false (the fbank default)
#                    trains the CTC model from random initialisation for the pretraining's time as well: five
#                    CPU-minutes of BEST-RQ are a worse start than none at this budget (RESULTS.md)
#   --ablation true  also train the model the other way (from scratch after --pretrain true, from a pretrained
#                    start otherwise), for as many updates, so RESULTS.md shows what pretraining buys
#   --lm-text train  the LM stage's text: the training transcripts alone (default); domain: with every CLDR name
#                    the corpus draws its words from (a lexicon of the whole domain, no dev or test sentence)
#   --frontend cnn   the raw-waveform CNN wav2vec 2.0 model (contrastive pretraining, 4 transformer layers at
#                    20 ms) instead of the default filterbank Conformer (80-bin log-mel conv-subsampled to 40 ms, 6
#                    Conformer blocks with local heads, BEST-RQ pretraining), which learns faster per CPU-minute
#   --head-variants dilated,global   also fine-tune the pretrained model with one of its four local heads made
#                    a dilated head (stride 4, half the window in strides: twice the reach) or a global head (the
#                    model's window plus 8 learned summary tokens), for exactly as many updates as ft: equal compute
#   --train-voices many   synthesise the training speech with 86 espeak-ng voice variants instead of 7 (the
#                    held-out and out-of-domain voices stay unheard); mixed: half of it from the classic 7, half
#                    from the others. More speaker variety for the same audio: better out of domain, worse in
#                    domain at this budget (RESULTS.md, "Voice variety in training")
#   --label-fraction 0.1   fine-tune on that share of each voice's labelled training utterances (the
#                    pretraining audio stays whole): with --ablation true, pretraining against from scratch
#                    at a smaller label budget
# Every stage logs to $exp/log/, leaves a marker in $exp/done/ and records its time in $exp/time/, so a
# re-run skips finished work and an interrupted stage starts again (training resumes from its last checkpoint).
# A failing stage stops the run at once, naming the stage and its log; no later stage runs on what it left.
set -eEuo pipefail
cd "$(dirname "$0")"
. ./path.sh
. ./cmd.sh

stage=0
stop_stage=100
quick=false
pretrain=""            # true | false; default: false for --frontend fbank, true for cnn
ablation=false
head_variants=""
label_fraction=1
frontend=fbank
nj=2
seed=1
# Unlabelled pretraining audio: every espeak-ng voice of an Indian language (bpy reads Bengali-script text).
pretrain_langs=hi,mr,bn,gu,pa,or,as,ne,kok,sd,ur,bpy,ta,te,kn,ml
# Labelled languages (fine-tuning, LMs, dev/test): 3 Indo-Aryan + 3 Dravidian.
asr_langs=hi,mr,bn,ta,te,kn
longform_lang=hi        # "" = no long-form recording
train_utts=2000         # per labelled language (more text and audio beat more epochs: RESULTS.md); also pretraining audio
pretrain_utts=500       # per unlabelled language, synthesised in stage 2 only when pretraining runs
train_words="1 4"       # words per training sentence (short utterances let CTC find its alignment sooner)
train_voices=classic    # training speakers: classic (7 espeak-ng variants), many (86; never a test voice) or mixed
test_words="2 6"
test_utts=40            # dev and test, per labelled language
longform_utts=80        # segments in the long recording, from test then dev (80 x ~3.5 s = about 5 minutes)
pretrain_config=""      # default: the --frontend's recipe (recipes/wav2vec2/)
pretrain_time=300
pretrain_overrides=""
finetune_config=""
finetune_time=""        # seconds of CTC training: default 720 after pretraining, 1020 from scratch (the same total)
finetune_overrides=""
lm_text=train           # train (transcripts only) | domain (transcripts + CLDR names)
lm_order=2
beam_size=50
analysis_utts=40        # per language, for the attention/layer analyses
localize_coverage=0.9   # convert localize: share of attention mass each layer's window keeps
localize_distill_steps=150
localize_bench_seconds=60  # input length of the encoder timing before/after convert localize
data=""                 # data and exp roots (default: data/ and exp/, or data_quick/ and exp_quick/ with --quick)
exp=""
pretrained=""           # a seqattn model dir (e.g. a converted IndicWav2Vec checkpoint): skip pretraining
. ./local/parse_options.sh "$@"

head_window=64          # local window of the --head-variants (the model's own: 64 x 20 ms or 32 x 40 ms)
case $frontend in
  cnn)
    pretrain_config=${pretrain_config:-$SEQATTN_ROOT/recipes/wav2vec2/pretrain_demo_cpu.yaml}
    finetune_config=${finetune_config:-$SEQATTN_ROOT/recipes/wav2vec2/finetune_demo_cpu.yaml} ;;
  fbank)
    pretrain_config=${pretrain_config:-$SEQATTN_ROOT/recipes/wav2vec2/pretrain_bestrq_conformer_cpu.yaml}
    finetune_config=${finetune_config:-$SEQATTN_ROOT/recipes/wav2vec2/finetune_fbank_conformer_cpu.yaml}
    head_window=32 ;;
  *) echo "run.sh: --frontend must be cnn or fbank, got '$frontend'" >&2; exit 2 ;;
esac
[ -n "$pretrain" ] || { [ "$frontend" = cnn ] && pretrain=true || pretrain=false; }
[ -z "$pretrained" ] || pretrain=true  # a given pretrained model is the fine-tuning's start
case $pretrain in true|false) ;; *) echo "run.sh: --pretrain must be true or false, got '$pretrain'" >&2; exit 2 ;; esac
case $lm_text in domain|train) ;; *) echo "run.sh: --lm-text must be domain or train, got '$lm_text'" >&2; exit 2 ;; esac
[ -n "$finetune_time" ] || { [ "$pretrain" = true ] && finetune_time=720 || finetune_time=1020; }

if [ "$quick" = true ]; then  # CI smoke run: every stage, tiny data, minutes
  pretrain_langs=hi,ta,bpy; asr_langs=hi,ta; train_utts=8; pretrain_utts=8; test_utts=4; longform_utts=4
  pretrain_time=60
  pretrain_overrides="optim.max_updates=6 optim.warmup_updates=2 run.save_every=3 run.log_every=2"
  finetune_time=60
  finetune_overrides="optim.max_updates=6 run.save_every=3 run.log_every=2 validate_every=3 freeze_updates=2"
  if [ "$frontend" = cnn ]; then
    pretrain_config=$SEQATTN_ROOT/recipes/wav2vec2/pretrain_tiny.yaml
    finetune_config=$SEQATTN_ROOT/recipes/wav2vec2/finetune_tiny.yaml
  else  # the fbank Conformer at test size
    shrink="model.embed_dim=48 model.ffn_dim=96 model.num_layers=2 model.conv_pos=8 model.conv_pos_groups=4"
    pretrain_overrides="$pretrain_overrides $shrink model.bestrq_entries=64"
    finetune_overrides="optim.max_updates=6 run.save_every=3 run.log_every=2 validate_every=3 $shrink"
  fi
  beam_size=5; analysis_utts=4; localize_distill_steps=3; localize_bench_seconds=5
  data=${data:-data_quick}; exp=${exp:-exp_quick}
else
  data=${data:-data}; exp=${exp:-exp}
fi
mkdir -p $exp/log $exp/done $exp/time
langs_of() { echo "${1//,/ }"; }
split_dirs() {  # split_dirs SPLIT LANGS: the data dirs of one split, e.g. "data/test_hi data/test_ta "
  local l
  for l in $(langs_of $2); do printf '%s/%s_%s ' $data $1 $l; done
}

current_stage="" current_logs=""
# stage_failed EXIT_CODE: the ERR trap. Under errexit the first failing command (or pipeline) ends the run;
# this says which stage it was and where its log is. Subshells (pipelines) leave the report to the top shell.
stage_failed() {
  [ "$BASH_SUBSHELL" -eq 0 ] || exit "$1"
  trap - ERR
  if [ -n "$current_stage" ]; then
    echo "run.sh: stage $current_stage failed (exit code $1); its log: $current_logs" >&2
    echo "run.sh: fix the cause and re-run with --stage ${current_stage%% *} (finished stages are skipped)" >&2
  fi
  exit "$1"
}
trap 'stage_failed $?' ERR

# run_stage NUMBER NAME LOGS: true if the stage is selected and not done yet (then its timer starts);
# LOGS names the stage's log files for the failure message
run_stage() {
  [ $stage -le $1 ] && [ $stop_stage -ge $1 ] || return 1
  echo "=== stage $1: $2 ($(date +%H:%M:%S))"
  if [ -f $exp/done/$1 ]; then echo "already done ($exp/done/$1)"; return 1; fi
  stage_started=$SECONDS
  current_stage="$1 ($2)" current_logs=$3
}
# finish_stage NUMBER NAME: marker + time
finish_stage() {
  printf '%s\t%s\n' "$1 $2" $((SECONDS - stage_started)) > $exp/time/$(printf %02d $1)
  touch $exp/done/$1
  current_stage="" current_logs=""
}

if run_stage 0 "system dependencies" "$exp/log/apt.log $exp/log/kenlm.log"; then
  missing=""
  command -v espeak-ng > /dev/null || missing="$missing espeak-ng"
  command -v sox > /dev/null || missing="$missing sox"
  # translated messages of these packages are the out-of-domain test sentences (stage 1)
  [ -f /usr/share/locale/hi/LC_MESSAGES/glib20.mo ] || missing="$missing libglib2.0-data"
  [ -f /usr/share/locale/hi/LC_MESSAGES/shared-mime-info.mo ] || missing="$missing shared-mime-info"
  [ -f /usr/share/locale/hi/LC_MESSAGES/xdg-user-dirs.mo ] || missing="$missing xdg-user-dirs"
  if [ -n "$missing" ]; then
    echo "installing$missing (apt)"
    (apt-get install -y $missing > $exp/log/apt.log 2>&1 || \
     (apt-get update > /dev/null 2>&1 && apt-get install -y $missing >> $exp/log/apt.log 2>&1)) || \
      { echo "could not install$missing: see $exp/log/apt.log" >&2; exit 1; }
  fi
  # babel's CLDR release decides the corpus text: the locked version, never whatever the registry serves today
  python -c "import babel" 2> /dev/null || pip install -q -c $SEQATTN_ROOT/tools/requirements.lock babel
  # KenLM for the LM stage; without it (no compiler) the recipe still runs and skips LM decoding.
  bash $SEQATTN_ROOT/tools/install_kenlm.sh > $exp/log/kenlm.log 2>&1 || echo "KenLM unavailable: see $exp/log/kenlm.log"
  finish_stage 0 deps
fi

if run_stage 1 "corpus: synthesise the labelled languages' speech, write and validate Kaldi data dirs" "$exp/log/synth_*.log $exp/log/validate.log"; then
  python local/synthesize.py --out $data --langs $asr_langs --split train --utts $train_utts \
    --seed $seed --nj $nj --words $train_words --train-voices $train_voices 2>&1 | tee $exp/log/synth_train.log
  for split in dev test; do
    python local/synthesize.py --out $data --langs $asr_langs --split $split --utts $test_utts \
      --seed $seed --nj $nj --words $test_words 2>&1 | tee $exp/log/synth_$split.log
  done
  # out of domain: translated Debian messages (sentences, not name lists), voices no other split uses
  python local/synthesize.py --out $data --langs $asr_langs --split test_ood --utts $test_utts --seed $seed \
    --nj $nj --text-source messages 2>&1 | tee $exp/log/synth_test_ood.log
  [ -z "$longform_lang" ] || python local/make_longform.py --src $data/test_$longform_lang $data/dev_$longform_lang --long $data/test_long_$longform_lang \
    --pipe $data/test_pipe_$longform_lang --wav $data/wav/long_$longform_lang.wav --utts $longform_utts \
    2>&1 | tee $exp/log/longform_data.log
  seqattn validate-data-dir $data/train_* $data/dev_* $data/test_* --check-audio 2>&1 | tee $exp/log/validate.log
  finish_stage 1 corpus
fi

# pretraining runs for the fine-tuning's start (--pretrain true) or for the ablation's
if [ -z "$pretrained" ] && { [ "$pretrain" = true ] || [ "$ablation" = true ]; } && \
    run_stage 2 "self-supervised pretraining on all $(langs_of $pretrain_langs | wc -w) languages (temperature sampling)" "$exp/log/synth_unlabelled.log $exp/log/pretrain.log"; then
  # the audio of the languages without labels (stage 1 made the labelled ones), once: spk2utt is the last file
  # a language's data dir gets
  todo=$(for l in $(langs_of $pretrain_langs); do
    [[ ",$asr_langs," == *",$l,"* ]] || [ -f $data/train_$l/spk2utt ] || printf '%s,' $l; done)
  todo=${todo%,}
  if [ -n "$todo" ]; then
    python local/synthesize.py --out $data --langs $todo --split train --utts $pretrain_utts --seed $seed \
      --nj $nj --words $train_words --train-voices $train_voices 2>&1 | tee $exp/log/synth_unlabelled.log
    seqattn validate-data-dir $(split_dirs train $todo) --check-audio 2>&1 | tee -a $exp/log/synth_unlabelled.log
  fi
  sources=$(for l in $(langs_of $pretrain_langs); do printf '{path: %s/train_%s, language: %s}, ' $data $l $l; done)
  seqattn pretrain $pretrain_config "data.train=[${sources%, }]" run.output_dir=$exp/pretrain \
    run.max_time_s=$pretrain_time run.tensorboard=true $pretrain_overrides 2>&1 | tee $exp/log/pretrain.log
  finish_stage 2 pretrain
fi

# labelled_dir LANG: the training data dir fine-tuning reads (with --label-fraction, a per-voice share of it)
labelled_dir() {
  if [ "$label_fraction" = 1 ]; then echo $data/train_$1; return; fi
  local dir=$data/train_${1}_labels$label_fraction
  [ -f $dir/spk2utt ] || python local/subset_data_dir.py --fraction $label_fraction $data/train_$1 $dir >&2
  echo $dir
}
# finetune NAME INIT [OVERRIDES...]: one multilingual CTC model over all labelled languages (one output layer over the
# union of their scripts; the scripts do not overlap, so the model also identifies the language). Its schedule
# runs in training time (optim.schedule_time_s): the learning rate anneals within $finetune_time s on any machine.
finetune() {
  local name=$1 init=$2
  shift 2
  local train=$(for l in $(langs_of $asr_langs); do printf '{path: %s}, ' $(labelled_dir $l); done)
  local valid=$(for l in $(langs_of $asr_langs); do printf '{path: %s/dev_%s}, ' $data $l; done)
  seqattn finetune $finetune_config "data.train=[${train%, }]" "data.valid=[${valid%, }]" $init \
    run.output_dir=$exp/$name run.max_time_s=0 optim.schedule_time_s=$finetune_time \
    run.tensorboard=true $finetune_overrides "$@" \
    2>&1 | tee $exp/log/$name.log
  # training links $exp/$name/best to the checkpoint BEST names (the final model when nothing was validated)
  if [ ! -f $exp/$name/best/config.json ]; then
    echo "fine-tuning left no usable model: $exp/$name/best does not lead to a model directory" >&2
    return 1
  fi
}
# INIT of a pretrained start: the given --pretrained model (with a new CTC head) or the newest pretraining checkpoint
pretrained_init() {
  if [ -n "$pretrained" ]; then echo "$pretrained new_vocabulary=true"
  else echo "$(cd $exp/pretrain/checkpoints && pwd)/$(cat $exp/pretrain/checkpoints/LAST)"; fi
}
scratch_init="init=null freeze_cnn=false freeze_updates=0"
ft_init() {  # ft's start: the pretrained model (--pretrain true) or random initialisation
  if [ "$pretrain" = true ]; then echo "init=$(pretrained_init)"; else echo "$scratch_init"; fi
}
ablation_model=$([ "$pretrain" = true ] && echo ft_scratch || echo ft_pretrained)
models=ft
[ "$ablation" = true ] && models="ft $ablation_model"
for v in ${head_variants//,/ }; do models="$models ft_$v"; done
head_variant_attention() {  # the fine-tuned model's attention with one local head replaced
  case $1 in
    dilated) echo "{num_heads: 4, local: {heads: 3, window_left: $head_window, window_right: $head_window}, dilated: {heads: 1, dilation: 4, window: $((head_window / 2))}}" ;;
    global) echo "{num_heads: 4, local: {heads: 3, window_left: $head_window, window_right: $head_window}, global_tokens: {heads: 1, window: $head_window, tokens: 8}}" ;;
    *) echo "unknown head variant $1 (dilated, global)" >&2; return 1 ;;
  esac
}
for v in ${head_variants//,/ }; do head_variant_attention $v > /dev/null; done

if run_stage 3 "CTC training on $asr_langs ($([ "$pretrain" = true ] && echo "init: pretrained encoder" || echo "from scratch"))" $exp/log/ft.log; then
  finetune ft "$(ft_init)"  # a CTC model given as --pretrained gets a new head over this recipe's vocabulary
  finish_stage 3 finetune
fi

if { [ "$ablation" = true ] || [ -n "$head_variants" ]; } && \
    run_stage 4 "ablations: the other start ($ablation_model) / other heads" "$exp/log/ft_*.log"; then
  # equal updates: as many as ft reached in its time, on an update schedule of that length (ft's, spread over
  # updates instead of seconds), so the machine's speed during this stage changes nothing
  updates=$(sed 's/^update_0*//' $exp/ft/checkpoints/LAST)
  same_updates="run.max_time_s=0 optim.schedule_time_s=0 optim.max_updates=$updates"
  if [ "$ablation" = true ]; then
    if [ "$pretrain" = true ]; then finetune ft_scratch "$scratch_init" $same_updates
    else finetune ft_pretrained "init=$(pretrained_init)" $same_updates; fi
  fi
  # the same start, data order and schedule as ft (model.attention applies on a pretrained model's config too)
  for v in ${head_variants//,/ }; do
    finetune ft_$v "$(ft_init)" $same_updates "model.attention=$(head_variant_attention $v)"
  done
  finish_stage 4 ablations
fi

if run_stage 5 "n-gram LMs and lexicons from the training text$([ $lm_text = domain ] && echo " and the domain's names")" $exp/log/lm.log; then
  {
    [ "$lm_text" = train ] || python local/domain_text.py --langs $asr_langs --out $exp/lm/domain_text
    for l in $(langs_of $asr_langs); do
      mkdir -p $exp/lm/$l
      cut -d' ' -f2- $data/train_$l/text > $exp/lm/$l/text.txt  # Kaldi text without its utterance ids
      [ "$lm_text" = train ] || cat $exp/lm/domain_text/$l.txt >> $exp/lm/$l/text.txt
      seqattn build-lm $exp/lm/$l/text.txt --vocab $exp/ft/best/tokens.json --order $lm_order \
        --language $l --out-dir $exp/lm/$l || echo "no LM for $l (KenLM missing?): LM decoding will be skipped"
    done
  } 2>&1 | tee $exp/log/lm.log
  finish_stage 5 lm
fi

if run_stage 6 "decoding dev/test: greedy, and beam search with the LM (weights tuned on dev)" $exp/log/decode.log; then
  for model in $models; do
    sets=""  # every set in one call: the model loads once, each set gets its own decode dir
    for l in $(langs_of $asr_langs); do
      for set in dev_$l test_$l test_ood_$l; do
        [ -d $data/$set ] && sets="$sets --data-dir $data/$set"  # test_ood_* needs the translated messages (stage 0)
      done
    done
    seqattn transcribe $exp/$model/best $sets --output-dir $exp/decode/$model/greedy --batch-size 8 --quiet
    if [ -f $exp/lm/$(langs_of $asr_langs | cut -d' ' -f1)/lexicon.txt ]; then
      python local/decode_lm.py --model $exp/$model/best --data $data --lm-dir $exp/lm --langs $asr_langs \
        --out $exp/decode/$model/lm --beam-size $beam_size
    fi
  done 2>&1 | tee $exp/log/decode.log
  finish_stage 6 decode
fi

if [ -n "$longform_lang" ] && run_stage 7 "long-form: one pass over a several-minute recording; segments; piped wav.scp" $exp/log/longform.log; then
  out=$exp/longform
  seqattn transcribe $exp/ft/best $data/wav/long_$longform_lang.wav --output-dir $out/one_pass \
    --language $longform_lang --output-format all 2>&1 | tail -n 3 | tee $exp/log/longform.log
  python local/longform_reference.py --data $data/test_long_$longform_lang --hyp $out/one_pass/long_$longform_lang.txt \
    --out $out/one_pass/wer
  seqattn transcribe $exp/ft/best --data-dir $data/test_long_$longform_lang --data-dir $data/test_pipe_$longform_lang \
    --output-dir $exp/decode/ft/greedy --quiet --batch-size 8 | tee -a $exp/log/longform.log
  head -n 4 $out/one_pass/long_$longform_lang.srt
  finish_stage 7 longform
fi

if run_stage 8 "analysis: attention locality, codebook use, layer probes, convert localize" $exp/log/analysis.log; then
  out=$exp/analysis
  pt_model=${pretrained:-$exp/pretrain/checkpoints/$(cat $exp/pretrain/checkpoints/LAST 2>/dev/null || true)}
  analysed=ft:$exp/ft/best  # and the pretrained model, where there is one (--pretrain true or --ablation true)
  [ -f $pt_model/config.json ] && analysed="pretrain:$pt_model $analysed"
  tests=$(split_dirs test $asr_langs)
  devs=$(split_dirs dev $asr_langs)
  # the codebook's languages: every pretraining language with audio here (a given --pretrained skips stage 2)
  trains=$(for dir in $(split_dirs train $pretrain_langs); do if [ -d $dir ]; then printf '%s ' $dir; fi; done)
  folds=$([ "$quick" = true ] && echo 2 || echo 5)
  {
    for model in $analysed; do
      seqattn analyze attention ${model#*:} $tests --per-language $analysis_utts --max-utterances 1000 --out-dir $out/attention_${model%%:*} --quiet
      seqattn analyze layers ${model#*:} $tests --per-language $analysis_utts --folds $folds \
        --out-dir $out/layers_${model%%:*} --quiet
    done
    if [ -f $pt_model/config.json ] && grep -q '"wav2vec2_pretraining"' $pt_model/config.json; then  # only pretraining models keep the quantizer
      seqattn analyze codebook $pt_model $trains --per-language $((analysis_utts * 3)) --out-dir $out/codebook --quiet
    else
      echo "codebook analysis skipped: no pretraining model with a quantizer (--pretrain true or --ablation true makes one)"
    fi
    # Localize the fine-tuned model: windows measured on dev, CER measured on test; once as it is (a window
    # per head), once with half the mass and the attention layers distilled on unlabelled training audio.
    # (a model whose every head already fits the coverage at the kernel's cost is left as it is: said, not failed)
    status=0
    report=$(seqattn convert localize $exp/ft/best $exp/ft_local --data $devs --coverage $localize_coverage \
      --test $tests --per-head --bench-seconds $localize_bench_seconds --quiet 2>&1) || status=$?
    echo "$report"
    [ $status -eq 0 ] || grep -q "nothing to localize" <<< "$report" || exit 1
    seqattn convert localize $exp/ft/best $exp/ft_local_distilled --data $devs --coverage 0.5 --test $tests \
      --distill $trains --distill-steps $localize_distill_steps --bench-seconds $localize_bench_seconds --quiet
  } 2>&1 | tee $exp/log/analysis.log
  finish_stage 8 analysis
fi

if run_stage 9 "scoring: RESULTS.md" "(its output above)"; then
  python local/make_results.py --exp $exp --data $data --out $exp/RESULTS.md \
    --ft-start $([ "$pretrain" = true ] && echo pretrained || echo scratch) --command "egs/indic_synth/asr/run.sh $*"
  finish_stage 9 results
fi
echo "done: results in $(cd $exp && pwd)/RESULTS.md"

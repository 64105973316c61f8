# Source me from an LM recipe's run.sh: the stage bookkeeping shared by the LM recipes (as in the ASR demo):
# a marker in $exp/done/N for each finished stage, its time in $exp/time/NN, so a re-run skips done work.
run_stage() {  # run_stage NUMBER NAME: true if the stage is selected and not done yet (then its timer starts)
  [ $stage -le $1 ] && [ $stop_stage -ge $1 ] || return 1
  echo "=== stage $1: $2 ($(date +%H:%M:%S))"
  if [ -f $exp/done/$1 ]; then echo "already done ($exp/done/$1)"; return 1; fi
  stage_started=$SECONDS
}
finish_stage() {  # finish_stage NUMBER NAME
  printf '%s\t%s\n' "$1 $2" $((SECONDS - stage_started)) > $exp/time/$(printf %02d $1)
  touch $exp/done/$1
}

# Source me: how parallel jobs run. Kaldi recipes pick run.pl / queue.pl here; this toolkit runs local
# jobs with xargs -P ("nj" at a time), which is all a single machine needs.
run_parallel() {  # usage: run_parallel NJ CMD_FILE  (one shell command per line)
  local nj=$1 file=$2
  xargs -P "$nj" -I{} bash -c '{}' < "$file"
}

# Source me: puts the project's virtualenv and package on the path (Kaldi's path.sh convention).
SEQATTN_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)
export SEQATTN_ROOT
export PATH="$SEQATTN_ROOT/.venv/bin:$PATH"
export PYTHONPATH="$SEQATTN_ROOT${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1

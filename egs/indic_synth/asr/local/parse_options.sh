# Kaldi-style option parsing: every "--name value" sets the shell variable "name" (dashes become
# underscores), which must already exist in the calling script. Source me after setting defaults.
while [ $# -gt 0 ]; do
  case "$1" in
    --help|-h) echo "usage: $0 [--stage N] [--stop-stage N] [--quick true|false] [--nj N] ..." >&2; exit 0 ;;
    --*=*) name=${1%%=*}; value=${1#*=}; shift ;;
    --*) name=$1; value=${2:?"option $1 needs a value"}; shift 2 ;;
    *) break ;;
  esac
  name=${name#--}; name=${name//-/_}
  if [ -z "${!name+x}" ]; then echo "$0: unknown option --${name//_/-}" >&2; exit 1; fi
  printf -v "$name" '%s' "$value"
done

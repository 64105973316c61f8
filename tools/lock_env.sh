#!/usr/bin/env bash
# Regenerate tools/requirements.lock from a tested environment: bash tools/lock_env.sh [VENV]
#
# The lock pins every package of the project's virtualenv, so that a fresh machine gets exactly the set that
# passed the tests, whatever the registry serves that day (a new babel once changed the demo's corpus text).
# To move a package: install the new version into .venv, run `make test` (and `make demo` when it is a package
# the recipes use: babel decides the demo's text), then run this and commit the lock with the results.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${1:-${SEQATTN_VENV:-.venv}}
lock=tools/requirements.lock
python=$("$venv/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
{
  echo "# The tested set of packages behind \`make test\` and \`make demo\` (Python $python, $(uname -m) Linux)."
  echo "# tools/setup_env.sh installs with this file as pip constraints, and tools/check_lock.py fails when the"
  echo "# virtualenv differs from it. pyproject.toml keeps version ranges; this file pins what was tested."
  echo "# Regenerate (after \`make test\` passed in the changed .venv): bash tools/lock_env.sh"
  "$venv/bin/python" -m pip freeze --all --exclude-editable --disable-pip-version-check \
    | grep -v -i -E '^(pip|seqattn)==' | LC_ALL=C sort -f
  echo "# Built from source by tools/install_kenlm.sh (KenLM's lmplz/build_binary; not installed in the venv)."
  echo "kenlm==${KENLM_VERSION:-$(grep -i '^kenlm==' "$lock" 2> /dev/null | cut -d= -f3 || echo 0.3.0)}"
} > "$lock.tmp"
mv "$lock.tmp" "$lock"
echo "wrote $lock ($(grep -c '==' "$lock") pins)"

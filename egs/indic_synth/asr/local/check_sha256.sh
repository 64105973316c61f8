#!/usr/bin/env bash
# usage: check_sha256.sh SUMS_FILE ARCHIVE NAME
# The first time NAME is seen its sha256 is recorded in SUMS_FILE; afterwards ARCHIVE must match it (for
# corpora whose publishers give no checksums, this still catches a corrupted or changed re-download).
set -euo pipefail
sums=$1 archive=$2 name=$3
sum=$(sha256sum "$archive" | cut -d' ' -f1)
recorded=$(grep " $name\$" "$sums" 2> /dev/null | cut -d' ' -f1 || true)
if [ -z "$recorded" ]; then
  echo "$sum  $name" >> "$sums"
elif [ "$recorded" != "$sum" ]; then
  echo "$archive: sha256 $sum differs from the recorded $recorded (delete it and re-run)" >&2
  exit 1
fi

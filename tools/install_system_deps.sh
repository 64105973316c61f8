#!/usr/bin/env bash
# Debian packages the recipes and some tests use (espeak-ng to synthesise speech, sox for piped wav.scp, and
# packages whose translated messages are the demo's out-of-domain test sentences: libglib2.0-data,
# shared-mime-info, xdg-user-dirs).
# Idempotent; without root or network it warns and the tests that need them skip with a reason.
set -u
missing=()
command -v espeak-ng > /dev/null || missing+=(espeak-ng)
command -v sox > /dev/null || missing+=(sox)
[ -f /usr/share/locale/hi/LC_MESSAGES/glib20.mo ] || missing+=(libglib2.0-data)
[ -f /usr/share/locale/hi/LC_MESSAGES/shared-mime-info.mo ] || missing+=(shared-mime-info)
[ -f /usr/share/locale/hi/LC_MESSAGES/xdg-user-dirs.mo ] || missing+=(xdg-user-dirs)
[ ${#missing[@]} -eq 0 ] && exit 0
echo "[setup] installing ${missing[*]} (apt)"
if [ "$(id -u)" -ne 0 ]; then
  echo "[setup] warning: not root, cannot install ${missing[*]}; tests that need them will skip" >&2
  exit 0
fi
apt-get install -y -q "${missing[@]}" > /dev/null 2>&1 || \
  { apt-get update -q > /dev/null 2>&1 && apt-get install -y -q "${missing[@]}" > /dev/null 2>&1; } || \
  echo "[setup] warning: could not install ${missing[*]}; tests that need them will skip" >&2
exit 0

#!/bin/sh
# check_man_pages.sh FMHOST MANDIR: every manual page renders, and says every
# option its command's --help lists (the pages are made from --help by
# help2man; this catches a page left behind or a command without one).
set -eu
fmhost=$1
mandir=$2
fail=0
for page in "$mandir"/fmhost.1 "$mandir"/fmhost-*.1; do
  name=$(basename "$page" .1)
  cmd=${name#fmhost}
  cmd=${cmd#-}
  text=$(LC_ALL=C MANWIDTH=200 man -l "$page" 2>&1) || { echo "$page: man cannot render it"; fail=1; continue; }
  if [ -n "$cmd" ]; then help=$("$fmhost" "$cmd" --help); else help=$("$fmhost" --help); fi
  for opt in $(printf '%s\n' "$help" | grep -o -- '--[a-z][a-z0-9-]*' | sort -u); do
    printf '%s\n' "$text" | grep -q -F -- "$opt" || { echo "$page: no $opt (in fmhost $cmd --help)"; fail=1; }
  done
  for c in train eval plugins report bench script runs summary predict export; do
    [ -z "$cmd" ] || break
    printf '%s\n' "$help" | grep -q "^  $c " || continue
    [ -f "$mandir/fmhost-$c.1" ] || { echo "fmhost $c: listed by fmhost --help, no fmhost-$c.1"; fail=1; }
  done
done
n=$(ls "$mandir"/fmhost*.1 | wc -l)
[ "$fail" -eq 0 ] && echo "check_man_pages: $n pages, every --help option in its page"
exit "$fail"

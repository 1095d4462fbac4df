#!/bin/sh
# check_lua_names.sh — docs/lua.md and the `fm` module name the same things.
#
#   sh tests/doc/check_lua_names.sh SOURCE_DIR BUILD_DIR
#
# From the live module (lua_names.lua run by fmhost): every function and
# field of fm, every option of every function taking an options table (read
# from its own "unknown option" error), every method of p, m, d and run, and
# every key of the tables it returns.  From the sources (core/lua/*.c): the
# fields of p, m, d and run, which C serves by name in their __index.
# Fails when one of them is missing from docs/lua.md, when the page's option
# table of a function lists other options than the function takes, or when
# the page names an fm.* function or field, or a method or field of p, m, d
# or run, that does not exist.
set -u
src=$1
build=$2
doc=$src/docs/lua.md
work=$(mktemp -d "${TMPDIR:-/tmp}/fmhost-luanames.XXXXXX") || exit 1
trap 'rm -rf "$work"' EXIT

"$build/fmhost" script "$src/tests/doc/lua_names.lua" data="$src/data/sample" out="$work" \
    > "$work/live" 2> "$work/err" || { cat "$work/err"; exit 1; }
# Fields of the objects, from their __index functions: plugin_index -> p, ...
awk '
/^static int [a-z]+_index\(/ { obj = $3; sub(/_index.*/, "", obj); next }
/^}/ { obj = "" }
obj != "" {
    short = obj == "plugin" ? "p" : obj == "model" ? "m" : obj == "dataset" ? "d" : obj
    s = $0
    while (match(s, /strcmp\(k, "[a-z_0-9]+"\)/)) {
        print "field " short "." substr(s, RSTART + 11, RLENGTH - 13)
        s = substr(s, RSTART + RLENGTH)
    }
}' "$src"/core/lua/*.c | sort -u > "$work/fields"
grep -c . "$work/fields" > /dev/null || { echo "no object fields found in core/lua/*.c"; exit 1; }
cat "$work/live" "$work/fields" > "$work/names"

# The page's option tables: a table whose header starts "| option" lists
# the options of the first fm.* function named in the paragraph (or heading)
# before it; each row's first column holds one or more `name`s.  "takes the
# options of fm.x" adds fm.x's rows to that function's.
awk '
function flush() { if (first != "") ctx = first; first = "" }
/^\| option \|/ { flush(); intable = 1; next }
intable && /^\|/ {
    split($0, col, "|")
    s = col[2]
    while (match(s, /`[a-z_0-9]+`/)) { opt[ctx] = opt[ctx] " " substr(s, RSTART + 1, RLENGTH - 2); s = substr(s, RSTART + RLENGTH) }
    next
}
{ intable = 0 }
/^[ \t]*$/ || /^#/ { flush() }
/^#/ || /^[^|]/ {
    if (first == "" && match($0, /fm\.[a-z_.]*[a-z_]/)) first = substr($0, RSTART, RLENGTH)
    if (match($0, /takes the options of `fm\.[a-z_.]*[a-z_]/)) { from = substr($0, RSTART, RLENGTH); sub(/.*`/, "", from); inherit[first] = from }
}
/^#/ { flush() }
END {
    for (f in opt) {
        all = opt[f] (f in inherit ? opt[inherit[f]] : "")
        n = split(all, o, " ")
        for (i = 1; i <= n; i++) print "option " f " " o[i]
    }
}' "$doc" | sort -u > "$work/doc_options"

failed=0
problem() { echo "docs/lua.md: $*"; failed=$((failed + 1)); }

# Code -> page.
while read -r kind name rest; do
    case $kind in
    name | method | field)
        grep -qF -- "$name" "$doc" || problem "$kind $name is not documented" ;;
    key)
        grep -qw -- "$name" "$doc" || problem "the key '$name' (of a table fm returns) is not documented" ;;
    option) ;;
    esac
done < "$work/names"
grep '^option ' "$work/live" | sort -u > "$work/live_options"
comm -23 "$work/live_options" "$work/doc_options" | while read -r _ f o; do
    echo "docs/lua.md: $f takes option '$o', missing from its option table"
done > "$work/missing"
comm -13 "$work/live_options" "$work/doc_options" | while read -r _ f o; do
    echo "docs/lua.md: the option table of $f lists '$o', which $f does not take"
done >> "$work/missing"
if [ -s "$work/missing" ]; then
    cat "$work/missing"
    failed=$((failed + $(grep -c . "$work/missing")))
fi

# Page -> code: every fm.* name, and every p/m/d/run method and field.
grep -o 'fm\.[a-z_]\+\(\.[a-z_]\+\)*' "$doc" | sort -u > "$work/doc_fm"
while read -r n; do
    case $n in fm.args.*) continue ;; esac
    grep -qx "name $n" "$work/names" || problem "names $n, which the fm module does not have"
done < "$work/doc_fm"
grep -o '\(^\|[^a-z_.]\)\(p\|m\|d\|run\)[:.][a-z_]\+' "$doc" | sed 's/^[^a-z]//' | sort -u > "$work/doc_obj"
while read -r n; do
    case $n in
    *:*) grep -qx "method $n" "$work/names" || problem "names the method $n, which does not exist" ;;
    *) grep -qx "field $n" "$work/names" || problem "names the field $n, which does not exist" ;;
    esac
done < "$work/doc_obj"

echo "lua names: $(grep -c '^name ' "$work/names") functions and fields, $(grep -c '^option ' "$work/names") options," \
    "$(grep -c '^method ' "$work/names") methods, $(grep -c '^field ' "$work/names") object fields," \
    "$(grep -c '^key ' "$work/names") table keys; $failed problems"
[ "$failed" -eq 0 ]

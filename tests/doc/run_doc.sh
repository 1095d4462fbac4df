#!/bin/sh
# run_doc.sh — runs the examples of one Markdown page, as ctest's `doc` label does.
#
#   sh tests/doc/run_doc.sh SOURCE_DIR BUILD_DIR FILE.md [HAVE_MPI]
#
# Every fenced block of FILE.md is one of:
#   ```sh       commands, run in order by one `sh -e` in a scratch directory
#               that holds build/ scripts/ data/ docs/ (links to the tree), with
#               FMHOST_DATA=data/sample and build/ on the PATH, after the
#               substitutions of the table below (small data, one epoch)
#   ```lua      a script, run by `build/fmhost script`
#   ```c        compiled (-fsyntax-only) against the public headers: a block with
#               #include as a file; else after #include <fm/fm_plugin.h>, and a
#               typedef'd struct field by field against the header's own
#   ``` (none)  a transcript when it has "$ COMMAND" lines: each command runs and
#               the lines after it must be its output; else plain text (a file
#               listing, a diagram), not run
# and an HTML comment on the line right before a block changes that:
#   <!-- doc-test: output -->          the block is the output of the block run
#                                      before it on the page
#   <!-- doc-test: output of CMD -->   the block is the output of CMD (stdout and
#                                      stderr, whatever its exit status)
#   <!-- doc-test: run-only REASON --> a transcript whose commands run but whose
#                                      output is not compared
#   <!-- doc-test: skip REASON -->     not run; counted and printed
#   <!-- test_sdk: NAME -->            run by test_sdk (docs/writing-plugins.md)
# An output matches when its lines appear in the command's output in order and
# together; a line "..." in the block stands for any lines.  A block in another
# language (python, cmake) must carry a marker.  The scratch directory is one
# per page, so a block may use what an earlier block of the page wrote.
set -u
src=$1
build=$2
md=$3
have_mpi=${4:-OFF}
page=${md#"$src"/}
here=$src/tests/doc

# The substitutions, in order: PATTERN ;; ACTION ;; ARGUMENT.  PATTERN is an
# awk regular expression matched on a shell command.  skip: the command is
# not run (ARGUMENT says why); append: ARGUMENT is added to the command;
# default: each KEY=VALUE of ARGUMENT is added unless the command gives KEY;
# replace: what PATTERN matched becomes ARGUMENT; needs: skipped unless the
# processor runs the kernel set ARGUMENT.  A later option or KEY=VALUE
# wins over an earlier one, so an appended --epochs or limit= is the one used.
# The scripts train mlp and cnn unless the page names its models, and rescnn
# trains at width 8: the same commands, quick enough for every ctest, also
# under the sanitizers.
rules='
apt-get (update|install) ;; skip ;; installs Debian packages (.ci/run does)
cmake --workflow ;; skip ;; the build and ctest themselves
(^| )ctest ;; skip ;; runs the test suite, of which this test is part
cmake --(install|preset|build) ;; skip ;; builds or installs a tree (test_sdk builds and installs one)
pkg-config ;; skip ;; needs an installed SDK (test_sdk runs the same lines in docs/writing-plugins.md)
--hostfile [^ ]+ ;; replace ;; 
/usr/share/datasets/fashion-mnist ;; replace ;; data/sample
 \./lenet\.so ;; replace ;;  build/plugins/lenet.so
 [A-Za-z0-9_-]+\.png ;; replace ;;  docs/img/runs_compare_val_acc.png
fmhost (train|eval|bench|script|summary|predict|export|runs|report|plugins) .*--kernels avx512 ;; needs ;; avx512
fmhost (train|eval|bench|script) .*--kernels avx2 ;; needs ;; avx2
width=[0-9]+ ;; replace ;; width=8
fmhost train .*rescnn ;; append ;; --set width=8
fmhost train ;; append ;; --epochs 1 --limit 300
fmhost script scripts/ ;; append ;; epochs=1 limit=300
fmhost script scripts/ ;; default ;; models=mlp,cnn
fmhost bench ;; append ;; --batches 3
'

work=$(mktemp -d "${TMPDIR:-/tmp}/fmhost-doc.XXXXXX") || exit 1
trap 'rm -rf "$work"' EXIT
blocks=$work/.blocks
mkdir "$blocks"
awk -v out="$blocks" -f "$here/blocks.awk" "$md" || exit 1

ln -s "$build" "$work/build"
for d in scripts data docs; do ln -s "$src/$d" "$work/$d"; done
export FMHOST_DATA="$work/data/sample" PATH="$build:$PATH"
unset FMHOST_RUNS_DB
supported=$("$build/fmhost" --version | sed -n 's/.*this processor runs: \(.*\))$/\1/p')
mpirun_cmd=""
if [ "$have_mpi" = ON ] && command -v mpirun >/dev/null 2>&1; then
    # LeakSanitizer cannot attribute Open MPI's own allocations (as in test_dist).
    mpirun_cmd="env ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0 mpirun --oversubscribe"
    [ "$(id -u)" -eq 0 ] && mpirun_cmd="$mpirun_cmd --allow-run-as-root"
fi

ran=0 checked=0 skipped=0 sdk=0 text=0 failed=0
last_out=$work/.last.out
: > "$last_out"

fail() {  # LINE MESSAGE [LOG]
    failed=$((failed + 1))
    echo "FAIL $page:$1: $2"
    if [ -n "${3:-}" ] && [ -s "$3" ]; then sed 's/^/    | /' "$3" | tail -n 40; fi
}

# The command a page shows, as this test runs it, on stdout; or
# "skip: REASON" when it does not run here.
rewrite() {
    printf '%s\n' "$1" | awk -v rules="$rules" -v supported=" $supported " -v mpirun="$mpirun_cmd" '
    {
        cmd = $0
        if (cmd ~ /^mpirun /) {
            if (mpirun == "") { print "skip: mpirun, or fmhost built with Open MPI, is missing"; exit }
            sub(/^mpirun/, mpirun, cmd)
        }
        n = split(rules, line, "\n")
        for (i = 1; i <= n; i++) {
            if (split(line[i], f, / ;; /) != 3) continue
            if (cmd !~ f[1]) continue
            if (f[2] == "skip") { print "skip: " f[3]; exit }
            if (f[2] == "needs" && index(supported, " " f[3]) == 0) {
                print "skip: this processor does not run the " f[3] " kernels"; exit
            }
            if (f[2] == "append") cmd = cmd " " f[3]
            if (f[2] == "default") {
                nw = split(f[3], word, " ")
                for (w = 1; w <= nw; w++) {
                    key = substr(word[w], 1, index(word[w], "="))
                    if (index(cmd, " " key) == 0) cmd = cmd " " word[w]
                }
            }
            if (f[2] == "replace") gsub(f[1], f[3], cmd)
        }
        sub(/[ \t]+$/, "", cmd)
        print cmd
    }'
}

# The commands of a block, each to its own file DIR/1, DIR/2, ...:
# continuation lines joined, comments and blank lines dropped, a here-document
# kept with its command.
commands() {  # BODY DIR
    rm -rf "$2"
    mkdir "$2"
    awk -v dir="$2" '
    function emit(text) { n++; print text > (dir "/" n); close(dir "/" n) }
    heredoc != "" {
        doc = doc "\n" $0
        if ($0 == heredoc) { emit(doc); heredoc = "" }
        next
    }
    { line = (held == "" ? "" : held " ") $0; held = "" }
    line ~ /\\$/ { sub(/[ \t]*\\$/, "", line); held = line; next }
    {
        sub(/^[ \t]+/, "", line)
        if (line == "" || line ~ /^#/) next
        sub(/[ \t][ \t]+#.*$/, "", line)   # a comment after the command, as the pages align them
        if (match(line, /<<-?[ ]*'"'"'?[A-Za-z_]+'"'"'?/)) {
            heredoc = substr(line, RSTART, RLENGTH)
            gsub(/[<>'"'"' -]/, "", heredoc)
            doc = line
            next
        }
        emit(line)
    }' "$1"
}

# Runs the commands in the files of DIR (from commands) in the scratch
# directory as one script; its output goes to $last_out.  Returns the
# script's status.
run_commands() {  # DIR
    script=$work/.script.sh
    : > "$script"
    i=1
    while [ -f "$1/$i" ]; do
        cmd=$(head -n 1 "$1/$i")
        new=$(rewrite "$cmd")
        i=$((i + 1))
        case $new in
        "skip: "*)
            skipped=$((skipped + 1))
            echo "skip $page:$line: $cmd (${new#skip: })"
            continue ;;
        esac
        ran=$((ran + 1))
        quoted=$(printf '%s\n' "$new" | sed "s/'/'\\\\''/g")
        printf '%s\n' "printf '%s\\n' '\$ $quoted'" "$new" >> "$script"
        sed 1d "$1/$((i - 1))" >> "$script"
    done
    (cd "$work" && sh -e "$script") > "$last_out" 2>&1
}

check_output() {  # LINE EXPECTED ACTUAL WHAT
    if [ ! -s "$2" ]; then fail "$1" "the output block is empty"; return; fi
    if awk -f "$here/match.awk" "$2" "$3"; then
        checked=$((checked + 1))
    else
        fail "$1" "the block is not the output of $4; expected:" "$2"
        echo "    got:"
        sed 's/^/    | /' "$3" | tail -n 40
    fi
}

# A transcript: "$ COMMAND" lines, each followed by its output.
transcript() {  # BODY COMPARE(yes|no)
    awk -v dir="$work/.t" '
    BEGIN { system("rm -rf " dir "; mkdir " dir); n = 0 }
    /^\$ / { n++; print substr($0, 3) > (dir "/" n ".cmd"); close(dir "/" n ".cmd"); printf "" > (dir "/" n ".want"); next }
    n > 0 { print >> (dir "/" n ".want") }
    ' "$1"
    t=1
    while [ -f "$work/.t/$t.cmd" ]; do
        commands "$work/.t/$t.cmd" "$work/.t/cmds"
        run_commands "$work/.t/cmds"
        status=$?
        sed '1d' "$last_out" > "$work/.t/$t.got"  # the "$ command" echo
        if [ "$2" = yes ]; then
            check_output "$line" "$work/.t/$t.want" "$work/.t/$t.got" "'$(cat "$work/.t/$t.cmd")'"
        elif [ $status -ne 0 ]; then
            fail "$line" "a command failed" "$last_out"
        fi
        t=$((t + 1))
    done
}

# A C block, compiled against the public headers of the tree.
compile_c() {  # BODY
    c=$work/.block.c
    if grep -q '^#include' "$1"; then
        cp "$1" "$c"
    else
        # A typedef'd struct that the headers define too is renamed, and each
        # of its fields checked against the header's: same name, same place.
        awk '
        BEGIN { print "#include <stddef.h>"; print "#include <fm/fm_plugin.h>" }
        /^typedef struct [a-z_0-9]+ \{/ { name = $3; depth = 1; print "typedef struct doc_" name " {"; next }
        depth && /^\}/ { depth = 0; print "} doc_" name ";"; structs[++ns] = name; next }
        depth {
            print
            decl = $0
            sub(/\/\*.*$/, "", decl); sub(/\/\/.*$/, "", decl)
            if (decl !~ /;/) next
            sub(/;.*$/, "", decl)
            if (match(decl, /\(\*[a-z_0-9]+\)/)) field = substr(decl, RSTART + 2, RLENGTH - 3)
            else { gsub(/\[[^]]*\]/, "", decl); sub(/[ \t]+$/, "", decl); match(decl, /[a-z_0-9]+$/); field = substr(decl, RSTART, RLENGTH) }
            fields[name] = fields[name] " " field
            next
        }
        { print }
        END {
            for (s = 1; s <= ns; s++) {
                t = structs[s]
                printf "_Static_assert(sizeof(doc_%s) == sizeof(%s), \"%s: the header has other fields\");\n", t, t, t
                nf = split(fields[t], fl, " ")
                for (k = 1; k <= nf; k++)
                    printf "_Static_assert(offsetof(doc_%s, %s) == offsetof(%s, %s), \"%s.%s\");\n", t, fl[k], t, fl[k], t, fl[k]
            }
        }' "$1" > "$c"
    fi
    if ${CC:-cc} -std=c11 -Wall -Wextra -Werror -Wno-unused-function -fsyntax-only \
        -I"$src/core/include" "$c" > "$work/.cc.log" 2>&1; then
        ran=$((ran + 1))
    else
        fail "$line" "this C does not compile against the headers" "$work/.cc.log"
    fi
}

while IFS="$(printf '\t')" read -r n lang line marker; do
    body=$blocks/$n
    case $marker in
    "test_sdk: "*) sdk=$((sdk + 1)); continue ;;
    "doc-test: skip "*)
        skipped=$((skipped + 1))
        echo "skip $page:$line: ${marker#doc-test: skip }"
        continue ;;
    "doc-test: output")
        check_output "$line" "$body" "$last_out" "the block before it"
        continue ;;
    "doc-test: output of "*)
        printf '%s\n' "${marker#doc-test: output of }" > "$work/.cmd"
        (cd "$work" && sh "$work/.cmd") > "$work/.of.out" 2>&1
        ran=$((ran + 1))
        check_output "$line" "$body" "$work/.of.out" "'${marker#doc-test: output of }'"
        continue ;;
    "doc-test: run-only "*)
        transcript "$body" no
        continue ;;
    -) ;;
    *) fail "$line" "unknown marker '<!-- $marker -->' (see tests/doc/run_doc.sh)"; continue ;;
    esac
    case $lang in
    sh | bash | console)
        commands "$body" "$work/.cmds"
        run_commands "$work/.cmds" || fail "$line" "a command failed" "$last_out" ;;
    lua)
        cp "$body" "$work/.block.lua"
        ran=$((ran + 1))
        (cd "$work" && "$build/fmhost" script .block.lua) > "$last_out" 2>&1 ||
            fail "$line" "the Lua block failed" "$last_out" ;;
    c) compile_c "$body" ;;
    -)
        if grep -q '^\$ ' "$body"; then transcript "$body" yes; else text=$((text + 1)); fi ;;
    *) fail "$line" "a \`\`\`$lang block: run it or mark it <!-- doc-test: skip REASON -->" ;;
    esac
done < "$blocks/manifest"

echo "$page: $ran run, $checked outputs checked, $skipped skipped, $sdk run by test_sdk, $text plain text, $failed failed"
[ "$failed" -eq 0 ]

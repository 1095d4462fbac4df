# blocks.awk — splits a Markdown file into its fenced code blocks.
#
#   awk -v out=DIR -f blocks.awk FILE.md
#
# Writes each block's body to DIR/N (N from 1, in file order) and one line
# per block to DIR/manifest:
#
#   N <TAB> language <TAB> line of the opening fence <TAB> marker
#
# language is the word after the opening fence ("sh", "lua", "c", ...; "-"
# for none).  marker is the text of an HTML comment "<!-- doc-test: ... -->"
# or "<!-- test_sdk: ... -->" on the line right before the fence, else "-".
# A fence is a line starting with three backticks; an unclosed block is an
# error (exit 1) naming its line.
BEGIN {
    n = 0; inside = 0; prev = ""
    manifest = out "/manifest"
    printf "" > manifest
}
!inside && /^```/ {
    lang = substr($0, 4)
    gsub(/[ \t]/, "", lang)
    if (lang == "") lang = "-"
    marker = "-"
    if (prev ~ /^<!-- (doc-test|test_sdk): .* -->[ \t]*$/) {
        marker = prev
        sub(/^<!-- /, "", marker)
        sub(/ -->[ \t]*$/, "", marker)
    }
    n++
    body = out "/" n
    printf "" > body
    start = NR
    inside = 1
    next
}
inside && /^```[ \t]*$/ {
    close(body)
    printf "%d\t%s\t%d\t%s\n", n, lang, start, marker >> manifest
    inside = 0
    prev = $0
    next
}
inside { print >> body; next }
{ prev = $0 }
END {
    if (inside) {
        printf "%s:%d: the code block opened here is never closed\n", FILENAME, start > "/dev/stderr"
        exit 1
    }
}

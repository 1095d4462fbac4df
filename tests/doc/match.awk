# match.awk — does a document's output block match what a command printed?
#
#   awk -f match.awk EXPECTED ACTUAL      exit 0 when it matches, 1 when not
#
# The lines of EXPECTED must appear, one after another, among the lines of
# ACTUAL; a line "..." in EXPECTED stands for any number of lines (none
# included).  Trailing blanks and carriage returns are ignored on both sides.
function clean(s) { sub(/[ \t\r]+$/, "", s); return s }
function at(i, j,    k) {
    if (i > ne) return 1
    if (want[i] == "...") {
        for (k = j; k <= na + 1; k++)
            if (at(i + 1, k)) return 1
        return 0
    }
    if (j > na || want[i] != got[j]) return 0
    return at(i + 1, j + 1)
}
FNR == NR { want[++ne] = clean($0); next }
{ got[++na] = clean($0) }
END {
    while (ne > 0 && want[ne] == "") ne--
    for (s = 1; s <= na + 1; s++)
        if (at(1, s)) exit 0
    exit 1
}

# One manual page from `fmhost [COMMAND] --help`, run with cmake -P:
#   -DFMHOST=path -DHELP2MAN=path -DVERSION=x.y.z -DCOMMAND=train (or "" for fmhost(1))
#   -DSUMMARY="one line" -DSEE_ALSO="fmhost-train,fmhost-eval,..." -DOUT=file.1
# The page is the --help text as help2man lays it out, so the two cannot
# disagree; a subcommand's page is titled fmhost-COMMAND.  The version is
# the project's (fmhost --version also names this machine's kernel sets,
# which have no place in a manual).
if(COMMAND)
  set(help "${COMMAND} --help")
  set(title "fmhost-${COMMAND}")
else()
  set(help "--help")
  set(title "fmhost")
endif()
set(include_file "${OUT}.h2m")
string(REPLACE "," ";" see_also "${SEE_ALSO}")
set(see_roff "")
foreach(page ${see_also})
  string(APPEND see_roff ".BR ${page} (1)\n")
endforeach()
file(WRITE "${include_file}" "[SEE ALSO]\n${see_roff}")
execute_process(
  COMMAND "${HELP2MAN}" --no-info --no-discard-stderr --help-option=${help}
          --version-string=${VERSION} --name=${SUMMARY} --section=1
          --include=${include_file} "${FMHOST}"
  OUTPUT_VARIABLE page RESULT_VARIABLE rc ERROR_VARIABLE err)
file(REMOVE "${include_file}")
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "help2man on '${FMHOST} ${help}' failed: ${err}")
endif()
string(TOUPPER "${title}" upper)
string(REGEX REPLACE "\n\\.TH FMHOST " "\n.TH ${upper} " page "${page}")
string(REGEX REPLACE "\n\\.SH NAME\nfmhost " "\n.SH NAME\n${title} " page "${page}")
file(WRITE "${OUT}" "${page}")

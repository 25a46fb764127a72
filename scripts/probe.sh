# shellcheck shell=bash
# Probe helpers shared by scripts/e2e.sh and its sub-suites (e2e-registry.sh, e2e-cache.sh,
# e2e-verify.sh). Source it; do not execute it.
#
# Output contract of every suite (stdout):
#   PASS: name              a probe that held
#   FAIL: name (detail)     a probe that did not (or could not run in CI)
#   SKIP: name (why)        a probe that cannot run here (missing tool, no network); only
#                           when run by hand: with CI=true a skipped probe is a FAIL
#   PLAN: N                 (sub-suites) N more probe lines will follow; the lines of a run
#                           must add up to the sum of its PLAN lines
# A suite can therefore not go green by accident: a probe that silently disappears (an
# early exit, an assignment failing under `set -e`, a condition that skips a block) shows
# up as a plan shortfall, and an exit status that disagrees with the FAIL lines is a FAIL.
#
# The caller sets RESULTS (a file) before sourcing; `subsuite` also needs LOGS and W. A suite
# that runs on its own calls `suite_begin NAME` after setting W and PIDS (its work dir and
# the servers it started: both are cleaned up on exit) and ends with `suite_end`.

note() { printf '# %s\n' "$*" >&2; }
emit() {
  printf '%s\n' "$1" | tee -a "$RESULTS"
  if [[ -n "${E2E_RESULTS:-}" ]]; then printf '%s\n' "$1" >>"$E2E_RESULTS"; fi
}
pass() { emit "PASS: $1"; }
fail() {
  local d="${2:-no detail}"
  d="$(printf '%s' "$d" | tr '\n\t' '  ' | sed 's/  */ /g')"
  ((${#d} > 300)) && d="${d:0:297}..."
  emit "FAIL: $1 ($d)"
}
in_ci() { [[ "${CI:-}" == true || "${CI:-}" == 1 ]]; }
# skip NAME WHY: the probe cannot run here. A FAIL in CI, a SKIP line by hand.
skip() {
  if in_ci; then fail "$1" "not run, and this is CI: $2"; else emit "SKIP: $1 ($2)"; fi
}
tail_detail() { grep -v '^[[:space:]]*$' "$1" 2>/dev/null | tail -n 1 | cut -c1-240 || true; }
check_eq() { if [[ "$3" == "$2" ]]; then pass "$1"; else fail "$1" "expected '$2', got '$3'"; fi; }
check_re() { # NAME ERE ACTUAL
  if [[ "$3" =~ $2 ]]; then pass "$1"; else fail "$1" "expected /$2/, got '$3'"; fi
}
check_nre() { # NAME ERE ACTUAL
  if [[ "$3" =~ $2 ]]; then fail "$1" "must not match /$2/: '$3'"; else pass "$1"; fi
}
check_empty() { # NAME ACTUAL [what]
  if [[ -z "$2" ]]; then pass "$1"; else fail "$1" "${3:-unexpected}: $2"; fi
}
# check_grep NAME ERE FILE: PASS iff FILE has a line matching ERE
check_grep() {
  if grep -Eq -- "$2" "$3" 2>/dev/null; then pass "$1"; else fail "$1" "no /$2/ in $(basename "$3"): $(tail_detail "$3")"; fi
}
# check_nogrep NAME ERE FILE: PASS iff FILE exists and no line of it matches ERE
check_nogrep() {
  local hit
  if [[ ! -f "$3" ]]; then fail "$1" "no file $3"; return 0; fi
  hit="$(grep -Em1 -- "$2" "$3" 2>/dev/null || true)"
  if [[ -z "$hit" ]]; then pass "$1"; else fail "$1" "$(basename "$3") has: ${hit:0:200}"; fi
}

# ---------------------------------------------------------------- plans and counts -------
# Lines that report on the suite itself (not probes): not counted against a plan.
META_RE='^(PASS|FAIL|SKIP): [^ ]*\.(plan|aborted|exit_status)( |$)'
# count_probes FILE [EXTRA_EXCLUDED_ERE]: probe lines in FILE
count_probes() {
  awk -v meta="$META_RE" -v extra="${2:-^\$^}" \
    '/^(PASS|FAIL|SKIP): / && $0 !~ meta && $0 !~ extra { n++ } END { print n + 0 }' "$1" 2>/dev/null
}
count_kind() { awk -v k="^$2: " '$0 ~ k { n++ } END { print n + 0 }' "$1" 2>/dev/null; } # FILE PASS|FAIL|SKIP
# plan N: N more probe lines will be printed. Sub-suites print it as `PLAN: N`; e2e.sh
# (PLAN_QUIET=1) only records it for the running section.
plan() {
  [[ "$1" =~ ^[0-9]+$ ]] || { fail "${SUITE:-suite}.plan" "bad plan '$1'"; return 0; }
  printf '%s\n' "$1" >>"$RESULTS.plan"
  [[ "${PLAN_QUIET:-0}" == 1 ]] || printf 'PLAN: %s\n' "$1"
}
planned() { awk '{ s += $1 } END { print s + 0 }' "$RESULTS.plan" 2>/dev/null || echo 0; }

# subsuite NAME CMD...: runs a sub-suite; its probe lines join this suite's results, its
# plan joins this suite's plan. FAIL when it printed no plan, fewer or more probe lines
# than planned, or when its exit status disagrees with its FAIL lines.
subsuite() {
  local name="$1" rc=0 out plans n nf
  shift
  out="$LOGS/$name.out"
  # its own work dir (an inherited E2E_WORK would make it share, truncate and remove ours)
  mkdir -p "$W/sub"
  E2E_WORK="$W/sub/$name" E2E_RESULTS="" "$@" >"$out" 2>"$LOGS/$name.err" </dev/null || rc=$?
  local l
  while IFS= read -r l; do emit "$l"; done < <(grep -E '^(PASS|FAIL|SKIP): ' "$out" || true)
  plans="$(awk '/^PLAN: [0-9]+$/ { s += $2; n++ } END { print (n ? s : "none") }' "$out")"
  n="$(count_probes "$out")"
  nf="$(count_kind "$out" FAIL)"
  if [[ "$plans" == none ]]; then
    fail "$name.plan" "printed no PLAN line (exit $rc): $(tail_detail "$LOGS/$name.err")"
  else
    plan "$plans"
    ((n == plans)) || fail "$name.plan" "planned $plans probes, printed $n (exit $rc): $(tail_detail "$LOGS/$name.err")"
  fi
  if ((rc != 0 && nf == 0)); then
    fail "$name.exit_status" "exit $rc without a FAIL line: $(tail_detail "$LOGS/$name.err")"
  elif ((rc == 0 && nf > 0)); then
    fail "$name.exit_status" "exit 0 despite $nf FAIL line(s)"
  fi
}

# ---------------------------------------------------------------- standalone suites ------
# suite_begin NAME: traps that clean up (servers in PIDS, the work dir W unless E2E_KEEP=1,
# and the caller's optional `suite_cleanup`) and turn an early exit into a FAIL.
suite_begin() {
  SUITE="$1"
  SUITE_DONE=0
  : >"$RESULTS.plan"
  # the command that ended the suite under `set -e`, for the FAIL line
  trap 'SUITE_LAST_ERR="line $LINENO: $BASH_COMMAND"' ERR
  trap suite_exit EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
}
suite_exit() {
  local rc=$? p
  if [[ "${SUITE_DONE:-0}" != 1 ]]; then
    fail "$SUITE.aborted" "exit $rc before the end of the suite (${SUITE_LAST_ERR:-no failing command recorded})"
    rc=1
  fi
  if declare -F suite_cleanup >/dev/null; then suite_cleanup || true; fi
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  if [[ "${E2E_KEEP:-0}" != 1 ]]; then rm -rf "$W"; else note "kept $W"; fi
  exit "$rc"
}
# suite_end: the plan check and the summary line; exit status 1 on any FAIL.
suite_end() {
  local n want np nf ns
  n="$(count_probes "$RESULTS")"
  want="$(planned)"
  ((n == want)) || fail "$SUITE.plan" "planned $want probes, printed $n"
  np="$(count_kind "$RESULTS" PASS)"
  nf="$(count_kind "$RESULTS" FAIL)"
  ns="$(count_kind "$RESULTS" SKIP)"
  printf '%s passed, %s failed, %s skipped\n' "$np" "$nf" "$ns"
  SUITE_DONE=1
  ((nf == 0))
}

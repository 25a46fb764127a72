# Probe helpers shared by the e2e sub-suites: one `PASS: name` / `FAIL: name (detail)`
# line per probe, appended to $RESULTS (and to $E2E_RESULTS when the caller sets it).
# The caller sets W (work dir), RESULTS and PIDS (servers to stop) before sourcing.
# shellcheck shell=bash
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
tail_detail() { grep -v '^[[:space:]]*$' "$1" 2>/dev/null | tail -n 1 | cut -c1-240 || true; }
check_eq() { if [[ "$3" == "$2" ]]; then pass "$1"; else fail "$1" "expected '$2', got '$3'"; fi; }
# check_grep NAME ERE FILE: PASS iff FILE has a line matching ERE
check_grep() {
  if grep -Eq -- "$2" "$3" 2>/dev/null; then pass "$1"; else fail "$1" "no /$2/ in $(basename "$3"): $(tail_detail "$3")"; fi
}
# check_nogrep NAME ERE FILE: PASS iff no line of FILE matches ERE
check_nogrep() {
  local hit
  hit="$(grep -Em1 -- "$2" "$3" 2>/dev/null || true)"
  if [[ -z "$hit" ]]; then pass "$1"; else fail "$1" "$(basename "$3") has: ${hit:0:200}"; fi
}

# Stops the servers in PIDS and removes W (E2E_KEEP=1 keeps it).
cleanup() {
  local rc=$? p
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  if [[ "${E2E_KEEP:-0}" != 1 ]]; then rm -rf "$W"; else note "kept $W"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

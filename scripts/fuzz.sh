#!/usr/bin/env bash
# Builds the cargo-fuzz targets in fuzz/ and runs each for FUZZ_SECONDS; exits 1 if
# any target finds a crash, a hang (an input slower than FUZZ_TIMEOUT) or an
# out-of-memory (above FUZZ_RSS_MB).
#
#   scripts/fuzz.sh [TARGET...]        (default: every target, one after the other)
#
# Needs the nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`).
# Seeds: fuzz/seeds/<target>/ (small, committed). The growing corpus lives in
# fuzz/corpus/<target>/ and findings in fuzz/artifacts/<target>/ (neither committed;
# reproduce one with `cargo +nightly fuzz run -a TARGET fuzz/artifacts/TARGET/crash-...`).
#
# stdout: one `PASS: fuzz TARGET (...)` / `FAIL: fuzz TARGET (...)` line per target,
# then `N passed, M failed`. libFuzzer's own output goes to $W/fuzz-TARGET.log.
# Env:
#   FUZZ_SECONDS   seconds per target (default 30; 0 = build only)
#   FUZZ_TIMEOUT   seconds one input may take (default 10)
#   FUZZ_RSS_MB    memory limit in MiB, also the largest single allocation (default 2048)
#   FUZZ_JOBS      parallel fuzzing processes per target (default 1: one core)
#   W              work dir for logs (default /tmp/nemoclaw-fuzz-<pid>)
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
export LOG_TAG=fuzz
cd "$NEMOCLAW_ROOT"
export PATH="$HOME/.cargo/bin:$PATH"

seconds="${FUZZ_SECONDS:-30}"
timeout_s="${FUZZ_TIMEOUT:-10}"
rss="${FUZZ_RSS_MB:-2048}"
jobs="${FUZZ_JOBS:-1}"
W="${W:-/tmp/nemoclaw-fuzz-$$}"
mkdir -p "$W"

have cargo-fuzz || die "cargo-fuzz is missing: cargo install cargo-fuzz"
cargo +nightly --version >/dev/null 2>&1 || die "the nightly toolchain is missing: rustup toolchain install nightly"

if (($#)); then
  targets=("$@")
else
  mapfile -t targets < <(cargo +nightly fuzz list)
fi
((${#targets[@]})) || die "no fuzz targets"

# -a: debug assertions on, so integer overflows are findings rather than wrap-arounds.
log "building ${#targets[@]} targets"
build() {
  if (($#)); then
    for t in "$@"; do cargo +nightly fuzz build -a "$t" || return 1; done
  else
    cargo +nightly fuzz build -a
  fi
}
build "$@" >"$W/build.log" 2>&1 \
  || { tail -n 30 "$W/build.log" >&2; die "build failed (log: $W/build.log)"; }
if ((seconds == 0)); then
  log "built; FUZZ_SECONDS=0, not running"
  exit 0
fi

pass=0 fail=0
for t in "${targets[@]}"; do
  corpus="fuzz/corpus/$t"
  mkdir -p "$corpus" "fuzz/artifacts/$t"
  seeds=()
  [[ -d "fuzz/seeds/$t" ]] && seeds=("fuzz/seeds/$t")
  par=()
  ((jobs > 1)) && par=("-jobs=$jobs" "-workers=$jobs")
  log "$t: ${seconds}s"
  rc=0
  cargo +nightly fuzz run -a "$t" "$corpus" "${seeds[@]}" -- \
    -max_total_time="$seconds" -timeout="$timeout_s" -rss_limit_mb="$rss" \
    -malloc_limit_mb="$rss" -print_final_stats=1 "${par[@]}" \
    >"$W/fuzz-$t.log" 2>&1 || rc=$?
  runs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$W/fuzz-$t.log" | tail -n1)"
  cov="$(grep -Eo 'cov: [0-9]+ ft: [0-9]+' "$W/fuzz-$t.log" | tail -n1)"
  if ((rc == 0)); then
    pass=$((pass + 1))
    echo "PASS: fuzz $t (${runs:-?} runs, ${cov:-no coverage line})"
  else
    fail=$((fail + 1))
    what="$(grep -Eo 'ERROR: libFuzzer: [a-z-]+|panicked at [^ ]+|SUMMARY: [A-Za-z]+: [a-z-]+' "$W/fuzz-$t.log" | head -n1)"
    art="$(grep -Eo 'fuzz/artifacts/[^ ]+' "$W/fuzz-$t.log" | head -n1)"
    echo "FAIL: fuzz $t (exit $rc: ${what:-see $W/fuzz-$t.log}${art:+; input $art})"
  fi
done
echo "$pass passed, $fail failed"
((fail == 0))

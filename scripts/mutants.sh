#!/usr/bin/env bash
# Mutation testing: how many deliberately broken versions of the code the tests catch.
# Runs `cargo mutants` (crates.io) per module and prints the caught share of viable mutants,
# with the survivors listed, so a weak test shows up as a number. Not part of CI: on 2 cores
# one module takes 10-60 minutes.
#
#   scripts/mutants.sh [MODULE...]     (default: the modules below)
#
# MODULE is a source path (src/scan.rs, src/dpkg, init/src). Each mutant is built
# incrementally in a private git worktree (.cache/mutants/tree, its own target/ dir) with the
# `mutants` cargo profile (Cargo.toml: no debug info, optimized dependencies) and judged by the
# unit tests of its crate only: `-C --lib` (init: `-C --bins`) keeps the build step from also
# compiling the binary and tests/*.rs, which the test step never runs.
# Results: .cache/mutants/MODULE/mutants.out/{caught,missed,timeout,unviable}.txt, and the
# module's section of MUTANTS.md (replaced in place; commit it). Missed mutants judged
# harmless are listed with the reason in scripts/mutants-harmless.txt ("NAME | reason", NAME
# without its line:col, so it survives edits above it).
# Env: MUTANTS_TIMEOUT (seconds per test run, default 300); MUTANTS_SHARD (k/n, k from 0: only that
# share of the module's mutants); MUTANTS_SHARDING (slice, the default: consecutive
# mutants; round-robin: every n-th, a sample spread over all files); MUTANTS_RE (regex: only matching mutants); MUTANTS_TESTS
# (test name filters, space-separated, e.g. `dpkg::` or `rootfs:: tar_tests::`: a test runs
# if it matches any; faster, but a mutant it misses may be caught by
# another module's tests, so re-run the missed ones without it before judging them);
# MUTANTS_RECORD_ONLY=1 (no run: rewrite MUTANTS.md from the last results, same env;
# MUTANTS_COMMIT names the commit they came from; MUTANTS_SCOPE replaces the scope text, e.g.
# for results merged by hand from a filtered run and a re-run of its missed mutants).
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
export LOG_TAG=mutants
cd "$NEMOCLAW_ROOT"
export PATH="$HOME/.cargo/bin:$PATH"

have cargo-mutants || {
  log "installing cargo-mutants"
  cargo install --locked cargo-mutants
}
modules=("$@")
((${#modules[@]})) || modules=(src/scan.rs src/layer.rs src/rootfs.rs src/steps src/dpkg init/src)

out="$NEMOCLAW_ROOT/.cache/mutants"
tree="$out/tree"
mkdir -p "$out"
if [[ -z "${MUTANTS_RECORD_ONLY:-}" ]]; then
  # A private checkout of HEAD: mutants edit files in place there, never in this tree.
  if [[ ! -d "$tree/.git" && ! -f "$tree/.git" ]]; then
    git worktree add --detach "$tree" HEAD >/dev/null
  else
    git -C "$tree" checkout --detach -f HEAD >/dev/null 2>&1 || git -C "$tree" checkout --detach -f "$(git rev-parse HEAD)"
  fi
  git -C "$tree" reset --hard -q "$(git rev-parse HEAD)"
  # Seed its target dir from ours (a mutants profile build): dependencies are then already built.
  if [[ ! -d "$tree/target/mutants" && -d target/mutants ]]; then
    log "seeding $tree/target from target/mutants"
    mkdir -p "$tree/target"
    cp -a --reflink=auto target/mutants "$tree/target/"
  fi
fi

# record MODULE TOTAL CAUGHT TIMEOUT MISSED UNVIABLE PCT SCOPE MISSED_FILE: replaces the
# module's section of MUTANTS.md (between its two marker comments), or appends one.
record() {
  local m=$1 md="$NEMOCLAW_ROOT/MUTANTS.md" sec name reason key
  sec=$(mktemp)
  {
    printf '<!-- mutants:%s -->\n### %s\n\n' "$m" "$m"
    printf '| mutants | caught | timeout | missed | unviable | caught %% of viable | scope | date | commit |\n'
    printf '|---|---|---|---|---|---|---|---|---|\n'
    printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$2" "$3" "$4" "$5" "$6" "$7" "$8" \
      "$(date -u +%F)" "${MUTANTS_COMMIT:-$(git -C "$tree" rev-parse --short HEAD)}"
    if [[ -s "$9" ]]; then
      printf '\nMissed:\n\n'
      while IFS= read -r name; do
        # The reason follows "FILE: DESCRIPTION | " (a description may hold `|` itself).
        key="${name%%:*}: ${name#*:*:*: } | "
        reason=$(grep -F "$key" "$NEMOCLAW_ROOT/scripts/mutants-harmless.txt" 2>/dev/null |
          awk -v k="$key" 'index($0, k) == 1 { print substr($0, length(k) + 1); exit }' || true)
        printf -- '- `%s`: %s\n' "$name" "${reason:-not judged yet}"
      done <"$9"
    fi
    printf '<!-- /mutants:%s -->\n' "$m"
  } >"$sec"
  [[ -f "$md" ]] || printf '# Mutation testing\n\nWritten by scripts/mutants.sh (one section per module; see the script).\n\n' >"$md"
  if grep -qF "<!-- mutants:$m -->" "$md"; then
    awk -v b="<!-- mutants:$m -->" -v e="<!-- /mutants:$m -->" -v f="$sec" '
      $0 == b { while ((getline l < f) > 0) print l; skip = 1; next }
      $0 == e { skip = 0; next }
      !skip' "$md" >"$md.new" && mv "$md.new" "$md"
  else
    { echo; cat "$sec"; } >>"$md"
  fi
  rm -f "$sec"
}

summary="$out/summary.txt"
: >"$summary"
for m in "${modules[@]}"; do
  name="${m//\//_}"
  dir="$out/$name"
  if [[ -z "${MUTANTS_RECORD_ONLY:-}" ]]; then rm -rf "$dir"; fi
  mkdir -p "$dir"
  args=(--in-place --no-shuffle --profile mutants --timeout "${MUTANTS_TIMEOUT:-300}" --output "$dir")
  if [[ -d "$tree/$m" ]]; then args+=(--file "$m/**/*.rs" --exclude "$m/tests.rs"); else args+=(--file "$m"); fi
  scope=all
  if [[ -n "${MUTANTS_SHARD:-}" ]]; then
    args+=(--shard "$MUTANTS_SHARD" --sharding "${MUTANTS_SHARDING:-slice}")
    scope="shard $MUTANTS_SHARD"
    [[ -z "${MUTANTS_SHARDING:-}" ]] || scope="$scope ($MUTANTS_SHARDING)"
  fi
  if [[ -n "${MUTANTS_RE:-}" ]]; then args+=(--re "$MUTANTS_RE"); scope="$scope, re \`$MUTANTS_RE\`"; fi
  if [[ "$m" == init/* ]]; then
    args+=(--package nemoclaw-init -C --bins)  # the init is a binary crate: its unit tests are in the bin target
  else
    args+=(--package nemoclaw-build -C --lib)
  fi
  if [[ -n "${MUTANTS_TESTS:-}" ]]; then
    read -r -a filters <<<"$MUTANTS_TESTS"
    # One filter goes to cargo test; several go to the test harness, which runs a test
    # matching any of them (cargo test itself takes one name only).
    if ((${#filters[@]} == 1)); then args+=(-- "${filters[0]}"); else args+=(-- -- "${filters[@]}"); fi
    scope="$scope, tests \`$MUTANTS_TESTS\`"
  fi
  scope=${MUTANTS_SCOPE:-$scope}
  log "$m: cargo mutants ${args[*]}"
  rc=0
  if [[ -z "${MUTANTS_RECORD_ONLY:-}" ]]; then
    (cd "$tree" && cargo mutants "${args[@]}" >"$dir/log.txt" 2>&1) || rc=$?
  fi
  # 0: all caught, 2: some missed, 3: some timed out; anything else is no result
  case "$rc" in 0|2|3) ;; *) die "$m: cargo mutants failed (exit $rc): $(tail -n 3 "$dir/log.txt")" ;; esac
  r="$dir/mutants.out"
  count() { if [[ -s "$r/$1.txt" ]]; then grep -c . "$r/$1.txt"; else echo 0; fi; }
  caught=$(count caught) missed=$(count missed) timeout=$(count timeout) unviable=$(count unviable)
  viable=$((caught + missed + timeout))
  pct=$(awk -v c="$((caught + timeout))" -v v="$viable" 'BEGIN { printf "%.1f", v ? 100 * c / v : 0 }')
  printf '%-16s caught %4d  timeout %3d  missed %4d  unviable %4d  -> %s%% of viable caught\n' \
    "$m" "$caught" "$timeout" "$missed" "$unviable" "$pct" | tee -a "$summary"
  if [[ -s "$r/missed.txt" ]]; then sed 's/^/    missed: /' "$r/missed.txt" | tee -a "$summary"; fi
  record "$m" "$((viable + unviable))" "$caught" "$timeout" "$missed" "$unviable" "$pct" "$scope" "$r/missed.txt"
done
[[ -n "${MUTANTS_RECORD_ONLY:-}" ]] || git -C "$tree" reset --hard -q
log "summary in $summary"

#!/usr/bin/env bash
# Mutation testing: how many deliberately broken versions of the code the tests catch.
# Runs `cargo mutants` (crates.io) per module and prints the caught share of viable mutants,
# with the survivors listed, so a weak test shows up as a number. Not part of CI: on 2 cores
# one module takes 10-60 minutes.
#
#   scripts/mutants.sh [MODULE...]     (default: the modules below)
#
# MODULE is a source path (src/scan.rs, src/dpkg, init/src). Each mutant is built
# incrementally in a private git worktree (.cache/mutants/tree, its own target/ dir) and judged
# by the unit tests of its crate (`cargo test --lib`; init: `-p nemoclaw-init --bins`).
# Results: .cache/mutants/MODULE/mutants.out/{caught,missed,timeout,unviable}.txt
# Env: MUTANTS_TIMEOUT (seconds per test run, default 300).
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
# A private checkout of HEAD: mutants edit files in place there, never in this tree.
if [[ ! -d "$tree/.git" && ! -f "$tree/.git" ]]; then
  git worktree add --detach "$tree" HEAD >/dev/null
else
  git -C "$tree" checkout --detach -f HEAD >/dev/null 2>&1 || git -C "$tree" checkout --detach -f "$(git rev-parse HEAD)"
fi
git -C "$tree" reset --hard -q "$(git rev-parse HEAD)"
# Seed its target dir from ours: dependencies are then already built.
if [[ ! -d "$tree/target/debug" && -d target/debug ]]; then
  log "seeding $tree/target from target/debug"
  mkdir -p "$tree/target"
  cp -a --reflink=auto target/debug "$tree/target/"
fi

summary="$out/summary.txt"
: >"$summary"
for m in "${modules[@]}"; do
  name="${m//\//_}"
  dir="$out/$name"
  rm -rf "$dir"
  mkdir -p "$dir"
  args=(--in-place --no-shuffle --timeout "${MUTANTS_TIMEOUT:-300}" --output "$dir")
  if [[ -d "$tree/$m" ]]; then args+=(--file "$m/**/*.rs"); else args+=(--file "$m"); fi
  if [[ "$m" == init/* ]]; then
    args+=(--package nemoclaw-init -- --bins)  # the init is a binary crate: its unit tests are in the bin target
  else
    args+=(--package nemoclaw-build -- --lib)
  fi
  log "$m: cargo mutants ${args[*]}"
  rc=0
  (cd "$tree" && cargo mutants "${args[@]}" >"$dir/log.txt" 2>&1) || rc=$?
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
done
git -C "$tree" reset --hard -q
log "summary in $summary"

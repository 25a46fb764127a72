#!/usr/bin/env bash
# Memory benchmark of the rootfs model (architecture issue 16.6): peak RSS and wall time of
# `build` (rewrite mode, no cache) and `diff` (base vs the built image) on a base with ~300k
# files (scripts/mk-bigbase.sh: the small base plus 300 dirs x 1000 files).
# Targets: build <= 128 MiB, diff <= 256 MiB.
#
#   RUNS=3 scripts/bench-memory.sh [BASE_TAR]
# Env: BIN (default target/release/nemoclaw-build), W (work dir, default a fresh temp dir,
#      removed at the end), RUNS (default 3), DIRS/FILES (passed to mk-bigbase.sh).
# stdout: a markdown table (median wall time of RUNS runs, peak RSS = max over runs).
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
LOG_TAG=bench-memory
cd "$NEMOCLAW_ROOT"
export SOURCE_DATE_EPOCH=1700000000

RUNS="${RUNS:-3}"
BIN="${BIN:-$NEMOCLAW_ROOT/target/release/nemoclaw-build}"
[[ -x "$BIN" ]] || die "no binary at $BIN (cargo build --release)"
[[ -x /usr/bin/time ]] || apt_ensure time
if [[ -n "${W:-}" ]]; then
  mkdir -p "$W"
else
  W="$(mktemp -d "${TMPDIR:-/tmp}/nemoclaw-bench-memory.XXXXXX")"
  trap 'rm -rf "$W"' EXIT
fi

big="$(bash scripts/mk-bigbase.sh "$@" | tail -n1)"
artifacts="$(bash scripts/mk-artifacts.sh | tail -n1)"
entries="$(tar -tf "$big" | wc -l)"
log "base $big ($entries entries)"

# run NAME CMD... : appends "wall_s rss_kb" to $W/NAME.times; diff exits 1 when the images differ.
run() {
  local name="$1"; shift
  local rc=0
  /usr/bin/time -f '%e %M' -o "$W/t.$$" "$@" >/dev/null 2>"$W/$name.err" || rc=$?
  if ((rc != 0)) && ! [[ "$name" == diff && $rc == 1 ]]; then cat "$W/$name.err" >&2; die "$name failed (exit $rc)"; fi
  tail -n 1 "$W/t.$$" >>"$W/$name.times"
}
median() { sort -n | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else printf "%.2f\n", (a[NR/2]+a[NR/2+1])/2}'; }

rm -f "$W"/*.times
for i in $(seq "$RUNS"); do
  log "run $i/$RUNS"
  rm -rf "$W/out"
  run build "$BIN" build --quiet --no-cache --base "tar:$big" --artifacts "$artifacts" --output "oci:$W/out:latest"
  run diff "$BIN" diff --quiet "tar:$big" "oci:$W/out:latest"
done

echo "| command | base entries | median wall (s) | peak RSS (MiB) | target (MiB) |"
echo "|---|---|---|---|---|"
for v in build diff; do
  t="$(awk '{print $1}' "$W/$v.times" | median)"
  rss="$(awk '{print $2}' "$W/$v.times" | sort -n | tail -n1)"
  target=$([[ $v == build ]] && echo 128 || echo 256)
  echo "| $v | $entries | $t | $((rss / 1024)) | $target |"
  log "$v: median ${t}s, peak RSS $((rss / 1024)) MiB (target $target)"
done

#!/usr/bin/env bash
# Multi-platform benchmark (issue 13.9), one run, same machine, same bases:
#   ours-1   nemoclaw-build, linux/amd64 only, from the amd64 rootfs tarball
#   ours-2   nemoclaw-build, linux/amd64 + linux/arm64 in one run (one image index), tar bases
#   ours-2-zstd  the same with --compression zstd (gzip -6 is most of our CPU time)
#   peer-1   podman build of testdata/peer/Dockerfile for linux/amd64 + `podman manifest push --all`
#   peer-2   podman build --platform linux/amd64,linux/arm64 --manifest ... of the same Dockerfile
#            (its arm64 RUN steps execute under qemu-user) + `podman manifest push --all`
# The peer's base is a podman manifest list of the same two tarballs, imported once, outside the
# timings. Outputs are OCI layouts on local disk, no cache. Reports the median wall time of RUNS
# runs, ratios (ours-2 / ours-1, ours-2 / peer-2) and peak RSS (GNU time, max over runs; for
# the peer that is the podman client, not its build containers). WRITE=1 puts the table into
# BENCHMARKS.md (section "multiarch").
#
#   RUNS=3 WRITE=1 scripts/bench-multiarch.sh
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
LOG_TAG=bench-multiarch
cd "$NEMOCLAW_ROOT"
export SOURCE_DATE_EPOCH=1700000000

RUNS="${RUNS:-3}"
BIN="${BIN:-$NEMOCLAW_ROOT/target/release/nemoclaw-build}"
[[ -x "$BIN" ]] || cargo build --release >&2
need_cmd podman
[[ -x /usr/bin/time ]] || apt_ensure time
enable_foreign_arch arm64
W="$(mktemp -d "${TMPDIR:-/tmp}/nemoclaw-bench-multiarch.XXXXXX")"
trap 'rm -rf "$W"' EXIT

amd="$(bash scripts/mk-base.sh | tail -n1)"
arm="$(bash scripts/mk-base.sh --arch arm64 | tail -n1)"
art="$(bash scripts/mk-artifacts.sh | tail -n1)"

# The peer's base: both tarballs in podman storage, joined by a manifest list.
sum() { sha256sum <"$1" | cut -c1-16; }
base="localhost/nemoclaw-base-multi:$(sum "$amd")-$(sum "$arm")"
if ! pm manifest exists "$base" 2>/dev/null; then
  pm import --quiet "$amd" "localhost/nemoclaw-base-multi:amd64" >/dev/null
  pm import --quiet --arch arm64 "$arm" "localhost/nemoclaw-base-multi:arm64" >/dev/null
  pm manifest create "$base" containers-storage:localhost/nemoclaw-base-multi:amd64 \
    containers-storage:localhost/nemoclaw-base-multi:arm64 >/dev/null
fi
ctx="$W/ctx"; mkdir -p "$ctx"; cp -a testdata/peer/. "$ctx/"; cp -a "$art" "$ctx/artifacts"

# run NAME CMD...: appends "wall_s rss_kb user_s sys_s" to $W/NAME.times
run() {
  local name="$1"; shift
  /usr/bin/time -f '%e %M %U %S' -o "$W/t" "$@" >"$W/$name.out" 2>"$W/$name.err" \
    || { cat "$W/$name.err" >&2; die "$name failed"; }
  tail -n 1 "$W/t" >>"$W/$name.times"
}
# peer PLATFORMS OUT: a clean manifest, build every platform, push the whole list as a layout
peer() {
  local plats="$1" out="$2" list="localhost/nemoclaw-peer-multi:bench"
  pm manifest rm "$list" >/dev/null 2>&1 || true
  rm -rf "$out"
  pm build --quiet --network=none --pull=never --layers=false --no-cache --platform "$plats" \
    --build-arg "BASE=$base" --manifest "$list" -f "$ctx/Dockerfile" "$ctx" >/dev/null
  pm manifest push --quiet --all "$list" "oci:$out" >/dev/null
}
export -f peer pm log die; export base ctx
export PODMAN_GLOBAL_S="${PODMAN_GLOBAL[*]}"

for i in $(seq "$RUNS"); do
  log "run $i/$RUNS"
  run ours-1 "$BIN" build --quiet --no-cache --base "tar:$amd" --artifacts "$art" --output "oci:$W/o1-$i:latest"
  run ours-2 "$BIN" build --quiet --no-cache --base "linux/amd64=tar:$amd" --base "linux/arm64=tar:$arm" \
    --artifacts "$art" --output "oci:$W/o2-$i:latest"
  run ours-2-zstd "$BIN" build --quiet --no-cache --compression zstd --base "linux/amd64=tar:$amd" \
    --base "linux/arm64=tar:$arm" --artifacts "$art" --output "oci:$W/o3-$i:latest"
  run peer-1 bash -c 'PODMAN_GLOBAL=($PODMAN_GLOBAL_S); peer linux/amd64 "$1"' _ "$W/p1-$i"
  run peer-2 bash -c 'PODMAN_GLOBAL=($PODMAN_GLOBAL_S); peer linux/amd64,linux/arm64 "$1"' _ "$W/p2-$i"
  # what was built: ours-2 and peer-2 are two-platform indexes
  [[ "$(jq '.manifests | length' "$W/o2-$i/index.json")" == 1 ]] || die "ours-2: index.json should name one index"
  n="$(jq -r '.manifests[0].digest' "$W/o2-$i/index.json" | cut -d: -f2)"
  [[ "$(jq '.manifests | length' "$W/o2-$i/blobs/sha256/$n")" == 2 ]] || die "ours-2 is not a two-platform index"
  rm -rf "$W/o1-$i" "$W/o2-$i" "$W/o3-$i" "$W/p1-$i" "$W/p2-$i"
done

median() { sort -n | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else printf "%.2f\n", (a[NR/2]+a[NR/2+1])/2}'; }
col() { awk -v c="$2" '{print $c}' "$W/$1.times"; }
t() { col "$1" 1 | median; }
cpu() { awk '{print $3 + $4}' "$W/$1.times" | median; }
rss() { echo $(( $(col "$1" 2 | sort -n | tail -n1) / 1024 )); }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2fx", a/b}'; }
table="| run | platforms | median wall (s) | vs one platform (same tool) | vs peer, same platforms | median CPU user+sys (s) | peak RSS (MiB) |
|---|---|---|---|---|---|---|
| ours-1 | amd64 | $(t ours-1) | 1.00x | $(ratio "$(t ours-1)" "$(t peer-1)") | $(cpu ours-1) | $(rss ours-1) |
| ours-2 | amd64 + arm64 | $(t ours-2) | $(ratio "$(t ours-2)" "$(t ours-1)") | $(ratio "$(t ours-2)" "$(t peer-2)") | $(cpu ours-2) | $(rss ours-2) |
| ours-2-zstd | amd64 + arm64 | $(t ours-2-zstd) | $(ratio "$(t ours-2-zstd)" "$(t ours-1)") | $(ratio "$(t ours-2-zstd)" "$(t peer-2)") | $(cpu ours-2-zstd) | $(rss ours-2-zstd) |
| peer-1 | amd64 | $(t peer-1) | 1.00x | 1.00x | $(cpu peer-1) | $(rss peer-1) |
| peer-2 | amd64 + arm64 | $(t peer-2) | $(ratio "$(t peer-2)" "$(t peer-1)") | 1.00x | $(cpu peer-2) | $(rss peer-2) |"
printf '%s\n' "$table"
if [[ "${WRITE:-0}" == 1 ]]; then
  {
    printf '## Two platforms in one run (issue 13)\n\n'
    printf 'Generated by `scripts/bench-multiarch.sh` on %s (RUNS=%s, medians; %s cores; load average at the end: %s).\n' \
      "$(date -u +%F)" "$RUNS" "$(nproc)" "$(cut -d' ' -f1-3 /proc/loadavg)"
    printf 'Bases: the default bookworm rootfs tarballs for amd64 and arm64 (`scripts/mk-base.sh [--arch arm64]`).\n'
    printf 'ours: `build --no-cache`, rewrite mode, output an OCI layout (ours-2: one image index).\n'
    printf 'peer: `podman build --no-cache --layers=false [--platform linux/amd64,linux/arm64] --manifest` of\n'
    printf 'testdata/peer/Dockerfile from a manifest list of the same bases (arm64 RUN steps under qemu-user),\n'
    printf 'then `podman manifest push --all` to an OCI layout. Peak RSS of the peer is its client process;\n'
    printf 'CPU time counts waited-for children (the peer'"'"'s RUN containers under runc too). Compare CPU when the load is high.\n'
    printf 'Targets: ours-2 <= 2.2x ours-1, ours-2 <= 0.2x peer-2.\n\n%s\n' "$table"
  } | bench_section multiarch
fi

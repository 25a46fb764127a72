#!/usr/bin/env bash
# CI-flow benchmark (issue 17): registry in, registry out, every run on an empty runner (a
# fresh cache dir / a fresh podman storage root), through a link like a CI runner's:
# scripts/bench-netem.py between the tools and a local docker-registry (loopback only),
# MBIT Mbit/s shared per direction and LATENCY ms per request/response.
#
#   ours cold   build --base registry://LINK/base@D --output registry://LINK/app
#               --cache-to registry://LINK/cache        (rewrite mode, no local cache)
#   ours warm   one artifact changed, a fresh cache dir, --cache-from registry://LINK/cache
#   ours-wo cold     whiteout mode, cold as above (--cache-to registry://LINK/cache-wo)
#   ours-wo known    whiteout, a base seen before but a build-cache miss (another epoch, one
#                    artifact changed), a fresh cache dir, --cache-from registry://LINK/cache-wo:
#                    the layer index cache (issue 17.3) downloads no base layer
#   peer cold   podman build of testdata/peer/Dockerfile FROM LINK/base (--layers,
#               --cache-to LINK/peer-cache), podman push LINK/peer
#   peer warm   one artifact changed, a fresh storage root, --cache-from LINK/peer-cache
# Reports the median wall time of RUNS runs and the bytes that crossed the link (counted by the
# proxy), and writes its section of BENCHMARKS.md when WRITE=1.
#
#   RUNS=3 MBIT=100 LATENCY=20 scripts/bench-ci.sh
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
LOG_TAG=bench-ci
cd "$NEMOCLAW_ROOT"
export SOURCE_DATE_EPOCH=1700000000
RUNS="${RUNS:-3}" MBIT="${MBIT:-100}" LATENCY="${LATENCY:-20}" PORT="${BENCH_PORT:-5090}"
REG="127.0.0.1:$PORT" LINK="127.0.0.1:$((PORT + 1))"
BIN="$NEMOCLAW_ROOT/target/release/nemoclaw-build"
[[ -x "$BIN" ]] || cargo build --release >&2
need_cmd docker-registry; need_cmd skopeo; need_cmd podman; need_cmd jq
W="$(mktemp -d "${TMPDIR:-/tmp}/nemoclaw-bench-ci.XXXXXX")"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$W"
}
trap cleanup EXIT

printf 'version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: %s\n' \
  "$W/reg" "$REG" >"$W/reg.yml"
docker-registry serve "$W/reg.yml" >"$W/reg.log" 2>&1 &
PIDS+=("$!")
for _ in $(seq 50); do curl -s -o /dev/null "http://$REG/v2/" && break; sleep 0.2; done

base_oci="$(bash scripts/mk-base.sh --oci | tail -n1)"
art="$(bash scripts/mk-artifacts.sh "$W/art" | tail -n1)"
skopeo copy --quiet --dest-tls-verify=false "oci:$base_oci:latest" "docker://$REG/base:1" >&2
base_digest="sha256:$(skopeo inspect --raw --tls-verify=false "docker://$REG/base:1" | sha256sum | cut -d' ' -f1)"

# link_run NAME CMD...: CMD through a fresh proxy; appends "wall_s down_bytes up_bytes"
link_run() {
  local name="$1" t0 t1 pid
  shift
  python3 scripts/bench-netem.py "$((PORT + 1))" "$REG" "$MBIT" "$LATENCY" >"$W/link.out" 2>/dev/null &
  pid=$!
  for _ in $(seq 50); do (exec 3<>"/dev/tcp/127.0.0.1/$((PORT + 1))") 2>/dev/null && break; sleep 0.1; done
  t0=$(now_ms)
  "$@" >"$W/$name.out" 2>"$W/$name.err" || { kill "$pid"; cat "$W/$name.err" >&2; die "$name failed"; }
  t1=$(now_ms)
  kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
  printf '%s %s\n' "$(awk -v ms=$((t1 - t0)) 'BEGIN {printf "%.2f", ms/1000}')" "$(cat "$W/link.out")" >>"$W/$name.times"
}
changed() { # RUN: the artifacts with one file changed
  rm -rf "$W/art-$1"; cp -a "$art" "$W/art-$1"; printf 'run %s\n' "$1" >"$W/art-$1/CHANGED.txt"
  printf '%s\n' "$W/art-$1"
}
ours() { # NAME RUN EXTRA...
  local name="$1" i="$2"; shift 2
  link_run "$name" "$BIN" build --base "registry://$LINK/base@$base_digest" \
    --output "registry://$LINK/app-$name:$i" --cache-dir "$W/cache-$name-$i" --json "$@"
}
peer() { # NAME RUN ARTIFACTS EXTRA...
  # podman wants a short runroot (< 50 characters)
  local name="$1" i="$2" a="$3" ctx="$W/ctx-$1-$2" root
  root="$(mktemp -d /tmp/ncb.XXXXXX)"
  shift 3
  mkdir -p "$ctx"; cp -a testdata/peer/. "$ctx/"; cp -a "$a" "$ctx/artifacts"
  link_run "$name" bash -c '
    set -e; P=(podman --root "$1/root" --runroot "$1/run" --runtime runc --cgroup-manager=cgroupfs)
    "${P[@]}" build --quiet --tls-verify=false --network=none --layers --build-arg "BASE=$2/base:1" \
      -t localhost/peer "${@:5}" -f "$3/Dockerfile" "$3"
    "${P[@]}" push --quiet --tls-verify=false localhost/peer "docker://$2/peer-$4"' _ \
    "$root" "$LINK" "$ctx" "$name-$i" "$@"
  podman --root "$root/root" --runroot "$root/run" system reset --force >/dev/null 2>&1 || true
  rm -rf "$root" "$ctx"
}

for i in $(seq "$RUNS"); do
  log "run $i/$RUNS (link $MBIT Mbit/s, $LATENCY ms)"
  ours ours-cold "$i" --artifacts "$art" --cache-to "registry://$LINK/cache-$i"
  ours ours-warm "$i" --artifacts "$(changed "$i")" --cache-from "registry://$LINK/cache-$i"
  jq -e '.cache_hit' "$W/ours-warm.out" >/dev/null || die "ours warm was no cache hit"
  ours ours-wo-cold "$i" --purge-mode whiteout --artifacts "$art" --cache-to "registry://$LINK/cache-wo-$i"
  ours ours-wo-known "$i" --purge-mode whiteout --artifacts "$(changed "$i")" \
    --source-date-epoch "$((SOURCE_DATE_EPOCH + 1))" --cache-from "registry://$LINK/cache-wo-$i"
  jq -e '(.cache_hit | not) and .layer_index.from_cache == .layer_index.layers' "$W/ours-wo-known.out" \
    >/dev/null || die "ours whiteout on a known base did not take its index from the cache"
  peer peer-cold "$i" "$art" --cache-to "$LINK/peer-cache-$i"
  peer peer-warm "$i" "$(changed "$i")" --cache-from "$LINK/peer-cache-$i"
done

median() { sort -n | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else printf "%.2f\n", (a[NR/2]+a[NR/2+1])/2}'; }
col() { awk -v c="$2" '{print $c}' "$W/$1.times"; }
mib() { awk -v b="$1" 'BEGIN {printf "%.1f", b/1048576}'; }
table="| run | median wall (s) | vs peer | MiB down (median) | MiB up (median) |
|---|---|---|---|---|"
for kind in cold warm; do
  pw="$(col "peer-$kind" 1 | median)"
  wo=ours-wo-cold; [[ "$kind" == warm ]] && wo=ours-wo-known
  for n in "ours-$kind" "$wo" "peer-$kind"; do
    w="$(col "$n" 1 | median)"
    table+="
| $n | $w | $(awk -v a="$w" -v b="$pw" 'BEGIN {printf "%.2fx", a/b}') | $(mib "$(col "$n" 2 | median)") | $(mib "$(col "$n" 3 | median)") |"
  done
done
printf '%s\n' "$table"
if [[ "${WRITE:-0}" == 1 ]]; then
  {
    printf '## CI flow through a %s Mbit/s, %s ms link (issue 17)\n\n' "$MBIT" "$LATENCY"
    printf 'Generated by `scripts/bench-ci.sh` on %s (RUNS=%s; load average at the end: %s). Every run is an\n' \
      "$(date -u +%F)" "$RUNS" "$(cut -d' ' -f1-3 /proc/loadavg)"
    printf 'empty runner; bytes are what crossed the simulated link (both directions, all requests).\n'
    printf 'ours: rewrite mode, registry base by digest, push to the registry; warm = one artifact changed,\n'
    printf '`--cache-from`. ours-wo: whiteout mode; known = base seen before, build-cache miss (another\n'
    printf 'epoch), layer index from `--cache-from` (compared with the peer'"'"'s warm run).\n'
    printf 'peer: `podman build --layers` of testdata/peer/Dockerfile + `podman push`, warm =\n'
    printf 'one artifact changed, `--cache-from` its own cache repository, fresh storage root.\n\n%s\n' "$table"
  } | bench_section ci
fi

#!/usr/bin/env bash
# CI-flow benchmark (issue 17): registry in, registry out, every run on an empty runner (a
# fresh cache dir / a fresh podman storage root). Two scenarios:
#
# MBIT > 0 (default 100; issue 17.5): through a link like a CI runner's, scripts/bench-netem.py
# between the tools and a local docker-registry (loopback only), MBIT Mbit/s shared per
# direction and LATENCY ms per request/response.
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
# Bytes are what crossed the link (counted by the proxy). Section `ci` of BENCHMARKS.md.
#
# MBIT=0 (issue 17.4, cold targets): the tools talk to the registry directly on loopback, no
# cache export, nothing but the base in the registry:
#   ours cold / ours-wo cold   rewrite / whiteout mode, base by digest, push to the registry
#   peer squash   podman build --squash-all + podman push (ships no purged bytes, like rewrite)
#   peer default  podman build (default flags: a layer per step) + podman push (ships the
#                 purged bytes under whiteouts, like whiteout mode)
# Bytes are ours only (the --json transfer summary). Section `ci-loopback` of BENCHMARKS.md.
#
# Reports the median wall time of RUNS runs (ours and the peer interleaved in every run) and
# writes its section of BENCHMARKS.md when WRITE=1.
#
#   RUNS=3 MBIT=100 LATENCY=20 scripts/bench-ci.sh
#   RUNS=3 MBIT=0 scripts/bench-ci.sh
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
LOG_TAG=bench-ci
cd "$NEMOCLAW_ROOT"
export SOURCE_DATE_EPOCH=1700000000
# BENCH_PORT and the next one: outside the ports the e2e sub-suites scan (5061-5110), so an e2e run
# beside the bench cannot take them (that made a RUNS=3 run fail with "connection closed before
# message completed": the bench was talking to another suite's registry, which then exited).
RUNS="${RUNS:-3}" MBIT="${MBIT:-100}" LATENCY="${LATENCY:-20}" PORT="${BENCH_PORT:-5190}"
REG="127.0.0.1:$PORT" LINK="127.0.0.1:$((PORT + 1))"
direct=0 # MBIT=0: no proxy, the tools talk to the registry itself
[[ "$MBIT" == 0 ]] && direct=1 && LINK="$REG"
load0="$(cut -d' ' -f1-3 /proc/loadavg)"
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
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for p in "$PORT" "$((PORT + 1))"; do port_busy "$p" && die "port $p is in use; set BENCH_PORT"; done

printf 'version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: %s\n' \
  "$W/reg" "$REG" >"$W/reg.yml"
docker-registry serve "$W/reg.yml" >"$W/reg.log" 2>&1 &
reg_pid=$!
PIDS+=("$reg_pid")
for _ in $(seq 50); do curl -s -o /dev/null "http://$REG/v2/" && break; sleep 0.2; done
# the registry answering must be ours (a registry that lost the port race exits)
sleep 0.5
reg_alive() { kill -0 "$reg_pid" 2>/dev/null || die "the bench registry on $REG exited: $(tail -n3 "$W/reg.log")"; }
reg_alive

base_oci="$(bash scripts/mk-base.sh --oci | tail -n1)"
art="$(bash scripts/mk-artifacts.sh "$W/art" | tail -n1)"
skopeo copy --quiet --dest-tls-verify=false "oci:$base_oci:latest" "docker://$REG/base:1" >&2
base_digest="sha256:$(skopeo inspect --raw --tls-verify=false "docker://$REG/base:1" | sha256sum | cut -d' ' -f1)"

# one link proxy for the whole run (a python start per command took over 10 s at times under
# load); SIGUSR1 makes it print and reset its byte counts
link_pid=""
if ((!direct)); then
  python3 scripts/bench-netem.py "$((PORT + 1))" "$REG" "$MBIT" "$LATENCY" >"$W/link.out" 2>"$W/link.err" &
  link_pid=$!
  PIDS+=("$link_pid")
  for _ in $(seq 600); do
    grep -q '^listening' "$W/link.err" && break
    kill -0 "$link_pid" 2>/dev/null || break
    sleep 0.1
  done
  grep -q '^listening' "$W/link.err" || die "the link proxy did not start: $(tail -n1 "$W/link.err")"
fi
link_counts() { # prints the proxy's byte counts since the last call
  local n
  n="$(wc -l <"$W/link.out")"
  kill -USR1 "$link_pid" || die "the link proxy exited: $(tail -n3 "$W/link.err")"
  for _ in $(seq 300); do (($(wc -l <"$W/link.out") > n)) && break; sleep 0.1; done
  tail -n1 "$W/link.out"
}

# link_run NAME CMD...: CMD through the proxy (or directly when MBIT=0); appends
# "wall_s down_bytes up_bytes" (bytes from the proxy; when direct, from our --json transfer
# summary, "- -" for the peer)
link_run() {
  local name="$1" t0 t1 bytes="- -"
  shift
  ((direct)) || link_counts >/dev/null
  # Start every run with no dirty pages of the one before: the peer writes ~1 GiB of
  # storage per run, and its writeback would otherwise slow whichever run comes next.
  sync
  t0=$(now_ms)
  "$@" >"$W/$name.out" 2>"$W/$name.err" || {
    ((direct)) || cat "$W/link.err" >&2
    cat "$W/$name.err" >&2
    reg_alive
    die "$name failed"
  }
  t1=$(now_ms)
  if ((!direct)); then
    bytes="$(link_counts)"
  elif jq -e '.transfer' "$W/$name.out" >/dev/null 2>&1; then
    bytes="$(jq -r '[([.transfer[].downloaded_bytes] | add // 0), ([.transfer[].uploaded_bytes] | add // 0)] | join(" ")' "$W/$name.out")"
  fi
  printf '%s %s\n' "$(awk -v ms=$((t1 - t0)) 'BEGIN {printf "%.2f", ms/1000}')" "$bytes" >>"$W/$name.times"
}
changed() { # RUN: the artifacts with one file changed
  rm -rf "$W/art-$1"; cp -a "$art" "$W/art-$1"; printf 'run %s\n' "$1" >"$W/art-$1/CHANGED.txt"
  printf '%s\n' "$W/art-$1"
}
ours() { # NAME RUN EXTRA...
  local name="$1" i="$2" out="app-$1:$2"; shift 2
  # loopback: a repository per run, so no run finds its blobs already pushed by the one before
  ((direct)) && out="app-$name-$i:1"
  link_run "$name" "$BIN" build --base "registry://$LINK/base@$base_digest" \
    --output "registry://$LINK/$out" --cache-dir "$W/cache-$name-$i" --json "$@"
}
peer() { # NAME RUN ARTIFACTS EXTRA...
  # podman wants a short runroot (< 50 characters)
  local name="$1" i="$2" a="$3" ctx="$W/ctx-$1-$2" root
  root="$(mktemp -d /tmp/ncb.XXXXXX)"
  shift 3
  mkdir -p "$ctx"; cp -a testdata/peer/. "$ctx/"; cp -a "$a" "$ctx/artifacts"
  link_run "$name" bash -c '
    set -e; P=(podman --root "$1/root" --runroot "$1/run" --tmpdir "$1/tmp" --runtime runc --cgroup-manager=cgroupfs)
    "${P[@]}" build --quiet --tls-verify=false --network=none --build-arg "BASE=$2/base:1" \
      -t localhost/peer "${@:5}" -f "$3/Dockerfile" "$3"
    "${P[@]}" push --quiet --tls-verify=false localhost/peer "docker://$2/peer-$4"' _ \
    "$root" "$LINK" "$ctx" "$name-$i" "$@"
  podman --root "$root/root" --runroot "$root/run" --tmpdir "$root/tmp" system reset --force >/dev/null 2>&1 || true
  rm -rf "$root" "$ctx"
}

median() { sort -n | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else printf "%.2f\n", (a[NR/2]+a[NR/2+1])/2}'; }
col() { awk -v c="$2" '{print $c}' "$W/$1.times"; }
mib() { [[ "$1" == - ]] && { printf -- '-'; return; }; awk -v b="$1" 'BEGIN {printf "%.1f", b/1048576}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2fx", a/b}'; }
mcol() { # NAME COLUMN: median of a column, "-" when not measured
  if col "$1" "$2" | grep -q -- -; then printf -- '-'; else col "$1" "$2" | median; fi
}

# netem: the link scenario (issue 17.5)
netem() {
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
    peer peer-cold "$i" "$art" --layers --cache-to "$LINK/peer-cache-$i"
    peer peer-warm "$i" "$(changed "$i")" --layers --cache-from "$LINK/peer-cache-$i"
  done
  local kind n w pw wo table="| run | median wall (s) | vs peer | MiB down (median) | MiB up (median) |
|---|---|---|---|---|"
  for kind in cold warm; do
    pw="$(col "peer-$kind" 1 | median)"
    wo=ours-wo-cold; [[ "$kind" == warm ]] && wo=ours-wo-known
    for n in "ours-$kind" "$wo" "peer-$kind"; do
      w="$(col "$n" 1 | median)"
      table+="
| $n | $w | $(ratio "$w" "$pw") | $(mib "$(mcol "$n" 2)") | $(mib "$(mcol "$n" 3)") |"
    done
  done
  printf '%s\n' "$table"
  [[ "${WRITE:-0}" == 1 ]] || return 0
  {
    printf '## CI flow through a %s Mbit/s, %s ms link (issue 17)\n\n' "$MBIT" "$LATENCY"
    printf 'Generated by `scripts/bench-ci.sh` on %s (RUNS=%s, medians; ours and the peer interleaved in every\n' \
      "$(date -u +%F)" "$RUNS"
    printf 'run; load average at the start: %s, at the end: %s). Every run is an\n' "$load0" "$(cut -d' ' -f1-3 /proc/loadavg)"
    printf 'empty runner; bytes are what crossed the simulated link (both directions, all requests).\n'
    printf 'ours: rewrite mode, registry base by digest, push to the registry; warm = one artifact changed,\n'
    printf '`--cache-from`. ours-wo: whiteout mode; known = base seen before, build-cache miss (another\n'
    printf 'epoch), layer index from `--cache-from` (compared with the peer'"'"'s warm run).\n'
    printf 'peer: `podman build --layers` of testdata/peer/Dockerfile + `podman push`, warm =\n'
    printf 'one artifact changed, `--cache-from` its own cache repository, fresh storage root.\n\n%s\n' "$table"
  } | bench_section ci
}

# loopback: the cold targets (issue 17.4), each ours run against its named peer run
loopback() {
  for i in $(seq "$RUNS"); do
    log "run $i/$RUNS (loopback, no proxy)"
    ours ours-cold "$i" --artifacts "$art"
    # item 2: the artifacts-only rebuild on another empty runner that has only --cache-from
    # (the cache is exported by an untimed build first)
    "$BIN" build --quiet --base "registry://$LINK/base@$base_digest" --artifacts "$art" \
      --output "registry://$LINK/app-prep-$i:1" --cache-dir "$W/cache-prep-$i" \
      --cache-to "registry://$LINK/cache-$i" >/dev/null 2>"$W/prep.err" || { cat "$W/prep.err" >&2; die "cache export failed"; }
    ours ours-warm "$i" --artifacts "$(changed "$i")" --cache-from "registry://$LINK/cache-$i"
    jq -e '.cache_hit' "$W/ours-warm.out" >/dev/null || die "ours warm was no cache hit"
    peer peer-squash "$i" "$art" --squash-all
    ours ours-wo-cold "$i" --purge-mode whiteout --artifacts "$art"
    peer peer-default "$i" "$art"
  done
  local n p t w pw table="| run | median wall (s) | runs (s) | vs peer run | target | MiB down (median) | MiB up (median) |
|---|---|---|---|---|---|---|"
  for n in "ours-cold peer-squash 0.2" "peer-squash peer-squash -" "ours-wo-cold peer-default 0.1" \
    "peer-default peer-default -"; do
    read -r n p t <<<"$n"
    w="$(col "$n" 1 | median)" pw="$(col "$p" 1 | median)"
    [[ "$t" == - ]] && t="" || t="<= ${t}x vs $p: $(awk -v a="$w" -v b="$pw" -v t="$t" 'BEGIN {print (a/b <= t) ? "met" : "missed"}')"
    table+="
| $n | $w | $(col "$n" 1 | paste -sd' ') | $(ratio "$w" "$pw") | $t | $(mib "$(mcol "$n" 2)") | $(mib "$(mcol "$n" 3)") |"
  done
  w="$(col ours-warm 1 | median)" t="$(mcol ours-warm 2)"
  table+="
| ours-warm | $w | $(col ours-warm 1 | paste -sd' ') | - | < 0.5 s and < 1 MiB down: $(awk -v a="$w" -v b="$t" 'BEGIN {print (a < 0.5 && b < 1048576) ? "met" : "missed"}') | $(mib "$t") | $(mib "$(mcol ours-warm 3)") |"
  printf '%s\n' "$table"
  [[ "${WRITE:-0}" == 1 ]] || return 0
  {
    printf '## CI flow on loopback, cold targets (issue 17.4)\n\n'
    printf 'Generated by `MBIT=0 scripts/bench-ci.sh` on %s (RUNS=%s, medians; ours and the peer interleaved in\n' \
      "$(date -u +%F)" "$RUNS"
    printf 'every run; 2 cores; load average at the start: %s, at the end: %s). Every run is an empty\n' \
      "$load0" "$(cut -d' ' -f1-3 /proc/loadavg)"
    printf 'runner (fresh cache dir / fresh podman storage root) talking to a local docker-registry directly;\n'
    printf 'the base is pulled from it by digest and the result pushed to it; no cache export.\n'
    printf 'ours-cold: rewrite mode; ours-wo-cold: whiteout mode. peer-squash: `podman build --squash-all`\n'
    printf 'of testdata/peer/Dockerfile + `podman push` (ships no purged bytes, like rewrite); peer-default:\n'
    printf '`podman build` with default flags (a layer per step, ships the purged bytes like whiteout) + push.\n'
    printf 'ours-warm (issue 17.2): one artifact changed, another empty runner with only `--cache-from` (the\n'
    printf 'cache exported by an untimed build of the same run), output to the same registry.\n'
    printf 'Bytes are ours only (the `--json` transfer summary).\n\n%s\n' "$table"
  } | bench_section ci-loopback
}

if ((direct)); then loopback; else netem; fi

#!/usr/bin/env bash
# Side-by-side benchmark, one run, same machine, same bases:
#   peer: the same hardening as a multi-stage Dockerfile (testdata/peer/Dockerfile) built with
#         `podman build` from the base already in podman storage, plus `podman save` (oci-archive)
#   (a) nemoclaw-build --purge-mode rewrite   (no cache; from the tar base and from an OCI layout)
#   (b) nemoclaw-build --purge-mode whiteout  (no cache; OCI layout base)
#   (c) incremental rebuild: only an artifact changed, warm cache
#   audit of the plain base (peak RSS)
#   memory (MEMORY=1, the default): build and diff on a ~300k-file base, scripts/bench-memory.sh
# Reports the median wall time of RUNS runs, the ratio to the peer, peak RSS (GNU time) and the
# compressed output size, and writes its section of BENCHMARKS.md (other sections are kept).
#
#   RUNS=3 BASES="small large" scripts/bench.sh
# Bases: small = the default mmdebstrap bookworm base; large = the same plus python3 and a JDK.
set -euo pipefail
# The other scenarios have scripts of their own; `scripts/bench.sh ci|multiarch|memory` runs
# them (scripts/bench-ci.sh: registry in and out, MBIT=0 for loopback; bench-multiarch.sh;
# bench-memory.sh), with the same environment variables.
case "${1:-}" in
  ci | multiarch | memory) exec bash "$(dirname "${BASH_SOURCE[0]}")/bench-$1.sh" "${@:2}" ;;
  "") ;;
  *) echo "bench.sh: unknown scenario '$1' (ci, multiarch, memory, or none for the main table)" >&2; exit 2 ;;
esac
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
LOG_TAG=bench
cd "$NEMOCLAW_ROOT"
export PATH="$HOME/.cargo/bin:$PATH"
export SOURCE_DATE_EPOCH=1700000000

RUNS="${RUNS:-3}"
BASES="${BASES:-small large}"
W="$(mktemp -d "${TMPDIR:-/tmp}/nemoclaw-bench.XXXXXX")"
trap 'rm -rf "$W"' EXIT
BIN="$NEMOCLAW_ROOT/target/release/nemoclaw-build"
[[ -x "$BIN" ]] || cargo build --release >&2
need_cmd podman
[[ -x /usr/bin/time ]] || apt_ensure time

# run NAME CMD... : runs CMD, appends "wall_s rss_kb" to $W/NAME.times
run() {
  local name="$1"; shift
  local rc=0
  /usr/bin/time -f '%e %M' -o "$W/t.$$" "$@" >/dev/null 2>"$W/$name.err" || rc=$?
  # audit exits 1 when it has findings (the plain base has many): that is its answer, not a failure
  if ((rc != 0)) && ! [[ "$name" == *.audit && $rc == 1 ]]; then cat "$W/$name.err" >&2; die "$name failed (exit $rc)"; fi
  tail -n 1 "$W/t.$$" >>"$W/$name.times"
}
median() { sort -n | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else printf "%.2f\n", (a[NR/2]+a[NR/2+1])/2}'; }
col() { awk -v c="$2" '{print $c}' "$W/$1.times"; }
mib() { awk -v b="$1" 'BEGIN {printf "%.1f", b/1048576}'; }

artifacts="$(bash scripts/mk-artifacts.sh | tail -n1)"
rows=()
for b in $BASES; do
  case "$b" in
    small) base_tar="$(bash scripts/mk-base.sh | tail -n1)" ;;
    large) base_tar="$(bash scripts/mk-base.sh --extra python3,default-jdk-headless | tail -n1)" ;;
    *) die "unknown base $b" ;;
  esac
  base_oci="$(bash scripts/mk-base.sh --oci $([[ $b == large ]] && echo --extra python3,default-jdk-headless) | tail -n1)"
  base_mb="$(mib "$(stat -c %s "$base_tar")")"
  log "base $b: $base_tar ($base_mb MiB uncompressed)"
  podman_base_ref "$base_tar" >/dev/null   # import once, outside the timings

  for i in $(seq "$RUNS"); do
    log "[$b] run $i/$RUNS"
    run "$b.peer" bash scripts/peer-build.sh "$base_tar" "$artifacts" "$W/peer-$b.oci.tar"
    run "$b.rewrite-tar" "$BIN" build --quiet --no-cache --base "tar:$base_tar" --artifacts "$artifacts" --output "oci:$W/rw-tar-$b:latest"
    run "$b.rewrite-oci" "$BIN" build --quiet --no-cache --base "oci:$base_oci:latest" --artifacts "$artifacts" --output "oci:$W/rw-oci-$b:latest"
    run "$b.whiteout" "$BIN" build --quiet --no-cache --purge-mode whiteout --base "oci:$base_oci:latest" --artifacts "$artifacts" --output "oci:$W/wo-$b:latest"
    # (c) warm the cache once, then change one artifact file and rebuild.
    rm -rf "$W/cache" "$W/art"; cp -a "$artifacts" "$W/art"
    "$BIN" build --quiet --cache-dir "$W/cache" --base "oci:$base_oci:latest" --artifacts "$W/art" --output "oci:$W/inc-$b:latest" >/dev/null
    echo "// changed $i" >>"$W/art/dist/index.js"
    run "$b.incremental" "$BIN" build --quiet --cache-dir "$W/cache" --base "oci:$base_oci:latest" --artifacts "$W/art" --output "oci:$W/inc-$b:latest"
  done
  run "$b.audit" "$BIN" audit --quiet --json "tar:$base_tar"

  # Compressed sizes: ours from the layout, the peer's layers gzip'd (-6) if podman saved them raw.
  ours_size() { local d="$1"; du -sb "$d/blobs" | cut -f1; }
  peer_dir="$W/peer-$b"; rm -rf "$peer_dir"; mkdir -p "$peer_dir"; tar -xf "$W/peer-$b.oci.tar" -C "$peer_dir"
  peer_size=0
  for f in "$peer_dir"/blobs/sha256/*; do
    if [[ "$(head -c2 "$f" | od -An -tx1 | tr -d ' ')" == "1f8b" ]]; then s=$(stat -c %s "$f")
    elif tar -tf "$f" >/dev/null 2>&1; then s=$(gzip -6 -c "$f" | wc -c)
    else s=$(stat -c %s "$f"); fi
    peer_size=$((peer_size + s))
  done
  peer_t="$(col "$b.peer" 1 | median)"
  for v in peer rewrite-tar rewrite-oci whiteout incremental audit; do
    t="$(col "$b.$v" 1 | median)"; rss="$(col "$b.$v" 2 | sort -n | tail -n1)"
    ratio="$(awk -v a="$t" -v p="$peer_t" 'BEGIN {printf "%.2fx", a/p}')"
    case "$v" in
      peer) size="$(mib "$peer_size")" ;;
      rewrite-tar) size="$(mib "$(ours_size "$W/rw-tar-$b")")" ;;
      rewrite-oci) size="$(mib "$(ours_size "$W/rw-oci-$b")")" ;;
      whiteout) size="$(mib "$(ours_size "$W/wo-$b")")" ;;
      incremental) size="$(mib "$(ours_size "$W/inc-$b")")" ;;
      audit) size="-"; ratio="-" ;;
    esac
    rows+=("| $b ($base_mb MiB) | $v | $t | $ratio | $((rss / 1024)) | $size |")
    printf '%-6s %-12s median %6ss  %6s  peak RSS %5s MiB  output %s MiB\n' "$b" "$v" "$t" "$ratio" "$((rss / 1024))" "$size" >&2
  done
done

# Memory bound of the model (issue 16.6): build and diff on a ~300k-file base.
mem_table=""
if [[ "${MEMORY:-1}" == 1 ]]; then
  log "memory: build and diff on a ~300k-file base"
  mem_table="$(RUNS="$RUNS" BIN="$BIN" bash scripts/bench-memory.sh)"
fi

{
  echo "Generated by \`scripts/bench.sh\` on $(date -u +%Y-%m-%d) (RUNS=$RUNS, median wall time; peak RSS is the max over runs)."
  echo
  echo "Machine: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), $(free -g | awk '/Mem:/ {print $2}') GiB RAM, $(uname -sr), podman $(podman --version | awk '{print $3}'). Load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)."
  echo
  echo "- peer: \`podman build\` of testdata/peer/Dockerfile (purge + autoremove, users, layout, COPY artifacts) from the base already in podman storage, plus \`podman save --format oci-archive\`. Its size is its layers gzip'd at level 6."
  echo "- rewrite-tar / rewrite-oci: \`--purge-mode rewrite\` from the rootfs tarball / from a one-layer gzip OCI layout of the same base, no cache."
  echo "- whiteout: \`--purge-mode whiteout\` from the OCI layout, no cache."
  echo "- incremental: one artifact file changed, warm cache (\`--cache-dir\`)."
  echo "- audit: \`nemoclaw-build audit\` of the plain base tarball."
  echo
  echo "| base | variant | median wall (s) | vs peer | peak RSS (MiB) | output compressed (MiB) |"
  echo "|---|---|---|---|---|---|"
  printf '%s\n' "${rows[@]}"
  if [[ -n "$mem_table" ]]; then
    echo
    echo "## Memory: a base with ~300k files"
    echo
    echo "\`scripts/bench-memory.sh\`: the small base plus 300 dirs x 1000 small files (\`scripts/mk-bigbase.sh\`); build = \`--purge-mode rewrite\` from the tarball, no cache; diff = the base tarball against the built image. Targets (issue 16.6): build <= 128 MiB, diff <= 256 MiB."
    echo
    printf '%s\n' "$mem_table"
  fi
} | bench_section main
log "wrote BENCHMARKS.md (section main)"

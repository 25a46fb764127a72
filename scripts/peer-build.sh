#!/usr/bin/env bash
# Build the "peer" image (testdata/peer/Dockerfile: the upstream-style multi-stage
# Dockerfile) with podman, offline, and save it as an OCI archive.
#
#   scripts/peer-build.sh [--cache] [--tag NAME] BASE_TAR ARTIFACTS_DIR OUT_ARCHIVE
#
# The base tarball is imported into podman storage once, as
# localhost/nemoclaw-base:<first 16 hex of its sha256> (also tagged :latest).
# By default the build uses --no-cache so timings are honest; --cache reuses layers.
# stdout: OUT_ARCHIVE (last line). Timings go to stderr.
# Env: NEMOCLAW_PODMAN_OPTS (extra global podman options, e.g. "--storage-driver vfs").
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

cache=0
tag=localhost/nemoclaw-peer:latest
args=()
while (($#)); do
  case "$1" in
    --cache) cache=1; shift ;;
    --tag) tag="${2:?}"; shift 2 ;;
    -h|--help) sed -n '2,12p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) die "unknown option $1" ;;
    *) args+=("$1"); shift ;;
  esac
done
((${#args[@]} == 3)) || die "usage: peer-build.sh [--cache] [--tag NAME] BASE_TAR ARTIFACTS_DIR OUT_ARCHIVE"
base_tar="${args[0]}" artifacts="${args[1]}" out="${args[2]}"
[[ -f "$base_tar" ]] || die "no base tarball: $base_tar"
[[ -f "$artifacts/package.json" ]] || die "no artifacts (package.json) in: $artifacts"
need_cmd podman
mkdir -p "$(dirname "$out")"

# --- base image in podman storage ---------------------------------------------------------
t0=$(now_ms)
base_ref="$(podman_base_ref "$base_tar")"
t_import=$(( $(now_ms) - t0 ))

# --- build context: testdata/peer + artifacts/ --------------------------------------------
ctx="$(mktemp -d "${TMPDIR:-/tmp}/nemoclaw-peer.XXXXXX")"
trap 'rm -rf "$ctx"' EXIT
cp -a "$NEMOCLAW_ROOT/testdata/peer/." "$ctx/"
cp -a "$artifacts" "$ctx/artifacts"

build_opts=(--network=none --pull=never --build-arg "BASE=$base_ref" --layers=false -t "$tag")
((cache)) && build_opts=(--network=none --pull=never --build-arg "BASE=$base_ref" --layers -t "$tag")
((cache)) || build_opts+=(--no-cache)
old_id="$(pm image inspect --format '{{.Id}}' "$tag" 2>/dev/null || true)"
t1=$(now_ms)
log "podman build ${build_opts[*]}"
pm build "${build_opts[@]}" -f "$ctx/Dockerfile" "$ctx" >&2
t_build=$(( $(now_ms) - t1 ))
new_id="$(pm image inspect --format '{{.Id}}' "$tag" 2>/dev/null || true)"
# drop the previous build if the tag moved and nothing else uses it (no -f)
if [[ -n "$old_id" && "$old_id" != "$new_id" ]]; then pm rmi "$old_id" >/dev/null 2>&1 || true; fi

t2=$(now_ms)
rm -f "$out.tmp"
pm save --quiet --format oci-archive -o "$out.tmp" "$tag"
mv -f "$out.tmp" "$out"
t_save=$(( $(now_ms) - t2 ))
log "timings (ms): import/check=$t_import build=$t_build save=$t_save total=$(( $(now_ms) - t0 ))"
log "saved $tag -> $out ($(du -h "$out" | cut -f1))"
printf '%s\n' "$out"

#!/usr/bin/env bash
# Make (or reuse) a real Debian rootfs tarball to build the NemoClaw image from.
#
#   scripts/mk-base.sh [--suite bookworm] [--arch amd64|arm64] [--extra pkg,pkg] [--out PATH]
#                      [--mirror URL] [--oci] [--force]
#
# The tarball comes from `mmdebstrap --variant=minbase` with the packages the upstream image
# has before its purge (compilers, make, netcat) plus the tools it keeps. It is cached in
# $NEMOCLAW_CACHE/bases/<suite>-<sha of the arguments>.tar and reused when present.
# stdout: only the resulting path (last line). Everything else goes to stderr.
#
#   --oci     also wrap the tarball into a one-layer OCI image layout (tag "latest") next to
#             it (<name>.oci/) with jq + gzip -n, and print that directory instead.
#   --force   rebuild even if the cached file exists.
#   --arch    Debian architecture of the rootfs (default: amd64). A foreign one runs the
#             maintainer scripts under qemu-user (installs qemu-user-static, binfmt-support and
#             arch-test, mounts binfmt_misc and enables the interpreter when missing); slower.
# Env: SOURCE_DATE_EPOCH (default 1700000000) is passed to mmdebstrap, which clamps mtimes
#      and makes the output reproducible for a given mirror state (two runs here gave
#      byte-identical tarballs).
#      NEMOCLAW_DEBIAN_MIRROR (default http://deb.debian.org/debian).
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

suite=bookworm
arch=amd64
extra=""
out=""
oci=0
force=0
mirror="${NEMOCLAW_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
# iproute2: the OpenShell supervisor runs `ip` from the image (upstream-2026 A6).
base_pkgs="gcc,g++,make,netcat-openbsd,vim-tiny,jq,dos2unix,nodejs,procps,tmux,e2fsprogs,ca-certificates,python3,iproute2"

usage() { sed -n '2,20p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit "${1:-2}"; }

while (($#)); do
  case "$1" in
    --suite) suite="${2:?}"; shift 2 ;;
    --suite=*) suite="${1#*=}"; shift ;;
    --arch) arch="${2:?}"; shift 2 ;;
    --arch=*) arch="${1#*=}"; shift ;;
    --extra) extra="${2:?}"; shift 2 ;;
    --extra=*) extra="${1#*=}"; shift ;;
    --out) out="${2:?}"; shift 2 ;;
    --out=*) out="${1#*=}"; shift ;;
    --mirror) mirror="${2:?}"; shift 2 ;;
    --mirror=*) mirror="${1#*=}"; shift ;;
    --oci) oci=1; shift ;;
    --force) force=1; shift ;;
    --print-path) shift ;; # the default behaviour
    -h|--help) usage 0 ;;
    *) log "unknown argument: $1"; usage ;;
  esac
done

export SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-1700000000}"
include="$base_pkgs${extra:+,$extra}"
variant=minbase
case "$arch" in amd64|arm64) ;; *) die "--arch: amd64 or arm64, not '$arch'" ;; esac
# amd64 keeps the key it always had, so existing caches stay valid.
if [[ "$arch" == amd64 ]]; then
  key="$(printf '%s\n' "$suite" "$variant" "$include" "$mirror" "$SOURCE_DATE_EPOCH" | sha_stdin)"
  name="$suite"
else
  key="$(printf '%s\n' "$suite" "$variant" "$include" "$mirror" "$SOURCE_DATE_EPOCH" "$arch" | sha_stdin)"
  name="$suite-$arch"
fi
if [[ -z "$out" ]]; then
  out="$NEMOCLAW_CACHE/bases/$name-${key:0:16}.tar"
fi
mkdir -p "$(dirname "$out")"
out="$(cd "$(dirname "$out")" && pwd -P)/$(basename "$out")"

if [[ -f "$out" && $force -eq 0 ]]; then
  log "reusing $out ($(du -h "$out" | cut -f1))"
else
  need_cmd mmdebstrap
  if [[ "$arch" != "$(dpkg --print-architecture)" ]]; then enable_foreign_arch "$arch"; fi
  tmp="$out.tmp.$$"
  trap 'rm -f "$tmp"' EXIT
  log "mmdebstrap $suite ($include) -> $out"
  t0=$(now_ms)
  # The mirror is given explicitly: without it mmdebstrap reads sources from stdin when
  # stdin is not a terminal. stdin is closed for the same reason.
  mmdebstrap --variant="$variant" --format=tar --quiet --architectures="$arch" \
    --include="$include" \
    --aptopt='APT::Install-Recommends "false"' \
    "$suite" "$tmp" "deb $mirror $suite main" </dev/null >&2
  mv -f "$tmp" "$out"
  trap - EXIT
  log "built in $(( ($(now_ms) - t0) / 1000 ))s, $(du -h "$out" | cut -f1)"
fi

if ((oci == 0)); then
  printf '%s\n' "$out"
  exit 0
fi

# --- one-layer OCI image layout of the base (daemonless, deterministic) -------------------
need_cmd jq
layout="${out%.tar}.oci"
if [[ -f "$layout/index.json" && $force -eq 0 ]]; then
  log "reusing $layout"
  printf '%s\n' "$layout"
  exit 0
fi
tmpl="$layout.tmp.$$"
rm -rf "$tmpl"
trap 'rm -rf "$tmpl"' EXIT
mkdir -p "$tmpl/blobs/sha256"
log "wrapping into OCI layout $layout"
diff_id="$(sha256sum <"$out" | cut -d' ' -f1)"
gzip -n -1 -c <"$out" >"$tmpl/blobs/sha256/layer"
layer_digest="$(sha256sum <"$tmpl/blobs/sha256/layer" | cut -d' ' -f1)"
layer_size="$(stat -c %s "$tmpl/blobs/sha256/layer")"
mv "$tmpl/blobs/sha256/layer" "$tmpl/blobs/sha256/$layer_digest"
created="$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y-%m-%dT%H:%M:%SZ)"
blob() { # write stdin as a blob, print "digest size"
  local f="$tmpl/blobs/sha256/in" d
  cat >"$f"; d="$(sha256sum <"$f" | cut -d' ' -f1)"
  mv "$f" "$tmpl/blobs/sha256/$d"; printf '%s %s\n' "$d" "$(stat -c %s "$tmpl/blobs/sha256/$d")"
}
read -r cfg_digest cfg_size < <(jq -cnS --arg c "$created" --arg d "sha256:$diff_id" --arg arch "$arch" \
  --arg by "mmdebstrap --variant=$variant --include=$include $suite" '{
    architecture: $arch, os: "linux", created: $c,
    config: {Env: ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
             Cmd: ["/bin/bash"]},
    rootfs: {type: "layers", diff_ids: [$d]},
    history: [{created: $c, created_by: $by}]}' | tr -d '\n' | blob)
read -r man_digest man_size < <(jq -cnS --arg cd "sha256:$cfg_digest" --argjson cs "$cfg_size" \
  --arg ld "sha256:$layer_digest" --argjson ls "$layer_size" '{
    schemaVersion: 2, mediaType: "application/vnd.oci.image.manifest.v1+json",
    config: {mediaType: "application/vnd.oci.image.config.v1+json", digest: $cd, size: $cs},
    layers: [{mediaType: "application/vnd.oci.image.layer.v1.tar+gzip", digest: $ld, size: $ls}]
  }' | tr -d '\n' | blob)
printf '{"imageLayoutVersion":"1.0.0"}' >"$tmpl/oci-layout"
jq -cnS --arg md "sha256:$man_digest" --argjson ms "$man_size" '{
  schemaVersion: 2, mediaType: "application/vnd.oci.image.index.v1+json",
  manifests: [{mediaType: "application/vnd.oci.image.manifest.v1+json", digest: $md, size: $ms,
               annotations: {"org.opencontainers.image.ref.name": "latest"}}]}' \
  | tr -d '\n' >"$tmpl/index.json"
rm -rf "$layout"
mv "$tmpl" "$layout"
trap - EXIT
log "OCI layout $layout (manifest sha256:$man_digest)"
printf '%s\n' "$layout"

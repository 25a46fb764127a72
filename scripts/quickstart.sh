#!/usr/bin/env bash
# The main job on the built-in defaults, from a fresh machine:
#   1. set-up (apt packages, musl target, cargo build --release)
#   2. a real Debian bookworm base made with mmdebstrap (cached in .cache/bases)
#   3. demo Node.js builder artifacts (.cache/artifacts)
#   4. nemoclaw-build build with recipes/nemoclaw-sandbox.toml -> out/nemoclaw-sandbox (OCI layout)
#   5. oci-image-tool validate, then nemoclaw-build audit of the result
#
#   scripts/quickstart.sh [--output DIR] [--purge-mode rewrite|whiteout]
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
LOG_TAG=quickstart
cd "$NEMOCLAW_ROOT"
export PATH="$HOME/.cargo/bin:$PATH"

out="out/nemoclaw-sandbox"
mode="rewrite"
while (($#)); do
  case "$1" in
    --output) out="$2"; shift 2 ;;
    --purge-mode) mode="$2"; shift 2 ;;
    -h|--help) sed -n '2,10p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument: $1 (try --help)" ;;
  esac
done

bash scripts/setup.sh
base="$(bash scripts/mk-base.sh | tail -n1)"
artifacts="$(bash scripts/mk-artifacts.sh | tail -n1)"
bin="target/release/nemoclaw-build"
export SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-1700000000}"

log "building $out from $base"
"$bin" build --base "tar:$base" --artifacts "$artifacts" --output "oci:$out:latest" \
  --purge-mode "$mode" --record "$out.record.json"

log "validating with oci-image-tool"
oci-image-tool validate --type image --ref name=latest "$out"

log "auditing the result"
"$bin" audit "oci:$out:latest"

cat >&2 <<MSG

Image: $out (OCI layout, tag latest); build record: $out.record.json
Load and run it:
  podman pull oci:$out:latest
  podman --runtime runc --cgroup-manager=cgroupfs run --rm -it --network=none oci:$out:latest
Or as an archive for docker load / podman load:
  $bin build --base tar:$base --artifacts $artifacts --output docker-archive:out/nemoclaw-sandbox.tar:latest
MSG

#!/usr/bin/env bash
# Prepare a Debian/Ubuntu machine to build and test nemoclaw-build, idempotently.
#
#   scripts/setup.sh [--no-build]
#
# - installs the missing apt packages (checked with dpkg, nothing is touched when present)
# - adds the x86_64- and aarch64-unknown-linux-musl rustup targets when rustup exists (warning
#   on failure; build.rs falls back to a static glibc init, or builds no arm64 init)
# - cargo build --release (unless --no-build)
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

build=1
while (($#)); do
  case "$1" in
    --no-build) build=0; shift ;;
    -h|--help) sed -n '2,10p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument: $1 (try --help)" ;;
  esac
done

pkgs=(mmdebstrap podman runc skopeo umoci oci-image-tool docker-registry uidmap
      fuse-overlayfs time jq apache2-utils ca-certificates curl catatonit
      qemu-user-static binfmt-support arch-test)
optional=(python3-jsonschema buildah)

missing=()
for p in "${pkgs[@]}"; do pkg_installed "$p" || missing+=("$p"); done
for p in "${optional[@]}"; do
  pkg_installed "$p" && continue
  # Optional: only when the archive has it.
  if apt-cache show "$p" >/dev/null 2>&1; then missing+=("$p"); else warn "optional package $p not available, skipped"; fi
done

if ((${#missing[@]})); then
  [[ $(id -u) -eq 0 ]] || die "need root to install: ${missing[*]}"
  # Refresh the lists only when a package is unknown to apt.
  for p in "${missing[@]}"; do
    if ! apt-cache show "$p" >/dev/null 2>&1; then
      log "apt-get update"
      apt-get update -qq >/dev/null
      break
    fi
  done
  apt_ensure "${missing[@]}"
  log "installed: ${missing[*]}"
else
  log "apt packages: all present"
fi

if have rustup; then
  for t in x86_64-unknown-linux-musl aarch64-unknown-linux-musl; do
    if rustup target list --installed 2>/dev/null | grep -qx "$t"; then
      log "rustup target $t: present"
    elif rustup target add "$t" >/dev/null 2>&1; then
      log "rustup target $t: added"
    elif [[ $t == x86_64* ]]; then
      warn "rustup target add $t failed; the init will be built static against glibc"
    else
      warn "rustup target add $t failed; this build will not make arm64 images"
    fi
  done
else
  warn "rustup not found; skipping the musl targets"
fi

if ((build)); then
  have cargo || die "cargo not found (install Rust, e.g. via rustup)"
  log "cargo build --release"
  t0=$(now_ms)
  (cd "$NEMOCLAW_ROOT" && cargo build --release)
  log "built $NEMOCLAW_ROOT/target/release/nemoclaw-build in $(( ($(now_ms) - t0) / 1000 ))s"
else
  log "skipping cargo build (--no-build)"
fi

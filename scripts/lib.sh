# shellcheck shell=bash
# Shared helpers for the nemoclaw-build scripts. Source it; do not execute it.
#   . "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# Repository root (absolute), independent of the caller's cwd.
NEMOCLAW_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
export NEMOCLAW_ROOT
# Cache for generated data (base tarballs, artifacts, images). Never committed.
NEMOCLAW_CACHE="${NEMOCLAW_CACHE:-$NEMOCLAW_ROOT/.cache}"
export NEMOCLAW_CACHE

# Podman invocation that works on this kind of host (cgroup v1 hybrid, runc; crun fails).
# Extra global options (e.g. --storage-driver vfs) can be given in NEMOCLAW_PODMAN_OPTS.
PODMAN_GLOBAL=(--runtime runc --cgroup-manager=cgroupfs)
if [[ -n "${NEMOCLAW_PODMAN_OPTS:-}" ]]; then
  # shellcheck disable=SC2206  # word splitting is intended
  PODMAN_GLOBAL+=(${NEMOCLAW_PODMAN_OPTS})
fi
# rlimits must be given explicitly here; the image's init lowers them itself.
# shellcheck disable=SC2034  # used by the sourcing scripts
PODMAN_RUN_FLAGS=(--network=none --ulimit nofile=1024:1024 --ulimit nproc=1024:1024)

log() { printf '%s: %s\n' "${LOG_TAG:-${0##*/}}" "$*" >&2; }
warn() { printf '%s: warning: %s\n' "${LOG_TAG:-${0##*/}}" "$*" >&2; }
die() { printf '%s: error: %s\n' "${LOG_TAG:-${0##*/}}" "$*" >&2; exit 1; }

pm() { podman "${PODMAN_GLOBAL[@]}" "$@"; }

have() { command -v "$1" >/dev/null 2>&1; }

# pkg_installed PKG: true when dpkg knows PKG as installed.
pkg_installed() {
  dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null | grep -qx installed
}

# apt_ensure PKG...: install the missing ones (quietly); no-op when all are present.
apt_ensure() {
  local missing=() p
  for p in "$@"; do pkg_installed "$p" || missing+=("$p"); done
  ((${#missing[@]})) || return 0
  [[ $(id -u) -eq 0 ]] || die "need root to install: ${missing[*]}"
  log "installing: ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
}

# need_cmd CMD [PKG]: ensure CMD exists, installing PKG (default CMD) with apt if not.
need_cmd() {
  have "$1" && return 0
  apt_ensure "${2:-$1}"
  have "$1" || die "command $1 not available after installing ${2:-$1}"
}

# sha256 of stdin, hex only.
sha_stdin() { sha256sum | cut -d' ' -f1; }

# now_ms: wall clock in milliseconds (for timings).
now_ms() { date +%s%3N; }

# podman_base_ref BASE_TAR: import the rootfs tarball into podman storage once, as
# localhost/nemoclaw-base:<first 16 hex of its sha256> (also tagged :latest); print the ref.
podman_base_ref() {
  local tar="$1" sha ref
  sha="$(sha256sum <"$tar" | cut -d' ' -f1)"
  ref="localhost/nemoclaw-base:${sha:0:16}"
  if ! pm image exists "$ref"; then
    log "podman import $tar -> $ref"
    pm import --quiet "$tar" "$ref" >/dev/null
  fi
  pm tag "$ref" localhost/nemoclaw-base:latest >/dev/null
  printf '%s\n' "$ref"
}

# enable_foreign_arch ARCH: make this host run ARCH binaries through qemu-user (for mmdebstrap
# of a foreign rootfs and `podman run --arch`): packages, binfmt_misc mount, interpreter on.
enable_foreign_arch() {
  local arch="$1" qemu
  case "$arch" in arm64) qemu=qemu-aarch64 ;; amd64) qemu=qemu-x86_64 ;; *) die "no qemu for $arch" ;; esac
  apt_ensure qemu-user-static binfmt-support arch-test
  if [[ ! -e /proc/sys/fs/binfmt_misc/register ]]; then
    mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc 2>/dev/null \
      || die "cannot mount binfmt_misc (needed to run $arch binaries)"
  fi
  [[ -e "/proc/sys/fs/binfmt_misc/$qemu" ]] || update-binfmts --enable "$qemu" >/dev/null 2>&1 || true
  arch-test "$arch" >/dev/null 2>&1 || die "this host cannot run $arch binaries (arch-test $arch failed)"
}

# bench_section NAME [FILE]: replace the generated section NAME of FILE (default
# BENCHMARKS.md) with stdin, or append it. Sections sit between `<!-- bench:NAME -->` and
# `<!-- /bench:NAME -->`, so each benchmark script regenerates its own part and keeps the others.
bench_section() {
  local name="$1" file="${2:-$NEMOCLAW_ROOT/BENCHMARKS.md}" body
  body="$(cat)"
  [[ -f "$file" ]] || printf '# Benchmarks\n' >"$file"
  BODY="$body" NAME="$name" python3 - "$file" <<'PY'
import os, re, sys
path, name, body = sys.argv[1], os.environ["NAME"], os.environ["BODY"]
text = open(path, encoding="utf-8").read()
block = f"<!-- bench:{name} -->\n{body.strip()}\n<!-- /bench:{name} -->"
pat = re.compile(rf"<!-- bench:{re.escape(name)} -->.*?<!-- /bench:{re.escape(name)} -->", re.S)
if pat.search(text):
    text = pat.sub(lambda _m: block, text, count=1)
else:
    text = text.rstrip("\n") + "\n\n" + block + "\n"
open(path + ".tmp", "w", encoding="utf-8").write(text)
os.replace(path + ".tmp", path)
PY
}

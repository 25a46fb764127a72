#!/usr/bin/env bash
# nemoclaw-build itself for aarch64 (issue 13, item 10), so arm64 CI runners run it
# natively: cross-builds the binary for aarch64-unknown-linux-gnu on an x86_64 Debian
# machine (gcc-aarch64-linux-gnu for the C parts: ring, aws-lc-sys, zstd-sys; the
# embedded inits are static musl binaries either way) and runs the unit and
# integration tests of the workspace under qemu-aarch64. Too slow for .ci/run (a cold
# cross build of every dependency); run it by hand:
#
#   scripts/cross-aarch64.sh            # as root on Debian bookworm (installs what it needs)
#
# Prints the path of the aarch64 binary and the test counts; exit 1 when a test fails.
# Env:
#   CROSS_SKIP   extra test-name filters to skip (space-separated, `--skip` of libtest)
#   CARGO_TARGET_DIR as usual (default target/; the binary is in
#                target/aarch64-unknown-linux-gnu/release/)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
T=aarch64-unknown-linux-gnu
log() { printf '# %s\n' "$*" >&2; }

# ------------------------------------------------------------------ toolchain ---------------
need=()
command -v aarch64-linux-gnu-gcc >/dev/null || need+=(gcc-aarch64-linux-gnu)
[[ -e /usr/aarch64-linux-gnu/lib/libc.so.6 ]] || need+=(libc6-dev-arm64-cross)
command -v qemu-aarch64-static >/dev/null || command -v qemu-aarch64 >/dev/null || need+=(qemu-user-static)
if ((${#need[@]})); then
  log "installing ${need[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${need[@]}" >&2
fi
rustup target list --installed | grep -qx "$T" || rustup target add "$T" >&2
rustup target list --installed | grep -qx aarch64-unknown-linux-musl \
  || rustup target add aarch64-unknown-linux-musl >&2 # the embedded arm64 init
QEMU="$(command -v qemu-aarch64-static || command -v qemu-aarch64)"

# The C parts through the cross gcc; tests run under qemu with the cross sysroot.
export CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc
export AR_aarch64_unknown_linux_gnu=aarch64-linux-gnu-ar
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="$QEMU -L /usr/aarch64-linux-gnu"
# Integration tests start the binary themselves (not through the runner): the kernel
# runs it through binfmt_misc when qemu-aarch64 is registered there, else with this.
export QEMU_LD_PREFIX=/usr/aarch64-linux-gnu

# ------------------------------------------------------------------ build -------------------
log "cargo build --release --target $T"
nice -n 10 cargo build --release --locked --target "$T" >&2
BIN="${CARGO_TARGET_DIR:-target}/$T/release/nemoclaw-build"
machine="$(od -An -j18 -N2 -tu2 "$BIN" | tr -d ' ')"
[[ "$machine" == 183 ]] || { echo "error: $BIN is ELF machine $machine, not aarch64 (183)" >&2; exit 1; }
"$QEMU" -L /usr/aarch64-linux-gnu "$BIN" --version >&2

# ------------------------------------------------------------------ tests -------------------
# The init is tested as it ships, a static aarch64-musl binary under plain qemu: with
# the -L sysroot qemu-user resolves absolute paths inside the sysroot first, so the
# init's tests (which open "/" and walk down by descriptor) would run against
# /usr/aarch64-linux-gnu instead of /. Nothing is skipped otherwise; CROSS_SKIP adds
# libtest --skip filters.
skips=()
for s in ${CROSS_SKIP:-}; do skips+=(--skip "$s"); done
LOG="${CARGO_TARGET_DIR:-target}/$T/cross-test.log"
rc=0
log "cargo test --release --target $T --workspace --exclude nemoclaw-init (under $QEMU -L ...)"
nice -n 10 cargo test --release --locked --no-fail-fast --target "$T" --workspace \
  --exclude nemoclaw-init -- "${skips[@]}" 2>&1 | tee "$LOG" >&2 || rc=$?
log "cargo test --release --target aarch64-unknown-linux-musl -p nemoclaw-init (under $QEMU)"
env -u QEMU_LD_PREFIX CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_LINKER=rust-lld \
  CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_RUNNER="$QEMU" \
  nice -n 10 cargo test --release --locked --no-fail-fast --target aarch64-unknown-linux-musl \
  -p nemoclaw-init -- "${skips[@]}" 2>&1 | tee -a "$LOG" >&2 || rc=$?
awk '/^test result:/ { p += $4; f += $6; i += $8 } END { printf "tests: %d passed, %d failed, %d ignored\n", p, f, i }' "$LOG"
echo "$BIN"
exit "$rc"

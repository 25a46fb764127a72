#!/usr/bin/env bash
# The whole test suite, from a fresh machine: set-up (apt packages, musl target),
# cargo fmt --check, clippy -D warnings, unit tests, then the end-to-end suite
# (real mmdebstrap base, podman+runc, skopeo, umoci, oci-image-tool, registry).
#
#   scripts/test.sh            everything
#   scripts/test.sh --unit     skip the end-to-end suite
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
LOG_TAG=test
cd "$NEMOCLAW_ROOT"
export PATH="$HOME/.cargo/bin:$PATH"

unit_only=0
[[ "${1:-}" == "--unit" ]] && unit_only=1

bash scripts/setup.sh --no-build
log "cargo fmt --check"
cargo fmt --all -- --check
log "cargo clippy --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings
log "cargo test"
cargo test --workspace 2>&1 | tee "${TMPDIR:-/tmp}/nemoclaw-unit.log"
if ((unit_only)); then exit 0; fi
log "cargo build --release"
cargo build --release
bash scripts/e2e.sh

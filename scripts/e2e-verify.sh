#!/usr/bin/env bash
# End-to-end checks of the reproducibility features: `build --sbom` (SPDX 2.3, schema-
# validated, attached to the OCI layout as a referrer), `sbom`, `diff` and `verify`
# (rebuild from the record, --twice in perturbed child processes, mutated artifacts).
#
#   scripts/e2e-verify.sh
#
# Uses target/release/nemoclaw-build if present, else target/debug (no cargo run here),
# the cached base tarball and artifacts from scripts/setup.sh (never modified: mutations
# happen on copies in the work dir). Every command is bounded by `timeout`.
#
# stdout: one `PASS: name` or `FAIL: name (detail)` line per probe, then
# `N passed, M failed`; exit 1 if M > 0. Progress goes to stderr as `# ...`.
# Env:
#   E2E_KEEP=1      keep the work dir
#   E2E_WORK=DIR    work dir (default /tmp/nemoclaw-e2e-verify-<pid>)
#   VERIFY_BASE     base tarball (default $NEMOCLAW_CACHE/bases/bookworm-*.tar, newest)
#   VERIFY_ARTIFACTS artifacts dir (default $NEMOCLAW_CACHE/artifacts)
# shellcheck disable=SC2016,SC2012
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
export LOG_TAG=e2e-verify

BIN="$NEMOCLAW_ROOT/target/release/nemoclaw-build"
[[ -x "$BIN" ]] || BIN="$NEMOCLAW_ROOT/target/debug/nemoclaw-build"
[[ -x "$BIN" ]] || die "no nemoclaw-build binary: run cargo build first"
# A private copy: cargo may replace the binary while we run.
W="${E2E_WORK:-/tmp/nemoclaw-e2e-verify-$$}"
mkdir -p "$W/logs"
W="$(cd "$W" && pwd -P)"
cp "$BIN" "$W/nemoclaw-build"
BIN="$W/nemoclaw-build"
LOGS="$W/logs"
EPOCH=1700000000
T=600 # per-command bound (s)

BASE_TAR="${VERIFY_BASE:-$(ls -t "$NEMOCLAW_CACHE"/bases/bookworm-*.tar 2>/dev/null | head -n 1 || true)}"
ART="${VERIFY_ARTIFACTS:-$NEMOCLAW_CACHE/artifacts}"
[[ -f "$BASE_TAR" ]] || die "no base tarball (run scripts/setup.sh or set VERIFY_BASE)"
[[ -f "$ART/package.json" ]] || die "no artifacts in $ART (run scripts/setup.sh or set VERIFY_ARTIFACTS)"
BASE="tar:$BASE_TAR"

PASSED=0
FAILED=0
note() { printf '# %s\n' "$*" >&2; }
pass() { printf 'PASS: %s\n' "$1"; PASSED=$((PASSED + 1)); }
fail() {
  local d="${2:-no detail}"
  d="$(printf '%s' "$d" | tr '\n\t' '  ' | sed 's/  */ /g')"
  ((${#d} > 300)) && d="${d:0:297}..."
  printf 'FAIL: %s (%s)\n' "$1" "$d"
  FAILED=$((FAILED + 1))
}
tail_detail() { grep -v '^[[:space:]]*$' "$1" 2>/dev/null | tail -n 1 | cut -c1-240 || true; }
# expect_rc NAME RC CMD...: PASS iff CMD exits with RC. Output in logs/NAME.log.
expect_rc() {
  local name="$1" want="$2"; shift 2
  local log="$LOGS/$name.log" rc=0
  timeout "$T" "$@" >"$log" 2>&1 || rc=$?
  if [[ "$rc" == "$want" ]]; then pass "$name"; else fail "$name" "exit $rc, want $want: $(tail_detail "$log")"; fi
}
# expect_in NAME LOGNAME TEXT: PASS iff logs/LOGNAME.log contains TEXT (fixed string).
expect_in() {
  if grep -qF -- "$3" "$LOGS/$2.log" 2>/dev/null; then pass "$1"; else fail "$1" "'$3' not in $2.log: $(tail_detail "$LOGS/$2.log")"; fi
}
cleanup() {
  if [[ -n "${PULLED_ID:-}" ]]; then pm rmi "$PULLED_ID" >/dev/null 2>&1 || true; fi
  if [[ "${E2E_KEEP:-0}" == 1 ]]; then note "kept $W"; else rm -rf "$W"; fi
}
trap cleanup EXIT

note "binary $BIN, base $BASE_TAR, artifacts $ART, work $W"
IMG="$W/img"
REF="oci:$IMG:nemoclaw"

# ---- build --sbom ---------------------------------------------------------------------
expect_rc verify.build_with_sbom 0 env SOURCE_DATE_EPOCH=$EPOCH "$BIN" build --base "$BASE" \
  --output "$REF" --artifacts "$ART" --sbom "$W/sbom.spdx.json" --no-cache --quiet
DIGEST="$(grep '^sha256:' "$LOGS/verify.build_with_sbom.log" | tail -n 1 || true)"
if [[ -f "$IMG/index.json" ]]; then
  got="$(jq -r --arg d "$DIGEST" '[.manifests[] | select(.digest == $d and .annotations["org.opencontainers.image.ref.name"] == "nemoclaw")] | length' "$IMG/index.json")"
  if [[ "$got" == 1 ]]; then pass verify.index_tag_selects_image; else
    fail verify.index_tag_selects_image "$(cat "$IMG/index.json")"; fi
  ART_DIGEST="$(jq -r '.manifests[] | select(.artifactType == "application/spdx+json" and (.annotations["org.opencontainers.image.ref.name"] // "") == "") | .digest' "$IMG/index.json")"
  if [[ -n "$ART_DIGEST" ]]; then
    am="$IMG/blobs/sha256/${ART_DIGEST#sha256:}"
    subj="$(jq -r '.subject.digest' "$am")"
    if [[ "$subj" == "$DIGEST" ]]; then pass verify.sbom_referrer_subject; else
      fail verify.sbom_referrer_subject "subject $subj, image $DIGEST"; fi
    layer="$(jq -r '.layers[0].digest' "$am")"
    if cmp -s "$IMG/blobs/sha256/${layer#sha256:}" "$W/sbom.spdx.json" &&
      [[ "$(jq -r '.config.mediaType' "$am")" == application/vnd.oci.empty.v1+json ]]; then
      pass verify.sbom_referrer_blob
    else fail verify.sbom_referrer_blob "layer blob differs from --sbom file or config not empty"; fi
  else
    fail verify.sbom_referrer_subject "no untagged application/spdx+json descriptor in index.json"
  fi
fi

# ---- SBOM content ---------------------------------------------------------------------
if [[ -f "$W/sbom.spdx.json" ]]; then
  "$NEMOCLAW_ROOT/scripts/check-sbom.sh" "$W/sbom.spdx.json" --prefix verify.sbom \
    --present nemoclaw,left-pad,libc6,jq,tmux \
    --absent gcc-12,gcc,cpp-12,make,binutils,netcat-openbsd \
    >"$LOGS/check-sbom.out" 2>"$LOGS/check-sbom.log" || true
  cat "$LOGS/check-sbom.out"
  PASSED=$((PASSED + $(grep -c '^PASS: ' "$LOGS/check-sbom.out" || true)))
  FAILED=$((FAILED + $(grep -c '^FAIL: ' "$LOGS/check-sbom.out" || true)))
  grep -q '^PASS: ' "$LOGS/check-sbom.out" || fail verify.sbom_check "check-sbom.sh printed no result: $(tail_detail "$LOGS/check-sbom.log")"
fi
expect_rc verify.sbom_cmd 0 "$BIN" sbom "$REF" -q -o "$W/sbom2.spdx.json"
if cmp -s "$W/sbom.spdx.json" "$W/sbom2.spdx.json"; then pass verify.sbom_cmd_equals_build_sbom; else
  fail verify.sbom_cmd_equals_build_sbom "sbom IMAGE differs from build --sbom"; fi
expect_rc verify.sbom_cyclonedx 0 "$BIN" sbom "$REF" -q --format cyclonedx -o "$W/sbom.cdx.json"
got="$(jq -r '[.bomFormat, .specVersion, (.serialNumber | test("^urn:uuid:[0-9a-f-]{36}$")), ([.components[] | select(.name == "gcc-12")] | length)] | join(" ")' "$W/sbom.cdx.json" 2>&1 || true)"
if [[ "$got" == "CycloneDX 1.5 true 0" ]]; then pass verify.sbom_cyclonedx_content; else
  fail verify.sbom_cyclonedx_content "$got"; fi

# ---- other tools still read the layout with the extra descriptor ----------------------
if have skopeo; then
  expect_rc verify.skopeo_inspect_tag 0 skopeo inspect "$REF"
  got="$(jq -r .Digest "$LOGS/verify.skopeo_inspect_tag.log" 2>/dev/null || true)"
  if [[ "$got" == "$DIGEST" ]]; then pass verify.skopeo_digest; else
    fail verify.skopeo_digest "skopeo says $got, built $DIGEST"; fi
else note "skopeo missing: skipped"; fi
if have oci-image-tool; then
  expect_rc verify.oci_image_tool_validate 0 oci-image-tool validate --type image --ref name=nemoclaw "$IMG"
else note "oci-image-tool missing: skipped"; fi
if have podman; then
  expect_rc verify.podman_pull_tag 0 podman "${PODMAN_GLOBAL[@]}" pull -q "$REF"
  PULLED_ID="$(grep -E '^[0-9a-f]{64}$' "$LOGS/verify.podman_pull_tag.log" | tail -n 1 || true)"
else note "podman missing: skipped"; fi

# ---- verify -------------------------------------------------------------------------
note "verify: rebuild from the record"
expect_rc verify.rebuild_identical 0 "$BIN" verify "$REF" --base "$BASE" --artifacts "$ART" -q
expect_in verify.rebuild_says_verified verify.rebuild_identical "verified: identical digests"
expect_rc verify.missing_artifacts_is_error 2 "$BIN" verify "$REF" -q
expect_in verify.missing_artifacts_says_so verify.missing_artifacts_is_error "--artifacts"
expect_rc verify.no_record_is_error 2 "$BIN" verify "oci:$W/nosuch:latest" --artifacts "$ART" -q

note "verify --twice (two child builds, different umask/TZ/locale/threads/artifact copies)"
expect_rc verify.twice 0 env SOURCE_DATE_EPOCH=$EPOCH "$BIN" verify --twice --base "$BASE" --artifacts "$ART" -q
expect_rc verify.twice_with_image 0 "$BIN" verify "$REF" --twice --base "$BASE" --artifacts "$ART" -q
expect_rc verify.twice_mutated_fails 1 env SOURCE_DATE_EPOCH=$EPOCH NEMOCLAW_TEST_MUTATE=dist/index.js \
  "$BIN" verify --twice --base "$BASE" --artifacts "$ART" -q
expect_in verify.twice_mutated_names_file verify.twice_mutated_fails "/opt/nemoclaw/dist/index.js: content differs"

note "an image built from mutated artifacts, verified against the original ones"
mkdir -p "$W/mart"
cp -a "$ART/." "$W/mart/"
printf '\n// changed by e2e-verify\n' >>"$W/mart/dist/lib/util.js"
IMG2="$W/img2"
REF2="oci:$IMG2:nemoclaw"
expect_rc verify.build_mutated 0 env SOURCE_DATE_EPOCH=$EPOCH "$BIN" build --base "$BASE" \
  --output "$REF2" --artifacts "$W/mart" --no-cache --quiet
expect_rc verify.mutated_image_fails 1 "$BIN" verify "$REF2" --base "$BASE" --artifacts "$ART" -q
expect_in verify.mutated_names_input verify.mutated_image_fails "input: artifacts: recorded"
expect_in verify.mutated_names_file verify.mutated_image_fails "/opt/nemoclaw/dist/lib/util.js: content differs"

# ---- diff ---------------------------------------------------------------------------
expect_rc verify.diff_different 1 "$BIN" diff "$REF" "$REF2" -q
expect_in verify.diff_names_file verify.diff_different "~ /opt/nemoclaw/dist/lib/util.js: content differs"
expect_in verify.diff_names_record verify.diff_different "dev.nemoclaw.build.record.artifacts_digest"
expect_rc verify.diff_json 1 "$BIN" diff --json "$REF" "$REF2" -q
got="$(jq -r '[.identical, (.files | length), .files[0].path, .files[0].reasons[0]] | join(" ")' "$LOGS/verify.diff_json.log" 2>&1 || true)"
if [[ "$got" == "false 1 /opt/nemoclaw/dist/lib/util.js content differs" ]]; then
  pass verify.diff_json_content
else fail verify.diff_json_content "$got"; fi
expect_rc verify.diff_identical 0 "$BIN" diff "$REF" "$REF" -q
expect_rc verify.diff_error_exit2 2 "$BIN" diff "$REF" "oci:$W/nosuch" -q
expect_rc verify.diff_base_vs_image 1 "$BIN" diff "$BASE" "$REF" -q --ignore-timestamps
expect_in verify.diff_base_shows_purge verify.diff_base_vs_image "/usr/bin/gcc-12: only in the first image"

printf '%d passed, %d failed\n' "$PASSED" "$FAILED"
((FAILED == 0))

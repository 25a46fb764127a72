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
# stdout: `PLAN: N` lines, then one `PASS: name` or `FAIL: name (detail)` (or, by hand and
# for a missing tool, `SKIP: name (why)`) line per probe, then `N passed, M failed, K skipped`;
# exit 1 if M > 0 (see scripts/probe.sh). Progress goes to stderr as `# ...`.
# Env:
#   CI=true         a probe whose tool (skopeo, oci-image-tool, podman) is missing is a FAIL
#   E2E_KEEP=1      keep the work dir
#   E2E_WORK=DIR    work dir (default /tmp/nemoclaw-e2e-verify-<pid>)
#   VERIFY_BASE     base tarball (default $NEMOCLAW_CACHE/bases/bookworm-*.tar, newest)
#   VERIFY_ARTIFACTS artifacts dir (default $NEMOCLAW_CACHE/artifacts)
# shellcheck disable=SC2016,SC2012
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
export LOG_TAG=e2e-verify

W="${E2E_WORK:-/tmp/nemoclaw-e2e-verify-$$}"
mkdir -p "$W/logs"
W="$(cd "$W" && pwd -P)"
LOGS="$W/logs"
RESULTS="$W/results"
: >"$RESULTS"
PIDS=()
# shellcheck source=probe.sh
. "$(dirname "${BASH_SOURCE[0]}")/probe.sh"
suite_cleanup() { if [[ -n "${PULLED_ID:-}" ]]; then pm rmi "$PULLED_ID" >/dev/null 2>&1 || true; fi; }
suite_begin verify
plan 35 # and check-sbom.sh's own plan

BIN="$NEMOCLAW_ROOT/target/release/nemoclaw-build"
[[ -x "$BIN" ]] || BIN="$NEMOCLAW_ROOT/target/debug/nemoclaw-build"
[[ -x "$BIN" ]] || die "no nemoclaw-build binary: run cargo build first"
# A private copy: cargo may replace the binary while we run.
cp "$BIN" "$W/nemoclaw-build"
BIN="$W/nemoclaw-build"
EPOCH=1700000000
T=600 # per-command bound (s)

BASE_TAR="${VERIFY_BASE:-$(ls -t "$NEMOCLAW_CACHE"/bases/bookworm-*.tar 2>/dev/null | head -n 1 || true)}"
ART="${VERIFY_ARTIFACTS:-$NEMOCLAW_CACHE/artifacts}"
[[ -f "$BASE_TAR" ]] || die "no base tarball (run scripts/setup.sh or set VERIFY_BASE)"
[[ -f "$ART/package.json" ]] || die "no artifacts in $ART (run scripts/setup.sh or set VERIFY_ARTIFACTS)"
BASE="tar:$BASE_TAR"
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
# recompressed_copy SRC DST TAG: the image SRC:TAG with every layer re-gzipped at level 1
# (new layer digests, same diff_ids, same config and annotations), as DST:TAG
recompressed_copy() {
  local src="$1" dst="$2" tag="$3" m c d nd ns
  rm -rf "$dst"; mkdir -p "$dst/blobs/sha256"
  cp "$src/oci-layout" "$dst/"
  m="$(jq -r --arg t "$tag" '.manifests[] | select(.annotations["org.opencontainers.image.ref.name"] == $t) | .digest' "$src/index.json")"
  cp "$src/blobs/sha256/${m#sha256:}" "$dst/m.json"
  c="$(jq -r .config.digest "$dst/m.json")"
  cp "$src/blobs/sha256/${c#sha256:}" "$dst/blobs/sha256/"
  for d in $(jq -r '.layers[].digest' "$dst/m.json"); do
    gzip -dc <"$src/blobs/sha256/${d#sha256:}" | gzip -1 -n >"$dst/l.gz"
    nd="sha256:$(sha256sum <"$dst/l.gz" | cut -d' ' -f1)"
    ns="$(stat -c %s "$dst/l.gz")"
    [[ "$nd" != "$d" ]] || { note "gzip -1 gave the same bytes for $d"; return 1; }
    mv "$dst/l.gz" "$dst/blobs/sha256/${nd#sha256:}"
    jq -c --arg o "$d" --arg n "$nd" --argjson s "$ns" \
      '(.layers[] | select(.digest == $o)) |= (.digest = $n | .size = $s)' "$dst/m.json" >"$dst/m2.json"
    mv "$dst/m2.json" "$dst/m.json"
  done
  tr -d '\n' <"$dst/m.json" >"$dst/m2.json"
  nd="sha256:$(sha256sum <"$dst/m2.json" | cut -d' ' -f1)"
  ns="$(stat -c %s "$dst/m2.json")"
  mv "$dst/m2.json" "$dst/blobs/sha256/${nd#sha256:}"
  rm -f "$dst/m.json"
  jq -cn --arg d "$nd" --argjson s "$ns" --arg t "$tag" '{schemaVersion: 2,
    mediaType: "application/vnd.oci.image.index.v1+json",
    manifests: [{mediaType: "application/vnd.oci.image.manifest.v1+json", digest: $d, size: $s,
                 annotations: {"org.opencontainers.image.ref.name": $t}}]}' >"$dst/index.json"
}

note "binary $BIN, base $BASE_TAR, artifacts $ART, work $W"
IMG="$W/img"
REF="oci:$IMG:nemoclaw"

# ---- build --sbom ---------------------------------------------------------------------
expect_rc verify.build_with_sbom 0 env SOURCE_DATE_EPOCH=$EPOCH "$BIN" build --base "$BASE" \
  --output "$REF" --artifacts "$ART" --sbom "$W/sbom.spdx.json" --no-cache --quiet
DIGEST="$(grep '^sha256:' "$LOGS/verify.build_with_sbom.log" | tail -n 1 || true)"
# (every jq below may fail on a broken file: `|| true`, and the probe fails instead of the
# script ending under `set -e` with the rest of its probes)
got="$(jq -r --arg d "$DIGEST" '[.manifests[] | select(.digest == $d and .annotations["org.opencontainers.image.ref.name"] == "nemoclaw")] | length' "$IMG/index.json" 2>&1)" || true
if [[ "$got" == 1 ]]; then pass verify.index_tag_selects_image; else
  fail verify.index_tag_selects_image "$got: $(head -c 200 "$IMG/index.json" 2>&1)"; fi
ART_DIGEST="$(jq -r '.manifests[] | select(.artifactType == "application/spdx+json" and (.annotations["org.opencontainers.image.ref.name"] // "") == "") | .digest' "$IMG/index.json" 2>/dev/null)" || ART_DIGEST=""
am="$IMG/blobs/sha256/${ART_DIGEST#sha256:}"
if [[ "$ART_DIGEST" =~ ^sha256:[0-9a-f]{64}$ && -f "$am" ]]; then
  subj="$(jq -r '.subject.digest' "$am" 2>&1)" || true
  check_eq verify.sbom_referrer_subject "$DIGEST" "$subj"
  layer="$(jq -r '.layers[0].digest' "$am" 2>/dev/null)" || layer=""
  if [[ -n "$layer" ]] && cmp -s "$IMG/blobs/sha256/${layer#sha256:}" "$W/sbom.spdx.json" &&
    [[ "$(jq -r '.config.mediaType' "$am" 2>/dev/null || true)" == application/vnd.oci.empty.v1+json ]]; then
    pass verify.sbom_referrer_blob
  else fail verify.sbom_referrer_blob "layer blob differs from --sbom file or config not empty"; fi
else
  fail verify.sbom_referrer_subject "no untagged application/spdx+json descriptor in index.json ('$ART_DIGEST')"
  fail verify.sbom_referrer_blob "no referrer manifest"
fi

# ---- SBOM content ---------------------------------------------------------------------
# (its probes and its plan join this suite's)
subsuite verify.sbom bash "$NEMOCLAW_ROOT/scripts/check-sbom.sh" "$W/sbom.spdx.json" --prefix verify.sbom \
  --present nemoclaw,left-pad,libc6,jq,tmux \
  --absent gcc-12,gcc,cpp-12,make,binutils,netcat-openbsd
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
else
  skip verify.skopeo_inspect_tag "skopeo missing"
  skip verify.skopeo_digest "skopeo missing"
fi
if have oci-image-tool; then
  expect_rc verify.oci_image_tool_validate 0 oci-image-tool validate --type image --ref name=nemoclaw "$IMG"
else skip verify.oci_image_tool_validate "oci-image-tool missing"; fi
if have podman; then
  expect_rc verify.podman_pull_tag 0 podman "${PODMAN_GLOBAL[@]}" pull -q "$REF"
  PULLED_ID="$(grep -E '^[0-9a-f]{64}$' "$LOGS/verify.podman_pull_tag.log" | tail -n 1 || true)"
else skip verify.podman_pull_tag "podman missing"; fi

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
# the same image with every layer recompressed (other digests, same content): no semantic
# difference, and the layers are reported as such (comparing an image with itself would
# stop at the equal digests)
if recompressed_copy "$IMG" "$W/img-regz" nemoclaw 2>"$LOGS/recompressed-copy.log"; then
  expect_rc verify.diff_recompressed_copy_identical 0 "$BIN" diff "$REF" "oci:$W/img-regz:nemoclaw" -q
  expect_in verify.diff_recompressed_copy_says_so verify.diff_recompressed_copy_identical "same files, different gzip bytes"
else
  fail verify.diff_recompressed_copy_identical "could not make the copy: $(tail_detail "$LOGS/recompressed-copy.log")"
  fail verify.diff_recompressed_copy_says_so "no copy"
fi
expect_rc verify.diff_error_exit2 2 "$BIN" diff "$REF" "oci:$W/nosuch" -q
expect_rc verify.diff_base_vs_image 1 "$BIN" diff "$BASE" "$REF" -q --ignore-timestamps
expect_in verify.diff_base_shows_purge verify.diff_base_vs_image "/usr/bin/gcc-12: only in the first image"

suite_end

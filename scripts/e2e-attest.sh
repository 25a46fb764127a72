#!/usr/bin/env bash
# Signing and attestation probes for nemoclaw-build (issue 14): keygen, build --sign-key
# with provenance/SPDX/CycloneDX attestations, checked by independent verifiers from PyPI
# (cryptography, securesystemslib, in-toto, jsonschema, cyclonedx-python-lib; see
# scripts/attest-check.py), the layout still read by skopeo/umoci (oci-image-tool: the image),
# `verify --key` (right key, wrong key, tampered envelope, mismatched subject), and the
# referrers/cosign tags after a push to a local Debian `docker-registry` on 127.0.0.1.
# cosign itself is not installable here (it is a downloaded Go binary).
#
#   scripts/e2e-attest.sh
#
# stdout: `PLAN: N`, then one `PASS: name` / `FAIL: name (detail)` line per probe, then
# `N passed, M failed, K skipped`; exit 1 if M > 0 (see scripts/probe.sh).
# Env:
#   BIN                 nemoclaw-build binary (default target/release/nemoclaw-build)
#   BASE_OCI            OCI layout with tag `latest` (default: scripts/mk-base.sh --oci)
#   ART                 artifacts dir (default: scripts/mk-artifacts.sh WORK/artifacts)
#   E2E_ATTEST_PORT     registry port (default 5080)
#   E2E_WORK            work dir (default /tmp/nemoclaw-e2e-attest-<pid>); E2E_KEEP=1 keeps it
#   NEMOCLAW_CACHE      the verifier venv is kept here (attest-venv), made once
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck disable=SC2034  # used by lib.sh
LOG_TAG=e2e-attest

BIN="${BIN:-$NEMOCLAW_ROOT/target/release/nemoclaw-build}"
REG="127.0.0.1:${E2E_ATTEST_PORT:-5080}"
EPOCH=1700000000
W="${E2E_WORK:-/tmp/nemoclaw-e2e-attest-$$}"
mkdir -p "$W"/{logs,out,keys}
W="$(cd "$W" && pwd -P)"
LOGS="$W/logs"
RESULTS="$W/results"
: >"$RESULTS"
PIDS=()
CHECK="$NEMOCLAW_ROOT/scripts/attest-check.py"

# shellcheck source=probe.sh
. "$(dirname "${BASH_SOURCE[0]}")/probe.sh"
suite_begin attest
plan 43

nb() { # NAME [ENV=VAL...] -- ARGS...: run the CLI isolated; stdout/stderr -> logs
  local name="$1" rc=0
  shift
  local envs=()
  while [[ $# -gt 0 && "$1" != -- ]]; do envs+=("$1"); shift; done
  shift
  env HOME="$W/home" XDG_CACHE_HOME="$W/cache" DOCKER_CONFIG="$W/no-docker-config" REGISTRY_AUTH_FILE= \
    "${envs[@]}" timeout --kill-after=10 "${E2E_BUILD_TIMEOUT:-900}" "$BIN" "$@" \
    >"$LOGS/$name.out" 2>"$LOGS/$name.err" </dev/null || rc=$?
  note "nemoclaw-build $1 [$name] rc=$rc"
  return $rc
}
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
# python_probes LOG CMD...: the PASS/FAIL lines of attest-check.py join ours
python_probes() {
  local log="$1" l
  shift
  "$VPY" "$CHECK" "$@" >"$LOGS/$log.out" 2>"$LOGS/$log.err" || true
  while IFS= read -r l; do emit "$l"; done < <(grep -E '^(PASS|FAIL): ' "$LOGS/$log.out" || true)
}

# ------------------------------------------------------------------ prerequisites ----------
for c in docker-registry skopeo umoci oci-image-tool jq curl python3 openssl; do
  have "$c" || { fail attest.prereq "missing $c"; exit 1; }
done
[[ -x "$BIN" ]] || { fail attest.prereq "no $BIN (cargo build --release)"; exit 1; }
if [[ -z "${BASE_OCI:-}" ]]; then
  BASE_OCI="$("$NEMOCLAW_ROOT/scripts/mk-base.sh" --oci 2>"$LOGS/mk-base.log" | tail -n 1)"
fi
if [[ -z "${ART:-}" ]]; then
  ART="$("$NEMOCLAW_ROOT/scripts/mk-artifacts.sh" "$W/artifacts" 2>"$LOGS/mk-artifacts.log" | tail -n 1)"
fi
[[ -f "$BASE_OCI/index.json" && -e "$ART" ]] || { fail attest.prereq "no base OCI layout or artifacts"; exit 1; }
if port_busy "${REG##*:}"; then fail attest.prereq "port ${REG##*:} is in use; set E2E_ATTEST_PORT"; exit 1; fi

# The verifiers, in a venv made once in a temp dir and renamed into place (two runs
# cannot race: the loser's rename fails and it uses the winner's).
VENV="$NEMOCLAW_CACHE/attest-venv"
PKGS=(cryptography jsonschema securesystemslib in-toto cyclonedx-python-lib)
IMPORTS='import cryptography, jsonschema, securesystemslib.dsse, in_toto.models.metadata, cyclonedx.validation.json'
if ! "$VENV/bin/python" -c "$IMPORTS" 2>/dev/null; then
  mkdir -p "$NEMOCLAW_CACHE"
  tmpv="$(mktemp -d "$NEMOCLAW_CACHE/.attest-venv.XXXXXX")"
  if python3 -m venv "$tmpv/v" >"$LOGS/venv.log" 2>&1 \
    && "$tmpv/v/bin/python" -m pip install -q "${PKGS[@]}" >>"$LOGS/venv.log" 2>&1; then
    rm -rf "$VENV.old"; [[ -d "$VENV" ]] && mv "$VENV" "$VENV.old"
    mv -T "$tmpv/v" "$VENV" 2>>"$LOGS/venv.log" || note "another run made $VENV"
    rm -rf "$VENV.old"
  fi
  rm -rf "$tmpv"
fi
VPY="$VENV/bin/python"
if "$VPY" -c "$IMPORTS" >>"$LOGS/venv.log" 2>&1; then pass attest.verifier_venv; else
  fail attest.verifier_venv "$(tail_detail "$LOGS/venv.log")"; exit 1
fi

# ------------------------------------------------------------------ keys --------------------
nb keygen -- keygen --out "$W/keys/k" || true
nb keygen2 -- keygen --out "$W/keys/wrong" || true
check_eq attest.keygen_private_0600 "600 yes yes" \
  "$(stat -c %a "$W/keys/k.key" 2>/dev/null) $([[ -s $W/keys/k.pub ]] && echo yes) $([[ -s $W/keys/wrong.pub ]] && echo yes)"
cp "$W/keys/k.key" "$W/keys/world.key"
chmod 644 "$W/keys/world.key"
rc=0
nb world -- build --base "oci:$BASE_OCI:latest" --artifacts "$ART" --output "oci:$W/out/never:latest" \
  --source-date-epoch "$EPOCH" --sign-key "$W/keys/world.key" || rc=$?
if ((rc != 0)) && grep -q 'mode 644 lets other users read' "$LOGS/world.err" && [[ ! -e $W/out/never ]]; then
  pass attest.world_readable_key_refused
else fail attest.world_readable_key_refused "exit $rc: $(tail_detail "$LOGS/world.err")"; fi
check_nogrep attest.key_material_not_logged 'BEGIN|PRIVATE' "$LOGS/world.err"

# ------------------------------------------------------------------ layout ------------------
# Managed-image labels from build args (recipe image.build_arg_labels), recorded in the provenance.
COMMON=(--base "oci:$BASE_OCI:latest" --artifacts "$ART" --source-date-epoch "$EPOCH"
  --build-arg NEMOCLAW_IMAGE_REVISION=e2e-rev --build-arg NEMOCLAW_AGENT=openclaw)
if nb plain -- build "${COMMON[@]}" --output "oci:$W/out/plain:latest" --json; then pass attest.build_unsigned; else
  fail attest.build_unsigned "$(tail_detail "$LOGS/plain.err")"; fi
if nb signed -- build "${COMMON[@]}" --output "oci:$W/out/signed:latest" --json \
  --sign-key "$W/keys/k.key" --attest provenance,sbom,cyclonedx; then pass attest.build_signed; else
  fail attest.build_signed "$(tail_detail "$LOGS/signed.err")"; fi
D="$(jq -r .digest "$LOGS/signed.out" 2>/dev/null || true)"
check_eq attest.signing_keeps_the_image_digest "$(jq -r .digest "$LOGS/plain.out" 2>/dev/null || echo none)" "$D"
check_eq attest.unsigned_layout_has_only_the_image 1 "$(jq '.manifests | length' "$W/out/plain/index.json" 2>/dev/null || echo none)"
# A second signed build: the attestations are byte-reproducible (RFC 6979).
nb signed2 -- build "${COMMON[@]}" --output "oci:$W/out/signed2:latest" \
  --sign-key "$W/keys/k.key" --attest provenance,sbom,cyclonedx || true
check_eq attest.reproducible_index "$(sha256sum <"$W/out/signed/index.json")" "$(sha256sum <"$W/out/signed2/index.json" 2>/dev/null || echo none)"

python_probes layout layout "$W/out/signed" latest "$W/keys/k.pub" "$W/keys/wrong.pub" "$W/out/attested.spdx.json"
subsuite attest-spdx bash "$NEMOCLAW_ROOT/scripts/check-sbom.sh" "$W/out/attested.spdx.json" --prefix attest.spdx

probe_cmd() { # NAME CMD...: PASS iff CMD exits 0
  local name="$1"; shift
  if "$@" >"$LOGS/$name.log" 2>&1; then pass "$name"; else fail "$name" "$(tail_detail "$LOGS/$name.log")"; fi
}
probe_cmd attest.skopeo_reads_layout skopeo inspect "oci:$W/out/signed:latest"
check_eq attest.labels_from_build_args "e2e-rev openclaw" "$(jq -r '"\(.Labels["org.opencontainers.image.revision"]) \(.Labels["io.nvidia.nemoclaw.agent"])"' \
  "$LOGS/attest.skopeo_reads_layout.log" 2>/dev/null || echo none)"
probe_cmd attest.umoci_reads_layout umoci stat --image "$W/out/signed:latest"
# oci-image-tool (image-spec 1.0) cannot read OCI 1.1 artifact manifests (it refuses the empty
# config media type), and its --ref filter keeps a wrong entry once index.json has 3 or more
# (it skips the entry after each one it drops): it validates the image, with the signed
# layout's blobs, through an index.json listing only the tagged image.
cp -al "$W/out/signed" "$W/out/oit"
rm "$W/out/oit/index.json"
jq '.manifests |= map(select(.annotations["org.opencontainers.image.ref.name"] == "latest"))' \
  "$W/out/signed/index.json" >"$W/out/oit/index.json"
probe_cmd attest.oci_image_tool_validates_image oci-image-tool validate --type image --ref name=latest "$W/out/oit"

# ------------------------------------------------------------------ verify --key ------------
rc=0; nb v-ok -- verify --key "$W/keys/k.pub" "oci:$W/out/signed:latest" || rc=$?
if ((rc == 0)) && grep -q '^verified: signature and attestations' "$LOGS/v-ok.out"; then pass attest.verify_key_ok; else
  fail attest.verify_key_ok "exit $rc: $(tail_detail "$LOGS/v-ok.out") $(tail_detail "$LOGS/v-ok.err")"; fi
rc=0; nb v-wrong -- verify --key "$W/keys/wrong.pub" "oci:$W/out/signed:latest" || rc=$?
if ((rc == 1)) && grep -q 'does not verify with the given key' "$LOGS/v-wrong.out"; then pass attest.verify_wrong_key_exit_1; else
  fail attest.verify_wrong_key_exit_1 "exit $rc: $(tail_detail "$LOGS/v-wrong.out")"; fi
rc=0; nb v-rebuild -- verify --key "$W/keys/k.pub" --artifacts "$ART" --base "oci:$BASE_OCI:latest" "oci:$W/out/signed:latest" || rc=$?
if ((rc == 0)) && grep -q '^verified: signature and attestations' "$LOGS/v-rebuild.out" \
  && grep -q '^verified: identical digests' "$LOGS/v-rebuild.out"; then pass attest.verify_key_and_rebuild; else
  fail attest.verify_key_and_rebuild "exit $rc: $(tail_detail "$LOGS/v-rebuild.out") $(tail_detail "$LOGS/v-rebuild.err")"; fi
cp -a "$W/out/signed" "$W/out/tampered"
"$VPY" "$CHECK" tamper "$W/out/tampered" >"$LOGS/tamper.log" 2>&1 || true
rc=0; nb v-tamper -- verify --key "$W/keys/k.pub" "oci:$W/out/tampered:latest" || rc=$?
if ((rc == 1)) && grep -q 'changed after signing' "$LOGS/v-tamper.out"; then pass attest.verify_tampered_envelope_exit_1; else
  fail attest.verify_tampered_envelope_exit_1 "exit $rc: $(tail_detail "$LOGS/v-tamper.out") $(tail_detail "$LOGS/tamper.log")"; fi
# Another image (zstd), signed: its signature moved onto our image names the wrong digest.
nb other -- build "${COMMON[@]}" --output "oci:$W/out/other:latest" --compression zstd --sign-key "$W/keys/k.key" || true
cp -a "$W/out/plain" "$W/out/moved"
"$VPY" "$CHECK" resubject "$W/out/other" "$W/out/moved" >"$LOGS/resubject.log" 2>&1 || true
rc=0; nb v-subject -- verify --key "$W/keys/k.pub" "oci:$W/out/moved:latest" || rc=$?
if ((rc == 1)) && grep -q 'mismatched subject' "$LOGS/v-subject.out"; then pass attest.verify_mismatched_subject_exit_1; else
  fail attest.verify_mismatched_subject_exit_1 "exit $rc: $(tail_detail "$LOGS/v-subject.out") $(tail_detail "$LOGS/resubject.log")"; fi
rc=0
nb archive -- build "${COMMON[@]}" --output "oci-archive:$W/out/signed.tar:latest" --sign-key "$W/keys/k.key" || rc=$?
nb v-archive -- verify --key "$W/keys/k.pub" "oci-archive:$W/out/signed.tar:latest" || rc=$?
if ((rc == 0)) && grep -q 'dependencies = build record' "$LOGS/v-archive.out"; then pass attest.verify_oci_archive; else
  fail attest.verify_oci_archive "exit $rc: $(tail_detail "$LOGS/v-archive.out") $(tail_detail "$LOGS/archive.err")"; fi

# A key from openssl: encrypted PKCS#8 (PBKDF2 + AES-256-CBC), group-readable (a warning).
rc=0
{ openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$W/keys/ossl.pem" \
  && openssl pkcs8 -topk8 -v2 aes-256-cbc -passout pass:e2e-pw -in "$W/keys/ossl.pem" -out "$W/keys/ossl.key" \
  && openssl pkey -in "$W/keys/ossl.pem" -pubout -out "$W/keys/ossl.pub"; } >"$LOGS/openssl.log" 2>&1 || rc=$?
chmod 640 "$W/keys/ossl.key" 2>/dev/null || true
nb ossl NEMOCLAW_SIGN_PASSWORD=e2e-pw -- build "${COMMON[@]}" --output "oci:$W/out/ossl:latest" \
  --sign-key "$W/keys/ossl.key" --attest none || rc=$?
if ((rc == 0)) && grep -q 'readable by its group' "$LOGS/ossl.err"; then pass attest.openssl_encrypted_key_signs_with_warning; else
  fail attest.openssl_encrypted_key_signs_with_warning "exit $rc: $(tail_detail "$LOGS/ossl.err") $(tail_detail "$LOGS/openssl.log")"; fi
rc=0; nb v-ossl -- verify --key "$W/keys/ossl.pub" "oci:$W/out/ossl:latest" || rc=$?
if ((rc == 0)) && grep -q '^ok   cosign signature' "$LOGS/v-ossl.out"; then pass attest.verify_openssl_key; else
  fail attest.verify_openssl_key "exit $rc: $(tail_detail "$LOGS/v-ossl.out") $(tail_detail "$LOGS/v-ossl.err")"; fi

# ------------------------------------------------------------------ registry ----------------
mkdir -p "$W/registry/data"
printf 'version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: %s\n' \
  "$W/registry/data" "$REG" >"$W/registry/config.yml"
docker-registry serve "$W/registry/config.yml" >"$LOGS/registry.log" 2>&1 &
PIDS+=("$!")
up=0
for _ in $(seq 50); do curl -sS -o /dev/null "http://$REG/v2/" 2>/dev/null && { up=1; break; }; sleep 0.2; done
if ((up)); then pass attest.registry_server; else fail attest.registry_server "$(tail_detail "$LOGS/registry.log")"; fi
if nb push -- build "${COMMON[@]}" --output "registry://$REG/nemoclaw:signed" --json \
  --sign-key "$W/keys/k.key" --attest provenance,sbom; then pass attest.registry_push_signed; else
  fail attest.registry_push_signed "$(tail_detail "$LOGS/push.err")"; fi
RD="$(jq -r .digest "$LOGS/push.out" 2>/dev/null || true)"
HEX="${RD#sha256:}"
skopeo inspect --raw --tls-verify=false "docker://$REG/nemoclaw:sha256-$HEX" >"$LOGS/reftag.json" 2>"$LOGS/reftag.err" || true
check_eq attest.registry_referrers_tag_schema \
  "application/vnd.dev.cosign.artifact.sig.v1+json application/vnd.dsse.envelope.v1+json application/vnd.dsse.envelope.v1+json" \
  "$(jq -r '[.manifests[].artifactType] | join(" ")' "$LOGS/reftag.json" 2>/dev/null || tail_detail "$LOGS/reftag.err")"
skopeo inspect --raw --tls-verify=false "docker://$REG/nemoclaw:sha256-$HEX.sig" >"$LOGS/sigtag.json" 2>"$LOGS/sigtag.err" || true
check_eq attest.registry_cosign_sig_tag "application/vnd.dev.cosign.simplesigning.v1+json $RD" \
  "$(jq -r '"\(.layers[0].mediaType) \(.subject.digest)"' "$LOGS/sigtag.json" 2>/dev/null || tail_detail "$LOGS/sigtag.err")"
python_probes registry registry "$REG" nemoclaw "$RD" "$W/keys/k.pub"
rc=0; nb v-reg -- verify --key "$W/keys/k.pub" "registry://$REG/nemoclaw:signed" || rc=$?
if ((rc == 0)) && grep -q 'dependencies = build record' "$LOGS/v-reg.out"; then pass attest.verify_key_registry; else
  fail attest.verify_key_registry "exit $rc: $(tail_detail "$LOGS/v-reg.out") $(tail_detail "$LOGS/v-reg.err")"; fi
rc=0; nb v-reg-wrong -- verify --key "$W/keys/wrong.pub" "registry://$REG/nemoclaw@$RD" || rc=$?
if ((rc == 1)) && grep -q 'does not verify with the given key' "$LOGS/v-reg-wrong.out"; then pass attest.verify_wrong_key_registry_exit_1; else
  fail attest.verify_wrong_key_registry_exit_1 "exit $rc: $(tail_detail "$LOGS/v-reg-wrong.out") $(tail_detail "$LOGS/v-reg-wrong.err")"; fi

# --attest-store index: BuildKit attestation manifests beside the image in an image index
# (what upstream's promotion check reads), in a layout and in the registry.
IDXQ='"\(.mediaType) \(.manifests[0].digest) \(.manifests[1].platform.os)/\(.manifests[1].platform.architecture) \(.manifests[1].annotations["vnd.docker.reference.type"]) \(.manifests[1].annotations["vnd.docker.reference.digest"])"'
WANT_IDX="application/vnd.oci.image.index.v1+json $D unknown/unknown attestation-manifest $D"
nb idx-layout -- build "${COMMON[@]}" --output "oci:$W/out/idx:latest" --sign-key "$W/keys/k.key" \
  --attest provenance,sbom --attest-store index || true
check_eq attest.index_store_layout "$WANT_IDX" \
  "$(skopeo inspect --raw "oci:$W/out/idx:latest" 2>"$LOGS/idx-layout.inspect" | jq -r "$IDXQ" 2>/dev/null || tail_detail "$LOGS/idx-layout.err")"
nb idx-push -- build "${COMMON[@]}" --output "registry://$REG/nemoclaw:idx" --attest provenance --attest-store index || true
check_eq attest.index_store_registry "$WANT_IDX" \
  "$(skopeo inspect --raw --tls-verify=false "docker://$REG/nemoclaw:idx" 2>"$LOGS/idx-push.inspect" | jq -r "$IDXQ" 2>/dev/null || tail_detail "$LOGS/idx-push.err")"
rc=0
skopeo copy --quiet --src-tls-verify=false "docker://$REG/nemoclaw:idx" "oci:$W/out/pulled:x" >"$LOGS/idx-pull.log" 2>&1 || rc=$?
check_eq attest.index_store_pull_selects_the_image "0 $D" \
  "$rc $(jq -r '.manifests[0].digest' "$W/out/pulled/index.json" 2>/dev/null || tail_detail "$LOGS/idx-pull.log")"

suite_end

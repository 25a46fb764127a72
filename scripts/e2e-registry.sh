#!/usr/bin/env bash
# Registry end-to-end probes for nemoclaw-build (issue 6), against real Debian
# `docker-registry` servers on 127.0.0.1 that this script starts and always stops.
#
#   scripts/e2e-registry.sh
#
# stdout: `PLAN: N`, then one `PASS: name` / `FAIL: name (detail)` (or, by hand, `SKIP: name
# (why)`) line per probe, then `N passed, M failed, K skipped`; exit 1 if M > 0 (see
# scripts/probe.sh). Progress goes to stderr as `# ...`.
# Env:
#   BIN                 nemoclaw-build binary (default target/release/nemoclaw-build)
#   BASE_OCI            OCI layout with tag `latest` (default: scripts/mk-base.sh --oci)
#   ART                 artifacts dir (default: scripts/mk-artifacts.sh WORK/artifacts)
#   E2E_REG_PORT        first of 5 consecutive ports used (default 5061)
#   E2E_WORK            work dir (default /tmp/nemoclaw-e2e-registry-<pid>); E2E_KEEP=1 keeps it
#   E2E_RESULTS         also append the PASS/FAIL lines to this file (for scripts/e2e.sh)
#   E2E_BUILD_TIMEOUT   seconds per nemoclaw-build run (default 900)
#   CI=true             a probe that cannot run here (no LAN address) is a FAIL
# shellcheck disable=SC2016
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck disable=SC2034  # used by lib.sh
LOG_TAG=e2e-registry

BIN="${BIN:-$NEMOCLAW_ROOT/target/release/nemoclaw-build}"
P0="${E2E_REG_PORT:-5061}"
PLAIN="127.0.0.1:$P0"          # anonymous registry
AUTHR="127.0.0.1:$((P0 + 1))"  # htpasswd registry
CORRUPT="127.0.0.1:$((P0 + 2))" # proxy to PLAIN that flips one byte of large blobs
FLAKY="127.0.0.1:$((P0 + 3))"  # proxy to PLAIN that answers 503 to the first request per path
EPOCH=1700000000
W="${E2E_WORK:-/tmp/nemoclaw-e2e-registry-$$}"
mkdir -p "$W"/{logs,out}
W="$(cd "$W" && pwd -P)"
LOGS="$W/logs"
RESULTS="$W/results"
: >"$RESULTS"
PIDS=()

# shellcheck source=probe.sh
. "$(dirname "${BASH_SOURCE[0]}")/probe.sh"
suite_begin reg
plan 37

# nb NAME [ENV=VAL...] -- ARGS...: run the CLI with a private cache; stdout/stderr -> logs
nb() {
  local name="$1" rc=0 t0; shift
  local envs=()
  while [[ $# -gt 0 && "$1" != -- ]]; do envs+=("$1"); shift; done
  shift
  t0=$(now_ms)
  # isolated from the caller's caches and credentials (~/.docker, podman's auth.json)
  env HOME="$W/home" XDG_CACHE_HOME="$W/cache-default" XDG_RUNTIME_DIR="$W/run" \
    XDG_CONFIG_HOME="$W/home/.config" DOCKER_CONFIG="$W/no-docker-config" REGISTRY_AUTH_FILE= \
    "${envs[@]}" timeout --kill-after=10 "${E2E_BUILD_TIMEOUT:-900}" "$BIN" "$@" \
    >"$LOGS/$name.out" 2>"$LOGS/$name.err" </dev/null || rc=$?
  note "nemoclaw-build $1 [$name] rc=$rc in $(($(now_ms) - t0))ms"
  return $rc
}

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# start_registry NAME ADDR [auth] [DATA_DIR]: docker-registry with storage in W/NAME/data
start_registry() {
  local name="$1" addr="$2" auth="${3:-}" data="${4:-$W/$1/data}"
  mkdir -p "$W/$name" "$data"
  {
    printf 'version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\n'
    printf 'storage:\n  filesystem:\n    rootdirectory: %s\n' "$data"
    if [[ -n "$auth" ]]; then
      printf 'auth:\n  htpasswd:\n    realm: e2e\n    path: %s\n' "$W/htpasswd"
    fi
    printf 'http:\n  addr: %s\n' "$addr"
  } >"$W/$name/config.yml"
  docker-registry serve "$W/$name/config.yml" >"$LOGS/$name.log" 2>&1 &
  PIDS+=("$!")
  for _ in $(seq 50); do
    curl -sS -o /dev/null "http://$addr/v2/" 2>/dev/null && return 0
    sleep 0.2
  done
  return 1
}

start_proxy() { # NAME LISTEN UPSTREAM MODE
  python3 "$NEMOCLAW_ROOT/scripts/e2e-proxy.py" "$2" "$3" "$4" >"$LOGS/$1.log" 2>&1 &
  PIDS+=("$!")
  for _ in $(seq 50); do
    port_busy "${2##*:}" && return 0
    sleep 0.1
  done
  return 1
}

# count_requests LOG FROM_LINE ERE: access-log requests matching ERE after line FROM_LINE.
# A count of 0 proves nothing by itself (the log format may have changed): every use
# below is paired with a count that must not be 0 in the same log.
count_requests() {
  tail -n +"$(($2 + 1))" "$1" | awk -v re="$3" '$0 ~ re { n++ } END { print n + 0 }'
}
UPLOAD_RE='"(POST|PATCH|PUT) /v2/[^ ]*/blobs/uploads'
BLOB_HEAD_RE='"HEAD /v2/[^ ]*/blobs/sha256:'


# ------------------------------------------------------------------ prerequisites ----------
for c in docker-registry skopeo jq curl python3 htpasswd timeout sha256sum; do
  have "$c" || { fail reg.prereq "missing $c"; exit 1; }
done
[[ -x "$BIN" ]] || { fail reg.prereq "no $BIN (cargo build --release)"; exit 1; }
if [[ -z "${BASE_OCI:-}" ]]; then
  BASE_OCI="$("$NEMOCLAW_ROOT/scripts/mk-base.sh" --oci 2>"$LOGS/mk-base.log" | tail -n 1)"
fi
if [[ -z "${ART:-}" ]]; then
  ART="$("$NEMOCLAW_ROOT/scripts/mk-artifacts.sh" "$W/artifacts" 2>"$LOGS/mk-artifacts.log" | tail -n 1)"
fi
[[ -f "$BASE_OCI/index.json" && -e "$ART" ]] || { fail reg.prereq "no base OCI layout or artifacts"; exit 1; }
for p in $P0 $((P0 + 1)) $((P0 + 2)) $((P0 + 3)) $((P0 + 4)); do
  if port_busy "$p"; then fail reg.prereq "port $p is in use; set E2E_REG_PORT"; exit 1; fi
done
htpasswd -Bbn e2euser e2epass >"$W/htpasswd"
note "base $BASE_OCI, artifacts $ART, work $W"

# ------------------------------------------------------------------ plain registry ---------
if start_registry plain "$PLAIN"; then pass reg.server; else
  fail reg.server "$(tail_detail "$LOGS/plain.log")"; exit 1
fi
if timeout 600 skopeo copy --quiet --dest-tls-verify=false "oci:$BASE_OCI:latest" "docker://$PLAIN/base:latest" \
  >"$LOGS/push-base.log" 2>&1; then pass reg.skopeo_push_base; else
  fail reg.skopeo_push_base "$(tail_detail "$LOGS/push-base.log")"; exit 1
fi
BD="$(skopeo inspect --tls-verify=false "docker://$PLAIN/base:latest" 2>>"$LOGS/push-base.log" | jq -r .Digest)" || BD=""
BASE_REF="registry://$PLAIN/base@$BD"
LAYER0="$(skopeo inspect --raw --tls-verify=false "docker://$PLAIN/base@$BD" 2>>"$LOGS/push-base.log" \
  | jq -r '.layers[0].digest')" || LAYER0=""
# everything below refers to these two digests
if [[ "$BD $LAYER0" =~ ^sha256:[0-9a-f]{64}\ sha256:[0-9a-f]{64}$ ]]; then pass reg.base_digests; else
  fail reg.base_digests "skopeo inspect gave manifest '$BD', layer '$LAYER0': $(tail_detail "$LOGS/push-base.log")"; exit 1
fi

# 1. pull by digest, build, push by tag; the digest the build prints is what the registry serves
MARK0="$(wc -l <"$LOGS/plain.log")"
if nb build1 XDG_CACHE_HOME="$W/cache1" -- build --base "$BASE_REF" --artifacts "$ART" \
  --output "registry://$PLAIN/nemoclaw:test" --source-date-epoch "$EPOCH" --json; then
  pass reg.build_pull_push
else
  fail reg.build_pull_push "$(tail_detail "$LOGS/build1.err")"
fi
# the first push did upload blobs, and the access log shows it: the zero count below means something
check_re reg.first_push_uploads_counted '^[1-9][0-9]*$' "$(count_requests "$LOGS/plain.log" "$MARK0" "$UPLOAD_RE")"
D1="$(jq -r .digest "$LOGS/build1.out" 2>/dev/null || true)"
RD="$(skopeo inspect --tls-verify=false "docker://$PLAIN/nemoclaw:test" 2>/dev/null | jq -r .Digest || true)"
check_eq reg.pushed_digest_matches_skopeo "$D1" "$RD"
# the summary's transfer tally: every blob of the pushed manifest was uploaded, skipped or
# mounted, and at least the base layer was downloaded
PUSHED_BLOBS="$(skopeo inspect --raw --tls-verify=false "docker://$PLAIN/nemoclaw:test" 2>/dev/null | jq '.layers | length + 1' || echo none)"
L0SIZE="$(skopeo inspect --raw --tls-verify=false "docker://$PLAIN/base@$BD" 2>/dev/null | jq '.layers[0].size' || echo 0)"
check_eq reg.transfer_tally_first_build "$PUSHED_BLOBS blobs sent, base layer down" \
  "$(jq -r --arg r "$PLAIN" --argjson l0 "${L0SIZE:-0}" '.transfer[] | select(.registry == $r)
    | "\(.uploaded_blobs + .skipped_blobs + .mounted_blobs) blobs sent, \(if .downloaded_bytes >= $l0 and $l0 > 0 and .downloaded_blobs >= 2 then "base layer down" else "down \(.downloaded_bytes) B in \(.downloaded_blobs) blobs" end)"' \
    "$LOGS/build1.out" 2>&1)"
# what was pulled sits in the cache under its digest, verified
if [[ -f "$W/cache1/nemoclaw-build/blobs/sha256/${LAYER0#sha256:}" ]]; then
  check_eq reg.pulled_layer_cached_and_verified "${LAYER0#sha256:}" \
    "$(sha256sum <"$W/cache1/nemoclaw-build/blobs/sha256/${LAYER0#sha256:}" | cut -d' ' -f1)"
else
  fail reg.pulled_layer_cached_and_verified "layer $LAYER0 not in $W/cache1"
fi
# skopeo can copy the pushed image back and it is a valid image with the same config
if timeout 300 skopeo copy --quiet --src-tls-verify=false "docker://$PLAIN/nemoclaw:test" "oci:$W/out/back:t" \
  >"$LOGS/copy-back.log" 2>&1; then pass reg.skopeo_pulls_pushed_image; else
  fail reg.skopeo_pulls_pushed_image "$(tail_detail "$LOGS/copy-back.log")"
fi

# 2. the same build again: every blob is already there, nothing is uploaded
#    (no --json: the per-blob log lines are wanted; the digest is the last stdout line)
MARK="$(wc -l <"$LOGS/plain.log")"
if nb build2 XDG_CACHE_HOME="$W/cache1" -- build --base "$BASE_REF" --artifacts "$ART" \
  --output "registry://$PLAIN/nemoclaw:test" --source-date-epoch "$EPOCH"; then
  check_eq reg.second_build_same_digest "$D1" "$(tail -n 1 "$LOGS/build2.out")"
  # no upload, while the log does record this build's blob checks
  check_re reg.second_push_uploads_no_blob '^0 uploads, [1-9][0-9]* blob HEADs$' \
    "$(count_requests "$LOGS/plain.log" "$MARK" "$UPLOAD_RE") uploads, $(count_requests "$LOGS/plain.log" "$MARK" "$BLOB_HEAD_RE") blob HEADs"
  check_grep reg.second_push_logs_already_present 'already present' "$LOGS/build2.err"
  # the summary line says the same: nothing but manifests moved, every blob skipped
  check_grep reg.second_build_transfer_line \
    "^registry 0\.0 MiB down, 0\.0 MiB up \([0-9]+ blob\(s\) cached, $((${PUSHED_BLOBS:-0})) skipped, 0 mounted\)\$" "$LOGS/build2.err"
else
  fail reg.second_build_same_digest "$(tail_detail "$LOGS/build2.err")"
fi

# 3. a tag works but warns that it is not reproducible
nb tagpull XDG_CACHE_HOME="$W/cache1" -- build --base "registry://$PLAIN/base:latest" --artifacts "$ART" \
  --output "oci:$W/out/tagpull:t" --purge-mode whiteout --source-date-epoch "$EPOCH" || true
check_grep reg.tag_pull_warns_not_reproducible "tags move: this build is not reproducible; pin it as registry://$PLAIN/base@$BD" "$LOGS/tagpull.err"

# base.digest annotation of the image in OCI layout DIR (tag t)
base_digest_of() {
  local m
  m="$(jq -r '.manifests[0].digest' "$1/index.json" 2>/dev/null)" || return 0
  jq -r '.annotations["org.opencontainers.image.base.digest"]' "$1/blobs/sha256/${m#sha256:}" 2>/dev/null || true
}

# 3b. a Docker schema 2 manifest (what `docker push` writes) is accepted
if timeout 300 skopeo copy --quiet --format v2s2 --dest-tls-verify=false "oci:$BASE_OCI:latest" \
  "docker://$PLAIN/v2s2:latest" >"$LOGS/push-v2s2.log" 2>&1; then
  V2D="$(skopeo inspect --tls-verify=false "docker://$PLAIN/v2s2:latest" 2>>"$LOGS/push-v2s2.log" | jq -r .Digest)" || V2D=""
  if nb v2s2 XDG_CACHE_HOME="$W/cache1" -- build --base "registry://$PLAIN/v2s2@$V2D" --artifacts "$ART" \
    --output "oci:$W/out/v2s2:t" --purge-mode whiteout --source-date-epoch "$EPOCH"; then
    check_eq reg.pull_docker_schema2 "$V2D" "$(base_digest_of "$W/out/v2s2")"
  else
    fail reg.pull_docker_schema2 "$(tail_detail "$LOGS/v2s2.err")"
  fi
else
  fail reg.pull_docker_schema2 "skopeo: $(tail_detail "$LOGS/push-v2s2.log")"
fi

# 3c. an image index: --platform selects the entry (default linux/<host arch>). Both entries
# are amd64 images (a build refuses an entry whose config is of another architecture than
# the index says), told apart by variant.
IDXD=""
if [[ -n "$D1" && "$D1" != null ]] \
  && timeout 300 skopeo copy --quiet --src-tls-verify=false --dest-tls-verify=false \
    "docker://$PLAIN/base@$BD" "docker://$PLAIN/multi:amd" >"$LOGS/multi.log" 2>&1 \
  && timeout 300 skopeo copy --quiet --src-tls-verify=false --dest-tls-verify=false \
    "docker://$PLAIN/nemoclaw@$D1" "docker://$PLAIN/multi:arm" >>"$LOGS/multi.log" 2>&1; then
  msize() { curl -sS -H 'Accept: application/vnd.oci.image.manifest.v1+json' "http://$PLAIN/v2/multi/manifests/$1" | wc -c; }
  printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[%s,%s]}' \
    "{\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"digest\":\"$BD\",\"size\":$(msize "$BD"),\"platform\":{\"architecture\":\"amd64\",\"os\":\"linux\"}}" \
    "{\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"digest\":\"$D1\",\"size\":$(msize "$D1"),\"platform\":{\"architecture\":\"amd64\",\"os\":\"linux\",\"variant\":\"v3\"}}" \
    >"$W/index.json"
  if [[ "$(curl -sS -o /dev/null -w '%{http_code}' -X PUT -H 'Content-Type: application/vnd.oci.image.index.v1+json' \
    --data-binary "@$W/index.json" "http://$PLAIN/v2/multi/manifests/latest")" == 201 ]]; then
    IDXD="sha256:$(sha256sum <"$W/index.json" | cut -d' ' -f1)"
  fi
fi
if [[ -n "$IDXD" ]]; then
  if nb idx_arm XDG_CACHE_HOME="$W/cache1" -- build --base "registry://$PLAIN/multi@$IDXD" --platform linux/amd64/v3 \
    --artifacts "$ART" --output "oci:$W/out/idx-arm:t" --purge-mode whiteout --source-date-epoch "$EPOCH"; then
    check_eq reg.index_platform_variant "$D1" "$(base_digest_of "$W/out/idx-arm")"
  else
    fail reg.index_platform_variant "$(tail_detail "$LOGS/idx_arm.err")"
  fi
  # no --platform: the entry of the host's architecture
  case "$(uname -m)" in x86_64) want_default="$BD" ;; *) want_default="" ;; esac
  if [[ -z "$want_default" ]]; then
    skip reg.index_platform_default_host "host architecture $(uname -m) is not in the test index"
  elif nb idx_def XDG_CACHE_HOME="$W/cache1" -- build --base "registry://$PLAIN/multi@$IDXD" \
    --artifacts "$ART" --output "oci:$W/out/idx-def:t" --purge-mode whiteout --source-date-epoch "$EPOCH"; then
    check_eq reg.index_platform_default_host "$want_default" "$(base_digest_of "$W/out/idx-def")"
  else
    fail reg.index_platform_default_host "$(tail_detail "$LOGS/idx_def.err")"
  fi
  if nb idx_none XDG_CACHE_HOME="$W/cache1" -- build --base "registry://$PLAIN/multi@$IDXD" --platform linux/s390x \
    --artifacts "$ART" --output "oci:$W/out/idx-none:t"; then
    fail reg.index_unknown_platform_error "succeeded"
  else
    check_grep reg.index_unknown_platform_error 'no manifest for platform linux/s390x \(available: linux/amd64, linux/amd64/v3\)' "$LOGS/idx_none.err"
  fi
else
  fail reg.index_setup "could not push a test index: $(tail_detail "$LOGS/multi.log")"
fi

# 4. unknown digest: 404 naming registry and repository
BAD="sha256:$(printf x | sha256sum | cut -d' ' -f1)"
if nb notfound -- build --base "registry://$PLAIN/base@$BAD" --artifacts "$ART" --output "oci:$W/out/nf:t"; then
  fail reg.unknown_manifest_404 "succeeded"
else
  check_grep reg.unknown_manifest_404 "404 Not Found from $PLAIN: repository base has no manifest $BAD" "$LOGS/notfound.err"
fi
if nb norepo -- build --base "registry://$PLAIN/nosuch:latest" --artifacts "$ART" --output "oci:$W/out/nr:t"; then
  fail reg.unknown_repository_404 "succeeded"
else
  check_grep reg.unknown_repository_404 "404 Not Found from $PLAIN: repository nosuch" "$LOGS/norepo.err"
fi

# 5. plain HTTP is refused for a non-loopback host unless --insecure-registry names it
HOSTIP="$(hostname -I 2>/dev/null | tr ' ' '\n' | grep -E '^[0-9.]+$' | grep -v '^127\.' | head -n 1 || true)"
# (the same storage as the plain registry, served under a LAN address)
if [[ -n "$HOSTIP" ]] && start_registry lan "$HOSTIP:$((P0 + 4))" "" "$W/plain/data"; then
  if nb lan_https -- build --base "registry://$HOSTIP:$((P0 + 4))/base@$BD" --artifacts "$ART" \
    --output "oci:$W/out/lan1:t" --purge-mode whiteout; then
    fail reg.non_loopback_requires_https "succeeded over plain HTTP without --insecure-registry"
  else
    check_grep reg.non_loopback_requires_https "https://$HOSTIP:$((P0 + 4)).*--insecure-registry $HOSTIP:$((P0 + 4))" "$LOGS/lan_https.err"
  fi
  if nb lan_insecure XDG_CACHE_HOME="$W/cache1" -- build --insecure-registry "$HOSTIP" \
    --base "registry://$HOSTIP:$((P0 + 4))/base@$BD" --artifacts "$ART" --output "oci:$W/out/lan2:t" \
    --purge-mode whiteout; then pass reg.insecure_registry_flag_allows_http; else
    fail reg.insecure_registry_flag_allows_http "$(tail_detail "$LOGS/lan_insecure.err")"
  fi
else
  why="no non-loopback IPv4 address${HOSTIP:+ (or no registry on $HOSTIP:$((P0 + 4)))}"
  skip reg.non_loopback_requires_https "$why"
  skip reg.insecure_registry_flag_allows_http "$why"
fi

# ------------------------------------------------------------------ corruption, retries ----
# 6. a proxy flips one byte of the layer: the build fails naming the blob, leaves no output,
#    and nothing lands in the cache
start_proxy corrupt "$CORRUPT" "$PLAIN" corrupt || fail reg.corrupt_proxy "did not start"
if nb corrupt XDG_CACHE_HOME="$W/cache-corrupt" -- build --base "registry://$CORRUPT/base@$BD" \
  --artifacts "$ART" --output "registry://$PLAIN/nemoclaw:corrupt" --source-date-epoch "$EPOCH"; then
  fail reg.corrupt_blob_fails_build "succeeded with a corrupted layer"
else
  check_grep reg.corrupt_blob_fails_build "digest mismatch for blob $LAYER0 from repository $CORRUPT/base" "$LOGS/corrupt.err"
fi
if skopeo inspect --tls-verify=false "docker://$PLAIN/nemoclaw:corrupt" >/dev/null 2>&1; then
  fail reg.corrupt_leaves_no_output "the tag nemoclaw:corrupt exists"
else pass reg.corrupt_leaves_no_output; fi
left="$({ ls "$W/cache-corrupt/nemoclaw-build/blobs/sha256/${LAYER0#sha256:}"
  find "$W/cache-corrupt/nemoclaw-build/tmp" -type f; } 2>/dev/null | head -n 3)"
check_eq reg.corrupt_blob_not_cached "" "$left"
nb corrupt_oci XDG_CACHE_HOME="$W/cache-corrupt" -- build --base "registry://$CORRUPT/base@$BD" \
  --artifacts "$ART" --output "oci:$W/out/corrupt:t" || true
if [[ -e "$W/out/corrupt" ]] || ls -d "$W"/out/.nemoclaw-build-* >/dev/null 2>&1; then
  fail reg.corrupt_leaves_no_oci_output "found $(find "$W/out" -maxdepth 1 \( -name corrupt -o -name '.nemoclaw-build-*' \) | head -n 2 | tr '\n' ' ')"
else pass reg.corrupt_leaves_no_oci_output; fi

# 7. transient 503s are retried (bounded) and the pull succeeds
start_proxy flaky "$FLAKY" "$PLAIN" flaky || fail reg.flaky_proxy "did not start"
if nb flaky XDG_CACHE_HOME="$W/cache-flaky" -- build --base "registry://$FLAKY/base@$BD" --artifacts "$ART" \
  --output "oci:$W/out/flaky:t" --purge-mode whiteout --source-date-epoch "$EPOCH"; then
  check_grep reg.retries_transient_503 'HTTP 503 .*retrying \(2/3\)' "$LOGS/flaky.err"
else
  fail reg.retries_transient_503 "$(tail_detail "$LOGS/flaky.err")"
fi

# ------------------------------------------------------------------ authentication ---------
if start_registry auth "$AUTHR" auth; then pass reg.auth_server; else
  fail reg.auth_server "$(tail_detail "$LOGS/auth.log")"
fi
if timeout 600 skopeo copy --quiet --dest-tls-verify=false --dest-creds e2euser:e2epass \
  "oci:$BASE_OCI:latest" "docker://$AUTHR/base:latest" >"$LOGS/push-base-auth.log" 2>&1; then
  AREF="registry://$AUTHR/base@$BD"
  # 8. anonymous: a clear 401
  if nb anon -- build --base "$AREF" --artifacts "$ART" --output "registry://$AUTHR/nemoclaw:test"; then
    fail reg.auth_anonymous_401 "succeeded without credentials"
  else
    check_grep reg.auth_anonymous_401 "401 Unauthorized from $AUTHR for repository base \(manifest $BD\): no credentials" "$LOGS/anon.err"
  fi
  # 9. wrong password: rejected, saying where the credentials came from
  if nb wrongpw NEMOCLAW_REGISTRY_PASSWORD=nope -- build --registry-user e2euser --base "$AREF" \
    --artifacts "$ART" --output "registry://$AUTHR/nemoclaw:test"; then
    fail reg.auth_wrong_password_401 "succeeded with a wrong password"
  else
    check_grep reg.auth_wrong_password_401 "401 Unauthorized from $AUTHR .*credentials from --registry-user were rejected" "$LOGS/wrongpw.err"
  fi
  # 10. --registry-user + $NEMOCLAW_REGISTRY_PASSWORD: pull, build, push (whiteout: the
  #     base layer is reused and mounted from base instead of uploaded)
  if nb authok XDG_CACHE_HOME="$W/cache-auth" NEMOCLAW_REGISTRY_PASSWORD=e2epass -- build \
    --registry-user e2euser --base "$AREF" --artifacts "$ART" --purge-mode whiteout \
    --output "registry://$AUTHR/nemoclaw:test" --source-date-epoch "$EPOCH"; then
    pass reg.auth_registry_user_password_env
    check_eq reg.auth_pushed_digest_matches_skopeo "$(tail -n 1 "$LOGS/authok.out")" \
      "$(skopeo inspect --tls-verify=false --creds e2euser:e2epass "docker://$AUTHR/nemoclaw:test" | jq -r .Digest)"
    check_grep reg.cross_repo_mount "layer 1 \(sha256:[0-9a-f]{12}\): mounted from base" "$LOGS/authok.err"
  else
    fail reg.auth_registry_user_password_env "$(tail_detail "$LOGS/authok.err")"
  fi
  # 11. --registry-password-stdin
  if printf 'e2epass\n' | env HOME="$W/home" XDG_CACHE_HOME="$W/cache-auth" DOCKER_CONFIG="$W/none" \
    timeout 300 "$BIN" build --registry-user e2euser --registry-password-stdin --base "$AREF" \
    --artifacts "$ART" --purge-mode whiteout --output "oci:$W/out/stdin:t" -q \
    >"$LOGS/stdin.out" 2>"$LOGS/stdin.err"; then pass reg.auth_password_stdin; else
    fail reg.auth_password_stdin "$(tail_detail "$LOGS/stdin.err")"
  fi
  # 12. credentials from an auth file (REGISTRY_AUTH_FILE, docker config.json format)
  printf '{"auths":{"%s":{"auth":"%s"}}}\n' "$AUTHR" "$(printf e2euser:e2epass | base64)" >"$W/auth.json"
  if nb authfile XDG_CACHE_HOME="$W/cache-authfile" REGISTRY_AUTH_FILE="$W/auth.json" -- build \
    --base "$AREF" --artifacts "$ART" --purge-mode whiteout --output "oci:$W/out/authfile:t"; then
    pass reg.auth_registry_auth_file
  else
    fail reg.auth_registry_auth_file "$(tail_detail "$LOGS/authfile.err")"
  fi
  # 13. ... and from $DOCKER_CONFIG/config.json
  mkdir -p "$W/dockercfg" && cp "$W/auth.json" "$W/dockercfg/config.json"
  if nb dockercfg XDG_CACHE_HOME="$W/cache-authfile" DOCKER_CONFIG="$W/dockercfg" -- build \
    --base "$AREF" --artifacts "$ART" --purge-mode whiteout --output "oci:$W/out/dockercfg:t"; then
    pass reg.auth_docker_config
  else
    fail reg.auth_docker_config "$(tail_detail "$LOGS/dockercfg.err")"
  fi
else
  fail reg.auth_skopeo_push_base "$(tail_detail "$LOGS/push-base-auth.log")"
fi

# ------------------------------------------------------------------ cache prune ------------
if nb prune -- cache prune --max-size 0 --cache-dir "$W/cache-flaky/nemoclaw-build"; then
  check_eq reg.cache_prune_to_zero 0 "$(find "$W/cache-flaky/nemoclaw-build" -type f | wc -l)"
else
  fail reg.cache_prune_to_zero "$(tail_detail "$LOGS/prune.err")"
fi

suite_end

#!/usr/bin/env bash
# Registry-shared build cache probes for nemoclaw-build (--cache-to / --cache-from, issue 6),
# against a real Debian `docker-registry` on 127.0.0.1 that this script starts and always stops.
#
#   scripts/e2e-cache.sh
#
# stdout: `PLAN: N`, then one `PASS: name` / `FAIL: name (detail)` line per probe, then
# `N passed, M failed, K skipped`; exit 1 if M > 0 (see scripts/probe.sh). Progress goes to
# stderr as `# ...`. No probe is timed: a hit shows in the --json summary and in what the
# build did (nothing read, rewritten or recompressed), not in its speed.
# Env:
#   BIN                 nemoclaw-build binary (default target/release/nemoclaw-build)
#   BASE_OCI            OCI layout with tag `latest` (default: scripts/mk-base.sh --oci)
#   BASE_TAR            rootfs tarball (default: scripts/mk-base.sh)
#   ART                 artifacts dir (default: scripts/mk-artifacts.sh WORK/artifacts)
#   E2E_CACHE_PORT      registry port; the next five ports must be free too: one plays a
#                       registry that is down, one a proxy that corrupts blobs, one a second
#                       registry, one a proxy that answers 503 once per path, one a proxy
#                       that cuts the first download of each blob (default 5070)
#   E2E_WORK            work dir (default /tmp/nemoclaw-e2e-cache-<pid>); E2E_KEEP=1 keeps it
#   E2E_RESULTS         also append the PASS/FAIL lines to this file (for scripts/e2e.sh)
#   E2E_BUILD_TIMEOUT   seconds per nemoclaw-build run (default 900)
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck disable=SC2034  # used by lib.sh
LOG_TAG=e2e-cache

BIN="${BIN:-$NEMOCLAW_ROOT/target/release/nemoclaw-build}"
P0="${E2E_CACHE_PORT:-5070}"
REG="127.0.0.1:$P0"
DOWN="127.0.0.1:$((P0 + 1))" # nothing listens here
CORRUPT="127.0.0.1:$((P0 + 2))" # proxy to REG that flips one byte of blobs > 64 KiB
OTHER="127.0.0.1:$((P0 + 3))" # a second registry (output elsewhere than the cache)
FLAKY="127.0.0.1:$((P0 + 4))" # proxy to REG that answers 503 to the first request of each path
DROP="127.0.0.1:$((P0 + 5))" # proxy to REG that cuts the first download of each blob > 64 KiB
EPOCH=1700000000
W="${E2E_WORK:-/tmp/nemoclaw-e2e-cache-$$}"
mkdir -p "$W"/{logs,out}
W="$(cd "$W" && pwd -P)"
LOGS="$W/logs"
RESULTS="$W/results"
: >"$RESULTS"
PIDS=()

# shellcheck source=probe.sh
. "$(dirname "${BASH_SOURCE[0]}")/probe.sh"
suite_begin cache
plan 73
jqf() { jq -r "$1" "$2" 2>/dev/null || true; }


# nb NAME -- ARGS...: run the CLI (isolated from the caller's caches and credentials);
# stdout/stderr -> logs, wall time in ms -> logs/NAME.ms
nb() {
  local name="$1" rc=0 t0
  shift 2
  t0=$(now_ms)
  env HOME="$W/home" XDG_CACHE_HOME="$W/cache-default" XDG_RUNTIME_DIR="$W/run" \
    XDG_CONFIG_HOME="$W/home/.config" DOCKER_CONFIG="$W/no-docker-config" REGISTRY_AUTH_FILE= \
    timeout --kill-after=10 "${E2E_BUILD_TIMEOUT:-900}" "$BIN" "$@" \
    >"$LOGS/$name.out" 2>"$LOGS/$name.err" </dev/null || rc=$?
  echo $(($(now_ms) - t0)) >"$LOGS/$name.ms"
  note "nemoclaw-build $1 [$name] rc=$rc in $(cat "$LOGS/$name.ms")ms"
  return $rc
}
ms() { cat "$LOGS/$1.ms" 2>/dev/null || echo 0; }

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

start_registry() { # NAME ADDR
  local name="$1" addr="$2"
  mkdir -p "$W/$name/data"
  printf 'version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: %s\n  delete:\n    enabled: true\nhttp:\n  addr: %s\n' \
    "$W/$name/data" "$addr" >"$W/$name/config.yml"
  docker-registry serve "$W/$name/config.yml" >"$LOGS/$name.log" 2>&1 &
  PIDS+=("$!")
  for _ in $(seq 50); do
    curl -sS -o /dev/null "http://$addr/v2/" 2>/dev/null && return 0
    sleep 0.2
  done
  return 1
}

# the cache tags of repository REPO, one per line
cache_tags() { { curl -sS "http://$REG/v2/$1/tags/list" | jq -r '.tags[]? | select(startswith("cache-"))' | sort; } 2>/dev/null || true; }
get_manifest() { # REPO REF
  curl -sS -H 'Accept: application/vnd.oci.image.manifest.v1+json' "http://$REG/v2/$1/manifests/$2"
}

# hit_checks PREFIX NAME EXPECTED_DIGEST: the --json summary of NAME is a registry hit
hit_checks() {
  local p="$1" n="$2" d="$3"
  check_eq "$p.cache_hit" true "$(jqf .cache_hit "$LOGS/$n.out")"
  check_eq "$p.cache_source_registry" registry "$(jqf .cache_source "$LOGS/$n.out")"
  check_eq "$p.same_digest" "$d" "$(jqf .digest "$LOGS/$n.out")"
  check_eq "$p.layer_actions_cached" "true" \
    "$(jqf '[.layers[] | select(.action != "new")] | (length > 0) and all(.action | startswith("cached ("))' "$LOGS/$n.out")"
}

# only_artifacts_new NAME RUN: in the --json summary of RUN, the artifacts layer is the only
# layer made by this build; base and recipe layers all came from the cache
only_artifacts_new() {
  check_eq "$1" "new: 1, from the cache: all others" \
    "$(jqf '"new: \([.layers[] | select(.action == "new")] | length), from the cache: \(if ([.layers[] | select(.action != "new")] | all(.action | startswith("cached ("))) then "all others" else ([.layers[].action] | join(",")) end)"' "$LOGS/$2.out")"
}

# ------------------------------------------------------------------ prerequisites ----------
for c in docker-registry jq curl timeout sha256sum python3 skopeo; do
  have "$c" || { fail cache.prereq "missing $c"; exit 1; }
done
[[ -x "$BIN" ]] || { fail cache.prereq "no $BIN (cargo build --release)"; exit 1; }
if [[ -z "${BASE_OCI:-}" ]]; then
  BASE_OCI="$("$NEMOCLAW_ROOT/scripts/mk-base.sh" --oci 2>"$LOGS/mk-base.log" | tail -n 1)"
fi
if [[ -z "${BASE_TAR:-}" ]]; then
  BASE_TAR="$("$NEMOCLAW_ROOT/scripts/mk-base.sh" 2>"$LOGS/mk-base-tar.log" | tail -n 1)"
fi
if [[ -z "${ART:-}" ]]; then
  ART="$("$NEMOCLAW_ROOT/scripts/mk-artifacts.sh" "$W/artifacts" 2>"$LOGS/mk-artifacts.log" | tail -n 1)"
fi
[[ -f "$BASE_OCI/index.json" && -f "$BASE_TAR" && -e "$ART" ]] || {
  fail cache.prereq "no base OCI layout, base tarball or artifacts"
  exit 1
}
for p in "$P0" $((P0 + 1)) $((P0 + 2)) $((P0 + 3)) $((P0 + 4)) $((P0 + 5)); do
  if port_busy "$p"; then fail cache.prereq "port $p is in use; set E2E_CACHE_PORT"; exit 1; fi
done
note "base $BASE_OCI and $BASE_TAR, artifacts $ART, work $W"
COMMON=(--artifacts "$ART" --source-date-epoch "$EPOCH")

if start_registry reg "$REG"; then pass cache.server; else
  fail cache.server "$(tail_detail "$LOGS/reg.log")"
  exit 1
fi

# (--no-cache with --cache-to and a tagged cache location are refused: tests/cache.rs)

# ------------------------------------------------------------------ OCI layout base --------
# 1. cold build with an empty cache dir: computes everything, pushes the cache entry
if nb oci_cold -- build --base "oci:$BASE_OCI:latest" --output "oci:$W/out/x1:latest" "${COMMON[@]}" \
  --cache-dir "$W/A" --cache-to "registry://$REG/cache"; then
  pass cache.oci_cold_build
else
  fail cache.oci_cold_build "$(tail_detail "$LOGS/oci_cold.err")"
fi
D1="$(tail -n 1 "$LOGS/oci_cold.out")"
check_grep cache.oci_cache_to_pushed "^cache-to: pushed registry://$REG/cache:cache-[0-9a-f]{32} \(2 layers; 4 blob\(s\) uploaded" "$LOGS/oci_cold.err"

# 2. the entry: an OCI manifest with the cache artifactType, the empty config, the record
#    first, and the key as annotation; its tag is derived from the key
TAG="$(cache_tags cache | head -n 1)"
get_manifest cache "$TAG" >"$W/m.json" 2>/dev/null || true
KEY="$(jqf '.annotations["dev.nemoclaw.cache.key"]' "$W/m.json")"
check_eq cache.manifest_tag_from_key "$TAG" "cache-$(printf '%s' "$KEY" | sha256sum | cut -c1-32)"
check_eq cache.manifest_shape \
  "application/vnd.nemoclaw.build-cache.v1+json application/vnd.oci.empty.v1+json application/vnd.nemoclaw.build-cache.v1+json 3" \
  "$(jqf '"\(.artifactType) \(.config.mediaType) \(.layers[0].mediaType) \(.layers | length)"' "$W/m.json")"

# 3. a fresh cache dir with --cache-from: a hit, identical digest, nothing recompressed
if nb oci_warm -- build --base "oci:$BASE_OCI:latest" --output "oci:$W/out/x2:latest" "${COMMON[@]}" \
  --cache-dir "$W/B" --cache-from "registry://$REG/cache" --json; then
  hit_checks cache.oci_registry_hit oci_warm "$D1"
else
  fail cache.oci_registry_hit "$(tail_detail "$LOGS/oci_warm.err")"
fi
only_artifacts_new cache.oci_registry_hit_only_artifacts_layer_new oci_warm
note "timings (not checked): cold $(ms oci_cold) ms, registry hit $(ms oci_warm) ms"

# 4. log lines of a hit (another fresh cache dir, no --json): an unknown repository first is
#    a silent miss, then the hit; no layer is read, rewritten or recompressed
if nb oci_warm_log -- build --base "oci:$BASE_OCI:latest" --output "oci:$W/out/x3:latest" "${COMMON[@]}" \
  --cache-dir "$W/B2" --cache-from "registry://$REG/nothere" --cache-from "registry://$REG/cache"; then
  check_grep cache.miss_not_found_logged "^cache-from: miss registry://$REG/nothere:$TAG \(not found\)" "$LOGS/oci_warm_log.err"
  check_grep cache.hit_logged "^cache-from: hit registry://$REG/cache:$TAG \(2 layers, nothing recompressed\)" "$LOGS/oci_warm_log.err"
  check_nogrep cache.hit_reads_no_layer '^(reading|rewriting|copying|indexed|rewritten|recompressed) ' "$LOGS/oci_warm_log.err"
  check_nogrep cache.miss_is_no_warning '^warning:' "$LOGS/oci_warm_log.err"
  check_eq cache.hit_logged_digest "$D1" "$(tail -n 1 "$LOGS/oci_warm_log.out")"
else
  fail cache.hit_logged "$(tail_detail "$LOGS/oci_warm_log.err")"
fi

# 5. the registry hit filled the local cache: the next build there is a local hit
if nb oci_local -- build --base "oci:$BASE_OCI:latest" --output "oci:$W/out/x4:latest" "${COMMON[@]}" \
  --cache-dir "$W/B" --cache-from "registry://$REG/cache" --json; then
  check_eq cache.local_after_registry "true local $D1" \
    "$(jqf '"\(.cache_hit) \(.cache_source) \(.digest)"' "$LOGS/oci_local.out")"
else
  fail cache.local_after_registry "$(tail_detail "$LOGS/oci_local.err")"
fi

# 6. pushing again (a local hit) uploads nothing: the tag already holds this entry
if nb oci_repush -- build --base "oci:$BASE_OCI:latest" --output "oci:$W/out/x5:latest" "${COMMON[@]}" \
  --cache-dir "$W/A" --cache-to "registry://$REG/cache"; then
  check_grep cache.repush_up_to_date "^cache-to: registry://$REG/cache:$TAG is up to date" "$LOGS/oci_repush.err"
else
  fail cache.repush_up_to_date "$(tail_detail "$LOGS/oci_repush.err")"
fi

# ------------------------------------------------------------------ tarball base -----------
# 7. cold: the tar is not in the registry yet (miss), is hashed for the key, and pushed
if nb tar_cold -- build --base "tar:$BASE_TAR" --output "oci:$W/out/t1:latest" "${COMMON[@]}" \
  --cache-dir "$W/C" --cache-from "registry://$REG/cache" --cache-to "registry://$REG/cache"; then
  pass cache.tar_cold_build
  check_grep cache.tar_cold_miss_logged "^cache-from: miss registry://$REG/cache:cache-[0-9a-f]{32} \(not found\)" "$LOGS/tar_cold.err"
  check_grep cache.tar_cache_to_pushed "^cache-to: pushed registry://$REG/cache:cache-" "$LOGS/tar_cold.err"
else
  fail cache.tar_cold_build "$(tail_detail "$LOGS/tar_cold.err")"
fi
T1="$(tail -n 1 "$LOGS/tar_cold.out")"
# 8. a fresh cache dir knows nothing about the tarball: it is hashed, then the entry hits
if nb tar_warm -- build --base "tar:$BASE_TAR" --output "oci:$W/out/t2:latest" "${COMMON[@]}" \
  --cache-dir "$W/D" --cache-from "registry://$REG/cache" --json; then
  hit_checks cache.tar_registry_hit tar_warm "$T1"
  check_eq cache.tar_base_digest_is_file_sha256 "sha256:$(sha256sum <"$BASE_TAR" | cut -d' ' -f1)" \
    "$(jqf .record.base_digest "$LOGS/tar_warm.out")"
else
  fail cache.tar_registry_hit "$(tail_detail "$LOGS/tar_warm.err")"
fi
only_artifacts_new cache.tar_registry_hit_only_artifacts_layer_new tar_warm
note "timings (not checked): tar cold $(ms tar_cold) ms, tar registry hit $(ms tar_warm) ms"

# ------------------------------------------------------------------ CI flow (issue 17) -----
# Registry in, registry out, on empty runners (a fresh --cache-dir each): the second run
# changes only the artifacts. Its cached layers must stay in the registry: mounted into the
# output repository (or skipped), never downloaded; only the artifacts layer, the config and
# the manifests move.
tally() { # NAME REGISTRY FIELD: a transfer counter of the --json summary (0 when absent)
  jq -r --arg r "$2" --arg f "$3" '[.transfer[] | select(.registry == $r) | .[$f]] | add // 0' "$LOGS/$1.out" 2>/dev/null || echo "?"
}
ART2="$W/artifacts-changed"
rm -rf "$ART2"; cp -a "$ART" "$ART2"
printf 'changed by the CI flow probe\n' >"$ART2/CHANGED.txt"
BASE_REF=""
if timeout 600 skopeo copy --quiet --dest-tls-verify=false "oci:$BASE_OCI:latest" "docker://$REG/ci-base:1" \
  >"$LOGS/ci-base.log" 2>&1; then
  BASE_REF="registry://$REG/ci-base@$(skopeo inspect --raw --tls-verify=false "docker://$REG/ci-base:1" 2>/dev/null | sha256sum | cut -d' ' -f1 | sed 's/^/sha256:/')"
fi
if [[ -n "$BASE_REF" ]] && nb ci_cold -- build --base "$BASE_REF" --output "registry://$REG/ci-app:1" \
  --artifacts "$ART" --source-date-epoch "$EPOCH" --cache-dir "$W/ci1" --cache-to "registry://$REG/ci-cache" --json; then
  pass cache.ci_cold_build
  # the image push mounts the layers its own --cache-to entry just uploaded (same registry)
  check_eq cache.ci_cold_image_mounts_cache_layers "$(jqf '(.layers | length) - 1' "$LOGS/ci_cold.out")" \
    "$(tally ci_cold "$REG" mounted_blobs)"
else
  fail cache.ci_cold_build "$(tail_detail "$LOGS/ci_cold.err") $(tail_detail "$LOGS/ci-base.log")"
fi
if nb ci_warm -- build --base "$BASE_REF" --output "registry://$REG/ci-app2:1" \
  --artifacts "$ART2" --source-date-epoch "$EPOCH" --cache-dir "$W/ci2" --cache-from "registry://$REG/ci-cache" --json; then
  check_eq cache.ci_warm_hit "true registry" "$(jqf '"\(.cache_hit) \(.cache_source)"' "$LOGS/ci_warm.out")"
  only_artifacts_new cache.ci_warm_only_artifacts_layer_new ci_warm
  CACHED_LAYERS="$(jqf '[.layers[] | select(.action | startswith("cached ("))] | length' "$LOGS/ci_warm.out")"
  down="$(tally ci_warm "$REG" downloaded_bytes)"
  if [[ "$down" =~ ^[0-9]+$ ]] && ((down < 1048576)); then pass cache.ci_warm_downloads_under_1mib
  else fail cache.ci_warm_downloads_under_1mib "downloaded $down bytes"; fi
  # the base config and the cache record: the only blobs fetched
  check_eq cache.ci_warm_downloads_only_config_and_record 2 "$(tally ci_warm "$REG" downloaded_blobs)"
  check_eq cache.ci_warm_cached_layers_mounted "$CACHED_LAYERS" "$(tally ci_warm "$REG" mounted_blobs)"
  check_eq cache.ci_warm_uploads_artifacts_and_config 2 "$(tally ci_warm "$REG" uploaded_blobs)"
  check_nogrep cache.ci_warm_reads_no_layer '^(reading|rewriting|copying|indexed|rewritten|recompressed) ' "$LOGS/ci_warm.err"
else
  fail cache.ci_warm_hit "$(tail_detail "$LOGS/ci_warm.err")"
  CACHED_LAYERS=unknown
fi
# the pushed image is whole: skopeo copies every blob of it back out
if timeout 300 skopeo copy --quiet --src-tls-verify=false "docker://$REG/ci-app2:1" "oci:$W/out/ci-back:t" \
  >"$LOGS/ci-back.log" 2>&1; then pass cache.ci_warm_image_complete
else fail cache.ci_warm_image_complete "$(tail_detail "$LOGS/ci-back.log")"; fi
# the same inputs to an oci: layout (a hit that must download) give the same digest
if nb ci_layout -- build --base "$BASE_REF" --output "oci:$W/out/ci-layout:t" \
  --artifacts "$ART2" --source-date-epoch "$EPOCH" --cache-dir "$W/ci3" --cache-from "registry://$REG/ci-cache" --json; then
  check_eq cache.ci_remote_and_downloaded_hits_agree "$(jqf .digest "$LOGS/ci_warm.out")" "$(jqf .digest "$LOGS/ci_layout.out")"
else
  fail cache.ci_remote_and_downloaded_hits_agree "$(tail_detail "$LOGS/ci_layout.err")"
fi
# output to another registry: the cached layers stream registry to registry, no local copy
if start_registry other "$OTHER"; then
  if nb ci_other -- build --base "$BASE_REF" --output "registry://$OTHER/app:1" \
    --artifacts "$ART2" --source-date-epoch "$EPOCH" --cache-dir "$W/ci4" --cache-from "registry://$REG/ci-cache" --json; then
    check_eq cache.ci_other_same_digest "$(jqf .digest "$LOGS/ci_warm.out")" "$(jqf .digest "$LOGS/ci_other.out")"
    check_eq cache.ci_other_streams_cached_layers "$CACHED_LAYERS" \
      "$(( $(tally ci_other "$OTHER" uploaded_blobs) - 2 ))"
    kept=0
    for d in $(jqf '.layers[] | select(.action != "new") | .digest' "$LOGS/ci_other.out"); do
      [[ -e "$W/ci4/blobs/sha256/${d#sha256:}" ]] && kept=$((kept + 1))
    done
    check_eq cache.ci_other_no_local_copy 0 "$kept"
    if timeout 300 skopeo copy --quiet --src-tls-verify=false "docker://$OTHER/app:1" "oci:$W/out/ci-other:t" \
      >"$LOGS/ci-other-back.log" 2>&1; then pass cache.ci_other_image_complete
    else fail cache.ci_other_image_complete "$(tail_detail "$LOGS/ci-other-back.log")"; fi
  else
    fail cache.ci_other_same_digest "$(tail_detail "$LOGS/ci_other.err")"
    fail cache.ci_other_streams_cached_layers "build failed"
    fail cache.ci_other_no_local_copy "build failed"
    fail cache.ci_other_image_complete "build failed"
  fi
else
  fail cache.ci_other_registry "second registry did not start: $(tail_detail "$LOGS/other.log")"
fi
note "timings (not checked): CI cold $(ms ci_cold) ms, CI warm (registry out) $(ms ci_warm) ms, other registry $(ms ci_other) ms"

# ------------------------------------------------------------------ failures never fail ----
# 9. the cache registry is down: one warning, the build succeeds (whiteout: a cheap cold
#    build) and still pushes to the registry that is up
if nb down -- build --base "oci:$BASE_OCI:latest" --output "oci:$W/out/w1:latest" "${COMMON[@]}" \
  --purge-mode whiteout --cache-dir "$W/E" --cache-from "registry://$DOWN/cache" \
  --cache-to "registry://$REG/cache"; then
  pass cache.registry_down_build_succeeds
  check_grep cache.registry_down_warns "^warning: cache-from registry://$DOWN/cache:cache-[0-9a-f]{32}: .*continuing without this cache" "$LOGS/down.err"
else
  fail cache.registry_down_build_succeeds "$(tail_detail "$LOGS/down.err")"
fi
W1="$(tail -n 1 "$LOGS/down.out")"
# 10. a tag holding another key's entry is a miss: point the whiteout build's tag at the
#     rewrite entry, then a fresh whiteout build must rebuild (and give the right digest)
WTAG=""
for t in $(cache_tags cache); do
  if [[ "$(get_manifest cache "$t" | jq -r '.annotations["dev.nemoclaw.cache.key"]' 2>/dev/null)" == *"|mode=Whiteout|"* ]]; then
    WTAG="$t"
    break
  fi
done
if [[ -n "$WTAG" ]] && [[ "$(curl -sS -o /dev/null -w '%{http_code}' -X PUT \
  -H 'Content-Type: application/vnd.oci.image.manifest.v1+json' --data-binary "@$W/m.json" \
  "http://$REG/v2/cache/manifests/$WTAG")" == 201 ]]; then
  if nb mismatch -- build --base "oci:$BASE_OCI:latest" --output "oci:$W/out/w2:latest" "${COMMON[@]}" \
    --purge-mode whiteout --cache-dir "$W/F" --cache-from "registry://$REG/cache" --json; then
    check_eq cache.other_key_is_a_miss "false none $W1" \
      "$(jqf '"\(.cache_hit) \(.cache_source) \(.digest)"' "$LOGS/mismatch.out")"
  else
    fail cache.other_key_is_a_miss "$(tail_detail "$LOGS/mismatch.err")"
  fi
else
  fail cache.other_key_is_a_miss "could not find or overwrite the whiteout entry's tag ('$WTAG')"
fi

# ------------------------------------------------------------------ corrupted blob ---------
# 11. a cache blob corrupted on the way (a proxy flips one byte): a warning naming the
#     digest mismatch, then a normal cold build with the right digest; nothing corrupted
#     is kept in the cache
python3 "$NEMOCLAW_ROOT/scripts/e2e-proxy.py" "$CORRUPT" "$REG" corrupt >"$LOGS/corrupt-proxy.log" 2>&1 &
PIDS+=("$!")
for _ in $(seq 50); do port_busy "$((P0 + 2))" && break; sleep 0.1; done
if nb corrupt -- build --base "oci:$BASE_OCI:latest" --output "oci:$W/out/c1:latest" "${COMMON[@]}" \
  --cache-dir "$W/G" --cache-from "registry://$CORRUPT/cache" --json; then
  pass cache.corrupt_blob_build_succeeds
else
  fail cache.corrupt_blob_build_succeeds "$(tail_detail "$LOGS/corrupt.err")"
fi
check_grep cache.corrupt_blob_warns "^warning: cache-from registry://$CORRUPT/cache:cache-[0-9a-f]{32}: .*digest mismatch for blob sha256:[0-9a-f]{64}.*continuing without this cache" "$LOGS/corrupt.err"
check_eq cache.corrupt_blob_is_a_miss "false none $D1" "$(jqf '"\(.cache_hit) \(.cache_source) \(.digest)"' "$LOGS/corrupt.out")"
bad_blobs=""
for f in "$W/G"/blobs/sha256/*; do
  [[ -f "$f" ]] || continue
  [[ "$(sha256sum <"$f" | cut -d' ' -f1)" == "$(basename "$f")" ]] || bad_blobs+="$(basename "$f") "
done
check_eq cache.corrupt_blob_not_cached "" "$bad_blobs"

# 12. a cached layer corrupted on its way registry to registry (cache read through the
#     corrupting proxy, output to the second registry): the build fails naming the blob, and
#     the output tag was never pushed
if nb corrupt_stream -- build --base "$BASE_REF" --output "registry://$OTHER/corrupt:1" \
  --artifacts "$ART2" --source-date-epoch "$EPOCH" --cache-dir "$W/ci5" \
  --cache-from "registry://$CORRUPT/ci-cache"; then
  fail cache.corrupt_stream_fails "the build succeeded"
else
  check_grep cache.corrupt_stream_fails "bytes hashing to sha256:[0-9a-f]{64}, not sha256:[0-9a-f]{64}" "$LOGS/corrupt_stream.err"
fi
check_eq cache.corrupt_stream_no_tag 404 \
  "$(curl -s -o /dev/null -w '%{http_code}' -H 'Accept: application/vnd.oci.image.manifest.v1+json' "http://$OTHER/v2/corrupt/manifests/1")"

# ------------------------------------------------------------------ whiteout, known base ---
# Issue 17.3: whiteout mode caches each base layer's index (file list, dpkg database, ELF
# flags) keyed by the layer digest, locally and as `index-*` artifacts next to --cache-to.
# A runner that never saw the base but has --cache-from downloads no base layer: the model
# comes from the records, the layers are mounted into the output repository at push.
# The warm run changes the epoch (another build-cache key): a build-cache miss, same base.
# ciw_layers NAME: base layer digests of the --json summary (actions reused)
ciw_layers() { jqf '[.layers[] | select(.action == "reused" or .action == "cached (reused)") | .digest] | .[]' "$LOGS/$1.out"; }
index_tags() { { curl -sS "http://$REG/v2/$1/tags/list" | jq -r '.tags[]? | select(startswith("index-"))' | sort; } 2>/dev/null || true; }
WEPOCH=$((EPOCH + 1))
NBASE=0
if [[ -n "$BASE_REF" ]] && nb ciw_cold -- build --base "$BASE_REF" --output "registry://$REG/ciw-app:1" \
  --purge-mode whiteout --artifacts "$ART" --source-date-epoch "$EPOCH" --cache-dir "$W/ciw1" \
  --cache-to "registry://$REG/ciw-cache" --json; then
  pass cache.ciw_cold_build
  NBASE="$(ciw_layers ciw_cold | wc -l)"
  # a base never seen: every layer indexed (streamed), none from the index cache
  check_eq cache.ciw_cold_streamed_index "$NBASE 0" "$(jqf '"\(.layer_index.layers) \(.layer_index.from_cache)"' "$LOGS/ciw_cold.out")"
else
  fail cache.ciw_cold_build "$(tail_detail "$LOGS/ciw_cold.err")"
  fail cache.ciw_cold_streamed_index "build failed"
fi
ITAG="$(index_tags ciw-cache | head -n 1)"
get_manifest ciw-cache "${ITAG:-none}" >"$W/im.json" 2>/dev/null || true
IKEY="$(jqf '.annotations["dev.nemoclaw.layer-index.key"]' "$W/im.json")"
check_eq cache.ciw_index_tag_from_key "$ITAG" "index-$(printf '%s' "$IKEY" | sha256sum | cut -c1-32)"
check_eq cache.ciw_index_manifest_shape \
  "application/vnd.nemoclaw.layer-index.v1+zstd application/vnd.oci.empty.v1+json application/vnd.nemoclaw.layer-index.v1+zstd 1 $NBASE" \
  "$(jqf '"\(.artifactType) \(.config.mediaType) \(.layers[0].mediaType) \(.layers | length)"' "$W/im.json") $(index_tags ciw-cache | wc -l)"
# the uncached reference: same inputs, no cache at all
nb ciw_ref -- build --base "$BASE_REF" --output "oci:$W/out/ciw-ref:t" --purge-mode whiteout \
  --artifacts "$ART2" --source-date-epoch "$WEPOCH" --no-cache --json || true
if nb ciw_warm -- build --base "$BASE_REF" --output "registry://$REG/ciw-app2:1" --purge-mode whiteout \
  --artifacts "$ART2" --source-date-epoch "$WEPOCH" --cache-dir "$W/ciw2" \
  --cache-from "registry://$REG/ciw-cache" --json; then
  check_eq cache.ciw_warm_build_cache_miss "false" "$(jqf .cache_hit "$LOGS/ciw_warm.out")"
  check_eq cache.ciw_warm_index_from_cache "$NBASE $NBASE" "$(jqf '"\(.layer_index.layers) \(.layer_index.from_cache)"' "$LOGS/ciw_warm.out")"
  kept=0
  for d in $(ciw_layers ciw_warm); do
    [[ -e "$W/ciw2/blobs/sha256/${d#sha256:}" ]] && kept=$((kept + 1))
  done
  check_eq cache.ciw_warm_no_base_layer_downloaded 0 "$kept"
  # the base config and one index record per layer: the only blobs fetched
  check_eq cache.ciw_warm_downloads_config_and_index "$((1 + NBASE))" "$(tally ciw_warm "$REG" downloaded_blobs)"
  check_eq cache.ciw_warm_base_layers_mounted_or_skipped "$NBASE" \
    "$(( $(tally ciw_warm "$REG" mounted_blobs) + $(tally ciw_warm "$REG" skipped_blobs) ))"
  check_eq cache.ciw_warm_same_digest_as_uncached "$(jqf .digest "$LOGS/ciw_ref.out")" "$(jqf .digest "$LOGS/ciw_warm.out")"
  note "whiteout CI flow (measured): cold downloaded $(tally ciw_cold "$REG" downloaded_bytes) bytes, warm (known base, build-cache miss) $(tally ciw_warm "$REG" downloaded_bytes) bytes; $(ms ciw_cold) ms vs $(ms ciw_warm) ms"
else
  fail cache.ciw_warm_build_cache_miss "$(tail_detail "$LOGS/ciw_warm.err")"
  for n in index_from_cache no_base_layer_downloaded downloads_config_and_index base_layers_mounted_or_skipped same_digest_as_uncached; do
    fail "cache.ciw_warm_$n" "build failed"
  done
fi
if timeout 300 skopeo copy --quiet --src-tls-verify=false "docker://$REG/ciw-app2:1" "oci:$W/out/ciw-back:t" \
  >"$LOGS/ciw-back.log" 2>&1; then pass cache.ciw_warm_image_complete
else fail cache.ciw_warm_image_complete "$(tail_detail "$LOGS/ciw-back.log")"; fi

# index records read through the corrupting proxy: those it breaks (> 64 KiB) are a warning
# naming the digest mismatch, their layers are read instead; same image, nothing bad kept
if nb ciw_corrupt -- build --base "$BASE_REF" --output "registry://$REG/ciw-app3:1" --purge-mode whiteout \
  --artifacts "$ART2" --source-date-epoch "$WEPOCH" --cache-dir "$W/ciw3" \
  --cache-from "registry://$CORRUPT/ciw-cache" --json; then
  pass cache.ciw_corrupt_index_build_succeeds
  big="$(for t in $(index_tags ciw-cache); do get_manifest ciw-cache "$t" | jq -r '.layers[0].size'; done | awk '$1 > 65536' | wc -l)"
  check_eq cache.ciw_corrupt_index_warns "$big" \
    "$(grep -c "^warning: cache-from registry://$CORRUPT/ciw-cache: layer index of sha256:[0-9a-f]*: .*digest mismatch.*the layer is read instead" "$LOGS/ciw_corrupt.err")"
  check_eq cache.ciw_corrupt_index_same_digest "$(jqf .digest "$LOGS/ciw_warm.out")" "$(jqf .digest "$LOGS/ciw_corrupt.out")"
else
  fail cache.ciw_corrupt_index_build_succeeds "$(tail_detail "$LOGS/ciw_corrupt.err")"
  fail cache.ciw_corrupt_index_warns "build failed"
  fail cache.ciw_corrupt_index_same_digest "build failed"
fi
bad_blobs=""
for f in "$W/ciw3"/blobs/sha256/*; do
  [[ -f "$f" ]] || continue
  [[ "$(sha256sum <"$f" | cut -d' ' -f1)" == "$(basename "$f")" ]] || bad_blobs+="$(basename "$f") "
done
check_eq cache.ciw_corrupt_index_not_cached "" "$bad_blobs"

# through a proxy that answers 503 to the first request of each path: retried, then served
python3 "$NEMOCLAW_ROOT/scripts/e2e-proxy.py" "$FLAKY" "$REG" flaky >"$LOGS/flaky-proxy.log" 2>&1 &
PIDS+=("$!")
for _ in $(seq 50); do port_busy "$((P0 + 4))" && break; sleep 0.1; done
if nb ciw_flaky -- build --base "$BASE_REF" --output "registry://$REG/ciw-app4:1" --purge-mode whiteout \
  --artifacts "$ART2" --source-date-epoch "$WEPOCH" --cache-dir "$W/ciw4" \
  --cache-from "registry://$FLAKY/ciw-cache"; then
  check_grep cache.ciw_flaky_retries "^$FLAKY: HTTP 503.*retrying" "$LOGS/ciw_flaky.err"
  check_eq cache.ciw_flaky_index_from_cache "$NBASE $(jqf .digest "$LOGS/ciw_warm.out")" \
    "$(grep -c '^indexed layer .*(layer index cache)$' "$LOGS/ciw_flaky.err") $(tail -n 1 "$LOGS/ciw_flaky.out")"
else
  fail cache.ciw_flaky_retries "$(tail_detail "$LOGS/ciw_flaky.err")"
  fail cache.ciw_flaky_index_from_cache "build failed"
fi

# a base never seen, streamed through a proxy that cuts each blob's first download: the
# download is retried and the indexer gets each byte once (the record is the one a clean
# stream made); the pushed image is whole
python3 "$NEMOCLAW_ROOT/scripts/e2e-proxy.py" "$DROP" "$REG" drop >"$LOGS/drop-proxy.log" 2>&1 &
PIDS+=("$!")
for _ in $(seq 50); do port_busy "$((P0 + 5))" && break; sleep 0.1; done
record_of() { jq -r .digest "$1"/derived/layer-index/*.json 2>/dev/null | sort | tr '\n' ' '; }
if nb ciw_drop -- build --base "${BASE_REF/$REG/$DROP}" --output "registry://$REG/ciw-app5:1" \
  --purge-mode whiteout --artifacts "$ART2" --source-date-epoch "$WEPOCH" --cache-dir "$W/ciw6"; then
  check_grep cache.ciw_drop_retried "broke off after [0-9]+ of [0-9]+ bytes.*retrying" "$LOGS/ciw_drop.err"
  if timeout 300 skopeo copy --quiet --src-tls-verify=false "docker://$REG/ciw-app5:1" "oci:$W/out/ciw-drop:t" \
    >"$LOGS/ciw-drop-back.log" 2>&1; then pass cache.ciw_drop_image_complete
  else fail cache.ciw_drop_image_complete "$(tail_detail "$LOGS/ciw-drop-back.log")"; fi
  want="$(record_of "$W/ciw1")"
  check_eq cache.ciw_drop_same_record "${want:-(no record in the cold run)}" "$(record_of "$W/ciw6")"
else
  fail cache.ciw_drop_retried "$(tail_detail "$LOGS/ciw_drop.err")"
  fail cache.ciw_drop_image_complete "build failed"
  fail cache.ciw_drop_same_record "build failed"
fi

# a base never seen, streamed through the corrupting proxy (download, verify, inflate and
# index in one pass): the build fails naming the blob; no output tag, nothing cached
CBASE="${BASE_REF/$REG/$CORRUPT}"
if nb ciw_stream_corrupt -- build --base "$CBASE" --output "registry://$OTHER/ciw-bad:1" --purge-mode whiteout \
  --artifacts "$ART2" --source-date-epoch "$WEPOCH" --cache-dir "$W/ciw5"; then
  fail cache.ciw_stream_corrupt_fails "the build succeeded"
else
  check_grep cache.ciw_stream_corrupt_fails "digest mismatch for blob sha256:[0-9a-f]{64}" "$LOGS/ciw_stream_corrupt.err"
fi
check_eq cache.ciw_stream_corrupt_no_tag 404 \
  "$(curl -s -o /dev/null -w '%{http_code}' -H 'Accept: application/vnd.oci.image.manifest.v1+json' "http://$OTHER/v2/ciw-bad/manifests/1")"
check_eq cache.ciw_stream_corrupt_nothing_cached "0 0" \
  "$(find "$W/ciw5/derived" -path '*layer-index*' -type f 2>/dev/null | wc -l) $(for d in $(ciw_layers ciw_cold); do [[ -e "$W/ciw5/blobs/sha256/${d#sha256:}" ]] && echo x; done | wc -l)"

suite_end

#!/usr/bin/env bash
# Multi-stage builds for real (issue 18): artifacts taken from a builder image made by
# `podman build` (FROM the test base, files written by RUN, no network), exported with
# skopeo to an OCI layout and pushed to a local docker-registry that this script starts
# and always stops. Builds from it by layout and by registry digest, compares with the
# same files given as a directory, runs the result, refuses a hostile builder, warns on
# (and with --strict refuses) a tag, and verifies from the recorded builder.
#
#   scripts/e2e-builder.sh
#
# stdout: `PLAN: N`, then one `PASS: name` / `FAIL: name (detail)` line per probe, then
# `N passed, M failed, K skipped`; exit 1 if M > 0 (see scripts/probe.sh). Progress goes to
# stderr as `# ...`. Builds share one cache dir, so only the first does the full purge.
# Env:
#   BIN                 nemoclaw-build binary (default target/release/nemoclaw-build)
#   BASE_TAR            rootfs tarball (default: scripts/mk-base.sh)
#   E2E_BUILDER_PORT    first registry port to try (default 5090; up to +20)
#   E2E_WORK            work dir (default /tmp/nemoclaw-e2e-builder-<pid>); E2E_KEEP=1 keeps it
#   E2E_BUILD_TIMEOUT   seconds per command (default 900)
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck disable=SC2034  # used by lib.sh
LOG_TAG=e2e-builder

BIN="${BIN:-$NEMOCLAW_ROOT/target/release/nemoclaw-build}"
EPOCH=1700000000
T="${E2E_BUILD_TIMEOUT:-900}"
W="${E2E_WORK:-/tmp/nemoclaw-e2e-builder-$$}"
mkdir -p "$W"/{logs,out,ctx}
W="$(cd "$W" && pwd -P)"
LOGS="$W/logs"
RESULTS="$W/results"
: >"$RESULTS"
PIDS=()
IMGS=()
TAGBASE="localhost/nemoclaw-e2e-builder-$$"

# shellcheck source=probe.sh
. "$(dirname "${BASH_SOURCE[0]}")/probe.sh"
suite_cleanup() { local i; for i in "${IMGS[@]}"; do pm rmi "$i" >/dev/null 2>&1 || true; done; }
suite_begin builder
plan 25

[[ -x "$BIN" ]] || die "no nemoclaw-build binary at $BIN: run cargo build --release first"
cp "$BIN" "$W/nemoclaw-build" # cargo may replace the binary while we run
BIN="$W/nemoclaw-build"
BASE_TAR="${BASE_TAR:-$("$NEMOCLAW_ROOT/scripts/mk-base.sh" 2>"$LOGS/mk-base.log" | tail -n 1)}"
[[ -f "$BASE_TAR" ]] || die "no base tarball (see $LOGS/mk-base.log)"

# nb NAME ARGS...: the CLI with a private tool cache; stdout/stderr -> logs/NAME.{out,err}
nb() {
  local name="$1" rc=0
  shift
  XDG_CACHE_HOME="$W/tool-cache" timeout --kill-after=10 "$T" "$BIN" "$@" \
    >"$LOGS/$name.out" 2>"$LOGS/$name.err" </dev/null || rc=$?
  note "nemoclaw-build $1 [$name] rc=$rc"
  return $rc
}
# build NAME OUT ARGS...: a build of the built-in recipe into oci:$W/out/OUT:t, shared cache
build() {
  local name="$1" out="$2"
  shift 2
  nb "$name" build --base "tar:$BASE_TAR" --output "oci:$W/out/$out:t" \
    --source-date-epoch "$EPOCH" --cache-dir "$W/cache" --json "$@"
}
manifest() { # LAYOUT: path of the only manifest blob
  local d
  d="$(jq -r '.manifests[0].digest' "$1/index.json")"
  printf '%s\n' "$1/blobs/sha256/${d#sha256:}"
}
config_digest() { jq -r .config.digest "$(manifest "$1")" 2>/dev/null || echo none; }
layer_digests() { jq -c '[.layers[].digest]' "$(manifest "$1")" 2>/dev/null || echo none; }
last_layer() { # LAYOUT: path of the last (artifacts) layer blob
  local d
  d="$(jq -r '.layers[-1].digest' "$(manifest "$1")")"
  printf '%s\n' "$1/blobs/sha256/${d#sha256:}"
}

# --- the builder image: files written by RUN (the same script makes the directory) ---------
cat >"$W/ctx/mkfiles.sh" <<'EOF'
#!/bin/sh
# mkfiles.sh DIR: the demo "npm run build" output, with modes a builder really leaves
set -e
d="$1"
mkdir -p "$d/dist/lib" "$d/node_modules/left-pad" "$d/a"
printf '{"name":"nemoclaw","version":"0.1.0"}\n' >"$d/package.json"
printf '#!/usr/bin/env node\nconsole.log("nemoclaw");\n' >"$d/dist/index.js"
printf 'module.exports = 1;\n' >"$d/dist/lib/util.js"
printf 'module.exports = (s) => s;\n' >"$d/node_modules/left-pad/index.js"
printf 'beside\n' >"$d/a.txt"
printf 'inside\n' >"$d/a/b"
ln -s ../dist/index.js "$d/a/entry"
chmod 0775 "$d/dist/index.js"
chmod 0600 "$d/package.json"
chmod 0700 "$d/node_modules"
EOF
BASE_REF="$(podman_base_ref "$BASE_TAR" 2>"$LOGS/base-import.log")" || die "podman import failed: $(tail_detail "$LOGS/base-import.log")"
cat >"$W/ctx/Containerfile" <<EOF
FROM $BASE_REF
COPY mkfiles.sh /usr/local/bin/mkfiles.sh
RUN sh /usr/local/bin/mkfiles.sh /opt/nemoclaw && printf 'scratch\n' >/opt/nemoclaw/build.log
RUN chown -R 1000:1000 /opt/nemoclaw && rm /opt/nemoclaw/build.log
EOF
cat >"$W/ctx/Containerfile.hostile" <<EOF
FROM $BASE_REF
RUN mkdir -p /opt/evil/link /opt/dev /opt/suid \
 && ln -s /etc/shadow /opt/evil/link/shadow \
 && mknod /opt/dev/null c 1 3 \
 && printf '#!/bin/sh\n' >/opt/suid/tool && chmod 4755 /opt/suid/tool
EOF
# podman_build NAME FILE [FLAGS...]: build $TAGBASE:NAME with no network, export it to oci:$W/NAME
podman_build() {
  local name="$1" file="$2"
  shift 2
  if timeout "$T" podman "${PODMAN_GLOBAL[@]}" build --pull=never --network=none "$@" \
      -f "$W/ctx/$file" -t "$TAGBASE:$name" "$W/ctx" >"$LOGS/podman-build-$name.log" 2>&1; then
    IMGS+=("$TAGBASE:$name")
    timeout "$T" skopeo copy --quiet "containers-storage:$TAGBASE:$name" "oci:$W/$name:latest" \
      >>"$LOGS/podman-build-$name.log" 2>&1
  else return 1; fi
}
probe_ok() { # NAME CMD...
  local name="$1"; shift
  if "$@"; then pass "$name"; else fail "$name" "exit $?: $(tail_detail "$LOGS/$name.err" 2>/dev/null || true)"; fi
}
if podman_build good Containerfile; then pass builder.podman_build; else fail builder.podman_build "$(tail_detail "$LOGS/podman-build-good.log")"; fi
sh "$W/ctx/mkfiles.sh" "$W/dir"

# --- a registry on 127.0.0.1 -----------------------------------------------------------------
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
P="${E2E_BUILDER_PORT:-5090}"
for p in $(seq "$P" $((P + 20))); do port_busy "$p" || break; done
REG="127.0.0.1:$p"
mkdir -p "$W/registry"
printf 'version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: %s\n' \
  "$W/registry/data" "$REG" >"$W/registry/config.yml"
docker-registry serve "$W/registry/config.yml" >"$LOGS/registry.log" 2>&1 &
PIDS+=("$!")
for _ in $(seq 50); do curl -fsS -o /dev/null "http://$REG/v2/" 2>/dev/null && break; sleep 0.2; done
BD=""
if timeout "$T" skopeo copy --quiet --dest-tls-verify=false "oci:$W/good:latest" "docker://$REG/builder:v1" \
    >"$LOGS/push.log" 2>&1; then
  BD="$(skopeo inspect --tls-verify=false "docker://$REG/builder:v1" 2>>"$LOGS/push.log" | jq -r .Digest)"
fi
check_re builder.pushed '^sha256:[0-9a-f]{64}$' "$BD"

# --- builds: directory, layout, registry digest ------------------------------------------------
AI=(--artifacts-image-path /opt/nemoclaw)
probe_ok build.dir build build.dir dir --artifacts "$W/dir"
probe_ok build.layout build build.layout layout --artifacts-image "oci:$W/good:latest" "${AI[@]}"
probe_ok build.registry build build.registry reg --artifacts-image "registry://$REG/builder@$BD" "${AI[@]}" \
  --record "$W/reg.record.json"
check_eq builder.layout_same_config_as_dir "$(config_digest "$W/out/dir")" "$(config_digest "$W/out/layout")"
check_eq builder.layout_same_layers_as_dir "$(layer_digests "$W/out/dir")" "$(layer_digests "$W/out/layout")"
check_eq builder.registry_same_layers_as_layout "$(layer_digests "$W/out/layout")" "$(layer_digests "$W/out/reg")"
check_eq builder.same_artifacts_digest "$(jq -r .record.artifacts_digest "$LOGS/build.dir.out" 2>&1)" \
  "$(jq -r .record.artifacts_digest "$LOGS/build.registry.out" 2>&1)"
check_eq builder.record_names_builder "registry://$REG/builder@$BD /opt/nemoclaw" \
  "$(jq -r '.artifacts_image | "\(.name) \(.path)"' "$W/reg.record.json" 2>&1)"
check_re builder.record_digest '^sha256:[0-9a-f]{64}$' "$(jq -r .artifacts_image.digest "$W/reg.record.json" 2>&1)"
check_eq builder.dir_record_has_no_builder null "$(jq -r .record.artifacts_image "$LOGS/build.dir.out" 2>&1)"
check_eq builder.later_builds_hit_the_cache "true true" \
  "$(jq -r .cache_hit "$LOGS/build.layout.out" 2>&1) $(jq -r .cache_hit "$LOGS/build.registry.out" 2>&1)"
# the whiteout of the second RUN is applied, the builder's owner is not shipped
lst="$(tar -tvzf "$(last_layer "$W/out/reg")" 2>&1 | awk '{print $1, $2, $6}' | sort -k3)"
check_nre builder.whiteout_applied 'build\.log' "$lst"
check_nre builder.owners_normalized ' 1000/1000 ' "$lst"

# --- the running image has the files, root-owned, 0755/0644 -------------------------------------
RUN_IMG="$TAGBASE:result"
if timeout "$T" skopeo copy --quiet "oci:$W/out/reg:t" "containers-storage:$RUN_IMG" >"$LOGS/load.log" 2>&1; then
  IMGS+=("$RUN_IMG")
  got="$(timeout 180 podman "${PODMAN_GLOBAL[@]}" run --rm "${PODMAN_RUN_FLAGS[@]}" --user root \
    --entrypoint /bin/sh "$RUN_IMG" -c 'cd /opt/nemoclaw && stat -c "%U:%G %a %n" package.json dist/index.js node_modules a/entry && cat a/b' \
    2>"$LOGS/run.err" | tr '\n' '|')"
  check_eq builder.run_files_and_modes \
    "root:root 644 package.json|root:root 755 dist/index.js|root:root 755 node_modules|root:root 777 a/entry|inside|" "$got"
else
  fail builder.run_files_and_modes "skopeo copy to containers-storage: $(tail_detail "$LOGS/load.log")"
fi

# --- tags warn, --strict refuses ----------------------------------------------------------------
probe_ok build.tag build build.tag tag --artifacts-image "registry://$REG/builder:v1" "${AI[@]}"
check_grep builder.tag_warns 'is a tag, and tags move' "$LOGS/build.tag.err"
if build build.strict strict --artifacts-image "registry://$REG/builder:v1" "${AI[@]}" --strict; then
  fail builder.strict_refuses_tag "exit 0"
else check_grep builder.strict_refuses_tag '--strict refuses a builder not pinned' "$LOGS/build.strict.err"; fi
if [[ -e "$W/out/strict" ]]; then fail builder.strict_leaves_no_output "$W/out/strict exists"
else pass builder.strict_leaves_no_output; fi

# --- a hostile builder: refused, or normalized as documented ------------------------------------
# mknod in a RUN step needs CAP_MKNOD, which podman does not grant by default here
if podman_build hostile Containerfile.hostile --cap-add MKNOD; then
  H="oci:$W/hostile:latest"
  if build hostile.link hl --artifacts-image "$H" --artifacts-image-path /opt/evil; then fail builder.hostile_symlink_refused "exit 0"
  else check_grep builder.hostile_symlink_refused "/opt/evil/link/shadow \\(layer [0-9]+ \\(sha256:.*escapes" "$LOGS/hostile.link.err"; fi
  if build hostile.dev hd --artifacts-image "$H" --artifacts-image-path /opt/dev; then fail builder.hostile_device_refused "exit 0"
  else check_grep builder.hostile_device_refused '/opt/dev/null \(layer [0-9]+ .*a Char' "$LOGS/hostile.dev.err"; fi
  if build hostile.suid hs --artifacts-image "$H" --artifacts-image-path /opt/suid; then
    check_eq builder.hostile_setuid_normalized "-rwxr-xr-x 0/0" \
      "$(tar -tvzf "$(last_layer "$W/out/hs")" 2>&1 | awk '$6 ~ /opt\/nemoclaw\/tool$/ {print $1, $2}')"
  else fail builder.hostile_setuid_normalized "$(tail_detail "$LOGS/hostile.suid.err")"; fi
else
  for n in symlink_refused device_refused setuid_normalized; do
    fail "builder.hostile_$n" "podman build: $(tail_detail "$LOGS/podman-build-hostile.log")"
  done
fi

# --- verify rebuilds from the recorded builder (pinned by digest) -------------------------------
rc=0
nb verify verify "oci:$W/out/reg:t" --base "tar:$BASE_TAR" || rc=$?
check_eq builder.verify_from_record 0 "$rc"
check_grep builder.verify_says_verified '^verified: identical digests' "$LOGS/verify.out"

suite_end

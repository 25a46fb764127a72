#!/usr/bin/env bash
# End-to-end suite for nemoclaw-build: builds real images from a real Debian base and checks
# them with independent tools (oci-image-tool, skopeo, umoci, podman, apt, a registry).
#
#   scripts/e2e.sh                      all sections
#   E2E_ONLY=validate,run scripts/e2e.sh  only these sections
#
# stdout: exactly one `PASS: name` or `FAIL: name (detail)` line per probe (or, run by hand
# and only for a probe whose tool or network is missing, `SKIP: name (why)`; with CI=true
# that is a FAIL), then `N passed, M failed, K skipped`; exit 1 if M > 0. Progress and
# timings go to stderr as `# ...`. Each section declares how many probes it prints
# (`plan N`; a sub-suite's own PLAN joins it): a shortfall is a FAIL `section.NAME.plan`, so a
# probe cannot vanish silently (see scripts/probe.sh).
#
# Sections: quickstart validate repro run init openshell bomb purge whiteout audit policy peer oracle
#           multilayer tardiff faults registry verify cache sbom attest
# Env:
#   E2E_ONLY=a,b        run only these sections (prerequisite builds happen as needed)
#   E2E_KEEP=1          keep the work dir and the podman images/containers
#   E2E_WORK=DIR        work dir (default /tmp/nemoclaw-e2e-<pid>)
#   E2E_NO_CARGO=1      do not run `cargo build --release` (use target/release as is)
#   E2E_REGISTRY_PORT   port for the local registry (default 5055)
#   NEMOCLAW_PODMAN_OPTS extra global podman options (e.g. "--storage-driver vfs")
#   CI=true             a probe that cannot run (missing tool, no network) is a FAIL
# Single-quoted snippets are run by bash -c / in containers on purpose:
# shellcheck disable=SC2016,SC2012
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
LOG_TAG=e2e

BIN="$NEMOCLAW_ROOT/target/release/nemoclaw-build"
RECIPE="$NEMOCLAW_ROOT/recipes/nemoclaw-sandbox.toml"
EPOCH=1700000000
EPOCH_RFC3339=2023-11-14T22:13:20Z
TAG=nemoclaw
W="${E2E_WORK:-/tmp/nemoclaw-e2e-$$}" # lowercase, no dot: podman derives image names from it
REG_PORT="${E2E_REGISTRY_PORT:-5055}"
REG="127.0.0.1:$REG_PORT"
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
SECTIONS=(quickstart validate repro run init openshell bomb purge whiteout audit policy peer oracle multilayer tardiff faults registry verify cache sbom builder attest multiarch)
E2E_ONLY="${E2E_ONLY:-}"

mkdir -p "$W"/{logs,state,out,scripts}
W="$(cd "$W" && pwd -P)"
LOGS="$W/logs"
STATE="$W/state"
RESULTS="$W/results"
: >"$RESULTS"
CTR_PREFIX="nemoclaw-e2e-$$"


# ------------------------------------------------------------------ result helpers --------
# pass/fail/skip/check_*/plan/subsuite (sections record their plan; no PLAN lines here)
PLAN_QUIET=1
E2E_RESULTS=""
# shellcheck source=probe.sh
. "$(dirname "${BASH_SOURCE[0]}")/probe.sh"
# probe NAME CMD...: PASS iff CMD exits 0. Output goes to logs/NAME.log.
probe() {
  local name="$1"; shift
  local log="$LOGS/$name.log"
  if "$@" >"$log" 2>&1; then pass "$name"; else
    local rc=$?; fail "$name" "exit $rc: $(tail_detail "$log")"
  fi
}
# probe_fails NAME CMD...: PASS iff CMD exits non-zero.
probe_fails() {
  local name="$1"; shift
  local log="$LOGS/$name.log"
  if "$@" >"$log" 2>&1; then fail "$name" "succeeded but must fail: $(tail_detail "$log")"; else pass "$name"; fi
}
# prereq NAME STATE_KEY: if the state key is not ok, print one FAIL and return 1.
prereq() {
  if [[ -f "$STATE/$2.ok" ]]; then return 0; fi
  local why="prerequisite $2 not available"
  [[ -f "$STATE/$2.why" ]] && why="$why: $(cat "$STATE/$2.why")"
  fail "$1.prereq" "$why (probes of this group skipped)"
  return 1
}
mark_ok() { touch "$STATE/$1.ok"; }
mark_bad() { printf '%s' "$2" >"$STATE/$1.why"; }
done_before() { [[ -f "$STATE/$1.ok" || -f "$STATE/$1.why" ]]; }
# fact FILE KEY: value of `KEY=value` in a facts file
fact() { awk -v k="$2=" 'index($0, k) == 1 { print substr($0, length(k) + 1); exit }' "$1" 2>/dev/null || true; }

want() { [[ -z "${E2E_ONLY:-}" || ",${E2E_ONLY// /}," == *",$1,"* ]]; }
# Probes of shared prerequisites, printed by whichever section needs them first: not
# counted against that section's plan.
SHARED_PROBES='^(PASS|FAIL): build\.main( |$)'


# ------------------------------------------------------------------ podman helpers --------
CTR_N=0
prun() { # podman run --rm with the flags that work here; timeout-bounded
  CTR_N=$((CTR_N + 1))
  timeout --kill-after=10 "${E2E_RUN_TIMEOUT:-180}" \
    podman "${PODMAN_GLOBAL[@]}" run --rm --name "$CTR_PREFIX-r$CTR_N" "${PODMAN_RUN_FLAGS[@]}" "$@"
}
# Image names in the (shared) podman storage are unique to this run, and kept by a run that
# reuses E2E_WORK: two suites on one host must never test each other's images.
if [[ -s "$STATE/img-repo" ]]; then IMG_REPO="$(cat "$STATE/img-repo")"
else IMG_REPO="localhost/nemoclaw-e2e-$$"; printf '%s' "$IMG_REPO" >"$STATE/img-repo"; fi
# load_image TRANSPORT_REF NAME: copy into podman storage as $IMG_REPO:NAME
load_image() {
  timeout 600 skopeo copy --quiet "$1" "containers-storage:$IMG_REPO:$2" \
    && printf '%s\n' "$IMG_REPO:$2" >>"$STATE/images"
}
img() { printf '%s:%s' "$IMG_REPO" "$1"; }
# track_loaded LOG: remember the names `podman load` reported, for cleanup
track_loaded() { sed -nE 's/^Loaded image(\(s\)|s)?: *//p' "$1" | tr ',' '\n' | sed '/^$/d' >>"$STATE/images" || true; }
# archives get a run-unique tag: `podman load` names images after it (never clobber a user's tag)
ATAG="e2e-$$"

cleanup() {
  local rc=$?
  if [[ -f "$STATE/registry.pid" ]]; then
    kill "$(cat "$STATE/registry.pid")" 2>/dev/null || true
    rm -f "$STATE/registry.pid"
  fi
  if [[ "${E2E_KEEP:-0}" != 1 ]]; then
    local ids
    ids="$(podman ps -aq --filter "name=^$CTR_PREFIX-" 2>/dev/null || true)"
    # shellcheck disable=SC2086  # one id per word
    [[ -n "$ids" ]] && podman rm -f $ids >/dev/null 2>&1
    if [[ -f "$STATE/images" ]]; then
      # one by one, without -f: an ID that other names still use is left alone
      local i
      sort -u "$STATE/images" | while read -r i; do podman rmi "$i" >/dev/null 2>&1 || true; done
    fi
    rm -rf "$W"
  else
    note "kept work dir $W"
  fi
  return $rc
}
trap cleanup EXIT

# ------------------------------------------------------------------ prerequisites ---------
prepare() {
  local t0
  for c in jq skopeo umoci oci-image-tool podman python3 sha256sum timeout; do
    have "$c" || die "missing $c (run scripts/setup.sh --no-build)"
  done
  t0=$(now_ms)
  if [[ "${E2E_NO_CARGO:-0}" != 1 ]] && have cargo; then
    note "cargo build --release"
    if ! (cd "$NEMOCLAW_ROOT" && cargo build --release) >"$LOGS/cargo-build.log" 2>&1; then
      if [[ -x "$BIN" ]]; then
        note "WARNING: cargo build failed, using the existing $BIN ($(tail_detail "$LOGS/cargo-build.log"))"
      fi
    fi
  fi
  if [[ -x "$BIN" ]]; then mark_ok bin; else mark_bad bin "no $BIN ($(tail_detail "$LOGS/cargo-build.log"))"; fi
  note "binary ready in $(( ($(now_ms) - t0) / 1000 ))s"

  t0=$(now_ms)
  BASE_TAR="$("$NEMOCLAW_ROOT/scripts/mk-base.sh" 2>"$LOGS/mk-base.log" | tail -n 1)"
  BASE_OCI="$("$NEMOCLAW_ROOT/scripts/mk-base.sh" --oci 2>>"$LOGS/mk-base.log" | tail -n 1)"
  ART="$("$NEMOCLAW_ROOT/scripts/mk-artifacts.sh" "$W/artifacts" 2>"$LOGS/mk-artifacts.log" | tail -n 1)"
  [[ -f "$BASE_TAR" && -f "$BASE_OCI/index.json" && -f "$ART/package.json" ]] \
    || die "could not prepare base/artifacts (see $LOGS/mk-base.log)"
  note "base $BASE_TAR, $BASE_OCI; artifacts $ART ($(( ($(now_ms) - t0) / 1000 ))s)"
  BASE_MANIFEST="$(jq -r '.manifests[0].digest' "$BASE_OCI/index.json")"
  BASE_LAYER0="$(jq -r '.layers[0].digest' "$BASE_OCI/blobs/sha256/${BASE_MANIFEST#sha256:}")"
  BASE_CONFIG="$(jq -r '.config.digest' "$BASE_OCI/blobs/sha256/${BASE_MANIFEST#sha256:}")"
  BASE_DIFF0="$(jq -r '.rootfs.diff_ids[0]' "$BASE_OCI/blobs/sha256/${BASE_CONFIG#sha256:}")"
  export BASE_TAR BASE_OCI ART
}

# nb NAME ARGS...: run the CLI, stdout -> logs/NAME.out, stderr -> logs/NAME.err; returns rc
nb() {
  local name="$1"; shift
  local t0 rc=0
  t0=$(now_ms)
  # a private tool cache: results must not depend on (or pollute) ~/.cache
  XDG_CACHE_HOME="$W/tool-cache" timeout --kill-after=10 "${E2E_BUILD_TIMEOUT:-900}" "$BIN" "$@" \
    >"$LOGS/$name.out" 2>"$LOGS/$name.err" || rc=$?
  note "nemoclaw-build $1 [$name] rc=$rc in $(( $(now_ms) - t0 ))ms"
  return $rc
}
no_panic() { ! grep -q 'panicked at' "$LOGS/$1.err" 2>/dev/null; }

# manifest_of LAYOUT TAG: path of the manifest blob for TAG (or the only manifest)
manifest_of() {
  local d
  d="$(jq -r --arg t "$2" '
      ([.manifests[] | select(.annotations["org.opencontainers.image.ref.name"] == $t)] | first // empty
       | .digest) // (if (.manifests | length) == 1 then .manifests[0].digest else empty end)' \
      "$1/index.json" 2>/dev/null)" || return 1
  [[ -n "$d" && -f "$1/blobs/sha256/${d#sha256:}" ]] || return 1
  printf '%s\n' "$1/blobs/sha256/${d#sha256:}"
}
config_of() { # LAYOUT TAG
  local m c
  m="$(manifest_of "$1" "$2")" || return 1
  c="$(jq -r .config.digest "$m")"
  printf '%s\n' "$1/blobs/sha256/${c#sha256:}"
}

# build_into STATE_KEY OUT_LAYOUT ARGS...: build to oci:OUT_LAYOUT:TAG with --json
build_into() {
  local key="$1" out="$2"; shift 2
  done_before "$key" && return 0
  if ! [[ -f "$STATE/bin.ok" ]]; then mark_bad "$key" "no binary"; return 0; fi
  rm -rf "$out"
  if nb "$key" build --artifacts "$ART" --output "oci:$out:$TAG" \
        --source-date-epoch "$EPOCH" --json "$@"; then
    if jq -e '.digest | test("^sha256:[0-9a-f]{64}$")' "$LOGS/$key.out" >/dev/null 2>&1; then
      mark_ok "$key"
    else
      mark_bad "$key" "exit 0 but stdout is not the --json summary with a digest: $(head -c 200 "$LOGS/$key.out")"
    fi
  else
    mark_bad "$key" "exit $?: $(tail_detail "$LOGS/$key.err")"
  fi
}
json_digest() { jq -r '.digest' "$LOGS/$1.out"; }

ensure_main() {
  if ! done_before main; then
    build_into main "$W/out/main" --base "tar:$BASE_TAR"
    if [[ -f "$STATE/main.ok" ]]; then pass build.main; else fail build.main "$(cat "$STATE/main.why")"; fi
  fi
  [[ -f "$STATE/main.ok" ]]
}
ensure_main_image() {
  ensure_main || { [[ -f "$STATE/main-image.why" ]] || mark_bad main-image "main build failed"; return 1; }
  if ! done_before main-image; then
    if load_image "oci:$W/out/main:$TAG" main >"$LOGS/load-main.log" 2>&1; then mark_ok main-image
    else mark_bad main-image "skopeo copy to containers-storage failed: $(tail_detail "$LOGS/load-main.log")"; fi
  fi
  [[ -f "$STATE/main-image.ok" ]]
}
ensure_base_image() {
  if ! done_before base-image; then
    if BASE_REF="$(podman_base_ref "$BASE_TAR" 2>"$LOGS/base-import.log")"; then
      printf '%s' "$BASE_REF" >"$STATE/base-image.ref"; mark_ok base-image
    else mark_bad base-image "podman import failed: $(tail_detail "$LOGS/base-import.log")"; fi
  fi
  [[ -f "$STATE/base-image.ok" ]] && BASE_REF="$(cat "$STATE/base-image.ref")"
}

# ------------------------------------------------------------------ in-container scripts --
write_container_scripts() {
  # Facts gathered as root with the entrypoint bypassed (independent of the init).
  cat >"$W/scripts/facts.sh" <<'EOF'
#!/bin/bash
for c in gcc g++ cc c++ cpp make gmake nc netcat ncat as ld x86_64-linux-gnu-as x86_64-linux-gnu-ld \
         vi jq dos2unix ps tmux chattr node bash; do
  printf 'cmd.%s=%s\n' "$c" "$(command -v "$c" || echo ABSENT)"
done
a="$(dpkg --audit 2>&1)"; rc=$?
printf 'dpkg.audit=%s\n' "$(printf '%s' "$a" | tr '\n' ' ')"
printf 'dpkg.audit_rc=%s\n' "$rc"
printf 'dpkg.present_forbidden=%s\n' "$(dpkg-query -W -f='${db:Status-Abbrev}|${Package}\n' 2>/dev/null \
  | awk -F'|' '$1 !~ /^u/ {print $2}' \
  | grep -xE 'gcc|gcc-12|g\+\+|g\+\+-12|cpp|cpp-12|make|netcat-openbsd|netcat-traditional|ncat' | sort | tr '\n' ' ')"
for p in vim-tiny jq dos2unix procps e2fsprogs tmux; do
  printf 'dpkg.status.%s=%s\n' "$p" "$(dpkg-query -W -f='${db:Status-Abbrev}' "$p" 2>/dev/null | tr -d ' ')"
done
apt-get check >/tmp/aptcheck 2>&1; printf 'apt.check_rc=%s\n' "$?"
printf 'apt.check=%s\n' "$(tail -n 2 /tmp/aptcheck | tr '\n' ' ')"
printf 'id.sandbox=%s\n' "$(id sandbox 2>&1)"
printf 'id.gateway=%s\n' "$(id gateway 2>&1)"
printf 'id.root=%s\n' "$(id root 2>&1)"
printf 'passwd.sandbox=%s\n' "$(getent passwd sandbox)"
printf 'passwd.gateway=%s\n' "$(getent passwd gateway)"
for p in /sandbox /sandbox/.openclaw /sandbox/.openclaw/exec-approvals.json /sandbox/.nemoclaw \
         /sandbox/.nemoclaw/state /sandbox/.nemoclaw/migration /sandbox/.nemoclaw/snapshots \
         /sandbox/.nemoclaw/staging /sandbox/.bashrc /sandbox/.profile \
         /etc/profile.d/nemoclaw-proxy.sh /etc/bash.bashrc /usr/local/bin/nemoclaw-init /opt/nemoclaw; do
  printf 'stat.%s=%s\n' "$p" "$(stat -c '%U:%G %a' "$p" 2>/dev/null || echo MISSING)"
done
bad=""
for d in agents/main/agent extensions workspace skills hooks identity devices canvas cron memory \
         logs credentials flows sandbox telegram wechat media plugin-runtime-deps; do
  s="$(stat -c '%U:%G %a' "/sandbox/.openclaw/$d" 2>/dev/null || echo MISSING)"
  [ "$s" = "sandbox:sandbox 2770" ] || bad="$bad $d($s)"
done
printf 'openclaw.bad_subdirs=%s\n' "$bad"
printf 'rc.bashrc=%s\n' "$(cat /sandbox/.bashrc 2>&1 | tr '\n' '|')"
printf 'rc.profile=%s\n' "$(cat /sandbox/.profile 2>&1 | tr '\n' '|')"
printf 'rc.proxy_grep=%s\n' "$(grep -il proxy /sandbox/.bashrc /sandbox/.profile 2>/dev/null | tr '\n' ' ')"
line='[ -f /tmp/nemoclaw-proxy-env.sh ] && . /tmp/nemoclaw-proxy-env.sh'
printf 'hook.profile_d=%s\n' "$(grep -cxF "$line" /etc/profile.d/nemoclaw-proxy.sh 2>/dev/null)"
printf 'hook.bashrc_count=%s\n' "$(grep -cxF "$line" /etc/bash.bashrc 2>/dev/null)"
pl="$(grep -nxF "$line" /etc/bash.bashrc 2>/dev/null | head -n1 | cut -d: -f1)"
rl="$(grep -nF '[ -z "$PS1" ] && return' /etc/bash.bashrc 2>/dev/null | head -n1 | cut -d: -f1)"
printf 'hook.bashrc_order=%s\n' "$([ -n "$pl" ] && [ -n "$rl" ] && [ "$pl" -lt "$rl" ] && echo before || echo "proxy@${pl:-none} ps1@${rl:-none}")"
printf 'opt.group_world_writable=%s\n' "$(find /opt/nemoclaw -perm /022 2>/dev/null | head -n 5 | tr '\n' ' ')"
printf 'opt.not_root_owned=%s\n' "$(find /opt/nemoclaw \( ! -user root -o ! -group root \) 2>/dev/null | head -n 5 | tr '\n' ' ')"
printf 'opt.node_version=%s\n' "$(cd /tmp && node /opt/nemoclaw/dist/index.js --version 2>&1 | tr '\n' ' ')"
printf 'init.elf=%s\n' "$(head -c 4 /usr/local/bin/nemoclaw-init 2>/dev/null | od -An -c | tr -d ' ')"
EOF

  # Runs as the stepped-down user: DAC write probes and shell proxy hooks.
  cat >"$W/scripts/sandbox.sh" <<'EOF'
#!/bin/bash
printf 'uid=%s\n' "$(id -u)"
try_append() { if (printf 'x\n' >>"$1") 2>/dev/null; then echo ok; else echo denied; fi; }
try_touch() { if touch "$1" 2>/dev/null; then echo ok; else echo denied; fi; }
printf 'w./sandbox/.bashrc=%s\n' "$(try_append /sandbox/.bashrc)"
printf 'w./sandbox/.profile=%s\n' "$(try_append /sandbox/.profile)"
printf 'w./sandbox/.nemoclaw=%s\n' "$(try_touch /sandbox/.nemoclaw/e2e-x)"
printf 'w./sandbox/.nemoclaw/state=%s\n' "$(try_touch /sandbox/.nemoclaw/state/e2e-x)"
printf 'w./sandbox/.openclaw/workspace=%s\n' "$(try_touch /sandbox/.openclaw/workspace/e2e-x)"
printf 'w./sandbox=%s\n' "$(try_touch /sandbox/e2e-x)"
printf 'w./opt/nemoclaw=%s\n' "$(try_touch /opt/nemoclaw/e2e-x)"
printf 'w./etc=%s\n' "$(try_touch /etc/e2e-x)"
printf 'proxy.login=%s\n' "$(cd /tmp && bash -lc 'echo "$HTTP_PROXY"' 2>/dev/null | tail -n 1)"
printf 'proxy.interactive=%s\n' "$(cd /tmp && bash -ic 'echo "$HTTP_PROXY"' 2>/dev/null </dev/null | tail -n 1)"
EOF

  # Runs under the init (as the stepped-down user): what the init set up.
  cat >"$W/scripts/init.sh" <<'EOF'
#!/bin/bash
printf 'id=%s\n' "$(id)"
printf 'uid=%s\n' "$(id -u)"
printf 'capbnd=%s\n' "$(awk '/^CapBnd:/ {print $2}' /proc/self/status)"
printf 'capeff=%s\n' "$(awk '/^CapEff:/ {print $2}' /proc/self/status)"
printf 'capprm=%s\n' "$(awk '/^CapPrm:/ {print $2}' /proc/self/status)"
printf 'nproc.soft=%s\n' "$(ulimit -Su)"
printf 'nproc.hard=%s\n' "$(ulimit -Hu)"
printf 'nofile.soft=%s\n' "$(ulimit -Sn)"
printf 'nofile.hard=%s\n' "$(ulimit -Hn)"
printf 'pid1.comm=%s\n' "$(cat /proc/1/comm)"
printf 'home=%s\n' "$HOME"
printf 'path=%s\n' "$PATH"
printf 'proxyfile.stat=%s\n' "$(stat -c '%U:%G %a' /tmp/nemoclaw-proxy-env.sh 2>/dev/null || echo MISSING)"
printf 'proxyfile.http=%s\n' "$(. /tmp/nemoclaw-proxy-env.sh 2>/dev/null; echo "${HTTP_PROXY:-}")"
printf 'proxyfile.https=%s\n' "$(. /tmp/nemoclaw-proxy-env.sh 2>/dev/null; echo "${HTTPS_PROXY:-}")"
printf 'proxyfile.no_proxy=%s\n' "$(. /tmp/nemoclaw-proxy-env.sh 2>/dev/null; echo "${NO_PROXY:-}")"
for i in 1 2 3 4 5; do (sleep 0.05 &) ; done
sleep 1
printf 'zombies=%s\n' "$(ps -eo stat= | grep -c '^Z')"
EOF
  chmod 0755 "$W/scripts/"*.sh
}

# facts_for NAME IMAGE: run facts.sh as root (entrypoint bypassed) once; print the file path
facts_for() {
  local f="$STATE/facts.$1"
  if [[ ! -s "$f" ]]; then
    prun --user root --entrypoint /bin/bash -v "$W/scripts/facts.sh:/e2e/facts.sh:ro" \
      "$2" /e2e/facts.sh >"$f" 2>"$LOGS/facts.$1.err" || true
  fi
  printf '%s\n' "$f"
}

# ------------------------------------------------------------------ sections --------------
# The README's first command, as a user runs it (set-up is a no-op here: tools, base and
# binary are already in place), into a fresh output directory.
section_quickstart() {
  plan 4
  local q="$W/quickstart" rc=0
  mkdir -p "$q"
  timeout 1800 bash "$NEMOCLAW_ROOT/scripts/quickstart.sh" --output "$q/out" \
    >"$LOGS/quickstart.out" 2>"$LOGS/quickstart.err" </dev/null || rc=$?
  check_eq quickstart.exit 0 "$rc"
  check_grep quickstart.oci_image_tool_validates '^Validation succeeded' "$LOGS/quickstart.out"
  check_grep quickstart.audit_clean '^0 error\(s\), 0 warning\(s\)' "$LOGS/quickstart.out"
  local tagged printed
  tagged="$(jq -r '.manifests[] | select(.annotations["org.opencontainers.image.ref.name"] == "latest") | .digest' "$q/out/index.json" 2>/dev/null || true)"
  printed="$(grep -m1 -E '^sha256:[0-9a-f]{64}$' "$LOGS/quickstart.out" || true)"
  check_eq quickstart.printed_digest_is_the_tag "${tagged:-no tag latest in $q/out}" "${printed:-no digest printed}"
}

section_validate() {
  plan 43
  ensure_main || { prereq validate main; return 0; }
  local out="$W/out/main" man cfg d
  d="$(json_digest main)"
  probe validate.oci-image-tool oci-image-tool validate --type image --ref "name=$TAG" "$out"
  probe validate.oci-layout jq -e '.imageLayoutVersion == "1.0.0"' "$out/oci-layout"
  probe validate.blobs_hash_to_name bash -c 'cd "$1/blobs/sha256" && for f in *; do
      h=$(sha256sum <"$f" | cut -d" " -f1); [ "$h" = "$f" ] || { echo "blob $f hashes to $h"; exit 1; }; done' _ "$out"
  probe validate.index_media_type jq -e '.schemaVersion == 2 and (.mediaType // "application/vnd.oci.image.index.v1+json") == "application/vnd.oci.image.index.v1+json"' "$out/index.json"
  check_eq validate.index_digest_matches_json "$d" \
    "$(jq -r --arg t "$TAG" '.manifests[] | select(.annotations["org.opencontainers.image.ref.name"] == $t) | .digest' "$out/index.json" 2>&1)"
  check_eq validate.skopeo_inspect_digest "$d" "$(skopeo inspect "oci:$out:$TAG" 2>&1 | jq -r .Digest 2>&1)"
  if man="$(manifest_of "$out" "$TAG")" && cfg="$(config_of "$out" "$TAG")"; then
    probe validate.descriptor_sizes bash -c 'm=$1; o=$2
      for row in $(jq -r "[.config] + .layers | .[] | \"\(.digest)=\(.size)\"" "$m"); do
        dg=${row%%=*}; f=$o/blobs/sha256/${dg#sha256:}; s=$(stat -c %s "$f") || exit 1
        [ "$s" = "${row#*=}" ] || { echo "size mismatch $row vs $s"; exit 1; }; done' _ "$man" "$out"
    check_eq validate.manifest_media_type application/vnd.oci.image.manifest.v1+json "$(jq -r .mediaType "$man")"
    check_eq validate.config_media_type application/vnd.oci.image.config.v1+json "$(jq -r .config.mediaType "$man")"
    check_eq validate.layer_media_types application/vnd.oci.image.layer.v1.tar+gzip \
      "$(jq -r '[.layers[].mediaType] | unique | join(",")' "$man")"
    # "layers" is the count, or one entry per layer
    check_eq validate.json_layers_count "$(jq '.layers | length' "$man")" \
      "$(jq -r '.layers | if type == "array" then length else . end' "$LOGS/main.out")"
    check_eq validate.diff_ids_count "$(jq '.layers | length' "$man")" "$(jq '.rootfs.diff_ids | length' "$cfg")"
    check_eq validate.history_matches_layers "$(jq '.layers | length' "$man")" \
      "$(jq '[.history[] | select(.empty_layer != true)] | length' "$cfg")"
    check_eq validate.config_os_arch "linux/amd64" "$(jq -r '"\(.os)/\(.architecture)"' "$cfg")"
    check_eq validate.config_created "$EPOCH_RFC3339" "$(jq -r .created "$cfg")"
    check_eq validate.history_created "$EPOCH_RFC3339" \
      "$(jq -r '[.history[] | select(has("created")) | .created] | unique | join(",")' "$cfg")"
    check_eq validate.manifest_created_annotation "$EPOCH_RFC3339" \
      "$(jq -r '.annotations["org.opencontainers.image.created"] // "absent"' "$man")"
    check_eq validate.entrypoint '["/usr/local/bin/nemoclaw-init"]' "$(jq -c .config.Entrypoint "$cfg")"
    check_eq validate.cmd '["/bin/bash"]' "$(jq -c .config.Cmd "$cfg")"
    check_eq validate.user sandbox "$(jq -r .config.User "$cfg")"
    check_eq validate.workdir /sandbox "$(jq -r .config.WorkingDir "$cfg")"
    check_eq validate.env "AWS_EC2_METADATA_DISABLED=true DEBIAN_FRONTEND=noninteractive JITI_FS_CACHE=false" \
      "$(jq -r '[.config.Env[] | select(test("^(DEBIAN_FRONTEND|AWS_EC2_METADATA_DISABLED|JITI_FS_CACHE)="))] | sort | join(" ")' "$cfg")"
    check_eq validate.manifest_keys_sorted "$(jq -cS . "$man" | sha256sum | cut -c1-16)" \
      "$(jq -c . "$man" | sha256sum | cut -c1-16)"
    check_eq validate.config_keys_sorted "$(jq -cS . "$cfg" | sha256sum | cut -c1-16)" \
      "$(jq -c . "$cfg" | sha256sum | cut -c1-16)"
  else
    fail validate.manifest "no manifest for tag $TAG in $out/index.json"
  fi
  probe validate.json_purged_names jq -e '(.purged | type == "array") and ([.purged[] | sub(":.*$"; "")] | index("gcc") != null and index("g++") != null and index("make") != null and index("netcat-openbsd") != null)' "$LOGS/main.out"

  # umoci (as root, so ownership is kept)
  rm -rf "$W/umoci"
  if timeout 600 umoci unpack --image "$out:$TAG" "$W/umoci" >"$LOGS/validate.umoci.log" 2>&1; then
    pass validate.umoci_unpack
    local r="$W/umoci/rootfs"
    check_eq validate.umoci_init_is_elf "177ELF" "$(head -c 4 "$r/usr/local/bin/nemoclaw-init" 2>/dev/null | od -An -c | tr -d ' ')"
    check_eq validate.umoci_bashrc_meta "0:0 444" "$(stat -c '%u:%g %a' "$r/sandbox/.bashrc" 2>&1)"
    check_eq validate.umoci_openclaw_meta "998:998 2770" "$(stat -c '%u:%g %a' "$r/sandbox/.openclaw" 2>&1)"
    check_eq validate.umoci_no_gcc "absent" "$([[ -e "$r/usr/bin/gcc" || -L "$r/usr/bin/gcc" ]] && echo present || echo absent)"
    rm -rf "$W/umoci"
  else
    fail validate.umoci_unpack "$(tail_detail "$LOGS/validate.umoci.log")"
  fi
  # podman pull straight from the layout (names the image after the path)
  local id
  if id="$(timeout 600 podman pull -q "oci:$out:$TAG" 2>"$LOGS/validate.podman-pull.err" | tail -n 1)" && [[ -n "$id" ]]; then
    pass validate.podman_pull
    # podman names it after the path; remove by those names only (the ID may be shared)
    podman image inspect --format '{{range .RepoTags}}{{println .}}{{end}}' "$id" 2>/dev/null \
      | grep -F "$W" >>"$STATE/images" || true
  else
    fail validate.podman_pull "$(tail_detail "$LOGS/validate.podman-pull.err")"
  fi

  # other outputs: same image in an oci-archive and a docker-archive, zstd layers
  if nb validate.ociarchive build --base "tar:$BASE_TAR" --artifacts "$ART" --source-date-epoch "$EPOCH" \
      --output "oci-archive:$W/out/main.oci.tar:$ATAG" --json; then
    pass validate.oci_archive_build
    check_eq validate.oci_archive_same_digest "$d" "$(skopeo inspect "oci-archive:$W/out/main.oci.tar:$ATAG" 2>&1 | jq -r .Digest 2>&1)"
    probe validate.oci_archive_podman_load timeout 600 podman load -i "$W/out/main.oci.tar"
    track_loaded "$LOGS/validate.oci_archive_podman_load.log"
  else
    fail validate.oci_archive_build "$(tail_detail "$LOGS/validate.ociarchive.err")"
  fi
  rm -f "$W/out/main.oci.tar"
  if nb validate.dockerarchive build --base "tar:$BASE_TAR" --artifacts "$ART" --source-date-epoch "$EPOCH" \
      --output "docker-archive:$W/out/main.docker.tar:$ATAG" --json; then
    pass validate.docker_archive_build
    probe validate.docker_archive_manifest_json bash -c 'tar -xOf "$1" manifest.json | jq -e "type == \"array\" and length == 1 and (.[0].Layers | length) > 0 and (.[0].Config | length) > 0"' _ "$W/out/main.docker.tar"
    local want_diff got_diff
    cfg="$(config_of "$out" "$TAG" 2>/dev/null || true)"
    want_diff="$(jq -c .rootfs.diff_ids "$cfg" 2>/dev/null || echo none)"
    got_diff="$(skopeo inspect --config "docker-archive:$W/out/main.docker.tar" 2>&1 | jq -c .rootfs.diff_ids 2>&1)"
    check_eq validate.docker_archive_same_diff_ids "$want_diff" "$got_diff"
    probe validate.docker_archive_podman_load timeout 600 podman load -i "$W/out/main.docker.tar"
    track_loaded "$LOGS/validate.docker_archive_podman_load.log"
    check_re validate.docker_archive_load_keeps_tag "Loaded image.*:$ATAG" \
      "$(grep '^Loaded image' "$LOGS/validate.docker_archive_podman_load.log" | tr '\n' ' ')"
  else
    fail validate.docker_archive_build "$(tail_detail "$LOGS/validate.dockerarchive.err")"
  fi
  rm -f "$W/out/main.docker.tar"
  build_into zstd "$W/out/zstd" --base "tar:$BASE_TAR" --compression zstd
  if [[ -f "$STATE/zstd.ok" ]]; then
    pass validate.zstd_build
    # (Debian's oci-image-tool rejects the +zstd media type; skopeo decompresses and checks digests)
    if load_image "oci:$W/out/zstd:$TAG" zstd >"$LOGS/load-zstd.log" 2>&1; then pass validate.zstd_loads
    else fail validate.zstd_loads "$(tail_detail "$LOGS/load-zstd.log")"; fi
    check_eq validate.zstd_layer_media_types application/vnd.oci.image.layer.v1.tar+zstd \
      "$(jq -r '[.layers[].mediaType] | unique | join(",")' "$(manifest_of "$W/out/zstd" "$TAG")" 2>&1)"
    check_eq validate.zstd_same_diff_ids "$(jq -c .rootfs.diff_ids "$(config_of "$out" "$TAG")" 2>&1)" \
      "$(jq -c .rootfs.diff_ids "$(config_of "$W/out/zstd" "$TAG")" 2>&1)"
  else
    fail validate.zstd_build "$(cat "$STATE/zstd.why")"
  fi
  rm -rf "$W/out/zstd"
}

section_repro() {
  plan 4
  ensure_main || { prereq repro main; return 0; }
  local r="$W/repro-elsewhere/x" rc=0
  rm -rf "$W/repro-elsewhere"; mkdir -p "$r"
  cp -a "$ART" "$r/artifacts"
  find "$r/artifacts" -exec touch -h {} + # fresh host mtimes
  (
    umask 077
    export TZ=Pacific/Chatham LC_ALL=C.UTF-8
    cd "$r"
    nb repro build --base "tar:$BASE_TAR" --artifacts artifacts --output "oci:out:$TAG" \
      --source-date-epoch "$EPOCH" --json --no-cache
  ) || rc=$?
  if ((rc != 0)); then fail repro.build "exit $rc: $(tail_detail "$LOGS/repro.err")"; return 0; fi
  pass repro.build
  check_eq repro.same_digest "$(json_digest main)" "$(jq -r .digest "$LOGS/repro.out" 2>&1)"
  check_eq repro.same_diff_ids "$(jq -c .rootfs.diff_ids "$(config_of "$W/out/main" "$TAG")" 2>&1)" \
    "$(jq -c .rootfs.diff_ids "$(config_of "$r/out" "$TAG")" 2>&1)"
  check_eq repro.same_blob_set "$(ls "$W/out/main/blobs/sha256" | sort | sha256sum | cut -c1-16)" \
    "$(ls "$r/out/blobs/sha256" | sort | sha256sum | cut -c1-16)"
  rm -rf "$W/repro-elsewhere"
}

section_run() {
  plan 42
  ensure_main_image || { prereq run main-image; return 0; }
  local im f sb
  im="$(img main)"
  f="$(facts_for main "$im")"
  if [[ ! -s "$f" ]]; then fail run.facts "container did not run: $(tail_detail "$LOGS/facts.main.err")"; return 0; fi
  check_eq run.id_sandbox "uid=998(sandbox) gid=998(sandbox) groups=998(sandbox)" "$(fact "$f" id.sandbox)"
  check_re run.id_gateway '^uid=999\(gateway\) gid=999\(gateway\) groups=.*998\(sandbox\)' "$(fact "$f" id.gateway)"
  check_re run.id_root_in_sandbox_group 'groups=.*998\(sandbox\)' "$(fact "$f" id.root)"
  check_re run.passwd_sandbox '^sandbox:x:998:998:[^:]*:/sandbox:/bin/bash$' "$(fact "$f" passwd.sandbox)"
  check_re run.passwd_gateway '^gateway:x:999:999:[^:]*:/sandbox:/usr/sbin/nologin$' "$(fact "$f" passwd.gateway)"
  check_eq run.stat_sandbox "sandbox:sandbox 755" "$(fact "$f" stat./sandbox)"
  check_eq run.stat_openclaw "sandbox:sandbox 2770" "$(fact "$f" stat./sandbox/.openclaw)"
  check_empty run.openclaw_subdirs "$(fact "$f" openclaw.bad_subdirs)" "wrong or missing"
  check_eq run.stat_exec_approvals "sandbox:sandbox 660" "$(fact "$f" stat./sandbox/.openclaw/exec-approvals.json)"
  check_eq run.stat_nemoclaw "root:root 1755" "$(fact "$f" stat./sandbox/.nemoclaw)"
  local s
  for s in state migration snapshots staging; do
    check_re "run.stat_nemoclaw_$s" '^sandbox:sandbox [0-7]+$' "$(fact "$f" "stat./sandbox/.nemoclaw/$s")"
  done
  check_eq run.stat_bashrc "root:root 444" "$(fact "$f" stat./sandbox/.bashrc)"
  check_eq run.stat_profile "root:root 444" "$(fact "$f" stat./sandbox/.profile)"
  check_eq run.bashrc_content "# NemoClaw sandbox shell init|" "$(fact "$f" rc.bashrc)"
  check_eq run.profile_content "# NemoClaw sandbox login init|" "$(fact "$f" rc.profile)"
  check_empty run.rc_files_no_proxy "$(fact "$f" rc.proxy_grep)" "grep -i proxy matched"
  check_eq run.stat_profile_d_hook "root:root 444" "$(fact "$f" stat./etc/profile.d/nemoclaw-proxy.sh)"
  check_eq run.profile_d_hook_line 1 "$(fact "$f" hook.profile_d)"
  check_eq run.bashrc_hook_once 1 "$(fact "$f" hook.bashrc_count)"
  check_eq run.bashrc_hook_before_ps1_return before "$(fact "$f" hook.bashrc_order)"
  check_re run.stat_etc_bashrc '^root:root ' "$(fact "$f" stat./etc/bash.bashrc)"
  check_eq run.stat_init "root:root 755" "$(fact "$f" stat./usr/local/bin/nemoclaw-init)"
  check_eq run.init_is_elf "177ELF" "$(fact "$f" init.elf)"
  check_empty run.opt_not_group_world_writable "$(fact "$f" opt.group_world_writable)" "find -perm /022"
  check_empty run.opt_root_owned "$(fact "$f" opt.not_root_owned)" "not root:root"
  check_re run.artifacts_run_with_node '^0\.1\.0 ?$' "$(fact "$f" opt.node_version)"

  # writes and shell hooks as the stepped-down user (via the init, as deployed)
  sb="$STATE/sandbox.main"
  prun --user root -e NEMOCLAW_PROXY_HOST=10.200.0.9 -e NEMOCLAW_PROXY_PORT=3130 \
    -v "$W/scripts/sandbox.sh:/e2e/sandbox.sh:ro" "$im" /bin/bash /e2e/sandbox.sh >"$sb" 2>"$LOGS/sandbox.main.err" || true
  if [[ "$(fact "$sb" uid)" != 998 ]]; then
    fail run.write_via_init.prereq "command did not run as uid 998 under the init (uid='$(fact "$sb" uid)': $(tail_detail "$LOGS/sandbox.main.err")); write probes use --user sandbox --entrypoint instead"
    prun --user sandbox --entrypoint /bin/bash -v "$W/scripts/sandbox.sh:/e2e/sandbox.sh:ro" \
      "$im" /e2e/sandbox.sh >"$sb.direct" 2>>"$LOGS/sandbox.main.err" || true
    grep '^w\.' "$sb.direct" >"$sb.w" || true
    grep -v '^w\.' "$sb" >>"$sb.w" || true
    mv "$sb.w" "$sb"
  fi
  check_eq run.sandbox_cannot_write_bashrc denied "$(fact "$sb" w./sandbox/.bashrc)"
  check_eq run.sandbox_cannot_write_profile denied "$(fact "$sb" w./sandbox/.profile)"
  check_eq run.sandbox_cannot_create_in_nemoclaw denied "$(fact "$sb" w./sandbox/.nemoclaw)"
  check_eq run.sandbox_can_write_nemoclaw_state ok "$(fact "$sb" w./sandbox/.nemoclaw/state)"
  check_eq run.sandbox_can_write_openclaw_workspace ok "$(fact "$sb" w./sandbox/.openclaw/workspace)"
  check_eq run.sandbox_can_write_home ok "$(fact "$sb" w./sandbox)"
  check_eq run.sandbox_cannot_write_opt denied "$(fact "$sb" w./opt/nemoclaw)"
  check_eq run.sandbox_cannot_write_etc denied "$(fact "$sb" w./etc)"
  check_eq run.proxy_login_shell_sandbox "http://10.200.0.9:3130" "$(fact "$sb" proxy.login)"
  check_eq run.proxy_interactive_shell_sandbox "http://10.200.0.9:3130" "$(fact "$sb" proxy.interactive)"

  # root shells see the proxy too (entrypoint bypassed, env file written by hand)
  local out
  out="$(prun --user root --entrypoint /bin/bash "$im" -c '
      printf "export HTTP_PROXY=http://10.200.0.1:3128\n" >/tmp/nemoclaw-proxy-env.sh
      cd /tmp; echo "login=$(bash -lc "echo \$HTTP_PROXY" 2>/dev/null | tail -n1)"
      echo "interactive=$(bash -ic "echo \$HTTP_PROXY" 2>/dev/null </dev/null | tail -n1)"' 2>"$LOGS/run.rootproxy.err" || true)"
  check_eq run.proxy_login_shell_root "login=http://10.200.0.1:3128" "$(grep '^login=' <<<"$out" || true)"
  check_eq run.proxy_interactive_shell_root "interactive=http://10.200.0.1:3128" "$(grep '^interactive=' <<<"$out" || true)"
  # without the env file, shells get no proxy and do not fail
  out="$(prun --user sandbox --entrypoint /bin/bash "$im" -c 'cd /tmp; bash -lc "echo [\$HTTP_PROXY]"' 2>"$LOGS/run.noproxy.err" || echo "rc=$?")"
  check_eq run.no_proxy_file_no_proxy "[]" "$(tail -n 1 <<<"$out")"
}

# purge probes on a loaded image: PREFIX NAME IMAGE (PURGE_PROBES lines)
PURGE_PROBES=30
purge_probes() {
  local p="$1" f c
  f="$(facts_for "$2" "$3")"
  if [[ ! -s "$f" ]]; then fail "$p.facts" "container did not run: $(tail_detail "$LOGS/facts.$2.err")"; return 0; fi
  for c in gcc g++ cc c++ cpp make nc netcat ncat; do
    check_eq "$p.absent_$c" ABSENT "$(fact "$f" "cmd.$c")"
  done
  for c in as ld x86_64-linux-gnu-as x86_64-linux-gnu-ld; do
    check_eq "$p.absent_binutils_$c" ABSENT "$(fact "$f" "cmd.$c")"
  done
  for c in vi jq dos2unix ps tmux chattr node; do
    check_re "$p.present_$c" '^/' "$(fact "$f" "cmd.$c")"
  done
  for c in vim-tiny jq dos2unix procps e2fsprogs tmux; do
    check_eq "$p.kept_pkg_$c" ii "$(fact "$f" "dpkg.status.$c")"
  done
  check_empty "$p.dpkg_audit_empty" "$(fact "$f" dpkg.audit)" "dpkg --audit"
  check_eq "$p.dpkg_audit_rc" 0 "$(fact "$f" dpkg.audit_rc)"
  check_empty "$p.dpkg_l_no_purged" "$(fact "$f" dpkg.present_forbidden)" "still in dpkg -l"
  check_eq "$p.apt_get_check" 0 "$(fact "$f" apt.check_rc)"
}

section_purge() {
  plan "$PURGE_PROBES"
  ensure_main_image || { prereq purge main-image; return 0; }
  purge_probes purge main "$(img main)"
}

section_init() {
  plan 29
  ensure_main_image || { prereq init main-image; return 0; }
  local im f bits b name hex bad nofile_start nofile_want
  im="$(img main)"
  # Start with limits above the targets so the init has to lower them. Raising a hard limit
  # needs CAP_SYS_RESOURCE; where the host's own hard nofile limit is below 65536 (and root
  # lacks CAP_SYS_RESOURCE) start there, and expect it kept (the target is a ceiling).
  nofile_start="$(ulimit -Hn)"
  [[ "$nofile_start" == unlimited || "$nofile_start" -gt 131072 ]] && nofile_start=131072
  nofile_want=$(( nofile_start > 65536 ? 65536 : nofile_start ))
  ((nofile_start > 65536)) || note "host hard nofile limit is $nofile_start (< 65536): init.nofile_* expect $nofile_want"
  f="$STATE/init.main"
  prun --user root --cap-add=ALL --ulimit "nofile=$nofile_start:$nofile_start" --ulimit nproc=4096:4096 \
    -e NEMOCLAW_PROXY_HOST=10.200.0.9 -e NEMOCLAW_PROXY_PORT=3130 \
    -v "$W/scripts/init.sh:/e2e/init.sh:ro" "$im" /bin/bash /e2e/init.sh >"$f" 2>"$LOGS/init.main.err" || true
  if [[ -z "$(fact "$f" uid)" ]]; then fail init.runs "no output: $(tail_detail "$LOGS/init.main.err")"; return 0; fi
  pass init.runs
  check_eq init.stepdown_uid 998 "$(fact "$f" uid)"
  check_eq init.stepdown_id "uid=998(sandbox) gid=998(sandbox) groups=998(sandbox)" "$(fact "$f" id)"
  check_eq init.pid1_is_init nemoclaw-init "$(fact "$f" pid1.comm)"
  check_eq init.home /sandbox "$(fact "$f" home)"
  check_re init.path_first '^/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' "$(fact "$f" path)"
  hex="$(fact "$f" capbnd)"
  if [[ "$hex" =~ ^[0-9a-f]{16}$ ]]; then
    bad=""
    for b in 21:sys_admin 19:sys_ptrace 13:net_raw 1:dac_override 18:sys_chroot 4:fsetid 31:setfcap \
             27:mknod 29:audit_write 10:net_bind_service 7:setuid 6:setgid 0:chown 3:fowner 5:kill; do
      bits="${b%%:*}"; name="${b#*:}"
      (( (0x$hex >> bits) & 1 )) && bad="$bad $name"
    done
    check_empty init.capbnd_dropped "$bad" "CapBnd $hex still has"
  else
    fail init.capbnd_dropped "no CapBnd read: '$hex'"
  fi
  check_eq init.capeff_empty 0000000000000000 "$(fact "$f" capeff)"
  check_eq init.nproc_soft 512 "$(fact "$f" nproc.soft)"
  check_eq init.nproc_hard 512 "$(fact "$f" nproc.hard)"
  check_eq init.nofile_soft "$nofile_want" "$(fact "$f" nofile.soft)"
  check_eq init.nofile_hard "$nofile_want" "$(fact "$f" nofile.hard)"
  check_eq init.proxy_env_file_meta "root:root 444" "$(fact "$f" proxyfile.stat)"
  check_eq init.proxy_env_http "http://10.200.0.9:3130" "$(fact "$f" proxyfile.http)"
  check_eq init.proxy_env_https "http://10.200.0.9:3130" "$(fact "$f" proxyfile.https)"
  check_eq init.proxy_env_no_proxy "localhost,127.0.0.1,::1,10.200.0.9" "$(fact "$f" proxyfile.no_proxy)"
  check_eq init.reaps_orphans 0 "$(fact "$f" zombies)"

  # the usual run flags (limits 1024:1024): nproc lowered to 512, nofile stays <= 65536
  local out
  out="$(prun --user root "$im" bash -c 'echo "$(ulimit -Su) $(ulimit -Hu) $(ulimit -Sn)"' 2>"$LOGS/init.limits.err" || true)"
  check_re init.default_flags_nproc_512 '^512 512 [0-9]+$' "$(tail -n 1 <<<"$out")"
  # default proxy values
  out="$(prun --user root "$im" bash -c '. /tmp/nemoclaw-proxy-env.sh; echo "$HTTP_PROXY"' 2>"$LOGS/init.proxydefault.err" || true)"
  check_eq init.proxy_defaults "http://10.200.0.1:3128" "$(tail -n 1 <<<"$out")"

  # exit status propagation
  local rc=0
  prun --user root "$im" sh -c 'exit 7' >/dev/null 2>"$LOGS/init.exit7.err" || rc=$?
  check_eq init.exit_status_propagates 7 "$rc"
  rc=0; prun --user root "$im" true >/dev/null 2>"$LOGS/init.exit0.err" || rc=$?
  check_eq init.exit_status_zero 0 "$rc"

  # gateway mode (no command: `--` alone): the init supervises $NEMOCLAW_GATEWAY_CMD as the
  # gateway user, restarts it after a crash (2 s delay) and ends with its clean exit.
  local gw="$STATE/gateway"
  rm -rf "$gw"; mkdir -p "$gw"; chmod 0777 "$gw"
  rc=0
  prun --user root -v "$gw:/gw" \
    -e 'NEMOCLAW_GATEWAY_CMD=id -un >>/gw/who; [ -e /gw/crashed ] && exit 0; : >/gw/crashed; exit 3' \
    "$im" -- >"$LOGS/init.gateway.out" 2>"$LOGS/init.gateway.err" || rc=$?
  check_grep init.gateway_supervised 'supervising gateway' "$LOGS/init.gateway.err"
  check_grep init.gateway_restarted_after_crash 'gateway exited with status 3; restarting in 2s' "$LOGS/init.gateway.err"
  check_eq init.gateway_clean_exit_ends_supervision 0 "$rc"
  check_eq init.gateway_runs_as_gateway_twice "gateway gateway" "$(tr '\n' ' ' 2>/dev/null <"$gw/who" | sed 's/ $//')"

  # bounding-set drop without CAP_SETPCAP: continue by default, fail closed on request
  rc=0; out="$(prun --user root --cap-drop=setpcap "$im" id -u 2>"$LOGS/init.nosetpcap.err")" || rc=$?
  check_eq init.no_setpcap_continues "0:998" "$rc:$(tail -n 1 <<<"$out")"
  rc=0; prun --user root --cap-drop=setpcap -e NEMOCLAW_REQUIRE_CAP_DROP=1 "$im" id -u \
    >"$LOGS/init.requiredrop.out" 2>"$LOGS/init.requiredrop.err" || rc=$?
  if ((rc != 0)) && ! grep -qx 998 "$LOGS/init.requiredrop.out"; then pass init.require_cap_drop_fails_closed
  else fail init.require_cap_drop_fails_closed "rc=$rc, command output '$(head -c 50 "$LOGS/init.requiredrop.out")'"; fi
  rc=0; prun --user root --cap-add=ALL -e NEMOCLAW_REQUIRE_CAP_DROP=1 "$im" true >/dev/null 2>"$LOGS/init.requiredrop-ok.err" || rc=$?
  check_eq init.require_cap_drop_ok_with_setpcap 0 "$rc"

  # podman stop: the init forwards SIGTERM to the command, which dies of it (exit 143);
  # had it not been forwarded, podman would SIGKILL the container after -t (exit 137)
  local c="$CTR_PREFIX-stop" code
  if timeout 120 podman "${PODMAN_GLOBAL[@]}" run -d --name "$c" "${PODMAN_RUN_FLAGS[@]}" --user root "$im" sleep 1000 \
      >"$LOGS/init.stop.log" 2>&1; then
    sleep 2
    timeout 90 podman "${PODMAN_GLOBAL[@]}" stop -t 30 "$c" >>"$LOGS/init.stop.log" 2>&1 || true
    code="$(podman "${PODMAN_GLOBAL[@]}" inspect --format '{{.State.ExitCode}}' "$c" 2>>"$LOGS/init.stop.log" || echo none)"
    check_eq init.stop_forwards_sigterm 143 "$code"
    podman "${PODMAN_GLOBAL[@]}" rm -f "$c" >/dev/null 2>&1 || true
  else
    fail init.stop_forwards_sigterm "could not start: $(tail_detail "$LOGS/init.stop.log")"
  fi
}

# The OpenShell run path and the runtime matrix (scripts/e2e-openshell.sh).
section_openshell() {
  plan 0 # all in the sub-suite
  ensure_main_image || { prereq openshell main-image; return 0; }
  IMAGE="$(img main)" OCI="$W/out/main" TAG="$TAG" BIN="$BIN" E2E_WORK="$W/openshell" \
    subsuite openshell bash "$NEMOCLAW_ROOT/scripts/e2e-openshell.sh"
}

section_bomb() {
  plan 4
  ensure_main_image || { prereq bomb main-image; return 0; }
  local im c="$CTR_PREFIX-bomb" n err alive
  im="$(img main)"
  # dash gives up at the first failed fork (bash would retry for seconds per fork); the
  # outer bash only uses builtins afterwards and then execs sleep.
  if ! timeout 120 podman "${PODMAN_GLOBAL[@]}" run -d --name "$c" "${PODMAN_RUN_FLAGS[@]}" --user root "$im" \
      bash -c 'sh -c "i=0; while [ \$i -lt 600 ]; do sleep 60 & i=\$((i+1)); echo \$i >/tmp/bomb.n; done" 2>/tmp/bomb.err
               exec sleep 120' >"$LOGS/bomb.log" 2>&1; then
    fail bomb.start "$(tail_detail "$LOGS/bomb.log")"; return 0
  fi
  sleep 8
  n="$(timeout 30 podman exec --user root "$c" cat /tmp/bomb.n 2>>"$LOGS/bomb.log" || echo '?')"
  err="$(timeout 30 podman exec --user root "$c" cat /tmp/bomb.err 2>>"$LOGS/bomb.log" | tail -n 1 || true)"
  alive="$(timeout 30 podman exec --user root "$c" echo alive 2>>"$LOGS/bomb.log" || echo dead)"
  timeout 60 podman rm -f -t 2 "$c" >/dev/null 2>&1 || true
  if [[ "$n" =~ ^[0-9]+$ ]] && ((n < 600)); then pass bomb.nproc_limits_forks
  else fail bomb.nproc_limits_forks "started '$n' of 600 background processes (err: $err)"; fi
  if [[ "$n" =~ ^[0-9]+$ ]] && ((n <= 512)); then pass bomb.nproc_at_most_512
  else fail bomb.nproc_at_most_512 "started '$n'"; fi
  check_re bomb.fork_failure_reported '[Cc]annot fork|Resource temporarily unavailable' "$err"
  check_eq bomb.container_still_answers alive "$alive"
}

section_whiteout() {
  plan $((5 + PURGE_PROBES + 2 + PURGE_PROBES + 2 + 1))
  ensure_main || true
  prereq whiteout bin || return 0
  build_into wo "$W/out/wo" --base "oci:$BASE_OCI:latest" --purge-mode whiteout
  build_into rwoci "$W/out/rwoci" --base "oci:$BASE_OCI:latest" --purge-mode rewrite
  local m
  if [[ -f "$STATE/wo.ok" ]]; then
    pass whiteout.build
    m="$(manifest_of "$W/out/wo" "$TAG")"
    check_eq whiteout.base_layer_unchanged "$BASE_LAYER0" "$(jq -r '.layers[0].digest' "$m")"
    check_eq whiteout.base_diff_id_unchanged "$BASE_DIFF0" "$(jq -r '.rootfs.diff_ids[0]' "$(config_of "$W/out/wo" "$TAG")")"
    probe whiteout.oci-image-tool oci-image-tool validate --type image --ref "name=$TAG" "$W/out/wo"
    probe whiteout.has_whiteout_entries bash -c 'm=$1; o=$2
      for d in $(jq -r ".layers[1:][] | .digest" "$m"); do
        tar -tzf "$o/blobs/sha256/${d#sha256:}" 2>/dev/null; done | grep -E "(^|/)\.wh\.[^/]*gcc|(^|/)\.wh\..*(cc1|gcc-12|libstdc)" | head -n 3 | grep -q .' _ "$m" "$W/out/wo"
    if load_image "oci:$W/out/wo:$TAG" wo >"$LOGS/load-wo.log" 2>&1; then
      purge_probes whiteout.purge wo "$(img wo)"
    else
      fail whiteout.load "$(tail_detail "$LOGS/load-wo.log")"
    fi
  else
    fail whiteout.build "$(cat "$STATE/wo.why")"
  fi
  if [[ -f "$STATE/rwoci.ok" ]]; then
    pass rewrite_oci_base.build
    m="$(manifest_of "$W/out/rwoci" "$TAG")"
    check_nre rewrite_oci_base.base_layer_rewritten "^$BASE_LAYER0\$" "$(jq -r '.layers[0].digest' "$m")"
    if load_image "oci:$W/out/rwoci:$TAG" rwoci >"$LOGS/load-rwoci.log" 2>&1; then
      purge_probes rewrite_oci_base.purge rwoci "$(img rwoci)"
    else
      fail rewrite_oci_base.load "$(tail_detail "$LOGS/load-rwoci.log")"
    fi
  else
    fail rewrite_oci_base.build "$(cat "$STATE/rwoci.why")"
  fi
  # compressed sizes: rewrite really drops the purged bytes, whiteout only hides them
  local s_rw s_base s_wo
  s_rw="$(jq '[.layers[].size] | add' "$(manifest_of "$W/out/rwoci" "$TAG" || echo /nonexistent)" 2>/dev/null || echo 0)"
  s_wo="$(jq '[.layers[].size] | add' "$(manifest_of "$W/out/wo" "$TAG" || echo /nonexistent)" 2>/dev/null || echo 0)"
  s_base="$(jq '[.layers[].size] | add' "$BASE_OCI/blobs/sha256/${BASE_MANIFEST#sha256:}" 2>/dev/null || echo 0)"
  note "compressed sizes: base $s_base, rewrite $s_rw, whiteout $s_wo"
  if ((s_base > 0 && s_rw > 0 && s_rw < s_base)); then pass rewrite_oci_base.smaller_than_base
  else fail rewrite_oci_base.smaller_than_base "rewrite $s_rw bytes vs base $s_base bytes (compressed, all layers)"; fi
  if ((s_base > 0 && s_wo > s_base)); then pass whiteout.keeps_base_bytes
  else fail whiteout.keeps_base_bytes "whiteout $s_wo bytes vs base $s_base bytes: the base layer must ship unchanged"; fi
  if ensure_main_image && ensure_base_image; then
    local a b
    a="$(podman image inspect --format '{{.Size}}' "$(img main)" 2>/dev/null || echo 0)"
    b="$(podman image inspect --format '{{.Size}}' "$BASE_REF" 2>/dev/null || echo 0)"
    if ((a > 0 && b > 0 && a < b)); then pass rewrite.smaller_than_base
    else fail rewrite.smaller_than_base "image $a bytes vs base $b bytes (podman image size)"; fi
  fi
}

audit_text() { jq -r '.findings[] | "\(.id) \(.severity) \(.path) \(.message)"' "$1" 2>/dev/null || true; }

# Exit codes, --json/--junit shape and hostile-image findings: tests/audit.rs. Here: the
# real Debian base and the built image.
section_audit() {
  plan 10
  prereq audit bin || return 0
  local rc t
  if ensure_main; then
    rc=0; nb audit.main audit "oci:$W/out/main:$TAG" --json || rc=$?
    check_eq audit.main_passes 0 "$rc"
    check_eq audit.main_no_error_findings 0 \
      "$(jq '[.findings[] | select(.severity == "error" or .severity == "critical")] | length' "$LOGS/audit.main.out" 2>&1)"
  fi
  rc=0; nb audit.base audit "oci:$BASE_OCI:latest" --json --fail-on error || rc=$?
  if ((rc != 0)) && no_panic audit.base; then pass audit.base_fails; else fail audit.base_fails "rc=$rc: $(tail_detail "$LOGS/audit.base.err")"; fi
  t="$(audit_text "$LOGS/audit.base.out")"
  check_re audit.base_names_gcc '(^|[^a-z0-9+])gcc([^a-z0-9+-]|$)' "$t"
  check_re audit.base_names_gxx 'g\+\+' "$t"
  check_re audit.base_names_make '(^|[^a-z0-9-])make([^a-z0-9-]|$)' "$t"
  check_re audit.base_names_nc '(^|[^a-z0-9.-])(nc|netcat|netcat-openbsd)([^a-z0-9-]|$)' "$t"
  check_re audit.base_names_bashrc '/sandbox/\.bashrc' "$t"
  check_re audit.base_names_profile '/sandbox/\.profile' "$t"
  check_re audit.base_names_proxy_hook 'nemoclaw-proxy\.sh|bash\.bashrc' "$t"
}

# policy_writable JSON PATH: try the plausible shapes of `policy --json` for "can sandbox
# create files here" (effective = Landlock AND DAC); prints true/false or nothing.
policy_writable() {
  jq -r --arg p "$2" '
    def truthy: if type == "boolean" then . elif type == "string" then (test("^(rw|w|write|writable|yes|true|allow(ed)?)$"; "i")) else empty end;
    [.. | objects | select((.path? // .dir? // empty) == $p and ((.user? // "sandbox") == "sandbox"))] | first // empty
    | [ .effective_writable, .effective_write, .writable_effective, .sandbox_writable,
        .effective.writable?, .effective.write?, .effective?.sandbox?, .sandbox?.effective?,
        .sandbox?.writable?, .writable?, .effective? ]
    | map(select(. != null) | truthy) | if length > 0 then (.[0] | tostring) else empty end' "$1" 2>/dev/null || true
}

section_policy() {
  plan 6
  ensure_main_image || { prereq policy main-image; return 0; }
  local rc=0 sb p exp got im
  im="$(img main)"
  nb policy.main policy "oci:$W/out/main:$TAG" --json || rc=$?
  check_eq policy.exit 0 "$rc"
  probe policy.json jq -e . "$LOGS/policy.main.out"
  sb="$STATE/sandbox.main"
  if [[ ! -s "$sb" ]]; then
    prun --user sandbox --entrypoint /bin/bash -v "$W/scripts/sandbox.sh:/e2e/sandbox.sh:ro" \
      "$im" /e2e/sandbox.sh >"$sb" 2>"$LOGS/sandbox.main.err" || true
  fi
  for p in /sandbox/.nemoclaw /sandbox/.nemoclaw/state /sandbox/.openclaw/workspace /sandbox; do
    case "$(fact "$sb" "w.$p")" in ok) exp=true ;; denied) exp=false ;; *) exp="unknown(podman probe missing)" ;; esac
    got="$(policy_writable "$LOGS/policy.main.out" "$p")"
    check_eq "policy.agrees_with_podman:$p" "$exp" "${got:-no writability for $p in policy --json}"
  done
}

section_peer() {
  plan 11
  local rc=0 t0
  t0=$(now_ms)
  printf '%s\n' "$(img peer)" >>"$STATE/images"
  "$NEMOCLAW_ROOT/scripts/peer-build.sh" --tag "$(img peer)" "$BASE_TAR" "$ART" "$W/out/peer.oci.tar" \
    >"$LOGS/peer.build.out" 2>"$LOGS/peer.build.err" || rc=$?
  note "peer build rc=$rc in $(( ($(now_ms) - t0) / 1000 ))s ($(grep 'timings' "$LOGS/peer.build.err" || true))"
  if ((rc != 0)); then fail peer.build "exit $rc: $(tail_detail "$LOGS/peer.build.err")"; return 0; fi
  pass peer.build
  local surv
  surv="$(prun --user root --entrypoint /bin/sh "$(img peer)" -c \
      'for c in x86_64-linux-gnu-as x86_64-linux-gnu-ld ld as; do command -v $c; done' 2>"$LOGS/peer.surv.err" | tr '\n' ' ' || true)"
  check_re peer.fixture_binutils_survive 'x86_64-linux-gnu-as' "$surv"
  prereq peer bin || return 0
  rc=0; nb audit.peer audit "oci-archive:$W/out/peer.oci.tar" --json || rc=$?
  if ((rc != 0)) && no_panic audit.peer; then pass peer.audit_fails; else fail peer.audit_fails "rc=$rc: $(tail_detail "$LOGS/audit.peer.err")"; fi
  local t
  t="$(audit_text "$LOGS/audit.peer.out")"
  check_re peer.audit_names_as 'x86_64-linux-gnu-as|/usr/bin/as([^a-z.-]|$)' "$t"
  check_re peer.audit_names_ld 'x86_64-linux-gnu-ld|/usr/bin/ld([^a-z-]|\.bfd|\.gold|$)' "$t"
  check_nre peer.audit_no_gcc_false_positive '/usr/bin/gcc([^-a-z]|$)' "$t"
  # diff against the peer, timestamps ignored: the real differences, nothing spurious
  ensure_main || { prereq peer main; return 0; }
  rc=0; nb diff.peer diff "oci:$W/out/main:$TAG" "oci-archive:$W/out/peer.oci.tar" --ignore-timestamps --all || rc=$?
  if ((rc == 1)) && no_panic diff.peer; then pass peer.diff_reports_difference; else fail peer.diff_reports_difference "rc=$rc: $(tail_detail "$LOGS/diff.peer.err")"; fi
  t="$(cat "$LOGS/diff.peer.out" 2>/dev/null || true)"
  check_re peer.diff_names_binutils_in_peer '/usr/bin/x86_64-linux-gnu-as: only in the second image' "$t"
  check_re peer.diff_names_init_in_ours '/usr/local/bin/nemoclaw-init: only in the first image' "$t"
  check_nre peer.diff_no_spurious_libc 'x86_64-linux-gnu/libc\.so\.6' "$t"
  check_nre peer.diff_no_spurious_bash '/usr/bin/bash:' "$t"
}

# oracle_trees DIR PURGE KEEP AUTO: DIR/before = the base rootfs, DIR/after = a copy in
# which apt really purged (in a chroot, private mount namespace: nothing mounted outlives it)
oracle_trees() {
  local d="$1" purge="$2" keep="$3" auto="$4"
  rm -rf "$d"; mkdir -p "$d/before"
  tar --numeric-owner -xpf "$BASE_TAR" -C "$d/before" || return 1
  cp -a "$d/before" "$d/after" || return 1
  unshare --mount --propagation private -- bash -c '
      set -e
      a="$1" keep="$2" purge="$3" auto="$4"
      mount -t proc proc "$a/proc"
      [ -z "$keep" ] || chroot "$a" apt-mark manual $keep
      set --
      for p in $purge; do chroot "$a" dpkg -s "$p" >/dev/null 2>&1 && set -- "$@" "$p"; done
      echo "purging: $*"
      if [ "$auto" = 1 ]; then set -- --auto-remove "$@"; fi
      chroot "$a" env DEBIAN_FRONTEND=noninteractive apt-get purge -y "$@"' _ "$d/after" "$keep" "$purge" "$auto"
}

section_oracle() {
  plan 3
  local lists purge keep auto apt tool o="$W/oracle"
  if ! lists="$(python3 - "$RECIPE" <<'EOF'
import sys, tomllib
r = tomllib.load(open(sys.argv[1], "rb"))
p = r.get("packages", {})
print(" ".join(p.get("purge", [])))
print(" ".join(p.get("keep", [])))
print("1" if p.get("autoremove", True) else "0")
EOF
  )"; then fail oracle.recipe "cannot read purge list from $RECIPE"; return 0; fi
  purge="$(sed -n 1p <<<"$lists")"; keep="$(sed -n 2p <<<"$lists")"; auto="$(sed -n 3p <<<"$lists")"

  # 1. The planner against a real `apt-get purge` of the recipe's list in a chroot of the
  #    base, file by file (dpkg::tests::oracle_vs_apt: packages, database files byte for
  #    byte, removed paths, symlinks, both directions).
  if [[ $(id -u) -ne 0 ]] || ! have unshare || ! have chroot; then
    skip oracle.real_purge_in_chroot "needs root, unshare and chroot"
    skip oracle.plan_matches_real_purge "no chroot purge"
  elif ! oracle_trees "$o" "$purge" "$keep" "$auto" >"$LOGS/oracle.chroot.log" 2>&1; then
    fail oracle.real_purge_in_chroot "$(tail_detail "$LOGS/oracle.chroot.log")"
    fail oracle.plan_matches_real_purge "no chroot purge"
  else
    pass oracle.real_purge_in_chroot
    if [[ "${E2E_NO_CARGO:-0}" == 1 ]] || ! have cargo; then
      skip oracle.plan_matches_real_purge "cargo not available (E2E_NO_CARGO=1 or not installed)"
    else
      local log="$LOGS/oracle.plan_matches_real_purge.log"
      if (cd "$NEMOCLAW_ROOT" && NEMOCLAW_ORACLE_ROOT="$o/before" NEMOCLAW_ORACLE_AFTER="$o/after" \
          NEMOCLAW_ORACLE_RECIPE="$RECIPE" cargo test --lib --quiet dpkg::tests::oracle_vs_apt \
          -- --ignored --exact --nocapture) >"$log" 2>&1; then
        pass oracle.plan_matches_real_purge
      else
        fail oracle.plan_matches_real_purge "$(grep -m1 -A2 -E 'difference\(s\)|panicked' "$log" | tr '\n' ' ')"
      fi
    fi
  fi
  rm -rf "$o"

  # 2. End to end, by package name: what the main build reports as purged vs what
  #    `apt-get -s` says in the base image under podman.
  ensure_main || { prereq oracle main; return 0; }
  ensure_base_image || { prereq oracle base-image; return 0; }
  apt="$(prun --user root --entrypoint /bin/bash "$BASE_REF" -c '
      keep="$1" purge="$2" auto="$3"
      [ -n "$keep" ] && apt-mark manual $keep >/dev/null 2>&1
      set -- ; for p in $purge; do dpkg -s "$p" >/dev/null 2>&1 && set -- "$@" "$p"; done
      if [ "$auto" = 1 ]; then apt-get -s purge --auto-remove "$@"; else apt-get -s purge "$@"; fi \
        | awk "/^Purg /{print \$2}" | sed "s/:.*//" | sort -u | tr "\n" " "' _ "$keep" "$purge" "$auto" \
      2>"$LOGS/oracle.apt.err" || true)"
  tool="$(jq -r '.purged[]? | sub(":.*$"; "")' "$LOGS/main.out" 2>/dev/null | sort -u | tr '\n' ' ')"
  if [[ -z "$apt" ]]; then fail oracle.purged_set_matches_apt "apt-get -s purge gave nothing: $(tail_detail "$LOGS/oracle.apt.err")"; return 0; fi
  note "apt oracle purges $(wc -w <<<"$apt") packages; tool purged $(wc -w <<<"$tool")"
  if [[ "$apt" == "$tool" ]]; then pass oracle.purged_set_matches_apt
  else
    fail oracle.purged_set_matches_apt "only apt: $(comm -23 <(tr ' ' '\n' <<<"$apt" | sed '/^$/d') <(tr ' ' '\n' <<<"$tool" | sed '/^$/d') | tr '\n' ' ')| only tool: $(comm -13 <(tr ' ' '\n' <<<"$apt" | sed '/^$/d') <(tr ' ' '\n' <<<"$tool" | sed '/^$/d') | tr '\n' ' ')"
  fi
}

section_multilayer() {
  plan 8
  ensure_base_image || { prereq multilayer base-image; return 0; }
  local ctx="$W/ml-ctx" ref
  ref="$(img ml2)"
  mkdir -p "$ctx"
  cat >"$ctx/Containerfile" <<'EOF'
ARG BASE
FROM ${BASE}
RUN rm /etc/issue && rm -rf /usr/share/doc && mkdir /usr/share/doc && touch /usr/share/doc/new
EOF
  if ! timeout 600 podman "${PODMAN_GLOBAL[@]}" build --network=none --pull=never --layers=false \
      --build-arg "BASE=$BASE_REF" -t "$ref" -f "$ctx/Containerfile" "$ctx" >"$LOGS/ml.build.log" 2>&1; then
    fail multilayer.fixture_build "$(tail_detail "$LOGS/ml.build.log")"; return 0
  fi
  printf '%s\n' "$ref" >>"$STATE/images"
  rm -f "$W/out/ml.oci.tar" "$W/out/ml.docker.tar"
  if ! podman save --quiet --format oci-archive -o "$W/out/ml.oci.tar" "$ref" >"$LOGS/ml.save.log" 2>&1 \
     || ! podman save --quiet --format docker-archive -o "$W/out/ml.docker.tar" "$ref" >>"$LOGS/ml.save.log" 2>&1; then
    fail multilayer.fixture_save "$(tail_detail "$LOGS/ml.save.log")"; return 0
  fi
  # the fixture must really carry a whiteout and an opaque directory in its top layer
  probe multilayer.fixture_has_whiteouts bash -c 'd=$(mktemp -d); trap "rm -rf $d" EXIT
    tar -xf "$1" -C "$d" manifest.json || exit 1
    top=$(jq -r ".[0].Layers[-1]" "$d/manifest.json"); tar -xf "$1" -C "$d" "$top" || exit 1
    l=$(tar -tf "$d/$top" 2>/dev/null || tar -tzf "$d/$top")
    grep -qE "(^|/)etc/\.wh\.issue$" <<<"$l" || { echo "no .wh.issue"; exit 1; }
    grep -qE "(^|/)usr/share/doc/\.wh\.\.wh\.\.opq$|(^|/)usr/share/\.wh\.doc$" <<<"$l" || { echo "no opaque/whiteout for usr/share/doc"; exit 1; }' _ "$W/out/ml.docker.tar"
  prereq multilayer bin || return 0
  local kind src out
  for kind in oci-archive docker-archive; do
    if [[ $kind == oci-archive ]]; then src="oci-archive:$W/out/ml.oci.tar"; else src="docker-archive:$W/out/ml.docker.tar"; fi
    out="$W/out/ml-$kind"
    build_into "ml-$kind" "$out" --base "$src"
    if [[ ! -f "$STATE/ml-$kind.ok" ]]; then fail "multilayer.$kind.build" "$(cat "$STATE/ml-$kind.why")"; continue; fi
    pass "multilayer.$kind.build"
    if ! load_image "oci:$out:$TAG" "ml-$kind" >"$LOGS/load-ml-$kind.log" 2>&1; then
      fail "multilayer.$kind.load" "$(tail_detail "$LOGS/load-ml-$kind.log")"; continue
    fi
    local r
    r="$(prun --user root --entrypoint /bin/sh "$(img "ml-$kind")" -c \
        'if [ -e /etc/issue ]; then echo issue=present; else echo issue=absent; fi; echo "doc=$(ls -A /usr/share/doc | tr "\n" " ")"' \
        2>"$LOGS/ml.$kind.run.err" || true)"
    check_eq "multilayer.$kind.deleted_file_absent" issue=absent "$(grep '^issue=' <<<"$r" || true)"
    check_eq "multilayer.$kind.replaced_dir_only_new" "doc=new " "$(grep '^doc=' <<<"$r" || true)"
  done
  if [[ -f "$STATE/ml-oci-archive.ok" && -f "$STATE/ml-docker-archive.ok" ]]; then
    check_eq multilayer.same_diff_ids_from_both_archives \
      "$(jq -c .rootfs.diff_ids "$(config_of "$W/out/ml-oci-archive" "$TAG")")" \
      "$(jq -c .rootfs.diff_ids "$(config_of "$W/out/ml-docker-archive" "$TAG")")"
  fi
  rm -rf "$W/out/ml-oci-archive" "$W/out/ml-docker-archive" "$W/out/ml.oci.tar" "$W/out/ml.docker.tar"
}

start_registry() {
  have docker-registry || { fail registry.server "docker-registry not installed"; return 1; }
  # 5055 unless taken (another run, another tool): then the next free port up to 5075
  local p
  for p in $(seq "$REG_PORT" $((REG_PORT + 20))); do port_busy "$p" || break; done
  if port_busy "$p"; then fail registry.server "no free port in $REG_PORT..$((REG_PORT + 20))"; return 1; fi
  ((p == REG_PORT)) || note "port $REG_PORT is taken; registry on $p"
  REG_PORT=$p; REG="127.0.0.1:$p"
  mkdir -p "$W/registry/data"
  cat >"$W/registry/config.yml" <<EOF
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $W/registry/data
  delete:
    enabled: true
http:
  addr: $REG
EOF
  docker-registry serve "$W/registry/config.yml" >"$LOGS/registry.log" 2>&1 &
  printf '%s' "$!" >"$STATE/registry.pid"
  local _
  for _ in $(seq 50); do
    curl -fsS -o /dev/null "http://$REG/v2/" 2>/dev/null && return 0
    sleep 0.2
  done
  fail registry.server "did not come up: $(tail_detail "$LOGS/registry.log")"
  return 1
}

registry_tests() {
  prereq registry bin || return 0
  start_registry || return 0
  pass registry.server
  if ! timeout 600 skopeo copy --quiet --dest-tls-verify=false "oci:$BASE_OCI:latest" "docker://$REG/base:latest" \
      >"$LOGS/registry.push-base.log" 2>&1; then
    fail registry.push_base "$(tail_detail "$LOGS/registry.push-base.log")"; return 0
  fi
  local bd
  bd="$(skopeo inspect --tls-verify=false "docker://$REG/base:latest" 2>>"$LOGS/registry.push-base.log" | jq -r .Digest)"
  check_re registry.push_base '^sha256:[0-9a-f]{64}$' "$bd"
  local rc=0
  nb registry.build build --base "registry://$REG/base@$bd" --artifacts "$ART" \
    --output "registry://$REG/nemoclaw:test" --source-date-epoch "$EPOCH" --json || rc=$?
  if ((rc != 0)); then fail registry.build "exit $rc: $(tail_detail "$LOGS/registry.build.err")"; return 0; fi
  pass registry.build
  local d rd
  d="$(jq -r .digest "$LOGS/registry.build.out" 2>/dev/null || true)"
  rd="$(skopeo inspect --tls-verify=false "docker://$REG/nemoclaw:test" 2>"$LOGS/registry.inspect.err" | jq -r .Digest 2>/dev/null || true)"
  check_re registry.pushed_digest_format '^sha256:[0-9a-f]{64}$' "$d"
  check_eq registry.pushed_digest_matches_skopeo "$d" "$rd"
  rm -rf "$W/out/fromreg"
  probe registry.pull_back_and_validate bash -c 'skopeo copy --quiet --src-tls-verify=false "docker://$1/nemoclaw:test" "oci:$2:nemoclaw" \
      && oci-image-tool validate --type image --ref name=nemoclaw "$2"' _ "$REG" "$W/out/fromreg"
  # same base content as the oci: base build -> same layers
  build_into rwoci "$W/out/rwoci" --base "oci:$BASE_OCI:latest" --purge-mode rewrite
  if [[ -f "$STATE/rwoci.ok" && -d "$W/out/fromreg" ]]; then
    check_eq registry.same_diff_ids_as_oci_base_build \
      "$(jq -c .rootfs.diff_ids "$(config_of "$W/out/rwoci" "$TAG")" 2>&1)" \
      "$(jq -c .rootfs.diff_ids "$(config_of "$W/out/fromreg" nemoclaw)" 2>&1)"
  fi
  # registry output is also accepted as a base (by tag)
  rc=0
  nb registry.rebase audit "registry://$REG/nemoclaw:test" --json || rc=$?
  check_eq registry.audit_pushed_image 0 "$rc"
  kill "$(cat "$STATE/registry.pid")" 2>/dev/null || true
  rm -f "$STATE/registry.pid"
}
# The layer reader against GNU tar and Python's tarfile (scripts/e2e-tar-differential.sh).
section_tardiff() {
  plan 0 # all in the sub-suite
  BIN="$BIN" TARDIFF_BASE="$BASE_TAR" subsuite tar-diff bash "$NEMOCLAW_ROOT/scripts/e2e-tar-differential.sh"
}

# Output safety, signals, kill -9, a full filesystem, concurrency (scripts/e2e-faults.sh).
section_faults() {
  plan 0 # all in the sub-suite
  BIN="$BIN" subsuite faults bash "$NEMOCLAW_ROOT/scripts/e2e-faults.sh"
}

section_registry() {
  plan 8
  registry_tests
  # auth (htpasswd, auth files), repeat push uploads nothing, corrupting proxy, cross-repo mount
  BIN="$BIN" BASE_OCI="$BASE_OCI" ART="$ART" subsuite registry-ext bash "$NEMOCLAW_ROOT/scripts/e2e-registry.sh"
}
section_verify() {
  plan 0 # all in the sub-suite
  VERIFY_BASE="$BASE_TAR" VERIFY_ARTIFACTS="$ART" subsuite verify bash "$NEMOCLAW_ROOT/scripts/e2e-verify.sh"
}
# The SBOM of the built image lists exactly what dpkg says is installed inside it.
section_sbom() {
  plan 4
  ensure_main_image || { prereq sbom main-image; return 0; }
  local sb="$W/out/main.spdx.json" in_sbom in_image
  if nb sbom.main sbom "oci:$W/out/main:$TAG" -o "$sb"; then pass sbom.generate; else fail sbom.generate "$(tail_detail "$LOGS/sbom.main.err")"; return 0; fi
  in_sbom="$(jq -r '.packages[] | select(any(.externalRefs[]?; .referenceLocator | startswith("pkg:deb/"))) | .name' "$sb" | sort -u)"
  in_image="$(prun --user root --entrypoint /usr/bin/dpkg-query "$(img main)" -W -f '${db:Status-Abbrev} ${Package}\n' 2>"$LOGS/sbom.dpkg.err" \
    | awk '$1 ~ /^[ih]i/ {print $2}' | sed 's/:.*//' | sort -u)"
  check_re sbom.image_has_packages '(^|[[:space:]])adduser([[:space:]]|$)' "$in_image"
  check_eq sbom.matches_dpkg_in_image "$in_image" "$in_sbom"
  check_nre sbom.no_purged_packages '(^|[[:space:]])(gcc-12|g\+\+-12|cpp-12|make|netcat-openbsd|binutils|binutils-common)([[:space:]]|$)' "$in_sbom"
  subsuite sbom-schema bash "$NEMOCLAW_ROOT/scripts/check-sbom.sh" "$sb" --prefix sbom.schema
}
section_cache() {
  plan 0 # all in the sub-suite
  BIN="$BIN" BASE_OCI="$BASE_OCI" BASE_TAR="$BASE_TAR" ART="$ART" subsuite cache bash "$NEMOCLAW_ROOT/scripts/e2e-cache.sh"
}
# Artifacts taken from a podman-built builder image (scripts/e2e-builder.sh).
section_builder() {
  plan 0 # all in the sub-suite
  BIN="$BIN" BASE_TAR="$BASE_TAR" subsuite builder bash "$NEMOCLAW_ROOT/scripts/e2e-builder.sh"
}

# Signing and attestations, checked by independent verifiers (scripts/e2e-attest.sh).
section_attest() {
  plan 0 # all in the sub-suite
  BIN="$BIN" BASE_OCI="$BASE_OCI" ART="$ART" subsuite attest bash "$NEMOCLAW_ROOT/scripts/e2e-attest.sh"
}

# linux/amd64 + linux/arm64 in one run, one image index (scripts/e2e-multiarch.sh)
section_multiarch() {
  plan 0 # all in the sub-suite
  BIN="$BIN" MA_BASE_AMD64="$BASE_TAR" ART="$ART" subsuite multiarch bash "$NEMOCLAW_ROOT/scripts/e2e-multiarch.sh"
}

# ------------------------------------------------------------------ main -----------------
for s in ${E2E_ONLY//,/ }; do
  [[ " ${SECTIONS[*]} " == *" $s "* ]] || die "unknown section '$s' in E2E_ONLY (known: ${SECTIONS[*]})"
done
T_START=$(now_ms)
prepare
write_container_scripts
for s in "${SECTIONS[@]}"; do
  want "$s" || continue
  note "== $s"
  t0=$(now_ms)
  : >"$RESULTS.plan"
  n0="$(count_probes "$RESULTS" "$SHARED_PROBES")"
  set +e
  ( set -e; "section_$s" )
  rc=$?
  set -e
  ((rc == 0)) || fail "$s.aborted" "section exited with status $rc (bug in e2e.sh or a tool)"
  n=$(( $(count_probes "$RESULTS" "$SHARED_PROBES") - n0 ))
  if [[ ! -s "$RESULTS.plan" ]]; then fail "section.$s.plan" "the section declares no plan"
  elif ((n != $(planned))); then fail "section.$s.plan" "planned $(planned) probes, printed $n"; fi
  note "== $s done in $(( ($(now_ms) - t0) / 1000 ))s ($n probes)"
done

passed="$(count_kind "$RESULTS" PASS)"
failed="$(count_kind "$RESULTS" FAIL)"
skipped="$(count_kind "$RESULTS" SKIP)"
note "total $(( ($(now_ms) - T_START) / 1000 ))s; logs in $LOGS$([[ "${E2E_KEEP:-0}" == 1 ]] || echo ' (removed; E2E_KEEP=1 keeps them)')"
printf '%s passed, %s failed, %s skipped\n' "$passed" "$failed" "$skipped"
((failed == 0))

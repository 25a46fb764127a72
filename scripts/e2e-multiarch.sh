#!/usr/bin/env bash
# End-to-end checks of multi-arch builds (issue 13): one run makes linux/amd64 and
# linux/arm64 images from real bookworm bases (the arm64 one from `mk-base.sh --arch arm64`,
# i.e. mmdebstrap under qemu-user) and publishes one OCI image index. Checked with
# independent tools: skopeo (inspect --raw, copy --override-arch), umoci (unpack: the init
# of each image is an ELF of its machine), oci-image-tool (index and manifests), a local
# docker-registry (push, pull back by digest), podman (both images run; arm64 under qemu,
# with the hardening probes of the `run`/`init` sections), `verify` (each platform and the
# index digest, from a layout and from the registry), the refusals (docker-archive with two
# platforms, an arm64 rootfs given as amd64), and the fan-out: each platform built alone,
# assembled by `index` (registry to registry, layout to layout, registry to archive) into
# the one-run build's index digest, with no layer downloaded for a same-registry index, and
# two inputs of one platform refused before any layer is downloaded.
#
#   scripts/e2e-multiarch.sh
#
# stdout: `PLAN: N`, then one PASS/FAIL (or SKIP by hand) line per probe, then the summary;
# exit 1 on any FAIL (see scripts/probe.sh). Progress on stderr as `# ...`.
# Env:
#   BIN                 nemoclaw-build binary (default target/release/nemoclaw-build)
#   MA_BASE_AMD64       amd64 base tarball (default: scripts/mk-base.sh)
#   MA_BASE_ARM64       arm64 base tarball (default: scripts/mk-base.sh --arch arm64)
#   ART                 artifacts dir (default: scripts/mk-artifacts.sh into the work dir)
#   E2E_MA_PORT         registry port (default 5071)
#   E2E_KEEP=1, E2E_WORK=DIR as in the other suites
# shellcheck disable=SC2016
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
export LOG_TAG=e2e-multiarch

W="${E2E_WORK:-/tmp/nemoclaw-e2e-multiarch-$$}"
mkdir -p "$W/logs"
W="$(cd "$W" && pwd -P)"
LOGS="$W/logs"
RESULTS="$W/results"
: >"$RESULTS"
PIDS=()
# shellcheck source=probe.sh
. "$(dirname "${BASH_SOURCE[0]}")/probe.sh"
IMG_REPO="localhost/nemoclaw-e2e-ma-$$"
suite_cleanup() {
  local a
  for a in amd64 arm64; do pm rmi "$IMG_REPO:$a" >/dev/null 2>&1 || true; done
}
suite_begin multiarch
plan 60

BIN="${BIN:-$NEMOCLAW_ROOT/target/release/nemoclaw-build}"
EPOCH=1700000000
T=900
PORT="${E2E_MA_PORT:-5071}"
REG="127.0.0.1:$PORT"

# nb NAME ARGS...: the CLI with a private cache; stdout/stderr in logs/NAME.{out,err}
nb() {
  local name="$1" rc=0 t0; shift
  t0=$(now_ms)
  XDG_CACHE_HOME="$W/cache" timeout --kill-after=10 "$T" "$BIN" "$@" \
    >"$LOGS/$name.out" 2>"$LOGS/$name.err" </dev/null || rc=$?
  note "nemoclaw-build $1 [$name] rc=$rc in $(($(now_ms) - t0))ms"
  return $rc
}
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
# elf_machine FILE: the ELF e_machine (little-endian u16 at offset 18)
elf_machine() { od -An -j18 -N2 -tu2 "$1" 2>/dev/null | tr -d ' '; }
# fact FILE KEY
fact() { awk -v k="$2=" 'index($0, k) == 1 { print substr($0, length(k) + 1); exit }' "$1" 2>/dev/null || true; }

# ------------------------------------------------------------------ prerequisites ----------
for c in skopeo umoci oci-image-tool podman docker-registry jq curl od timeout; do
  have "$c" || { fail ma.prereq "missing $c (scripts/setup.sh)"; exit 1; }
done
[[ -x "$BIN" ]] || { fail ma.prereq "no $BIN (cargo build --release)"; exit 1; }
cp "$BIN" "$W/nemoclaw-build"; BIN="$W/nemoclaw-build"
AMD="${MA_BASE_AMD64:-$("$NEMOCLAW_ROOT/scripts/mk-base.sh" 2>"$LOGS/mk-base.log" | tail -n 1)}"
ARM="${MA_BASE_ARM64:-$("$NEMOCLAW_ROOT/scripts/mk-base.sh" --arch arm64 2>"$LOGS/mk-base-arm64.log" | tail -n 1)}"
ART="${ART:-$("$NEMOCLAW_ROOT/scripts/mk-artifacts.sh" "$W/artifacts" 2>"$LOGS/mk-artifacts.log" | tail -n 1)}"
[[ -f "$AMD" && -f "$ARM" && -f "$ART/package.json" ]] \
  || { fail ma.prereq "no bases/artifacts: $(tail_detail "$LOGS/mk-base-arm64.log")"; exit 1; }
enable_foreign_arch arm64 >"$LOGS/binfmt.log" 2>&1 || { fail ma.prereq "cannot run arm64 binaries: $(tail_detail "$LOGS/binfmt.log")"; exit 1; }
if port_busy "$PORT"; then fail ma.prereq "port $PORT is in use; set E2E_MA_PORT"; exit 1; fi
note "bases $AMD $ARM, artifacts $ART, work $W"

# ------------------------------------------------------------------ the index --------------
IDX="$W/idx"
if nb build build --base "linux/arm64=tar:$ARM" --base "linux/amd64=tar:$AMD" --artifacts "$ART" \
    --output "oci:$IDX:multi" --source-date-epoch "$EPOCH" --record "$W/record.json" --json; then
  pass ma.build_index
else
  fail ma.build_index "$(tail_detail "$LOGS/build.err")"; suite_end; exit
fi
DIGEST="$(jq -r .digest "$LOGS/build.out")"
check_eq ma.top_is_index "application/vnd.oci.image.index.v1+json $DIGEST" \
  "$(jq -r '.manifests[0] | "\(.mediaType) \(.digest)"' "$IDX/index.json")"
check_eq ma.record_per_platform "linux/amd64=x86_64-unknown-linux-musl linux/arm64=aarch64-unknown-linux-musl" \
  "$(jq -r 'to_entries | map("\(.key)=\(.value.init.target)") | join(" ")' "$W/record.json" 2>&1)"

# skopeo reads the index and picks a platform out of it
raw="$(timeout 120 skopeo inspect --raw "oci:$IDX:multi" 2>"$LOGS/skopeo-raw.err" || true)"
check_eq ma.skopeo_raw_index "application/vnd.oci.image.index.v1+json" "$(jq -r .mediaType <<<"$raw" 2>&1)"
check_eq ma.skopeo_raw_platforms "linux/amd64 linux/arm64" \
  "$(jq -r '[.manifests[].platform | "\(.os)/\(.architecture)"] | join(" ")' <<<"$raw" 2>&1)"
for a in amd64 arm64; do
  if timeout 300 skopeo copy --quiet --override-arch "$a" "oci:$IDX:multi" "oci:$W/only-$a:x" >"$LOGS/copy-$a.log" 2>&1; then
    check_eq "ma.skopeo_override_arch_$a" "$a" \
      "$(timeout 60 skopeo inspect --config "oci:$W/only-$a:x" 2>>"$LOGS/copy-$a.log" | jq -r .architecture)"
  else
    fail "ma.skopeo_override_arch_$a" "$(tail_detail "$LOGS/copy-$a.log")"
  fi
done

# oci-image-tool: the index blob and each manifest (its --type imageLayout is unimplemented)
probe_ok() { local n="$1"; shift; if "$@" >"$LOGS/$n.log" 2>&1; then pass "$n"; else fail "$n" "$(tail_detail "$LOGS/$n.log")"; fi; }
probe_ok ma.oci_image_tool_index oci-image-tool validate --type imageIndex "$IDX/blobs/sha256/${DIGEST#sha256:}"
bad=""
for m in $(jq -r '.manifests[].digest' "$IDX/blobs/sha256/${DIGEST#sha256:}"); do
  oci-image-tool validate --type manifest "$IDX/blobs/sha256/${m#sha256:}" >>"$LOGS/oit-manifests.log" 2>&1 || bad="$bad $m"
done
check_empty ma.oci_image_tool_manifests "$bad" "invalid"

# umoci unpacks each platform: its init is an ELF of its own machine
for a in amd64:62 arm64:183; do
  arch="${a%%:*}"
  if [[ -d "$W/only-$arch" ]] && timeout 300 umoci unpack --image "$W/only-$arch:x" "$W/unpack-$arch" >"$LOGS/umoci-$arch.log" 2>&1; then
    check_eq "ma.umoci_init_machine_$arch" "${a#*:}" "$(elf_machine "$W/unpack-$arch/rootfs/usr/local/bin/nemoclaw-init")"
  else
    fail "ma.umoci_init_machine_$arch" "unpack failed: $(tail_detail "$LOGS/umoci-$arch.log")"
  fi
done

# the order of the bases does not matter (no cache: rebuilt from scratch)
if nb swapped build --base "linux/amd64=tar:$AMD" --base "linux/arm64=tar:$ARM" --artifacts "$ART" \
    --output "oci:$W/idx2:multi" --source-date-epoch "$EPOCH" --no-cache; then
  check_eq ma.order_independent "$DIGEST" "$(tail -n 1 "$LOGS/swapped.out")"
else
  fail ma.order_independent "$(tail_detail "$LOGS/swapped.err")"
fi

# diff pairs the platforms of two indexes
rc=0; nb diff diff "oci:$IDX:multi" "oci:$W/idx2:multi" --ignore-timestamps || rc=$?
if ((rc == 0)) && grep -q '^platform linux/arm64:' "$LOGS/diff.out" && grep -q '^indexes: identical platforms' "$LOGS/diff.out"; then
  pass ma.diff_pairs_platforms
else
  fail ma.diff_pairs_platforms "rc=$rc: $(tail_detail "$LOGS/diff.out") $(tail_detail "$LOGS/diff.err")"
fi

# readers pick a platform out of the index and say which
# (exit 1 on error findings is audit's verdict, not a failure to read)
nb audit-arm audit "oci:$IDX:multi" --platform linux/arm64 --json || true
check_eq ma.audit_arm64_platform "linux/arm64" "$(jq -r .platform "$LOGS/audit-arm.out" 2>&1)"
nb audit-default audit "oci:$IDX:multi" --json || true
check_grep ma.audit_says_which_platform 'is an image index \(linux/amd64, linux/arm64\); reading platform linux/amd64' "$LOGS/audit-default.err"
if nb sbom-arm sbom "oci:$IDX:multi" --platform linux/arm64 -o "$W/arm.spdx.json"; then
  check_re ma.sbom_arm64_packages 'arch=arm64' "$(jq -r '[.packages[].externalRefs[]?.referenceLocator] | join(" ")' "$W/arm.spdx.json")"
else
  fail ma.sbom_arm64_packages "$(tail_detail "$LOGS/sbom-arm.err")"
fi

# ------------------------------------------------------------------ registry ---------------
mkdir -p "$W/reg/data"
printf 'version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: %s\n' \
  "$W/reg/data" "$REG" >"$W/reg/config.yml"
docker-registry serve "$W/reg/config.yml" >"$LOGS/registry.log" 2>&1 &
PIDS+=("$!")
up=0
for _ in $(seq 50); do curl -sS -o /dev/null "http://$REG/v2/" 2>/dev/null && { up=1; break; }; sleep 0.2; done
if ((up)) && nb push build --base "linux/arm64=tar:$ARM" --base "linux/amd64=tar:$AMD" --artifacts "$ART" \
    --output "registry://$REG/ma:multi" --source-date-epoch "$EPOCH"; then
  check_eq ma.registry_push_same_digest "$DIGEST" "$(tail -n 1 "$LOGS/push.out")"
else
  fail ma.registry_push_same_digest "registry up=$up: $(tail_detail "$LOGS/push.err")"
fi
raw="$(timeout 120 skopeo inspect --raw --tls-verify=false "docker://$REG/ma@$DIGEST" 2>"$LOGS/reg-raw.err" || true)"
check_eq ma.registry_index_by_digest "application/vnd.oci.image.index.v1+json 2" \
  "$(jq -r '"\(.mediaType) \(.manifests | length)"' <<<"$raw" 2>&1)"
check_eq ma.registry_tag_is_index "$DIGEST" \
  "$(timeout 120 skopeo inspect --tls-verify=false --format '{{.Digest}}' "docker://$REG/ma:multi" 2>>"$LOGS/reg-raw.err" || true)"
# pull each platform back by digest into podman's storage
for a in amd64 arm64; do
  if timeout 600 skopeo copy --quiet --src-tls-verify=false --override-arch "$a" \
      "docker://$REG/ma@$DIGEST" "containers-storage:$IMG_REPO:$a" >"$LOGS/pull-$a.log" 2>&1; then
    check_eq "ma.registry_pull_$a" "$a" "$(pm image inspect --format '{{.Architecture}}' "$IMG_REPO:$a" 2>>"$LOGS/pull-$a.log")"
  else
    fail "ma.registry_pull_$a" "$(tail_detail "$LOGS/pull-$a.log")"
  fi
done

# ------------------------------------------------------------------ fan-out (index) --------
# one runner per platform: each platform built alone (pushed, and into a layout), then
# `index` assembles them; the one-run build's index digest is the target
declare -A ONE=()
for a in amd64 arm64; do
  base="$AMD"; [[ "$a" == arm64 ]] && base="$ARM"
  want="$(jq -r --arg a "$a" '.manifests[] | select(.platform.architecture == $a) | .digest' \
    "$IDX/blobs/sha256/${DIGEST#sha256:}" 2>/dev/null)"
  if nb "one-$a" build --base "tar:$base" --platform "linux/$a" --artifacts "$ART" \
      --output "registry://$REG/fan:$a" --source-date-epoch "$EPOCH" \
    && nb "one-oci-$a" build --base "tar:$base" --platform "linux/$a" --artifacts "$ART" \
      --output "oci:$W/fan-$a:x" --source-date-epoch "$EPOCH"; then
    ONE[$a]="$(tail -n 1 "$LOGS/one-$a.out")"
    check_eq "ma.fanout_alone_is_the_platform_image_$a" "$want $want" "${ONE[$a]} $(tail -n 1 "$LOGS/one-oci-$a.out")"
  else
    ONE[$a]=missing
    fail "ma.fanout_alone_is_the_platform_image_$a" "$(tail_detail "$LOGS/one-$a.err") $(tail_detail "$LOGS/one-oci-$a.err")"
  fi
done
AMDD="${ONE[amd64]}" ARMD="${ONE[arm64]}"
# registry -> same repository (inputs named in the other order than the one-run bases)
if nb fan-reg index --json --output "registry://$REG/fan:multi" \
    "registry://$REG/fan@$ARMD" "registry://$REG/fan@$AMDD"; then
  check_eq ma.fanout_registry_same_index "$DIGEST" "$(jq -r .digest "$LOGS/fan-reg.out")"
else
  fail ma.fanout_registry_same_index "$(tail_detail "$LOGS/fan-reg.err")"
fi
# transfer accounting: no layer downloaded or uploaded (only manifests and the configs)
check_eq ma.fanout_same_repo_no_layer_moved "true 0" \
  "$(jq -r '[(.transfer | map(.downloaded_bytes) | add) < 1048576, (.transfer | map(.uploaded_blobs) | add)] | join(" ")' \
    "$LOGS/fan-reg.out" 2>&1)"
# another repository of the same registry: the layers are mounted, still not downloaded
if nb fan-mount index --json --output "registry://$REG/fan-other:multi" \
    "registry://$REG/fan@$AMDD" "registry://$REG/fan@$ARMD"; then
  check_eq ma.fanout_other_repo_mounted "$DIGEST true true 0" \
    "$(jq -r '[.digest, ((.transfer | map(.downloaded_bytes) | add) < 1048576), ((.transfer | map(.mounted_blobs) | add) > 0), (.transfer | map(.uploaded_blobs) | add)] | join(" ")' \
      "$LOGS/fan-mount.out" 2>&1)"
else
  fail ma.fanout_other_repo_mounted "$(tail_detail "$LOGS/fan-mount.err")"
fi
# another registry: layers streamed registry to registry, none kept here (the cache holds
# the two configs only)
REG2="127.0.0.1:$((PORT + 1))"
mkdir -p "$W/reg2/data"
printf 'version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: %s\n' \
  "$W/reg2/data" "$REG2" >"$W/reg2/config.yml"
docker-registry serve "$W/reg2/config.yml" >"$LOGS/registry2.log" 2>&1 &
PIDS+=("$!")
for _ in $(seq 50); do curl -sS -o /dev/null "http://$REG2/v2/" 2>/dev/null && break; sleep 0.2; done
if nb fan-x index --json --cache-dir "$W/fan-x-cache" --output "registry://$REG2/fan:multi" \
    "registry://$REG/fan@$AMDD" "registry://$REG/fan@$ARMD"; then
  kept="$(find "$W/fan-x-cache/blobs" -type f 2>/dev/null | wc -l)"
  check_eq ma.fanout_other_registry_streamed "$DIGEST true 2" \
    "$(jq -r --arg r "$REG2" '[.digest, ((.transfer[] | select(.registry == $r) | .uploaded_blobs) > 2)] | join(" ")' \
      "$LOGS/fan-x.out" 2>&1) $kept"
else
  fail ma.fanout_other_registry_streamed "$(tail_detail "$LOGS/fan-x.err")"
fi
raw="$(timeout 120 skopeo inspect --raw --tls-verify=false "docker://$REG/fan:multi" 2>"$LOGS/fan-raw.err" || true)"
check_eq ma.fanout_registry_skopeo_raw "application/vnd.oci.image.index.v1+json linux/amd64 linux/arm64" \
  "$(jq -r '"\(.mediaType) \([.manifests[].platform | "\(.os)/\(.architecture)"] | join(" "))"' <<<"$raw" 2>&1)"
if timeout 300 skopeo copy --quiet --src-tls-verify=false --override-arch arm64 \
    "docker://$REG/fan-other:multi" "oci:$W/fan-pulled-arm64:x" >"$LOGS/fan-copy.log" 2>&1; then
  check_eq ma.fanout_registry_override_arch_arm64 "arm64 $ARMD" \
    "$(timeout 60 skopeo inspect --config "oci:$W/fan-pulled-arm64:x" 2>>"$LOGS/fan-copy.log" | jq -r .architecture) $(timeout 60 skopeo inspect --format '{{.Digest}}' "oci:$W/fan-pulled-arm64:x" 2>>"$LOGS/fan-copy.log")"
else
  fail ma.fanout_registry_override_arch_arm64 "$(tail_detail "$LOGS/fan-copy.log")"
fi
# layout -> layout
if nb fan-oci index --output "oci:$W/fan-idx:multi" "oci:$W/fan-arm64@$ARMD" "oci:$W/fan-amd64@$AMDD"; then
  check_eq ma.fanout_oci_same_index "$DIGEST" "$(tail -n 1 "$LOGS/fan-oci.out")"
else
  fail ma.fanout_oci_same_index "$(tail_detail "$LOGS/fan-oci.err")"
fi
if timeout 300 skopeo copy --quiet --override-arch arm64 "oci:$W/fan-idx:multi" "oci:$W/fan-oci-arm64:x" >"$LOGS/fan-oci-copy.log" 2>&1; then
  check_eq ma.fanout_oci_override_arch_arm64 arm64 \
    "$(timeout 60 skopeo inspect --config "oci:$W/fan-oci-arm64:x" 2>>"$LOGS/fan-oci-copy.log" | jq -r .architecture)"
else
  fail ma.fanout_oci_override_arch_arm64 "$(tail_detail "$LOGS/fan-oci-copy.log")"
fi
# registry -> archive (the layers are pulled, verified, into a fresh cache)
if nb fan-arc index --cache-dir "$W/fan-cache" --output "oci-archive:$W/fan.tar" \
    "registry://$REG/fan@$AMDD" "registry://$REG/fan@$ARMD"; then
  top="$(tar -xOf "$W/fan.tar" index.json 2>"$LOGS/fan-arc-tar.err" | jq -r '.manifests[0].digest' 2>&1)"
  check_eq ma.fanout_registry_to_archive "$DIGEST $DIGEST" \
    "$top sha256:$(tar -xOf "$W/fan.tar" "blobs/sha256/${top#sha256:}" 2>>"$LOGS/fan-arc-tar.err" | sha256sum | cut -d' ' -f1)"
else
  fail ma.fanout_registry_to_archive "$(tail_detail "$LOGS/fan-arc.err")"
fi
# refusals: a tag input (named), and two images of one platform (no index tag pushed)
rc=0
nb fan-tag index --output "registry://$REG/fan:refused" "registry://$REG/fan:amd64" "registry://$REG/fan@$ARMD" || rc=$?
if ((rc != 0)) && grep -q "input 'registry://$REG/fan:amd64' is not pinned by digest" "$LOGS/fan-tag.err"; then
  pass ma.fanout_refuses_tag_input
else
  fail ma.fanout_refuses_tag_input "rc=$rc: $(tail_detail "$LOGS/fan-tag.err")"
fi
rc=0
nb fan-dup index --output "registry://$REG/fan:refused" "registry://$REG/fan@$AMDD" "oci:$W/fan-amd64@$AMDD" || rc=$?
tagged="$(curl -s -o /dev/null -w '%{http_code}' -H 'Accept: application/vnd.oci.image.index.v1+json' "http://$REG/v2/fan/manifests/refused" || true)"
if ((rc != 0)) && grep -q 'are both linux/amd64' "$LOGS/fan-dup.err" && [[ "$tagged" == 404 ]]; then
  pass ma.fanout_refuses_duplicate_platform_no_tag
else
  fail ma.fanout_refuses_duplicate_platform_no_tag "rc=$rc tag=$tagged: $(tail_detail "$LOGS/fan-dup.err")"
fi
# ... found from the configs, before any layer is downloaded: into a fresh cache, only the
# manifests' configs arrive (a few KiB; the layers are hundreds of MiB), no archive is written
rc=0
nb fan-dup-early index --cache-dir "$W/fan-dup-cache" --output "oci-archive:$W/fan-dup.tar" \
  "registry://$REG/fan@$AMDD" "registry://$REG/fan@$ARMD" "registry://$REG/fan@$AMDD" || rc=$?
cached="$(du -sb "$W/fan-dup-cache" 2>/dev/null | cut -f1)"
if ((rc != 0)) && grep -q 'are both linux/amd64' "$LOGS/fan-dup-early.err" && ((${cached:-0} < 1048576)) &&
  [[ ! -e "$W/fan-dup.tar" ]]; then
  pass ma.fanout_duplicate_refused_before_layers_move
else
  fail ma.fanout_duplicate_refused_before_layers_move "rc=$rc cache=${cached:-none} bytes: $(tail_detail "$LOGS/fan-dup-early.err")"
fi

# ------------------------------------------------------------------ both images run --------
cat >"$W/probe.sh" <<'EOF'
#!/bin/bash
printf 'machine=%s\n' "$(uname -m)"
printf 'id=%s\n' "$(id)"
printf 'pid1=%s\n' "$(cat /proc/1/comm)"
printf 'nproc=%s %s\n' "$(ulimit -Su)" "$(ulimit -Hu)"
printf 'capbnd=%s\n' "$(awk '/^CapBnd:/ {print $2}' /proc/self/status)"
printf 'capeff=%s\n' "$(awk '/^CapEff:/ {print $2}' /proc/self/status)"
t=""; for c in gcc g++ cc cpp make as ld nc netcat; do command -v "$c" >/dev/null && t="$t $c"; done
printf 'toolchain=%s\n' "$t"
k=""; for c in vi jq dos2unix; do command -v "$c" >/dev/null || k="$k $c"; done
printf 'kept_missing=%s\n' "$k"
printf 'bashrc=%s\n' "$(stat -c '%U:%G %a' /sandbox/.bashrc)"
printf 'passwd=%s\n' "$(getent passwd sandbox)"
printf 'dpkg_purged=%s\n' "$(dpkg-query -W -f='${db:Status-Abbrev} ${Package}\n' 2>/dev/null \
  | awk '$1 ~ /^[ih]i/ {print $2}' | grep -E '^(gcc-12|cpp-12|make|binutils.*)$' | tr '\n' ' ')"
EOF
chmod 0755 "$W/probe.sh"
for a in amd64:x86_64 arm64:aarch64; do
  arch="${a%%:*}" f="$W/facts.${a%%:*}"
  # as root through the init (the deployed entrypoint), which steps down to sandbox
  timeout --kill-after=10 300 podman "${PODMAN_GLOBAL[@]}" run --rm --arch "$arch" "${PODMAN_RUN_FLAGS[@]}" \
    --user root -v "$W/probe.sh:/e2e/probe.sh:ro" "$IMG_REPO:$arch" /bin/bash /e2e/probe.sh \
    >"$f" 2>"$LOGS/run-$arch.err" || true
  check_eq "ma.run_${arch}_machine" "${a#*:}" "$(fact "$f" machine)"
  check_eq "ma.run_${arch}_stepdown" "uid=998(sandbox) gid=998(sandbox) groups=998(sandbox)" "$(fact "$f" id)"
  check_eq "ma.run_${arch}_pid1_is_init" nemoclaw-init "$(fact "$f" pid1)"
  check_eq "ma.run_${arch}_nproc_512" "512 512" "$(fact "$f" nproc)"
  check_eq "ma.run_${arch}_bounding_set_empty" "0000000000000000 0000000000000000" "$(fact "$f" capbnd) $(fact "$f" capeff)"
  check_empty "ma.run_${arch}_no_toolchain" "$(fact "$f" toolchain)" "present"
  check_empty "ma.run_${arch}_kept_tools" "$(fact "$f" kept_missing)" "missing"
  check_eq "ma.run_${arch}_rc_locked" "root:root 444" "$(fact "$f" bashrc)"
  check_re "ma.run_${arch}_accounts" '^sandbox:x:998:998:[^:]*:/sandbox:/bin/bash$' "$(fact "$f" passwd)"
  check_empty "ma.run_${arch}_purged_in_dpkg" "$(fact "$f" dpkg_purged)" "still installed"
done

# ------------------------------------------------------------------ verify -----------------
# each platform rebuilt from its record (bases named portably: run where they are), then the index
if (cd "$(dirname "$ARM")" && nb verify verify "oci:$IDX:multi" --artifacts "$ART"); then
  pass ma.verify_index
else
  fail ma.verify_index "$(tail_detail "$LOGS/verify.out") $(tail_detail "$LOGS/verify.err")"
fi
check_grep ma.verify_names_index_digest "^index: +$DIGEST" "$LOGS/verify.out"
# the same index pulled from the registry by digest (the fan-out's: the same digest)
if (cd "$(dirname "$ARM")" && nb verify-reg verify "registry://$REG/fan@$DIGEST" --artifacts "$ART") \
    && grep -Eq "^index: +$DIGEST" "$LOGS/verify-reg.out"; then
  pass ma.verify_registry_index
else
  fail ma.verify_registry_index "$(tail_detail "$LOGS/verify-reg.out") $(tail_detail "$LOGS/verify-reg.err")"
fi

# ------------------------------------------------------------------ refusals ---------------
rc=0
nb refuse-da build --base "linux/arm64=tar:$ARM" --base "linux/amd64=tar:$AMD" --artifacts "$ART" \
  --output "docker-archive:$W/two.tar" || rc=$?
if ((rc != 0)) && grep -q 'pick one with --platform' "$LOGS/refuse-da.err" && [[ ! -e "$W/two.tar" ]]; then
  pass ma.refuse_docker_archive_two_platforms
else
  fail ma.refuse_docker_archive_two_platforms "rc=$rc: $(tail_detail "$LOGS/refuse-da.err")"
fi
rc=0
nb refuse-arch build --base "linux/amd64=tar:$ARM" --base "linux/arm64=tar:$ARM" --artifacts "$ART" \
  --output "oci:$W/wrong:x" || rc=$?
if ((rc != 0)) && grep -q 'aarch64-linux-gnu (ELF machine 183)' "$LOGS/refuse-arch.err" && [[ ! -e "$W/wrong" ]]; then
  pass ma.refuse_arm64_rootfs_as_amd64
else
  fail ma.refuse_arm64_rootfs_as_amd64 "rc=$rc: $(tail_detail "$LOGS/refuse-arch.err")"
fi

suite_end

#!/usr/bin/env bash
# Fault, signal and output-safety probes for nemoclaw-build (issue 12, issue 19.4), with the
# real binary on the real OS: outputs over the user's files, other tags of a layout kept,
# a failing --sbom, base blobs not hard-linked, SIGINT/SIGTERM at the index, rewrite and
# publish phases, kill -9 (then the next build cleans up), kill -9 at many points of a build
# into an existing layout (always the old or the new image), a full filesystem (a 5 MiB
# tmpfs; needs root, else those probes fail), and two concurrent builds sharing a cache.
#
#   scripts/e2e-faults.sh
#
# The base is synthetic (python3): a rootfs of many small files and some large incompressible
# ones, wrapped as a one-layer gzip OCI layout, built with testdata/faults-recipe.toml (no
# dpkg database needed). Nothing is downloaded.
#
# stdout: `PLAN: 26`, one `PASS: name` / `FAIL: name (detail)` line per probe, then the
# summary; exit 1 on any FAIL (probe.sh suite contract). Progress goes to stderr as `# ...`.
# Env:
#   BIN                 nemoclaw-build binary (default target/release/nemoclaw-build)
#   W / E2E_WORK        work dir (default /tmp/nemoclaw-e2e-faults-<pid>); E2E_KEEP=1 keeps it
#   E2E_RESULTS         also append the PASS/FAIL lines to this file (for scripts/e2e.sh)
#   FAULTS_BIG_MB       size of the large incompressible files in the base (default 192)
#   FAULTS_SMALL        number of small files in the base (default 6000)
#   E2E_BUILD_TIMEOUT   seconds per nemoclaw-build run (default 600)
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck disable=SC2034  # used by lib.sh
LOG_TAG=e2e-faults

BIN="${BIN:-$NEMOCLAW_ROOT/target/release/nemoclaw-build}"
[[ -x "$BIN" ]] || die "no binary at $BIN (cargo build --release, or set BIN)"
W="${W:-${E2E_WORK:-/tmp/nemoclaw-e2e-faults-$$}}"
mkdir -p "$W"/logs
W="$(cd "$W" && pwd -P)"
LOGS="$W/logs"
RESULTS="$W/results"
: >"$RESULTS"
PIDS=()
MOUNTS=()
EPOCH=1700000000
RECIPE="$NEMOCLAW_ROOT/testdata/faults-recipe.toml"
T="${E2E_BUILD_TIMEOUT:-600}"

# shellcheck source=probe.sh
. "$(dirname "${BASH_SOURCE[0]}")/probe.sh"
# Unmount our tmpfs before suite_exit removes the work dir.
suite_cleanup() {
  local m
  for m in "${MOUNTS[@]}"; do umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true; done
}
suite_begin faults
# 9 output-safety probes, 6 signals, 2 kill -9, 2 crash loops, 4 full-fs, 3 concurrency
plan 26

# A private copy: cargo may replace the binary while we run.
cp "$BIN" "$W/nemoclaw-build"
BIN="$W/nemoclaw-build"

# Isolated from the caller's caches and credentials.
ENVS=(env HOME="$W/home" XDG_CACHE_HOME="$W/cache-default" DOCKER_CONFIG="$W/no-docker" REGISTRY_AUTH_FILE=)
COMMON=(--recipe "$RECIPE" --artifacts "$W/art" --source-date-epoch "$EPOCH")

# nb NAME -- ARGS...: run the CLI in the foreground; stdout/stderr -> logs/NAME.{out,err};
# wall time in ms -> logs/NAME.ms. Returns the exit code.
nb() {
  local name="$1" rc=0 t0
  shift 2
  t0=$(now_ms)
  "${ENVS[@]}" timeout --kill-after=10 "$T" "$BIN" "$@" \
    >"$LOGS/$name.out" 2>"$LOGS/$name.err" </dev/null || rc=$?
  echo $(($(now_ms) - t0)) >"$LOGS/$name.ms"
  note "nemoclaw-build $1 [$name] rc=$rc in $(cat "$LOGS/$name.ms")ms"
  return $rc
}
# nb_bg NAME -- ARGS...: start the CLI in the background (env execs: $! is the build itself).
nb_bg() {
  local name="$1"
  shift 2
  "${ENVS[@]}" "$BIN" "$@" >"$LOGS/$name.out" 2>"$LOGS/$name.err" </dev/null &
  BGPID=$!
  PIDS+=("$BGPID")
}
# rc_of PID: waits for background PID, sets RC to its exit code, and forgets it (cleanup
# kills only live ones). Not in $(...): a subshell cannot wait for our children.
rc_of() {
  local p keep=()
  RC=0
  wait "$1" || RC=$?
  for p in "${PIDS[@]}"; do [[ "$p" == "$1" ]] || keep+=("$p"); done
  PIDS=("${keep[@]}")
}
# Our scratch entries in DIR (there must be none after any build, failed or not).
scratch_in() { find "$1" -maxdepth 1 -name '.nemoclaw-*' -printf '%f\n' 2>/dev/null | sort; }
# wait_until SECONDS CMD...: poll CMD every 20 ms; 1 on timeout.
wait_until() {
  local deadline=$(($(now_ms) + $1 * 1000))
  shift
  until "$@"; do
    (($(now_ms) > deadline)) && return 1
    sleep 0.02
  done
}
log_has() { grep -Eq -- "$2" "$LOGS/$1.err" 2>/dev/null; }
spilling() { compgen -G "$1/.nemoclaw-spill-*/*" >/dev/null; }
packing() { local f; for f in "$1"/.nemoclaw-build-*.tmp; do [[ -s "$f" ]] && return 0; done; return 1; }
fp() { sha256sum "$1" | cut -d' ' -f1; }

# layout_check DIR: every image of the layout is complete (each blob reachable from
# index.json exists and hashes to its digest). stdout: "TAG DIGEST" per tagged manifest.
layout_check() {
  python3 - "$1" <<'PY'
import hashlib, json, os, sys
d = sys.argv[1]
def blob(dg):
    alg, hx = dg.split(":", 1)
    p = os.path.join(d, "blobs", alg, hx)
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    if "sha256:" + h.hexdigest() != dg:
        sys.exit(f"{p}: content hashes to sha256:{h.hexdigest()}")
    return p
def walk(desc):
    p = blob(desc["digest"])
    mt = desc.get("mediaType", "")
    if mt.endswith("manifest.v1+json") or mt.endswith("index.v1+json") or "artifactType" in desc:
        m = json.load(open(p))
        for c in ([m["config"]] if "config" in m else []) + m.get("layers", []) + m.get("manifests", []):
            walk(c)
idx = json.load(open(os.path.join(d, "index.json")))
if not os.path.isfile(os.path.join(d, "oci-layout")):
    sys.exit("no oci-layout")
for m in idx["manifests"]:
    walk(m)
    t = m.get("annotations", {}).get("org.opencontainers.image.ref.name")
    if t:
        print(t, m["digest"])
PY
}
# tag_of DIR TAG: the manifest digest TAG points at (empty if none)
tag_of() { layout_check "$1" 2>/dev/null | awk -v t="$2" '$1 == t { print $2 }'; }

# --- inputs ---------------------------------------------------------------------------
note "generating the synthetic base in $W"
mkdir -p "$W/art/dist" "$W/out"
printf 'console.log(1)\n' >"$W/art/dist/app.js"
python3 - "$W" "${FAULTS_BIG_MB:-192}" "${FAULTS_SMALL:-6000}" <<'PY'
import hashlib, io, json, os, subprocess, sys, tarfile
w, big_mb, small = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
epoch = 1700000000
rnd = open("/dev/urandom", "rb")
def add(tf, name, data=None, mode=0o644, kind=tarfile.REGTYPE):
    ti = tarfile.TarInfo(name)
    ti.mtime, ti.mode, ti.type = epoch, mode, kind
    if data is not None:
        ti.size = len(data)
        tf.addfile(ti, io.BytesIO(data))
    else:
        tf.addfile(ti)
with tarfile.open(os.path.join(w, "base.tar"), "w", format=tarfile.GNU_FORMAT) as tf:
    for dname in ["etc", "usr", "usr/share", "usr/share/big", "usr/share/small", "bin"]:
        add(tf, dname, mode=0o755, kind=tarfile.DIRTYPE)
    add(tf, "etc/passwd", b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n")
    add(tf, "etc/group", b"root:x:0:\nnogroup:x:65534:\n")
    add(tf, "bin/sh", b"#!fake shell\n", 0o755)
    per = max(1, big_mb // 4)
    for i in range(4):
        name = "drop.bin" if i == 0 else f"keep{i}.bin"
        add(tf, f"usr/share/big/{name}", rnd.read(per << 20))
    for i in range(small):
        add(tf, f"usr/share/small/f{i:05d}.txt", (f"file {i}\n" * (i % 50 + 1)).encode())
base = os.path.join(w, "base")
os.makedirs(os.path.join(base, "blobs/sha256"), exist_ok=True)
def put(b):
    d = hashlib.sha256(b).hexdigest()
    open(os.path.join(base, "blobs/sha256", d), "wb").write(b)
    return d, len(b)
diff_id = hashlib.sha256(open(os.path.join(w, "base.tar"), "rb").read()).hexdigest()
layer = os.path.join(base, "blobs/sha256/layer.tmp")
with open(layer, "wb") as out:
    subprocess.run(["gzip", "-n", "-1", "-c", os.path.join(w, "base.tar")], stdout=out, check=True)
ld = hashlib.sha256(open(layer, "rb").read()).hexdigest()
ls = os.path.getsize(layer)
os.rename(layer, os.path.join(base, "blobs/sha256", ld))
cfg = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Cmd": ["/bin/sh"]},
                  "rootfs": {"type": "layers", "diff_ids": ["sha256:" + diff_id]}}, sort_keys=True).encode()
cd, cs = put(cfg)
man = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                  "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": "sha256:" + cd, "size": cs},
                  "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": "sha256:" + ld, "size": ls}]},
                 sort_keys=True).encode()
md, ms = put(man)
open(os.path.join(base, "oci-layout"), "w").write('{"imageLayoutVersion":"1.0.0"}')
json.dump({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
           "digest": "sha256:" + md, "size": ms, "annotations": {"org.opencontainers.image.ref.name": "v1"}}]},
          open(os.path.join(base, "index.json"), "w"))
PY
BASE="oci:$W/base:v1"
BASE_DIGEST="$(tag_of "$W/base" v1)"
note "base: $(du -sh "$W/base" | cut -f1), manifest $BASE_DIGEST"

# --- reference build ---------------------------------------------------------------------
if nb ref -- build --base "$BASE" --output "oci:$W/out/ref:v1" --no-cache "${COMMON[@]}"; then
  pass faults.reference_build
else
  fail faults.reference_build "$(tail_detail "$LOGS/ref.err")"
fi
REF="$(tag_of "$W/out/ref" v1)"
note "reference digest $REF in $(cat "$LOGS/ref.ms") ms"

# --- 12.17 / 12.18: outputs over the user's files -----------------------------------------
before="$(fp "$W/base.tar")"
if nb over_file -- build --base "tar:$W/base.tar" --output "oci:$W/base.tar" --no-cache "${COMMON[@]}"; then
  fail faults.oci_over_base_tarball_refused "the build succeeded"
elif ! grep -q 'is not a directory' "$LOGS/over_file.err"; then
  fail faults.oci_over_base_tarball_refused "$(tail_detail "$LOGS/over_file.err")"
else
  check_eq faults.oci_over_base_tarball_refused "$before" "$(fp "$W/base.tar")"
fi
if nb over_tar -- build --base "tar:$W/base.tar" --output "oci-archive:$W/base.tar" --no-cache "${COMMON[@]}"; then
  fail faults.archive_over_rootfs_tarball_refused "the build succeeded"
elif ! grep -q 'is not an image archive' "$LOGS/over_tar.err"; then
  fail faults.archive_over_rootfs_tarball_refused "$(tail_detail "$LOGS/over_tar.err")"
else
  check_eq faults.archive_over_rootfs_tarball_refused "$before" "$(fp "$W/base.tar")"
fi
mkdir -p "$W/proj/src"
printf '{"imageLayoutVersion":"1.0.0"}' >"$W/proj/oci-layout"
printf 'my notes\n' >"$W/proj/NOTES.md"
printf 'int main(void){return 0;}\n' >"$W/proj/src/main.c"
if nb over_proj -- build --base "$BASE" --output "oci:$W/proj" --no-cache "${COMMON[@]}"; then
  fail faults.layout_with_user_files_refused "the build succeeded"
elif ! grep -q 'not part of an OCI image layout (NOTES.md, src)' "$LOGS/over_proj.err"; then
  fail faults.layout_with_user_files_refused "$(tail_detail "$LOGS/over_proj.err")"
elif [[ "$(cat "$W/proj/NOTES.md" "$W/proj/src/main.c" 2>/dev/null)" != $'my notes\nint main(void){return 0;}' ]]; then
  fail faults.layout_with_user_files_refused "the user's files changed"
else
  pass faults.layout_with_user_files_refused
fi

# --- 12.19: a new tag in the base's own layout keeps the base -------------------------------
cp -a "$W/base" "$W/L"
if nb tag_v3 -- build --base "oci:$W/L:v1" --output "oci:$W/L:v3" --no-cache "${COMMON[@]}" &&
  [[ "$(tag_of "$W/L" v1)" == "$BASE_DIGEST" && "$(tag_of "$W/L" v3)" == "$(cat "$LOGS/tag_v3.out")" ]]; then
  pass faults.new_tag_keeps_base_tag
else
  fail faults.new_tag_keeps_base_tag "tags: $(layout_check "$W/L" 2>&1 | tr '\n' ' ') $(tail_detail "$LOGS/tag_v3.err")"
fi
mkdir -p "$W/art2/dist" && printf 'console.log(2)\n' >"$W/art2/dist/app.js"
V3_OLD="$(tag_of "$W/L" v3)"
if nb tag_v3b -- build --base "oci:$W/L:v1" --output "oci:$W/L:v3" --no-cache \
  --recipe "$RECIPE" --artifacts "$W/art2" --source-date-epoch "$EPOCH"; then
  v3="$(tag_of "$W/L" v3)"
  if [[ "$(tag_of "$W/L" v1)" != "$BASE_DIGEST" || -z "$v3" || "$v3" == "$V3_OLD" ]]; then
    fail faults.replaced_tag_keeps_others "tags: $(layout_check "$W/L" 2>&1 | tr '\n' ' ')"
  elif [[ -e "$W/L/blobs/sha256/${V3_OLD#sha256:}" ]]; then
    fail faults.replaced_tag_keeps_others "the old v3 manifest was not collected"
  else
    pass faults.replaced_tag_keeps_others
  fi
else
  fail faults.replaced_tag_keeps_others "$(tail_detail "$LOGS/tag_v3b.err")"
fi

# --- 12.21: a failing --sbom leaves the previous image --------------------------------------
cp -a "$W/out/ref" "$W/out/sb"
before="$(fp "$W/out/sb/index.json")"
if nb sbom_fail -- build --base "$BASE" --output "oci:$W/out/sb:v1" --no-cache \
  --recipe "$RECIPE" --artifacts "$W/art2" --source-date-epoch "$EPOCH" --sbom "$W/no-such-dir/sbom.json"; then
  fail faults.failed_sbom_keeps_old_image "the build succeeded"
elif ! grep -q 'cannot write' "$LOGS/sbom_fail.err"; then
  fail faults.failed_sbom_keeps_old_image "$(tail_detail "$LOGS/sbom_fail.err")"
elif [[ "$(fp "$W/out/sb/index.json")" != "$before" || "$(tag_of "$W/out/sb" v1)" != "$REF" ]]; then
  fail faults.failed_sbom_keeps_old_image "the image at the output changed"
else
  pass faults.failed_sbom_keeps_old_image
fi

# --- 12.22: reused base blobs are not hard links into the base -------------------------------
cp -a "$W/base" "$W/B22"
if nb nolink -- build --base "oci:$W/B22:v1" --output "oci:$W/out/wo:v1" --no-cache --purge-mode whiteout "${COMMON[@]}"; then
  layer="$(python3 -c 'import json,sys; m=json.load(open(sys.argv[1])); print(m["layers"][0]["digest"][7:])' \
    "$W/B22/blobs/sha256/${BASE_DIGEST#sha256:}")"
  if [[ "$(stat -c %i "$W/B22/blobs/sha256/$layer")" == "$(stat -c %i "$W/out/wo/blobs/sha256/$layer" 2>/dev/null)" ]]; then
    fail faults.base_blobs_not_hard_linked "the output's layer is the base's inode"
  else
    printf 'corrupt' | dd of="$W/B22/blobs/sha256/$layer" bs=1 seek=100 conv=notrunc status=none
    if layout_check "$W/out/wo" >/dev/null 2>"$LOGS/nolink.check"; then
      pass faults.base_blobs_not_hard_linked
    else
      fail faults.base_blobs_not_hard_linked "changing the base changed the output: $(tail_detail "$LOGS/nolink.check")"
    fi
  fi
else
  fail faults.base_blobs_not_hard_linked "$(tail_detail "$LOGS/nolink.err")"
fi

# --- 19.4: SIGINT / SIGTERM at index, rewrite and publish -----------------------------------
# sig_probe NAME SIGNAL RC PHASE OUTPUT: a previous image is at OUTPUT (oci: dir or
# oci-archive: file); the signal arrives in PHASE; the build must exit RC, leave no scratch
# and leave the previous image exactly as it was.
sig_probe() {
  local name="$1" sig="$2" want="$3" phase="$4" kind="$5" dir="$W/sig-$1" out prev ready rc left
  mkdir -p "$dir"
  if [[ "$kind" == oci ]]; then
    cp -a "$W/out/ref" "$dir/out"
    out="oci:$dir/out:v1"
    prev="$(fp "$dir/out/index.json")"
  else
    cp "$W/out/ref.tar" "$dir/out.tar"
    out="oci-archive:$dir/out.tar"
    prev="$(fp "$dir/out.tar")"
  fi
  nb_bg "$name" -- build --base "$BASE" --output "$out" --no-cache \
    --recipe "$RECIPE" --artifacts "$W/art2" --source-date-epoch "$EPOCH"
  local pid=$BGPID
  case "$phase" in
    index) ready=(spilling "$dir") ;;
    rewrite) ready=(log_has "$name" '^rewriting layer 1') ;;
    publish) ready=(packing "$dir") ;;
  esac
  if ! wait_until 120 "${ready[@]}"; then
    kill -KILL "$pid" 2>/dev/null || true
    rc_of "$pid"
    fail "faults.$name" "never reached the $phase phase: $(tail_detail "$LOGS/$name.err")"
    return
  fi
  [[ "$phase" == rewrite ]] && sleep 0.3
  kill "-$sig" "$pid" 2>/dev/null || true
  rc_of "$pid"; rc=$RC
  left="$(scratch_in "$dir" | tr '\n' ' ')"
  if [[ "$rc" != "$want" ]]; then
    fail "faults.$name" "exit $rc, want $want: $(tail_detail "$LOGS/$name.err")"
  elif [[ -n "$left" ]]; then
    fail "faults.$name" "left behind: $left"
  elif [[ "$kind" == oci && "$(fp "$dir/out/index.json")" != "$prev" ]]; then
    fail "faults.$name" "the previous image changed"
  elif [[ "$kind" == oci ]] && ! layout_check "$dir/out" >/dev/null 2>&1; then
    fail "faults.$name" "the previous image is damaged"
  elif [[ "$kind" == archive && "$(fp "$dir/out.tar")" != "$prev" ]]; then
    fail "faults.$name" "the previous archive changed"
  elif ! grep -q "interrupted by SIG$sig" "$LOGS/$name.err"; then
    fail "faults.$name" "no 'interrupted by SIG$sig' message: $(tail_detail "$LOGS/$name.err")"
  else
    pass "faults.$name"
  fi
}
if nb ref_tar -- build --base "$BASE" --output "oci-archive:$W/out/ref.tar:v1" --no-cache "${COMMON[@]}"; then
  pass faults.reference_archive
else
  fail faults.reference_archive "$(tail_detail "$LOGS/ref_tar.err")"
fi
sig_probe sigint_index INT 130 index oci
sig_probe sigterm_index TERM 143 index oci
sig_probe sigint_rewrite INT 130 rewrite oci
sig_probe sigterm_rewrite TERM 143 rewrite oci
sig_probe sigint_publish INT 130 publish archive
sig_probe sigterm_publish TERM 143 publish archive

# --- kill -9 mid-rewrite, then the next build cleans up --------------------------------------
K="$W/k9"
mkdir -p "$K"
cp -a "$W/out/ref" "$K/out"
prev="$(fp "$K/out/index.json")"
nb_bg k9 -- build --base "$BASE" --output "oci:$K/out:v1" --no-cache \
  --recipe "$RECIPE" --artifacts "$W/art2" --source-date-epoch "$EPOCH"
pid=$BGPID
if wait_until 120 log_has k9 '^rewriting layer 1'; then
  sleep 0.3
  kill -KILL "$pid" 2>/dev/null || true
  rc_of "$pid"; rc=$RC
  stale="$(scratch_in "$K" | tr '\n' ' ')"
  if [[ "$rc" != 137 || "$stale" != *".nemoclaw-build-"*".nemoclaw-spill-"* ]]; then
    fail faults.kill9_leaves_previous_image "rc=$rc, scratch: '$stale' (expected staging and spill)"
  elif [[ "$(fp "$K/out/index.json")" != "$prev" ]] || ! layout_check "$K/out" >/dev/null 2>&1; then
    fail faults.kill9_leaves_previous_image "the previous image changed"
  else
    pass faults.kill9_leaves_previous_image
  fi
  if nb k9_next -- build --base "$BASE" --output "oci:$K/out:v1" --no-cache "${COMMON[@]}"; then
    left="$(scratch_in "$K" | tr '\n' ' ')"
    if [[ -n "$left" ]]; then
      fail faults.next_build_sweeps_stale_dirs "left: $left"
    elif ! grep -q 'left behind by an interrupted build' "$LOGS/k9_next.err"; then
      fail faults.next_build_sweeps_stale_dirs "no removal logged"
    else
      check_eq faults.next_build_sweeps_stale_dirs "$REF" "$(tag_of "$K/out" v1)"
    fi
  else
    fail faults.next_build_sweeps_stale_dirs "$(tail_detail "$LOGS/k9_next.err")"
  fi
else
  kill -KILL "$pid" 2>/dev/null || true
  rc_of "$pid"
  fail faults.kill9_leaves_previous_image "never reached the rewrite: $(tail_detail "$LOGS/k9.err")"
fi

# --- kill -9 at many points of a build into an existing layout -------------------------------
# Whenever it dies, the layout holds the base tag and v3 is the old or the new image, whole.
# Kills at fractions of a full build's time, then at short delays after the last layer is
# written (the window of the publish). Every attempt has its own artifacts (its own digest).
C="$W/crash"
cp -a "$W/base" "$C"
nb crash_old -- build --base "oci:$C:v1" --output "oci:$C:v3" --no-cache "${COMMON[@]}" || true
full="$(cat "$LOGS/crash_old.ms")"
bad=""
n_old=0
n_new=0
for at in 30% 60% 90% +0 +2 +5 +10 +20 +40; do
  name="crash${at//[%+]/_}"
  mkdir -p "$W/art-$name/dist" && printf 'console.log("%s")\n' "$name" >"$W/art-$name/dist/app.js"
  prev="$(tag_of "$C" v3)"
  nb_bg "$name" -- build --base "oci:$C:v1" --output "oci:$C:v3" --no-cache \
    --recipe "$RECIPE" --artifacts "$W/art-$name" --source-date-epoch "$EPOCH"
  pid=$BGPID
  if [[ "$at" == *% ]]; then
    sleep "$(awk -v ms="$full" -v p="${at%\%}" 'BEGIN { printf "%.3f", ms * p / 100000 }')"
  else
    wait_until 300 log_has "$name" '^artifacts layer' || true
    sleep "$(awk -v ms="${at#+}" 'BEGIN { printf "%.3f", ms / 1000 }')"
  fi
  kill -KILL "$pid" 2>/dev/null || true
  rc_of "$pid"
  v1="$(tag_of "$C" v1)"
  v3="$(tag_of "$C" v3)"
  if ! layout_check "$C" >/dev/null 2>"$LOGS/$name.check"; then
    bad+="$at: $(tail_detail "$LOGS/$name.check"); "
  elif [[ "$v1" != "$BASE_DIGEST" || -z "$v3" ]]; then
    bad+="$at: tags v1=$v1 v3=$v3; "
  elif [[ "$v3" == "$prev" ]]; then
    n_old=$((n_old + 1))
  else
    n_new=$((n_new + 1))
  fi
  note "kill -9 at $at (rc $RC): v3 is the $([[ "$v3" == "$prev" ]] && echo old || echo new) image"
done
note "kill -9 during a build into a layout: $n_old left the old image, $n_new the new one"
if [[ -z "$bad" ]]; then pass faults.kill9_anywhere_keeps_a_whole_layout; else fail faults.kill9_anywhere_keeps_a_whole_layout "$bad"; fi
if nb crash_next -- build --base "oci:$C:v1" --output "oci:$C:v3" --no-cache "${COMMON[@]}" &&
  [[ "$(tag_of "$C" v3)" == "$(jq -Rr 'select(startswith("sha256:"))' "$LOGS/crash_old.out")" ]] &&
  [[ -z "$(scratch_in "$W")" ]] && layout_check "$C" >/dev/null; then
  pass faults.build_after_crashes
else
  fail faults.build_after_crashes "v3=$(tag_of "$C" v3) scratch=$(scratch_in "$W" | tr '\n' ' ') $(tail_detail "$LOGS/crash_next.err")"
fi

# --- full filesystem --------------------------------------------------------------------------
F="$W/full"
mkdir -p "$F"
if mount -t tmpfs -o size=5m tmpfs "$F" 2>"$LOGS/mount.err"; then
  MOUNTS+=("$F")
  # rewrite mode fails while spilling the base, whiteout mode while copying it.
  for variant in oci/rewrite oci/whiteout oci-archive/whiteout; do
    kind="${variant%/*}"
    name="full_${kind}_${variant#*/}"
    out="$F/out-$kind"
    if nb "$name" -- build --base "$BASE" --output "$kind:$out" --cache-dir "$W/cache-full" \
      --purge-mode "${variant#*/}" "${COMMON[@]}"; then
      fail "faults.$name" "the build succeeded on a 5 MiB filesystem"
    elif ! grep -q 'No space left on device' "$LOGS/$name.err"; then
      fail "faults.$name" "unclear error: $(tail_detail "$LOGS/$name.err")"
    elif ! grep -q "$F" "$LOGS/$name.err"; then
      fail "faults.$name" "the error does not name the output filesystem: $(tail_detail "$LOGS/$name.err")"
    elif [[ -e "$out" || -n "$(ls -A "$F")" ]]; then
      fail "faults.$name" "left on the filesystem: $(ls -A "$F" | tr '\n' ' ')"
    else
      pass "faults.$name"
    fi
  done
  # The cache the failed builds used still gives the reference image.
  if nb after_full -- build --base "$BASE" --output "oci:$W/out/after-full:v1" --cache-dir "$W/cache-full" --json "${COMMON[@]}" &&
    [[ "$(jq -r .digest "$LOGS/after_full.out")" == "$REF" ]] && layout_check "$W/out/after-full" >/dev/null; then
    pass faults.cache_not_poisoned_by_full_fs
  else
    fail faults.cache_not_poisoned_by_full_fs "digest $(jq -r .digest "$LOGS/after_full.out" 2>/dev/null), want $REF: $(tail_detail "$LOGS/after_full.err")"
  fi
else
  fail faults.full_filesystem "cannot mount a tmpfs (root needed): $(tail_detail "$LOGS/mount.err")"
fi

# --- two builds at once sharing one cache ------------------------------------------------------
CC="$W/cc"
mkdir -p "$CC"
nb_bg cc1 -- build --base "$BASE" --output "oci:$CC/o1:v1" --cache-dir "$W/cache-cc" --json "${COMMON[@]}"
p1=$BGPID
nb_bg cc2 -- build --base "$BASE" --output "oci:$CC/o2:v1" --cache-dir "$W/cache-cc" --json "${COMMON[@]}"
p2=$BGPID
rc_of "$p1"; r1=$RC
rc_of "$p2"; r2=$RC
d1="$(jq -r .digest "$LOGS/cc1.out" 2>/dev/null || true)"
d2="$(jq -r .digest "$LOGS/cc2.out" 2>/dev/null || true)"
if [[ "$r1/$r2" != 0/0 ]]; then
  fail faults.concurrent_builds_share_a_cache "rc $r1/$r2: $(tail_detail "$LOGS/cc1.err") / $(tail_detail "$LOGS/cc2.err")"
elif [[ "$d1" != "$REF" || "$d2" != "$REF" ]]; then
  fail faults.concurrent_builds_share_a_cache "digests $d1 / $d2, want $REF"
elif ! layout_check "$CC/o1" >/dev/null 2>&1 || ! layout_check "$CC/o2" >/dev/null 2>&1; then
  fail faults.concurrent_builds_share_a_cache "an output does not verify"
elif [[ -n "$(scratch_in "$CC")" || -n "$(ls -A "$W/cache-cc/tmp")" ]]; then
  fail faults.concurrent_builds_share_a_cache "left: $(scratch_in "$CC" | tr '\n' ' ') $(ls -A "$W/cache-cc/tmp" | tr '\n' ' ')"
else
  pass faults.concurrent_builds_share_a_cache
fi
if nb cc3 -- build --base "$BASE" --output "oci:$CC/o3:v1" --cache-dir "$W/cache-cc" --json "${COMMON[@]}" &&
  [[ "$(jq -r '.cache_hit, .digest' "$LOGS/cc3.out" | tr '\n' ' ')" == "true $REF " ]] && layout_check "$CC/o3" >/dev/null; then
  pass faults.cache_consistent_after_concurrent_builds
else
  fail faults.cache_consistent_after_concurrent_builds "$(jq -c '{cache_hit, digest}' "$LOGS/cc3.out" 2>/dev/null) $(tail_detail "$LOGS/cc3.err")"
fi
# Two builds at once into one layout, different tags: both tags end up there, whole.
cp -a "$W/base" "$CC/L"
nb_bg ccl1 -- build --base "oci:$CC/L:v1" --output "oci:$CC/L:a" --no-cache --json "${COMMON[@]}"
p1=$BGPID
nb_bg ccl2 -- build --base "oci:$CC/L:v1" --output "oci:$CC/L:b" --no-cache --json \
  --recipe "$RECIPE" --artifacts "$W/art2" --source-date-epoch "$EPOCH"
p2=$BGPID
rc_of "$p1"; r1=$RC
rc_of "$p2"; r2=$RC
if [[ "$r1/$r2" == 0/0 && "$(tag_of "$CC/L" a)" == "$(jq -r .digest "$LOGS/ccl1.out")" &&
  "$(tag_of "$CC/L" b)" == "$(jq -r .digest "$LOGS/ccl2.out")" &&
  "$(tag_of "$CC/L" v1)" == "$BASE_DIGEST" ]] && layout_check "$CC/L" >/dev/null; then
  pass faults.concurrent_tags_into_one_layout
else
  fail faults.concurrent_tags_into_one_layout "rc $r1/$r2, tags: $(layout_check "$CC/L" 2>&1 | tr '\n' ' ')"
fi

suite_end

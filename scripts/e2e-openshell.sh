#!/usr/bin/env bash
# The image as OpenShell and direct users run it: a runtime matrix with probes from inside
# (podman + runc), the product's own audit passing the product's image, and Landlock
# verified against every row `policy` prints.
#
#   IMAGE=localhost/...:tag OCI=DIR TAG=tag BIN=... scripts/e2e-openshell.sh
#
# IMAGE is the built image already in podman storage, OCI the layout it came from.
# stdout: one `PASS: name` / `FAIL: name (detail)` line per probe; exit 1 on any FAIL.
# shellcheck disable=SC2016
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
export LOG_TAG=e2e-openshell
: "${IMAGE:?IMAGE (podman image) is required}" "${OCI:?OCI layout is required}" "${TAG:=nemoclaw}"
BIN="${BIN:-$NEMOCLAW_ROOT/target/release/nemoclaw-build}"
W="${E2E_WORK:-/tmp/nemoclaw-e2e-openshell-$$}"
mkdir -p "$W/logs"
W="$(cd "$W" && pwd -P)"
LOGS="$W/logs"
RESULTS="$W/results"
: >"$RESULTS"
PIDS=()
# shellcheck source=probe.sh
. "$NEMOCLAW_ROOT/scripts/probe.sh"
suite_begin openshell
# default 1+12, root 2+12, openshell 1+12+9, root-no-caps 2, read-only 1+12+1, nnp 2+12,
# landlock 2+2*6, audit 2 (common_env is 12 probes)
plan 95
N=0
run() { # podman run --rm with the suite's flags; extra flags first, then image and command
  N=$((N + 1))
  timeout --kill-after=10 180 podman "${PODMAN_GLOBAL[@]}" run --rm --name "nemoclaw-os-$$-$N" \
    "${PODMAN_RUN_FLAGS[@]}" "$@"
}
fact() { awk -v k="$2=" 'index($0, k) == 1 { print substr($0, length(k) + 1); exit }' "$1" 2>/dev/null || true; }

# What a workload sees: identity, capabilities, the env file, the tool directories.
cat >"$W/inside.sh" <<'IN'
#!/bin/bash
printf 'uid=%s\n' "$(id -u)"
printf 'capeff=%s\n' "$(awk '/^CapEff:/ {print $2}' /proc/self/status)"
printf 'nnp=%s\n' "$(awk '/^NoNewPrivs:/ {print $2}' /proc/self/status)"
printf 'envfile.stat=%s\n' "$(stat -c '%u:%g %a' /tmp/nemoclaw-proxy-env.sh 2>/dev/null || echo MISSING)"
for v in HTTP_PROXY XDG_CACHE_HOME GNUPGHOME npm_config_cache NPM_CONFIG_OFFLINE OPENCLAW_GATEWAY_URL OPENCLAW_GATEWAY_TOKEN; do
  printf 'proc.%s=%s\n' "$v" "${!v:-}"
  printf 'file.%s=%s\n' "$v" "$(env -i bash -c ". /tmp/nemoclaw-proxy-env.sh 2>/dev/null; printf %s \"\${$v:-}\"")"
done
printf 'file.has_secret_value=%s\n' "$(grep -c s3cr3t /tmp/nemoclaw-proxy-env.sh 2>/dev/null)"
printf 'login.XDG_CACHE_HOME=%s\n' "$(cd /tmp && env -i HOME=/tmp bash -lc 'echo "$XDG_CACHE_HOME"' 2>/dev/null | tail -n1)"
printf 'interactive.GNUPGHOME=%s\n' "$(cd /tmp && env -i HOME=/tmp bash -ic 'echo "$GNUPGHOME"' 2>/dev/null </dev/null | tail -n1)"
for d in /tmp/.npm-cache /tmp/.cache /tmp/.config /tmp/.local /tmp/.local/share /tmp/.local/state \
         /tmp/.runtime /tmp/.gnupg /tmp/.claude /tmp/npm-global; do
  printf 'dir.%s=%s\n' "$d" "$(stat -c '%u:%g %a' "$d" 2>/dev/null || echo MISSING)"
done
printf 'write.gnupg=%s\n' "$( (touch /tmp/.gnupg/probe) 2>/dev/null && echo ok || echo denied)"
printf 'write.etc=%s\n' "$( (touch /etc/probe) 2>/dev/null && echo ok || echo denied)"
IN
chmod 0755 "$W/inside.sh"
VOL=(-v "$W/inside.sh:/e2e/inside.sh:ro")

# common_env PREFIX FILE OWNER: the env file and directories, whoever wrote them
common_env() {
  local p="$1" f="$2" owner="$3"
  check_eq "$p.envfile_meta" "$owner 444" "$(fact "$f" envfile.stat)"
  check_eq "$p.env_proxy_in_process" "http://10.200.0.1:3128" "$(fact "$f" proc.HTTP_PROXY)"
  check_eq "$p.env_proxy_in_file" "http://10.200.0.1:3128" "$(fact "$f" file.HTTP_PROXY)"
  check_eq "$p.redirect_in_process" "/tmp/.cache" "$(fact "$f" proc.XDG_CACHE_HOME)"
  check_eq "$p.redirect_in_file" "/tmp/.npm-cache" "$(fact "$f" file.npm_config_cache)"
  check_eq "$p.offline_flag_in_file" "false" "$(fact "$f" file.NPM_CONFIG_OFFLINE)"
  check_eq "$p.login_shell_sees_redirect" "/tmp/.cache" "$(fact "$f" login.XDG_CACHE_HOME)"
  check_eq "$p.interactive_shell_sees_redirect" "/tmp/.gnupg" "$(fact "$f" interactive.GNUPGHOME)"
  check_eq "$p.gnupg_dir" "998:998 700" "$(fact "$f" dir./tmp/.gnupg)"
  check_eq "$p.runtime_dir" "998:998 700" "$(fact "$f" dir./tmp/.runtime)"
  local d bad=""
  for d in /tmp/.npm-cache /tmp/.cache /tmp/.config /tmp/.local /tmp/.local/share /tmp/.local/state /tmp/.claude /tmp/npm-global; do
    [[ "$(fact "$f" "dir.$d")" == "998:998 755" ]] || bad="$bad $d($(fact "$f" "dir.$d"))"
  done
  check_eq "$p.tool_dirs_owned_by_sandbox" "" "$bad"
  check_eq "$p.gnupg_writable" ok "$(fact "$f" write.gnupg)"
}

# 1. default USER (the image's own: sandbox), no capabilities needed
f="$W/default"
run "${VOL[@]}" "$IMAGE" /e2e/inside.sh >"$f" 2>"$LOGS/default.err" || true
check_eq default_user.uid 998 "$(fact "$f" uid)"
common_env default_user "$f" "998:998"

# 2. --user root: step-down by the init, env file root-owned
f="$W/root"
run --user root "${VOL[@]}" "$IMAGE" /e2e/inside.sh >"$f" 2>"$LOGS/root.err" || true
check_eq user_root.stepdown_uid 998 "$(fact "$f" uid)"
check_eq user_root.capeff_empty 0000000000000000 "$(fact "$f" capeff)"
common_env user_root "$f" "0:0"

# 3. the OpenShell shape: another PID 1, uid 998, every capability set empty
f="$W/openshell"
run --init --user 998:998 --cap-drop=ALL -e OPENCLAW_GATEWAY_URL=ws://10.200.0.2:18789 \
  -e OPENCLAW_GATEWAY_TOKEN=s3cr3t "${VOL[@]}" "$IMAGE" /e2e/inside.sh >"$f" 2>"$LOGS/openshell.err" || true
check_eq openshell.uid 998 "$(fact "$f" uid)"
common_env openshell "$f" "998:998"
check_eq openshell.passthrough_in_file "ws://10.200.0.2:18789" "$(fact "$f" file.OPENCLAW_GATEWAY_URL)"
check_eq openshell.secret_not_in_file "" "$(fact "$f" file.OPENCLAW_GATEWAY_TOKEN)"
check_eq openshell.secret_value_nowhere_in_file 0 "$(fact "$f" file.has_secret_value)"
check_grep openshell.secret_refusal_logged_by_name 'OPENCLAW_GATEWAY_TOKEN looks like a secret' "$LOGS/openshell.err"
check_nogrep openshell.secret_value_not_logged 's3cr3t' "$LOGS/openshell.err"
check_grep openshell.empty_caps_logged_once 'all capability sets are empty' "$LOGS/openshell.err"
check_nogrep openshell.no_security_noise '\[SECURITY\]' "$LOGS/openshell.err"
rc=0; run --init --user 998:998 --cap-drop=ALL "$IMAGE" sh -c 'exit 5' >/dev/null 2>"$LOGS/openshell.exit.err" || rc=$?
check_eq openshell.exit_status_propagates 5 "$rc"
# SIGTERM from the outer init reaches the command: sleep dies of it (143), not SIGKILL (137)
c="nemoclaw-os-$$-stop"
if timeout 120 podman "${PODMAN_GLOBAL[@]}" run -d --name "$c" "${PODMAN_RUN_FLAGS[@]}" --init --user 998:998 \
    --cap-drop=ALL "$IMAGE" sleep 1000 >"$LOGS/openshell.stop.log" 2>&1; then
  sleep 2
  timeout 90 podman "${PODMAN_GLOBAL[@]}" stop -t 30 "$c" >>"$LOGS/openshell.stop.log" 2>&1 || true
  check_eq openshell.sigterm_forwarded 143 "$(podman "${PODMAN_GLOBAL[@]}" inspect -f '{{.State.ExitCode}}' "$c" 2>/dev/null)"
  podman "${PODMAN_GLOBAL[@]}" rm -f "$c" >/dev/null 2>&1 || true
else
  fail openshell.sigterm_forwarded "could not start: $(tail_detail "$LOGS/openshell.stop.log")"
fi

# 4. root without SETUID/SETGID: refuse, and say how to run instead
rc=0; run --user root --cap-drop=ALL "$IMAGE" id -u >"$LOGS/rootnocaps.out" 2>"$LOGS/rootnocaps.err" || rc=$?
check_eq root_capdrop_all.refused "1:" "$rc:$(tr -d '\n' <"$LOGS/rootnocaps.out")"
check_grep root_capdrop_all.says_how '--user sandbox' "$LOGS/rootnocaps.err"

# 5. read-only root with a tmpfs /tmp
f="$W/readonly"
run --read-only --tmpfs /tmp:rw,mode=1777 "${VOL[@]}" "$IMAGE" /e2e/inside.sh >"$f" 2>"$LOGS/readonly.err" || true
check_eq read_only.uid 998 "$(fact "$f" uid)"
common_env read_only "$f" "998:998"
check_eq read_only.etc_not_writable denied "$(fact "$f" write.etc)"

# 6. no-new-privileges: the root path still steps down (capabilities, not setuid binaries)
f="$W/nnp"
run --user root --security-opt no-new-privileges "${VOL[@]}" "$IMAGE" /e2e/inside.sh >"$f" 2>"$LOGS/nnp.err" || true
check_eq no_new_privs.stepdown_uid 998 "$(fact "$f" uid)"
check_eq no_new_privs.flag_set 1 "$(fact "$f" nnp)"
common_env no_new_privs "$f" "0:0"

# 7. Landlock required: a path DAC allows but the policy leaves read-only is denied; every
#    row `policy` prints for the sandbox user matches what the running container observes.
out="$(run --user 998:998 --cap-drop=ALL --entrypoint /usr/local/bin/nemoclaw-init "$IMAGE" --check --json 2>"$LOGS/check.err" || true)"
check_eq landlock.check_reports_abi true "$(jq -r '.landlock.available' <<<"$out" 2>/dev/null)"
if timeout 600 "$BIN" policy "oci:$OCI:$TAG" --json >"$W/policy.json" 2>"$LOGS/policy.err"; then
  jq -r '.access[] | select(.user == "sandbox") | "\(.path) \(.effective_write)"' "$W/policy.json" >"$W/rows"
else
  : >"$W/rows"
fi
check_eq landlock.policy_has_rows yes "$([[ -s "$W/rows" ]] && echo yes || echo no)"
cat >"$W/ll.sh" <<'IN'
#!/bin/bash
# PATH VERDICT per line on stdin -> PATH VERDICT OBSERVED
try() {
  local p="$1"
  if [ -d "$p" ]; then
    local t="$p/.nemoclaw-ll-probe-$$"
    if (: >"$t") 2>/dev/null; then rm -f "$t"; echo true; else echo false; fi
  elif [ -e "$p" ]; then
    if (: >>"$p") 2>/dev/null; then echo true; else echo false; fi
  else
    echo missing
  fi
}
while read -r p v; do printf '%s %s %s\n' "$p" "$v" "$(try "$p")"; done
printf '/var/tmp dac-allows %s\n' "$(try /var/tmp)"
printf '/sandbox/.openclaw/workspace expect %s\n' "$(try /sandbox/.openclaw/workspace)"
printf '/tmp expect %s\n' "$(try /tmp)"
IN
chmod 0755 "$W/ll.sh"
for mode in openshell root; do
  if [[ $mode == openshell ]]; then flags=(--init --user 998:998 --cap-drop=ALL); else flags=(--user root); fi
  # the script travels as an argument: a mounted file outside the policy is unreadable
  run -i "${flags[@]}" -e NEMOCLAW_LANDLOCK=require "$IMAGE" /bin/bash -c "$(cat "$W/ll.sh")" \
    <"$W/rows" >"$W/ll.$mode" 2>"$LOGS/ll.$mode.err" || true
  check_grep "landlock_$mode.enforced" 'landlock (fully|partially) enforced' "$LOGS/ll.$mode.err"
  check_eq "landlock_$mode.var_tmp_denied" "/var/tmp dac-allows false" "$(grep '^/var/tmp dac-allows' "$W/ll.$mode" || true)"
  check_eq "landlock_$mode.workspace_writable" "/sandbox/.openclaw/workspace expect true" "$(grep '^/sandbox/.openclaw/workspace expect' "$W/ll.$mode" || true)"
  check_eq "landlock_$mode.tmp_writable" "/tmp expect true" "$(grep '^/tmp expect' "$W/ll.$mode" || true)"
  mism="$(awk 'NF == 3 && $2 != "expect" && $2 != "dac-allows" && $3 != "missing" && $2 != $3 {print $1 "(policy " $2 ", observed " $3 ")"}' "$W/ll.$mode" | tr '\n' ' ')"
  rows="$(awk 'NF == 3 && $2 != "expect" && $2 != "dac-allows" && $3 != "missing"' "$W/ll.$mode" | wc -l)"
  check_eq "landlock_$mode.rows_checked_nonzero" yes "$([[ $rows -gt 5 ]] && echo yes || echo "no ($rows)")"
  check_eq "landlock_$mode.every_policy_row_matches" "" "$mism"
done

# 8. the product's audit passes the product's image, OpenShell contract included
rc=0; timeout 600 "$BIN" audit "oci:$OCI:$TAG" --fail-on warning --json >"$W/audit.json" 2>"$LOGS/audit.err" || rc=$?
check_eq audit.clean_at_warning "0:0" "$rc:$(jq -r '[.findings[] | select(.severity != "info")] | length' "$W/audit.json" 2>/dev/null)"
check_eq audit.openshell_rules_on "true" "$(jq -r '.openshell' "$W/audit.json" 2>/dev/null)"

suite_end

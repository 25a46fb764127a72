# shellcheck shell=bash
# NemoClaw peer: process limits shared by the entrypoint and the login-shell hook.
# Lowers soft before hard (the reverse order broke boots upstream, #949); never fails the caller.
NEMOCLAW_NPROC=512
NEMOCLAW_NOFILE=65536

nemoclaw_set_limit() { # FLAG TARGET
  [ -n "${BASH_VERSION:-}" ] || return 0 # dash has no ulimit -u
  cur_s=$(ulimit -S "$1"); cur_h=$(ulimit -H "$1")
  if [ "$cur_h" != unlimited ] && [ "$cur_h" -lt "$2" ]; then
    # Raising needs the hard limit first (root only); fine to fail as non-root.
    ulimit -H "$1" "$2" 2>/dev/null && ulimit -S "$1" "$2" 2>/dev/null
  else
    if [ "$cur_s" = unlimited ] || [ "$cur_s" -gt "$2" ] || [ "$(id -u)" -eq 0 ]; then
      ulimit -S "$1" "$2" 2>/dev/null || echo "[SECURITY] could not set soft ulimit $1 $2" >&2
    fi
    ulimit -H "$1" "$2" 2>/dev/null || echo "[SECURITY] could not set hard ulimit $1 $2" >&2
  fi
  return 0
}

nemoclaw_apply_rlimits() {
  nemoclaw_set_limit -u "$NEMOCLAW_NPROC"
  nemoclaw_set_limit -n "$NEMOCLAW_NOFILE"
}

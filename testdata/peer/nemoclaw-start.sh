#!/bin/bash
# NemoClaw peer entrypoint: the upstream nemoclaw-start.sh behaviour, in bash.
# As root: PATH, rlimits, bounding-set drop, proxy env file, rc-file lock, then step down
# with setpriv. Not root (the image's USER sandbox): just run the command.
set -euo pipefail
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

if [ "$(id -u)" -ne 0 ]; then
  if [ "$#" -eq 0 ]; then exec node /opt/nemoclaw/dist/index.js; fi
  exec "$@"
fi

# shellcheck source=/dev/null
. /usr/local/lib/nemoclaw/sandbox-rlimits.sh
nemoclaw_apply_rlimits

# Proxy environment for shells, written atomically and root-owned read-only.
host="${NEMOCLAW_PROXY_HOST:-10.200.0.1}"
port="${NEMOCLAW_PROXY_PORT:-3128}"
tmp="$(mktemp /tmp/.nemoclaw-proxy-env.XXXXXX)"
cat > "$tmp" <<ENV
export HTTP_PROXY=http://$host:$port
export HTTPS_PROXY=http://$host:$port
export http_proxy=http://$host:$port
export https_proxy=http://$host:$port
export NO_PROXY=localhost,127.0.0.1,::1,$host
export no_proxy=localhost,127.0.0.1,::1,$host
export npm_config_cache=/tmp/.npm
export XDG_CACHE_HOME=/tmp/.cache
export XDG_CONFIG_HOME=/tmp/.config
export XDG_DATA_HOME=/tmp/.local/share
export HISTFILE=/tmp/.bash_history
export GIT_CONFIG_GLOBAL=/tmp/.gitconfig
ENV
chown root:root "$tmp"
chmod 0444 "$tmp"
mv -f "$tmp" /tmp/nemoclaw-proxy-env.sh

# Lock the rc files.
for f in /sandbox/.bashrc /sandbox/.profile; do
  if [ -f "$f" ] && [ ! -L "$f" ]; then chown root:root "$f"; chmod 0444 "$f"; fi
done

drop=-sys_admin,-sys_ptrace,-net_raw,-dac_override,-sys_chroot,-fsetid,-setfcap,-mknod,-audit_write,-net_bind_service
stepdown=-setuid,-setgid,-fowner,-chown,-kill
if [ "$#" -eq 0 ]; then
  umask 0007
  export HOME=/sandbox USER=gateway LOGNAME=gateway
  exec setpriv --reuid=gateway --regid=gateway --init-groups \
    --bounding-set="$drop,$stepdown" -- node /opt/nemoclaw/dist/index.js
fi
export HOME=/sandbox USER=sandbox LOGNAME=sandbox SHELL=/bin/bash
exec setpriv --reuid=sandbox --regid=sandbox --init-groups \
  --bounding-set="$drop,$stepdown" -- "$@"

#!/usr/bin/env bash
# Create demo Node.js builder artifacts (what the upstream builder stage produces), offline
# and deterministically: same bytes, modes and mtimes (SOURCE_DATE_EPOCH, default
# 1700000000) on every run.
#
#   scripts/mk-artifacts.sh [OUT_DIR]      (default $NEMOCLAW_CACHE/artifacts)
#
# Layout:
#   package.json, package-lock.json (lockfileVersion 3), openclaw.plugin.json
#   dist/index.js, dist/lib/util.js          (runnable: node dist/index.js)
#   node_modules/left-pad/{package.json,index.js}
# stdout: the directory path (last line).
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

out="${1:-$NEMOCLAW_CACHE/artifacts}"
epoch="${SOURCE_DATE_EPOCH:-1700000000}"
mkdir -p "$(dirname "$out")"
out="$(cd "$(dirname "$out")" && pwd -P)/$(basename "$out")"
tmp="$out.tmp.$$"
rm -rf "$tmp"
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/dist/lib" "$tmp/node_modules/left-pad"

cat >"$tmp/package.json" <<'EOF'
{
  "name": "nemoclaw",
  "version": "0.1.0",
  "description": "NemoClaw sandbox agent (demo build artifacts)",
  "main": "dist/index.js",
  "bin": {
    "nemoclaw": "dist/index.js"
  },
  "license": "Apache-2.0",
  "dependencies": {
    "left-pad": "1.3.0"
  }
}
EOF

cat >"$tmp/package-lock.json" <<'EOF'
{
  "name": "nemoclaw",
  "version": "0.1.0",
  "lockfileVersion": 3,
  "requires": true,
  "packages": {
    "": {
      "name": "nemoclaw",
      "version": "0.1.0",
      "license": "Apache-2.0",
      "dependencies": {
        "left-pad": "1.3.0"
      },
      "bin": {
        "nemoclaw": "dist/index.js"
      }
    },
    "node_modules/left-pad": {
      "version": "1.3.0",
      "resolved": "https://registry.npmjs.org/left-pad/-/left-pad-1.3.0.tgz",
      "integrity": "sha512-XI5MPzVNApjAyhQzphX8BkmKsKUxD4LdyK24iZeQEw7ky5ITS/bbVCHn+WOvdy5MWv4KANr5NHA6TN+iNK5W3Q==",
      "deprecated": "use String.prototype.padStart()",
      "license": "WTFPL"
    }
  }
}
EOF

cat >"$tmp/openclaw.plugin.json" <<'EOF'
{
  "id": "nemoclaw",
  "name": "NemoClaw",
  "version": "0.1.0",
  "description": "Runs OpenClaw agents inside the hardened NemoClaw sandbox",
  "entry": "dist/index.js",
  "configSchema": {
    "type": "object",
    "additionalProperties": false,
    "properties": {
      "proxyHost": { "type": "string", "default": "10.200.0.1" },
      "proxyPort": { "type": "integer", "default": 3128 }
    }
  }
}
EOF

cat >"$tmp/dist/index.js" <<'EOF'
#!/usr/bin/env node
'use strict';
const { banner, proxyFromEnv } = require('./lib/util');
const pkg = require('../package.json');

function main(argv) {
  if (argv.includes('--version')) {
    console.log(pkg.version);
    return 0;
  }
  console.log(banner(pkg.name, pkg.version));
  const proxy = proxyFromEnv(process.env);
  console.log(proxy ? `proxy: ${proxy}` : 'proxy: none');
  return 0;
}

process.exitCode = main(process.argv.slice(2));
EOF

cat >"$tmp/dist/lib/util.js" <<'EOF'
'use strict';
const leftPad = require('left-pad');

function banner(name, version) {
  return `${name} ${leftPad(version, 8, '.')} ready`;
}

function proxyFromEnv(env) {
  return env.HTTPS_PROXY || env.https_proxy || env.HTTP_PROXY || env.http_proxy || '';
}

module.exports = { banner, proxyFromEnv };
EOF

cat >"$tmp/node_modules/left-pad/package.json" <<'EOF'
{
  "name": "left-pad",
  "version": "1.3.0",
  "description": "String left pad",
  "main": "index.js",
  "license": "WTFPL"
}
EOF

cat >"$tmp/node_modules/left-pad/index.js" <<'EOF'
'use strict';
module.exports = function leftPad(str, len, ch) {
  str = String(str);
  ch = ch === undefined || ch === '' ? ' ' : String(ch);
  while (str.length < len) str = ch + str;
  return str;
};
EOF

# Deterministic metadata: modes independent of the caller's umask, fixed mtimes.
find "$tmp" -type d -exec chmod 0755 {} +
find "$tmp" -type f -exec chmod 0644 {} +
chmod 0755 "$tmp/dist/index.js"
find "$tmp" -exec touch -h -d "@$epoch" {} +

rm -rf "$out"
mv "$tmp" "$out"
touch -h -d "@$epoch" "$out"
trap - EXIT
log "artifacts in $out"
printf '%s\n' "$out"

#!/usr/bin/env bash
# Make (or reuse) a base with ~300k files for memory benchmarks (architecture issue 16.6):
# the small base tarball (scripts/mk-base.sh) with DIRS x FILES small regular files appended
# under /bulk/dNNN/fNNNN, as one rootfs tarball. Deterministic: fixed names, contents, modes,
# owner and mtime (SOURCE_DATE_EPOCH, default 1700000000).
#
#   scripts/mk-bigbase.sh [BASE_TAR]        (default: the output of scripts/mk-base.sh)
#   DIRS=300 FILES=1000 scripts/mk-bigbase.sh
#
# The result lands in $NEMOCLAW_CACHE/bases/<name>-big<DIRS>x<FILES>.tar and is reused.
# stdout: the tarball path (last line).
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
LOG_TAG=mk-bigbase

DIRS="${DIRS:-300}"
FILES="${FILES:-1000}"
epoch="${SOURCE_DATE_EPOCH:-1700000000}"
base="${1:-}"
[[ -n "$base" ]] || base="$(bash "$NEMOCLAW_ROOT/scripts/mk-base.sh" | tail -n1)"
[[ -f "$base" ]] || die "base tarball not found: $base"
need_cmd python3

out="$NEMOCLAW_CACHE/bases/$(basename "$base" .tar)-big${DIRS}x${FILES}.tar"
if [[ -f "$out" ]]; then
  log "reusing $out"
  echo "$out"
  exit 0
fi
mkdir -p "$(dirname "$out")"
tmp="$out.tmp.$$"
trap 'rm -f "$tmp"' EXIT

# Copy the base without its end-of-archive blocks, then append the bulk entries and a new
# end-of-archive: one well-formed tarball, no file is ever extracted.
log "writing $DIRS x $FILES files on top of $base"
python3 - "$base" "$tmp" "$DIRS" "$FILES" "$epoch" <<'EOF'
import io, sys, tarfile
base, out, dirs, files, epoch = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
with tarfile.open(base, "r:") as t:
    # offset_data/size of the last member bound the archive's payload.
    end = 0
    for m in t:
        end = m.offset_data + ((m.size + 511) // 512) * 512 if m.isreg() else m.offset_data
with open(base, "rb") as src, open(out, "wb") as dst:
    left = end
    while left:
        chunk = src.read(min(left, 1 << 20))
        if not chunk:
            sys.exit("short read of the base")
        dst.write(chunk)
        left -= len(chunk)
    with tarfile.open(fileobj=dst, mode="w:", format=tarfile.USTAR_FORMAT) as t:
        def add(name, typ, data=b"", mode=0o644):
            i = tarfile.TarInfo(name)
            i.type, i.mode, i.mtime, i.uid, i.gid = typ, mode, epoch, 0, 0
            i.uname = i.gname = "root"
            i.size = len(data)
            t.addfile(i, io.BytesIO(data) if data else None)
        add("./bulk", tarfile.DIRTYPE, mode=0o755)
        for d in range(dirs):
            add(f"./bulk/d{d:03d}", tarfile.DIRTYPE, mode=0o755)
            for f in range(files):
                add(f"./bulk/d{d:03d}/f{f:04d}", tarfile.REGTYPE, f"bulk {d} {f}\n".encode())
EOF
mv "$tmp" "$out"
log "wrote $out ($(du -m "$out" | cut -f1) MiB)"
echo "$out"

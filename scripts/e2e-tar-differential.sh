#!/usr/bin/env bash
# Differential test of the layer reader. Crafted layer tars (made here by python3,
# a few by GNU tar itself) are listed three ways: `nemoclaw-build debug list-layer`
# (our reader and rootfs model), GNU tar (`tar -tv --numeric-owner`) and Python's
# tarfile. A case passes when
#   - it is expected to be accepted, we accept it, and our entry list (type, path,
#     link, size, mode, owner; devices; mtime vs Python) equals both of theirs after
#     path normalization (`./`, leading `/`, trailing `/`, `//`), and GNU tar and
#     Python agree with each other; or
#   - it is expected to be refused and we refuse it with an error naming the layer.
#
#   BIN=target/release/nemoclaw-build W=/tmp/tardiff scripts/e2e-tar-differential.sh
#
# stdout: `PLAN: N`, one `PASS: tar-diff/NAME` or `FAIL: tar-diff/NAME (detail)` line per
# case, then `N passed, M failed, K skipped`; exit 1 on any FAIL (probe.sh suite contract). Needs GNU tar and python3.
# Env: BIN (default target/release/nemoclaw-build), W (work dir, default a new temp
# dir, removed at exit unless E2E_KEEP=1), TARDIFF_BASE (a real base tarball to
# compare as well; default the newest $NEMOCLAW_CACHE/bases/*.tar, if any).
# shellcheck disable=SC2034,SC2012,SC1091
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
BIN="${BIN:-target/release/nemoclaw-build}"
W="${W:-${E2E_WORK:-$(mktemp -d /tmp/nemoclaw-tardiff-XXXXXX)}}"
mkdir -p "$W"
RESULTS="$W/results.txt"
: >"$RESULTS"
PIDS=() # no servers here; probe.sh's cleanup reads it
# shellcheck source=probe.sh
. scripts/probe.sh
suite_begin tar-diff

[[ -x "$BIN" ]] || { echo "no binary at $BIN" >&2; exit 1; }
tar --version 2>/dev/null | grep -q 'GNU tar' || { echo "GNU tar not found" >&2; exit 1; }
command -v python3 >/dev/null || { echo "python3 not found" >&2; exit 1; }

# A real base tarball (scripts/mk-base.sh) is compared too when there is one.
BASE_TAR="${TARDIFF_BASE:-$(ls -t "${NEMOCLAW_CACHE:-.cache}"/bases/*.tar 2>/dev/null | head -n 1 || true)}"
[[ -n "$BASE_TAR" ]] || printf '# no base tarball: set TARDIFF_BASE to compare a real one\n' >&2

cat >"$W/tardiff.py" <<'PY'
import io, json, os, subprocess, sys, tarfile

BIN, W = sys.argv[1], sys.argv[2]
CASES = os.path.join(W, "cases")
os.makedirs(CASES, exist_ok=True)

# ---------- raw tar construction ----------
def hdr(name, t=b"0", size=0, link=b"", mode=0o644, uid=0, gid=0, mtime=1700000000,
        magic=b"ustar  \0", prefix=b"", dev=(0, 0), size_field=None, uname=b"", signed=False):
    h = bytearray(512)
    h[0:len(name)] = name
    h[100:108] = b"%07o\0" % mode
    h[108:116] = b"%07o\0" % uid
    h[116:124] = b"%07o\0" % gid
    h[124:136] = size_field if size_field is not None else b"%011o\0" % size
    h[136:148] = b"%011o\0" % mtime
    h[156:157] = t
    h[157:157 + len(link)] = link
    h[257:265] = magic
    h[329:337] = b"%07o\0" % dev[0]
    h[337:345] = b"%07o\0" % dev[1]
    h[345:345 + len(prefix)] = prefix
    h[265:265 + len(uname)] = uname
    h[148:156] = b" " * 8
    h[148:156] = b"%06o\0 " % sum(b - 256 if signed and b > 127 else b for b in h)
    return bytes(h)

USTAR = b"ustar\x0000"
END = b"\0" * 1024

def member(h, data=b""):
    return h + data + b"\0" * ((512 - len(data) % 512) % 512)

def f(name, data=b"", **kw):
    return member(hdr(name, b"0", len(data), **kw), data)

def records(recs):
    out = b""
    for k, v in recs:
        rest = len(k) + len(v) + 3
        n = rest + 1
        while n != rest + len(str(n)):
            n = rest + len(str(n))
        out += b"%d %s=%s\n" % (n, k, v)
    return out

def pax(recs, t=b"x", raw=None):
    data = raw if raw is not None else records(recs)
    return member(hdr(b"PaxHeader", t, len(data), magic=USTAR), data)

def with_tarfile(fmt, build):
    bio = io.BytesIO()
    with tarfile.open(fileobj=bio, mode="w", format=fmt) as tf:
        build(tf)
    return bio.getvalue()

def add(tf, name, t=tarfile.REGTYPE, data=b"", link="", mode=0o644, uid=0, gid=0, **kw):
    ti = tarfile.TarInfo(name)
    ti.type, ti.mode, ti.uid, ti.gid, ti.mtime = t, mode, uid, gid, 1700000000
    ti.linkname = link
    for k, v in kw.items():
        setattr(ti, k, v)
    ti.size = len(data) if t == tarfile.REGTYPE else 0
    tf.addfile(ti, io.BytesIO(data) if t == tarfile.REGTYPE else None)

ELF = b"\x7fELF" + b"\0" * 60
SMUGGLED = f(b"usr/bin/gcc", ELF, mode=0o755)

cases = []  # (name, expect, bytes or an existing file's path)
def case(name, expect, data):
    cases.append((name, expect, data))

# ----- accepted: every reader must list exactly what we list -----
def basic(tf):
    add(tf, "etc", tarfile.DIRTYPE, mode=0o755)
    add(tf, "etc/passwd", data=b"root:x:0:0::/root:/bin/sh\n")
    add(tf, "usr/bin/tool", data=ELF, mode=0o4755)
    add(tf, "usr/bin/tool2", tarfile.LNKTYPE, link="usr/bin/tool")
    add(tf, "usr/bin/sh", tarfile.SYMTYPE, link="../../bin/dash", mode=0o777)
    add(tf, "run/fifo", tarfile.FIFOTYPE)
    add(tf, "dev/null", tarfile.CHRTYPE, mode=0o666, devmajor=1, devminor=3)
    add(tf, "dev/sda", tarfile.BLKTYPE, mode=0o660, devmajor=8, devminor=0)
    add(tf, "tmp", tarfile.DIRTYPE, mode=0o1777)
    add(tf, "home/u/f", data=b"x", uid=1000, gid=1000, mode=0o600)
case("basic-gnu", "accept", with_tarfile(tarfile.GNU_FORMAT, basic))
case("basic-pax", "accept", with_tarfile(tarfile.PAX_FORMAT, basic))
case("dot-slash-and-root", "accept",
     member(hdr(b"./", b"5", mode=0o755)) + f(b"./etc/x", b"1") + member(hdr(b"./etc/", b"5", mode=0o755)) + END)
case("absolute-names", "accept", f(b"/etc/abs", b"a") + member(hdr(b"/opt/", b"5", mode=0o755)) + END)
case("trailing-and-double-slashes", "accept",
     member(hdr(b"usr//lib/", b"5", mode=0o755)) + f(b"usr//lib//x", b"x") + END)
case("duplicate-entries", "accept", f(b"a", b"first") + f(b"a", b"second!") + member(hdr(b"d", b"5")) + member(hdr(b"d/", b"5", mode=0o700)) + END)
LONG = "opt/" + "/".join(["d" * 60] * 4) + "/file"
LONGT = "/" + "/".join(["t" * 70] * 3)
def longnames(tf):
    add(tf, LONG, data=b"long")
    add(tf, LONG + "-link", tarfile.SYMTYPE, link=LONGT, mode=0o777)
    add(tf, LONG + "-hard", tarfile.LNKTYPE, link=LONG)
case("long-names-gnu", "accept", with_tarfile(tarfile.GNU_FORMAT, longnames))
case("long-names-pax", "accept", with_tarfile(tarfile.PAX_FORMAT, longnames))
case("ustar-prefix", "accept", with_tarfile(tarfile.USTAR_FORMAT, lambda tf: add(tf, "p" * 120 + "/name", data=b"u")))
case("pax-big-ids-and-mtime", "accept",
     pax([(b"uid", b"4000000000"), (b"gid", b"3000000000"), (b"mtime", b"1700000000.75"), (b"atime", b"1.5"), (b"uname", b"x")])
     + f(b"ids", b"i") + END)
case("pax-newline-value-is-one-record", "accept",
     pax([(b"comment", b"x\n19 path=usr/bin/gcc\n")]) + f(b"usr/bin/true", b"t") + END)
case("hardlink-chain", "accept", f(b"a", b"data") + member(hdr(b"b", b"1", link=b"a")) + member(hdr(b"c", b"1", link=b"b")) + END)
case("whiteouts-are-entries", "accept", f(b"etc/.wh.issue") + f(b"usr/.wh..wh..opq") + END)
case("utf8-names", "accept", f("café/ünï".encode(), b"u") + END)
case("zeros-after-end", "accept", f(b"a", b"a") + END + b"\0" * 20480)
case("empty-archive", "accept", END)
case("signed-checksum", "accept", f(b"plain", b"p", mode=0o755, uname=b"\xe9\xe9", signed=True) + END)

# ----- refused: readers disagree (or unpacking would differ) -----
case("dir-with-data", "refuse", member(hdr(b"usr/share/x", b"5", len(SMUGGLED)), SMUGGLED) + END)
case("symlink-with-data", "refuse", member(hdr(b"s", b"2", len(SMUGGLED), link=b"t"), SMUGGLED) + END)
case("hardlink-with-data", "refuse", f(b"a", b"a") + member(hdr(b"b", b"1", len(SMUGGLED), link=b"a"), SMUGGLED) + END)
case("fifo-with-data", "refuse", member(hdr(b"p", b"6", len(SMUGGLED)), SMUGGLED) + END)
case("pax-size-on-dir", "refuse", pax([(b"size", b"1024")]) + member(hdr(b"d/", b"5"), SMUGGLED) + END)
case("unknown-type-Z", "refuse", member(hdr(b"usr/bin/gcc", b"Z", len(ELF)), ELF) + END)
case("contiguous-type-7", "refuse", member(hdr(b"usr/bin/gcc", b"7", len(ELF)), ELF) + END)
case("solaris-X-header", "refuse", member(hdr(b"x", b"X", 20, magic=USTAR), records([(b"path", b"gcc")])) + f(b"a", b"a") + END)
case("pax-sparse-1.0-rename", "refuse",
     pax([(b"GNU.sparse.major", b"1"), (b"GNU.sparse.minor", b"0"), (b"GNU.sparse.name", b"usr/bin/gcc"), (b"GNU.sparse.realsize", b"4")])
     + f(b"GNUSparseFile.0/x", b"1\n0\n4\n" + b"\0" * 506 + ELF[:4]) + END)
case("non-utf8-names", "refuse", f(b"caf\xe9", b"1") + f(b"caf\xe8", b"2") + END)
case("pax-duplicate-path", "refuse", pax(None, raw=records([(b"path", b"a")]) + records([(b"path", b"usr/bin/gcc")])) + f(b"x", b"x") + END)
case("pax-size-with-plus", "refuse", pax([(b"size", b"+1")]) + f(b"x", b"x") + END)
case("pax-length-with-plus", "refuse", pax(None, raw=b"+21 path=usr/bin/gcc\n") + f(b"x", b"x") + END)
case("pax-trailing-garbage", "refuse", pax(None, raw=records([(b"path", b"a")]) + b"\n20 path=usr/bin/gcc\n") + f(b"x", b"x") + END)
case("global-pax-path", "refuse", pax([(b"path", b"usr/bin/gcc")], t=b"g") + f(b"x", b"x") + f(b"y", b"y") + END)
case("gnu-longname-plus-pax-path", "refuse",
     member(hdr(b"././@LongLink", b"L", 12), b"usr/bin/gcc\0") + pax([(b"path", b"usr/bin/true")]) + f(b"x", b"x") + END)
case("gnu-longname-inner-nul", "refuse", member(hdr(b"././@LongLink", b"L", 20), b"usr/bin/ok\0gcc\0\0\0\0\0\0") + f(b"x", b"x") + END)
case("gnu-longname-ustar-magic", "refuse", member(hdr(b"././@LongLink", b"L", 12, magic=USTAR), b"usr/bin/gcc\0") + f(b"x", b"x") + END)
case("prefix-in-gnu-header", "refuse", f(b"gcc", b"x", prefix=b"usr/bin") + END)
case("prefix-bad-ustar-version", "refuse", f(b"gcc", b"x", magic=b"ustar\0  ", prefix=b"usr/bin") + END)
case("aregtype-trailing-slash", "refuse", member(hdr(b"etc/x/", b"\0")) + END)
case("dotdot", "refuse", f(b"../../etc/x", b"x") + END)
case("symlink-grandparent", "refuse", member(hdr(b"etc/evil", b"2", link=b"/abs")) + f(b"etc/evil/sub/x", b"x") + END)
case("hardlink-to-dir", "refuse", member(hdr(b"usr/lib", b"5")) + member(hdr(b"x", b"1", link=b"usr/lib")) + END)
case("hardlink-to-missing", "refuse", member(hdr(b"x", b"1", link=b"nowhere")) + END)
case("hardlink-target-redefined", "refuse", f(b"t", b"old") + member(hdr(b"h", b"1", link=b"t")) + f(b"t", b"new") + END)
case("dir-then-file-same-path", "refuse", member(hdr(b"opt/x", b"5")) + f(b"opt/x", b"f") + END)
case("whiteout-dotdot", "refuse", f(b"etc/sub/.wh..") + END)
case("data-after-end", "refuse", f(b"a", b"a") + END + f(b"usr/bin/gcc", ELF) + END)
case("lone-zero-block", "refuse", f(b"a", b"a") + b"\0" * 512 + f(b"usr/bin/gcc", ELF) + END)
case("symlink-as-root", "refuse", member(hdr(b"./", b"2", link=b"/etc")) + END)
case("size-field-plus", "refuse", member(hdr(b"a", b"0", size_field=b"+0000000001\0"), b"x") + END)

# Real GNU tar sparse archives (old 'S' type and PAX 1.0).
sp = os.path.join(W, "sparse")
os.makedirs(sp, exist_ok=True)
with open(os.path.join(sp, "gcc"), "wb") as fh:
    fh.truncate(1 << 20)
    fh.seek(1 << 20)
    fh.write(ELF)
for nm, args in [("gnu-sparse-S", ["--format=gnu"]), ("gnu-sparse-pax-1.0", ["--format=posix", "--sparse-version=1.0"])]:
    out = os.path.join(CASES, nm + ".tar")
    subprocess.run(["tar", "-C", sp, "--sparse", *args, "-cf", out, "gcc"], check=True)
    case(nm, "refuse", open(out, "rb").read())

# A real base image tarball, when one is available (mmdebstrap output).
if len(sys.argv) > 3 and sys.argv[3]:
    case("real-base", "accept", sys.argv[3])

# ---------- listings ----------
def norm(p):
    parts = [c for c in p.split("/") if c not in ("", ".")]
    return "/".join(parts)

def ours(path, *flags):
    r = subprocess.run([BIN, *flags, "debug", "list-layer", path], capture_output=True, timeout=600)
    if r.returncode != 0:
        return None, r.stderr.decode(errors="replace").strip()
    out = []
    for line in r.stdout.decode().splitlines():
        e = json.loads(line)
        out.append(dict(type=e["type"], path=e["path"], link=e["link"], size=e["size"], mode=e["mode"],
                        uid=e["uid"], gid=e["gid"], mtime=e["mtime"],
                        dev=tuple(e["dev"]) if e["type"] in ("char", "block") else None))
    return out, ""

PYTYPES = {tarfile.REGTYPE: "file", tarfile.AREGTYPE: "file", tarfile.DIRTYPE: "dir", tarfile.SYMTYPE: "symlink",
           tarfile.LNKTYPE: "hardlink", tarfile.CHRTYPE: "char", tarfile.BLKTYPE: "block", tarfile.FIFOTYPE: "fifo"}

def python(path):
    try:
        with tarfile.open(path, "r:*") as tf:
            ms = tf.getmembers()
    except Exception as e:
        return None, "python: %s" % e
    out = []
    for m in ms:
        t = PYTYPES.get(m.type, "other:%r" % m.type)
        out.append(dict(type=t, path=norm(m.name),
                        link=(norm(m.linkname) if t == "hardlink" else m.linkname) if t in ("symlink", "hardlink") else None,
                        size=m.size if t == "file" else 0, mode=m.mode & 0o7777, uid=m.uid, gid=m.gid,
                        mtime=int(m.mtime), dev=(m.devmajor, m.devminor) if t in ("char", "block") else None))
    return out, ""

GNUTYPES = {"-": "file", "d": "dir", "l": "symlink", "h": "hardlink", "c": "char", "b": "block", "p": "fifo"}

def perm_bits(p):
    m = 0
    for i in range(3):
        r, w, x = p[3 * i:3 * i + 3]
        s = 6 - 3 * i
        m |= (4 << s if r == "r" else 0) | (2 << s if w == "w" else 0) | (1 << s if x in "xst" else 0)
    m |= (0o4000 if p[2] in "sS" else 0) | (0o2000 if p[5] in "sS" else 0) | (0o1000 if p[8] in "tT" else 0)
    return m

def gnu(path):
    r = subprocess.run(["tar", "--numeric-owner", "--quoting-style=literal", "-tvf", path],
                       capture_output=True, timeout=60)
    if r.returncode != 0:
        return None, "gnu tar: %s" % r.stderr.decode(errors="replace").strip()
    out = []
    for line in r.stdout.decode(errors="surrogateescape").splitlines():
        perms, owner, size, _date, _time, rest = line.split(None, 5)
        t = GNUTYPES.get(perms[0], "other:" + perms[0])
        link = None
        if t == "symlink":
            rest, link = rest.split(" -> ", 1)
        elif t == "hardlink":
            rest, link = rest.split(" link to ", 1)
            link = norm(link)
        uid, gid = owner.split("/")
        dev = tuple(int(x) for x in size.split(",")) if t in ("char", "block") else None
        out.append(dict(type=t, path=norm(rest), link=link, size=0 if dev else int(size),
                        mode=perm_bits(perms[1:10]), uid=int(uid), gid=int(gid), dev=dev))
    return out, ""

def strip(lst, keys):
    return [{k: v for k, v in e.items() if k in keys} for e in lst]

GNUKEYS = ("type", "path", "link", "size", "mode", "uid", "gid", "dev")
fails = 0
print("PLAN: %d" % (len(cases) + 1), flush=True)  # every case, then max-entries
for name, expect, data in cases:
    if isinstance(data, str):
        path = data
    else:
        path = os.path.join(CASES, name + ".tar")
        with open(path, "wb") as fh:
            fh.write(data)
    o, oerr = ours(path)
    p, perr = python(path)
    g, gerr = gnu(path)
    detail = ""
    if expect == "refuse":
        if o is not None:
            detail = "accepted, expected a refusal; we list %s" % [e["path"] for e in o]
        elif "layer 1" not in oerr:
            detail = "refused without naming the layer: %s" % oerr[-200:]
        else:
            naive = "python sees %s" % ([e["path"] for e in p] if p is not None else perr[:80])
            print("# %s: %s | %s" % (name, oerr.splitlines()[-1][:200], naive), file=sys.stderr)
    else:
        if o is None:
            detail = "refused: %s" % oerr[-240:]
        elif p is None or g is None:
            detail = "we accept what another reader rejects: %s %s" % (perr[:120], gerr[:120])
        elif o != p:
            detail = "python differs: ours %s vs %s" % (o, p)
        elif strip(o, GNUKEYS) != strip(g, GNUKEYS):
            detail = "gnu tar differs: ours %s vs %s" % (strip(o, GNUKEYS), g)
    if detail:
        fails += 1
        print("FAIL: tar-diff/%s (%s)" % (name, detail.replace("\n", " ")[:300]))
    else:
        print("PASS: tar-diff/%s" % name)

# --max-entries: a clear refusal above the limit, the same listing at it.
path = os.path.join(CASES, "hundred.tar")
with open(path, "wb") as fh:
    fh.write(b"".join(f(b"f%03d" % i) for i in range(100)) + END)
o, err = ours(path, "--max-entries", "99")
if o is None and "--max-entries" in err and "layer 1" in err and ours(path, "--max-entries", "100")[0]:
    print("PASS: tar-diff/max-entries")
else:
    print("FAIL: tar-diff/max-entries (limit 99 gave: %s)" % (err[-200:] or "accepted"))
sys.exit(0)
PY

while IFS= read -r line; do
  case "$line" in
    PASS:*|FAIL:*) emit "$line" ;;
    "PLAN: "*) plan "${line#PLAN: }" ;;
    *) printf '%s\n' "$line" ;;
  esac
done < <(python3 "$W/tardiff.py" "$BIN" "$W" "$BASE_TAR" || echo "FAIL: tar-diff/harness (python exited $?)")
suite_end

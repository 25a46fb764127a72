#!/usr/bin/env bash
# Checks an SPDX 2.3 JSON SBOM written by nemoclaw-build: validates it against the
# vendored SPDX 2.3 JSON schema (testdata/spdx-schema-2.3.json) with python3-jsonschema,
# plus the properties we promise (deterministic ids, purls, relationships).
#
#   scripts/check-sbom.sh SBOM.json [--present NAME,...] [--absent NAME,...] [--prefix P]
#
# stdout: `PLAN: N` (the number of probes), then one `PASS: name` or `FAIL: name (detail)`
# line per probe (names are `<prefix>.<probe>`, prefix default `sbom`); a summary goes to
# stderr as `# ...`. Exit 1 if any probe failed, 2 on usage errors. The SBOM must be of a
# Debian-based image: it must list deb packages.
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
export LOG_TAG=check-sbom

SCHEMA="$NEMOCLAW_ROOT/testdata/spdx-schema-2.3.json"
FILE=""
PRESENT=""
ABSENT=""
PREFIX=sbom
while (($#)); do
  case "$1" in
    --present) PRESENT="$2"; shift 2 ;;
    --absent) ABSENT="$2"; shift 2 ;;
    --prefix) PREFIX="$2"; shift 2 ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    -*) die "unknown option $1" ;;
    *) [[ -z "$FILE" ]] || die "only one SBOM file"; FILE="$1"; shift ;;
  esac
done
[[ -n "$FILE" ]] || { sed -n '2,10p' "$0" >&2; exit 2; }
[[ -f "$FILE" ]] || die "$FILE does not exist"
[[ -f "$SCHEMA" ]] || die "$SCHEMA is missing"

# A python3 that has jsonschema (Debian: python3-jsonschema).
PY=""
for cand in python3 /usr/bin/python3; do
  if command -v "$cand" >/dev/null 2>&1 && "$cand" -c 'import jsonschema' 2>/dev/null; then
    PY="$cand"; break
  fi
done
if [[ -z "$PY" ]]; then
  apt_ensure python3-jsonschema
  PY=/usr/bin/python3
  "$PY" -c 'import jsonschema' || die "python3-jsonschema is not usable"
fi

"$PY" - "$FILE" "$SCHEMA" "$PRESENT" "$ABSENT" "$PREFIX" <<'PYEOF'
import json, re, sys

path, schema_path, present, absent, prefix = sys.argv[1:6]
present = [x for x in present.split(",") if x]
absent = [x for x in absent.split(",") if x]
results = []
# 13 fixed probes, one per --present and --absent name
print(f"PLAN: {13 + len(present) + len(absent)}", flush=True)

def probe(name, ok, detail=""):
    results.append(ok)
    if ok:
        print(f"PASS: {prefix}.{name}")
    else:
        d = " ".join(str(detail).split())
        if len(d) > 300:
            d = d[:297] + "..."
        print(f"FAIL: {prefix}.{name} ({d or 'no detail'})")

raw = open(path, "rb").read()
try:
    doc = json.loads(raw)
    probe("json", True)
except Exception as e:
    probe("json", False, e)
    sys.exit(1)

import jsonschema
schema = json.load(open(schema_path, encoding="utf-8"))
cls = jsonschema.validators.validator_for(schema)
cls.check_schema(schema)
errors = sorted(cls(schema).iter_errors(doc), key=lambda e: list(e.absolute_path))
probe("schema_2_3", not errors,
      "; ".join(f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors[:3]))

probe("spdx_version", doc.get("spdxVersion") == "SPDX-2.3", doc.get("spdxVersion"))
probe("data_license", doc.get("dataLicense") == "CC0-1.0", doc.get("dataLicense"))
created = doc.get("creationInfo", {}).get("created", "")
probe("created_utc", re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", created) is not None, created)
ns = doc.get("documentNamespace", "")
probe("namespace_from_digest", re.search(r"-[0-9a-f]{64}$", ns) is not None and "#" not in ns, ns)

pkgs = doc.get("packages", [])
ids = [p.get("SPDXID") for p in pkgs]
dups = sorted({i for i in ids if ids.count(i) > 1})
probe("unique_ids", not dups, dups[:5])
bad_ids = [i for i in ids if not re.fullmatch(r"SPDXRef-[A-Za-z0-9.-]+", i or "")]
probe("id_syntax", not bad_ids, bad_ids[:5])
known = set(ids) | {"SPDXRef-DOCUMENT"}
dangling = [r for r in doc.get("relationships", [])
            if r.get("spdxElementId") not in known or r.get("relatedSpdxElement") not in known]
probe("relationships_resolve", not dangling, dangling[:2])
describes = [r for r in doc.get("relationships", [])
             if r.get("spdxElementId") == "SPDXRef-DOCUMENT" and r.get("relationshipType") == "DESCRIBES"]
probe("describes_image", len(describes) == 1, describes)

def purl(p):
    for r in p.get("externalRefs", []):
        if r.get("referenceType") == "purl":
            return r.get("referenceLocator", "")
    return ""

comps = [p for p in pkgs if p.get("SPDXID") != "SPDXRef-Image"]
no_purl = [p.get("name") for p in comps if not purl(p)]
probe("purls_present", not no_purl, no_purl[:5])
purl_re = re.compile(r"pkg:(deb|npm)/[A-Za-z0-9.%_~-]+(/[A-Za-z0-9.%_~-]+)?(@[A-Za-z0-9.%_~-]+)?(\?[A-Za-z0-9.%_~=&-]+)?")
bad_purls = [purl(p) for p in comps if purl(p) and not purl_re.fullmatch(purl(p))]
probe("purl_syntax", not bad_purls, bad_purls[:5])
debs = [p for p in comps if purl(p).startswith("pkg:deb/")]
probe("deb_packages", len(debs) > 0, f"{len(debs)} deb packages (the image is Debian-based)")
names = {p.get("name") for p in comps}
for n in present:
    probe(f"present.{n}", n in names, f"{n} not in the SBOM")
for n in absent:
    probe(f"absent.{n}", n not in names, f"{n} is in the SBOM")

sys.stderr.write(f"# {sum(results)} passed, {len(results) - sum(results)} failed ({len(comps)} components)\n")
sys.exit(0 if all(results) else 1)
PYEOF

#!/usr/bin/env python3
"""Independent checks of nemoclaw-build's signatures and attestations (issue 14), for
scripts/e2e-attest.sh. Uses only third-party verifiers (cryptography, securesystemslib,
in-toto, jsonschema, cyclonedx-python-lib), never nemoclaw-build's own code.

  attest-check.py layout DIR TAG PUB WRONG_PUB SPDX_OUT   11 probe lines
  attest-check.py registry HOST:PORT REPO DIGEST PUB      2 probe lines
  attest-check.py tamper DIR                              edit the provenance envelope's payload, re-hash
  attest-check.py resubject SRC DST                       copy SRC's signature into DST, subject = DST's image

Probe commands print exactly the stated number of `PASS: name` / `FAIL: name (detail)`
lines (the PLAN contract of scripts/probe.sh) and exit 1 if any failed.
"""
import base64
import hashlib
import json
import os
import sys
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
TESTDATA = os.path.join(HERE, "..", "testdata")
SIG_TYPE = "application/vnd.dev.cosign.artifact.sig.v1+json"
DSSE = "application/vnd.dsse.envelope.v1+json"
SIMPLE = "application/vnd.dev.cosign.simplesigning.v1+json"
SIG_ANN = "dev.cosignproject.cosign/signature"
RECORD_ANN = "dev.nemoclaw.build.record"
FAILED = []


def probe(name, fn):
    try:
        detail = fn()
        print(f"PASS: {name}")
        return detail
    except Exception as e:  # each probe reports its own failure, the others still run
        d = f"{type(e).__name__}: {e}".replace("\n", " ")[:280]
        print(f"FAIL: {name} ({d})")
        FAILED.append(name)
        return None


def canonical(v):
    return json.dumps(v, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


class Layout:
    def __init__(self, d):
        self.d = d

    def blob(self, digest):
        b = open(os.path.join(self.d, "blobs", "sha256", digest.split(":", 1)[1]), "rb").read()
        assert "sha256:" + hashlib.sha256(b).hexdigest() == digest, f"blob {digest} does not match its digest"
        return b

    def put(self, b):
        d = "sha256:" + hashlib.sha256(b).hexdigest()
        open(os.path.join(self.d, "blobs", "sha256", d.split(":", 1)[1]), "wb").write(b)
        return d

    def index(self):
        return json.load(open(os.path.join(self.d, "index.json")))

    def write_index(self, idx):
        open(os.path.join(self.d, "index.json"), "w").write(json.dumps(idx))

    def image(self, tag):
        for m in self.index()["manifests"]:
            if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag:
                return m
        raise AssertionError(f"no tag {tag} in index.json")

    def referrers(self, digest):
        out = []
        for d in self.index()["manifests"]:
            if "artifactType" not in d:
                continue
            m = json.loads(self.blob(d["digest"]))
            if m.get("subject", {}).get("digest") == digest:
                out.append((d, m))
        return out


def load_pub(path):
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    return load_pem_public_key(open(path, "rb").read())


def keyid(pub):
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    return hashlib.sha256(pub.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)).hexdigest()


def ecdsa_verify(pub, sig_der, msg):
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    pub.verify(sig_der, msg, ec.ECDSA(hashes.SHA256()))


def pae(t, body):
    return b"DSSEv1 %d %s %d %s" % (len(t), t.encode(), len(body), body)


def check_cosign(pub, payload, sig_b64, digest):
    ecdsa_verify(pub, base64.b64decode(sig_b64), payload)
    p = json.loads(payload)
    assert p["critical"]["image"]["docker-manifest-digest"] == digest, "payload names another image"
    assert p["critical"]["type"] == "cosign container image signature"


def layout_cmd(d, tag, pub_path, wrong_path, spdx_out):
    lay = Layout(d)
    img = lay.image(tag)
    digest = img["digest"]
    manifest = json.loads(lay.blob(digest))
    record = json.loads(manifest["annotations"][RECORD_ANN])
    pub, wrong = load_pub(pub_path), load_pub(wrong_path)
    refs = lay.referrers(digest)
    envs = {}

    def listed():
        types = sorted(d.get("artifactType") for d, _ in refs)
        assert types == sorted([SIG_TYPE, DSSE, DSSE, DSSE]), f"referrers of {digest}: {types}"
        for d, m in refs:
            assert d["artifactType"] == m["artifactType"], "index and manifest disagree on artifactType"
            assert m["subject"]["mediaType"] == img["mediaType"] and m["subject"]["size"] == img["size"]
        for _, m in refs:
            if m["artifactType"] == DSSE:
                env = json.loads(lay.blob(m["layers"][0]["digest"]))
                st = json.loads(base64.b64decode(env["payload"]))
                envs[st["predicateType"]] = (env, st)
        assert sorted(envs) == sorted(["https://slsa.dev/provenance/v1", "https://spdx.dev/Document", "https://cyclonedx.org/bom"]), sorted(envs)
    probe("attest.layout.referrers_listed", listed)

    def cosign_sig():
        (_, m), = [(d, m) for d, m in refs if m["artifactType"] == SIG_TYPE]
        layer = m["layers"][0]
        assert layer["mediaType"] == SIMPLE
        check_cosign(pub, lay.blob(layer["digest"]), layer["annotations"][SIG_ANN], digest)
    probe("attest.cosign_signature_cryptography", cosign_sig)

    def wrong_key_fails():
        (_, m), = [(d, m) for d, m in refs if m["artifactType"] == SIG_TYPE]
        layer = m["layers"][0]
        try:
            check_cosign(wrong, lay.blob(layer["digest"]), layer["annotations"][SIG_ANN], digest)
        except Exception:
            return
        raise AssertionError("the wrong key verified the signature")
    probe("attest.cosign_wrong_key_rejected", wrong_key_fails)

    def dsse_pae():
        assert envs, "no envelopes"
        for env, _ in envs.values():
            assert env["payloadType"] == "application/vnd.in-toto+json"
            body = base64.b64decode(env["payload"])
            for s in env["signatures"]:
                ecdsa_verify(pub, base64.b64decode(s["sig"]), pae(env["payloadType"], body))
    probe("attest.dsse_pae_cryptography", dsse_pae)

    def sslib():
        from securesystemslib.dsse import Envelope
        from securesystemslib.signer import SSlibKey

        key = SSlibKey.from_crypto(pub, keyid=keyid(pub))
        assert envs, "no envelopes"
        for env, _ in envs.values():
            Envelope.from_dict(json.loads(json.dumps(env))).verify([key], 1)
    probe("attest.dsse_securesystemslib", sslib)

    def intoto():
        from in_toto.models.metadata import Envelope
        from securesystemslib.signer import SSlibKey

        key = SSlibKey.from_crypto(pub, keyid=keyid(pub))
        wkey = SSlibKey.from_crypto(wrong, keyid=keyid(pub))
        assert envs, "no envelopes"
        for env, _ in envs.values():
            e = Envelope.from_dict(json.loads(json.dumps(env)))
            e.verify([key], 1)
            try:
                Envelope.from_dict(json.loads(json.dumps(env))).verify([wkey], 1)
            except Exception:
                continue
            raise AssertionError("in-toto accepted the wrong key")
    probe("attest.dsse_in_toto", intoto)

    def statement_schema():
        import jsonschema

        schema = json.load(open(os.path.join(TESTDATA, "in-toto-statement-v1.schema.json")))
        assert envs, "no envelopes"
        for _, st in envs.values():
            jsonschema.validate(st, schema)
            assert st["subject"][0]["digest"]["sha256"] == digest.split(":", 1)[1], "subject is not the image"
    probe("attest.statement_schema_and_subject", statement_schema)

    def slsa_schema():
        import jsonschema

        schema = json.load(open(os.path.join(TESTDATA, "slsa-provenance-v1.schema.json")))
        jsonschema.validate(envs["https://slsa.dev/provenance/v1"][1]["predicate"], schema)
    probe("attest.slsa_provenance_schema", slsa_schema)

    def matches_record():
        p = envs["https://slsa.dev/provenance/v1"][1]["predicate"]
        deps = {d["name"]: d for d in p["buildDefinition"]["resolvedDependencies"]}
        hexof = lambda s: s.split("sha256:", 1)[1]
        assert deps["base"]["digest"]["sha256"] == hexof(record["base_digest"]), "base"
        assert deps["artifacts"]["digest"]["sha256"] == hexof(record["artifacts_digest"]), "artifacts"
        assert deps["init"]["digest"]["sha256"] == hexof(record["init"]["digest"]), "init"
        assert deps["recipe"]["digest"]["sha256"] == hexof(record["recipe_digest"]), "recipe"
        ext = p["buildDefinition"]["externalParameters"]
        assert ext["purgeMode"] == record["purge_mode"] and ext["compression"] == record["compression"]
        assert ext["buildArgs"] == record["build_args"]
        assert ext["labels"] == record.get("labels", {}), "labels differ from the record"
        assert record.get("labels", {}).get("org.opencontainers.image.revision") == "e2e-rev", "label from build arg"
        epoch = record["source_date_epoch"]
        import datetime

        t = datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        assert p["runDetails"]["metadata"]["startedOn"] == t, "metadata time is not SOURCE_DATE_EPOCH"
    probe("attest.provenance_matches_build_record", matches_record)

    def spdx():
        doc = envs["https://spdx.dev/Document"][1]["predicate"]
        assert doc["spdxVersion"] == "SPDX-2.3"
        open(spdx_out, "w").write(json.dumps(doc, indent=2))
    probe("attest.spdx_predicate_extracted", spdx)

    def cyclonedx():
        from cyclonedx.schema import SchemaVersion
        from cyclonedx.validation.json import JsonStrictValidator

        doc = envs["https://cyclonedx.org/bom"][1]["predicate"]
        err = JsonStrictValidator(SchemaVersion.V1_5).validate_str(json.dumps(doc))
        assert err is None, str(err)
        assert any(c.get("purl", "").startswith("pkg:deb/") for c in doc.get("components", [])), "no deb components"
    probe("attest.cyclonedx_valid_cyclonedx_python_lib", cyclonedx)


def registry_cmd(hostport, repo, digest, pub_path):
    pub = load_pub(pub_path)
    base = f"http://{hostport}/v2/{repo}"
    accept = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json"

    def get(path, accept_hdr=None):
        req = urllib.request.Request(base + path, headers={"Accept": accept_hdr} if accept_hdr else {})
        return urllib.request.urlopen(req, timeout=60).read()

    def blob(d):
        b = get("/blobs/" + d)
        assert "sha256:" + hashlib.sha256(b).hexdigest() == d
        return b

    def sig_tag():
        m = json.loads(get("/manifests/sha256-" + digest.split(":", 1)[1] + ".sig", accept))
        layer = m["layers"][0]
        check_cosign(pub, blob(layer["digest"]), layer["annotations"][SIG_ANN], digest)
    probe("attest.registry.cosign_sig_tag_verifies", sig_tag)

    def referrers():
        idx = json.loads(get("/manifests/sha256-" + digest.split(":", 1)[1], accept))
        n = 0
        for d in idx["manifests"]:
            m = json.loads(get("/manifests/" + d["digest"], accept))
            assert m["subject"]["digest"] == digest
            if m["artifactType"] == DSSE:
                env = json.loads(blob(m["layers"][0]["digest"]))
                for s in env["signatures"]:
                    ecdsa_verify(pub, base64.b64decode(s["sig"]), pae(env["payloadType"], base64.b64decode(env["payload"])))
                n += 1
        assert n >= 1, "no DSSE attestations in the referrers tag"
    probe("attest.registry.referrers_tag_envelopes_verify", referrers)


def rewrite_manifest(lay, old_desc, new_manifest):
    """Stores new_manifest and points the index entry of old_desc at it."""
    mb = canonical(new_manifest)
    nd = lay.put(mb)
    idx = lay.index()
    for e in idx["manifests"]:
        if e["digest"] == old_desc["digest"]:
            e["digest"], e["size"] = nd, len(mb)
    lay.write_index(idx)


def tamper_cmd(d):
    lay = Layout(d)
    for desc, m in [(x, json.loads(lay.blob(x["digest"]))) for x in lay.index()["manifests"] if x.get("artifactType") == DSSE]:
        env = json.loads(lay.blob(m["layers"][0]["digest"]))
        st = json.loads(base64.b64decode(env["payload"]))
        if st["predicateType"] != "https://slsa.dev/provenance/v1":
            continue
        st["predicate"]["buildDefinition"]["externalParameters"]["buildArgs"]["INJECTED"] = "1"
        env["payload"] = base64.b64encode(canonical(st)).decode()
        eb = canonical(env)
        m["layers"][0]["digest"], m["layers"][0]["size"] = lay.put(eb), len(eb)
        rewrite_manifest(lay, desc, m)
        return
    sys.exit("no provenance envelope to tamper with")


def resubject_cmd(src, dst):
    s, t = Layout(src), Layout(dst)
    target = t.image("latest")
    desc, m = [(x, json.loads(s.blob(x["digest"]))) for x in s.index()["manifests"] if x.get("artifactType") == SIG_TYPE][0]
    for l in m["layers"] + [m["config"]]:
        t.put(s.blob(l["digest"]))
    m["subject"] = {"mediaType": target["mediaType"], "digest": target["digest"], "size": target["size"]}
    mb = canonical(m)
    idx = t.index()
    idx["manifests"] = [x for x in idx["manifests"] if x.get("artifactType") != SIG_TYPE]
    idx["manifests"].append({"mediaType": desc["mediaType"], "artifactType": SIG_TYPE, "digest": t.put(mb), "size": len(mb)})
    t.write_index(idx)


def main(argv):
    cmd = argv[1] if len(argv) > 1 else ""
    if cmd == "layout" and len(argv) == 7:
        layout_cmd(*argv[2:])
    elif cmd == "registry" and len(argv) == 6:
        registry_cmd(*argv[2:])
    elif cmd == "tamper" and len(argv) == 3:
        tamper_cmd(argv[2])
    elif cmd == "resubject" and len(argv) == 4:
        resubject_cmd(argv[2], argv[3])
    else:
        sys.exit(__doc__)
    return 1 if FAILED else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

#!/usr/bin/env python3
"""SAML 2.0 IdP test peer: IdP keys, signed SAML Responses and a battery of forgeries.

Commands (see README.md):
  forge.py keygen DIR
  forge.py response            < JSON on stdin; prints base64(Response XML)
  forge.py cases               prints "<case>\\t<accept|reject>" lines
  forge.py inspect-request SAMLREQUEST
  forge.py selftest
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import zlib
from copy import deepcopy

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from lxml import etree
from signxml import SignatureConstructionMethod, XMLSigner, XMLVerifier
from signxml.verifier import SignatureConfiguration

# --------------------------------------------------------------------------- constants

SAMLP = "urn:oasis:names:tc:SAML:2.0:protocol"
SAML = "urn:oasis:names:tc:SAML:2.0:assertion"
DS = "http://www.w3.org/2000/09/xmldsig#"
XENC = "http://www.w3.org/2001/04/xmlenc#"
XS = "http://www.w3.org/2001/XMLSchema"
XSI = "http://www.w3.org/2001/XMLSchema-instance"

EXC_C14N = "http://www.w3.org/2001/10/xml-exc-c14n#"
RSA_SHA1 = "http://www.w3.org/2000/09/xmldsig#rsa-sha1"
RSA_SHA256 = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"
RSA_SHA512 = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha512"
DIGEST_SHA1 = "http://www.w3.org/2000/09/xmldsig#sha1"
DIGEST_SHA256 = "http://www.w3.org/2001/04/xmlenc#sha256"
DIGEST_SHA512 = "http://www.w3.org/2001/04/xmlenc#sha512"

STATUS_SUCCESS = "urn:oasis:names:tc:SAML:2.0:status:Success"
STATUS_RESPONDER = "urn:oasis:names:tc:SAML:2.0:status:Responder"
STATUS_AUTHN_FAILED = "urn:oasis:names:tc:SAML:2.0:status:AuthnFailed"
NAMEID_EMAIL = "urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress"
CM_BEARER = "urn:oasis:names:tc:SAML:2.0:cm:bearer"
AC_PPT = "urn:oasis:names:tc:SAML:2.0:ac:classes:PasswordProtectedTransport"
ATTRNAME_BASIC = "urn:oasis:names:tc:SAML:2.0:attrname-format:basic"

EVIL_NAME_ID = "evil@attacker.example"
EVIL_IDP = "https://evil-idp.attacker.example/metadata"
XML_DECL = '<?xml version="1.0" encoding="UTF-8"?>'

# (name, expected verdict of a strict SP), in the order `cases` prints them.
CASES: list[tuple[str, str]] = [
    ("valid", "accept"),
    ("valid_response_signed", "accept"),
    ("valid_rsa_sha512", "accept"),
    ("unsigned", "reject"),
    ("xsw1", "reject"),
    ("xsw2", "reject"),
    ("xsw3", "reject"),
    ("xsw4", "reject"),
    ("xsw5", "reject"),
    ("xsw6", "reject"),
    ("xsw7", "reject"),
    ("xsw8", "reject"),
    ("second_unsigned_assertion", "reject"),
    ("comment_injection", "reject"),
    ("keyinfo_cert_substituted", "reject"),
    ("wrong_audience", "reject"),
    ("no_audience_restriction", "reject"),
    ("wrong_recipient", "reject"),
    ("wrong_destination", "reject"),
    ("wrong_in_response_to", "reject"),
    ("wrong_issuer", "reject"),
    ("expired", "reject"),
    ("not_yet_valid", "reject"),
    ("sha1_signature", "reject"),
    ("status_failure", "reject"),
    ("doctype_xxe", "reject"),
    ("entity_expansion", "reject"),
    ("processing_instruction", "reject"),
    ("encrypted_assertion", "reject"),
]
CASE_VERDICT = dict(CASES)


class UsageError(Exception):
    """Bad input: exit 2 with the message on stderr."""


def q(ns: str, name: str) -> str:
    return f"{{{ns}}}{name}"


def new_id() -> str:
    return "_" + secrets.token_hex(20)


def ts(t: dt.datetime) -> str:
    return t.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0)


# --------------------------------------------------------------------------- keygen


def _make_pair(cn: str) -> tuple[bytes, bytes]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=365))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return key_pem, cert.public_bytes(serialization.Encoding.PEM)


def keygen(directory: str) -> None:
    os.makedirs(directory, exist_ok=True)
    for stem in ("idp", "attacker"):
        key_pem, cert_pem = _make_pair("test-idp")
        key_path = os.path.join(directory, f"{stem}.key")
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(key_pem)
        with open(os.path.join(directory, f"{stem}.crt"), "wb") as f:
            f.write(cert_pem)


def load_pair(directory: str, stem: str) -> tuple[bytes, bytes]:
    try:
        with open(os.path.join(directory, f"{stem}.key"), "rb") as f:
            key = f.read()
        with open(os.path.join(directory, f"{stem}.crt"), "rb") as f:
            cert = f.read()
    except OSError as e:
        raise UsageError(f"cannot read {stem} key pair in {directory!r}: {e} (run `forge.py keygen DIR` first)")
    return key, cert


# --------------------------------------------------------------------------- building


def build_assertion(p: dict, now: dt.datetime, o: dict) -> etree._Element:
    """An unsigned saml:Assertion. `o` holds per-case overrides."""
    issue = o.get("issue_instant", now)
    a = etree.Element(q(SAML, "Assertion"), nsmap={"saml": SAML})
    a.set("ID", o.get("assertion_id") or new_id())
    a.set("Version", "2.0")
    a.set("IssueInstant", ts(issue))
    etree.SubElement(a, q(SAML, "Issuer")).text = o.get("assertion_issuer", p["idp_entity_id"])

    subject = etree.SubElement(a, q(SAML, "Subject"))
    nid = etree.SubElement(subject, q(SAML, "NameID"), Format=NAMEID_EMAIL)
    nid.text = o.get("name_id", p["name_id"])
    sc = etree.SubElement(subject, q(SAML, "SubjectConfirmation"), Method=CM_BEARER)
    scd = etree.SubElement(sc, q(SAML, "SubjectConfirmationData"))
    scd.set("NotOnOrAfter", ts(o.get("scd_not_on_or_after", now + dt.timedelta(minutes=5))))
    scd.set("Recipient", o.get("recipient", p["acs_url"]))
    irt = o.get("in_response_to", p.get("request_id"))
    if irt:
        scd.set("InResponseTo", irt)

    cond = etree.SubElement(a, q(SAML, "Conditions"))
    cond.set("NotBefore", ts(o.get("not_before", now - dt.timedelta(seconds=30))))
    cond.set("NotOnOrAfter", ts(o.get("not_on_or_after", now + dt.timedelta(minutes=5))))
    if o.get("audience_restriction", True):
        ar = etree.SubElement(cond, q(SAML, "AudienceRestriction"))
        etree.SubElement(ar, q(SAML, "Audience")).text = o.get("audience", p["sp_entity_id"])

    authn = etree.SubElement(a, q(SAML, "AuthnStatement"))
    authn.set("AuthnInstant", ts(issue))
    authn.set("SessionIndex", new_id())
    ctx = etree.SubElement(authn, q(SAML, "AuthnContext"))
    etree.SubElement(ctx, q(SAML, "AuthnContextClassRef")).text = AC_PPT

    attrs = o.get("attributes", p.get("attributes") or {})
    if attrs:
        st = etree.SubElement(a, q(SAML, "AttributeStatement"))
        for name, values in attrs.items():
            if isinstance(values, str):
                values = [values]
            at = etree.SubElement(st, q(SAML, "Attribute"), Name=name, NameFormat=ATTRNAME_BASIC)
            for v in values:
                av = etree.SubElement(at, q(SAML, "AttributeValue"), nsmap={"xs": XS, "xsi": XSI})
                av.set(q(XSI, "type"), "xs:string")
                av.text = str(v)
    return a


def build_response(p: dict, now: dt.datetime, o: dict | None = None) -> etree._Element:
    """An unsigned samlp:Response with one unsigned assertion."""
    o = o or {}
    issue = o.get("issue_instant", now)
    r = etree.Element(q(SAMLP, "Response"), nsmap={"samlp": SAMLP, "saml": SAML})
    r.set("ID", new_id())
    r.set("Version", "2.0")
    r.set("IssueInstant", ts(issue))
    r.set("Destination", o.get("destination", p["acs_url"]))
    irt = o.get("in_response_to", p.get("request_id"))
    if irt:
        r.set("InResponseTo", irt)
    etree.SubElement(r, q(SAML, "Issuer")).text = p["idp_entity_id"]
    status = etree.SubElement(r, q(SAMLP, "Status"))
    code = etree.SubElement(status, q(SAMLP, "StatusCode"), Value=o.get("status", STATUS_SUCCESS))
    if o.get("sub_status"):
        etree.SubElement(code, q(SAMLP, "StatusCode"), Value=o["sub_status"])
    if o.get("status_message"):
        etree.SubElement(status, q(SAMLP, "StatusMessage")).text = o["status_message"]
    r.append(build_assertion(p, now, o))
    return r


class _Signer(XMLSigner):
    # signxml refuses SHA-1 by default; the sha1_signature case needs it.
    def check_deprecated_methods(self):
        pass


def sign_element(root, target_id: str, key_pem: bytes, cert_pem: bytes,
                 sig_alg: str = RSA_SHA256, digest_alg: str = DIGEST_SHA256):
    """Enveloped signature over the element with ID=target_id, placed right after its
    saml:Issuer child. Returns the root of a NEW tree (signxml copies its input)."""
    target = find_by_id(root, target_id)
    issuer = target.find(q(SAML, "Issuer"))
    placeholder = etree.Element(q(DS, "Signature"), Id="placeholder", nsmap={"ds": DS})
    issuer.addnext(placeholder)
    signer = _Signer(
        method=SignatureConstructionMethod.enveloped,
        signature_algorithm=sig_alg,
        digest_algorithm=digest_alg,
        c14n_algorithm=EXC_C14N,
    )
    return signer.sign(root, key=key_pem, cert=cert_pem, reference_uri="#" + target_id)


def find_by_id(root, id_value: str):
    for el in root.iter():
        if isinstance(el.tag, str) and el.get("ID") == id_value:
            return el
    raise KeyError(id_value)


def assertion_of(root):
    return root.find(q(SAML, "Assertion"))


def remove(el) -> None:
    parent = el.getparent()
    parent.remove(el)


def strip_signature(el) -> None:
    sig = el.find(q(DS, "Signature"))
    if sig is not None:
        remove(sig)


def make_evil(el, name_id: str) -> None:
    """What an attacker changes: the NameID, and attribute values equal to the victim's name."""
    for nid in el.iter(q(SAML, "NameID")):
        nid.text = EVIL_NAME_ID
    for av in el.iter(q(SAML, "AttributeValue")):
        if av.text == name_id:
            av.text = EVIL_NAME_ID


def serialize(root) -> str:
    return XML_DECL + etree.tostring(root, encoding="unicode")


# --------------------------------------------------------------------------- cases


def signed_valid(p, keys, o=None, sig_alg=RSA_SHA256, digest_alg=DIGEST_SHA256, pair="idp"):
    now = utcnow()
    o = dict(o or {})
    # A fixed assertion ID from the request (replay-cache tests); fresh otherwise.
    if p.get("assertion_id"):
        o.setdefault("assertion_id", p["assertion_id"])
    r = build_response(p, now, o)
    key, cert = keys[pair]
    return sign_element(r, assertion_of(r).get("ID"), key, cert, sig_alg, digest_alg)


def response_signed_only(p, keys):
    """Response signed, assertion unsigned (the base SAML Raider's XSW1/XSW2 work on)."""
    r = build_response(p, utcnow())
    key, cert = keys["idp"]
    return sign_element(r, r.get("ID"), key, cert)


def case_xml(case: str, p: dict, keys: dict) -> str:
    now = utcnow()
    name_id = p["name_id"]

    if case == "valid":
        return serialize(signed_valid(p, keys))

    if case == "valid_response_signed":
        r = signed_valid(p, keys)
        key, cert = keys["idp"]
        return serialize(sign_element(r, r.get("ID"), key, cert))

    if case == "valid_rsa_sha512":
        return serialize(signed_valid(p, keys, sig_alg=RSA_SHA512, digest_alg=DIGEST_SHA512))

    if case == "unsigned":
        r = signed_valid(p, keys)
        strip_signature(assertion_of(r))
        return serialize(r)

    # ---- XML Signature Wrapping, as SAML Raider (helpers/XSWHelpers.java) builds them
    if case == "xsw1":
        # evil Response at the root (new ID), original signed Response moved INSIDE its Signature
        resp = response_signed_only(p, keys)
        clone = deepcopy(resp)
        strip_signature(clone)
        make_evil(resp, name_id)
        resp.find(q(DS, "Signature")).append(clone)
        resp.set("ID", "_evil" + new_id())
        return serialize(resp)

    if case == "xsw2":
        # evil Response at the root (new ID), original signed Response inserted just BEFORE its Signature
        resp = response_signed_only(p, keys)
        clone = deepcopy(resp)
        strip_signature(clone)
        make_evil(resp, name_id)
        resp.find(q(DS, "Signature")).addprevious(clone)
        resp.set("ID", "_evil" + new_id())
        return serialize(resp)

    if case == "xsw3":
        # unsigned evil Assertion (new ID) as a sibling BEFORE the signed Assertion
        r = signed_valid(p, keys)
        a = assertion_of(r)
        evil = deepcopy(a)
        make_evil(evil, name_id)
        evil.set("ID", "_evil" + new_id())
        strip_signature(evil)
        a.addprevious(evil)
        return serialize(r)

    if case == "xsw4":
        # unsigned evil Assertion (new ID) replaces the original, which becomes its last child
        r = signed_valid(p, keys)
        a = assertion_of(r)
        evil = deepcopy(a)
        make_evil(evil, name_id)
        evil.set("ID", "_evil" + new_id())
        strip_signature(evil)
        r.append(evil)
        evil.append(a)  # moves the signed assertion
        return serialize(r)

    if case == "xsw5":
        # the Assertion in place is made evil (new ID) and KEEPS the original Signature;
        # an unsigned copy of the original assertion is appended at the end of the Response
        r = signed_valid(p, keys)
        evil = assertion_of(r)
        orig = deepcopy(evil)
        make_evil(evil, name_id)
        strip_signature(orig)
        r.append(orig)
        evil.set("ID", "_evil" + new_id())
        return serialize(r)

    if case == "xsw6":
        # like xsw5, but the original copy goes INSIDE the original Signature (after KeyInfo)
        r = signed_valid(p, keys)
        evil = assertion_of(r)
        sig = evil.find(q(DS, "Signature"))
        orig = deepcopy(evil)
        make_evil(evil, name_id)
        strip_signature(orig)
        sig.append(orig)
        evil.set("ID", "_evil" + new_id())
        return serialize(r)

    if case == "xsw7":
        # samlp:Extensions holding an unsigned evil copy with the SAME ID, before the signed Assertion
        r = signed_valid(p, keys)
        a = assertion_of(r)
        ext = etree.Element(q(SAMLP, "Extensions"))
        r.find(q(SAML, "Issuer")).addnext(ext)  # the schema's place for Extensions
        evil = deepcopy(a)
        make_evil(evil, name_id)
        strip_signature(evil)
        ext.append(evil)
        return serialize(r)

    if case == "xsw8":
        # the Assertion in place is made evil (SAME ID, keeps the Signature); an unsigned copy of
        # the original goes into a ds:Object inside that Signature
        r = signed_valid(p, keys)
        evil = assertion_of(r)
        sig = evil.find(q(DS, "Signature"))
        orig = deepcopy(evil)
        make_evil(evil, name_id)
        strip_signature(orig)
        obj = etree.SubElement(sig, q(DS, "Object"))
        obj.append(orig)
        return serialize(r)

    if case == "second_unsigned_assertion":
        r = signed_valid(p, keys)
        evil = build_assertion(p, now, {})
        make_evil(evil, name_id)
        assertion_of(r).addprevious(evil)
        return serialize(r)

    if case == "comment_injection":
        longer = name_id + ".evil.example"
        attrs = {k: [longer if v == name_id else v for v in ([vs] if isinstance(vs, str) else vs)]
                 for k, vs in (p.get("attributes") or {}).items()}
        r = signed_valid(p, keys, {"name_id": longer, "attributes": attrs})
        targets = [n for n in r.iter(q(SAML, "NameID"))]
        targets += [v for v in r.iter(q(SAML, "AttributeValue")) if v.text == longer]
        for el in targets:
            el.text = name_id
            c = etree.Comment("")
            c.tail = ".evil.example"
            el.append(c)
        return serialize(r)

    if case == "keyinfo_cert_substituted":
        return serialize(signed_valid(p, keys, pair="attacker"))

    if case == "wrong_audience":
        return serialize(signed_valid(p, keys, {"audience": "https://other-sp.example/saml/metadata"}))

    if case == "no_audience_restriction":
        return serialize(signed_valid(p, keys, {"audience_restriction": False}))

    if case == "wrong_recipient":
        return serialize(signed_valid(p, keys, {"recipient": "https://other-sp.example/saml/acs"}))

    if case == "wrong_destination":
        return serialize(signed_valid(p, keys, {"destination": "https://other-sp.example/saml/acs"}))

    if case == "wrong_in_response_to":
        return serialize(signed_valid(p, keys, {"in_response_to": new_id()}))

    if case == "wrong_issuer":
        return serialize(signed_valid(p, keys, {"assertion_issuer": EVIL_IDP}))

    if case == "expired":
        issue = now - dt.timedelta(minutes=15)
        return serialize(signed_valid(p, keys, {
            "issue_instant": issue,
            "not_before": issue - dt.timedelta(seconds=30),
            "not_on_or_after": now - dt.timedelta(minutes=10),
            "scd_not_on_or_after": now - dt.timedelta(minutes=10),
        }))

    if case == "not_yet_valid":
        return serialize(signed_valid(p, keys, {
            "not_before": now + dt.timedelta(minutes=5),
            "not_on_or_after": now + dt.timedelta(minutes=10),
        }))

    if case == "sha1_signature":
        return serialize(signed_valid(p, keys, sig_alg=RSA_SHA1, digest_alg=DIGEST_SHA1))

    if case == "status_failure":
        return serialize(signed_valid(p, keys, {
            "status": STATUS_RESPONDER,
            "sub_status": STATUS_AUTHN_FAILED,
            "status_message": "Authentication failed",
        }))

    if case == "doctype_xxe":
        doctype = '<!DOCTYPE samlp:Response [<!ENTITY xxe SYSTEM "file:///etc/hostname">]>'
        return _with_prolog_and_entity(signed_valid(p, keys), doctype, "&xxe;")

    if case == "entity_expansion":
        ents = ['<!ENTITY lol "lol">']
        prev = "lol"
        for i in range(1, 10):
            ents.append(f'<!ENTITY lol{i} "' + f"&{prev};" * 10 + '">')
            prev = f"lol{i}"
        doctype = "<!DOCTYPE samlp:Response [" + "".join(ents) + "]>"
        return _with_prolog_and_entity(signed_valid(p, keys), doctype, "&lol9;")

    if case == "processing_instruction":
        body = etree.tostring(signed_valid(p, keys), encoding="unicode")
        return XML_DECL + "<?evil x?>" + body

    if case == "encrypted_assertion":
        r = build_response(p, now)
        a = assertion_of(r)
        ea = etree.Element(q(SAML, "EncryptedAssertion"))
        ed = etree.SubElement(ea, q(XENC, "EncryptedData"), nsmap={"xenc": XENC},
                              Id=new_id(), Type="http://www.w3.org/2001/04/xmlenc#Element")
        etree.SubElement(ed, q(XENC, "EncryptionMethod"),
                         Algorithm="http://www.w3.org/2001/04/xmlenc#aes256-cbc")
        ki = etree.SubElement(ed, q(DS, "KeyInfo"), nsmap={"ds": DS})
        ek = etree.SubElement(ki, q(XENC, "EncryptedKey"))
        em = etree.SubElement(ek, q(XENC, "EncryptionMethod"),
                              Algorithm="http://www.w3.org/2001/04/xmlenc#rsa-oaep-mgf1p")
        etree.SubElement(em, q(DS, "DigestMethod"), Algorithm=DIGEST_SHA1)
        ekcd = etree.SubElement(ek, q(XENC, "CipherData"))
        etree.SubElement(ekcd, q(XENC, "CipherValue")).text = base64.b64encode(secrets.token_bytes(256)).decode()
        cd = etree.SubElement(ed, q(XENC, "CipherData"))
        etree.SubElement(cd, q(XENC, "CipherValue")).text = base64.b64encode(secrets.token_bytes(1024)).decode()
        a.addprevious(ea)
        remove(a)
        return serialize(r)

    raise UsageError(f"unknown case {case!r}; known cases: {', '.join(n for n, _ in CASES)}")


def _with_prolog_and_entity(root, doctype: str, entity_ref: str) -> str:
    """Signed document as text, DOCTYPE before the root, entity_ref appended to the text of the
    first saml:AttributeValue (or of the NameID when there are no attributes)."""
    body = etree.tostring(root, encoding="unicode")
    pattern = r"(<saml:AttributeValue\b[^>]*>)([^<]*)(</saml:AttributeValue>)"
    if not re.search(pattern, body):
        pattern = r"(<saml:NameID\b[^>]*>)([^<]*)(</saml:NameID>)"
    body = re.sub(pattern, lambda m: m.group(1) + m.group(2) + entity_ref + m.group(3), body, count=1)
    return XML_DECL + doctype + body


# --------------------------------------------------------------------------- commands


REQUIRED = ("dir", "case", "idp_entity_id", "sp_entity_id", "acs_url", "name_id")


def cmd_response(stdin_text: str) -> str:
    try:
        p = json.loads(stdin_text)
    except json.JSONDecodeError as e:
        raise UsageError(f"stdin is not JSON: {e}")
    if not isinstance(p, dict):
        raise UsageError("stdin must be one JSON object")
    missing = [k for k in REQUIRED if not isinstance(p.get(k), str)]
    if missing:
        raise UsageError(f"missing or non-string fields: {', '.join(missing)}")
    if p["case"] not in CASE_VERDICT:
        raise UsageError(f"unknown case {p['case']!r}; known cases: {', '.join(n for n, _ in CASES)}")
    attrs = p.get("attributes") or {}
    if not isinstance(attrs, dict) or not all(
        isinstance(v, str) or (isinstance(v, list) and all(isinstance(x, str) for x in v)) for v in attrs.values()
    ):
        raise UsageError('"attributes" must be an object of string -> [string]')
    keys = {"idp": load_pair(p["dir"], "idp"), "attacker": load_pair(p["dir"], "attacker")}
    xml = case_xml(p["case"], p, keys)
    return base64.b64encode(xml.encode("utf-8")).decode("ascii")


def _safe_parser():
    return etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False)


def cmd_inspect_request(value: str) -> dict:
    try:
        raw = base64.b64decode("".join(value.split()), validate=True)
    except Exception as e:
        raise UsageError(f"SAMLRequest is not base64: {e}")
    try:
        xml = zlib.decompress(raw, -15)
    except zlib.error:
        xml = raw  # POST binding: not deflated
    try:
        root = etree.fromstring(xml, _safe_parser())
    except etree.XMLSyntaxError as e:
        raise UsageError(f"SAMLRequest is not XML: {e}")
    if root.tag != q(SAMLP, "AuthnRequest"):
        raise UsageError(f"not a samlp:AuthnRequest but {root.tag}")
    issuer = root.find(q(SAML, "Issuer"))
    return {
        "id": root.get("ID"),
        "issuer": issuer.text.strip() if issuer is not None and issuer.text else None,
        "acs_url": root.get("AssertionConsumerServiceURL"),
        "destination": root.get("Destination"),
    }


# --------------------------------------------------------------------------- selftest


XMLSEC_ID_ATTRS = [
    "--id-attr:ID", f"{SAML}:Assertion",
    "--id-attr:ID", f"{SAMLP}:Response",
]


def xmlsec_verify(path: str, cert_path: str, node_xpath: str | None = None) -> tuple[bool, str]:
    cmd = ["xmlsec1", "--verify", "--pubkey-cert-pem", cert_path, *XMLSEC_ID_ATTRS]
    if node_xpath:
        cmd += ["--node-xpath", node_xpath]
    cmd.append(path)
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    out = (r.stdout + r.stderr).strip()
    lines = out.splitlines()
    verdict = [ln for ln in lines if ln in ("OK", "FAIL")]
    refs = [ln for ln in lines if ln.startswith("SignedInfo References")]
    summary = " ".join(verdict + refs) or (lines[-1] if lines else f"exit {r.returncode}")
    return r.returncode == 0 and verdict == ["OK"], summary


def signxml_verify(xml: bytes, cert_pem: bytes, sha1: bool = False):
    cfg = SignatureConfiguration()
    if sha1:
        from signxml import DigestAlgorithm, SignatureMethod
        cfg = SignatureConfiguration(signature_methods=frozenset(SignatureMethod),
                                     digest_algorithms=frozenset(DigestAlgorithm))
    return XMLVerifier().verify(xml, x509_cert=cert_pem.decode(), expect_config=cfg)


def signature_covers_original(root, cert_pem: bytes, expected_name: str) -> tuple[bool, str]:
    """For a wrapped document: find each ds:Signature and each element carrying the ID its
    Reference points at; put that element back together with a clean copy of the signature
    (SignedInfo, SignatureValue, KeyInfo) after its Issuer and let signxml verify it. True when
    some element verifies and signxml's signed payload names the victim, not the attacker."""
    notes = []
    for sig in root.iter(q(DS, "Signature")):
        ref = sig.find(f"{q(DS, 'SignedInfo')}/{q(DS, 'Reference')}")
        ref_id = ref.get("URI", "").lstrip("#")
        cands = [e for e in root.iter() if isinstance(e.tag, str) and e.get("ID") == ref_id]
        for i, cand in enumerate(cands):
            el = deepcopy(cand)
            for s in list(el.iter(q(DS, "Signature"))):
                if s.getparent() is not None:
                    remove(s)
            clean = deepcopy(sig)
            for child in list(clean):
                if child.tag not in (q(DS, "SignedInfo"), q(DS, "SignatureValue"), q(DS, "KeyInfo")):
                    clean.remove(child)
            el.find(q(SAML, "Issuer")).addnext(clean)
            try:
                res = signxml_verify(etree.tostring(el), cert_pem)
            except Exception as e:  # noqa: BLE001 - any failure means "this one does not verify"
                notes.append(f"#{ref_id}[{i}]: {type(e).__name__}")
                continue
            signed = res.signed_xml
            names = [n.text for n in signed.iter(q(SAML, "NameID"))]
            if signed.get("ID") == ref_id and names and all(n == expected_name for n in names):
                notes.append(f"#{ref_id}[{i}]: verifies, signed NameID {names[0]}")
                return True, "; ".join(notes)
            notes.append(f"#{ref_id}[{i}]: verifies but names {names}")
    return False, "; ".join(notes) or "no signature"


def naive_reads_evil(root) -> bool:
    """Would a naive reader (first Assertion child of the root, or first Assertion anywhere in
    document order) get the attacker's NameID?"""
    picks = [root.find(q(SAML, "Assertion")), next(root.iter(q(SAML, "Assertion")), None)]
    for a in picks:
        if a is not None:
            nid = a.find(f"{q(SAML, 'Subject')}/{q(SAML, 'NameID')}")
            if nid is not None and nid.text == EVIL_NAME_ID:
                return True
    return False


def selftest() -> int:
    if shutil.which("xmlsec1") is None:
        print("selftest: xmlsec1 not found (apt-get install xmlsec1)", file=sys.stderr)
        return 1
    passed, failed = 0, 0

    def check(name: str, ok: bool, detail: str) -> None:
        nonlocal passed, failed
        if ok:
            passed += 1
        else:
            failed += 1
        print(f"{'ok  ' if ok else 'FAIL'} {name}: {detail}")

    tmp = tempfile.mkdtemp(prefix="saml-forge-")
    try:
        keygen(tmp)
        files = sorted(os.listdir(tmp))
        check("keygen", files == ["attacker.crt", "attacker.key", "idp.crt", "idp.key"], " ".join(files))
        idp_crt = os.path.join(tmp, "idp.crt")
        keys = {"idp": load_pair(tmp, "idp"), "attacker": load_pair(tmp, "attacker")}
        cert = x509.load_pem_x509_certificate(keys["idp"][1])
        check("keygen.cert", cert.subject.rfc4514_string() == "CN=test-idp"
              and cert.public_key().key_size == 2048
              and keys["idp"][1] != keys["attacker"][1],
              f"{cert.subject.rfc4514_string()}, RSA {cert.public_key().key_size}, "
              f"{cert.not_valid_before_utc:%Y-%m-%d} .. {cert.not_valid_after_utc:%Y-%m-%d}")

        port = 18080
        p = {
            "dir": tmp, "idp_entity_id": "https://idp.example/metadata",
            "sp_entity_id": f"http://127.0.0.1:{port}/auth/acme/saml/metadata",
            "acs_url": f"http://127.0.0.1:{port}/auth/acme/saml/acs",
            "request_id": "_abc123", "name_id": "ann@acme.example",
            "attributes": {"email": ["ann@acme.example"], "groups": ["Engineering", "Admins"]},
        }

        textual = {"doctype_xxe", "entity_expansion", "processing_instruction"}
        for case, verdict in CASES:
            xml = case_xml(case, p, keys)
            path = os.path.join(tmp, f"{case}.xml")
            with open(path, "w", encoding="utf-8") as f:
                f.write(xml)

            if case in textual:
                try:
                    check_textual(check, case, xml, keys)
                except Exception as e:  # noqa: BLE001
                    check(case, False, f"{type(e).__name__}: {e}")
                continue
            try:
                root = etree.fromstring(xml.encode(), _safe_parser())
            except etree.XMLSyntaxError as e:
                check(case, False, f"does not parse: {e}")
                continue
            try:
                check_case(check, case, verdict, root, xml, path, idp_crt, keys, p)
            except Exception as e:  # noqa: BLE001 - a crash in a check is a failed check
                check(case, False, f"{type(e).__name__}: {e}")

        # IDs unique per call
        a, b = (etree.fromstring(case_xml("valid", p, keys).encode()) for _ in range(2))
        ids = [a.get("ID"), assertion_of(a).get("ID"), b.get("ID"), assertion_of(b).get("ID")]
        check("unique_ids", len(set(ids)) == 4 and all(i.startswith("_") for i in ids), " ".join(ids))

        # the CLI end to end: response, unknown case, cases, inspect-request
        me = [sys.executable, os.path.abspath(__file__)]
        r = subprocess.run(me + ["response"], input=json.dumps({**p, "case": "valid"}),
                           capture_output=True, text=True, timeout=60)
        ok = r.returncode == 0 and "\n" not in r.stdout and r.stderr == ""
        if ok:
            decoded = base64.b64decode(r.stdout.strip(), validate=True)
            cli_path = os.path.join(tmp, "cli_valid.xml")
            with open(cli_path, "wb") as f:
                f.write(decoded)
            ok, _ = xmlsec_verify(cli_path, idp_crt)
        check("cli.response", ok, f"exit {r.returncode}, {len(r.stdout.strip())} base64 chars, xmlsec1 verifies")
        r = subprocess.run(me + ["response"], input=json.dumps({**p, "case": "nope"}),
                           capture_output=True, text=True, timeout=60)
        check("cli.unknown_case", r.returncode == 2 and r.stdout == "" and "unknown case" in r.stderr,
              f"exit {r.returncode}, stderr {r.stderr.strip()[:60]!r}")
        r = subprocess.run(me + ["cases"], capture_output=True, text=True, timeout=60)
        lines = r.stdout.splitlines()
        check("cli.cases", r.returncode == 0 and lines == [f"{n}\t{v}" for n, v in CASES],
              f"{len(lines)} lines")
        authn = (
            f'<samlp:AuthnRequest xmlns:samlp="{SAMLP}" xmlns:saml="{SAML}" ID="_req42" Version="2.0" '
            f'IssueInstant="{ts(utcnow())}" Destination="https://idp.example/sso" '
            f'AssertionConsumerServiceURL="{p["acs_url"]}" '
            f'ProtocolBinding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST">'
            f'<saml:Issuer>{p["sp_entity_id"]}</saml:Issuer></samlp:AuthnRequest>'
        )
        co = zlib.compressobj(9, zlib.DEFLATED, -15)
        encoded = base64.b64encode(co.compress(authn.encode()) + co.flush()).decode()
        r = subprocess.run(me + ["inspect-request", encoded], capture_output=True, text=True, timeout=60)
        got = json.loads(r.stdout) if r.returncode == 0 else None
        want = {"id": "_req42", "issuer": p["sp_entity_id"], "acs_url": p["acs_url"],
                "destination": "https://idp.example/sso"}
        check("cli.inspect_request", got == want, r.stdout.strip() or r.stderr.strip())
        r = subprocess.run(me + ["keygen", os.path.join(tmp, "k2")], capture_output=True, text=True, timeout=60)
        check("cli.keygen", r.returncode == 0 and r.stdout == ""
              and sorted(os.listdir(os.path.join(tmp, "k2"))) == files, f"exit {r.returncode}, silent")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"{passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


def check_textual(check, case, xml, keys) -> None:
    body_start = xml.find("<samlp:Response")
    prolog = xml[:body_start]
    if case == "doctype_xxe":
        ok = ("<!DOCTYPE samlp:Response [" in prolog and '<!ENTITY xxe SYSTEM "file:///etc/hostname">' in prolog
              and re.search(r"<saml:AttributeValue\b[^>]*>[^<]*&xxe;</saml:AttributeValue>", xml) is not None)
        detail = "DOCTYPE with external entity before the root, &xxe; in an AttributeValue"
    elif case == "entity_expansion":
        ok = ("<!DOCTYPE samlp:Response [" in prolog and '<!ENTITY lol9 "' + "&lol8;" * 10 + '">' in prolog
              and "&lol9;</saml:AttributeValue>" in xml)
        detail = "billion-laughs DOCTYPE (lol..lol9, 10^9 expansions), &lol9; in an AttributeValue"
    else:
        ok = prolog == XML_DECL + "<?evil x?>"
        detail = "<?evil x?> between the XML declaration and the root"
    # the document minus its prolog additions must still be the validly signed one
    body = xml[body_start:].replace("&xxe;", "").replace("&lol9;", "")
    try:
        res = signxml_verify(body.encode(), keys["idp"][1])
        signed_ok = res.signed_xml.tag == q(SAML, "Assertion")
    except Exception as e:  # noqa: BLE001
        signed_ok, detail = False, f"{detail}; signature broken: {e}"
    check(case, ok and signed_ok, detail + "; rest of the document validly signed")


def check_case(check, case, verdict, root, xml, path, idp_crt, keys, p) -> None:
    idp_cert = keys["idp"][1]
    a = assertion_of(root)
    scd = root.find(f".//{q(SAML, 'SubjectConfirmationData')}")
    cond = root.find(f".//{q(SAML, 'Conditions')}")
    audience = root.find(f".//{q(SAML, 'Audience')}")
    n_sig = len(list(root.iter(q(DS, "Signature"))))

    def xmlsec_ok(xpath=None):
        return xmlsec_verify(path, idp_crt, xpath)

    if verdict == "accept":
        ok1, out1 = xmlsec_ok()
        details = [f"xmlsec1 (first signature): {out1}"]
        ok = ok1
        if case == "valid_response_signed":
            ok2, out2 = xmlsec_ok("/*/*[local-name()='Assertion']/*[local-name()='Signature']")
            ok = ok and ok2 and n_sig == 2 and root[1].tag == q(DS, "Signature")
            details.append(f"xmlsec1 (assertion signature): {out2}")
        if case == "valid_rsa_sha512":
            ok = ok and f'Algorithm="{RSA_SHA512}"' in xml and f'Algorithm="{DIGEST_SHA512}"' in xml
        # structure: Signature right after the assertion's Issuer, exc-c14n, KeyInfo cert
        sig = a[1]
        ok = ok and a[0].tag == q(SAML, "Issuer") and sig.tag == q(DS, "Signature")
        ok = ok and sig.find(f".//{q(DS, 'X509Certificate')}") is not None and f'Algorithm="{EXC_C14N}"' in xml
        res = signxml_verify(xml.encode(), idp_cert)
        ok = ok and res.signed_xml.find(f".//{q(SAML, 'NameID')}").text == p["name_id"]
        check(case, ok, "; ".join(details) + "; signxml verifies")
        return

    if case.startswith("xsw"):
        covered, notes = signature_covers_original(root, idp_cert, p["name_id"])
        evil = naive_reads_evil(root)
        whole, _ = xmlsec_ok()
        check(case, covered and evil,
              f"original element still verifies ({notes}); naive reader sees {EVIL_NAME_ID}: {evil}; "
              f"[info] xmlsec1 on the whole document: {'verifies' if whole else 'fails'}")
        return

    if case == "unsigned":
        check(case, n_sig == 0 and a is not None, "no ds:Signature anywhere")
        return

    if case == "keyinfo_cert_substituted":
        ok_idp, _ = xmlsec_ok()
        try:
            signxml_verify(xml.encode(), idp_cert)
            sx_idp = True
        except Exception:  # noqa: BLE001
            sx_idp = False
        att = keys["attacker"][1]
        res = signxml_verify(xml.encode(), att)  # it IS a good signature by the attacker key
        kinfo = root.find(f".//{q(DS, 'X509Certificate')}").text.replace("\n", "")
        att_b64 = "".join(att.decode().strip().splitlines()[1:-1])
        check(case, not ok_idp and not sx_idp and res is not None and kinfo == att_b64,
              "does NOT verify against idp.crt (xmlsec1, signxml); verifies against attacker.crt; "
              "KeyInfo carries attacker.crt")
        return

    if case == "comment_injection":
        ok_x, out = xmlsec_ok()
        res = signxml_verify(xml.encode(), idp_cert)
        signed_name = res.signed_xml.find(f".//{q(SAML, 'NameID')}").text
        nid = a.find(f"{q(SAML, 'Subject')}/{q(SAML, 'NameID')}")
        first_text = nid.text
        ok = ok_x and signed_name == p["name_id"] + ".evil.example" and first_text == p["name_id"]
        ok = ok and f"{p['name_id']}<!---->.evil.example</saml:NameID>" in xml
        check(case, ok, f"xmlsec1: {out}; signed NameID {signed_name!r}; first text node {first_text!r}")
        return

    if case == "encrypted_assertion":
        ea = root.find(q(SAML, "EncryptedAssertion"))
        ok = a is None and ea is not None and ea.find(f"{q(XENC, 'EncryptedData')}/{q(XENC, 'CipherData')}") is not None
        check(case, ok, "saml:EncryptedAssertion/xenc:EncryptedData skeleton, no saml:Assertion")
        return

    # the remaining cases are a validly signed assertion with exactly one thing wrong
    ok_x, out = xmlsec_ok()
    now = utcnow()

    def t(s):
        return dt.datetime.strptime(s, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.timezone.utc)

    specific = {
        "second_unsigned_assertion": lambda: len(root.findall(q(SAML, "Assertion"))) == 2
        and root.findall(q(SAML, "Assertion"))[0].find(q(DS, "Signature")) is None
        and naive_reads_evil(root) and root.findall(q(SAML, "Assertion"))[1].find(q(DS, "Signature")) is not None,
        "wrong_audience": lambda: audience.text != p["sp_entity_id"],
        "no_audience_restriction": lambda: audience is None and cond.find(q(SAML, "AudienceRestriction")) is None,
        "wrong_recipient": lambda: scd.get("Recipient") != p["acs_url"] and root.get("Destination") == p["acs_url"],
        "wrong_destination": lambda: root.get("Destination") != p["acs_url"] and scd.get("Recipient") == p["acs_url"],
        "wrong_in_response_to": lambda: root.get("InResponseTo") != p["request_id"]
        and scd.get("InResponseTo") == root.get("InResponseTo"),
        "wrong_issuer": lambda: a.find(q(SAML, "Issuer")).text == EVIL_IDP
        and root.find(q(SAML, "Issuer")).text == p["idp_entity_id"],
        "expired": lambda: t(cond.get("NotOnOrAfter")) <= now - dt.timedelta(minutes=9)
        and t(scd.get("NotOnOrAfter")) <= now - dt.timedelta(minutes=9)
        and t(a.get("IssueInstant")) <= now - dt.timedelta(minutes=14),
        "not_yet_valid": lambda: t(cond.get("NotBefore")) >= now + dt.timedelta(minutes=4),
        "sha1_signature": lambda: f'Algorithm="{RSA_SHA1}"' in xml and f'Algorithm="{DIGEST_SHA1}"' in xml,
        "status_failure": lambda: root.find(f"{q(SAMLP, 'Status')}/{q(SAMLP, 'StatusCode')}").get("Value")
        == STATUS_RESPONDER,
    }
    ok = specific[case]()
    try:
        res = signxml_verify(xml.encode(), idp_cert, sha1=(case == "sha1_signature"))
        sx = res.signed_xml.tag == q(SAML, "Assertion")
    except Exception as e:  # noqa: BLE001
        sx, out = False, f"{out}; signxml: {e}"
    check(case, ok and ok_x and sx, f"the one defect is present; assertion signature still valid (xmlsec1: {out})")


# --------------------------------------------------------------------------- main


USAGE = """usage:
  forge.py keygen DIR
  forge.py response < {"dir":..., "case":..., "idp_entity_id":..., "sp_entity_id":..., "acs_url":...,
                       "request_id":..., "name_id":..., "attributes": {"name": ["value", ...]}}
  forge.py cases
  forge.py inspect-request SAMLREQUEST
  forge.py selftest"""


def main(argv: list[str]) -> int:
    if not argv:
        print(USAGE, file=sys.stderr)
        return 2
    cmd, args = argv[0], argv[1:]
    try:
        if cmd == "keygen" and len(args) == 1:
            keygen(args[0])
            return 0
        if cmd == "response" and not args:
            sys.stdout.write(cmd_response(sys.stdin.read()))  # no trailing newline
            return 0
        if cmd == "cases" and not args:
            for name, verdict in CASES:
                print(f"{name}\t{verdict}")
            return 0
        if cmd == "inspect-request" and len(args) == 1:
            print(json.dumps(cmd_inspect_request(args[0])))
            return 0
        if cmd == "selftest" and not args:
            return selftest()
    except UsageError as e:
        print(f"forge.py: {e}", file=sys.stderr)
        return 2
    print(USAGE, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

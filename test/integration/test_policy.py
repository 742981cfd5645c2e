# SPDX-License-Identifier: BSD-3-Clause
"""Who may do what (issue 6): clients named in the config by certificate (a name
of a CA-issued certificate, or a pinned SubjectPublicKeyInfo) or by KMIP
credential, each in a namespace whose tag begins the CKA_ID of every key it makes.
Over real TLS, on a SoftHSM token of the test's own: one namespace's keys do not
exist for another; operations the policy refuses (operations, read_only,
algorithms) get Permission Denied and an audit record; keys made outside the
relay are seen only by clients with untagged_keys, or by the namespace the
"namespaces" section puts them in; unknown clients and wrong passwords get
Authentication Not Successful after a delay; the PIN and passwords stay out of the
log; and README's example configs pass --check-config."""

import glob
import hashlib
import json
import os
import re
import shutil
import ssl
import subprocess
import time
import unittest

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from relaytest import (ACTIVE, ALG_AES, ALG_EC, ALG_ECDSA, ALG_ED25519, ALG_HMAC_SHA256, ALG_RSA,
                       AUTHENTICATION_NOT_SUCCESSFUL, BYTES, CESSATION_OF_OPERATION, CURVE_P256,
                       CURVE_P384, ENUM, FAILED, FMT_RAW, INTEGER, ITEM_NOT_FOUND, OBJ_SYMMETRIC_KEY,
                       OP_ACTIVATE, OP_ADD_ATTRIBUTE, OP_CHECK, OP_CREATE, OP_CREATE_KEY_PAIR,
                       OP_DELETE_ATTRIBUTE, OP_DESTROY, OP_GET,
                       OP_GET_ATTRIBUTE_LIST, OP_GET_ATTRIBUTES, OP_LOCATE, OP_MODIFY_ATTRIBUTE,
                       OP_QUERY, OP_REGISTER, OP_REVOKE, OP_SIGN, OP_SIGNATURE_VERIFY, PERMISSION_DENIED,
                       PKI, PRE_ACTIVE, RELAY, SOFTHSM_MODULE, SRCDIR, STRUCTURE, T, TEXT,
                       KmipClient, RelayTestCase, Token, attr, attribute_refs, container, create_payload,
                       find, item, key_material, name_attr, name_value, pair_payload, returned_attributes,
                       request, revoke_payload, sign_payload, spki_sha256, uid_item, V1, V2)

# KMIP 2.x names an unknown Unique Identifier Object Not Found (2.1 section 6.1.19.1);
# 1.x has only Item Not Found.
OBJECT_NOT_FOUND = 0x37


def not_found(version):
    return ITEM_NOT_FOUND if version[0] < 2 else OBJECT_NOT_FOUND

TOKEN_LABEL = "policy-token"
# Distinctive secrets, looked for in the log after every test.
PIN = "Hsm-7301-Qv-pin"                  # the token's PIN (pin_file, and password_is_pin)
PASSWORD_A = "cas-a-Pw-5521-zz"          # cas-a's password (password_sha256)
WRONG_PASSWORD = "Wrong-Pw-8830-kk"
WRONG_PIN = "Wrong-Pin-6612-jj"
OTHER_LABEL, OTHER_PIN = "bridge-token", "Tok2-Pin-9047-mm"
SECRETS = [PIN, PASSWORD_A, WRONG_PASSWORD, WRONG_PIN, OTHER_PIN]

# Client certificates: file name -> (CN, DNS subjectAltNames), issued by the test CA.
CA_CERTS = {
    "pol-tenant-a": ("tenant-a.example", ()),
    "pol-tenant-b": ("tenant-b.example", ()),
    "pol-auditor": ("auditor.example", ()),
    "pol-stranger": ("stranger.example", ()),
    "pol-krill-cn": ("krill.example", ()),
    "pol-krill-san": ("unrelated.example", ("other.example", "krill.example")),
}
# Self-signed: one to pin by its SPKI, one that only claims a configured name.
SELF_SIGNED = {
    "pol-pinned": ("pinned.example", ()),
    "pol-self-krill": ("krill.example", ("krill.example",)),
}

AUDIT_FIELDS = {"client", "peer", "namespace", "operation", "result", "latency_us"}
AUDIT_OPTIONAL = {"uid", "mechanism", "backend"}


def namespace_tag(name):
    """The 8-byte tag that begins the CKA_ID of a namespace's keys."""
    return hashlib.sha256(("kmip-relay namespace " + name).encode()).digest()[:8]


def sha256_hex(text):
    return hashlib.sha256(text.encode()).hexdigest()


def locate_payload(version, attrs=()):
    """Locate: 1.x attributes loose in the payload, 2.x in an Attributes structure."""
    if version[0] >= 2:
        return [item(T["Attributes"], STRUCTURE, list(attrs))]
    return list(attrs)


def attribute_payload(version, uid, name, typ, value):
    """Modify or Add Attribute: 1.x Attribute, 2.x New Attribute."""
    a = attr(version, name, typ, value)
    if version[0] >= 2:
        a = item(T["NewAttribute"], STRUCTURE, [a])
    return [uid_item(uid), a]


def delete_attribute_payload(version, uid, name):
    """Delete Attribute of a custom attribute: 1.x Attribute Name, 2.x Current Attribute."""
    if version[0] >= 2:
        return [uid_item(uid), item(0x42013C, STRUCTURE, [attr(version, name, TEXT, "x")])]
    return [uid_item(uid), item(T["AttributeName"], TEXT, name)]


def register_aes_payload(version, key, name):
    return [item(T["ObjectType"], ENUM, OBJ_SYMMETRIC_KEY),
            container(version, "template", [name_attr(version, name)]),
            item(T["SymmetricKey"], STRUCTURE, [item(T["KeyBlock"], STRUCTURE, [
                item(T["KeyFormatType"], ENUM, FMT_RAW),
                item(T["KeyValue"], STRUCTURE, [item(T["KeyMaterial"], BYTES, key)]),
                item(T["CryptographicAlgorithm"], ENUM, ALG_AES),
                item(T["CryptographicLength"], INTEGER, len(key) * 8)])])]


def verify_payload(uid, data, signature):
    return sign_payload(uid, ALG_ECDSA, data) + [item(T["SignatureData"], BYTES, signature)]


class Client(KmipClient):
    """A KmipClient whose close (or with-block's end) waits for the connection's
    summary line, written after its last audit record, so that the records of
    connections one after another are in the log in that order."""

    def __init__(self, case, sock, username=None, password=None, version=V1):
        super().__init__(sock, username, password, version)
        self.case, self.local_port = case, sock.getsockname()[1]

    def close(self):
        if self.sock.fileno() >= 0:
            self.sock.close()
            self.case.summary(self.local_port)

    def __exit__(self, *exc):
        self.close()


def token_ids(objects_text):
    """{(kind, label): hex CKA_ID} from pkcs11-tool --list-objects output."""
    out, kind, label = {}, None, None
    for line in objects_text.splitlines():
        if line and not line.startswith(" "):
            kind, label = line.split(" Object")[0], None
        elif line.strip().startswith("label:"):
            label = line.split(":", 1)[1].strip().strip("'")
        elif line.strip().startswith("ID:") and label is not None:
            out[(kind, label)] = line.split(":", 1)[1].strip().lower()
    return out


class PolicyTestCase(RelayTestCase):
    """A token of its own with a distinctive PIN, the client certificates above, and
    relays whose config has a "clients" section. After each test, the log must hold
    none of the PINs and passwords used."""

    def setUp(self):
        super().setUp()
        self.token = Token(os.path.join(self.tmp, "hsm"), label=TOKEN_LABEL, pin=PIN)
        for name, (cn, dns) in CA_CERTS.items():
            if not os.path.exists(os.path.join(self.pki.dir, name + ".pem")):
                self.pki.issue(name, cn, dns_names=dns)
        for name, (cn, dns) in SELF_SIGNED.items():
            if not os.path.exists(os.path.join(self.pki.dir, name + ".pem")):
                self.pki.self_signed(name, cn, dns_names=dns)
        other = os.path.join(self.pki.dir, "other-ca")
        if not os.path.exists(os.path.join(other, "pol-outsider.pem")):
            # Another CA's certificate for a name the config trusts.
            PKI(other).issue("pol-outsider", "tenant-a.example")
        self.outsider = (os.path.join(other, "pol-outsider.pem"), os.path.join(other, "pol-outsider.key"))
        self.local_ports = []

    def tearDown(self):
        text = ""
        if os.path.exists(self.log):
            with open(self.log, errors="replace") as f:
                text = f.read()
        super().tearDown()
        for secret in SECRETS:
            for form in (secret, secret.encode().hex(), secret.encode().hex().upper()):
                self.assertNotIn(form, text, "a PIN or password in the log")

    def cert(self, name):
        if name == "pol-outsider":
            return self.outsider
        return os.path.join(self.pki.dir, name + ".pem"), os.path.join(self.pki.dir, name + ".key")

    def spki(self, name):
        return spki_sha256(self.cert(name)[0])

    def relay(self, clients, namespaces=None, tls=None, pkcs11=None, **sections):
        """Serves a config with these clients on this test's token; certificate-less
        clients are allowed unless tls says otherwise. Returns the port."""
        tls_section = {"require_client_certificate": False}
        tls_section.update(tls or {})
        sections.update(clients=clients, tls=tls_section)
        if namespaces is not None:
            sections["namespaces"] = namespaces
        return self.start(self.softhsm_config(self.token, pkcs11, **sections))

    def as_cert(self, port, name, version=V1):
        """A KmipClient with the client certificate of that name."""
        pem, key = self.cert(name)
        c = Client(self, self.connect(port, self.tls_context(certfile=pem, keyfile=key)), version=version)
        self.local_ports.append(c.local_port)
        return c

    def as_user(self, port, username, password, version=V1):
        """A KmipClient without a certificate, with a Username and Password."""
        c = Client(self, self.connect(port, self.tls_context(cert=False)), username, password, version)
        self.local_ports.append(c.local_port)
        return c

    def records(self):
        """The audit records, once every connection made so far has its summary."""
        for port in self.local_ports:
            self.summary(port)
        return self.audit_records()

    def check_record_fields(self, records):
        for r in records:
            self.assertEqual(set(r) - AUDIT_OPTIONAL, AUDIT_FIELDS, r)
            self.assertIsInstance(r["latency_us"], int)

    def assert_denied(self, c, op, payload, version=None):
        """The request gets Permission Denied with a "policy:" Result Message."""
        bi = c.call(op, payload, version)
        self.assertEqual((bi[T["ResultStatus"]], bi.get(T["ResultReason"])), (FAILED, PERMISSION_DENIED),
                         bi.get(T["ResultMessage"]))
        self.assertRegex(bi.get(T["ResultMessage"], ""), r"\Apolicy:")
        self.assertNotIn(T["ResponsePayload"], bi)

    def create_aes(self, c, name, version=V1, length=256):
        return find(c.ok(OP_CREATE, create_payload(version, length=length, name=name), version),
                    T["UniqueIdentifier"])[0]

    def create_pair(self, c, name, version=V1, algorithm=ALG_EC, length=None, curve=CURVE_P256):
        payload = c.ok(OP_CREATE_KEY_PAIR, pair_payload(version, algorithm, length, curve, name + "-priv",
                                                        name + "-pub"), version)
        return (find(payload, T["PrivateKeyUniqueIdentifier"])[0],
                find(payload, T["PublicKeyUniqueIdentifier"])[0])

    def locate(self, c, version=V1, attrs=()):
        return find(c.ok(OP_LOCATE, locate_payload(version, attrs), version), T["UniqueIdentifier"])

    def state(self, c, uid, version=V1):
        return returned_attributes(c.ok(OP_GET_ATTRIBUTES, [uid_item(uid)] + attribute_refs(version, ["State"]),
                                        version), version)["State"]

    def sign_and_check(self, c, priv, pub_der_or_uid, version=V1):
        """Signs with priv and checks the signature against the public key (a DER
        file, or the public half's UID, read with Get)."""
        data = os.urandom(64)
        sig = find(c.ok(OP_SIGN, sign_payload(priv, ALG_ECDSA, data), version), T["SignatureData"])[0]
        if os.path.exists(pub_der_or_uid):
            with open(pub_der_or_uid, "rb") as f:
                spki = f.read()
        else:
            _, spki = key_material(c.ok(OP_GET, [uid_item(pub_der_or_uid)], version))
        serialization.load_der_public_key(spki).verify(sig, data, ec.ECDSA(hashes.SHA256()))
        return sig

    def auth_fails(self, connect, op=OP_LOCATE, payload=()):
        """Connects with connect() and sends one request; asserts it gets
        Authentication Not Successful no sooner than about a second after the
        connection began, and that the relay then closed the connection. Returns
        the client."""
        start = time.monotonic()
        c = connect()
        bi = c.call(op, list(payload))
        elapsed = time.monotonic() - start
        self.assertEqual((bi[T["ResultStatus"]], bi.get(T["ResultReason"])), (FAILED, AUTHENTICATION_NOT_SUCCESSFUL),
                         bi.get(T["ResultMessage"]))
        self.assertNotIn(T["ResponsePayload"], bi)
        self.assertGreaterEqual(elapsed, 0.8, "the refusal is delayed")
        self.assertLess(elapsed, 10)
        self.assertTrue(c.is_closed(), "the refusal ends the connection")
        return c

    def auth_failure_lines(self, count):
        """The log's "authentication failed:" lines, once there are at least count."""
        lines = self.log_lines(wait_for="]: authentication failed:", count=count)
        found = [l for l in lines if l.partition("]: ")[2].startswith("authentication failed:")]
        self.assertGreaterEqual(len(found), count, "an authentication failed: line for each refusal")
        return found


class IsolationTest(PolicyTestCase):
    """One namespace's keys do not exist for another client: every operation on them
    gets Item Not Found, answered as for a key that does not exist, and Locate does
    not list them."""

    def requests(self, version, uid):
        """Every operation on an object, with a valid payload; refusals that change
        nothing first."""
        data = b"not yours"
        return [
            ("Get", OP_GET, [uid_item(uid)]),
            ("Get Attributes", OP_GET_ATTRIBUTES, [uid_item(uid)]),
            ("Get Attribute List", OP_GET_ATTRIBUTE_LIST, [uid_item(uid)]),
            ("Check", OP_CHECK, [uid_item(uid)]),
            ("Sign", OP_SIGN, sign_payload(uid, ALG_ECDSA, data)),
            ("Signature Verify", OP_SIGNATURE_VERIFY, verify_payload(uid, data, b"\x30\x06\x02\x01\x01\x02\x01\x01")),
            ("Modify Attribute", OP_MODIFY_ATTRIBUTE,
             attribute_payload(version, uid, "Name", STRUCTURE, name_value("hijacked"))),
            ("Add Attribute", OP_ADD_ATTRIBUTE, attribute_payload(version, uid, "x-intruder", TEXT, "was here")),
            ("Delete Attribute", OP_DELETE_ATTRIBUTE, delete_attribute_payload(version, uid, "x-owner")),
            ("Activate", OP_ACTIVATE, [uid_item(uid)]),
            ("Revoke", OP_REVOKE, revoke_payload(uid, CESSATION_OF_OPERATION)),
            ("Destroy", OP_DESTROY, [uid_item(uid)]),
        ]

    def check_isolation(self, owner, intruder, owner_id, intruder_id):
        """owner and intruder make KmipClients (given a version); *_id are the
        (client name, namespace) their audit records carry."""
        with owner(V1) as a:
            priv, pub = self.create_pair(a, "owned")
            a.ok(OP_ACTIVATE, [uid_item(priv)])
            aes = self.create_aes(a, "owned-aes")
            for uid in (priv, pub, aes):
                a.ok(OP_ADD_ATTRIBUTE, attribute_payload(V1, uid, "x-owner", TEXT, owner_id[0]))
        tag = namespace_tag(owner_id[1]).hex().upper()
        refused = 0
        with intruder(V1) as b:
            own = self.create_aes(b, "intruder-aes")
            for version in (V1, V2):
                for uid in (priv, pub, aes, priv[:64]):
                    # A key of the same namespace and kind that does not exist.
                    absent = tag + "00" * 24 + uid[64:]
                    reference = {name: payload for name, _, payload in self.requests(version, absent)}
                    for name, op, payload in self.requests(version, uid):
                        with self.subTest(version=version, uid=uid, operation=name):
                            bi = b.call(op, payload, version)
                            self.assertEqual((bi[T["ResultStatus"]], bi.get(T["ResultReason"])),
                                             (FAILED, not_found(version)), bi.get(T["ResultMessage"]))
                            refused += 1
                            # Answered exactly as for a key that does not exist.
                            ref = b.call(op, reference[name], version)
                            self.assertEqual(
                                (ref[T["ResultStatus"]], ref.get(T["ResultReason"]),
                                 ref.get(T["ResultMessage"], "").replace(absent, "<uid>")),
                                (bi[T["ResultStatus"]], bi.get(T["ResultReason"]),
                                 bi.get(T["ResultMessage"], "").replace(uid, "<uid>")))
                            refused += 1
                self.assertEqual(self.locate(b, version), [own])
                for name in ("owned-priv", "owned-pub", "owned-aes"):
                    self.assertEqual(self.locate(b, version, [name_attr(version, name)]), [])
        # Nothing changed for the owner, who does not see the intruder's key either.
        with owner(V2) as a:
            self.assertEqual(sorted(self.locate(a, V2)), sorted([priv, pub, aes]))
            self.assertEqual(self.state(a, priv, V2), [ACTIVE])
            self.assertEqual(self.state(a, pub, V2), [PRE_ACTIVE])
            for uid, name in ((priv, "owned-priv"), (pub, "owned-pub"), (aes, "owned-aes")):
                got = returned_attributes(a.ok(OP_GET_ATTRIBUTES, [uid_item(uid)], V1), V1)
                self.assertEqual(find(got["Name"][0], T["NameValue"]), [name])
                self.assertEqual(got["x-owner"], [owner_id[0]])
                self.assertNotIn("x-intruder", got)
            self.sign_and_check(a, priv, pub, V2)
            self.assertEqual(a.call(OP_GET_ATTRIBUTES, [uid_item(own)], V2)[T["ResultReason"]], OBJECT_NOT_FOUND)
        objects = self.token.objects()
        self.assertNotIn("hijacked", objects)
        records = self.records()
        self.check_record_fields(records)
        mine = [r for r in records if r["client"] == intruder_id[0]]
        self.assertEqual({r["namespace"] for r in mine}, {intruder_id[1]})
        self.assertEqual(len([r for r in mine if r["result"] == "Object Not Found"]), refused)
        self.assertEqual({r["namespace"] for r in records if r["client"] == owner_id[0]}, {owner_id[1]})
        self.assertEqual({r["client"] for r in records}, {owner_id[0], intruder_id[0]})

    def test_certificate_clients(self):
        port = self.relay([
            {"name": "tenant-a", "certificate_name": "tenant-a.example"},
            {"name": "tenant-b", "certificate_spki_sha256": self.spki("pol-tenant-b")},
        ])
        self.check_isolation(lambda v: self.as_cert(port, "pol-tenant-a", v),
                             lambda v: self.as_cert(port, "pol-tenant-b", v),
                             ("tenant-a", "tenant-a"), ("tenant-b", "tenant-b"))

    def test_credential_clients(self):
        port = self.relay([
            {"name": "cas-a", "username": "cas-a", "password_sha256": sha256_hex(PASSWORD_A)},
            {"name": "cas-b", "username": "cas-b", "password_is_pin": True, "namespace": "zone-b"},
        ])
        self.check_isolation(lambda v: self.as_user(port, "cas-b", PIN, v),
                             lambda v: self.as_user(port, "cas-a", PASSWORD_A, v),
                             ("cas-b", "zone-b"), ("cas-a", "cas-a"))

    def test_certificate_client_and_credential_client(self):
        port = self.relay([
            {"name": "tenant-a", "certificate_name": "tenant-a.example"},
            {"name": "cas-a", "username": "cas-a", "password_sha256": sha256_hex(PASSWORD_A)},
        ])
        self.check_isolation(lambda v: self.as_user(port, "cas-a", PASSWORD_A, v),
                             lambda v: self.as_cert(port, "pol-tenant-a", v),
                             ("cas-a", "cas-a"), ("tenant-a", "tenant-a"))


class NamespaceTagTest(PolicyTestCase):
    """The keys a client makes carry its namespace's tag in their CKA_ID, in the
    token itself; clients that share a namespace share its keys."""

    def test_cka_id_begins_with_the_tag(self):
        port = self.relay([
            {"name": "tenant-a", "certificate_name": "tenant-a.example"},
            {"name": "cas-a", "username": "cas-a", "password_sha256": sha256_hex(PASSWORD_A),
             "namespace": "shared"},
            {"name": "tenant-b", "certificate_name": "tenant-b.example", "namespace": "shared"},
        ])
        made = {}  # label -> (namespace, UID)
        for version in (V1, V2):
            with self.as_cert(port, "pol-tenant-a", version) as a:
                v = "-%d" % version[0]
                made["a-aes" + v] = ("tenant-a", self.create_aes(a, "a-aes" + v, version))
                priv, pub = self.create_pair(a, "a-ec" + v, version)
                made["a-ec%s-priv" % v], made["a-ec%s-pub" % v] = ("tenant-a", priv), ("tenant-a", pub)
                reg = find(a.ok(OP_REGISTER, register_aes_payload(version, os.urandom(16), "a-reg" + v), version),
                           T["UniqueIdentifier"])[0]
                made["a-reg" + v] = ("tenant-a", reg)
            with self.as_user(port, "cas-a", PASSWORD_A, version) as c:
                priv, pub = self.create_pair(c, "s-ec" + v, version)
                made["s-ec%s-priv" % v], made["s-ec%s-pub" % v] = ("shared", priv), ("shared", pub)
        for label, (ns, uid) in made.items():
            with self.subTest(label=label):
                tag = namespace_tag(ns).hex().upper()
                self.assertRegex(uid, r"\A%s[0-9A-F]{48}_(pub|priv|secret)\Z" % tag)
        ids = token_ids(self.token.objects())
        by_label = {label: cka_id for (_, label), cka_id in ids.items()}
        for label, (ns, uid) in made.items():
            with self.subTest(label=label):
                cka_id = by_label[label]
                self.assertEqual(len(cka_id), 64, "8 bytes of tag and 24 stamped bytes")
                self.assertEqual(cka_id[:16], namespace_tag(ns).hex())
                self.assertEqual(cka_id, uid[:64].lower())
        self.assertEqual(len({by_label[l][16:] for l in made if not l.endswith("-pub")}),
                         len([l for l in made if not l.endswith("-pub")]), "the 24 bytes differ")
        # tenant-b shares cas-a's namespace, not tenant-a's.
        with self.as_cert(port, "pol-tenant-b", V2) as b:
            self.assertEqual(sorted(self.locate(b, V2)),
                             sorted(uid for ns, uid in made.values() if ns == "shared"))
            shared_priv = made["s-ec-1-priv"][1]
            c_uid = made["s-ec-1-pub"][1]
            self.assertEqual(self.state(b, shared_priv, V2), [PRE_ACTIVE])
            self.assertEqual(b.call(OP_GET, [uid_item(made["a-aes-1"][1])], V2)[T["ResultReason"]],
                             OBJECT_NOT_FOUND)
            key_material(b.ok(OP_GET, [uid_item(c_uid)], V2))
        records = self.records()
        self.check_record_fields(records)
        self.assertEqual({(r["client"], r["namespace"]) for r in records},
                         {("tenant-a", "tenant-a"), ("cas-a", "shared"), ("tenant-b", "shared")})


class DeniedOperationTest(PolicyTestCase):
    """Operations outside a client's "operations" list get Permission Denied and an
    audit record naming the client, its namespace, the operation and the result."""

    def test_operation_not_in_the_list(self):
        port = self.relay([{"name": "signer", "certificate_name": "tenant-a.example", "namespace": "dns",
                            "operations": ["Create Key Pair", "Activate", "Get", "Get Attributes", "Locate",
                                           "Sign"]}])
        with self.as_cert(port, "pol-tenant-a") as c:
            priv, pub = self.create_pair(c, "limited")
            c.ok(OP_ACTIVATE, [uid_item(priv)])
            sig = self.sign_and_check(c, priv, pub)
            for version in (V1, V2):
                with self.subTest(version=version):
                    self.assert_denied(c, OP_DESTROY, [uid_item(pub)], version)
                    self.assert_denied(c, OP_REVOKE, revoke_payload(priv, CESSATION_OF_OPERATION), version)
                    self.assert_denied(c, OP_CREATE, create_payload(version), version)
                    self.assert_denied(c, OP_SIGNATURE_VERIFY, verify_payload(priv, b"x", sig), version)
                    self.assert_denied(c, OP_MODIFY_ATTRIBUTE, attribute_payload(
                        version, pub, "Name", STRUCTURE, name_value("renamed")), version)
            self.assertEqual(self.state(c, priv), [ACTIVE])
            self.assertEqual(sorted(self.locate(c)), sorted([priv, pub]))
        self.assertIn("limited-pub", self.token.objects())
        records = self.records()
        self.check_record_fields(records)
        self.assertEqual([(r["client"], r["namespace"], r["operation"], r["result"]) for r in records],
                         [("signer", "dns", op, "Success") for op in ("Create Key Pair", "Activate", "Sign", "Get")] +
                         [("signer", "dns", op, "Permission Denied") for op in (
                             "Destroy", "Revoke", "Create", "Signature Verify", "Modify Attribute")] * 2 +
                         [("signer", "dns", op, "Success") for op in ("Get Attributes", "Locate")])
        for r in records:
            if r["result"] == "Permission Denied" and "uid" in r:
                self.assertIn(r["uid"], (priv, pub))


class ReadOnlyTest(PolicyTestCase):
    """A read_only client reads and uses another client's keys in its namespace but
    changes nothing."""

    def test_read_only_client(self):
        port = self.relay([
            {"name": "tenant-a", "certificate_name": "tenant-a.example"},
            {"name": "auditor", "certificate_name": "auditor.example", "namespace": "tenant-a",
             "read_only": True},
        ])
        with self.as_cert(port, "pol-tenant-a") as a:
            priv, pub = self.create_pair(a, "watched")
            a.ok(OP_ACTIVATE, [uid_item(priv)])
            a.ok(OP_ACTIVATE, [uid_item(pub)])
            aes = self.create_aes(a, "watched-aes")
        before = self.token.objects()
        denied = []
        for version in (V1, V2):
            with self.as_cert(port, "pol-auditor", version) as r:
                # What it may do.
                self.assertEqual(sorted(self.locate(r, version)), sorted([priv, pub, aes]))
                self.assertEqual(self.locate(r, version, [name_attr(version, "watched-pub")]), [pub])
                key_material(r.ok(OP_GET, [uid_item(pub)], version))
                self.assertEqual(self.state(r, priv, version), [ACTIVE])
                r.ok(OP_GET_ATTRIBUTE_LIST, [uid_item(aes)], version)
                sig = self.sign_and_check(r, priv, pub, version)
                payload = r.ok(OP_SIGNATURE_VERIFY, verify_payload(pub, b"data", sig), version)
                self.assertEqual(len(find(payload, T["ValidityIndicator"])), 1)
                # What it may not.
                for name, op, payload in (
                        ("Create", OP_CREATE, create_payload(version, name="ro-aes")),
                        ("Create Key Pair", OP_CREATE_KEY_PAIR, pair_payload(version, ALG_EC, curve=CURVE_P256,
                                                                             private_name="ro-priv")),
                        ("Register", OP_REGISTER, register_aes_payload(version, os.urandom(32), "ro-reg")),
                        ("Activate", OP_ACTIVATE, [uid_item(aes)]),
                        ("Revoke", OP_REVOKE, revoke_payload(priv, CESSATION_OF_OPERATION)),
                        ("Destroy", OP_DESTROY, [uid_item(pub)]),
                        ("Destroy", OP_DESTROY, [uid_item(aes)]),
                        ("Modify Attribute", OP_MODIFY_ATTRIBUTE,
                         attribute_payload(version, pub, "Name", STRUCTURE, name_value("ro-renamed"))),
                        ("Add Attribute", OP_ADD_ATTRIBUTE, attribute_payload(version, pub, "x-ro", TEXT, "v"))):
                    with self.subTest(version=version, operation=name):
                        self.assert_denied(r, op, payload, version)
                        denied.append(name)
        self.assertEqual(self.token.objects(), before, "the token is as it was")
        with self.as_cert(port, "pol-tenant-a") as a:
            self.assertEqual(self.state(a, aes), [PRE_ACTIVE])
            self.assertEqual(self.state(a, priv), [ACTIVE])
        records = self.records()
        self.check_record_fields(records)
        self.assertEqual([(r["client"], r["namespace"], r["operation"]) for r in records
                          if r["result"] == "Permission Denied"],
                         [("auditor", "tenant-a", name) for name in denied])
        self.assertEqual({r["result"] for r in records if r["client"] == "auditor"}, {"Success", "Permission Denied"})


class AlgorithmPolicyTest(PolicyTestCase):
    """"algorithms" limits what a client may make: the algorithm, and its lengths."""

    def test_disallowed_algorithms_and_lengths(self):
        port = self.relay([{"name": "tenant-a", "certificate_name": "tenant-a.example",
                            "algorithms": {"RSA": [2048], "EC": [256], "ECDSA": [256], "AES": [256]}}])
        for version in (V1, V2):
            with self.as_cert(port, "pol-tenant-a", version) as c:
                for label, op, payload in (
                        ("RSA-4096", OP_CREATE_KEY_PAIR, pair_payload(version, ALG_RSA, 4096, private_name="rsa4096")),
                        ("RSA-1024", OP_CREATE_KEY_PAIR, pair_payload(version, ALG_RSA, 1024, private_name="rsa1024")),
                        ("EC P-384 by curve", OP_CREATE_KEY_PAIR,
                         pair_payload(version, ALG_EC, curve=CURVE_P384, private_name="p384")),
                        ("ECDSA 384 by length", OP_CREATE_KEY_PAIR,
                         pair_payload(version, ALG_ECDSA, 384, private_name="ecdsa384")),
                        ("Ed25519, not listed", OP_CREATE_KEY_PAIR,
                         pair_payload(version, ALG_ED25519, private_name="ed")),
                        ("AES-128", OP_CREATE, create_payload(version, length=128, name="aes128")),
                        ("HMAC-SHA256, not listed", OP_CREATE,
                         create_payload(version, ALG_HMAC_SHA256, None, name="hmac")),
                        ("Register AES-128", OP_REGISTER, register_aes_payload(version, os.urandom(16), "reg128"))):
                    with self.subTest(version=version, request=label):
                        self.assert_denied(c, op, payload, version)
                self.assertEqual(self.locate(c, version), [], "nothing was made")
        self.assertNotIn("Key Object", self.token.objects())
        with self.as_cert(port, "pol-tenant-a") as c:
            rsa = self.create_pair(c, "rsa2048", V1, ALG_RSA, 2048, None)
            ecp = self.create_pair(c, "p256", V1, ALG_EC, None, CURVE_P256)
            aes = self.create_aes(c, "aes256", V1, 256)
            reg = find(c.ok(OP_REGISTER, register_aes_payload(V1, os.urandom(32), "reg256")), T["UniqueIdentifier"])[0]
            self.assertEqual(sorted(self.locate(c)), sorted(list(rsa) + list(ecp) + [aes, reg]))
        records = self.records()
        self.check_record_fields(records)
        self.assertEqual([(r["client"], r["namespace"], r["operation"], r["result"]) for r in records
                          if r["operation"] != "Locate"],
                         ([("tenant-a", "tenant-a", "Create Key Pair", "Permission Denied")] * 5 +
                          [("tenant-a", "tenant-a", "Create", "Permission Denied")] * 2 +
                          [("tenant-a", "tenant-a", "Register", "Permission Denied")]) * 2 +
                         [("tenant-a", "tenant-a", op, "Success") for op in (
                             "Create Key Pair", "Create Key Pair", "Create", "Register")])


class UntaggedKeyTest(PolicyTestCase):
    """Keys made outside the relay (pkcs11-tool, as OpenDNSSEC would) are in no
    namespace: only clients with untagged_keys see them, unless "namespaces" puts
    one into a namespace, whose clients then see it (and no one else)."""

    UNTAGGED, PLACED = "a1b2c3d4", "0badc0de"

    def test_untagged_and_placed_keys(self):
        untagged_der = self.token.keypair("EC:prime256v1", self.UNTAGGED, "ods-untagged")
        placed_der = self.token.keypair("EC:prime256v1", self.PLACED, "ods-placed")
        port = self.relay([
            {"name": "old", "certificate_name": "tenant-a.example", "untagged_keys": True},
            {"name": "new", "certificate_name": "tenant-b.example"},
            {"name": "legacy-user", "username": "legacy", "password_sha256": sha256_hex(PASSWORD_A),
             "namespace": "legacy"},
        ], namespaces={"legacy": [self.PLACED.upper()]})
        u, p = self.UNTAGGED.upper(), self.PLACED.upper()
        untagged = [u + "_pub", u + "_priv"]
        placed = [p + "_pub", p + "_priv"]

        def invisible(c, uids, version):
            for uid in uids + [uids[0][:8]]:
                with self.subTest(uid=uid, version=version):
                    self.assertEqual(c.call(OP_GET_ATTRIBUTES, [uid_item(uid)], version).get(T["ResultReason"]),
                                     not_found(version))
                    self.assertEqual(c.call(OP_SIGN, sign_payload(uid, ALG_ECDSA, b"x"), version).get(
                        T["ResultReason"]), not_found(version))

        for version in (V1, V2):
            with self.as_cert(port, "pol-tenant-a", version) as old:
                self.assertEqual(sorted(self.locate(old, version)), sorted(untagged))
                for uid in untagged + [u]:
                    old.ok(OP_GET_ATTRIBUTES, [uid_item(uid)], version)
                self.sign_and_check(old, u + "_priv", untagged_der, version)
                invisible(old, placed, version)
            with self.as_cert(port, "pol-tenant-b", version) as new:
                self.assertEqual(self.locate(new, version), [])
                invisible(new, untagged, version)
                invisible(new, placed, version)
            with self.as_user(port, "legacy", PASSWORD_A, version) as legacy:
                self.assertEqual(sorted(self.locate(legacy, version)), sorted(placed))
                for uid in placed + [p]:
                    legacy.ok(OP_GET_ATTRIBUTES, [uid_item(uid)], version)
                self.sign_and_check(legacy, p + "_priv", placed_der, version)
                invisible(legacy, untagged, version)
        # A key that "old" makes is in its namespace, not untagged: "new" does not
        # see it, and "legacy" neither; "old" sees it beside the untagged keys.
        with self.as_cert(port, "pol-tenant-a") as old:
            made = self.create_aes(old, "old-made")
            self.assertTrue(made.startswith(namespace_tag("old").hex().upper()))
            self.assertEqual(sorted(self.locate(old)), sorted(untagged + [made]))
        with self.as_cert(port, "pol-tenant-b") as new:
            self.assertEqual(new.call(OP_GET_ATTRIBUTES, [uid_item(made)]).get(T["ResultReason"]), ITEM_NOT_FOUND)
            self.assertEqual(self.locate(new), [])
        with self.as_user(port, "legacy", PASSWORD_A) as legacy:
            self.assertEqual(legacy.call(OP_GET_ATTRIBUTES, [uid_item(made)]).get(T["ResultReason"]),
                             ITEM_NOT_FOUND)
            mine = self.create_aes(legacy, "legacy-made")
            self.assertTrue(mine.startswith(namespace_tag("legacy").hex().upper()))
            self.assertEqual(sorted(self.locate(legacy)), sorted(placed + [mine]))
        # untagged_keys does not open other namespaces.
        with self.as_cert(port, "pol-tenant-a") as old:
            self.assertEqual(old.call(OP_GET_ATTRIBUTES, [uid_item(mine)]).get(T["ResultReason"]), ITEM_NOT_FOUND)
            self.assertEqual(sorted(self.locate(old)), sorted(untagged + [made]))
        records = self.records()
        self.check_record_fields(records)
        self.assertEqual({(r["client"], r["namespace"]) for r in records},
                         {("old", "old"), ("new", "new"), ("legacy-user", "legacy")})


class AuthenticationTest(PolicyTestCase):
    def clients(self):
        return [
            {"name": "tenant-a", "certificate_name": "tenant-a.example"},
            {"name": "krill", "certificate_name": "krill.example"},
            {"name": "pinned", "certificate_spki_sha256": self.spki("pol-pinned")},
            {"name": "tenant-b-key", "certificate_spki_sha256": self.spki("pol-tenant-b")},
            {"name": "cas-a", "username": "cas-a", "password_sha256": sha256_hex(PASSWORD_A)},
            {"name": "cas-b", "username": "cas-b", "password_is_pin": True},
        ]

    def test_certificate_of_untrusted_ca_fails_the_handshake(self):
        # Neither a name the config trusts (the outsider's CN is tenant-a.example)
        # nor a self-signed certificate that claims one gets through; nor does a
        # credential sent with such a certificate.
        for required in (True, False):
            port = self.relay(self.clients(), tls={"require_client_certificate": required})
            for cert in ("pol-outsider", "pol-self-krill"):
                for version in (ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_2):
                    with self.subTest(required=required, cert=cert, version=version):
                        pem, key = self.cert(cert)
                        local = self.refused(port, self.tls_context(certfile=pem, keyfile=key,
                                                                    maximum_version=version),
                                             request(OP_QUERY, [item(T["QueryFunction"], ENUM, 1)],
                                                     username="cas-a", password=PASSWORD_A))
                        self.assertEqual(self.summary(local)["end"], "TLS handshake failed")
        self.assertEqual(self.audit_records(), [])

    def test_unnamed_certificate_is_not_authenticated(self):
        # A copy of SoftHSM under a name of its own, and the dynamic linker's record
        # of what each process loads: the unknown client never gets the module
        # loaded; a known one does (see test_lifecycle's lazy-loading test).
        module = os.path.join(self.tmp, "policy-softhsm2.so")
        shutil.copy(SOFTHSM_MODULE, module)
        debug = os.path.join(self.tmp, "ld")
        self.env.update(LD_DEBUG="files", LD_DEBUG_OUTPUT=debug)
        port = self.relay(self.clients(), pkcs11={"module": module})

        def relay_loaded_module(before):
            texts = []
            for name in sorted(set(glob.glob(debug + ".*")) - before):
                with open(name, errors="replace") as f:
                    texts.append(f.read())
            relays = [t for t in texts if "kmip-relay" in t]
            self.assertEqual(len(relays), 1, "one new relay process")
            return module in relays[0], set(glob.glob(debug + ".*"))

        self.auth_fails(lambda: self.as_cert(port, "pol-stranger")).close()
        summary = self.summary(self.local_ports[-1])
        self.assertEqual((summary["requests"], summary["end"]), ("1", "authentication failed"))
        self.auth_failure_lines(1)
        loaded, seen = relay_loaded_module(set())
        self.assertFalse(loaded, "the relay loaded the module for an unknown client")
        records = self.audit_records()
        self.assertEqual([(r["operation"], r["result"]) for r in records],
                         [("Locate", "Authentication Not Successful")])
        self.assertFalse(any(r.get("client") in ("tenant-a", "krill", "pinned") for r in records))
        # Nor does an unknown Username or a wrong password (password_sha256).
        for label, username, password in (("unknown username", "nobody", PASSWORD_A),
                                          ("wrong password", "cas-a", WRONG_PASSWORD)):
            self.auth_fails(lambda: self.as_user(port, username, password)).close()
            loaded, seen = relay_loaded_module(seen)
            self.assertFalse(loaded, "the relay loaded the module for: " + label)
        # The control: a named client's Locate loads it.
        with self.as_cert(port, "pol-tenant-a") as a:
            self.assertEqual(self.locate(a), [])
        loaded, _ = relay_loaded_module(seen)
        self.assertTrue(loaded)

    def test_credential_cannot_change_within_a_connection(self):
        port = self.relay(self.clients())
        with self.as_user(port, "cas-b", PIN) as b:
            theirs = self.create_aes(b, "cas-b-aes")
        # Another client's good credential on the same connection, or a wrong
        # password: refused, and the connection ends.
        for username, password, op, payload in (("cas-b", PIN, OP_LOCATE, []),
                                                ("cas-b", PIN, OP_GET_ATTRIBUTES, [uid_item(theirs)]),
                                                ("cas-a", WRONG_PASSWORD, OP_LOCATE, [])):
            with self.as_user(port, "cas-a", PASSWORD_A) as c:
                self.assertEqual(self.locate(c), [])
                c.username, c.password = username, password
                self.assertEqual(c.call(op, payload).get(T["ResultReason"]), AUTHENTICATION_NOT_SUCCESSFUL)
                self.assertTrue(c.is_closed())
        records = self.records()
        self.assertEqual([(r["operation"], r["result"]) for r in records], [
            ("Create", "Success"),
            ("Locate", "Success"), ("Locate", "Authentication Not Successful"),
            ("Locate", "Success"), ("Get Attributes", "Authentication Not Successful"),
            ("Locate", "Success"), ("Locate", "Authentication Not Successful")])
        self.assertEqual([records[i]["client"] for i in (0, 1, 3, 5)], ["cas-b", "cas-a", "cas-a", "cas-a"])

    def test_certificate_name_matches_cn_or_dns_san(self):
        port = self.relay(self.clients())
        with self.as_cert(port, "pol-krill-cn") as k1:
            uid = self.create_aes(k1, "krill-by-cn")
        with self.as_cert(port, "pol-krill-san", V2) as k2:
            self.assertEqual(self.locate(k2, V2), [uid])
            uid2 = self.create_aes(k2, "krill-by-san", V2)
        with self.as_cert(port, "pol-tenant-a") as a:
            self.assertEqual(self.locate(a), [])
        self.assertTrue(uid.startswith(namespace_tag("krill").hex().upper()))
        self.assertTrue(uid2.startswith(namespace_tag("krill").hex().upper()))
        records = self.records()
        self.assertEqual([(r["client"], r["namespace"], r["operation"], r["result"]) for r in records], [
            ("krill", "krill", "Create", "Success"), ("krill", "krill", "Locate", "Success"),
            ("krill", "krill", "Create", "Success"), ("tenant-a", "tenant-a", "Locate", "Success")])
        self.assertEqual(self.auth_failure_lines(0), [])

    def test_pinned_certificates(self):
        # A self-signed certificate pinned by its SPKI, and a CA-issued one pinned
        # by its SPKI instead of by name.
        port = self.relay(self.clients())
        with self.as_cert(port, "pol-pinned", V2) as p:
            uid = self.create_aes(p, "pinned-aes", V2)
            self.assertEqual(self.locate(p, V2), [uid])
        with self.as_cert(port, "pol-tenant-b") as b:
            uid_b = self.create_aes(b, "pinned-b-aes")
        self.assertEqual(self.summary(self.local_ports[0])["end"], "client closed the connection")
        self.assertTrue(uid.startswith(namespace_tag("pinned").hex().upper()))
        self.assertTrue(uid_b.startswith(namespace_tag("tenant-b-key").hex().upper()))
        records = self.records()
        self.assertEqual([(r["client"], r["namespace"], r["operation"], r["result"]) for r in records], [
            ("pinned", "pinned", "Create", "Success"), ("pinned", "pinned", "Locate", "Success"),
            ("tenant-b-key", "tenant-b-key", "Create", "Success")])

    def test_wrong_password_or_pin(self):
        port = self.relay(self.clients())
        for label, username, password in (("wrong password", "cas-a", WRONG_PASSWORD),
                                          ("wrong PIN", "cas-b", WRONG_PIN),
                                          ("unknown username", "nobody", PASSWORD_A),
                                          ("the PIN for a password_sha256 client", "cas-a", PIN)):
            with self.subTest(label):
                # The connection ends: no request that needs no token gets
                # through either.
                self.auth_fails(lambda: self.as_user(port, username, password)).close()
                self.assertEqual(self.summary(self.local_ports[-1])["end"], "authentication failed")
        self.auth_failure_lines(4)
        # No lockout: the right ones work afterwards.
        with self.as_user(port, "cas-a", PASSWORD_A) as a, self.as_user(port, "cas-b", PIN) as b:
            uid = self.create_aes(a, "after-a")
            self.assertEqual(self.locate(a), [uid])
            self.assertEqual(self.locate(b), [])
        records = self.records()
        self.assertEqual([r["result"] for r in records[:4]], ["Authentication Not Successful"] * 4)
        # (two connections at once: each one's records in order)
        self.assertEqual([(r["client"], r["namespace"], r["operation"], r["result"]) for r in records[4:]
                          if r["client"] == "cas-a"],
                         [("cas-a", "cas-a", "Create", "Success"), ("cas-a", "cas-a", "Locate", "Success")])
        self.assertEqual([(r["client"], r["namespace"], r["operation"], r["result"]) for r in records[4:]
                          if r["client"] != "cas-a"], [("cas-b", "cas-b", "Locate", "Success")])

    def test_username_is_token(self):
        # Cascade-bridge style: the Username names a token, the Password is its PIN.
        self.token.add_token(OTHER_LABEL, OTHER_PIN)
        port = self.relay([{"name": "bridge", "username_is_token": True,
                            "tokens": ["pkcs11:token=" + OTHER_LABEL, "pkcs11:token=" + TOKEN_LABEL]}])
        with self.as_user(port, OTHER_LABEL, OTHER_PIN) as c:
            priv, pub = self.create_pair(c, "bridged")
            self.assertEqual(sorted(self.locate(c)), sorted([priv, pub]))
        with self.as_user(port, TOKEN_LABEL, PIN) as c:
            self.assertEqual(self.locate(c), [], "another token")
        self.auth_fails(lambda: self.as_user(port, OTHER_LABEL, WRONG_PIN)).close()
        self.auth_fails(lambda: self.as_user(port, "no-such-token", OTHER_PIN)).close()
        self.auth_failure_lines(2)
        self.assertTrue(priv.startswith(namespace_tag("bridge").hex().upper()))
        other_env = dict(self.token.env)
        out = subprocess.run(["pkcs11-tool", "--module", SOFTHSM_MODULE, "--token-label", OTHER_LABEL, "--login",
                              "--pin", OTHER_PIN, "--list-objects"], env=other_env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, check=True, timeout=30).stdout.decode()
        self.assertEqual(token_ids(out)[("Private Key", "bridged-priv")], priv[:64].lower())
        self.assertNotIn("bridged", self.token.objects())
        records = self.records()
        self.assertEqual([(r.get("client"), r.get("namespace"), r["operation"], r["result"]) for r in records[:3]], [
            ("bridge", "bridge", "Create Key Pair", "Success"), ("bridge", "bridge", "Locate", "Success"),
            ("bridge", "bridge", "Locate", "Success")])
        self.assertEqual([r["result"] for r in records[3:]], ["Authentication Not Successful"] * 2)


class PerClientSwitchTest(PolicyTestCase):
    """destroy_revokes and extractable, per client."""

    def test_destroy_revokes_and_extractable(self):
        port = self.relay([
            {"name": "cascade", "username": "cascade", "password_is_pin": True, "destroy_revokes": True,
             "extractable": True, "namespace": "dns"},
            {"name": "strict", "username": "strict", "password_sha256": sha256_hex(PASSWORD_A), "namespace": "dns"},
        ])
        with self.as_user(port, "cascade", PIN) as c, self.as_user(port, "strict", PASSWORD_A) as s:
            p1, _ = self.create_pair(c, "zsk-1")
            p2, _ = self.create_pair(s, "zsk-2")
            for priv in (p1, p2):
                c.ok(OP_ACTIVATE, [uid_item(priv)])
            # Without the switch, an Active key is not destroyed (1.x: Permission Denied).
            self.assertEqual(s.fails(OP_DESTROY, [uid_item(p2)]), PERMISSION_DENIED)
            self.assertEqual(self.state(s, p2), [ACTIVE])
            c.ok(OP_DESTROY, [uid_item(p2)])
            self.assertEqual(self.state(s, p2), [5])  # Destroyed: KMIP keeps its attributes
            self.assertEqual(s.call(OP_GET, [uid_item(p2)]).get(T["ResultReason"]), ITEM_NOT_FOUND)
            # Extractable keys for "cascade" only.
            mine, theirs = self.create_aes(c, "x-aes"), self.create_aes(s, "s-aes")
            self.assertEqual(len(key_material(c.ok(OP_GET, [uid_item(mine)]))[1]), 32)
            self.assertEqual(c.fails(OP_GET, [uid_item(theirs)]), PERMISSION_DENIED)
        self.records()


class LogSecrecyTest(PolicyTestCase):
    def test_pin_and_passwords_are_never_logged(self):
        port = self.relay([
            {"name": "cas-a", "username": "cas-a", "password_sha256": sha256_hex(PASSWORD_A)},
            {"name": "cas-b", "username": "cas-b", "password_is_pin": True},
            {"name": "tenant-a", "certificate_name": "tenant-a.example"},
        ], log={"trace": True})
        with self.as_user(port, "cas-b", PIN, V2) as b:
            priv, pub = self.create_pair(b, "secrecy", V2)
            b.ok(OP_ACTIVATE, [uid_item(priv)], V2)
            self.sign_and_check(b, priv, pub, V2)
        with self.as_user(port, "cas-a", PASSWORD_A) as a:
            self.assertEqual(self.locate(a), [])
        self.auth_fails(lambda: self.as_user(port, "cas-b", WRONG_PIN)).close()
        self.auth_fails(lambda: self.as_user(port, "cas-a", WRONG_PASSWORD)).close()
        with self.as_cert(port, "pol-tenant-a") as t:
            self.assertEqual(self.locate(t), [])
        # First, that the log holds what it should...
        summaries = [self.summary(p) for p in self.local_ports]
        self.assertEqual([(s["requests"], s["end"]) for s in summaries],
                         [("4", "client closed the connection"), ("1", "client closed the connection"),
                          ("1", "authentication failed"), ("1", "authentication failed"),
                          ("1", "client closed the connection")])
        records = self.audit_records()
        self.assertEqual([(r.get("client"), r.get("namespace"), r["operation"], r["result"]) for r in records
                          if r["result"] != "Authentication Not Successful"], [
            ("cas-b", "cas-b", "Create Key Pair", "Success"), ("cas-b", "cas-b", "Activate", "Success"),
            ("cas-b", "cas-b", "Sign", "Success"), ("cas-b", "cas-b", "Get", "Success"),
            ("cas-a", "cas-a", "Locate", "Success"), ("tenant-a", "tenant-a", "Locate", "Success")])
        self.assertEqual(len([r for r in records if r["result"] == "Authentication Not Successful"]), 2)
        self.auth_failure_lines(2)
        with open(self.log) as f:
            text = f.read()
        self.assertIn("Password (Text String) <redacted>", text, "the trace ran")
        # ... then that no PIN or password is in it, nor in any other file the
        # relays wrote here (tearDown checks the log again after every test).
        written = [self.log] + [f for f in glob.glob(os.path.join(self.tmp, "*"))
                                if os.path.isfile(f) and os.path.basename(f).startswith(("sanitizer", "ld"))]
        for path in written:
            with open(path, errors="replace") as f:
                content = f.read()
            for secret in SECRETS:
                for form in (secret, secret.encode().hex(), secret.encode().hex().upper()):
                    self.assertNotIn(form, content, "%s in %s" % (secret, path))


class ExampleConfigTest(RelayTestCase):
    """README's example configs (Configuration, Access control), with their paths
    pointed at files made here, pass --check-config."""

    PREFIXES = ("/etc/kmip-relay/", "/var/lib/softhsm", "/var/log/", "/run/kmip-relay/")

    def examples(self):
        with open(os.path.join(SRCDIR, "README")) as f:
            lines = f.read().split("\n")
        out, name, body = {}, None, []
        for line in lines:
            m = re.match(r"\Aexample config: (\S+)\Z", line)
            if m:
                self.assertIsNone(name, "an example inside an example")
                name, body = m.group(1), []
            elif line == "end of example":
                self.assertIsNotNone(name)
                self.assertTrue(all(l == "" or l.startswith("    ") for l in body), name)
                out[name] = json.loads("\n".join(l[4:] for l in body))
                name = None
            elif name is not None:
                body.append(line)
        self.assertIsNone(name, "an example without its end")
        return out

    def files(self):
        ticket = os.path.join(self.tmp, "ticket.key")
        with open(ticket, "wb") as f:
            f.write(os.urandom(64))
        os.chmod(ticket, 0o600)
        pin = os.path.join(self.tmp, "token.pin")
        with open(pin, "w") as f:
            f.write("1234\n")
        os.chmod(pin, 0o600)
        # The credential "pin" that pin_credential names ($CREDENTIALS_DIRECTORY is
        # self.tmp in check_config).
        shutil.copy(pin, os.path.join(self.tmp, "pin"))
        return {"certificate": self.pki.server, "key": self.pki.server_key, "client_ca": self.pki.ca,
                "ticket_key": ticket, "pin_file": pin, "file": os.path.join(self.tmp, "example.log"),
                "lock_file": os.path.join(self.tmp, "example.lock")}

    def rewrite(self, value, files, key=None):
        if isinstance(value, dict):
            return {k: self.rewrite(v, files, k) for k, v in value.items()}
        if isinstance(value, list):
            return [self.rewrite(v, files, key) for v in value]
        if isinstance(value, str) and value.startswith(self.PREFIXES):
            self.assertIn(key, files, "a path under %r" % key)
            return files[key]
        return value

    def check_config(self, cfg):
        """(exit code, stdout, stderr): --check-config finds the examples' tokens
        (kmip-relay, cascade, krill, shared) in a SoftHSM configuration of the
        test's own."""
        path = os.path.join(self.tmp, "example.json")
        with open(path, "w") as f:
            json.dump(cfg, f)
        if not hasattr(self, "token"):
            self.token = Token(os.path.join(self.tmp, "softhsm"), label="kmip-relay")
            for label in ("cascade", "krill", "shared"):
                self.token.add_token(label, self.token.pin)
        env = dict(self.env, CREDENTIALS_DIRECTORY=self.tmp, SOFTHSM2_CONF=self.token.conf)
        p = subprocess.run([RELAY, "--config", path, "--check-config"], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, env=env, timeout=20, text=True)
        return p.returncode, p.stdout, p.stderr

    def assert_ok(self, result):
        """The check passed: "OK" after what it found, and no problem."""
        code, out, err = result
        self.assertEqual((code, out.splitlines()[-1:], err), (0, ["OK"], ""))

    def test_examples_pass_check_config(self):
        examples = self.examples()
        self.assertEqual(sorted(examples), ["cascade", "krill", "quickstart", "two-tenants"])
        files = self.files()
        for name, cfg in examples.items():
            with self.subTest(example=name):
                code, out, err = self.check_config(self.rewrite(cfg, files))
                self.assert_ok((code, out, err))
                label = cfg["pkcs11"]["token"].partition("=")[2]
                self.assertRegex(out, r'(?m)^token pkcs11:token=%s: "%s" \(model "SoftHSM v2", serial \w+\) in '
                                      r'slot \d+$' % (label, label))

    def test_examples_show_what_they_say(self):
        ex = self.examples()
        self.assertNotIn("clients", ex["quickstart"])  # one tenant, mutual TLS
        self.assertIn("client_ca", ex["quickstart"]["tls"])
        del ex["quickstart"]
        identities = ("certificate_spki_sha256", "certificate_name", "username", "username_is_token")
        for name, cfg in ex.items():
            for c in cfg["clients"]:
                self.assertEqual(len([k for k in identities if k in c]), 1, (name, c))
        (cascade,) = ex["cascade"]["clients"]
        self.assertTrue(cascade.get("username_is_token") or
                        ("username" in cascade and cascade.get("password_is_pin")))
        self.assertIs(cascade["destroy_revokes"], True)
        self.assertIs(ex["cascade"]["tls"]["require_client_certificate"], False)
        self.assertTrue(any("certificate_name" in c or "certificate_spki_sha256" in c
                            for c in ex["krill"]["clients"]))
        tenants = ex["two-tenants"]
        self.assertGreaterEqual(len(tenants["clients"]), 2)
        namespaces = {c.get("namespace", c["name"]) for c in tenants["clients"]}
        self.assertGreaterEqual(len(namespaces), 2)
        self.assertEqual(len({c["name"] for c in tenants["clients"]}), len(tenants["clients"]))

    def test_readme_section_lines(self):
        with open(os.path.join(SRCDIR, "README")) as f:
            text = f.read()
        head, sep, section = text.partition("\nAccess control\n--------------\n")
        self.assertTrue(sep, "README has an Access control section")
        self.assertNotIn("\n-----", section, "it is the last section")
        self.assertEqual([l for l in section.split("\n") if len(l) > 78], [])

    def test_broken_client_entries_are_reported(self):
        pin = os.path.join(self.tmp, "token.pin")
        with open(pin, "w") as f:
            f.write("1234\n")
        os.chmod(pin, 0o600)
        good = {"tls": {"certificate": self.pki.server, "key": self.pki.server_key, "client_ca": self.pki.ca},
                "pkcs11": {"module": SOFTHSM_MODULE, "token": "pkcs11:token=kmip-relay", "pin_file": pin}}
        for label, clients, namespaces in (
                ("two identities", [{"name": "x", "certificate_name": "a", "username": "b",
                                     "password_sha256": "00" * 32}], None),
                ("no identity", [{"name": "x"}], None),
                ("no name", [{"certificate_name": "a"}], None),
                ("same name twice", [{"name": "x", "certificate_name": "a"},
                                     {"name": "x", "certificate_name": "b"}], None),
                ("SPKI hash not 64 hex", [{"name": "x", "certificate_spki_sha256": "abcd"}], None),
                ("username without password", [{"name": "x", "username": "u"}], None),
                ("unknown operation", [{"name": "x", "certificate_name": "a", "operations": ["Fly"]}], None),
                ("unknown algorithm", [{"name": "x", "certificate_name": "a", "algorithms": {"ROT13": []}}], None),
                ("unknown key", [{"name": "x", "certificate_name": "a", "bogus": 1}], None),
                ("namespace id not hex", [{"name": "x", "certificate_name": "a"}], {"x": ["xyz"]})):
            with self.subTest(label):
                cfg = dict(good, clients=clients)
                if namespaces is not None:
                    cfg["namespaces"] = namespaces
                rc, out, err = self.check_config(cfg)
                self.assertEqual((rc, out), (1, ""), err)
                self.assertRegex(err, r"\A(clients|namespaces)\b.*\n\Z", "one line naming the key")
        self.assert_ok(self.check_config(dict(good, clients=[{"name": "x", "certificate_name": "a"}])))


if __name__ == "__main__":
    unittest.main(verbosity=2)

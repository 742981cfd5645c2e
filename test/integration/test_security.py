# SPDX-License-Identifier: BSD-3-Clause
"""Attacks on the gate (issue 11): each test tries what a review of the relay,
done as an attacker would, found possible, and asserts that it now fails. Over
real TLS, on SoftHSM tokens of the tests' own. The TLS checks (certificate names,
key purpose, revocation, connection timeouts), the PIN budget, the PKCS#11 call
deadline and the trace redaction have files of their own."""

import hashlib
import os
import subprocess
import textwrap
import time
import unittest

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from relaytest import (ALG_EC, ALG_RSA, ATTRIBUTE_READ_ONLY, AUTHENTICATION_NOT_SUCCESSFUL, BYTES,
                       CURVE_P256, DATETIME, DEACTIVATED, ENUM, FAILED, INCOMPATIBLE_CRYPTOGRAPHIC_USAGE_MASK,
                       INTEGER, ITEM_NOT_FOUND, OP_ACTIVATE, OP_ADD_ATTRIBUTE, OP_CHECK, OP_CREATE, OP_CREATE_KEY_PAIR,
                       OP_DELETE_ATTRIBUTE, OP_DESTROY, OP_GET, OP_GET_ATTRIBUTES, OP_LOCATE, OP_MAC,
                       OP_MODIFY_ATTRIBUTE, OP_QUERY, OP_REGISTER, OP_REVOKE, OP_SIGN, PERMISSION_DENIED,
                       PRE_ACTIVE, ACTIVE, FAULTY_P11, RELAY, SOFTHSM_MODULE, STRUCTURE, SUCCESS, TEXT,
                       WRONG_KEY_LIFECYCLE_STATE, KmipClient, T, TokenTestCase, attr,
                       batch_item, batch_items, container, crypto_parameters, exchange, failure, find, free_port,
                       item, name_attr, pair_payload, request_message, revoke_payload,
                       uid_item, V1, V2)
from test_crypto import UNIT_OBJECT, HASH_SHA256, ALG_ECDSA, aes_create, key_attr, sign_request, usage_limits
from test_policy import OBJECT_NOT_FOUND, locate_payload, namespace_tag

OBJ_PRIVATE_KEY, OBJ_PUBLIC_KEY, OBJ_SECRET_DATA = 4, 3, 7
FMT_PKCS8, FMT_X509, FMT_OPAQUE = 0x04, 0x05, 0x02
USAGE_MAC_GENERATE, USAGE_MAC_VERIFY = 0x80, 0x100
UNDO = 3  # Batch Error Continuation Option
OPERATION_UNDONE = 3  # Result Status
CESSATION_OF_OPERATION = 6
ALG_HMAC_SHA256 = 0x09
T.update({"SecretData": 0x420085, "SecretDataType": 0x420086, "MACData": 0x4200C6,
          "DigestedData": 0x420107, "RevocationReasonCode": 0x420082, "Attributes": 0x420125})
POLICY = "policy: this algorithm or length is not allowed for this client"


def v2_attributes(uid, *names):
    """A 2.1 Get Attributes payload for these attribute tags."""
    return [uid_item(uid)] + [item(T["AttributeReference"], ENUM, tag) for tag in names]


def attributes_of(c, uid, *tags):
    """{tag: [values]} of a 2.1 Get Attributes (of every attribute if no tags)."""
    payload = c.ok(OP_GET_ATTRIBUTES, v2_attributes(uid, *tags), V2)
    out = {}
    for tag, _, value in find(payload, T["Attributes"])[0]:
        out.setdefault(tag, []).append(value)
    return out


def new_attribute(a):
    """Add or Modify Attribute's 2.x container."""
    return item(T["NewAttribute"], STRUCTURE, [a])


def key_register(object_type, fmt, der, declared_bits):
    """A 2.1 Register of an RSA key (PKCS#8 private, X.509 public) that claims
    declared_bits."""
    tag = T["PrivateKey"] if object_type == OBJ_PRIVATE_KEY else T["PublicKey"]
    return [item(T["ObjectType"], ENUM, object_type),
            container(V2, "template", [attr(V2, "Cryptographic Algorithm", ENUM, ALG_RSA),
                                       attr(V2, "Cryptographic Length", INTEGER, declared_bits)]),
            item(tag, STRUCTURE, [item(T["KeyBlock"], STRUCTURE, [
                item(T["KeyFormatType"], ENUM, fmt),
                item(T["KeyValue"], STRUCTURE, [item(T["KeyMaterial"], BYTES, der)]),
                item(T["CryptographicAlgorithm"], ENUM, ALG_RSA),
                item(T["CryptographicLength"], INTEGER, declared_bits)])])]


def private_key_register(der, declared_bits):
    return key_register(OBJ_PRIVATE_KEY, FMT_PKCS8, der, declared_bits)


def public_key_register(der, declared_bits):
    return key_register(OBJ_PUBLIC_KEY, FMT_X509, der, declared_bits)


def secret_data_register(value, usage):
    return [item(T["ObjectType"], ENUM, OBJ_SECRET_DATA),
            container(V2, "template", [attr(V2, "Cryptographic Usage Mask", INTEGER, usage),
                                       name_attr(V2, "secret-data")]),
            item(T["SecretData"], STRUCTURE, [
                item(T["SecretDataType"], ENUM, 1),  # Password
                item(T["KeyBlock"], STRUCTURE, [
                    item(T["KeyFormatType"], ENUM, FMT_OPAQUE),
                    item(T["KeyValue"], STRUCTURE, [item(T["KeyMaterial"], BYTES, value)])])])]


def rsa_der(bits):
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    return (key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()),
            key.public_key().public_bytes(serialization.Encoding.DER,
                                          serialization.PublicFormat.SubjectPublicKeyInfo))


class SecurityTestCase(TokenTestCase):
    def serve_clients(self, clients, **sections):
        return self.start(self.softhsm_config(self.token, None, clients=clients, **sections))

    def limited_pair(self, c, total):
        """An active EC pair whose private key may sign total times."""
        payload = pair_payload(V2, ALG_EC, curve=CURVE_P256)
        payload[1] = container(V2, "private", [usage_limits(V2, total, UNIT_OBJECT)])
        got = c.ok(OP_CREATE_KEY_PAIR, payload, V2)
        priv, pub = find(got, T["PrivateKeyUniqueIdentifier"])[0], find(got, T["PublicKeyUniqueIdentifier"])[0]
        for uid in (priv, pub):
            c.ok(OP_ACTIVATE, [uid_item(uid)], V2)
        return priv, pub

    def usage_count(self, c, uid):
        (limits,) = attributes_of(c, uid, T["UsageLimits"])[T["UsageLimits"]]
        return find(limits, T["UsageLimitsCount"])[0]

    def token_keys(self, kind):
        """The CKA_IDs (hex) of the token's objects of one pkcs11-tool --type."""
        ids = []
        for line in self.token.objects(kind).splitlines():
            if line.strip().startswith("ID:"):
                ids.append(line.split(":", 1)[1].strip().upper())
        return ids


class UncheckedCredentialsTest(SecurityTestCase):
    """Finding 1: a client without a certificate is known by its Username and
    Password alone, so something must check them."""

    UNCHECKED = ("tls.require_client_certificate: false lets clients in without a certificate, but nothing would "
                 "check their Username and Password: add a \"clients\" entry with username and password_sha256 (or "
                 "password_is_pin, the token checking the Password as its PIN), or set "
                 "pkcs11.login_with_credentials")

    def test_refused_at_check_config_and_at_start(self):
        path = self.softhsm_config(self.token, None, tls={"require_client_certificate": False})
        p = subprocess.run([RELAY, "--check-config", "-c", path], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           env=self.env, timeout=20, text=True)
        self.assertEqual((p.returncode, p.stdout, p.stderr), (1, "", self.UNCHECKED + "\n"))
        # At start: the relay says why and never listens.
        port = free_port()
        p = subprocess.run([RELAY, "--listen", "127.0.0.1:%d" % port, "-c", path], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, env=self.env, timeout=20, text=True)
        self.assertEqual(p.returncode, 1)
        self.assertTrue([l for l in p.stderr.splitlines() if l.endswith("]: " + self.UNCHECKED)], p.stderr)
        self.assertNotIn("waiting for one connection", p.stderr)

    def test_identity_is_settled_by_the_first_request(self):
        # Two entries with passwords: a connection that authenticated as one cannot
        # switch to the other.
        port = self.serve_clients([
            {"name": "a", "username": "a", "password_sha256": hashlib.sha256(b"pw-a").hexdigest()},
            {"name": "b", "username": "b", "password_sha256": hashlib.sha256(b"pw-b").hexdigest()}],
            tls={"require_client_certificate": False})
        with self.kmip(port, cert=False) as c:
            bi = c.call(OP_QUERY, [item(T["QueryFunction"], ENUM, 3)], V1, username="a", password="pw-a")
            self.assertEqual(failure(bi), (SUCCESS, None))
            bi = c.call(OP_QUERY, [item(T["QueryFunction"], ENUM, 3)], V1, username="b", password="pw-b")
            self.assertEqual((failure(bi), bi[T["ResultMessage"]]),
                             ((FAILED, AUTHENTICATION_NOT_SUCCESSFUL), "authentication failed"))
        self.assertIn("authentication failed: user:b: the credential differs from the one that authenticated "
                      "this connection", "\n".join(self.log_lines(wait_for="credential differs")))


class TlsKeyHiddenTest(SecurityTestCase):
    """Finding 2: the relay's own TLS key in the token, and the certificate beside
    it with the same CKA_ID, exist for no client."""

    KEY_ID = "7E"

    def setUp(self):
        super().setUp()
        self.cert = self.server_cert_for(self.token, "EC:prime256v1", self.KEY_ID)
        der = os.path.join(self.tmp, "tls-cert.der")
        subprocess.run(["certtool", "--certificate-info", "--infile", self.cert, "--outder", "--outfile", der],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.token.tool("--write-object", der, "--type", "cert", "--id", self.KEY_ID, "--label", "tls-cert")

    def relay(self, clients=None):
        sections = {"tls": {"certificate": self.cert, "key": "pkcs11:id=%" + self.KEY_ID}}
        if clients is not None:
            sections["clients"] = clients
        return self.start(self.softhsm_config(self.token, None, **sections))

    def attack(self, port):
        uids = [self.KEY_ID + s for s in ("_priv", "_pub", "_cert", "")]
        with self.client(port, V2) as c:
            mine, _ = self.create_pair(c, V2)
            listed = find(c.ok(OP_LOCATE, locate_payload(V2), V2), T["UniqueIdentifier"])
            self.assertIn(mine, listed)  # Locate works, and lists no part of the TLS key
            self.assertEqual([u for u in listed if u.startswith(self.KEY_ID)], [])
            named = c.ok(OP_LOCATE, locate_payload(V2, [attr(V2, "Name", STRUCTURE,
                                                              [item(T["NameValue"], TEXT, "tls-" + self.KEY_ID),
                                                               item(T["NameType"], ENUM, 1)])]), V2)
            self.assertEqual(find(named, T["UniqueIdentifier"]), [])
            for uid in uids:
                with self.subTest(uid=uid):
                    self.assertEqual(c.fails(OP_GET_ATTRIBUTES, [uid_item(uid)], V2), OBJECT_NOT_FOUND)
                    self.assertEqual(c.fails(OP_GET, [uid_item(uid)], V2), OBJECT_NOT_FOUND)
            # A forged TLS 1.3 CertificateVerify: a Sign of a digest with the TLS key.
            digested = [uid_item(self.KEY_ID + "_priv"), crypto_parameters(None, HASH_SHA256, ALG_ECDSA),
                        item(T["DigestedData"], BYTES, hashlib.sha256(b"forged").digest())]
            self.assertEqual(c.fails(OP_SIGN, digested, V2), OBJECT_NOT_FOUND)
            self.assertEqual(c.fails(OP_REVOKE, revoke_payload(self.KEY_ID + "_priv", CESSATION_OF_OPERATION), V2),
                             OBJECT_NOT_FOUND)
            self.assertEqual(c.fails(OP_DESTROY, [uid_item(self.KEY_ID + "_cert")], V2), OBJECT_NOT_FOUND)
        # The key is untouched: still a signing key, and the next handshake works.
        self.assertIn(self.KEY_ID, self.token_keys("privkey"))
        self.assertIn(self.KEY_ID, self.token_keys("cert"))
        with self.client(port, V2) as c:
            c.ok(OP_QUERY, [item(T["QueryFunction"], ENUM, 3)], V2)

    def test_single_tenant(self):
        self.attack(self.relay())

    def test_untagged_keys(self):
        self.attack(self.relay([{"name": "all", "certificate_name": "kmip-client", "untagged_keys": True}]))


class RegisterPolicyTest(SecurityTestCase):
    """Finding 3: the algorithm and length rule judges the key as parsed, not as
    the request declares it; Secret Data never becomes a key."""

    def setUp(self):
        super().setUp()
        self.port = self.serve_clients([{"name": "rsa2048", "certificate_name": "kmip-client",
                                         "algorithms": {"RSA": [2048]}}])

    def test_rsa_1024_declared_2048_is_refused(self):
        priv1024, pub1024 = rsa_der(1024)
        priv2048, _ = rsa_der(2048)
        before = self.token_keys("privkey") + self.token_keys("pubkey")
        with self.client(self.port, V2) as c:
            bi = c.call(OP_REGISTER, private_key_register(priv1024, 2048), V2)
            self.assertEqual((failure(bi), bi[T["ResultMessage"]]), ((FAILED, PERMISSION_DENIED), POLICY))
            bi = c.call(OP_REGISTER, public_key_register(pub1024, 2048), V2)
            self.assertEqual((failure(bi), bi[T["ResultMessage"]]), ((FAILED, PERMISSION_DENIED), POLICY))
            self.assertEqual(self.token_keys("privkey") + self.token_keys("pubkey"), before)
            # A key that is what it says is registered, with its real length on record.
            uid = find(c.ok(OP_REGISTER, private_key_register(priv2048, 2048), V2), T["UniqueIdentifier"])[0]
            self.assertEqual(attributes_of(c, uid, T["CryptographicLength"]), {T["CryptographicLength"]: [2048]})
            # A true 2048-bit key declared 1024 is let in, as the 2048-bit key it is.
            uid = find(c.ok(OP_REGISTER, private_key_register(rsa_der(2048)[0], 1024), V2),
                       T["UniqueIdentifier"])[0]
            self.assertEqual(attributes_of(c, uid, T["CryptographicLength"]), {T["CryptographicLength"]: [2048]})

    def test_rsa_2047_is_no_2048_bit_key(self):
        # Issue 11, found by test/fuzz/fuzz_gate's key rule: a modulus's length was
        # counted in whole bytes, so a 2047-bit key passed as 2048 bits.
        priv2047, pub2047 = rsa_der(2047)
        before = self.token_keys("privkey") + self.token_keys("pubkey")
        with self.client(self.port, V2) as c:
            bi = c.call(OP_REGISTER, private_key_register(priv2047, 2048), V2)
            self.assertEqual((failure(bi), bi[T["ResultMessage"]]), ((FAILED, PERMISSION_DENIED), POLICY))
            bi = c.call(OP_REGISTER, public_key_register(pub2047, 2048), V2)
            self.assertEqual((failure(bi), bi[T["ResultMessage"]]), ((FAILED, PERMISSION_DENIED), POLICY))
        self.assertEqual(self.token_keys("privkey") + self.token_keys("pubkey"), before)

    def test_secret_data_never_macs(self):
        mac = [crypto_parameters(None, None, ALG_HMAC_SHA256)]
        with self.client(self.port, V2) as c:
            uid = find(c.ok(OP_REGISTER, secret_data_register(b"k" * 32, USAGE_MAC_GENERATE | USAGE_MAC_VERIFY), V2),
                       T["UniqueIdentifier"])[0]
            c.ok(OP_ACTIVATE, [uid_item(uid)], V2)
            bi = c.call(OP_MAC, [uid_item(uid)] + mac + [item(T["Data"], BYTES, b"message")], V2)
            self.assertEqual(failure(bi), (FAILED, INCOMPATIBLE_CRYPTOGRAPHIC_USAGE_MASK))
            self.assertEqual(c.fails(OP_CHECK, [uid_item(uid), item(T["CryptographicUsageMask"], INTEGER,
                                                                    USAGE_MAC_GENERATE)], V2),
                             INCOMPATIBLE_CRYPTOGRAPHIC_USAGE_MASK)
            # It is still the client's Secret Data, with the mask it asked for.
            got = attributes_of(c, uid, T["ObjectType"], T["CryptographicUsageMask"])
            self.assertEqual(got, {T["ObjectType"]: [OBJ_SECRET_DATA],
                                   T["CryptographicUsageMask"]: [USAGE_MAC_GENERATE | USAGE_MAC_VERIFY]})
        # The token agrees: the generic secret may do nothing.
        self.assertEqual(self.token.usage()[("Secret Key", "secret-data")], [])


class UndoAndAttributeRulesTest(SecurityTestCase):
    """Finding 4: Undo never gives back what a use drew from Usage Limits, and an
    undone item carries no payload; attributes change only as KMIP's "Modifiable
    by client" rules allow."""

    def test_undo_gives_back_no_signature(self):
        port = self.serve()
        params = crypto_parameters(None, HASH_SHA256, ALG_ECDSA)
        signatures = 0
        with self.client(port, V2) as c:
            priv, _ = self.limited_pair(c, 1)
            for i in range(3):
                items = [batch_item(OP_ADD_ATTRIBUTE, [uid_item(priv), new_attribute(
                             attr(V2, "x-note", TEXT, "batch %d" % i))], b"\x01"),
                         batch_item(OP_SIGN, sign_request(priv, params, b"message %d" % i), b"\x02"),
                         batch_item(OP_GET, [uid_item("00_nothing")], b"\x03")]
                resp = exchange(c.sock, request_message(items, version=V2, batch_error_option=UNDO))
                for bi in batch_items(resp):
                    signatures += len(find(bi.get(T["ResponsePayload"], []), T["SignatureData"]))
                    if bi[T["Operation"]] == OP_SIGN and i == 0:
                        self.assertEqual(bi[T["ResultStatus"]], OPERATION_UNDONE)
                        self.assertNotIn(T["ResponsePayload"], bi)
            self.assertEqual(self.usage_count(c, priv), 0)
            bi = c.call(OP_SIGN, sign_request(priv, params, b"after"), V2)
            self.assertEqual((failure(bi), bi[T["ResultMessage"]]),
                             ((FAILED, PERMISSION_DENIED), "the key's Usage Limits are used up"))
            # The batches' other change was put back.
            self.assertNotIn(T["Attribute"], attributes_of(c, priv))
        self.assertEqual(signatures, 0)

    def test_usage_limits_do_not_reset(self):
        port = self.serve()
        params = crypto_parameters(None, HASH_SHA256, ALG_ECDSA)
        with self.client(port, V2) as c:
            priv, _ = self.limited_pair(c, 2)
            fresh, _ = self.limited_pair(c, 2)
            # Before any use the client may change its limits...
            c.ok(OP_MODIFY_ATTRIBUTE, [uid_item(fresh), new_attribute(usage_limits(V2, 5, UNIT_OBJECT))], V2)
            c.ok(OP_SIGN, sign_request(fresh, params, b"one of five"), V2)
            self.assertEqual(self.usage_count(c, fresh), 4)
            # ...not once a use drew on them.
            c.ok(OP_SIGN, sign_request(priv, params, b"one"), V2)
            for op, payload in ((OP_MODIFY_ATTRIBUTE, [uid_item(priv),
                                                       new_attribute(usage_limits(V2, 1000, UNIT_OBJECT))]),
                                (OP_DELETE_ATTRIBUTE, [uid_item(priv),
                                                       item(T["AttributeReference"], ENUM, T["UsageLimits"])])):
                bi = c.call(op, payload, V2)
                self.assertEqual((failure(bi), bi[T["ResultMessage"]]),
                                 ((FAILED, PERMISSION_DENIED),
                                  "the key's Usage Limits have been drawn on: they no longer change"))
            self.assertEqual(self.usage_count(c, priv), 1)

    def test_dates_change_only_as_the_specification_allows(self):
        port = self.serve()
        now = int(time.time())
        with self.client(port, V2) as c:
            late = find(c.ok(OP_CREATE, aes_create(V2, [key_attr(V2, "Protect Stop Date", DATETIME, now - 60),
                                                         key_attr(V2, "Process Start Date", DATETIME, now + 3600)]),
                             V2), T["UniqueIdentifier"])[0]
            c.ok(OP_ACTIVATE, [uid_item(late)], V2)
            # A Protect Stop Date that has come does not move again.
            bi = c.call(OP_MODIFY_ATTRIBUTE, [uid_item(late), new_attribute(
                key_attr(V2, "Protect Stop Date", DATETIME, now + 3600))], V2)
            self.assertEqual((failure(bi), bi[T["ResultMessage"]]), ((FAILED, WRONG_KEY_LIFECYCLE_STATE),
                                                                      "this date has come: it no longer changes"))
            # A Process Start Date still ahead may move; it is never deleted.
            c.ok(OP_MODIFY_ATTRIBUTE, [uid_item(late), new_attribute(
                key_attr(V2, "Process Start Date", DATETIME, now + 7200))], V2)
            bi = c.call(OP_DELETE_ATTRIBUTE, [uid_item(late), item(T["AttributeReference"], ENUM,
                                                                   T["ProcessStartDate"])], V2)
            self.assertEqual((failure(bi), bi[T["ResultMessage"]]),
                             ((FAILED, ATTRIBUTE_READ_ONLY), "this attribute cannot be deleted"))
            # A Deactivated key's Deactivation Date stays; its usage mask never changes.
            c.ok(OP_REVOKE, revoke_payload(late, CESSATION_OF_OPERATION), V2)
            bi = c.call(OP_MODIFY_ATTRIBUTE, [uid_item(late), new_attribute(
                attr(V2, "Deactivation Date", DATETIME, now + 3600))], V2)
            self.assertEqual((failure(bi), bi[T["ResultMessage"]]),
                             ((FAILED, WRONG_KEY_LIFECYCLE_STATE),
                              "this attribute changes only while the object is Pre-Active or Active"))
            bi = c.call(OP_MODIFY_ATTRIBUTE, [uid_item(late), new_attribute(
                attr(V2, "Cryptographic Usage Mask", INTEGER, 0x0C))], V2)
            self.assertEqual(failure(bi), (FAILED, ATTRIBUTE_READ_ONLY))


def bulk_keys(token, ids):
    """AES keys with these CKA_IDs, made straight in token through SoftHSM's own
    PKCS#11 functions (ctypes, in a process of its own): a thousand objects in
    seconds, where KMIP would take minutes. They carry no relay metadata, as keys
    made by other software."""
    script = textwrap.dedent("""
        import ctypes, sys
        U = ctypes.c_ulong
        class A(ctypes.Structure):
            _fields_ = [("type", U), ("value", ctypes.c_void_p), ("len", U)]
        p11 = ctypes.CDLL(sys.argv[1])
        assert p11.C_Initialize(None) == 0
        n = U(8); slots = (U * 8)()
        assert p11.C_GetSlotList(1, slots, ctypes.byref(n)) == 0
        s = U()
        assert p11.C_OpenSession(slots[0], 6, None, None, ctypes.byref(s)) == 0
        pin = sys.argv[2].encode()
        assert p11.C_Login(s, 1, pin, len(pin)) == 0
        cls, aes, yes = U(4), U(0x1F), ctypes.c_ubyte(1)
        def ref(x): return ctypes.cast(ctypes.byref(x), ctypes.c_void_p)
        for hexid in sys.stdin.read().split():
            i = ctypes.create_string_buffer(bytes.fromhex(hexid), len(hexid) // 2)
            v, lab = ctypes.create_string_buffer(16), ctypes.create_string_buffer(b"bulk", 4)
            t = (A * 7)((0, ref(cls), 8), (0x100, ref(aes), 8), (1, ref(yes), 1), (2, ref(yes), 1),
                        (0x102, ref(i), len(i)), (0x11, ref(v), 16), (3, ref(lab), 4))
            h = U()
            rv = p11.C_CreateObject(s, t, 7, ctypes.byref(h))
            assert rv == 0, (hexid, hex(rv))
        p11.C_Logout(s); p11.C_Finalize(None)
    """)
    subprocess.run(["/usr/bin/python3", "-c", script, SOFTHSM_MODULE, token.pin], input="\n".join(ids),
                   text=True, check=True, env=token.env, timeout=600)


class LocateCapTest(SecurityTestCase):
    """Finding 13: 1,100 keys in one namespace do not hide another's one key, and
    Maximum Items and Offset Items reach every key of the 1,100."""

    def test_many_keys_hide_nothing(self):
        single_cert, single_key = self.pki.issue("single", "single.example")
        bulk_ids = [(namespace_tag("bulk") + os.urandom(12)).hex() for _ in range(1100)]
        lone_id = (namespace_tag("single") + os.urandom(12)).hex()
        # The lone key comes last in the token's order, after all of the others.
        bulk_keys(self.token, bulk_ids)
        bulk_keys(self.token, [lone_id])
        port = self.serve_clients([{"name": "bulk", "certificate_name": "kmip-client"},
                                   {"name": "single", "certificate_name": "single.example"}])
        with KmipClient(self.connect(port, self.tls_context(certfile=single_cert, keyfile=single_key)),
                        version=V2) as c:
            got = c.ok(OP_LOCATE, locate_payload(V2), V2)
            self.assertEqual(find(got, T["UniqueIdentifier"]), [lone_id.upper() + "_secret"])
            self.assertEqual(find(got, T["LocatedItems"]), [1])
        seen = []
        with self.client(port, V2) as c:
            for offset in (0, 500, 1000):
                got = c.ok(OP_LOCATE, [item(T["MaximumItems"], INTEGER, 500),
                                       item(T["OffsetItems"], INTEGER, offset)] + locate_payload(V2), V2)
                self.assertEqual(find(got, T["LocatedItems"]), [1100])
                seen += find(got, T["UniqueIdentifier"])
        self.assertEqual(len(seen), 1100)
        self.assertEqual(sorted(seen), sorted(i.upper() + "_secret" for i in bulk_ids))


class DatesTest(SecurityTestCase):
    """Finding 14: an Activation Date that has come makes a Pre-Active key Active,
    a Deactivation Date that has come makes it Deactivated, at the moment of use,
    whatever connection set them."""

    PARAMS = crypto_parameters(None, HASH_SHA256, ALG_ECDSA)

    def signing_flags(self):
        return {label: flags for (kind, label), flags in self.token.usage().items() if kind == "Private Key"}

    def test_activation_date_comes(self):
        port = self.serve()
        soon = int(time.time()) + 2
        with self.client(port, V2) as setter, self.client(port, V2) as waiting:
            payload = [container(V2, "common", [
                           attr(V2, "Cryptographic Algorithm", ENUM, ALG_EC),
                           attr(V2, "Cryptographic Domain Parameters", STRUCTURE,
                                [item(T["RecommendedCurve"], ENUM, CURVE_P256)]),
                           attr(V2, "Activation Date", DATETIME, soon)]),
                       container(V2, "private", [name_attr(V2, "dated")]), container(V2, "public", [])]
            got = setter.ok(OP_CREATE_KEY_PAIR, payload, V2)
            priv = find(got, T["PrivateKeyUniqueIdentifier"])[0]
            self.assertEqual(self.state(waiting, priv, V2), [PRE_ACTIVE])
            self.assertEqual(waiting.fails(OP_SIGN, sign_request(priv, self.PARAMS, b"early"), V2),
                             WRONG_KEY_LIFECYCLE_STATE)
            time.sleep(max(0, soon + 1.2 - time.time()))
            # The connection that read it Pre-Active, and a new one, see it Active.
            waiting.ok(OP_SIGN, sign_request(priv, self.PARAMS, b"on time"), V2)
            with self.client(port, V2) as fresh:
                self.assertEqual(self.state(fresh, priv, V2), [ACTIVE])
                fresh.ok(OP_SIGN, sign_request(priv, self.PARAMS, b"new connection"), V2)
        self.assertEqual(self.signing_flags()["dated"], ["sign"])

    def test_deactivation_date_comes(self):
        port = self.serve()
        with self.client(port, V2) as setter, self.client(port, V2) as signer:
            priv, pub = self.create_pair(setter, V2, private_name="ending")
            for uid in (priv, pub):
                setter.ok(OP_ACTIVATE, [uid_item(uid)], V2)
            signer.ok(OP_SIGN, sign_request(priv, self.PARAMS, b"before"), V2)  # it has read the key now
            soon = int(time.time()) + 2
            setter.ok(OP_ADD_ATTRIBUTE, [uid_item(priv), new_attribute(attr(V2, "Deactivation Date", DATETIME, soon))],
                      V2)
            signer.ok(OP_SIGN, sign_request(priv, self.PARAMS, b"still"), V2)
            time.sleep(max(0, soon + 1.2 - time.time()))
            bi = signer.call(OP_SIGN, sign_request(priv, self.PARAMS, b"too late"), V2)
            self.assertEqual((failure(bi), bi[T["ResultMessage"]]),
                             ((FAILED, WRONG_KEY_LIFECYCLE_STATE), "the key is not Active"))
            self.assertEqual(self.state(setter, priv, V2), [DEACTIVATED])
        # On record in the token: the key no longer signs, whatever application asks.
        self.assertEqual(self.signing_flags()["ending"], [])

    def test_deactivation_date_in_the_past_deactivates_at_once(self):
        port = self.serve()
        with self.client(port, V2) as c:
            priv, pub = self.create_pair(c, V2, private_name="past")
            for uid in (priv, pub):
                c.ok(OP_ACTIVATE, [uid_item(uid)], V2)
            c.ok(OP_ADD_ATTRIBUTE, [uid_item(priv), new_attribute(
                attr(V2, "Deactivation Date", DATETIME, int(time.time()) - 10))], V2)
            self.assertEqual(self.state(c, priv, V2), [DEACTIVATED])
            self.assertEqual(c.fails(OP_SIGN, sign_request(priv, self.PARAMS, b"x"), V2), WRONG_KEY_LIFECYCLE_STATE)
        self.assertEqual(self.signing_flags()["past"], [])


class SmallItemsTest(SecurityTestCase):
    """Finding 17."""

    def test_stale_handle_retry_charges_once(self):
        fault_file = os.path.join(self.tmp, "fault")
        self.env["FAULTY_P11_FAULT_FILE"] = fault_file
        port = self.serve(module=FAULTY_P11)
        params = crypto_parameters(None, HASH_SHA256, ALG_ECDSA)
        with self.client(port, V2) as c:
            priv, _ = self.limited_pair(c, 5)
            c.ok(OP_SIGN, sign_request(priv, params, b"one"), V2)
            # The token calls the cached key handle invalid, as when another process
            # changed it: the Sign fails, and takes one use, not two.
            with open(fault_file, "w") as f:
                f.write("C_SignInit:rv=0x60\n")  # CKR_KEY_HANDLE_INVALID
            self.assertEqual(c.fails(OP_SIGN, sign_request(priv, params, b"two"), V2), ITEM_NOT_FOUND)
            os.unlink(fault_file)
            self.assertEqual(self.usage_count(c, priv), 3)

    def test_destroy_revokes_first(self):
        port = self.serve_clients([{"name": "cascade", "certificate_name": "kmip-client", "destroy_revokes": True}])
        with self.client(port, V2) as c:
            priv, pub = self.create_pair(c, V2)
            for uid in (priv, pub):
                c.ok(OP_ACTIVATE, [uid_item(uid)], V2)
            c.ok(OP_DESTROY, [uid_item(priv)], V2)
            got = attributes_of(c, priv, T["State"], T["DeactivationDate"], T["RevocationReason"])
            self.assertEqual(got[T["State"]], [5])  # Destroyed
            self.assertEqual(len(got[T["DeactivationDate"]]), 1)
            self.assertEqual(find(got[T["RevocationReason"]][0], T["RevocationReasonCode"]), [CESSATION_OF_OPERATION])

    def test_query_names_no_module_or_token(self):
        port = self.serve()
        with self.client(port, V1) as c:
            payload = c.ok(OP_QUERY, [item(T["QueryFunction"], ENUM, 3)], V1)
        self.assertEqual(find(payload, T["VendorIdentification"]), ["kmip-relay 0.1.0"])


if __name__ == "__main__":
    unittest.main(verbosity=2)

# SPDX-License-Identifier: BSD-3-Clause
"""The request sequences of the clients people run against the relay (Cascade,
Krill; see INTEROP.md), sent as raw TTLV over real TLS to SoftHSM: keys made by
other software (OpenDNSSEC style), what one connection sees of another's changes,
concurrent metadata updates, and many short connections that each log in."""

import os
import sys
import threading
import time
import unittest

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import (decode_dss_signature,
                                                             encode_dss_signature)

from relaytest import METADATA_LABEL
from relaytest import (ACTIVE, ALG_ECDSA, ALG_RSA, AUTHENTICATION_NOT_SUCCESSFUL,
                       CESSATION_OF_OPERATION, DEACTIVATED, ENUM, FMT_PKCS1, FMT_RAW,
                       FMT_TRANSPARENT_RSA_PUBLIC, ITEM_NOT_FOUND, LINK_PRIVATE_KEY,
                       LINK_PUBLIC_KEY, OBJ_PRIVATE_KEY, OBJ_PUBLIC_KEY, OP_ACTIVATE,
                       OP_ADD_ATTRIBUTE, OP_CREATE_KEY_PAIR, OP_DESTROY, OP_DISCOVER_VERSIONS,
                       OP_GET, OP_GET_ATTRIBUTES, OP_MODIFY_ATTRIBUTE, OP_QUERY, OP_REVOKE,
                       OP_SIGN, PERMISSION_DENIED, PRE_ACTIVE, SOFTHSM_MODULE, TEXT,
                       WRONG_KEY_LIFECYCLE_STATE, KmipError, RelayTestCase, T,
                       FAILED, SUCCESS, Token, attribute, batch_items, exchange, failure, find, item,
                       key_material,
                       key_pair_payload, name_attribute, public_key_of, request, revoke_payload,
                       sign_payload,
                       uid_item, vector)

# The protocol version Cascade and Krill put in the header, per operation.
V10, V11, V12 = (1, 0), (1, 1), (1, 2)
# The Result Reasons Cascade's and Krill's KMIP library can parse.
PARSABLE_REASONS = set(range(0x01, 0x12)) | {0x100}
# The operations Krill requires in Query's answer.
KRILL_OPERATIONS = {OP_CREATE_KEY_PAIR: "Create Key Pair", OP_ACTIVATE: "Activate",
                    OP_SIGN: "Sign", OP_REVOKE: "Revoke", OP_DESTROY: "Destroy", OP_GET: "Get",
                    OP_MODIFY_ATTRIBUTE: "Modify Attribute"}
PKCS1_V15 = 8  # Padding Method; Hashing Algorithm SHA-256 is sign_payload's default

TOKEN_LABEL, TOKEN_PIN = "cascade-token", "8642-pin"
DESTROYED = 5  # State


def query_payload(*functions):
    return [item(T["QueryFunction"], ENUM, f) for f in functions]


def uid_item_value(uid):
    """A response payload child holding a Unique Identifier, as decode() gives it."""
    return (T["UniqueIdentifier"], TEXT, uid)


def single(attrs, name):
    values = attrs.get(name, [])
    if len(values) != 1:
        raise AssertionError("%s: %r (one value expected) in %r" % (name, values, attrs))
    return values[0]


def name_of(attrs):
    return find(single(attrs, "Name"), T["NameValue"])[0]


def links_of(attrs):
    return {find(l, T["LinkType"])[0]: find(l, T["LinkedObjectIdentifier"])[0]
            for l in attrs.get("Link", [])}


class ClientTestCase(RelayTestCase):
    """A token of its own, and a relay that serves both kinds of client: those with a
    certificate (the configured token and PIN file) and those without, whose
    Username and Password pick the token and log in (as Cascade does)."""

    def setUp(self):
        super().setUp()
        self.token = Token(os.path.join(self.tmp, "hsm"), label=TOKEN_LABEL, pin=TOKEN_PIN)
        self.env["SOFTHSM2_CONF"] = self.token.conf
        self.lock_file = os.path.join(self.tmp, "p11.lock")

    def relay_config(self, lock=True, destroy_switch=True, token="pkcs11:token=" + TOKEN_LABEL, pkcs11=None,
                     **sections):
        """token: pkcs11.token, also the pattern of the tokens a Username may pick."""
        pkcs11 = dict({"module": SOFTHSM_MODULE, "token": token, "pin_file": self.token.pin_file,
                       "login_with_credentials": True}, **(pkcs11 or {}))
        if lock:
            pkcs11["lock_file"] = self.lock_file
        return self.config(tls={"require_client_certificate": False}, pkcs11=pkcs11,
                           keys={"destroy_revokes_for_credential_clients": destroy_switch},
                           **sections)

    def cascade(self, port, username=TOKEN_LABEL, password=TOKEN_PIN):
        """A Cascade connection: no certificate, a credential in every header."""
        return self.kmip(port, cert=False, username=username, password=password)

    def krill(self, port):
        """A Krill connection: mutual TLS."""
        return self.kmip(port, cert=True)

    def assert_parsable_reasons(self, *clients):
        """Every failure answered in 1.x has a Result Reason Cascade and Krill parse."""
        for c in clients:
            for version, bi in c.items:
                if bi[T["ResultStatus"]] != 0 and version[0] == 1:
                    self.assertIn(bi.get(T["ResultReason"]), PARSABLE_REASONS, (version, bi))

    def assert_no_metadata(self):
        self.assertNotIn("kmip-relay metadata", self.token.objects("data"))

    def assert_only_records(self, n):
        """The keys are gone; their attributes stay, one metadata object each (KMIP
        keeps a destroyed object's attributes)."""
        for kind in ("privkey", "pubkey", "secrkey"):
            self.assertNotIn("Object", self.token.objects(kind))
        self.assertEqual(len(METADATA_LABEL.findall(self.token.objects("data"))), n)

    def create_pair(self, c, algorithm, length, private_name, public_name, version=V10, **kw):
        payload = c.ok(OP_CREATE_KEY_PAIR,
                       key_pair_payload(algorithm, length, private_name, public_name, **kw), version)
        priv = find(payload, T["PrivateKeyUniqueIdentifier"])[0]
        pub = find(payload, T["PublicKeyUniqueIdentifier"])[0]
        return priv, pub


class CascadeTest(ClientTestCase):
    def setUp(self):
        super().setUp()
        self.port = self.start(self.relay_config())

    def query_as_cascade(self, c):
        versions = c.ok(OP_DISCOVER_VERSIONS, [], V11)
        self.assertTrue(versions)
        payload = c.ok(OP_QUERY, query_payload(1, 2, 3), V12)
        operations = find(payload, T["Operation"])
        self.assertTrue(operations)
        self.assertTrue(all(op <= 0x29 for op in operations), operations)
        objects = find(payload, T["ObjectType"])
        self.assertTrue(all(1 <= t <= 9 for t in objects), objects)
        self.assertLessEqual({OBJ_PUBLIC_KEY, OBJ_PRIVATE_KEY}, set(objects))
        self.assertTrue(find(payload, T["VendorIdentification"])[0].startswith("kmip-relay"))
        return operations

    def cascade_key_lifecycle(self, algorithm, length, tag):
        zone = "example.com-%d-%s" % (tag, "zsk" if algorithm == ALG_ECDSA else "ksk")
        with self.cascade(self.port) as c:
            self.query_as_cascade(c)
            priv, pub = self.create_pair(c, algorithm, length, "%s-new-priv" % zone, "%s-new-pub" % zone)
            self.assertRegex(priv, r"^[0-9A-F]{64}_priv$")
            self.assertEqual(pub, priv[:64] + "_pub")
            # The token holds all there is to a new pair: no metadata object
            # (assert_only_records at the end shows that the pattern finds them).
            self.assertEqual(len(METADATA_LABEL.findall(self.token.objects("data"))), 0)

            # Get(public) with no Key Format Type
            payload = c.ok(OP_GET, [uid_item(pub)], V10)
            self.assertEqual(find(payload, T["ObjectType"]), [OBJ_PUBLIC_KEY])
            self.assertEqual(find(payload, T["UniqueIdentifier"]), [pub])
            fmt, material = key_material(payload)
            if algorithm == ALG_RSA:
                self.assertEqual(fmt, FMT_PKCS1)
                key = serialization.load_der_public_key(material)
                self.assertIsInstance(key, rsa.RSAPublicKey)
                self.assertEqual(key.key_size, length)
                # PKCS#1 RSAPublicKey exactly, not a SubjectPublicKeyInfo
                self.assertEqual(material, key.public_bytes(serialization.Encoding.DER,
                                                            serialization.PublicFormat.PKCS1))
            else:
                self.assertEqual(fmt, FMT_RAW)
                key = serialization.load_der_public_key(material)
                self.assertIsInstance(key, ec.EllipticCurvePublicKey)
                self.assertEqual(key.curve.name, "secp256r1")
                self.assertEqual(material, key.public_bytes(
                    serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo))

            # Failures Cascade may meet on the way; their reasons are checked below.
            sign_params = (ALG_RSA, PKCS1_V15) if algorithm == ALG_RSA else (ALG_ECDSA, None)
            c.fails(OP_SIGN, sign_payload(priv, sign_params[0], b"too early", padding=sign_params[1]), V12)
            self.assertEqual(c.fails(OP_GET, [uid_item(priv)], V10), PERMISSION_DENIED)
            self.assertEqual(c.fails(OP_GET, [uid_item("00" * 20 + "_pub")], V10), ITEM_NOT_FOUND)
            c.fails(OP_MODIFY_ATTRIBUTE, [uid_item(pub), attribute("State", ENUM, ACTIVE)], V10)

            self.assertEqual(c.ok(OP_ACTIVATE, [uid_item(priv)], V10), [uid_item_value(priv)])
            self.assertEqual(c.fails(OP_ACTIVATE, [uid_item(priv)], V10), PERMISSION_DENIED)

            # Rename, public key first; each answer echoes the UID (1.x: and the Attribute).
            for uid, name in ((pub, zone + "-pub"), (priv, zone + "-priv")):
                payload = c.ok(OP_MODIFY_ATTRIBUTE, [uid_item(uid), name_attribute(name)], V10)
                self.assertEqual(find(payload, T["UniqueIdentifier"]), [uid])
            for uid, name in ((pub, zone + "-pub"), (priv, zone + "-priv")):
                self.assertEqual(name_of(c.get_attributes(uid, ["Name"])), name)
            objects = self.token.objects()
            self.assertIn(zone + "-pub", objects)
            self.assertIn(zone + "-priv", objects)
            attrs = c.get_attributes(priv)
            self.assertEqual(single(attrs, "State"), ACTIVE)
            self.assertEqual(links_of(attrs), {LINK_PUBLIC_KEY: pub})
            self.assertEqual(links_of(c.get_attributes(pub)), {LINK_PRIVATE_KEY: priv})

            # Sign, many times: Cascade's parameters, unhashed data up to tens of KiB.
            for size in [0, 1, 100, 40 * 1024] + [64] * 12:
                data = os.urandom(size)
                payload = c.ok(OP_SIGN, sign_payload(priv, sign_params[0], data, padding=sign_params[1]), V12)
                self.assertEqual(find(payload, T["UniqueIdentifier"]), [priv])
                sig = find(payload, T["SignatureData"])[0]
                if algorithm == ALG_RSA:
                    self.assertEqual(len(sig), length // 8)  # raw
                    key.verify(sig, data, padding.PKCS1v15(), hashes.SHA256())
                else:
                    # DER SEQUENCE { INTEGER r, INTEGER s }, minimal integers
                    self.assertEqual(sig, encode_dss_signature(*decode_dss_signature(sig)), sig.hex())
                    key.verify(sig, data, ec.ECDSA(hashes.SHA256()))

            # Removal: Destroy(private), then Destroy(public), with no Revoke first.
            self.assertEqual(c.ok(OP_DESTROY, [uid_item(priv)], V10), [uid_item_value(priv)])
            self.assertEqual(c.ok(OP_DESTROY, [uid_item(pub)], V10), [uid_item_value(pub)])
            for uid in (priv, pub, priv[:64]):
                self.assertEqual(single(c.get_attributes(uid), "State"), DESTROYED)
                self.assertEqual(c.fails(OP_GET, [uid_item(uid)], V10), ITEM_NOT_FOUND)
        self.assertNotIn(zone, self.token.objects())
        self.assert_only_records(2)
        self.assert_parsable_reasons(c)
        records = self.audit_records(self.log_lines(wait_for="connection peer="))
        self.assertTrue(records)
        self.assertEqual({r["client"] for r in records}, {"user:" + TOKEN_LABEL})

    def test_requests_are_cascades_bytes(self):
        """This client's encoding gives the very bytes of a Query captured from
        Cascade, which the relay answers once the token took its credential (the
        token "xxx", PIN "123456"); before that, nothing is answered but
        Authentication Not Successful."""
        captured = vector("cascade_query_captured.hex")
        self.assertEqual(request(OP_QUERY, query_payload(1, 2, 3), version=V12, username="xxx",
                                 password="123456"), captured)
        with self.connect(self.port, self.tls_context(cert=False)) as s:
            (bi,) = batch_items(exchange(s, captured))
        self.assertEqual(failure(bi), (FAILED, AUTHENTICATION_NOT_SUCCESSFUL))
        self.token.add_token("xxx", "123456")
        port = self.start(self.config(
            tls={"require_client_certificate": False},
            pkcs11={"module": SOFTHSM_MODULE, "token": "pkcs11:token=xxx", "lock_file": self.lock_file,
                    "login_with_credentials": True}))
        with self.connect(port, self.tls_context(cert=False)) as s:
            (bi,) = batch_items(exchange(s, captured))
        self.assertEqual(failure(bi), (SUCCESS, None))
        self.assertTrue(find(bi[T["ResponsePayload"]], T["VendorIdentification"])[0].startswith("kmip-relay"))

    def test_rsa_2048(self):
        self.cascade_key_lifecycle(ALG_RSA, 2048, 12345)

    def test_ecdsa_p256(self):
        self.cascade_key_lifecycle(ALG_ECDSA, 256, 23456)

    def test_destroy_of_an_active_key_by_a_certificate_client_is_refused(self):
        # The switch is on in this config, but only for clients without a certificate.
        with self.krill(self.port) as k:
            priv, pub = self.create_pair(k, ALG_ECDSA, 256, "cert-priv", "cert-pub")
            k.ok(OP_ACTIVATE, [uid_item(priv)], V10)
            self.assertEqual(k.fails(OP_DESTROY, [uid_item(priv)], V10), PERMISSION_DENIED)
            self.assertEqual(k.fails(OP_DESTROY, [uid_item(priv)], (2, 1)), WRONG_KEY_LIFECYCLE_STATE)
            self.assertEqual(single(k.get_attributes(priv), "State"), ACTIVE)
        self.assert_parsable_reasons(k)
        # The same Destroy from a Cascade connection goes through.
        with self.cascade(self.port) as c:
            c.ok(OP_DESTROY, [uid_item(priv)], V10)
            c.ok(OP_DESTROY, [uid_item(pub)], V10)
        self.assert_only_records(2)

    def test_destroy_of_an_active_key_without_the_switch_is_refused(self):
        port = self.start(self.relay_config(destroy_switch=False))
        with self.cascade(port) as c:
            priv, _ = self.create_pair(c, ALG_ECDSA, 256, "noswitch-priv", "noswitch-pub")
            c.ok(OP_ACTIVATE, [uid_item(priv)], V10)
            self.assertEqual(c.fails(OP_DESTROY, [uid_item(priv)], V10), PERMISSION_DENIED)
        self.assert_parsable_reasons(c)


class CredentialLoginTest(ClientTestCase):
    """The Username picks the token (label, then slot ID, then slot index) among
    those pkcs11.token matches (here: every SoftHSM token); the Password is its PIN.
    Nothing else opens the token for these clients."""

    SOFTHSM_TOKENS = "pkcs11:model=SoftHSM%20v2"

    OTHER_LABEL, OTHER_PIN = "other-token", "1357-other"

    def setUp(self):
        super().setUp()
        self.token.add_token(self.OTHER_LABEL, self.OTHER_PIN)
        self.token.keypair("EC:prime256v1", "c0ffee01", "login-probe")
        self.slots = self.token.slots()
        labels = [label for _, label in self.slots]
        self.assertIn(TOKEN_LABEL, labels)
        self.assertIn(self.OTHER_LABEL, labels)
        self.port = self.start(self.relay_config(token=self.SOFTHSM_TOKENS))

    def probe(self, username, password):
        """Result Reason of Get Attributes of the probe key (None: success), twice on
        one connection; after Authentication Not Successful the relay closes it."""
        with self.cascade(self.port, username, password) as c:
            reasons = []
            for _ in range(2):
                if reasons == [AUTHENTICATION_NOT_SUCCESSFUL]:
                    self.assertTrue(c.is_closed())
                    break
                bi = c.call(OP_GET_ATTRIBUTES, [uid_item("C0FFEE01_pub")], V10)
                reasons.append(bi.get(T["ResultReason"]))
        self.assert_parsable_reasons(c)
        self.assertEqual(reasons[0], reasons[-1])
        return reasons[0]

    def test_label_slot_id_and_slot_index(self):
        slot_ids = [slot_id for slot_id, _ in self.slots]
        ours = [i for i, (_, label) in enumerate(self.slots) if label == TOKEN_LABEL][0]
        other = [i for i, (_, label) in enumerate(self.slots) if label == self.OTHER_LABEL][0]
        self.assertEqual(self.probe(TOKEN_LABEL, TOKEN_PIN), None)
        self.assertEqual(self.probe(str(slot_ids[ours]), TOKEN_PIN), None)
        # The other token has its own PIN and not the probe key.
        self.assertEqual(self.probe(self.OTHER_LABEL, self.OTHER_PIN), ITEM_NOT_FOUND)
        self.assertEqual(self.probe(str(slot_ids[other]), self.OTHER_PIN), ITEM_NOT_FOUND)
        self.assertEqual(self.probe(self.OTHER_LABEL, TOKEN_PIN), AUTHENTICATION_NOT_SUCCESSFUL)
        # A slot index, unless some slot has that number as its ID.
        if ours not in slot_ids:
            self.assertEqual(self.probe(str(ours), TOKEN_PIN), None)
        if other not in slot_ids:
            self.assertEqual(self.probe(str(other), self.OTHER_PIN), ITEM_NOT_FOUND)

    def test_wrong_password_fails_on_every_connection(self):
        # Below pkcs11.pin_failures the right PIN still works afterwards
        # (test_pin_lockout.py: what happens past it).
        self.port = self.start(self.relay_config(token=self.SOFTHSM_TOKENS, pkcs11={"pin_failures": 4}))
        for _ in range(3):
            self.assertEqual(self.probe(TOKEN_LABEL, "0000-wrong"), AUTHENTICATION_NOT_SUCCESSFUL)
        self.assertEqual(self.probe(TOKEN_LABEL, TOKEN_PIN), None)
        self.assertFalse(any("0000-wrong" in l for l in self.log_lines()))

    def test_every_request_must_carry_the_same_credential(self):
        """A connection logged in as one token cannot switch credentials halfway:
        the switch is refused and ends the connection."""
        for username, password in ((self.OTHER_LABEL, self.OTHER_PIN), (TOKEN_LABEL, "0000-wrong")):
            with self.cascade(self.port) as c:
                self.assertEqual(c.call(OP_GET_ATTRIBUTES, [uid_item("C0FFEE01_pub")], V10).get(T["ResultReason"]),
                                 None)
                c.username, c.password = username, password
                bi = c.call(OP_GET_ATTRIBUTES, [uid_item("C0FFEE01_pub")], V10)
                self.assertEqual(bi.get(T["ResultReason"]), AUTHENTICATION_NOT_SUCCESSFUL)
                c.username, c.password = TOKEN_LABEL, TOKEN_PIN
                self.assertTrue(c.is_closed())

    def test_unknown_username(self):
        for username in ("no-such-token", "987654", "99"):
            self.assertEqual(self.probe(username, TOKEN_PIN), AUTHENTICATION_NOT_SUCCESSFUL, username)
        self.assertTrue(any("no token that the config allows has this username" in l for l in self.log_lines()))


class KrillTest(ClientTestCase):
    def test_krill_sequence(self):
        port = self.start(self.relay_config())
        ts = int(time.time())
        suffix = os.urandom(8).hex()
        with self.krill(port) as k:
            operations = set(find(k.ok(OP_QUERY, query_payload(1), V12), T["Operation"]))
            missing = [name for op, name in KRILL_OPERATIONS.items() if op not in operations]
            self.assertEqual(missing, [], "Krill refuses a server whose Query lacks these")

            priv, pub = self.create_pair(k, ALG_RSA, 2048, "krill_new_key_%d_priv" % ts,
                                         "krill_new_key_%d_pub" % ts)
            self.assertEqual(name_of(k.get_attributes(priv, ["Name"])), "krill_new_key_%d_priv" % ts)
            fmt, material = key_material(k.ok(OP_GET, [uid_item(pub)], V10))
            self.assertIn(fmt, (FMT_PKCS1, FMT_TRANSPARENT_RSA_PUBLIC))
            key = public_key_of(fmt, material)
            self.assertEqual(key.key_size, 2048)

            k.ok(OP_MODIFY_ATTRIBUTE, [uid_item(pub), name_attribute("krill-public-key-" + suffix)], V10)
            k.ok(OP_MODIFY_ATTRIBUTE, [uid_item(priv), name_attribute("krill-private-key-" + suffix)], V10)
            self.assertEqual(name_of(k.get_attributes(pub)), "krill-public-key-" + suffix)
            self.assertEqual(name_of(k.get_attributes(priv)), "krill-private-key-" + suffix)
            k.ok(OP_ACTIVATE, [uid_item(priv)], V10)

            data = b"krill signs this " + os.urandom(200)
            sig = find(k.ok(OP_SIGN, sign_payload(priv, ALG_RSA, data, padding=PKCS1_V15), V12),
                       T["SignatureData"])[0]
            key.verify(sig, data, padding.PKCS1v15(), hashes.SHA256())

            # Removal: Destroy(public), Revoke(private, Cessation of Operation), Destroy(private).
            k.ok(OP_DESTROY, [uid_item(pub)], V10)
            k.ok(OP_REVOKE, revoke_payload(priv, CESSATION_OF_OPERATION), V10)
            self.assertEqual(single(k.get_attributes(priv), "State"), DEACTIVATED)
            k.ok(OP_DESTROY, [uid_item(priv)], V10)
            self.assertEqual(single(k.get_attributes(priv), "State"), DESTROYED)
        self.assert_parsable_reasons(k)
        self.assertNotIn("krill-", self.token.objects("privkey") + self.token.objects("pubkey"))
        self.assert_only_records(2)


class ForeignKeyTest(ClientTestCase):
    """Keys made with pkcs11-tool, as OpenDNSSEC makes them: one CKA_ID for both
    halves, or a private key alone. The bare hex CKA_ID names the public half if
    there is one, else the private half; such keys have no relay metadata and count
    as Active."""

    PAIR_ID, EC_ID, LONE_ID = "a1b2c3d4e5f60718", "0e0c0001", "0badf00d"

    def setUp(self):
        super().setUp()
        self.pair_der = self.token.keypair("rsa:2048", self.PAIR_ID, "ods-pair")
        self.ec_der = self.token.keypair("EC:prime256v1", self.EC_ID, "ods-ec")
        self.token.private_key_only("EC:prime256v1", self.LONE_ID, "ods-lone")
        self.port = self.start(self.relay_config())

    def test_bare_id_names_the_public_half(self):
        with open(self.pair_der, "rb") as f:
            spki = serialization.load_der_public_key(f.read())
        up = self.PAIR_ID.upper()
        with self.cascade(self.port) as c:
            for uid in (up, self.PAIR_ID, up + "_pub"):
                payload = c.ok(OP_GET, [uid_item(uid)], V10)
                self.assertEqual(find(payload, T["ObjectType"]), [OBJ_PUBLIC_KEY])
                self.assertEqual(find(payload, T["UniqueIdentifier"]), [up + "_pub"])
                fmt, material = key_material(payload)
                self.assertEqual(fmt, FMT_PKCS1)
                self.assertEqual(public_key_of(fmt, material).public_numbers(), spki.public_numbers())
                attrs = c.get_attributes(uid)
                self.assertEqual(single(attrs, "Object Type"), OBJ_PUBLIC_KEY)
                self.assertEqual(single(attrs, "State"), ACTIVE)
                self.assertEqual(name_of(attrs), "ods-pair")
            # EC: Raw holding the SubjectPublicKeyInfo, the very bytes pkcs11-tool reads
            with open(self.ec_der, "rb") as f:
                ec_spki = f.read()
            fmt, material = key_material(c.ok(OP_GET, [uid_item(self.EC_ID)], V10))
            self.assertEqual((fmt, material), (FMT_RAW, ec_spki))

            attrs = c.get_attributes(up + "_priv")
            self.assertEqual(single(attrs, "Object Type"), OBJ_PRIVATE_KEY)
            self.assertEqual(single(attrs, "State"), ACTIVE)
            self.assertEqual(single(attrs, "Unique Identifier"), up + "_priv")
            # Already Active: Activate is refused as a wrong-state request.
            self.assertEqual(c.fails(OP_ACTIVATE, [uid_item(up + "_priv")], V10), PERMISSION_DENIED)
            self.assertEqual(c.fails(OP_ACTIVATE, [uid_item(up)], (2, 1)), WRONG_KEY_LIFECYCLE_STATE)

            # Signing with an existing key is what the bridge's users wanted.
            data = os.urandom(300)
            sig = find(c.ok(OP_SIGN, sign_payload(up + "_priv", ALG_RSA, data, padding=PKCS1_V15), V12),
                       T["SignatureData"])[0]
            spki.verify(sig, data, padding.PKCS1v15(), hashes.SHA256())
            sig = find(c.ok(OP_SIGN, sign_payload(self.EC_ID.upper() + "_priv", ALG_ECDSA, data), V12),
                       T["SignatureData"])[0]
            serialization.load_der_public_key(ec_spki).verify(sig, data, ec.ECDSA(hashes.SHA256()))
        self.assert_parsable_reasons(c)
        self.assert_no_metadata()  # reading and refusing write nothing

    def test_private_key_alone(self):
        up = self.LONE_ID.upper()
        with self.cascade(self.port) as c:
            for uid in (up, self.LONE_ID, up + "_priv"):
                attrs = c.get_attributes(uid)
                self.assertEqual(single(attrs, "Object Type"), OBJ_PRIVATE_KEY)
                self.assertEqual(single(attrs, "Unique Identifier"), up + "_priv")
                self.assertEqual(single(attrs, "State"), ACTIVE)
                self.assertEqual(name_of(attrs), "ods-lone")
            self.assertEqual(c.fails(OP_GET_ATTRIBUTES, [uid_item(up + "_pub")], V10), ITEM_NOT_FOUND)
            # A private key does not leave the token.
            self.assertEqual(c.fails(OP_GET, [uid_item(up)], V10), PERMISSION_DENIED)
            self.assertEqual(c.fails(OP_ACTIVATE, [uid_item(up)], V10), PERMISSION_DENIED)
        self.assert_parsable_reasons(c)
        self.assert_no_metadata()

    def test_get_attributes_links_the_other_half(self):
        """A client that has one half reaches the other through a Link, as for the
        pairs the relay makes."""
        up = self.PAIR_ID.upper()
        with self.cascade(self.port) as c:
            pub_attrs, priv_attrs = c.get_attributes(up), c.get_attributes(up + "_priv")
            lone_attrs = c.get_attributes(self.LONE_ID)
        self.assertEqual(single(pub_attrs, "Unique Identifier"), up + "_pub")
        self.assertEqual(links_of(pub_attrs), {LINK_PRIVATE_KEY: up + "_priv"})
        self.assertEqual(single(priv_attrs, "Unique Identifier"), up + "_priv")
        self.assertEqual(links_of(priv_attrs), {LINK_PUBLIC_KEY: up + "_pub"})
        self.assertEqual(links_of(lone_attrs), {})  # no public half to link to
        self.assert_no_metadata()


class TwoConnectionsTest(ClientTestCase):
    """Two connections at once, so two relay processes: each sees what the other
    did, from the token alone."""

    def test_changes_are_seen_by_the_other_process(self):
        port = self.start(self.relay_config())
        with self.cascade(port) as a, self.krill(port) as b:
            priv, pub = self.create_pair(a, ALG_ECDSA, 256, "shared-priv", "shared-pub")
            fa = key_material(a.ok(OP_GET, [uid_item(pub)], V10))
            fb = key_material(b.ok(OP_GET, [uid_item(pub)], V10))
            self.assertEqual(fa, fb)
            self.assertEqual(single(b.get_attributes(priv), "State"), PRE_ACTIVE)

            a.ok(OP_ACTIVATE, [uid_item(priv)], V10)
            self.assertEqual(single(b.get_attributes(priv), "State"), ACTIVE)
            b.ok(OP_MODIFY_ATTRIBUTE, [uid_item(priv), name_attribute("renamed-by-b")], V10)
            self.assertEqual(name_of(a.get_attributes(priv)), "renamed-by-b")

            b.ok(OP_REVOKE, revoke_payload(priv, CESSATION_OF_OPERATION), V10)
            attrs = a.get_attributes(priv)
            self.assertEqual(single(attrs, "State"), DEACTIVATED)
            self.assertIn("Deactivation Date", attrs)
            # Deactivated: the token no longer signs with it.
            self.assertNotEqual(a.call(OP_SIGN, sign_payload(priv, ALG_ECDSA, b"x"), V12)[T["ResultStatus"]], 0)

            # Renames by one process while the other reads and signs: SoftHSM gives the
            # reader's cached handle up when it reloads the object; the relay looks it
            # up again instead of failing.
            for n in range(20):
                b.ok(OP_MODIFY_ATTRIBUTE, [uid_item(pub), name_attribute("race-%d" % n)], V10)
                self.assertEqual(name_of(a.get_attributes(pub)), "race-%d" % n)

            # b destroys what a has looked up (and may have cached a handle of).
            b.ok(OP_DESTROY, [uid_item(priv)], V10)
            self.assertEqual(single(a.get_attributes(priv), "State"), DESTROYED)
            a.ok(OP_DESTROY, [uid_item(pub)], V10)
            self.assertEqual(b.fails(OP_GET, [uid_item(pub)], V10), ITEM_NOT_FOUND)
        self.assert_parsable_reasons(a, b)
        self.assert_only_records(2)


class ConcurrentUpdateTest(ClientTestCase):
    """Metadata updates from parallel connections are serialised through
    pkcs11.lock_file: none is lost."""

    N = 6

    def parallel(self, port, uid, action):
        """Runs action(client, n) for n in 0..N-1 on N connections at once, each logged
        in first; returns the exceptions."""
        barrier = threading.Barrier(self.N, timeout=30)
        errors = []

        def run(n):
            try:
                with self.cascade(port) as c:
                    c.get_attributes(uid, ["State"])  # opens and logs in
                    barrier.wait()
                    action(c, n)
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append((n, repr(e)))
                barrier.abort()

        threads = [threading.Thread(target=run, args=(n,)) for n in range(self.N)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        self.assertFalse(any(t.is_alive() for t in threads))
        return errors

    def test_parallel_add_attribute(self):
        port = self.start(self.relay_config())
        with self.krill(port) as k:
            operations = set(find(k.ok(OP_QUERY, query_payload(1), V12), T["Operation"]))
            if OP_ADD_ATTRIBUTE not in operations:
                self.skipTest("Add Attribute is not implemented yet")
            priv, _ = self.create_pair(k, ALG_ECDSA, 256, "added-priv", "added-pub")

        def add(c, n):
            c.ok(OP_ADD_ATTRIBUTE, [uid_item(priv), attribute("x-test-%d" % n, TEXT, "value %d" % n)], V10)
            c.ok(OP_MODIFY_ATTRIBUTE, [uid_item(priv), name_attribute("name-%d" % n)], V10)

        self.assertEqual(self.parallel(port, priv, add), [])
        with self.krill(port) as k:
            attrs = k.get_attributes(priv)
        for n in range(self.N):
            self.assertEqual(attrs.get("x-test-%d" % n), ["value %d" % n], attrs)
        self.assertIn(name_of(attrs), ["name-%d" % n for n in range(self.N)])

    def test_parallel_modify_and_revoke(self):
        """Each connection changes its own custom attribute, set at creation, and one
        of them also revokes the key."""
        port = self.start(self.relay_config())
        extra = [attribute("x-note-%d" % n, TEXT, "initial %d" % n) for n in range(self.N)]
        with self.krill(port) as k:
            priv, _ = self.create_pair(k, ALG_ECDSA, 256, "modified-priv", "modified-pub",
                                       private_extra=extra)
            attrs = k.get_attributes(priv)
            for n in range(self.N):
                self.assertEqual(attrs.get("x-note-%d" % n), ["initial %d" % n], attrs)
            k.ok(OP_ACTIVATE, [uid_item(priv)], V10)

        def modify(c, n):
            c.ok(OP_MODIFY_ATTRIBUTE, [uid_item(priv), attribute("x-note-%d" % n, TEXT, "changed %d" % n)],
                 V10)
            if n == 0:
                c.ok(OP_REVOKE, revoke_payload(priv, CESSATION_OF_OPERATION), V10)

        self.assertEqual(self.parallel(port, priv, modify), [])
        with self.krill(port) as k:
            attrs = k.get_attributes(priv)
        self.assertEqual(single(attrs, "State"), DEACTIVATED)
        self.assertEqual({n: attrs.get("x-note-%d" % n) for n in range(self.N)},
                         {n: ["changed %d" % n] for n in range(self.N)})


def login_and_get_loop(test, port, uid, seconds, threads=8):
    """threads client loops for seconds: each iteration a new connection that logs in
    with its credential and Gets uid. Returns (iterations, [failures])."""
    deadline = time.monotonic() + seconds
    counts = [0] * threads
    failures = []
    lock = threading.Lock()

    def loop(n):
        while time.monotonic() < deadline:
            try:
                with test.cascade(port) as c:
                    bi = c.call(OP_GET, [uid_item(uid)], V10)
                if bi[T["ResultStatus"]] != 0:
                    raise KmipError(OP_GET, bi.get(T["ResultReason"]), bi.get(T["ResultMessage"]))
            except Exception as e:  # noqa: BLE001 - counted
                with lock:
                    failures.append(repr(e))
            counts[n] += 1

    workers = [threading.Thread(target=loop, args=(n,)) for n in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(seconds + 60)
    assert not any(w.is_alive() for w in workers), "a client loop hung"
    return sum(counts), failures


class LoadTest(ClientTestCase):
    """8 clients for 60 s, each request on a new connection (so a new process that
    opens the token and logs in): with pkcs11.lock_file, no login ever fails."""

    SECONDS = int(os.environ.get("LOAD_SECONDS", "60"))

    def test_new_connection_per_get(self):
        port = self.start(self.relay_config(lock=True))
        with self.cascade(port) as c:
            _, pub = self.create_pair(c, ALG_ECDSA, 256, "load-priv", "load-pub")
        iterations, failures = login_and_get_loop(self, port, pub, self.SECONDS)
        sys.stderr.write("\n  load: %d iterations in %d s with 8 clients (%.1f/s), %d failures\n"
                         % (iterations, self.SECONDS, iterations / self.SECONDS, len(failures)))
        self.assertEqual(failures[:5], [])
        self.assertGreater(iterations, 8)


if __name__ == "__main__":
    unittest.main(verbosity=2)

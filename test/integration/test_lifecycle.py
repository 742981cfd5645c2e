"""Key management on a SoftHSM token, over real TLS: Create, Create Key Pair, Get,
Get Attributes, Get Attribute List, Modify Attribute, Activate, Revoke, Destroy and
Locate, through PyKMIP's ProxyKmipClient and in raw TTLV in both attribute
encodings (KMIP 1.x Template-Attribute, KMIP 2.x Attributes); every Result Reason
these operations give, in 1.x and 2.x; ID Placeholders in batches; state shared
between relay processes through the token; audit records."""

import glob
import os
import shutil
import time
import unittest

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from relaytest import (ACTIVE, ALG_ECDSA, ALG_RSA, ATTRIBUTE_NAMES, ATTRIBUTE_TAGS,
                       AUTHENTICATION_NOT_SUCCESSFUL, BIGINT, BYTES, CESSATION_OF_OPERATION,
                       DEACTIVATED, ENUM, FMT_PKCS1, FMT_RAW, FMT_TRANSPARENT_RSA_PUBLIC, INTEGER,
                       ITEM_NOT_FOUND, LINK_PRIVATE_KEY, LINK_PUBLIC_KEY,
                       OBJ_PRIVATE_KEY, OBJ_PUBLIC_KEY, OP_ACTIVATE, OP_CHECK, OP_CREATE, OP_CREATE_KEY_PAIR,
                       OP_DESTROY, OP_DISCOVER_VERSIONS, OP_GET, OP_GET_ATTRIBUTES,
                       OP_GET_ATTRIBUTE_LIST, OP_LOCATE, OP_MODIFY_ATTRIBUTE, OP_QUERY, OP_REVOKE,
                       PERMISSION_DENIED, PRE_ACTIVE, SOFTHSM_MODULE, STRUCTURE, T,
                       TEXT, WRONG_KEY_LIFECYCLE_STATE, attr, attribute_refs, batch_item,
                       batch_items, bigint_value, container, der_integer_sequence, exchange, find,
                       item, key_material, name_attr, name_value, request_message,
                       returned_attributes, revoke_payload, spki_sha256, uid_item)

from relaytest import (ALG_AES, ALG_EC, ALG_ED25519, ALG_HMAC_SHA256, ALG_HMAC_SHA512,
                       ATTRIBUTE_NOT_FOUND, ATTRIBUTE_READ_ONLY, create_payload, CURVE_P256,
                       CURVE_P521, FAILED, FEATURE_NOT_SUPPORTED,
                       FMT_TRANSPARENT_SYMMETRIC, FMT_X509, GENERAL_FAILURE, get_payload,
                       ILLEGAL_OPERATION, INVALID_ATTRIBUTE_VALUE, INVALID_FIELD,
                       INVALID_OBJECT_TYPE, KEY_COMPROMISE, KEY_FORMAT_TYPE_NOT_SUPPORTED,
                       MISSING_DATA, OBJ_SYMMETRIC_KEY, pair_payload, reason_in, SUCCESS,
                       TokenTestCase, UID_RE, USAGE_DECRYPT, USAGE_ENCRYPT, USAGE_MAC_GENERATE,
                       USAGE_MAC_VERIFY, V1, V2)

V14 = (1, 4)              # the newest 1.x: Locate has Offset Items and Located Items

AUDIT_KEYS = ["client", "latency_us", "operation", "result"]


def modify_payload(version, uid, name, typ, value):
    """Modify Attribute: 1.x Attribute, 2.x New Attribute."""
    a = attr(version, name, typ, value)
    if version[0] >= 2:
        a = item(T["NewAttribute"], STRUCTURE, [a])
    return [uid_item(uid), a]


def locate_payload(version, attrs=(), maximum=None, offset=None):
    """Locate: 1.x Attributes loose in the payload, 2.x in an Attributes structure."""
    payload = []
    if maximum is not None:
        payload.append(item(T["MaximumItems"], INTEGER, maximum))
    if offset is not None:
        payload.append(item(T["OffsetItems"], INTEGER, offset))
    if version[0] >= 2:
        payload.append(item(T["Attributes"], STRUCTURE, list(attrs)))
    else:
        payload += list(attrs)
    return payload


def tags(payload):
    return [t for t, _, _ in payload]


def decoded_name(name):
    """A Name attribute's value as relaytest.decode gives it."""
    return [(T["NameValue"], TEXT, name), (T["NameType"], ENUM, 1)]


def pykmip_attributes(attrs):
    """PyKMIP's Attribute objects as {name: [plain values]}."""
    out = {}
    for a in attrs:
        value = a.attribute_value
        if hasattr(value, "name_value"):
            value = value.name_value.value
        elif hasattr(value, "value"):
            value = value.value
        out.setdefault(a.attribute_name.value, []).append(value)
    return out


class PyKMIPLifecycleTest(TokenTestCase):
    """Through PyKMIP 0.10's ProxyKmipClient, KMIP 1.2."""

    NAMES = ["State", "Name", "Cryptographic Algorithm", "Cryptographic Length"]

    def test_aes_256(self):
        from kmip.core import enums
        from kmip.core.factories.attributes import AttributeFactory
        from kmip.pie import objects
        from kmip.pie.exceptions import KmipOperationFailure

        port = self.serve()
        port_extractable = self.serve(keys={"extractable": True})
        with self.pykmip(port) as c:
            uid = c.create(enums.CryptographicAlgorithm.AES, 256, name="pykmip-aes")
            self.assertRegex(uid, r"\A[0-9A-F]{40}_secret\Z")
            got, attrs = c.get_attributes(uid, self.NAMES)
            self.assertEqual(got, uid)
            self.assertEqual(pykmip_attributes(attrs), {
                "State": [enums.State.PRE_ACTIVE], "Name": ["pykmip-aes"],
                "Cryptographic Algorithm": [enums.CryptographicAlgorithm.AES],
                "Cryptographic Length": [256]})
            self.assertEqual(c.get_attribute_list(uid), sorted([
                "Unique Identifier", "Object Type", "Cryptographic Algorithm", "Cryptographic Length",
                "Name", "State", "Initial Date", "Cryptographic Usage Mask", "Last Change Date"]))
            c.activate(uid)
            _, attrs = c.get_attributes(uid, ["State"])
            self.assertEqual(pykmip_attributes(attrs), {"State": [enums.State.ACTIVE]})
            name = AttributeFactory().create_attribute(enums.AttributeType.NAME, "pykmip-aes")
            self.assertEqual(c.locate(attributes=[name]), [uid])
            # Sensitive and not extractable by default: the token refuses its value.
            with self.assertRaises(KmipOperationFailure) as cm:
                c.get(uid)
            self.assertEqual(cm.exception.reason, enums.ResultReason.PERMISSION_DENIED)
        with self.pykmip(port_extractable) as c:
            uid_x = c.create(enums.CryptographicAlgorithm.AES, 256)
            key = c.get(uid_x)
            self.assertIsInstance(key, objects.SymmetricKey)
            self.assertEqual((key.cryptographic_algorithm, key.cryptographic_length, len(key.value)),
                             (enums.CryptographicAlgorithm.AES, 256, 32))
            # Extractability is the key's own, fixed when it was made.
            with self.assertRaises(KmipOperationFailure) as cm:
                c.get(uid)
            self.assertEqual(cm.exception.reason, enums.ResultReason.PERMISSION_DENIED)

    def test_rsa_2048(self):
        from kmip.core import enums
        from kmip.pie import objects
        from kmip.pie.exceptions import KmipOperationFailure

        port = self.serve()
        with self.pykmip(port) as c:
            pub, priv = c.create_key_pair(enums.CryptographicAlgorithm.RSA, 2048,
                                          public_name="pykmip-rsa-pub", private_name="pykmip-rsa-priv")
            self.check_pair_uids(priv, pub)
            key = c.get(pub)
            self.assertIsInstance(key, objects.PublicKey)
            self.assertEqual((key.key_format_type, key.cryptographic_algorithm, key.cryptographic_length),
                             (enums.KeyFormatType.PKCS_1, enums.CryptographicAlgorithm.RSA, 2048))
            n, e = der_integer_sequence(key.value)  # RSAPublicKey, minimal DER
            loaded = serialization.load_der_public_key(key.value)
            self.assertIsInstance(loaded, rsa.RSAPublicKey)
            self.assertEqual(loaded.key_size, 2048)
            self.assertEqual((loaded.public_numbers().n, loaded.public_numbers().e), (n, e))
            self.assertEqual(e, 65537)
            for uid, name in ((pub, "pykmip-rsa-pub"), (priv, "pykmip-rsa-priv")):
                _, attrs = c.get_attributes(uid, self.NAMES)
                self.assertEqual(pykmip_attributes(attrs), {
                    "State": [enums.State.PRE_ACTIVE], "Name": [name],
                    "Cryptographic Algorithm": [enums.CryptographicAlgorithm.RSA],
                    "Cryptographic Length": [2048]})
            c.activate(priv)
            _, attrs = c.get_attributes(priv, ["State"])
            self.assertEqual(pykmip_attributes(attrs), {"State": [enums.State.ACTIVE]})
            c.revoke(enums.RevocationReasonCode.CESSATION_OF_OPERATION, priv)
            _, attrs = c.get_attributes(priv, ["State"])
            self.assertEqual(pykmip_attributes(attrs), {"State": [enums.State.DEACTIVATED]})
            c.destroy(priv)
            c.destroy(pub)
            for uid in (pub, priv):
                with self.assertRaises(KmipOperationFailure) as cm:
                    c.get_attributes(uid, ["State"])
                self.assertEqual(cm.exception.reason, enums.ResultReason.ITEM_NOT_FOUND)
            with self.assertRaises(KmipOperationFailure) as cm:
                c.get(pub)
            self.assertEqual(cm.exception.reason, enums.ResultReason.ITEM_NOT_FOUND)

    def test_ec_p256_and_p384(self):
        # PyKMIP 0.10's create_key_pair sends only Cryptographic Algorithm and
        # Cryptographic Length (no Cryptographic Domain Parameters, so no curve):
        # the relay takes the curve from the length.
        from kmip.core import enums
        from kmip.pie import objects

        port = self.serve()
        with self.pykmip(port) as c:
            for algorithm, length, curve in ((enums.CryptographicAlgorithm.EC, 256, ec.SECP256R1),
                                             (enums.CryptographicAlgorithm.ECDSA, 384, ec.SECP384R1)):
                pub, priv = c.create_key_pair(algorithm, length)
                self.check_pair_uids(priv, pub)
                key = c.get(pub)
                self.assertIsInstance(key, objects.PublicKey)
                # Raw holding a SubjectPublicKeyInfo, as Cascade expects.
                self.assertEqual((key.key_format_type, key.cryptographic_algorithm, key.cryptographic_length),
                                 (enums.KeyFormatType.RAW, algorithm, length))
                loaded = serialization.load_der_public_key(key.value)
                self.assertIsInstance(loaded, ec.EllipticCurvePublicKey)
                self.assertIsInstance(loaded.curve, curve)
                for uid in (pub, priv):
                    _, attrs = c.get_attributes(uid, self.NAMES[2:] + ["State"])
                    self.assertEqual(pykmip_attributes(attrs), {
                        "Cryptographic Algorithm": [algorithm], "Cryptographic Length": [length],
                        "State": [enums.State.PRE_ACTIVE]})

    def test_ed25519_raw_kmip21(self):
        # PyKMIP 0.10 speaks 2.0 at most: Ed25519 in raw TTLV, KMIP 2.1.
        port = self.serve()
        with self.client(port, V2) as c:
            priv, pub = self.create_pair(c, V2, ALG_ED25519, curve=None, private_name="ed-priv",
                                         public_name="ed-pub")
            self.check_pair_uids(priv, pub)
            got = c.ok(OP_GET, [uid_item(pub)])
            self.assertEqual(tags(got), [T["ObjectType"], T["UniqueIdentifier"], T["PublicKey"]])
            self.assertEqual(find(got, T["ObjectType"]), [OBJ_PUBLIC_KEY])
            fmt, spki = key_material(got)
            self.assertEqual(fmt, FMT_RAW)
            loaded = serialization.load_der_public_key(spki)
            self.assertIsInstance(loaded, ed25519.Ed25519PublicKey)
            self.assertEqual(len(loaded.public_bytes(serialization.Encoding.Raw,
                                                     serialization.PublicFormat.Raw)), 32)
            fmt, spki509 = key_material(c.ok(OP_GET, get_payload(pub, FMT_X509)))
            self.assertEqual((fmt, spki509), (FMT_X509, spki))
            block = find(find(got, T["PublicKey"])[0], T["KeyBlock"])[0]
            self.assertEqual(find(block, T["CryptographicAlgorithm"]), [ALG_ED25519])
            for uid, name, obj in ((priv, "ed-priv", OBJ_PRIVATE_KEY), (pub, "ed-pub", OBJ_PUBLIC_KEY)):
                attrs = returned_attributes(c.ok(OP_GET_ATTRIBUTES, [uid_item(uid)] + attribute_refs(
                    V2, ["Object Type", "Cryptographic Algorithm", "Name", "State"])), V2)
                self.assertEqual(attrs, {"Object Type": [obj], "Cryptographic Algorithm": [ALG_ED25519],
                                         "Name": [decoded_name(name)], "State": [PRE_ACTIVE]})


class RegisterTest(TokenTestCase):
    """Register of every object type the token can hold, and Get of it back."""

    def test_keys_round_trip(self):
        from kmip.core import enums
        from kmip.pie import objects
        port = self.serve(keys={"extractable": True})
        k = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pkcs8 = k.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
        pkcs1 = k.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.PKCS1)
        e = ec.generate_private_key(ec.SECP384R1())
        spki = e.public_key().public_bytes(serialization.Encoding.DER,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
        with self.pykmip(port) as c:
            aes = c.register(objects.SymmetricKey(enums.CryptographicAlgorithm.AES, 128, b"\x11" * 16))
            self.assertEqual(c.get(aes).value, b"\x11" * 16)
            pub = c.register(objects.PublicKey(enums.CryptographicAlgorithm.RSA, 2048, pkcs1,
                                               enums.KeyFormatType.PKCS_1))
            self.assertEqual(c.get(pub).value, pkcs1)
            priv = c.register(objects.PrivateKey(enums.CryptographicAlgorithm.RSA, 2048, pkcs8,
                                                 enums.KeyFormatType.PKCS_8))
            back = serialization.load_der_private_key(c.get(priv).value, None)
            self.assertEqual(back.private_numbers(), k.private_numbers())
            ecpub = c.register(objects.PublicKey(enums.CryptographicAlgorithm.ECDSA, 384, spki,
                                                 enums.KeyFormatType.X_509))
            self.assertEqual(c.get(ecpub).value, spki)
            for uid in (aes, pub, priv, ecpub):
                self.assertRegex(uid, UID_RE if not uid.endswith("_secret") else r"^[0-9A-F]{40}_secret$")
                c.destroy(uid)

    def test_sensitive_private_key_stays_in(self):
        from kmip.core import enums
        from kmip.pie import exceptions, objects
        port = self.serve()
        pkcs8 = ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        with self.pykmip(port) as c:
            uid = c.register(objects.PrivateKey(enums.CryptographicAlgorithm.ECDSA, 256, pkcs8,
                                                enums.KeyFormatType.PKCS_8))
            with self.assertRaises(exceptions.KmipOperationFailure) as cm:
                c.get(uid)
            self.assertEqual(cm.exception.reason, enums.ResultReason.PERMISSION_DENIED)

    def test_certificate_secret_data_and_opaque_object(self):
        import ssl
        from kmip.core import enums
        from kmip.pie import objects
        port = self.serve()
        with open(self.client_cert) as f:
            der = ssl.PEM_cert_to_DER_cert(f.read())
        with self.pykmip(port) as c:
            cert = c.register(objects.X509Certificate(der))
            self.assertRegex(cert, r"^[0-9A-F]{40}_cert$")
            self.assertEqual(c.get(cert).value, der)
            secret = c.register(objects.SecretData(b"hunter2", enums.SecretDataType.PASSWORD, name="pw"))
            got = c.get(secret)
            self.assertEqual((type(got).__name__, got.value, got.data_type),
                             ("SecretData", b"hunter2", enums.SecretDataType.PASSWORD))
            blob = c.register(objects.OpaqueObject(b"\x00\x01opaque", enums.OpaqueDataType.NONE, name="blob"))
            self.assertRegex(blob, r"^[0-9A-F]{40}_data$")
            got = c.get(blob)
            self.assertEqual((type(got).__name__, got.value), ("OpaqueObject", b"\x00\x01opaque"))
            _, attrs = c.get_attributes(blob, ["Object Type", "Name"])
            self.assertEqual(pykmip_attributes(attrs), {"Object Type": [enums.ObjectType.OPAQUE_DATA],
                                                         "Name": ["blob"]})
            self.assertEqual(sorted(c.locate()), sorted([cert, secret, blob]))
            from kmip.core.factories.attributes import AttributeFactory
            by_type = AttributeFactory().create_attribute(enums.AttributeType.OBJECT_TYPE,
                                                          enums.ObjectType.SECRET_DATA)
            self.assertEqual(c.locate(attributes=[by_type]), [secret])
            by_type = AttributeFactory().create_attribute(enums.AttributeType.OBJECT_TYPE,
                                                          enums.ObjectType.OPAQUE_DATA)
            self.assertEqual(c.locate(attributes=[by_type]), [blob])
            for uid in (cert, secret, blob):
                c.destroy(uid)
            self.assertEqual(c.locate(), [])

    def test_check(self):
        port = self.serve()
        with self.client(port) as c:
            priv, pub = self.create_pair(c)
            sign = item(T["CryptographicUsageMask"], INTEGER, 1)
            # Pre-Active: its usage mask allows signing, its state does not yet.
            self.assertEqual(c.fails(OP_CHECK, [uid_item(priv), sign], V2), WRONG_KEY_LIFECYCLE_STATE)
            c.ok(OP_ACTIVATE, [uid_item(priv)], V1)
            self.assertEqual(find(c.ok(OP_CHECK, [uid_item(priv), sign], V1), T["UniqueIdentifier"]), [priv])
            encrypt = item(T["CryptographicUsageMask"], INTEGER, 4)
            self.assertEqual(c.fails(OP_CHECK, [uid_item(priv), encrypt], V2), 0x29)
            self.assertEqual(c.fails(OP_CHECK, [uid_item("00FF_priv")], V1), ITEM_NOT_FOUND)


class RawLifecycleTest(TokenTestCase):
    """The AES and RSA flows in raw TTLV, in the 1.x and the 2.x attribute encoding."""

    ATTRS = ["Object Type", "Cryptographic Algorithm", "Cryptographic Length", "State", "Name"]

    def check_aes(self, version):
        port = self.serve(keys={"extractable": True})
        with self.client(port, version) as c:
            created = c.ok(OP_CREATE, create_payload(version, name="raw-aes"))
            self.assertEqual(tags(created), [T["ObjectType"], T["UniqueIdentifier"]])
            self.assertEqual(find(created, T["ObjectType"]), [OBJ_SYMMETRIC_KEY])
            uid = find(created, T["UniqueIdentifier"])[0]
            self.assertRegex(uid, r"\A[0-9A-F]{40}_secret\Z")
            got = c.ok(OP_GET_ATTRIBUTES, [uid_item(uid)] + attribute_refs(version, self.ATTRS))
            self.assertEqual(find(got, T["UniqueIdentifier"]), [uid])
            self.assertEqual(returned_attributes(got, version), {
                "Object Type": [OBJ_SYMMETRIC_KEY], "Cryptographic Algorithm": [ALG_AES],
                "Cryptographic Length": [256], "State": [PRE_ACTIVE], "Name": [decoded_name("raw-aes")]})
            # Every attribute: asked for by none, listed by Get Attribute List.
            everything = returned_attributes(c.ok(OP_GET_ATTRIBUTES, [uid_item(uid)]), version)
            created = everything["Initial Date"][0]
            self.assertLess(abs(created - time.time()), 300)
            self.assertEqual(everything, {
                "Unique Identifier": [uid], "Object Type": [OBJ_SYMMETRIC_KEY],
                "Cryptographic Algorithm": [ALG_AES], "Cryptographic Length": [256],
                "Name": [decoded_name("raw-aes")], "State": [PRE_ACTIVE], "Initial Date": [created],
                "Cryptographic Usage Mask": [USAGE_ENCRYPT | USAGE_DECRYPT], "Last Change Date": [created]})
            self.assertEqual(self.attribute_list(c, uid, version), sorted(everything))
            # A bare CKA_ID names the key too; the response gives its full UID.
            got = c.ok(OP_GET_ATTRIBUTES, [uid_item(uid[:40])] + attribute_refs(version, ["State"]))
            self.assertEqual(find(got, T["UniqueIdentifier"]), [uid])
            self.assertEqual(c.ok(OP_ACTIVATE, [uid_item(uid)]), [(T["UniqueIdentifier"], TEXT, uid)])
            self.assertEqual(self.state(c, uid, version), [ACTIVE])
            self.assertEqual(self.attribute_list(c, uid, version), sorted(list(everything) + ["Activation Date"]))
            # Modify Attribute answers with the attribute in 1.x, with the UID alone in 2.x.
            modified = c.ok(OP_MODIFY_ATTRIBUTE, modify_payload(version, uid, "Name", STRUCTURE,
                                                                name_value("raw-aes-2")))
            if version[0] < 2:
                self.assertEqual(modified, [(T["UniqueIdentifier"], TEXT, uid), (T["Attribute"], STRUCTURE, [
                    (T["AttributeName"], TEXT, "Name"), (T["AttributeValue"], STRUCTURE, decoded_name("raw-aes-2"))])])
            else:
                self.assertEqual(modified, [(T["UniqueIdentifier"], TEXT, uid)])
            got = c.ok(OP_GET_ATTRIBUTES, [uid_item(uid)] + attribute_refs(version, ["Name"]))
            self.assertEqual(returned_attributes(got, version), {"Name": [decoded_name("raw-aes-2")]})
            got = c.ok(OP_GET, [uid_item(uid)])
            self.assertEqual(tags(got), [T["ObjectType"], T["UniqueIdentifier"], T["SymmetricKey"]])
            self.assertEqual(find(got, T["ObjectType"]), [OBJ_SYMMETRIC_KEY])
            fmt, raw = key_material(got)
            self.assertEqual((fmt, len(raw)), (FMT_RAW, 32))
            block = find(find(got, T["SymmetricKey"])[0], T["KeyBlock"])[0]
            self.assertEqual((find(block, T["CryptographicAlgorithm"]), find(block, T["CryptographicLength"])),
                             ([ALG_AES], [256]))
            fmt, transparent = key_material(c.ok(OP_GET, get_payload(uid, FMT_TRANSPARENT_SYMMETRIC)))
            self.assertEqual((fmt, transparent), (FMT_TRANSPARENT_SYMMETRIC, [(T["Key"], BYTES, raw)]))
            self.assertEqual(c.ok(OP_REVOKE, revoke_payload(uid, CESSATION_OF_OPERATION)),
                             [(T["UniqueIdentifier"], TEXT, uid)])
            self.assertEqual(self.state(c, uid, version), [DEACTIVATED])
            self.assertEqual(c.ok(OP_DESTROY, [uid_item(uid)]), [(T["UniqueIdentifier"], TEXT, uid)])
            self.assertEqual(c.fails(OP_GET, [uid_item(uid)]), ITEM_NOT_FOUND)
            self.assertEqual(c.fails(OP_GET_ATTRIBUTES, [uid_item(uid)]), ITEM_NOT_FOUND)
        self.assertNotIn(uid[:40].lower(), self.token.objects().lower(), "the key is gone from the token")

    def attribute_list(self, c, uid, version):
        """The names Get Attribute List gives, sorted."""
        listed = c.ok(OP_GET_ATTRIBUTE_LIST, [uid_item(uid)])
        self.assertEqual(find(listed, T["UniqueIdentifier"]), [uid])
        names = (find(listed, T["AttributeName"]) if version[0] < 2 else
                 [ATTRIBUTE_NAMES.get(t, "0x%06X" % t) for t in find(listed, T["AttributeReference"])])
        self.assertEqual(len(listed), 1 + len(names))
        return sorted(names)

    def check_rsa(self, version):
        port = self.serve()
        with self.client(port, version) as c:
            created = c.ok(OP_CREATE_KEY_PAIR, pair_payload(version, ALG_RSA, 2048, private_name="raw-rsa-priv",
                                                            public_name="raw-rsa-pub"))
            self.assertEqual(tags(created), [T["PrivateKeyUniqueIdentifier"], T["PublicKeyUniqueIdentifier"]])
            priv, pub = created[0][2], created[1][2]
            self.check_pair_uids(priv, pub)

            def get(key_format=None):
                got = c.ok(OP_GET, get_payload(pub, key_format))
                self.assertEqual(tags(got), [T["ObjectType"], T["UniqueIdentifier"], T["PublicKey"]])
                self.assertEqual(find(got, T["ObjectType"]) + find(got, T["UniqueIdentifier"]),
                                 [OBJ_PUBLIC_KEY, pub])
                block = find(find(got, T["PublicKey"])[0], T["KeyBlock"])[0]
                self.assertEqual((find(block, T["CryptographicAlgorithm"]), find(block, T["CryptographicLength"])),
                                 ([ALG_RSA], [2048]))
                return key_material(got)

            fmt, spki = get(FMT_X509)
            self.assertEqual(fmt, FMT_X509)
            loaded = serialization.load_der_public_key(spki)
            self.assertIsInstance(loaded, rsa.RSAPublicKey)
            self.assertEqual(loaded.key_size, 2048)
            self.assertEqual(loaded.public_bytes(serialization.Encoding.DER,
                                                 serialization.PublicFormat.SubjectPublicKeyInfo), spki)
            numbers = loaded.public_numbers()
            fmt, transparent = get(FMT_TRANSPARENT_RSA_PUBLIC)
            self.assertEqual(fmt, FMT_TRANSPARENT_RSA_PUBLIC)
            self.assertEqual([(t, ty) for t, ty, _ in transparent], [(T["Modulus"], BIGINT),
                                                                     (T["PublicExponent"], BIGINT)])
            self.assertEqual([bigint_value(v) for _, _, v in transparent], [numbers.n, numbers.e])
            fmt, pkcs1 = get()  # no format asked for: PKCS#1
            self.assertEqual(fmt, FMT_PKCS1)
            self.assertEqual(der_integer_sequence(pkcs1), [numbers.n, numbers.e])
            self.assertEqual(loaded.public_bytes(serialization.Encoding.DER,
                                                 serialization.PublicFormat.PKCS1), pkcs1)
            for uid, other, link, name, obj in ((priv, pub, LINK_PUBLIC_KEY, "raw-rsa-priv", OBJ_PRIVATE_KEY),
                                                (pub, priv, LINK_PRIVATE_KEY, "raw-rsa-pub", OBJ_PUBLIC_KEY)):
                got = c.ok(OP_GET_ATTRIBUTES, [uid_item(uid)] + attribute_refs(version, self.ATTRS + ["Link"]))
                self.assertEqual(returned_attributes(got, version), {
                    "Object Type": [obj], "Cryptographic Algorithm": [ALG_RSA], "Cryptographic Length": [2048],
                    "State": [PRE_ACTIVE], "Name": [decoded_name(name)],
                    "Link": [[(T["LinkType"], ENUM, link), (T["LinkedObjectIdentifier"], TEXT, other)]]})
            self.assertEqual(c.ok(OP_ACTIVATE, [uid_item(priv)]), [(T["UniqueIdentifier"], TEXT, priv)])
            self.assertEqual((self.state(c, priv, version), self.state(c, pub, version)), ([ACTIVE], [PRE_ACTIVE]))
            self.assertEqual(c.ok(OP_REVOKE, revoke_payload(priv, KEY_COMPROMISE)),
                             [(T["UniqueIdentifier"], TEXT, priv)])
            self.assertEqual(self.state(c, priv, version), [4])  # Compromised
            for uid in (priv, pub):
                self.assertEqual(c.ok(OP_DESTROY, [uid_item(uid)]), [(T["UniqueIdentifier"], TEXT, uid)])
            for uid in (priv, pub):
                self.assertEqual(c.fails(OP_GET_ATTRIBUTES, [uid_item(uid)]), ITEM_NOT_FOUND)
        self.assertNotIn(priv[:40].lower(), self.token.objects().lower(), "the pair is gone from the token")

    def test_aes_kmip1(self):
        self.check_aes(V1)

    def test_aes_kmip2(self):
        self.check_aes(V2)

    def test_rsa_kmip1(self):
        self.check_rsa(V1)

    def test_rsa_kmip2(self):
        self.check_rsa(V2)

    def test_hmac_keys(self):
        port = self.serve()
        for version in (V1, V2):
            with self.client(port, version) as c:
                for algorithm, length in ((ALG_HMAC_SHA256, 256), (ALG_HMAC_SHA512, 512)):
                    created = c.ok(OP_CREATE, create_payload(version, algorithm, None))
                    self.assertEqual(find(created, T["ObjectType"]), [OBJ_SYMMETRIC_KEY])
                    uid = find(created, T["UniqueIdentifier"])[0]
                    self.assertRegex(uid, r"\A[0-9A-F]{40}_secret\Z")
                    got = returned_attributes(c.ok(OP_GET_ATTRIBUTES, [uid_item(uid)] + attribute_refs(
                        version, ["Cryptographic Algorithm", "Cryptographic Length", "Cryptographic Usage Mask"])),
                        version)
                    self.assertEqual(got, {"Cryptographic Algorithm": [algorithm], "Cryptographic Length": [length],
                                           "Cryptographic Usage Mask": [USAGE_MAC_GENERATE | USAGE_MAC_VERIFY]})
                    located = c.ok(OP_LOCATE, locate_payload(version, [
                        attr(version, "Cryptographic Algorithm", ENUM, algorithm)]))
                    self.assertIn(uid, find(located, T["UniqueIdentifier"]))
                self.assertEqual(c.fails(OP_CREATE, create_payload(version, ALG_HMAC_SHA256, 100)),
                                 reason_in(version, INVALID_FIELD, INVALID_ATTRIBUTE_VALUE))

    def check_token_flags(self, c, label, uid, states):
        """The token's usage flags of the key labelled label: states[0] now, then
        after Activate, then after Revoke (Cessation of Operation)."""
        kind = {"_pub": "Public Key", "_priv": "Private Key", "_secret": "Secret Key"}[uid[40:]]
        self.assertEqual(self.token.usage()[(kind, label)], states[0], "Pre-Active")
        c.ok(OP_ACTIVATE, [uid_item(uid)])
        self.assertEqual(self.token.usage()[(kind, label)], states[1], "Active")
        c.ok(OP_REVOKE, revoke_payload(uid, CESSATION_OF_OPERATION))
        self.assertEqual(self.token.usage()[(kind, label)], states[2], "Deactivated")

    def test_token_enforces_the_state_of_a_key_pair(self):
        # The token's own usage flags follow the state: a Pre-Active key can do
        # nothing; a Deactivated one may still verify, never sign.
        port = self.serve()
        with self.client(port) as c:
            priv, pub = self.create_pair(c, V1, ALG_EC, curve=CURVE_P256, private_name="flags-priv",
                                         public_name="flags-pub")
            self.check_token_flags(c, "flags-priv", priv, ([], ["sign"], []))
            self.check_token_flags(c, "flags-pub", pub, ([], ["verify"], ["verify"]))

    def test_token_enforces_the_state_of_a_secret_key(self):
        port = self.serve()
        with self.client(port) as c:
            uid = self.create_aes(c, V1, "flags-aes")  # Usage Mask Encrypt | Decrypt
            self.check_token_flags(c, "flags-aes", uid, ([], ["encrypt", "decrypt"], ["decrypt"]))

    def test_custom_attribute_round_trip(self):
        # A custom attribute given at creation is kept with its name through
        # metadata rewrites (Activate), listed, and replaced by Modify Attribute.
        port = self.serve()
        for version in (V1, V2):
            with self.client(port, version) as c, self.subTest(version=version):
                payload = c.ok(OP_CREATE, [
                    item(T["ObjectType"], ENUM, OBJ_SYMMETRIC_KEY), container(version, "template", [
                        attr(version, "Cryptographic Algorithm", ENUM, ALG_AES),
                        attr(version, "Cryptographic Length", INTEGER, 128),
                        attr(version, "x-owner", TEXT, "alice")])])
                uid = find(payload, T["UniqueIdentifier"])[0]
                custom = lambda: {k: v for k, v in returned_attributes(c.ok(OP_GET_ATTRIBUTES, [uid_item(uid)]),
                                                                       version).items() if k not in ATTRIBUTE_TAGS}
                self.assertEqual(custom(), {"x-owner": ["alice"]})
                c.ok(OP_ACTIVATE, [uid_item(uid)])
                self.assertEqual(custom(), {"x-owner": ["alice"]})
                c.ok(OP_MODIFY_ATTRIBUTE, modify_payload(version, uid, "x-owner", TEXT, "bob"))
                self.assertEqual(custom(), {"x-owner": ["bob"]})
                listed = c.ok(OP_GET_ATTRIBUTE_LIST, [uid_item(uid)])
                if version[0] < 2:
                    self.assertIn("x-owner", find(listed, T["AttributeName"]))
                else:
                    self.assertIn([(T["VendorIdentification"], TEXT, "x"), (T["AttributeName"], TEXT, "owner")],
                                  find(listed, T["AttributeReference"]))

    def test_ec_p521_with_recommended_curve(self):
        # The curve named by Cryptographic Domain Parameters, in both encodings.
        port = self.serve()
        for version in (V1, V2):
            with self.client(port, version) as c:
                priv, pub = self.create_pair(c, version, ALG_ECDSA, curve=CURVE_P521)
                self.check_pair_uids(priv, pub)
                fmt, spki = key_material(c.ok(OP_GET, [uid_item(pub)]))
                self.assertEqual(fmt, FMT_RAW)
                self.assertIsInstance(serialization.load_der_public_key(spki).curve, ec.SECP521R1)
                got = returned_attributes(c.ok(OP_GET_ATTRIBUTES, [uid_item(priv)] + attribute_refs(
                    version, ["Cryptographic Algorithm", "Cryptographic Length"])), version)
                self.assertEqual(got, {"Cryptographic Algorithm": [ALG_ECDSA], "Cryptographic Length": [521]})


class ResultReasonTest(TokenTestCase):
    """Each Result Reason these operations give, with its code in 1.x and in 2.x."""

    def test_item_not_found(self):
        port = self.serve()
        with self.client(port) as c:
            destroyed = self.create_aes(c)
            c.ok(OP_DESTROY, [uid_item(destroyed)])
            live = self.create_aes(c)
        unknown = ["00" * 20 + "_pub", "0123456789ABCDEF0123456789ABCDEF01234567_secret",
                   live[:40] + "_pub",  # the CKA_ID of a secret key, as a public key
                   "zz", "", "ZZ_secret", live + "x", "_secret", destroyed, destroyed[:40]]
        for version in (V1, V2):
            with self.client(port, version) as c:
                for uid in unknown:
                    for op, payload in ((OP_GET, [uid_item(uid)]), (OP_GET_ATTRIBUTES, [uid_item(uid)]),
                                        (OP_GET_ATTRIBUTE_LIST, [uid_item(uid)]),
                                        (OP_ACTIVATE, [uid_item(uid)]), (OP_DESTROY, [uid_item(uid)]),
                                        (OP_REVOKE, revoke_payload(uid, CESSATION_OF_OPERATION)),
                                        (OP_MODIFY_ATTRIBUTE, modify_payload(version, uid, "Name", STRUCTURE,
                                                                             name_value("n")))):
                        with self.subTest(version=version, uid=uid, op=op):
                            self.assertEqual(c.fails(op, payload), ITEM_NOT_FOUND)
                # The live key is still there, Pre-Active.
                self.assertEqual(self.state(c, live, version), [PRE_ACTIVE])

    def test_wrong_lifecycle_state(self):
        port = self.serve()
        for version in (V1, V2):
            with self.client(port, version) as c:
                uid = self.create_aes(c, version)
                c.ok(OP_ACTIVATE, [uid_item(uid)])
                want = reason_in(version, PERMISSION_DENIED, WRONG_KEY_LIFECYCLE_STATE)
                self.assertEqual(c.fails(OP_ACTIVATE, [uid_item(uid)]), want)
                # A certificate client may not destroy an Active key.
                self.assertEqual(c.fails(OP_DESTROY, [uid_item(uid)]), want)
                self.assertEqual(self.state(c, uid, version), [ACTIVE])
                c.ok(OP_REVOKE, revoke_payload(uid, KEY_COMPROMISE))
                self.assertEqual(c.fails(OP_ACTIVATE, [uid_item(uid)]), want)
                # Compromised is final: no way back to Deactivated.
                self.assertEqual(c.fails(OP_REVOKE, revoke_payload(uid, CESSATION_OF_OPERATION)), want)
                self.assertEqual(self.state(c, uid, version), [4])
                c.ok(OP_DESTROY, [uid_item(uid)])

    def test_modify_attribute(self):
        port = self.serve()
        for version in (V1, V2):
            with self.client(port, version) as c:
                uid = self.create_aes(c, version)
                self.assertEqual(c.fails(OP_MODIFY_ATTRIBUTE, modify_payload(version, uid, "State", ENUM, ACTIVE)),
                                 reason_in(version, PERMISSION_DENIED, ATTRIBUTE_READ_ONLY))
                self.assertEqual(self.state(c, uid, version), [PRE_ACTIVE])
                self.assertEqual(c.fails(OP_MODIFY_ATTRIBUTE, modify_payload(
                    version, uid, "Contact Information", TEXT, "ops@example.com")),
                    reason_in(version, ITEM_NOT_FOUND, ATTRIBUTE_NOT_FOUND))

    def test_modify_custom_attribute_the_object_lacks(self):
        port = self.serve()
        for version in (V1, V2):
            with self.client(port, version) as c:
                uid = self.create_aes(c, version)
                with self.subTest(version=version):
                    self.assertEqual(c.fails(OP_MODIFY_ATTRIBUTE, modify_payload(
                        version, uid, "x-missing", TEXT, "value")),
                        reason_in(version, ITEM_NOT_FOUND, ATTRIBUTE_NOT_FOUND))
                    listed = c.ok(OP_GET_ATTRIBUTES, [uid_item(uid)])
                    self.assertNotIn("x-missing", returned_attributes(listed, version))

    def test_create(self):
        port = self.serve()
        for version in (V1, V2):
            with self.client(port, version) as c:
                self.assertEqual(c.fails(OP_CREATE, create_payload(version, length=100)),
                                 reason_in(version, INVALID_FIELD, INVALID_ATTRIBUTE_VALUE))
                self.assertEqual(c.fails(OP_CREATE, create_payload(version, algorithm=None)), MISSING_DATA)
                self.assertEqual(c.fails(OP_CREATE, create_payload(version, object_type=OBJ_PUBLIC_KEY)),
                                 reason_in(version, ILLEGAL_OPERATION, INVALID_OBJECT_TYPE))
                self.assertEqual(c.fails(OP_CREATE_KEY_PAIR, pair_payload(version, None, 2048, None)),
                                 MISSING_DATA)
                located = c.ok(OP_LOCATE, locate_payload(version))
                self.assertEqual(find(located, T["UniqueIdentifier"]), [], "nothing was made")

    def test_get(self):
        port = self.serve()
        with self.client(port) as c:
            priv, pub = self.create_pair(c, V1, ALG_RSA, 2048, None)
            ec_priv, _ = self.create_pair(c, V1, ALG_EC, curve=CURVE_P256)
            secret = self.create_aes(c)
        for version in (V1, V2):
            with self.client(port, version) as c:
                self.assertEqual(c.fails(OP_GET, get_payload(pub, FMT_RAW)), KEY_FORMAT_TYPE_NOT_SUPPORTED)
                self.assertEqual(c.fails(OP_GET, get_payload(secret, FMT_X509)), KEY_FORMAT_TYPE_NOT_SUPPORTED)
                # Sensitive keys (the default): the token keeps them in.
                self.assertEqual(c.fails(OP_GET, get_payload(priv)), PERMISSION_DENIED)
                self.assertEqual(c.fails(OP_GET, get_payload(ec_priv)), PERMISSION_DENIED)
                self.assertEqual(c.fails(OP_GET, get_payload(secret)), PERMISSION_DENIED)
                self.assertEqual(c.fails(OP_GET, get_payload(pub, wrapping=True)), FEATURE_NOT_SUPPORTED)

    def test_get_sensitive_ed25519_private_key(self):
        port = self.serve()
        with self.client(port, V2) as c:
            priv, _ = self.create_pair(c, V2, ALG_ED25519, curve=None)
            self.assertEqual(c.fails(OP_GET, get_payload(priv)), PERMISSION_DENIED)

    def test_revoke(self):
        port = self.serve()
        with self.client(port) as c:
            uid = self.create_aes(c)
        for version in (V1, V2):
            with self.client(port, version) as c:
                self.assertEqual(c.fails(OP_REVOKE, [uid_item(uid)]), MISSING_DATA)
                self.assertEqual(c.fails(OP_REVOKE, [uid_item(uid), item(T["RevocationReason"], STRUCTURE, [])]),
                                 MISSING_DATA)
                self.assertEqual(c.fails(OP_REVOKE, revoke_payload(uid, 0x99)), INVALID_FIELD)
                self.assertEqual(self.state(c, uid, version), [PRE_ACTIVE])

    def test_locate_by_unsupported_attribute(self):
        port = self.serve()
        for version in (V1, V2):
            with self.client(port, version) as c:
                self.assertEqual(c.fails(OP_LOCATE, locate_payload(version, [
                    attr(version, "Contact Information", TEXT, "ops@example.com")])), FEATURE_NOT_SUPPORTED)

    def test_wrong_pin(self):
        bad_pin = os.path.join(self.tmp, "bad-pin")
        with open(bad_pin, "w") as f:
            f.write("wrong-pin-zq7\n")
        port = self.serve(pin_file=bad_pin)
        for version in (V1, V2):  # two connections, two relay processes
            with self.client(port, version) as c:
                self.assertEqual(c.fails(OP_CREATE, create_payload(version)), AUTHENTICATION_NOT_SUCCESSFUL)
                self.assertEqual(c.fails(OP_GET, [uid_item("00" * 20 + "_pub")]), AUTHENTICATION_NOT_SUCCESSFUL)
                self.assertEqual(c.fails(OP_LOCATE, locate_payload(version)), AUTHENTICATION_NOT_SUCCESSFUL)
        lines = self.log_lines(wait_for="connection peer=", count=2)
        records = self.audit_records(lines)
        self.assertEqual([r["result"] for r in records], ["Authentication Not Successful"] * 6)
        self.assertFalse(any("wrong-pin-zq7" in l for l in lines), "the PIN is never logged")

    def test_no_module_configured(self):
        port = self.start(self.config())
        for version in (V1, V2):
            with self.client(port, version) as c:
                c.ok(OP_DISCOVER_VERSIONS, [])
                c.ok(OP_QUERY, [item(T["QueryFunction"], ENUM, 1)])
                bi = c.call(OP_GET, [uid_item("00" * 20 + "_pub")])
                self.assertEqual((bi[T["ResultStatus"]], bi[T["ResultReason"]]), (FAILED, GENERAL_FAILURE))
                self.assertEqual(bi[T["ResultMessage"]], "no PKCS#11 module configured (pkcs11.module)")
                c.ok(OP_DISCOVER_VERSIONS, [])

    def test_module_is_loaded_only_when_needed(self):
        # The relay loads the module with dlopen. The dynamic linker's own record of
        # what it loads (LD_DEBUG=files, written per process to LD_DEBUG_OUTPUT.<pid>)
        # shows whether a relay process loaded it: a copy of SoftHSM under a name
        # of its own, so that nothing else is it. The config names an existing,
        # real module, so the config is valid, and a token operation succeeds.
        module = os.path.join(self.tmp, "lazy-softhsm2.so")
        shutil.copy(SOFTHSM_MODULE, module)
        debug = os.path.join(self.tmp, "ld")
        self.env.update(LD_DEBUG="files", LD_DEBUG_OUTPUT=debug)
        port = self.serve(module=module)

        def loaded_by_new_processes(before):
            self.log_lines(wait_for="connection peer=127.0.0.1:%d " % local)
            files = sorted(set(glob.glob(debug + ".*")) - before)
            texts = []
            for name in files:
                with open(name, errors="replace") as f:
                    texts.append(f.read())
            relays = [t for t in texts if "kmip-relay" in t]
            self.assertEqual(len(relays), 1, "one new relay process")
            self.assertIn("libgnutls", relays[0], "the record shows the relay's libraries")
            return module in relays[0], set(files) | before

        with self.client(port) as c:
            local = c.sock.getsockname()[1]
            c.ok(OP_DISCOVER_VERSIONS, [])
            c.ok(OP_QUERY, [item(T["QueryFunction"], ENUM, 1)])
        loaded, seen = loaded_by_new_processes(set())
        self.assertFalse(loaded, "Discover Versions and Query loaded the module")
        with self.client(port) as c:
            local = c.sock.getsockname()[1]
            self.assertEqual(c.fails(OP_GET, [uid_item("00" * 20 + "_pub")]), ITEM_NOT_FOUND)
        loaded, _ = loaded_by_new_processes(seen)
        self.assertTrue(loaded, "Get loaded the module")
        self.assertFalse(any("token:" in l for l in self.log_lines()))


class IDPlaceholderTest(TokenTestCase):
    def test_create_key_pair_then_activate_without_uid(self):
        port = self.serve()
        for version in (V1, V2):
            with self.connect(port) as s:
                resp = exchange(s, request_message([
                    batch_item(OP_CREATE_KEY_PAIR, pair_payload(version, ALG_EC, curve=CURVE_P256), b"\x01"),
                    batch_item(OP_ACTIVATE, [], b"\x02")], version=version))
            created, activated = batch_items(resp)
            self.assertEqual(tags([(t, 0, v) for t, v in created.items()]),
                             [T["Operation"], T["UniqueBatchItemID"], T["ResultStatus"], T["ResponsePayload"]])
            self.assertEqual((created[T["Operation"]], created[T["UniqueBatchItemID"]], created[T["ResultStatus"]]),
                             (OP_CREATE_KEY_PAIR, b"\x01", SUCCESS))
            self.assertEqual((activated[T["Operation"]], activated[T["UniqueBatchItemID"]],
                              activated[T["ResultStatus"]]), (OP_ACTIVATE, b"\x02", SUCCESS))
            priv = find(created[T["ResponsePayload"]], T["PrivateKeyUniqueIdentifier"])[0]
            pub = find(created[T["ResponsePayload"]], T["PublicKeyUniqueIdentifier"])[0]
            self.check_pair_uids(priv, pub)
            self.assertEqual(activated[T["ResponsePayload"]], [(T["UniqueIdentifier"], TEXT, priv)])
            with self.client(port, version) as c:
                self.assertEqual(self.state(c, priv, version), [ACTIVE])
                self.assertEqual(self.state(c, pub, version), [PRE_ACTIVE])

    def test_placeholder_does_not_outlive_its_batch(self):
        port = self.serve()
        with self.client(port) as c:
            self.create_aes(c)
            self.assertEqual(c.fails(OP_ACTIVATE, []), MISSING_DATA)


class TwoProcessesTest(TokenTestCase):
    def test_changes_are_seen_by_another_relay_process(self):
        # Two relays (two listeners, one process per connection) on one token.
        port_a, port_b = self.serve(), self.serve()
        with self.client(port_a, V1) as a, self.client(port_b, V2) as b:
            priv, pub = self.create_pair(a, V1, ALG_ECDSA, 256, None, "zsk-new-priv", "zsk-new-pub")
            # b has opened the token and looked at the keys before a changes them.
            self.assertEqual(self.state(b, priv, V2), [PRE_ACTIVE])
            by_name = lambda name: find(b.ok(OP_LOCATE, locate_payload(V2, [name_attr(V2, name)])),
                                        T["UniqueIdentifier"])
            self.assertEqual(by_name("zsk-new-priv"), [priv])
            for uid, name in ((pub, "example.com-1-zsk-pub"), (priv, "example.com-1-zsk-priv")):
                self.assertEqual(find(a.ok(OP_MODIFY_ATTRIBUTE, modify_payload(V1, uid, "Name", STRUCTURE,
                                                                               name_value(name))),
                                      T["UniqueIdentifier"]), [uid])
            a.ok(OP_ACTIVATE, [uid_item(priv)])
            self.assertEqual(by_name("example.com-1-zsk-priv"), [priv])
            self.assertEqual(by_name("example.com-1-zsk-pub"), [pub])
            self.assertEqual(by_name("zsk-new-priv"), [])
            got = returned_attributes(b.ok(OP_GET_ATTRIBUTES, [uid_item(priv)] + attribute_refs(
                V2, ["Name", "State"])), V2)
            self.assertEqual(got, {"Name": [decoded_name("example.com-1-zsk-priv")], "State": [ACTIVE]})
            self.assertEqual(self.state(b, pub, V2), [PRE_ACTIVE])
            # And back: b revokes, a sees it at once.
            b.ok(OP_REVOKE, revoke_payload(priv, CESSATION_OF_OPERATION))
            self.assertEqual(self.state(a, priv, V1), [DEACTIVATED])


class LocateTest(TokenTestCase):
    def setUp(self):
        super().setUp()
        self.port = self.serve()
        with self.client(self.port, V2) as c:
            self.aes128 = self.create_aes(c, V2, "loc-aes-128", 128)
            self.aes256 = self.create_aes(c, V2, "loc-aes-256", 256)
            self.aes256b = self.create_aes(c, V2, "loc-aes-256b", 256)
            c.ok(OP_ACTIVATE, [uid_item(self.aes256b)])
            self.ec = self.create_pair(c, V2, ALG_EC, None, CURVE_P256, "loc-ec-priv", "loc-ec-pub")
            self.ecdsa = self.create_pair(c, V2, ALG_ECDSA, 384, None, "loc-ecdsa-priv", "loc-ecdsa-pub")
            self.rsa = self.create_pair(c, V2, ALG_RSA, 2048, None, "loc-rsa-priv", "loc-rsa-pub")
            c.ok(OP_ACTIVATE, [uid_item(self.rsa[0])])
        self.all = {self.aes128, self.aes256, self.aes256b} | set(self.ec) | set(self.ecdsa) | set(self.rsa)

    def locate(self, c, version, attrs=(), **kw):
        payload = c.ok(OP_LOCATE, locate_payload(version, attrs, **kw))
        uids = find(payload, T["UniqueIdentifier"])
        self.assertEqual(len(uids), len(set(uids)), "no UID twice")
        if version in (V1,):
            self.assertEqual(find(payload, T["LocatedItems"]), [], "1.2 has no Located Items")
        else:
            self.assertEqual(len(find(payload, T["LocatedItems"])), 1)
        return uids

    def test_filters(self):
        for version in (V1, V14, V2):
            with self.client(self.port, version) as c:
                def by(*attrs):
                    return set(self.locate(c, version, attrs))

                def a(name, typ, value):
                    return attr(version, name, typ, value)
                self.assertEqual(by(), self.all)
                self.assertEqual(by(a("Object Type", ENUM, OBJ_SYMMETRIC_KEY)),
                                 {self.aes128, self.aes256, self.aes256b})
                self.assertEqual(by(a("Object Type", ENUM, OBJ_PUBLIC_KEY)),
                                 {self.ec[1], self.ecdsa[1], self.rsa[1]})
                self.assertEqual(by(a("Object Type", ENUM, OBJ_PRIVATE_KEY)),
                                 {self.ec[0], self.ecdsa[0], self.rsa[0]})
                self.assertEqual(by(a("Object Type", ENUM, 7)), set())  # Secret Data
                self.assertEqual(by(a("Cryptographic Algorithm", ENUM, ALG_AES)),
                                 {self.aes128, self.aes256, self.aes256b})
                self.assertEqual(by(a("Cryptographic Algorithm", ENUM, ALG_RSA)), set(self.rsa))
                # EC and ECDSA name the same keys.
                self.assertEqual(by(a("Cryptographic Algorithm", ENUM, ALG_EC)), set(self.ec) | set(self.ecdsa))
                self.assertEqual(by(a("Cryptographic Algorithm", ENUM, ALG_ECDSA)), set(self.ec) | set(self.ecdsa))
                self.assertEqual(by(a("Cryptographic Algorithm", ENUM, ALG_ED25519)), set())
                self.assertEqual(by(a("Cryptographic Length", INTEGER, 256)), {self.aes256, self.aes256b} | set(self.ec))
                self.assertEqual(by(a("Cryptographic Length", INTEGER, 128)), {self.aes128})
                self.assertEqual(by(a("Cryptographic Length", INTEGER, 2048)), set(self.rsa))
                self.assertEqual(by(a("State", ENUM, ACTIVE)), {self.aes256b, self.rsa[0]})
                self.assertEqual(by(a("State", ENUM, PRE_ACTIVE)), self.all - {self.aes256b, self.rsa[0]})
                self.assertEqual(by(name_attr(version, "loc-aes-256")), {self.aes256})
                self.assertEqual(by(name_attr(version, "loc-ecdsa-pub")), {self.ecdsa[1]})
                self.assertEqual(by(name_attr(version, "loc-aes")), set())
                self.assertEqual(by(name_attr(version, "loc-aes-256"), a("Object Type", ENUM, OBJ_PUBLIC_KEY)), set())
                self.assertEqual(by(a("Object Type", ENUM, OBJ_PUBLIC_KEY), a("Cryptographic Length", INTEGER, 384)),
                                 {self.ecdsa[1]})
                self.assertEqual(by(a("Cryptographic Algorithm", ENUM, ALG_AES), a("Cryptographic Length", INTEGER, 256),
                                    a("State", ENUM, PRE_ACTIVE)), {self.aes256})

    def test_maximum_and_offset_items(self):
        for version in (V14, V2):
            with self.client(self.port, version) as c:
                everything = self.locate(c, version)
                self.assertEqual(set(everything), self.all)
                pages = [self.locate(c, version, maximum=2, offset=o) for o in range(0, 10, 2)]
                self.assertEqual([len(p) for p in pages], [2, 2, 2, 2, 1])
                self.assertEqual(sum(pages, []), everything, "the pages are the whole list, in its order")
                self.assertEqual(self.locate(c, version, maximum=3), everything[:3])
                self.assertEqual(self.locate(c, version, offset=7), everything[7:])
                self.assertEqual(self.locate(c, version, offset=9), [])
                self.assertEqual(self.locate(c, version, offset=100), [])
                sym = [a for a in everything if a.endswith("_secret")]
                self.assertEqual(self.locate(c, version, [attr(version, "Object Type", ENUM, OBJ_SYMMETRIC_KEY)],
                                             maximum=1, offset=1), sym[1:2])

    def test_located_items_counts_every_match(self):
        # KMIP 1.3+: Located Items is the number of objects that match, which
        # Maximum Items and Offset Items do not change.
        for version in (V14, V2):
            with self.client(self.port, version) as c:
                for kw in ({}, {"maximum": 2}, {"offset": 7}, {"maximum": 2, "offset": 2}):
                    with self.subTest(version=version, **kw):
                        payload = c.ok(OP_LOCATE, locate_payload(version, **kw))
                        self.assertEqual(find(payload, T["LocatedItems"]), [9])


class AuditTest(TokenTestCase):
    def test_operations_on_objects_name_the_uid(self):
        port = self.serve()
        with self.client(port, V2) as c:
            uid = self.create_aes(c, V2, "audited")
            c.ok(OP_GET_ATTRIBUTES, [uid_item(uid)])
            c.ok(OP_GET_ATTRIBUTE_LIST, [uid_item(uid)])
            c.ok(OP_ACTIVATE, [uid_item(uid)])
            c.fails(OP_GET, [uid_item(uid)])
            c.ok(OP_LOCATE, locate_payload(V2, [name_attr(V2, "audited")]))
            c.ok(OP_MODIFY_ATTRIBUTE, modify_payload(V2, uid, "Name", STRUCTURE, name_value("audited-2")))
            c.ok(OP_REVOKE, revoke_payload(uid, CESSATION_OF_OPERATION))
            c.ok(OP_DESTROY, [uid_item(uid)])
            c.fails(OP_GET, [uid_item(uid)])
            priv, pub = self.create_pair(c, V2)
            c.ok(OP_GET, [uid_item(pub)])
            c.ok(OP_QUERY, [item(T["QueryFunction"], ENUM, 1)])
            local = c.sock.getsockname()[1]
        records = self.audit_records(self.log_lines(wait_for="connection peer=127.0.0.1:%d " % local))
        client = "sha256:" + spki_sha256(self.client_cert)
        self.assertEqual([(r["client"], r["operation"], r["result"], r.get("uid")) for r in records], [
            (client, "Create", "Success", uid),
            (client, "Get Attributes", "Success", uid),
            (client, "Get Attribute List", "Success", uid),
            (client, "Activate", "Success", uid),
            (client, "Get", "Permission Denied", uid),
            (client, "Locate", "Success", None),
            (client, "Modify Attribute", "Success", uid),
            (client, "Revoke", "Success", uid),
            (client, "Destroy", "Success", uid),
            (client, "Get", "Item Not Found", None),
            (client, "Create Key Pair", "Success", priv),
            (client, "Get", "Success", pub),
            (client, "Query", "Success", None),
        ])
        for r in records:
            self.assertEqual(sorted(r), sorted(AUDIT_KEYS + (["uid"] if "uid" in r else [])))


if __name__ == "__main__":
    unittest.main()

# SPDX-License-Identifier: BSD-3-Clause
"""Key management on a SoftHSM token, over real TLS: Create, Create Key Pair, Get,
Get Attributes, Get Attribute List, Modify Attribute, Activate, Revoke, Destroy and
Locate, through PyKMIP's ProxyKmipClient and in raw TTLV in both attribute
encodings (KMIP 1.x Template-Attribute, KMIP 2.x Attributes); every Result Reason
these operations give, in 1.x and 2.x; ID Placeholders in batches; state shared
between relay processes through the token; audit records; secrets masked in
traces."""

import datetime
import glob
import hashlib
import os
import shutil
import time
import unittest

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed25519, rsa
from cryptography.x509.oid import NameOID

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
from relaytest import (attribute, attributes_by_name, BOOL, DATETIME, OP_ADD_ATTRIBUTE, OP_DELETE_ATTRIBUTE,
                       OP_REGISTER,
                       UNSUPPORTED_CRYPTOGRAPHIC_PARAMETERS, INCOMPATIBLE_CRYPTOGRAPHIC_USAGE_MASK)

V14 = (1, 4)              # the newest 1.x: Locate has Offset Items and Located Items

# The attributes the relay sets besides those relaytest knows, and the items of
# the objects that these tests register.
T.update({
    "Digest": 0x420034, "DigestValue": 0x420035, "OriginalCreationDate": 0x4200BC,
    "RandomNumberGenerator": 0x4200DE, "RNGAlgorithm": 0x4200DA, "Fresh": 0x4200A8,
    "AlwaysSensitive": 0x420121, "NeverExtractable": 0x420123, "DestroyDate": 0x420033,
    "CertificateType": 0x42001D, "CertificateLength": 0x4200AD, "CertificateSubjectCN": 0x420108,
    "CertificateSubjectO": 0x420109, "CertificateIssuerCN": 0x420114, "ProtectStopDate": 0x420068,
    "StorageStatusMask": 0x42008E, "SecretData": 0x420085, "SecretDataType": 0x420086,
    "Certificate": 0x420013, "CertificateValue": 0x42001E, "OpaqueObject": 0x42005B,
    "OpaqueDataType": 0x420059, "OpaqueDataValue": 0x42005A, "PrivateExponent": 0x420063,
    "P": 0x42005E, "Q": 0x420071, "G": 0x420037, "X": 0x42009F, "Y": 0x4200A0,
    "PrimeExponentP": 0x420060, "PrimeExponentQ": 0x420061, "CRTCoefficient": 0x420027,
    "Description": 0x4200FC, "Comment": 0x4200FD, "ProtectionLevel": 0x420145,
})
for _name, _tag in (("Digest", "Digest"), ("Original Creation Date", "OriginalCreationDate"),
                    ("Random Number Generator", "RandomNumberGenerator"), ("Fresh", "Fresh"),
                    ("Key Format Type", "KeyFormatType"), ("Always Sensitive", "AlwaysSensitive"),
                    ("Never Extractable", "NeverExtractable"), ("Destroy Date", "DestroyDate"),
                    ("Certificate Type", "CertificateType"), ("Certificate Length", "CertificateLength"),
                    ("Certificate Subject CN", "CertificateSubjectCN"),
                    ("Certificate Subject O", "CertificateSubjectO"),
                    ("Certificate Issuer CN", "CertificateIssuerCN"), ("Protect Stop Date", "ProtectStopDate"),
                    ("Description", "Description"), ("Comment", "Comment"),
                    ("Protection Level", "ProtectionLevel")):
    ATTRIBUTE_TAGS[_name] = T[_tag]
    ATTRIBUTE_NAMES[T[_tag]] = _name
DESTROYED, DESTROYED_COMPROMISED = 5, 6
OBJECT_DESTROYED, OBJECT_NOT_FOUND, SENSITIVE = 0x36, 0x37, 0x16
NON_UNIQUE_NAME_ATTRIBUTE, ATTRIBUTE_SINGLE_VALUED, INDEX_OUT_OF_BOUNDS = 0x35, 0x23, 0x0E
FMT_PKCS8, FMT_TRANSPARENT_DSA_PRIVATE, FMT_TRANSPARENT_DSA_PUBLIC = 0x04, 0x08, 0x09
FMT_TRANSPARENT_RSA_PRIVATE = 0x0A
OBJ_CERTIFICATE, OBJ_SECRET_DATA, OBJ_OPAQUE = 1, 7, 8
ALG_DSA, ALG_CHACHA20 = 0x05, 0x1C
SHA_256, RNG_UNSPECIFIED = 0x06, 0x01
STORAGE_ONLINE, STORAGE_DESTROYED = 1, 4


def digest(data, key_format=None):
    """A Digest attribute as relaytest.decode gives it: SHA-256 of data, with the Key
    Format Type it was computed in (none for certificates and Opaque Objects)."""
    fields = [(T["HashingAlgorithm"], ENUM, SHA_256), (T["DigestValue"], BYTES, hashlib.sha256(data).digest())]
    return fields + ([(T["KeyFormatType"], ENUM, key_format)] if key_format else [])


def protection(sensitive, extractable, always_sensitive=None, never_extractable=None):
    """Sensitive, Always Sensitive, Extractable and Never Extractable, as returned."""
    return {"Sensitive": [sensitive], "Extractable": [extractable],
            "Always Sensitive": [sensitive if always_sensitive is None else always_sensitive],
            "Never Extractable": [(not extractable) if never_extractable is None else never_extractable]}


def big(n):
    """A non-negative integer as a TTLV Big Integer's bytes (sign-extended, padded to 8)."""
    raw = n.to_bytes(n.bit_length() // 8 + 1, "big")
    return b"\0" * (-len(raw) % 8) + raw


def register_payload(object_type, obj_tag, key_format, material, algorithm=None, length=None, attrs=(),
                     version=(2, 1), extra=()):
    """A 2.x Register of a key object (or Secret Data) with one Key Block."""
    block = [item(T["KeyFormatType"], ENUM, key_format), item(T["KeyValue"], STRUCTURE, [material])]
    if algorithm is not None:
        block += [item(T["CryptographicAlgorithm"], ENUM, algorithm), item(T["CryptographicLength"], INTEGER, length)]
    return [item(T["ObjectType"], ENUM, object_type), container(version, "template", list(attrs)),
            item(obj_tag, STRUCTURE, list(extra) + [item(T["KeyBlock"], STRUCTURE, block)])]

AUDIT_KEYS = ["client", "latency_us", "operation", "peer", "result"]


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
            self.assertRegex(uid, r"\A[0-9A-F]{64}_secret\Z")
            got, attrs = c.get_attributes(uid, self.NAMES)
            self.assertEqual(got, uid)
            self.assertEqual(pykmip_attributes(attrs), {
                "State": [enums.State.PRE_ACTIVE], "Name": ["pykmip-aes"],
                "Cryptographic Algorithm": [enums.CryptographicAlgorithm.AES],
                "Cryptographic Length": [256]})
            # KMIP 1.2 has Original Creation Date; no Digest of a key the relay cannot
            # read.
            self.assertEqual(c.get_attribute_list(uid), sorted([
                "Unique Identifier", "Object Type", "Cryptographic Algorithm", "Cryptographic Length",
                "Name", "State", "Initial Date", "Cryptographic Usage Mask", "Last Change Date",
                "Original Creation Date"]))
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
            # KMIP keeps a destroyed object's attributes; 1.2 says Item Not Found for
            # its value.
            for uid in (pub, priv):
                _, attrs = c.get_attributes(uid, ["State"])
                self.assertEqual(pykmip_attributes(attrs), {"State": [enums.State.DESTROYED]})
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
                self.assertRegex(uid, UID_RE if not uid.endswith("_secret") else r"^[0-9A-F]{64}_secret$")
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
            self.assertRegex(cert, r"^[0-9A-F]{64}_cert$")
            self.assertEqual(c.get(cert).value, der)
            secret = c.register(objects.SecretData(b"hunter2", enums.SecretDataType.PASSWORD, name="pw"))
            got = c.get(secret)
            self.assertEqual((type(got).__name__, got.value, got.data_type),
                             ("SecretData", b"hunter2", enums.SecretDataType.PASSWORD))
            blob = c.register(objects.OpaqueObject(b"\x00\x01opaque", enums.OpaqueDataType.NONE, name="blob"))
            self.assertRegex(blob, r"^[0-9A-F]{64}_data$")
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
            self.assertRegex(uid, r"\A[0-9A-F]{64}_secret\Z")
            got = c.ok(OP_GET_ATTRIBUTES, [uid_item(uid)] + attribute_refs(version, self.ATTRS))
            self.assertEqual(find(got, T["UniqueIdentifier"]), [uid])
            self.assertEqual(returned_attributes(got, version), {
                "Object Type": [OBJ_SYMMETRIC_KEY], "Cryptographic Algorithm": [ALG_AES],
                "Cryptographic Length": [256], "State": [PRE_ACTIVE], "Name": [decoded_name("raw-aes")]})
            # Every attribute: asked for by none, listed by Get Attribute List.
            everything = returned_attributes(c.ok(OP_GET_ATTRIBUTES, [uid_item(uid)]), version)
            created = everything["Initial Date"][0]
            self.assertLess(abs(created - time.time()), 300)
            key_digest = everything.pop("Digest")  # checked against the key below
            expected = {
                "Unique Identifier": [uid], "Object Type": [OBJ_SYMMETRIC_KEY],
                "Cryptographic Algorithm": [ALG_AES], "Cryptographic Length": [256],
                "Name": [decoded_name("raw-aes")], "State": [PRE_ACTIVE], "Initial Date": [created],
                "Cryptographic Usage Mask": [USAGE_ENCRYPT | USAGE_DECRYPT], "Last Change Date": [created],
                "Original Creation Date": [created]}
            if version[0] >= 2:  # 1.3, 1.4 and 2.0 attributes
                expected.update(protection(False, True))
                expected.update({"Random Number Generator": [[(T["RNGAlgorithm"], ENUM, RNG_UNSPECIFIED)]],
                                 "Key Format Type": [FMT_RAW]})
            self.assertEqual(everything, expected)
            everything["Digest"] = key_digest
            self.assertEqual(self.attribute_list(c, uid, version), sorted(everything))
            # A bare CKA_ID names the key too; the response gives its full UID.
            got = c.ok(OP_GET_ATTRIBUTES, [uid_item(uid[:64])] + attribute_refs(version, ["State"]))
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
            self.assertEqual(key_digest, [digest(raw, FMT_RAW)])
            block = find(find(got, T["SymmetricKey"])[0], T["KeyBlock"])[0]
            self.assertEqual((find(block, T["CryptographicAlgorithm"]), find(block, T["CryptographicLength"])),
                             ([ALG_AES], [256]))
            fmt, transparent = key_material(c.ok(OP_GET, get_payload(uid, FMT_TRANSPARENT_SYMMETRIC)))
            self.assertEqual((fmt, transparent), (FMT_TRANSPARENT_SYMMETRIC, [(T["Key"], BYTES, raw)]))
            self.assertEqual(c.ok(OP_REVOKE, revoke_payload(uid, CESSATION_OF_OPERATION)),
                             [(T["UniqueIdentifier"], TEXT, uid)])
            self.assertEqual(self.state(c, uid, version), [DEACTIVATED])
            self.assertEqual(c.ok(OP_DESTROY, [uid_item(uid)]), [(T["UniqueIdentifier"], TEXT, uid)])
            # The value is gone, the attributes stay (KMIP 2.1 section 6.1.15).
            self.assertEqual(c.fails(OP_GET, [uid_item(uid)]), reason_in(version, ITEM_NOT_FOUND, OBJECT_DESTROYED))
            got = returned_attributes(c.ok(OP_GET_ATTRIBUTES, [uid_item(uid)]), version)
            self.assertEqual((got["State"], got["Name"], got["Digest"]),
                             ([DESTROYED], [decoded_name("raw-aes-2")], key_digest))
            self.assertLess(abs(got["Destroy Date"][0] - time.time()), 300)
        self.assertNotIn(uid[:64].lower(), self.token.objects("secrkey").lower(), "the key is gone from the token")

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
            self.assertEqual(self.state(c, priv, version), [DESTROYED_COMPROMISED])
            self.assertEqual(self.state(c, pub, version), [DESTROYED])
        for kind in ("privkey", "pubkey"):
            self.assertNotIn(priv[:64].lower(), self.token.objects(kind).lower(), "the pair is gone from the token")

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
                    self.assertRegex(uid, r"\A[0-9A-F]{64}_secret\Z")
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
        kind = {"_pub": "Public Key", "_priv": "Private Key", "_secret": "Secret Key"}[uid[64:]]
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
            live = self.create_aes(c)
        unknown = ["00" * 20 + "_pub", "0123456789ABCDEF0123456789ABCDEF01234567_secret",
                   live[:64] + "_pub",  # the CKA_ID of a secret key, as a public key
                   "zz", "", "ZZ_secret", live + "x", "_secret", "AAABBBCCC"]
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
                            # KMIP 2.1 section 6.1.19.1 and BL-M-4-21: Object Not Found.
                            self.assertEqual(c.fails(op, payload), reason_in(version, ITEM_NOT_FOUND,
                                                                             OBJECT_NOT_FOUND))
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
                # Sensitive keys (the default): the token keeps them in. KMIP 2.1
                # section 6.1.19.1 names the reason (BL-M-12-21).
                sensitive = reason_in(version, PERMISSION_DENIED, SENSITIVE)
                self.assertEqual(c.fails(OP_GET, get_payload(priv)), sensitive)
                self.assertEqual(c.fails(OP_GET, get_payload(ec_priv)), sensitive)
                self.assertEqual(c.fails(OP_GET, get_payload(secret)), sensitive)
                self.assertEqual(c.fails(OP_GET, get_payload(pub, wrapping=True)), FEATURE_NOT_SUPPORTED)

    def test_get_sensitive_ed25519_private_key(self):
        port = self.serve()
        with self.client(port, V2) as c:
            priv, _ = self.create_pair(c, V2, ALG_ED25519, curve=None)
            self.assertEqual(c.fails(OP_GET, get_payload(priv)), SENSITIVE)

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
        # Each on a connection (and relay process) of its own: the refusal closes it.
        for version, op, payload in ((V1, OP_CREATE, create_payload(V1)), (V2, OP_GET, [uid_item("00" * 20 + "_pub")]),
                                     (V2, OP_LOCATE, locate_payload(V2))):
            with self.client(port, version) as c:
                self.assertEqual(c.fails(op, payload), AUTHENTICATION_NOT_SUCCESSFUL)
                self.assertTrue(c.is_closed())
        lines = self.log_lines(wait_for="connection peer=", count=3)
        records = self.audit_records(lines)
        self.assertEqual([r["result"] for r in records], ["Authentication Not Successful"] * 3)
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


class UndoTest(TokenTestCase):
    """Batch Error Continuation Option Undo: when an item fails, what the items before
    it changed is put back, in the metadata and in the token's flags."""

    UNDO, OPERATION_UNDONE = 3, 3  # the option, and the Result Status

    def undo_batch(self, c, version, items):
        return batch_items(exchange(c.sock, request_message(items, version=version, batch_error_option=self.UNDO)))

    def test_activate_and_attribute_changes_are_undone(self):
        port = self.serve()
        for version in (V1, V2):
            with self.subTest(version=version), self.client(port, version) as c:
                name = "undo-%d" % version[0]
                uid = self.create_aes(c, version, name=name)
                flags = self.token.usage()[("Secret Key", name)]
                activated, renamed, checked = self.undo_batch(c, version, [
                    batch_item(OP_ACTIVATE, [uid_item(uid)], b"\x01"),
                    batch_item(OP_MODIFY_ATTRIBUTE, modify_payload(version, uid, "Name", STRUCTURE,
                                                                   name_value(name + "-new")), b"\x02"),
                    batch_item(OP_CHECK, [uid_item(uid), item(T["CryptographicUsageMask"], INTEGER, 0x01)],
                               b"\x03")])
                self.assertEqual([(bi[T["UniqueBatchItemID"]], bi[T["ResultStatus"]], bi.get(T["ResultReason"]))
                                  for bi in (activated, renamed, checked)],
                                 [(b"\x01", self.OPERATION_UNDONE, None), (b"\x02", self.OPERATION_UNDONE, None),
                                  (b"\x03", FAILED,
                                   reason_in(version, PERMISSION_DENIED, INCOMPATIBLE_CRYPTOGRAPHIC_USAGE_MASK))])
                # An undone item gives nothing (the OASIS case BL-M-2 shows a payload; see
                # the conformance runner's undone-payload leniency).
                self.assertNotIn(T["ResponsePayload"], activated)
                self.assertEqual(self.state(c, uid, version), [PRE_ACTIVE])
                self.assertEqual(self.token.usage()[("Secret Key", name)], flags)
                self.assertNotIn("label:    " + name + "-new", self.token.objects())
                # Activate again works: the key really is Pre-Active.
                c.ok(OP_ACTIVATE, [uid_item(uid)])
                self.assertEqual(self.state(c, uid, version), [ACTIVE])

    def test_creation_is_undone(self):
        port = self.serve()
        with self.client(port, V2) as c:
            before = self.token.objects()
            created, activated, missing = self.undo_batch(c, V2, [
                batch_item(OP_CREATE_KEY_PAIR, pair_payload(V2, ALG_EC, curve=CURVE_P256, private_name="undone"),
                           b"\x01"),
                batch_item(OP_ACTIVATE, [], b"\x02"),
                batch_item(OP_GET, [uid_item("00" * 20 + "_priv")], b"\x03")])
            self.assertEqual([bi[T["ResultStatus"]] for bi in (created, activated, missing)],
                             [self.OPERATION_UNDONE, self.OPERATION_UNDONE, FAILED])
            self.assertNotIn(T["ResponsePayload"], created)
            # The pair and its metadata are gone: the token is as it was.
            self.assertEqual(self.token.objects(), before)
            self.assertEqual(find(c.ok(OP_LOCATE, [item(T["Attributes"], STRUCTURE, [])], V2),
                                  T["UniqueIdentifier"]), [])

    def test_destroy_cannot_be_undone(self):
        port = self.serve()
        with self.client(port, V2) as c:
            uid = self.create_aes(c, V2, name="kept")
            (refused,) = self.undo_batch(c, V2, [batch_item(OP_DESTROY, [uid_item(uid)], b"\x01"),
                                                batch_item(OP_QUERY, [], b"\x02")])
            self.assertEqual((refused[T["ResultStatus"]], refused[T["ResultReason"]], refused[T["ResultMessage"]]),
                             (FAILED, FEATURE_NOT_SUPPORTED,
                              "Batch Error Continuation Option Undo: a destroyed key cannot be brought back"))
            self.assertEqual(self.state(c, uid, V2), [PRE_ACTIVE])


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


def certificate(subject_cn, subject_o, issuer_cn):
    """A self-made X.509 certificate's DER, signed by a key of its own."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = lambda *parts: x509.Name([x509.NameAttribute(oid, v) for oid, v in parts])
    now = time.time()
    return (x509.CertificateBuilder()
            .subject_name(name((NameOID.COMMON_NAME, subject_cn), (NameOID.ORGANIZATION_NAME, subject_o)))
            .issuer_name(name((NameOID.COMMON_NAME, issuer_cn)))
            .public_key(key.public_key()).serial_number(1)
            .not_valid_before(datetime.datetime.fromtimestamp(now - 60))
            .not_valid_after(datetime.datetime.fromtimestamp(now + 3600))
            .sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER))


def key_material_item(value):
    """A Key Material item: a Byte String, or a structure of (tag name, Big Integer)."""
    if isinstance(value, bytes):
        return item(T["KeyMaterial"], BYTES, value)
    return item(T["KeyMaterial"], STRUCTURE, [item(T[name], BIGINT, big(n)) for name, n in value])


def rsa_private_fields(k):
    n = k.private_numbers()
    return [("Modulus", n.public_numbers.n), ("PrivateExponent", n.d), ("PublicExponent", n.public_numbers.e),
            ("P", n.p), ("Q", n.q), ("PrimeExponentP", n.dmp1), ("PrimeExponentQ", n.dmq1),
            ("CRTCoefficient", n.iqmp)]


class KmipAttributesTest(TokenTestCase):
    """The attributes the relay sets: Digest, Original Creation Date, Random Number
    Generator, Key Format Type, Fresh, the protection flags and the certificate's."""

    def attributes(self, c, uid, names=(), version=V2):
        return returned_attributes(c.ok(OP_GET_ATTRIBUTES, [uid_item(uid)] + attribute_refs(version, names),
                                        version), version)

    def register(self, c, payload):
        return find(c.ok(OP_REGISTER, payload, V2), T["UniqueIdentifier"])[0]

    def test_digest_of_registered_objects(self):
        # The material as registered, and (where the token lets the key out) the
        # KMIP default format too (KMIP 2.1 section 4.21).
        port, port_x = self.serve(), self.serve(keys={"extractable": True})
        key = bytes(range(32))
        aes_transparent = item(T["KeyMaterial"], STRUCTURE, [item(T["Key"], BYTES, key)])
        k = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pkcs1 = k.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.PKCS1)
        spki = k.public_key().public_bytes(serialization.Encoding.DER,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
        der = certificate("digest", "Example", "digest CA")
        with self.client(port, V2) as c, self.client(port_x, V2) as x:
            def digests(client, payload):
                uid = self.register(client, payload)
                return self.attributes(client, uid, ["Digest", "Key Format Type"])

            self.assertEqual(digests(c, register_payload(OBJ_SYMMETRIC_KEY, T["SymmetricKey"], FMT_RAW,
                                                         key_material_item(key), ALG_AES, 256)),
                             {"Digest": [digest(key, FMT_RAW)], "Key Format Type": [FMT_RAW]})
            # A sensitive key: only the digest of what the request carried.
            payload = register_payload(OBJ_SYMMETRIC_KEY, T["SymmetricKey"], FMT_TRANSPARENT_SYMMETRIC,
                                       aes_transparent, ALG_AES, 256)
            self.assertEqual(digests(c, payload), {"Digest": [digest(aes_transparent, FMT_TRANSPARENT_SYMMETRIC)],
                                                   "Key Format Type": [FMT_TRANSPARENT_SYMMETRIC]})
            self.assertEqual(digests(x, payload), {
                "Digest": [digest(aes_transparent, FMT_TRANSPARENT_SYMMETRIC), digest(key, FMT_RAW)],
                "Key Format Type": [FMT_TRANSPARENT_SYMMETRIC]})
            self.assertEqual(digests(c, register_payload(OBJ_PUBLIC_KEY, T["PublicKey"], FMT_PKCS1,
                                                         key_material_item(pkcs1), ALG_RSA, 2048)),
                             {"Digest": [digest(pkcs1, FMT_PKCS1)], "Key Format Type": [FMT_PKCS1]})
            self.assertEqual(digests(c, register_payload(OBJ_PUBLIC_KEY, T["PublicKey"], FMT_X509,
                                                         key_material_item(spki), ALG_RSA, 2048)),
                             {"Digest": [digest(spki, FMT_X509), digest(pkcs1, FMT_PKCS1)],
                              "Key Format Type": [FMT_X509]})
            self.assertEqual(digests(c, register_payload(OBJ_SECRET_DATA, T["SecretData"], FMT_RAW,
                                                         key_material_item(b"password"),
                                                         extra=[item(T["SecretDataType"], ENUM, 1)])),
                             {"Digest": [digest(b"password", FMT_RAW)], "Key Format Type": [FMT_RAW]})
            cert = self.register(c, [item(T["ObjectType"], ENUM, OBJ_CERTIFICATE), container(V2, "template", []),
                                     item(T["Certificate"], STRUCTURE, [item(T["CertificateType"], ENUM, 1),
                                                                        item(T["CertificateValue"], BYTES, der)])])
            self.assertEqual(self.attributes(c, cert, ["Digest"]), {"Digest": [digest(der)]})
            blob = self.register(c, [item(T["ObjectType"], ENUM, OBJ_OPAQUE), container(V2, "template", []),
                                     item(T["OpaqueObject"], STRUCTURE, [item(T["OpaqueDataType"], ENUM, 0x80000000),
                                                                         item(T["OpaqueDataValue"], BYTES, b"blob")])])
            self.assertEqual(self.attributes(c, blob, ["Digest"]), {"Digest": [digest(b"blob")]})

    def test_digest_of_generated_keys(self):
        # Made by the token: a digest of what the token lets out, in the format Get
        # gives by default; none of a key the relay cannot read.
        port, port_x = self.serve(), self.serve(keys={"extractable": True})
        with self.client(port_x, V2) as x:
            aes = self.create_aes(x, V2)
            _, raw = key_material(x.ok(OP_GET, [uid_item(aes)]))
            self.assertEqual(self.attributes(x, aes, ["Digest"]), {"Digest": [digest(raw, FMT_RAW)]})
            priv, pub = self.create_pair(x, V2, ALG_RSA, 2048, None)
            for uid in (priv, pub):
                fmt, der = key_material(x.ok(OP_GET, [uid_item(uid)]))
                self.assertEqual(fmt, FMT_PKCS1)  # KMIP's default, for private keys too
                self.assertEqual(self.attributes(x, uid, ["Digest", "Key Format Type"]),
                                 {"Digest": [digest(der, FMT_PKCS1)], "Key Format Type": [FMT_PKCS1]})
            loaded = serialization.load_der_private_key(key_material(x.ok(OP_GET, [uid_item(priv)]))[1], None)
            self.assertEqual(loaded.key_size, 2048)
        with self.client(port, V2) as c:
            aes = self.create_aes(c, V2)
            priv, pub = self.create_pair(c, V2, ALG_RSA, 2048, None)
            self.assertEqual(self.attributes(c, aes, ["Digest"]), {})
            self.assertEqual(self.attributes(c, priv, ["Digest"]), {})
            _, der = key_material(c.ok(OP_GET, [uid_item(pub)]))
            self.assertEqual(self.attributes(c, pub, ["Digest"]), {"Digest": [digest(der, FMT_PKCS1)]})

    def test_origin_of_generated_and_registered_keys(self):
        port = self.serve()
        with self.client(port, V2) as c:
            aes = self.create_aes(c, V2)
            got = self.attributes(c, aes, ["Initial Date", "Original Creation Date", "Random Number Generator"])
            # The token made it now, with a generator the relay cannot name.
            self.assertEqual(got["Original Creation Date"], got["Initial Date"])
            self.assertEqual(got["Random Number Generator"], [[(T["RNGAlgorithm"], ENUM, RNG_UNSPECIFIED)]])
            created = 946684800  # 2000-01-01: the client's own word for a key it made
            uid = self.register(c, register_payload(
                OBJ_SYMMETRIC_KEY, T["SymmetricKey"], FMT_RAW, key_material_item(b"\1" * 16), ALG_AES, 128,
                attrs=[item(T["OriginalCreationDate"], DATETIME, created)]))
            self.assertEqual(self.attributes(c, uid, ["Original Creation Date", "Random Number Generator"]),
                             {"Original Creation Date": [created]})
            # The server sets these for the keys it makes.
            for a in (item(T["OriginalCreationDate"], DATETIME, created),
                      item(T["Digest"], STRUCTURE, [item(T["HashingAlgorithm"], ENUM, SHA_256)])):
                payload = create_payload(V2)
                payload[1] = item(T["Attributes"], STRUCTURE, [attr(V2, "Cryptographic Algorithm", ENUM, ALG_AES),
                                                              attr(V2, "Cryptographic Length", INTEGER, 128), a])
                self.assertEqual(c.fails(OP_CREATE, payload), ATTRIBUTE_READ_ONLY)

    def test_server_attributes_are_read_only(self):
        port = self.serve()
        der = certificate("ro", "Example", "ro CA")
        for version in (V1, V2):
            with self.client(port, version) as c:
                cert = find(c.ok(OP_REGISTER, [item(T["ObjectType"], ENUM, OBJ_CERTIFICATE),
                                               container(version, "template", []),
                                               item(T["Certificate"], STRUCTURE, [
                                                   item(T["CertificateType"], ENUM, 1),
                                                   item(T["CertificateValue"], BYTES, der)])]),
                            T["UniqueIdentifier"])[0]
                read_only = reason_in(version, PERMISSION_DENIED, ATTRIBUTE_READ_ONLY)
                # BL-M-10-21: Certificate Length is the server's.
                self.assertEqual(c.fails(OP_MODIFY_ATTRIBUTE, modify_payload(version, cert, "Certificate Length",
                                                                             INTEGER, 123)), read_only)
                self.assertEqual(c.fails(OP_ADD_ATTRIBUTE, modify_payload(version, cert, "Digest", STRUCTURE, [
                    item(T["HashingAlgorithm"], ENUM, SHA_256)])), read_only)
                self.assertEqual(c.fails(OP_DELETE_ATTRIBUTE, [uid_item(cert)] + attribute_refs(
                    version, ["Certificate Type"])), read_only)
                self.assertEqual(self.attributes(c, cert, ["Certificate Length"], version),
                                 {"Certificate Length": [len(der)]})
                # Original Creation Date: a registered object may get it once.
                self.assertEqual(c.ok(OP_ADD_ATTRIBUTE, modify_payload(version, cert, "Original Creation Date",
                                                                       DATETIME, 946684800))[0],
                                 (T["UniqueIdentifier"], TEXT, cert))
                self.assertEqual(c.fails(OP_MODIFY_ATTRIBUTE, modify_payload(
                    version, cert, "Original Creation Date", DATETIME, 1)), read_only)

    def test_certificate_attributes(self):
        port = self.serve()
        der = certificate("relay test", "Example Org", "Example CA")
        with self.client(port, V2) as c:
            cert = self.register(c, [item(T["ObjectType"], ENUM, OBJ_CERTIFICATE),
                                     container(V2, "template", [item(T["CertificateType"], ENUM, 1)]),
                                     item(T["Certificate"], STRUCTURE, [item(T["CertificateType"], ENUM, 1),
                                                                        item(T["CertificateValue"], BYTES, der)])])
            self.assertEqual(self.attributes(c, cert, [
                "Certificate Type", "Certificate Length", "Certificate Subject CN", "Certificate Subject O",
                "Certificate Issuer CN"]), {
                "Certificate Type": [1], "Certificate Length": [len(der)],
                "Certificate Subject CN": ["relay test"], "Certificate Subject O": ["Example Org"],
                "Certificate Issuer CN": ["Example CA"]})
        with self.client(port, V1) as c:
            # KMIP 1.2 has Certificate Length, not the 2.x certificate attributes.
            got = self.attributes(c, cert, version=V1)
            self.assertEqual(got["Certificate Length"], [len(der)])
            self.assertFalse({"Certificate Subject CN", "Certificate Issuer CN", "Key Format Type"} & set(got))

    def test_fresh_until_served(self):
        # BL-M-13-21: an object registered Fresh is no longer once Get served it.
        # Objects without the attribute get none (see mark_served).
        port = self.serve(keys={"extractable": True})
        with self.client(port, V2) as c:
            def register(fresh):
                return self.register(c, register_payload(OBJ_SYMMETRIC_KEY, T["SymmetricKey"], FMT_RAW,
                                                          key_material_item(b"\2" * 16), ALG_AES, 128,
                                                          attrs=[item(T["Fresh"], BOOL, fresh)]))

            fresh, stale = register(True), register(False)
            self.assertEqual(self.attributes(c, fresh, ["Fresh"]), {"Fresh": [True]})
            self.assertEqual(c.fails(OP_GET, get_payload(fresh, FMT_PKCS1)), KEY_FORMAT_TYPE_NOT_SUPPORTED)
            self.assertEqual(self.attributes(c, fresh, ["Fresh"]), {"Fresh": [True]}, "not served")
            c.ok(OP_GET, [uid_item(fresh)])
            self.assertEqual(self.attributes(c, fresh, ["Fresh"]), {"Fresh": [False]})
            self.assertEqual(self.attributes(c, stale, ["Fresh"]), {"Fresh": [False]})
            aes = self.create_aes(c, V2)
            c.ok(OP_GET, [uid_item(aes)])
            self.assertEqual(self.attributes(c, aes, ["Fresh"]), {})
            self.assertEqual(c.fails(OP_MODIFY_ATTRIBUTE, modify_payload(V2, fresh, "Fresh", BOOL, True)),
                             ATTRIBUTE_READ_ONLY)

    def test_sensitive_public_key(self):
        # BL-M-12-21: PKCS#11 has no such flag on a public key; the metadata keeps it.
        port = self.serve()
        pkcs1 = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.PKCS1)
        with self.client(port, V2) as c:
            uid = self.register(c, register_payload(OBJ_PUBLIC_KEY, T["PublicKey"], FMT_PKCS1,
                                                    key_material_item(pkcs1), ALG_RSA, 2048,
                                                    attrs=[item(T["Sensitive"], BOOL, True)]))
            self.assertEqual(c.fails(OP_GET, [uid_item(uid)]), SENSITIVE)
            self.assertEqual(c.fails(OP_GET, [uid_item(uid)], V1), PERMISSION_DENIED)
            self.assertEqual(self.attributes(c, uid, ["Sensitive", "Always Sensitive", "Extractable",
                                                      "Never Extractable"]), protection(True, True))
            plain = self.register(c, register_payload(OBJ_PUBLIC_KEY, T["PublicKey"], FMT_PKCS1,
                                                      key_material_item(pkcs1), ALG_RSA, 2048))
            self.assertEqual(key_material(c.ok(OP_GET, [uid_item(plain)])), (FMT_PKCS1, pkcs1))
            self.assertEqual(self.attributes(c, plain, ["Sensitive", "Always Sensitive", "Extractable",
                                                        "Never Extractable"]), protection(False, True))
            # A token key's own flags: sensitive and never extractable by default.
            aes = self.create_aes(c, V2)
            self.assertEqual(self.attributes(c, aes, ["Sensitive", "Always Sensitive", "Extractable",
                                                      "Never Extractable"]), protection(True, False))


class KeyFormatTest(TokenTestCase):
    """Register in the Transparent formats, and Get in the format a key was
    registered in (KMIP 2.1 section 6.1.19)."""

    def register(self, c, payload):
        return find(c.ok(OP_REGISTER, payload, V2), T["UniqueIdentifier"])[0]

    FIELDS = {T[n]: n for n in ("Modulus", "PrivateExponent", "PublicExponent", "P", "Q", "G", "X", "Y",
                                "PrimeExponentP", "PrimeExponentQ", "CRTCoefficient")}

    def fields(self, c, uid, key_format=None):
        """(Key Format Type, [(field name, value)]) of a Transparent key from Get."""
        fmt, material = key_material(c.ok(OP_GET, get_payload(uid, key_format)))
        return fmt, [(self.FIELDS[t], bigint_value(v)) for t, _, v in material]

    def test_transparent_rsa_private_key(self):
        port = self.serve(keys={"extractable": True})
        k = rsa.generate_private_key(public_exponent=65537, key_size=1024)
        with self.client(port, V2) as c:
            uid = self.register(c, register_payload(OBJ_PRIVATE_KEY, T["PrivateKey"], FMT_TRANSPARENT_RSA_PRIVATE,
                                                    key_material_item(rsa_private_fields(k)), ALG_RSA, 1024))
            self.assertEqual(self.fields(c, uid), (FMT_TRANSPARENT_RSA_PRIVATE, rsa_private_fields(k)))
            fmt, der = key_material(c.ok(OP_GET, get_payload(uid, FMT_PKCS1)))
            self.assertEqual((fmt, der), (FMT_PKCS1, k.private_bytes(serialization.Encoding.DER,
                                                                      serialization.PrivateFormat.TraditionalOpenSSL,
                                                                      serialization.NoEncryption())))
            got = returned_attributes(c.ok(OP_GET_ATTRIBUTES, [uid_item(uid)] + attribute_refs(
                V2, ["Cryptographic Algorithm", "Cryptographic Length", "Key Format Type"])), V2)
            self.assertEqual(got, {"Cryptographic Algorithm": [ALG_RSA], "Cryptographic Length": [1024],
                                   "Key Format Type": [FMT_TRANSPARENT_RSA_PRIVATE]})
            # Without the private exponent there is no key to hold.
            partial = [f for f in rsa_private_fields(k) if f[0] != "PrivateExponent"]
            self.assertEqual(c.fails(OP_REGISTER, register_payload(
                OBJ_PRIVATE_KEY, T["PrivateKey"], FMT_TRANSPARENT_RSA_PRIVATE, key_material_item(partial),
                ALG_RSA, 1024)), KEY_FORMAT_TYPE_NOT_SUPPORTED)

    def test_transparent_dsa_keys(self):
        port = self.serve(keys={"extractable": True})
        k = dsa.generate_private_key(key_size=1024)
        n = k.private_numbers()
        p, q, g = n.public_numbers.parameter_numbers.p, n.public_numbers.parameter_numbers.q, \
            n.public_numbers.parameter_numbers.g
        public = [("P", p), ("Q", q), ("G", g), ("Y", n.public_numbers.y)]
        private = [("P", p), ("Q", q), ("G", g), ("X", n.x)]
        with self.client(port, V2) as c:
            pub = self.register(c, register_payload(OBJ_PUBLIC_KEY, T["PublicKey"], FMT_TRANSPARENT_DSA_PUBLIC,
                                                    key_material_item(public), ALG_DSA, 1024))
            priv = self.register(c, register_payload(OBJ_PRIVATE_KEY, T["PrivateKey"], FMT_TRANSPARENT_DSA_PRIVATE,
                                                     key_material_item(private), ALG_DSA, 1024))
            self.assertEqual(self.fields(c, pub), (FMT_TRANSPARENT_DSA_PUBLIC, public))
            self.assertEqual(self.fields(c, priv), (FMT_TRANSPARENT_DSA_PRIVATE, private))
            for uid in (pub, priv):
                got = returned_attributes(c.ok(OP_GET_ATTRIBUTES, [uid_item(uid)] + attribute_refs(
                    V2, ["Cryptographic Algorithm", "Cryptographic Length"])), V2)
                self.assertEqual(got, {"Cryptographic Algorithm": [ALG_DSA], "Cryptographic Length": [1024]})
            # A format of another key type, or of the other half, is refused.
            self.assertEqual(c.fails(OP_GET, get_payload(pub, FMT_TRANSPARENT_RSA_PUBLIC)),
                             KEY_FORMAT_TYPE_NOT_SUPPORTED)
            self.assertEqual(c.fails(OP_GET, get_payload(priv, FMT_TRANSPARENT_DSA_PUBLIC)),
                             KEY_FORMAT_TYPE_NOT_SUPPORTED)

    def test_get_gives_the_registered_format(self):
        port = self.serve(keys={"extractable": True})
        key = bytes(range(16))
        with self.client(port, V2) as c:
            # BL-M-3-21
            uid = self.register(c, register_payload(OBJ_SYMMETRIC_KEY, T["SymmetricKey"], FMT_TRANSPARENT_SYMMETRIC,
                                                    item(T["KeyMaterial"], STRUCTURE, [item(T["Key"], BYTES, key)]),
                                                    ALG_AES, 128))
            self.assertEqual(key_material(c.ok(OP_GET, [uid_item(uid)])),
                             (FMT_TRANSPARENT_SYMMETRIC, [(T["Key"], BYTES, key)]))
            self.assertEqual(key_material(c.ok(OP_GET, get_payload(uid, FMT_RAW))), (FMT_RAW, key))
            # BL-M-4-21: Secret Data comes back as Raw or Opaque, as registered.
            for fmt in (FMT_RAW, 0x02):
                secret = self.register(c, register_payload(OBJ_SECRET_DATA, T["SecretData"], fmt,
                                                           key_material_item(b"password"),
                                                           extra=[item(T["SecretDataType"], ENUM, 1)]))
                got = c.ok(OP_GET, [uid_item(secret)])
                block = find(find(got, T["SecretData"])[0], T["KeyBlock"])[0]
                self.assertEqual((find(block, T["KeyFormatType"]), find(find(block, T["KeyValue"])[0],
                                                                        T["KeyMaterial"])), ([fmt], [b"password"]))
            self.assertEqual(c.fails(OP_GET, get_payload(secret, FMT_PKCS1)), KEY_FORMAT_TYPE_NOT_SUPPORTED)


class DestroyedObjectTest(TokenTestCase):
    """Destroy removes the key from the token and keeps its attributes: Get says
    Object Destroyed, Get Attributes answers, and Locate finds the records only when
    the Storage Status Mask asks for destroyed objects (KMIP 2.1 sections 6.1.15,
    6.1.27; BL-M-8-21, BL-M-9-21)."""

    def locate(self, c, attrs=(), mask=None):
        payload = locate_payload(V2, attrs)
        if mask is not None:
            payload.insert(0, item(T["StorageStatusMask"], INTEGER, mask))
        return sorted(find(c.ok(OP_LOCATE, payload), T["UniqueIdentifier"]))

    def test_records(self):
        port = self.serve()
        with self.client(port, V2) as c:
            priv, pub = self.create_pair(c, V2, ALG_EC, curve=CURVE_P256, private_name="gone-priv",
                                         public_name="gone-pub")
            kept = self.create_aes(c, V2, "kept")
            c.ok(OP_REVOKE, revoke_payload(priv, KEY_COMPROMISE))
            for uid in (priv, pub):
                c.ok(OP_DESTROY, [uid_item(uid)])
            for version in (V1, V2):
                self.assertEqual(c.fails(OP_GET, [uid_item(pub)], version),
                                 reason_in(version, ITEM_NOT_FOUND, OBJECT_DESTROYED))
            got = returned_attributes(c.ok(OP_GET_ATTRIBUTES, [uid_item(priv)]), V2)
            self.assertEqual((got["State"], got["Name"], got["Object Type"], got["Cryptographic Length"]),
                             ([DESTROYED_COMPROMISED], [decoded_name("gone-priv")], [OBJ_PRIVATE_KEY], [256]))
            self.assertEqual(got["Link"], [[(T["LinkType"], ENUM, LINK_PUBLIC_KEY),
                                            (T["LinkedObjectIdentifier"], TEXT, pub)]])
            self.assertLess(abs(got["Destroy Date"][0] - time.time()), 300)
            self.assertIn(T["DestroyDate"], find(c.ok(OP_GET_ATTRIBUTE_LIST, [uid_item(pub)]),
                                                 T["AttributeReference"]))
            # A bare CKA_ID names the record too.
            self.assertEqual(find(c.ok(OP_GET_ATTRIBUTES, [uid_item(pub[:64])]), T["UniqueIdentifier"]), [pub])
            # Nothing is left to use or change.
            for op, payload in ((OP_ACTIVATE, [uid_item(pub)]), (OP_DESTROY, [uid_item(pub)]),
                                (OP_CHECK, [uid_item(pub)]),
                                (OP_MODIFY_ATTRIBUTE, modify_payload(V2, pub, "Name", STRUCTURE, name_value("n"))),
                                (OP_ADD_ATTRIBUTE, modify_payload(V2, pub, "Contact Information", TEXT, "x"))):
                with self.subTest(op=op):
                    self.assertEqual(c.fails(op, payload), OBJECT_DESTROYED)
            # But a destroyed key may turn out compromised (transition 10).
            self.assertEqual(c.fails(OP_REVOKE, revoke_payload(pub, CESSATION_OF_OPERATION)),
                             WRONG_KEY_LIFECYCLE_STATE)
            c.ok(OP_REVOKE, revoke_payload(pub, KEY_COMPROMISE))
            got = returned_attributes(c.ok(OP_GET_ATTRIBUTES, [uid_item(pub)]), V2)
            self.assertEqual(got["State"], [DESTROYED_COMPROMISED])
            self.assertIn("Compromise Date", got)
            self.assertEqual(c.fails(OP_REVOKE, revoke_payload(pub, KEY_COMPROMISE)), WRONG_KEY_LIFECYCLE_STATE)
            # Locate: on-line objects unless destroyed ones are asked for.
            self.assertEqual(self.locate(c), [kept])
            self.assertEqual(self.locate(c, mask=STORAGE_DESTROYED), sorted([priv, pub]))
            self.assertEqual(self.locate(c, mask=STORAGE_ONLINE | STORAGE_DESTROYED), sorted([priv, pub, kept]))
            self.assertEqual(self.locate(c, [name_attr(V2, "gone-pub")], STORAGE_DESTROYED), [pub])
            self.assertEqual(self.locate(c, [attr(V2, "Object Type", ENUM, OBJ_PRIVATE_KEY)], STORAGE_DESTROYED),
                             [priv])
            self.assertEqual(self.locate(c, [attr(V2, "Link", STRUCTURE, [
                item(T["LinkType"], ENUM, LINK_PUBLIC_KEY), item(T["LinkedObjectIdentifier"], TEXT, pub)])],
                STORAGE_DESTROYED), [priv])
            self.assertEqual(self.locate(c, [attr(V2, "State", ENUM, ACTIVE)], STORAGE_DESTROYED), [])
        for kind in ("privkey", "pubkey"):
            self.assertNotIn(priv[:64].lower(), self.token.objects(kind).lower())


class LocateDateTest(TokenTestCase):
    def test_dates_and_ranges(self):
        # BL-M-4-21: two values of one date attribute are a range.
        day = 86400
        t0 = 949327200  # 2000-01-31T14:00:00Z
        port = self.serve()
        with self.client(port, V2) as c:
            def secret(stop):
                payload = register_payload(OBJ_SECRET_DATA, T["SecretData"], FMT_RAW, key_material_item(b"pw"),
                                           attrs=[item(T["ProtectStopDate"], DATETIME, stop)],
                                           extra=[item(T["SecretDataType"], ENUM, 1)])
                return find(c.ok(OP_REGISTER, payload), T["UniqueIdentifier"])[0]

            early, late = secret(t0), secret(t0 + 10 * day)
            aes = self.create_aes(c, V2)

            def by(*stops):
                attrs = [attr(V2, "Object Type", ENUM, OBJ_SECRET_DATA)] + [
                    item(T["ProtectStopDate"], DATETIME, t) for t in stops]
                return sorted(find(c.ok(OP_LOCATE, locate_payload(V2, attrs)), T["UniqueIdentifier"]))

            self.assertEqual(by(t0 - day, t0 + day), [early])
            self.assertEqual(by(t0 + 20 * day, t0 - day), sorted([early, late]))  # either order
            self.assertEqual(by(t0), [early])
            self.assertEqual(by(t0 + 1), [])
            self.assertEqual(by(t0 + day, t0 + 2 * day), [])
            self.assertEqual(c.fails(OP_LOCATE, locate_payload(V2, [item(T["ProtectStopDate"], DATETIME, t)
                                                                   for t in (1, 2, 3)])), INVALID_FIELD)
            # Any date attribute: Initial Date around now finds the new objects.
            now = int(time.time())
            found = find(c.ok(OP_LOCATE, locate_payload(V2, [item(T["InitialDate"], DATETIME, now - 300),
                                                              item(T["InitialDate"], DATETIME, now + 300)])),
                         T["UniqueIdentifier"])
            self.assertEqual(sorted(found), sorted([early, late, aes]))


class AttributeChangeTest(TokenTestCase):
    """What Add and Modify Attribute may change, and the Result Reasons when not."""

    def test_activation_date(self):
        port = self.serve()
        for version in (V1, V2):
            with self.client(port, version) as c:
                # SKLC-M-3-21 and AKLC-M-3-21: not once the key is Active.
                active = self.create_aes(c, version)
                c.ok(OP_ACTIVATE, [uid_item(active)])
                self.assertEqual(c.fails(OP_MODIFY_ATTRIBUTE, modify_payload(
                    version, active, "Activation Date", DATETIME, int(time.time()))),
                    reason_in(version, PERMISSION_DENIED, WRONG_KEY_LIFECYCLE_STATE))
                # Pre-Active: a date to come is set, a date that has come activates.
                uid = self.create_aes(c, version, "flags-%d" % version[0])
                self.assertEqual(c.fails(OP_MODIFY_ATTRIBUTE, modify_payload(
                    version, uid, "Activation Date", DATETIME, 1)), reason_in(version, ITEM_NOT_FOUND,
                                                                             ATTRIBUTE_NOT_FOUND))
                later = int(time.time()) + 3600
                c.ok(OP_ADD_ATTRIBUTE, modify_payload(version, uid, "Activation Date", DATETIME, later))
                got = returned_attributes(c.ok(OP_GET_ATTRIBUTES, [uid_item(uid)] + attribute_refs(
                    version, ["State", "Activation Date"])), version)
                self.assertEqual(got, {"State": [PRE_ACTIVE], "Activation Date": [later]})
                earlier = int(time.time()) - 60
                c.ok(OP_MODIFY_ATTRIBUTE, modify_payload(version, uid, "Activation Date", DATETIME, earlier))
                got = returned_attributes(c.ok(OP_GET_ATTRIBUTES, [uid_item(uid)] + attribute_refs(
                    version, ["State", "Activation Date"])), version)
                self.assertEqual(got, {"State": [ACTIVE], "Activation Date": [earlier]})
                # The token enforces it: the key may encrypt now.
                self.assertEqual(self.token.usage()[("Secret Key", "flags-%d" % version[0])], ["encrypt", "decrypt"])

    def test_add_name(self):
        port = self.serve()
        for version in (V1, V2):
            with self.client(port, version) as c:
                named = self.create_aes(c, version, "named-%d" % version[0])
                # BL-M-8-21: the object has this Name already.
                self.assertEqual(c.fails(OP_ADD_ATTRIBUTE, modify_payload(
                    version, named, "Name", STRUCTURE, name_value("named-%d" % version[0]))),
                    reason_in(version, INVALID_FIELD, NON_UNIQUE_NAME_ATTRIBUTE))
                # The token's label is the one Name an object has.
                self.assertEqual(c.fails(OP_ADD_ATTRIBUTE, modify_payload(
                    version, named, "Name", STRUCTURE, name_value("second"))),
                    reason_in(version, INDEX_OUT_OF_BOUNDS, ATTRIBUTE_SINGLE_VALUED))
                unnamed = self.create_aes(c, version)
                c.ok(OP_ADD_ATTRIBUTE, modify_payload(version, unnamed, "Name", STRUCTURE,
                                                      name_value("added-%d" % version[0])))
                got = returned_attributes(c.ok(OP_GET_ATTRIBUTES, [uid_item(unnamed)] + attribute_refs(
                    version, ["Name"])), version)
                self.assertEqual(got, {"Name": [decoded_name("added-%d" % version[0])]})
                self.assertEqual(find(c.ok(OP_LOCATE, locate_payload(version, [
                    name_attr(version, "added-%d" % version[0])])), T["UniqueIdentifier"]), [unnamed])


class TokenRefusalTest(TokenTestCase):
    def test_chacha20_goes_to_the_token(self):
        # KMIP has ChaCha20 keys; SoftHSM 2.6 has no CKK_CHACHA20 (PKCS#11 3.0), and
        # says so itself.
        port = self.serve()
        with self.client(port, V2) as c:
            bi = c.call(OP_REGISTER, register_payload(OBJ_SYMMETRIC_KEY, T["SymmetricKey"], FMT_RAW,
                                                      key_material_item(bytes(32)), ALG_CHACHA20, 256))
            self.assertEqual((bi[T["ResultStatus"]], bi[T["ResultReason"]], bi[T["ResultMessage"]]),
                             (FAILED, INVALID_ATTRIBUTE_VALUE, "CKR_ATTRIBUTE_VALUE_INVALID"))
            bi = c.call(OP_CREATE, create_payload(V2, ALG_CHACHA20, 256))
            self.assertEqual((bi[T["ResultStatus"]], bi[T["ResultReason"]], bi[T["ResultMessage"]]),
                             (FAILED, UNSUPPORTED_CRYPTOGRAPHIC_PARAMETERS, "CKR_MECHANISM_INVALID"))
            self.assertEqual(find(c.ok(OP_LOCATE, locate_payload(V2)), T["UniqueIdentifier"]), [])
        self.assertNotIn("kmip-relay metadata", self.token.objects("data"))


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
            (client, "Get", "Sensitive", uid),
            (client, "Locate", "Success", None),
            (client, "Modify Attribute", "Success", uid),
            (client, "Revoke", "Success", uid),
            (client, "Destroy", "Success", uid),
            (client, "Get", "Object Destroyed", uid),
            (client, "Create Key Pair", "Success", priv),
            (client, "Get", "Success", pub),
            (client, "Query", "Success", None),
        ])
        for r in records:
            self.assertEqual(sorted(r), sorted(AUDIT_KEYS + [k for k in ("uid", "backend") if k in r]))
            # Every operation that used the token names its backend; Query used none.
            self.assertEqual(r.get("backend"), None if r["operation"] == "Query" else "default")


class OlderVersionAttributesTest(TokenTestCase):
    """A response in a version that has no encoding for an attribute leaves that
    attribute out, and a request in it may not name one (issue 11, finding 15)."""

    # The attributes of a key made through 2.1, by the 1.x version that brought
    # each (KMIP 1.0-1.4 section 3).
    MADE = {(1, 0): ["Unique Identifier", "Object Type", "Cryptographic Algorithm", "Cryptographic Length",
                     "Cryptographic Usage Mask", "State", "Initial Date", "Last Change Date"],
            (1, 2): ["Original Creation Date"],
            (1, 4): ["Random Number Generator", "Sensitive", "Always Sensitive", "Extractable",
                     "Never Extractable"]}

    def test_attributes_added_through_2x(self):
        def vendor(vendor_id, name, value):
            return item(T["Attribute"], STRUCTURE, [item(T["VendorIdentification"], TEXT, vendor_id),
                                                     item(T["AttributeName"], TEXT, name),
                                                     item(T["AttributeValue"], TEXT, value)])

        port = self.serve()
        added = {"Description": item(T["Description"], TEXT, "rotated monthly"),  # KMIP 1.4 on
                 "Protection Level": item(T["ProtectionLevel"], ENUM, 1),          # 2.0 on
                 "0x540010": item(0x540010, TEXT, "an extension"),                  # no 1.x name
                 "acme-colour": vendor("acme", "colour", "blue"),  # 1.x custom names are x- or y-
                 "x-owner": vendor("x", "owner", "alice")}          # 1.x "x-owner"
        with self.client(port, V2) as c:
            uid = self.create_aes(c, V2)
            for a in added.values():
                c.ok(OP_ADD_ATTRIBUTE, [uid_item(uid), item(T["NewAttribute"], STRUCTURE, [a])])
        for version in ((1, 0), (1, 2), V14):
            expected = [n for since, names in self.MADE.items() if since <= version for n in names]
            expected += ["x-owner"] + (["Description"] if version >= (1, 4) else [])
            with self.client(port, version) as c, self.subTest(version=version):
                got = attributes_by_name(c.ok(OP_GET_ATTRIBUTES, [uid_item(uid)]))
                self.assertEqual(sorted(got), sorted(expected))
                self.assertEqual(got["x-owner"], ["alice"])
                listed = find(c.ok(OP_GET_ATTRIBUTE_LIST, [uid_item(uid)]), T["AttributeName"])
                self.assertEqual(sorted(listed), sorted(expected))
                # Asked for by name, the version's own attributes only.
                got = attributes_by_name(c.ok(OP_GET_ATTRIBUTES, [uid_item(uid)] + [
                    item(T["AttributeName"], TEXT, n) for n in ("Description", "Protection Level", "x-owner",
                                                                 "acme-colour")]))
                self.assertEqual(got, {"x-owner": ["alice"], **({"Description": ["rotated monthly"]}
                                                                 if version >= (1, 4) else {})})
        # Nor may a 1.x request name one: Invalid Field, as for any unknown name.
        with self.client(port, (1, 2)) as c:
            for a in (attribute("Comment", TEXT, "noted"), attribute("Protection Level", ENUM, 1),
                      attribute("Key Format Type", ENUM, FMT_RAW)):
                self.assertEqual(c.fails(OP_ADD_ATTRIBUTE, [uid_item(uid), a]), INVALID_FIELD)
        with self.client(port, V14) as c:
            self.assertEqual(c.ok(OP_ADD_ATTRIBUTE, [uid_item(uid), attribute("Comment", TEXT, "noted")]), [
                (T["UniqueIdentifier"], TEXT, uid),
                (T["Attribute"], STRUCTURE, [(T["AttributeName"], TEXT, "Comment"),
                                             (T["AttributeValue"], TEXT, "noted")])])
        # 2.1 has them all.
        with self.client(port, V2) as c:
            got = returned_attributes(c.ok(OP_GET_ATTRIBUTES, [uid_item(uid)]), V2)
            added = list(added) + ["Comment"]
            self.assertEqual({n: got.get(n) for n in added}, {
                "Description": ["rotated monthly"], "Protection Level": [1], "0x540010": ["an extension"],
                "acme-colour": ["blue"], "x-owner": ["alice"], "Comment": ["noted"]})
            self.assertEqual(sorted(got), sorted(list(added) + [n for names in self.MADE.values() for n in names]
                                                 + ["Key Format Type"]))


class TraceTest(TokenTestCase):
    """log.trace (--trace) masks every secret in requests and responses (issue 11,
    finding 10): Opaque Data Value, and the Key Value of keys and Secret Data."""

    def test_register_and_get_are_redacted(self):
        port = self.start(self.softhsm_config(self.token, log={"trace": True}, keys={"extractable": True}))
        opaque, raw_key = os.urandom(24), os.urandom(32)
        password = "Quokka-%s" % os.urandom(8).hex()
        with self.client(port, V2) as c:
            local = c.sock.getsockname()[1]
            blob = find(c.ok(OP_REGISTER, [
                item(T["ObjectType"], ENUM, OBJ_OPAQUE), container(V2, "template", []),
                item(T["OpaqueObject"], STRUCTURE, [item(T["OpaqueDataType"], ENUM, 0x80000000),
                                                    item(T["OpaqueDataValue"], BYTES, opaque)])]),
                        T["UniqueIdentifier"])[0]
            aes = find(c.ok(OP_REGISTER, register_payload(OBJ_SYMMETRIC_KEY, T["SymmetricKey"], FMT_RAW,
                                                          key_material_item(raw_key), ALG_AES, 256)),
                       T["UniqueIdentifier"])[0]
            secret = find(c.ok(OP_REGISTER, register_payload(OBJ_SECRET_DATA, T["SecretData"], FMT_RAW,
                                                             key_material_item(password.encode()),
                                                             extra=[item(T["SecretDataType"], ENUM, 1)])),
                          T["UniqueIdentifier"])[0]
            made = self.create_aes(c, V2)
            got = {uid: c.ok(OP_GET, [uid_item(uid)]) for uid in (blob, aes, secret, made)}
        # The client got the secrets back, the made key's too...
        self.assertEqual(find(find(got[blob], T["OpaqueObject"])[0], T["OpaqueDataValue"]), [opaque])
        self.assertEqual(key_material(got[aes]), (FMT_RAW, raw_key))
        generated = key_material(got[made])[1]
        self.assertEqual(len(generated), 32)
        self.summary(local)
        with open(self.log) as f:
            text = f.read()
        # ... and the trace has every request and response (Register 3, Create, Get 4),
        self.assertEqual(text.count("]: request\nRequest Message (Structure)\n"), 8)
        self.assertEqual(text.count("]: response\nResponse Message (Structure)\n"), 8)
        # but none of the secrets, in any form.
        for value in (opaque, raw_key, password.encode(), generated):
            for form in (value.hex().upper(), value.hex(), value.decode("latin-1")):
                self.assertNotIn(form, text)
        # Register's request and Get's response, each masked in place.
        self.assertEqual(text.count("\n      Opaque Object (Structure)\n"
                                    "        Opaque Data Type (Enumeration) 0x80000000\n"
                                    "        Opaque Data Value (Byte String) <redacted>\n"), 2)
        self.assertEqual(text.count("\n        Key Block (Structure)\n"
                                    "          Key Format Type (Enumeration) Raw\n"
                                    "          Key Value (Structure) <redacted>\n"), 5)
        self.assertNotIn("Key Material", text)
        self.assertIn("\n        Secret Data Type (Enumeration) Password\n", text)
        self.assertIn('\n      Unique Identifier (Text String) "%s"\n' % made, text)


if __name__ == "__main__":
    unittest.main()

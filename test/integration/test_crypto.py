# SPDX-License-Identifier: BSD-3-Clause
"""Sign, Signature Verify, MAC, MAC Verify and RNG Retrieve with keys in a SoftHSM
token, over real TLS, through PyKMIP's ProxyKmipClient and in raw TTLV, in KMIP 1.x
and 2.x. Every signature the relay makes is checked by python-cryptography against
the public key that Get gives, and the relay checks signatures that
python-cryptography made with keys registered from it; MACs are compared with
python's hmac. Also: the lifecycle and usage-mask rules on the hot path, the
Result Reasons of unsupported parameters, large data, a batch of signatures, RNG
Retrieve's bounds, and the audit records."""

import hashlib
import hmac
import os
import time
import unittest

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from relaytest import METADATA_LABEL
from relaytest import (ALG_AES, ALG_EC, STRUCTURE, CRYPTOGRAPHIC_FAILURE, HASH_SHA1, MODE_CBC,
                       MODE_ECB, MODE_GCM, OP_DECRYPT, OP_ENCRYPT, PAD_PKCS5, ALG_ECDSA, ALG_ED25519, ALG_HMAC_SHA256, ALG_HMAC_SHA384,
                       ALG_HMAC_SHA512, ALG_RSA, BYTES, CESSATION_OF_OPERATION, CURVE_P256,
                       CURVE_P384, CURVE_P521, ENUM, FMT_PKCS1, FMT_RAW, FMT_X509, HASH_MD5,
                       HASH_SHA256, HASH_SHA384, HASH_SHA512, ILLEGAL_OPERATION,
                       INCOMPATIBLE_CRYPTOGRAPHIC_USAGE_MASK, INTEGER, INVALID,
                       INVALID_FIELD, INVALID_OBJECT_TYPE, ITEM_NOT_FOUND, GENERAL_FAILURE, FEATURE_NOT_SUPPORTED,
                       OBJ_SYMMETRIC_KEY, DATETIME, BOOL, attribute, container, attr,
                       KEY_COMPROMISE, LONG, MISSING_DATA, NUMERIC_RANGE, OP_ACTIVATE,
                       OP_CREATE, OP_CREATE_KEY_PAIR, OP_GET, OP_GET_ATTRIBUTES, OP_MAC, OP_MAC_VERIFY, OP_REVOKE, OP_RNG_RETRIEVE,
                       OP_SIGN, OP_SIGNATURE_VERIFY, PAD_NONE, PAD_OAEP, PAD_PKCS1_V15, PAD_PSS,
                       PERMISSION_DENIED, T, TEXT, TokenTestCase, UNSUPPORTED_CRYPTOGRAPHIC_PARAMETERS,
                       USAGE_DECRYPT, USAGE_ENCRYPT, USAGE_MAC_GENERATE, USAGE_MAC_VERIFY, USAGE_SIGN, USAGE_VERIFY,
                       V1, V2, VALID, WRONG_KEY_LIFECYCLE_STATE, batch_item, batch_items, create_payload,
                       crypto_parameters, der_integer_sequence, exchange, find, get_payload, item,
                       key_material, pair_payload, public_key_of, reason_in, request_message,
                       returned_attributes, attribute_refs, revoke_payload, spki_sha256, uid_item, FAULTY_P11)

V14 = (1, 4)  # the first 1.x with Digested Data
OPERATION_NOT_SUPPORTED = 0x05
HASHES = {HASH_SHA256: hashes.SHA256, HASH_SHA384: hashes.SHA384, HASH_SHA512: hashes.SHA512}
HASHLIB = {HASH_SHA256: hashlib.sha256, HASH_SHA384: hashlib.sha384, HASH_SHA512: hashlib.sha512}
CURVES = {CURVE_P256: (ec.SECP256R1, 32), CURVE_P384: (ec.SECP384R1, 48), CURVE_P521: (ec.SECP521R1, 66)}
HMACS = {ALG_HMAC_SHA256: hashlib.sha256, ALG_HMAC_SHA384: hashlib.sha384, ALG_HMAC_SHA512: hashlib.sha512}
AUDIT_KEYS = ["client", "latency_us", "operation", "peer", "result"]


def flip(data, index=-1):
    """data with one bit of one byte changed."""
    index %= len(data)
    return data[:index] + bytes([data[index] ^ 0x01]) + data[index + 1:]


def der_int(v, extra_zeros=0):
    """A DER INTEGER of v >= 0 (with extra_zeros needless zero bytes in front: BER)."""
    body = b"\0" * extra_zeros + v.to_bytes((v.bit_length() + 8) // 8, "big")
    return b"\x02" + bytes([len(body)]) + body


def der_sequence(body):
    return b"\x30" + bytes([len(body)]) + body


def sign_request(uid, params, data=None, digested=None):
    """A Sign payload: the key, Cryptographic Parameters (an item, or None for
    none), Data and/or Digested Data."""
    payload = [uid_item(uid)] + ([params] if params is not None else [])
    if data is not None:
        payload.append(item(T["Data"], BYTES, data))
    if digested is not None:
        payload.append(item(T["DigestedData"], BYTES, digested))
    return payload


def verify_request(uid, params, signature, data=None, digested=None):
    return sign_request(uid, params, data, digested) + [item(T["SignatureData"], BYTES, signature)]


def mac_request(uid, data, params=None, mac=None):
    payload = [uid_item(uid)] + ([params] if params is not None else []) + [item(T["Data"], BYTES, data)]
    if mac is not None:
        payload.append(item(T["MACData"], BYTES, mac))
    return payload


def rng_request(length, typ=INTEGER):
    return [] if length is None else [item(T["DataLength"], typ, length)]


def python_verify(public, scheme, hash_id, signature, message):
    """python-cryptography's check of a signature of message; raises InvalidSignature."""
    if scheme == "ed25519":
        return public.verify(signature, message)
    h = HASHES[hash_id]()
    if scheme == "pkcs1":
        public.verify(signature, message, padding.PKCS1v15(), h)
    elif scheme == "pss":
        public.verify(signature, message, padding.PSS(mgf=padding.MGF1(h), salt_length=h.digest_size), h)
    else:
        public.verify(signature, message, ec.ECDSA(h))


def rsa_params(scheme, hash_id):
    return crypto_parameters(PAD_PKCS1_V15 if scheme == "pkcs1" else PAD_PSS, hash_id, ALG_RSA)


def pykmip_params(scheme, hash_id):
    from kmip.core import enums
    params = {"hashing_algorithm": {HASH_SHA256: enums.HashingAlgorithm.SHA_256,
                                    HASH_SHA384: enums.HashingAlgorithm.SHA_384,
                                    HASH_SHA512: enums.HashingAlgorithm.SHA_512}[hash_id]}
    if scheme == "ecdsa":
        params["cryptographic_algorithm"] = enums.CryptographicAlgorithm.ECDSA
    else:
        params["cryptographic_algorithm"] = enums.CryptographicAlgorithm.RSA
        params["padding_method"] = (enums.PaddingMethod.PKCS1v15 if scheme == "pkcs1"
                                    else enums.PaddingMethod.PSS)
    return params


class CryptoTestCase(TokenTestCase):
    def active_pair(self, c, version=V2, algorithm=ALG_EC, length=None, curve=CURVE_P256, **usage):
        """(private UID, public UID) of a new key pair, both halves activated."""
        payload = c.ok(OP_CREATE_KEY_PAIR, pair_payload(version, algorithm, length, curve, **usage), version)
        priv = find(payload, T["PrivateKeyUniqueIdentifier"])[0]
        pub = find(payload, T["PublicKeyUniqueIdentifier"])[0]
        for uid in (priv, pub):
            c.ok(OP_ACTIVATE, [uid_item(uid)], version)
        return priv, pub

    def public_key(self, c, pub, key_format=FMT_X509):
        fmt, material = key_material(c.ok(OP_GET, get_payload(pub, key_format), V2))
        self.assertEqual(fmt, key_format)
        return public_key_of(fmt, material)

    def sign(self, c, uid, params, data=None, digested=None, version=None):
        """The Signature Data of a Sign; asserts the payload is exactly the key's UID
        and the signature."""
        payload = c.ok(OP_SIGN, sign_request(uid, params, data, digested), version)
        self.assertEqual([(t, ty) for t, ty, _ in payload], [(T["UniqueIdentifier"], TEXT),
                                                             (T["SignatureData"], BYTES)])
        self.assertEqual(payload[0][2], uid)
        return payload[1][2]

    def verify(self, c, uid, params, signature, data=None, digested=None, version=None):
        """The Validity Indicator of a Signature Verify; asserts the payload is exactly
        the key's UID and the indicator."""
        payload = c.ok(OP_SIGNATURE_VERIFY, verify_request(uid, params, signature, data, digested), version)
        self.assertEqual(payload[:1], [(T["UniqueIdentifier"], TEXT, uid)])
        self.assertEqual([(t, ty) for t, ty, _ in payload[1:]], [(T["ValidityIndicator"], ENUM)])
        return payload[1][2]

    def check_ecdsa_der(self, signature, field_len):
        """signature is one DER SEQUENCE { r, s } of minimal positive INTEGERs no longer
        than the curve's field; returns (r, s)."""
        r, s = der_integer_sequence(signature)
        self.assertGreater(r, 0)
        self.assertGreater(s, 0)
        self.assertLess(max(r, s).bit_length(), field_len * 8 + 1)
        self.assertEqual(signature, encode_dss_signature(r, s))
        return r, s


class SignRSATest(CryptoTestCase):
    def test_pkcs1_v15_and_pss(self):
        port = self.serve()
        with self.client(port, V2) as c:
            priv, pub = self.active_pair(c, V2, ALG_RSA, 2048, None)
            public = self.public_key(c, pub, FMT_PKCS1)  # the default for RSA
            self.assertIsInstance(public, rsa.RSAPublicKey)
            self.assertEqual(public.public_numbers(), self.public_key(c, pub, FMT_X509).public_numbers())
            fmt, _ = key_material(c.ok(OP_GET, [uid_item(pub)]))
            self.assertEqual(fmt, FMT_PKCS1)
            # No Cryptographic Parameters: PKCS#1 v1.5 with SHA-256 (deterministic).
            message = b"kmip-relay signs this " + os.urandom(64)
            default = self.sign(c, priv, None, message)
            self.assertEqual(default, self.sign(c, priv, rsa_params("pkcs1", HASH_SHA256), message))
        for version in (V1, V2):
            with self.client(port, version) as c:
                for scheme in ("pkcs1", "pss"):
                    for hash_id in HASHES:
                        with self.subTest(version=version, scheme=scheme, hash=hash_id):
                            params = rsa_params(scheme, hash_id)
                            message = os.urandom(100)
                            sig = self.sign(c, priv, params, message)
                            self.assertEqual(len(sig), 256)
                            python_verify(public, scheme, hash_id, sig, message)
                            self.assertEqual(self.verify(c, pub, params, sig, message), VALID)
                            self.assertEqual(self.verify(c, pub, params, flip(sig), message), INVALID)
                            self.assertEqual(self.verify(c, pub, params, flip(sig, 0), message), INVALID)
                            # Not below the modulus: no signature at all, whatever the
                            # token's code for it (openCryptoki: CKR_FUNCTION_FAILED).
                            self.assertEqual(self.verify(c, pub, params, b"\xff" * 256, message), INVALID)
                            self.assertEqual(self.verify(c, pub, params, sig, flip(message)), INVALID)
                            self.assertEqual(self.verify(c, pub, params, sig[:-1], message), INVALID)
                            self.assertEqual(self.verify(c, pub, params, b"", message), INVALID)
                            other = rsa_params("pss" if scheme == "pkcs1" else "pkcs1", hash_id)
                            self.assertEqual(self.verify(c, pub, other, sig, message), INVALID)
                            if scheme == "pss":  # randomised: two signatures differ
                                self.assertNotEqual(sig, self.sign(c, priv, params, message))

    def test_digested_data(self):
        # A precomputed hash signs to a signature of the message: PKCS#1 v1.5 gives
        # the very same bytes, PSS one that verifies against the message.
        port = self.serve()
        with self.client(port, V2) as c:
            priv, pub = self.active_pair(c, V2, ALG_RSA, 2048, None)
            public = self.public_key(c, pub)
        for version in (V14, V2):
            with self.client(port, version) as c:
                for scheme in ("pkcs1", "pss"):
                    for hash_id in HASHES:
                        with self.subTest(version=version, scheme=scheme, hash=hash_id):
                            params = rsa_params(scheme, hash_id)
                            message = os.urandom(300)
                            digest = HASHLIB[hash_id](message).digest()
                            sig = self.sign(c, priv, params, digested=digest)
                            python_verify(public, scheme, hash_id, sig, message)
                            if scheme == "pkcs1":
                                self.assertEqual(sig, self.sign(c, priv, params, message))
                            self.assertEqual(self.verify(c, pub, params, sig, message), VALID)
                            self.assertEqual(self.verify(c, pub, params, sig, digested=digest), VALID)
                            self.assertEqual(self.verify(c, pub, params, sig, digested=flip(digest, 0)), INVALID)
                            self.assertEqual(self.verify(c, pub, params, flip(sig), digested=digest), INVALID)

    def test_pykmip(self):
        from kmip.core import enums
        port = self.serve()
        with self.pykmip(port) as c:
            pub, priv = c.create_key_pair(enums.CryptographicAlgorithm.RSA, 2048)
            c.activate(priv)
            c.activate(pub)
            got = c.get(pub)
            self.assertEqual(got.key_format_type, enums.KeyFormatType.PKCS_1)
            public = public_key_of(FMT_PKCS1, got.value)
            for scheme in ("pkcs1", "pss"):
                for hash_id in HASHES:
                    with self.subTest(scheme=scheme, hash=hash_id):
                        params = pykmip_params(scheme, hash_id)
                        message = b"pykmip " + os.urandom(40)
                        sig = c.sign(message, uid=priv, cryptographic_parameters=params)
                        python_verify(public, scheme, hash_id, sig, message)
                        self.assertEqual(c.signature_verify(message, sig, uid=pub, cryptographic_parameters=params),
                                         enums.ValidityIndicator.VALID)
                        self.assertEqual(c.signature_verify(message, flip(sig), uid=pub,
                                                            cryptographic_parameters=params),
                                         enums.ValidityIndicator.INVALID)
                        self.assertEqual(c.signature_verify(flip(message), sig, uid=pub,
                                                            cryptographic_parameters=params),
                                         enums.ValidityIndicator.INVALID)
        with self.client(port, V1) as raw:  # the same signature in raw TTLV
            message = b"same bytes either way"
            self.assertEqual(self.sign(raw, priv, rsa_params("pkcs1", HASH_SHA384), message),
                             self.pykmip_sign(port, priv, message, pykmip_params("pkcs1", HASH_SHA384)))

    def pykmip_sign(self, port, uid, message, params):
        with self.pykmip(port) as c:
            return c.sign(message, uid=uid, cryptographic_parameters=params)


class SignECDSATest(CryptoTestCase):
    def test_curves_and_hashes(self):
        port = self.serve()
        with self.client(port, V2) as c:
            keys = {curve: self.active_pair(c, V2, ALG_EC, curve=curve) for curve in CURVES}
            publics = {curve: self.public_key(c, keys[curve][1]) for curve in CURVES}
        for curve, (cls, _) in CURVES.items():
            self.assertIsInstance(publics[curve].curve, cls)
        for version in (V1, V2):
            with self.client(port, version) as c:
                for curve, (_, field_len) in CURVES.items():
                    priv, pub = keys[curve]
                    for hash_id in HASHES:
                        with self.subTest(version=version, curve=curve, hash=hash_id):
                            params = crypto_parameters(None, hash_id, ALG_ECDSA)
                            message = os.urandom(77)
                            sig = self.sign(c, priv, params, message)
                            self.check_ecdsa_der(sig, field_len)
                            python_verify(publics[curve], "ecdsa", hash_id, sig, message)
                            self.assertEqual(self.verify(c, pub, params, sig, message), VALID)
                            self.assertEqual(self.verify(c, pub, params, flip(sig), message), INVALID)
                            self.assertEqual(self.verify(c, pub, params, sig, flip(message)), INVALID)
                            # Another hash is another message.
                            other = crypto_parameters(None, HASH_SHA256 if hash_id != HASH_SHA256 else HASH_SHA512,
                                                      ALG_ECDSA)
                            self.assertEqual(self.verify(c, pub, other, sig, message), INVALID)

    def test_der_integers_at_their_edges(self):
        # P-256 signatures whose r or s has its top bit set need a 0x00 in DER; P-521
        # field elements are 66 bytes, and r or s below 2^520 take fewer. Each
        # happens to about half of all integers: 24 signatures show both, and every
        # one must be minimal DER that both sides accept.
        port = self.serve()
        with self.client(port, V2) as c:
            for curve, want in ((CURVE_P256, "padded"), (CURVE_P521, "short")):
                priv, pub = self.active_pair(c, V2, ALG_EC, curve=curve)
                public = self.public_key(c, pub)
                field_len = CURVES[curve][1]
                params = crypto_parameters(None, HASH_SHA512, ALG_ECDSA)
                seen = set()
                for i in range(24):
                    message = b"edge %d " % i + os.urandom(8)
                    sig = self.sign(c, priv, params, message)
                    for v in self.check_ecdsa_der(sig, field_len):
                        n = (v.bit_length() + 7) // 8
                        if v.bit_length() % 8 == 0:
                            seen.add("padded")  # DER has 0x00 before it
                        if n < field_len:
                            seen.add("short")
                    python_verify(public, "ecdsa", HASH_SHA512, sig, message)
                    self.assertEqual(self.verify(c, pub, params, sig, message), VALID)
                self.assertIn(want, seen, curve)

    def ecdsa_signature(self):
        """(port, public UID, params, message, signature, r, s) of a P-256 signature."""
        port = self.serve()
        with self.client(port, V2) as c:
            priv, pub = self.active_pair(c, V2, ALG_EC, curve=CURVE_P256)
            params = crypto_parameters(None, HASH_SHA256, ALG_ECDSA)
            message = b"strict DER"
            sig = self.sign(c, priv, params, message)
        r, s = der_integer_sequence(sig)
        self.assertEqual(der_sequence(der_int(r) + der_int(s)), sig)
        return port, pub, params, message, sig, r, s

    def test_signature_encodings_that_are_not_der(self):
        # Signature Verify takes the DER that Sign gives, not the token's raw
        # r || s, nor DER with bytes after it.
        port, pub, params, message, sig, r, s = self.ecdsa_signature()
        with self.client(port, V2) as c:
            self.assertEqual(self.verify(c, pub, params, sig, message), VALID)
            for name, bad in (("raw r || s", r.to_bytes(32, "big") + s.to_bytes(32, "big")),
                              ("trailing byte", sig + b"\0"), ("empty", b""), ("empty SEQUENCE", b"\x30\x00"),
                              ("r alone", der_sequence(der_int(r))),
                              ("r, s, r", der_sequence(der_int(r) + der_int(s) + der_int(r)))):
                with self.subTest(encoding=name):
                    self.assertEqual(self.verify(c, pub, params, bad, message), INVALID)

    def test_signature_integers_that_are_not_minimal(self):
        # An INTEGER with a needless leading zero is BER, not DER: accepting it
        # makes signatures malleable (OpenSSL and python-cryptography refuse it).
        port, pub, params, message, sig, r, s = self.ecdsa_signature()
        with self.client(port, V2) as c:
            for name, bad in (("r", der_sequence(der_int(r, 1) + der_int(s))),
                              ("s", der_sequence(der_int(r) + der_int(s, 1)))):
                with self.subTest(integer=name):
                    self.assertEqual(self.verify(c, pub, params, bad, message), INVALID)

    def test_digested_data(self):
        port = self.serve()
        with self.client(port, V2) as c:
            keys = {curve: self.active_pair(c, V2, ALG_EC, curve=curve) for curve in CURVES}
            publics = {curve: self.public_key(c, keys[curve][1]) for curve in CURVES}
        for version in (V14, V2):
            with self.client(port, version) as c:
                for curve, (_, field_len) in CURVES.items():
                    priv, pub = keys[curve]
                    for hash_id in HASHES:
                        with self.subTest(version=version, curve=curve, hash=hash_id):
                            params = crypto_parameters(None, hash_id, ALG_ECDSA)
                            message = os.urandom(200)
                            digest = HASHLIB[hash_id](message).digest()
                            sig = self.sign(c, priv, params, digested=digest)
                            self.check_ecdsa_der(sig, field_len)
                            python_verify(publics[curve], "ecdsa", hash_id, sig, message)
                            self.assertEqual(self.verify(c, pub, params, sig, message), VALID)
                            self.assertEqual(self.verify(c, pub, params, sig, digested=digest), VALID)
                            # (ECDSA uses the leftmost bits of a hash longer than the curve.)
                            self.assertEqual(self.verify(c, pub, params, sig, digested=flip(digest, 0)), INVALID)
                            # And a signature of the message verifies with its digest.
                            sig2 = self.sign(c, priv, params, message)
                            self.assertEqual(self.verify(c, pub, params, sig2, digested=digest), VALID)

    def test_pykmip(self):
        from kmip.core import enums
        port = self.serve()
        with self.pykmip(port) as c:
            for length, hash_id in ((256, HASH_SHA256), (384, HASH_SHA384), (521, HASH_SHA512)):
                with self.subTest(length=length):
                    pub, priv = c.create_key_pair(enums.CryptographicAlgorithm.ECDSA, length)
                    c.activate(priv)
                    c.activate(pub)
                    got = c.get(pub)
                    self.assertEqual(got.key_format_type, enums.KeyFormatType.RAW)
                    public = public_key_of(FMT_RAW, got.value)
                    params = pykmip_params("ecdsa", hash_id)
                    message = b"pykmip ecdsa " + os.urandom(20)
                    sig = c.sign(message, uid=priv, cryptographic_parameters=params)
                    self.check_ecdsa_der(sig, (length + 7) // 8)
                    python_verify(public, "ecdsa", hash_id, sig, message)
                    self.assertEqual(c.signature_verify(message, sig, uid=pub, cryptographic_parameters=params),
                                     enums.ValidityIndicator.VALID)
                    self.assertEqual(c.signature_verify(message, flip(sig), uid=pub,
                                                        cryptographic_parameters=params),
                                     enums.ValidityIndicator.INVALID)


class SignEd25519Test(CryptoTestCase):
    def test_raw_kmip21(self):
        port = self.serve()
        with self.client(port, V2) as c:
            priv, pub = self.active_pair(c, V2, ALG_ED25519, curve=None)
            public = self.public_key(c, pub)
            self.assertIsInstance(public, ed25519.Ed25519PublicKey)
            for params in (crypto_parameters(algorithm=ALG_ED25519), None):
                with self.subTest(params=params is not None):
                    message = b"ed25519 " + os.urandom(50)
                    sig = self.sign(c, priv, params, message)
                    self.assertEqual(len(sig), 64)
                    python_verify(public, "ed25519", None, sig, message)
                    self.assertEqual(sig, self.sign(c, priv, params, message), "EdDSA is deterministic")
                    self.assertEqual(self.verify(c, pub, params, sig, message), VALID)
                    self.assertEqual(self.verify(c, pub, params, flip(sig), message), INVALID)
                    self.assertEqual(self.verify(c, pub, params, flip(sig, 0), message), INVALID)
                    self.assertEqual(self.verify(c, pub, params, sig, flip(message)), INVALID)
                    self.assertEqual(self.verify(c, pub, params, sig[:63], message), INVALID)
            self.assertEqual(len(self.sign(c, priv, None, b"")), 64)

    def test_pykmip_kmip20(self):
        from kmip.core import enums
        port = self.serve()
        with self.pykmip(port, "KMIP_2_0") as c:
            pub, priv = c.create_key_pair(enums.CryptographicAlgorithm.ED25519, 255)
            c.activate(priv)
            c.activate(pub)
            public = public_key_of(FMT_RAW, c.get(pub).value)
            params = {"cryptographic_algorithm": enums.CryptographicAlgorithm.ED25519}
            message = b"pykmip ed25519"
            sig = c.sign(message, uid=priv, cryptographic_parameters=params)
            python_verify(public, "ed25519", None, sig, message)
            self.assertEqual(c.signature_verify(message, sig, uid=pub, cryptographic_parameters=params),
                             enums.ValidityIndicator.VALID)
            self.assertEqual(c.signature_verify(message, flip(sig), uid=pub, cryptographic_parameters=params),
                             enums.ValidityIndicator.INVALID)


class RegisteredKeysTest(CryptoTestCase):
    """Keys made by python-cryptography and registered: the relay verifies python's
    signatures with the public halves and signs with the private halves."""

    def register(self, port):
        """Python's keys and the UIDs of their registered, activated halves:
        {name: (python key, UID)}."""
        from kmip.core import enums
        from kmip.pie import objects
        rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        ec_key = ec.generate_private_key(ec.SECP384R1())
        ed_key = ed25519.Ed25519PrivateKey.generate()
        der = serialization.Encoding.DER
        pkcs8 = (der, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        spki = (der, serialization.PublicFormat.SubjectPublicKeyInfo)
        # PyKMIP sends the objects' usage masks, an empty one if none is given.
        sign, verify = [enums.CryptographicUsageMask.SIGN], [enums.CryptographicUsageMask.VERIFY]
        alg, fmt = enums.CryptographicAlgorithm, enums.KeyFormatType
        made = {
            "rsa-pkcs1": (rsa_key, objects.PublicKey(alg.RSA, 2048, rsa_key.public_key().public_bytes(
                der, serialization.PublicFormat.PKCS1), fmt.PKCS_1, masks=verify)),
            "rsa-x509": (rsa_key, objects.PublicKey(alg.RSA, 2048, rsa_key.public_key().public_bytes(*spki),
                                                    fmt.X_509, masks=verify)),
            "rsa-priv": (rsa_key, objects.PrivateKey(alg.RSA, 2048, rsa_key.private_bytes(*pkcs8), fmt.PKCS_8,
                                                     masks=sign)),
            "ec-x509": (ec_key, objects.PublicKey(alg.ECDSA, 384, ec_key.public_key().public_bytes(*spki),
                                                  fmt.X_509, masks=verify)),
            "ec-priv": (ec_key, objects.PrivateKey(alg.ECDSA, 384, ec_key.private_bytes(*pkcs8), fmt.PKCS_8,
                                                   masks=sign)),
            "ed-x509": (ed_key, objects.PublicKey(alg.ED25519, 255, ed_key.public_key().public_bytes(*spki),
                                                  fmt.X_509, masks=verify)),
        }
        out = {}
        with self.pykmip(port) as c:
            for name, (key, obj) in made.items():
                uid = c.register(obj)
                c.activate(uid)
                out[name] = (key, uid)
        return out

    def test_python_signatures_verify(self):
        port = self.serve()
        keys = self.register(port)
        rsa_key, ec_key = keys["rsa-priv"][0], keys["ec-priv"][0]
        other_rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        other_ec = ec.generate_private_key(ec.SECP384R1())
        message = b"made in python " + os.urandom(32)
        cases = []  # (public key, params, python's signature, a signature by another key)
        for name in ("rsa-pkcs1", "rsa-x509"):
            for hash_id in HASHES:
                h = HASHES[hash_id]()
                pss = padding.PSS(mgf=padding.MGF1(h), salt_length=h.digest_size)
                cases += [(name, rsa_params("pkcs1", hash_id), rsa_key.sign(message, padding.PKCS1v15(), h),
                           other_rsa.sign(message, padding.PKCS1v15(), h)),
                          (name, rsa_params("pss", hash_id), rsa_key.sign(message, pss, h),
                           other_rsa.sign(message, pss, h))]
        for hash_id in HASHES:
            h = ec.ECDSA(HASHES[hash_id]())
            cases.append(("ec-x509", crypto_parameters(None, hash_id, ALG_ECDSA), ec_key.sign(message, h),
                          other_ec.sign(message, h)))
        for version in (V1, V2):
            with self.client(port, version) as c:
                for i, (name, params, good, foreign) in enumerate(cases):
                    with self.subTest(version=version, key=name, case=i):
                        pub = keys[name][1]
                        self.assertEqual(self.verify(c, pub, params, good, message), VALID)
                        self.assertEqual(self.verify(c, pub, params, foreign, message), INVALID)
                        self.assertEqual(self.verify(c, pub, params, good, flip(message)), INVALID)

    def test_registered_private_keys_sign(self):
        port = self.serve()
        keys = self.register(port)
        (rsa_key, rsa_priv), (ec_key, ec_priv) = keys["rsa-priv"], keys["ec-priv"]
        message = b"signed with a registered key"
        with self.client(port, V2) as c:
            for hash_id in HASHES:
                with self.subTest(hash=hash_id):
                    sig = self.sign(c, rsa_priv, rsa_params("pkcs1", hash_id), message)
                    python_verify(rsa_key.public_key(), "pkcs1", hash_id, sig, message)
                    self.assertEqual(self.verify(c, keys["rsa-x509"][1], rsa_params("pkcs1", hash_id), sig, message),
                                     VALID)
                    sig = self.sign(c, ec_priv, crypto_parameters(None, hash_id, ALG_ECDSA), message)
                    self.check_ecdsa_der(sig, 48)
                    python_verify(ec_key.public_key(), "ecdsa", hash_id, sig, message)
                    with self.assertRaises(InvalidSignature):
                        python_verify(ec.generate_private_key(ec.SECP384R1()).public_key(), "ecdsa", hash_id, sig,
                                      message)

    def test_registered_rsa_keys_are_2048_bits(self):
        port = self.serve()
        keys = self.register(port)
        with self.client(port, V2) as c:
            for name in ("rsa-pkcs1", "rsa-x509", "rsa-priv"):
                with self.subTest(key=name):
                    got = returned_attributes(c.ok(OP_GET_ATTRIBUTES, [uid_item(keys[name][1])] + attribute_refs(
                        V2, ["Cryptographic Length"])), V2)
                    self.assertEqual(got, {"Cryptographic Length": [2048]})

    def test_registered_rsa_private_key_signs_pss(self):
        port = self.serve()
        keys = self.register(port)
        rsa_key, rsa_priv = keys["rsa-priv"]
        with self.client(port, V2) as c:
            for hash_id in HASHES:
                with self.subTest(hash=hash_id):
                    sig = self.sign(c, rsa_priv, rsa_params("pss", hash_id), b"pss")
                    python_verify(rsa_key.public_key(), "pss", hash_id, sig, b"pss")

    def test_registered_ed25519_public_key_verifies(self):
        port = self.serve()
        ed_key, ed_pub = self.register(port)["ed-x509"]
        with self.client(port, V2) as c:
            self.assertEqual(self.verify(c, ed_pub, None, ed_key.sign(b"ed"), b"ed"), VALID)


class VerifySignaturesTest(CryptoTestCase):
    def test_registered_private_keys_without_public_half(self):
        # Register gives each half its own CKA_ID: an RSA private key is checked with
        # its own modulus and exponent; an EC private key has no public point, so the
        # switch refuses to sign unchecked, and says why.
        port = self.serve(keys={"verify_signatures": True})
        keys = RegisteredKeysTest.register(self, port)
        (rsa_key, rsa_priv), (_, ec_priv) = keys["rsa-priv"], keys["ec-priv"]
        with self.client(port, V2) as c:
            sig = self.sign(c, rsa_priv, rsa_params("pkcs1", HASH_SHA256), b"checked")
            python_verify(rsa_key.public_key(), "pkcs1", HASH_SHA256, sig, b"checked")
            bi = c.call(OP_SIGN, sign_request(ec_priv, crypto_parameters(None, HASH_SHA256, ALG_ECDSA), b"x"), V2)
            self.assertEqual((bi.get(T["ResultReason"]), bi.get(T["ResultMessage"])),
                             (CRYPTOGRAPHIC_FAILURE, "verify_signatures: the token holds no public key to check with"))

    def test_self_check_passes_good_signatures(self):
        # keys.verify_signatures: GnuTLS checks each signature with the public half
        # before it goes out; every scheme and input form passes.
        port = self.serve(keys={"verify_signatures": True})
        with self.client(port, V2) as c:
            pairs = {"rsa": self.active_pair(c, V2, ALG_RSA, 2048, None),
                     "ec": self.active_pair(c, V2, ALG_EC, curve=CURVE_P384),
                     "ed": self.active_pair(c, V2, ALG_ED25519, curve=None)}
            publics = {k: self.public_key(c, pub) for k, (_, pub) in pairs.items()}
            message = b"checked twice"
            cases = [("rsa", s, h, rsa_params(s, h)) for s in ("pkcs1", "pss") for h in HASHES]
            cases += [("ec", "ecdsa", h, crypto_parameters(None, h, ALG_ECDSA)) for h in HASHES]
            for key, scheme, hash_id, params in cases:
                for digested in (False, True):
                    with self.subTest(scheme=scheme, hash=hash_id, digested=digested):
                        sig = self.sign(c, pairs[key][0], params, None if digested else message,
                                        HASHLIB[hash_id](message).digest() if digested else None)
                        python_verify(publics[key], scheme, hash_id, sig, message)
            sig = self.sign(c, pairs["ed"][0], None, message)
            python_verify(publics["ed"], "ed25519", None, sig, message)


    def test_self_check_with_pss_salt_lengths(self):
        port = self.serve(keys={"verify_signatures": True})
        with self.client(port, V2) as c:
            priv, pub = self.active_pair(c, V2, ALG_RSA, 2048, None)
            public = self.public_key(c, pub)
            for salt in (None, 0, 222, None, 32):
                with self.subTest(salt=salt):
                    fields = [item(T["PaddingMethod"], ENUM, PAD_PSS), item(T["HashingAlgorithm"], ENUM, HASH_SHA256)]
                    fields += [] if salt is None else [item(0x420100, INTEGER, salt)]  # Salt Length
                    sig = self.sign(c, priv, item(T["CryptographicParameters"], STRUCTURE, fields), b"m")
                    public.verify(sig, b"m", padding.PSS(mgf=padding.MGF1(hashes.SHA256()),
                                                         salt_length=32 if salt is None else salt), hashes.SHA256())


class KeyRulesTest(CryptoTestCase):
    """The lifecycle and the usage mask, which the token enforces through the key's
    usage flags, as Result Reasons on the hot path."""

    def test_lifecycle(self):
        port = self.serve()
        for version in (V1, V2):
            with self.client(port, version) as c, self.subTest(version=version):
                want = reason_in(version, PERMISSION_DENIED, WRONG_KEY_LIFECYCLE_STATE)
                payload = c.ok(OP_CREATE_KEY_PAIR, pair_payload(version, ALG_EC, curve=CURVE_P256))
                priv = find(payload, T["PrivateKeyUniqueIdentifier"])[0]
                pub = find(payload, T["PublicKeyUniqueIdentifier"])[0]
                params = crypto_parameters(None, HASH_SHA256, ALG_ECDSA)
                message = b"lifecycle"
                # Pre-Active: neither half may be used.
                self.assertEqual(c.fails(OP_SIGN, sign_request(priv, params, message)), want)
                c.ok(OP_ACTIVATE, [uid_item(priv)])
                sig = self.sign(c, priv, params, message)
                self.assertEqual(c.fails(OP_SIGNATURE_VERIFY, verify_request(pub, params, sig, message)), want)
                c.ok(OP_ACTIVATE, [uid_item(pub)])
                self.assertEqual(self.verify(c, pub, params, sig, message), VALID)
                # Deactivated: the private key no longer signs; the public key still
                # verifies, and still tells a bad signature from a good one.
                for uid in (priv, pub):
                    c.ok(OP_REVOKE, revoke_payload(uid, CESSATION_OF_OPERATION))
                self.assertEqual(c.fails(OP_SIGN, sign_request(priv, params, message)), want)
                self.assertEqual(c.fails(OP_SIGN, sign_request(priv, params, digested=hashlib.sha256(message).digest())),
                                 want)
                self.assertEqual(self.verify(c, pub, params, sig, message), VALID)
                self.assertEqual(self.verify(c, pub, params, flip(sig), message), INVALID)
                # Compromised: the same.
                for uid in (priv, pub):
                    c.ok(OP_REVOKE, revoke_payload(uid, KEY_COMPROMISE))
                self.assertEqual(c.fails(OP_SIGN, sign_request(priv, params, message)), want)
                self.assertEqual(self.verify(c, pub, params, sig, message), VALID)

    def test_usage_mask(self):
        port = self.serve()
        for version in (V1, V2):
            with self.client(port, version) as c, self.subTest(version=version):
                want = reason_in(version, PERMISSION_DENIED, INCOMPATIBLE_CRYPTOGRAPHIC_USAGE_MASK)
                # A private key that may only decrypt, a public key that may only
                # encrypt: Active, and still of no use for signatures.
                priv, pub = self.active_pair(c, version, ALG_RSA, 2048, None, private_usage=USAGE_DECRYPT,
                                             public_usage=USAGE_ENCRYPT)
                params = rsa_params("pkcs1", HASH_SHA256)
                self.assertEqual(c.fails(OP_SIGN, sign_request(priv, params, b"m")), want)
                self.assertEqual(c.fails(OP_SIGNATURE_VERIFY, verify_request(pub, params, b"\0" * 256, b"m")), want)
                # The same with the Sign and Verify bits: fine.
                priv2, pub2 = self.active_pair(c, version, ALG_EC, curve=CURVE_P256, private_usage=USAGE_SIGN,
                                               public_usage=USAGE_VERIFY)
                ec_params = crypto_parameters(None, HASH_SHA256, ALG_ECDSA)
                sig = self.sign(c, priv2, ec_params, b"m")
                self.assertEqual(self.verify(c, pub2, ec_params, sig, b"m"), VALID)


class UnsupportedTest(CryptoTestCase):
    def test_unsupported_cryptographic_parameters(self):
        port = self.serve()
        with self.client(port, V2) as c:
            rsa_priv, rsa_pub = self.active_pair(c, V2, ALG_RSA, 2048, None)
            ec_priv, ec_pub = self.active_pair(c, V2, ALG_EC, curve=CURVE_P256)
            ed_priv, ed_pub = self.active_pair(c, V2, ALG_ED25519, curve=None)
            ed_sig = self.sign(c, ed_priv, None, b"m")
        digest = hashlib.sha256(b"m").digest()
        for version in (V1, V2):
            with self.client(port, version) as c:
                want = reason_in(version, INVALID_FIELD, UNSUPPORTED_CRYPTOGRAPHIC_PARAMETERS)
                cases = [
                    ("RSA OAEP", OP_SIGN, sign_request(rsa_priv, crypto_parameters(PAD_OAEP, HASH_SHA256), b"m")),
                    ("RSA no padding", OP_SIGN, sign_request(rsa_priv, crypto_parameters(PAD_NONE, HASH_SHA256), b"m")),
                    ("RSA MD5", OP_SIGN, sign_request(rsa_priv, crypto_parameters(PAD_PKCS1_V15, HASH_MD5), b"m")),
                    ("RSA OAEP verify", OP_SIGNATURE_VERIFY,
                     verify_request(rsa_pub, crypto_parameters(PAD_OAEP, HASH_SHA256), b"\0" * 256, b"m")),
                    ("ECDSA MD5", OP_SIGN, sign_request(ec_priv, crypto_parameters(None, HASH_MD5, ALG_ECDSA), b"m")),
                    ("EdDSA Digested Data", OP_SIGN, sign_request(ed_priv, None, digested=digest)),
                    ("EdDSA Digested Data verify", OP_SIGNATURE_VERIFY,
                     verify_request(ed_pub, None, ed_sig, digested=digest)),
                ]
                for name, op, payload in cases:
                    with self.subTest(version=version, case=name):
                        self.assertEqual(c.fails(op, payload), want)
                wrong_object = reason_in(version, ILLEGAL_OPERATION, INVALID_OBJECT_TYPE)
                self.assertEqual(c.fails(OP_SIGN, sign_request(ec_pub, None, b"m")), wrong_object)
                self.assertEqual(c.fails(OP_SIGNATURE_VERIFY, verify_request(ec_priv, None, b"\0" * 64, b"m")),
                                 wrong_object)
                self.assertEqual(c.fails(OP_SIGN, sign_request(ec_priv, None)), MISSING_DATA)
                self.assertEqual(c.fails(OP_SIGNATURE_VERIFY, sign_request(ec_pub, None, b"m")), MISSING_DATA)
                self.assertEqual(c.fails(OP_SIGNATURE_VERIFY, verify_request(ec_pub, None, b"s")), MISSING_DATA)
        # Sign, Signature Verify, MAC and RNG Retrieve came with KMIP 1.2.
        with self.client(port, (1, 1)) as c:
            for op in (OP_SIGN, OP_SIGNATURE_VERIFY, OP_MAC, OP_MAC_VERIFY, OP_RNG_RETRIEVE):
                self.assertEqual(c.fails(op, sign_request(ec_priv, None, b"m")), OPERATION_NOT_SUPPORTED)


class LargeDataTest(CryptoTestCase):
    def test_40_kib_and_512_kib(self):
        port = self.serve()
        with self.client(port, V2) as c:
            keys = [("pkcs1", HASH_SHA256) + self.active_pair(c, V2, ALG_RSA, 2048, None),
                    ("ecdsa", HASH_SHA384) + self.active_pair(c, V2, ALG_EC, curve=CURVE_P384),
                    ("ed25519", None) + self.active_pair(c, V2, ALG_ED25519, curve=None)]
            for scheme, hash_id, priv, pub in keys:
                public = self.public_key(c, pub)
                params = (rsa_params(scheme, hash_id) if scheme == "pkcs1" else
                          crypto_parameters(None, hash_id, ALG_ECDSA) if scheme == "ecdsa" else None)
                for size in (40 * 1024, 512 * 1024):
                    with self.subTest(scheme=scheme, size=size):
                        message = os.urandom(size)
                        sig = self.sign(c, priv, params, message)
                        python_verify(public, scheme, hash_id, sig, message)
                        self.assertEqual(self.verify(c, pub, params, sig, message), VALID)
                        self.assertEqual(self.verify(c, pub, params, sig, flip(message, size // 2)), INVALID)

    def test_pykmip_40_kib(self):
        from kmip.core import enums
        port = self.serve()
        with self.client(port, V2) as c:
            priv, pub = self.active_pair(c, V2, ALG_RSA, 2048, None)
            public = self.public_key(c, pub)
        with self.pykmip(port) as c:
            message = os.urandom(40 * 1024)
            params = pykmip_params("pss", HASH_SHA512)
            sig = c.sign(message, uid=priv, cryptographic_parameters=params)
            python_verify(public, "pss", HASH_SHA512, sig, message)
            self.assertEqual(c.signature_verify(message, sig, uid=pub, cryptographic_parameters=params),
                             enums.ValidityIndicator.VALID)


class BatchTest(CryptoTestCase):
    def test_16_signs_in_one_message(self):
        port = self.serve()
        with self.client(port, V2) as c:
            rsa_priv, rsa_pub = self.active_pair(c, V2, ALG_RSA, 2048, None)
            ec_priv, ec_pub = self.active_pair(c, V2, ALG_EC, curve=CURVE_P256)
            publics = {rsa_priv: self.public_key(c, rsa_pub), ec_priv: self.public_key(c, ec_pub)}
        kinds = [(rsa_priv, "pkcs1", HASH_SHA256), (rsa_priv, "pss", HASH_SHA384),
                 (ec_priv, "ecdsa", HASH_SHA256), (ec_priv, "ecdsa", HASH_SHA512)]
        for version in (V1, V2):
            plan = []
            for i in range(16):
                uid, scheme, hash_id = kinds[i % 4]
                params = (crypto_parameters(None, hash_id, ALG_ECDSA) if scheme == "ecdsa"
                          else rsa_params(scheme, hash_id))
                plan.append((b"item-%02d" % i, uid, scheme, hash_id, b"message %d " % i + os.urandom(16), params))
            with self.connect(port) as s:
                resp = exchange(s, request_message(
                    [batch_item(OP_SIGN, sign_request(uid, params, message), bid)
                     for bid, uid, _, _, message, params in plan], version=version))
            items = batch_items(resp)
            self.assertEqual([(bi[T["Operation"]], bi[T["UniqueBatchItemID"]], bi[T["ResultStatus"]]) for bi in items],
                             [(OP_SIGN, bid, 0) for bid, *_ in plan])
            for bi, (bid, uid, scheme, hash_id, message, _) in zip(items, plan):
                with self.subTest(version=version, item=bid):
                    payload = bi[T["ResponsePayload"]]
                    self.assertEqual([(t, ty) for t, ty, _ in payload], [(T["UniqueIdentifier"], TEXT),
                                                                         (T["SignatureData"], BYTES)])
                    self.assertEqual(payload[0][2], uid)
                    python_verify(publics[uid], scheme, hash_id, payload[1][2], message)


class MACTest(CryptoTestCase):
    def create_hmac(self, c, version, algorithm, length=None):
        uid = find(c.ok(OP_CREATE, create_payload(version, algorithm, length), version), T["UniqueIdentifier"])[0]
        return uid

    def test_hmac_sha2(self):
        port = self.serve(keys={"extractable": True})
        with self.client(port, V2) as c:
            keys = {}
            for algorithm, size in ((ALG_HMAC_SHA256, 32), (ALG_HMAC_SHA384, 48), (ALG_HMAC_SHA512, 64)):
                uid = self.create_hmac(c, V2, algorithm)
                # Pre-Active: no MAC yet.
                self.assertEqual(c.fails(OP_MAC, mac_request(uid, b"early")), WRONG_KEY_LIFECYCLE_STATE)
                self.assertEqual(returned_attributes(c.ok(OP_GET_ATTRIBUTES, [uid_item(uid)] + attribute_refs(
                    V2, ["Cryptographic Usage Mask"])), V2), {"Cryptographic Usage Mask": [
                        USAGE_MAC_GENERATE | USAGE_MAC_VERIFY]})
                c.ok(OP_ACTIVATE, [uid_item(uid)])
                fmt, key = key_material(c.ok(OP_GET, [uid_item(uid)]))
                self.assertEqual((fmt, len(key)), (FMT_RAW, size))
                keys[algorithm] = (uid, key)
        for version in (V1, V2):
            with self.client(port, version) as c:
                for algorithm, (uid, key) in keys.items():
                    for params in (None, crypto_parameters(algorithm=algorithm)):
                        with self.subTest(version=version, algorithm=algorithm, params=params is not None):
                            data = os.urandom(123)
                            want = hmac.new(key, data, HMACS[algorithm]).digest()
                            self.assertEqual(c.ok(OP_MAC, mac_request(uid, data, params)),
                                             [(T["UniqueIdentifier"], TEXT, uid), (T["MACData"], BYTES, want)])

                            def mac_verify(d, m):
                                payload = c.ok(OP_MAC_VERIFY, mac_request(uid, d, params, m))
                                self.assertEqual(payload[0], (T["UniqueIdentifier"], TEXT, uid))
                                self.assertEqual([(t, ty) for t, ty, _ in payload[1:]],
                                                 [(T["ValidityIndicator"], ENUM)])
                                return payload[1][2]
                            self.assertEqual(mac_verify(data, want), VALID)
                            self.assertEqual(mac_verify(data, flip(want)), INVALID)
                            self.assertEqual(mac_verify(flip(data), want), INVALID)
                            self.assertEqual(mac_verify(data, want[:-1]), INVALID)
                            self.assertEqual(mac_verify(data, want + b"\0"), INVALID)
                    # Large data too.
                    data = os.urandom(256 * 1024)
                    self.assertEqual(find(c.ok(OP_MAC, mac_request(uid, data)), T["MACData"]),
                                     [hmac.new(key, data, HMACS[algorithm]).digest()])
                self.assertEqual(c.fails(OP_MAC, [uid_item(keys[ALG_HMAC_SHA256][0])]), MISSING_DATA)
                self.assertEqual(c.fails(OP_MAC_VERIFY, mac_request(keys[ALG_HMAC_SHA256][0], b"d")), MISSING_DATA)
        self.pykmip_mac(port, keys)

    def pykmip_mac(self, port, keys):
        from kmip.core import enums
        algorithms = {ALG_HMAC_SHA256: enums.CryptographicAlgorithm.HMAC_SHA256,
                      ALG_HMAC_SHA384: enums.CryptographicAlgorithm.HMAC_SHA384,
                      ALG_HMAC_SHA512: enums.CryptographicAlgorithm.HMAC_SHA512}
        with self.pykmip(port) as c:
            for algorithm, (uid, key) in keys.items():
                data = b"pykmip mac " + os.urandom(10)
                self.assertEqual(c.mac(data, uid=uid, algorithm=algorithms[algorithm]),
                                 (uid, hmac.new(key, data, HMACS[algorithm]).digest()))

    def test_short_and_wrong_keys(self):
        # SoftHSM refuses HMAC keys shorter than the hash (CKR_KEY_SIZE_RANGE): the
        # relay says Unsupported Cryptographic Parameters, with the token's code.
        port = self.serve(keys={"extractable": True})
        with self.client(port, V2) as c:
            short = self.create_hmac(c, V2, ALG_HMAC_SHA256, 128)
            c.ok(OP_ACTIVATE, [uid_item(short)])
            fmt, key = key_material(c.ok(OP_GET, [uid_item(short)]))
            self.assertEqual((fmt, len(key)), (FMT_RAW, 16))
            aes = self.create_aes(c, V2)
            c.ok(OP_ACTIVATE, [uid_item(aes)])
            priv, _ = self.active_pair(c, V2, ALG_EC, curve=CURVE_P256)
        for version in (V1, V2):
            with self.client(port, version) as c, self.subTest(version=version):
                unsupported = reason_in(version, INVALID_FIELD, UNSUPPORTED_CRYPTOGRAPHIC_PARAMETERS)
                for op, payload in ((OP_MAC, mac_request(short, b"data")),
                                    (OP_MAC_VERIFY, mac_request(short, b"data", None, b"\0" * 32))):
                    bi = c.call(op, payload)
                    self.assertEqual((bi[T["ResultStatus"]], bi[T["ResultReason"]], bi[T["ResultMessage"]]),
                                     (1, unsupported, "CKR_KEY_SIZE_RANGE"))
                self.assertEqual(c.fails(OP_MAC, mac_request(aes, b"data")), unsupported)
                wrong_object = reason_in(version, ILLEGAL_OPERATION, INVALID_OBJECT_TYPE)
                self.assertEqual(c.fails(OP_MAC, mac_request(priv, b"data")), wrong_object)


def oaep_labelled(hashing, label=b"label"):
    """OAEP Cryptographic Parameters with a label (P Source)."""
    return item(T["CryptographicParameters"], STRUCTURE, [
        item(T["PaddingMethod"], ENUM, PAD_OAEP), item(T["HashingAlgorithm"], ENUM, hashing),
        item(0x420103, BYTES, label)])  # P Source


class CipherTest(CryptoTestCase):
    """Encrypt and Decrypt on the token, each ciphertext checked by a round trip and,
    with an extractable key, against python-cryptography."""

    def aes_key(self, c, version=V2):
        uid = find(c.ok(OP_CREATE, create_payload(version), version), T["UniqueIdentifier"])[0]
        c.ok(OP_ACTIVATE, [uid_item(uid)], version)
        _, key = key_material(c.ok(OP_GET, get_payload(uid, FMT_RAW), version))
        return uid, key

    @staticmethod
    def aes_params(mode, padding=None, tag_length=None):
        fields = [item(T["BlockCipherMode"], ENUM, mode)]
        if padding is not None:
            fields.append(item(T["PaddingMethod"], ENUM, padding))
        if tag_length is not None:
            fields.append(item(T["TagLength"], INTEGER, tag_length))
        return item(T["CryptographicParameters"], STRUCTURE, fields)

    @staticmethod
    def fields(payload):
        return {t: v for t, _, v in payload}

    def cipher(self, c, op, uid, params, data, version=V2, **extra):
        payload = [uid_item(uid), params, item(T["Data"], BYTES, data)]
        payload += [item(T[name], BYTES, value) for name, value in sorted(extra.items())]
        return self.fields(c.ok(op, payload, version))

    def test_aes_cbc_ecb(self):
        from cryptography.hazmat.primitives import padding
        from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
        port = self.serve(keys={"extractable": True})
        with self.client(port) as c:
            uid, key = self.aes_key(c)
            for data in (b"x", b"0123456789abcdef", b"kmip-relay" * 7):
                # No IV given: the token makes one and the response carries it.
                out = self.cipher(c, OP_ENCRYPT, uid, self.aes_params(MODE_CBC, PAD_PKCS5), data)
                iv = out[T["IVCounterNonce"]]
                self.assertEqual(len(iv), 16)
                padder = padding.PKCS7(128).padder()
                enc = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
                self.assertEqual(out[T["Data"]], enc.update(padder.update(data) + padder.finalize()) + enc.finalize())
                back = self.cipher(c, OP_DECRYPT, uid, self.aes_params(MODE_CBC, PAD_PKCS5), out[T["Data"]],
                                   IVCounterNonce=iv)
                self.assertEqual(back, {T["UniqueIdentifier"]: uid, T["Data"]: data})
            # The client's IV is used and not echoed; no padding needs whole blocks.
            iv, data = bytes(range(16)), b"A" * 32
            out = self.cipher(c, OP_ENCRYPT, uid, self.aes_params(MODE_CBC, PAD_NONE), data, IVCounterNonce=iv)
            enc = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
            self.assertEqual(out, {T["UniqueIdentifier"]: uid, T["Data"]: enc.update(data) + enc.finalize()})
            self.assertEqual(c.fails(OP_ENCRYPT, [uid_item(uid), self.aes_params(MODE_CBC, PAD_NONE),
                                                  item(T["Data"], BYTES, b"A" * 33),
                                                  item(T["IVCounterNonce"], BYTES, iv)], V2), CRYPTOGRAPHIC_FAILURE)
            out = self.cipher(c, OP_ENCRYPT, uid, self.aes_params(MODE_ECB), data)
            enc = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
            self.assertEqual(out, {T["UniqueIdentifier"]: uid, T["Data"]: enc.update(data) + enc.finalize()})
            # Decryption without the IV: Invalid Message, as the OASIS test cases
            # CS-BC-M-11 to 13 have it, in 1.x and 2.x.
            for version in (V1, V2):
                bi = c.call(OP_DECRYPT, [uid_item(uid), self.aes_params(MODE_CBC, PAD_PKCS5),
                                         item(T["Data"], BYTES, b"B" * 16)], version)
                self.assertEqual((bi[T["ResultReason"]], bi[T["ResultMessage"]]),
                                 (INVALID_MESSAGE, "decryption needs the IV/Counter/Nonce"))

    def test_aes_gcm(self):
        from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
        port = self.serve(keys={"extractable": True})
        with self.client(port) as c:
            uid, key = self.aes_key(c)
            iv, aad, data = b"\x07" * 12, b"header", b"the message" * 5
            for tag_length in (16, 12):
                with self.subTest(tag_length=tag_length):
                    out = self.cipher(c, OP_ENCRYPT, uid, self.aes_params(MODE_GCM, tag_length=tag_length), data,
                                      IVCounterNonce=iv, AEADData=aad)
                    enc = Cipher(algorithms.AES(key), modes.GCM(iv)).encryptor()
                    enc.authenticate_additional_data(aad)
                    ct = enc.update(data) + enc.finalize()
                    self.assertEqual(out, {T["UniqueIdentifier"]: uid, T["Data"]: ct,
                                           T["AEADTag"]: enc.tag[:tag_length]})
                    params = self.aes_params(MODE_GCM, tag_length=tag_length)
                    back = self.cipher(c, OP_DECRYPT, uid, params, ct, IVCounterNonce=iv, AEADData=aad,
                                       AEADTag=out[T["AEADTag"]])
                    self.assertEqual(back[T["Data"]], data)
                    for name, bad in (("tag", flip(out[T["AEADTag"]])), ("data", None), ("aad", None)):
                        payload = [uid_item(uid), params, item(T["Data"], BYTES, flip(ct) if name == "data" else ct),
                                   item(T["IVCounterNonce"], BYTES, iv),
                                   item(T["AEADData"], BYTES, aad + b"!" if name == "aad" else aad),
                                   item(T["AEADTag"], BYTES, bad or out[T["AEADTag"]])]
                        bi = c.call(OP_DECRYPT, payload, V2)
                        self.assertEqual(bi[T["ResultReason"]], CRYPTOGRAPHIC_FAILURE, name)
            # No IV given: the token makes a 12-byte nonce and returns it.
            out = self.cipher(c, OP_ENCRYPT, uid, self.aes_params(MODE_GCM), data)
            self.assertEqual(len(out[T["IVCounterNonce"]]), 12)
            back = self.cipher(c, OP_DECRYPT, uid, self.aes_params(MODE_GCM), out[T["Data"]],
                               IVCounterNonce=out[T["IVCounterNonce"]], AEADTag=out[T["AEADTag"]])
            self.assertEqual(back[T["Data"]], data)

    def test_rsa_oaep_and_pkcs1(self):
        from cryptography.hazmat.primitives.asymmetric import padding as rsa_padding
        port = self.serve()
        with self.client(port) as c:
            priv, pub = self.active_pair(c, V2, ALG_RSA, 2048, None, private_usage=USAGE_DECRYPT,
                                         public_usage=USAGE_ENCRYPT)
            public = self.public_key(c, pub)
            oaep_sha1 = crypto_parameters(PAD_OAEP, HASH_SHA1, ALG_RSA)
            # The relay's ciphertext decrypts; python's too (the private key stays in).
            out = self.cipher(c, OP_ENCRYPT, pub, oaep_sha1, b"secret")
            self.assertEqual(len(out[T["Data"]]), 256)
            self.assertEqual(self.cipher(c, OP_DECRYPT, priv, oaep_sha1, out[T["Data"]])[T["Data"]], b"secret")
            mine = public.encrypt(b"from python", rsa_padding.OAEP(rsa_padding.MGF1(hashes.SHA1()), hashes.SHA1(), None))
            self.assertEqual(self.cipher(c, OP_DECRYPT, priv, oaep_sha1, mine)[T["Data"]], b"from python")
            mine = public.encrypt(b"v1.5", rsa_padding.PKCS1v15())
            self.assertEqual(self.cipher(c, OP_DECRYPT, priv, crypto_parameters(PAD_PKCS1_V15, None, ALG_RSA),
                                         mine)[T["Data"]], b"v1.5")
            self.check_oaep_beyond_sha1(c, priv, pub, public)
            # The wrong half.
            self.assertEqual(c.fails(OP_ENCRYPT, [uid_item(priv), oaep_sha1, item(T["Data"], BYTES, b"x")], V2),
                             INVALID_OBJECT_TYPE)

    def check_oaep_beyond_sha1(self, c, priv, pub, public):
        """OAEP with SHA-256 and with a label (P Source) is passed to the token,
        which (SoftHSM 2.6) refuses both; openCryptoki's test overrides this."""
        bi = c.call(OP_ENCRYPT, [uid_item(pub), crypto_parameters(PAD_OAEP, HASH_SHA256, ALG_RSA),
                                 item(T["Data"], BYTES, b"x")], V2)
        self.assertEqual((bi[T["ResultReason"]], bi[T["ResultMessage"]]),
                         (UNSUPPORTED_CRYPTOGRAPHIC_PARAMETERS, "CKR_ARGUMENTS_BAD"))
        bi = c.call(OP_ENCRYPT, [uid_item(pub), oaep_labelled(HASH_SHA1), item(T["Data"], BYTES, b"x")], V2)
        self.assertEqual((bi[T["ResultReason"]], bi[T["ResultMessage"]]),
                         (UNSUPPORTED_CRYPTOGRAPHIC_PARAMETERS, "CKR_ARGUMENTS_BAD"))

    def test_lifecycle(self):
        port = self.serve()
        with self.client(port) as c:
            uid = find(c.ok(OP_CREATE, create_payload(V2), V2), T["UniqueIdentifier"])[0]
            params = self.aes_params(MODE_CBC, PAD_PKCS5)
            self.assertEqual(c.fails(OP_ENCRYPT, [uid_item(uid), params, item(T["Data"], BYTES, b"x")], V2),
                             WRONG_KEY_LIFECYCLE_STATE)
            c.ok(OP_ACTIVATE, [uid_item(uid)], V2)
            out = self.cipher(c, OP_ENCRYPT, uid, params, b"kept")
            c.ok(OP_REVOKE, revoke_payload(uid, CESSATION_OF_OPERATION), V2)
            # Deactivated: no more encryption, but what was encrypted still decrypts.
            self.assertEqual(c.fails(OP_ENCRYPT, [uid_item(uid), params, item(T["Data"], BYTES, b"x")], V2),
                             WRONG_KEY_LIFECYCLE_STATE)
            back = self.cipher(c, OP_DECRYPT, uid, params, out[T["Data"]], IVCounterNonce=out[T["IVCounterNonce"]])
            self.assertEqual(back[T["Data"]], b"kept")

    def test_pykmip_aes_cbc(self):
        from kmip.core import enums
        port = self.serve()
        with self.pykmip(port) as c:
            uid = c.create(enums.CryptographicAlgorithm.AES, 128, cryptographic_usage_mask=[
                enums.CryptographicUsageMask.ENCRYPT, enums.CryptographicUsageMask.DECRYPT])
            c.activate(uid)
            params = {"block_cipher_mode": enums.BlockCipherMode.CBC, "padding_method": enums.PaddingMethod.PKCS5,
                      "cryptographic_algorithm": enums.CryptographicAlgorithm.AES}
            ct, iv = c.encrypt(b"pykmip data", uid=uid, cryptographic_parameters=params)
            self.assertEqual((len(ct), len(iv)), (16, 16))
            self.assertEqual(c.decrypt(ct, uid=uid, cryptographic_parameters=params, iv_counter_nonce=iv),
                             b"pykmip data")


# Multi-part operations, key attributes that rule cryptographic use, and the Result
# Reasons that go with them.
T.update({
    "CorrelationValue": 0x4200D6, "InitIndicator": 0x4200D7, "FinalIndicator": 0x4200D8,
    "UsageLimits": 0x420095, "UsageLimitsCount": 0x420096, "UsageLimitsTotal": 0x420097,
    "UsageLimitsUnit": 0x420098, "ProcessStartDate": 0x420067, "ProtectStopDate": 0x420068,
    "SaltLength": 0x420100,
})
INVALID_MESSAGE, INVALID_CORRELATION_VALUE, SERVER_LIMIT_EXCEEDED = 0x04, 0x2E, 0x3A
UNIT_BYTE, UNIT_OBJECT = 1, 2


def key_attr(version, name, typ, value):
    """An attribute that relaytest's attr() does not know, by its name."""
    return attribute(name, typ, value) if version[0] < 2 else item(T[name.replace(" ", "")], typ, value)


def usage_limits(version, total, unit):
    return key_attr(version, "Usage Limits", STRUCTURE, [item(T["UsageLimitsTotal"], LONG, total),
                                                         item(T["UsageLimitsUnit"], ENUM, unit)])


def aes_create(version, extra=()):
    """A Create payload of an AES-256 key with more attributes."""
    return [item(T["ObjectType"], ENUM, OBJ_SYMMETRIC_KEY),
            container(version, "template", [attr(version, "Cryptographic Algorithm", ENUM, ALG_AES),
                                            attr(version, "Cryptographic Length", INTEGER, 256)] + list(extra))]


def stream_request(uid, params, data=None, correlation=None, init=False, final=False, **extra):
    """An Encrypt or Decrypt payload, part of a stream (extra: IVCounterNonce, AEADData,
    AEADTag)."""
    payload = [uid_item(uid)] + ([params] if params is not None else [])
    if data is not None:
        payload.append(item(T["Data"], BYTES, data))
    payload += [item(T[name], BYTES, value) for name, value in sorted(extra.items())]
    if correlation is not None:
        payload.append(item(T["CorrelationValue"], BYTES, correlation))
    if init:
        payload.append(item(T["InitIndicator"], BOOL, True))
    if final:
        payload.append(item(T["FinalIndicator"], BOOL, True))
    return payload


class KeyAttributesTestCase(CryptoTestCase):
    def active_key(self, c, version, extra=()):
        """The UID of a new active AES-256 key with the extra attributes."""
        uid = find(c.ok(OP_CREATE, aes_create(version, extra), version), T["UniqueIdentifier"])[0]
        c.ok(OP_ACTIVATE, [uid_item(uid)], version)
        return uid

    def key_bytes(self, c, uid, version=V2):
        return key_material(c.ok(OP_GET, get_payload(uid, FMT_RAW), version))[1]

    aes_params = staticmethod(CipherTest.aes_params)
    fields = staticmethod(CipherTest.fields)

    def cipher(self, c, op, uid, params, data, version=V2, **extra):
        """The response fields of a one-part Encrypt or Decrypt (params None: none)."""
        return self.fields(c.ok(op, stream_request(uid, params, data, **extra), version))

    def metadata_generations(self):
        """The labels of the token's metadata objects: each write makes a new one."""
        return sorted(METADATA_LABEL.findall(self.token.objects("data")))


class ECBPaddingTest(KeyAttributesTestCase):
    def test_round_trip_against_python(self):
        from cryptography.hazmat.primitives import padding as sym_padding
        from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
        port = self.serve(keys={"extractable": True})
        with self.client(port, V2) as c:
            uid = self.active_key(c, V2)
            key = self.key_bytes(c, uid)
        params = self.aes_params(MODE_ECB, PAD_PKCS5)
        for version in (V1, V2):
            with self.client(port, version) as c:
                for n in (0, 1, 15, 16, 17, 33):
                    with self.subTest(version=version, length=n):
                        data = os.urandom(n)
                        padder = sym_padding.PKCS7(128).padder()
                        enc = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
                        want = enc.update(padder.update(data) + padder.finalize()) + enc.finalize()
                        self.assertEqual(self.cipher(c, OP_ENCRYPT, uid, params, data, version),
                                         {T["UniqueIdentifier"]: uid, T["Data"]: want})
                        self.assertEqual(self.cipher(c, OP_DECRYPT, uid, params, want, version),
                                         {T["UniqueIdentifier"]: uid, T["Data"]: data})

    def test_bad_padding(self):
        from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
        port = self.serve(keys={"extractable": True})
        with self.client(port, V2) as c:
            uid = self.active_key(c, V2)
            key = self.key_bytes(c, uid)
            params = self.aes_params(MODE_ECB, PAD_PKCS5)
            for name, plain in (("zero", b"A" * 15 + b"\0"), ("longer than a block", b"A" * 15 + b"\x11"),
                                ("uneven", b"A" * 13 + b"\x02\x03\x03"),
                                ("whole block short", b"\x10" * 14 + b"\x0f\x10")):
                with self.subTest(padding=name):
                    enc = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
                    bad = enc.update(plain) + enc.finalize()
                    bi = c.call(OP_DECRYPT, [uid_item(uid), params, item(T["Data"], BYTES, bad)], V2)
                    self.assertEqual((bi[T["ResultReason"]], bi[T["ResultMessage"]]),
                                     (CRYPTOGRAPHIC_FAILURE, "the decrypted data does not end in PKCS#5 padding"))
            bi = c.call(OP_DECRYPT, [uid_item(uid), params, item(T["Data"], BYTES, b"")], V2)
            self.assertEqual((bi[T["ResultReason"]], bi[T["ResultMessage"]]),
                             (CRYPTOGRAPHIC_FAILURE, "the decrypted data does not end in PKCS#5 padding"))
            bi = c.call(OP_DECRYPT, [uid_item(uid), params, item(T["Data"], BYTES, b"x" * 15)], V2)
            self.assertEqual((bi[T["ResultReason"]], bi[T["ResultMessage"]]),
                             (CRYPTOGRAPHIC_FAILURE, "CKR_ENCRYPTED_DATA_LEN_RANGE"))


class GCMParametersTest(KeyAttributesTestCase):
    def test_long_iv_and_tag_lengths(self):
        from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
        port = self.serve(keys={"extractable": True})
        with self.client(port, V2) as c:
            uid = self.active_key(c, V2)
            key = self.key_bytes(c, uid)
            iv, data = os.urandom(60), b"NIST's test case 6 has a 60-byte IV"
            out = self.cipher(c, OP_ENCRYPT, uid, self.aes_params(MODE_GCM), data, IVCounterNonce=iv)
            enc = Cipher(algorithms.AES(key), modes.GCM(iv)).encryptor()
            self.assertEqual(out, {T["UniqueIdentifier"]: uid, T["Data"]: enc.update(data) + enc.finalize(),
                                   T["AEADTag"]: enc.tag})
            back = self.cipher(c, OP_DECRYPT, uid, self.aes_params(MODE_GCM), out[T["Data"]], IVCounterNonce=iv,
                               AEADTag=out[T["AEADTag"]])
            self.assertEqual(back[T["Data"]], data)
            # Tag Lengths outside 4..16 bytes: General Failure, as in the OASIS test
            # case CS-BC-M-GCM-1.
            for version in (V1, V2):
                for tag_length in (0, 3, 17, 32):
                    bi = c.call(OP_ENCRYPT, [uid_item(uid), self.aes_params(MODE_GCM, tag_length=tag_length),
                                             item(T["Data"], BYTES, data), item(T["IVCounterNonce"], BYTES, iv)],
                                version)
                    self.assertEqual((bi[T["ResultReason"]], bi[T["ResultMessage"]]),
                                     (GENERAL_FAILURE, "Tag Length must be 4 to 16 bytes"), tag_length)


class KeyParametersTest(KeyAttributesTestCase):
    """A key's Cryptographic Parameters attribute fills in what a request's leave out."""

    def test_rsa_pss(self):
        port = self.serve()
        for version in (V1, V2):
            with self.client(port, version) as c, self.subTest(version=version):
                pss384 = key_attr(version, "Cryptographic Parameters", STRUCTURE,
                                  [item(T["PaddingMethod"], ENUM, PAD_PSS),
                                   item(T["HashingAlgorithm"], ENUM, HASH_SHA384)])
                payload = pair_payload(version, ALG_RSA, 2048)
                payload[0] = container(version, "common", [attr(version, "Cryptographic Algorithm", ENUM, ALG_RSA),
                                                           attr(version, "Cryptographic Length", INTEGER, 2048),
                                                           pss384])
                created = c.ok(OP_CREATE_KEY_PAIR, payload)
                priv = find(created, T["PrivateKeyUniqueIdentifier"])[0]
                pub = find(created, T["PublicKeyUniqueIdentifier"])[0]
                for uid in (priv, pub):
                    c.ok(OP_ACTIVATE, [uid_item(uid)])
                public = self.public_key(c, pub)
                message = os.urandom(50)
                # No parameters: the key's PSS with SHA-384.
                sig = self.sign(c, priv, None, message)
                python_verify(public, "pss", HASH_SHA384, sig, message)
                self.assertEqual(self.verify(c, pub, None, sig, message), VALID)
                self.assertEqual(self.verify(c, pub, None, flip(sig), message), INVALID)
                # The request's padding wins; the hash is still the key's.
                sig = self.sign(c, priv, crypto_parameters(PAD_PKCS1_V15), message)
                python_verify(public, "pkcs1", HASH_SHA384, sig, message)
                self.assertEqual(self.verify(c, pub, crypto_parameters(PAD_PKCS1_V15), sig, message), VALID)
                self.assertEqual(self.verify(c, pub, None, sig, message), INVALID)

    def test_pss_salt_lengths(self):
        # Without a Salt Length a signature verifies with the hash's length or with
        # the longest (OpenSSL's default, and the OASIS test cases'); with one named,
        # only with that one.
        port = self.serve()
        keys = RegisteredKeysTest.register(self, port)
        rsa_key, priv = keys["rsa-priv"]
        pub = keys["rsa-x509"][1]
        message = b"salted"

        def pss(salt):
            return padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=salt)

        def params(salt=None):
            fields = [item(T["PaddingMethod"], ENUM, PAD_PSS), item(T["HashingAlgorithm"], ENUM, HASH_SHA256)]
            fields += [] if salt is None else [item(T["SaltLength"], INTEGER, salt)]
            return item(T["CryptographicParameters"], STRUCTURE, fields)
        with self.client(port, V2) as c:
            for salt, named, valid in ((32, None, VALID), (222, None, VALID), (222, 222, VALID), (222, 32, INVALID),
                                       (20, None, INVALID), (20, 20, VALID)):
                with self.subTest(salt=salt, named=named):
                    sig = rsa_key.sign(message, pss(salt), hashes.SHA256())
                    self.assertEqual(self.verify(c, pub, params(named), sig, message), valid)
            sig = self.sign(c, priv, params(222), message)
            rsa_key.public_key().verify(sig, message, pss(222), hashes.SHA256())

    def test_aes_gcm(self):
        from cryptography.hazmat.primitives import padding as sym_padding
        from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
        port = self.serve(keys={"extractable": True})
        for version in (V1, V2):
            with self.client(port, version) as c, self.subTest(version=version):
                gcm12 = key_attr(version, "Cryptographic Parameters", STRUCTURE,
                                 [item(T["BlockCipherMode"], ENUM, MODE_GCM), item(T["TagLength"], INTEGER, 12)])
                uid = self.active_key(c, version, [gcm12])
                key = self.key_bytes(c, uid, version)
                data = os.urandom(40)
                out = self.cipher(c, OP_ENCRYPT, uid, None, data, version)
                iv = out[T["IVCounterNonce"]]
                enc = Cipher(algorithms.AES(key), modes.GCM(iv)).encryptor()
                self.assertEqual(out, {T["UniqueIdentifier"]: uid, T["Data"]: enc.update(data) + enc.finalize(),
                                       T["IVCounterNonce"]: iv, T["AEADTag"]: enc.tag[:12]})
                back = self.cipher(c, OP_DECRYPT, uid, None, out[T["Data"]], version, IVCounterNonce=iv,
                                   AEADTag=out[T["AEADTag"]])
                self.assertEqual(back[T["Data"]], data)
                # The request's mode wins: CBC, with its default padding.
                out = self.cipher(c, OP_ENCRYPT, uid, self.aes_params(MODE_CBC), data, version)
                padder = sym_padding.PKCS7(128).padder()
                enc = Cipher(algorithms.AES(key), modes.CBC(out[T["IVCounterNonce"]])).encryptor()
                self.assertEqual(out[T["Data"]], enc.update(padder.update(data) + padder.finalize()) + enc.finalize())


class KeyDatesTest(KeyAttributesTestCase):
    """The Process Start Date begins decryption and verification, the Protect Stop
    Date ends encryption and signing (KMIP 2.1 4.40, 4.41)."""

    def test_aes(self):
        from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
        port = self.serve(keys={"extractable": True})
        params = self.aes_params(MODE_ECB)
        for version in (V1, V2):
            with self.client(port, version) as c, self.subTest(version=version):
                refused = reason_in(version, PERMISSION_DENIED, WRONG_KEY_LIFECYCLE_STATE)
                now = int(time.time())
                early = self.active_key(c, version, [key_attr(version, "Process Start Date", DATETIME, now + 3600)])
                out = self.cipher(c, OP_ENCRYPT, early, params, b"B" * 16, version)
                bi = c.call(OP_DECRYPT, [uid_item(early), params, item(T["Data"], BYTES, out[T["Data"]])], version)
                self.assertEqual((bi[T["ResultReason"]], bi[T["ResultMessage"]]),
                                 (refused, "the key's Process Start Date has not come"))
                late = self.active_key(c, version, [key_attr(version, "Protect Stop Date", DATETIME, now - 3600)])
                key = self.key_bytes(c, late, version)
                bi = c.call(OP_ENCRYPT, [uid_item(late), params, item(T["Data"], BYTES, b"B" * 16)], version)
                self.assertEqual((bi[T["ResultReason"]], bi[T["ResultMessage"]]),
                                 (refused, "the key's Protect Stop Date has passed"))
                enc = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
                ct = enc.update(b"C" * 16) + enc.finalize()
                self.assertEqual(self.cipher(c, OP_DECRYPT, late, params, ct, version)[T["Data"]], b"C" * 16)

    def test_signatures(self):
        port = self.serve()
        for version in (V1, V2):
            with self.client(port, version) as c, self.subTest(version=version):
                refused = reason_in(version, PERMISSION_DENIED, WRONG_KEY_LIFECYCLE_STATE)
                now = int(time.time())
                payload = pair_payload(version, ALG_EC, curve=CURVE_P256)
                payload[0] = container(version, "common", [
                    attr(version, "Cryptographic Algorithm", ENUM, ALG_EC),
                    attr(version, "Cryptographic Domain Parameters", STRUCTURE,
                         [item(T["RecommendedCurve"], ENUM, CURVE_P256)]),
                    key_attr(version, "Process Start Date", DATETIME, now + 3600),
                    key_attr(version, "Protect Stop Date", DATETIME, now - 3600)])
                created = c.ok(OP_CREATE_KEY_PAIR, payload)
                priv = find(created, T["PrivateKeyUniqueIdentifier"])[0]
                pub = find(created, T["PublicKeyUniqueIdentifier"])[0]
                for uid in (priv, pub):
                    c.ok(OP_ACTIVATE, [uid_item(uid)])
                params = crypto_parameters(None, HASH_SHA256, ALG_ECDSA)
                self.assertEqual(c.fails(OP_SIGN, sign_request(priv, params, b"m")), refused)
                self.assertEqual(c.fails(OP_SIGNATURE_VERIFY, verify_request(pub, params, b"\0" * 64, b"m")),
                                 refused)


class UsageLimitsTest(KeyAttributesTestCase):
    def usage_count(self, c, uid, version):
        if version[0] < 2:
            (limits,) = c.get_attributes(uid, ["Usage Limits"], version)["Usage Limits"]
        else:
            got = c.ok(OP_GET_ATTRIBUTES, [uid_item(uid), item(T["AttributeReference"], ENUM, T["UsageLimits"])],
                       version)
            (limits,) = find(find(got, T["Attributes"])[0], T["UsageLimits"])
        return find(limits, T["UsageLimitsCount"])[0]

    def test_bytes(self):
        port = self.serve()
        params = self.aes_params(MODE_ECB)
        for version in (V1, V2):
            with self.client(port, version) as c, self.subTest(version=version):
                uid = self.active_key(c, version, [usage_limits(version, 32, UNIT_BYTE)])
                out = self.cipher(c, OP_ENCRYPT, uid, params, b"A" * 16, version)
                self.assertEqual(self.usage_count(c, uid, version), 16)
                # Another connection takes its share from the same count.
                with self.client(port, version) as other:
                    self.cipher(other, OP_ENCRYPT, uid, params, b"B" * 16, version)
                bi = c.call(OP_ENCRYPT, [uid_item(uid), params, item(T["Data"], BYTES, b"C" * 16)], version)
                self.assertEqual((bi[T["ResultReason"]], bi[T["ResultMessage"]]),
                                 (PERMISSION_DENIED, "the key's Usage Limits are used up"))
                self.assertEqual(self.usage_count(c, uid, version), 0)
                # Decryption is not limited.
                self.assertEqual(self.cipher(c, OP_DECRYPT, uid, params, out[T["Data"]], version)[T["Data"]],
                                 b"A" * 16)

    def test_objects_and_streams(self):
        port = self.serve()
        params = self.aes_params(MODE_CBC, PAD_PKCS5)
        with self.client(port, V2) as c:
            uid = self.active_key(c, V2, [usage_limits(V2, 2, UNIT_OBJECT)])
            # A stream of three parts is one object.
            got = self.fields(c.ok(OP_ENCRYPT, stream_request(uid, params, b"1" * 10, init=True)))
            corr = got[T["CorrelationValue"]]
            c.ok(OP_ENCRYPT, stream_request(uid, None, b"2" * 10, correlation=corr))
            c.ok(OP_ENCRYPT, stream_request(uid, None, b"3" * 10, correlation=corr, final=True))
            self.assertEqual(self.usage_count(c, uid, V2), 1)
            self.cipher(c, OP_ENCRYPT, uid, params, b"x")
            self.assertEqual(c.fails(OP_ENCRYPT, [uid_item(uid), params, item(T["Data"], BYTES, b"x")]),
                             PERMISSION_DENIED)
            self.assertEqual(c.fails(OP_ENCRYPT, stream_request(uid, params, b"x", init=True)), PERMISSION_DENIED)
            # Bytes: every part takes its share, and the stream ends when they run out.
            uid = self.active_key(c, V2, [usage_limits(V2, 20, UNIT_BYTE)])
            corr = self.fields(c.ok(OP_ENCRYPT, stream_request(uid, params, b"1" * 10, init=True)))[
                T["CorrelationValue"]]
            c.ok(OP_ENCRYPT, stream_request(uid, None, b"2" * 10, correlation=corr))
            self.assertEqual(c.fails(OP_ENCRYPT, stream_request(uid, None, b"3", correlation=corr)),
                             PERMISSION_DENIED)
            self.assertEqual(c.fails(OP_ENCRYPT, stream_request(uid, None, correlation=corr, final=True)),
                             INVALID_CORRELATION_VALUE)

    def test_unlimited_keys_are_not_written(self):
        port = self.serve()
        with self.client(port, V2) as c:
            uid = self.active_key(c, V2)
            priv, _ = self.active_pair(c, V2, ALG_EC, curve=CURVE_P256)
            before = self.metadata_generations()
            for _ in range(3):
                self.cipher(c, OP_ENCRYPT, uid, self.aes_params(MODE_ECB), b"A" * 16)
                self.sign(c, priv, crypto_parameters(None, HASH_SHA256, ALG_ECDSA), b"m")
            self.assertEqual(self.metadata_generations(), before)


class HotPathTest(KeyAttributesTestCase):
    def test_a_key_is_read_once_per_connection(self):
        # After a key's first Sign on a connection, its metadata (parameters, dates,
        # Usage Limits) comes from memory: with the token failing every object
        # search, Signs still succeed. One attribute read a Sign checks that no
        # process changed the metadata since; when the token fails it, the Sign
        # fails too: metadata that cannot be checked is never taken as it was.
        fault_file = os.path.join(self.tmp, "fault")
        self.env["FAULTY_P11_FAULT_FILE"] = fault_file
        port = self.serve(module=FAULTY_P11)
        with self.client(port, V2) as c:
            priv, _ = self.active_pair(c, V2, ALG_EC, curve=CURVE_P256)
        params = crypto_parameters(None, HASH_SHA256, ALG_ECDSA)
        with self.client(port, V2) as c:
            self.sign(c, priv, params, b"first")
            with open(fault_file, "w") as f:
                f.write("C_FindObjectsInit:rv=CKR_DEVICE_ERROR\n")
            for i in range(3):
                self.sign(c, priv, params, b"again %d" % i)
            with open(fault_file, "w") as f:
                f.write("C_GetAttributeValue:rv=CKR_DEVICE_ERROR\n")
            self.assertEqual(c.fails(OP_SIGN, sign_request(priv, params, b"unchecked")), GENERAL_FAILURE)
        with self.client(port, V2) as c:  # where the fault bites
            self.assertEqual(c.fails(OP_SIGN, sign_request(priv, params, b"new connection")), GENERAL_FAILURE)


class StreamTest(KeyAttributesTestCase):
    """Encrypt and Decrypt in parts: Init Indicator, Correlation Value, Final Indicator."""

    def stream(self, c, op, uid, params, parts, version=V2, **first):
        """The responses (field dicts) of a stream of len(parts) requests; first:
        the first request's IV, additional data or tag."""
        got = [self.fields(c.ok(op, stream_request(uid, params, parts[0], init=True, **first), version))]
        corr = got[0][T["CorrelationValue"]]
        for i, part in enumerate(parts[1:], 2):
            got.append(self.fields(c.ok(op, stream_request(uid, None, part, correlation=corr,
                                                           final=i == len(parts)), version)))
        return got

    def test_gcm(self):
        from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
        port = self.serve(keys={"extractable": True})
        with self.client(port, V2) as c:
            uid = self.active_key(c, V2)
            key = self.key_bytes(c, uid)
            iv, aad, data = os.urandom(12), b"additional", os.urandom(100)
            parts = [data[:33], data[33:73], data[73:]]
            got = self.stream(c, OP_ENCRYPT, uid, self.aes_params(MODE_GCM), parts, IVCounterNonce=iv, AEADData=aad)
            corr = got[0][T["CorrelationValue"]]
            going_on = sorted([T["UniqueIdentifier"], T["Data"], T["CorrelationValue"]])
            self.assertEqual([sorted(g) for g in got],
                             [going_on, going_on, sorted([T["UniqueIdentifier"], T["Data"], T["AEADTag"]])])
            self.assertEqual(got[1][T["CorrelationValue"]], corr)
            enc = Cipher(algorithms.AES(key), modes.GCM(iv)).encryptor()
            enc.authenticate_additional_data(aad)
            ct = enc.update(data) + enc.finalize()
            self.assertEqual(b"".join(g[T["Data"]] for g in got), ct)
            self.assertEqual(got[2][T["AEADTag"]], enc.tag)
            # The stream is over.
            self.assertEqual(c.fails(OP_ENCRYPT, stream_request(uid, None, b"x", correlation=corr)),
                             INVALID_CORRELATION_VALUE)
            got = self.stream(c, OP_DECRYPT, uid, self.aes_params(MODE_GCM), [ct[:50], ct[50:], None],
                              IVCounterNonce=iv, AEADData=aad, AEADTag=enc.tag)
            self.assertEqual(b"".join(g[T["Data"]] for g in got), data)
            # A wrong tag fails at the end.
            first = self.fields(c.ok(OP_DECRYPT, stream_request(uid, self.aes_params(MODE_GCM), ct, init=True,
                                                                IVCounterNonce=iv, AEADData=aad,
                                                                AEADTag=flip(enc.tag))))
            self.assertEqual(c.fails(OP_DECRYPT, stream_request(uid, None, correlation=first[T["CorrelationValue"]],
                                                                final=True)), CRYPTOGRAPHIC_FAILURE)

    def test_cbc_and_ecb_with_padding(self):
        from cryptography.hazmat.primitives import padding as sym_padding
        from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
        port = self.serve(keys={"extractable": True})
        data = os.urandom(45)
        for version in (V1, V2):
            with self.client(port, version) as c:
                uid = self.active_key(c, version)
                key = self.key_bytes(c, uid, version)
                for mode in (MODE_CBC, MODE_ECB):
                    for cuts in ((5, 25), (16, 32), (0, 45)):
                        with self.subTest(version=version, mode=mode, cuts=cuts):
                            iv = os.urandom(16)
                            extra = {"IVCounterNonce": iv} if mode == MODE_CBC else {}
                            params = self.aes_params(mode, PAD_PKCS5)
                            parts = [data[:cuts[0]], data[cuts[0]:cuts[1]], data[cuts[1]:], None]
                            got = self.stream(c, OP_ENCRYPT, uid, params, parts, version, **extra)
                            ct = b"".join(g[T["Data"]] for g in got)
                            padder = sym_padding.PKCS7(128).padder()
                            enc = Cipher(algorithms.AES(key),
                                         modes.CBC(iv) if mode == MODE_CBC else modes.ECB()).encryptor()
                            self.assertEqual(ct, enc.update(padder.update(data) + padder.finalize()) + enc.finalize())
                            got = self.stream(c, OP_DECRYPT, uid, params, [ct[:cuts[0]], ct[cuts[0]:cuts[1]],
                                                                           ct[cuts[1]:], None], version, **extra)
                            self.assertEqual(b"".join(g[T["Data"]] for g in got), data)

    def test_refusals(self):
        port = self.serve()
        with self.client(port, V2) as c:
            uid = self.active_key(c, V2)
            priv, pub = self.active_pair(c, V2, ALG_RSA, 2048, None, private_usage=USAGE_DECRYPT | USAGE_SIGN,
                                         public_usage=USAGE_ENCRYPT)
        params = self.aes_params(MODE_CBC, PAD_PKCS5)
        for version in (V1, V2):
            with self.client(port, version) as c, self.subTest(version=version):
                unknown = reason_in(version, ITEM_NOT_FOUND, INVALID_CORRELATION_VALUE)
                bi = c.call(OP_ENCRYPT, stream_request(uid, None, b"x", correlation=b"\0" * 16))
                self.assertEqual((bi[T["ResultReason"]], bi[T["ResultMessage"]]),
                                 (unknown, "no Encrypt stream has this Correlation Value"))
                self.assertEqual(c.fails(OP_ENCRYPT, stream_request(uid, None, b"x", final=True)), MISSING_DATA)
                corr = [self.fields(c.ok(OP_ENCRYPT, stream_request(uid, params, b"x", init=True)))[
                    T["CorrelationValue"]] for _ in range(4)]
                # Four at a time.
                bi = c.call(OP_ENCRYPT, stream_request(uid, params, b"x", init=True))
                self.assertEqual((bi[T["ResultReason"]], bi[T["ResultMessage"]]),
                                 (reason_in(version, GENERAL_FAILURE, SERVER_LIMIT_EXCEEDED),
                                  "at most 4 Encrypt and Decrypt streams at a time"))
                # An Encrypt stream is no Decrypt stream; a request that names a
                # stream wrongly ends it.
                self.assertEqual(c.fails(OP_DECRYPT, stream_request(uid, None, b"x", correlation=corr[0])), unknown)
                self.assertEqual(c.fails(OP_ENCRYPT, stream_request(uid, None, b"x", correlation=corr[0],
                                                                    init=True)), INVALID_FIELD)
                self.assertEqual(c.fails(OP_ENCRYPT, stream_request(uid, None, b"x", correlation=corr[0])), unknown)
                bi = c.call(OP_ENCRYPT, stream_request(pub, None, b"x", correlation=corr[1]))
                self.assertEqual((bi[T["ResultReason"]], bi[T["ResultMessage"]]),
                                 (unknown, "the Correlation Value is of a stream with another key"))
                for value in corr[2:]:
                    c.ok(OP_ENCRYPT, stream_request(uid, None, correlation=value, final=True))
                # RSA and signatures come in one part.
                bi = c.call(OP_ENCRYPT, stream_request(pub, crypto_parameters(PAD_OAEP, HASH_SHA1), b"x", init=True))
                self.assertEqual((bi[T["ResultReason"]], bi[T["ResultMessage"]]),
                                 (FEATURE_NOT_SUPPORTED, "RSA encrypts and decrypts in one part"))
                bi = c.call(OP_SIGN, sign_request(priv, None, b"m") + [item(T["InitIndicator"], BOOL, True)])
                self.assertEqual((bi[T["ResultReason"]], bi[T["ResultMessage"]]),
                                 (FEATURE_NOT_SUPPORTED, "multi-part operations are for Encrypt and Decrypt"))
                # Init and Final together are one part.
                self.assertEqual(sorted(self.fields(c.ok(OP_ENCRYPT, stream_request(
                    uid, params, b"x", init=True, final=True, IVCounterNonce=b"\0" * 16)))),
                    sorted([T["UniqueIdentifier"], T["Data"]]))


class RNGRetrieveTest(CryptoTestCase):
    def test_lengths(self):
        port = self.serve()
        for version in (V1, V2):
            with self.client(port, version) as c, self.subTest(version=version):
                for n in (1, 32, 65536):
                    payload = c.ok(OP_RNG_RETRIEVE, rng_request(n))
                    self.assertEqual([(t, ty) for t, ty, _ in payload], [(T["Data"], BYTES)])
                    self.assertEqual(len(payload[0][2]), n)
                big = c.ok(OP_RNG_RETRIEVE, rng_request(65536))[0][2]
                self.assertEqual(len(set(big)), 256, "every byte value in 64 KiB of random bytes")
                a, b = (c.ok(OP_RNG_RETRIEVE, rng_request(32))[0][2] for _ in range(2))
                self.assertNotEqual(a, b)
                self.assertEqual(c.fails(OP_RNG_RETRIEVE, rng_request(0)), INVALID_FIELD)
                self.assertEqual(c.fails(OP_RNG_RETRIEVE, rng_request(-1)), INVALID_FIELD)
                self.assertEqual(c.fails(OP_RNG_RETRIEVE, rng_request(65537)),
                                 reason_in(version, INVALID_FIELD, NUMERIC_RANGE))
                self.assertEqual(c.fails(OP_RNG_RETRIEVE, rng_request(2 ** 31 - 1)),
                                 reason_in(version, INVALID_FIELD, NUMERIC_RANGE))
                self.assertEqual(c.fails(OP_RNG_RETRIEVE, rng_request(32, LONG)), INVALID_FIELD)
                self.assertEqual(c.fails(OP_RNG_RETRIEVE, rng_request(None)), MISSING_DATA)


class AuditTest(CryptoTestCase):
    def test_records_name_the_key(self):
        port = self.serve()
        with self.client(port, V2) as c:
            priv, pub = self.active_pair(c, V2, ALG_EC, curve=CURVE_P256)
            mac_key = find(c.ok(OP_CREATE, create_payload(V2, ALG_HMAC_SHA256, None)), T["UniqueIdentifier"])[0]
            c.ok(OP_ACTIVATE, [uid_item(mac_key)])
            local = c.sock.getsockname()[1]
        with self.client(port, V2) as c:
            params = crypto_parameters(None, HASH_SHA256, ALG_ECDSA)
            sig = self.sign(c, priv, params, b"audited")
            self.verify(c, pub, params, sig, b"audited")
            self.verify(c, pub, params, flip(sig), b"audited")
            c.fails(OP_SIGN, sign_request(pub, params, b"audited"))
            tag = find(c.ok(OP_MAC, mac_request(mac_key, b"audited")), T["MACData"])[0]
            c.ok(OP_MAC_VERIFY, mac_request(mac_key, b"audited", None, tag))
            c.ok(OP_RNG_RETRIEVE, rng_request(16))
            c.fails(OP_RNG_RETRIEVE, rng_request(0))
            local = c.sock.getsockname()[1]
        records = self.audit_records(self.log_lines(wait_for="connection peer=127.0.0.1:%d " % local))
        client = "sha256:" + spki_sha256(self.client_cert)
        self.assertEqual([(r["client"], r["operation"], r["result"], r.get("uid"), r.get("mechanism"))
                          for r in records], [
            (client, "Create Key Pair", "Success", priv, None),
            (client, "Activate", "Success", priv, None),
            (client, "Activate", "Success", pub, None),
            (client, "Create", "Success", mac_key, None),
            (client, "Activate", "Success", mac_key, None),
            # SoftHSM has no CKM_ECDSA_SHA256: the relay hashes, the token signs the digest.
            (client, "Sign", "Success", priv, "CKM_ECDSA"),
            (client, "Signature Verify", "Success", pub, "CKM_ECDSA"),
            (client, "Signature Verify", "Success", pub, "CKM_ECDSA"),
            (client, "Sign", "Invalid Object Type", pub, None),
            (client, "MAC", "Success", mac_key, "CKM_SHA256_HMAC"),
            (client, "MAC Verify", "Success", mac_key, "CKM_SHA256_HMAC"),
            (client, "RNG Retrieve", "Success", None, None),
            (client, "RNG Retrieve", "Invalid Field", None, None),
        ])
        for r in records:
            self.assertEqual(sorted(r), sorted(AUDIT_KEYS + [k for k in ("uid", "mechanism", "backend") if k in r]))
            # The token served each, even the RNG Retrieve refused for its length.
            self.assertEqual(r.get("backend"), None if r["result"] == "Invalid Field" else "default")


class HashTest(TokenTestCase):
    """Hash: the token's C_Digest of the Data."""

    OP_HASH = 0x27

    def test_digests(self):
        port = self.serve()
        data = os.urandom(1000)
        for version in (V1, V2):
            with self.subTest(version=version), self.client(port, version) as c:
                for hashing, name in ((HASH_SHA1, "sha1"), (HASH_SHA256, "sha256"), (HASH_SHA384, "sha384"),
                                      (HASH_SHA512, "sha512")):
                    payload = c.ok(self.OP_HASH, [crypto_parameters(None, hashing), item(T["Data"], BYTES, data)])
                    self.assertEqual(payload, [(T["Data"], BYTES, hashlib.new(name, data).digest())])
                self.assertEqual(c.fails(self.OP_HASH, [item(T["Data"], BYTES, data)]), MISSING_DATA)
                self.assertEqual(c.fails(self.OP_HASH, [crypto_parameters(None, HASH_SHA256)]), MISSING_DATA)
                self.assertEqual(c.fails(self.OP_HASH, [crypto_parameters(None, HASH_MD5), item(T["Data"], BYTES, data)]),
                                 reason_in(version, INVALID_FIELD, UNSUPPORTED_CRYPTOGRAPHIC_PARAMETERS))

if __name__ == "__main__":
    unittest.main()

# SPDX-License-Identifier: BSD-3-Clause
"""The relay on a second PKCS#11 implementation: openCryptoki's software token
(opencryptoki.py), with a pkcsslotd of each test's own in a private namespace.
The RSA and AES lifecycle and crypto tests of test_lifecycle.py and
test_crypto.py run here unchanged on that token (classes named *OnOpenCryptoki),
so that nothing depends on SoftHSM's quirks. What the PKCS11_SW token of
openCryptoki 3.8.1 lacks - EC and Edwards keys, AES-GCM - is left out of those
classes, and RefusalTest asserts the token's exact refusal of each instead. Each
test also checks that the host's openCryptoki state is as it was."""

import os
import subprocess
import unittest

import test_crypto as crypto
import test_lifecycle as lifecycle
import test_metadata as metadata
from opencryptoki import (OnOpenCryptoki, OpenCryptokiToken, PKCSSLOTD, ftok, host_state, sysv_shm_keys)
from relaytest import (ALG_EC, ALG_ED25519, ALG_RSA, BYTES, CURVE_P256, CURVE_P384, ENUM,
                       FAILED, FMT_X509, INVALID_FIELD, OBJ_PUBLIC_KEY, OP_CREATE_KEY_PAIR,
                       OP_DECRYPT, OP_ENCRYPT, OP_LOCATE, OP_REGISTER, RelayTestCase, STRUCTURE, T, Token,
                       UNSUPPORTED_CRYPTOGRAPHIC_PARAMETERS, V1, V2, container, find, item, pair_payload,
                       uid_item)
from relaytest import (INVALID_ATTRIBUTE_VALUE, MODE_GCM, OP_ACTIVATE, alive, wait_gone)
from relaytest import (HASH_SHA1, HASH_SHA256, HASH_SHA384, HASH_SHA512, PAD_OAEP, crypto_parameters)

EC_REFUSED = "CKR_MECHANISM_INVALID"  # no CKM_EC_KEY_PAIR_GEN, CKM_EC_EDWARDS_KEY_PAIR_GEN, CKM_AES_GCM


# test_lifecycle.py. Left out: tests of EC and Ed25519 keys (RefusalTest), of
# Opaque Objects (RefusalTest.test_opaque_object), and of SoftHSM itself.

class PyKMIPLifecycleOnOpenCryptoki(OnOpenCryptoki, lifecycle.PyKMIPLifecycleTest):
    test_ec_p256_and_p384 = None
    test_ed25519_raw_kmip21 = None


class RegisterOnOpenCryptoki(OnOpenCryptoki, lifecycle.RegisterTest):
    test_certificate_secret_data_and_opaque_object = None
    test_check = None  # an EC pair


class RawLifecycleOnOpenCryptoki(OnOpenCryptoki, lifecycle.RawLifecycleTest):
    test_ec_p521_with_recommended_curve = None
    test_token_enforces_the_state_of_a_key_pair = None  # an EC pair


class ResultReasonOnOpenCryptoki(OnOpenCryptoki, lifecycle.ResultReasonTest):
    test_get = None  # an EC pair beside the RSA one
    test_get_sensitive_ed25519_private_key = None
    test_module_is_loaded_only_when_needed = None  # copies SoftHSM's module


class IDPlaceholderOnOpenCryptoki(OnOpenCryptoki, lifecycle.IDPlaceholderTest):
    test_create_key_pair_then_activate_without_uid = None  # an EC pair


class UndoOnOpenCryptoki(OnOpenCryptoki, lifecycle.UndoTest):
    test_creation_is_undone = None  # an EC pair


class KmipAttributesOnOpenCryptoki(OnOpenCryptoki, lifecycle.KmipAttributesTest):
    test_digest_of_registered_objects = None  # an Opaque Object


class KeyFormatOnOpenCryptoki(OnOpenCryptoki, lifecycle.KeyFormatTest):
    pass


class LocateDateOnOpenCryptoki(OnOpenCryptoki, lifecycle.LocateDateTest):
    pass


class AttributeChangeOnOpenCryptoki(OnOpenCryptoki, lifecycle.AttributeChangeTest):
    pass


class OlderVersionAttributesOnOpenCryptoki(OnOpenCryptoki, lifecycle.OlderVersionAttributesTest):
    pass


class TokenRefusalOnOpenCryptoki(OnOpenCryptoki, lifecycle.TokenRefusalTest):
    pass


# test_crypto.py

class SignRSAOnOpenCryptoki(OnOpenCryptoki, crypto.SignRSATest):
    pass


class VerifySignaturesOnOpenCryptoki(OnOpenCryptoki, crypto.VerifySignaturesTest):
    test_registered_private_keys_without_public_half = None  # EC and Ed25519 keys
    test_self_check_passes_good_signatures = None  # EC and Ed25519 pairs


class MACOnOpenCryptoki(OnOpenCryptoki, crypto.MACTest):
    test_short_and_wrong_keys = None  # an EC pair


class CipherOnOpenCryptoki(OnOpenCryptoki, crypto.CipherTest):
    test_aes_gcm = None

    def check_oaep_beyond_sha1(self, c, priv, pub, public):
        """openCryptoki takes what SoftHSM refuses: OAEP with SHA-2 (and MGF1 with
        the same hash), and a label. Ciphertexts of the relay and of python
        decrypt."""
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding as rsa_padding
        for hashing, h in ((HASH_SHA256, hashes.SHA256), (HASH_SHA384, hashes.SHA384),
                           (HASH_SHA512, hashes.SHA512)):
            with self.subTest(hashing=hashing):
                params = crypto_parameters(PAD_OAEP, hashing, ALG_RSA)
                out = self.cipher(c, OP_ENCRYPT, pub, params, b"secret")
                self.assertEqual(len(out[T["Data"]]), 256)
                self.assertEqual(self.cipher(c, OP_DECRYPT, priv, params, out[T["Data"]])[T["Data"]], b"secret")
                mine = public.encrypt(b"from python", rsa_padding.OAEP(rsa_padding.MGF1(h()), h(), None))
                self.assertEqual(self.cipher(c, OP_DECRYPT, priv, params, mine)[T["Data"]], b"from python")
                # Another hash than the ciphertext's does not decrypt it.
                other = crypto_parameters(PAD_OAEP, HASH_SHA1, ALG_RSA)
                bi = c.call(OP_DECRYPT, [uid_item(priv), other, item(T["Data"], BYTES, mine)], V2)
                self.assertEqual(bi[T["ResultStatus"]], FAILED)
        labelled = crypto.oaep_labelled(HASH_SHA256)
        mine = public.encrypt(b"labelled", rsa_padding.OAEP(rsa_padding.MGF1(hashes.SHA256()), hashes.SHA256(),
                                                            b"label"))
        self.assertEqual(self.cipher(c, OP_DECRYPT, priv, labelled, mine)[T["Data"]], b"labelled")
        bi = c.call(OP_DECRYPT, [uid_item(priv), crypto.oaep_labelled(HASH_SHA256, b"other"),
                                 item(T["Data"], BYTES, mine)], V2)
        self.assertEqual(bi[T["ResultStatus"]], FAILED)


class ECBPaddingOnOpenCryptoki(OnOpenCryptoki, crypto.ECBPaddingTest):
    pass


class KeyParametersOnOpenCryptoki(OnOpenCryptoki, crypto.KeyParametersTest):
    test_aes_gcm = None
    test_pss_salt_lengths = None  # registers an Ed25519 key among others


class KeyDatesOnOpenCryptoki(OnOpenCryptoki, crypto.KeyDatesTest):
    test_signatures = None  # an EC pair


class UsageLimitsOnOpenCryptoki(OnOpenCryptoki, crypto.UsageLimitsTest):
    test_unlimited_keys_are_not_written = None  # an EC pair


class StreamOnOpenCryptoki(OnOpenCryptoki, crypto.StreamTest):
    test_gcm = None


class RNGRetrieveOnOpenCryptoki(OnOpenCryptoki, crypto.RNGRetrieveTest):
    pass


class HashOnOpenCryptoki(OnOpenCryptoki, crypto.HashTest):
    pass


# test_metadata.py, with RSA pairs.

class MetadataOnOpenCryptoki(OnOpenCryptoki):
    pair = {"algorithm": ALG_RSA, "length": 1024}
    foreign_key_type, foreign_algorithm = "rsa:1024", ALG_RSA


class ObjectCountOnOpenCryptoki(MetadataOnOpenCryptoki, metadata.ObjectCountTest):
    test_a_hundred_and_fifty_pairs = None  # EC pairs: RSA ones would take minutes


class ReadBackOnOpenCryptoki(MetadataOnOpenCryptoki, metadata.ReadBackTest):
    dates_on_private_keys = True  # unlike SoftHSM's, its private objects keep them


class NeedsMetadataOnOpenCryptoki(MetadataOnOpenCryptoki, metadata.NeedsMetadataTest):
    pass


class MetadataUndoOnOpenCryptoki(MetadataOnOpenCryptoki, metadata.UndoTest):
    pass


class RecordExpiryOnOpenCryptoki(MetadataOnOpenCryptoki, metadata.RecordExpiryTest):
    pass


class EpochOnOpenCryptoki(MetadataOnOpenCryptoki, metadata.EpochTest):
    pass


class StampedIDOnOpenCryptoki(MetadataOnOpenCryptoki, metadata.StampedIDTest):
    pass


class RefusalTest(OnOpenCryptoki, crypto.CryptoTestCase):
    """What openCryptoki 3.8.1's software token lacks, refused by the token with
    its exact code in the Result Message, and nothing left behind in the token."""

    def assert_refused(self, c, operation, payload, version, reason, ckr):
        bi = c.call(operation, payload, version)
        self.assertEqual((bi[T["ResultStatus"]], bi.get(T["ResultReason"]), bi.get(T["ResultMessage"])),
                         (FAILED, reason, ckr))

    def assert_token_empty(self):
        self.assertEqual(self.token.objects(), "")

    def test_ec_and_edwards_key_pairs(self):
        port = self.serve()
        for version, reason in ((V1, INVALID_FIELD), (V2, UNSUPPORTED_CRYPTOGRAPHIC_PARAMETERS)):
            with self.client(port, version) as c:
                for algorithm, curve in ((ALG_EC, CURVE_P256), (ALG_EC, CURVE_P384), (ALG_ED25519, None)):
                    with self.subTest(version=version, algorithm=algorithm, curve=curve):
                        self.assert_refused(c, OP_CREATE_KEY_PAIR, pair_payload(version, algorithm, curve=curve),
                                            version, reason, EC_REFUSED)
        self.assert_token_empty()

    def test_aes_gcm(self):
        port = self.serve()
        with self.client(port, V2) as c:
            uid = self.create_aes(c, V2)
            c.ok(OP_ACTIVATE, [uid_item(uid)], V2)
            self.assert_refused(c, OP_ENCRYPT, [uid_item(uid), crypto.CipherTest.aes_params(MODE_GCM),
                                                item(T["Data"], BYTES, b"x"),
                                                item(T["IVCounterNonce"], BYTES, b"\0" * 12)],
                                V2, UNSUPPORTED_CRYPTOGRAPHIC_PARAMETERS, EC_REFUSED)

    def test_edwards_public_key(self):
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519
        spki = ed25519.Ed25519PrivateKey.generate().public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        port = self.serve()
        with self.client(port, V2) as c:
            self.assert_refused(c, OP_REGISTER, lifecycle.register_payload(
                OBJ_PUBLIC_KEY, T["PublicKey"], FMT_X509, lifecycle.key_material_item(spki), ALG_ED25519, 256), V2,
                INVALID_ATTRIBUTE_VALUE,
                "CKR_ATTRIBUTE_VALUE_INVALID")  # CKK_EC_EDWARDS
        self.assert_token_empty()

    def test_opaque_object(self):
        # The relay keeps an Opaque Object's ID in its CKA_OBJECT_ID, which
        # openCryptoki 3.8 does not have on data objects.
        port = self.serve()
        with self.client(port, V2) as c:
            self.assert_refused(c, OP_REGISTER, [
                item(T["ObjectType"], ENUM, lifecycle.OBJ_OPAQUE), container(V2, "template", []),
                item(T["OpaqueObject"], STRUCTURE, [item(T["OpaqueDataType"], ENUM, 0x80000000),
                                                    item(T["OpaqueDataValue"], BYTES, b"opaque")])],
                                V2, INVALID_ATTRIBUTE_VALUE, "CKR_TEMPLATE_INCONSISTENT")
            self.assertEqual(find(c.ok(OP_LOCATE, [item(T["Attributes"], STRUCTURE, [])], V2),
                                  T["UniqueIdentifier"]), [])
        self.assert_token_empty()


class IsolationTest(OnOpenCryptoki, RelayTestCase):
    """The test's own pkcsslotd neither sees nor touches the host's openCryptoki
    state, a system pkcsslotd's included (OnOpenCryptoki checks it after each
    test); tokens of several tests coexist."""

    def in_namespace(self, token, *cmd):
        return subprocess.run(list(token.wrapper) + list(cmd), check=True, stdout=subprocess.PIPE,
                              timeout=30).stdout.decode()

    def test_private_state(self):
        token = OpenCryptokiToken(os.path.join(self.tmp, "ock"))
        self.tokens.append(token)
        daemon_key = ftok(PKCSSLOTD, ord("b"))
        # The daemon's segment, socket and token files exist in its namespace only.
        self.assertNotIn(daemon_key, sysv_shm_keys())
        self.assertIn("%d" % daemon_key, self.in_namespace(token, "cat", "/proc/sysvipc/shm").split())
        self.assertFalse(os.path.exists("/run/pkcsslotd.socket"))
        self.assertIn("pkcsslotd.socket", self.in_namespace(token, "ls", "/run"))
        self.assertEqual(self.in_namespace(token, "ls", "/var/lib/opencryptoki").split(), ["tok0"])
        self.assertEqual(sorted(os.listdir(os.path.join(token.dir, "lib", "tok0"))),
                         ["MK_SO", "MK_USER", "NVTOK.DAT", "TOK_OBJ"])
        daemon = int(self.in_namespace(token, "cat", "/run/pkcsslotd.pid"))
        self.assertTrue(alive(daemon))
        token.close()
        self.assertEqual(wait_gone([daemon], timeout=1), [])
        self.assertEqual(host_state(), self.host_before)

    def test_two_tokens_and_softhsm_beside(self):
        a = OpenCryptokiToken(os.path.join(self.tmp, "a"), label="ock-a", pin="1111")
        self.tokens.append(a)
        b = OpenCryptokiToken(os.path.join(self.tmp, "b"), label="ock-b", pin="2222", so_pin="87654321")
        self.tokens.append(b)
        soft = Token(os.path.join(self.tmp, "soft"), label="soft")
        self.assertEqual(a.slots(), [(0, "ock-a")])
        self.assertEqual(b.slots(), [(0, "ock-b")])
        a.keypair("rsa:2048", "0a", "in-a")
        self.assertIn("in-a", a.objects())
        self.assertEqual(b.objects(), "")
        # A second token in a's daemon, after a restart that keeps the first.
        a.add_token("ock-a2", "3333")
        self.assertEqual(a.slots(), [(0, "ock-a"), (1, "ock-a2")])
        self.assertIn("in-a", a.objects())
        # A relay in a's namespace serves a's token while SoftHSM's is reachable
        # there too (the pool of issue 12 puts both behind one relay).
        self.use_token(soft)
        port = self.start(self.softhsm_config(a))
        with self.kmip(port) as c:
            self.assertEqual(find(c.ok(OP_CREATE_KEY_PAIR, pair_payload(V1, ALG_RSA, 2048, None)),
                                  T["PrivateKeyUniqueIdentifier"])[0][-5:], "_priv")
        self.assertIn("soft", subprocess.run(
            list(a.wrapper) + ["softhsm2-util", "--show-slots"], env=soft.env, check=True,
            stdout=subprocess.PIPE, timeout=30).stdout.decode())
        # reset() wipes every token of the daemon and initialises them again.
        a.reset()
        self.assertEqual(a.slots(), [(0, "ock-a"), (1, "ock-a2")])
        self.assertEqual(a.objects(), "")
        for t in (a, b):
            t.close()
        self.assertEqual(host_state(), self.host_before)


if __name__ == "__main__":
    unittest.main()

# SPDX-License-Identifier: BSD-3-Clause
"""The relay's own TLS key lives in the token (tls.key is a pkcs11: URI): the
handshake is signed through the relay's PKCS#11 session, for EC and RSA keys, in
TLS 1.3 and 1.2."""

import os
import ssl
import subprocess
import unittest

from relaytest import (ENUM, OP_QUERY, SOFTHSM_MODULE, RelayTestCase, T, Token, batch_items,
                       exchange, item, request)


class TokenKeyTest(RelayTestCase):
    def setUp(self):
        super().setUp()
        self.token = Token(os.path.join(self.tmp, "hsm"))
        self.env["SOFTHSM2_CONF"] = self.token.conf

    def token_config(self, cert, key_uri, pin_file=None):
        return self.config(tls={"certificate": cert, "key": key_uri},
                           pkcs11={"module": SOFTHSM_MODULE, "token": "pkcs11:token=kmip-relay",
                                   "pin_file": pin_file or self.token.pin_file,
                                   "lock_file": os.path.join(self.tmp, "p11.lock")})

    def query(self, port, tls_version):
        ctx = self.tls_context()
        ctx.minimum_version = ctx.maximum_version = tls_version
        with self.connect(port, ctx) as s:
            self.assertEqual(s.version(), {ssl.TLSVersion.TLSv1_3: "TLSv1.3",
                                           ssl.TLSVersion.TLSv1_2: "TLSv1.2"}[tls_version])
            resp = exchange(s, request(OP_QUERY, [item(T["QueryFunction"], ENUM, 3)]))
        (bi,) = batch_items(resp)
        self.assertEqual(bi[T["ResultStatus"]], 0)

    def check_key(self, key_type, key_id):
        cert = self.server_cert_for(self.token, key_type, key_id)
        port = self.start(self.token_config(cert, "pkcs11:id=%" + key_id))
        for version in (ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_2):
            self.query(port, version)

    def test_ec_p256_key_in_token(self):
        self.check_key("EC:prime256v1", "01")

    def test_rsa_2048_key_in_token(self):
        # TLS 1.3 signs with RSA-PSS, TLS 1.2 as the client prefers (PSS or PKCS#1 v1.5).
        self.check_key("rsa:2048", "02")

    def test_rsa_pkcs1_v15_in_tls12(self):
        # Python's ssl cannot restrict signature schemes; gnutls-cli can.
        cert = self.server_cert_for(self.token, "rsa:2048", "03")
        port = self.start(self.token_config(cert, "pkcs11:object=tls-03"))
        out = subprocess.run(
            ["gnutls-cli", "--priority", "NORMAL:-VERS-ALL:+VERS-TLS1.2:-SIGN-ALL:+SIGN-RSA-SHA256:+SIGN-ECDSA-SHA256",
             "--x509cafile", self.pki.ca, "--x509certfile", self.client_cert, "--x509keyfile",
             self.client_key, "-p", str(port), "localhost"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=30,
            text=True).stdout
        self.assertIn("Handshake was completed", out)
        self.assertIn("(TLS1.2-X.509)-(ECDHE-SECP256R1)-(RSA-SHA256)", out)

    def test_wrong_pin_refuses_connection(self):
        cert = self.server_cert_for(self.token, "EC:prime256v1", "04")
        bad_pin = os.path.join(self.tmp, "bad-pin")
        with open(bad_pin, "w") as f:
            f.write("9999\n")
        port = self.start(self.token_config(cert, "pkcs11:id=%04", pin_file=bad_pin))
        with self.assertRaises((ssl.SSLError, ConnectionError, OSError)):
            with self.connect(port) as s:
                exchange(s, request(OP_QUERY, []))
        self.assertTrue(any("login failed: wrong PIN" in l
                            for l in self.log_lines(wait_for="wrong PIN")))

    def test_missing_key_is_named(self):
        cert = self.server_cert_for(self.token, "EC:prime256v1", "05")
        port = self.start(self.token_config(cert, "pkcs11:id=%77"))
        with self.assertRaises((ssl.SSLError, ConnectionError, OSError)):
            with self.connect(port) as s:
                exchange(s, request(OP_QUERY, []))
        lines = self.log_lines(wait_for="tls.key:")
        self.assertIn("tls.key: no private key in the token matches the URI", "\n".join(lines))


if __name__ == "__main__":
    unittest.main(verbosity=2)

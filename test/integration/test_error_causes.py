# SPDX-License-Identifier: BSD-3-Clause
"""Every failure a user can see carries its cause (issue 15), provoked here on a
running relay and read from its log (and the client's Result Message):

- the GnuTLS error text (a priority string GnuTLS refuses);
- dlerror() for a module that cannot be loaded;
- the path and the system's reason for file errors (the lock file, its health
  file);
- the CKR_ name of every token refusal: C_Initialize, C_OpenSession, C_Login
  (a wrong PIN, a device error);
- for a client certificate that fails verification, the reason and the subject;
- the TLS alert of a handshake the client broke off."""

import os
import shutil
import ssl
import unittest

from relaytest import (ENUM, FAULTY_P11, OP_LOCATE, OP_QUERY, PKI, STRUCTURE, T, KmipClient, TokenTestCase,
                       item)


class ErrorCauseTest(TokenTestCase):
    def setUp(self):
        super().setUp()
        self.fault_file = os.path.join(self.tmp, "fault")
        self.env.update(FAULTY_P11_FAULT_FILE=self.fault_file)

    def set_fault(self, fault):
        with open(self.fault_file + ".tmp", "w") as f:
            f.write(fault + "\n")
        os.replace(self.fault_file + ".tmp", self.fault_file)

    def messages(self, wait_for):
        """The log's messages (without time stamp and process) once one contains wait_for."""
        return [l.partition("]: ")[2] for l in self.log_lines(wait_for=wait_for)]

    def token_failure(self, port):
        """A Locate, which needs the token; returns its Result Message."""
        with KmipClient(self.connect(port)) as c:
            bi = c.call(OP_LOCATE, [item(T["Attributes"], STRUCTURE, [])], (2, 0))
        return bi.get(T["ResultMessage"])

    def test_gnutls_error_text(self):
        port = self.start(self.config(tls={"priority": "NORMAL:+BOGUS"}))
        self.refused(port)
        self.assertIn("tls.priority: not a valid GnuTLS priority string: The request is invalid.",
                      self.messages("tls.priority"))

    def test_dlerror_of_a_module_that_cannot_be_loaded(self):
        not_module = os.path.join(self.tmp, "not-a-module.so")
        shutil.copy(self.pki.ca, not_module)
        port = self.serve(module=not_module)
        why = "pkcs11.module: cannot load the module: %s: invalid ELF header" % not_module
        self.assertEqual(self.token_failure(port), why)
        self.assertIn("token: " + why, self.messages("cannot load"))

    def test_path_and_errno_of_the_lock_file(self):
        gone = os.path.join(self.tmp, "gone", "p11.lock")
        port = self.serve(lock_file=gone)
        why = "pkcs11.lock_file: cannot open the health file %s.health: No such file or directory" % gone
        self.assertEqual(self.token_failure(port), why)
        self.assertIn("token: " + why, self.messages("lock_file"))
        # The lock file itself, once its health file can be opened: a directory
        # where the file should be.
        lock = os.path.join(self.tmp, "p11.lock")
        os.mkdir(lock)
        port = self.serve(lock_file=lock)
        why = "pkcs11.lock_file: cannot open %s: Is a directory" % lock
        self.assertEqual(self.token_failure(port), why)
        self.assertIn("token: " + why, self.messages("Is a directory"))

    def test_ckr_names_of_token_refusals(self):
        port = self.serve(module=FAULTY_P11)
        for fault, why in (
                ("C_Initialize:rv=CKR_GENERAL_ERROR",
                 "pkcs11.module: %s: C_Initialize failed: CKR_GENERAL_ERROR" % FAULTY_P11),
                ("C_OpenSession:rv=0xB1", "pkcs11.token: cannot open a session: CKR_SESSION_COUNT"),
                ("C_Login:rv=CKR_DEVICE_ERROR", "login failed: the token refused it (CKR_DEVICE_ERROR)"),
                ("C_Login:rv=0xA0", "login failed: wrong PIN (CKR_PIN_INCORRECT)")):
            with self.subTest(fault=fault):
                self.set_fault(fault)
                self.assertEqual(self.token_failure(port), why)
                self.assertIn("token: " + why, self.messages(why))

    def test_refused_client_certificate_names_the_reason_and_subject(self):
        other = PKI(os.path.join(self.tmp, "other-pki"))
        cert, key = other.issue("stranger", "stranger.example")
        port = self.start(self.config())
        local = self.refused(port, self.tls_context(certfile=cert, keyfile=key))
        self.summary(local)
        self.assertIn('TLS handshake with 127.0.0.1:%d failed: client certificate refused: untrusted (subject '
                      '"CN=stranger.example")' % local, self.messages("client certificate refused"))

    def test_alert_of_a_client_that_refuses_the_server(self):
        other = PKI(os.path.join(self.tmp, "other-pki"))
        ctx = ssl.create_default_context(cafile=other.ca)  # does not trust the relay's certificate
        ctx.load_cert_chain(self.client_cert, self.client_key)
        # TLS 1.2: the alert comes in the clear (in 1.3 it comes under keys the
        # server never sees it use, and GnuTLS says "Decryption has failed.").
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        # A certificate required (GnuTLS then reports the certificate it lacks),
        # and only asked for.
        required = self.start(self.config())
        asked = self.start(self.softhsm_config(self.token, tls={"require_client_certificate": False}, clients=[
            {"name": "c", "username": "u", "password_sha256": "00" * 32}]))
        for port, gnutls in ((required, "No certificate was found."), (asked, "A TLS fatal alert has been received.")):
            with self.subTest(gnutls=gnutls):
                local = self.refused(port, ctx)
                self.summary(local)
                self.assertIn('TLS handshake with 127.0.0.1:%d failed: the client sent the alert "CA is unknown" '
                              "(%s)" % (local, gnutls), self.messages("127.0.0.1:%d failed" % local))


if __name__ == "__main__":
    unittest.main(verbosity=2)

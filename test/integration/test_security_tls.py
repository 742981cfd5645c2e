# SPDX-License-Identifier: BSD-3-Clause
"""Certificates and connections (issue 11, findings 5 to 7), each rule attacked
over real TLS, behind systemd-socket-activate:

- NameTest: a certificate name with an embedded NUL names nobody; when a
  certificate has DNS subjectAltNames they are its names and its CN is not
  (RFC 6125); names compare without regard to ASCII case.
- PurposeTest: a client certificate whose Extended Key Usage leaves out
  clientAuth (the relay's own server certificate is one) is refused at the
  handshake, whether the CA issued it or clients[] pins it.
- ValidityTest, RevocationTest: an expired, not yet valid, untrusted or revoked
  (tls.client_crl) certificate is refused, and the log says which of these it was
  and whose certificate it was; the CRL file is read by every connection, a
  resumed session included.
- HeldOpenTest: timeouts.lifetime ends a connection whatever it is doing (a
  request trickled in byte by byte, responses the client does not read), every
  read must end within timeouts.idle, and Authentication Not Successful closes the
  connection once its 1 s pause has passed.

Unusual certificates and CRLs are made with python-cryptography and signed by the
test CA."""

import datetime
import hashlib
import json
import os
import select
import socket
import ssl
import subprocess
import time
import unittest

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from relaytest import (AUTHENTICATION_NOT_SUCCESSFUL, ENUM, FAILED, OP_QUERY, PKI, RELAY, SUCCESS, T,
                       RelayTestCase, batch_item, batch_items, exchange, item, recv_exact, request,
                       request_message, spki_sha256)

QUERY_OPERATIONS = item(T["QueryFunction"], ENUM, 1)
QUERY = request(OP_QUERY, [QUERY_OPERATIONS])
CLIENT_AUTH, SERVER_AUTH = ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH
ANY_PURPOSE = x509.ObjectIdentifier("2.5.29.37.0")  # anyExtendedKeyUsage
HOUR, DAY = datetime.timedelta(hours=1), datetime.timedelta(days=1)


def now():
    return datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)


def sha256_hex(text):
    return hashlib.sha256(text.encode()).hexdigest()


class Issuer:
    """Certificates and CRLs signed by a PKI's CA (or self-signed), written to
    directory."""

    def __init__(self, pki, directory):
        self.dir = directory
        with open(pki.ca, "rb") as f:
            self.ca = x509.load_pem_x509_certificate(f.read())
        with open(pki.ca_key, "rb") as f:
            self.ca_key = serialization.load_pem_private_key(f.read(), None)

    def cert(self, name, cn, dns=(), eku=(CLIENT_AUTH,), not_before=None, not_after=None,
             self_signed=False):
        """A certificate for a new P-256 key: CN cn (a str, or None for no CN), DNS
        subjectAltNames dns, Extended Key Usage eku (None: no such extension).
        Returns (pem, key) file paths."""
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)] if cn is not None else [])
        issuer, signer = (subject, key) if self_signed else (self.ca.subject, self.ca_key)
        builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(not_before or now() - HOUR)
                   .not_valid_after(not_after or now() + 30 * DAY)
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                   .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False),
                                  critical=True))
        if dns:
            builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(d) for d in dns]),
                                            critical=False)
        if eku is not None:
            builder = builder.add_extension(x509.ExtendedKeyUsage(list(eku)), critical=False)
        pem, key_path = os.path.join(self.dir, name + ".pem"), os.path.join(self.dir, name + ".key")
        with open(pem, "wb") as f:
            f.write(builder.sign(signer, hashes.SHA256()).public_bytes(serialization.Encoding.PEM))
        with open(key_path, "wb") as f:
            f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
        return pem, key_path

    def crl(self, path, revoked=(), der=False, next_update=7 * DAY, signer=None):
        """Writes (atomically) a CRL of the CA that revokes the certificates in
        revoked (PEM paths); next_update is from now (negative: out of date)."""
        builder = (x509.CertificateRevocationListBuilder().issuer_name(self.ca.subject)
                   .last_update(now() - HOUR - (-next_update if next_update < datetime.timedelta(0)
                                                else datetime.timedelta(0)))
                   .next_update(now() + next_update))
        for pem in revoked:
            with open(pem, "rb") as f:
                serial = x509.load_pem_x509_certificate(f.read()).serial_number
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(now() - HOUR).build())
        crl = builder.sign(signer or self.ca_key, hashes.SHA256())
        encoding = serialization.Encoding.DER if der else serialization.Encoding.PEM
        with open(path + ".tmp", "wb") as f:
            f.write(crl.public_bytes(encoding))
        os.replace(path + ".tmp", path)
        return path


class SecurityTestCase(RelayTestCase):
    def setUp(self):
        super().setUp()
        self.issuer = Issuer(self.pki, self.tmp)
        self.pin_file = os.path.join(self.tmp, "pin")
        with open(self.pin_file, "w") as f:
            f.write("1234\n")

    def clients_config(self, clients, tls=None, **sections):
        """A config with a clients section (Query needs no token, but a clients
        entry needs a PIN source)."""
        return self.config(clients=clients, pkcs11={"pin_file": self.pin_file}, tls=tls or {}, **sections)

    def query(self, port, pem=None, key=None, cert=True, username=None, password=None):
        """One Query on a new connection; returns ((Result Status, Result Reason),
        the client's local port), once the connection's summary is in the log."""
        ctx = self.tls_context(cert=cert, certfile=pem, keyfile=key)
        with self.connect(port, ctx) as s:
            local = s.getsockname()[1]
            (bi,) = batch_items(exchange(s, request(OP_QUERY, [QUERY_OPERATIONS], username=username,
                                                    password=password)))
        self.summary(local)
        return (bi[T["ResultStatus"]], bi.get(T["ResultReason"])), local

    def handshake_refusal(self, local):
        """What the log says about the refused handshake of local port's connection
        (the text after "failed: ")."""
        key = "]: TLS handshake with 127.0.0.1:%d failed: " % local
        self.summary(local)
        lines = [l for l in self.log_lines() if key in l]
        self.assertEqual(len(lines), 1, "one handshake failure line for port %d" % local)
        return lines[0].partition(key)[2]

    def refusal(self, port, pem, key):
        """Connects with that certificate, which must be refused at the handshake;
        returns the reason logged."""
        local = self.refused(port, self.tls_context(certfile=pem, keyfile=key))
        self.assertEqual(self.summary(local)["end"], "TLS handshake failed")
        return self.handshake_refusal(local)


class NameTest(SecurityTestCase):
    """clients[].certificate_name against the names of CA-issued certificates."""

    CLIENTS = [{"name": "victim", "certificate_name": "victim.example"},
               {"name": "attacker", "certificate_name": "attacker.example"},
               {"name": "upper", "certificate_name": "UPPER.Example"}]

    def setUp(self):
        super().setUp()
        self.port = self.start(self.clients_config(self.CLIENTS))

    def who(self, cn, dns=()):
        """The clients entry a certificate with this CN and these DNS names is
        served as, or None if it gets Authentication Not Successful."""
        name = "cert-%d" % len(os.listdir(self.tmp))
        result, _ = self.query(self.port, *self.issuer.cert(name, cn, dns))
        if result == (FAILED, AUTHENTICATION_NOT_SUCCESSFUL):
            return None
        self.assertEqual(result, (SUCCESS, None))
        return self.audit_records()[-1]["client"]

    def test_name_with_embedded_nul_names_nobody(self):
        # The control: the name itself.
        self.assertEqual(self.who("nobody.example", ["victim.example"]), "victim")
        self.assertEqual(self.who("victim.example"), "victim")
        # A CA that checks only what follows the NUL issued these to the owner of
        # attacker.example.
        self.assertIsNone(self.who("nobody.example", ["victim.example\0.attacker.example"]))
        self.assertIsNone(self.who("victim.example\0.attacker.example"))
        # A bad name spoils only itself.
        self.assertEqual(self.who("nobody.example", ["victim.example\0.attacker.example", "attacker.example"]),
                         "attacker")

    def test_dns_names_and_not_the_cn(self):
        self.assertEqual(self.who("victim.example", ["attacker.example"]), "attacker")
        self.assertIsNone(self.who("victim.example", ["nobody.example"]))
        # Without DNS names, the CN is the name.
        self.assertEqual(self.who("attacker.example"), "attacker")

    def test_names_compare_without_case(self):
        self.assertEqual(self.who("nobody.example", ["VICTIM.Example"]), "victim")
        self.assertEqual(self.who("Victim.EXAMPLE"), "victim")
        self.assertEqual(self.who("nobody.example", ["upper.example"]), "upper")
        self.assertEqual(self.who("upper.EXAMPLE"), "upper")
        self.assertIsNone(self.who("nobody.example", ["victim.example.attacker"]))

    def test_names_that_differ_only_in_case_are_one_client(self):
        path = self.clients_config([{"name": "a", "certificate_name": "same.example"},
                                    {"name": "b", "certificate_name": "SAME.example"}])
        p = subprocess.run([RELAY, "--check-config", "-c", path], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, timeout=20)
        self.assertEqual((p.returncode, p.stdout, p.stderr),
                         (1, "", "clients[1]: identifies the same client as clients[0]\n"))


class PurposeTest(SecurityTestCase):
    def test_server_certificate_is_not_a_client_certificate(self):
        port = self.start(self.config())
        self.assertEqual(self.refusal(port, self.pki.server, self.pki.server_key),
                         'client certificate refused: wrong purpose (subject "CN=localhost")')
        self.assertEqual(self.audit_records(), [])

    def test_extended_key_usage(self):
        port = self.start(self.config())
        for label, eku, served in (("serverAuth", [SERVER_AUTH], False),
                                   ("codeSigning", [ExtendedKeyUsageOID.CODE_SIGNING], False),
                                   ("serverAuth and clientAuth", [SERVER_AUTH, CLIENT_AUTH], True),
                                   ("anyExtendedKeyUsage", [ANY_PURPOSE], True),
                                   ("no Extended Key Usage", None, True)):
            with self.subTest(label):
                pem, key = self.issuer.cert("eku-%d" % len(os.listdir(self.tmp)), "eku.example", eku=eku)
                if served:
                    self.assertEqual(self.query(port, pem, key)[0], (SUCCESS, None))
                else:
                    self.assertEqual(self.refusal(port, pem, key),
                                     'client certificate refused: wrong purpose (subject "CN=eku.example")')

    def test_pinned_certificate_needs_the_client_purpose(self):
        server_only = self.issuer.cert("pinned-server", "pinned.example", eku=[SERVER_AUTH], self_signed=True)
        no_eku = self.issuer.cert("pinned-any", "pinned-any.example", eku=None, self_signed=True)
        client = self.issuer.cert("pinned-client", "pinned-client.example", self_signed=True)
        port = self.start(self.clients_config([
            {"name": "server-only", "certificate_spki_sha256": spki_sha256(server_only[0])},
            {"name": "no-eku", "certificate_spki_sha256": spki_sha256(no_eku[0])},
            {"name": "client", "certificate_spki_sha256": spki_sha256(client[0])},
            {"name": "relay", "certificate_spki_sha256": spki_sha256(self.pki.server)}]))
        self.assertEqual(self.refusal(port, *server_only),
                         'client certificate refused: wrong purpose (subject "CN=pinned.example")')
        self.assertEqual(self.refusal(port, self.pki.server, self.pki.server_key),
                         'client certificate refused: wrong purpose (subject "CN=localhost")')
        self.assertEqual(self.query(port, *no_eku)[0], (SUCCESS, None))
        self.assertEqual(self.query(port, *client)[0], (SUCCESS, None))
        self.assertEqual([r["client"] for r in self.audit_records()], ["no-eku", "client"])


class ValidityTest(SecurityTestCase):
    def test_refusals_name_the_reason_and_the_subject(self):
        other = PKI(os.path.join(self.tmp, "other-pki"))
        port = self.start(self.config())
        for label, (pem, key), why in (
                ("expired", self.issuer.cert("expired", "expired.example", not_before=now() - 30 * DAY,
                                             not_after=now() - DAY), "expired"),
                ("not yet valid", self.issuer.cert("future", "future.example", not_before=now() + DAY,
                                                   not_after=now() + 30 * DAY), "not yet valid"),
                ("another CA's", other.issue("other", "other.example"), "untrusted"),
                ("self-signed", self.issuer.cert("self", "self.example", self_signed=True), "untrusted")):
            with self.subTest(label):
                cn = x509.load_pem_x509_certificate(open(pem, "rb").read()).subject.rfc4514_string()
                self.assertEqual(self.refusal(port, pem, key),
                                 'client certificate refused: %s (subject "%s")' % (why, cn))
        self.assertEqual(self.audit_records(), [])

    def test_subject_is_escaped(self):
        port = self.start(self.config())
        pem, key = self.issuer.cert("escaped", 'x"y\\z\nforged: line', not_after=now() - DAY,
                                    not_before=now() - 2 * DAY)
        self.assertEqual(self.refusal(port, pem, key),
                         'client certificate refused: expired (subject "CN=x\\\\\\"y\\\\\\\\z\\nforged: line")')
        self.assertFalse([l for l in self.log_lines() if l.startswith("forged")])


class RevocationTest(SecurityTestCase):
    def setUp(self):
        super().setUp()
        self.revoked = self.issuer.cert("revoked", "revoked.example")
        self.good = self.issuer.cert("good", "good.example")
        self.crl = os.path.join(self.tmp, "client.crl")

    def test_revoked_certificate_is_refused(self):
        for fmt in ("PEM", "DER"):
            with self.subTest(fmt):
                self.issuer.crl(self.crl, [self.revoked[0]], der=fmt == "DER")
                port = self.start(self.config(tls={"client_crl": self.crl}))
                self.assertEqual(self.refusal(port, *self.revoked),
                                 'client certificate refused: revoked (subject "CN=revoked.example")')
                self.assertEqual(self.query(port, *self.good)[0], (SUCCESS, None))

    def test_every_connection_reads_the_crl(self):
        self.issuer.crl(self.crl, [])
        port = self.start(self.config(tls={"client_crl": self.crl}))
        self.assertEqual(self.query(port, *self.revoked)[0], (SUCCESS, None))
        self.issuer.crl(self.crl, [self.revoked[0]])
        self.assertEqual(self.refusal(port, *self.revoked),
                         'client certificate refused: revoked (subject "CN=revoked.example")')

    def test_revoked_certificate_cannot_resume_its_session(self):
        ticket_key = os.path.join(self.tmp, "ticket.key")
        with open(ticket_key, "wb") as f:
            f.write(os.urandom(64))
        self.issuer.crl(self.crl, [])
        port = self.start(self.config(tls={"client_crl": self.crl, "ticket_key": ticket_key}))
        ctx = self.tls_context(certfile=self.revoked[0], keyfile=self.revoked[1])
        with self.connect(port, ctx) as first:
            exchange(first, QUERY)  # the ticket comes after the handshake
            session = first.session
            first_local = first.getsockname()[1]
        self.assertEqual(self.summary(first_local)["end"], "client closed the connection")
        # The control: the session resumes while the certificate is good.
        with self.connect(port, ctx, session=session) as second:
            exchange(second, QUERY)
            self.assertTrue(second.session_reused)
            second_local = second.getsockname()[1]
        self.assertEqual(self.summary(second_local)["resumed"], "yes")
        self.issuer.crl(self.crl, [self.revoked[0]])
        raw = socket.create_connection(("127.0.0.1", port), timeout=10)
        local = raw.getsockname()[1]
        try:
            with ctx.wrap_socket(raw, server_hostname="localhost", session=session) as third:
                self.assertTrue(third.session_reused)
                third.sendall(QUERY)
                self.assertEqual(third.recv(8), b"", "the relay answered a revoked client")
        except (ssl.SSLError, ConnectionError):
            pass
        finally:
            raw.close()
        self.assertEqual(self.summary(local)["end"], "TLS handshake failed")
        self.assertEqual(self.handshake_refusal(local),
                         'client certificate refused: revoked (subject "CN=revoked.example")')

    def test_pinned_certificate_is_revoked_too(self):
        self.issuer.crl(self.crl, [self.revoked[0]])
        port = self.start(self.clients_config(
            [{"name": "pinned", "certificate_spki_sha256": spki_sha256(self.revoked[0])},
             {"name": "good", "certificate_spki_sha256": spki_sha256(self.good[0])}],
            tls={"client_crl": self.crl}))
        self.assertEqual(self.refusal(port, *self.revoked),
                         'client certificate refused: revoked (subject "CN=revoked.example")')
        self.assertEqual(self.query(port, *self.good)[0], (SUCCESS, None))

    def test_crl_that_cannot_be_used_is_a_startup_error(self):
        # Another CA of the same name signed "foreign".
        other = Issuer(PKI(os.path.join(self.tmp, "other-pki")), self.tmp)
        garbage = os.path.join(self.tmp, "garbage.crl")
        with open(garbage, "wb") as f:
            f.write(b"-----BEGIN X509 CRL-----\nnot a CRL\n-----END X509 CRL-----\n")
        for label, path, why in (
                ("garbage", garbage, "not a PEM or DER CRL"),
                ("another CA's", other.crl(os.path.join(self.tmp, "foreign.crl"), [self.revoked[0]]),
                 "not signed by tls.client_ca (whose certificate must allow CRL signing)"),
                ("out of date", self.issuer.crl(os.path.join(self.tmp, "stale.crl"), [], next_update=-DAY),
                 "out of date (past its next update)")):
            with self.subTest(label):
                before = len(self.log_lines())
                port = self.start(self.config(tls={"client_crl": path}))
                local = self.refused(port)
                self.assertEqual(self.summary(local)["end"], "TLS setup failed")
                lines = self.log_lines()[before:]
                self.assertEqual([l.partition("]: ")[2] for l in lines if "tls.client_crl" in l],
                                 ["tls.client_crl: " + why])

    def test_crl_config(self):
        def check(tls):
            path = os.path.join(self.tmp, "check.json")
            with open(path, "w") as f:
                json.dump({"tls": dict({"certificate": self.pki.server, "key": self.pki.server_key}, **tls),
                           "pkcs11": {"pin_file": os.devnull},
                           "clients": [{"name": "u", "username": "u", "password_sha256": "00" * 32}]}, f)
            p = subprocess.run([RELAY, "--check-config", "-c", path], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, timeout=20)
            return p.returncode, p.stdout, p.stderr

        self.issuer.crl(self.crl, [])
        self.assertEqual(check({"client_crl": self.crl, "client_ca": self.pki.ca}), (0, "OK\n", ""))
        self.assertEqual(check({"client_crl": "/nonexistent.crl", "client_ca": self.pki.ca}),
                         (1, "", "tls.client_crl: cannot read /nonexistent.crl: No such file or directory\n"))
        self.assertEqual(check({"client_crl": self.crl, "require_client_certificate": False}),
                         (1, "", "tls.client_crl: needs tls.client_ca, whose CRL it is\n"))


class HeldOpenTest(SecurityTestCase):
    def wait_closed(self, s, seconds, send=None):
        """Waits until the relay closes s, calling send() once a second meanwhile if
        given; fails after seconds."""
        start = time.monotonic()
        while time.monotonic() - start < seconds:
            if send:
                try:
                    send()
                except (ssl.SSLError, OSError):
                    return
            if select.select([s], [], [], 1.0)[0]:
                try:
                    data = s.recv(8)
                except (ssl.SSLError, OSError):
                    data = b""
                self.assertEqual(data, b"", "the relay answered")
                return
        self.fail("still connected after %d s" % seconds)

    def trickle(self, port, from_byte):
        """Gets one Query answered, then sends QUERY's bytes from from_byte on, one
        a second, never the last. Returns the seconds from the handshake and from
        the answer until the relay closed the connection, and its summary. (Time
        from the answer on leaves out how late a loaded machine starts the relay.)"""
        with self.connect(port) as s:
            start = time.monotonic()
            local = s.getsockname()[1]
            exchange(s, QUERY)
            answered = time.monotonic()
            s.sendall(QUERY[:from_byte])
            sent = [from_byte]

            def one_byte():
                if sent[0] < len(QUERY) - 1:
                    s.sendall(QUERY[sent[0]:sent[0] + 1])
                    sent[0] += 1

            self.wait_closed(s, 15, one_byte)
            end = time.monotonic()
        return end - start, end - answered, self.summary(local)

    def test_lifetime_ends_a_trickled_request(self):
        port = self.start(self.config(timeouts={"lifetime": 2, "idle": 3}))
        since_handshake, since_answer, summary = self.trickle(port, 8)
        self.assertGreater(since_handshake, 1.9)
        self.assertLess(since_answer, 4)
        self.assertEqual((summary["requests"], summary["end"]), ("1", "connection lifetime reached"))

    def test_idle_bounds_every_read(self):
        port = self.start(self.config(timeouts={"lifetime": 60, "idle": 2}))
        for label, from_byte in (("header", 0), ("body", 8)):
            with self.subTest(label):
                _, since_answer, summary = self.trickle(port, from_byte)
                self.assertGreater(since_answer, 1.5)
                self.assertLess(since_answer, 4)
                self.assertEqual((summary["requests"], summary["end"]), ("1", "idle timeout"))

    def test_lifetime_ends_a_write_the_client_does_not_read(self):
        port = self.start(self.config(timeouts={"lifetime": 2, "idle": 60}))
        # Requests of 200 Queries, each answered with some 80 KB, never read.
        big = request_message([batch_item(OP_QUERY, [QUERY_OPERATIONS])] * 200)
        raw = socket.socket()
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        raw.settimeout(20)
        raw.connect(("127.0.0.1", port))
        with self.tls_context().wrap_socket(raw, server_hostname="localhost") as s:
            local = s.getsockname()[1]
            exchange(s, QUERY)
            answered = time.monotonic()
            s.settimeout(0.5)
            try:
                while time.monotonic() - answered < 10:
                    s.sendall(big)
            except (socket.timeout, ssl.SSLError, OSError):
                pass  # the relay stopped reading: it is stuck writing
            summary = self.summary(local, timeout=15)
            since_answer = time.monotonic() - answered
        self.assertLess(since_answer, 4)
        self.assertEqual(summary["end"], "connection lifetime reached")
        self.assertGreater(int(summary["requests"]), 1)

    def auth_failure_closes(self, port, username=None, password=None, pem=None, key=None, cert=False):
        """A request that gets Authentication Not Successful, no sooner than 1 s; the
        next request on the connection gets EOF. Returns the summary."""
        with self.connect(port, self.tls_context(cert=cert, certfile=pem, keyfile=key)) as s:
            local = s.getsockname()[1]
            start = time.monotonic()
            (bi,) = batch_items(exchange(s, request(OP_QUERY, [QUERY_OPERATIONS], username=username,
                                                    password=password)))
            elapsed = time.monotonic() - start
            self.assertEqual((bi[T["ResultStatus"]], bi.get(T["ResultReason"])),
                             (FAILED, AUTHENTICATION_NOT_SUCCESSFUL))
            self.assertGreaterEqual(elapsed, 0.95)
            self.assertLess(elapsed, 5)
            s.settimeout(5)
            try:
                s.sendall(request(OP_QUERY, [QUERY_OPERATIONS], username=username, password=password))
                with self.assertRaises(EOFError):
                    recv_exact(s, 8)
            except (ssl.SSLError, ConnectionError):
                pass  # closed before or during the second request
            self.assertLess(time.monotonic() - start - elapsed, 3, "closed right after the answer")
        summary = self.summary(local)
        self.assertEqual((summary["requests"], summary["end"]), ("1", "authentication failed"))
        return summary

    def test_failed_authentication_closes_the_connection(self):
        stranger = self.issuer.cert("stranger", "stranger.example")
        port = self.start(self.clients_config(
            [{"name": "user", "username": "user", "password_sha256": sha256_hex("right-password")},
             {"name": "named", "certificate_name": "named.example"}],
            tls={"require_client_certificate": False}))
        for label, kw in (("wrong password", {"username": "user", "password": "wrong-password"}),
                          ("unknown username", {"username": "nobody", "password": "right-password"}),
                          ("no credential", {}),
                          ("a certificate no entry names", {"pem": stranger[0], "key": stranger[1],
                                                            "cert": True})):
            with self.subTest(label):
                self.auth_failure_closes(port, **kw)
        # The control: a client that authenticates keeps its connection.
        with self.connect(port, self.tls_context(cert=False)) as s:
            local = s.getsockname()[1]
            for _ in range(2):
                (bi,) = batch_items(exchange(s, request(OP_QUERY, [QUERY_OPERATIONS], username="user",
                                                        password="right-password")))
                self.assertEqual(bi[T["ResultStatus"]], SUCCESS)
        self.assertEqual((self.summary(local)["requests"], self.summary(local)["end"]),
                         ("2", "client closed the connection"))
        self.assertNotIn("right-password", "\n".join(self.log_lines()))


if __name__ == "__main__":
    unittest.main(verbosity=2)

"""Certificates and connections (issue 11, findings 5 to 7), each rule attacked
over real TLS, behind systemd-socket-activate:

- NameTest: a certificate name with an embedded NUL names nobody; when a
  certificate has DNS subjectAltNames they are its names and its CN is not
  (RFC 6125); names compare without regard to ASCII case.

Unusual certificates are made with python-cryptography and signed by the test
CA."""

import datetime
import os
import subprocess
import unittest

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from relaytest import (AUTHENTICATION_NOT_SUCCESSFUL, ENUM, FAILED, OP_QUERY, RELAY, SUCCESS, T,
                       RelayTestCase, batch_items, exchange, item, request)

QUERY_OPERATIONS = item(T["QueryFunction"], ENUM, 1)
CLIENT_AUTH = ExtendedKeyUsageOID.CLIENT_AUTH
HOUR, DAY = datetime.timedelta(hours=1), datetime.timedelta(days=1)


def now():
    return datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)


class Issuer:
    """Certificates signed by a PKI's CA (or self-signed), written to directory."""

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


if __name__ == "__main__":
    unittest.main(verbosity=2)

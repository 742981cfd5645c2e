# SPDX-License-Identifier: BSD-3-Clause
"""scripts/quickstart, with the built relay (KMIP_RELAY) and a temporary state dir:
it serves on the given port, its env file names working credentials (PyKMIP's
client does Discover Versions and Query with the client certificate; a
Cascade-style client without one sends Username and Password), the client command
it prints works, SIGINT stops it cleanly, and a second run on the same state dir
keeps the token, the PIN and the certificates. It says "serving" only once it
listens, and says plainly when the port is taken."""

import base64
import hashlib
import logging
import os
import shlex
import signal
import socket
import ssl
import subprocess
import time
import unittest
import warnings

from kmip.core import enums
from kmip.services.kmip_client import KMIPProxy

from relaytest import (ENUM, OP_QUERY, RELAY, SRCDIR, T, RelayTestCase, batch_items, exchange,
                       free_port, item, request)
from test_units import listening

QUICKSTART = os.path.join(SRCDIR, "scripts", "quickstart")
KEPT = ["pin", "so-pin", "ca.pem", "ca.key", "server.pem", "server.key", "client.pem",
        "client.key", "ticket.key", "softhsm2.conf"]
RESULT_OPERATION_FAILED, REASON_AUTHENTICATION_NOT_SUCCESSFUL = 1, 3


class QuickstartTest(RelayTestCase):
    def setUp(self):
        super().setUp()
        logging.disable(logging.WARNING)  # PyKMIP's complaints about its config file
        self.state = os.path.join(self.tmp, "state")

    def quickstart(self, port):
        """Starts scripts/quickstart; returns the process once it listens."""
        env = dict(self.env, KMIP_RELAY=RELAY)
        out = open(os.path.join(self.tmp, "quickstart-%d.out" % port), "w+")
        self.addCleanup(out.close)
        # SIGINT as at a terminal, even if this test runs with it ignored (started in
        # the background): a shell cannot trap a signal ignored when it started.
        p = subprocess.Popen([QUICKSTART, "--port", str(port), "--state-dir", self.state],
                             env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        self.procs.append(p)
        p.out = out
        deadline = time.time() + 120  # the first run makes a token and a PKI
        while "quickstart: serving KMIP on 127.0.0.1:%d " % port not in self.output(p):
            if p.poll() is not None or time.time() > deadline:
                self.fail("quickstart did not start serving:\n" + self.output(p))
            time.sleep(0.05)
        self.assertTrue(listening(port, timeout=0), "it said serving before it listened")
        return p

    def output(self, p):
        p.out.seek(0)
        return p.out.read()

    def stop(self, p, port):
        p.send_signal(signal.SIGINT)
        rc = p.wait(timeout=20)
        self.assertEqual(rc, 0, self.output(p))
        self.assertIn("quickstart: stopped", self.output(p))
        self.assertFalse(listening(port, timeout=0), "still listening after SIGINT")

    def env_file(self):
        env = {}
        with open(os.path.join(self.state, "env")) as f:
            for line in f:
                words = shlex.split(line, comments=True)
                if words:
                    self.assertEqual(words[0], "export", line)
                    key, _, value = words[1].partition("=")
                    env[key] = value
        return env

    def kept_files(self):
        digests = {}
        for name in KEPT:
            with open(os.path.join(self.state, name), "rb") as f:
                digests[name] = hashlib.sha256(f.read()).hexdigest()
        digests["tokens"] = sorted(os.listdir(os.path.join(self.state, "tokens")))
        return digests

    def pykmip(self, env):
        with warnings.catch_warnings():  # PyKMIP 0.10 uses ssl.wrap_socket()
            warnings.simplefilter("ignore", DeprecationWarning)
            self._pykmip(env)

    def _pykmip(self, env):
        c = KMIPProxy(host=env["KMIP_HOST"], port=int(env["KMIP_PORT"]),
                      certfile=env["KMIP_CLIENT_CERT"], keyfile=env["KMIP_CLIENT_KEY"],
                      ca_certs=env["KMIP_CA"])
        c.open()
        try:
            dv = c.discover_versions()
            self.assertEqual(dv.result_status.value, enums.ResultStatus.SUCCESS)
            self.assertIn((1, 2), [(v.major, v.minor) for v in dv.protocol_versions])
            q = c.query(query_functions=[enums.QueryFunction.QUERY_OPERATIONS])
            self.assertEqual(q.result_status.value, enums.ResultStatus.SUCCESS)
            ops = [o.value for o in q.operations]
            self.assertIn(enums.Operation.QUERY.value, ops)
            self.assertIn(enums.Operation.DISCOVER_VERSIONS.value, ops)
        finally:
            c.close()

    def lifecycles(self, env):
        """PyKMIP's client runs the lifecycle of each key type against quickstart."""
        from kmip.pie.client import ProxyKmipClient
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec

        def client(version):
            return ProxyKmipClient(hostname=env["KMIP_HOST"], port=int(env["KMIP_PORT"]),
                                   cert=env["KMIP_CLIENT_CERT"], key=env["KMIP_CLIENT_KEY"],
                                   ca=env["KMIP_CA"], config_file=os.devnull, kmip_version=version)

        state = ["State"]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with client(enums.KMIPVersion.KMIP_1_2) as c:
                uid = c.create(enums.CryptographicAlgorithm.AES, 256, name="qs-aes")
                c.activate(uid)
                _, attrs = c.get_attributes(uid, state)
                self.assertEqual(attrs[0].attribute_value.value, enums.State.ACTIVE)
                c.revoke(enums.RevocationReasonCode.CESSATION_OF_OPERATION, uid)
                c.destroy(uid)
            for version, algorithm, length in ((enums.KMIPVersion.KMIP_1_2, enums.CryptographicAlgorithm.RSA, 2048),
                                               (enums.KMIPVersion.KMIP_1_2, enums.CryptographicAlgorithm.EC, 256),
                                               (enums.KMIPVersion.KMIP_1_2, enums.CryptographicAlgorithm.ECDSA, 384),
                                               (enums.KMIPVersion.KMIP_2_0, enums.CryptographicAlgorithm.ED25519, 255)):
                with self.subTest(algorithm=algorithm, length=length), client(version) as c:
                    pub, priv = c.create_key_pair(algorithm, length)
                    self.assertEqual(pub[:-4], priv[:-5])
                    c.activate(priv)
                    params = {"cryptographic_algorithm": algorithm,
                              "hashing_algorithm": enums.HashingAlgorithm.SHA_256}
                    if algorithm == enums.CryptographicAlgorithm.RSA:
                        params["padding_method"] = enums.PaddingMethod.PKCS1v15
                    signature = c.sign(b"quickstart", uid=priv, cryptographic_parameters=params)
                    # The defaults: PKCS#1 for RSA, Raw holding a SubjectPublicKeyInfo for the rest.
                    got = c.get(pub)
                    if algorithm == enums.CryptographicAlgorithm.RSA:
                        self.assertEqual(got.key_format_type, enums.KeyFormatType.PKCS_1)
                        public = serialization.load_pem_public_key(
                            b"-----BEGIN RSA PUBLIC KEY-----\n" + base64.encodebytes(got.value) +
                            b"-----END RSA PUBLIC KEY-----\n")
                    else:
                        self.assertEqual(got.key_format_type, enums.KeyFormatType.RAW)
                        public = serialization.load_der_public_key(got.value)
                    if algorithm == enums.CryptographicAlgorithm.RSA:
                        from cryptography.hazmat.primitives.asymmetric import padding
                        public.verify(signature, b"quickstart", padding.PKCS1v15(), hashes.SHA256())
                    elif algorithm == enums.CryptographicAlgorithm.ED25519:
                        public.verify(signature, b"quickstart")
                    else:
                        public.verify(signature, b"quickstart", ec.ECDSA(hashes.SHA256()))
                    c.revoke(enums.RevocationReasonCode.CESSATION_OF_OPERATION, priv)
                    c.destroy(priv)
                    c.destroy(pub)

    def cascade_query(self, env, **credential):
        """A Query from a client without a certificate; returns its batch item."""
        ctx = ssl.create_default_context(cafile=env["KMIP_CA"])
        with self.connect(int(env["KMIP_PORT"]), ctx=ctx) as s:
            resp = exchange(s, request(OP_QUERY, [item(T["QueryFunction"], ENUM, 1)], **credential))
        (bi,) = batch_items(resp)
        return bi

    def test_quickstart(self):
        port = free_port()
        p = self.quickstart(port)
        env = self.env_file()
        for key in ("KMIP_HOST", "KMIP_PORT", "KMIP_CA", "KMIP_CLIENT_CERT", "KMIP_CLIENT_KEY",
                    "KMIP_TOKEN", "KMIP_PIN", "KMIP_CONFIG", "SOFTHSM2_CONF"):
            self.assertTrue(env.get(key), key)
        self.assertEqual((env["KMIP_HOST"], env["KMIP_PORT"], env["KMIP_TOKEN"]),
                         ("127.0.0.1", str(port), "kmip-relay"))
        with open(os.path.join(self.state, "pin")) as f:
            self.assertEqual(f.read().strip(), env["KMIP_PIN"])
        for name in ("pin", "so-pin", "env", "ca.key", "client.key", "server.key", "ticket.key"):
            self.assertEqual(os.stat(os.path.join(self.state, name)).st_mode & 0o077, 0, name)
        slots = subprocess.run(["softhsm2-util", "--show-slots"], env=dict(os.environ, SOFTHSM2_CONF=env["SOFTHSM2_CONF"]),
                               stdout=subprocess.PIPE, universal_newlines=True, timeout=30, check=True).stdout
        self.assertRegex(slots, r"Label:\s+kmip-relay\s")

        # PyKMIP with the client certificate.
        self.pykmip(env)
        self.lifecycles(env)
        # Cascade: no certificate, Username = the token label, Password = the PIN.
        bi = self.cascade_query(env, username=env["KMIP_TOKEN"], password=env["KMIP_PIN"])
        self.assertEqual((bi[T["Operation"]], bi[T["ResultStatus"]]), (OP_QUERY, 0))
        # Without a certificate and without credentials: refused.
        bi = self.cascade_query(env)
        self.assertEqual((bi[T["ResultStatus"]], bi[T["ResultReason"]]),
                         (RESULT_OPERATION_FAILED, REASON_AUTHENTICATION_NOT_SUCCESSFUL))
        # The client command that quickstart prints.
        (command,) = [l for l in self.output(p).splitlines() if l.startswith(". ")]
        r = subprocess.run(["bash", "-c", command], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           universal_newlines=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stdout)
        self.assertIn("versions:", r.stdout)
        self.assertIn("'1.2'", r.stdout)

        self.log = os.path.join(self.state, "relay.log")
        lines = self.log_lines(wait_for="user:kmip-relay")
        self.assertTrue(any('"client":"user:kmip-relay"' in l and '"operation":"Query"' in l
                            and '"result":"Success"' in l for l in lines), lines)
        self.assertFalse([l for l in lines if env["KMIP_PIN"] in l], "the PIN is in the log")
        self.stop(p, port)
        first = self.kept_files()

        # Again on the same state dir, another port: same token, PIN and PKI.
        port2 = free_port()
        p2 = self.quickstart(port2)
        self.assertNotIn("creating", self.output(p2))
        env2 = self.env_file()
        self.assertEqual(self.kept_files(), first)
        self.assertEqual(env2["KMIP_PIN"], env["KMIP_PIN"])
        self.assertEqual(env2["KMIP_PORT"], str(port2))
        bi = self.cascade_query(env2, username=env2["KMIP_TOKEN"], password=env2["KMIP_PIN"])
        self.assertEqual(bi[T["ResultStatus"]], 0)
        self.stop(p2, port2)


    def test_port_taken(self):
        for address in ("127.0.0.1", "0.0.0.0"):
            with self.subTest(address=address):
                with socket.socket() as other:
                    other.bind((address, 0))
                    other.listen()
                    port = other.getsockname()[1]
                    p = subprocess.run([QUICKSTART, "--port", str(port), "--state-dir", self.state],
                                       env=dict(self.env, KMIP_RELAY=RELAY), stdin=subprocess.DEVNULL,
                                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=60)
                self.assertEqual((p.returncode, p.stdout), (1, "quickstart: port %d on 127.0.0.1 is taken by another "
                                                               "program: choose another with --port N\n" % port))


if __name__ == "__main__":
    unittest.main(verbosity=2)

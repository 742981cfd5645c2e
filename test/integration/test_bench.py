# SPDX-License-Identifier: BSD-3-Clause
"""The benchmark's yardsticks (test/bench/minimal_handler) answer real Signs, so
that scripts/bench cannot measure the relay against something broken: the
one-shot handler answers a KMIP Sign on a new connection, the persistent loop
(--loop) its 48-byte requests on one connection, with RSA-2048 and P-256 keys the
relay made; every signature is checked by python-cryptography against the public
key that the relay's Get gives. Each also refuses a client without a certificate
and a key the token does not hold, and logs its phase times. kmip_bench's
set-up modes for scripts/bench's 300-key token work: --make-keys makes key
pairs through the relay and prints the RSA-2048 one, --count-objects counts
the token's objects. No timing is asserted: scripts/bench measures, the tests
check."""

import os
import re
import ssl
import struct
import subprocess
import time
import unittest

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding

from relaytest import (ALG_EC, ALG_ECDSA, ALG_RSA, BYTES, CURVE_P256, FMT_X509, HASH_SHA256, OP_ACTIVATE,
                       OP_CREATE_KEY_PAIR, OP_GET, OP_SIGN, PAD_PKCS1_V15, RELAY, T, TEXT, V1,
                       KmipClient, TokenTestCase, crypto_parameters, decode, exchange, find, get_payload, item,
                       key_material, pair_payload, public_key_of, recv_exact, request, uid_item,
                       wait_listening, free_port)

HANDLER = os.path.join(os.path.dirname(RELAY), "test", "bench", "minimal_handler")
BENCH = os.path.join(os.path.dirname(RELAY), "test", "bench", "kmip_bench")
DATA = bytes(range(256)) * 2  # as long as kmip_bench's
LINE = re.compile(r'\Aminimal_handler: connection phases_ms=handshake:(\d+\.\d\d),load:(\d+\.\d\d),'
                  r'login:(\d+\.\d\d),first:(\d+\.\d\d) requests=(\d+) duration_ms=\d+\.\d end="(.*)"\Z')


def verify(public, signature, message):
    """python-cryptography's check, SHA-256 with PKCS#1 v1.5 or ECDSA; raises
    InvalidSignature."""
    if isinstance(public, ec.EllipticCurvePublicKey):
        public.verify(signature, message, ec.ECDSA(hashes.SHA256()))
    else:
        public.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())


class MinimalHandlerTest(TokenTestCase):
    def setUp(self):
        super().setUp()
        self.handler_log = os.path.join(self.tmp, "handler.log")
        self.relay_port = self.serve()
        self.keys = {}  # name: (private UID, public key)
        with self.client(self.relay_port) as c:
            for name, algorithm, length in (("rsa", ALG_RSA, 2048), ("ec", ALG_EC, None)):
                payload = c.ok(OP_CREATE_KEY_PAIR, pair_payload(V1, algorithm, length, CURVE_P256), V1)
                priv = find(payload, T["PrivateKeyUniqueIdentifier"])[0]
                pub = find(payload, T["PublicKeyUniqueIdentifier"])[0]
                c.ok(OP_ACTIVATE, [uid_item(priv)], V1)
                fmt, material = key_material(c.ok(OP_GET, get_payload(pub, FMT_X509), V1))
                self.keys[name] = (priv, public_key_of(fmt, material))

    def handler(self, *args):
        """minimal_handler behind systemd-socket-activate --accept --inetd, as
        scripts/bench runs it, on the test's token, PKI and lock file; its port."""
        port = free_port()
        cmd = ["systemd-socket-activate", "--accept", "--inetd", "-l", "127.0.0.1:%d" % port]
        for name in ("SOFTHSM2_CONF", "ASAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS"):
            cmd += ["-E", "%s=%s" % (name, self.env[name])]
        cmd += [HANDLER, "--cert", self.pki.server, "--key", self.pki.server_key, "--ca", self.pki.ca,
                "--module", self.token.module, "--token", self.token.label, "--pin-file",
                self.token.pin_file, "--lock-file", os.path.join(self.tmp, "p11.lock"),
                "--log", self.handler_log] + list(args)
        p = subprocess.Popen(cmd, env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.procs.append(p)
        wait_listening(port)
        return port

    def handler_lines(self, count):
        """The handler's log lines, once count of them are there (each connection
        writes its line as it ends)."""
        for _ in range(200):
            lines = []
            if os.path.exists(self.handler_log):
                with open(self.handler_log) as f:
                    lines = f.read().splitlines()
            if len(lines) >= count:
                return lines
            time.sleep(0.05)
        self.fail("the handler logged %d lines, not %d" % (len(lines), count))

    def sign_request(self, name, data=DATA):
        uid, public = self.keys[name]
        params = crypto_parameters(PAD_PKCS1_V15 if name == "rsa" else None, HASH_SHA256,
                                   ALG_RSA if name == "rsa" else ALG_ECDSA)
        return uid, public, [uid_item(uid), params, item(T["Data"], BYTES, data)]

    def test_one_shot_sign(self):
        port = self.handler()
        for version in ((1, 2), (2, 1)):
            for name in ("rsa", "ec"):
                uid, public, payload = self.sign_request(name)
                with KmipClient(self.connect(port), version=version) as c:
                    answer = c.ok(OP_SIGN, payload)
                self.assertEqual([(t, ty) for t, ty, _ in answer], [(T["UniqueIdentifier"], TEXT),
                                                                    (T["SignatureData"], BYTES)])
                self.assertEqual(answer[0][2], uid)
                verify(public, answer[1][2], DATA)
        lines = self.handler_lines(4)
        for line in lines:
            m = LINE.match(line)
            self.assertIsNotNone(m, line)
            self.assertEqual(m.group(5, 6), ("1", "closed"))
            handshake, load, login, first = map(float, m.group(1, 2, 3, 4))
            self.assertGreater(handshake, 0)
            self.assertGreater(login, 0)
            # as in the relay's summary: the first request's time holds the module's
            # loading and the login
            self.assertGreaterEqual(first + 0.02, load + login)

    def loop_request(self, name, chunk):
        """The loop's request: the key's CKA_ID (its UID's hex part), 16 bytes."""
        uid, _ = self.keys[name]
        return bytes.fromhex(uid.split("_")[0]) + chunk

    def loop_answer(self, sock):
        """The Signature Data of the loop's answer, a lone TTLV item."""
        hdr = recv_exact(sock, 8)
        length = struct.unpack(">I", hdr[4:8])[0]
        tag, typ, value, rest = decode(hdr + recv_exact(sock, length + (-length % 8)))
        self.assertEqual((tag, typ, rest), (T["SignatureData"], BYTES, b""))
        return value

    def test_loop(self):
        port = self.handler("--loop")
        sock = self.connect(port)
        with sock:
            for i, name in enumerate(("rsa", "ec", "ec", "rsa", "ec")):
                chunk = bytes([i]) * 16
                request = self.loop_request(name, chunk)
                self.assertEqual(len(request), 48)
                sock.sendall(request)
                # What is signed: the 16 bytes 32 times over, 512 bytes.
                verify(self.keys[name][1], self.loop_answer(sock), chunk * 32)
        m = LINE.match(self.handler_lines(1)[0])
        self.assertIsNotNone(m)
        self.assertEqual(m.group(5, 6), ("5", "closed"))

    def test_refusals(self):
        """A client without a certificate gets no answer; nor does a Sign with a key
        that the token does not hold, nor a loop request for one. Each says why in
        its line."""
        port, loop = self.handler(), self.handler("--loop")
        self.refused(port, self.tls_context(cert=False))
        _, _, payload = self.sign_request("rsa")
        payload[0] = uid_item("00" * 32 + "_priv")
        with self.connect(port) as sock:
            with self.assertRaises((EOFError, ConnectionError, ssl.SSLError)):
                exchange(sock, request(OP_SIGN, payload))
        with self.connect(loop) as sock:
            sock.sendall(bytes(48))
            self.assertEqual(sock.recv(8), b"")
        ends = sorted(LINE.match(line).group(6) for line in self.handler_lines(3))
        self.assertEqual(ends, ["Certificate is required."] + ["the key is not in the token"] * 2)


    def test_make_keys_and_count_objects(self):
        """kmip_bench --make-keys 3: three key pairs through the relay, the first
        RSA-2048, whose private key it prints and which signs; --count-objects
        counts what pkcs11-tool lists."""
        token = ["--module", self.token.module, "--token", self.token.label, "--pin-file", self.token.pin_file,
                 "--lock-file", os.path.join(self.tmp, "p11.lock")]
        tls = ["--host", "127.0.0.1", "--port", str(self.relay_port), "--ca", self.pki.ca, "--cert",
               self.client_cert, "--key", self.client_key]

        def bench(*args):
            return subprocess.run([BENCH] + list(args), env=self.env, check=True, timeout=120,
                                  capture_output=True, text=True).stdout

        before = int(bench("--count-objects", *token))
        uid = bench("--make-keys", "3", *tls).strip()
        after = bench("--count-objects", *token)
        listed = re.findall(r"^(Private Key|Public Key|Data) [Oo]bject", self.token.objects(), flags=re.M)
        self.assertEqual(after, "%d\n" % len(listed))
        self.assertGreater(len(listed), before)
        # setUp's two pairs and these three
        self.assertEqual((listed.count("Private Key"), listed.count("Public Key")), (5, 5))
        self.assertRegex(uid, r"\A[0-9A-F]{64}_priv\Z")
        with self.client(self.relay_port) as c:
            fmt, material = key_material(c.ok(OP_GET, get_payload(uid[:64] + "_pub", FMT_X509), V1))
        public = public_key_of(fmt, material)
        self.assertEqual(public.key_size, 2048)
        _, _, payload = self.sign_request("rsa")
        payload[0] = uid_item(uid)
        with KmipClient(self.connect(self.handler())) as c:
            verify(public, find(c.ok(OP_SIGN, payload), T["SignatureData"])[0], DATA)


if __name__ == "__main__":
    unittest.main()

# SPDX-License-Identifier: BSD-3-Clause
"""Crash isolation: a PKCS#11 module that segfaults, aborts, hangs or prints
garbage harms its own connection only (DESIGN.md, "one connection, one process").

The module is test/faulty_p11.so (from the build: $FAULTY_P11), which wraps
SoftHSM and misbehaves in the function the fault file names. Each test switches
the fault on for one connection, checks that the client sees a clean end (a
closed connection or a KMIP error, never a hang and never bytes that are not
TLS), then switches it off and checks that the next connection to the same
listener is served normally.

- HandshakeFaultTest: the relay's TLS key lives in the token, so the module is
  loaded, logged into and used before and during the handshake.
- OperationFaultTest: the fault hits a KMIP Get of a public key in the token.
- WrongResultTest: the module does not crash but answers wrongly - a signature
  with a bit flipped, which keys.verify_signatures must catch, or an error code
  for C_GenerateRandom, which keys.software_random works around only when the
  token has no generator, and which the Result Message names (in hex when the
  relay has no name for it).
- DeadlineTest: a module call that does not return within pkcs11.call_timeout
  ends its process, with one log line naming the function, whether or not the
  process holds pkcs11.lock_file, and even when the module cancels alarm() and
  setitimer() timers; the line reaches every log target but fd 2 under inetd.
- CoreDumpTest: the relay process can leave no core dump (issue 11, finding 11).

A hung module holds its own process, and only that, until the call's deadline
(issue 11, finding 12). Hung processes still running are killed by pid at the
end of each test.

A crash under AddressSanitizer leaves a SEGV report; the tests accept exactly the
reports of the processes the module made crash, and nothing else."""

import os
import re
import shlex
import signal
import socket
import ssl
import subprocess
import time
import unittest

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding

from relaytest import (BYTES, CRYPTOGRAPHIC_FAILURE, ENUM, FAILED, GENERAL_FAILURE, INTEGER, INVALID_FIELD,
                       OP_QUERY, OP_RNG_RETRIEVE, OP_SIGN, RELAY, SUCCESS, TEXT,
                       UNSUPPORTED_CRYPTOGRAPHIC_PARAMETERS, V1, V2, RelayTestCase, T, Token, alive,
                       batch_items, children, drop_injected_crash_reports, exchange, find, free_port, item, key_material, public_key_of,
                       reason_in, request, spki_sha256, wait_gone, wait_listening)

FAULTY_P11 = os.environ.get("FAULTY_P11") or os.path.join(os.path.dirname(os.path.abspath(RELAY)),
                                                          "test", "faulty_p11.so")
# Long enough to outlast the test, bounded in case the cleanup misses it.
HANG_SECONDS = 40
# How long the client waits for anything from the relay.
CLIENT_TIMEOUT = 10
QUERY_SERVER_INFORMATION = 3
OP_GET = 0x0A
UNIQUE_IDENTIFIER, PUBLIC_KEY, OBJECT_TYPE_PUBLIC_KEY = 0x420094, 0x42006D, 3
DATA, SIGNATURE_DATA = 0x4200C2, 0x4200C3


def deadline_line(function, timeout):
    """What a process logs as the deadline of its module call ends it."""
    return "pkcs11: %s did not return within %d s (pkcs11.call_timeout); exiting" % (function, timeout)


def assert_closed_without_a_byte(testcase, sock):
    """sock's peer closed it (an EOF or a reset) without sending anything."""
    sock.settimeout(CLIENT_TIMEOUT)
    try:
        testcase.assertEqual(sock.recv(1), b"")
    except ConnectionResetError:
        pass


class FaultTestCase(RelayTestCase):
    """A token, the faulty module over it and the fault file; the tests' config has
    the TLS key in the token (self.cfg)."""

    def setUp(self):
        super().setUp()
        if not os.path.exists(FAULTY_P11):
            self.fail("%s is missing: make check builds it (make test/faulty_p11.so)" % FAULTY_P11)
        self.token = Token(os.path.join(self.tmp, "hsm"))
        self.fault_file = os.path.join(self.tmp, "fault")
        self.fault_log = os.path.join(self.tmp, "faults")
        self.env.update(SOFTHSM2_CONF=self.token.conf, FAULTY_P11_FAULT_FILE=self.fault_file,
                        FAULTY_P11_LOG=self.fault_log, FAULTY_P11_HANG_SECONDS=str(HANG_SECONDS))
        self.tls = {"certificate": self.server_cert_for(self.token, "EC:prime256v1", "01"),
                    "key": "pkcs11:id=%01"}
        self.pkcs11 = {"module": FAULTY_P11, "token": "pkcs11:token=kmip-relay",
                       "pin_file": self.token.pin_file,
                       "lock_file": os.path.join(self.tmp, "p11.lock")}
        self.cfg = self.config(tls=self.tls, pkcs11=self.pkcs11)

    def tearDown(self):
        # Hung relays are killed by pid, as children of this test's
        # systemd-socket-activate; the others are waited for, so that their
        # sanitizer reports are all written before they are read.
        relays = [c for p in self.procs for c in children(p.pid)]
        hung = {pid for pid, _, action in self.fired() if action.startswith("hang")}
        for pid in relays:
            if pid in hung and alive(pid):
                os.kill(pid, signal.SIGKILL)
        still = wait_gone(relays)
        drop_injected_crash_reports(self.sanitizer_prefix, self.fault_log)
        super().tearDown()
        self.assertEqual(still, [], "relay processes still running at the end")

    # The fault and what it did.

    def set_fault(self, fault):
        """Names the fault ("C_Login:segv"), or none (""), for the next module calls."""
        tmp = self.fault_file + ".tmp"
        with open(tmp, "w") as f:
            f.write(fault + "\n")
        os.replace(tmp, self.fault_file)

    def fired(self):
        """The faults that fired so far: [(pid, function, action)]."""
        if not os.path.exists(self.fault_log):
            return []
        with open(self.fault_log) as f:
            return [(int(p), fn, a) for p, fn, a in (l.split() for l in f if l.strip())]

    def wait_fired(self, function, action, timeout=10):
        """Waits until the fault has fired; returns the pid of the (last) process
        it fired in."""
        deadline = time.time() + timeout
        while True:
            pids = [p for p, fn, a in self.fired() if (fn, a) == (function, action)]
            if pids:
                return pids[-1]
            if time.time() > deadline:
                self.fail("%s:%s never fired (%r)" % (function, action, self.fired()))
            time.sleep(0.02)

    def assert_ended_at_deadline(self, pid, function, since, timeout):
        """The process ended about timeout seconds after since (when the call began,
        within the fault log's polling), and its last log line names the call."""
        self.assertEqual(wait_gone([pid], timeout + 10), [], "the hung relay was not ended")
        elapsed = time.monotonic() - since
        self.assertGreater(elapsed, timeout - 0.5)
        self.assertLess(elapsed, timeout + 2)
        self.assertNotIn((pid, function, "hang-end"), self.fired())
        key = "kmip-relay[%d]: " % pid
        lines = [l.partition(key)[2] for l in self.log_lines(wait_for=key + "pkcs11: ") if key in l]
        self.assertEqual(lines[-1:], [deadline_line(function, timeout)])
        self.assertEqual(sum(l.startswith("pkcs11: ") for l in lines), 1)

    # What the client sees.

    def assert_served(self, port):
        """A TLS session with a Query answered normally."""
        with self.connect(port) as s:
            s.settimeout(CLIENT_TIMEOUT)
            resp = exchange(s, request(OP_QUERY, [item(T["QueryFunction"], ENUM,
                                                       QUERY_SERVER_INFORMATION)]))
        (bi,) = batch_items(resp)
        self.assertEqual(bi[T["ResultStatus"]], 0)
        payload = bi[T["ResponsePayload"]]
        self.assertTrue(find(payload, T["VendorIdentification"])[0].startswith("kmip-relay"))

    def operation(self, port, operation, payload):
        """Sends one request; returns its batch item, or None if the connection
        ended (cleanly: an EOF or a reset, never bytes that are not TLS)."""
        with self.connect(port) as s:
            s.settimeout(CLIENT_TIMEOUT)
            try:
                resp = exchange(s, request(operation, payload))
            except (EOFError, ConnectionError, ssl.SSLEOFError):
                return None
        (bi,) = batch_items(resp)
        return bi

    def assert_handshake_fails_cleanly(self, port):
        """The handshake ends with the connection closed, soon; not with a hang and
        not with bytes that are not TLS."""
        start = time.monotonic()
        raw = socket.create_connection(("127.0.0.1", port), timeout=CLIENT_TIMEOUT)
        try:
            with self.assertRaises((ssl.SSLError, ConnectionError)) as cm:
                with self.tls_context().wrap_socket(raw, server_hostname="localhost") as s:
                    s.sendall(request(OP_QUERY, []))
                    s.recv(8)
        finally:
            raw.close()
        # Garbage instead of TLS records would be "wrong version number" or the like.
        if isinstance(cm.exception, ssl.SSLError) and not isinstance(cm.exception, ssl.SSLEOFError):
            self.assertIn("EOF", str(cm.exception))
        self.assertLess(time.monotonic() - start, CLIENT_TIMEOUT - 1, "the client waited too long")


class HandshakeFaultTest(FaultTestCase):
    """Faults while the relay opens the token for its TLS key, before and during
    the handshake."""

    def check_crash(self, function, action):
        port = self.start(self.cfg)
        self.set_fault("%s:%s" % (function, action))
        self.assert_handshake_fails_cleanly(port)
        pid = self.wait_fired(function, action)
        self.assertEqual(wait_gone([pid]), [], "the crashed relay is still running")
        # No summary line: the process died in the module.
        self.assertFalse(any("connection peer=" in l for l in self.log_lines()))
        self.set_fault("")
        self.assert_served(port)
        self.assertEqual(len(self.fired()), 1)

    def test_segv_in_login(self):
        self.check_crash("C_Login", "segv")

    def test_abort_in_login(self):
        self.check_crash("C_Login", "abort")

    def test_segv_in_handshake_signature(self):
        # C_Sign runs in the middle of the handshake, after the Server Hello.
        self.check_crash("C_Sign", "segv")

    def test_garbage_never_reaches_the_client(self):
        # As under xinetd, stderr is the socket as well as stdin and stdout.
        port = self.start(self.cfg, wrapper=["/bin/sh", "-c", 'exec "$0" "$@" 2>&1'])
        for function in ("C_Login", "C_Sign"):
            with self.subTest(function=function):
                self.set_fault(function + ":garbage")
                self.assert_served(port)
                self.wait_fired(function, "garbage")

    def test_hang_holds_only_its_connection(self):
        # C_GetAttributeValue runs after C_Login, outside the lock file, before the
        # handshake. The hung process keeps its connection, and only that one,
        # until the call's deadline ends it.
        port = self.start(self.config(tls=self.tls, pkcs11=dict(self.pkcs11, call_timeout=5)))
        self.set_fault("C_GetAttributeValue:hang")
        hung_client = socket.create_connection(("127.0.0.1", port), timeout=CLIENT_TIMEOUT)
        try:
            pid = self.wait_fired("C_GetAttributeValue", "hang")
            since = time.monotonic()
            self.assertIn(pid, children(self.procs[-1].pid))
            self.set_fault("")
            self.assert_served(port)
            self.assert_served(port)
            self.assertTrue(alive(pid), "the hung relay is gone")
            hung_client.settimeout(0.2)
            with self.assertRaises(socket.timeout):
                hung_client.recv(1)
            self.assert_ended_at_deadline(pid, "C_GetAttributeValue", since, 5)
            assert_closed_without_a_byte(self, hung_client)
        finally:
            hung_client.close()


class OperationFaultTest(FaultTestCase):
    """Faults in KMIP operations on a key pair made outside the relay: Get of the
    public key, Sign with the private key. The TLS key is a file here, so the
    module is loaded by the operation."""

    def setUp(self):
        super().setUp()
        self.token.keypair("EC:prime256v1", "a1b2c3", "fault-key")
        self.uid = "A1B2C3_pub"
        self.cfg = self.config(pkcs11=self.pkcs11)

    def get(self, port):
        return self.operation(port, OP_GET, [item(UNIQUE_IDENTIFIER, TEXT, self.uid)])

    def sign(self, port):
        return self.operation(port, OP_SIGN, [item(UNIQUE_IDENTIFIER, TEXT, "A1B2C3_priv"),
                                              item(DATA, BYTES, b"crash isolation")])

    def assert_ok(self, bi):
        self.assertIsNotNone(bi, "the connection ended")
        self.assertEqual(bi[T["ResultStatus"]], 0, bi.get(T["ResultMessage"]))
        return bi[T["ResponsePayload"]]

    def assert_get_served(self, port):
        payload = self.assert_ok(self.get(port))
        self.assertEqual(find(payload, T["ObjectType"]), [OBJECT_TYPE_PUBLIC_KEY])
        self.assertEqual(find(payload, UNIQUE_IDENTIFIER), [self.uid])
        self.assertEqual(len(find(payload, PUBLIC_KEY)), 1)

    def assert_sign_served(self, port):
        payload = self.assert_ok(self.sign(port))
        (sig,) = find(payload, SIGNATURE_DATA)
        self.assertEqual(sig[0], 0x30)  # DER SEQUENCE { r, s }

    def check_crash(self, function, action, send=None, served=None):
        send, served = send or self.get, served or self.assert_get_served
        port = self.start(self.cfg)
        served(port)
        self.set_fault("%s:%s" % (function, action))
        bi = send(port)
        if bi is not None:  # a KMIP error is fine too; a success is not
            self.assertNotEqual(bi[T["ResultStatus"]], 0)
        pid = self.wait_fired(function, action)
        self.assertEqual(wait_gone([pid]), [], "the crashed relay is still running")
        self.set_fault("")
        served(port)
        self.assert_served(port)
        self.assertEqual(len(self.fired()), 1)

    def test_get_segv_in_find(self):
        self.check_crash("C_FindObjectsInit", "segv")

    def test_get_segv_in_get_attribute_value(self):
        self.check_crash("C_GetAttributeValue", "segv")

    def test_get_abort_in_find(self):
        self.check_crash("C_FindObjectsInit", "abort")

    def test_sign_segv_in_sign(self):
        self.check_crash("C_Sign", "segv", self.sign, self.assert_sign_served)

    def test_sign_abort_in_sign_init(self):
        self.check_crash("C_SignInit", "abort", self.sign, self.assert_sign_served)

    def test_garbage_never_reaches_the_client(self):
        port = self.start(self.cfg, wrapper=["/bin/sh", "-c", 'exec "$0" "$@" 2>&1'])
        for function in ("C_Login", "C_FindObjectsInit", "C_GetAttributeValue", "C_Sign"):
            with self.subTest(function=function):
                self.set_fault(function + ":garbage")
                self.assert_get_served(port)
                self.assert_sign_served(port)
                self.wait_fired(function, "garbage")

    def check_hang(self, function, send, served, timeout, **pkcs11):
        """A request whose call hangs gets no answer; the other connections are
        served meanwhile, and the deadline ends the hung process."""
        values = dict(self.pkcs11, call_timeout=timeout, **pkcs11)
        port = self.start(self.config(pkcs11={k: v for k, v in values.items() if v is not None}))
        self.set_fault(function + ":hang")
        with self.connect(port) as hung:
            hung.settimeout(CLIENT_TIMEOUT + timeout)
            hung.sendall(request(*send))
            pid = self.wait_fired(function, "hang")
            since = time.monotonic()
            self.set_fault("")
            served(port)
            self.assertTrue(alive(pid), "the hung relay is gone")
            self.assert_ended_at_deadline(pid, function, since, timeout)
            try:
                self.assertEqual(hung.recv(8), b"")
            except (ConnectionError, ssl.SSLEOFError):
                pass
        served(port)

    def test_get_hang_holds_only_its_connection(self):
        self.check_hang("C_FindObjectsInit", (OP_GET, [item(UNIQUE_IDENTIFIER, TEXT, self.uid)]),
                        self.assert_get_served, 5)

    def test_sign_hang_without_lock_file_ends_at_the_deadline(self):
        # The hot path, and nothing holds the lock file: only the deadline ends it.
        self.check_hang("C_Sign", (OP_SIGN, [item(UNIQUE_IDENTIFIER, TEXT, "A1B2C3_priv"),
                                             item(DATA, BYTES, b"never signed")]),
                        self.assert_sign_served, 2, lock_file=None)


class WrongResultTest(FaultTestCase):
    """A module that answers wrongly instead of crashing, on key pairs made outside
    the relay (the TLS key is a file). Every request goes on a connection of its
    own, to one of two relays on the same token that differ in one keys.* switch."""

    KEYS = {"ec": ("EC:prime256v1", "A1B2C3"), "rsa": ("RSA:2048", "D4E5F6")}
    SELF_CHECK_FAILED = "verify_signatures: the signature does not verify with the public key"

    def setUp(self):
        super().setUp()
        for key_type, key_id in self.KEYS.values():
            self.token.keypair(key_type, key_id.lower(), "wrong-" + key_id)

    def serve(self, **keys):
        return self.start(self.config(pkcs11=self.pkcs11, keys=keys))

    def call(self, port, version, operation, payload):
        """The response batch item of one request on a new connection."""
        with self.kmip(port, version=version) as c:
            c.sock.settimeout(CLIENT_TIMEOUT)
            return c.call(operation, payload)

    def assert_failed(self, bi, reason, message):
        """A failed item with exactly this Result Reason and Message, and no payload."""
        self.assertEqual((bi[T["ResultStatus"]], bi.get(T["ResultReason"]), bi.get(T["ResultMessage"])),
                         (FAILED, reason, message))
        self.assertNotIn(T["ResponsePayload"], bi)

    def signature(self, bi):
        self.assertEqual(bi[T["ResultStatus"]], SUCCESS, bi.get(T["ResultMessage"]))
        (sig,) = find(bi[T["ResponsePayload"]], SIGNATURE_DATA)
        return sig

    def summarised_log(self, connections, timeout=10):
        """The log's lines once it ends that many connections (the summary line comes
        after a connection's audit records)."""
        deadline = time.time() + timeout
        while True:
            lines = self.log_lines()
            if sum("]: connection peer=" in l for l in lines) >= connections or time.time() > deadline:
                return lines
            time.sleep(0.05)

    @staticmethod
    def verifies(public, signature, message):
        """Whether python-cryptography accepts the signature: ECDSA or RSA PKCS#1
        v1.5, with SHA-256 (the relay's default for both)."""
        try:
            if isinstance(public, ec.EllipticCurvePublicKey):
                public.verify(signature, message, ec.ECDSA(hashes.SHA256()))
            else:
                public.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
            return True
        except InvalidSignature:
            return False

    def test_verify_signatures_catches_a_corrupt_signature(self):
        checked, unchecked = self.serve(verify_signatures=True), self.serve(verify_signatures=False)
        message = b"a bit will flip " + os.urandom(16)
        expected_audit = []
        for name, (_, key_id) in sorted(self.KEYS.items()):
            priv = key_id + "_priv"
            sign = [item(UNIQUE_IDENTIFIER, TEXT, priv), item(DATA, BYTES, message)]
            for version in (V1, V2):
                with self.subTest(key=name, version=version):
                    self.set_fault("")
                    public = public_key_of(*key_material(self.call(unchecked, V2, OP_GET, [
                        item(UNIQUE_IDENTIFIER, TEXT, key_id + "_pub")])[T["ResponsePayload"]]))
                    good = self.signature(self.call(checked, version, OP_SIGN, sign))
                    self.assertTrue(self.verifies(public, good, message))
                    self.set_fault("C_Sign:corrupt")
                    # The self-check refuses the signature: nothing of it goes out.
                    self.assert_failed(self.call(checked, version, OP_SIGN, sign), CRYPTOGRAPHIC_FAILURE,
                                       self.SELF_CHECK_FAILED)
                    # The negative control: without it, the client gets the bad signature.
                    bad = self.signature(self.call(unchecked, version, OP_SIGN, sign))
                    self.assertFalse(self.verifies(public, bad, message))
                    if name == "rsa":  # PKCS#1 v1.5 is deterministic: exactly the bit flipped
                        self.assertEqual(bad, good[:-1] + bytes([good[-1] ^ 0x01]))
                    expected_audit += [("Get", "Success", key_id + "_pub"), ("Sign", "Success", priv),
                                       ("Sign", "Cryptographic Failure", priv), ("Sign", "Success", priv)]
        self.set_fault("")
        fired = self.fired()
        self.assertEqual([(fn, action) for _, fn, action in fired], [("C_Sign", "corrupt")] * 8)
        self.assertEqual(len({pid for pid, _, _ in fired}), 8, "one corrupt C_Sign per connection")
        # The audit record of each refused Sign names the key and the failure.
        records = self.audit_records(self.summarised_log(len(expected_audit)))
        client = "sha256:" + spki_sha256(self.client_cert)
        self.assertEqual({r["client"] for r in records}, {client})
        self.assertEqual([(r["operation"], r["result"], r.get("uid")) for r in records], expected_audit)

    def test_software_random_only_without_a_generator(self):
        strict, fallback = self.serve(software_random=False), self.serve(software_random=True)
        self.set_fault("C_GenerateRandom:rv=CKR_RANDOM_NO_RNG")
        requests = 0
        for version in (V1, V2):
            with self.subTest(version=version):
                self.assert_failed(self.call(strict, version, OP_RNG_RETRIEVE, [item(T["DataLength"], INTEGER, 32)]),
                                   reason_in(version, INVALID_FIELD, UNSUPPORTED_CRYPTOGRAPHIC_PARAMETERS),
                                   "CKR_RANDOM_NO_RNG")
                got = {}
                for n in (1, 32, 32, 65536):
                    bi = self.call(fallback, version, OP_RNG_RETRIEVE, [item(T["DataLength"], INTEGER, n)])
                    self.assertEqual(bi[T["ResultStatus"]], SUCCESS, bi.get(T["ResultMessage"]))
                    self.assertEqual([(t, ty) for t, ty, _ in bi[T["ResponsePayload"]]], [(T["Data"], BYTES)])
                    data = bi[T["ResponsePayload"]][0][2]
                    self.assertEqual(len(data), n)
                    got.setdefault(n, []).append(data)
                self.assertNotEqual(got[32][0], got[32][1])
                self.assertEqual(len(set(got[65536][0])), 256, "every byte value in 64 KiB of random bytes")
                requests += 5
        # Any other failure of the token's generator is the client's to see: a
        # device's failure, which the relay tries once more after logging in again
        # (a pool of one has no other backend), naming the code and the backend.
        self.set_fault("C_GenerateRandom:rv=CKR_DEVICE_ERROR")
        self.assert_failed(self.call(fallback, V2, OP_RNG_RETRIEVE, [item(T["DataLength"], INTEGER, 32)]),
                           GENERAL_FAILURE, "CKR_DEVICE_ERROR on backend default")
        self.set_fault("")
        # The token was asked every time: once, and twice for the device's failure.
        self.assertEqual([(fn, action) for _, fn, action in self.fired()],
                         [("C_GenerateRandom", "rv=CKR_RANDOM_NO_RNG")] * requests +
                         [("C_GenerateRandom", "rv=CKR_DEVICE_ERROR")] * 2)

    def test_unnamed_code_shown_in_hex(self):
        # A CKR_ code that the relay's table does not name: the vendor range, and
        # one of PKCS#11's own (CKR_OPERATION_ACTIVE), on one connection.
        port = self.serve()
        with self.kmip(port, version=V2) as c:
            c.sock.settimeout(CLIENT_TIMEOUT)
            for code in ("0x80000123", "0x90"):
                with self.subTest(code=code):
                    self.set_fault("C_GenerateRandom:rv=" + code)
                    self.assert_failed(c.call(OP_RNG_RETRIEVE, [item(T["DataLength"], INTEGER, 32)]),
                                       GENERAL_FAILURE, "CKR_0x%08X" % int(code, 16))
        self.set_fault("")


class DeadlineTest(FaultTestCase):
    """A module call that hangs, with pkcs11.call_timeout 2, in the login that
    comes before the handshake (the TLS key is in the token). The hung client
    never gets a byte; its process ends at the deadline with a log line naming
    the function; a later connection is served."""

    TIMEOUT = 2

    def serve(self, lock_file=True, wrapper=()):
        pkcs11 = dict(self.pkcs11, call_timeout=self.TIMEOUT)
        if not lock_file:
            del pkcs11["lock_file"]
        return self.start(self.config(tls=self.tls, pkcs11=pkcs11), wrapper=wrapper)

    def check_deadline(self, function, action="hang", lock_file=True, wrapper=()):
        """Returns how long a connection made as the call hung waited to be served."""
        port = self.serve(lock_file, wrapper)
        self.set_fault("%s:%s" % (function, action))
        hung_client = socket.create_connection(("127.0.0.1", port), timeout=CLIENT_TIMEOUT)
        try:
            pid = self.wait_fired(function, action)
            since = time.monotonic()
            self.set_fault("")
            self.assert_served(port)
            waited = time.monotonic() - since
            self.assert_ended_at_deadline(pid, function, since, self.TIMEOUT)
            assert_closed_without_a_byte(self, hung_client)
        finally:
            hung_client.close()
        self.assert_served(port)
        return waited

    def test_login_holding_the_lock(self):
        # C_Login runs under pkcs11.lock_file, which every login takes: the next
        # connection waits until the deadline ends the hung process.
        self.assertGreater(self.check_deadline("C_Login"), self.TIMEOUT - 0.5)

    def test_login_without_lock_file(self):
        # Nothing else bounds the call; the next connection does not wait for it.
        self.assertLess(self.check_deadline("C_Login", lock_file=False), self.TIMEOUT - 0.5)

    def test_module_cannot_cancel_the_deadline(self):
        # The module cancels alarm() and setitimer() and ignores SIGALRM first.
        self.check_deadline("C_Login", "hang-unalarm")

    def test_dlopen(self):
        # The module's constructor hangs inside dlopen, under the lock file.
        self.check_deadline("dlopen")

    def test_never_on_fd_2_under_inetd(self):
        # As under xinetd, stderr is the connection as well: the hung client
        # gets no byte of the log line.
        self.check_deadline("C_Login", wrapper=["/bin/sh", "-c", 'exec "$0" "$@" 2>&1'])

    def test_listen_logs_to_stderr(self):
        port = free_port()
        relay = subprocess.Popen([RELAY, "--config", self.config(tls=self.tls, pkcs11=dict(
            self.pkcs11, call_timeout=self.TIMEOUT)), "--listen", "127.0.0.1:%d" % port],
            env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.procs.append(relay)
        wait_listening(port)
        self.set_fault("C_Login:hang")
        with socket.create_connection(("127.0.0.1", port), timeout=CLIENT_TIMEOUT) as hung_client:
            pid = self.wait_fired("C_Login", "hang")
            since = time.monotonic()
            self.assertEqual(pid, relay.pid)
            stderr = relay.communicate(timeout=self.TIMEOUT + 10)[1].decode()
            self.assertEqual(relay.returncode, 1)
            self.assert_ended_at_deadline(pid, "C_Login", since, self.TIMEOUT)
            assert_closed_without_a_byte(self, hung_client)
        self.assertEqual(stderr.splitlines()[-1].partition("kmip-relay[%d]: " % pid)[2],
                         deadline_line("C_Login", self.TIMEOUT))

    def datagram_target(self, path):
        """A datagram socket bound at path, as the journal's or syslog's."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.addCleanup(sock.close)
        sock.bind(path)
        sock.settimeout(0.2)
        return sock

    def received(self, sock, want, timeout=10):
        """The datagrams that came, until one is want or timeout seconds pass."""
        got, deadline = [], time.time() + timeout
        while want not in got and time.time() < deadline:
            try:
                got.append(sock.recv(65536))
            except socket.timeout:
                pass
        return got

    @staticmethod
    def in_mount_namespace(script):
        """A wrapper that runs the relay in a mount namespace of its own, after
        the shell commands in script (bind mounts there reach no other process)."""
        return ["unshare", "--mount", "--propagation", "private", "/bin/sh", "-c",
                '%s && exec "$0" "$@"' % script]

    def test_journal(self):
        # Under systemd (INVOCATION_ID), in journald's native protocol, to the
        # journal's socket: here one of the test's, over /run in the relay's
        # mount namespace.
        run = os.path.join(self.tmp, "run")
        os.makedirs(os.path.join(run, "systemd", "journal"))
        journal = self.datagram_target(os.path.join(run, "systemd", "journal", "socket"))
        self.env["INVOCATION_ID"] = "0123456789abcdef0123456789abcdef"
        port = self.serve(wrapper=self.in_mount_namespace("mount --bind %s /run" % shlex.quote(run)))
        self.set_fault("C_Login:hang")
        with socket.create_connection(("127.0.0.1", port), timeout=CLIENT_TIMEOUT) as hung_client:
            self.wait_fired("C_Login", "hang")
            since = time.monotonic()
            self.set_fault("")
            want = ("MESSAGE=%s\nPRIORITY=2\nSYSLOG_IDENTIFIER=kmip-relay\n" %
                    deadline_line("C_Login", self.TIMEOUT)).encode()
            got = self.received(journal, want, self.TIMEOUT + 10)
            self.assertIn(want, got)
            self.assertGreater(time.monotonic() - since, self.TIMEOUT - 0.5)
            assert_closed_without_a_byte(self, hung_client)
        # The control: the relay's other records reach the same socket.
        self.assert_served(port)
        self.assertTrue(any(d.startswith(b"MESSAGE=connection peer=127.0.0.1:") for d in
                            self.received(journal, None, 2)))

    def test_syslog(self):
        # Under inetd, a syslog datagram to /dev/log: here the test's socket, in a
        # /dev of the relay's mount namespace that holds the devices it needs.
        dev = os.path.join(self.tmp, "dev")
        os.makedirs(dev)
        devices = ("null", "zero", "random", "urandom")
        for name in devices:
            open(os.path.join(dev, name), "w").close()
        syslog = self.datagram_target(os.path.join(dev, "log"))
        port = self.serve(wrapper=self.in_mount_namespace(
            "for d in %s; do mount --bind /dev/$d %s/$d || exit 1; done && mount --rbind %s /dev" % (
                " ".join(devices), shlex.quote(dev), shlex.quote(dev))))
        self.set_fault("C_Login:hang")
        with socket.create_connection(("127.0.0.1", port), timeout=CLIENT_TIMEOUT) as hung_client:
            pid = self.wait_fired("C_Login", "hang")
            self.set_fault("")
            want = ("<26>kmip-relay[%d]: %s" % (pid, deadline_line("C_Login", self.TIMEOUT))).encode()
            self.assertIn(want, self.received(syslog, want, self.TIMEOUT + 10))
            assert_closed_without_a_byte(self, hung_client)
        # The control: glibc's syslog() reaches the same socket.
        self.assert_served(port)
        self.assertTrue(any(re.match(rb"<30>.* kmip-relay\[\d+\]: connection peer=127\.0\.0\.1:", d)
                            for d in self.received(syslog, None, 2)))


class CoreDumpTest(FaultTestCase):
    """A relay process can leave no core dump: not dumpable, and RLIMIT_CORE 0
    (issue 11, finding 11). The module records both from inside the process that
    loaded it."""

    UNLIMITED = ["prlimit", "--core=unlimited", "--"]

    def test_no_core_dump(self):
        self.set_fault("C_Initialize:limits")
        # The control: the same module in another program, under the same limit.
        tool = subprocess.run(self.UNLIMITED + ["pkcs11-tool", "--module", FAULTY_P11, "--list-slots"],
                              env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.assertEqual(tool.returncode, 0)
        self.assertEqual([a for _, fn, a in self.fired()], ["limits=dumpable:1,core:unlimited:unlimited"])
        port = self.start(self.cfg, wrapper=self.UNLIMITED)
        self.assert_served(port)
        relays = [(pid, a) for pid, fn, a in self.fired()[1:]]
        self.assertEqual([a for _, a in relays], ["limits=dumpable:0,core:0:0"])
        self.assertEqual(wait_gone([relays[0][0]]), [])


if __name__ == "__main__":
    unittest.main(verbosity=2)

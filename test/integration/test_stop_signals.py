# SPDX-License-Identifier: BSD-3-Clause
"""A stop must not destroy the token (issue 11, finding 16).

SoftHSM rewrites its token file on every C_Login, and a process ended in the
middle of that leaves the file empty: from then on no connection finds the
token. The relay holds SIGTERM, SIGINT and SIGHUP while it is inside the module
and honours them as soon as the call returns.

- HeldStopTest: with the faulty module (test/faulty_p11.c) making C_Login last
  2 s, each of the three signals waits for the call to return and then ends the
  process, before it does anything else; outside a call SIGTERM ends it at once;
  and a call that does not return ends at pkcs11.call_timeout even so.
- StopStormTest: 8 clients connect, sign over KMIP and disconnect in a loop,
  while SIGTERM hits a random relay process every 50 ms for 30 s (as systemd
  stopping the service's instances does). Afterwards the token is intact: every
  object file has content, softhsm2-util lists the token, pkcs11-tool finds its
  keys, and a new connection signs with a signature that verifies."""

import glob
import os
import random
import signal
import socket
import ssl
import sys
import threading
import time
import unittest

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from relaytest import (BYTES, OP_SIGN, SUCCESS, TEXT, T, TokenTestCase, alive, batch_items, children, exchange,
                       find, item, request, wait_gone)
from test_crash_isolation import FaultTestCase, assert_closed_without_a_byte

UNIQUE_IDENTIFIER, DATA, SIGNATURE_DATA = 0x420094, 0x4200C2, 0x4200C3
STORM_SECONDS = 30
KILL_INTERVAL = 0.05
CLIENTS = 8
CLIENT_TIMEOUT = 10


def relay_processes(parent):
    """The kmip-relay processes among parent's children (not a child that
    systemd-socket-activate forked and has yet to exec the relay)."""
    pids = []
    for pid in children(parent):
        try:
            with open("/proc/%d/comm" % pid) as f:
                if f.read().strip() == "kmip-relay":
                    pids.append(pid)
        except (FileNotFoundError, ProcessLookupError):
            pass
    return pids


class HeldStopTest(FaultTestCase):
    """The relay's TLS key is in the token, so a connection logs in before the
    handshake; pkcs11.lock_file is set."""

    HANG = 2

    def setUp(self):
        super().setUp()
        self.env["FAULTY_P11_HANG_SECONDS"] = str(self.HANG)

    def hung_login(self, port):
        """A connection whose C_Login hangs: (its socket, its relay's pid, when)."""
        before = len(self.fired())
        self.set_fault("C_Login:hang")
        client = socket.create_connection(("127.0.0.1", port), timeout=CLIENT_TIMEOUT)
        deadline = time.time() + CLIENT_TIMEOUT
        while len(self.fired()) == before and time.time() < deadline:
            time.sleep(0.02)
        since = time.monotonic()
        self.set_fault("")
        (pid,) = [p for p, fn, action in self.fired()[before:] if (fn, action) == ("C_Login", "hang")]
        return client, pid, since

    def test_held_until_the_call_returns(self):
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            with self.subTest(signal=sig.name):
                port = self.start(self.cfg)
                client, pid, since = self.hung_login(port)
                with client:
                    os.kill(pid, sig)
                    time.sleep(self.HANG / 2)
                    self.assertTrue(alive(pid), "ended inside C_Login")
                    self.assertEqual(wait_gone([pid], self.HANG + 10), [])
                    self.assertGreater(time.monotonic() - since, self.HANG - 0.3)
                    # C_Login returned, and nothing came after it: no handshake, no
                    # log line (a process that goes on logs its connection's end).
                    self.assertIn((pid, "C_Login", "hang-end"), self.fired())
                    assert_closed_without_a_byte(self, client)
                self.assertEqual([l for l in self.log_lines() if "kmip-relay[%d]: " % pid in l], [])
                self.assert_served(port)

    def test_at_once_outside_a_call(self):
        port = self.start(self.cfg)
        with self.connect(port):  # logged in, handshake done: waiting for a request
            (pid,) = relay_processes(self.procs[-1].pid)
            os.kill(pid, signal.SIGTERM)
            since = time.monotonic()
            self.assertEqual(wait_gone([pid], 10), [])
            self.assertLess(time.monotonic() - since, 1)
        self.assert_served(port)

    def test_bounded_by_the_call_timeout(self):
        self.env["FAULTY_P11_HANG_SECONDS"] = "40"
        port = self.start(self.config(tls=self.tls, pkcs11=dict(self.pkcs11, call_timeout=2)))
        client, pid, since = self.hung_login(port)
        with client:
            os.kill(pid, signal.SIGTERM)
            self.assert_ended_at_deadline(pid, "C_Login", since, 2)
            assert_closed_without_a_byte(self, client)
        self.assert_served(port)


class StopStormTest(TokenTestCase):

    KEY_ID, LABEL = "57a1", "storm"

    def setUp(self):
        super().setUp()
        with open(self.token.keypair("EC:prime256v1", self.KEY_ID, self.LABEL), "rb") as f:
            self.public = serialization.load_der_public_key(f.read())
        self.port = self.start(self.softhsm_config(self.token))
        self.relays_of = self.procs[-1].pid

    def sign(self, message):
        """(Result Status, signature or Result Message) of one Sign on a new connection."""
        with self.connect(self.port) as s:
            s.settimeout(CLIENT_TIMEOUT)
            resp = exchange(s, request(OP_SIGN, [item(UNIQUE_IDENTIFIER, TEXT, self.KEY_ID.upper() + "_priv"),
                                                 item(DATA, BYTES, message)]))
        (bi,) = batch_items(resp)
        if bi[T["ResultStatus"]] != SUCCESS:
            return bi[T["ResultStatus"]], bi.get(T["ResultMessage"])
        (sig,) = find(bi[T["ResponsePayload"]], SIGNATURE_DATA)
        return SUCCESS, sig

    def verifies(self, signature, message):
        try:
            self.public.verify(signature, message, ec.ECDSA(hashes.SHA256()))
            return True
        except InvalidSignature:
            return False

    def empty_object_files(self):
        return sorted(p for p in glob.glob(os.path.join(self.token.dir, "tokens", "*", "*.object"))
                      if os.path.getsize(p) == 0)

    def test_sigterm_storm_leaves_the_token_intact(self):
        stop = threading.Event()
        lock = threading.Lock()
        stats = {"signed": 0, "interrupted": 0, "refused": [], "bad signatures": 0, "sigterms": 0}

        def client():
            while not stop.is_set():
                message = os.urandom(32)
                try:
                    status, result = self.sign(message)
                except (OSError, EOFError, ssl.SSLError):  # its relay was stopped
                    with lock:
                        stats["interrupted"] += 1
                    continue
                with lock:
                    if status != SUCCESS:
                        stats["refused"].append(result)
                    elif self.verifies(result, message):
                        stats["signed"] += 1
                    else:
                        stats["bad signatures"] += 1

        def killer():
            rng = random.Random(16)
            while not stop.wait(KILL_INTERVAL):
                relays = relay_processes(self.relays_of)
                if not relays:
                    continue
                try:
                    os.kill(rng.choice(relays), signal.SIGTERM)
                except ProcessLookupError:  # it ended by itself meanwhile
                    continue
                with lock:
                    stats["sigterms"] += 1

        threads = [threading.Thread(target=client) for _ in range(CLIENTS)] + [threading.Thread(target=killer)]
        for t in threads:
            t.start()
        try:
            time.sleep(STORM_SECONDS)
        finally:
            stop.set()
            for t in threads:
                t.join(CLIENT_TIMEOUT + 5)
        self.assertFalse(any(t.is_alive() for t in threads), "a client or the killer is stuck")
        print("\n%d s storm: %d SIGTERMs, %d signatures, %d connections cut, %d refused %r" % (
            STORM_SECONDS, stats["sigterms"], stats["signed"], stats["interrupted"], len(stats["refused"]),
            sorted(set(stats["refused"]))), file=sys.stderr)
        self.assertEqual(wait_gone(relay_processes(self.relays_of)), [])
        self.assertGreater(stats["sigterms"], STORM_SECONDS / KILL_INTERVAL / 2, "the storm hit too few relays")
        self.assertGreater(stats["signed"], 0)
        self.assertGreater(stats["interrupted"], 0, "no SIGTERM cut a connection")
        self.assertEqual(stats["bad signatures"], 0)

        # The token as other software sees it: its files, its slot, its keys.
        self.assertEqual(self.empty_object_files(), [])
        self.assertIn(self.token.label, [label for _, label in self.token.slots()])
        usage = self.token.usage()
        self.assertIn(("Private Key", self.LABEL), usage)
        self.assertIn(("Public Key", self.LABEL), usage)
        # And through the relay: a new connection signs, and the signature verifies.
        message = b"after the storm"
        status, signature = self.sign(message)
        self.assertEqual(status, SUCCESS, signature)
        self.assertTrue(self.verifies(signature, message))
        # No connection was refused by the token during the storm either.
        self.assertEqual(stats["refused"], [])


if __name__ == "__main__":
    unittest.main(verbosity=2)

# SPDX-License-Identifier: BSD-3-Clause
"""PIN lockout (issue 11, finding 8). Every connection logs in, so a PIN that a
client supplies (password_is_pin, username_is_token, login_with_credentials) or a
wrong configured PIN could lock the user PIN of a real HSM for every tenant. Over
real TLS, on a SoftHSM token of the test's own (pin-token-a, and pin-token-b in
the same SoftHSM configuration where a test needs two):

- ClientPinBudgetTest: client PINs get a failure budget per token, shared by
  every relay process through the state file beside pkcs11.lock_file: of five
  wrong PINs sent at once to two listeners, three reach C_Login; the right PIN
  inside the window is refused without a C_Login (on SoftHSM itself the token's
  CKF_USER_PIN_COUNT_LOW flag, which a successful login clears, stays set); it
  works once the window has passed.
- ConfiguredPinTest: a configured PIN that the token rejected is tried once, then
  not again until the PIN file holds another.
- TokenFlagsTest: a token whose flags say CKF_USER_PIN_FINAL_TRY or
  CKF_USER_PIN_LOCKED is not logged into at all.
- TokenSelectionTest: a Username picks only among the tokens the config allows
  (clients[].tokens, else pkcs11.token as a pattern), never any token in the
  module.
- SameAnswerTest: an unknown Username and a wrong PIN get the same Result Reason
  and Result Message after the same delay.
- ConfigRuleTest: the config rules these need, and their messages.

The calls that reach the token are counted by test/faulty_p11.so (from the build:
$FAULTY_P11) in its "count" mode, which forwards every call to SoftHSM and writes
one line per C_Login; "flags=" makes C_GetTokenInfo report a PIN about to lock or
locked, which SoftHSM 2.6 never does (it only sets CKF_USER_PIN_COUNT_LOW after a
wrong PIN, and never locks). No PIN may appear in the log or the state file."""

import json
import os
import re
import stat
import subprocess
import threading
import time
import unittest

from relaytest import (AUTHENTICATION_NOT_SUCCESSFUL, OP_LOCATE, RELAY, SOFTHSM_MODULE, T, RelayTestCase,
                       Token)

FAULTY_P11 = os.environ.get("FAULTY_P11") or os.path.join(os.path.dirname(os.path.abspath(RELAY)),
                                                          "test", "faulty_p11.so")
TOKEN_A, PIN_A = "pin-token-a", "Pin-A-4821-xq"
TOKEN_B, PIN_B = "pin-token-b", "Pin-B-7730-yr"
WRONG_PINS = ["Wrong-%d-5519-zz" % i for i in range(5)]
WRONG_CONFIGURED_PIN = "Bad-Configured-3068"
SECRETS = [PIN_A, PIN_B, WRONG_CONFIGURED_PIN] + WRONG_PINS
# pkcs11.pin_failure_window in these tests: long enough to outlast a few
# connections on a slow machine, short enough to wait for.
WINDOW = 6
# The Result Message of every refused credential.
REFUSED = "authentication failed"
# test/integration/relaytest.py's client certificate.
CLIENT_CN = "kmip-client"


class PinTestCase(RelayTestCase):
    """Token A with its PIN file, the faulty module over SoftHSM counting C_Login,
    and relays on it with a lock file (and state file) of the test's own."""

    def setUp(self):
        super().setUp()
        if not os.path.exists(FAULTY_P11):
            self.fail("%s is missing: make check builds it (make test/faulty_p11.so)" % FAULTY_P11)
        self.token = Token(os.path.join(self.tmp, "hsm"), label=TOKEN_A, pin=PIN_A)
        self.lock_file = os.path.join(self.tmp, "p11.lock")
        self.state_file = self.lock_file + ".state"
        self.fault_file = os.path.join(self.tmp, "fault")
        self.fault_log = os.path.join(self.tmp, "faults")
        self.env.update(SOFTHSM2_CONF=self.token.conf, FAULTY_P11_FAULT_FILE=self.fault_file,
                        FAULTY_P11_LOG=self.fault_log)
        self.set_fault("C_Login:count")

    def tearDown(self):
        texts = []
        for path in (self.log, self.state_file):
            if os.path.exists(path):
                with open(path, errors="replace") as f:
                    texts.append((path, f.read()))
        super().tearDown()
        for path, text in texts:
            for secret in SECRETS:
                for form in (secret, secret.encode().hex(), secret.encode().hex().upper()):
                    self.assertNotIn(form, text, "a PIN in %s" % path)

    def relay(self, clients=None, module=None, **pkcs11):
        """Serves a config on token A (pkcs11 keys given as None are left out),
        certificate-less clients allowed where something checks their
        credentials; returns the port."""
        values = {"module": module or FAULTY_P11, "token": "pkcs11:token=" + TOKEN_A,
                  "pin_file": self.token.pin_file, "lock_file": self.lock_file, "pin_failure_window": WINDOW}
        values.update(pkcs11)
        sections = {"pkcs11": {k: v for k, v in values.items() if v is not None},
                    "tls": {"require_client_certificate": clients is None and not pkcs11.get("login_with_credentials")}}
        if clients is not None:
            sections["clients"] = clients
        return self.start(self.config(**sections))

    def set_fault(self, fault):
        tmp = self.fault_file + ".tmp"
        with open(tmp, "w") as f:
            f.write(fault + "\n")
        os.replace(tmp, self.fault_file)

    def logins(self):
        """How many C_Login calls reached the token so far."""
        if not os.path.exists(self.fault_log):
            return 0
        with open(self.fault_log) as f:
            return sum(l.split()[1] == "C_Login" for l in f if l.strip())

    def attempt(self, port, username=None, password=None, cert=False):
        """One connection with one Locate: (its batch item without the payload,
        the seconds from connecting to the answer). Returns once the connection's
        summary is in the log, so that connections one after another log in order."""
        start = time.monotonic()
        with self.kmip(port, cert=cert, username=username, password=password) as c:
            local = c.sock.getsockname()[1]
            bi = c.call(OP_LOCATE, [])
            elapsed = time.monotonic() - start
        self.summary(local)
        bi.pop(T["ResponsePayload"], None)
        return bi, elapsed

    def outcome(self, port, username=None, password=None, cert=False):
        """(Result Reason, Result Message) of attempt; (None, None) for success."""
        bi, _ = self.attempt(port, username, password, cert)
        return bi.get(T["ResultReason"]), bi.get(T["ResultMessage"])

    def messages(self):
        """The log's messages, without their time stamp and process."""
        return [l.partition("]: ")[2] for l in self.log_lines()]

    def count(self, regex):
        return sum(bool(re.fullmatch(regex, m)) for m in self.messages())

    def softhsm_token(self, label, field):
        """A field of pkcs11-tool -L's entry for the token ("token flags", "serial num")."""
        out = subprocess.run(["pkcs11-tool", "--module", SOFTHSM_MODULE, "-L"], env=self.token.env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=True, timeout=30, text=True).stdout
        for block in re.split(r"^Slot ", out, flags=re.M)[1:]:
            if re.search(r"^  token label\s*: %s$" % re.escape(label), block, flags=re.M):
                return re.search(r"^  %s\s*: (.*)$" % re.escape(field), block, flags=re.M).group(1).strip()
        self.fail("no token %r in %s" % (label, out))

    def token_name(self, label):
        """How the log names a token: its label and serial number, regex-quoted."""
        return re.escape('token "%s" (serial %s)' % (label, self.softhsm_token(label, "serial num")))

    def state(self):
        with open(self.state_file) as f:
            return json.load(f)


class ClientPinBudgetTest(PinTestCase):
    CLIENTS = [{"name": "cascade", "username": "cascade", "password_is_pin": True}]

    def wrong_pins_at_once(self, ports, pins):
        """Sends each wrong PIN on a connection of its own, all at once, spread over
        the ports; asserts each is refused as any credential is."""
        results = [None] * len(pins)

        def one(i):
            results[i] = self.outcome(ports[i % len(ports)], "cascade", pins[i])
        threads = [threading.Thread(target=one, args=(i,)) for i in range(len(pins))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        self.assertEqual(results, [(AUTHENTICATION_NOT_SUCCESSFUL, REFUSED)] * len(pins))

    def budget_line(self):
        return (self.token_name(TOKEN_A) + r": 3 client PINs failed within %d s \(pkcs11.pin_failures is 3\): "
                r"no login tried for another [1-%d] s" % (WINDOW, WINDOW))

    def test_three_of_five_wrong_pins_reach_the_token(self):
        # Two listeners: separate relay processes, sharing only the lock file's
        # directory, as two socket units on one host would.
        ports = [self.relay(self.CLIENTS), self.relay(self.CLIENTS)]
        self.wrong_pins_at_once(ports, WRONG_PINS)
        done = time.time()
        self.assertEqual(self.logins(), 3)
        failures = [self.token_name(TOKEN_A) + r": client PIN failure %d of 3 within %d s" % (n, WINDOW)
                    for n in (1, 2, 3)]
        self.assertEqual([self.count(f) for f in failures], [1, 1, 1])
        self.assertEqual(self.count(self.budget_line()), 2)
        self.assertEqual(self.count(r"token: the token's budget of failed client PINs is spent"), 2)
        # The client learns nothing more; the log says why.
        self.assertEqual(self.count(r"authentication failed: user:cascade: login failed: wrong PIN "
                                    r"\(CKR_PIN_INCORRECT\) \(answered after 1 s\) peer=127\.0\.0\.1:\d+"), 3)
        self.assertEqual(self.count(r"authentication failed: user:cascade: the token's budget of failed client PINs "
                                    r"is spent \(answered after 1 s\) peer=127\.0\.0\.1:\d+"), 2)
        # The right PIN, inside the window: refused before C_Login.
        self.assertEqual(self.outcome(ports[0], "cascade", PIN_A), (AUTHENTICATION_NOT_SUCCESSFUL, REFUSED))
        self.assertLess(time.time(), done + WINDOW - 1, "the right PIN was tried inside the window")
        self.assertEqual(self.logins(), 3)
        self.assertEqual(self.count(self.budget_line()), 3)
        entry, = self.state()["tokens"]
        self.assertEqual((entry["label"], entry["serial"], len(entry["client_pin_failures"]), entry["rejected_pins"]),
                         (TOKEN_A, self.softhsm_token(TOKEN_A, "serial num"), 3, []))
        self.assertEqual(stat.S_IMODE(os.stat(self.state_file).st_mode), 0o600)
        # Once the window has passed, it logs in, which clears the failures.
        time.sleep(max(0, done + WINDOW + 1.5 - time.time()))
        self.assertEqual(self.outcome(ports[1], "cascade", PIN_A), (None, None))
        self.assertEqual(self.logins(), 4)
        self.assertEqual(self.state(), {"tokens": []})

    def test_softhsm_never_sees_the_right_pin_inside_the_window(self):
        # SoftHSM itself, no wrapper: a successful C_Login clears the token's
        # CKF_USER_PIN_COUNT_LOW, so the flag still being set after the right PIN
        # shows that the PIN never reached the token.
        ports = [self.relay(self.CLIENTS, module=SOFTHSM_MODULE), self.relay(self.CLIENTS, module=SOFTHSM_MODULE)]
        self.assertNotIn("user PIN count low", self.softhsm_token(TOKEN_A, "token flags"))
        self.wrong_pins_at_once(ports, WRONG_PINS[:3])
        done = time.time()
        self.assertIn("user PIN count low", self.softhsm_token(TOKEN_A, "token flags"))
        self.assertEqual(self.outcome(ports[0], "cascade", PIN_A), (AUTHENTICATION_NOT_SUCCESSFUL, REFUSED))
        self.assertLess(time.time(), done + WINDOW - 1, "the right PIN was tried inside the window")
        self.assertEqual(self.count(self.budget_line()), 1)
        self.assertIn("user PIN count low", self.softhsm_token(TOKEN_A, "token flags"))
        time.sleep(max(0, done + WINDOW + 1.5 - time.time()))
        self.assertEqual(self.outcome(ports[1], "cascade", PIN_A), (None, None))
        self.assertNotIn("user PIN count low", self.softhsm_token(TOKEN_A, "token flags"))

    def test_below_the_budget_the_right_pin_works(self):
        port = self.relay(self.CLIENTS)
        for pin in WRONG_PINS[:2]:
            self.assertEqual(self.outcome(port, "cascade", pin), (AUTHENTICATION_NOT_SUCCESSFUL, REFUSED))
        self.assertEqual(self.outcome(port, "cascade", PIN_A), (None, None))
        self.assertEqual(self.state(), {"tokens": []})
        # The success cleared the count: two more failures, and the right PIN
        # still works.
        for pin in WRONG_PINS[2:4]:
            self.assertEqual(self.outcome(port, "cascade", pin), (AUTHENTICATION_NOT_SUCCESSFUL, REFUSED))
        self.assertEqual(self.outcome(port, "cascade", PIN_A), (None, None))
        self.assertEqual(self.logins(), 6)


class ConfiguredPinTest(PinTestCase):
    def test_a_rejected_pin_is_tried_once_until_it_changes(self):
        pin_file = os.path.join(self.tmp, "configured-pin")
        with open(pin_file, "w") as f:
            f.write(WRONG_CONFIGURED_PIN + "\n")
        port = self.relay(pin_file=pin_file)
        name = self.token_name(TOKEN_A)
        self.assertEqual(self.outcome(port, cert=True), (AUTHENTICATION_NOT_SUCCESSFUL,
                                                            "login failed: wrong PIN (CKR_PIN_INCORRECT)"))
        self.assertEqual(self.logins(), 1)
        self.assertEqual(self.count(name + r": the token rejected the configured PIN; it is not tried again until "
                                           r"the PIN file or credential holds another"), 1)
        record, = self.state()["tokens"][0]["rejected_pins"]
        self.assertEqual(sorted(record), ["iterations", "pbkdf2_sha256", "salt", "time"])
        self.assertEqual(record["iterations"], 600000)
        self.assertRegex(record["salt"], r"\A[0-9a-f]{32}\Z")
        self.assertRegex(record["pbkdf2_sha256"], r"\A[0-9a-f]{64}\Z")
        self.assertEqual(stat.S_IMODE(os.stat(self.state_file).st_mode), 0o600)
        for _ in range(2):
            self.assertEqual(self.outcome(port, cert=True),
                             (AUTHENTICATION_NOT_SUCCESSFUL, "the configured PIN was rejected before and has not changed"))
        self.assertEqual(self.logins(), 1)
        self.assertEqual(self.count(name + r": the configured PIN was rejected before and has not changed: no login "
                                           r"tried until the PIN file or credential holds another"), 2)
        # The PIN file corrected: the next connection logs in, and the record goes.
        with open(pin_file, "w") as f:
            f.write(PIN_A + "\n")
        self.assertEqual(self.outcome(port, cert=True), (None, None))
        self.assertEqual(self.logins(), 2)
        self.assertEqual(self.state(), {"tokens": []})

    def test_without_a_lock_file_nothing_is_remembered(self):
        pin_file = os.path.join(self.tmp, "configured-pin")
        with open(pin_file, "w") as f:
            f.write(WRONG_CONFIGURED_PIN + "\n")
        port = self.relay(pin_file=pin_file, lock_file=None)
        for _ in range(2):
            self.assertEqual(self.outcome(port, cert=True), (AUTHENTICATION_NOT_SUCCESSFUL,
                                                            "login failed: wrong PIN (CKR_PIN_INCORRECT)"))
        self.assertEqual(self.logins(), 2)
        self.assertEqual(self.count(self.token_name(TOKEN_A) + r": the token rejected the configured PIN; without "
                                                               r"pkcs11.lock_file every connection tries it again"), 2)
        self.assertFalse(os.path.exists(self.state_file))


class TokenFlagsTest(PinTestCase):
    def test_a_pin_about_to_lock_is_not_tried(self):
        port = self.relay([{"name": "cascade", "username": "cascade", "password_is_pin": True},
                           {"name": "krill", "certificate_name": CLIENT_CN}])
        name = self.token_name(TOKEN_A)
        for flag, why, line in (
                ("CKF_USER_PIN_FINAL_TRY", "one more wrong PIN would lock the token's user PIN",
                 r": one more wrong PIN would lock the user PIN \(CKF_USER_PIN_FINAL_TRY\): no login tried; a login "
                 r"with the right PIN outside the relay resets the count"),
                ("CKF_USER_PIN_LOCKED", "the token's user PIN is locked",
                 r": the user PIN is locked \(CKF_USER_PIN_LOCKED\): no login tried; the token's security officer "
                 r"must unlock it")):
            with self.subTest(flag):
                self.set_fault("C_GetTokenInfo:flags=%s;C_Login:count" % flag)
                bi, elapsed = self.attempt(port, "cascade", PIN_A)
                self.assertEqual((bi.get(T["ResultReason"]), bi.get(T["ResultMessage"])),
                                 (AUTHENTICATION_NOT_SUCCESSFUL, REFUSED))
                self.assertGreaterEqual(elapsed, 0.8)
                self.assertEqual(self.outcome(port, cert=True), (AUTHENTICATION_NOT_SUCCESSFUL, why))
                self.assertEqual(self.logins(), 0)
                self.assertEqual(self.count(name + line), 2)
                self.assertEqual(self.count(r"token: " + re.escape(why)), 2)
        # The same PINs, on the same token without those flags, log in.
        self.set_fault("C_Login:count")
        self.assertEqual(self.outcome(port, "cascade", PIN_A), (None, None))
        self.assertEqual(self.outcome(port, cert=True), (None, None))
        self.assertEqual(self.logins(), 2)


class TokenSelectionTest(PinTestCase):
    NOT_ALLOWED = r"token: no token that the config allows has this username as label, slot ID or slot index"

    def setUp(self):
        super().setUp()
        self.token.add_token(TOKEN_B, PIN_B)
        slots = self.token.slots()
        self.ids = {label: slot_id for slot_id, label in slots}
        self.indexes = {label: i for i, (_, label) in enumerate(slots)}
        self.assertIn(TOKEN_B, self.ids)

    def names(self, label):
        """The Usernames that name a token: its label, slot ID and (unless some slot
        has that number as its ID) slot index."""
        out = [label, str(self.ids[label])]
        if self.indexes[label] not in self.ids.values():
            out.append(str(self.indexes[label]))
        return out

    def test_clients_tokens_allow_only_their_tokens(self):
        port = self.relay([{"name": "bridge", "username_is_token": True, "tokens": ["pkcs11:token=" + TOKEN_A]}])
        for username in self.names(TOKEN_B):
            with self.subTest(username):
                self.assertEqual(self.outcome(port, username, PIN_B), (AUTHENTICATION_NOT_SUCCESSFUL, REFUSED))
        self.assertEqual(self.logins(), 0, "token B was never logged into")
        self.assertEqual(self.count(self.NOT_ALLOWED), len(self.names(TOKEN_B)))
        for username in self.names(TOKEN_A):
            with self.subTest(username):
                self.assertEqual(self.outcome(port, username, PIN_A), (None, None))
        self.assertEqual(self.logins(), len(self.names(TOKEN_A)))

    def test_pkcs11_token_is_the_pattern(self):
        # Without a clients section, login_with_credentials picks among the tokens
        # pkcs11.token matches.
        only_a = self.relay(login_with_credentials=True)
        self.assertEqual(self.outcome(only_a, TOKEN_B, PIN_B), (AUTHENTICATION_NOT_SUCCESSFUL, REFUSED))
        self.assertEqual(self.outcome(only_a, TOKEN_A, PIN_A), (None, None))
        both = self.relay(login_with_credentials=True, token="pkcs11:model=SoftHSM%20v2")
        self.assertEqual(self.outcome(both, TOKEN_B, PIN_B), (None, None))
        # And for a username_is_token client without tokens.
        bridge = self.relay([{"name": "bridge", "username_is_token": True}])
        self.assertEqual(self.outcome(bridge, TOKEN_B, PIN_B), (AUTHENTICATION_NOT_SUCCESSFUL, REFUSED))
        self.assertEqual(self.outcome(bridge, TOKEN_A, PIN_A), (None, None))
        self.assertEqual(self.count(self.NOT_ALLOWED), 2)
        self.assertEqual(self.logins(), 3)


class SameAnswerTest(PinTestCase):
    def test_unknown_username_and_wrong_pin_answer_alike(self):
        self.token.add_token(TOKEN_B, PIN_B)
        cases = {
            "username_is_token": (
                self.relay([{"name": "bridge", "username_is_token": True, "tokens": ["pkcs11:token=" + TOKEN_A]}]),
                [("no-such-token", PIN_A), (TOKEN_A, WRONG_PINS[0]), (TOKEN_B, PIN_B), ("x" * 200, PIN_A)]),
            "password_is_pin": (
                self.relay([{"name": "cascade", "username": "cascade", "password_is_pin": True}]),
                [("nobody", PIN_A), ("cascade", WRONG_PINS[1])]),
            "login_with_credentials": (
                self.relay(login_with_credentials=True),
                [("no-such-token", PIN_A), (TOKEN_A, WRONG_PINS[2]), ("x" * 200, PIN_A)]),
        }
        for config, (port, credentials) in cases.items():
            with self.subTest(config):
                answers = [self.attempt(port, username, password) for username, password in credentials]
                items = [bi for bi, _ in answers]
                self.assertEqual(items[0][T["ResultReason"]], AUTHENTICATION_NOT_SUCCESSFUL)
                self.assertEqual(items[0][T["ResultMessage"]], REFUSED)
                self.assertEqual(items, [items[0]] * len(items), "the same batch item for each")
                # Each after the 1 s pause; the upper bound only catches a hang
                # (the machine may be loaded: no tight timing here).
                delays = [elapsed for _, elapsed in answers]
                for d in delays:
                    self.assertGreaterEqual(d, 0.95)
                    self.assertLess(d, 10)
                self.assertLess(max(delays) - min(delays), 0.9, delays)
        self.assertEqual(self.logins(), 3, "only the wrong PINs reached the token")


class ConfigRuleTest(RelayTestCase):
    def check_config(self, pkcs11, clients=None):
        """(exit code, stdout, stderr); the runtime checks find the token "a" that
        the configs name (or the first token)."""
        path = os.path.join(self.tmp, "check.json")
        if not hasattr(self, "token"):
            self.token = Token(os.path.join(self.tmp, "softhsm"), label="a")
        cfg = {"tls": {"certificate": self.pki.server, "key": self.pki.server_key, "client_ca": self.pki.ca,
                       "require_client_certificate": False},
               "pkcs11": dict({"module": SOFTHSM_MODULE, "pin_file": self.token.pin_file}, **pkcs11)}
        if clients is not None:
            cfg["clients"] = clients
        with open(path, "w") as f:
            json.dump(cfg, f)
        p = subprocess.run([RELAY, "--check-config", "--config", path], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, env=self.token.env, timeout=20, text=True)
        return p.returncode, p.stdout, p.stderr

    def test_rules(self):
        lock = {"lock_file": os.path.join(self.tmp, "p11.lock")}
        bridge = {"name": "bridge", "username_is_token": True}
        lock_needed = ("pkcs11.lock_file: required when a client's Password is the PIN (password_is_pin, "
                       "username_is_token, login_with_credentials): the budget of failed client PINs is kept "
                       "beside it, in <lock_file>.state\n")
        for label, pkcs11, clients, error in (
                ("username_is_token without tokens or pkcs11.token", lock, [bridge],
                 "clients[0]: username_is_token: needs tokens (the pkcs11: URIs its Username may pick among) or "
                 "pkcs11.token as their pattern; without either, a Username could pick any token in the module\n"),
                ("login_with_credentials without pkcs11.token", dict(lock, login_with_credentials=True), None,
                 "pkcs11.login_with_credentials: needs pkcs11.token, the pattern of the tokens a Username may "
                 "pick; without it, a Username could pick any token in the module\n"),
                ("a pattern that matches every token", dict(lock, token="pkcs11:"), [bridge],
                 "pkcs11.token: matches every token: name one (token=, serial=, model=, manufacturer=, "
                 "slot-id=...) (a Username picks among the tokens it matches)\n"),
                ("tokens: every token", lock, [dict(bridge, tokens=["pkcs11:token=a", "pkcs11:"])],
                 "clients[0].tokens: item 1: matches every token: name one (token=, serial=, model=, "
                 "manufacturer=, slot-id=...)\n"),
                ("tokens: a misspelt attribute", lock, [dict(bridge, tokens=["pkcs11:tokn=a"])],
                 "clients[0].tokens: item 0: has an attribute that does not describe a token or slot\n"),
                ("tokens: not a URI", lock, [dict(bridge, tokens=["token=a"])],
                 "clients[0].tokens: item 0: not a valid pkcs11: URI\n"),
                ("tokens: empty", dict(lock, token="pkcs11:token=a"), [dict(bridge, tokens=[])],
                 "clients[0].tokens: must be a non-empty list of pkcs11: URIs\n"),
                ("tokens without username_is_token", lock,
                 [{"name": "c", "certificate_name": "c", "tokens": ["pkcs11:token=a"]}],
                 "clients[0]: tokens: goes with username_is_token (else token names the token)\n"),
                ("password_is_pin without a lock file", {}, [{"name": "c", "username": "c", "password_is_pin": True}],
                 lock_needed),
                ("username_is_token without a lock file", {}, [dict(bridge, tokens=["pkcs11:token=a"])], lock_needed),
                ("login_with_credentials without a lock file", {"login_with_credentials": True,
                                                                "token": "pkcs11:token=a"}, None, lock_needed),
                ("pin_failures 0", dict(lock, pin_failures=0), [{"name": "c", "certificate_name": "c"}],
                 "pkcs11.pin_failures: must be between 1 and 1000\n"),
                ("pin_failure_window 0", dict(lock, pin_failure_window=0), [{"name": "c", "certificate_name": "c"}],
                 "pkcs11.pin_failure_window: must be between 1 and 604800\n")):
            with self.subTest(label):
                self.assertEqual(self.check_config(pkcs11, clients), (1, "", error))
        for pkcs11, clients in (
                (dict(lock, pin_failures=5, pin_failure_window=60), [dict(bridge, tokens=["pkcs11:token=a"])]),
                (dict(lock, token="pkcs11:token=a"), [bridge]),
                (dict(lock, token="pkcs11:model=SoftHSM%20v2", login_with_credentials=True), None),
                ({}, [{"name": "c", "certificate_name": "c"}])):
            code, out, err = self.check_config(pkcs11, clients)
            self.assertEqual((code, out.splitlines()[-1], err), (0, "OK", ""))


if __name__ == "__main__":
    unittest.main(verbosity=2)

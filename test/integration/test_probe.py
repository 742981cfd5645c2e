# SPDX-License-Identifier: BSD-3-Clause
"""kmip-relay --probe (issue 15): each backend loaded, logged into, asked for an
ephemeral key pair (nothing written to the token), a signature made and verified
with GnuTLS; one line per backend with each step's latency, or JSON; exit status
0 healthy, 1 degraded, 2 down; the result in the pool's health file.

- a healthy token: up, every step timed, the token unchanged;
- a missing token, a module that crashes or hangs or answers a device error,
  a wrong PIN: down at the step that failed, with its cause;
- a pool with one backend down: degraded, and the health file marks it down
  (its CKR_ name, or the signal), then up again once it is healthy;
- a wrong PIN is tried once: the PIN guard keeps the probe from trying it again;
- the health file is made only beside a lock file a relay made, with its owner."""

import json
import os
import pwd
import re
import subprocess
import unittest

from relaytest import FAULTY_P11, RELAY, SOFTHSM_MODULE, FaultTokenTestCase

STEPS = r"\(load [\d.]+ ms, login [\d.]+ ms, keygen [\d.]+ ms, sign [\d.]+ ms, verify [\d.]+ ms, close [\d.]+ ms\)"


def health(lock_file):
    """{name: (failures, down until, last error)} of the health file beside lock_file."""
    out = {}
    with open(lock_file + ".health") as f:
        for rec in re.findall(r"[^\n]{127}\n", f.read()):
            out[rec[0:32].strip()] = (int(rec[33:43]), int(rec[44:64]), rec[65:97].strip())
    return out


class ProbeTest(FaultTokenTestCase):
    def backend(self, name, module=SOFTHSM_MODULE, token=None, pin_file=None):
        return {"name": name, "module": module, "token": token or "pkcs11:token=" + self.token.label,
                "pin_file": pin_file or self.token.pin_file}

    def probe(self, pkcs11, *args, fault=None):
        """(exit status, stdout lines, stderr lines) of kmip-relay --probe."""
        path = self.config(pkcs11=dict({"lock_file": self.lock_file}, **pkcs11))
        env = dict(self.env, FAULTY_P11_FAULT=fault) if fault else self.env
        p = subprocess.run([RELAY, "--probe", "--config", path] + list(args), stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, env=env, timeout=60, text=True)
        return p.returncode, p.stdout.splitlines(), p.stderr.splitlines()

    def made_lock(self):
        """The lock file, as the first relay process makes it."""
        with open(self.lock_file, "w"):
            pass

    def test_healthy_token(self):
        before = self.token.objects()
        code, out, err = self.probe({"backends": [self.backend("hsm")]})
        self.assertEqual((code, len(out)), (0, 1), (out, err))
        self.assertRegex(out[0], r"\Ahsm: up %s\Z" % STEPS)
        # No relay has run: nothing to record in.
        self.assertEqual(err, ["note: not recorded in the health file: %s does not exist yet (no relay has run)" %
                               self.lock_file])
        self.assertFalse(os.path.exists(self.lock_file + ".health"))
        # Nothing was written to the token: the key pair lived in the session.
        self.assertEqual(self.token.objects(), before)
        code, out, err = self.probe({"backends": [self.backend("hsm")]}, "--json")
        (result,) = [json.loads(l) for l in out]
        self.assertEqual((code, err), (0, []))
        self.assertEqual({k: v for k, v in result.items() if k != "backends"},
                         {"status": "healthy", "up": 1, "down": 0, "health_recorded": False})
        (b,) = result["backends"]
        self.assertEqual((b["backend"], b["up"], b["failed_step"], b["error"]), ("hsm", True, None, None))
        self.assertEqual(sorted(b["latency_ms"]), sorted(["load", "login", "keygen", "sign", "verify", "close"]))
        self.assertTrue(all(v >= 0 for v in b["latency_ms"].values()))

    def test_down_backends_name_the_step_and_the_cause(self):
        self.made_lock()
        absent = self.backend("gone", token="pkcs11:token=absent")
        faulty = self.backend("faulty", FAULTY_P11)
        for backend, fault, line, recorded in (
                (absent, None, "gone: down at load: pkcs11.token: no token matches the URI pkcs11:token=absent",
                 "CKR_TOKEN_NOT_PRESENT"),
                (faulty, "C_Sign:segv", r"faulty: down at sign: the module crashed \(SIGSEGV\) "
                                        r"\(load [\d.]+ ms, login [\d.]+ ms, keygen [\d.]+ ms\)", "SIGSEGV"),
                (faulty, "C_Sign:rv=CKR_DEVICE_ERROR", r"faulty: down at sign: C_Sign \(CKM_ECDSA\): CKR_DEVICE_ERROR "
                                                       r"\(load [\d.]+ ms, login [\d.]+ ms, keygen [\d.]+ ms\)",
                 "CKR_DEVICE_ERROR"),
                (faulty, "C_GenerateKeyPair:rv=CKR_MECHANISM_INVALID",
                 r"faulty: down at keygen: C_GenerateKeyPair \(P-256, CKA_TOKEN false\): CKR_MECHANISM_INVALID "
                 r"\(load [\d.]+ ms, login [\d.]+ ms\)", None),
                (faulty, "dlopen:abort", "faulty: down at load: the module crashed (SIGABRT)", "SIGABRT")):
            with self.subTest(fault=fault or backend["token"]):
                if os.path.exists(self.lock_file + ".health"):
                    os.unlink(self.lock_file + ".health")
                code, out, err = self.probe({"backends": [backend]}, fault=fault)
                self.assertEqual((code, err), (2, []))
                self.assertRegex(out[0], r"\A%s\Z" % (line if "\\" in line else re.escape(line)))
                # The device's failures mark it down; a token that lacks the
                # mechanism is no device failure.
                if recorded:
                    failures, until, error = health(self.lock_file)[backend["name"]]
                    self.assertEqual((failures, error), (1, recorded))
                    self.assertGreater(until, 0)
                else:
                    self.assertEqual(health(self.lock_file), {})

    def test_hang_ends_at_call_timeout(self):
        code, out, err = self.probe({"backends": [self.backend("slow", FAULTY_P11)], "call_timeout": 1},
                                    fault="C_GenerateKeyPair:hang")
        self.assertEqual(code, 2)
        self.assertRegex(out[0], r"\Aslow: down at keygen: a call did not return within 1 s \(pkcs11.call_timeout\) "
                                 r"\(load [\d.]+ ms, login [\d.]+ ms\)\Z")

    def test_pool_degraded_then_healthy(self):
        self.made_lock()
        pool = {"backends": [self.backend("a", FAULTY_P11), self.backend("b")], "pool": {"retry_after": 300}}
        code, out, err = self.probe(pool, "--json", fault="C_Login:rv=CKR_DEVICE_ERROR")
        (result,) = [json.loads(l) for l in out]
        self.assertEqual((code, err, result["status"], result["up"], result["down"], result["health_recorded"]),
                         (1, [], "degraded", 1, 1, True))
        a, b = result["backends"]
        self.assertEqual((a["backend"], a["up"], a["failed_step"], a["error"]),
                         ("a", False, "login", "login failed: the token refused it (CKR_DEVICE_ERROR)"))
        self.assertEqual((b["backend"], b["up"]), ("b", True))
        self.assertEqual(health(self.lock_file)["a"][::2], (1, "CKR_DEVICE_ERROR"))
        # A probe that finds it healthy clears its record, as a relay's success does.
        code, out, err = self.probe(pool)
        self.assertEqual(code, 0)
        self.assertEqual(len(out), 2)
        self.assertRegex(out[0], r"\Aa: up %s\Z" % STEPS)
        self.assertRegex(out[1], r"\Ab: up %s\Z" % STEPS)
        self.assertEqual(health(self.lock_file), {"a": (0, 0, "")})
        # Both down: down.
        code, out, err = self.probe({"backends": [self.backend("a", FAULTY_P11), self.backend("b", FAULTY_P11)]},
                                    fault="C_Login:rv=CKR_DEVICE_ERROR")
        self.assertEqual(code, 2)

    def test_wrong_pin_is_tried_once(self):
        self.made_lock()
        wrong = os.path.join(self.tmp, "wrong-pin")
        with open(wrong, "w") as f:
            f.write("9999\n")
        os.chmod(wrong, 0o600)
        pkcs11 = {"backends": [self.backend("hsm", FAULTY_P11, pin_file=wrong)]}
        code, out, err = self.probe(pkcs11, fault="C_Login:count")
        self.assertEqual(code, 2)
        self.assertRegex(out[0], r"\Ahsm: down at login: login failed: wrong PIN \(CKR_PIN_INCORRECT\) "
                                 r"\(load [\d.]+ ms\)\Z")
        code, out, err = self.probe(pkcs11, fault="C_Login:count")
        self.assertRegex(out[0], r"\Ahsm: down at login: the configured PIN was rejected before and has not changed "
                                 r"\(load [\d.]+ ms\)\Z")
        with open(self.fault_log) as f:
            self.assertEqual([l.split()[1:] for l in f], [["C_Login", "count"]])
        # A wrong PIN is the config's fault, not the device's: not marked down.
        self.assertEqual(health(self.lock_file), {})

    def test_health_file_gets_the_lock_files_owner(self):
        self.made_lock()
        if os.geteuid() == 0:
            nobody = pwd.getpwnam("nobody")
            os.chown(self.lock_file, nobody.pw_uid, nobody.pw_gid)
            owner = (nobody.pw_uid, nobody.pw_gid)
        else:
            owner = (os.geteuid(), os.getegid())
        code, out, err = self.probe({"module": SOFTHSM_MODULE, "token": "pkcs11:token=" + self.token.label,
                                     "pin_file": self.token.pin_file})
        self.assertEqual((code, err), (0, []))
        self.assertRegex(out[0], r"\Adefault: up %s\Z" % STEPS)
        st = os.stat(self.lock_file + ".health")
        self.assertEqual(((st.st_uid, st.st_gid), st.st_mode & 0o7777), (owner, 0o600))


if __name__ == "__main__":
    unittest.main(verbosity=2)

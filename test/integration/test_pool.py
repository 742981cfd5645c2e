# SPDX-License-Identifier: BSD-3-Clause
"""Token pools (issue 12): failover, balance and migration between backends, with
real faults. Two backends on one SoftHSM token - "a" through test/faulty_p11.c,
"b" straight to SoftHSM - hold the same objects, as the replicas of an HSM
cluster do; faults on "a" must leave the clients served by "b", and the pool's
health file (beside pkcs11.lock_file) must say so for every relay process. Two
tokens of their own show migration: old keys stay where they are, new keys go to
pkcs11.pool.new_keys, Locate sees both."""

import os
import re
import subprocess
import threading
import time
import unittest

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from opencryptoki import OpenCryptokiToken
from relaytest import (ALG_EC, ALG_RSA, CURVE_P256, FAILED, FAULTY_P11, OP_ACTIVATE, OP_CREATE_KEY_PAIR, OP_GET,
                       OP_LOCATE, OP_SIGN, SOFTHSM_MODULE, STRUCTURE, T, FaultTokenTestCase,
                       crypto_parameters, failure, find, get_payload, item, key_material, pair_payload, uid_item, V2,
                       alive, RELAY)
from test_crypto import ALG_ECDSA, HASH_SHA256, rsa_params, sign_request

PARAMS = crypto_parameters(None, HASH_SHA256, ALG_ECDSA)
RSA_PARAMS = rsa_params("pkcs1", HASH_SHA256)
RETRY_AFTER = 3
GENERAL_FAILURE = 0x100


def health(lock_file):
    """The health file's records: {name: (failures, down_until, last_error)}."""
    out = {}
    path = lock_file + ".health"
    if not os.path.exists(path):
        return out
    with open(path) as f:
        data = f.read()
    for rec in re.findall(r"[^\n]{127}\n", data):
        name = rec[0:32].strip()
        out[name] = (int(rec[33:43]), int(rec[44:64]), rec[65:97].strip())
    return out


class PoolTestCase(FaultTokenTestCase):
    def setUp(self):
        super().setUp()
        self.fault_file = os.path.join(self.tmp, "fault")
        self.env.update(FAULTY_P11_FAULT_FILE=self.fault_file, FAULTY_P11_HANG_SECONDS="30")

    def set_fault(self, fault):
        tmp = self.fault_file + ".tmp"
        with open(tmp, "w") as f:
            f.write(fault + "\n")
        os.replace(tmp, self.fault_file)

    def backend(self, name, module, token=None, pin_file=None, weight=1):
        token = token or self.token
        return {"name": name, "module": module, "token": "pkcs11:token=" + token.label,
                "pin_file": pin_file or token.pin_file, "weight": weight}

    def pool_config(self, backends, mode="failover", new_keys=None, **pkcs11):
        pool = {"mode": mode, "retry_after": RETRY_AFTER}
        if new_keys:
            pool["new_keys"] = new_keys
        values = dict({"backends": backends, "pool": pool, "lock_file": self.lock_file}, **pkcs11)
        return self.config(pkcs11=values)

    def pool(self, backends, mode="failover", new_keys=None, **pkcs11):
        return self.start(self.pool_config(backends, mode, new_keys, **pkcs11))

    def check_config(self, path, *args):
        """kmip-relay --check-config: (exit code, stdout, stderr lines)."""
        p = subprocess.run(list(self.relay_wrapper) + [RELAY, "--check-config", "--config", path] + list(args),
                           env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60, text=True)
        return p.returncode, p.stdout, p.stderr.splitlines()

    def replicas(self, mode="failover", **pkcs11):
        """A pool of "a" (faulty_p11 on the token) and "b" (SoftHSM itself)."""
        return self.pool([self.backend("a", FAULTY_P11), self.backend("b", SOFTHSM_MODULE)], mode, **pkcs11)

    def backends_of(self, local_port, operation="Sign"):
        """The backends that the audit records of one connection name for an
        operation (its records and its summary line share the process's pid)."""
        key = "]: connection peer=127.0.0.1:%d " % local_port
        lines = self.log_lines(wait_for=key)
        (summary,) = [l for l in lines if key in l]
        pid = re.search(r"kmip-relay\[(\d+)\]", summary).group(1)
        records = self.audit_records([l for l in lines if "kmip-relay[%s]: {" % pid in l])
        self.assertTrue(records, "audit records of port %d" % local_port)
        return [r.get("backend") for r in records if r["operation"] == operation]

    def make_pair(self, port, rsa=False):
        with self.client(port, V2) as c:
            payload = c.ok(OP_CREATE_KEY_PAIR, pair_payload(V2, ALG_RSA, 2048, None) if rsa
                           else pair_payload(V2, ALG_EC, curve=CURVE_P256), V2)
            priv = find(payload, T["PrivateKeyUniqueIdentifier"])[0]
            pub = find(payload, T["PublicKeyUniqueIdentifier"])[0]
            for uid in (priv, pub):
                c.ok(OP_ACTIVATE, [uid_item(uid)], V2)
            _, material = key_material(c.ok(OP_GET, get_payload(pub), V2))
        return priv, serialization.load_der_public_key(material)

    def sign(self, port, priv, public, data):
        """Signs on a connection of its own and verifies the signature; returns the
        connection's local port."""
        rsa_key = isinstance(public, rsa.RSAPublicKey)
        with self.client(port, V2) as c:
            local = c.sock.getsockname()[1]
            sig = find(c.ok(OP_SIGN, sign_request(priv, RSA_PARAMS if rsa_key else PARAMS, data), V2),
                       T["SignatureData"])[0]
        if rsa_key:
            public.verify(sig, data, padding.PKCS1v15(), hashes.SHA256())
        else:
            public.verify(sig, data, ec.ECDSA(hashes.SHA256()))
        return local

    def sign_on_new_connection(self, port, priv, public, data=b"pool"):
        """Signs as sign() does; returns the backends the audit records name for
        the Sign."""
        return self.backends_of(self.sign(port, priv, public, data))

    def signs_by_time(self):
        """[(seconds since the epoch, backend)] of every Sign audit record."""
        out = []
        for l in self.log_lines():
            stamp, sep, message = l.partition(" kmip-relay[")
            if not sep or "]: {" not in message:
                continue
            r = self.audit_records([l])[0]
            if r["operation"] == "Sign" and r["result"] == "Success":
                when = time.mktime(time.strptime(stamp[:19], "%Y-%m-%dT%H:%M:%S")) - time.timezone
                out.append((when + int(stamp[20:23]) / 1000, r["backend"]))
        return out

    def fired(self):
        if not os.path.exists(self.fault_log):
            return []
        with open(self.fault_log) as f:
            return [l.split()[1:] for l in f if l.strip()]


class FailoverTest(PoolTestCase):
    def test_device_error_moves_to_the_replica(self):
        port = self.replicas()
        priv, public = self.make_pair(port)
        self.assertEqual(self.sign_on_new_connection(port, priv, public), ["a"])
        # a fails: the Sign is repeated on b, and every process keeps away from a.
        self.set_fault("C_Sign:rv=CKR_DEVICE_ERROR")
        self.assertEqual(self.sign_on_new_connection(port, priv, public, b"failed over"), ["b"])
        failures, down_until, error = health(self.lock_file)["a"]
        self.assertEqual((failures, error), (1, "CKR_DEVICE_ERROR"))
        self.assertGreater(down_until, time.time())
        self.assertTrue(any("pool: backend a failed (CKR_DEVICE_ERROR)" in l for l in self.log_lines()))
        self.assertTrue(any("pool: failover from backend a (CKR_DEVICE_ERROR) to backend b" in l
                            for l in self.log_lines()))
        fired = len(self.fired())
        self.assertEqual(self.sign_on_new_connection(port, priv, public, b"straight to b"), ["b"])
        self.assertEqual(len(self.fired()), fired, "the next connection did not try a")
        # After retry_after, one connection tries a; it serves again, and its
        # record is cleared.
        self.set_fault("")
        time.sleep(max(0, down_until + 0.5 - time.time()))
        self.assertEqual(self.sign_on_new_connection(port, priv, public, b"back on a"), ["a"])
        self.assertEqual(health(self.lock_file)["a"], (0, 0, ""))

    def test_hang_ends_the_connection_and_the_next_uses_b(self):
        port = self.replicas(call_timeout=2)
        priv, public = self.make_pair(port)
        self.set_fault("C_Sign:hang")
        start = time.monotonic()
        with self.client(port, V2) as c:
            with self.assertRaises((EOFError, ConnectionError)):
                c.call(OP_SIGN, sign_request(priv, PARAMS, b"hangs"), V2)
        self.assertLess(time.monotonic() - start, 2 + 2 + 1)
        self.assertTrue(any("pkcs11: C_Sign did not return within 2 s" in l
                            for l in self.log_lines(wait_for="did not return")))
        self.assertEqual(health(self.lock_file)["a"][::2], (1, "timeout"))
        self.assertEqual(self.sign_on_new_connection(port, priv, public, b"next"), ["b"])

    def test_crash_harms_one_connection_and_the_next_uses_b(self):
        port = self.replicas()
        priv, public = self.make_pair(port)
        self.set_fault("C_Sign:segv")
        with self.client(port, V2) as c:
            with self.assertRaises((EOFError, ConnectionError)):
                c.call(OP_SIGN, sign_request(priv, PARAMS, b"crashes"), V2)
        deadline = time.time() + 10
        while "a" not in health(self.lock_file) and time.time() < deadline:
            time.sleep(0.05)
        self.assertEqual(health(self.lock_file)["a"][::2], (1, "SIGSEGV"))
        self.assertEqual(self.sign_on_new_connection(port, priv, public, b"next"), ["b"])

    def test_changes_are_not_retried(self):
        port = self.replicas()
        with self.client(port, V2) as c:
            payload = c.ok(OP_CREATE_KEY_PAIR, pair_payload(V2, ALG_EC, curve=CURVE_P256), V2)
            priv = find(payload, T["PrivateKeyUniqueIdentifier"])[0]
            self.set_fault("C_SetAttributeValue:rv=CKR_DEVICE_ERROR")
            bi = c.call(OP_ACTIVATE, [uid_item(priv)], V2)
            self.assertEqual((failure(bi), bi[T["ResultMessage"]]),
                             ((FAILED, GENERAL_FAILURE), "CKR_DEVICE_ERROR on backend a"))
        self.assertEqual([f for f in self.fired() if f[0] == "C_SetAttributeValue"],
                         [["C_SetAttributeValue", "rv=CKR_DEVICE_ERROR"]], "tried once, on a only")

    def test_new_keys_never_land_elsewhere(self):
        port = self.replicas(new_keys="a")
        self.set_fault("C_Login:rv=CKR_DEVICE_ERROR")
        with self.client(port, V2) as c:
            bi = c.call(OP_CREATE_KEY_PAIR, pair_payload(V2, ALG_EC, curve=CURVE_P256), V2)
            self.assertEqual((failure(bi), bi[T["ResultMessage"]]),
                             ((FAILED, GENERAL_FAILURE),
                              "pkcs11.pool.new_keys: backend a is down; new objects go nowhere else"))
            # What needs no new object is served by b.
            self.assertEqual(find(c.ok(OP_LOCATE, [item(T["Attributes"], STRUCTURE, [])], V2),
                                  T["UniqueIdentifier"]), [])
        self.assertNotIn("Private Key Object", self.token.objects())
        self.assertEqual(health(self.lock_file)["a"][::2], (1, "CKR_DEVICE_ERROR"))

    def test_a_vanished_token_is_down_not_a_config_error(self):
        port = self.pool([dict(self.backend("a", SOFTHSM_MODULE), token="pkcs11:token=unplugged"),
                          self.backend("b", SOFTHSM_MODULE)])
        priv, public = self.make_pair(port)
        self.assertEqual(self.sign_on_new_connection(port, priv, public), ["b"])
        self.assertEqual(health(self.lock_file)["a"][::2], (1, "CKR_TOKEN_NOT_PRESENT"))

    def test_locate_counts_a_replica_once(self):
        port = self.replicas()
        priv, _ = self.make_pair(port)
        with self.client(port, V2) as c:
            got = c.ok(OP_LOCATE, [item(T["Attributes"], STRUCTURE, [])], V2)
        self.assertEqual(sorted(find(got, T["UniqueIdentifier"])), sorted([priv, priv[:-5] + "_pub"]))
        self.assertEqual(find(got, T["LocatedItems"]), [2])


class ReplicaCheckTest(PoolTestCase):
    """--check-config compares the backends of a pool only with --login (issue 15:
    no login without it); what a backend lacks is a warning, which --strict turns
    into exit status 3."""

    def test_check_config_lists_what_a_backend_lacks(self):
        port = self.replicas()
        priv, _ = self.make_pair(port)
        pub = priv[:-5] + "_pub"
        replicas = self.pool_config([self.backend("a", FAULTY_P11), self.backend("b", SOFTHSM_MODULE)])
        # Replicas of one token hold the same objects: no warning; each backend
        # logged into once.
        self.set_fault("C_Login:count")
        code, out, err = self.check_config(replicas, "--login")
        self.assertEqual((code, out.splitlines()[-1], err), (0, "OK", []))
        self.assertEqual(out.count("logged in\n"), 2)
        self.assertEqual(self.fired(), [["C_Login", "count"]])
        # Without --login, nothing is compared and no login is tried.
        code, out, err = self.check_config(replicas)
        self.assertEqual((code, out.splitlines()[-1], err), (0, "OK", []))
        self.assertNotIn("logged in", out)
        self.assertEqual(self.fired(), [["C_Login", "count"]])
        # An empty token beside it lacks both halves of the pair: warnings, not
        # errors; --strict makes them fail the check.
        self.token.add_token("empty", "5678")
        empty_pin = os.path.join(self.tmp, "empty-pin")
        with open(empty_pin, "w") as f:
            f.write("5678\n")
        os.chmod(empty_pin, 0o600)
        check_lock = os.path.join(self.tmp, "check.lock")
        lacking = self.pool_config([
            self.backend("a", SOFTHSM_MODULE),
            {"name": "c", "module": SOFTHSM_MODULE, "token": "pkcs11:token=empty", "pin_file": empty_pin}],
            lock_file=check_lock)
        warnings = ["warning: pkcs11.backends[1] (c): lacks %s, which backend a holds" % priv,
                    "warning: pkcs11.backends[1] (c): lacks %s, which backend a holds" % pub]
        code, out, err = self.check_config(lacking, "--login")
        self.assertEqual((code, out.splitlines()[-1], sorted(err)), (0, "OK", sorted(warnings)))
        code, out, err = self.check_config(lacking, "--login", "--strict")
        self.assertEqual((code, sorted(err)), (3, sorted(warnings)))
        self.assertNotIn("OK\n", out)
        code, out, err = self.check_config(lacking, "--strict")
        self.assertEqual((code, out.splitlines()[-1], err), (0, "OK", []))
        # A backend whose token is gone is an error, named, not compared.
        code, out, err = self.check_config(self.pool_config([
            self.backend("a", SOFTHSM_MODULE), dict(self.backend("d", SOFTHSM_MODULE), token="pkcs11:token=unplugged")],
            lock_file=check_lock), "--login")
        self.assertEqual((code, err), (2, ["error: pkcs11.backends[1] (d): pkcs11.token: no token matches the URI "
                                           "pkcs11:token=unplugged"]))
        self.assertEqual([f for f in os.listdir(self.tmp) if f.startswith("check.lock")], [],
                         "the check made a lock, state or health file")


class BalanceTest(PoolTestCase):
    def test_both_backends_serve(self):
        port = self.replicas(mode="balance")
        priv, public = self.make_pair(port)
        served, errors = [], []

        def client():
            try:
                for i in range(8):
                    served.extend(self.sign_on_new_connection(port, priv, public, b"balanced %d" % i))
            except Exception as e:  # reported below
                errors.append(e)

        threads = [threading.Thread(target=client) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        self.assertEqual(errors, [])
        self.assertEqual(len(served), 32)
        counts = {name: served.count(name) for name in ("a", "b")}
        self.assertTrue(counts["a"] > 0 and counts["b"] > 0, counts)
        print("balance: a served %(a)d and b %(b)d of 32 connections" % counts)


class RestartTest(PoolTestCase):
    """Backend a answers CKR_DEVICE_REMOVED for 20 s, as an HSM that restarts, while
    8 clients sign for 60 s: nothing fails but what was in flight on a as it
    failed, a takes traffic again once it is back, and nothing is restarted."""

    DOWN = ";".join("%s:rv=CKR_DEVICE_REMOVED" % fn for fn in (
        "C_Login", "C_OpenSession", "C_FindObjectsInit", "C_GetAttributeValue", "C_SignInit", "C_Sign"))

    def test_hsm_restart(self):
        port = self.replicas()
        priv, public = self.make_pair(port)
        stop = time.monotonic() + 60
        signed, failures, lock = [0], [], threading.Lock()
        relay_parent = self.procs[-1].pid

        def signer(n):
            i = 0
            while time.monotonic() < stop:
                try:
                    self.sign(port, priv, public, b"signer %d %d" % (n, i))
                    with lock:
                        signed[0] += 1
                except Exception as e:
                    with lock:
                        failures.append((time.time(), repr(e)))
                i += 1

        threads = [threading.Thread(target=signer, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        time.sleep(20)
        self.set_fault(self.DOWN)
        down_at = time.time()
        time.sleep(20)
        self.set_fault("")
        up_at = time.time()
        for t in threads:
            t.join(90)
        print("restart: %d signatures, %d failed (in flight on a as it failed)" % (signed[0], len(failures)))
        for when, e in failures:  # only at the moment a went down
            self.assertLess(abs(when - down_at), 3, e)
        self.assertLessEqual(len(failures), 8)
        # Audit records are written just after their response: wait for the last.
        deadline = time.time() + 10
        while len(self.signs_by_time()) < signed[0] and time.time() < deadline:
            time.sleep(0.2)
        signs = self.signs_by_time()
        self.assertEqual(len(signs), signed[0], "an audit record for every signature")
        self.assertTrue([b for when, b in signs if down_at + 1 < when < up_at and b == "b"], "b served")
        self.assertEqual([b for when, b in signs if down_at + 1 < when < up_at and b == "a"], [], "a kept away")
        self.assertTrue([b for when, b in signs if when > up_at + RETRY_AFTER + 1 and b == "a"],
                        "a takes traffic again")
        self.assertTrue(alive(relay_parent), "the listener was never restarted")


class MigrationTest(PoolTestCase):
    def test_old_keys_stay_new_keys_go_to_new(self):
        # The new HSM: another token in the same SoftHSM (one module serves both).
        self.token.add_token("new-hsm", "5678")
        new_pin = os.path.join(self.tmp, "new-pin")
        with open(new_pin, "w") as f:
            f.write("5678\n")
        os.chmod(new_pin, 0o600)
        # The old HSM alone, as before the migration.
        old_port = self.serve()
        old_priv, old_public = self.make_pair(old_port)
        # Both, new keys on the new one.
        port = self.pool([self.backend("old", SOFTHSM_MODULE),
                          {"name": "new", "module": SOFTHSM_MODULE, "token": "pkcs11:token=new-hsm",
                           "pin_file": new_pin}], new_keys="new")
        self.assertEqual(self.sign_on_new_connection(port, old_priv, old_public, b"old key"), ["old"])
        new_priv, new_public = self.make_pair(port)
        self.assertEqual(self.sign_on_new_connection(port, new_priv, new_public, b"new key"), ["new"])
        self.assertIn(new_priv[:64].lower(), self.private_ids("new-hsm", "5678"))
        self.assertNotIn(new_priv[:64].lower(), self.private_ids(self.token.label, self.token.pin))
        with self.client(port, V2) as c:
            got = find(c.ok(OP_LOCATE, [item(T["Attributes"], STRUCTURE, [])], V2), T["UniqueIdentifier"])
        self.assertEqual(sorted(got), sorted([old_priv, old_priv[:-5] + "_pub", new_priv, new_priv[:-5] + "_pub"]))

    def test_softhsm_to_opencryptoki(self):
        # The old HSM is SoftHSM, the new one openCryptoki's software token (RSA
        # only); the relays run in openCryptoki's namespace, where SoftHSM's token
        # directory is reachable too.
        ock = OpenCryptokiToken(os.path.join(self.tmp, "ock"), label="new-hsm", pin="5678")
        self.tokens.append(ock)
        self.use_token(ock)
        old_port = self.serve()
        old_priv, old_public = self.make_pair(old_port, rsa=True)
        port = self.pool([self.backend("old", SOFTHSM_MODULE), self.backend("new", ock.module, token=ock)],
                         new_keys="new")
        self.assertEqual(self.sign_on_new_connection(port, old_priv, old_public, b"old key"), ["old"])
        new_priv, new_public = self.make_pair(port, rsa=True)
        self.assertEqual(self.sign_on_new_connection(port, new_priv, new_public, b"new key"), ["new"])
        ids = lambda out: [l.split(":", 1)[1].strip().lower() for l in out.splitlines()
                           if l.strip().startswith("ID:")]
        self.assertEqual(ids(ock.objects("privkey")), [new_priv[:64].lower()])
        self.assertEqual(self.private_ids(self.token.label, self.token.pin), [old_priv[:64].lower()])
        with self.client(port, V2) as c:
            got = find(c.ok(OP_LOCATE, [item(T["Attributes"], STRUCTURE, [])], V2), T["UniqueIdentifier"])
        self.assertEqual(sorted(got), sorted([old_priv, old_priv[:-5] + "_pub", new_priv, new_priv[:-5] + "_pub"]))

    def private_ids(self, label, pin):
        out = subprocess.run(["pkcs11-tool", "--module", SOFTHSM_MODULE, "--token-label", label, "--login",
                              "--pin", pin, "--list-objects", "--type", "privkey"], env=self.token.env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=True, timeout=30, text=True).stdout
        return [l.split(":", 1)[1].strip().lower() for l in out.splitlines() if l.strip().startswith("ID:")]


if __name__ == "__main__":
    unittest.main(verbosity=2)

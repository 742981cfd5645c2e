# SPDX-License-Identifier: BSD-3-Clause
"""kmip-relay --check-config checks what it can before a client connects
(issue 15), without side effects, each problem one line naming the key, the path
and the cause; exit status 0 (OK), 1 (invalid config), 2 (a runtime check
failed), 3 (warnings only, with --strict).

- TlsTest: a certificate that does not match its key, one that has expired or is
  not yet valid (errors), one that expires within 30 days (a warning), a bad
  priority string; a key in the token, matched with --login.
- FileTest: a PIN file that others may read, a ticket key that others may read,
  the lock file's and log.file's directories missing or not writable.
- TokenTest: a token label that does not exist, a file that is not a PKCS#11
  module, a module that crashes or hangs (in a child process: the check goes on
  and names it), the token's PIN flags, and the module's description and the
  token's slot reported.
- LoginTest: no login without --login (C_Login counted); with it, a wrong PIN is
  an error with its CKR_ name, once, and the PIN guard keeps it from being tried
  again; a check as root makes no lock, state or health file.
- AsUserTest: --as USER runs the check as that user, so that a PIN file or a lock
  directory the service cannot reach shows."""

import glob
import json
import os
import pwd
import re
import shutil
import subprocess
import time
import unittest

from relaytest import (FAULTY_P11, RELAY, SOFTHSM_MODULE, FaultTokenTestCase, run)


class CheckTestCase(FaultTokenTestCase):
    def pkcs11(self, **values):
        out = {"module": SOFTHSM_MODULE, "token": "pkcs11:token=" + self.token.label,
               "pin_file": self.token.pin_file, "lock_file": self.lock_file}
        out.update(values)
        return {k: v for k, v in out.items() if v is not None}

    def write_config(self, tls=None, pkcs11=None, **sections):
        cfg = {"tls": dict({"certificate": self.pki.server, "key": self.pki.server_key,
                            "client_ca": self.pki.ca}, **(tls or {})),
               "pkcs11": pkcs11 if pkcs11 is not None else self.pkcs11()}
        cfg.update(sections)
        path = os.path.join(self.tmp, "check-%d.json" % len(os.listdir(self.tmp)))
        with open(path, "w") as f:
            json.dump(cfg, f)
        return path

    def check(self, path, *args, env=None):
        """(exit status, stdout lines, stderr lines) of kmip-relay --check-config."""
        p = subprocess.run([RELAY, "--check-config", "--config", path] + list(args), stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, env=env or self.env, timeout=60, text=True)
        return p.returncode, p.stdout.splitlines(), p.stderr.splitlines()

    def fails(self, path, *args, **kw):
        """The errors of a check that must fail with exit status 2."""
        code, out, err = self.check(path, *args, **kw)
        self.assertEqual(code, 2, (out, err))
        self.assertNotIn("OK", out)
        return err

    def passes(self, path, *args, **kw):
        """The stdout lines of a check that must pass with no problem."""
        code, out, err = self.check(path, *args, **kw)
        self.assertEqual((code, out[-1:], err), (0, ["OK"], []))
        return out

    def certificate(self, name, *template):
        """A server certificate for the test server key, signed by the test CA,
        with these template lines (dates)."""
        tmpl = os.path.join(self.tmp, name + ".tmpl")
        with open(tmpl, "w") as f:
            f.write("\n".join(['cn = "localhost"', 'dns_name = "localhost"', "tls_www_server", "signing_key"] +
                              list(template)) + "\n")
        pem = os.path.join(self.tmp, name + ".pem")
        run(["certtool", "--generate-certificate", "--load-privkey", self.pki.server_key, "--load-ca-certificate",
             self.pki.ca, "--load-ca-privkey", self.pki.ca_key, "--template", tmpl, "--outfile", pem])
        return pem

    def c_logins(self):
        if not os.path.exists(self.fault_log):
            return 0
        with open(self.fault_log) as f:
            return sum(1 for l in f if l.split()[1:] == ["C_Login", "count"])


class TlsTest(CheckTestCase):
    def test_a_good_config_passes_and_says_what_it_found(self):
        out = self.passes(self.write_config())
        slot = [s for s, label in self.token.slots() if label == self.token.label][0]
        self.assertEqual(len(out), 3, out)
        self.assertRegex(out[0], r'\Amodule %s: "Implementation of PKCS11" by "SoftHSM", version 2\.\d+ '
                                 r'\(Cryptoki 2\.40\)\Z' % re.escape(SOFTHSM_MODULE))
        self.assertRegex(out[1], r'\Atoken pkcs11:token=kmip-relay: "kmip-relay" \(model "SoftHSM v2", serial '
                                 r'[0-9a-f]+\) in slot %d\Z' % slot)

    def test_certificate_that_does_not_match_the_key(self):
        other = os.path.join(self.tmp, "other.key")
        run(["certtool", "--generate-privkey", "--key-type", "ecdsa", "--outfile", other])
        self.assertEqual(self.fails(self.write_config(tls={"key": other})), [
            "error: tls.key: %s: does not match tls.certificate %s: The certificate and the given key do not "
            "match." % (other, self.pki.server)])

    def test_expired_and_not_yet_valid_certificates(self):
        expired = self.certificate("expired", 'activation_date = "2020-01-01 00:00:00"',
                                   'expiration_date = "2021-01-01 00:00:00"')
        future = self.certificate("future", 'activation_date = "2099-01-01 00:00:00"',
                                  'expiration_date = "2100-01-01 00:00:00"')
        self.assertEqual(self.fails(self.write_config(tls={"certificate": expired})), [
            'error: tls.certificate: %s: "CN=localhost" has expired: on 2021-01-01 00:00:00 UTC' % expired])
        self.assertEqual(self.fails(self.write_config(tls={"certificate": future})), [
            'error: tls.certificate: %s: "CN=localhost" is not yet valid: from 2099-01-01 00:00:00 UTC' % future])

    def test_certificate_expiring_soon_is_a_warning(self):
        # Ten and a half days: the days left stay 10 however long the test takes.
        until = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(time.time() + 10.5 * 86400))
        soon = self.certificate("soon", 'expiration_date = "%s"' % until)
        path = self.write_config(tls={"certificate": soon})
        code, out, err = self.check(path)
        self.assertEqual((code, out[-1], len(err)), (0, "OK", 1), err)
        self.assertEqual(err, ['warning: tls.certificate: %s: "CN=localhost" expires on %s UTC, in 10 days' %
                               (soon, until)])
        code, out, err2 = self.check(path, "--strict")
        self.assertEqual((code, err2), (3, err))
        self.assertNotIn("OK", out)

    def test_bad_priority_string(self):
        self.assertEqual(self.fails(self.write_config(tls={"priority": "NORMAL:+BOGUS"})), [
            'error: tls.priority: "NORMAL:+BOGUS": The request is invalid. (at "+BOGUS")'])

    def test_key_in_the_token_is_matched_with_login(self):
        cert = self.server_cert_for(self.token, "EC:prime256v1", "7e01")
        other = self.server_cert_for(self.token, "EC:prime256v1", "7e02")
        key = "pkcs11:object=tls-7e01;type=private"
        out = self.passes(self.write_config(tls={"certificate": cert, "key": key}), "--login")
        self.assertIn("tls.key: %s: found in the token" % key, out)
        self.assertEqual(self.fails(self.write_config(tls={"certificate": other, "key": key}), "--login"), [
            "error: tls.key: %s: does not match tls.certificate %s: The certificate and the given key do not "
            "match." % (key, other)])
        missing = "pkcs11:object=absent;type=private"
        self.assertEqual(self.fails(self.write_config(tls={"certificate": cert, "key": missing}), "--login"), [
            "error: tls.key: no private key in the token matches the URI: %s" % missing])


class FileTest(CheckTestCase):
    def test_pin_file_readable_by_others(self):
        os.chmod(self.token.pin_file, 0o644)
        self.assertEqual(self.fails(self.write_config()), [
            "error: pkcs11.pin_file: %s: readable or writable by others (mode 0644): chmod o-rwx it (sshd refuses "
            "a private key that others can read)" % self.token.pin_file])
        os.chmod(self.token.pin_file, 0o640)
        self.passes(self.write_config())

    def test_ticket_key_mode(self):
        ticket = os.path.join(self.tmp, "ticket.key")
        with open(ticket, "wb") as f:
            f.write(os.urandom(64))
        os.chmod(ticket, 0o644)
        path = self.write_config(tls={"ticket_key": ticket})
        self.assertEqual(self.fails(path), [
            "error: tls.ticket_key: %s: readable or writable by others (mode 0644): it decrypts every resumed "
            "session; chmod 0600 it (0640 for the service's group)" % ticket])
        os.chmod(ticket, 0o660)
        self.assertEqual(self.fails(path), [
            "error: tls.ticket_key: %s: writable by others (mode 0660): it decrypts every resumed session; chmod "
            "0600 it (0640 for the service's group)" % ticket])
        os.chmod(ticket, 0o600)
        self.passes(path)
        # Its size stays a schema error: exit status 1.
        with open(ticket, "wb") as f:
            f.write(os.urandom(32))
        self.assertEqual(self.check(path), (1, [], ["tls.ticket_key: must hold exactly 64 bytes"]))

    def test_missing_lock_and_log_directories(self):
        gone = os.path.join(self.tmp, "gone")
        path = self.write_config(pkcs11=self.pkcs11(lock_file=os.path.join(gone, "p11.lock")),
                                 log={"file": os.path.join(gone, "relay.log")})
        self.assertEqual(sorted(self.fails(path)), [
            "error: log.file: %s/relay.log: its directory %s: No such file or directory" % (gone, gone),
            "error: pkcs11.lock_file: %s/p11.lock: its directory %s: No such file or directory" % (gone, gone)])

    def test_unwritable_log_file(self):
        if os.geteuid() == 0:  # root writes anyway; AsUserTest checks as another user
            log = os.path.join(self.tmp, "log-dir")
            os.mkdir(log)
            path = self.write_config(log={"file": os.path.join(log, "relay.log")})
            self.passes(path)
            self.assertFalse(os.path.exists(os.path.join(log, "relay.log")), "the check made the log file")
            return
        log = os.path.join(self.tmp, "read-only.log")
        with open(log, "w"):
            pass
        os.chmod(log, 0o444)
        self.assertEqual(self.fails(self.write_config(log={"file": log})), [
            "error: log.file: %s: cannot be opened: Permission denied" % log])


class TokenTest(CheckTestCase):
    def test_token_that_does_not_exist(self):
        self.assertEqual(self.fails(self.write_config(pkcs11=self.pkcs11(token="pkcs11:token=absent"))), [
            "error: pkcs11.token: no token matches the URI pkcs11:token=absent"])

    def test_file_that_is_not_a_module(self):
        not_module = os.path.join(self.tmp, "not-a-module.so")
        shutil.copy(self.pki.ca, not_module)
        err = self.fails(self.write_config(pkcs11=self.pkcs11(module=not_module)))
        self.assertEqual(err, ["error: pkcs11.module: cannot load the module: %s: invalid ELF header" % not_module])
        # A library that is not a PKCS#11 module: dlopen works, C_GetFunctionList is missing.
        (libz,) = glob.glob("/usr/lib/*-linux-gnu/libz.so.1")
        self.assertEqual(self.fails(self.write_config(pkcs11=self.pkcs11(module=libz))), [
            "error: pkcs11.module: %s: not a PKCS#11 module (it has neither C_GetInterface nor "
            "C_GetFunctionList)" % libz])

    def test_crashing_module_is_reported_and_the_check_goes_on(self):
        """A pool: backend a's module crashes while loading, b's while describing
        the module; c is fine. Each is reported; the check itself survives."""
        backends = [{"name": "a", "module": FAULTY_P11, "token": "pkcs11:token=kmip-relay",
                     "pin_file": self.token.pin_file},
                    {"name": "b", "module": SOFTHSM_MODULE, "token": "pkcs11:token=kmip-relay",
                     "pin_file": self.token.pin_file},
                    {"name": "c", "module": SOFTHSM_MODULE, "token": "pkcs11:token=kmip-relay",
                     "pin_file": self.token.pin_file}]
        path = self.write_config(pkcs11={"backends": backends, "lock_file": self.lock_file})
        for fault, step in (("dlopen:segv", "loading the module"), ("C_GetInfo:segv", "reading the token's "
                                                                                      "information"),
                            ("C_GetInfo:abort", "reading the token's information")):
            with self.subTest(fault=fault):
                env = dict(self.env, FAULTY_P11_FAULT=fault)
                code, out, err = self.check(path, env=env)
                signal = "SIGABRT" if fault.endswith("abort") else "SIGSEGV"
                self.assertEqual((code, err), (2, ["error: pkcs11.backends[0] (a): pkcs11.module: %s: the module "
                                                   "crashed (%s) while %s" % (FAULTY_P11, signal, step)]))
                self.assertEqual(len([l for l in out if l.startswith(("pkcs11.backends[1] (b): token ",
                                                                      "pkcs11.backends[2] (c): token "))]), 2, out)

    def test_hanging_module_ends_at_call_timeout(self):
        path = self.write_config(pkcs11=self.pkcs11(module=FAULTY_P11, call_timeout=1))
        env = dict(self.env, FAULTY_P11_FAULT="C_GetInfo:hang", FAULTY_P11_HANG_SECONDS="20")
        code, out, err = self.check(path, env=env)
        self.assertEqual((code, err), (2, ["error: pkcs11.module: %s: a call did not return within 1 s "
                                           "(pkcs11.call_timeout) while reading the token's information" %
                                           FAULTY_P11]))

    def test_pin_flags(self):
        path = self.write_config(pkcs11=self.pkcs11(module=FAULTY_P11))
        for flag, level, text in (
                ("CKF_USER_PIN_LOCKED", "error", "the user PIN is locked (CKF_USER_PIN_LOCKED): its security officer "
                                                 "must unlock it"),
                ("CKF_USER_PIN_FINAL_TRY", "error", "one more wrong PIN locks the user PIN (CKF_USER_PIN_FINAL_TRY): "
                                                    "log in with the right PIN outside the relay to reset the count"),
                ("CKF_USER_PIN_COUNT_LOW", "warning", "a wrong user PIN was given since the last successful login "
                                                      "(CKF_USER_PIN_COUNT_LOW)")):
            with self.subTest(flag=flag):
                env = dict(self.env, FAULTY_P11_FAULT="C_GetTokenInfo:flags=%s;C_Login:count" % flag)
                code, out, err = self.check(path, "--login", env=env)
                self.assertEqual(err, ['%s: pkcs11.token: token "kmip-relay": %s' % (level, text)])
                self.assertEqual(code, 2 if level == "error" else 0)
                # A PIN in danger is not tried.
                self.assertEqual(self.c_logins(), 0 if level == "error" else 1)
                if level == "warning":
                    self.assertEqual(self.check(path, "--strict", env=env)[0], 3)
                os.unlink(self.fault_log) if os.path.exists(self.fault_log) else None


class LoginTest(CheckTestCase):
    def test_wrong_pin_only_with_login(self):
        wrong = os.path.join(self.tmp, "wrong-pin")
        with open(wrong, "w") as f:
            f.write("9999\n")
        os.chmod(wrong, 0o600)
        env = dict(self.env, FAULTY_P11_FAULT="C_Login:count")
        path = self.write_config(pkcs11=self.pkcs11(module=FAULTY_P11, pin_file=wrong))
        # Without --login the PIN is never tried.
        out = self.passes(path, env=env)
        self.assertEqual(self.c_logins(), 0)
        self.assertNotIn("logged in", out)
        # With it: one login, its CKR_ name.
        self.assertEqual(self.fails(path, "--login", env=env), [
            "error: pkcs11.pin_file: %s: login failed: wrong PIN (CKR_PIN_INCORRECT)" % wrong])
        self.assertEqual(self.c_logins(), 1)
        # The check made nothing beside the lock file (no relay has made it), so
        # the next check tries again (and the token's counter says so).
        self.assertEqual(sorted(f for f in os.listdir(self.tmp) if f.startswith("p11.lock")), [])
        err = self.fails(path, "--login", env=env)
        self.assertIn('warning: pkcs11.token: token "kmip-relay": a wrong user PIN was given since the last '
                      "successful login (CKF_USER_PIN_COUNT_LOW)", err)
        self.assertEqual(self.c_logins(), 2)
        # Once a relay made the lock file, the rejected PIN is recorded and never
        # tried again, by the check or a relay.
        with open(self.lock_file, "w"):
            pass
        count_low = ('warning: pkcs11.token: token "kmip-relay": a wrong user PIN was given since the last '
                     "successful login (CKF_USER_PIN_COUNT_LOW)")
        self.assertEqual(self.fails(path, "--login", env=env), [
            count_low, "error: pkcs11.pin_file: %s: login failed: wrong PIN (CKR_PIN_INCORRECT)" % wrong])
        self.assertEqual(self.c_logins(), 3)
        self.assertEqual(self.fails(path, "--login", env=env), [
            count_low, "error: pkcs11.pin_file: %s: the configured PIN was rejected before and has not changed" % wrong])
        self.assertEqual(self.c_logins(), 3)
        # The right PIN logs in.
        code, out, err = self.check(self.write_config(pkcs11=self.pkcs11(module=FAULTY_P11)), "--login", env=env)
        self.assertEqual((code, out[-2:], err), (0, ["logged in", "OK"], [count_low]))
        self.assertEqual(self.c_logins(), 4)

    def test_no_side_effects(self):
        before = self.token.objects()
        self.passes(self.write_config(), "--login")
        self.assertEqual(self.token.objects(), before)
        self.assertEqual([f for f in os.listdir(self.tmp) if f.startswith("p11.lock")], [],
                         "the check made a lock, state or health file")


class AsUserTest(CheckTestCase):
    """The service's user here is "nobody" (group nogroup)."""

    def shared(self):
        """A directory nobody can reach, with the PKI and a config in it."""
        top = os.path.join(self.tmp, "shared")
        os.mkdir(top)
        for d in (self.tmp, top):
            os.chmod(d, 0o755)
        for f in ("server.pem", "server.key", "ca.pem"):
            shutil.copy(os.path.join(self.pki.dir, f), top)
            os.chmod(os.path.join(top, f), 0o644)
        return top

    def test_as_nobody(self):
        if os.geteuid() != 0:
            path = self.write_config()
            self.assertEqual(self.check(path, "--as", "nobody"), (1, [], ["--as: only root can run the check as "
                                                                          "nobody"]))
            return
        nobody = pwd.getpwnam("nobody")
        top = self.shared()
        lock_dir = os.path.join(top, "run")
        os.mkdir(lock_dir, 0o700)  # root's, as the service's /run/kmip-relay must not be
        pin = os.path.join(top, "pin")
        shutil.copy(self.token.pin_file, pin)
        os.chmod(pin, 0o600)
        # The token is the service's, as Install step 1 makes it.
        for root, dirs, files in os.walk(self.token.dir):
            for name in dirs + files + [""]:
                os.chown(os.path.join(root, name), nobody.pw_uid, nobody.pw_gid)
        cfg = self.write_config(tls={"certificate": os.path.join(top, "server.pem"),
                                     "key": os.path.join(top, "server.key"), "client_ca": os.path.join(top, "ca.pem")},
                                pkcs11=self.pkcs11(pin_file=pin, lock_file=os.path.join(lock_dir, "p11.lock")))
        path = os.path.join(top, "config.json")
        shutil.copy(cfg, path)
        os.chmod(path, 0o644)
        # As root everything is readable and writable.
        self.passes(path)
        # As the service: the PIN file is root's (the schema check reads it: 1)...
        self.assertEqual(self.check(path, "--as", "nobody"), (1, [], [
            "pkcs11.pin_file: cannot read %s: Permission denied" % pin]))
        # ...given to the service's group, it reads; the lock directory is root's.
        os.chown(pin, 0, nobody.pw_gid)
        os.chmod(pin, 0o640)
        self.assertEqual(self.fails(path, "--as", "nobody"), [
            "error: pkcs11.lock_file: %s/p11.lock: its directory %s is not writable: Permission denied" %
            (lock_dir, lock_dir)])
        os.chown(lock_dir, nobody.pw_uid, nobody.pw_gid)
        out = self.passes(path, "--as", "nobody", "--login")
        self.assertIn("logged in", out)
        self.assertEqual(self.check(path, "--as", "no-such-user"), (1, [], ["--as: no user no-such-user"]))


if __name__ == "__main__":
    unittest.main(verbosity=2)

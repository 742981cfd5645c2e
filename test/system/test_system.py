#!/usr/bin/python3
# SPDX-License-Identifier: BSD-3-Clause
"""The Debian package, installed and run under a real systemd (issue 16).

It builds the .deb once (make dist, then dpkg-buildpackage -us -uc -b in the
unpacked tarball) and checks it with lintian. Then it boots systemd 252 as PID 1
in new PID, mount, network, UTS, IPC and cgroup namespaces, with every path that
systemd, dpkg or a token would write made private first (test/system/
boot-namespace checks each mount and refuses to boot without it), installs the
package there with dpkg -i, makes SoftHSM tokens as the service user, puts the
PIN in /etc/kmip-relay/pin and starts kmip-relay.socket. Then:

- the package: lintian reports no error (and does report one for a package
  without its copyright file); it holds the man pages, the units, tmpfiles.d
  and sysusers.d entries, the 4 example configs and the xinetd sample;
- the install: dpkg -i made the user kmip-relay (in group softhsm) and
  /run/kmip-relay, and left the socket disabled and stopped;
- clients through the socket unit: PyKMIP's key pair lifecycle with an RSA
  signature verified with python-cryptography, and a Cascade-style client (no
  certificate, the token's PIN as its Password) with an ECDSA signature
  verified; the journal finds the Sign records by KMIP_CLIENT and
  KMIP_OPERATION;
- the sandbox: a PKCS#11 module (test/sandbox_probe.so) loaded by the service
  runs as kmip-relay with group softhsm, cannot write /etc or /usr or open an
  AF_INET socket, and can write only the token directory, /run/kmip-relay,
  /var/log/kmip-relay and its private /tmp; the same module run outside the
  sandbox writes /etc (the probe is not blind);
- systemd-analyze security, online, rates kmip-relay@x.service at 1.0 or less;
- every example config installed under /usr/share/doc/kmip-relay/examples
  starts under the shipped unit, unchanged, and serves a request that logs in;
  the quickstart one's log.file is written in /var/log/kmip-relay;
- failures say what to do: without /etc/kmip-relay/pin an instance with a
  pin_credential config fails with the relay's message naming the file, while
  the Cascade config (no configured PIN) still serves; without the unit's
  SetCredential= fallback, systemd fails the instance before the relay runs
  (status 243/CREDENTIALS: why the fallback is there); a log.file outside
  /var/log/kmip-relay fails with a message saying where it must be; a token
  made by root is not found by the service, with the log line README quotes;
  systemd-run with the unit's user and credential runs --check-config as the
  service would;
- xinetd: the installed sample, enabled, serves a connection, with the lock
  file in the /run/kmip-relay that systemd-tmpfiles made from the package's
  tmpfiles.d entry;
- afterwards, the host is unchanged: a sentinel file in /tmp is intact, no
  package or user kmip-relay, no unit or /etc/kmip-relay, the same /dev
  entries, and the cgroup made for the namespace is gone.

Everything is bounded in time (the namespace itself by timeout(1)). If the
kernel refuses the namespaces, the tests that need them are skipped, saying so.

Run by scripts/test as: BUILDDIR=build/strict /usr/bin/python3 test/system/test_system.py
(BUILDDIR: a configured build tree, where make check has made
test/sandbox_probe.so; DEB=path tests that .deb instead of building one)."""

import ctypes
import json
import os
import re
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import unittest
import warnings

SRCDIR = os.environ.get("SRCDIR", os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))
sys.path.insert(0, os.path.join(SRCDIR, "test", "integration"))

from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec, padding  # noqa: E402

from relaytest import (ALG_ECDSA, ALG_RSA, AUTHENTICATION_NOT_SUCCESSFUL, ENUM, OP_ACTIVATE,  # noqa: E402
                       OP_CREATE_KEY_PAIR, OP_DESTROY, OP_GET, OP_LOCATE, OP_QUERY, OP_SIGN, PKI, T,
                       KmipClient, find, item, key_material, key_pair_payload, public_key_of,
                       sign_payload, spki_sha256, uid_item)

BUILDDIR = os.path.abspath(os.environ.get("BUILDDIR", "."))
BOOT_LIMIT = 900          # seconds the namespace may live, whatever happens
PORT = 5696
EXAMPLES = ("quickstart", "cascade", "krill", "two-tenants")
TOKENS = ("kmip-relay", "cascade", "krill", "shared")   # the labels the examples name
DOCDIR = "/usr/share/doc/kmip-relay"
CLONE_NEWNET = 0x40000000
MAX_EXPOSURE = 1.0
# README's Troubleshooting quotes these: SoftHSM's line (through syslog), the relay's.
ROOT_TOKEN_ERRORS = (re.compile(r"^File\.cpp\(\d+\): Could not open the file \(Permission denied\): "
                                r"/var/lib/softhsm/tokens//[0-9a-f-]+/generation$"),
                     re.compile(r"^authentication failed: sha256:[0-9a-f]{64}: pkcs11\.token: no token matches "
                                r"the URI pkcs11:token=made-by-root \(answered after 1 s\) peer=\S+$"))


def run(cmd, timeout=120, check=True, **kw):
    return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True,
                          timeout=timeout, check=check, **kw)


class NamespaceRefused(Exception):
    pass


class System:
    """The .deb, and the namespace it runs in: one for the whole run."""

    def __init__(self):
        self.tmp = tempfile.mkdtemp(prefix="kmip-relay-system-")
        self.deb = self.lintian = None
        self.pid = None           # systemd, PID 1 of the namespace, as the host sees it
        self.proc = None
        self.cgroup = None
        self.refused = None       # why the kernel refused the namespaces
        self.host_netns = None
        self.after_install = {}
        self.host_before = self.host_state()
        self.sentinel = os.path.join("/tmp", ".kmip-relay-sentinel-%s" % secrets.token_hex(8))
        self.sentinel_text = secrets.token_hex(32)
        with open(self.sentinel, "w") as f:
            f.write(self.sentinel_text)
        self.pin, self.so_pin = secrets.token_hex(8), secrets.token_hex(8)

    # -- the host, before and after

    @staticmethod
    def host_state():
        def names(path):
            with open(path) as f:
                return sorted(l.split(":")[0] for l in f if l.strip())
        installed = run(["dpkg-query", "-W", "-f", "${Package} ${Status}\n"]).stdout.splitlines()
        return {
            "dev": sorted(os.listdir("/dev")),
            "packages": sorted(l.split()[0] for l in installed if l.endswith(" installed")),
            "users": names("/etc/passwd"),
            "groups": names("/etc/group"),
            "paths": sorted(p for p in ("/etc/kmip-relay", "/lib/systemd/system/kmip-relay.socket",
                                        "/lib/systemd/system/kmip-relay@.service", "/run/kmip-relay",
                                        "/var/log/kmip-relay", "/usr/lib/tmpfiles.d/kmip-relay.conf",
                                        "/usr/lib/sysusers.d/kmip-relay.conf", "/usr/bin/kmip-relay",
                                        "/etc/xinetd.d/kmip-relay", "/dev/log")
                            if os.path.lexists(p)),
        }

    # -- the package

    def build(self):
        if self.deb:
            return
        if os.environ.get("DEB"):
            self.deb = os.path.abspath(os.environ["DEB"])
        else:
            run(["make", "-C", BUILDDIR, "dist"], timeout=600)
            (tarball,) = [f for f in os.listdir(BUILDDIR) if re.match(r"kmip-relay-[0-9.]+\.tar\.gz$", f)]
            src = os.path.join(self.tmp, "src")
            os.mkdir(src)
            run(["tar", "-C", src, "-xzf", os.path.join(BUILDDIR, tarball)])
            (tree,) = os.listdir(src)
            r = run(["dpkg-buildpackage", "-us", "-uc", "-b"], cwd=os.path.join(src, tree), timeout=900,
                    check=False)
            if r.returncode != 0:
                raise AssertionError("dpkg-buildpackage failed:\n" + r.stdout[-5000:])
            (deb,) = [f for f in os.listdir(src) if re.match(r"kmip-relay_.*_[a-z0-9]+\.deb$", f)]
            self.deb = os.path.join(src, deb)
        self.lintian = run(["lintian", "--fail-on", "error", "--display-info", self.deb], timeout=300,
                           check=False)

    # -- the namespace

    def boot(self):
        if self.pid or self.refused:
            if self.refused:
                raise NamespaceRefused(self.refused)
            return
        self.build()
        own = open("/proc/self/cgroup").read()
        m = re.search(r"^0::(/.*)$", own, re.M)
        unified = "/sys/fs/cgroup/unified" if os.path.isdir("/sys/fs/cgroup/unified") else "/sys/fs/cgroup"
        self.cgroup = os.path.join(unified + (m.group(1) if m else "/").rstrip("/"),
                                   "kmip-relay-system-%d" % os.getpid())
        os.mkdir(self.cgroup)
        scratch = os.path.join(self.tmp, "ns")
        os.mkdir(scratch)
        host_ns = " ".join(os.readlink("/proc/self/ns/" + n) for n in ("mnt", "net", "uts", "ipc", "cgroup"))
        self.boot_log = os.path.join(self.tmp, "boot.log")
        procs = os.path.join(self.cgroup, "cgroup.procs")

        def into_cgroup():
            with open(procs, "w") as f:
                f.write("0")

        with open(self.boot_log, "w") as log:
            self.proc = subprocess.Popen(
                ["timeout", "-k", "5", str(BOOT_LIMIT), "unshare", "--fork", "--kill-child", "--pid",
                 "--mount", "--mount-proc", "--net", "--uts", "--ipc", "--cgroup",
                 os.path.join(SRCDIR, "test", "system", "boot-namespace"), scratch, host_ns],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                preexec_fn=into_cgroup)
        deadline = time.time() + 60
        while time.time() < deadline and self.proc.poll() is None:
            pid = self.systemd_pid()
            if pid and os.path.exists("/proc/%d/root/run/systemd/private" % pid):
                self.pid = pid
                break
            time.sleep(0.1)
        log_text = open(self.boot_log).read()
        if not self.pid:
            self.stop()
            if re.search(r"unshare: (unshare|mount) failed: (Operation not permitted|Invalid argument)",
                         log_text):
                self.refused = "the kernel refused the namespaces: " + log_text.strip()
                raise NamespaceRefused(self.refused)
            raise AssertionError("systemd did not boot in the namespace:\n" + log_text)
        state = self.ns("systemctl", "is-system-running", "--wait", check=False, timeout=90).stdout.strip()
        if state != "running":
            raise AssertionError("the namespace's systemd is %s:\n%s" % (
                state, self.ns("systemctl", "--failed", "--no-pager", check=False).stdout))
        # This process's sockets (the clients) are in the namespace's network from
        # now on; stop() puts it back.
        self.host_netns = os.open("/proc/self/ns/net", os.O_RDONLY)
        self.setns(os.open("/proc/%d/ns/net" % self.pid, os.O_RDONLY))
        self.install()

    def systemd_pid(self):
        """The namespace's PID 1: the child of unshare, the child of timeout."""
        kids = lambda pid: [int(p) for p in open("/proc/%d/task/%d/children" % (pid, pid)).read().split()]
        try:
            (unshare,) = kids(self.proc.pid)
            (init,) = kids(unshare)
            with open("/proc/%d/comm" % init) as f:
                return init if f.read().strip() == "systemd" else None
        except (ValueError, OSError):
            return None

    @staticmethod
    def setns(fd):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        if libc.setns(fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "setns")
        os.close(fd)

    def stop(self):
        """Ends everything in the namespace (SIGKILL to its PID 1) and removes the
        cgroup made for it."""
        if self.host_netns is not None:
            self.setns(self.host_netns)
            self.host_netns = None
        if self.proc:
            if self.pid:
                try:
                    os.kill(self.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=30)
        if self.cgroup and os.path.isdir(self.cgroup):
            deadline = time.time() + 30
            while time.time() < deadline:
                for d, _, _ in sorted(os.walk(self.cgroup), key=lambda w: -len(w[0])):
                    try:
                        os.rmdir(d)
                    except OSError:
                        pass
                if not os.path.exists(self.cgroup):
                    break
                time.sleep(0.2)
        self.pid = None

    # -- inside

    def ns(self, *cmd, check=True, timeout=120, input=None):
        r = subprocess.run(["nsenter", "-t", str(self.pid), "-m", "-p", "-n", "-u", "-i", "--"] + list(cmd),
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True,
                           timeout=timeout, input=input)
        if check and r.returncode != 0:
            raise AssertionError("%s: exit %d\n%s" % (" ".join(cmd), r.returncode, r.stdout))
        return r

    def root(self, path):
        """A path inside, seen from here (through the namespace's root)."""
        return "/proc/%d/root%s" % (self.pid, path)

    def put(self, path, data, mode=0o644, owner="root", group="root"):
        full = self.root(path)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        with open(full, "wb" if isinstance(data, bytes) else "w") as f:
            f.write(data)
        self.ns("chown", "%s:%s" % (owner, group), path)
        os.chmod(full, mode)

    def read(self, path):
        with open(self.root(path)) as f:
            return f.read()

    def journal_cursor(self):
        entries = self.journal("-n", "1")
        return entries[-1]["__CURSOR"] if entries else None

    def journal(self, *args):
        out = self.ns("journalctl", "--no-pager", "-o", "json", *args, check=False).stdout
        return [json.loads(l) for l in out.splitlines() if l.startswith("{")]

    def journal_since(self, cursor, want=None, timeout=10):
        """The journal entries after cursor; waits until one whose MESSAGE contains
        want is there (journald takes them in its own time). (journalctl 252
        finds nothing with --after-cursor and field matches together.)"""
        deadline = time.time() + timeout
        while True:
            entries = self.journal(*(["--after-cursor=" + cursor] if cursor else []))
            if want is None or any(want in str(e.get("MESSAGE", "")) for e in entries) or time.time() > deadline:
                return entries
            time.sleep(0.2)

    def journal_match(self, *matches, want, timeout=10):
        """The entries that journalctl FIELD=VALUE... finds, once one of them has a
        field holding want."""
        deadline = time.time() + timeout
        while True:
            entries = self.journal(*matches)
            if any(want in e.values() for e in entries) or time.time() > deadline:
                return entries
            time.sleep(0.2)

    def install(self):
        deb = "/tmp/" + os.path.basename(self.deb)
        shutil.copy(self.deb, self.root(deb))
        self.after_install["host passwd before"] = "kmip-relay" in self.ns("getent", "passwd", check=False).stdout
        self.after_install["dpkg"] = self.ns("dpkg", "-i", deb, timeout=300).stdout
        self.after_install["passwd"] = self.ns("getent", "passwd", "kmip-relay", check=False).stdout.strip()
        self.after_install["groups"] = self.ns("id", "-nG", "kmip-relay", check=False).stdout.split()
        st = os.stat(self.root("/run/kmip-relay"))
        self.after_install["run dir"] = (st.st_uid, st.st_gid, oct(st.st_mode & 0o7777))
        self.after_install["enabled"] = self.ns("systemctl", "is-enabled", "kmip-relay.socket",
                                                check=False).stdout.strip()
        self.after_install["active"] = self.ns("systemctl", "is-active", "kmip-relay.socket",
                                               check=False).stdout.strip()
        self.uid = int(self.after_install["passwd"].split(":")[2]) if self.after_install["passwd"] else None
        self.gid = int(self.after_install["passwd"].split(":")[3]) if self.after_install["passwd"] else None
        self.softhsm_gid = int(self.ns("getent", "group", "softhsm").stdout.split(":")[2])
        self.provision()

    def provision(self):
        """Tokens made by the service user, the PKI, the PIN, and the socket."""
        for label in TOKENS:
            self.ns("runuser", "-u", "kmip-relay", "--", "softhsm2-util", "--init-token", "--free",
                    "--label", label, "--pin", self.pin, "--so-pin", self.so_pin)
        self.pki = PKI(os.path.join(self.tmp, "pki"))
        self.clients = {cn: self.pki.issue(cn.split(".")[0], cn) for cn in
                        ("client.example.net", "krill.example.net", "rpki.example.net", "audit.example.net")}
        for path, src, mode, group in (("server.pem", self.pki.server, 0o644, "root"),
                                       ("server.key", self.pki.server_key, 0o640, "kmip-relay"),
                                       ("clients-ca.pem", self.pki.ca, 0o644, "root")):
            with open(src) as f:
                self.put("/etc/kmip-relay/" + path, f.read(), mode, group=group)
        self.put("/etc/kmip-relay/ticket.key", os.urandom(64), 0o640, group="kmip-relay")
        self.put_pin()
        self.use_example("quickstart")
        self.ns("systemctl", "start", "kmip-relay.socket")

    def put_pin(self):
        self.put("/etc/kmip-relay/pin", self.pin + "\n", 0o600)

    def example(self, name):
        """An installed example: NAME.json, or the file named."""
        with open(self.root("%s/examples/%s" % (DOCDIR, name if "." in name else name + ".json"))) as f:
            return f.read()

    def use_example(self, name, change=None):
        """Makes the installed example the config, as it is or changed by change(dict)."""
        text = self.example(name)
        if change:
            cfg = json.loads(text)
            change(cfg)
            text = json.dumps(cfg, indent=2)
        self.put("/etc/kmip-relay/kmip-relay.json", text)

    # -- clients (this process is in the namespace's network)

    def tls(self, cn=None):
        ctx = ssl.create_default_context(cafile=self.pki.ca)
        if cn:
            ctx.load_cert_chain(*self.clients[cn])
        raw = socket.create_connection(("127.0.0.1", PORT), timeout=20)
        return ctx.wrap_socket(raw, server_hostname="localhost")

    def closed_at_once(self, cn=None):
        """Whether a connection is closed before any KMIP answer (a relay that
        fails at start, or an instance that never ran)."""
        try:
            with self.tls(cn) as s:
                s.sendall(b"\x42\x00\x78\x01\x00\x00\x00\x00")
                return s.recv(8) == b""
        except (ConnectionError, ssl.SSLError, EOFError):
            return True

    def kmip(self, cn=None, username=None, password=None, version=(1, 2)):
        return KmipClient(self.tls(cn), username, password, version)


SYSTEM = None


def system():
    global SYSTEM
    if SYSTEM is None:
        SYSTEM = System()
    return SYSTEM


class NamespaceTestCase(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.s = system()
        try:
            cls.s.boot()
        except NamespaceRefused as e:
            raise unittest.SkipTest(str(e))

    def setUp(self):
        self.s.use_example("quickstart")
        self.cursor = self.s.journal_cursor()

    def relay_messages(self, want=None, timeout=10):
        """The relay's log records (and systemd's lines about its instances) since
        the test began."""
        entries = self.s.journal_since(self.cursor, want=want, timeout=timeout)
        return [str(e.get("MESSAGE", "")) for e in entries
                if "kmip-relay" in str(e.get("SYSLOG_IDENTIFIER", "")) + str(e.get("UNIT", "")) +
                str(e.get("_SYSTEMD_UNIT", ""))]

    def failed_instances(self):
        return [m for m in self.relay_messages() if re.search(r"kmip-relay@.*(Failed with result|status=)", m)]

    def create_pair(self, c, algorithm, length, name):
        payload = c.ok(OP_CREATE_KEY_PAIR, key_pair_payload(algorithm, length, name + "-priv", name + "-pub"))
        return find(payload, T["PrivateKeyUniqueIdentifier"])[0], find(payload, T["PublicKeyUniqueIdentifier"])[0]


class BootGuardTest(unittest.TestCase):
    """boot-namespace refuses to start systemd unless every private mount is in
    place: each left out in turn (KR_BOOT_SKIP), it stops with the path named.
    KR_BOOT_CHECK_ONLY stops it after the checks in any case, so that a check that
    failed to refuse could not boot systemd on the host's /tmp."""

    SKIPPED = ("/tmp", "/var/tmp", "/run", "/var/log", "/var/lib/systemd", "/etc/systemd/system", "/etc",
               "/usr", "/var", "/dev", "/sys", "/sys/fs/cgroup", "/proc/sys")

    def check(self, skip=None, namespaces=True):
        s = system()
        scratch = tempfile.mkdtemp(dir=s.tmp)
        host_ns = " ".join(os.readlink("/proc/self/ns/" + n) for n in ("mnt", "net", "uts", "ipc", "cgroup"))
        env = dict(os.environ, KR_BOOT_CHECK_ONLY="1", KR_BOOT_SKIP=skip or "")
        prefix = ["unshare", "--fork", "--kill-child", "--pid", "--mount", "--mount-proc", "--net", "--uts",
                  "--ipc", "--cgroup"] if namespaces else []
        r = run(["timeout", "-k", "5", "60"] + prefix +
                [os.path.join(SRCDIR, "test", "system", "boot-namespace"), scratch, host_ns],
                env=env, check=False, timeout=90)
        if namespaces and re.search(r"unshare: (unshare|mount) failed", r.stdout):
            raise unittest.SkipTest("the kernel refused the namespaces: " + r.stdout.strip())
        return r.returncode, r.stdout.strip()

    def test_all_mounts_pass(self):
        self.assertEqual(self.check(), (0, "boot-namespace: mounts checked; not starting systemd "
                                           "(KR_BOOT_CHECK_ONLY)"))

    def test_each_missing_mount_is_refused(self):
        for path in self.SKIPPED:
            with self.subTest(skipped=path):
                code, out = self.check(path)
                self.assertEqual(code, 1, out)
                self.assertRegex(out, r"\Aboot-namespace: refusing to boot: %s (is|holds) " % re.escape(path))

    def test_outside_new_namespaces_it_refuses(self):
        self.assertEqual(self.check(namespaces=False),
                         (1, "boot-namespace: not PID 1 of a new PID namespace"))


class PackageTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.s = system()
        cls.s.build()

    def test_lintian_reports_no_error(self):
        print("lintian %s: exit %d\n%s" % (os.path.basename(self.s.deb), self.s.lintian.returncode,
                                           self.s.lintian.stdout))
        self.assertEqual(self.s.lintian.returncode, 0, self.s.lintian.stdout)
        self.assertEqual([l for l in self.s.lintian.stdout.splitlines() if l.startswith("E:")], [])

    def test_lintian_finds_a_broken_package(self):
        """The check above is not vacuous: without its copyright file the same
        package has lintian errors."""
        tree = os.path.join(self.s.tmp, "broken")
        run(["dpkg-deb", "-R", self.s.deb, tree])
        os.unlink(os.path.join(tree, "usr/share/doc/kmip-relay/copyright"))
        bad = os.path.join(self.s.tmp, "broken.deb")
        run(["dpkg-deb", "-b", tree, bad])
        r = run(["lintian", "--fail-on", "error", bad], check=False, timeout=300)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("E: kmip-relay: no-copyright-file", r.stdout)

    def test_contents(self):
        files = run(["dpkg-deb", "-c", self.s.deb]).stdout
        paths = {l.split()[-1].lstrip(".") for l in files.splitlines()}
        for path in ("/usr/bin/kmip-relay", "/lib/systemd/system/kmip-relay.socket",
                     "/lib/systemd/system/kmip-relay@.service", "/usr/lib/tmpfiles.d/kmip-relay.conf",
                     "/usr/lib/sysusers.d/kmip-relay.conf", "/usr/share/man/man8/kmip-relay.8.gz",
                     "/usr/share/man/man5/kmip-relay.json.5.gz", DOCDIR + "/copyright",
                     DOCDIR + "/README.gz", DOCDIR + "/NEWS.gz", DOCDIR + "/examples/kmip-relay.xinetd",
                     "/etc/kmip-relay/"):
            self.assertIn(path, paths)
        examples = sorted(p for p in paths if p.startswith(DOCDIR + "/examples/") and p.endswith(".json"))
        self.assertEqual(examples, sorted("%s/examples/%s.json" % (DOCDIR, n) for n in EXAMPLES))
        tree = os.path.join(self.s.tmp, "contents")
        run(["dpkg-deb", "-x", self.s.deb, tree])
        with open(os.path.join(tree, DOCDIR.lstrip("/"), "examples", "kmip-relay.xinetd")) as f:
            self.assertRegex(f.read(), r"\n\tserver += /usr/bin/kmip-relay\n")
        with open(os.path.join(tree, "lib/systemd/system/kmip-relay@.service")) as f:
            self.assertIn("\nExecStart=/usr/bin/kmip-relay --config /etc/kmip-relay/kmip-relay.json\n", f.read())


class InstallTest(NamespaceTestCase):
    def test_package_makes_the_user(self):
        a = self.s.after_install
        self.assertFalse(a["host passwd before"])
        self.assertRegex(a["passwd"], r"^kmip-relay:x:\d+:\d+:KMIP relay:/nonexistent:/usr/sbin/nologin$")
        self.assertIn("softhsm", a["groups"])

    def test_package_makes_the_run_directory(self):
        self.assertEqual(self.s.after_install["run dir"], (self.s.uid, self.s.gid, "0o700"))

    def test_socket_disabled_until_configured(self):
        self.assertEqual((self.s.after_install["enabled"], self.s.after_install["active"]),
                         ("disabled", "inactive"))


class ServiceTest(NamespaceTestCase):
    def test_pykmip_lifecycle_with_signature(self):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from kmip.core import enums
            from kmip.pie.client import ProxyKmipClient
            cert, key = self.s.clients["client.example.net"]
            c = ProxyKmipClient(hostname="127.0.0.1", port=PORT, cert=cert, key=key, ca=self.s.pki.ca,
                                config_file=os.devnull, kmip_version=enums.KMIPVersion.KMIP_1_2)
            c.open()
            try:
                pub, priv = c.create_key_pair(enums.CryptographicAlgorithm.RSA, 2048,
                                              public_name="system-pub", private_name="system-priv")
                c.activate(priv)
                data = b"signed under systemd " + os.urandom(16)
                sig = c.sign(data, uid=priv, cryptographic_parameters={
                    "cryptographic_algorithm": enums.CryptographicAlgorithm.RSA,
                    "hashing_algorithm": enums.HashingAlgorithm.SHA_256,
                    "padding_method": enums.PaddingMethod.PKCS1v15})
                public = serialization.load_der_public_key(c.get(pub).value)
                public.verify(sig, data, padding.PKCS1v15(), hashes.SHA256())
                c.revoke(enums.RevocationReasonCode.CESSATION_OF_OPERATION, priv)
                c.destroy(priv)
                c.destroy(pub)
            finally:
                c.close()
        client = "sha256:" + spki_sha256(cert)
        records = self.s.journal_match("KMIP_CLIENT=" + client, "KMIP_OPERATION=Sign", want=priv)
        self.assertEqual([(r["KMIP_RESULT"], r["KMIP_UID"], r["_SYSTEMD_UNIT"].startswith("kmip-relay@"))
                          for r in records if r["KMIP_UID"] == priv], [("Success", priv, True)])
        self.assertEqual({(r["KMIP_CLIENT"], r["KMIP_OPERATION"]) for r in records}, {(client, "Sign")})
        self.assertEqual(self.failed_instances(), [])

    def test_cascade_style_client(self):
        self.s.use_example("cascade")
        with self.s.kmip(username="cascade", password=self.s.pin) as c:
            self.assertTrue(find(c.ok(OP_QUERY, [item(T["QueryFunction"], ENUM, 1)]), T["Operation"]))
            priv, pub = self.create_pair(c, ALG_ECDSA, 256, "example.com-zsk")
            fmt, material = key_material(c.ok(OP_GET, [uid_item(pub)], (1, 0)))
            public = public_key_of(fmt, material)
            c.ok(OP_ACTIVATE, [uid_item(priv)], (1, 0))
            data = os.urandom(64)
            sig = find(c.ok(OP_SIGN, sign_payload(priv, ALG_ECDSA, data)), T["SignatureData"])[0]
            public.verify(sig, data, ec.ECDSA(hashes.SHA256()))
            c.ok(OP_DESTROY, [uid_item(priv)], (1, 0))
            c.ok(OP_DESTROY, [uid_item(pub)], (1, 0))
        records = self.s.journal_match("KMIP_CLIENT=cascade", "KMIP_OPERATION=Sign", want=priv)
        self.assertEqual([(r["KMIP_RESULT"], r["KMIP_NAMESPACE"]) for r in records if r["KMIP_UID"] == priv],
                         [("Success", "cascade")])
        self.assertEqual({(r["KMIP_CLIENT"], r["KMIP_OPERATION"]) for r in records}, {("cascade", "Sign")})
        # A wrong PIN as the Password: refused, and the journal says why.
        with self.s.kmip(username="cascade", password="not-" + self.s.pin) as c:
            self.assertEqual(c.fails(OP_QUERY, [item(T["QueryFunction"], ENUM, 1)]),
                             AUTHENTICATION_NOT_SUCCESSFUL)
        self.assertTrue(any(m.startswith("authentication failed: user:cascade")
                            for m in self.relay_messages(want="authentication failed")), self.relay_messages())

    def test_runs_sandboxed_as_the_service_user(self):
        probes = {"/etc/kmip-relay/probe": "EROFS", "/usr/lib/probe": "EROFS",
                  "/var/lib/softhsm/tokens/probe": "ok", "/run/kmip-relay/probe": "ok",
                  "/var/log/kmip-relay/probe": "ok", "/tmp/probe": "ok", "/var/tmp/probe": "ok",
                  "/root/probe": "EACCES"}
        module = "/usr/local/lib/kmip-relay-test/sandbox_probe.so"
        os.makedirs(os.path.dirname(self.s.root(module)), exist_ok=True)
        shutil.copy(os.path.join(BUILDDIR, "test", "sandbox_probe.so"), self.s.root(module))
        report = "/run/kmip-relay/probe.report"
        dropin = "/etc/systemd/system/kmip-relay@.service.d/probe.conf"
        self.s.put(dropin, "[Service]\nEnvironment=SANDBOX_PROBE=%s SANDBOX_PROBE_REPORT=%s\n" % (
            ",".join(probes), report))
        self.s.ns("systemctl", "daemon-reload")
        try:
            self.s.use_example("quickstart", lambda cfg: cfg["pkcs11"].update(module=module))
            with self.s.kmip("client.example.net") as c:
                c.ok(OP_LOCATE, [])
            lines = self.s.read(report).splitlines()
        finally:
            os.unlink(self.s.root(dropin))
            self.s.ns("systemctl", "daemon-reload")
        ids = dict(kv.split("=") for kv in lines[0].split()[1:])
        self.assertEqual((int(ids["uid"]), int(ids["gid"])), (self.s.uid, self.s.gid))
        self.assertIn(str(self.s.softhsm_gid), ids["groups"].split(","))
        self.assertEqual(lines[1:], ["write %s %s" % kv for kv in probes.items()] + ["socket inet EAFNOSUPPORT"])
        # The sandbox's /tmp is its own.
        self.assertFalse(os.path.exists(self.s.root("/tmp/probe")))
        # Outside the sandbox, as root, the same module writes /etc: the probe sees.
        outside = "/run/probe-outside.report"
        self.s.ns("env", "SANDBOX_PROBE=/etc/kmip-relay/probe", "SANDBOX_PROBE_REPORT=" + outside,
                  "pkcs11-tool", "--module", module, "--list-slots")
        self.assertEqual(self.s.read(outside).splitlines()[1:], ["write /etc/kmip-relay/probe ok",
                                                                  "socket inet ok"])

    def test_encrypted_pin_credential(self):
        """README's drop-in for a PIN kept encrypted (systemd-creds; here with the
        host key, as there is no TPM)."""
        dropin = "/etc/systemd/system/kmip-relay@.service.d/encrypted.conf"
        self.s.ns("systemd-creds", "encrypt", "--with-key=host", "--name=pin", "/etc/kmip-relay/pin",
                  "/etc/kmip-relay/pin.cred")
        os.unlink(self.s.root("/etc/kmip-relay/pin"))
        self.s.put(dropin, "[Service]\nLoadCredential=\nLoadCredentialEncrypted=pin:/etc/kmip-relay/pin.cred\n")
        self.s.ns("systemctl", "daemon-reload")
        try:
            self.s.use_example("krill")
            with self.s.kmip("krill.example.net") as c:
                self.create_pair(c, ALG_RSA, 2048, "encrypted-pin")
        finally:
            os.unlink(self.s.root(dropin))
            self.s.ns("systemctl", "daemon-reload")
            self.s.put_pin()
        self.assertEqual(self.failed_instances(), [])

    def test_security_exposure(self):
        out = self.s.ns("systemd-analyze", "security", "--no-pager", "kmip-relay@x.service").stdout
        m = re.search(r"Overall exposure level for kmip-relay@x\.service: (\d+\.\d+)", out)
        self.assertTrue(m, out)
        print("systemd-analyze security kmip-relay@x.service (online): exposure %s" % m.group(1))
        self.assertLessEqual(float(m.group(1)), MAX_EXPOSURE, out)


class ExamplesTest(NamespaceTestCase):
    """Each installed example, unchanged, as /etc/kmip-relay/kmip-relay.json."""

    def serve(self, name, requests):
        self.s.use_example(name)
        self.cursor = self.s.journal_cursor()
        requests()
        messages = self.relay_messages(want="connection peer=")
        self.assertEqual(self.failed_instances(), [], messages)
        self.assertTrue([m for m in messages if m.startswith("connection peer=")], messages)

    def test_quickstart(self):
        def requests():
            with self.s.kmip("client.example.net") as c:
                c.ok(OP_LOCATE, [])
        self.serve("quickstart", requests)
        log = self.s.read("/var/log/kmip-relay/kmip-relay.log")
        self.assertIn('"operation":"Locate","result":"Success"', log)
        st = os.stat(self.s.root("/var/log/kmip-relay/kmip-relay.log"))
        self.assertEqual((st.st_uid, oct(st.st_mode & 0o777)), (self.s.uid, "0o600"))

    def test_cascade(self):
        def requests():
            with self.s.kmip(username="cascade", password=self.s.pin) as c:
                self.create_pair(c, ALG_ECDSA, 256, "example.org-ksk")
        self.serve("cascade", requests)

    def test_krill(self):
        def requests():
            with self.s.kmip("krill.example.net") as c:
                self.create_pair(c, ALG_RSA, 2048, "krill-ca")
        self.serve("krill", requests)

    def test_two_tenants(self):
        def requests():
            with self.s.kmip("rpki.example.net") as c:
                self.create_pair(c, ALG_RSA, 2048, "rpki-ca")
            with self.s.kmip("audit.example.net") as c:
                c.ok(OP_LOCATE, [])
        self.serve("two-tenants", requests)


class FailureTest(NamespaceTestCase):
    def tearDown(self):
        self.s.put_pin()

    def test_missing_pin_file_says_where_it_goes(self):
        os.unlink(self.s.root("/etc/kmip-relay/pin"))
        self.s.use_example("krill")
        self.assertTrue(self.s.closed_at_once("krill.example.net"))
        want = ('pkcs11.pin_credential: the credential "pin" is missing or empty: put the user PIN in '
                '/etc/kmip-relay/pin (owned by root, mode 0600), which kmip-relay@.service loads as that '
                'credential (LoadCredential=pin:/etc/kmip-relay/pin)')
        messages = self.relay_messages(want="status=1/FAILURE")
        self.assertIn(want, messages)
        self.assertTrue(any(re.search(r"kmip-relay@.*Main process exited, code=exited, status=1/FAILURE", m)
                            for m in messages), messages)
        # A config whose clients bring the PIN needs no file.
        self.s.use_example("cascade")
        self.cursor = self.s.journal_cursor()
        with self.s.kmip(username="cascade", password=self.s.pin) as c:
            c.ok(OP_QUERY, [item(T["QueryFunction"], ENUM, 1)])
            self.create_pair(c, ALG_ECDSA, 256, "no-pin-file")
        self.assertEqual(self.failed_instances(), [])

    def test_without_the_fallback_systemd_fails_first(self):
        """The unit as it was before issue 16 (no SetCredential=): systemd fails the
        instance before the relay runs, with a message that names no file."""
        os.unlink(self.s.root("/etc/kmip-relay/pin"))
        dropin = "/etc/systemd/system/kmip-relay@.service.d/no-fallback.conf"
        self.s.put(dropin, "[Service]\nSetCredential=\n")
        self.s.ns("systemctl", "daemon-reload")
        try:
            self.s.use_example("cascade")
            self.assertTrue(self.s.closed_at_once())
            messages = self.relay_messages(want="243/CREDENTIALS")
        finally:
            os.unlink(self.s.root(dropin))
            self.s.ns("systemctl", "daemon-reload")
        self.assertTrue(any(re.search(r"kmip-relay@.*: Failed to set up credentials: ", m) for m in messages),
                        messages)
        self.assertTrue(any("status=243/CREDENTIALS" in m for m in messages), messages)

    def test_log_file_outside_the_logs_directory(self):
        self.s.use_example("quickstart", lambda cfg: cfg["log"].update(file="/var/log/kmip-relay.log"))
        self.assertTrue(self.s.closed_at_once("client.example.net"))
        self.assertIn("log.file: cannot open /var/log/kmip-relay.log: Read-only file system (under "
                      "kmip-relay@.service, log.file must be in /var/log/kmip-relay/)",
                      self.relay_messages(want="log.file"))

    def test_key_the_service_user_cannot_read(self):
        os.chmod(self.s.root("/etc/kmip-relay/server.key"), 0o600)
        try:
            self.assertTrue(self.s.closed_at_once("client.example.net"))
            self.assertIn("tls.key: cannot read /etc/kmip-relay/server.key: Permission denied",
                          self.relay_messages(want="tls.key"))
        finally:
            os.chmod(self.s.root("/etc/kmip-relay/server.key"), 0o640)

    def test_token_made_by_root(self):
        self.s.ns("softhsm2-util", "--init-token", "--free", "--label", "made-by-root", "--pin", self.s.pin,
                  "--so-pin", self.s.so_pin)
        self.s.use_example("quickstart", lambda cfg: cfg["pkcs11"].update(token="pkcs11:token=made-by-root"))
        with self.s.kmip("client.example.net") as c:
            self.assertEqual(c.fails(OP_LOCATE, []), AUTHENTICATION_NOT_SUCCESSFUL)
        messages = self.relay_messages(want="authentication failed")
        for line in ROOT_TOKEN_ERRORS:
            self.assertTrue(any(line.match(m) for m in messages), (line.pattern, messages))

    def test_listen_as_the_service(self):
        """README's Troubleshooting: --listen with the production config, as the
        service user and with its PIN credential, logs to the terminal."""
        self.s.use_example("krill")
        p = subprocess.Popen(
            ["nsenter", "-t", str(self.s.pid), "-m", "-p", "-n", "-u", "-i", "--", "systemd-run", "--quiet",
             "--wait", "--pipe", "-p", "User=kmip-relay", "-p", "SupplementaryGroups=softhsm", "-p",
             "LoadCredential=pin:/etc/kmip-relay/pin", "kmip-relay", "--listen", "127.0.0.1:5697", "--trace"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True)
        try:
            deadline = time.time() + 20
            while True:
                try:
                    raw = socket.create_connection(("127.0.0.1", 5697), timeout=20)
                    break
                except ConnectionRefusedError:
                    if time.time() > deadline:
                        raise
                    time.sleep(0.1)
            ctx = ssl.create_default_context(cafile=self.s.pki.ca)
            ctx.load_cert_chain(*self.s.clients["krill.example.net"])
            with KmipClient(ctx.wrap_socket(raw, server_hostname="localhost")) as c:
                self.create_pair(c, ALG_RSA, 2048, "listen")
            out, _ = p.communicate(timeout=30)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
        self.assertEqual(p.returncode, 0, out)
        self.assertIn("waiting for one connection on 127.0.0.1:5697", out)
        self.assertRegex(out, r'"client":"krill","peer":"127\.0\.0\.1:\d+","operation":"Create Key Pair",'
                              r'"result":"Success"')
        self.assertIn("Request Message (Structure)\n", out)  # the --trace tree
        self.assertIn("\n    Operation (Enumeration) Create Key Pair\n", out)
        self.assertNotIn(self.s.pin, out)

    def test_check_config_as_the_service(self):
        cmd = ["systemd-run", "--wait", "--pipe", "--quiet", "-p", "User=kmip-relay", "-p",
               "SupplementaryGroups=softhsm", "-p", "LoadCredential=pin:/etc/kmip-relay/pin",
               "kmip-relay", "--check-config"]
        self.s.use_example("krill")
        out = self.s.ns(*cmd, timeout=60).stdout
        # What it found (the module, the token and its slot), then OK.
        self.assertEqual(out.splitlines()[-1:], ["OK"], out)
        self.assertRegex(out, r'(?m)^token pkcs11:token=krill: "krill" .* in slot \d+$')
        out = self.s.ns(*cmd[:-1] + ["--check-config", "--login"], timeout=60).stdout
        self.assertEqual(out.splitlines()[-2:], ["logged in", "OK"], out)
        os.unlink(self.s.root("/etc/kmip-relay/pin"))
        r = self.s.ns(*cmd[:-2] + ["-p", "SetCredential=pin:\\n", "kmip-relay", "--check-config"],
                      check=False, timeout=60)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn('pkcs11.pin_credential: the credential "pin" is missing or empty', r.stdout)


class XinetdTest(NamespaceTestCase):
    def test_xinetd_sample_serves_with_the_tmpfiles_directory(self):
        s = self.s
        s.ns("systemctl", "stop", "kmip-relay.socket")
        try:
            s.ns("rm", "-rf", "/run/kmip-relay")
            s.ns("systemd-tmpfiles", "--create", "kmip-relay.conf")
            st = os.stat(s.root("/run/kmip-relay"))
            self.assertEqual((st.st_uid, st.st_gid, oct(st.st_mode & 0o7777)), (s.uid, s.gid, "0o700"))
            # No credentials under xinetd: a PIN file the service user can read.
            s.put("/etc/kmip-relay/xinetd.pin", s.pin + "\n", 0o400, owner="kmip-relay")

            def change(cfg):
                del cfg["pkcs11"]["pin_credential"]
                del cfg["log"]
                cfg["pkcs11"]["pin_file"] = "/etc/kmip-relay/xinetd.pin"
            s.use_example("quickstart", change)
            sample = s.example("kmip-relay.xinetd")
            enabled, n = re.subn(r"\n(\s*disable\s*=\s*)yes\n", r"\n\1no\n", sample)
            self.assertEqual(n, 1)
            s.put("/etc/xinetd.d/kmip-relay", enabled)
            s.ns("systemd-run", "--unit=xinetd-test", "/usr/sbin/xinetd", "-dontfork", "-stayalive")
            deadline = time.time() + 20
            while True:
                try:
                    c = s.kmip("client.example.net")
                    break
                except (ConnectionRefusedError, ssl.SSLError, ConnectionResetError):
                    if time.time() > deadline:
                        raise
                    time.sleep(0.2)
            with c:
                c.ok(OP_QUERY, [item(T["QueryFunction"], ENUM, 1)])
                c.ok(OP_LOCATE, [])
            st = os.stat(s.root("/run/kmip-relay/p11.lock"))
            self.assertEqual(st.st_uid, s.uid)
            messages = [str(e.get("MESSAGE")) for e in s.journal_since(self.cursor, want="connection peer=")
                        if e.get("SYSLOG_IDENTIFIER") == "kmip-relay"]
            self.assertTrue(any(m.startswith("connection peer=") and "requests=2" in m for m in messages),
                            messages)
        finally:
            s.ns("systemctl", "stop", "xinetd-test", check=False)
            s.ns("rm", "-f", "/etc/xinetd.d/kmip-relay")
            s.ns("systemctl", "start", "kmip-relay.socket")


def readme_step(number):
    """The shell commands of step NUMBER of README's Install section: its
    indented code lines, unindented (a line of another block, such as a
    drop-in's text, stops it)."""
    with open(os.path.join(SRCDIR, "README")) as f:
        text = f.read()
    section = text.split("\nInstall\n-------\n", 1)[1].split("\n\n\n", 1)[0]
    step = re.split(r"^%d\. " % number, section, flags=re.M)[1]
    step = re.split(r"^\d+\. ", step, flags=re.M)[0]
    lines, started = [], False
    for line in step.split("\n"):
        if line.startswith("       ") and not line.startswith("           ["):
            lines.append(line[7:])
            started = True
        elif started and line.strip():
            break
    return "\n".join(lines) + "\n"


class ReadmeInstallTest(NamespaceTestCase):
    """README's Install steps 3 to 7, run as written inside (the server's name
    made to resolve there): certtool's PKI, the config copied from the examples,
    the check as the service, the socket enabled, and the PyKMIP command."""

    def tearDown(self):
        for path, src, mode, group in (("server.pem", self.s.pki.server, 0o644, "root"),
                                       ("server.key", self.s.pki.server_key, 0o640, "kmip-relay"),
                                       ("clients-ca.pem", self.s.pki.ca, 0o644, "root")):
            with open(src) as f:
                self.s.put("/etc/kmip-relay/" + path, f.read(), mode, group=group)

    def bash(self, script, cwd):
        return self.s.ns("bash", "-euo", "pipefail", "-c", "cd %s\n%s" % (cwd, script), timeout=120)

    def test_install_steps(self):
        pki = readme_step(3)
        self.assertIn("certtool --generate-certificate", pki)
        self.bash(pki, "/etc/kmip-relay")
        # "for each client the same as the server's, with its own name and
        # tls_www_client for tls_www_server"
        client = pki[pki.index("certtool --generate-privkey --key-type ecdsa --outfile server.key"):
                     pki.index("chgrp")]
        self.bash(client.replace("server", "client").replace("kmip.example.net", "client.example.net"),
                  "/etc/kmip-relay")
        st = os.stat(self.s.root("/etc/kmip-relay/server.key"))
        self.assertEqual((st.st_gid, oct(st.st_mode & 0o777)), (self.s.gid, "0o640"))
        self.s.put("/etc/hosts", self.s.read("/etc/hosts") + "127.0.0.1 kmip.example.net\n")
        self.bash(readme_step(4), "/")
        # What the check found (the module, the token, the login), then OK.
        self.assertEqual(self.bash(readme_step(5), "/").stdout.splitlines()[-2:], ["logged in", "OK"])
        self.bash(readme_step(6), "/")
        self.assertEqual(self.s.ns("systemctl", "is-enabled", "kmip-relay.socket").stdout.strip(), "enabled")
        out = self.bash(readme_step(7), "/etc/kmip-relay").stdout
        self.assertRegex(out, r"^\[('[0-9A-F]{64}_(pub|priv)'(, )?)*\]\n")
        self.assertIn('"operation":"Locate","result":"Success"', out)


class HostUnchangedTest(unittest.TestCase):
    """After the namespace is gone: nothing of it is left on the host."""

    @classmethod
    def setUpClass(cls):
        cls.s = system()
        cls.s.stop()

    @classmethod
    def tearDownClass(cls):
        os.unlink(cls.s.sentinel)
        shutil.rmtree(cls.s.tmp, ignore_errors=True)

    def test_sentinel_in_tmp_is_intact(self):
        with open(self.s.sentinel) as f:
            self.assertEqual(f.read(), self.s.sentinel_text)

    def test_host_state_is_unchanged(self):
        self.assertEqual(System.host_state(), self.s.host_before)
        self.assertNotIn("kmip-relay", run(["getent", "passwd"]).stdout)
        self.assertNotEqual(run(["dpkg-query", "-W", "kmip-relay"], check=False).returncode, 0)

    def test_namespace_and_cgroup_are_gone(self):
        if self.s.proc:  # (not started if the kernel refused the namespaces)
            self.assertIsNotNone(self.s.proc.returncode)
        if self.s.cgroup:
            self.assertFalse(os.path.exists(self.s.cgroup))


ORDER = (BootGuardTest, PackageTest, InstallTest, ServiceTest, ExamplesTest, FailureTest, XinetdTest,
         ReadmeInstallTest, HostUnchangedTest)

if __name__ == "__main__":
    suite = unittest.TestSuite(unittest.defaultTestLoader.loadTestsFromTestCase(c) for c in ORDER)
    try:
        result = unittest.TextTestRunner(verbosity=2).run(suite)
    finally:
        system().stop()
    sys.exit(0 if result.wasSuccessful() else 1)

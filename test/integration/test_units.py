# SPDX-License-Identifier: BSD-3-Clause
"""The systemd units and the xinetd sample (units/).

- systemd-analyze verify accepts the generated service template and the socket;
- systemd-analyze security --offline rates the service's exposure at 2.0 or lower;
- under a real xinetd (the sample, with the test's port, paths and user), where
  stdin, stdout and stderr are all the socket, a preloaded library that writes
  "GARBAGE" to fds 1 and 2 throughout the session never reaches the client: the
  TLS handshake and a Query succeed. A negative control shows that the same
  library under the same xinetd does put GARBAGE on the socket of a server that
  leaves fds 1 and 2 alone.

Needs the build's units/kmip-relay@.service and test/stderr_noise.so (make
check builds both; run on its own, the test makes them)."""

import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
import time
import unittest

from relaytest import (ENUM, OP_QUERY, RELAY, SRCDIR, T, RelayTestCase, batch_items, exchange,
                       free_port, item, request)

BUILDDIR = os.path.dirname(os.path.abspath(RELAY))
UNITS = os.path.join(SRCDIR, "units")
MAX_EXPOSURE = 2.0
# The preloaded library starts writing this long after exec (see test/stderr_noise.c).
NOISE_DELAY_MS = 300


SOURCES = {"units/kmip-relay@.service": "units/kmip-relay@.service.in",
           "units/kmip-relay.xinetd": "units/kmip-relay.xinetd.in",
           "test/stderr_noise.so": "test/stderr_noise.c"}


def built(relpath):
    """A file the build makes (relative to the build dir), made now if it is missing
    or older than its source (make check has made it already)."""
    path = os.path.join(BUILDDIR, relpath)
    source = os.path.join(SRCDIR, SOURCES[relpath])
    if not os.path.exists(path) or os.path.getmtime(path) < os.path.getmtime(source):
        subprocess.run(["make", "-C", BUILDDIR, relpath], check=True, timeout=300,
                       stdout=subprocess.DEVNULL)
    return path


def unit_copies(directory, relay=RELAY):
    """Copies of the generated service and of the socket in directory, with ExecStart
    pointing at the built relay (systemd-analyze wants an executable that exists)."""
    with open(built("units/kmip-relay@.service")) as f:
        service = f.read()
    service, n = re.subn(r"(?m)^ExecStart=\S+", "ExecStart=" + relay, service)
    assert n == 1, "one ExecStart= line"
    paths = (os.path.join(directory, "kmip-relay@.service"),
             os.path.join(directory, "kmip-relay.socket"))
    with open(paths[0], "w") as f:
        f.write(service)
    shutil.copy(os.path.join(UNITS, "kmip-relay.socket"), paths[1])
    return paths


def analyze(*args):
    return subprocess.run(["systemd-analyze"] + list(args), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, universal_newlines=True, timeout=120)


def exposure(service):
    """The overall exposure that systemd-analyze security --offline gives service."""
    r = analyze("security", "--offline=true", "--no-pager", service)
    m = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", r.stdout)
    if not m:
        raise AssertionError("no exposure level in:\n%s\n%s" % (r.stdout, r.stderr))
    return float(m.group(1))


def unit_settings(path):
    """{(section, key): [values]} of a unit file."""
    settings, section = {}, None
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line or line[0] in "#;":
                continue
            if line.startswith("["):
                section = line.strip("[]")
                continue
            key, _, value = line.partition("=")
            settings.setdefault((section, key.strip()), []).append(value.strip())
    return settings


class UnitFileTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="kmip-relay-units-")

    def tearDown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def test_generated_service_is_substituted(self):
        with open(built("units/kmip-relay@.service")) as f:
            text = f.read()
        self.assertNotRegex(text, r"@[a-z_]+@")
        s = unit_settings(built("units/kmip-relay@.service"))
        self.assertRegex(s[("Service", "ExecStart")][0], r"^/\S*/kmip-relay --config /\S+/kmip-relay\.json$")
        self.assertRegex(s[("Service", "LoadCredential")][0], r"^pin:/\S+/kmip-relay/pin$")

    def test_generated_xinetd_sample_is_substituted(self):
        with open(built("units/kmip-relay.xinetd")) as f:
            text = f.read()
        self.assertNotRegex(text, r"@[a-z_]+@")
        self.assertRegex(text, r"\n\tserver +(= /\S*/kmip-relay)\n")
        self.assertRegex(text, r"\n\tserver_args += --config /\S+/kmip-relay/kmip-relay\.json\n")

    def test_units_name_the_man_pages(self):
        for path in (built("units/kmip-relay@.service"), os.path.join(UNITS, "kmip-relay.socket")):
            s = unit_settings(path)
            self.assertEqual(s[("Unit", "Documentation")], ["man:kmip-relay(8) man:kmip-relay.json(5)"], path)

    def test_socket_settings(self):
        s = unit_settings(os.path.join(UNITS, "kmip-relay.socket"))
        self.assertEqual(s[("Socket", "ListenStream")], ["5696"])
        self.assertEqual(s[("Socket", "Accept")], ["yes"])
        self.assertGreater(int(s[("Socket", "MaxConnections")][0]), 0)
        self.assertGreater(int(s[("Socket", "MaxConnectionsPerSource")][0]), 0)
        self.assertEqual(s[("Install", "WantedBy")], ["sockets.target"])

    def test_service_takes_the_connection_on_stdin_only(self):
        s = unit_settings(built("units/kmip-relay@.service"))
        self.assertEqual(s[("Service", "StandardInput")], ["socket"])
        self.assertEqual(s[("Service", "StandardOutput")], ["null"])
        self.assertNotIn("socket", s.get(("Service", "StandardError"), ["inherit"])[0])
        self.assertEqual(s[("Service", "PrivateNetwork")], ["yes"])
        self.assertEqual(s[("Service", "RestrictAddressFamilies")], ["AF_UNIX"])
        self.assertIn(("Service", "RuntimeMaxSec"), s)

    def test_service_pin_credential_and_logs_directory(self):
        # Issue 16: a missing PIN file gives an empty credential, not a unit that
        # fails before the relay can say what to do; log.file has a writable home.
        s = unit_settings(built("units/kmip-relay@.service"))
        self.assertEqual(s[("Service", "SetCredential")], ["pin:\\n"])
        self.assertEqual(s[("Service", "LogsDirectory")], ["kmip-relay"])
        self.assertEqual(s[("Service", "ProtectSystem")], ["strict"])

    def test_service_dumps_no_core(self):
        # Issue 11, finding 11; the relay also makes itself undumpable.
        s = unit_settings(built("units/kmip-relay@.service"))
        self.assertEqual(s[("Service", "LimitCORE")], ["0"])

    def test_service_stop_outlasts_the_call_timeout(self):
        # SIGTERM waits for the module call in progress, which the default
        # pkcs11.call_timeout (30 s) bounds: SIGKILL must come later (issue 11,
        # finding 16).
        s = unit_settings(built("units/kmip-relay@.service"))
        self.assertEqual(s[("Service", "TimeoutStopSec")], ["45s"])

    def test_systemd_analyze_verify(self):
        service, sock = unit_copies(self.tmp)
        r = analyze("verify", "--man=no", service, sock)
        ours = [l for l in (r.stdout + r.stderr).splitlines() if "kmip-relay" in l]
        self.assertEqual((r.returncode, ours), (0, []), r.stdout + r.stderr)

    def test_systemd_analyze_verify_can_fail(self):
        """The check above is not vacuous: a unit with an unknown key is reported."""
        service, sock = unit_copies(self.tmp)
        with open(service, "a") as f:
            f.write("PrivateNetwrok=yes\n")
        r = analyze("verify", "--man=no", service, sock)
        self.assertIn("PrivateNetwrok", r.stdout + r.stderr)

    def test_security_exposure(self):
        service, _ = unit_copies(self.tmp)
        level = exposure(service)
        print("exposure %.1f" % level)
        self.assertLessEqual(level, MAX_EXPOSURE)

    def test_security_exposure_can_fail(self):
        """The same measure rates an unhardened service above the limit."""
        bare = os.path.join(self.tmp, "bare@.service")
        with open(bare, "w") as f:
            f.write("[Service]\nExecStart=%s\nStandardInput=socket\n" % RELAY)
        self.assertGreater(exposure(bare), MAX_EXPOSURE)


def listening(port, timeout=10):
    """Whether something listens on 127.0.0.1:port, waiting up to timeout seconds
    (read from /proc/net/tcp, so that no probe connection starts a server)."""
    want = "0100007F:%04X" % port
    deadline = time.time() + timeout
    while True:
        with open("/proc/net/tcp") as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                if fields[1] == want and fields[3] == "0A":
                    return True
        if time.time() >= deadline:
            return False
        time.sleep(0.05)


def children(pid):
    kids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open("/proc/%s/stat" % entry) as f:
                    stat = f.read()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                kids.append(int(entry))
    return kids


class XinetdTest(RelayTestCase):
    def xinetd(self, server, server_args, env):
        """Runs xinetd in the foreground with the sample service, adapted: a free
        127.0.0.1 port, this user, server, server_args and env. Returns the port."""
        port = free_port()
        overrides = {
            "port": str(port), "bind": "127.0.0.1", "flags": "IPv4 NODELAY",
            "user": pwd.getpwuid(os.getuid()).pw_name, "server": server,
            "server_args": server_args,
            "env": " ".join("%s=%s" % kv for kv in sorted(env.items())),
            "log_type": "FILE " + os.path.join(self.tmp, "xinetd-service.log"),
            "disable": "no",
        }
        lines, seen = [], set()
        with open(built("units/kmip-relay.xinetd")) as f:
            for line in f.read().splitlines():
                m = re.match(r"\s*([a-z_]+)\s*=", line)
                if m and m.group(1) in overrides:
                    seen.add(m.group(1))
                    line = "\t%s = %s" % (m.group(1), overrides[m.group(1)])
                elif line.strip() == "}":
                    lines += ["\t%s = %s" % (k, v) for k, v in overrides.items() if k not in seen]
                lines.append(line)
        conf = os.path.join(self.tmp, "xinetd.conf")
        with open(conf, "w") as f:
            f.write("\n".join(lines) + "\n")
        self.xinetd_log = os.path.join(self.tmp, "xinetd.log")
        p = subprocess.Popen(["xinetd", "-dontfork", "-f", conf, "-pidfile",
                              os.path.join(self.tmp, "xinetd.pid"), "-filelog", self.xinetd_log],
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
        self.procs.append(p)
        self.xinetd_pid = p.pid
        if not listening(port) or p.poll() is not None:
            with open(self.xinetd_log) as f:
                self.fail("xinetd did not start:\n" + f.read())
        return port

    def noise_env(self):
        return {"LD_PRELOAD": built("test/stderr_noise.so"),
                "STDERR_NOISE_DELAY_MS": str(NOISE_DELAY_MS),
                "ASAN_OPTIONS": self.env["ASAN_OPTIONS"],
                "UBSAN_OPTIONS": self.env["UBSAN_OPTIONS"]}

    def query(self, s):
        resp = exchange(s, request(OP_QUERY, [item(T["QueryFunction"], ENUM, 1)]))
        (bi,) = batch_items(resp)
        self.assertEqual((bi[T["Operation"]], bi[T["ResultStatus"]]), (OP_QUERY, 0))

    def test_relay_keeps_module_output_off_the_socket(self):
        port = self.xinetd(RELAY, "--config " + self.config(), self.noise_env())
        t0 = time.time()
        with self.connect(port) as s:
            # The relay, its fds 1 and 2, and the thread that writes to them.
            deadline = time.time() + 5
            while not children(self.xinetd_pid) and time.time() < deadline:
                time.sleep(0.01)
            (relay,) = children(self.xinetd_pid)
            with open("/proc/%d/maps" % relay) as f:
                self.assertIn("stderr_noise.so", f.read())
            self.assertEqual([os.readlink("/proc/%d/fd/%d" % (relay, fd)) for fd in (0, 1, 2)],
                             ["/dev/null"] * 3)
            # Requests while GARBAGE is being written (from 0.3 s to 2.3 s after exec).
            time.sleep(max(0, t0 + 0.5 - time.time()))
            with open("/proc/%d/status" % relay) as f:
                self.assertRegex(f.read(), r"\nThreads:\s+[2-9]")
            self.query(s)
            time.sleep(max(0, t0 + 1.5 - time.time()))
            self.query(s)
        self.assertTrue(any("requests=2" in l for l in self.log_lines(wait_for="connection peer=")),
                        self.log_lines())

    def test_negative_control_output_reaches_the_socket(self):
        """The same library under the same xinetd, in a server that leaves fds 1 and
        2 as xinetd set them (the socket): the client reads the GARBAGE."""
        port = self.xinetd(shutil.which("sleep"), "3", self.noise_env())
        data = b""
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            deadline = time.time() + 5
            while b"GARBAGE" not in data and time.time() < deadline:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
        self.assertIn(b"GARBAGE\n", data)


if __name__ == "__main__":
    unittest.main(verbosity=2)

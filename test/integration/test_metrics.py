# SPDX-License-Identifier: BSD-3-Clause
"""metrics.file (issue 15): Prometheus text exposition for node_exporter's
textfile collector, merged by each relay process at its end (lock, read, add,
rename).

- the file passes `promtool check metrics` (lint included: HELP and TYPE for
  every metric), with the labels operation, result, end, ckr and backend;
- requests, their durations and results; connections by how they ended (closed,
  tls_failed, authentication_failed, and crash: a process that died inside a
  module call, found afterwards in the health file); TLS handshakes; PKCS#11
  codes by name; the backends' state and the times of their last success and
  failure;
- relays that end at the same time lose no count;
- --probe keeps the backend gauges fresh and counts no connection;
- without metrics.file nothing is written.

promtool comes from Debian's prometheus package, unpacked, not installed
(scripts/test does it); the test fails if it cannot find it."""

import os
import re
import shutil
import stat
import subprocess
import threading
import time
import unittest

from relaytest import (ENUM, FAULTY_P11, OP_QUERY, RELAY, SOFTHSM_MODULE, SRCDIR, T, KmipClient, FaultTokenTestCase,
                       item)

OP_RNG_RETRIEVE = 0x25
T.update({"DataLength": 0x4200C4})


def promtool():
    for path in (os.environ.get("PROMTOOL"), os.path.join(SRCDIR, "build", "tools", "prometheus", "usr", "bin",
                                                          "promtool"), shutil.which("promtool")):
        if path and os.access(path, os.X_OK):
            return path
    raise AssertionError("promtool is missing: scripts/test unpacks it from Debian's prometheus package into "
                         "build/tools/prometheus (apt-get download prometheus; dpkg-deb -x), or set PROMTOOL")


SAMPLE = re.compile(r'\A([a-z0-9_]+)(?:\{(.*)\})? (\S+)\Z')


def samples(text):
    """{(name, frozenset of (label, value))): value} of an exposition text."""
    out = {}
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        m = SAMPLE.match(line)
        assert m, "not a sample line: %r" % line
        labels = frozenset(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
        out[(m.group(1), labels)] = float(m.group(3))
    return out


def get(s, name, **labels):
    return s.get((name, frozenset(labels.items())))


class MetricsTest(FaultTokenTestCase):
    def setUp(self):
        super().setUp()
        self.metrics = os.path.join(self.tmp, "metrics", "kmip-relay.prom")
        os.mkdir(os.path.dirname(self.metrics))
        self.fault_file = os.path.join(self.tmp, "fault")
        self.env.update(FAULTY_P11_FAULT_FILE=self.fault_file)

    def set_fault(self, fault):
        with open(self.fault_file + ".tmp", "w") as f:
            f.write(fault + "\n")
        os.replace(self.fault_file + ".tmp", self.fault_file)

    def serve_metrics(self, module=SOFTHSM_MODULE, **sections):
        return self.start(self.softhsm_config(self.token, {"module": module, "lock_file": self.lock_file},
                                              metrics={"file": self.metrics}, **sections))

    def read(self, connections, timeout=10):
        """The metrics once connections connections have been merged."""
        deadline = time.time() + timeout
        while True:
            text = open(self.metrics).read() if os.path.exists(self.metrics) else ""
            s = samples(text)
            if sum(v for (n, _), v in s.items() if n == "kmip_relay_connections_total") >= connections:
                return text, s
            self.assertLess(time.time(), deadline, "%d connections merged: %r" % (connections, text))
            time.sleep(0.05)

    def query(self, port):
        with KmipClient(self.connect(port)) as c:
            c.ok(OP_QUERY, [item(T["QueryFunction"], ENUM, 1)])

    def test_file_passes_promtool_and_counts(self):
        port = self.serve_metrics(module=FAULTY_P11)
        self.query(port)
        # A refusal of the token, by a code the relay has no name for.
        self.set_fault("C_GenerateRandom:rv=0x80000123")
        with KmipClient(self.connect(port)) as c:
            c.fails(OP_RNG_RETRIEVE, [item(T["DataLength"], 0x02, 16)])
        self.set_fault("")
        # A TLS failure: no client certificate.
        self.refused(port, self.tls_context(cert=False))
        text, s = self.read(3)
        p = subprocess.run([promtool(), "check", "metrics"], input=text, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, timeout=60)
        self.assertEqual((p.returncode, p.stdout), (0, ""), text)
        families = re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M)
        self.assertEqual(families, [
            ("kmip_relay_requests_total", "counter"), ("kmip_relay_request_duration_seconds", "histogram"),
            ("kmip_relay_connections_total", "counter"), ("kmip_relay_tls_handshake_seconds", "histogram"),
            ("kmip_relay_pkcs11_errors_total", "counter"), ("kmip_relay_backend_up", "gauge"),
            ("kmip_relay_backend_last_success_timestamp_seconds", "gauge"),
            ("kmip_relay_backend_last_failure_timestamp_seconds", "gauge")])
        self.assertEqual(len(re.findall(r"^# HELP ", text, re.M)), len(families))
        self.assertEqual(get(s, "kmip_relay_requests_total", operation="Query", result="Success"), 1)
        self.assertEqual(get(s, "kmip_relay_requests_total", operation="RNG Retrieve", result="General Failure"), 1)
        self.assertEqual(get(s, "kmip_relay_request_duration_seconds_count", operation="Query"), 1)
        self.assertEqual(get(s, "kmip_relay_request_duration_seconds_bucket", operation="Query", le="+Inf"), 1)
        self.assertGreater(get(s, "kmip_relay_request_duration_seconds_sum", operation="Query"), 0)
        self.assertEqual(get(s, "kmip_relay_connections_total", end="closed"), 2)
        self.assertEqual(get(s, "kmip_relay_connections_total", end="tls_failed"), 1)
        self.assertEqual(get(s, "kmip_relay_tls_handshake_seconds_count"), 2)
        self.assertEqual(get(s, "kmip_relay_pkcs11_errors_total", ckr="CKR_0x80000123"), 1)
        self.assertEqual(get(s, "kmip_relay_backend_up", backend="default"), 1)
        self.assertLessEqual(abs(get(s, "kmip_relay_backend_last_success_timestamp_seconds", backend="default") -
                                 time.time()), 60)
        self.assertEqual(get(s, "kmip_relay_backend_last_failure_timestamp_seconds", backend="default"), 0)
        # Every label is one of the five.
        names = {k for (_, labels) in s for k, _ in labels}
        self.assertEqual(names - {"le"}, {"operation", "result", "end", "ckr", "backend"})
        # Readable by node_exporter's user whatever the relay's umask; nothing left beside it.
        self.assertEqual(stat.S_IMODE(os.stat(self.metrics).st_mode), 0o644)
        self.assertEqual(sorted(os.listdir(os.path.dirname(self.metrics))), ["kmip-relay.prom", "kmip-relay.prom.lock"])

    def test_authentication_failure(self):
        port = self.serve_metrics(clients=[{"name": "someone-else", "certificate_name": "other.example"}])
        with KmipClient(self.connect(port)) as c:
            c.fails(OP_QUERY, [item(T["QueryFunction"], ENUM, 1)])
        _, s = self.read(1)
        self.assertEqual(get(s, "kmip_relay_connections_total", end="authentication_failed"), 1)
        self.assertEqual(get(s, "kmip_relay_requests_total", operation="Query",
                             result="Authentication Not Successful"), 1)

    def test_crash_counted_by_the_next_process(self):
        port = self.serve_metrics(module=FAULTY_P11)
        self.query(port)
        self.read(1)
        self.set_fault("C_GenerateRandom:segv")
        with KmipClient(self.connect(port)) as c:
            with self.assertRaises((ConnectionError, EOFError, OSError)):
                c.call(OP_RNG_RETRIEVE, [item(T["DataLength"], 0x02, 16)])
        self.set_fault("")
        self.query(port)
        _, s = self.read(2)
        self.assertEqual(get(s, "kmip_relay_connections_total", end="crash"), 1)
        self.assertEqual(get(s, "kmip_relay_connections_total", end="closed"), 2)
        with open(self.lock_file + ".health") as f:
            rec = f.read()
        self.assertEqual(rec[65:97].strip(), "SIGSEGV")
        self.assertEqual(get(s, "kmip_relay_backend_last_failure_timestamp_seconds", backend="default"),
                         int(rec[98:118]))
        # Counted once.
        self.query(port)
        _, s = self.read(3)
        self.assertEqual(get(s, "kmip_relay_connections_total", end="crash"), 1)

    def test_concurrent_relays_lose_no_count(self):
        port = self.serve_metrics()
        errors = []

        def client():
            try:
                for _ in range(3):
                    self.query(port)
            except Exception as e:  # reported below
                errors.append(e)

        threads = [threading.Thread(target=client) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        self.assertEqual(errors, [])
        _, s = self.read(24)
        self.assertEqual(get(s, "kmip_relay_requests_total", operation="Query", result="Success"), 24)
        self.assertEqual(get(s, "kmip_relay_connections_total", end="closed"), 24)
        self.assertEqual(get(s, "kmip_relay_tls_handshake_seconds_count"), 24)

    def test_probe_updates_the_backends(self):
        self.use_token(self.token)
        path = self.config(pkcs11={"backends": [
            {"name": "a", "module": FAULTY_P11, "token": "pkcs11:token=" + self.token.label,
             "pin_file": self.token.pin_file},
            {"name": "b", "module": SOFTHSM_MODULE, "token": "pkcs11:token=" + self.token.label,
             "pin_file": self.token.pin_file}], "lock_file": self.lock_file}, metrics={"file": self.metrics})
        with open(self.lock_file, "w"):
            pass
        self.set_fault("C_Login:rv=CKR_DEVICE_ERROR")
        p = subprocess.run([RELAY, "--probe", "--config", path], env=self.env, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, timeout=60)
        self.assertEqual(p.returncode, 1, p.stdout + p.stderr)
        text = open(self.metrics).read()
        s = samples(text)
        self.assertEqual((get(s, "kmip_relay_backend_up", backend="a"), get(s, "kmip_relay_backend_up", backend="b")),
                         (0, 1))
        self.assertGreater(get(s, "kmip_relay_backend_last_failure_timestamp_seconds", backend="a"), 0)
        self.assertEqual(get(s, "kmip_relay_backend_last_failure_timestamp_seconds", backend="b"), 0)
        self.assertGreater(get(s, "kmip_relay_backend_last_success_timestamp_seconds", backend="b"), 0)
        self.assertEqual(get(s, "kmip_relay_backend_last_success_timestamp_seconds", backend="a"), 0)
        self.assertNotIn("kmip_relay_connections_total{", text)

    def test_merge_keeps_counts_and_drops_what_it_cannot_read(self):
        """What the file holds is added to (a node_exporter restart loses
        nothing); a line the relay does not know, or cannot read, goes."""
        with open(self.metrics, "w") as f:
            f.write('# HELP something else\n'
                    'kmip_relay_requests_total{operation="Query",result="Success"} 41\n'
                    'kmip_relay_connections_total{end="closed"} 7\n'
                    'kmip_relay_tls_handshake_seconds_bucket{le="+Inf"} 7\n'
                    'kmip_relay_tls_handshake_seconds_sum 0.5\n'
                    'kmip_relay_requests_total{operation="Query",result="Success\\"} 9\n'
                    'other_metric 3\n'
                    'kmip_relay_connections_total{end="closed"} not-a-number\n'
                    'garbage\n')
        port = self.serve_metrics()
        self.query(port)
        deadline = time.time() + 10
        while "garbage" in open(self.metrics).read() and time.time() < deadline:
            time.sleep(0.05)
        text, s = self.read(8)
        self.assertEqual(get(s, "kmip_relay_requests_total", operation="Query", result="Success"), 42)
        self.assertEqual(get(s, "kmip_relay_connections_total", end="closed"), 8)
        self.assertEqual(get(s, "kmip_relay_tls_handshake_seconds_count"), 8)
        self.assertGreater(get(s, "kmip_relay_tls_handshake_seconds_sum"), 0.5)
        self.assertNotIn("other_metric", text)
        self.assertNotIn("garbage", text)
        self.assertNotIn("something else", text)

    def test_off_by_default(self):
        port = self.serve()
        self.query(port)
        self.log_lines(wait_for="connection peer=")
        self.assertEqual(os.listdir(os.path.dirname(self.metrics)), [])


if __name__ == "__main__":
    unittest.main(verbosity=2)

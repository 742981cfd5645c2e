# SPDX-License-Identifier: BSD-3-Clause
"""Many relays, one HSM (issue 14): the PROXY protocol, and relay hosts behind a
real HAProxy (Debian's haproxy, started here with a config of its own).

The two relay "hosts" are two listeners, on 127.0.0.2 and 127.0.0.3, under
systemd-socket-activate, on one SoftHSM token directory and one
pkcs11.lock_file (one kernel: SoftHSM's file store needs every process on it
to take the same lock around login). HAProxy listens on 127.0.0.1 and
connects to them from 127.0.0.9, the one address the relays trust to send a
PROXY header; a test client that plays the balancer connects from there too.

- ProxyHeaderTest: a relay that trusts 127.0.0.8/30. Every form of header - v1
  TCP4, TCP6, UNKNOWN; v2 PROXY over IPv4 and IPv6, with TLVs, LOCAL - is sent
  in one segment with the TLS ClientHello behind it, so a reader that took one
  byte too many would break the handshake. The header's address is the peer of
  the summary (with proxy= the balancer), of every audit record and of the
  authentication-failure line. A trusted address without a header, a malformed
  or truncated header, one that never ends, and a header from an untrusted
  address are each refused with their line, with no TLS and no token work
  (the relay's TLS key is in the token there, which it would otherwise open
  before the handshake).
- ProxyJournalTest: the journal fields KMIP_PEER and KMIP_PROXY.
- ScaleOutTest: the shipped units/kmip-relay-haproxy.cfg (README "Scale-out"),
  with its addresses and files pointed here: keys made through HAProxy with
  PyKMIP sign through each host and through HAProxy; the health-check client
  may do RNG Retrieve only; 4 signers for 60 s while host A is stopped at 20 s
  (listener closed, its relays sent SIGTERM, never SIGKILL) and started again
  at 40 s: only connections open on host A at that moment fail, HAProxy marks
  it down and up again (its stats socket), every later request succeeds, and
  the token is intact; host A's token becomes unreachable (its module, the
  faulty one, returns CKR_DEVICE_REMOVED) and the check takes it out of
  rotation; a host drained through the stats socket and then stopped costs no
  request; the per-source limit in the frontend; and every audit record names
  the real client, 127.0.0.1 and its port, never HAProxy."""

import glob
import json
import os
import re
import shlex
import signal
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time
import unittest

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from relaytest import (RELAY, ALG_ECDSA, BYTES, ENUM, FAILED, FMT_RAW, INTEGER, OP_ACTIVATE, OP_QUERY, OP_RNG_RETRIEVE,
                       OP_SIGN, PERMISSION_DENIED, SRCDIR, SUCCESS, RelayTestCase, KmipClient, T, TokenTestCase,
                       alive, batch_items, exchange, find, free_port, item, parse_summary, public_key_of, request,
                       sign_payload, spki_sha256, uid_item, wait_gone, Token)
from test_crash_isolation import FAULTY_P11, assert_closed_without_a_byte

HAPROXY = "/usr/sbin/haproxy"
SAMPLE = os.path.join(SRCDIR, "units", "kmip-relay-haproxy.cfg")
BALANCER = "127.0.0.9"
HOSTS = {"relay1": "127.0.0.2", "relay2": "127.0.0.3"}
CLIENT = ("198.51.100.7", 40001)  # a client address a header names
CLIENT_TIMEOUT = 20
DATA_LENGTH = 0x4200C4
UNIQUE_IDENTIFIER, DATA, SIGNATURE_DATA = 0x420094, 0x4200C2, 0x4200C3

V2_SIG = b"\r\n\r\n\0\r\nQUIT\n"


def v2_header(command=0x21, family=0x11, block=None, length=None, client=CLIENT):
    """A v2 header; block defaults to client -> 192.0.2.1:5696 (for family 0x21,
    [2001:db8::7]:client's port -> [2001:db8::1]:5696)."""
    if block is None:
        if family == 0x21:
            block = socket.inet_pton(socket.AF_INET6, "2001:db8::7") + socket.inet_pton(
                socket.AF_INET6, "2001:db8::1") + struct.pack(">HH", client[1], 5696)
        else:
            block = socket.inet_aton(client[0]) + socket.inet_aton("192.0.2.1") + struct.pack(">HH", client[1], 5696)
    return V2_SIG + bytes([command, family]) + struct.pack(">H", len(block) if length is None else length) + block


def v1_header(client=CLIENT):
    return ("PROXY TCP4 %s 192.0.2.1 %d 5696\r\n" % client).encode()


class PrefixedTLS:
    """A TLS client on sock whose first flight goes out in the same send() as
    prefix (a PROXY header): a relay that read past the header would take the
    ClientHello's first bytes. sendall and recv as a socket's, for KmipClient."""

    def __init__(self, sock, ctx, prefix):
        self.sock, self.incoming, self.outgoing = sock, ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = ctx.wrap_bio(self.incoming, self.outgoing, server_hostname="localhost")
        pending = prefix
        while True:
            try:
                self.tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                data, pending = pending + self.outgoing.read(), b""
                if data:
                    sock.sendall(data)
                self._more()
        self._flush()

    def _more(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise EOFError("the relay closed the connection")
        self.incoming.write(chunk)

    def _flush(self):
        data = self.outgoing.read()
        if data:
            self.sock.sendall(data)

    def sendall(self, data):
        self.tls.write(data)
        self._flush()

    def recv(self, n):
        while True:
            try:
                return self.tls.read(n)
            except ssl.SSLWantReadError:
                try:
                    self._more()
                except EOFError:
                    return b""
            except ssl.SSLZeroReturnError:
                return b""

    def close(self):
        self.sock.close()


def client_hello(ctx):
    """The first flight of a TLS client with ctx, as bytes."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname="localhost")
    try:
        tls.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outgoing.read()


def query():
    return request(OP_QUERY, [item(T["QueryFunction"], ENUM, 3)])


class ProxyHeaderTest(TokenTestCase):

    def setUp(self):
        super().setUp()
        self.port = self.start(self.softhsm_config(
            self.token, timeouts={"handshake": 2}, proxy_protocol={"trusted": ["127.0.0.8/30"]},
            clients=[{"name": "signer", "certificate_name": "kmip-client"}]))
        self.earlier = {}  # peer: summaries of it before this connection

    def balancer_socket(self, source=BALANCER):
        """A connection to the relay from source; returns (socket, its port)."""
        raw = socket.create_connection(("127.0.0.1", self.port), timeout=CLIENT_TIMEOUT, source_address=(source, 0))
        port = raw.getsockname()[1]
        # The kernel may give this connection a port that an earlier one of the
        # test had: that one's summary is not this one's.
        key = "]: connection peer=%s:%d " % (source, port)
        self.earlier["%s:%d" % (source, port)] = sum(key in l for l in self.log_lines())
        return raw, port

    def served(self, header, source=BALANCER, ctx=None):
        """One Query over TLS behind header; returns the balancer's local port."""
        raw, port = self.balancer_socket(source)
        with KmipClient(PrefixedTLS(raw, ctx or self.tls_context(), header)) as c:
            c.ok(OP_QUERY, [item(T["QueryFunction"], ENUM, 3)])
        return port

    def summary_of(self, peer):
        key = "]: connection peer=%s " % peer
        earlier = self.earlier.get(peer, 0)
        lines = [l for l in self.log_lines(wait_for=key, count=earlier + 1) if key in l]
        self.assertEqual(len(lines), earlier + 1, "one summary for %s" % peer)
        return parse_summary(lines[-1])

    def test_the_header_names_the_client(self):
        port = self.served(v2_header())
        summary = self.summary_of("198.51.100.7:40001")
        self.assertEqual((summary["proxy"], summary["requests"], summary["end"]),
                         ("127.0.0.9:%d" % port, "1", "client closed the connection"))
        (record,) = [r for r in self.audit_records() if r["operation"] == "Query"]
        self.assertEqual((record["client"], record["peer"]), ("signer", "198.51.100.7:40001"))

    def test_every_form_of_header(self):
        forms = [
            ("v1 TCP4", v1_header(("198.51.100.7", 40011)), "198.51.100.7:40011"),
            ("v1 TCP6", b"PROXY TCP6 2001:db8::7 2001:db8::1 40012 5696\r\n", "[2001:db8::7]:40012"),
            ("v2 TCP4", v2_header(client=("198.51.100.7", 40013)), "198.51.100.7:40013"),
            ("v2 TCP6", v2_header(family=0x21, client=("2001:db8::7", 40014)), "[2001:db8::7]:40014"),
            # an ALPN TLV and HAProxy's NOOP padding, within the declared length
            ("v2 TLVs", v2_header(block=v2_header(client=("198.51.100.7", 40015))[16:] +
                                  b"\x01\x00\x04kmip\x04\x00\x03\x00\x00\x00"), "198.51.100.7:40015"),
            # a balancer's health check: the connection's own peer is the client
            ("v1 UNKNOWN", b"PROXY UNKNOWN\r\n", None),
            ("v2 LOCAL", v2_header(command=0x20, family=0x00, block=b""), None),
        ]
        for name, header, peer in forms:
            with self.subTest(name):
                before = len(self.audit_records())
                port = self.served(header)
                summary = self.summary_of(peer or "127.0.0.9:%d" % port)
                self.assertEqual(summary.get("proxy"), None if peer is None else "127.0.0.9:%d" % port)
                records = self.audit_records()[before:]
                self.assertEqual([(r["operation"], r["peer"]) for r in records],
                                 [("Query", peer or "127.0.0.9:%d" % port)])

    def test_authentication_failure_line(self):
        cert, key = self.pki.issue("stranger", "stranger")
        self.served_refused_client(cert, key)
        line = ("authentication failed: sha256:%s: no clients entry names this certificate (answered after 1 s) "
                "peer=198.51.100.7:40003" % spki_sha256(cert))
        self.assertIn(line, [l.partition("]: ")[2] for l in self.log_lines(wait_for=line)])
        (record,) = [r for r in self.audit_records() if r["operation"] == "Query"]
        self.assertEqual((record["result"], record["peer"]), ("Authentication Not Successful", "198.51.100.7:40003"))

    def served_refused_client(self, cert, key):
        raw, _ = self.balancer_socket()
        with KmipClient(PrefixedTLS(raw, self.tls_context(certfile=cert, keyfile=key),
                                    v1_header(("198.51.100.7", 40003)))) as c:
            (bi,) = batch_items(exchange(c.sock, query()))
            self.assertEqual(bi[T["ResultStatus"]], FAILED)

    def refused(self, data, reason, source=BALANCER, close=True):
        """Sends data from source (then half-closes, if close); the relay closes
        without a byte, logs the refusal and a summary that ends with it."""
        raw, port = self.balancer_socket(source)
        with raw:
            raw.sendall(data)
            if close:
                raw.shutdown(socket.SHUT_WR)
            assert_closed_without_a_byte(self, raw)
        peer = "%s:%d" % (source, port)
        line = "connection from %s refused: %s" % (peer, reason)
        self.assertIn("PROXY header", line)
        self.assertIn(line, [l.partition("]: ")[2] for l in self.log_lines(wait_for=line)])
        summary = self.summary_of(peer)
        self.assertEqual((summary["end"], summary["requests"], summary["tls"], summary.get("proxy")),
                         (reason, "0", "-", None))

    def test_malformed_headers_are_refused(self):
        hello = client_hello(self.tls_context())
        cases = [
            ("no header", hello, "PROXY header missing"),
            ("LF without CR", v1_header()[:-2] + b"\n" + hello, "PROXY header: malformed v1 line"),
            ("v1 too long", b"PROXY UNKNOWN " + b"f" * 100 + b"\r\n" + hello,
             "PROXY header: v1 line longer than 107 bytes"),
            ("v1 address", b"PROXY TCP4 198.51.100.256 192.0.2.1 40001 5696\r\n" + hello,
             "PROXY header: invalid address"),
            ("v1 port", b"PROXY TCP4 198.51.100.7 192.0.2.1 65536 5696\r\n" + hello, "PROXY header: invalid port"),
            ("v2 version", v2_header(command=0x11) + hello, "PROXY header: unknown v2 version or command"),
            ("v2 UNIX", v2_header(family=0x31, block=b"\0" * 216) + hello, "PROXY header: not TCP over IPv4 or IPv6"),
            ("v2 length", v2_header(length=11)[:-1] + hello, "PROXY header: v2 length shorter than its addresses"),
            # the connection ends inside the header, or before it
            ("v2 truncated", v2_header()[:21], "PROXY header truncated"),
            ("v1 truncated", v1_header()[:30], "PROXY header truncated"),
            ("nothing", b"", "connection closed before the PROXY header"),
        ]
        for name, data, reason in cases:
            with self.subTest(name):
                self.refused(data, reason)

    def test_a_header_that_never_ends(self):
        since = time.monotonic()
        self.refused(v1_header()[:30], "PROXY header not complete within timeouts.handshake", close=False)
        self.assertGreater(time.monotonic() - since, 1.5)  # timeouts.handshake: 2 s

    def test_untrusted_address_sends_none(self):
        hello = client_hello(self.tls_context())
        for name, header in (("v1", v1_header()), ("v2", v2_header()), ("v2 LOCAL", v2_header(0x20, 0, b""))):
            with self.subTest(name):
                self.refused(header + hello, "PROXY header from an address not in proxy_protocol.trusted",
                             source="127.0.0.1")
        # Without a header it is served as before, under its own address.
        port = self.served(b"", source="127.0.0.1")
        self.assertNotIn("proxy", self.summary_of("127.0.0.1:%d" % port))
        self.assertEqual(self.audit_records()[-1]["peer"], "127.0.0.1:%d" % port)

    def test_without_the_section_nothing_changes(self):
        # A relay that trusts no balancer does not look for a header: one fails
        # the TLS handshake, as any bytes that are not TLS do.
        port = self.start(self.softhsm_config(self.token))
        raw = socket.create_connection(("127.0.0.1", port), timeout=CLIENT_TIMEOUT)
        local = raw.getsockname()[1]
        with raw:
            raw.sendall(v2_header() + client_hello(self.tls_context()))
            assert_closed_without_a_byte(self, raw)
        summary = self.summary_of("127.0.0.1:%d" % local)
        self.assertEqual((summary["end"], summary.get("proxy")), ("TLS handshake failed", None))
        self.assertEqual([l for l in self.log_lines() if "PROXY header" in l], [])

    def test_no_tls_and_no_token_work_for_a_refused_header(self):
        # The TLS key in the token: a relay opens the token before the handshake.
        log = os.path.join(self.tmp, "calls")
        self.env.update(FAULTY_P11_FAULT="C_Initialize:count", FAULTY_P11_LOG=log)
        self.port = self.start(self.config(
            tls={"certificate": self.server_cert_for(self.token, "EC:prime256v1", "01"), "key": "pkcs11:id=%01"},
            pkcs11={"module": FAULTY_P11, "token": "pkcs11:token=" + self.token.label,
                    "pin_file": self.token.pin_file, "lock_file": os.path.join(self.tmp, "p11.lock")},
            proxy_protocol={"trusted": [BALANCER]}))
        hello = client_hello(self.tls_context())
        self.refused(hello, "PROXY header missing")
        self.refused(v2_header(command=0x22) + hello, "PROXY header: unknown v2 version or command")
        self.refused(v2_header() + hello, "PROXY header from an address not in proxy_protocol.trusted",
                     source="127.0.0.1")
        self.assertFalse(os.path.exists(log), "the token was opened")
        # The control: a good header, and the token is opened once.
        self.served(v2_header())
        with open(log) as f:
            self.assertEqual([l.split()[1:] for l in f], [["C_Initialize", "count"]])


class ProxyJournalTest(TokenTestCase):
    """Under systemd (INVOCATION_ID) the records go to the journal's socket: here
    one of the test's, over /run in the relay's mount namespace."""

    def test_journal_fields(self):
        run = os.path.join(self.tmp, "run")
        os.makedirs(os.path.join(run, "systemd", "journal"))
        journal = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.addCleanup(journal.close)
        journal.bind(os.path.join(run, "systemd", "journal", "socket"))
        journal.settimeout(0.2)
        self.env["INVOCATION_ID"] = "0123456789abcdef0123456789abcdef"
        port = self.start(self.softhsm_config(self.token, proxy_protocol={"trusted": [BALANCER]}),
                          wrapper=["unshare", "--mount", "--propagation", "private", "/bin/sh", "-c",
                                   'mount --bind %s /run && exec "$0" "$@"' % shlex.quote(run)])
        raw = socket.create_connection(("127.0.0.1", port), timeout=CLIENT_TIMEOUT, source_address=(BALANCER, 0))
        local = raw.getsockname()[1]
        with KmipClient(PrefixedTLS(raw, self.tls_context(), v2_header())) as c:
            c.ok(OP_QUERY, [item(T["QueryFunction"], ENUM, 3)])
        got, deadline = [], time.time() + 10
        while sum(d.startswith(b"MESSAGE=connection ") for d in got) < 1 and time.time() < deadline:
            try:
                got.append(journal.recv(65536))
            except socket.timeout:
                pass
        (audit,) = [d for d in got if b"\nKMIP_OPERATION=Query\n" in d]
        (summary,) = [d for d in got if d.startswith(b"MESSAGE=connection ")]
        self.assertIn(b"\nKMIP_PEER=198.51.100.7:40001\n", audit)
        self.assertIn(b"\nKMIP_PEER=198.51.100.7:40001\n", summary)
        self.assertIn(b"\nKMIP_PROXY=127.0.0.9:%d\n" % local, summary + b"\n")


# HAProxy and two relay hosts.

TCPLOG = re.compile(r"\A(\S+):(\d+) \[(\d+/\w+/\d+:\d+:\d+:\d+)\.(\d+)\] kmip kmip-relays/(\S+) "
                    r"(-?\d+)/(-?\d+)/\+?(-?\d+) \+?\d+ (\S\S) \d+/\d+/\d+/\d+/\+?(\d+) ")


class Session:
    """One client connection as HAProxy logged it (option tcplog)."""

    def __init__(self, m):
        self.port, self.server, self.term = int(m.group(2)), m.group(5), m.group(9)
        self.accepted = time.mktime(time.strptime(m.group(3), "%d/%b/%Y:%H:%M:%S")) + int(m.group(4)) / 1000
        self.ended = self.accepted + int(m.group(8)) / 1000
        self.retries = int(m.group(10))


class Request:
    """One Sign of a signer: its connection's local port (None if it never
    connected), when that connection was opened, when the request was sent and
    when its answer (or the failure) came, and None or what went wrong."""

    def __init__(self, port, opened, sent, failure=None):
        self.port, self.opened, self.sent, self.failure = port, opened, sent, failure
        self.answered = time.time()


class Signers:
    """n threads that sign through port, each on a new connection every
    per_connection Signs, and keep every Request."""

    def __init__(self, test, port, uid, public, n=4, per_connection=20):
        self.test, self.port, self.uid, self.public = test, port, uid, public
        self.n, self.per_connection = n, per_connection
        self.stop, self.lock, self.requests, self.bad_signatures = threading.Event(), threading.Lock(), [], 0
        self.threads = [threading.Thread(target=self.sign_loop) for _ in range(n)]

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join(CLIENT_TIMEOUT + 10)
        self.test.assertFalse(any(t.is_alive() for t in self.threads), "a signer is stuck")

    def note(self, request):
        with self.lock:
            self.requests.append(request)

    def sign_loop(self):
        ctx = self.test.tls_context()
        while not self.stop.is_set():
            opened = time.time()
            try:
                raw = socket.create_connection(("127.0.0.1", self.port), timeout=CLIENT_TIMEOUT)
            except OSError as e:
                self.note(Request(None, opened, opened, "connect: %s" % e))
                continue
            port = raw.getsockname()[1]
            try:
                sock = ctx.wrap_socket(raw, server_hostname="localhost")
            except (OSError, ssl.SSLError) as e:
                raw.close()
                self.note(Request(port, opened, opened, "handshake: %s" % e))
                continue
            with sock:
                for _ in range(self.per_connection):
                    if self.stop.is_set():
                        break
                    message, sent = os.urandom(32), time.time()
                    try:
                        (bi,) = batch_items(exchange(sock, request(OP_SIGN, sign_payload(self.uid, ALG_ECDSA,
                                                                                         message))))
                    except (OSError, EOFError, ssl.SSLError) as e:
                        self.note(Request(port, opened, sent, "%s: %s" % (type(e).__name__, e)))
                        break
                    if bi[T["ResultStatus"]] != SUCCESS:
                        self.note(Request(port, opened, sent, "Result Reason 0x%X %r" % (
                            bi.get(T["ResultReason"], 0), bi.get(T["ResultMessage"]))))
                        break
                    (signature,) = find(bi[T["ResponsePayload"]], SIGNATURE_DATA)
                    try:
                        self.public.verify(signature, message, ec.ECDSA(hashes.SHA256()))
                    except InvalidSignature:
                        with self.lock:
                            self.bad_signatures += 1
                    self.note(Request(port, opened, sent))

    def failures(self):
        return [r for r in self.requests if r.failure is not None]

    def ports(self):
        return {r.port for r in self.requests if r.port is not None}


def host_processes(config):
    """The live processes whose command line names config: a host's relays (and
    a child its listener forked that has yet to exec one)."""
    pids = []
    for path in glob.glob("/proc/[0-9]*/cmdline"):
        pid = int(path.split("/")[2])
        try:
            with open(path, "rb") as f:
                args = f.read().split(b"\0")
        except (FileNotFoundError, ProcessLookupError):
            continue
        if config.encode() in args and pid != os.getpid() and alive(pid):
            pids.append(pid)
    return pids


class ScaleOutDocsTest(RelayTestCase):
    """README's "Scale-out": the haproxy.cfg it shows is the shipped one, whose
    check sends the request relaytest.py makes and looks for Result Status
    Success; the relay config it shows passes --check-config, trusts the
    sample's source address, lets the check's client do RNG Retrieve only and
    waits longer than Krill's idle pool, less than HAProxy."""

    def readme(self):
        with open(os.path.join(SRCDIR, "README")) as f:
            return f.read()

    def test_sample_is_shipped_and_in_readme(self):
        with open(SAMPLE) as f:
            sample = f.read()
        # The check's request: RNG Retrieve of 8 bytes in KMIP 1.2, no credential.
        sent = "".join(l.split()[-1] for l in sample.split("\n") if l.startswith("    tcp-check send-binary "))
        self.assertEqual(bytes.fromhex(sent), request(OP_RNG_RETRIEVE, [item(DATA_LENGTH, INTEGER, 8)]))
        with open(os.path.join(SRCDIR, "README")) as f:
            readme = f.read()
        indented = "\n".join("    " + l if l else "" for l in sample.rstrip("\n").split("\n"))
        self.assertTrue(indented in readme, "README shows the sample as it is")
        # The expected bytes: Result Status Success, which a failure never holds.
        self.assertIn("    tcp-check expect binary 42007F05000000040000000000000000\n", sample)

    def test_relay_config(self):
        text = self.readme()
        head, sep, rest = text.partition("\nscale-out config: relay-host\n")
        self.assertTrue(sep, "README shows the relay config")
        body, sep, _ = rest.partition("\nend of scale-out config\n")
        self.assertTrue(sep)
        self.assertTrue(all(l == "" or l.startswith("    ") for l in body.split("\n")))
        cfg = json.loads(body)
        with open(SAMPLE) as f:
            source = re.search(r"^    source (\S+)$", f.read(), flags=re.M).group(1)
        self.assertEqual(cfg["proxy_protocol"]["trusted"], [source])
        (check,) = [c for c in cfg["clients"] if c["name"] == "haproxy-check"]
        self.assertEqual(check["operations"], ["RNG Retrieve"])
        self.assertTrue(600 < cfg["timeouts"]["idle"] < 11 * 60)
        # The PIN as the credential "pin" that kmip-relay@.service loads.
        ticket, credentials = os.path.join(self.tmp, "ticket.key"), os.path.join(self.tmp, "credentials")
        with open(ticket, "wb") as f:
            f.write(os.urandom(64))
        os.chmod(ticket, 0o600)
        os.mkdir(credentials)
        with open(os.path.join(credentials, "pin"), "w") as f:
            f.write("1234\n")
        files = {"/etc/kmip-relay/server.pem": self.pki.server, "/etc/kmip-relay/server.key": self.pki.server_key,
                 "/etc/kmip-relay/clients-ca.pem": self.pki.ca, "/etc/kmip-relay/ticket.key": ticket,
                 "/var/log/kmip-relay/kmip-relay.log": os.path.join(self.tmp, "x.log"),
                 "/run/kmip-relay/p11.lock": os.path.join(self.tmp, "p11.lock")}
        for section in cfg.values():
            for key, value in section.items() if isinstance(section, dict) else ():
                if isinstance(value, str) and value.startswith(("/etc/", "/var/", "/run/")):
                    section[key] = files[value]
        path = os.path.join(self.tmp, "relay-host.json")
        with open(path, "w") as f:
            json.dump(cfg, f)
        # --check-config finds the token the config names (issue 15), here in a
        # SoftHSM configuration of the test's own.
        token = Token(os.path.join(self.tmp, "softhsm"), label=cfg["pkcs11"]["token"].partition("=")[2])
        p = subprocess.run([RELAY, "--config", path, "--check-config"], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=20, text=True,
                           env=dict(os.environ, CREDENTIALS_DIRECTORY=credentials, SOFTHSM2_CONF=token.conf))
        self.assertEqual((p.returncode, p.stdout.splitlines()[-1:], p.stderr), (0, ["OK"], ""))


class ScaleOutTest(TokenTestCase):

    # What the sample's check takes to mark a host down or up: inter 2s,
    # fastinter 500ms, fall 2, rise 2, timeout check 2s (a failed check
    # after a 1 s authentication delay included), and some slack.
    DETECT = 2 + 0.5 + 2 + 1.5

    def setUp(self):
        super().setUp()
        try:
            self.set_up_hosts()
        except BaseException:
            self.tearDown()  # unittest calls it only after a setUp that passed
            raise

    def set_up_hosts(self):
        if not os.path.exists(HAPROXY):
            self.fail("%s is missing: scripts/test installs Debian's haproxy" % HAPROXY)
        check_pem = os.path.join(self.pki.dir, "haproxy-check.pem")
        if not os.path.exists(check_pem):
            self.pki.issue("haproxy-check", "haproxy-check")
        self.check_cert, self.check_key = check_pem, os.path.join(self.pki.dir, "haproxy-check.key")
        self.check_bundle = os.path.join(self.tmp, "kmip-check.pem")
        with open(self.check_bundle, "w") as out:
            for path in (self.check_cert, self.check_key):
                with open(path) as f:
                    out.write(f.read())
        self.client_ports = set()  # of every connection this test makes but the signers'
        self.fault_file = os.path.join(self.tmp, "fault")
        self.env.update(FAULTY_P11_FAULT_FILE=self.fault_file, FAULTY_P11_LOG=os.path.join(self.tmp, "faults"))
        # Host relay1 reaches the token through the faulty module (which forwards
        # everything while the fault file is empty), relay2 directly.
        self.configs, self.logs, self.ports, self.listeners = {}, {}, {}, {}
        for name, module in (("relay1", FAULTY_P11), ("relay2", None)):
            self.logs[name] = os.path.join(self.tmp, "%s.log" % name)
            pkcs11 = {"module": module} if module else {}
            self.configs[name] = self.softhsm_config(
                self.token, pkcs11, log={"file": self.logs[name]}, timeouts={"idle": 630},
                proxy_protocol={"trusted": [BALANCER]},
                clients=[{"name": "signer", "certificate_name": "kmip-client"},
                         {"name": "haproxy-check", "certificate_name": "haproxy-check",
                          "operations": ["RNG Retrieve"]}])
            self.start_host(name)
        self.haproxy_port = free_port()
        self.stats_socket = os.path.join(self.tmp, "haproxy.sock")
        self.haproxy_log = os.path.join(self.tmp, "haproxy.log")
        cfg = os.path.join(self.tmp, "haproxy.cfg")
        with open(cfg, "w") as f:
            f.write(self.haproxy_config())
        check = subprocess.run([HAPROXY, "-c", "-q", "-f", cfg], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               timeout=30, text=True)
        self.assertEqual((check.returncode, check.stdout), (0, ""))
        with open(self.haproxy_log, "w") as log:
            self.procs.append(subprocess.Popen([HAPROXY, "-db", "-f", cfg], stdout=log, stderr=subprocess.STDOUT))
        self.wait_status({"relay1": "UP", "relay2": "UP"}, 20)

    def start_host(self, name):
        self.ports[name] = self.start(self.configs[name], host=HOSTS[name], port=self.ports.get(name))
        self.listeners[name] = self.procs[-1]

    def stop_host(self, name):
        """Closes the host's listener, then sends SIGTERM to its relays until none
        is left (a relay inside a module call ends when the call returns)."""
        listener = self.listeners.pop(name)
        listener.terminate()
        listener.wait(10)
        deadline = time.time() + 30
        while True:
            pids = host_processes(self.configs[name])
            if not pids:
                return
            self.assertLess(time.time(), deadline, "relays of %s still running" % name)
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
            wait_gone(pids, 1)

    def haproxy_config(self):
        """The shipped sample with its addresses, ports and files pointed here;
        every replaced string is there exactly as often as expected."""
        with open(SAMPLE) as f:
            text = f.read()
        for old, new, count in (
                ("192.0.2.10:5696", "127.0.0.1:%d" % self.haproxy_port, 1),
                ("10.0.0.5", BALANCER, 1),
                ("10.0.0.11:5696", "%s:%d" % (HOSTS["relay1"], self.ports["relay1"]), 1),
                ("10.0.0.12:5696", "%s:%d" % (HOSTS["relay2"], self.ports["relay2"]), 1),
                ("/etc/haproxy/kmip-check.pem", self.check_bundle, 1),
                ("/etc/haproxy/kmip-relay-ca.pem", self.pki.ca, 1),
                ("relay.example.net", "localhost", 2),
                ("/run/haproxy/admin.sock", self.stats_socket, 1)):
            self.assertEqual(text.count(old), count, old)
            text = text.replace(old, new)
        return text

    # HAProxy's view: its stats socket and its log.

    def stats_command(self, command):
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(5)
            s.connect(self.stats_socket)
            s.sendall(command.encode() + b"\n")
            out = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    return out.decode()
                out += chunk

    def stats(self):
        """{server: {stat: value}} of the backend's servers, from "show stat"."""
        lines = self.stats_command("show stat").strip().split("\n")
        names = lines[0].lstrip("# ").split(",")
        out = {}
        for line in lines[1:]:
            row = dict(zip(names, line.split(",")))
            if row["pxname"] == "kmip-relays" and row["svname"] in HOSTS:
                # While a check runs, HAProxy shows the last one's status
                # after "* " (management.txt, check_status).
                if row["check_status"].startswith("* "):
                    row["check_status"] = row["check_status"][2:]
                out[row["svname"]] = row
        return out

    def frontend_stat(self, name):
        lines = self.stats_command("show stat").strip().split("\n")
        names = lines[0].lstrip("# ").split(",")
        (row,) = [dict(zip(names, l.split(","))) for l in lines[1:] if l.startswith("kmip,FRONTEND,")]
        return row[name]

    def frontend_sessions(self):
        """How many client connections HAProxy has open (scur of the frontend)."""
        return int(self.frontend_stat("scur"))

    def status(self):
        return {name: row["status"] for name, row in self.stats().items()}

    def wait_status(self, want, timeout):
        """Waits until the servers' statuses include want; returns when."""
        deadline = time.time() + timeout
        while True:
            try:
                got = self.status()
            except (FileNotFoundError, ConnectionRefusedError):  # HAProxy is starting
                got = {}
            if all(got.get(k) == v for k, v in want.items()):
                return time.time()
            if time.time() > deadline:
                self.fail("HAProxy says %r, not %r" % (got, want))
            time.sleep(0.05)

    def sessions(self):
        """HAProxy's log of every client connection that ended: {port: [Session]},
        once no client connection is open (HAProxy logs one as it ends)."""
        deadline = time.time() + 10
        while self.frontend_sessions() > 0:
            self.assertLess(time.time(), deadline, "client connections still open")
            time.sleep(0.05)
        out = {}
        with open(self.haproxy_log) as f:
            for line in f:
                m = TCPLOG.match(line)
                if m:
                    s = Session(m)
                    out.setdefault(s.port, []).append(s)
        return out

    def session_of(self, sessions, port, opened):
        """The session of the client connection from port opened at opened: the
        one HAProxy accepted nearest that moment (on loopback a port is used
        again as soon as its last connection is closed, and HAProxy dates an
        accept by the start of the loop that made it)."""
        candidates = sorted(sessions.get(port, []), key=lambda s: abs(s.accepted - opened))
        self.assertTrue(candidates and abs(candidates[0].accepted - opened) < 1,
                        "HAProxy's record of port %d" % port)
        return candidates[0]

    class Poller(threading.Thread):
        """The servers' statuses every 50 ms: [(time, {server: status})]."""

        def __init__(self, test):
            super().__init__()
            self.test, self.stop, self.seen = test, threading.Event(), []

        def run(self):
            while not self.stop.wait(0.05):
                self.seen.append((time.time(), self.test.status()))

        def first(self, server, status, after):
            for t, statuses in self.seen:
                if t >= after and statuses.get(server) == status:
                    return t
            return None

    # Keys and checks.

    def key_pair(self):
        """(private UID, public key) of an active P-256 pair made through HAProxy."""
        with KmipClient(self.connect(self.haproxy_port)) as c:
            priv, pub = self.create_pair(c)
            for uid in (priv, pub):
                c.ok(OP_ACTIVATE, [uid_item(uid)])
            fmt, material = key_material_of(c, pub)
        return priv, public_key_of(fmt, material)

    def sign_direct(self, name, uid, public):
        with KmipClient(self.connect_to(HOSTS[name], self.ports[name])) as c:
            message = b"through %s directly" % name.encode()
            (sig,) = find(c.ok(OP_SIGN, sign_payload(uid, ALG_ECDSA, message)), SIGNATURE_DATA)
        public.verify(sig, message, ec.ECDSA(hashes.SHA256()))

    def connect_to(self, host, port, ctx=None):
        raw = socket.create_connection((host, port), timeout=CLIENT_TIMEOUT)
        self.client_ports.add(raw.getsockname()[1])
        return (ctx or self.tls_context()).wrap_socket(raw, server_hostname="localhost")

    def connect(self, port, ctx=None, session=None):
        return self.connect_to("127.0.0.1", port, ctx)

    def audit_of_every_host(self):
        records = []
        for name in HOSTS:
            self.log = self.logs[name]
            records += [(name, r) for r in self.audit_records()]
        return records

    def assert_real_clients(self, client_ports):
        """Every audit record names the real client: the signer 127.0.0.1 and one
        of its ports, the health check HAProxy's address (its LOCAL header)."""
        records = self.audit_of_every_host()
        signer = [r for _, r in records if r["client"] == "signer"]
        self.assertGreater(len(signer), 0)
        self.assertEqual([r for r in signer if not r["peer"].startswith("127.0.0.1:")], [])
        self.assertLessEqual({int(r["peer"].split(":")[1]) for r in signer}, set(client_ports) | self.client_ports)
        checks = [r for _, r in records if r["client"] == "haproxy-check"]
        self.assertGreater(len(checks), 0)
        self.assertEqual({r["peer"].split(":")[0] for r in checks}, {BALANCER})
        self.assertEqual({r["client"] for _, r in records}, {"signer", "haproxy-check"})

    def assert_token_intact(self, uid, public):
        self.assertEqual(sorted(p for p in glob.glob(os.path.join(self.token.dir, "tokens", "*", "*.object"))
                                if os.path.getsize(p) == 0), [])
        self.assertIn(self.token.label, [label for _, label in self.token.slots()])
        for name in HOSTS:
            self.sign_direct(name, uid, public)

    # The tests.

    def test_keys_work_through_every_host(self):
        from kmip.core import enums
        with self.pykmip(self.haproxy_port) as c:
            pub, priv = c.create_key_pair(enums.CryptographicAlgorithm.ECDSA, 256)
            c.activate(priv)
            c.activate(pub)
            got = c.get(pub)
            public = public_key_of(FMT_RAW, got.value)
            params = {"cryptographic_algorithm": enums.CryptographicAlgorithm.ECDSA,
                      "hashing_algorithm": enums.HashingAlgorithm.SHA_256}
            message = b"through HAProxy with PyKMIP"
            public.verify(c.sign(message, uid=priv, cryptographic_parameters=params), message,
                          ec.ECDSA(hashes.SHA256()))
        for name in HOSTS:
            self.sign_direct(name, priv, public)
        ports = []
        for i in range(6):
            raw = socket.create_connection(("127.0.0.1", self.haproxy_port), timeout=CLIENT_TIMEOUT)
            ports.append(raw.getsockname()[1])
            with KmipClient(self.tls_context().wrap_socket(raw, server_hostname="localhost")) as k:
                message = b"through HAProxy, connection %d" % i
                (sig,) = find(k.ok(OP_SIGN, sign_payload(priv, ALG_ECDSA, message)), SIGNATURE_DATA)
                public.verify(sig, message, ec.ECDSA(hashes.SHA256()))
        # HAProxy sent them to both hosts.
        sessions = self.sessions()
        self.assertEqual({sessions[p][-1].server for p in ports}, set(HOSTS))

    def test_the_check_client_may_only_retrieve_random(self):
        ctx = self.tls_context(certfile=self.check_cert, keyfile=self.check_key)
        for name in HOSTS:
            with KmipClient(self.connect_to(HOSTS[name], self.ports[name], ctx)) as c:
                self.assertEqual(len(find(c.ok(OP_RNG_RETRIEVE, [item(DATA_LENGTH, INTEGER, 8)]), DATA)[0]), 8)
                self.assertEqual(c.fails(OP_QUERY, [item(T["QueryFunction"], ENUM, 3)]), PERMISSION_DENIED)
                self.assertEqual(c.fails(OP_SIGN, sign_payload("00_priv", ALG_ECDSA, b"x")), PERMISSION_DENIED)

    def test_stop_and_restart_a_host(self):
        uid, public = self.key_pair()
        poller = self.Poller(self)
        poller.start()
        try:
            with Signers(self, self.haproxy_port, uid, public) as run:
                t0 = time.time()
                time.sleep(20)
                sessions_before = int(self.stats()["relay1"]["scur"])
                stopped = time.time()
                self.stop_host("relay1")
                gone = time.time()
                time.sleep(max(0, t0 + 40 - time.time()))
                restarted = time.time()
                self.start_host("relay1")
                time.sleep(max(0, t0 + 60 - time.time()))
        finally:
            poller.stop.set()
            poller.join(10)
        down, up = poller.first("relay1", "DOWN", stopped), poller.first("relay1", "UP", restarted)
        failures = run.failures()
        sessions = self.sessions()
        print("\nstop and restart: %d requests, %d failed in flight on %d connections (host relay1 had %d "
              "sessions open), relay1 DOWN %.1f s after the stop, UP %.1f s after the restart" % (
                  len(run.requests), len(failures), len({f.port for f in failures}), sessions_before,
                  (down or 0) - stopped, (up or 0) - restarted), file=sys.stderr)
        self.assertEqual(run.bad_signatures, 0)
        self.assertIsNotNone(down, "HAProxy never marked relay1 down")
        self.assertLess(down - gone, self.DETECT)
        self.assertIsNotNone(up, "HAProxy never marked relay1 up again")
        self.assertLess(up - restarted, self.DETECT)
        self.assertEqual(poller.first("relay2", "DOWN", t0), None)
        self.assertEqual({s for _, statuses in poller.seen for s in statuses.values()} -
                         {"UP", "DOWN", "UP 1/2", "DOWN 1/2"}, set())
        # Only connections open on relay1 when it stopped failed, each once.
        for f in failures:
            with self.subTest(port=f.port, why=f.failure):
                self.assertIsNotNone(f.port, f.failure)
                s = self.session_of(sessions, f.port, f.opened)
                self.assertEqual(s.server, "relay1")
                self.assertLess(s.accepted, gone)
                self.assertGreater(s.ended, stopped - 0.1)
                self.assertGreater(f.answered, stopped)
        self.assertEqual(len(failures), len({f.port for f in failures}))
        self.assertLessEqual(len(failures), sessions_before + run.n)
        # Every later request succeeded: all after the last failure, and on every
        # connection opened after the stop.
        last_failure = max([f.answered for f in failures], default=stopped)
        self.assertGreater(len([r for r in run.requests if r.sent > last_failure]), 100)
        self.assertEqual([r.failure for r in run.requests if r.opened > gone and r.failure], [])
        # After the restart, relay1 served again.
        back = [s for p in run.ports() for s in sessions.get(p, []) if s.server == "relay1" and s.accepted > up]
        self.assertGreater(len(back), 0, "no connection went to relay1 after it came back")
        self.assert_real_clients(run.ports())
        self.assert_token_intact(uid, public)

    def test_unreachable_token_leaves_rotation(self):
        uid, public = self.key_pair()
        poller = self.Poller(self)
        poller.start()
        try:
            with Signers(self, self.haproxy_port, uid, public) as run:
                time.sleep(5)
                removed = time.time()
                with open(self.fault_file, "w") as f:
                    f.write("C_OpenSession:rv=CKR_DEVICE_REMOVED;C_SignInit:rv=CKR_DEVICE_REMOVED;"
                            "C_GenerateRandom:rv=CKR_DEVICE_REMOVED\n")
                down = self.wait_status({"relay1": "DOWN"}, 2 * self.DETECT)
                time.sleep(10)
        finally:
            poller.stop.set()
            poller.join(10)
        failures = run.failures()
        sessions = self.sessions()
        print("\nunreachable token: %d requests, %d failed (all on relay1, before it left the rotation), relay1 "
              "DOWN %.1f s after the fault (%s)" % (len(run.requests), len(failures), down - removed,
                                                     self.stats()["relay1"]["check_status"]), file=sys.stderr)
        self.assertEqual(run.bad_signatures, 0)
        self.assertLess(down - removed, 2 * self.DETECT)
        # The relay answers Authentication Not Successful (the token cannot be
        # opened) after its 1 s pause and closes: an invalid answer, or on a
        # machine too busy to start the relay in the other second, a timeout.
        self.assertIn(self.stats()["relay1"]["check_status"], ("L7RSP", "L7TOUT"))
        for f in failures:
            with self.subTest(port=f.port, why=f.failure):
                s = self.session_of(sessions, f.port, f.opened)
                self.assertEqual((s.server, s.accepted < down), ("relay1", True))
                self.assertGreater(f.answered, removed)
        # No connection opened after HAProxy took relay1 out failed, and none
        # went there.
        after = [r for r in run.requests if r.opened > down + 0.1]
        self.assertGreater(len(after), 100)
        self.assertEqual([r.failure for r in after if r.failure], [])
        self.assertEqual({self.session_of(sessions, r.port, r.opened).server for r in after}, {"relay2"})
        self.assert_real_clients(run.ports())

    def test_drained_host_stops_without_a_failure(self):
        # README's way to take a host out: drain it, wait for its sessions to end,
        # stop it; and to bring it back: start it, set it ready.
        uid, public = self.key_pair()
        with Signers(self, self.haproxy_port, uid, public) as run:
            time.sleep(3)
            self.assertEqual(self.stats_command("set server kmip-relays/relay1 state drain"), "\n")
            drained = self.wait_status({"relay1": "DRAIN"}, 5)
            deadline = time.time() + 20
            while int(self.stats()["relay1"]["scur"]) > 0:
                self.assertLess(time.time(), deadline, "relay1 still has sessions")
                time.sleep(0.05)
            stopped = time.time()
            self.stop_host("relay1")
            time.sleep(3)
            self.start_host("relay1")
            readied = time.time()
            self.assertEqual(self.stats_command("set server kmip-relays/relay1 state ready"), "\n")
            ready = self.wait_status({"relay1": "UP"}, self.DETECT)
            time.sleep(3)
        sessions = self.sessions()
        print("\ndrain: %d requests, %d failed; relay1 drained in %.1f s" % (
            len(run.requests), len(run.failures()), stopped - drained), file=sys.stderr)
        self.assertEqual(run.failures(), [])
        self.assertEqual(run.bad_signatures, 0)
        servers = [(self.session_of(sessions, r.port, r.opened), r) for r in run.requests]
        self.assertEqual({s.server for s, r in servers if drained + 0.1 < r.opened < readied - 0.1}, {"relay2"})
        self.assertIn("relay1", {s.server for s, r in servers if r.opened > ready + 0.5})

    def test_connections_per_source(self):
        # The frontend keeps MaxConnectionsPerSource's limit: 16 at once from one
        # address (the relays see HAProxy's only). The 17th is closed at once,
        # before any relay hears of it.
        held = []
        try:
            for _ in range(16):
                held.append(socket.create_connection(("127.0.0.1", self.haproxy_port), timeout=CLIENT_TIMEOUT))
            deadline = time.time() + 10
            while self.frontend_sessions() < 16:
                self.assertLess(time.time(), deadline)
                time.sleep(0.05)
            try:
                extra = socket.create_connection(("127.0.0.1", self.haproxy_port), timeout=CLIENT_TIMEOUT)
            except ConnectionResetError:  # reset before connect() returned
                pass
            else:
                with extra:
                    assert_closed_without_a_byte(self, extra)
            self.assertEqual(self.frontend_stat("dcon"), "1")  # denied by the tcp-request rule
        finally:
            for s in held:
                s.close()
        # Once they are gone, the address is served again.
        deadline = time.time() + 10
        while True:
            try:
                with KmipClient(self.connect(self.haproxy_port)) as c:
                    c.ok(OP_QUERY, [item(T["QueryFunction"], ENUM, 3)])
                break
            except (OSError, EOFError, ssl.SSLError):
                self.assertLess(time.time(), deadline)
                time.sleep(0.2)


def key_material_of(c, uid):
    from relaytest import OP_GET, get_payload, key_material
    return key_material(c.ok(OP_GET, get_payload(uid)))


if __name__ == "__main__":
    unittest.main(verbosity=2)

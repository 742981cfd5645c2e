"""Shared pieces of the integration tests: a test PKI, relay configs, the relay
behind systemd-socket-activate on 127.0.0.1, a raw TTLV client over real TLS, and
log checks. Run with Debian's /usr/bin/python3."""

import json
import os
import shutil
import socket
import ssl
import struct
import subprocess
import tempfile
import time
import unittest

RELAY = os.environ.get("RELAY", os.path.abspath("kmip-relay"))
SRCDIR = os.environ.get("SRCDIR", os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))
VECTORS = os.path.join(SRCDIR, "test", "vectors")


def vector(name):
    with open(os.path.join(VECTORS, name)) as f:
        return bytes.fromhex(f.read().strip())


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)


class PKI:
    """A CA with a server certificate (localhost, 127.0.0.1) and client certificates,
    made with GnuTLS's certtool."""

    def __init__(self, directory):
        self.dir = directory
        os.makedirs(directory, exist_ok=True)
        self.ca, self.ca_key = self._ca("ca", "kmip-relay test CA")
        self.server, self.server_key = self.issue("server", "localhost", server=True)

    def _path(self, name):
        return os.path.join(self.dir, name)

    def _template(self, name, lines):
        path = self._path(name + ".tmpl")
        with open(path, "w") as f:
            f.write("\n".join(lines) + "\nexpiration_days = 3650\n")
        return path

    def _key(self, name):
        key = self._path(name + ".key")
        run(["certtool", "--generate-privkey", "--key-type", "ecdsa", "--curve", "secp256r1",
             "--outfile", key])
        return key

    def _ca(self, name, cn):
        key = self._key(name)
        pem = self._path(name + ".pem")
        tmpl = self._template(name, ['cn = "%s"' % cn, "ca", "cert_signing_key"])
        run(["certtool", "--generate-self-signed", "--load-privkey", key, "--template", tmpl,
             "--outfile", pem])
        return pem, key

    def issue(self, name, cn, server=False, ca=None, ca_key=None):
        """A certificate signed by this CA (or by ca/ca_key); returns (pem, key)."""
        key = self._key(name)
        pem = self._path(name + ".pem")
        lines = ['cn = "%s"' % cn, "signing_key"]
        lines += ['dns_name = "localhost"', 'ip_address = "127.0.0.1"', "tls_www_server",
                  "encryption_key"] if server else ["tls_www_client"]
        tmpl = self._template(name, lines)
        run(["certtool", "--generate-certificate", "--load-privkey", key, "--load-ca-certificate",
             ca or self.ca, "--load-ca-privkey", ca_key or self.ca_key, "--template", tmpl,
             "--outfile", pem])
        return pem, key


class RelayTestCase(unittest.TestCase):
    """Each test gets a temporary directory with a PKI, a config and a log file.
    Sanitizer reports go to files there, because fd 2 is /dev/null in the relay;
    tearDown fails the test if any appeared."""

    pki_cache = None

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="kmip-relay-test-")
        if RelayTestCase.pki_cache is None:
            RelayTestCase.pki_cache = tempfile.mkdtemp(prefix="kmip-relay-pki-")
            PKI(RelayTestCase.pki_cache)
        self.pki = PKI.__new__(PKI)
        self.pki.dir = RelayTestCase.pki_cache
        self.pki.ca = os.path.join(self.pki.dir, "ca.pem")
        self.pki.ca_key = os.path.join(self.pki.dir, "ca.key")
        self.pki.server = os.path.join(self.pki.dir, "server.pem")
        self.pki.server_key = os.path.join(self.pki.dir, "server.key")
        if not os.path.exists(os.path.join(self.pki.dir, "client.pem")):
            self.pki.issue("client", "kmip-client")
        self.client_cert = os.path.join(self.pki.dir, "client.pem")
        self.client_key = os.path.join(self.pki.dir, "client.key")
        self.log = os.path.join(self.tmp, "relay.log")
        self.env = dict(os.environ)
        san = os.path.join(self.tmp, "sanitizer")
        self.sanitizer_prefix = san
        self.env["ASAN_OPTIONS"] = "log_path=%s:verify_asan_link_order=0" % san
        self.env["UBSAN_OPTIONS"] = "log_path=%s:print_stacktrace=1" % san
        self.procs = []

    def tearDown(self):
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        reports = [f for f in os.listdir(self.tmp) if f.startswith("sanitizer")]
        texts = []
        for f in reports:
            with open(os.path.join(self.tmp, f)) as fh:
                texts.append(fh.read())
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.assertEqual(texts, [], "sanitizer reports")

    def config(self, **sections):
        """Writes a config: the test PKI and log file, with sections merged over them."""
        cfg = {
            "tls": {"certificate": self.pki.server, "key": self.pki.server_key,
                    "client_ca": self.pki.ca},
            "log": {"file": self.log},
        }
        for name, values in sections.items():
            cfg.setdefault(name, {}).update(values)
        path = os.path.join(self.tmp, "relay-%d.json" % len(os.listdir(self.tmp)))
        with open(path, "w") as f:
            json.dump(cfg, f)
        return path

    def start(self, config, inetd=True, extra_args=(), env=None):
        """Serves the relay behind systemd-socket-activate --accept on a free port,
        in inetd mode (stdin) or fd-3 mode. Returns the port."""
        port = free_port()
        cmd = ["systemd-socket-activate", "--accept", "-l", "127.0.0.1:%d" % port]
        if inetd:
            cmd.append("--inetd")
        cmd += [RELAY, "--config", config] + list(extra_args)
        p = subprocess.Popen(cmd, env=env or self.env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
        self.procs.append(p)
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        else:
            self.fail("relay did not start listening")
        # That probe connection made a relay process that saw no TLS; it has gone.
        return port

    def tls_context(self, cert=True, certfile=None, keyfile=None):
        ctx = ssl.create_default_context(cafile=self.pki.ca)
        if cert:
            ctx.load_cert_chain(certfile or self.client_cert, keyfile or self.client_key)
        return ctx

    def connect(self, port, ctx=None, session=None):
        ctx = ctx or self.tls_context()
        raw = socket.create_connection(("127.0.0.1", port), timeout=20)
        return ctx.wrap_socket(raw, server_hostname="localhost", session=session)

    def log_lines(self, wait_for=None, timeout=10):
        """The log file's lines, waiting until one contains wait_for."""
        deadline = time.time() + timeout
        while True:
            lines = []
            if os.path.exists(self.log):
                with open(self.log) as f:
                    lines = f.read().splitlines()
            if wait_for is None or any(wait_for in l for l in lines) or time.time() > deadline:
                return lines
            time.sleep(0.05)


def recv_exact(sock, n):
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise EOFError("connection closed after %d of %d bytes" % (len(buf), n))
        buf += chunk
    return buf


def exchange(sock, request):
    """Sends one TTLV message and returns the response message."""
    sock.sendall(request)
    hdr = recv_exact(sock, 8)
    length = struct.unpack(">I", hdr[4:8])[0]
    return hdr + recv_exact(sock, length)


# A minimal TTLV encoder and decoder for building requests and reading responses.
STRUCTURE, INTEGER, LONG, BIGINT, ENUM, BOOL, TEXT, BYTES, DATETIME, INTERVAL = range(1, 11)


def item(tag, typ, value):
    if typ == STRUCTURE:
        body = b"".join(value)
    elif typ in (INTEGER, ENUM, INTERVAL):
        body = struct.pack(">i" if typ == INTEGER else ">I", value)
    elif typ in (LONG, DATETIME):
        body = struct.pack(">q", value)
    elif typ == BOOL:
        body = struct.pack(">Q", 1 if value else 0)
    elif typ == TEXT:
        body = value.encode()
    else:
        body = bytes(value)
    pad = b"\0" * (-len(body) % 8)
    return struct.pack(">I", tag << 8 | typ) + struct.pack(">I", len(body)) + body + pad


def decode(data):
    """Returns (tag, type, value, rest); a structure's value is a list of items."""
    tag_type, length = struct.unpack(">II", data[:8])
    tag, typ = tag_type >> 8, tag_type & 0xFF
    body, rest = data[8:8 + length], data[8 + length + (-length % 8):]
    if typ == STRUCTURE:
        children = []
        while body:
            t, ty, v, body = decode(body)
            children.append((t, ty, v))
        value = children
    elif typ == INTEGER:
        value = struct.unpack(">i", body)[0]
    elif typ in (ENUM, INTERVAL):
        value = struct.unpack(">I", body)[0]
    elif typ in (LONG, DATETIME):
        value = struct.unpack(">q", body)[0]
    elif typ == BOOL:
        value = struct.unpack(">Q", body)[0] == 1
    elif typ == TEXT:
        value = body.decode()
    else:
        value = body
    return tag, typ, value, rest


def find(children, tag):
    return [v for t, _, v in children if t == tag]


T = {  # the tags the tests use
    "RequestMessage": 0x420078, "RequestHeader": 0x420077, "ProtocolVersion": 0x420069,
    "Major": 0x42006A, "Minor": 0x42006B, "BatchCount": 0x42000D, "BatchItem": 0x42000F,
    "Operation": 0x42005C, "RequestPayload": 0x420079, "ResponsePayload": 0x42007C,
    "ResponseHeader": 0x42007A, "ResultStatus": 0x42007F, "ResultReason": 0x42007E,
    "ResultMessage": 0x42007D, "UniqueBatchItemID": 0x420093, "MaxResponseSize": 0x420050,
    "QueryFunction": 0x420074, "TimeStamp": 0x420092, "Authentication": 0x42000C,
    "Credential": 0x420023, "CredentialType": 0x420024, "CredentialValue": 0x420025,
    "Username": 0x420099, "Password": 0x4200A1, "VendorIdentification": 0x42009D,
}

OP_QUERY, OP_DISCOVER_VERSIONS = 0x18, 0x1E


def request(operation, payload=(), version=(1, 2), username=None, password=None,
            max_response_size=None, extra_items=()):
    """A one-item request message (plus extra_items, already-encoded batch items)."""
    header = [item(T["ProtocolVersion"], STRUCTURE, [item(T["Major"], INTEGER, version[0]),
                                                    item(T["Minor"], INTEGER, version[1])])]
    if max_response_size is not None:
        header.append(item(T["MaxResponseSize"], INTEGER, max_response_size))
    if username is not None:
        value = [item(T["Username"], TEXT, username)]
        if password is not None:
            value.append(item(T["Password"], TEXT, password))
        header.append(item(T["Authentication"], STRUCTURE, [item(T["Credential"], STRUCTURE, [
            item(T["CredentialType"], ENUM, 1), item(T["CredentialValue"], STRUCTURE, value)])]))
    header.append(item(T["BatchCount"], INTEGER, 1 + len(extra_items)))
    batch = item(T["BatchItem"], STRUCTURE, [item(T["Operation"], ENUM, operation),
                                            item(T["RequestPayload"], STRUCTURE, list(payload))])
    return item(T["RequestMessage"], STRUCTURE,
                [item(T["RequestHeader"], STRUCTURE, header), batch] + list(extra_items))


def batch_items(response):
    """The batch items of a response message, each as a dict of its fields."""
    tag, _, children, rest = decode(response)
    assert tag == 0x42007B and rest == b"", "not one Response Message"
    items = []
    for bi in find(children, T["BatchItem"]):
        d = {}
        for t, _, v in bi:
            d[t] = v
        items.append(d)
    return items


def response_version(response):
    _, _, children, _ = decode(response)
    header = find(children, T["ResponseHeader"])[0]
    pv = find(header, T["ProtocolVersion"])[0]
    return find(pv, T["Major"])[0], find(pv, T["Minor"])[0]

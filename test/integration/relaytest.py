"""Shared pieces of the integration tests: a test PKI, relay configs, the relay
behind systemd-socket-activate on 127.0.0.1, a raw TTLV client over real TLS, and
log checks. Run with Debian's /usr/bin/python3."""

import hashlib
import atexit
import json
import os
import re
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


def wait_listening(port, timeout=10):
    """Waits until something listens on 127.0.0.1:port, without connecting (a
    connection would start a relay process)."""
    want = "0100007F:%04X" % port
    deadline = time.time() + timeout
    while time.time() < deadline:
        with open("/proc/net/tcp") as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                if fields[1] == want and fields[3] == "0A":
                    return
        time.sleep(0.02)
    raise TimeoutError("nothing listens on 127.0.0.1:%d" % port)


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)


def spki_sha256(cert_pem):
    """Hex SHA-256 of a certificate's SubjectPublicKeyInfo, as the relay logs it."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    with open(cert_pem, "rb") as f:
        cert = x509.load_pem_x509_certificate(f.read())
    der = cert.public_key().public_bytes(serialization.Encoding.DER,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


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


SOFTHSM_MODULE = "/usr/lib/softhsm/libsofthsm2.so"
PASSED_ENV = ("ASAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS", "SOFTHSM2_CONF", "LD_PRELOAD")


class Token:
    """A SoftHSM2 token of its own in directory, with SOFTHSM2_CONF for it."""

    def __init__(self, directory, label="kmip-relay", pin="1234", so_pin="123456"):
        self.dir, self.label, self.pin = directory, label, pin
        os.makedirs(os.path.join(directory, "tokens"), exist_ok=True)
        self.conf = os.path.join(directory, "softhsm2.conf")
        with open(self.conf, "w") as f:
            f.write("directories.tokendir = %s/tokens\nobjectstore.backend = file\n"
                    "log.level = ERROR\n" % directory)
        self.pin_file = os.path.join(directory, "pin")
        with open(self.pin_file, "w") as f:
            f.write(pin + "\n")
        os.chmod(self.pin_file, 0o600)
        self.env = dict(os.environ, SOFTHSM2_CONF=self.conf)
        run(["softhsm2-util", "--init-token", "--free", "--label", label, "--pin", pin,
             "--so-pin", so_pin], env=self.env)

    def tool(self, *args):
        """pkcs11-tool on this token, logged in."""
        return run(["pkcs11-tool", "--module", SOFTHSM_MODULE, "--token-label", self.label,
                    "--login", "--pin", self.pin] + list(args), env=self.env)

    def keypair(self, key_type, key_id, label):
        """Generates a key pair; returns the public key as DER SubjectPublicKeyInfo."""
        self.tool("--keypairgen", "--key-type", key_type, "--id", key_id, "--label", label)
        der = os.path.join(self.dir, "pub-%s.der" % key_id)
        self.tool("--read-object", "--type", "pubkey", "--id", key_id, "-o", der)
        return der


class RelayTestCase(unittest.TestCase):
    """Each test gets a temporary directory with a PKI, a config and a log file.
    Sanitizer reports go to files there, because fd 2 is /dev/null in the relay;
    tearDown fails the test if any appeared."""

    pki_cache = None

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="kmip-relay-test-")
        if RelayTestCase.pki_cache is None:
            RelayTestCase.pki_cache = tempfile.mkdtemp(prefix="kmip-relay-pki-")
            atexit.register(shutil.rmtree, RelayTestCase.pki_cache, True)
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
        env = env or self.env
        cmd = ["systemd-socket-activate", "--accept", "-l", "127.0.0.1:%d" % port]
        if inetd:
            cmd.append("--inetd")
        # systemd-socket-activate passes on only the variables it is told to.
        for name in sorted(env):
            if name in PASSED_ENV or os.environ.get(name) != env[name]:
                cmd += ["-E", "%s=%s" % (name, env[name])]
        cmd += [RELAY, "--config", config] + list(extra_args)
        p = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.procs.append(p)
        wait_listening(port)
        return port

    def tls_context(self, cert=True, certfile=None, keyfile=None, maximum_version=None):
        ctx = ssl.create_default_context(cafile=self.pki.ca)
        if cert:
            ctx.load_cert_chain(certfile or self.client_cert, keyfile or self.client_key)
        if maximum_version is not None:
            ctx.maximum_version = maximum_version
        return ctx

    def connect(self, port, ctx=None, session=None):
        ctx = ctx or self.tls_context()
        raw = socket.create_connection(("127.0.0.1", port), timeout=20)
        return ctx.wrap_socket(raw, server_hostname="localhost", session=session)

    def refused(self, port, ctx=None, message=None):
        """Connects and, if the handshake seems to pass (TLS 1.3 clients finish
        before the server has checked their certificate), sends message. Asserts
        that no KMIP response came back; returns the client's local port."""
        raw = socket.create_connection(("127.0.0.1", port), timeout=10)
        local_port = raw.getsockname()[1]
        try:
            with (ctx or self.tls_context()).wrap_socket(raw, server_hostname="localhost") as s:
                s.sendall(message or request(OP_QUERY, [item(T["QueryFunction"], ENUM, 1)]))
                data = s.recv(8)
            self.assertEqual(data, b"", "the relay answered a refused client")
        except (ssl.SSLError, ConnectionError, EOFError):
            pass
        finally:
            raw.close()
        return local_port

    def summary(self, local_port, timeout=10):
        """The connection summary of the client whose local port this was, parsed
        into a dict (values without quotes)."""
        key = "connection peer=127.0.0.1:%d " % local_port
        lines = [l for l in self.log_lines(wait_for=key, timeout=timeout) if key in l]
        self.assertEqual(len(lines), 1, "one summary line for port %d" % local_port)
        return parse_summary(lines[0])

    def audit_records(self, lines=None):
        """The JSON audit records in the log."""
        records = []
        for l in self.log_lines() if lines is None else lines:
            _, sep, message = l.partition("]: ")
            if sep and message.startswith("{"):
                records.append(json.loads(message))
        return records

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


SUMMARY_FIELD = re.compile(r'(\w+)=(?:"([^"]*)"|(\S+))')


def parse_summary(line):
    """A summary line's fields: 'connection peer=... end="..."' -> dict."""
    _, sep, message = line.partition("]: connection ")
    assert sep, "not a summary line: %r" % line
    return {k: q if q or not u else u for k, q, u in SUMMARY_FIELD.findall(message)}


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
    "BatchErrorContinuationOption": 0x42000E, "ObjectType": 0x420057,
}

OP_QUERY, OP_DISCOVER_VERSIONS, OP_SIGN = 0x18, 0x1E, 0x21


def protocol_version(major, minor):
    return item(T["ProtocolVersion"], STRUCTURE, [item(T["Major"], INTEGER, major),
                                                  item(T["Minor"], INTEGER, minor)])


def batch_item(operation, payload=(), unique_id=None):
    """An encoded request Batch Item."""
    fields = [item(T["Operation"], ENUM, operation)]
    if unique_id is not None:
        fields.append(item(T["UniqueBatchItemID"], BYTES, unique_id))
    fields.append(item(T["RequestPayload"], STRUCTURE, list(payload)))
    return item(T["BatchItem"], STRUCTURE, fields)


def request_message(items, version=(1, 2), username=None, password=None, max_response_size=None,
                    batch_error_option=None, batch_count=None):
    """A request message of already-encoded batch items; batch_count False leaves it out."""
    header = [protocol_version(*version)]
    if max_response_size is not None:
        header.append(item(T["MaxResponseSize"], INTEGER, max_response_size))
    if username is not None:
        value = [item(T["Username"], TEXT, username)]
        if password is not None:
            value.append(item(T["Password"], TEXT, password))
        header.append(item(T["Authentication"], STRUCTURE, [item(T["Credential"], STRUCTURE, [
            item(T["CredentialType"], ENUM, 1), item(T["CredentialValue"], STRUCTURE, value)])]))
    if batch_error_option is not None:
        header.append(item(T["BatchErrorContinuationOption"], ENUM, batch_error_option))
    if batch_count is not False:
        header.append(item(T["BatchCount"], INTEGER,
                           len(items) if batch_count is None else batch_count))
    return item(T["RequestMessage"], STRUCTURE,
                [item(T["RequestHeader"], STRUCTURE, header)] + list(items))


def request(operation, payload=(), version=(1, 2), username=None, password=None,
            max_response_size=None, extra_items=()):
    """A one-item request message (plus extra_items, already-encoded batch items)."""
    return request_message([batch_item(operation, payload)] + list(extra_items), version=version,
                           username=username, password=password,
                           max_response_size=max_response_size)


def raw_children(data):
    """The encoded children of the top-level structure in data, as (tag, bytes)."""
    length = struct.unpack(">I", data[4:8])[0]
    body, out = data[8:8 + length], []
    while body:
        n = 8 + struct.unpack(">I", body[4:8])[0]
        n += -n % 8
        out.append((struct.unpack(">I", body[:4])[0] >> 8, body[:n]))
        body = body[n:]
    return out


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

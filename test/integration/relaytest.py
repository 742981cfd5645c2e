# SPDX-License-Identifier: BSD-3-Clause
"""Shared pieces of the integration tests: a test PKI, relay configs, the relay
behind systemd-socket-activate on 127.0.0.1, a raw TTLV client over real TLS, and
log checks. Run with Debian's /usr/bin/python3."""

import atexit
import base64
import contextlib
import glob
import hashlib
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
import warnings

RELAY = os.environ.get("RELAY", os.path.abspath("kmip-relay"))
SRCDIR = os.environ.get("SRCDIR", os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))
VECTORS = os.path.join(SRCDIR, "test", "vectors")


def vector(name):
    with open(os.path.join(VECTORS, name)) as f:
        return bytes.fromhex(f.read().strip())


def free_port(host="127.0.0.1"):
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_listening(port, timeout=10, host="127.0.0.1"):
    """Waits until something listens on host:port (IPv4), without connecting (a
    connection would start a relay process)."""
    want = "%s:%04X" % (socket.inet_aton(host)[::-1].hex().upper(), port)
    deadline = time.time() + timeout
    while time.time() < deadline:
        with open("/proc/net/tcp") as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                if fields[1] == want and fields[3] == "0A":
                    return
        time.sleep(0.02)
    raise TimeoutError("nothing listens on %s:%d" % (host, port))


# Processes, by /proc: a relay behind systemd-socket-activate is its child.

def children(pid):
    """The pids of a process's children, from /proc/PID/task/*/children."""
    pids = []
    for path in glob.glob("/proc/%d/task/*/children" % pid):
        try:
            with open(path) as f:
                pids += [int(p) for p in f.read().split()]
        except (FileNotFoundError, ProcessLookupError):  # the task ended meanwhile
            pass
    return pids


def alive(pid):
    """True while pid exists and is not a zombie."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):  # gone before, or while, it was read
        return False


def wait_gone(pids, timeout=10):
    """Waits until none of pids is alive; returns those still alive."""
    deadline = time.time() + timeout
    while any(alive(p) for p in pids) and time.time() < deadline:
        time.sleep(0.02)
    return [p for p in pids if alive(p)]


def drop_injected_crash_reports(sanitizer_prefix, fault_log):
    """Removes the sanitizer reports of the SIGSEGVs that test/faulty_p11.c was
    told to cause (its FAULTY_P11_LOG names their processes): those crashes are
    the test's own, not the relay's. Waits for those processes to be gone first,
    so that their reports are whole."""
    if not os.path.exists(fault_log):
        return
    with open(fault_log) as f:
        crashed = {int(p) for p, _, a in (l.split() for l in f if l.strip()) if a == "segv"}
    wait_gone(list(crashed))
    for path in glob.glob(sanitizer_prefix + ".*"):
        if int(path.rpartition(".")[2]) in crashed:
            with open(path) as f:
                report = f.read()
            if "SEGV" in report and "faulty_p11" in report:
                os.unlink(path)


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
        tmpl = self._template(name, ['cn = "%s"' % cn, "ca", "cert_signing_key", "crl_signing_key"])
        run(["certtool", "--generate-self-signed", "--load-privkey", key, "--template", tmpl,
             "--outfile", pem])
        return pem, key

    def issue(self, name, cn, server=False, ca=None, ca_key=None, dns_names=()):
        """A certificate signed by this CA (or by ca/ca_key), with dns_names as DNS
        subjectAltNames besides a server's; returns (pem, key)."""
        key = self._key(name)
        pem = self._path(name + ".pem")
        lines = ['cn = "%s"' % cn, "signing_key"] + ['dns_name = "%s"' % d for d in dns_names]
        lines += ['dns_name = "localhost"', 'ip_address = "127.0.0.1"', "tls_www_server",
                  "encryption_key"] if server else ["tls_www_client"]
        tmpl = self._template(name, lines)
        run(["certtool", "--generate-certificate", "--load-privkey", key, "--load-ca-certificate",
             ca or self.ca, "--load-ca-privkey", ca_key or self.ca_key, "--template", tmpl,
             "--outfile", pem])
        return pem, key

    def self_signed(self, name, cn, dns_names=()):
        """A self-signed client certificate (no CA vouches for it); returns (pem, key)."""
        key = self._key(name)
        pem = self._path(name + ".pem")
        tmpl = self._template(name, ['cn = "%s"' % cn, "signing_key", "tls_www_client"] +
                              ['dns_name = "%s"' % d for d in dns_names])
        run(["certtool", "--generate-self-signed", "--load-privkey", key, "--template", tmpl,
             "--outfile", pem])
        return pem, key


SOFTHSM_MODULE = "/usr/lib/softhsm/libsofthsm2.so"
# test/faulty_p11.c, a module that wraps SoftHSM and fails on command (from the build).
FAULTY_P11 = os.environ.get("FAULTY_P11") or os.path.join(os.path.dirname(os.path.abspath(RELAY)), "test",
                                                          "faulty_p11.so")
PASSED_ENV = ("ASAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS", "SOFTHSM2_CONF", "LD_PRELOAD",
              # test/faulty_p11.c
              "FAULTY_P11_TARGET", "FAULTY_P11_FAULT", "FAULTY_P11_FAULT_FILE",
              "FAULTY_P11_HANG_SECONDS", "FAULTY_P11_LOG")


# A relay metadata object's label in a pkcs11-tool --list-objects listing (its
# CKA_APPLICATION, "kmip-relay metadata <UID>", is listed too): the generation, then
# " live" or, for a destroyed object's record, " destroyed <Destroy Date>".
METADATA_LABEL = re.compile(r"^\s*label:\s+'?(kmip-relay metadata \d+(?: live| destroyed \d+)?)'?$", re.M)


def usage_of(listing):
    """The usage flags of each key in a pkcs11-tool --list-objects listing:
    {(kind, label): [flag, ...]}, e.g. {("Private Key", "k"): ["sign"]}."""
    out, kind, label = {}, None, None
    for line in listing.splitlines():
        if line and not line.startswith(" "):
            kind, label = line.split(" Object")[0], None
        elif line.strip().startswith("label:"):
            label = line.split(":", 1)[1].strip().strip("'")
        elif line.strip().startswith("Usage:") and label is not None:
            flags = line.split(":", 1)[1].strip()
            out[(kind, label)] = [] if flags == "none" else flags.split(", ")
    return out


class ToolToken:
    """What Token and opencryptoki.OpenCryptokiToken share: made and read with
    pkcs11-tool through their tool(), logged in; dir is the token's directory."""

    def keypair(self, key_type, key_id, label):
        """Generates a key pair; returns the public key as DER SubjectPublicKeyInfo."""
        self.tool("--keypairgen", "--key-type", key_type, "--id", key_id, "--label", label)
        der = os.path.join(self.dir, "pub-%s.der" % key_id)
        self.tool("--read-object", "--type", "pubkey", "--id", key_id, "-o", der)
        return der

    def objects(self, object_type=None):
        """pkcs11-tool --list-objects output (of one --type if given)."""
        args = ["--list-objects"] + (["--type", object_type] if object_type else [])
        return self.tool(*args).stdout.decode()

    def usage(self):
        """The usage flags of each key (see usage_of)."""
        return usage_of(self.objects())


class Token(ToolToken):
    """A SoftHSM2 token of its own in directory, with SOFTHSM2_CONF for it. The
    same interface as opencryptoki.OpenCryptokiToken: module, label, pin, pin_file,
    env (for its tools), relay_env (what a relay on it needs in its environment),
    wrapper (a command prefix a relay on it runs under: none) and the methods."""

    module = SOFTHSM_MODULE
    kind = "softhsm"
    wrapper = ()

    def __init__(self, directory, label="kmip-relay", pin="1234", so_pin="123456"):
        self.dir, self.label, self.pin, self.so_pin = directory, label, pin, so_pin
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
        self.relay_env = {"SOFTHSM2_CONF": self.conf}
        run(["softhsm2-util", "--init-token", "--free", "--label", label, "--pin", pin,
             "--so-pin", so_pin], env=self.env)

    def reset(self):
        """The token made afresh: no objects, the same label and PINs."""
        run(["softhsm2-util", "--delete-token", "--token", self.label], env=self.env, timeout=30)
        run(["softhsm2-util", "--init-token", "--free", "--label", self.label, "--pin", self.pin,
             "--so-pin", self.so_pin], env=self.env, timeout=30)

    def close(self):
        """Nothing runs for a SoftHSM token (OpenCryptokiToken stops its daemon)."""

    def tool(self, *args):
        """pkcs11-tool on this token, logged in."""
        return run(["pkcs11-tool", "--module", self.module, "--token-label", self.label,
                    "--login", "--pin", self.pin] + list(args), env=self.env)

    def add_token(self, label, pin, so_pin="123456"):
        """Another token in the same SoftHSM configuration."""
        run(["softhsm2-util", "--init-token", "--free", "--label", label, "--pin", pin,
             "--so-pin", so_pin], env=self.env)

    def private_key_only(self, key_type, key_id, label):
        """A private key with no public key beside it (as OpenDNSSEC may leave)."""
        self.keypair(key_type, key_id, label)
        self.tool("--delete-object", "--type", "pubkey", "--id", key_id)

    def slots(self):
        """[(slot ID, token label)] of the slots with a token, in the module's order
        (that of C_GetSlotList(CK_TRUE)); an uninitialised token has label ''."""
        out = run(["softhsm2-util", "--show-slots"], env=self.env).stdout.decode()
        slots = []
        for block in re.split(r"^Slot (?=\d+$)", out, flags=re.M)[1:]:
            slot_id = int(block.split("\n", 1)[0])
            present = re.search(r"Token present:\s*(\S+)", block)
            label = re.search(r"Label:[ \t]*(.*)$", block, flags=re.M)
            if present and present.group(1) == "yes":
                slots.append((slot_id, label.group(1).strip() if label else ""))
        return slots


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
        self.env["LSAN_OPTIONS"] = "suppressions=%s:print_suppressions=0" % os.path.join(SRCDIR, "test", "lsan.supp")
        self.procs = []
        self.tokens = []  # closed in tearDown, once the relays are stopped
        self.relay_wrapper = ()  # set by softhsm_config for a token that needs one

    def tearDown(self):
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for t in self.tokens:
            t.close()
        reports = [f for f in os.listdir(self.tmp) if f.startswith("sanitizer")]
        texts = []
        for f in reports:
            with open(os.path.join(self.tmp, f)) as fh:
                texts.append(fh.read())
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.assertEqual(texts, [], "sanitizer reports")

    def config(self, **sections):
        """Writes a config: the test PKI and log file, with sections merged over them
        (a section that is not a dict, e.g. a "clients" list, is set as given)."""
        cfg = {
            "tls": {"certificate": self.pki.server, "key": self.pki.server_key,
                    "client_ca": self.pki.ca},
            "log": {"file": self.log},
        }
        for name, values in sections.items():
            if isinstance(values, dict):
                cfg.setdefault(name, {}).update(values)
            else:  # a list ("clients") replaces
                cfg[name] = values
        path = os.path.join(self.tmp, "relay-%d.json" % len(os.listdir(self.tmp)))
        with open(path, "w") as f:
            json.dump(cfg, f)
        return path

    def start(self, config, inetd=True, extra_args=(), env=None, wrapper=(), host="127.0.0.1", port=None):
        """Serves the relay behind systemd-socket-activate --accept on host:port (a
        free port unless given), in inetd mode (stdin) or fd-3 mode, run through
        wrapper (a command prefix) if given, inside the token's wrapper if it has
        one. Returns the port."""
        port = port or free_port(host)
        env = env or self.env
        cmd = ["systemd-socket-activate", "--accept", "-l", "%s:%d" % (host, port)]
        if inetd:
            cmd.append("--inetd")
        # systemd-socket-activate passes on only the variables it is told to.
        for name in sorted(env):
            if name in PASSED_ENV or os.environ.get(name) != env[name]:
                cmd += ["-E", "%s=%s" % (name, env[name])]
        cmd += list(self.relay_wrapper) + list(wrapper) + [RELAY, "--config", config] + list(extra_args)
        p = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.procs.append(p)
        wait_listening(port, host=host)
        return port

    def server_cert_for(self, token, key_type, key_id):
        """A server certificate, signed by the test CA, for a key pair made in token
        (a Token) with CKA_ID key_id (hex) and label tls-<key_id>."""
        der = token.keypair(key_type, key_id, "tls-" + key_id)
        pem = der[:-4] + ".pem"
        run(["certtool", "--load-pubkey", der, "--pubkey-info", "--inder", "--outfile", pem])
        cert = os.path.join(self.tmp, "server-%s.pem" % key_id)
        run(["certtool", "--generate-certificate", "--load-pubkey", pem, "--load-ca-certificate",
             self.pki.ca, "--load-ca-privkey", self.pki.ca_key, "--template",
             os.path.join(self.pki.dir, "server.tmpl"), "--outfile", cert])
        return cert

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

    def kmip(self, port, cert=True, username=None, password=None, version=(1, 2)):
        """A KmipClient on a new connection, with the client certificate or without."""
        return KmipClient(self.connect(port, self.tls_context(cert=cert)), username, password, version)

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

    def log_lines(self, wait_for=None, timeout=10, count=1):
        """The log file's lines, waiting until count of them contain wait_for. (A
        relay writes a response's audit records after sending it, and a
        connection's summary line after its last audit record.)"""
        deadline = time.time() + timeout
        while True:
            lines = []
            if os.path.exists(self.log):
                with open(self.log) as f:
                    lines = f.read().splitlines()
            if wait_for is None or sum(wait_for in l for l in lines) >= count or time.time() > deadline:
                return lines
            time.sleep(0.05)

    def softhsm_config(self, token, pkcs11=None, **sections):
        """A config whose pkcs11 section is token's (a Token or an
        OpenCryptokiToken: its module, its label, its PIN file, a lock file in the
        test's directory), updated with pkcs11. Returns the config's path; see
        use_token."""
        values = {"module": token.module, "token": "pkcs11:token=" + token.label,
                  "pin_file": token.pin_file, "lock_file": os.path.join(self.tmp, "p11.lock")}
        values.update(pkcs11 or {})
        self.use_token(token)
        return self.config(pkcs11=values, **sections)

    def use_token(self, token):
        """Relays started from now on reach token: SoftHSM's SOFTHSM2_CONF in
        their environment, openCryptoki's namespace as their wrapper (one
        openCryptoki token's namespace per test; SoftHSM tokens work inside it)."""
        self.env.update(token.relay_env)
        if token.wrapper:
            self.relay_wrapper = tuple(token.wrapper)

    @contextlib.contextmanager
    def pykmip(self, port, version="KMIP_1_2"):
        """An open PyKMIP ProxyKmipClient on port with the test client certificate,
        speaking the KMIPVersion named (PyKMIP's warnings about its own use of
        ssl.wrap_socket and SQLAlchemy are silenced)."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from kmip.core import enums
            from kmip.pie.client import ProxyKmipClient
            client = ProxyKmipClient(hostname="127.0.0.1", port=port, cert=self.client_cert,
                                     key=self.client_key, ca=self.pki.ca, config_file=os.devnull,
                                     kmip_version=getattr(enums.KMIPVersion, version))
            client.open()
            try:
                yield client
            finally:
                client.close()


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

OP_QUERY, OP_DISCOVER_VERSIONS, OP_SIGN, OP_ARCHIVE, OP_CHECK = 0x18, 0x1E, 0x21, 0x15, 0x09
# What Query lists, by the version that defines each (1.1 adds Discover Versions,
# 1.2 the cryptographic operations).
OPERATIONS_1_0 = [0x01, 0x02, 0x03, 0x08, 0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x0E, 0x0F, 0x12, 0x13, 0x14, 0x18]
OPERATIONS_1_2 = OPERATIONS_1_0 + [0x1E, 0x1F, 0x20, 0x21, 0x22, 0x23, 0x24, 0x25, 0x27]


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


# Key management over raw TTLV: more tags, operations and enumerations, request
# payload builders for the 1.x attribute encoding that Cascade and Krill send, and a
# small client that keeps its credential and checks each response's header.
T.update({
    "UniqueIdentifier": 0x420094, "Attribute": 0x420008, "AttributeName": 0x42000A,
    "AttributeIndex": 0x420009, "AttributeValue": 0x42000B, "TemplateAttribute": 0x420091,
    "CommonTemplateAttribute": 0x42001F, "PrivateKeyTemplateAttribute": 0x420065,
    "PublicKeyTemplateAttribute": 0x42006E, "PrivateKeyUniqueIdentifier": 0x420066,
    "PublicKeyUniqueIdentifier": 0x42006F, "Name": 0x420053, "NameValue": 0x420055,
    "NameType": 0x420054, "KeyFormatType": 0x420042, "KeyBlock": 0x420040, "KeyValue": 0x420045,
    "KeyMaterial": 0x420043, "PublicKey": 0x42006D, "PrivateKey": 0x420064, "Modulus": 0x420052,
    "PublicExponent": 0x42006C, "RevocationReason": 0x420081, "RevocationReasonCode": 0x420082,
    "State": 0x42008D, "Link": 0x42004A, "LinkType": 0x42004B, "LinkedObjectIdentifier": 0x42004C,
    "CryptographicAlgorithm": 0x420028, "CryptographicLength": 0x42002A,
    "CryptographicUsageMask": 0x42002C, "CryptographicParameters": 0x42002B,
    "PaddingMethod": 0x42005F, "HashingAlgorithm": 0x420038, "Data": 0x4200C2,
    "SignatureData": 0x4200C3, "AttributeReference": 0x42013B,
})

(OP_CREATE, OP_CREATE_KEY_PAIR, OP_REGISTER, OP_LOCATE, OP_GET, OP_GET_ATTRIBUTES,
 OP_GET_ATTRIBUTE_LIST, OP_ADD_ATTRIBUTE, OP_MODIFY_ATTRIBUTE, OP_DELETE_ATTRIBUTE, OP_ACTIVATE,
 OP_REVOKE, OP_DESTROY) = 0x01, 0x02, 0x03, 0x08, 0x0A, 0x0B, 0x0C, 0x0D, 0x0E, 0x0F, 0x12, 0x13, 0x14

# Result Reasons
(ITEM_NOT_FOUND, AUTHENTICATION_NOT_SUCCESSFUL, PERMISSION_DENIED,
 WRONG_KEY_LIFECYCLE_STATE) = 0x01, 0x03, 0x0C, 0x43
# Object Types, States, Key Format Types, Link Types, algorithms
OBJ_PUBLIC_KEY, OBJ_PRIVATE_KEY = 3, 4
PRE_ACTIVE, ACTIVE, DEACTIVATED, COMPROMISED = 1, 2, 3, 4
FMT_RAW, FMT_PKCS1, FMT_TRANSPARENT_RSA_PUBLIC = 0x01, 0x03, 0x0B
LINK_PUBLIC_KEY, LINK_PRIVATE_KEY = 0x102, 0x103
ALG_RSA, ALG_ECDSA = 4, 6
CESSATION_OF_OPERATION = 6


def attribute(name, typ, value):
    """A 1.x Attribute: Attribute Name (text) and Attribute Value."""
    return item(T["Attribute"], STRUCTURE, [item(T["AttributeName"], TEXT, name),
                                             item(T["AttributeValue"], typ, value)])


def name_value(name):
    """The value of a Name attribute: Name Value, Uninterpreted Text String."""
    return [item(T["NameValue"], TEXT, name), item(T["NameType"], ENUM, 1)]


def name_attribute(name):
    return attribute("Name", STRUCTURE, name_value(name))


def uid_item(uid):
    return item(T["UniqueIdentifier"], TEXT, uid)


def key_pair_payload(algorithm, length, private_name, public_name, private_usage=1,
                     public_usage=2, private_extra=(), public_extra=()):
    """A 1.x Create Key Pair payload as Cascade and Krill send it: algorithm and
    length in the common template, a Name and a Usage Mask in each half's."""
    return [
        item(T["CommonTemplateAttribute"], STRUCTURE, [
            attribute("Cryptographic Algorithm", ENUM, algorithm),
            attribute("Cryptographic Length", INTEGER, length)]),
        item(T["PrivateKeyTemplateAttribute"], STRUCTURE, [
            name_attribute(private_name),
            attribute("Cryptographic Usage Mask", INTEGER, private_usage)] + list(private_extra)),
        item(T["PublicKeyTemplateAttribute"], STRUCTURE, [
            name_attribute(public_name),
            attribute("Cryptographic Usage Mask", INTEGER, public_usage)] + list(public_extra)),
    ]


def revoke_payload(uid, code):
    return [uid_item(uid), item(T["RevocationReason"], STRUCTURE,
                                [item(T["RevocationReasonCode"], ENUM, code)])]


def sign_payload(uid, algorithm, data, padding=None, hashing=6):
    params = []
    if padding is not None:
        params.append(item(T["PaddingMethod"], ENUM, padding))
    params += [item(T["HashingAlgorithm"], ENUM, hashing),
               item(T["CryptographicAlgorithm"], ENUM, algorithm)]
    return [uid_item(uid), item(T["CryptographicParameters"], STRUCTURE, params),
            item(T["Data"], BYTES, data)]


def attributes_by_name(payload):
    """A 1.x Get Attributes payload's attributes: {Attribute Name: [decoded values]}."""
    out = {}
    for attr in find(payload, T["Attribute"]):
        out.setdefault(find(attr, T["AttributeName"])[0], []).append(
            find(attr, T["AttributeValue"])[0])
    return out


def key_material(get_payload):
    """(Key Format Type, Key Material) of a Get response payload's key object."""
    for tag, _, obj in get_payload:
        if tag in (T["PublicKey"], T["PrivateKey"], T["SymmetricKey"]):
            block = find(obj, T["KeyBlock"])[0]
            value = find(block, T["KeyValue"])[0]
            return find(block, T["KeyFormatType"])[0], find(value, T["KeyMaterial"])[0]
    raise AssertionError("no key object in the Get response")


class KmipError(Exception):
    def __init__(self, operation, reason, message):
        super().__init__("operation 0x%02X failed: reason 0x%X %r" % (operation, reason or 0, message))
        self.operation, self.reason, self.message = operation, reason, message


class KmipClient:
    """One TLS connection that sends one-item requests, each with the client's
    Username and Password if it has them, in the version given per call. Each
    response's header is checked (the request's version, a Date-Time Time Stamp,
    Batch Count 1); every batch item received is kept in .items, as (the
    request's protocol version, the decoded item)."""

    def __init__(self, sock, username=None, password=None, version=(1, 2)):
        self.sock, self.username, self.password, self.version = sock, username, password, version
        self.items = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.sock.close()

    def close(self):
        self.sock.close()

    def call(self, operation, payload=(), version=None, username=None, password=None):
        """The response batch item (a dict) of one request."""
        version = version or self.version
        resp = exchange(self.sock, request(operation, payload, version=version,
                                           username=username or self.username,
                                           password=password or self.password))
        _, _, children, _ = decode(resp)
        header = find(children, T["ResponseHeader"])[0]
        pv = find(header, T["ProtocolVersion"])[0]
        got = (find(pv, T["Major"])[0], find(pv, T["Minor"])[0])
        if got != tuple(version):
            raise AssertionError("response version %r to a %r request" % (got, tuple(version)))
        stamps = [ty for t, ty, _ in header if t == T["TimeStamp"]]
        if stamps != [DATETIME]:
            raise AssertionError("response Time Stamp types %r" % stamps)
        if find(header, T["BatchCount"]) != [1]:
            raise AssertionError("response Batch Count %r" % find(header, T["BatchCount"]))
        (bi,) = batch_items(resp)
        if T["UniqueBatchItemID"] in bi:
            raise AssertionError("a Unique Batch Item ID the request did not have")
        self.items.append((tuple(version), bi))
        return bi

    def is_closed(self):
        """Whether the relay has closed the connection: one more request gets no
        answer."""
        try:
            exchange(self.sock, request(OP_QUERY, [item(T["QueryFunction"], ENUM, 1)], version=self.version,
                                        username=self.username, password=self.password))
        except (EOFError, ConnectionError, ssl.SSLError):
            return True
        return False

    def ok(self, operation, payload=(), version=None, **kw):
        """The response payload's children; raises KmipError on failure."""
        bi = self.call(operation, payload, version, **kw)
        if bi[T["ResultStatus"]] != 0:
            raise KmipError(operation, bi.get(T["ResultReason"]), bi.get(T["ResultMessage"]))
        if bi.get(T["Operation"]) != operation:
            raise AssertionError("response Operation %r" % bi.get(T["Operation"]))
        return bi.get(T["ResponsePayload"], [])

    def fails(self, operation, payload=(), version=None, **kw):
        """The Result Reason of a request that must fail."""
        bi = self.call(operation, payload, version, **kw)
        if bi[T["ResultStatus"]] != 1:
            raise AssertionError("operation 0x%02X succeeded; it should fail" % operation)
        return bi.get(T["ResultReason"])

    def get_attributes(self, uid, names=(), version=None):
        """{Attribute Name: [values]} of an object, through a 1.x Get Attributes."""
        payload = self.ok(OP_GET_ATTRIBUTES, [uid_item(uid)] + [
            item(T["AttributeName"], TEXT, n) for n in names], version or (1, 0))
        return attributes_by_name(payload)


# Both attribute encodings: KMIP 1.x Attribute structures (Attribute Name / Value) in
# Template-Attribute containers, KMIP 2.x items under their own tags in Attributes
# containers (custom "x-" attributes as 2.x vendor Attribute structures).
T.update({
    "Attributes": 0x420125, "CommonAttributes": 0x420126, "PrivateKeyAttributes": 0x420127,
    "PublicKeyAttributes": 0x420128, "NewAttribute": 0x42013D, "SymmetricKey": 0x42008F,
    "Key": 0x42003F, "CryptographicDomainParameters": 0x420029, "RecommendedCurve": 0x420075,
    "KeyWrappingSpecification": 0x420047, "WrappingMethod": 0x42009E, "MaximumItems": 0x42004F,
    "OffsetItems": 0x4200D4, "LocatedItems": 0x4200D5, "ContactInformation": 0x420022,
    "ActivationDate": 0x420001, "InitialDate": 0x420039, "LastChangeDate": 0x420048,
    "DeactivationDate": 0x42002F, "CompromiseDate": 0x420020, "Sensitive": 0x420120,
    "Extractable": 0x420122,
})

ATTRIBUTE_TAGS = {  # KMIP attribute name -> its 2.x tag
    "Unique Identifier": T["UniqueIdentifier"], "Name": T["Name"], "Object Type": T["ObjectType"],
    "Cryptographic Algorithm": T["CryptographicAlgorithm"],
    "Cryptographic Length": T["CryptographicLength"],
    "Cryptographic Usage Mask": T["CryptographicUsageMask"],
    "Cryptographic Domain Parameters": T["CryptographicDomainParameters"],
    "State": T["State"], "Link": T["Link"], "Contact Information": T["ContactInformation"],
    "Activation Date": T["ActivationDate"], "Initial Date": T["InitialDate"],
    "Last Change Date": T["LastChangeDate"], "Deactivation Date": T["DeactivationDate"],
    "Compromise Date": T["CompromiseDate"], "Revocation Reason": T["RevocationReason"],
    "Sensitive": T["Sensitive"], "Extractable": T["Extractable"],
}
ATTRIBUTE_NAMES = {tag: name for name, tag in ATTRIBUTE_TAGS.items()}

CONTAINERS = {  # kind -> (1.x tag, 2.x tag)
    "template": (T["TemplateAttribute"], T["Attributes"]),
    "common": (T["CommonTemplateAttribute"], T["CommonAttributes"]),
    "private": (T["PrivateKeyTemplateAttribute"], T["PrivateKeyAttributes"]),
    "public": (T["PublicKeyTemplateAttribute"], T["PublicKeyAttributes"]),
}


def attr(version, name, typ, value):
    """One attribute in the encoding of version: a 1.x Attribute, a 2.x item under the
    attribute's tag, or for "x-..." custom names a 2.x vendor Attribute ("x", name)."""
    if version[0] < 2:
        return attribute(name, typ, value)
    if name in ATTRIBUTE_TAGS:
        return item(ATTRIBUTE_TAGS[name], typ, value)
    vendor, _, rest = name.partition("-")
    return item(T["Attribute"], STRUCTURE, [item(T["VendorIdentification"], TEXT, vendor),
                                             item(T["AttributeName"], TEXT, rest),
                                             item(T["AttributeValue"], typ, value)])


def name_attr(version, name):
    return attr(version, "Name", STRUCTURE, name_value(name))


def container(version, kind, attrs):
    """A template container ("template", "common", "private", "public") of encoded
    attributes, under its 1.x or 2.x tag."""
    return item(CONTAINERS[kind][0 if version[0] < 2 else 1], STRUCTURE, list(attrs))


def attribute_refs(version, names):
    """Get Attributes selectors: 1.x Attribute Names, 2.x Attribute References."""
    if version[0] < 2:
        return [item(T["AttributeName"], TEXT, n) for n in names]
    return [item(T["AttributeReference"], ENUM, ATTRIBUTE_TAGS[n]) for n in names]


def returned_attributes(payload, version):
    """A Get Attributes payload's attributes as {name: [values]}, in either encoding
    (2.x vendor attributes as "vendor-name")."""
    if version[0] < 2:
        return attributes_by_name(payload)
    out = {}
    for tag, _, value in find(payload, T["Attributes"])[0] if find(payload, T["Attributes"]) else []:
        key = ATTRIBUTE_NAMES.get(tag, "0x%06X" % tag)
        if tag == T["Attribute"]:
            key = "%s-%s" % (find(value, T["VendorIdentification"])[0],
                             find(value, T["AttributeName"])[0])
            value = find(value, T["AttributeValue"])[0]
        out.setdefault(key, []).append(value)
    return out


def der_tlv(data):
    """One DER element at the start of data: (tag, content, rest). Lengths must be
    definite and minimal; raises ValueError otherwise."""
    if len(data) < 2:
        raise ValueError("DER element truncated")
    tag, n, off = data[0], data[1], 2
    if n & 0x80:
        k = n & 0x7F
        if k == 0 or k > 4 or len(data) < 2 + k or data[2] == 0:
            raise ValueError("DER length not definite and minimal")
        n, off = int.from_bytes(data[2:2 + k], "big"), 2 + k
        if n < 0x80:
            raise ValueError("DER long-form length under 128")
    if len(data) < off + n:
        raise ValueError("DER content truncated")
    return tag, data[off:off + n], data[off + n:]


def der_integer_sequence(data):
    """The integers of data, which must be exactly one DER SEQUENCE of minimally
    encoded INTEGERs (an RSAPublicKey, an ECDSA-Sig-Value); raises ValueError."""
    tag, body, rest = der_tlv(data)
    if tag != 0x30 or rest:
        raise ValueError("not exactly one SEQUENCE")
    out = []
    while body:
        tag, v, body = der_tlv(body)
        if tag != 0x02 or not v:
            raise ValueError("not an INTEGER")
        if len(v) > 1 and ((v[0] == 0 and v[1] < 0x80) or (v[0] == 0xFF and v[1] >= 0x80)):
            raise ValueError("INTEGER not minimally encoded")
        out.append(int.from_bytes(v, "big", signed=True))
    return out


def bigint_value(data):
    """A TTLV Big Integer's value (two's complement, big-endian); raises ValueError
    unless its length is a multiple of 8 padded with the fewest sign bytes."""
    if not data or len(data) % 8:
        raise ValueError("Big Integer length %d" % len(data))
    value = int.from_bytes(data, "big", signed=True)
    if len(data) > 8 and data[:8] in (b"\0" * 8, b"\xff" * 8) and (data[8] & 0x80) == (data[0] & 0x80):
        raise ValueError("Big Integer padded with more sign bytes than needed")
    return value


# Keys on a SoftHSM token of the test's own (test_lifecycle.py, test_crypto.py): the
# versions, Result Reasons and enumerations they use, payload builders, and the
# test case.
V1, V2 = (1, 2), (2, 1)   # PyKMIP's default version, and the newest
UID_RE = r"\A[0-9A-F]{64}_(pub|priv|secret)\Z"

# Result Reasons
MISSING_DATA, INVALID_FIELD, FEATURE_NOT_SUPPORTED, ILLEGAL_OPERATION = 0x06, 0x07, 0x08, 0x0B
KEY_FORMAT_TYPE_NOT_SUPPORTED, ATTRIBUTE_NOT_FOUND, ATTRIBUTE_READ_ONLY = 0x10, 0x21, 0x22
INVALID_ATTRIBUTE_VALUE, INVALID_OBJECT_TYPE, GENERAL_FAILURE = 0x2D, 0x30, 0x100
SUCCESS, FAILED = 0, 1


def failure(bi):
    """(Result Status, Result Reason) of a decoded batch item."""
    return bi[T["ResultStatus"]], bi.get(T["ResultReason"])
# Enumerations
ALG_AES, ALG_EC, ALG_ED25519 = 0x03, 0x1A, 0x37
OBJ_SYMMETRIC_KEY = 2
FMT_X509, FMT_TRANSPARENT_SYMMETRIC = 0x05, 0x07
CURVE_P256, CURVE_P384, CURVE_P521 = 0x07, 0x0A, 0x0D
KEY_COMPROMISE = 2
WRAP_ENCRYPT = 1

USAGE_ENCRYPT, USAGE_DECRYPT, USAGE_MAC_GENERATE, USAGE_MAC_VERIFY = 0x04, 0x08, 0x80, 0x100
ALG_HMAC_SHA256, ALG_HMAC_SHA512 = 0x09, 0x0B


def create_payload(version, algorithm=ALG_AES, length=256, name=None,
                   object_type=OBJ_SYMMETRIC_KEY):
    """A Create payload; algorithm or length None leaves that attribute out."""
    attrs = []
    if algorithm is not None:
        attrs.append(attr(version, "Cryptographic Algorithm", ENUM, algorithm))
    if length is not None:
        attrs.append(attr(version, "Cryptographic Length", INTEGER, length))
    if name is not None:
        attrs.append(name_attr(version, name))
    return [item(T["ObjectType"], ENUM, object_type), container(version, "template", attrs)]


def pair_payload(version, algorithm, length=None, curve=None, private_name=None,
                 public_name=None, private_usage=None, public_usage=None):
    """A Create Key Pair payload: algorithm, length and curve in the common
    template or attributes, the Names and Usage Masks in each half's."""
    common = [] if algorithm is None else [attr(version, "Cryptographic Algorithm", ENUM, algorithm)]
    if length is not None:
        common.append(attr(version, "Cryptographic Length", INTEGER, length))
    if curve is not None:
        common.append(attr(version, "Cryptographic Domain Parameters", STRUCTURE,
                           [item(T["RecommendedCurve"], ENUM, curve)]))
    private = [name_attr(version, private_name)] if private_name else []
    public = [name_attr(version, public_name)] if public_name else []
    if private_usage is not None:
        private.append(attr(version, "Cryptographic Usage Mask", INTEGER, private_usage))
    if public_usage is not None:
        public.append(attr(version, "Cryptographic Usage Mask", INTEGER, public_usage))
    return [container(version, "common", common), container(version, "private", private),
            container(version, "public", public)]


def get_payload(uid, key_format=None, wrapping=False):
    payload = [uid_item(uid)]
    if key_format is not None:
        payload.append(item(T["KeyFormatType"], ENUM, key_format))
    if wrapping:
        payload.append(item(T["KeyWrappingSpecification"], STRUCTURE,
                            [item(T["WrappingMethod"], ENUM, WRAP_ENCRYPT)]))
    return payload


def reason_in(version, v1, v2):
    """The Result Reason a failure gets: v1 in KMIP 1.x, v2 in 2.x."""
    return v1 if version[0] < 2 else v2


class TokenTestCase(RelayTestCase):
    """A token of the test's own - SoftHSM, or token_class's kind (see
    opencryptoki.OnOpenCryptoki) - and relays in front of it."""

    token_class = Token

    def setUp(self):
        super().setUp()
        self.token = self.token_class(os.path.join(self.tmp, "hsm"))
        self.tokens.append(self.token)

    def serve(self, keys=None, **pkcs11):
        sections = {"keys": keys} if keys else {}
        return self.start(self.softhsm_config(self.token, pkcs11, **sections))

    def client(self, port, version=V1):
        return KmipClient(self.connect(port), version=version)

    def state(self, c, uid, version=V1):
        attrs = returned_attributes(c.ok(OP_GET_ATTRIBUTES, [uid_item(uid)] +
                                         attribute_refs(version, ["State"]), version), version)
        return attrs["State"]

    def create_aes(self, c, version=V1, name=None, length=256):
        payload = c.ok(OP_CREATE, create_payload(version, length=length, name=name), version)
        return find(payload, T["UniqueIdentifier"])[0]

    def create_pair(self, c, version=V1, algorithm=ALG_EC, length=None, curve=CURVE_P256,
                    private_name=None, public_name=None):
        """(private UID, public UID) of a new key pair."""
        payload = c.ok(OP_CREATE_KEY_PAIR, pair_payload(version, algorithm, length, curve,
                                                        private_name, public_name), version)
        return (find(payload, T["PrivateKeyUniqueIdentifier"])[0],
                find(payload, T["PublicKeyUniqueIdentifier"])[0])

    def check_pair_uids(self, private, public):
        self.assertRegex(private, UID_RE)
        self.assertRegex(public, UID_RE)
        self.assertEqual((private[64:], public[64:]), ("_priv", "_pub"))
        self.assertEqual(private[:64], public[:64])


# Cryptographic operations (test_crypto.py): their tags, codes and enumerations, the
# Cryptographic Parameters of a request, and the python-cryptography public key of a
# Get response.
T.update({
    "DataLength": 0x4200C4, "MACData": 0x4200C6, "ValidityIndicator": 0x42009B,
    "DigestedData": 0x420107, "MaskGeneratorHashingAlgorithm": 0x420102,
    "BlockCipherMode": 0x420011, "TagLength": 0x4200CE, "RandomIV": 0x4200C5,
})
OP_SIGNATURE_VERIFY, OP_MAC, OP_MAC_VERIFY, OP_RNG_RETRIEVE = 0x22, 0x23, 0x24, 0x25
OP_ENCRYPT, OP_DECRYPT = 0x1F, 0x20
MODE_CBC, MODE_ECB, MODE_GCM, PAD_PKCS5 = 0x01, 0x02, 0x09, 0x03
MISSING_INITIALIZATION_VECTOR = 0x34
T.update({"IVCounterNonce": 0x42003D, "AEADData": 0x4200FE, "AEADTag": 0x4200FF})
VALID, INVALID = 1, 2  # Validity Indicator
NUMERIC_RANGE, INCOMPATIBLE_CRYPTOGRAPHIC_USAGE_MASK = 0x1B, 0x29
UNSUPPORTED_CRYPTOGRAPHIC_PARAMETERS, CRYPTOGRAPHIC_FAILURE = 0x3E, 0x0A
PAD_NONE, PAD_OAEP, PAD_PKCS5, PAD_PKCS1_V15, PAD_PSS = 0x01, 0x02, 0x03, 0x08, 0x0A
HASH_MD5, HASH_SHA1, HASH_SHA256, HASH_SHA384, HASH_SHA512 = 0x03, 0x04, 0x06, 0x07, 0x08
ALG_HMAC_SHA384 = 0x0A
USAGE_SIGN, USAGE_VERIFY = 0x01, 0x02


def crypto_parameters(padding=None, hashing=None, algorithm=None, **more):
    """A Cryptographic Parameters structure with the fields given (more: other
    enumeration fields by their T name, e.g. BlockCipherMode=1)."""
    fields = []
    if padding is not None:
        fields.append(item(T["PaddingMethod"], ENUM, padding))
    if hashing is not None:
        fields.append(item(T["HashingAlgorithm"], ENUM, hashing))
    if algorithm is not None:
        fields.append(item(T["CryptographicAlgorithm"], ENUM, algorithm))
    for name, value in sorted(more.items()):
        fields.append(item(T[name], ENUM, value))
    return item(T["CryptographicParameters"], STRUCTURE, fields)


def public_key_of(fmt, material):
    """The python-cryptography public key of a Get response's key material: PKCS#1
    (read through a PEM "RSA PUBLIC KEY" wrapper), X.509 or Raw
    SubjectPublicKeyInfo, or Transparent RSA Public Key."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    if fmt == FMT_TRANSPARENT_RSA_PUBLIC:
        n = int.from_bytes(find(material, T["Modulus"])[0], "big")
        e = int.from_bytes(find(material, T["PublicExponent"])[0], "big")
        return rsa.RSAPublicNumbers(e, n).public_key()
    if fmt == FMT_PKCS1:
        return serialization.load_pem_public_key(
            b"-----BEGIN RSA PUBLIC KEY-----\n" + base64.encodebytes(material) +
            b"-----END RSA PUBLIC KEY-----\n")
    return serialization.load_der_public_key(material)


class FaultTokenTestCase(TokenTestCase):
    """A TokenTestCase whose relays may load test/faulty_p11.so in front of the
    token: what it did goes to self.fault_log, and the crash reports that its
    faults provoke on purpose are dropped at the end. self.lock_file is the
    relays' pkcs11.lock_file."""

    def setUp(self):
        super().setUp()
        self.fault_log = os.path.join(self.tmp, "faults")
        self.lock_file = os.path.join(self.tmp, "p11.lock")
        self.env.update(SOFTHSM2_CONF=self.token.conf, FAULTY_P11_LOG=self.fault_log)

    def tearDown(self):
        drop_injected_crash_reports(self.sanitizer_prefix, self.fault_log)
        super().tearDown()


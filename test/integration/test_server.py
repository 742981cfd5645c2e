# SPDX-License-Identifier: BSD-3-Clause
"""The one-connection server over real TLS on 127.0.0.1, behind
systemd-socket-activate in inetd and fd-3 modes."""

import ctypes
import hashlib
import json
import os
import re
import socket
import ssl
import struct
import subprocess
import time
import unittest
import warnings

from relaytest import (BYTES, DATETIME, ENUM, INTEGER, OP_DISCOVER_VERSIONS, OP_QUERY, OP_ARCHIVE,
                       children, free_port, wait_listening,
                       OPERATIONS_1_0, OPERATIONS_1_2,
                       OP_RNG_RETRIEVE, PKI, RELAY, STRUCTURE, TEXT, RelayTestCase, T, TokenTestCase, batch_item, batch_items, decode,
                       exchange, failure, find, item, protocol_version, raw_children, request,
                       request_message, response_version, spki_sha256, vector)

# Result Status and Result Reason values (KMIP 1.0-2.1).
SUCCESS, FAILED = 0, 1
RESPONSE_TOO_LARGE, AUTHENTICATION_NOT_SUCCESSFUL, INVALID_MESSAGE = 2, 3, 4
OPERATION_NOT_SUPPORTED, FEATURE_NOT_SUPPORTED, UNSUPPORTED_PROTOCOL_VERSION = 5, 8, 0x3F
CONTINUE, STOP, UNDO = 1, 2, 3
OPERATION_UNDONE = 3  # Result Status

ALL_VERSIONS = [(2, 1), (2, 0), (1, 4), (1, 3), (1, 2), (1, 1), (1, 0)]
QUERY_OPERATIONS = item(T["QueryFunction"], ENUM, 1)
QUERY_SERVER_INFORMATION = item(T["QueryFunction"], ENUM, 3)
QUERY_BOTH = [QUERY_OPERATIONS, QUERY_SERVER_INFORMATION]


def versions_payload(versions):
    return [protocol_version(*v) for v in versions]


def response_item(operation, status, payload=None, unique_id=None):
    """The encoded response Batch Item a successful operation gets."""
    fields = [] if operation is None else [item(T["Operation"], ENUM, operation)]
    if unique_id is not None:
        fields.append(item(T["UniqueBatchItemID"], BYTES, unique_id))
    fields.append(item(T["ResultStatus"], ENUM, status))
    if payload is not None:
        fields.append(item(T["ResponsePayload"], STRUCTURE, payload))
    return item(T["BatchItem"], STRUCTURE, fields)


def header_fields(response):
    """The Response Header's children as (tag, type, value)."""
    _, _, children, _ = decode(response)
    return find(children, T["ResponseHeader"])[0]


class QueryTest(RelayTestCase):
    def query(self, port):
        with self.connect(port) as s:
            resp = exchange(s, request(OP_QUERY, QUERY_BOTH))
        self.assertEqual(response_version(resp), (1, 2))
        (bi,) = batch_items(resp)
        self.assertEqual(bi[T["ResultStatus"]], 0)
        self.assertEqual(bi[T["Operation"]], OP_QUERY)
        return bi

    def test_query_inetd_mode(self):
        self.query(self.start(self.config(), inetd=True))
        self.assertTrue(any('"operation":"Query"' in l for l in self.log_lines(wait_for="connection peer=")))

    def test_query_fd3_mode(self):
        self.query(self.start(self.config(), inetd=False))


class MutualTLSTest(RelayTestCase):
    """tls.require_client_certificate is true by default."""

    def test_client_without_certificate_is_refused(self):
        port = self.start(self.config())
        for version in (ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_2):
            with self.subTest(version=version):
                # A credential does not stand in for the required certificate.
                local = self.refused(port, self.tls_context(cert=False, maximum_version=version),
                                     request(OP_QUERY, [QUERY_OPERATIONS], username="u", password="p"))
                summary = self.summary(local)
                self.assertEqual(summary["end"], "TLS handshake failed")
                self.assertEqual((summary["client"], summary["dn"], summary["tls"], summary["requests"]),
                                 ("-", "-", "-", "0"))
        self.assertEqual(self.audit_records(), [])

    def test_client_certificate_of_untrusted_ca_is_refused(self):
        other = PKI(os.path.join(self.tmp, "other-pki"))
        cert, key = other.issue("client", "kmip-client")
        port = self.start(self.config())
        for version in (ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_2):
            with self.subTest(version=version):
                local = self.refused(port, self.tls_context(certfile=cert, keyfile=key, maximum_version=version))
                self.assertEqual(self.summary(local)["end"], "TLS handshake failed")
                self.assertTrue(any("]: TLS handshake with 127.0.0.1:%d failed: " % local in l
                                    for l in self.log_lines()))
        self.assertEqual(self.audit_records(), [])


class OptionalClientCertificateTest(RelayTestCase):
    """tls.require_client_certificate false: a Username and Password, checked
    against a clients entry's password_sha256, stand in."""

    def setUp(self):
        super().setUp()
        self.port = self.start(self.config(
            tls={"require_client_certificate": False},
            clients=[{"name": "token-1", "username": "token-1",
                      "password_sha256": hashlib.sha256(b"pin-1234").hexdigest()},
                     {"name": "cert-client", "certificate_name": "kmip-client"}],
            pkcs11={"pin_file": os.devnull}))

    def test_password_credential_is_answered(self):
        with self.connect(self.port, self.tls_context(cert=False)) as s:
            local = s.getsockname()[1]
            resp = exchange(s, request(OP_QUERY, [QUERY_SERVER_INFORMATION], username="token-1",
                                       password="pin-1234"))
        (bi,) = batch_items(resp)
        self.assertEqual(failure(bi), (SUCCESS, None))
        self.assertTrue(find(bi[T["ResponsePayload"]], T["VendorIdentification"])[0].startswith("kmip-relay"))
        summary = self.summary(local)
        self.assertEqual((summary["client"], summary["dn"], summary["requests"], summary["end"]),
                         ("-", "-", "1", "client closed the connection"))
        (rec,) = self.audit_records()
        self.assertEqual((rec["client"], rec["operation"], rec["result"]), ("token-1", "Query", "Success"))

    def test_audit_record_escapes_the_username(self):
        """A Username nobody knows is named in the audit record and the log line,
        its control characters, quotes and backslashes escaped, so that it
        cannot forge a line."""
        username = 'a"b\\c\nd\u00e9\x1b[2J'
        with self.connect(self.port, self.tls_context(cert=False)) as s:
            local = s.getsockname()[1]
            exchange(s, request(OP_QUERY, [QUERY_SERVER_INFORMATION], username=username, password="pin-1234"))
        self.summary(local)
        (rec,) = self.audit_records()
        escaped = 'user:a\\"b\\\\c\\nd\u00e9\\x1B[2J'
        self.assertEqual((rec["client"], rec["operation"], rec["result"]),
                         (escaped, "Query", "Authentication Not Successful"))
        lines = self.log_lines()
        self.assertIn("authentication failed: %s: no clients entry has this username (answered after 1 s)" % escaped,
                      "\n".join(lines))
        self.assertFalse([l for l in lines if l.startswith("d\u00e9")])

    def test_no_credential_is_refused(self):
        with self.connect(self.port, self.tls_context(cert=False)) as s:
            local = s.getsockname()[1]
            resp = exchange(s, request(OP_QUERY, [QUERY_OPERATIONS]))
        self.assertEqual(response_version(resp), (1, 2))
        (bi,) = batch_items(resp)
        self.assertEqual(failure(bi), (FAILED, AUTHENTICATION_NOT_SUCCESSFUL))
        self.assertNotIn(T["Operation"], bi)
        self.assertNotIn(T["ResponsePayload"], bi)
        self.assertEqual(bi[T["ResultMessage"]], "authentication failed")
        self.assertIn("authentication failed: anonymous: no certificate and no Username and Password",
                      "\n".join(self.log_lines(wait_for="authentication failed")))
        summary = self.summary(local)
        self.assertEqual((summary["client"], summary["requests"], summary["end"]),
                         ("-", "1", "authentication failed"))
        (rec,) = self.audit_records()
        self.assertEqual((rec["client"], rec["operation"], rec["result"]),
                         ("anonymous", "Query", "Authentication Not Successful"))

    def test_trusted_certificate_is_still_used(self):
        with self.connect(self.port) as s:
            local = s.getsockname()[1]
            (bi,) = batch_items(exchange(s, request(OP_QUERY, [QUERY_OPERATIONS])))
        self.assertEqual(failure(bi), (SUCCESS, None))
        summary = self.summary(local)
        self.assertEqual((summary["client"], summary["dn"]),
                         ("sha256:" + spki_sha256(self.client_cert), "CN=kmip-client"))

    def test_certificate_of_untrusted_ca_is_refused(self):
        other = PKI(os.path.join(self.tmp, "other-pki"))
        cert, key = other.issue("client", "kmip-client")
        for version in (ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_2):
            with self.subTest(version=version):
                local = self.refused(self.port, self.tls_context(certfile=cert, keyfile=key,
                                                                 maximum_version=version),
                                     request(OP_QUERY, [QUERY_OPERATIONS], username="u", password="p"))
                self.assertEqual(self.summary(local)["end"], "TLS handshake failed")
        self.assertEqual(self.audit_records(), [])


class TimeoutTest(RelayTestCase):
    def test_idle_timeout_closes_the_connection(self):
        port = self.start(self.config(timeouts={"idle": 1}))
        with self.connect(port) as s:
            local = s.getsockname()[1]
            s.settimeout(10)
            t0 = time.monotonic()
            try:
                data = s.recv(1)
            except (ssl.SSLError, ConnectionError):
                data = b""
            elapsed = time.monotonic() - t0
        self.assertEqual(data, b"")
        self.assertGreater(elapsed, 0.5)
        self.assertLess(elapsed, 6)
        summary = self.summary(local)
        self.assertEqual((summary["requests"], summary["end"]), ("0", "idle timeout"))


class FramingTest(RelayTestCase):
    def oversized(self, port, length):
        with self.connect(port) as s:
            local = s.getsockname()[1]
            s.settimeout(5)  # the default idle timeout is 300 s: waiting for a body would fail here
            t0 = time.monotonic()
            resp = exchange(s, struct.pack(">II", T["RequestMessage"] << 8 | STRUCTURE, length))
            self.assertLess(time.monotonic() - t0, 5)
            self.assertEqual(s.recv(1), b"")  # and the relay closed the connection
        return local, resp

    def test_oversized_length_is_refused_before_the_body(self):
        port = self.start(self.config(limits={"max_message_size": 4096}))
        for length in (0x7FFFFFF8, 0x80000000, 0xFFFFFFF8, 4096 - 8 + 1):
            with self.subTest(length=hex(length)):
                local, resp = self.oversized(port, length)
                self.assertEqual(response_version(resp), (1, 0))
                (bi,) = batch_items(resp)
                self.assertEqual(failure(bi), (FAILED, INVALID_MESSAGE))
                self.assertEqual(bi[T["ResultMessage"]], "TTLV: message exceeds the size limit")
                self.assertNotIn(T["Operation"], bi)
                summary = self.summary(local)
                self.assertEqual((summary["requests"], summary["end"]), ("0", "request over the size limit"))

    def test_message_at_the_size_limit_is_read(self):
        port = self.start(self.config(limits={"max_message_size": 4096}))

        def query(filler):  # an extension tag: the Query fails, but only once read
            return request(OP_QUERY, [QUERY_OPERATIONS, item(0x540000, TEXT, "x" * filler)])
        msg = query(4096 - len(query(0)))
        self.assertEqual(len(msg), 4096)
        with self.connect(port) as s:
            (bi,) = batch_items(exchange(s, msg))
        self.assertEqual(bi[T["Operation"]], OP_QUERY)
        self.assertEqual(failure(bi), (FAILED, 7))  # Invalid Field
        self.assertEqual(bi[T["ResultMessage"]], "Query takes only Query Function items")

    def test_disconnect_inside_a_message_leaves_the_next_connection_alone(self):
        port = self.start(self.config())
        msg = request(OP_QUERY, [QUERY_OPERATIONS])
        locals_ = []
        for cut in (8 + (len(msg) - 8) // 2, 4):
            s = self.connect(port)
            locals_.append(s.getsockname()[1])
            s.sendall(msg[:cut])
            s.close()  # no close_notify: the socket just goes
        with self.connect(port) as s:
            (bi,) = batch_items(exchange(s, msg))
        self.assertEqual(failure(bi), (SUCCESS, None))
        for local in locals_:
            summary = self.summary(local)
            self.assertEqual((summary["requests"], summary["end"]),
                             ("0", "client closed the connection inside a message"))

    def test_close_notify_inside_a_message(self):
        port = self.start(self.config())
        msg = request(OP_QUERY, [QUERY_OPERATIONS])
        s = self.connect(port)
        local = s.getsockname()[1]
        s.sendall(msg[:len(msg) - 16])
        s.unwrap().close()
        self.assertEqual(self.summary(local)["end"], "client closed the connection inside a message")

    def test_bad_padding_gets_invalid_message_in_the_request_version(self):
        port = self.start(self.config())
        text = struct.pack(">IIB", T["Username"] << 8 | TEXT, 1, ord("u"))
        query = batch_item(OP_QUERY, [QUERY_OPERATIONS, item(0x540000, TEXT, "u")])
        for version, where in (((1, 3), "header"), ((2, 0), "payload")):
            with self.subTest(where=where):
                msg = bytearray(request_message([query], version=version, username="u"))
                # "u" is a one-byte Text String: seven zero padding bytes follow it.
                at = bytes(msg).index(text) if where == "header" else bytes(msg).rindex(text[3:])
                msg[at + 9 + 3] = 0x41
                with self.connect(port) as s:
                    resp = exchange(s, bytes(msg))
                    self.assertEqual(response_version(resp), version)
                    (bi,) = batch_items(resp)
                    self.assertEqual(failure(bi), (FAILED, INVALID_MESSAGE))
                    self.assertEqual(bi[T["ResultMessage"]], "TTLV: non-zero padding")
                    self.assertNotIn(T["Operation"], bi)
                    # The connection carries on.
                    (bi,) = batch_items(exchange(s, request(OP_QUERY, [QUERY_OPERATIONS])))
                    self.assertEqual(failure(bi), (SUCCESS, None))
        self.assertEqual(len([l for l in self.log_lines() if l.endswith("]: malformed request: TTLV: non-zero padding")]), 2)

    def test_unreadable_version_gets_invalid_message_in_1_0(self):
        port = self.start(self.config())
        pv = item(T["ProtocolVersion"], STRUCTURE, [item(T["Major"], ENUM, 1), item(T["Minor"], INTEGER, 2)])
        msg = item(T["RequestMessage"], STRUCTURE, [
            item(T["RequestHeader"], STRUCTURE, [pv, item(T["BatchCount"], INTEGER, 1)]),
            batch_item(OP_QUERY, [QUERY_OPERATIONS])])
        with self.connect(port) as s:
            resp = exchange(s, msg)
        self.assertEqual(response_version(resp), (1, 0))
        (bi,) = batch_items(resp)
        self.assertEqual(failure(bi), (FAILED, INVALID_MESSAGE))
        self.assertEqual(bi[T["ResultMessage"]], "KMIP: field has the wrong item type")

    def test_missing_batch_count_gets_invalid_message_in_the_request_version(self):
        port = self.start(self.config())
        for version in ((1, 2), (1, 0), (2, 0)):
            with self.subTest(version=version):
                with self.connect(port) as s:
                    resp = exchange(s, request_message([batch_item(OP_QUERY, [QUERY_OPERATIONS])],
                                                       version=version, batch_count=False))
                self.assertEqual(response_version(resp), version)
                (bi,) = batch_items(resp)
                self.assertEqual(failure(bi), (FAILED, INVALID_MESSAGE))
                self.assertEqual(bi[T["ResultMessage"]], "KMIP: required field missing")
                self.assertNotIn(T["Operation"], bi)

    def test_wrong_batch_count_gets_invalid_message(self):
        port = self.start(self.config())
        with self.connect(port) as s:
            resp = exchange(s, request_message([batch_item(OP_QUERY, [QUERY_OPERATIONS])], batch_count=2))
        (bi,) = batch_items(resp)
        self.assertEqual(failure(bi), (FAILED, INVALID_MESSAGE))
        self.assertEqual(bi[T["ResultMessage"]], "KMIP: Batch Count does not match the batch items")


class ConfigTest(RelayTestCase):
    def check_config(self, text):
        path = os.path.join(self.tmp, "check.json")
        with open(path, "w") as f:
            f.write(text)
        p = subprocess.run([RELAY, "--check-config", "-c", path], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, env=self.env, timeout=20, text=True)
        return p.returncode, p.stdout, p.stderr, path

    def good(self, **tls):
        cfg = {"tls": {"certificate": self.pki.server, "key": self.pki.server_key,
                       "client_ca": self.pki.ca}}
        cfg["tls"].update(tls)
        return cfg

    def test_good_config_prints_ok(self):
        self.assertEqual(self.check_config(json.dumps(self.good()))[:3], (0, "OK\n", ""))

    def test_unreadable_file_names_the_key(self):
        rc, out, err, _ = self.check_config(json.dumps(self.good(client_ca="/nonexistent/ca.pem")))
        self.assertEqual((rc, out, err),
                         (1, "", "tls.client_ca: cannot read /nonexistent/ca.pem: No such file or directory\n"))

    def test_unknown_key(self):
        rc, out, err, _ = self.check_config(json.dumps(self.good(bogus=1)))
        self.assertEqual((rc, out, err), (1, "", "tls.bogus: unknown key\n"))

    def test_wrong_type(self):
        cfg = self.good()
        cfg["timeouts"] = {"idle": "5"}
        self.assertEqual(self.check_config(json.dumps(cfg))[:3], (1, "", "timeouts.idle: must be an integer\n"))
        cfg["timeouts"] = {"idle": 0}
        self.assertEqual(self.check_config(json.dumps(cfg))[:3],
                         (1, "", "timeouts.idle: must be between 1 and 604800\n"))

    def test_every_error_is_reported(self):
        cfg = self.good(bogus=1, require_client_certificate="yes")
        cfg["limits"] = {"max_message_size": 100}
        rc, out, err, _ = self.check_config(json.dumps(cfg))
        self.assertEqual((rc, out), (1, ""))
        self.assertEqual(sorted(err.splitlines()), [
            "limits.max_message_size: must be between 4096 and 67108864",
            "tls.bogus: unknown key",
            "tls.require_client_certificate: must be true or false",
        ])

    def test_invalid_json(self):
        rc, out, err, path = self.check_config('{"tls": {"certificate": }')
        self.assertEqual((rc, out), (1, ""))
        self.assertRegex(err, r"\A%s: line 1 column \d+: .+\n\Z" % re.escape(path))

    def test_missing_file(self):
        path = os.path.join(self.tmp, "absent.json")
        p = subprocess.run([RELAY, "--check-config", "-c", path], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, env=self.env, timeout=20, text=True)
        self.assertEqual((p.returncode, p.stdout), (1, ""))
        self.assertRegex(p.stderr, r"\A%s: .*No such file or directory.*\n\Z" % re.escape(path))

    def test_bad_config_under_socket_activation_just_closes(self):
        # The log file is named in the config, which is not loaded: the relay has
        # nowhere in reach of the test to say why (it logs to syslog), so the
        # client sees a closed connection and --check-config tells the reason.
        cfg = self.good(client_ca="/nonexistent/ca.pem")
        cfg["log"] = {"file": self.log}
        path = os.path.join(self.tmp, "bad.json")
        with open(path, "w") as f:
            json.dump(cfg, f)
        for inetd in (True, False):
            with self.subTest(inetd=inetd):
                port = self.start(path, inetd=inetd)
                raw = socket.create_connection(("127.0.0.1", port), timeout=10)
                raw.sendall(b"\x16\x03\x01\x00\x00")  # any bytes: nothing reads them
                self.assertIn(self.recv_all(raw), (b"", None))
                raw.close()
                self.refused(port)
        self.assertFalse(os.path.exists(self.log))
        rc, _, err, _ = self.check_config(json.dumps(cfg))
        self.assertEqual((rc, err), (1, "tls.client_ca: cannot read /nonexistent/ca.pem: No such file or directory\n"))

    @staticmethod
    def recv_all(sock):
        try:
            return sock.recv(100)
        except ConnectionResetError:
            return None


class DiscoverVersionsTest(RelayTestCase):
    def check_against_vector(self, port, name, expected_versions):
        req = vector(name + "_request.hex")
        with self.connect(port) as s:
            resp = exchange(s, req)
        # The header: the request's version, a Date-Time stamp of now, Batch Count 1.
        header = header_fields(resp)
        self.assertEqual([(t, ty) for t, ty, _ in header],
                         [(T["ProtocolVersion"], STRUCTURE), (T["TimeStamp"], DATETIME), (T["BatchCount"], INTEGER)])
        self.assertEqual(response_version(resp), (1, 1))
        self.assertLess(abs(find(header, T["TimeStamp"])[0] - time.time()), 60)
        self.assertEqual(find(header, T["BatchCount"])[0], 1)
        # The batch item, byte for byte.
        ((tag, got),) = [c for c in raw_children(resp) if c[0] == T["BatchItem"]]
        self.assertEqual(got.hex(), response_item(OP_DISCOVER_VERSIONS, SUCCESS,
                                                  versions_payload(expected_versions)).hex())
        return got

    def both_modes(self, check):
        for inetd in (True, False):
            with self.subTest(inetd=inetd):
                check(self.start(self.config(), inetd=inetd))

    def test_no_versions_gives_all_newest_first(self):
        def check(port):
            name = "kmip_1_1_testcase_16_1_time_0_discover_versions_no_versions_provided"
            got = self.check_against_vector(port, name, ALL_VERSIONS)
            # The document's server had only 1.1 and 1.0: its answer ends ours.
            doc = vector("kmip_1_1_testcase_16_1_time_0_discover_versions_v11_v10_response.hex")
            ((_, doc_item),) = [c for c in raw_children(doc) if c[0] == T["BatchItem"]]
            doc_payload = raw_children(doc_item)[-1][1]
            self.assertTrue(raw_children(got)[-1][1].endswith(doc_payload[8:]))
        self.both_modes(check)

    def test_v10_gives_the_vector_response(self):
        def check(port):
            got = self.check_against_vector(port, "kmip_1_1_testcase_16_1_time_1_discover_versionswith_v10",
                                            [(1, 0)])
            doc = vector("kmip_1_1_testcase_16_1_time_1_discover_versions_v10_response.hex")
            self.assertEqual(got, [c for c in raw_children(doc) if c[0] == T["BatchItem"]][0][1])
        self.both_modes(check)

    def test_only_supported_versions_in_client_order(self):
        port = self.start(self.config())
        with self.connect(port) as s:
            resp = exchange(s, request(OP_DISCOVER_VERSIONS, versions_payload([(1, 1), (3, 0), (1, 0)]),
                                       version=(1, 1)))
        ((_, got),) = [c for c in raw_children(resp) if c[0] == T["BatchItem"]]
        self.assertEqual(got, response_item(OP_DISCOVER_VERSIONS, SUCCESS, versions_payload([(1, 1), (1, 0)])))

    def test_no_common_version_gives_an_empty_payload(self):
        port = self.start(self.config())
        with self.connect(port) as s:
            resp = exchange(s, request(OP_DISCOVER_VERSIONS, versions_payload([(3, 0), (0, 9)]), version=(1, 1)))
        ((_, got),) = [c for c in raw_children(resp) if c[0] == T["BatchItem"]]
        self.assertEqual(got, response_item(OP_DISCOVER_VERSIONS, SUCCESS, []))


class ResponseSizeTest(RelayTestCase):
    NAME = "kmip_1_0_usecase_12_1_step_1_query_operations_objects_max_response_size_256_request.hex"

    def query(self, port, max_size):
        req = bytearray(vector(self.NAME))
        at = bytes(req).index(struct.pack(">IIi", T["MaxResponseSize"] << 8 | INTEGER, 4, 256))
        req[at + 8:at + 12] = struct.pack(">i", max_size)
        with self.connect(port) as s:
            return exchange(s, bytes(req))

    def test_response_too_large(self):
        port = self.start(self.config())
        resp = self.query(port, 64)
        self.assertEqual(response_version(resp), (1, 0))
        (bi,) = batch_items(resp)
        # As the use case's answer: no Operation, Result Reason Response Too Large.
        self.assertEqual(sorted(bi), sorted([T["ResultStatus"], T["ResultReason"], T["ResultMessage"]]))
        self.assertEqual(failure(bi), (FAILED, RESPONSE_TOO_LARGE))
        self.assertEqual(bi[T["ResultMessage"]], "Response exceeds the Maximum Response Size of 64 bytes")
        doc = batch_items(vector("kmip_1_0_usecase_12_1_step_1_query_operation_failed_response_too_large_response.hex"))
        self.assertEqual(failure(doc[0]), failure(bi))

    def test_large_enough(self):
        port = self.start(self.config())
        resp = self.query(port, 2048)
        self.assertLessEqual(len(resp), 2048)
        ((_, got),) = [c for c in raw_children(resp) if c[0] == T["BatchItem"]]
        # 1.0 has neither Discover Versions nor Sign.
        self.assertEqual(got, response_item(OP_QUERY, SUCCESS, [item(T["Operation"], ENUM, op)
                                                                for op in OPERATIONS_1_0] +
                                            [item(T["ObjectType"], ENUM, t) for t in (1, 2, 3, 4, 7, 8)]))
        # The use case's limit of 256 is too small for this many operations.
        (bi,) = batch_items(self.query(port, 256))
        self.assertEqual(failure(bi), (FAILED, RESPONSE_TOO_LARGE))


class VersionTest(RelayTestCase):
    def setUp(self):
        super().setUp()
        self.port = self.start(self.config())

    def send(self, msg):
        with self.connect(self.port) as s:
            return exchange(s, msg)

    def test_unsupported_major_versions(self):
        for version, answer, reason in (((3, 0), (2, 1), UNSUPPORTED_PROTOCOL_VERSION),
                                        ((0, 5), (1, 0), INVALID_MESSAGE)):
            with self.subTest(version=version):
                resp = self.send(request(OP_QUERY, [QUERY_OPERATIONS], version=version))
                self.assertEqual(response_version(resp), answer)
                (bi,) = batch_items(resp)
                self.assertNotIn(T["Operation"], bi)
                self.assertEqual(failure(bi), (FAILED, reason))
                self.assertEqual(bi[T["ResultMessage"]], "unsupported protocol version")
        records = self.audit_records(self.log_lines(wait_for="connection peer=127.0.0.1", timeout=5, count=2))
        self.assertEqual([(r["operation"], r["result"]) for r in records],
                         [("Query", "Unsupported Protocol Version")] * 2)

    def test_newer_minor_is_answered_in_the_newest_minor(self):
        for version, answer in (((1, 7), (1, 4)), ((2, 9), (2, 1))):
            with self.subTest(version=version):
                resp = self.send(request(OP_QUERY, [QUERY_OPERATIONS], version=version))
                self.assertEqual(response_version(resp), answer)
                (bi,) = batch_items(resp)
                self.assertEqual(failure(bi), (SUCCESS, None))
                self.assertEqual(find(bi[T["ResponsePayload"]], T["Operation"]), OPERATIONS_1_2)

    def test_operation_not_in_the_request_version(self):
        resp = self.send(request(OP_DISCOVER_VERSIONS, version=(1, 0)))
        self.assertEqual(response_version(resp), (1, 0))
        (bi,) = batch_items(resp)
        self.assertEqual(bi[T["Operation"]], OP_DISCOVER_VERSIONS)
        self.assertEqual(failure(bi), (FAILED, OPERATION_NOT_SUPPORTED))
        self.assertEqual(bi[T["ResultMessage"]], "operation not defined in this protocol version")

    def test_unimplemented_operation(self):
        resp = self.send(request(OP_ARCHIVE, version=(1, 2)))
        (bi,) = batch_items(resp)
        self.assertEqual(bi[T["Operation"]], OP_ARCHIVE)
        self.assertEqual(failure(bi), (FAILED, OPERATION_NOT_SUPPORTED))
        self.assertEqual(bi[T["ResultMessage"]], "operation not supported")
        (rec,) = [r for r in self.audit_records(self.log_lines(wait_for='"operation":"Archive"'))
                  if r["operation"] == "Archive"]
        self.assertEqual(rec["result"], "Operation Not Supported")

    def test_batch_echoes_unique_batch_item_ids(self):
        resp = self.send(request_message([batch_item(OP_QUERY, [QUERY_OPERATIONS], b"\x01"),
                                          batch_item(OP_DISCOVER_VERSIONS, [], b"item-2")]))
        self.assertEqual(find(header_fields(resp), T["BatchCount"]), [2])
        items = batch_items(resp)
        self.assertEqual([(bi[T["Operation"]], bi[T["UniqueBatchItemID"]], failure(bi)) for bi in items],
                         [(OP_QUERY, b"\x01", (SUCCESS, None)), (OP_DISCOVER_VERSIONS, b"item-2", (SUCCESS, None))])

    def test_batch_item_without_id_in_a_batch_fails_alone(self):
        resp = self.send(request_message([batch_item(OP_QUERY, [QUERY_OPERATIONS], b"\x01"),
                                          batch_item(OP_QUERY, [QUERY_OPERATIONS])],
                                         batch_error_option=CONTINUE))
        items = batch_items(resp)
        self.assertEqual([failure(bi) for bi in items], [(SUCCESS, None), (FAILED, INVALID_MESSAGE)])

    def three(self, option):
        return request_message([batch_item(OP_QUERY, [QUERY_OPERATIONS], b"a"), batch_item(OP_ARCHIVE, [], b"b"),
                                batch_item(OP_DISCOVER_VERSIONS, [], b"c")], batch_error_option=option)

    def test_batch_stop_is_the_default(self):
        for option in (None, STOP):
            with self.subTest(option=option):
                resp = self.send(self.three(option))
                self.assertEqual(find(header_fields(resp), T["BatchCount"]), [2])
                self.assertEqual([(bi[T["UniqueBatchItemID"]], bi[T["Operation"]], failure(bi))
                                  for bi in batch_items(resp)],
                                 [(b"a", OP_QUERY, (SUCCESS, None)), (b"b", OP_ARCHIVE, (FAILED, OPERATION_NOT_SUPPORTED))])

    def test_batch_continue_runs_all(self):
        resp = self.send(self.three(CONTINUE))
        self.assertEqual(find(header_fields(resp), T["BatchCount"]), [3])
        self.assertEqual([(bi[T["UniqueBatchItemID"]], bi[T["Operation"]], failure(bi)) for bi in batch_items(resp)],
                         [(b"a", OP_QUERY, (SUCCESS, None)), (b"b", OP_ARCHIVE, (FAILED, OPERATION_NOT_SUPPORTED)),
                          (b"c", OP_DISCOVER_VERSIONS, (SUCCESS, None))])

    def test_batch_undo_marks_the_items_before_a_failure_undone(self):
        resp = self.send(self.three(UNDO))
        self.assertEqual(find(header_fields(resp), T["BatchCount"]), [2])
        self.assertEqual([(bi[T["UniqueBatchItemID"]], bi[T["Operation"]], bi[T["ResultStatus"]], bi.get(T["ResultReason"]))
                          for bi in batch_items(resp)],
                         [(b"a", OP_QUERY, OPERATION_UNDONE, None),
                          (b"b", OP_ARCHIVE, FAILED, OPERATION_NOT_SUPPORTED)])
        records = self.audit_records(self.log_lines(wait_for='"operation":"Archive"'))
        self.assertEqual([(r["operation"], r["result"]) for r in records],
                         [("Query", "Success"), ("Archive", "Operation Not Supported")])


class ListenModeTest(RelayTestCase):
    def test_one_connection_with_records_on_stderr(self):
        """--listen serves one connection and exits; its log records, the audit
        record among them, go to stderr."""
        port = free_port()
        proc = subprocess.Popen([RELAY, "--config", self.config(), "--listen", "127.0.0.1:%d" % port],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=self.env)
        try:
            wait_listening(port)
            with self.connect(port) as s:
                (bi,) = batch_items(exchange(s, request(OP_QUERY, [QUERY_OPERATIONS])))
            out, err = proc.communicate(timeout=10)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        self.assertEqual(bi[T["ResultStatus"]], SUCCESS)
        self.assertEqual((proc.returncode, out), (0, b""))
        lines = err.decode().splitlines()
        self.assertTrue(lines[0].endswith("]: waiting for one connection on 127.0.0.1:%d" % port), lines)
        records = [json.loads(l.partition("]: ")[2]) for l in lines if "]: {" in l]
        self.assertEqual([(r["client"], r["operation"], r["result"]) for r in records],
                         [("sha256:" + spki_sha256(self.client_cert), "Query", "Success")])
        self.assertTrue(lines[-1].split("]: ", 1)[1].startswith("connection peer=127.0.0.1:"), lines)


def stream_sockets_of(pid):
    """Copies of the TCP sockets process pid holds (pidfd_getfd), as socket objects."""
    libc = ctypes.CDLL(None, use_errno=True)
    pidfd = libc.syscall(434, pid, 0)  # pidfd_open
    if pidfd < 0:
        raise OSError(ctypes.get_errno(), "pidfd_open")
    out = []
    try:
        for name in os.listdir("/proc/%d/fd" % pid):
            try:
                if not os.readlink("/proc/%d/fd/%s" % (pid, name)).startswith("socket:"):
                    continue
            except FileNotFoundError:
                continue
            fd = libc.syscall(438, pidfd, int(name), 0)  # pidfd_getfd
            if fd < 0:
                raise OSError(ctypes.get_errno(), "pidfd_getfd")
            s = socket.socket(fileno=fd)
            if s.family in (socket.AF_INET, socket.AF_INET6) and s.type == socket.SOCK_STREAM:
                out.append(s)
            else:
                s.close()
    finally:
        os.close(pidfd)
    return out


class ConnectionProcessTest(RelayTestCase):
    """What a connection's process sets up (issue 13): TCP_NODELAY on the
    connection in every activation mode, so that a response never waits behind
    the session ticket for the client's delayed ACK; and no libsystemd mapped
    where nothing calls it."""

    def relay_pid(self):
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            kids = children(self.procs[-1].pid)
            if kids:
                return kids[0]
            time.sleep(0.02)
        self.fail("no relay process")

    def test_inetd_mode(self):
        port = self.start(self.config(), inetd=True)
        with self.connect(port) as first:
            self.check_held(first, self.relay_pid(), libsystemd=False)

    def test_socket_activation(self):
        # LISTEN_FDS: sd_listen_fds is libsystemd's, so it is loaded.
        port = self.start(self.config(), inetd=False)
        with self.connect(port) as first:
            self.check_held(first, self.relay_pid(), libsystemd=True)

    def test_listen_mode(self):
        port = free_port()
        proc = subprocess.Popen([RELAY, "--config", self.config(), "--listen", "127.0.0.1:%d" % port],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=self.env)
        self.procs.append(proc)
        wait_listening(port)
        with self.connect(port) as first:
            self.check_held(first, proc.pid, libsystemd=False)

    def check_held(self, s, pid, libsystemd):
        (bi,) = batch_items(exchange(s, request(OP_QUERY, [QUERY_OPERATIONS])))
        self.assertEqual(bi[T["ResultStatus"]], SUCCESS)
        socks = stream_sockets_of(pid)
        try:
            self.assertEqual([c.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) for c in socks], [1])
        finally:
            for c in socks:
                c.close()
        with open("/proc/%d/maps" % pid) as f:
            self.assertEqual("libsystemd.so" in f.read(), libsystemd)


class PhaseTimesTest(TokenTestCase):
    def test_a_token_operation_shows_load_and_login(self):
        """The summary's phases_ms (issue 13): the module's load and the lock to
        C_Login are counted when a request needs the token; each phase is part of
        the whole."""
        port = self.serve()
        with self.client(port) as c:
            local = c.sock.getsockname()[1]
            c.ok(OP_RNG_RETRIEVE, [item(T["DataLength"], INTEGER, 16)])
        summary = self.summary(local)
        m = re.fullmatch(r"handshake:(\d+\.\d),load:(\d+\.\d),login:(\d+\.\d),first:(\d+\.\d)",
                         summary["phases_ms"])
        self.assertTrue(m, summary["phases_ms"])
        phases = [float(x) for x in m.groups()]
        self.assertTrue(all(p > 0 for p in phases), phases)
        # first includes load and login: the module is loaded for the first request.
        self.assertGreaterEqual(phases[3], phases[1] + phases[2] - 0.2)
        self.assertLessEqual(sum(phases[:1] + phases[3:]), float(summary["duration_ms"]) + 0.2)


class TestingOperationsTest(RelayTestCase):
    """Interop and Log, which only the OASIS conformance cases use, exist only with
    testing.interop."""

    OP_LOG, OP_INTEROP = 0x2C, 0x34
    INTEROP_BEGIN = item(0x420160, ENUM, 1)

    def call(self, port, operation, payload, version=(2, 1)):
        with self.connect(port) as s:
            (bi,) = batch_items(exchange(s, request(operation, payload, version=version)))
        return bi

    def test_off_by_default(self):
        port = self.start(self.config())
        for version in ((2, 1), (1, 4)):
            with self.subTest(version=version):
                bi = self.call(port, self.OP_INTEROP, [self.INTEROP_BEGIN, item(0x420161, TEXT, "BL-M-1-21")],
                               version)
                self.assertEqual((bi[T["ResultStatus"]], bi[T["ResultReason"]]), (FAILED, OPERATION_NOT_SUPPORTED))
                bi = self.call(port, self.OP_LOG, [item(0x420141, TEXT, "hello")], version)
                self.assertEqual((bi[T["ResultStatus"]], bi[T["ResultReason"]]), (FAILED, OPERATION_NOT_SUPPORTED))
        listed = find(self.call(port, OP_QUERY, [QUERY_OPERATIONS])[T["ResponsePayload"]], T["Operation"])
        self.assertNotIn(self.OP_INTEROP, listed)
        self.assertNotIn(self.OP_LOG, listed)

    def test_on_with_testing_interop(self):
        port = self.start(self.config(testing={"interop": True}))
        for version in ((2, 1), (1, 4)):  # the 1.4 cases use the 2.0 operations too
            with self.subTest(version=version):
                bi = self.call(port, self.OP_INTEROP, [self.INTEROP_BEGIN, item(0x420161, TEXT, "BL-M-1-21")],
                               version)
                self.assertEqual((bi[T["ResultStatus"]], bi[T["ResponsePayload"]]), (SUCCESS, []))
                bi = self.call(port, self.OP_LOG, [item(0x420141, TEXT, "line one\nforged: line")], version)
                self.assertEqual((bi[T["ResultStatus"]], bi[T["ResponsePayload"]]), (SUCCESS, []))
        lines = self.log_lines(wait_for="client log:", count=2)
        self.assertEqual(len([l for l in lines if l.endswith("]: interop Begin BL-M-1-21")]), 2)
        # The client's text cannot start a log line of its own.
        self.assertEqual(len([l for l in lines if l.endswith("]: client log: line one\\nforged: line")]), 2)
        self.assertFalse([l for l in lines if l.startswith("forged")])
        bi = self.call(port, self.OP_INTEROP, [item(0x420161, TEXT, "no function")])
        self.assertEqual((bi[T["ResultStatus"]], bi[T["ResultReason"]]), (FAILED, 0x06))  # Missing Data


class ResumptionTest(RelayTestCase):
    def key_file(self, size):
        path = os.path.join(self.tmp, "ticket-%d.key" % size)
        with open(path, "wb") as f:
            f.write(os.urandom(size))
        return path

    def two_connections(self, port):
        ctx = self.tls_context()
        with self.connect(port, ctx) as first:
            self.assertEqual(first.version(), "TLSv1.3")
            first_local = first.getsockname()[1]
            exchange(first, request(OP_QUERY, [QUERY_OPERATIONS]))  # the ticket comes after the handshake
            session = first.session
        with self.connect(port, ctx, session=session) as second:
            second_local = second.getsockname()[1]
            (bi,) = batch_items(exchange(second, request(OP_QUERY, [QUERY_OPERATIONS])))
            self.assertEqual(failure(bi), (SUCCESS, None))
            reused = second.session_reused
        return reused, self.summary(first_local), self.summary(second_local)

    def test_ticket_key_resumes_across_processes(self):
        port = self.start(self.config(tls={"ticket_key": self.key_file(64)}))
        reused, first, second = self.two_connections(port)
        self.assertTrue(reused)
        self.assertEqual(first["resumed"], "no")
        self.assertEqual(second["resumed"], "yes")
        self.assertEqual(second["requests"], "1")
        # The resumed session keeps the client's identity.
        self.assertEqual((second["client"], second["dn"]), (first["client"], "CN=kmip-client"))

    def test_without_ticket_key_no_resumption(self):
        port = self.start(self.config())
        reused, first, second = self.two_connections(port)
        self.assertFalse(reused)
        self.assertEqual((first["resumed"], second["resumed"]), ("no", "no"))

    def test_ticket_key_of_wrong_size(self):
        # --check-config catches it; a relay started with it serves nobody.
        config = self.config(tls={"ticket_key": self.key_file(32)})
        p = subprocess.run([RELAY, "--check-config", "-c", config], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, timeout=30)
        self.assertEqual((p.returncode, p.stdout, p.stderr),
                         (1, "", "tls.ticket_key: must hold exactly 64 bytes\n"))
        port = self.start(config)
        with self.assertRaises((ssl.SSLError, ConnectionError, OSError)):
            with self.connect(port) as s:
                exchange(s, request(OP_QUERY, []))


class PyKMIPTest(RelayTestCase):
    def test_discover_versions_and_query(self):
        port = self.start(self.config())
        with warnings.catch_warnings():
            # PyKMIP calls ssl.wrap_socket and uses SQLAlchemy 1.x APIs.
            warnings.simplefilter("ignore")
            from kmip.core import enums
            from kmip.pie.client import ProxyKmipClient

            client = ProxyKmipClient(hostname="127.0.0.1", port=port, cert=self.client_cert,
                                     key=self.client_key, ca=self.pki.ca, config_file=os.devnull,
                                     kmip_version=enums.KMIPVersion.KMIP_1_2)
            client.open()
            try:
                versions = client.proxy.discover_versions()
                query = client.proxy.query(query_functions=[enums.QueryFunction.QUERY_OPERATIONS,
                                                            enums.QueryFunction.QUERY_SERVER_INFORMATION])
            finally:
                client.close()
        self.assertEqual(versions.result_status.value, enums.ResultStatus.SUCCESS)
        self.assertEqual([(v.major, v.minor) for v in versions.protocol_versions], ALL_VERSIONS)
        self.assertEqual(query.result_status.value, enums.ResultStatus.SUCCESS)
        self.assertEqual([op.value for op in query.operations], OPERATIONS_1_2)
        self.assertTrue(query.vendor_identification.startswith("kmip-relay"))
        records = self.audit_records(self.log_lines(wait_for="connection peer="))
        self.assertEqual([(r["operation"], r["result"]) for r in records],
                         [("Discover Versions", "Success"), ("Query", "Success")])


class LogTest(RelayTestCase):
    def one_query(self, port, ctx=None, **kw):
        with self.connect(port, ctx) as s:
            local = s.getsockname()[1]
            resp = exchange(s, request(OP_QUERY, [QUERY_OPERATIONS], **kw))
            exchange(s, request(OP_DISCOVER_VERSIONS, version=(1, 0)))
            tls = s.version()
        (bi,) = batch_items(resp)
        self.assertEqual(failure(bi), (SUCCESS, None))
        return local, tls

    def check_summary(self, local, tls):
        summary = self.summary(local)
        self.assertEqual(list(summary), ["peer", "client", "dn", "tls", "cipher", "resumed", "requests", "backend",
                                         "phases_ms", "duration_ms", "end"])
        # Query and Discover Versions load no module.
        m = re.fullmatch(r"handshake:(\d+\.\d),load:0\.0,login:0\.0,first:(\d+\.\d)", summary["phases_ms"])
        self.assertTrue(m, summary["phases_ms"])
        self.assertGreater(float(m.group(1)), 0)
        self.assertEqual(summary["peer"], "127.0.0.1:%d" % local)
        self.assertEqual(summary["client"], "sha256:" + spki_sha256(self.client_cert))
        self.assertEqual(summary["dn"], "CN=kmip-client")
        self.assertEqual(summary["tls"], tls)
        self.assertRegex(summary["cipher"], r"\A(AES-(128|256)-GCM|CHACHA20-POLY1305|AES-(128|256)-CCM)\Z")
        self.assertEqual((summary["resumed"], summary["requests"]), ("no", "2"))
        self.assertGreater(float(summary["duration_ms"]), 0)
        self.assertEqual(summary["end"], "client closed the connection")

    def test_summary_and_audit_tls13(self):
        port = self.start(self.config())
        local, tls = self.one_query(port)
        self.assertEqual(tls, "TLSv1.3")
        self.check_summary(local, "TLS1.3")
        records = self.audit_records()
        self.assertEqual([sorted(r) for r in records], [["client", "latency_us", "operation", "peer", "result"]] * 2)
        self.assertEqual([r["peer"] for r in records], ["127.0.0.1:%d" % local] * 2)
        client = "sha256:" + spki_sha256(self.client_cert)
        self.assertEqual([(r["client"], r["operation"], r["result"]) for r in records],
                         [(client, "Query", "Success"), (client, "Discover Versions", "Operation Not Supported")])
        self.assertTrue(all(isinstance(r["latency_us"], int) and r["latency_us"] >= 0 for r in records))

    def test_summary_tls12(self):
        port = self.start(self.config())
        local, tls = self.one_query(port, self.tls_context(maximum_version=ssl.TLSVersion.TLSv1_2))
        self.assertEqual(tls, "TLSv1.2")
        self.check_summary(local, "TLS1.2")

    def test_trace_redacts_the_password(self):
        password = "Zebra-Quartz-8817-pin"
        port = self.start(self.config(), extra_args=["--trace"])
        local, _ = self.one_query(port, username="token-1", password=password)
        self.summary(local)
        with open(self.log) as f:
            text = f.read()
        self.assertNotIn(password, text)
        self.assertNotIn(password.encode().hex().upper(), text)
        self.assertIn("\n          Password (Text String) <redacted>\n", text)
        self.assertIn('\n          Username (Text String) "token-1"\n', text)
        self.assertIn("]: request\nRequest Message (Structure)\n", text)
        self.assertIn("]: response\nResponse Message (Structure)\n", text)
        self.assertIn("\n    Operation (Enumeration) Query\n", text)


if __name__ == "__main__":
    unittest.main(verbosity=2)

# SPDX-License-Identifier: BSD-3-Clause
"""clients[].attributes_compat "pykmip" (issue 15): PyKMIP 0.10 cannot parse a Get
Attributes response that holds an attribute it does not know (Link at 1.0 and
1.1, Original Creation Date at 1.2 and 1.3, Always Sensitive at 1.4, Key Format
Type at 2.0), so its get_attributes(uid), which names none, fails on every key
the relay made. For a client whose entry says attributes_compat "pykmip", an
answer to "all attributes" leaves those out: get_attributes(uid) works at 1.0,
1.2, 1.4 and 2.0 and returns what PyKMIP can read; another client still gets
every attribute, and an attribute named in the request is still answered."""

import os
import subprocess
import unittest
import warnings

from relaytest import RELAY, OP_GET_ATTRIBUTES, KmipClient, TokenTestCase, attribute_refs, returned_attributes, \
    uid_item, V2

# What PyKMIP reads back of each object at each version, with the compat option.
COMMON = ["Cryptographic Algorithm", "Cryptographic Length", "Cryptographic Usage Mask", "Initial Date",
          "Last Change Date", "Name", "Object Type", "State", "Unique Identifier"]
EXPECTED = {
    "secret": COMMON,
    "public": COMMON + ["Digest"],
    "private": COMMON + ["Activation Date"],
}
# PyKMIP's own failure without it: the first attribute it does not know.
FAILURES = {
    "KMIP_1_0": "NotImplementedError()",
    "KMIP_1_2": "ValueError('Unrecognized attribute type: AttributeType.ORIGINAL_CREATION_DATE')",
    "KMIP_1_4": "Exception('No value type for ALWAYS_SENSITIVE')",
    "KMIP_2_0": "ValueError('Unrecognized attribute type: Tags.KEY_FORMAT_TYPE')",
}


class PyKMIPCompatTest(TokenTestCase):
    def relay(self, compat):
        entry = {"name": "py", "certificate_name": "kmip-client"}
        if compat:
            entry["attributes_compat"] = "pykmip"
        return self.start(self.softhsm_config(self.token, clients=[entry]))

    def objects(self, port):
        """{kind: UID} of a named AES key and an RSA key pair (its private half Active)."""
        from kmip.core import enums
        with self.pykmip(port) as c:
            secret = c.create(enums.CryptographicAlgorithm.AES, 256, name="aes")
            public, private = c.create_key_pair(enums.CryptographicAlgorithm.RSA, 2048, public_name="pub",
                                                private_name="priv")
            c.activate(private)
        return {"secret": secret, "public": public, "private": private}

    def get_attributes(self, port, version, uid):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with self.pykmip(port, version) as c:
                got, attrs = c.get_attributes(uid)
        self.assertEqual(got, uid)
        return attrs

    def test_pykmip_reads_all_attributes_with_the_option(self):
        port = self.relay(compat=True)
        uids = self.objects(port)
        for version in ("KMIP_1_0", "KMIP_1_2", "KMIP_1_4", "KMIP_2_0"):
            for kind, uid in uids.items():
                with self.subTest(version=version, kind=kind):
                    attrs = self.get_attributes(port, version, uid)
                    names = sorted(a.attribute_name.value for a in attrs)
                    # Sensitive came with 1.4; PyKMIP reads it.
                    want = sorted(EXPECTED[kind] + (["Sensitive"] if version >= "KMIP_1_4" else []))
                    self.assertEqual(names, want)
        # Named, an attribute PyKMIP cannot read is still answered (to raw TTLV).
        with KmipClient(self.connect(port), version=V2) as c:
            got = returned_attributes(c.ok(OP_GET_ATTRIBUTES, [uid_item(uids["private"])] +
                                           attribute_refs(V2, ["Link", "Extractable"]), V2), V2)
        self.assertEqual(sorted(got), ["Extractable", "Link"])

    def test_pykmip_fails_without_it(self):
        port = self.relay(compat=False)
        uids = self.objects(port)
        for version, failure in FAILURES.items():
            with self.subTest(version=version):
                with self.assertRaises(Exception) as e:
                    self.get_attributes(port, version, uids["private"])
                self.assertEqual(repr(e.exception), failure)

    def test_only_pykmip_is_known(self):
        path = self.softhsm_config(self.token, clients=[{"name": "py", "certificate_name": "kmip-client",
                                                         "attributes_compat": "pykmip2"}])
        p = subprocess.run([RELAY, "--check-config", "--config", path], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, env=self.env, timeout=30, text=True)
        self.assertEqual((p.returncode, p.stdout, p.stderr), (1, "", 'clients[0]: attributes_compat: must be "pykmip" '
                                                                     "(the only client with a list of its own)\n"))


if __name__ == "__main__":
    unittest.main(verbosity=2)

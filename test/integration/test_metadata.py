# SPDX-License-Identifier: BSD-3-Clause
"""No objects a key doesn't need (issue 13): a key the relay makes gets a metadata
object only when something about it has no place in the token - its CKA_ID holds
its creation, usage masks and algorithm, its usage flags its state,
CKA_START_DATE and CKA_END_DATE whole-day dates, CKA_LABEL its Name - and reads
back through KMIP 1.x and 2.x exactly as one with metadata does; the records of
destroyed objects go once keys.destroyed_record_days have passed, removed by the
next connection that adds an object; what a connection keeps of a key without
metadata is checked against the token's epoch. On SoftHSM, over real TLS."""

import hashlib
import os
import time
import unittest

import test_crypto as crypto
import test_lifecycle as lifecycle
from relaytest import PAD_PKCS1_V15, USAGE_SIGN, USAGE_VERIFY, crypto_parameters
from relaytest import ATTRIBUTE_NAMES, ATTRIBUTE_TAGS
from relaytest import (ACTIVE, ALG_AES, ALG_EC, ALG_RSA, BYTES, CURVE_P256, DATETIME, ENUM,
                       FMT_PKCS1, INTEGER, KEY_COMPROMISE, LINK_PRIVATE_KEY, LINK_PUBLIC_KEY,
                       LONG, METADATA_LABEL, OBJ_SYMMETRIC_KEY, OP_ACTIVATE, OP_ADD_ATTRIBUTE, OP_CREATE,
                       OP_CREATE_KEY_PAIR, OP_DELETE_ATTRIBUTE, OP_DESTROY, OP_ENCRYPT, OP_GET,
                       OP_GET_ATTRIBUTE_LIST, OP_GET_ATTRIBUTES, OP_LOCATE, OP_MODIFY_ATTRIBUTE,
                       OP_REVOKE, PERMISSION_DENIED, PRE_ACTIVE, STRUCTURE, T, TEXT, V1, V2,
                       TokenTestCase, attr, attribute_refs, batch_item, batch_items, container, exchange,
                       find, item, key_material, key_pair_payload, name_value, pair_payload, request_message,
                       returned_attributes, revoke_payload, uid_item, SUCCESS, FAILED, OP_SIGN)

HASH_SHA256 = 6

CONTINUE = 1  # Batch Error Continuation Option

ATTRIBUTE_TAGS["Usage Limits"] = T["UsageLimits"]
ATTRIBUTE_NAMES[T["UsageLimits"]] = "Usage Limits"
DAY = 86400
V10 = (1, 0)
OBJECT_NOT_FOUND, ITEM_NOT_FOUND = 0x37, 0x01
COMPROMISED = 4
UNIT_OBJECT = crypto.UNIT_OBJECT
ID_DOMAIN = b"kmip-relay CKA_ID 1"


def midnight(days):
    """Midnight UTC, days from today's."""
    return (int(time.time()) // DAY + days) * DAY


def id_facts(uid):
    """What a stamped CKA_ID says (store_stamp_id): (created ms, private or secret
    mask, public mask, algorithm); None if its check value is not right."""
    raw = bytes.fromhex(uid.rsplit("_", 1)[0])
    if len(raw) != 32 or hashlib.sha256(ID_DOMAIN + raw[:28]).digest()[:4] != raw[28:]:
        return None
    return (int.from_bytes(raw[8:14], "big"), int.from_bytes(raw[14:18], "big"),
            int.from_bytes(raw[18:22], "big"), int.from_bytes(raw[22:24], "big"))


def sealed_id(created_ms, masks, algorithm, tail=b"\x5a" * 4, head=b"\xa5" * 8):
    """A CKA_ID as the relay stamps it, for a key made with pkcs11-tool."""
    raw = (head + created_ms.to_bytes(6, "big") + masks[0].to_bytes(4, "big") + masks[1].to_bytes(4, "big")
           + algorithm.to_bytes(2, "big") + tail)
    return raw + hashlib.sha256(ID_DOMAIN + raw).digest()[:4]


def added(uid, attribute):
    """A 2.x Add Attribute payload."""
    return [uid_item(uid), item(T["NewAttribute"], STRUCTURE, [attribute])]


def one(attrs, name):
    values = attrs.get(name, [])
    if len(values) != 1:
        raise AssertionError("%s: %r" % (name, values))
    return values[0]


class MetadataTestCase(TokenTestCase):
    # A key pair the token makes quickly, and the key type of one made with
    # pkcs11-tool (openCryptoki's software token has no EC keys: RSA there).
    pair = {"algorithm": ALG_EC, "curve": CURVE_P256}
    foreign_key_type, foreign_algorithm = "EC:prime256v1", 6  # ECDSA

    def new_pair(self, c, version, **names):
        return self.create_pair(c, version, length=self.pair.get("length"), curve=self.pair.get("curve"),
                                algorithm=self.pair["algorithm"], **names)

    def object_count(self):
        """The token's objects of every class, as pkcs11-tool lists them."""
        return sum(1 for line in self.token.objects().splitlines()
                   if line and not line[0].isspace() and "bject" in line)

    def metadata(self):
        """The labels of the relay's metadata objects."""
        return sorted(METADATA_LABEL.findall(self.token.objects("data")))

    def attrs(self, c, uid, version, names=()):
        return returned_attributes(c.ok(OP_GET_ATTRIBUTES, [uid_item(uid)] + attribute_refs(version, names),
                                        version), version)


class ObjectCountTest(MetadataTestCase):
    """The token holds a key and nothing beside it until the key has something the
    token cannot hold; on main every key had a metadata object from the start."""

    def test_objects_per_key(self):
        port = self.serve()
        for version in (V1, V2):
            with self.subTest(version=version), self.client(port, version) as c:
                self.token.reset()
                self.assertEqual(self.object_count(), 0)
                aes = self.create_aes(c, version, name="plain-aes")
                self.assertEqual((self.object_count(), self.metadata()), (1, []))
                priv, pub = self.new_pair(c, version, private_name="plain-priv", public_name="plain-pub")
                self.assertEqual((self.object_count(), self.metadata()), (3, []))
                # Cascade's and Krill's pair: RSA with Usage Masks Sign and Verify (not
                # the defaults), named, renamed.
                payload = c.ok(OP_CREATE_KEY_PAIR, key_pair_payload(ALG_RSA, 2048, "casc-priv", "casc-pub"), V10)
                rsa_priv = find(payload, T["PrivateKeyUniqueIdentifier"])[0]
                rsa_pub = find(payload, T["PublicKeyUniqueIdentifier"])[0]
                c.ok(OP_MODIFY_ATTRIBUTE, lifecycle.modify_payload(V10, rsa_pub, "Name", STRUCTURE,
                                                                   name_value("renamed")), V10)
                self.assertEqual((self.object_count(), self.metadata()), (5, []))
                self.assertEqual(self.attrs(c, rsa_pub, version, ["Cryptographic Usage Mask", "State"]),
                                 {"Cryptographic Usage Mask": [2], "State": [PRE_ACTIVE]})
                # Activate puts a time of day in the Activation Date: CK_DATE holds a
                # day, so that key has metadata; nothing else gains any.
                c.ok(OP_ACTIVATE, [uid_item(rsa_priv)], version)
                self.assertEqual(self.object_count(), 6)
                self.assertEqual([label.split()[-1] for label in self.metadata()], ["live"])
                self.assertEqual(self.attrs(c, rsa_priv, version, ["State"]), {"State": [ACTIVE]})
                for uid in (aes, priv, pub, rsa_pub):
                    self.assertEqual(self.attrs(c, uid, version, ["State"]), {"State": [PRE_ACTIVE]})

    def test_a_hundred_and_fifty_pairs(self):
        """The issue's token: 150 pairs made through the relay were 608 objects."""
        port = self.serve()
        with self.client(port, V2) as c:
            for n in range(150):
                c.ok(OP_CREATE_KEY_PAIR, pair_payload(V2, ALG_EC, curve=CURVE_P256, private_name="k%d" % n), V2)
        self.assertEqual(self.object_count(), 300)


class ReadBackTest(MetadataTestCase):
    """A key without metadata answers exactly what it would with: its twin, made
    alike but with a custom attribute (which only metadata holds), answers the same
    attributes with the same values - dates at the same distance from its own
    Initial Date, which is the time in its CKA_ID."""

    def twins(self, c, version, make):
        """(plain UID, twin UID) of two objects make(extra) makes, the twin with x-twin."""
        return make(c, version, ()), make(c, version, (attr(version, "x-twin", TEXT, "yes"),))

    def compare(self, c, version, plain, twin, before, after):
        a, b = self.attrs(c, plain, version), self.attrs(c, twin, version)
        self.assertEqual(b.pop("x-twin"), ["yes"])
        for got in (a, b):
            got.pop("Unique Identifier")
            got.pop("Name", None)
            initial = one(got, "Initial Date")
            self.assertLessEqual(before, initial)
            self.assertLessEqual(initial, after)
            for name in [n for n, values in got.items() if values and isinstance(values[0], int)
                         and n.endswith("Date")]:
                got[name] = [v - initial for v in got[name]]
            for digest in got.get("Digest", []):  # of different keys
                digest[:] = [f for f in digest if f[0] != T["DigestValue"]]
            if "Link" in got:  # to the other half, whose UID differs
                got["Link"] = [[f for f in link if f[0] != T["LinkedObjectIdentifier"]] for link in got["Link"]]
        self.assertEqual(a, b)
        names = [find(c.ok(OP_GET_ATTRIBUTE_LIST, [uid_item(u)], version),
                      T["AttributeName" if version[0] < 2 else "AttributeReference"]) for u in (plain, twin)]
        self.assertEqual(sorted(names[0], key=str), sorted([n for n in names[1] if not isinstance(n, list)
                                                            and n != "x-twin"], key=str))
        return a

    def test_symmetric_and_pairs(self):
        port = self.serve()

        def aes(c, version, extra):
            return find(c.ok(OP_CREATE, crypto.aes_create(version, extra), version), T["UniqueIdentifier"])[0]

        def pair(half):
            def make(c, version, extra):
                payload = [container(version, "common", [attr(version, "Cryptographic Algorithm", ENUM, ALG_RSA),
                                                         attr(version, "Cryptographic Length", INTEGER, 2048)]),
                           container(version, "private", [attr(version, "Cryptographic Usage Mask", INTEGER, 1)]
                                     + list(extra)),
                           container(version, "public", [attr(version, "Cryptographic Usage Mask", INTEGER, 2)]
                                     + list(extra))]
                got = c.ok(OP_CREATE_KEY_PAIR, payload, version)
                return find(got, T["PrivateKeyUniqueIdentifier" if half == "priv" else "PublicKeyUniqueIdentifier"])[0]
            return make

        for version in (V10, V1, V2):
            with self.subTest(version=version), self.client(port, version) as c:
                self.token.reset()
                before = int(time.time())
                plain_aes, twin_aes = self.twins(c, version, aes)
                plain_priv, twin_priv = self.twins(c, version, pair("priv"))
                plain_pub = plain_priv[:64] + "_pub"
                after = int(time.time())
                # Only the twins have metadata.
                self.assertEqual(len(self.metadata()), 3)
                got = self.compare(c, version, plain_aes, twin_aes, before, after)
                self.assertEqual((got["State"], got["Cryptographic Usage Mask"], got["Cryptographic Algorithm"],
                                  got["Cryptographic Length"]), ([PRE_ACTIVE], [0x0C], [ALG_AES], [256]))
                # Initial Date, Original Creation Date (from 1.3 on) and Last Change
                # Date are one time.
                self.assertEqual((got.get("Original Creation Date", [0]), got["Last Change Date"]), ([0], [0]))
                got = self.compare(c, version, plain_priv, twin_priv, before, after)
                self.assertEqual((got["Cryptographic Usage Mask"], got["Cryptographic Length"]), ([1], [2048]))
                # The public half: the Digest of its PKCS#1 key is that of Get's bytes.
                pub = self.attrs(c, plain_pub, version)
                self.assertEqual(one(pub, "Link"), [(T["LinkType"], ENUM, LINK_PRIVATE_KEY),
                                                    (T["LinkedObjectIdentifier"], TEXT, plain_priv)])
                self.assertEqual(one(self.attrs(c, plain_priv, version), "Link"),
                                 [(T["LinkType"], ENUM, LINK_PUBLIC_KEY),
                                  (T["LinkedObjectIdentifier"], TEXT, plain_pub)])
                fmt, der = key_material(c.ok(OP_GET, [uid_item(plain_pub)], version))
                self.assertEqual(fmt, FMT_PKCS1)
                self.assertEqual(one(pub, "Digest"), lifecycle.digest(der, FMT_PKCS1))
                # The Initial Date is the time in the CKA_ID, which says the masks too.
                created, private_mask, public_mask, algorithm = id_facts(plain_pub)
                self.assertEqual(one(pub, "Initial Date"), created // 1000)
                self.assertEqual((private_mask, public_mask, algorithm), (1, 2, ALG_RSA))

    # SoftHSM 2.6 stores a date on a private object unencrypted and then fails to
    # decrypt it (CKR_GENERAL_ERROR), so on its private and secret keys a date is
    # metadata's; openCryptoki keeps it.
    dates_on_private_keys = False

    def test_whole_day_dates(self):
        """An Activation Date and a Deactivation Date at midnight UTC are the key's
        CKA_START_DATE and CKA_END_DATE where the token gives them back; one with a
        time of day is metadata's."""
        port = self.serve()
        with self.client(port, V2) as c:
            dates = [attr(V2, "Activation Date", DATETIME, midnight(-1)),
                     attr(V2, "Deactivation Date", DATETIME, midnight(30))]
            payload = [container(V2, "common", [attr(V2, "Cryptographic Algorithm", ENUM, ALG_RSA),
                                                attr(V2, "Cryptographic Length", INTEGER, 2048)] + dates),
                       container(V2, "private", []), container(V2, "public", [])]
            got = c.ok(OP_CREATE_KEY_PAIR, payload, V2)
            priv, pub = find(got, T["PrivateKeyUniqueIdentifier"])[0], find(got, T["PublicKeyUniqueIdentifier"])[0]
            aes = find(c.ok(OP_CREATE, crypto.aes_create(V2, [attr(V2, "Activation Date", DATETIME, midnight(2))]),
                            V2), T["UniqueIdentifier"])[0]
            private_with_metadata = 0 if self.dates_on_private_keys else 2
            self.assertEqual(len(self.metadata()), private_with_metadata)
            odd = find(c.ok(OP_CREATE, crypto.aes_create(V2, [attr(V2, "Activation Date", DATETIME,
                                                                    midnight(-1) + 3600)]), V2),
                       T["UniqueIdentifier"])[0]
            self.assertEqual(len(self.metadata()), private_with_metadata + 1)
            for uid in (priv, pub):
                self.assertEqual(self.attrs(c, uid, V2, ["State", "Activation Date", "Deactivation Date"]),
                                 {"State": [ACTIVE], "Activation Date": [midnight(-1)],
                                  "Deactivation Date": [midnight(30)]})
            self.assertEqual(self.attrs(c, aes, V2, ["State", "Activation Date"]),
                             {"State": [PRE_ACTIVE], "Activation Date": [midnight(2)]})
            self.assertEqual(self.attrs(c, odd, V2, ["State", "Activation Date"]),
                             {"State": [ACTIVE], "Activation Date": [midnight(-1) + 3600]})
            # A key without metadata is used by its token flags: the public key
            # encrypts, whatever holds its dates.
            data = b"whole days"
            c.ok(OP_ENCRYPT, [uid_item(pub), crypto_parameters(PAD_PKCS1_V15), item(T["Data"], BYTES, data)], V2)


class NeedsMetadataTest(MetadataTestCase):
    """What the token has no place for still gets a metadata object."""

    def test_what_needs_metadata(self):
        port = self.serve()
        with self.client(port, V2) as c:
            def aes(*extra):
                return find(c.ok(OP_CREATE, crypto.aes_create(V2, extra), V2), T["UniqueIdentifier"])[0]
            custom = aes(attr(V2, "x-owner", TEXT, "dns"))
            limited = aes(crypto.usage_limits(V2, 5, UNIT_OBJECT))
            self.assertEqual(len(self.metadata()), 2)
            self.assertEqual(self.attrs(c, custom, V2)["x-owner"], ["dns"])
            self.assertEqual(self.attrs(c, limited, V2, ["Usage Limits"])["Usage Limits"],
                             [[(T["UsageLimitsTotal"], LONG, 5), (T["UsageLimitsUnit"], ENUM, UNIT_OBJECT)]])
            # Compromised: the flags of a Deactivated key, so the state is metadata's.
            priv, pub = self.new_pair(c, V2, private_name="burnt")
            c.ok(OP_REVOKE, revoke_payload(pub, KEY_COMPROMISE), V2)
            self.assertEqual(len(self.metadata()), 3)
            self.assertEqual(self.attrs(c, pub, V2, ["State"]), {"State": [COMPROMISED]})
            self.assertIn("Compromise Date", self.attrs(c, pub, V2))
            # An attribute added later: metadata; deleted again a second later: the
            # key keeps it, for its Last Change Date is no longer its Initial Date.
            plain = aes()
            c.ok(OP_ADD_ATTRIBUTE, added(plain, attr(V2, "x-note", TEXT, "n")), V2)
            self.assertEqual(len(self.metadata()), 4)
            time.sleep(1.1)
            c.ok(OP_DELETE_ATTRIBUTE, [uid_item(plain), item(T["AttributeName"], TEXT, "x-note")], V1)
            self.assertEqual(len(self.metadata()), 4)
            got = self.attrs(c, plain, V2)
            self.assertNotIn("x-note", got)
            self.assertGreater(one(got, "Last Change Date"), one(got, "Initial Date"))

    def test_sensitive_keeps_the_digest(self):
        """A key the token lets out has a Digest the token gives; made Sensitive,
        the key keeps it in metadata, and the Last Change Date it had."""
        port = self.serve(keys={"extractable": True})
        with self.client(port, V2) as c:
            uid = self.create_aes(c, V2, name="open")
            before = self.attrs(c, uid, V2)
            self.assertEqual(self.metadata(), [])
            self.assertEqual(len(before["Digest"]), 1)
            c.ok(OP_MODIFY_ATTRIBUTE, lifecycle.modify_payload(V2, uid, "Sensitive", lifecycle.BOOL, True), V2)
            after = self.attrs(c, uid, V2)
            self.assertEqual(len(self.metadata()), 1)
            self.assertEqual((before.pop("Sensitive"), after.pop("Sensitive")), ([False], [True]))
            self.assertEqual(after, before)


class UndoTest(MetadataTestCase):
    def test_undone_activate_leaves_no_metadata(self):
        """Undo puts back the metadata a key had - none - and its token dates."""
        port = self.serve()
        with self.client(port, V2) as c:
            uid = self.create_aes(c, V2, name="undone")
            before = self.attrs(c, uid, V2)
            items = batch_items(exchange(c.sock, request_message([
                batch_item(OP_ACTIVATE, [uid_item(uid)], b"\x01"),
                batch_item(OP_GET, [uid_item("00" * 20 + "_secret")], b"\x02")], version=V2,
                batch_error_option=lifecycle.UndoTest.UNDO)))
            self.assertEqual([bi[T["ResultStatus"]] for bi in items], [lifecycle.UndoTest.OPERATION_UNDONE, 1])
            self.assertEqual((self.metadata(), self.attrs(c, uid, V2)), ([], before))


class RecordExpiryTest(MetadataTestCase):
    """Records of destroyed objects stay keys.destroyed_record_days (default 30),
    then the next connection that adds an object to the token removes them."""

    def record(self, uid, destroyed, label_tail, state=lifecycle.DESTROYED):
        """A metadata object as the relay writes it for a record: label
        "kmip-relay metadata 1" then label_tail; destroyed None: no Destroy Date (a
        live object's metadata)."""
        attrs = [item(T["State"], ENUM, state), item(T["ObjectType"], ENUM, OBJ_SYMMETRIC_KEY),
                 item(T["ContactInformation"], TEXT, "rec-" + uid[:8])]
        if destroyed is not None:
            attrs.append(item(T["DestroyDate"], DATETIME, destroyed))
        path = os.path.join(self.tmp, "rec-%s.bin" % uid)
        with open(path, "wb") as f:
            f.write(item(T["Attributes"], STRUCTURE, attrs))
        self.token.tool("--write-object", path, "--type", "data", "--private", "--label",
                        "kmip-relay metadata 1" + label_tail, "--application-label", "kmip-relay metadata " + uid)

    def labels(self):
        return {label.split()[-1] if label.split()[-1] == "live" else "record"
                for label in self.metadata()}

    def test_records_expire(self):
        now = int(time.time())
        uid = {name: os.urandom(n).hex().upper() + "_secret"
               for name, n in (("new31", 32), ("old31", 20), ("new29", 32), ("old29", 20))}
        self.record(uid["new31"], now - 31 * DAY, " destroyed %d" % (now - 31 * DAY))
        self.record(uid["old31"], now - 31 * DAY, "")  # an older relay's: a bare label
        self.record(uid["new29"], now - 29 * DAY, " destroyed %d" % (now - 29 * DAY))
        self.record(uid["old29"], now - 29 * DAY, "")
        # Metadata of keys that are there: an older relay's, and one that a record's
        # label claims (which the key being there proves wrong).
        self.token.keypair(self.foreign_key_type, "c1", "foreign-live")
        self.token.keypair(self.foreign_key_type, "c2", "foreign-claimed")
        self.record("C1_pub", None, "")
        self.record("C2_pub", None, " destroyed %d" % (now - 40 * DAY))
        port = self.serve()

        def states(c):
            out = {}
            for name, u in sorted(uid.items()):
                bi = c.call(OP_GET_ATTRIBUTES, [uid_item(u)] + attribute_refs(V2, ["State"]), V2)
                out[name] = (returned_attributes(bi[T["ResponsePayload"]], V2)["State"][0]
                             if bi[T["ResultStatus"]] == 0 else bi.get(T["ResultReason"]))
            return out

        every = {name: lifecycle.DESTROYED for name in uid}
        with self.client(port, V2) as c:
            # Readers remove nothing.
            self.assertEqual(states(c), every)
            c.ok(OP_LOCATE, [item(T["Attributes"], STRUCTURE, []), item(T["StorageStatusMask"], INTEGER, 4)], V2)
            self.assertEqual(len(self.metadata()), 6)
        with self.client(port, V2) as c:
            kept = self.create_aes(c, V2, name="writer")
            self.assertEqual(states(c), dict(every, new31=OBJECT_NOT_FOUND, old31=OBJECT_NOT_FOUND))
            labels = self.metadata()
            self.assertEqual(len(labels), 4)
            # An older relay's labels now say what they are.
            self.assertIn("kmip-relay metadata 1 destroyed %d" % (now - 29 * DAY), labels)
            self.assertIn("kmip-relay metadata 1 live", labels)
            self.assertEqual(self.attrs(c, "C1_pub", V2, ["Contact Information"]),
                             {"Contact Information": ["rec-C1_pub"]})
            # A record this connection writes stays, and so does the key it made.
            c.ok(OP_DESTROY, [uid_item(kept)], V2)
            self.assertEqual(self.attrs(c, kept, V2, ["State"]), {"State": [lifecycle.DESTROYED]})
        self.assertEqual(len(self.metadata()), 5)

    def test_destroyed_record_days(self):
        now = int(time.time())
        gone, stays = os.urandom(32).hex().upper() + "_pub", os.urandom(32).hex().upper() + "_pub"
        self.record(gone, now - DAY - 3600, " destroyed %d" % (now - DAY - 3600))
        self.record(stays, now - DAY + 3600, " destroyed %d" % (now - DAY + 3600),
                    state=lifecycle.DESTROYED_COMPROMISED)
        port = self.serve(keys={"destroyed_record_days": 1})
        with self.client(port, V2) as c:
            self.new_pair(c, V2)
            self.assertEqual(c.fails(OP_GET_ATTRIBUTES, [uid_item(gone)], V2), OBJECT_NOT_FOUND)
            self.assertEqual(c.fails(OP_GET_ATTRIBUTES, [uid_item(gone)], V1), ITEM_NOT_FOUND)
            self.assertEqual(self.attrs(c, stays, V2, ["State"]), {"State": [lifecycle.DESTROYED_COMPROMISED]})
        self.assertEqual(self.metadata(), ["kmip-relay metadata 1 destroyed %d" % (now - DAY + 3600)])


class EpochTest(MetadataTestCase):
    """A connection keeps what it read of a key once it uses the key again; for a
    key without metadata the token's epoch tells it that another connection gave
    the key some, at the next use, as a replaced generation does for a key with."""

    def test_usage_limits_added_elsewhere_hold_at_the_next_use(self):
        port = self.serve()
        with self.client(port, V2) as a:
            # An RSA public key Active from yesterday's midnight: no metadata.
            payload = [container(V2, "common", [attr(V2, "Cryptographic Algorithm", ENUM, ALG_RSA),
                                                attr(V2, "Cryptographic Length", INTEGER, 2048)]),
                       container(V2, "private", []),
                       container(V2, "public", [attr(V2, "Activation Date", DATETIME, midnight(-1))])]
            pub = find(a.ok(OP_CREATE_KEY_PAIR, payload, V2), T["PublicKeyUniqueIdentifier"])[0]
            self.assertEqual(self.metadata(), [])
            encrypt = [uid_item(pub), crypto_parameters(PAD_PKCS1_V15), item(T["Data"], BYTES, b"epoch")]
            for _ in range(3):
                a.ok(OP_ENCRYPT, encrypt, V2)
            self.assertIn("kmip-relay epoch", self.token.objects("data"))
            with self.client(port, V2) as b:
                b.ok(OP_ADD_ATTRIBUTE, added(pub, crypto.usage_limits(V2, 1, UNIT_OBJECT)), V2)
            self.assertEqual(len(self.metadata()), 1)
            a.ok(OP_ENCRYPT, encrypt, V2)
            bi = a.call(OP_ENCRYPT, encrypt, V2)
            self.assertEqual((bi[T["ResultReason"]], bi[T["ResultMessage"]]),
                             (PERMISSION_DENIED, "the key's Usage Limits are used up"))

    def test_a_change_elsewhere_holds_at_the_next_request_for_every_item(self):
        """A key with metadata (activated: a time of day), used on connection a;
        connection b gives it Usage Limits of 2; a's next request, a batch of
        three Signs, checks the key at its first item and charges each item: two
        pass, the third finds the limits used up."""
        port = self.serve()
        with self.client(port, V2) as a:
            payload = a.ok(OP_CREATE_KEY_PAIR, key_pair_payload(ALG_RSA, 2048, "held-priv", "held-pub"), V10)
            priv = find(payload, T["PrivateKeyUniqueIdentifier"])[0]
            a.ok(OP_ACTIVATE, [uid_item(priv)], V2)
            self.assertEqual(len(self.metadata()), 1)
            sign = [uid_item(priv), crypto_parameters(PAD_PKCS1_V15, HASH_SHA256, ALG_RSA),
                    item(T["Data"], BYTES, b"held")]
            for _ in range(2):
                a.ok(OP_SIGN, sign, V2)
            with self.client(port, V2) as b:
                b.ok(OP_ADD_ATTRIBUTE, added(priv, crypto.usage_limits(V2, 2, UNIT_OBJECT)), V2)
            items = batch_items(exchange(a.sock, request_message(
                [batch_item(OP_SIGN, sign, bytes([i])) for i in range(3)], version=V2, batch_error_option=CONTINUE)))
            self.assertEqual([bi.get(T["ResultMessage"]) for bi in items],
                             [None, None, "the key's Usage Limits are used up"])
            self.assertEqual([bi[T["ResultStatus"]] for bi in items], [SUCCESS, SUCCESS, FAILED])


class StampedIDTest(MetadataTestCase):
    """Only a CKA_ID the relay stamped makes a key its own: a key made elsewhere
    with the same layout but a wrong check value is a foreign key, which counts as
    Active whatever its flags and has no Initial Date."""

    def test_check_value_decides(self):
        created = int(time.time()) * 1000
        good = sealed_id(created, (USAGE_SIGN, USAGE_VERIFY), self.foreign_algorithm)
        bad = good[:-1] + bytes([good[-1] ^ 1])
        for key_id in (good, bad):
            self.token.tool("--keypairgen", "--key-type", self.foreign_key_type, "--id", key_id.hex(), "--label",
                            key_id.hex()[:8], "--usage-sign")
        port = self.serve()
        with self.client(port, V2) as c:
            ours = self.attrs(c, good.hex().upper() + "_priv", V2)
            theirs = self.attrs(c, bad.hex().upper() + "_priv", V2)
        self.assertEqual((ours["Initial Date"], ours["Cryptographic Usage Mask"], ours["Cryptographic Algorithm"]),
                         ([created // 1000], [USAGE_SIGN], [self.foreign_algorithm]))
        self.assertNotIn("Initial Date", theirs)
        self.assertEqual((ours["State"], theirs["State"]), ([ACTIVE], [ACTIVE]))


if __name__ == "__main__":
    unittest.main()

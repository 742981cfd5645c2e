# SPDX-License-Identifier: BSD-3-Clause
"""The licence and the documentation against the source (issue 16):

- LICENSE is the BSD 3-Clause License, and every source file names it in an
  SPDX line near its top;
- every config key that src/cfg.c accepts, read from its key tables, has an
  entry in kmip-relay.json(5) (".It Cm KEY", with its Type:, Default: and
  Example:) and in README (a key list line that starts with it), and the man
  page documents no key that src/cfg.c does not accept;
- the example configs that make install puts under $(docdir)/examples are
  README's "example config: NAME" blocks, byte for byte, and each is a JSON
  object;
- the man pages pass mandoc's lint.

A new key is documented by adding, in its dotted form (tls.certificate,
clients[].namespace, pkcs11.backends[].module):
  - to man/kmip-relay.json.5.in, in its section's list: ".It Cm KEY", a
    description, and the lines "Type: ...", "Default: ..." and "Example: ...";
  - to README: a line of the Configuration key list (or, for clients[].*, of
    the Access control list) that starts with two spaces and the key.
A key table that is not reached from top_keys must be the entries of a list
(as client_keys are of "clients"): it is placed by the path its loader formats
("clients[%zu]"), the table named after the list (client_keys for clients)."""

import glob
import json
import os
import re
import subprocess
import tempfile
import unittest

SRCDIR = os.environ.get("SRCDIR", os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))
RELAY = os.environ.get("RELAY", os.path.abspath("kmip-relay"))
BUILDDIR = os.path.dirname(os.path.abspath(RELAY))
SPDX = "SPDX-License-Identifier: BSD-3-Clause"

# What counts as a source file: code, scripts, build files, units and man pages;
# not data (test vectors, corpora, the OASIS test cases).
SOURCE_GLOBS = ("src/*.c", "src/*.h", "src/*.def", "test/*.c", "test/*.h", "test/*/*.c",
                "test/*/*.py", "test/system/*", "test/lsan.supp", "scripts/*", ".ci/run",
                "Makefile.am", "configure.ac", "units/*", "man/*", "debian/rules")


def source_files(top):
    files = set()
    for pattern in SOURCE_GLOBS:
        files.update(p for p in glob.glob(os.path.join(top, pattern)) if os.path.isfile(p))
    return sorted(files)


def without_spdx(files):
    """The files whose first 3 lines do not carry the SPDX line."""
    missing = []
    for path in files:
        with open(path, errors="replace") as f:
            head = [f.readline() for _ in range(3)]
        if not any(SPDX in line for line in head):
            missing.append(path)
    return missing


def read(*path):
    with open(os.path.join(*path)) as f:
        return f.read()


class KeyTableError(Exception):
    pass


TABLE = re.compile(r"^static const struct key (\w+)\[\] = \{\n(.*?)^\};", re.S | re.M)
ENTRY = re.compile(r'^\s*(?:[A-Z]\(|\{\s*)"([^"]+)",\s*(KT_\w+)(?:,[^,\n]+,\s*(\w+)\s*\})?', re.M)
LIST_PATH = re.compile(r'"((?:[a-z0-9_]+\.)*[a-z0-9_]+)\[%zu\]"')


def config_keys(cfg_c):
    """The dotted keys that the config loader in cfg_c (src/cfg.c's text) accepts:
    its key tables from top_keys down (KT_SECTION entries name their table),
    and the tables of list entries, placed by the "NAME[%zu]" paths their
    loaders format. Raises KeyTableError for a table it cannot place."""
    tables = {name: ENTRY.findall(body) for name, body in TABLE.findall(cfg_c)}
    if "top_keys" not in tables:
        raise KeyTableError("no top_keys table in src/cfg.c")
    keys, placed = [], set()

    def walk(table, prefix):
        placed.add(table)
        for name, kind, section in tables[table]:
            if kind == "KT_SECTION":
                if section not in tables:
                    raise KeyTableError("%s%s: no table %s" % (prefix, name, section))
                walk(section, prefix + name + ".")
            else:
                keys.append(prefix + name)

    walk("top_keys", "")
    lists = LIST_PATH.findall(cfg_c)
    for table in sorted(set(tables) - placed):
        stem = table[:-len("_keys")] if table.endswith("_keys") else table
        owners = [l for l in lists if l.rsplit(".", 1)[-1] in (stem, stem + "s", stem + "es")]
        if len(owners) != 1 or owners[0] not in keys:
            raise KeyTableError("key table %s: cannot tell which list's entries it holds (lists: %s); "
                                "name it after the list, as client_keys for clients[]" % (table, lists))
        walk(table, owners[0] + "[].")
    return keys


def man_entries(man):
    """{key: text of its entry} of the ".It Cm KEY" items of a man page."""
    entries, key = {}, None
    for line in man.split("\n"):
        m = re.match(r"\.It Cm (\S+)$", line)
        if m:
            key = m.group(1)
            entries[key] = ""
        elif line.startswith((".It", ".El")):
            key = None
        elif key:
            entries[key] += line + "\n"
    return entries


def readme_keys(readme):
    """The keys that start a line of README's key lists ("  tls.key   PEM file"),
    one or more separated by commas."""
    keys = set()
    for line in readme.split("\n"):
        m = re.match(r"  ([a-z0-9_.\[\]]+(?:, [a-z0-9_.\[\]]+)*)(?:\s|$)", line)
        if m:
            keys.update(m.group(1).split(", "))
    return keys


def readme_examples(readme):
    """{name: text} of README's "example config: NAME" blocks, unindented."""
    out, name, body = {}, None, []
    for line in readme.split("\n"):
        m = re.match(r"\Aexample config: (\S+)\Z", line)
        if m:
            if name is not None:
                raise ValueError("example %s inside example %s" % (m.group(1), name))
            name, body = m.group(1), []
        elif line == "end of example":
            out[name] = "".join(l[4:] + "\n" for l in body)
            name = None
        elif name is not None:
            if line and not line.startswith("    "):
                raise ValueError("example %s: a line not indented by 4: %r" % (name, line))
            body.append(line)
    if name is not None:
        raise ValueError("example %s has no end" % name)
    return out


class ConfigKeysDocumentedTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.cfg_c = read(SRCDIR, "src", "cfg.c")
        cls.keys = config_keys(cls.cfg_c)
        cls.man = read(SRCDIR, "man", "kmip-relay.json.5.in")
        cls.readme = read(SRCDIR, "README")

    def test_keys_are_read_from_the_source(self):
        """Not a fixed list: the sections, the list entries and the later keys."""
        for key in ("tls.certificate", "tls.client_crl", "timeouts.idle", "limits.max_message_size",
                    "pkcs11.call_timeout", "pkcs11.pin_failures", "pkcs11.pin_failure_window",
                    "clients", "clients[].name", "clients[].tokens", "clients[].password_sha256",
                    "namespaces", "testing.interop"):
            self.assertIn(key, self.keys)
        self.assertEqual(len(self.keys), len(set(self.keys)))
        self.assertGreaterEqual(len(self.keys), 45)

    def test_every_key_read_outside_the_tables_is_in_them(self):
        """A key a loader reads with json_object_get must also be in a table (the
        tables are what load_object accepts)."""
        names = {k.rsplit(".", 1)[-1].replace("[]", "") for k in self.keys}
        names |= {k.split(".")[0] for k in self.keys}
        got = set(re.findall(r'json_object_get\(\w+, "([^"]+)"\)', self.cfg_c))
        self.assertTrue(got)
        self.assertEqual(got - names, set())

    def test_every_key_is_in_the_man_page(self):
        entries = man_entries(self.man)
        self.assertEqual([k for k in self.keys if k not in entries], [])

    def test_every_man_page_entry_has_type_default_and_example(self):
        entries = man_entries(self.man)
        for key, text in entries.items():
            for part in ("Type:", "Default:", "Example:"):
                self.assertIn(part, text, "%s: no %s" % (key, part))

    def test_the_man_page_documents_no_other_key(self):
        self.assertEqual([k for k in man_entries(self.man) if k not in self.keys], [])

    def test_every_key_is_in_readme(self):
        documented = readme_keys(self.readme)
        self.assertEqual([k for k in self.keys if k not in documented], [])

    def test_a_new_key_without_docs_is_caught(self):
        """A key added to a table, a section or a list entry table shows up as
        undocumented."""
        cfg_c = self.cfg_c.replace('\tK("ticket_key",', '\tK("new_key", KT_STRING, tls.ticket_key),\n\tK("ticket_key",', 1)
        cfg_c = cfg_c.replace('\tC("name",', '\tC("new_client_key", KT_STRING, name),\n\tC("name",', 1)
        cfg_c = cfg_c.replace('\t{ "testing", KT_SECTION, 0, testing_keys },',
                              '\t{ "testing", KT_SECTION, 0, testing_keys },\n\t{ "pool", KT_SECTION, 0, testing_keys },',
                              1)
        keys = config_keys(cfg_c)
        new = ["tls.new_key", "clients[].new_client_key", "pool.interop"]
        self.assertEqual([k for k in new if k in keys], new)
        entries, documented = man_entries(self.man), readme_keys(self.readme)
        self.assertEqual(sorted(k for k in keys if k not in entries), sorted(new))
        self.assertEqual(sorted(k for k in keys if k not in documented), sorted(new))

    def test_a_list_table_is_placed_by_its_path(self):
        """A table for the entries of a new list (log.sinks[]) is found through its
        loader's path; one that cannot be placed is an error."""
        self.assertIn("pkcs11.backends[].module", self.keys)
        sink = ('static const struct key sink_keys[] = {\n'
                '\tS("path", KT_PATH, path),\n\t{ 0 },\n};\n'
                'static void f(void) { snprintf(path, n, "log.sinks[%zu]", i); }\n')
        cfg_c = self.cfg_c.replace('\tK("trace",', '\t{ "sinks", KT_LATER, 0, NULL },\n\tK("trace",', 1)
        self.assertIn("log.sinks[].path", config_keys(cfg_c + sink))
        with self.assertRaises(KeyTableError):
            config_keys(cfg_c + sink.replace("sink_keys", "stray_keys"))


class ExamplesTest(unittest.TestCase):
    NAMES = ["cascade", "krill", "quickstart", "two-tenants"]

    def test_installed_examples_are_readmes(self):
        examples = readme_examples(read(SRCDIR, "README"))
        self.assertEqual(sorted(examples), self.NAMES)
        built = sorted(os.path.basename(p)[:-5] for p in glob.glob(os.path.join(BUILDDIR, "examples", "*.json")))
        self.assertEqual(built, self.NAMES)
        for name, text in examples.items():
            self.assertEqual(read(BUILDDIR, "examples", name + ".json"), text, name)
            self.assertIsInstance(json.loads(text), dict, name)

    def test_makefile_installs_every_example(self):
        m = re.search(r"^EXAMPLES = (.*)$", read(SRCDIR, "Makefile.am"), re.M)
        self.assertEqual(sorted(m.group(1).split()), ["examples/%s.json" % n for n in self.NAMES])

    def test_a_broken_example_block_is_refused(self):
        with self.assertRaises(ValueError):
            readme_examples("example config: a\n    {}\n")
        with self.assertRaises(ValueError):
            readme_examples("example config: a\n  {}\nend of example\n")


class ManPageTest(unittest.TestCase):
    def test_mandoc_lint(self):
        for page in ("kmip-relay.8", "kmip-relay.json.5"):
            path = os.path.join(BUILDDIR, "man", page)
            r = subprocess.run(["mandoc", "-Tlint", "-W", "warning", path], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, universal_newlines=True, timeout=60)
            self.assertEqual((r.returncode, r.stdout), (0, ""), page)
            self.assertNotRegex(read(path), r"@[a-zA-Z_]+@", page)


class LicenceTest(unittest.TestCase):
    def test_licence_is_bsd_3_clause(self):
        with open(os.path.join(SRCDIR, "LICENSE")) as f:
            text = f.read()
        self.assertTrue(text.startswith("BSD 3-Clause License\n"))
        self.assertIn("3. Neither the name of the copyright holder nor the names of its", text)

    def test_every_source_file_has_an_spdx_line(self):
        files = source_files(SRCDIR)
        # The globs find the tree, not nothing.
        for known in ("src/cfg.c", "src/kmip_tags.def", "scripts/test", "Makefile.am",
                      "units/kmip-relay.socket", "test/integration/relaytest.py"):
            self.assertIn(os.path.join(SRCDIR, known), files)
        self.assertEqual([os.path.relpath(p, SRCDIR) for p in without_spdx(files)], [])

    def test_a_file_without_the_line_is_found(self):
        with tempfile.TemporaryDirectory() as tmp:
            good, bad = os.path.join(tmp, "good.c"), os.path.join(tmp, "bad.c")
            with open(good, "w") as f:
                f.write("/* %s */\nint x;\n" % SPDX)
            with open(bad, "w") as f:
                f.write("int x;\n\n\n/* %s */\n" % SPDX)
            self.assertEqual(without_spdx([good, bad]), [bad])


if __name__ == "__main__":
    unittest.main(verbosity=2)

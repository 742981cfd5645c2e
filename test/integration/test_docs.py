# SPDX-License-Identifier: BSD-3-Clause
"""The licence and the documentation against the source (issue 16):

- LICENSE is the BSD 3-Clause License, and every source file names it in an
  SPDX line near its top."""

import glob
import os
import tempfile
import unittest

SRCDIR = os.environ.get("SRCDIR", os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))
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

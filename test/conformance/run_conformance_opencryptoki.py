#!/usr/bin/python3
# SPDX-License-Identifier: BSD-3-Clause
"""make check's run of the OASIS conformance cases on openCryptoki's software
token: run_conformance.py --token opencryptoki, each case's outcome compared with
expected-opencryptoki (see README "Conformance")."""

import os
import sys

import run_conformance

if __name__ == "__main__":
    sys.argv[1:] = ["--token", "opencryptoki", "--expect",
                    os.path.join(run_conformance.HERE, "expected-opencryptoki")] + sys.argv[1:]
    try:
        sys.exit(run_conformance.main())
    except Exception:  # a fault of the runner or its harness: make check's hard error
        import traceback
        traceback.print_exc()
        sys.exit(99)

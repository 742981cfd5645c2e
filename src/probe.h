/* SPDX-License-Identifier: BSD-3-Clause */
/* kmip-relay --probe, for monitoring: each backend of the pool, in a child
 * process of its own (a module that crashes or hangs is a backend down, not a
 * probe that dies), is loaded, logged into with its configured PIN (through the
 * PIN guard, so that a wrong PIN is never tried twice), asked for an ephemeral
 * P-256 key pair in its session (CKA_TOKEN false: nothing is written to the
 * token), signs with it, and the signature is verified with GnuTLS. One line
 * per backend gives the result and each step's latency (a JSON object with
 * --json). The result goes into the pool's health file (health.h), as a relay's
 * would: a success clears the backend's record, a device-class failure marks it
 * down; and into metrics.file, if set. */
#ifndef KR_PROBE_H
#define KR_PROBE_H

#include <stdbool.h>

/* The exit status: every backend up, some down, all down (or no config). */
enum { PROBE_HEALTHY = 0, PROBE_DEGRADED = 1, PROBE_DOWN = 2 };

int probe_run(const char *config, bool json);

#endif

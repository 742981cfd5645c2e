/* SPDX-License-Identifier: BSD-3-Clause */
/* kmip-relay --check-config: what can be checked before a client connects,
 * without side effects. The config's schema (cfg.h); then the TLS certificate,
 * key and priority string; the files (PIN files not readable by others, the
 * ticket key's mode, the lock file's and log.file's directories); and each
 * configured token, its module loaded in a child process of its own so that a
 * module that crashes or hangs is reported, not fatal: the module's description,
 * the token's slot and the flags that say its user PIN is in danger. With login,
 * each backend is logged into once, the TLS key is found in its token, and the
 * backends of a pool are compared (replicas.h).
 *
 * Problems go to stderr, one line each naming the key, the path and the cause
 * ("error: ..." or "warning: ..."); what was found (module, token, slot) goes to
 * stdout, then "OK" when nothing failed. */
#ifndef KR_CONFIG_CHECK_H
#define KR_CONFIG_CHECK_H

#include <stdbool.h>

struct check_options {
	bool login;          /* log into each token with its configured PIN */
	bool strict;         /* warnings fail the check too */
	const char *as_user; /* run the check as this user (root only) */
};

/* The exit status: CHECK_OK, CHECK_INVALID (the config could not be loaded, or
 * bad use), CHECK_FAILED (a runtime check failed) or CHECK_WARNINGS (with
 * strict). */
enum { CHECK_OK = 0, CHECK_INVALID = 1, CHECK_FAILED = 2, CHECK_WARNINGS = 3 };

int config_check(const char *config, const struct check_options *o);

#endif

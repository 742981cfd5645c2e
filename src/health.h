/* SPDX-License-Identifier: BSD-3-Clause */
/* The pool's health, shared by every relay process on the host: per backend, how
 * many failures in a row, until when it is skipped, and its last error (a CKR_
 * name, "timeout" or a signal's name) with its time. It lives in a small file
 * beside pkcs11.lock_file (CFG_HEALTH_SUFFIX), one fixed-size text record per
 * configured backend, so that a process dying inside a module call - its deadline
 * passed, or the module crashed it - can still record its backend down with one
 * pwrite from the watcher thread or a signal handler. Other updates are read,
 * changed and written under the file's flock. Without a lock_file the health is
 * this process's alone.
 *
 * A backend that failed is skipped for pkcs11.pool.retry_after seconds, exactly
 * (no backoff); then one connection tries it (half-open: choosing it pushes its
 * wait on, so that the next connections keep away until it succeeded). A success
 * clears its record. */
#ifndef KR_HEALTH_H
#define KR_HEALTH_H

#include <stdbool.h>

#include "cfg.h"
#include "p11_call.h"

struct health;

int health_open(const struct cfg *c, struct health **ret) KR_WUR;
/* As health_open, for a command an administrator runs (--probe), perhaps as root:
 * a missing file is made only if pkcs11.lock_file exists (a relay has run), and
 * then gets the lock file's owner, so that the service's user can still open
 * it. *ret_made says whether the file exists now. */
int health_open_beside_lock(const struct cfg *c, struct health **ret, bool *ret_made) KR_WUR;
void health_close(struct health *h);

/* The backend a new connection uses: in failover mode the first usable one in
 * list order, in balance mode one at random by weight. A backend is usable if it
 * is up, or its wait is over (then this connection is its one try). skip[i]: one
 * that failed on this connection. -1 if none is usable. */
int health_choose(struct health *h, const bool *skip);
/* Whether backend i may be tried now (for looking up an object there). */
bool health_usable(struct health *h, int i);
/* Records a failure of backend i; error names it ("CKR_DEVICE_ERROR"). */
void health_failed(struct health *h, int i, const char *error);
/* Records a success: clears i's record, if it has one. */
void health_ok(struct health *h, int i);
/* A backend's record as the file holds it, and what this process saw of it. */
struct health_state {
	unsigned failures;
	long long down_until;           /* 0: up */
	char error[33];                 /* the last error's name, or "" */
	long long error_time;           /* its time, seconds since the epoch */
	long long ok_here, failed_here; /* when this process saw it succeed and fail; 0: never */
	char cleared_error[33];         /* the record this process's success cleared: its */
	long long cleared_time;         /* last error and that error's time ("", 0: none) */
};
/* Every backend's state, the file read afresh under its lock, into
 * ret[0 .. pkcs11.n_backends). */
void health_states(struct health *h, struct health_state *ret);

/* What backend i's module calls answer to (p11_call.h): a timeout or a crash in
 * one records i down before the process ends. */
const struct p11_call_owner *health_owner(struct health *h, int i);

#endif

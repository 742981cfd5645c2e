/* SPDX-License-Identifier: BSD-3-Clause */
/* Metrics for Prometheus. A relay process serves one connection, so it cannot
 * serve an HTTP endpoint: it counts in memory while it runs and, at its end,
 * merges the counts into metrics.file, Prometheus text exposition for
 * node_exporter's textfile collector. The merge is one read and one write under
 * a lock (<metrics.file>.lock): read the file, add, write <metrics.file>.tmp,
 * rename it into place, so that a reader never sees half a file. Without
 * metrics.file nothing is counted.
 *
 * What a process that crashed inside a module call could not merge, the next
 * merge finds in the pool's health file (health.h): a backend's last error that
 * is a signal's name or "timeout", newer than the last failure the metrics file
 * knows, counts one connection that ended "crash". */
#ifndef KR_METRICS_H
#define KR_METRICS_H

#include <stdbool.h>
#include <stdint.h>

#include "cfg.h"
#include "errors.h"
#include "health.h"

/* Starts counting, if c has a metrics.file. */
void metrics_start(const struct cfg *c);
/* One batch item: its operation and result as the audit record names them. */
void metrics_request(const char *operation, const char *result, uint64_t latency_us);
/* The TLS handshake's duration. */
void metrics_handshake(uint64_t duration_us);
/* A CKR_ code other than CKR_OK that a module call returned, by name (static
 * text, p11_rv_name). */
void metrics_ckr(const char *name);

/* How a connection ended, as the label "end" says it. */
enum metrics_end {
	METRICS_END_NONE, /* not a connection (--probe) */
	METRICS_END_CLOSED,
	METRICS_END_TLS_FAILED,
	METRICS_END_AUTH_FAILED,
	METRICS_END_TIMEOUT,
	METRICS_END_ERROR,
};

/* Merges what this process counted, the connection's end and the state of the
 * pool's backends (h: this process's view of the health file, or NULL to read
 * it afresh) into metrics.file. On failure *ret_why says why, with the path and
 * the system's reason. Does nothing unless metrics_start started counting. */
int metrics_write(const struct cfg *c, enum metrics_end end, struct health *h, const char **ret_why) KR_WUR;

#endif

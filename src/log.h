/* SPDX-License-Identifier: BSD-3-Clause */
/* Logging: the journal (with structured fields) under systemd, syslog under inetd,
 * stderr in a --listen debugging run, and optionally a file as well. Records are
 * plain text or, for audit records, one JSON object. Callers never pass PINs or
 * key material. */
#ifndef KR_LOG_H
#define KR_LOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <syslog.h>
#include <time.h>

#include "ttlv.h"

enum log_target {
	LOG_TARGET_NONE,
	LOG_TARGET_JOURNAL,
	LOG_TARGET_SYSLOG,
	LOG_TARGET_STDERR,
};

/* A structured field: NAME (journal field name, upper case) and its value. */
struct log_field {
	const char *name;
	const char *value;
};

/* Picks the target for how the process was started: the journal when systemd
 * started the service, stderr for --listen, syslog otherwise. */
enum log_target log_default_target(bool listen_mode);

void log_open(enum log_target target);
/* Appends every record to file as well; a failure is logged to the target. */
int log_open_file(const char *file) KR_WUR;
void log_close(void);

__attribute__((format(printf, 2, 3)))
void log_msg(int priority, const char *fmt, ...);
/* A record with structured fields; message is its text form. */
void log_record(int priority, const char *message, const struct log_field *fields, size_t n);
/* Between these, file and stderr lines are gathered and then written together. */
void log_hold(void);
void log_release(void);
/* Text a client chose (a Username, a certificate's subject, a name), made safe for
 * one log line or field: control characters (C0, DEL, C1), quotes and backslashes
 * are escaped (\n, \x1B, \", \\), a byte that is not well-formed UTF-8 becomes
 * \xNN, and the result is cut at a character boundary to fit size. Returns out. */
const char *log_escape(const void *in, size_t len, char *out, size_t size);
/* The longest prefix of s, at most n bytes, that ends at a UTF-8 character
 * boundary. */
size_t log_utf8_prefix(const char *s, size_t n);
/* The start of a line in a file or on stderr for a record made at ts by pid:
 * "2026-01-31T12:00:00.123Z kmip-relay[42]: ", in UTC. Async-signal-safe.
 * Returns its length. */
#define LOG_PREFIX_MAX 80
size_t log_line_prefix(const struct timespec *ts, long pid, char out[LOG_PREFIX_MAX]);
/* One line of static text (no newline, at most 512 bytes) at critical priority
 * to every target that is open, just before the process ends, from a signal
 * handler or from a thread while another may hold any lock: async-signal-safe,
 * it only writes to descriptors opened before (log.file, stderr with --listen,
 * a socket to the journal or to syslog), and writes the lines held by log_hold
 * first. Call it only while no other log function runs. */
void log_emergency(const char *message);
/* A TTLV tree, redacted, at debug priority (--trace). */
void log_trace(const char *what, const struct ttlv_item *root);

#endif

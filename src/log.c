/* SPDX-License-Identifier: BSD-3-Clause */
#include "config.h"

#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "kmip_names.h"
#include "sd.h"
#include "ttlv.h"
#include "ttlv_print.h"

#define IDENT "kmip-relay"
#define SYSLOG_SOCKET "/dev/log"
#define JOURNAL_SOCKET "/run/systemd/journal/socket"

static enum log_target target = LOG_TARGET_NONE;
static int file_fd = -1;
/* A datagram socket connected to the journal or to syslog, for log_emergency: the
 * libraries' own are neither reachable nor async-signal-safe. */
static int emergency_fd = -1;

enum log_target log_default_target(bool listen_mode)
{
	if (listen_mode)
		return LOG_TARGET_STDERR;
	/* systemd sets INVOCATION_ID for the services it starts. */
	if (getenv("INVOCATION_ID"))
		return LOG_TARGET_JOURNAL;
	return LOG_TARGET_SYSLOG;
}

/* -1 if there is nothing to reach at path. */
static int connect_datagram(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd;

	if (strlen(path) >= sizeof(sa.sun_path))
		return -1;
	memcpy(sa.sun_path, path, strlen(path));
	fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd >= 0 && connect(fd, (const struct sockaddr *)&sa, sizeof(sa)) < 0) {
		close(fd);
		fd = -1;
	}
	return fd;
}

void log_open(enum log_target t)
{
	if (target == LOG_TARGET_SYSLOG && t != LOG_TARGET_SYSLOG)
		closelog();
	if (emergency_fd >= 0)
		close(emergency_fd);
	emergency_fd = -1;
	/* Without a syslog socket, glibc would try to connect again for every record
	 * (about 24 µs a Sign, measured with the benchmark) and drop it anyway. */
	if (t == LOG_TARGET_SYSLOG && access(SYSLOG_SOCKET, W_OK) != 0)
		t = LOG_TARGET_NONE;
	target = t;
	if (t == LOG_TARGET_SYSLOG) {
		openlog(IDENT, LOG_PID | LOG_NDELAY, LOG_DAEMON);
		emergency_fd = connect_datagram(SYSLOG_SOCKET);
	} else if (t == LOG_TARGET_JOURNAL) {
		emergency_fd = connect_datagram(JOURNAL_SOCKET);
	}
}

int log_open_file(const char *file)
{
	file_fd = open(file, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY, 0600);
	if (file_fd < 0) {
		int err = errno;

		/* kmip-relay@.service leaves only its LogsDirectory= writable. */
		log_msg(LOG_ERR, "log.file: cannot open %s: %s%s", file, strerror(err),
			err == EROFS ? " (under kmip-relay@.service, log.file must be in /var/log/kmip-relay/)" : "");
		return KR_E_SYSTEM;
	}
	return 0;
}

void log_close(void)
{
	if (file_fd >= 0)
		close(file_fd);
	file_fd = -1;
	if (emergency_fd >= 0)
		close(emergency_fd);
	emergency_fd = -1;
	if (target == LOG_TARGET_SYSLOG)
		closelog();
	target = LOG_TARGET_NONE;
}

/* Lines for a file or stderr are held here between log_hold() and log_release(), so
 * that a response's audit records cost one write. Whole lines only, so that lines
 * from concurrent processes don't interleave (O_APPEND). */
struct held {
	char buf[32768];
	size_t len;
};

static bool holding;
static struct held held_stderr, held_file;

static void write_all(int fd, const char *p, size_t n)
{
	while (n) {
		ssize_t w = write(fd, p, n);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return;
		p += w;
		n -= (size_t)w;
	}
}

static void flush_held(int fd, struct held *h)
{
	write_all(fd, h->buf, h->len);
	h->len = 0;
}

/* Async-signal-safe formatting for log_line_prefix and log_emergency: v in
 * decimal, at least width digits. Returns the new end. */
static char *put_uint(char *out, unsigned long long v, int width)
{
	char digits[20];
	int n = 0;

	do {
		digits[n++] = (char)('0' + v % 10);
		v /= 10;
	} while (v && n < (int)sizeof(digits));
	while (n < width)
		digits[n++] = '0';
	while (n > 0)
		*out++ = digits[--n];
	return out;
}

static char *put_str(char *out, const char *s)
{
	while (*s)
		*out++ = *s++;
	return out;
}

size_t log_line_prefix(const struct timespec *ts, long pid, char out[LOG_PREFIX_MAX])
{
	/* The proleptic Gregorian date of a day count since 1970-01-01, by eras of 400
	 * years (146097 days) that start on 1 March (H. Hinnant's civil_from_days);
	 * gmtime_r is not async-signal-safe. */
	unsigned long long secs = ts->tv_sec > 0 ? (unsigned long long)ts->tv_sec : 0;
	unsigned long long days = secs / 86400 + 719468, era = days / 146097, doe = days % 146097;
	unsigned long long yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
	unsigned long long doy = doe - (365 * yoe + yoe / 4 - yoe / 100), mp = (5 * doy + 2) / 153;
	unsigned long long day = doy - (153 * mp + 2) / 5 + 1, month = mp < 10 ? mp + 3 : mp - 9;
	unsigned long long year = era * 400 + yoe + (month <= 2);
	char *p = out;

	p = put_uint(p, year, 4);
	*p++ = '-';
	p = put_uint(p, month, 2);
	*p++ = '-';
	p = put_uint(p, day, 2);
	*p++ = 'T';
	p = put_uint(p, secs % 86400 / 3600, 2);
	*p++ = ':';
	p = put_uint(p, secs % 3600 / 60, 2);
	*p++ = ':';
	p = put_uint(p, secs % 60, 2);
	*p++ = '.';
	p = put_uint(p, (unsigned long long)ts->tv_nsec / 1000000, 3);
	p = put_str(p, "Z " IDENT "[");
	p = put_uint(p, pid > 0 ? (unsigned long long)pid : 0, 1);
	p = put_str(p, "]: ");
	*p = '\0';
	return (size_t)(p - out);
}

/* The prefix of a line written now. */
static size_t line_prefix(char out[LOG_PREFIX_MAX])
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return log_line_prefix(&ts, (long)getpid(), out);
}

size_t log_utf8_prefix(const char *s, size_t n)
{
	size_t len = strnlen(s, n);

	/* Cut inside a character (the byte after the cut continues it, 10xxxxxx):
	 * back off to where that character starts. */
	if (len == n)
		while (len > 0 && ((unsigned char)s[len] & 0xC0) == 0x80)
			len--;
	return len;
}

const char *log_escape(const void *in, size_t len, char *out, size_t size)
{
	const uint8_t *p = in;
	size_t o = 0;

	if (size == 0)
		return out;
	for (size_t i = 0, n; i < len; i += n) {
		char esc[16];
		const char *piece = esc;
		size_t piece_len;
		uint32_t cp = 0;

		n = ttlv_utf8_char(p + i, len - i, &cp);
		if (n == 0) {
			n = 1;
			piece_len = (size_t)snprintf(esc, sizeof(esc), "\\x%02X", p[i]);
		} else if (cp == '\n' || cp == '\r' || cp == '\t') {
			piece_len = (size_t)snprintf(esc, sizeof(esc), "\\%c", cp == '\n' ? 'n' : cp == '\r' ? 'r' : 't');
		} else if (cp == '"' || cp == '\\') {
			piece_len = (size_t)snprintf(esc, sizeof(esc), "\\%c", (char)cp);
		} else if (cp < 0x20 || cp == 0x7F) {
			piece_len = (size_t)snprintf(esc, sizeof(esc), "\\x%02X", (unsigned)cp);
		} else if (cp >= 0x80 && cp <= 0x9F) { /* C1 controls, as a terminal reads them */
			piece_len = (size_t)snprintf(esc, sizeof(esc), "\\u%04X", (unsigned)cp);
		} else {
			piece = (const char *)p + i;
			piece_len = n;
		}
		if (piece_len > size - 1 - o)
			break;
		memcpy(out + o, piece, piece_len);
		o += piece_len;
	}
	out[o] = '\0';
	return out;
}

static void write_line(int fd, struct held *h, const char *message)
{
	char line[8192];
	size_t p = line_prefix(line), n;

	n = p + (size_t)snprintf(line + p, sizeof(line) - p, "%s\n", message);
	if (n >= sizeof(line)) { /* cut, at a character boundary */
		n = p + log_utf8_prefix(message, sizeof(line) - 2 - p);
		line[n++] = '\n';
	}
	if (!holding) {
		write_all(fd, line, n);
		return;
	}
	if (h->len + n > sizeof(h->buf))
		flush_held(fd, h);
	memcpy(h->buf + h->len, line, n);
	h->len += n;
}

void log_hold(void)
{
	holding = true;
}

void log_release(void)
{
	if (!holding)
		return;
	holding = false;
	flush_held(STDERR_FILENO, &held_stderr);
	if (file_fd >= 0)
		flush_held(file_fd, &held_file);
}

static void journal_send(int priority, const char *message, const struct log_field *fields, size_t n)
{
	struct iovec iov[16];
	char *bufs[16] = { 0 };
	size_t k = 0;

	if (asprintf(&bufs[k], "MESSAGE=%s", message) < 0)
		return;
	k++;
	if (asprintf(&bufs[k], "PRIORITY=%d", priority) >= 0)
		k++;
	if (asprintf(&bufs[k], "SYSLOG_IDENTIFIER=%s", IDENT) >= 0)
		k++;
	for (size_t i = 0; i < n && k < 16; i++)
		if (asprintf(&bufs[k], "%s=%s", fields[i].name, fields[i].value ? fields[i].value : "") >= 0)
			k++;
	for (size_t i = 0; i < k; i++)
		iov[i] = (struct iovec){ bufs[i], strlen(bufs[i]) };
	sd_lazy_journal_sendv(iov, (int)k);
	for (size_t i = 0; i < k; i++)
		free(bufs[i]);
}

void log_record(int priority, const char *message, const struct log_field *fields, size_t n)
{
	switch (target) {
	case LOG_TARGET_JOURNAL:
		journal_send(priority, message, fields, n);
		break;
	case LOG_TARGET_SYSLOG:
		syslog(priority, "%s", message);
		break;
	case LOG_TARGET_STDERR:
		write_line(STDERR_FILENO, &held_stderr, message);
		break;
	case LOG_TARGET_NONE:
		break;
	}
	if (file_fd >= 0)
		write_line(file_fd, &held_file, message);
}

void log_msg(int priority, const char *fmt, ...)
{
	char message[2048];
	va_list ap;

	va_start(ap, fmt);
	if (vsnprintf(message, sizeof(message), fmt, ap) >= (int)sizeof(message))
		message[log_utf8_prefix(message, sizeof(message) - 1)] = '\0';
	va_end(ap);
	log_record(priority, message, NULL, 0);
}

void log_trace(const char *what, const struct ttlv_item *root)
{
	char *text = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&text, &len);

	if (!f)
		return;
	fprintf(f, "%s\n", what);
	if (ttlv_print(f, root, &kmip_print_ops) < 0)
		fputs("(trace incomplete)\n", f);
	if (fclose(f) == 0) {
		if (len && text[len - 1] == '\n')
			text[len - 1] = '\0';
		log_record(LOG_DEBUG, text, NULL, 0);
	}
	free(text);
}

void log_emergency(const char *message)
{
	char line[LOG_PREFIX_MAX + 512], datagram[600], *d = datagram;
	size_t n = line_prefix(line);

	/* Lines held for the response before (audit records) come first. */
	if (holding) {
		if (target == LOG_TARGET_STDERR)
			flush_held(STDERR_FILENO, &held_stderr);
		if (file_fd >= 0)
			flush_held(file_fd, &held_file);
	}
	for (const char *m = message; *m && n < sizeof(line) - 1; m++)
		line[n++] = *m;
	line[n++] = '\n';
	/* Never fd 2 under systemd or inetd: it may be the connection. */
	if (target == LOG_TARGET_STDERR)
		write_all(STDERR_FILENO, line, n);
	if (file_fd >= 0)
		write_all(file_fd, line, n);
	if (emergency_fd < 0 || strlen(message) > 512)
		return;
	if (target == LOG_TARGET_JOURNAL) { /* journald's native protocol */
		d = put_str(d, "MESSAGE=");
		d = put_str(d, message);
		d = put_str(d, "\nPRIORITY=2\nSYSLOG_IDENTIFIER=" IDENT "\n");
	} else { /* RFC 3164 without the time stamp, which syslog daemons add */
		d = put_str(d, "<");
		d = put_uint(d, LOG_DAEMON | LOG_CRIT, 1);
		d = put_str(d, ">" IDENT "[");
		d = put_uint(d, (unsigned long long)getpid(), 1);
		d = put_str(d, "]: ");
		d = put_str(d, message);
	}
	send(emergency_fd, datagram, (size_t)(d - datagram), MSG_DONTWAIT | MSG_NOSIGNAL);
}

#include "config.h"

#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <systemd/sd-journal.h>
#include <time.h>
#include <unistd.h>

#include "kmip_names.h"
#include "ttlv.h"
#include "ttlv_print.h"

#define IDENT "kmip-relay"
#define SYSLOG_SOCKET "/dev/log"

static enum log_target target = LOG_TARGET_NONE;
static int file_fd = -1;

enum log_target log_default_target(bool listen_mode)
{
	if (listen_mode)
		return LOG_TARGET_STDERR;
	/* systemd sets INVOCATION_ID for the services it starts. */
	if (getenv("INVOCATION_ID"))
		return LOG_TARGET_JOURNAL;
	return LOG_TARGET_SYSLOG;
}

void log_open(enum log_target t)
{
	if (target == LOG_TARGET_SYSLOG && t != LOG_TARGET_SYSLOG)
		closelog();
	/* Without a syslog socket, glibc would try to connect again for every record
	 * (about 24 µs a Sign, measured with the benchmark) and drop it anyway. */
	if (t == LOG_TARGET_SYSLOG && access(SYSLOG_SOCKET, W_OK) != 0)
		t = LOG_TARGET_NONE;
	target = t;
	if (t == LOG_TARGET_SYSLOG)
		openlog(IDENT, LOG_PID | LOG_NDELAY, LOG_DAEMON);
}

int log_open_file(const char *file)
{
	file_fd = open(file, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY, 0600);
	if (file_fd < 0) {
		log_msg(LOG_ERR, "log.file: cannot open %s: %s", file, strerror(errno));
		return KR_E_SYSTEM;
	}
	return 0;
}

void log_close(void)
{
	if (file_fd >= 0)
		close(file_fd);
	file_fd = -1;
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

/* The line's prefix: the UTC time to the millisecond, the ident and the pid. The
 * part down to the second is made once a second. */
static int line_prefix(char *out, size_t size)
{
	static time_t stamp_sec = -1;
	static char stamp[32];
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	if (ts.tv_sec != stamp_sec) {
		struct tm tm;

		gmtime_r(&ts.tv_sec, &tm);
		strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%S", &tm);
		stamp_sec = ts.tv_sec;
	}
	return snprintf(out, size, "%s.%03ldZ %s[%ld]: ", stamp, ts.tv_nsec / 1000000, IDENT, (long)getpid());
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
	int p = line_prefix(line, sizeof(line));
	size_t n;

	if (p < 0)
		return;
	n = (size_t)p + (size_t)snprintf(line + p, sizeof(line) - (size_t)p, "%s\n", message);
	if (n >= sizeof(line)) { /* cut, at a character boundary */
		n = (size_t)p + log_utf8_prefix(message, sizeof(line) - 2 - (size_t)p);
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
	sd_journal_sendv(iov, (int)k);
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

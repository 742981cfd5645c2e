/* SPDX-License-Identifier: BSD-3-Clause */
/* Unit tests for the log module: escaping of client text, cuts at UTF-8
 * character boundaries, the line prefix (made without gmtime_r, which is not
 * async-signal-safe) and log_emergency. */
#include "config.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

/* A string literal and its length without the terminating NUL. */
#define LIT(s) s, sizeof(s) - 1

static const char *escape(const char *in, size_t len, size_t size)
{
	static char out[256];

	ck_assert_uint_le(size, sizeof(out));
	return log_escape(in, len, out, size);
}

START_TEST(test_escape_controls)
{
	/* A forged second log line and a terminal escape sequence stay on one line. */
	static const char forged[] = "alice\n2026-01-01T00:00:00.000Z kmip-relay[1]: {\"client\":\"root\"}\x1b[2J";

	ck_assert_str_eq(escape(forged, sizeof(forged) - 1, 256),
			 "alice\\n2026-01-01T00:00:00.000Z kmip-relay[1]: {\\\"client\\\":\\\"root\\\"}\\x1B[2J");
	ck_assert_str_eq(escape(LIT("a\rb\tc\\d\x7f"), 64), "a\\rb\\tc\\\\d\\x7F");
	/* C1 controls (U+009B is a terminal's CSI) and an embedded NUL */
	ck_assert_str_eq(escape(LIT("x\xc2\x9by"), 64), "x\\u009By");
	ck_assert_str_eq(escape(LIT("a\0b"), 64), "a\\x00b");
}
END_TEST

START_TEST(test_escape_utf8)
{
	/* Well-formed UTF-8 stays as it is; a malformed byte is shown as \xNN. */
	ck_assert_str_eq(escape(LIT("gr\xc3\xbc\xc3\x9f \xe2\x82\xac"), 64), "gr\xc3\xbc\xc3\x9f \xe2\x82\xac");
	ck_assert_str_eq(escape(LIT("a\xff\xc3"), 64), "a\\xFF\\xC3");
	/* an overlong encoding of '/' and a UTF-16 surrogate */
	ck_assert_str_eq(escape(LIT("\xc0\xaf"), 64), "\\xC0\\xAF");
	ck_assert_str_eq(escape(LIT("\xed\xa0\x80"), 64), "\\xED\\xA0\\x80");
}
END_TEST

START_TEST(test_escape_cut_at_boundary)
{
	/* "aé€" in 4 bytes of room (3 and a NUL): é fits, € (3 bytes) does not */
	ck_assert_str_eq(escape(LIT("a\xc3\xa9\xe2\x82\xac"), 4), "a\xc3\xa9");
	ck_assert_str_eq(escape(LIT("a\xc3\xa9\xe2\x82\xac"), 3), "a");
	/* an escape is never cut in half */
	ck_assert_str_eq(escape(LIT("ab\n"), 4), "ab");
	ck_assert_str_eq(escape(LIT("ab\n"), 5), "ab\\n");
	ck_assert_str_eq(escape(LIT("abc"), 1), "");
}
END_TEST

START_TEST(test_utf8_prefix)
{
	static const char s[] = "ab\xe2\x82\xac" "cd";

	ck_assert_uint_eq(log_utf8_prefix(s, 2), 2);
	ck_assert_uint_eq(log_utf8_prefix(s, 3), 2);
	ck_assert_uint_eq(log_utf8_prefix(s, 4), 2);
	ck_assert_uint_eq(log_utf8_prefix(s, 5), 5);
	ck_assert_uint_eq(log_utf8_prefix(s, 100), 7);
}
END_TEST

/* What gmtime_r and strftime make of ts, as log_line_prefix should. */
static const char *reference_prefix(const struct timespec *ts, long pid)
{
	static char out[128];
	char stamp[32];
	struct tm tm;

	ck_assert_ptr_nonnull(gmtime_r(&ts->tv_sec, &tm));
	strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(out, sizeof(out), "%s.%03ldZ kmip-relay[%ld]: ", stamp, ts->tv_nsec / 1000000, pid);
	return out;
}

static void check_prefix(time_t sec, long nsec, long pid)
{
	struct timespec ts = { sec, nsec };
	char out[LOG_PREFIX_MAX];
	size_t n = log_line_prefix(&ts, pid, out);

	ck_assert_str_eq(out, reference_prefix(&ts, pid));
	ck_assert_uint_eq(n, strlen(out));
}

START_TEST(test_line_prefix)
{
	/* The epoch, leap days (2000 is a leap year, 2100 is not), the ends of
	 * months and years, the last second of 9999, milliseconds cut, not rounded. */
	check_prefix(0, 0, 1);
	check_prefix(951782400, 999999999, 42);   /* 2000-02-29T00:00:00.999 */
	check_prefix(951868799, 1000000, 4194304); /* 2000-02-29T23:59:59.001 */
	check_prefix(4107542399, 0, 7);            /* 2100-02-28T23:59:59 */
	check_prefix(4107542400, 0, 7);            /* 2100-03-01T00:00:00 */
	check_prefix(1767225599, 500000000, 7);    /* 2025-12-31T23:59:59.500 */
	check_prefix(253402300799, 0, 2147483647); /* 9999-12-31T23:59:59 */
	/* Every 11th day from 1970 to 2400 (every day of the month, every month, 29
	 * February among them), at a different time of day each. */
	for (time_t day = 0; day < 157054; day += 11)
		check_prefix(day * 86400 + (day * 7919) % 86400, (long)(day % 1000) * 1000000, day + 1);
}
END_TEST

START_TEST(test_emergency_after_held_lines)
{
	char path[] = "/tmp/test_log.XXXXXX", text[1024], pid[32];
	int fd = mkstemp(path);
	FILE *f;
	size_t n;

	ck_assert_int_ge(fd, 0);
	close(fd);
	log_open(LOG_TARGET_NONE);
	ck_assert_int_eq(log_open_file(path), 0);
	log_hold();
	log_msg(LOG_INFO, "an audit record held for the response");
	log_emergency("pkcs11: C_Login did not return within 30 s (pkcs11.call_timeout); exiting");
	log_close();
	f = fopen(path, "r");
	ck_assert_ptr_nonnull(f);
	n = fread(text, 1, sizeof(text) - 1, f);
	fclose(f);
	unlink(path);
	text[n] = '\0';
	/* Two whole lines, the held one first, each with the usual prefix. */
	snprintf(pid, sizeof(pid), "Z kmip-relay[%ld]: ", (long)getpid());
	ck_assert_uint_eq(n, 2 * 23 + 2 * strlen(pid) + strlen("an audit record held for the response\n") +
				     strlen("pkcs11: C_Login did not return within 30 s (pkcs11.call_timeout); exiting\n"));
	ck_assert_int_eq(memcmp(text + 23, pid, strlen(pid)), 0);
	ck_assert_ptr_nonnull(strstr(text, "]: an audit record held for the response\n"));
	ck_assert_ptr_nonnull(strstr(text, "]: pkcs11: C_Login did not return"));
	ck_assert(strstr(text, "held for") < strstr(text, "C_Login"));
	ck_assert_str_eq(text + n - 1, "\n");
}
END_TEST

static Suite *log_suite(void)
{
	Suite *s = suite_create("log");
	TCase *tc = tcase_create("escape");
	TCase *lines = tcase_create("lines");

	tcase_add_test(tc, test_escape_controls);
	tcase_add_test(tc, test_escape_utf8);
	tcase_add_test(tc, test_escape_cut_at_boundary);
	tcase_add_test(tc, test_utf8_prefix);
	suite_add_tcase(s, tc);
	/* Thousands of formatted lines: generous for a sanitizer build on a busy machine. */
	tcase_set_timeout(lines, 60);
	tcase_add_test(lines, test_line_prefix);
	tcase_add_test(lines, test_emergency_after_held_lines);
	suite_add_tcase(s, lines);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(log_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

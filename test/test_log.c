/* Unit tests for the log module: escaping of client text and cuts at UTF-8
 * character boundaries. */
#include "config.h"

#include <check.h>
#include <stdlib.h>
#include <string.h>

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

static Suite *log_suite(void)
{
	Suite *s = suite_create("log");
	TCase *tc = tcase_create("escape");

	tcase_add_test(tc, test_escape_controls);
	tcase_add_test(tc, test_escape_utf8);
	tcase_add_test(tc, test_escape_cut_at_boundary);
	tcase_add_test(tc, test_utf8_prefix);
	suite_add_tcase(s, tc);
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

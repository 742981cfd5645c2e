/* SPDX-License-Identifier: BSD-3-Clause */
/* Unit tests for the configuration: pkcs11.call_timeout, its default and its
 * bounds (issue 11, finding 12). */
#include "config.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cfg.h"

/* Loads a config whose pkcs11 section is pkcs11 (JSON text), with tls files that
 * exist (the config file itself: cfg_load only checks that they can be read). */
static int load(const char *pkcs11, struct cfg **ret, char **ret_errors)
{
	char path[] = "/tmp/test_cfg.XXXXXX";
	int fd = mkstemp(path), r;
	FILE *f;

	ck_assert_int_ge(fd, 0);
	f = fdopen(fd, "w");
	ck_assert_ptr_nonnull(f);
	fprintf(f, "{\"tls\": {\"certificate\": \"%s\", \"key\": \"%s\", \"client_ca\": \"%s\"},"
		   " \"pkcs11\": %s}",
		path, path, path, pkcs11);
	fclose(f);
	*ret_errors = NULL;
	r = cfg_load(path, ret, ret_errors);
	unlink(path);
	return r;
}

START_TEST(test_call_timeout_default)
{
	struct cfg *c = NULL;
	char *errors;

	ck_assert_int_eq(load("{}", &c, &errors), 0);
	ck_assert_uint_eq(c->pkcs11.call_timeout, 30);
	cfg_free(c);
	ck_assert_int_eq(load("{\"call_timeout\": 2}", &c, &errors), 0);
	ck_assert_uint_eq(c->pkcs11.call_timeout, 2);
	cfg_free(c);
}
END_TEST

START_TEST(test_call_timeout_bounds)
{
	static const struct {
		const char *value, *error;
	} bad[] = {
		{ "0", "pkcs11.call_timeout: must be between 1 and 604800\n" },
		{ "604801", "pkcs11.call_timeout: must be between 1 and 604800\n" },
		{ "\"30\"", "pkcs11.call_timeout: must be an integer\n" },
	};
	char pkcs11[64], *errors;
	struct cfg *c = NULL;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		snprintf(pkcs11, sizeof(pkcs11), "{\"call_timeout\": %s}", bad[i].value);
		ck_assert_int_eq(load(pkcs11, &c, &errors), KR_E_CONFIG);
		ck_assert_ptr_null(c);
		ck_assert_str_eq(errors, bad[i].error);
		free(errors);
	}
	ck_assert_int_eq(load("{\"call_timeout\": 604800}", &c, &errors), 0);
	ck_assert_uint_eq(c->pkcs11.call_timeout, 604800);
	cfg_free(c);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("cfg");
	TCase *tc = tcase_create("pkcs11");
	SRunner *sr;
	int failed;

	tcase_add_test(tc, test_call_timeout_default);
	tcase_add_test(tc, test_call_timeout_bounds);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

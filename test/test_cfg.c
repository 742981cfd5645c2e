/* Unit tests for the configuration: pkcs11.call_timeout, its default and its
 * bounds (issue 11, finding 12); proxy_protocol.trusted, its addresses and CIDR
 * prefixes and the errors that name it (issue 14). */
#include "config.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <arpa/inet.h>

#include "cfg.h"

/* Loads a config of the tls section and more (JSON members, with a leading
 * comma), with tls files that exist (the config file itself: cfg_load only
 * checks that they can be read). */
static int load_with(const char *more, struct cfg **ret, char **ret_errors)
{
	char path[] = "/tmp/test_cfg.XXXXXX";
	int fd = mkstemp(path), r;
	FILE *f;

	ck_assert_int_ge(fd, 0);
	f = fdopen(fd, "w");
	ck_assert_ptr_nonnull(f);
	fprintf(f, "{\"tls\": {\"certificate\": \"%s\", \"key\": \"%s\", \"client_ca\": \"%s\"}%s}", path,
		path, path, more);
	fclose(f);
	*ret_errors = NULL;
	r = cfg_load(path, ret, ret_errors);
	unlink(path);
	return r;
}

/* A config whose pkcs11 section is pkcs11 (JSON text). */
static int load(const char *pkcs11, struct cfg **ret, char **ret_errors)
{
	char more[256];

	snprintf(more, sizeof(more), ", \"pkcs11\": %s", pkcs11);
	return load_with(more, ret, ret_errors);
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

/* A config with proxy_protocol.trusted set to the JSON text list. */
static int load_trusted(const char *list, struct cfg **ret, char **ret_errors)
{
	char more[512];

	snprintf(more, sizeof(more), ", \"proxy_protocol\": {\"trusted\": %s}", list);
	return load_with(more, ret, ret_errors);
}

START_TEST(test_trusted_parsed)
{
	struct cfg *c = NULL;
	uint8_t v6[16];
	char *errors;

	ck_assert_int_eq(load_trusted("[\"127.0.0.1\", \"10.0.0.0/8\", \"::1\", \"2001:db8::/32\", \"0.0.0.0/0\","
				      " \"172.16.0.0/12\"]",
				      &c, &errors),
			 0);
	ck_assert_uint_eq(c->proxy_protocol.n_trusted, 6);
	ck_assert_int_eq(c->proxy_protocol.trusted[0].family, AF_INET);
	ck_assert_mem_eq(c->proxy_protocol.trusted[0].addr, "\x7f\0\0\x01", 4);
	ck_assert_uint_eq(c->proxy_protocol.trusted[0].prefix, 32);
	ck_assert_mem_eq(c->proxy_protocol.trusted[1].addr, "\x0a\0\0\0", 4);
	ck_assert_uint_eq(c->proxy_protocol.trusted[1].prefix, 8);
	ck_assert_int_eq(c->proxy_protocol.trusted[2].family, AF_INET6);
	ck_assert_int_eq(inet_pton(AF_INET6, "::1", v6), 1);
	ck_assert_mem_eq(c->proxy_protocol.trusted[2].addr, v6, 16);
	ck_assert_uint_eq(c->proxy_protocol.trusted[2].prefix, 128);
	ck_assert_uint_eq(c->proxy_protocol.trusted[3].prefix, 32);
	ck_assert_uint_eq(c->proxy_protocol.trusted[4].prefix, 0);
	ck_assert_uint_eq(c->proxy_protocol.trusted[5].prefix, 12);
	cfg_free(c);
	/* Without the section, nothing is trusted. */
	ck_assert_int_eq(load_with("", &c, &errors), 0);
	ck_assert_uint_eq(c->proxy_protocol.n_trusted, 0);
	ck_assert_ptr_null(c->proxy_protocol.trusted);
	cfg_free(c);
}
END_TEST

START_TEST(test_trusted_errors)
{
	static const struct {
		const char *list, *error;
	} bad[] = {
		{ "\"127.0.0.1\"", "proxy_protocol.trusted: must be a non-empty list of addresses and CIDR prefixes "
				   "(\"10.0.0.0/8\", \"::1\")\n" },
		{ "[]", "proxy_protocol.trusted: must be a non-empty list of addresses and CIDR prefixes "
			"(\"10.0.0.0/8\", \"::1\")\n" },
		{ "[\"127.0.0.1\", 7]", "proxy_protocol.trusted: item 1: must be an address or CIDR prefix\n" },
		{ "[\"localhost\"]", "proxy_protocol.trusted: item 0: \"localhost\": not an IPv4 or IPv6 address\n" },
		{ "[\"\"]", "proxy_protocol.trusted: item 0: \"\": not an IPv4 or IPv6 address\n" },
		{ "[\"10.0.0\"]", "proxy_protocol.trusted: item 0: \"10.0.0\": not an IPv4 or IPv6 address\n" },
		{ "[\"/8\"]", "proxy_protocol.trusted: item 0: \"/8\": not an IPv4 or IPv6 address\n" },
		{ "[\"10.0.0.0/33\"]", "proxy_protocol.trusted: item 0: \"10.0.0.0/33\": the prefix length must be 0 to 32\n" },
		{ "[\"::/129\"]", "proxy_protocol.trusted: item 0: \"::/129\": the prefix length must be 0 to 128\n" },
		{ "[\"10.0.0.0/\"]", "proxy_protocol.trusted: item 0: \"10.0.0.0/\": the prefix length must be a number of "
				     "bits in plain decimal\n" },
		{ "[\"10.0.0.0/08\"]", "proxy_protocol.trusted: item 0: \"10.0.0.0/08\": the prefix length must be a "
				       "number of bits in plain decimal\n" },
		{ "[\"10.0.0.0/8x\"]", "proxy_protocol.trusted: item 0: \"10.0.0.0/8x\": the prefix length must be a "
				       "number of bits in plain decimal\n" },
		{ "[\"10.0.0.0/-8\"]", "proxy_protocol.trusted: item 0: \"10.0.0.0/-8\": the prefix length must be a "
				       "number of bits in plain decimal\n" },
		{ "[\"10.0.0.0/99999999999\"]", "proxy_protocol.trusted: item 0: \"10.0.0.0/99999999999\": the prefix "
						"length must be a number of bits in plain decimal\n" },
		/* a typo for another network */
		{ "[\"10.0.0.1/8\"]",
		  "proxy_protocol.trusted: item 0: \"10.0.0.1/8\": has address bits set past its prefix length\n" },
		{ "[\"2001:db8::1/64\"]",
		  "proxy_protocol.trusted: item 0: \"2001:db8::1/64\": has address bits set past its prefix length\n" },
		{ "[\"::ffff:10.0.0.1\"]", "proxy_protocol.trusted: item 0: \"::ffff:10.0.0.1\": an IPv4-mapped IPv6 "
					   "address: write the IPv4 address\n" },
	};
	struct cfg *c = NULL;
	char *errors;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		ck_assert_int_eq(load_trusted(bad[i].list, &c, &errors), KR_E_CONFIG);
		ck_assert_ptr_null(c);
		ck_assert_str_eq(errors, bad[i].error);
		free(errors);
	}
	/* Every bad item is named, in one run. */
	ck_assert_int_eq(load_trusted("[\"10.0.0.0/8\", \"x\", \"::1\", \"1.2.3.4/24\"]", &c, &errors), KR_E_CONFIG);
	ck_assert_str_eq(errors, "proxy_protocol.trusted: item 1: \"x\": not an IPv4 or IPv6 address\n"
				 "proxy_protocol.trusted: item 3: \"1.2.3.4/24\": has address bits set past its prefix "
				 "length\n");
	free(errors);
	ck_assert_int_eq(load_with(", \"proxy_protocol\": {}", &c, &errors), KR_E_CONFIG);
	ck_assert_str_eq(errors, "proxy_protocol.trusted: required in proxy_protocol\n");
	free(errors);
	ck_assert_int_eq(load_with(", \"proxy_protocol\": {\"trusted\": [\"::1\"], \"version\": 2}", &c, &errors),
			 KR_E_CONFIG);
	ck_assert_str_eq(errors, "proxy_protocol.version: unknown key\n");
	free(errors);
	ck_assert_int_eq(load_with(", \"proxy_protocol\": [\"::1\"]", &c, &errors), KR_E_CONFIG);
	ck_assert_str_eq(errors, "proxy_protocol: must be an object\n");
	free(errors);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("cfg");
	TCase *tc = tcase_create("pkcs11"), *proxy = tcase_create("proxy_protocol");
	SRunner *sr;
	int failed;

	tcase_add_test(tc, test_call_timeout_default);
	tcase_add_test(tc, test_call_timeout_bounds);
	tcase_add_test(proxy, test_trusted_parsed);
	tcase_add_test(proxy, test_trusted_errors);
	suite_add_tcase(s, tc);
	suite_add_tcase(s, proxy);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

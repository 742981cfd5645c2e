/* SPDX-License-Identifier: BSD-3-Clause */
/* Unit tests for the configuration: pkcs11.call_timeout, its default and its
 * bounds (issue 11, finding 12); pin_credential, which must hold something when
 * $CREDENTIALS_DIRECTORY is set (issue 16); the pool (issue 12);
 * proxy_protocol.trusted, its addresses and CIDR prefixes and the errors that
 * name it (issue 14); keys.destroyed_record_days (issue 13). */
#include "config.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <arpa/inet.h>

#include "cfg.h"

/* Loads a config whose pkcs11 section is pkcs11 (JSON text), followed by more
 * top-level members (JSON text, "" or starting with a comma), with tls files that
 * exist (the config file itself: cfg_load only checks that they can be read). */
static int load_with(const char *pkcs11, const char *more, struct cfg **ret, char **ret_errors)
{
	char path[] = "/tmp/test_cfg.XXXXXX";
	int fd = mkstemp(path), r;
	FILE *f;

	ck_assert_int_ge(fd, 0);
	f = fdopen(fd, "w");
	ck_assert_ptr_nonnull(f);
	fprintf(f, "{\"tls\": {\"certificate\": \"%s\", \"key\": \"%s\", \"client_ca\": \"%s\"},"
		   " \"pkcs11\": %s%s}",
		path, path, path, pkcs11, more);
	fclose(f);
	*ret_errors = NULL;
	r = cfg_load(path, ret, ret_errors);
	unlink(path);
	return r;
}

static int load(const char *pkcs11, struct cfg **ret, char **ret_errors)
{
	return load_with(pkcs11, "", ret, ret_errors);
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

START_TEST(test_destroyed_record_days)
{
	static const char *const bad[] = { "0", "36526", "-1" };
	char more[64], *errors;
	struct cfg *c = NULL;

	ck_assert_int_eq(load("{}", &c, &errors), 0);
	ck_assert_uint_eq(c->keys.destroyed_record_days, 30);
	cfg_free(c);
	ck_assert_int_eq(load_with("{}", ", \"keys\": {\"destroyed_record_days\": 1}", &c, &errors), 0);
	ck_assert_uint_eq(c->keys.destroyed_record_days, 1);
	cfg_free(c);
	ck_assert_int_eq(load_with("{}", ", \"keys\": {\"destroyed_record_days\": 36525}", &c, &errors), 0);
	ck_assert_uint_eq(c->keys.destroyed_record_days, 36525);
	cfg_free(c);
	c = NULL;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		snprintf(more, sizeof(more), ", \"keys\": {\"destroyed_record_days\": %s}", bad[i]);
		ck_assert_int_eq(load_with("{}", more, &c, &errors), KR_E_CONFIG);
		ck_assert_ptr_null(c);
		ck_assert_str_eq(errors, "keys.destroyed_record_days: must be between 1 and 36525\n");
		free(errors);
	}
}
END_TEST

#define BACKEND(name) "{\"name\": \"" name "\", \"module\": \"/dev/null\", \"pin_file\": \"/dev/null\"}"

START_TEST(test_pool)
{
	struct cfg *c = NULL;
	char *errors;

	/* A single token is a pool of one, "default". */
	ck_assert_int_eq(load("{\"module\": \"/dev/null\", \"pin_file\": \"/dev/null\"}", &c, &errors), 0);
	ck_assert_uint_eq(c->pkcs11.n_backends, 1);
	ck_assert_str_eq(c->pkcs11.backends[0].name, "default");
	ck_assert_int_eq(c->pkcs11.pool.mode, CFG_POOL_FAILOVER);
	ck_assert_int_eq(c->pkcs11.pool.new_keys, -1);
	ck_assert_uint_eq(c->pkcs11.pool.retry_after, 30);
	cfg_free(c);
	ck_assert_int_eq(load("{\"backends\": [" BACKEND("a") ", " BACKEND("b") "], \"lock_file\": \"/tmp/x\","
			      " \"pool\": {\"mode\": \"balance\", \"new_keys\": \"b\", \"retry_after\": 5}}",
			      &c, &errors),
			 0);
	ck_assert_uint_eq(c->pkcs11.n_backends, 2);
	ck_assert_int_eq(c->pkcs11.pool.mode, CFG_POOL_BALANCE);
	ck_assert_int_eq(c->pkcs11.pool.new_keys, 1);
	ck_assert_uint_eq(c->pkcs11.pool.retry_after, 5);
	cfg_free(c);
}
END_TEST

START_TEST(test_pool_errors)
{
	static const struct {
		const char *pkcs11, *error;
	} bad[] = {
		{ "{\"backends\": [" BACKEND("a") "], \"pool\": {\"mode\": \"random\"}}",
		  "pkcs11.pool.mode: must be \"failover\" or \"balance\"\n" },
		{ "{\"backends\": [" BACKEND("a") "], \"pool\": {\"new_keys\": \"c\"}}",
		  "pkcs11.pool.new_keys: must name one of pkcs11.backends\n" },
		{ "{\"backends\": [" BACKEND("a") "], \"pool\": {\"weight\": 1}}", "pkcs11.pool.weight: unknown key\n" },
		{ "{\"backends\": [" BACKEND("a") ", " BACKEND("a") "], \"lock_file\": \"/tmp/x\"}",
		  "pkcs11.backends[1]: name: \"a\" is also pkcs11.backends[0]'s\n" },
		{ "{\"backends\": [" BACKEND("a/b") "]}",
		  "pkcs11.backends[0]: name: required: letters, digits, '.', '_' and '-', at most 128\n" },
		{ "{\"backends\": [" BACKEND("a") "], \"module\": \"/dev/null\"}",
		  "pkcs11.backends: conflicts with pkcs11.module, token, pin_file and pin_credential (they are a pool of "
		  "one)\n" },
		{ "{\"backends\": []}", "pkcs11.backends: must be a list of 1 to 16 objects\n" },
		{ "{\"backends\": [" BACKEND("a") ", " BACKEND("b") "]}",
		  "pkcs11.backends: a pool of more than one needs pkcs11.lock_file: the backends' health, which every "
		  "relay process shares, is kept beside it, in <lock_file>.health\n" },
	};
	struct cfg *c = NULL;
	char *errors;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		ck_assert_int_eq(load(bad[i].pkcs11, &c, &errors), KR_E_CONFIG);
		ck_assert_ptr_null(c);
		ck_assert_str_eq(errors, bad[i].error);
		free(errors);
	}
}
END_TEST

/* A client without a PIN source of its own uses the pool's: the first backend's. */
START_TEST(test_pool_client_pin)
{
	static const char *const client = ", \"clients\": [{\"name\": \"c\", \"certificate_name\": \"c\"}]";
	struct cfg *c = NULL;
	char *errors;

	ck_assert_int_eq(load_with("{\"backends\": [" BACKEND("a") "]}", client, &c, &errors), 0);
	cfg_free(c);
	ck_assert_int_eq(load_with("{\"module\": \"/dev/null\"}", client, &c, &errors), KR_E_CONFIG);
	ck_assert_str_eq(errors, "clients[0]: no PIN: set pin_file or pin_credential here or in pkcs11\n");
	free(errors);
}
END_TEST

/* A credentials directory holding "pin" with content (NULL: no such file). */
static void credentials(char *dir, const char *content)
{
	char path[256];
	FILE *f;

	ck_assert_ptr_nonnull(mkdtemp(dir));
	ck_assert_int_eq(setenv("CREDENTIALS_DIRECTORY", dir, 1), 0);
	if (!content)
		return;
	snprintf(path, sizeof(path), "%s/pin", dir);
	f = fopen(path, "w");
	ck_assert_ptr_nonnull(f);
	fputs(content, f);
	fclose(f);
}

static void remove_credentials(const char *dir)
{
	char path[256];

	snprintf(path, sizeof(path), "%s/pin", dir);
	unlink(path);
	rmdir(dir);
	unsetenv("CREDENTIALS_DIRECTORY");
}

#define PIN_MISSING                                                                                       \
	"the credential \"pin\" is missing or empty: put the user PIN in " UNIT_PIN_FILE " (owned by root, mode " \
	"0600), which kmip-relay@.service loads as that credential (LoadCredential=pin:" UNIT_PIN_FILE ")\n"

START_TEST(test_pin_credential_must_hold_a_pin)
{
	/* What kmip-relay@.service leaves without the PIN file (SetCredential=pin:\n),
	 * no file, and an empty one. */
	static const char *const empty[] = { "\n", NULL, "", "\r\n\n" };
	char dir[] = "/tmp/test_cfg_cred.XXXXXX", *errors;
	struct cfg *c = NULL;

	for (size_t i = 0; i < sizeof(empty) / sizeof(empty[0]); i++) {
		strcpy(dir, "/tmp/test_cfg_cred.XXXXXX");
		credentials(dir, empty[i]);
		ck_assert_int_eq(load("{\"pin_credential\": \"pin\"}", &c, &errors), KR_E_CONFIG);
		ck_assert_ptr_null(c);
		ck_assert_str_eq(errors, "pkcs11.pin_credential: " PIN_MISSING);
		free(errors);
		remove_credentials(dir);
	}
	strcpy(dir, "/tmp/test_cfg_cred.XXXXXX");
	credentials(dir, "1234\n");
	ck_assert_int_eq(load("{\"pin_credential\": \"pin\"}", &c, &errors), 0);
	ck_assert_str_eq(c->pkcs11.pin_credential, "pin");
	cfg_free(c);
	remove_credentials(dir);
}
END_TEST

START_TEST(test_pin_credential_other_name_and_no_directory)
{
	char dir[] = "/tmp/test_cfg_cred.XXXXXX", *errors;
	struct cfg *c = NULL;

	credentials(dir, "1234\n");
	ck_assert_int_eq(load("{\"pin_credential\": \"zone-a\"}", &c, &errors), KR_E_CONFIG);
	ck_assert_str_eq(errors, "pkcs11.pin_credential: the credential \"zone-a\" is missing or empty: load it "
				 "from the file holding the PIN in a drop-in (systemctl edit kmip-relay@.service: "
				 "LoadCredential=zone-a:FILE)\n");
	free(errors);
	ck_assert_int_eq(load("{\"pin_credential\": \"../pin\"}", &c, &errors), KR_E_CONFIG);
	ck_assert_str_eq(errors,
			 "pkcs11.pin_credential: must be a credential name (LoadCredential=NAME:FILE), not a path\n");
	free(errors);
	remove_credentials(dir);
	/* Without $CREDENTIALS_DIRECTORY (--check-config by hand), nothing to look at. */
	ck_assert_int_eq(load("{\"pin_credential\": \"pin\"}", &c, &errors), 0);
	cfg_free(c);
}
END_TEST

/* A config with proxy_protocol.trusted set to the JSON text list. */
static int load_trusted(const char *list, struct cfg **ret, char **ret_errors)
{
	char more[512];

	snprintf(more, sizeof(more), ", \"proxy_protocol\": {\"trusted\": %s}", list);
	return load_with("{}", more, ret, ret_errors);
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
	ck_assert_int_eq(load_with("{}", "", &c, &errors), 0);
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
	ck_assert_int_eq(load_with("{}", ", \"proxy_protocol\": {}", &c, &errors), KR_E_CONFIG);
	ck_assert_str_eq(errors, "proxy_protocol.trusted: required in proxy_protocol\n");
	free(errors);
	ck_assert_int_eq(load_with("{}", ", \"proxy_protocol\": {\"trusted\": [\"::1\"], \"version\": 2}", &c, &errors),
			 KR_E_CONFIG);
	ck_assert_str_eq(errors, "proxy_protocol.version: unknown key\n");
	free(errors);
	ck_assert_int_eq(load_with("{}", ", \"proxy_protocol\": [\"::1\"]", &c, &errors), KR_E_CONFIG);
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
	tcase_add_test(tc, test_destroyed_record_days);
	tcase_add_test(tc, test_pool);
	tcase_add_test(tc, test_pool_errors);
	tcase_add_test(tc, test_pool_client_pin);
	tcase_add_test(tc, test_pin_credential_must_hold_a_pin);
	tcase_add_test(tc, test_pin_credential_other_name_and_no_directory);
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

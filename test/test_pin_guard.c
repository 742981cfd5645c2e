/* SPDX-License-Identifier: BSD-3-Clause */
/* Unit tests for the PIN guard: the token flags it refuses, the budget of failed
 * client PINs at the edges of its window, rejected configured PINs, and the state
 * file (what it holds, and a damaged one; whose it is when root writes it, and
 * none without a lock file). Time is passed in, never waited for. */
#include "config.h"

#include <check.h>
#include <fcntl.h>
#include <jansson.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "pin_guard.h"

#define T0 1700000000
#define PIN "4321"
#define WRONG "9999"

static char dir[64], lock_file[128], state_file[160];
static struct cfg cfg;

static void setup(void)
{
	const char *tmp = getenv("TMPDIR");

	snprintf(dir, sizeof(dir), "%s/pin-guard-XXXXXX", tmp && *tmp ? tmp : "/tmp");
	ck_assert_ptr_nonnull(mkdtemp(dir));
	snprintf(lock_file, sizeof(lock_file), "%s/p11.lock", dir);
	snprintf(state_file, sizeof(state_file), "%s%s", lock_file, CFG_PIN_STATE_SUFFIX);
	/* Made by the relay before any login (p11_lock). */
	ck_assert_int_eq(close(open(lock_file, O_RDWR | O_CREAT, 0600)), 0);
	cfg = (struct cfg){ 0 };
	cfg.pkcs11.lock_file = lock_file;
	cfg.pkcs11.pin_failures = 3;
	cfg.pkcs11.pin_failure_window = 600;
}

static void teardown(void)
{
	char tmp[200];

	snprintf(tmp, sizeof(tmp), "%s.tmp", state_file);
	unlink(tmp);
	unlink(state_file);
	unlink(lock_file);
	rmdir(dir);
}

/* A token's information: label and serial blank-padded, as PKCS#11 gives them. */
static CK_TOKEN_INFO token(const char *label, const char *serial, CK_FLAGS flags)
{
	CK_TOKEN_INFO ti;

	memset(&ti, 0, sizeof(ti));
	memset(ti.label, ' ', sizeof(ti.label));
	memset(ti.serialNumber, ' ', sizeof(ti.serialNumber));
	memcpy(ti.label, label, strlen(label));
	memcpy(ti.serialNumber, serial, strlen(serial));
	ti.flags = flags;
	return ti;
}

/* pin_guard_before, then (if it allows the login) pin_guard_after with rv: the
 * error pin_guard_before gave, or 0. */
static int login(const CK_TOKEN_INFO *ti, bool client_pin, const char *pin, CK_RV rv, time_t now,
		 const char **ret_why)
{
	struct pin_guard *g = NULL;
	const char *why = NULL;
	int r = pin_guard_before(&cfg, ti, client_pin, pin, strlen(pin), now, &g, &why);

	if (ret_why)
		*ret_why = why;
	if (r < 0) {
		ck_assert_ptr_null(g);
		ck_assert_ptr_nonnull(why);
		return r;
	}
	ck_assert_ptr_nonnull(g);
	pin_guard_after(g, rv, pin, strlen(pin), now);
	return 0;
}

static char *read_state(void)
{
	static char buf[8192];
	FILE *f = fopen(state_file, "r");
	size_t n;

	if (!f)
		return NULL;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	return buf;
}

static void write_state(const char *text)
{
	FILE *f = fopen(state_file, "w");

	ck_assert_ptr_nonnull(f);
	fputs(text, f);
	fclose(f);
}

START_TEST(test_flags)
{
	CK_TOKEN_INFO locked = token("a", "1", CKF_USER_PIN_LOCKED | CKF_LOGIN_REQUIRED);
	CK_TOKEN_INFO final_try = token("a", "1", CKF_USER_PIN_FINAL_TRY | CKF_USER_PIN_COUNT_LOW);
	CK_TOKEN_INFO low = token("a", "1", CKF_USER_PIN_COUNT_LOW);
	const char *why;

	for (int client = 0; client < 2; client++) {
		ck_assert_int_eq(login(&locked, client, PIN, CKR_OK, T0, &why), KR_E_P11_PIN);
		ck_assert_str_eq(why, "the token's user PIN is locked");
		ck_assert_int_eq(login(&final_try, client, PIN, CKR_OK, T0, &why), KR_E_P11_PIN);
		ck_assert_str_eq(why, "one more wrong PIN would lock the token's user PIN");
		/* A low count alone is the budget's business. */
		ck_assert_int_eq(login(&low, client, PIN, CKR_OK, T0, NULL), 0);
	}
}
END_TEST

START_TEST(test_budget_window_edges)
{
	CK_TOKEN_INFO ti = token("a", "1", 0);
	const char *why;

	for (int i = 0; i < 3; i++)
		ck_assert_int_eq(login(&ti, true, WRONG, CKR_PIN_INCORRECT, T0 + i, NULL), 0);
	ck_assert_int_eq(login(&ti, true, PIN, CKR_OK, T0 + 3, &why), KR_E_P11_PIN);
	ck_assert_str_eq(why, "the token's budget of failed client PINs is spent");
	/* The first failure counts for 600 s: still refused one second before. */
	ck_assert_int_eq(login(&ti, true, PIN, CKR_OK, T0 + 599, NULL), KR_E_P11_PIN);
	/* Then one try; a failure spends the budget again. */
	ck_assert_int_eq(login(&ti, true, WRONG, CKR_PIN_INCORRECT, T0 + 600, NULL), 0);
	ck_assert_int_eq(login(&ti, true, PIN, CKR_OK, T0 + 600, NULL), KR_E_P11_PIN);
	ck_assert_int_eq(login(&ti, true, PIN, CKR_OK, T0 + 601, NULL), 0);
	/* That success cleared the rest. */
	ck_assert_str_eq(read_state(), "{\"tokens\":[]}\n");
}
END_TEST

START_TEST(test_budget_per_token)
{
	CK_TOKEN_INFO a = token("a", "1", 0), same_label = token("a", "2", 0), same_serial = token("b", "1", 0);

	for (int i = 0; i < 3; i++)
		ck_assert_int_eq(login(&a, true, WRONG, CKR_PIN_INVALID, T0, NULL), 0);
	ck_assert_int_eq(login(&a, true, PIN, CKR_OK, T0, NULL), KR_E_P11_PIN);
	ck_assert_int_eq(login(&same_label, true, PIN, CKR_OK, T0, NULL), 0);
	ck_assert_int_eq(login(&same_serial, true, PIN, CKR_OK, T0, NULL), 0);
	/* The configured PIN has no budget. */
	ck_assert_int_eq(login(&a, false, PIN, CKR_OK, T0, NULL), 0);
	/* Failures that are not about the PIN do not count. */
	for (int i = 0; i < 3; i++)
		ck_assert_int_eq(login(&same_label, true, PIN, CKR_GENERAL_ERROR, T0, NULL), 0);
	ck_assert_int_eq(login(&same_label, true, PIN, CKR_OK, T0, NULL), 0);
}
END_TEST

START_TEST(test_budget_clock_set_back)
{
	CK_TOKEN_INFO ti = token("a", "1", 0);

	for (int i = 0; i < 3; i++)
		ck_assert_int_eq(login(&ti, true, WRONG, CKR_PIN_INCORRECT, T0, NULL), 0);
	/* Back by less than the window: they still count; by more: they no longer do. */
	ck_assert_int_eq(login(&ti, true, PIN, CKR_OK, T0 - 599, NULL), KR_E_P11_PIN);
	ck_assert_int_eq(login(&ti, true, PIN, CKR_OK, T0 - 600, NULL), 0);
}
END_TEST

START_TEST(test_budget_configured)
{
	CK_TOKEN_INFO ti = token("a", "1", 0);

	cfg.pkcs11.pin_failures = 1;
	cfg.pkcs11.pin_failure_window = 5;
	ck_assert_int_eq(login(&ti, true, WRONG, CKR_PIN_INCORRECT, T0, NULL), 0);
	ck_assert_int_eq(login(&ti, true, PIN, CKR_OK, T0 + 4, NULL), KR_E_P11_PIN);
	ck_assert_int_eq(login(&ti, true, PIN, CKR_OK, T0 + 5, NULL), 0);
}
END_TEST

START_TEST(test_rejected_configured_pin)
{
	CK_TOKEN_INFO ti = token("a", "1", 0);
	struct stat st;
	const char *why;
	json_t *root, *rec;
	char *text;

	ck_assert_int_eq(login(&ti, false, WRONG, CKR_PIN_INCORRECT, T0, NULL), 0);
	ck_assert_int_eq(login(&ti, false, WRONG, CKR_OK, T0 + 1, &why), KR_E_P11_PIN);
	ck_assert_str_eq(why, "the configured PIN was rejected before and has not changed");
	/* Days later, the same. */
	ck_assert_int_eq(login(&ti, false, WRONG, CKR_OK, T0 + 864000, NULL), KR_E_P11_PIN);
	/* The record: a salted slow hash, never the PIN; the file only for its owner. */
	text = read_state();
	ck_assert_ptr_nonnull(text);
	ck_assert_ptr_null(strstr(text, WRONG));
	ck_assert_ptr_null(strstr(text, "39393939"));
	root = json_loads(text, 0, NULL);
	ck_assert_ptr_nonnull(root);
	rec = json_array_get(json_object_get(json_array_get(json_object_get(root, "tokens"), 0), "rejected_pins"), 0);
	ck_assert_int_eq(json_integer_value(json_object_get(rec, "iterations")), 600000);
	ck_assert_int_eq(json_integer_value(json_object_get(rec, "time")), T0);
	ck_assert_uint_eq(strlen(json_string_value(json_object_get(rec, "salt"))), 32);
	ck_assert_uint_eq(strlen(json_string_value(json_object_get(rec, "pbkdf2_sha256"))), 64);
	json_decref(root);
	ck_assert_int_eq(stat(state_file, &st), 0);
	ck_assert_int_eq(st.st_mode & 07777, 0600);
	/* Another PIN is tried; its success clears the record. */
	ck_assert_int_eq(login(&ti, false, PIN, CKR_OK, T0 + 2, NULL), 0);
	ck_assert_str_eq(read_state(), "{\"tokens\":[]}\n");
	/* The client PINs' budget is apart. */
	ck_assert_int_eq(login(&ti, false, WRONG, CKR_PIN_INCORRECT, T0, NULL), 0);
	ck_assert_int_eq(login(&ti, true, WRONG, CKR_OK, T0, NULL), 0);
}
END_TEST

START_TEST(test_rejected_pins_kept_apart)
{
	CK_TOKEN_INFO ti = token("a", "1", 0), other = token("b", "2", 0);

	/* Two wrong configured PINs on one token (two clients' PIN files), each
	 * remembered; another token is not concerned. */
	ck_assert_int_eq(login(&ti, false, "1111", CKR_PIN_INCORRECT, T0, NULL), 0);
	ck_assert_int_eq(login(&ti, false, "2222", CKR_PIN_LEN_RANGE, T0, NULL), 0);
	ck_assert_int_eq(login(&ti, false, "1111", CKR_OK, T0, NULL), KR_E_P11_PIN);
	ck_assert_int_eq(login(&ti, false, "2222", CKR_OK, T0, NULL), KR_E_P11_PIN);
	ck_assert_int_eq(login(&other, false, "1111", CKR_OK, T0, NULL), 0);
}
END_TEST

START_TEST(test_locked_by_c_login_is_not_a_rejection)
{
	CK_TOKEN_INFO ti = token("a", "1", 0);

	/* CKR_PIN_LOCKED says nothing of the PIN: once unlocked, it is tried again. */
	ck_assert_int_eq(login(&ti, false, PIN, CKR_PIN_LOCKED, T0, NULL), 0);
	ck_assert_int_eq(login(&ti, true, PIN, CKR_PIN_LOCKED, T0, NULL), 0);
	ck_assert_ptr_null(read_state());
	ck_assert_int_eq(login(&ti, false, PIN, CKR_OK, T0, NULL), 0);
}
END_TEST

START_TEST(test_without_lock_file)
{
	CK_TOKEN_INFO ti = token("a", "1", 0), locked = token("a", "1", CKF_USER_PIN_LOCKED);

	cfg.pkcs11.lock_file = NULL;
	for (int i = 0; i < 5; i++) {
		ck_assert_int_eq(login(&ti, false, WRONG, CKR_PIN_INCORRECT, T0, NULL), 0);
		ck_assert_int_eq(login(&ti, true, WRONG, CKR_PIN_INCORRECT, T0, NULL), 0);
	}
	ck_assert_ptr_null(read_state());
	/* The flags still count. */
	ck_assert_int_eq(login(&locked, false, PIN, CKR_OK, T0, NULL), KR_E_P11_PIN);
}
END_TEST

START_TEST(test_damaged_state_refuses)
{
	static const char *const damaged[] = {
		"{\"tokens\":[",
		"[]",
		"{\"tokens\":{}}",
		"{\"tokens\":[{\"serial\":\"1\",\"label\":\"a\",\"client_pin_failures\":{},\"rejected_pins\":[]}]}",
		"{\"tokens\":[{\"serial\":\"1\",\"label\":\"a\",\"client_pin_failures\":[\"x\"],\"rejected_pins\":[]}]}",
		"{\"tokens\":[{\"serial\":\"1\",\"label\":\"a\",\"client_pin_failures\":[]}]}",
		"{\"tokens\":[],\"tokens\":[]}",
	};
	CK_TOKEN_INFO ti = token("a", "1", 0);
	const char *why;

	for (size_t i = 0; i < sizeof(damaged) / sizeof(damaged[0]); i++) {
		write_state(damaged[i]);
		for (int client = 0; client < 2; client++) {
			ck_assert_int_eq(login(&ti, client, PIN, CKR_OK, T0, &why), KR_E_SYSTEM);
			ck_assert_str_eq(why, "pkcs11.lock_file: the PIN state file beside it cannot be read");
		}
	}
	/* A rejected PIN's record that cannot be checked. */
	write_state("{\"tokens\":[{\"serial\":\"1\",\"label\":\"a\",\"client_pin_failures\":[],\"rejected_pins\":"
		    "[{\"time\":1,\"salt\":\"00\",\"iterations\":1,\"pbkdf2_sha256\":\"00\"}]}]}");
	ck_assert_int_eq(login(&ti, false, PIN, CKR_OK, T0, NULL), KR_E_SYSTEM);
	/* A symbolic link is not followed. */
	unlink(state_file);
	ck_assert_int_eq(symlink("/dev/null", state_file), 0);
	ck_assert_int_eq(login(&ti, true, PIN, CKR_OK, T0, NULL), KR_E_SYSTEM);
}
END_TEST

START_TEST(test_odd_label)
{
	/* A label that is not UTF-8, with a quote: kept escaped, found again. */
	CK_TOKEN_INFO ti = token("x\xff\"y", "1", 0);
	json_t *root;

	for (int i = 0; i < 3; i++)
		ck_assert_int_eq(login(&ti, true, WRONG, CKR_PIN_INCORRECT, T0, NULL), 0);
	ck_assert_int_eq(login(&ti, true, PIN, CKR_OK, T0, NULL), KR_E_P11_PIN);
	root = json_loads(read_state(), 0, NULL);
	ck_assert_ptr_nonnull(root);
	ck_assert_str_eq(json_string_value(json_object_get(json_array_get(json_object_get(root, "tokens"), 0), "label")),
			 "x\\xFF\\\"y");
	json_decref(root);
}
END_TEST

/* kmip-relay --check-config --login may run as root before any relay: no lock file,
 * no relay to share a record with, and a state file root made would lock the
 * service's user out. */
START_TEST(test_no_state_without_the_lock_file)
{
	CK_TOKEN_INFO ti = token("a", "1", 0);

	ck_assert_int_eq(unlink(lock_file), 0);
	ck_assert_int_eq(login(&ti, false, WRONG, CKR_PIN_INCORRECT, T0, NULL), 0);
	ck_assert_int_eq(login(&ti, true, WRONG, CKR_PIN_INCORRECT, T0, NULL), 0);
	ck_assert_ptr_null(read_state());
	ck_assert_int_eq(access(state_file, F_OK), -1);
}
END_TEST

/* Root rewriting the state file (the check, as root) gives it the lock file's
 * owner: the service's user can still read it. */
START_TEST(test_state_keeps_the_lock_files_owner)
{
	CK_TOKEN_INFO ti = token("a", "1", 0);
	struct passwd *nobody = getpwnam("nobody");
	struct stat st;

	ck_assert_ptr_nonnull(nobody);
	if (geteuid() != 0) { /* only root can give a file away: then it stays ours */
		ck_assert_int_eq(login(&ti, false, WRONG, CKR_PIN_INCORRECT, T0, NULL), 0);
		ck_assert_int_eq(stat(state_file, &st), 0);
		ck_assert_uint_eq(st.st_uid, geteuid());
		return;
	}
	ck_assert_int_eq(chown(lock_file, nobody->pw_uid, nobody->pw_gid), 0);
	ck_assert_int_eq(login(&ti, false, WRONG, CKR_PIN_INCORRECT, T0, NULL), 0);
	ck_assert_int_eq(stat(state_file, &st), 0);
	ck_assert_uint_eq(st.st_uid, nobody->pw_uid);
	ck_assert_uint_eq(st.st_gid, nobody->pw_gid);
	ck_assert_int_eq(st.st_mode & 07777, 0600);
}
END_TEST

START_TEST(test_stale_entries_pruned)
{
	CK_TOKEN_INFO a = token("a", "1", 0), b = token("b", "2", 0);
	json_t *root;

	ck_assert_int_eq(login(&a, true, WRONG, CKR_PIN_INCORRECT, T0, NULL), 0);
	/* Written after a's failure has aged: only b's entry is left. */
	ck_assert_int_eq(login(&b, true, WRONG, CKR_PIN_INCORRECT, T0 + 700, NULL), 0);
	root = json_loads(read_state(), 0, NULL);
	ck_assert_ptr_nonnull(root);
	ck_assert_uint_eq(json_array_size(json_object_get(root, "tokens")), 1);
	ck_assert_str_eq(json_string_value(json_object_get(json_array_get(json_object_get(root, "tokens"), 0), "label")),
			 "b");
	json_decref(root);
}
END_TEST

static Suite *pin_guard_suite(void)
{
	Suite *s = suite_create("pin_guard");
	TCase *tc = tcase_create("core");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_flags);
	tcase_add_test(tc, test_budget_window_edges);
	tcase_add_test(tc, test_budget_per_token);
	tcase_add_test(tc, test_budget_clock_set_back);
	tcase_add_test(tc, test_budget_configured);
	tcase_add_test(tc, test_rejected_configured_pin);
	tcase_add_test(tc, test_rejected_pins_kept_apart);
	tcase_add_test(tc, test_locked_by_c_login_is_not_a_rejection);
	tcase_add_test(tc, test_without_lock_file);
	tcase_add_test(tc, test_damaged_state_refuses);
	tcase_add_test(tc, test_odd_label);
	tcase_add_test(tc, test_stale_entries_pruned);
	tcase_add_test(tc, test_no_state_without_the_lock_file);
	tcase_add_test(tc, test_state_keeps_the_lock_files_owner);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(pin_guard_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

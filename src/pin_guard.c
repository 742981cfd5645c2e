/* SPDX-License-Identifier: BSD-3-Clause */
#include "config.h"

#include "pin_guard.h"

#include <errno.h>
#include <fcntl.h>
#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"

/* PBKDF2-HMAC-SHA-256 iterations for a rejected PIN's hash (OWASP's figure; about
 * 75 ms on a 2 vCPU test machine), so that even a short numeric PIN costs hours of
 * CPU to recover from the state file. It is computed only when the token rejects
 * a configured PIN, and then once per connection while that PIN is on record. */
#define PBKDF2_ITERATIONS 600000
#define MAX_ITERATIONS 10000000
#define SALT_LEN 16
#define HASH_LEN 32
/* Rejected configured PINs remembered per token, the oldest forgotten first. */
#define MAX_REJECTED 8
/* A state file larger than this is not one the relay wrote. */
#define MAX_STATE_SIZE (1024 * 1024)

/* The file holds {"tokens": [{"serial": S, "label": L, "client_pin_failures":
 * [time, ...], "rejected_pins": [{"time": T, "salt": hex, "iterations": N,
 * "pbkdf2_sha256": hex}, ...]}, ...]}, a token known by its serial number and
 * label as log_escape gives them. */
struct pin_guard {
	const struct cfg *cfg;
	bool client_pin;
	char *path;    /* the state file; NULL without pkcs11.lock_file: nothing is remembered */
	json_t *state; /* its contents */
	json_t *entry; /* this token's entry in state (borrowed), or NULL */
	char serial[4 * sizeof(((CK_TOKEN_INFO *)0)->serialNumber) + 1];
	char label[4 * sizeof(((CK_TOKEN_INFO *)0)->label) + 1];
};

static void guard_free(struct pin_guard *g)
{
	free(g->path);
	json_decref(g->state);
	free(g);
}

/* A blank-padded CK_TOKEN_INFO field without its padding, escaped. */
static void info_field(const CK_UTF8CHAR *p, size_t n, char *out, size_t size)
{
	while (n > 0 && p[n - 1] == ' ')
		n--;
	log_escape(p, n, out, size);
}

/* The shape the relay writes (a rejected PIN's record is checked when it is used):
 * a file that is not, such as one whose failures are not a list, could otherwise
 * turn the budget off. */
static bool well_formed(json_t *root)
{
	json_t *tokens = json_object_get(root, "tokens"), *e, *t;
	size_t i, j;

	if (!json_is_array(tokens))
		return false;
	json_array_foreach(tokens, i, e) {
		if (!json_is_string(json_object_get(e, "serial")) || !json_is_string(json_object_get(e, "label")) ||
		    !json_is_array(json_object_get(e, "client_pin_failures")) ||
		    !json_is_array(json_object_get(e, "rejected_pins")))
			return false;
		json_array_foreach(json_object_get(e, "client_pin_failures"), j, t)
			if (!json_is_integer(t))
				return false;
	}
	return true;
}

static int load_state(struct pin_guard *g, const char **ret_why)
{
	json_t *root = NULL;
	struct stat st;
	int fd = open(g->path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY);

	if (fd < 0 && errno == ENOENT)
		root = json_pack("{s:[]}", "tokens");
	else if (fd >= 0 && fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_size <= MAX_STATE_SIZE)
		root = json_loadfd(fd, JSON_REJECT_DUPLICATES, NULL);
	if (fd >= 0)
		close(fd);
	/* Without it, a PIN rejected before would be tried again: no login at all. */
	if (!well_formed(root)) {
		json_decref(root);
		log_msg(LOG_ERR, "the PIN state file %s cannot be read: no login is tried until it is repaired or removed",
			g->path);
		*ret_why = "pkcs11.lock_file: the PIN state file beside it cannot be read";
		return KR_E_SYSTEM;
	}
	g->state = root;
	return 0;
}

static bool string_is(json_t *obj, const char *key, const char *want)
{
	const char *s = json_string_value(json_object_get(obj, key));

	return s && strcmp(s, want) == 0;
}

static json_t *find_entry(const struct pin_guard *g)
{
	json_t *e;
	size_t i;

	json_array_foreach(json_object_get(g->state, "tokens"), i, e)
		if (string_is(e, "serial", g->serial) && string_is(e, "label", g->label))
			return e;
	return NULL;
}

/* This token's entry, made if it has none; NULL when out of memory. */
static json_t *make_entry(struct pin_guard *g)
{
	json_t *e;

	if (g->entry)
		return g->entry;
	e = json_pack("{s:s, s:s, s:[], s:[]}", "serial", g->serial, "label", g->label, "client_pin_failures",
		      "rejected_pins");
	if (e && json_array_append_new(json_object_get(g->state, "tokens"), e) == 0)
		g->entry = e;
	return g->entry;
}

/* A failure time that still counts: within the window (and not from a clock that
 * has since been set back by more than that). */
static bool recent(const struct cfg *c, json_t *t, time_t now)
{
	json_int_t when = json_integer_value(t), window = c->pkcs11.pin_failure_window;

	return json_is_integer(t) && when > (json_int_t)now - window && when < (json_int_t)now + window;
}

static int cmp_time(const void *a, const void *b)
{
	json_int_t x = *(const json_int_t *)a, y = *(const json_int_t *)b;

	return (x > y) - (x < y);
}

/* The number of recent client PIN failures on the token; with ret_until, also
 * when there will be fewer than pkcs11.pin_failures of them. */
static size_t count_recent(const struct pin_guard *g, time_t now, json_int_t *ret_until)
{
	json_t *failures = json_object_get(g->entry, "client_pin_failures"), *t;
	json_int_t *times = ret_until ? calloc(json_array_size(failures) + 1, sizeof(*times)) : NULL;
	unsigned max = g->cfg->pkcs11.pin_failures;
	size_t i, n = 0;

	json_array_foreach(failures, i, t) {
		if (!recent(g->cfg, t, now))
			continue;
		if (times)
			times[n] = json_integer_value(t);
		n++;
	}
	if (ret_until) {
		*ret_until = (json_int_t)now + g->cfg->pkcs11.pin_failure_window; /* if out of memory: a whole window */
		if (times && n >= max) {
			qsort(times, n, sizeof(*times), cmp_time);
			*ret_until = times[n - max] + g->cfg->pkcs11.pin_failure_window;
		}
	}
	free(times);
	return n;
}

static int check_budget(const struct pin_guard *g, time_t now, const char **ret_why)
{
	const struct cfg *c = g->cfg;
	json_int_t until;
	size_t n = count_recent(g, now, &until);

	if (n < c->pkcs11.pin_failures)
		return 0;
	log_msg(LOG_WARNING,
		"token \"%s\" (serial %s): %zu client PINs failed within %u s (pkcs11.pin_failures is %u): "
		"no login tried for another %lld s",
		g->label, g->serial, n, c->pkcs11.pin_failure_window, c->pkcs11.pin_failures,
		(long long)(until - (json_int_t)now));
	*ret_why = "the token's budget of failed client PINs is spent";
	return KR_E_P11_PIN;
}

static int pin_hash(const char *pin, size_t pin_len, const uint8_t *salt, unsigned iterations,
		    uint8_t out[HASH_LEN])
{
	gnutls_datum_t key = { (unsigned char *)pin, (unsigned)pin_len }, s = { (unsigned char *)salt, SALT_LEN };

	return gnutls_pbkdf2(GNUTLS_MAC_SHA256, &key, &s, iterations, out, HASH_LEN) < 0 ? KR_E_SYSTEM : 0;
}

/* obj's key as exactly len bytes from hex. */
static bool hex_member(json_t *obj, const char *key, uint8_t *out, size_t len)
{
	const char *hex = json_string_value(json_object_get(obj, key));
	gnutls_datum_t in = { (unsigned char *)hex, hex ? (unsigned)strlen(hex) : 0 };
	size_t size = len;

	return hex && in.size == 2 * len && gnutls_hex_decode(&in, out, &size) == 0 && size == len;
}

/* Whether pin is one of the token's rejected PINs: 1 or 0, or KR_E_SYSTEM for a
 * record that cannot be read. */
static int rejected_before(const struct pin_guard *g, const char *pin, size_t pin_len)
{
	json_t *rec;
	size_t i;

	json_array_foreach(json_object_get(g->entry, "rejected_pins"), i, rec) {
		json_int_t iterations = json_integer_value(json_object_get(rec, "iterations"));
		uint8_t salt[SALT_LEN], want[HASH_LEN], got[HASH_LEN];
		bool same;

		if (!hex_member(rec, "salt", salt, sizeof(salt)) || !hex_member(rec, "pbkdf2_sha256", want, sizeof(want)) ||
		    iterations < 1 || iterations > MAX_ITERATIONS ||
		    pin_hash(pin, pin_len, salt, (unsigned)iterations, got) < 0)
			return KR_E_SYSTEM;
		same = gnutls_memcmp(got, want, HASH_LEN) == 0;
		gnutls_memset(got, 0, sizeof(got));
		if (same)
			return 1;
	}
	return 0;
}

static int check_rejected(const struct pin_guard *g, const char *pin, size_t pin_len, const char **ret_why)
{
	int r = rejected_before(g, pin, pin_len);

	if (r == 0)
		return 0;
	if (r < 0) {
		log_msg(LOG_ERR, "the PIN state file %s has a rejected PIN that cannot be read: no login is tried "
				 "until it is repaired or removed", g->path);
		*ret_why = "pkcs11.lock_file: the PIN state file beside it cannot be read";
		return r;
	}
	log_msg(LOG_ERR,
		"token \"%s\" (serial %s): the configured PIN was rejected before and has not changed: no login tried "
		"until the PIN file or credential holds another",
		g->label, g->serial);
	*ret_why = "the configured PIN was rejected before and has not changed";
	return KR_E_P11_PIN;
}

int pin_guard_before(const struct cfg *c, const CK_TOKEN_INFO *ti, bool client_pin, const char *pin, size_t pin_len,
		     time_t now, struct pin_guard **ret, const char **ret_why)
{
	struct pin_guard *g = calloc(1, sizeof(*g));
	size_t size;
	int r = 0;

	if (!g)
		return KR_E_NOMEM;
	g->cfg = c;
	g->client_pin = client_pin;
	info_field(ti->serialNumber, sizeof(ti->serialNumber), g->serial, sizeof(g->serial));
	info_field(ti->label, sizeof(ti->label), g->label, sizeof(g->label));
	if (ti->flags & CKF_USER_PIN_LOCKED) {
		log_msg(LOG_ERR,
			"token \"%s\" (serial %s): the user PIN is locked (CKF_USER_PIN_LOCKED): no login tried; "
			"the token's security officer must unlock it",
			g->label, g->serial);
		*ret_why = "the token's user PIN is locked";
		r = KR_E_P11_PIN;
		goto out;
	}
	if (ti->flags & CKF_USER_PIN_FINAL_TRY) {
		log_msg(LOG_ERR,
			"token \"%s\" (serial %s): one more wrong PIN would lock the user PIN (CKF_USER_PIN_FINAL_TRY): "
			"no login tried; a login with the right PIN outside the relay resets the count",
			g->label, g->serial);
		*ret_why = "one more wrong PIN would lock the token's user PIN";
		r = KR_E_P11_PIN;
		goto out;
	}
	if (!c->pkcs11.lock_file)
		goto out;
	size = strlen(c->pkcs11.lock_file) + sizeof(CFG_PIN_STATE_SUFFIX);
	if (!(g->path = malloc(size))) {
		r = KR_E_NOMEM;
		goto out;
	}
	snprintf(g->path, size, "%s%s", c->pkcs11.lock_file, CFG_PIN_STATE_SUFFIX);
	if ((r = load_state(g, ret_why)) < 0 || !(g->entry = find_entry(g)))
		goto out;
	r = client_pin ? check_budget(g, now, ret_why) : check_rejected(g, pin, pin_len, ret_why);
out:
	if (r < 0) {
		guard_free(g);
		return r;
	}
	*ret = g;
	return 0;
}

static bool add_failure(struct pin_guard *g, time_t now)
{
	json_t *e = make_entry(g), *failures = json_object_get(e, "client_pin_failures");

	if (!json_is_array(failures) || json_array_append_new(failures, json_integer(now)) < 0)
		return false;
	log_msg(LOG_NOTICE, "token \"%s\" (serial %s): client PIN failure %zu of %u within %u s", g->label, g->serial,
		count_recent(g, now, NULL), g->cfg->pkcs11.pin_failures, g->cfg->pkcs11.pin_failure_window);
	return true;
}

static bool add_rejected(struct pin_guard *g, const char *pin, size_t pin_len, time_t now)
{
	json_t *e = make_entry(g), *records = json_object_get(e, "rejected_pins"), *rec;
	uint8_t salt[SALT_LEN], hash[HASH_LEN];
	char salt_hex[2 * SALT_LEN + 1], hash_hex[2 * HASH_LEN + 1];
	gnutls_datum_t s = { salt, SALT_LEN }, h = { hash, HASH_LEN };
	size_t salt_size = sizeof(salt_hex), hash_size = sizeof(hash_hex);
	bool ok;

	ok = json_is_array(records) && gnutls_rnd(GNUTLS_RND_NONCE, salt, sizeof(salt)) == 0 &&
	     pin_hash(pin, pin_len, salt, PBKDF2_ITERATIONS, hash) == 0 &&
	     gnutls_hex_encode(&s, salt_hex, &salt_size) == 0 && gnutls_hex_encode(&h, hash_hex, &hash_size) == 0;
	gnutls_memset(hash, 0, sizeof(hash));
	if (ok && (rec = json_pack("{s:I, s:s, s:i, s:s}", "time", (json_int_t)now, "salt", salt_hex, "iterations",
				   PBKDF2_ITERATIONS, "pbkdf2_sha256", hash_hex)))
		ok = json_array_append_new(records, rec) == 0;
	else
		ok = false;
	while (ok && json_array_size(records) > MAX_REJECTED)
		json_array_remove(records, 0);
	log_msg(LOG_ERR, "token \"%s\" (serial %s): the token rejected the configured PIN; %s", g->label, g->serial,
		ok ? "it is not tried again until the PIN file or credential holds another"
		   : "it could not be recorded, and will be tried again");
	return ok;
}

/* Drops the failures that no longer count, beyond the newest pkcs11.pin_failures,
 * and the entries left with nothing: the file stays small. */
static void prune(struct pin_guard *g, time_t now)
{
	json_t *tokens = json_object_get(g->state, "tokens"), *e, *failures;

	for (size_t i = json_array_size(tokens); i-- > 0;) {
		e = json_array_get(tokens, i);
		failures = json_object_get(e, "client_pin_failures");
		for (size_t j = json_array_size(failures); j-- > 0;)
			if (!recent(g->cfg, json_array_get(failures, j), now))
				json_array_remove(failures, j);
		while (json_array_size(failures) > g->cfg->pkcs11.pin_failures)
			json_array_remove(failures, 0);
		if (json_array_size(failures) == 0 && json_array_size(json_object_get(e, "rejected_pins")) == 0)
			json_array_remove(tokens, i);
	}
}

/* Written whole to a new file that then replaces the old one, so that a reader
 * (under the lock, or a process killed while writing) never sees half of it. It
 * has the lock file's owner: one that root wrote (kmip-relay --check-config
 * --login) must stay readable by the service's user. Without a lock file no
 * relay has run, and there is no one to share the record with. */
static void save_state(const struct pin_guard *g)
{
	size_t size = strlen(g->path) + sizeof(".tmp");
	char *tmp = malloc(size);
	struct stat lock;
	int fd = -1, ok = 0;

	if (stat(g->cfg->pkcs11.lock_file, &lock) < 0) {
		free(tmp);
		return;
	}
	if (tmp) {
		snprintf(tmp, size, "%s.tmp", g->path);
		fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY, 0600);
	}
	if (fd >= 0) {
		ok = fchmod(fd, 0600) == 0 && (geteuid() != 0 || fchown(fd, lock.st_uid, lock.st_gid) == 0) &&
		     json_dumpfd(g->state, fd, JSON_COMPACT) == 0 && write(fd, "\n", 1) == 1 && fsync(fd) == 0;
		ok = close(fd) == 0 && ok && rename(tmp, g->path) == 0;
	}
	if (!ok) {
		log_msg(LOG_ERR, "cannot write the PIN state file %s: %s", g->path, tmp ? strerror(errno) : "out of memory");
		if (fd >= 0)
			unlink(tmp);
	}
	free(tmp);
}

void pin_guard_after(struct pin_guard *g, CK_RV rv, const char *pin, size_t pin_len, time_t now)
{
	bool wrong = rv == CKR_PIN_INCORRECT || rv == CKR_PIN_INVALID || rv == CKR_PIN_LEN_RANGE;
	const char *list = g && g->client_pin ? "client_pin_failures" : "rejected_pins";
	bool changed = false;

	if (!g)
		return;
	if (rv == CKR_PIN_LOCKED)
		log_msg(LOG_ERR, "token \"%s\" (serial %s): C_Login says the user PIN is locked (CKR_PIN_LOCKED); the "
				 "token's security officer must unlock it", g->label, g->serial);
	if (wrong && !g->state && !g->client_pin)
		log_msg(LOG_ERR, "token \"%s\" (serial %s): the token rejected the configured PIN; without "
				 "pkcs11.lock_file every connection tries it again", g->label, g->serial);
	else if (wrong && g->state)
		changed = g->client_pin ? add_failure(g, now) : add_rejected(g, pin, pin_len, now);
	else if (rv == CKR_OK && json_array_size(json_object_get(g->entry, list)) > 0)
		changed = json_array_clear(json_object_get(g->entry, list)) == 0;
	if (changed) {
		prune(g, now);
		save_state(g);
	}
	guard_free(g);
}

/* SPDX-License-Identifier: BSD-3-Clause */
#include "config.h"

#include "health.h"

#include <errno.h>
#include <fcntl.h>
#include <gnutls/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* A record: "NAME FAILURES DOWN_UNTIL LAST_ERROR LAST_ERROR_TIME", each field at a
 * fixed place, padded with spaces to RECORD_LEN - 1, then a newline. Times are
 * seconds since the epoch; DOWN_UNTIL 0 means up. */
#define RECORD_LEN 128
enum { NAME_AT = 0, NAME_LEN = 32, FAILURES_AT = 33, FAILURES_LEN = 10, DOWN_AT = 44, DOWN_LEN = 20,
       ERROR_AT = 65, ERROR_LEN = 32, TIME_AT = 98, TIME_LEN = 20 };

struct record {
	unsigned failures;
	long long down_until;
	char error[ERROR_LEN + 1];
	long long error_time;
};

struct backend_health {
	struct p11_call_owner owner; /* first: health_owner hands it out */
	struct health *h;
	size_t index;
	struct record rec; /* as last read or written */
	long long ok_here, failed_here; /* this process's last success and failure */
	struct record cleared;          /* the record its success cleared */
};

struct health {
	const struct cfg *cfg;
	int fd; /* -1: this process's alone */
	size_t n;
	struct backend_health b[CFG_MAX_BACKENDS];
};

/* Formatting and parsing with plain copies: the owner's callback runs where only
 * async-signal-safe code may (p11_call.h). */
static void put_text(char *rec, size_t at, size_t width, const char *s)
{
	for (size_t i = 0; i < width; i++)
		rec[at + i] = *s ? *s++ : ' ';
}

static void put_number(char *rec, size_t at, size_t width, long long v)
{
	for (size_t i = width; i-- > 0;) {
		rec[at + i] = (i == width - 1 || v > 0) ? (char)('0' + v % 10) : ' ';
		v /= 10;
	}
}

static void format(char out[RECORD_LEN], const char *name, const struct record *r)
{
	put_text(out, 0, RECORD_LEN - 1, "");
	put_text(out, NAME_AT, NAME_LEN, name);
	put_number(out, FAILURES_AT, FAILURES_LEN, r->failures);
	put_number(out, DOWN_AT, DOWN_LEN, r->down_until);
	put_text(out, ERROR_AT, ERROR_LEN, r->error);
	put_number(out, TIME_AT, TIME_LEN, r->error_time);
	out[RECORD_LEN - 1] = '\n';
}

static long long get_number(const char *rec, size_t at, size_t width)
{
	char field[24] = { 0 };

	memcpy(field, rec + at, width);
	return strtoll(field, NULL, 10);
}

/* A record read back; a record of another backend (the config changed) or none
 * reads as a clear one. */
static struct record parse(const char *rec, size_t len, const char *name)
{
	struct record r = { 0 };
	char stored[NAME_LEN + 1] = { 0 }, want[NAME_LEN + 1] = { 0 };
	size_t n;

	if (len < RECORD_LEN || rec[RECORD_LEN - 1] != '\n')
		return r;
	memcpy(stored, rec + NAME_AT, NAME_LEN);
	put_text(want, 0, NAME_LEN, name);
	if (memcmp(stored, want, NAME_LEN) != 0)
		return r;
	r.failures = (unsigned)get_number(rec, FAILURES_AT, FAILURES_LEN);
	r.down_until = get_number(rec, DOWN_AT, DOWN_LEN);
	r.error_time = get_number(rec, TIME_AT, TIME_LEN);
	memcpy(r.error, rec + ERROR_AT, ERROR_LEN);
	for (n = ERROR_LEN; n > 0 && r.error[n - 1] == ' '; n--)
		;
	r.error[n] = '\0';
	return r;
}

static long long now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (long long)ts.tv_sec;
}

/* The owner's callback: backend down, in one pwrite, however the process ends. */
static void failed_in_call(const struct p11_call_owner *owner, const char *cause)
{
	const struct backend_health *b = (const struct backend_health *)owner;
	const struct health *h = b->h;
	struct record r = { b->rec.failures + 1, now_s() + h->cfg->pkcs11.pool.retry_after, { 0 }, now_s() };
	char rec[RECORD_LEN];

	for (size_t i = 0; i < ERROR_LEN && cause[i]; i++)
		r.error[i] = cause[i];
	format(rec, h->cfg->pkcs11.backends[b->index].name, &r);
	if (h->fd >= 0)
		(void)!pwrite(h->fd, rec, RECORD_LEN, (off_t)(b->index * RECORD_LEN));
}

static void lock(struct health *h)
{
	while (h->fd >= 0 && flock(h->fd, LOCK_EX) < 0 && errno == EINTR)
		;
}

static void unlock(struct health *h)
{
	if (h->fd >= 0)
		flock(h->fd, LOCK_UN);
}

static void read_all(struct health *h)
{
	char buf[CFG_MAX_BACKENDS * RECORD_LEN];
	ssize_t got;

	if (h->fd < 0)
		return;
	got = pread(h->fd, buf, h->n * RECORD_LEN, 0);
	for (size_t i = 0; i < h->n; i++) {
		size_t at = i * RECORD_LEN, len = got > (ssize_t)at ? (size_t)got - at : 0;

		h->b[i].rec = parse(buf + at, len, h->cfg->pkcs11.backends[i].name);
	}
}

static void write_one(struct health *h, size_t i)
{
	char rec[RECORD_LEN];

	if (h->fd < 0)
		return;
	format(rec, h->cfg->pkcs11.backends[i].name, &h->b[i].rec);
	(void)!pwrite(h->fd, rec, RECORD_LEN, (off_t)(i * RECORD_LEN));
}

/* The health file, made if missing only when make_it says so; one made by root
 * gets the owner of the lock file beside it. */
static int open_file(const struct cfg *c, bool make_it, int *ret_fd)
{
	size_t size = strlen(c->pkcs11.lock_file) + sizeof(CFG_HEALTH_SUFFIX);
	char *path = malloc(size);
	struct stat lock;
	int fd, r = 0;

	if (!path)
		return KR_E_NOMEM;
	snprintf(path, size, "%s%s", c->pkcs11.lock_file, CFG_HEALTH_SUFFIX);
	fd = open(path, O_RDWR | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY);
	if (fd < 0 && errno == ENOENT && make_it) {
		fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY, 0600);
		if (fd >= 0 && geteuid() == 0 && stat(c->pkcs11.lock_file, &lock) == 0 &&
		    fchown(fd, lock.st_uid, lock.st_gid) < 0)
			r = KR_E_SYSTEM;
	}
	if (fd < 0 && !(errno == ENOENT && !make_it))
		r = KR_E_SYSTEM;
	free(path);
	if (r < 0) {
		if (fd >= 0)
			close(fd);
		return r;
	}
	*ret_fd = fd;
	return 0;
}

static int open_health(const struct cfg *c, bool make_it, struct health **ret)
{
	struct health *h = calloc(1, sizeof(*h));
	int r = 0;

	if (!h)
		return KR_E_NOMEM;
	h->cfg = c;
	h->n = c->pkcs11.n_backends;
	h->fd = -1;
	for (size_t i = 0; i < h->n; i++)
		h->b[i] = (struct backend_health){ { failed_in_call }, h, i, { 0 }, 0, 0, { 0 } };
	if (c->pkcs11.lock_file && (r = open_file(c, make_it, &h->fd)) < 0) {
		free(h);
		return r;
	}
	*ret = h;
	return 0;
}

int health_open(const struct cfg *c, struct health **ret)
{
	return open_health(c, true, ret);
}

int health_open_beside_lock(const struct cfg *c, struct health **ret, bool *ret_made)
{
	struct health *h;
	int r = open_health(c, c->pkcs11.lock_file && access(c->pkcs11.lock_file, F_OK) == 0, &h);

	if (r < 0)
		return r;
	*ret_made = h->fd >= 0;
	*ret = h;
	return 0;
}

void health_close(struct health *h)
{
	if (!h)
		return;
	if (h->fd >= 0)
		close(h->fd);
	free(h);
}

static bool usable(const struct record *r, long long now)
{
	return r->down_until == 0 || r->down_until <= now;
}

bool health_usable(struct health *h, int i)
{
	return usable(&h->b[i].rec, now_s());
}

/* A uniform pick in [0, n). */
static unsigned pick(unsigned n)
{
	uint32_t v = 0;

	(void)gnutls_rnd(GNUTLS_RND_NONCE, &v, sizeof(v));
	return v % n;
}

int health_choose(struct health *h, const bool *skip)
{
	const struct cfg *c = h->cfg;
	long long now = now_s();
	unsigned total = 0, at;
	int chosen = -1;

	lock(h);
	read_all(h);
	for (size_t i = 0; i < h->n; i++)
		if (!skip[i] && usable(&h->b[i].rec, now))
			total += c->pkcs11.pool.mode == CFG_POOL_BALANCE ? c->pkcs11.backends[i].weight : 1;
	if (total) {
		at = c->pkcs11.pool.mode == CFG_POOL_BALANCE ? pick(total) : 0;
		for (size_t i = 0; i < h->n && chosen < 0; i++) {
			unsigned w = c->pkcs11.pool.mode == CFG_POOL_BALANCE ? c->pkcs11.backends[i].weight : 1;

			if (skip[i] || !usable(&h->b[i].rec, now))
				continue;
			if (at < w)
				chosen = (int)i;
			else
				at -= w;
		}
	}
	/* A backend whose wait is over gets this one connection: the others keep
	 * away until it succeeds (health_ok) or fails again. */
	if (chosen >= 0 && h->b[chosen].rec.down_until) {
		h->b[chosen].rec.down_until = now + c->pkcs11.pool.retry_after;
		write_one(h, (size_t)chosen);
	}
	unlock(h);
	return chosen;
}

void health_failed(struct health *h, int i, const char *error)
{
	struct record *r = &h->b[i].rec;

	lock(h);
	read_all(h);
	r->failures++;
	r->down_until = r->error_time = now_s();
	r->down_until += h->cfg->pkcs11.pool.retry_after;
	memset(r->error, 0, sizeof(r->error));
	strncpy(r->error, error, ERROR_LEN);
	h->b[i].failed_here = r->error_time;
	write_one(h, (size_t)i);
	unlock(h);
}

void health_ok(struct health *h, int i)
{
	h->b[i].ok_here = now_s();
	lock(h);
	/* A pool of one chooses without reading the file: read it now. */
	read_all(h);
	if (h->b[i].rec.failures || h->b[i].rec.down_until) {
		h->b[i].cleared = h->b[i].rec;
		h->b[i].rec = (struct record){ 0 };
		write_one(h, (size_t)i);
	}
	unlock(h);
}

void health_states(struct health *h, struct health_state *ret)
{
	lock(h);
	read_all(h);
	unlock(h);
	for (size_t i = 0; i < h->n; i++) {
		const struct record *r = &h->b[i].rec;

		ret[i] = (struct health_state){ r->failures, r->down_until, { 0 }, r->error_time, h->b[i].ok_here,
						h->b[i].failed_here, { 0 }, h->b[i].cleared.error_time };
		memcpy(ret[i].error, r->error, sizeof(ret[i].error));
		memcpy(ret[i].cleared_error, h->b[i].cleared.error, sizeof(ret[i].cleared_error));
	}
}

const struct p11_call_owner *health_owner(struct health *h, int i)
{
	return &h->b[i].owner;
}

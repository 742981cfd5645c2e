/* SPDX-License-Identifier: BSD-3-Clause */
#include "config.h"

/* The attributes of a key the relay made, read from the token when the key has no
 * metadata object, and the test of whether a key's attributes can be left to the
 * token, so that it needs none (ops_objects.h). What holds them:
 *   its CKA_ID (store_stamp_id): the Initial Date, the Cryptographic Usage Mask and
 *     the Cryptographic Algorithm, none of which KMIP lets change;
 *   its usage flags: the state - none set: Pre-Active; those of its mask: Active;
 *     only those that process (verify, decrypt): Deactivated;
 *   CKA_START_DATE and CKA_END_DATE: an Activation and a Deactivation Date at
 *     midnight UTC (CK_DATE holds a day, so another time of day needs metadata);
 *   CKA_LOCAL (the token made the key): the Original Creation Date (the Initial
 *     Date), the Random Number Generator (Unspecified) and a pair's Link to the
 *     other half, which has the same CKA_ID;
 *   the key itself: its Length, its Key Format Type (the default) and the Digest
 *     in it, if the token lets the key out.
 * Its Last Change Date is its Initial Date: a key changed since has metadata. Its
 * Name is its CKA_LABEL, as for every object. In the order the relay writes a new
 * key's metadata (ops_create.c), so that Get Attributes answers in the same order
 * with metadata or without. */

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ops_objects.h"

enum { RNG_UNSPECIFIED = 1 };

/* The facts of a live key whose CKA_ID the relay stamped. */
static bool derivable(const struct store_obj *o, struct store_id_facts *ret)
{
	return !o->destroyed && (o->kind == STORE_PUBLIC || o->kind == STORE_PRIVATE || o->kind == STORE_SECRET) &&
	       store_id_facts(o->id, o->id_len, ret);
}

bool ops_derivable(const struct store_obj *o)
{
	struct store_id_facts f;

	return derivable(o, &f);
}

/* A CK_DATE as the Date-Time of its midnight UTC; false if it holds none. */
static bool date_time(const CK_DATE *d, CK_ULONG len, int64_t *ret)
{
	const CK_CHAR *c = d->year;
	unsigned v[8];

	if (len != sizeof(*d))
		return false;
	for (size_t i = 0; i < 8; i++) {
		if (c[i] < '0' || c[i] > '9')
			return false;
		v[i] = c[i] - '0';
	}
	{
		unsigned y = v[0] * 1000 + v[1] * 100 + v[2] * 10 + v[3], m = v[4] * 10 + v[5], day = v[6] * 10 + v[7];
		struct tm tm = { .tm_year = (int)y - 1900, .tm_mon = (int)m - 1, .tm_mday = (int)day };

		if (y < 1900 || m < 1 || m > 12 || day < 1 || day > 31)
			return false;
		*ret = (int64_t)timegm(&tm);
	}
	return true;
}

/* The CK_DATE of the day a Date-Time falls on (UTC); false for one CK_DATE cannot
 * hold (before 1900 or after 9999). */
static bool ck_date(int64_t t, CK_DATE *ret)
{
	time_t tt = (time_t)t;
	struct tm tm;
	char buf[32];

	if (!gmtime_r(&tt, &tm) || tm.tm_year < 0 || tm.tm_year > 9999 - 1900)
		return false;
	snprintf(buf, sizeof(buf), "%04d%02d%02d", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday);
	memcpy(ret->year, buf, 4);
	memcpy(ret->month, buf + 4, 2);
	memcpy(ret->day, buf + 6, 2);
	return true;
}

/* What the token holds of a key, beyond its CKA_ID. */
struct token_view {
	CK_BBOOL flags[OPS_MAX_FLAGS];
	size_t n_flags;
	CK_DATE start, end;
	CK_ULONG start_len, end_len;
	CK_BBOOL local;
	CK_KEY_TYPE key_type;
};

static int read_view(struct store *st, const struct store_obj *o, struct token_view *ret)
{
	struct token_view v = { .local = CK_FALSE };
	CK_ATTRIBUTE flags[OPS_MAX_FLAGS];
	CK_ATTRIBUTE a[] = {
		{ CKA_LOCAL, &v.local, sizeof(v.local) },
		{ CKA_KEY_TYPE, &v.key_type, sizeof(v.key_type) },
	};
	CK_ATTRIBUTE dates[] = {
		{ CKA_START_DATE, &v.start, sizeof(v.start) },
		{ CKA_END_DATE, &v.end, sizeof(v.end) },
	};
	int r;

	v.n_flags = ops_usage_template(o->kind, 0, 0, v.flags, flags);
	if ((r = p11_get_attrs(st->tok, o->handle, flags, v.n_flags)) < 0 ||
	    (r = p11_get_attrs(st->tok, o->handle, a, sizeof(a) / sizeof(a[0]))) < 0)
		return r;
	/* Dates another application left unreadable (SoftHSM 2.6 stores those of a
	 * private object unencrypted, then fails to decrypt them) are none. */
	if (p11_get_attrs(st->tok, o->handle, dates, 2) == 0) {
		v.start_len = dates[0].ulValueLen;
		v.end_len = dates[1].ulValueLen;
	}
	*ret = v;
	return 0;
}

/* The state the usage flags record for a key with this mask. Flags that another
 * application set some other way are what the token allows: Active if any is. */
static uint32_t flags_state(enum store_kind kind, uint32_t mask, const struct token_view *v)
{
	static const uint32_t set[] = { STATE_ACTIVE, STATE_DEACTIVATED };
	bool any = false;

	for (size_t i = 0; i < v->n_flags; i++)
		any |= v->flags[i] == CK_TRUE;
	if (!any)
		return STATE_PRE_ACTIVE;
	for (size_t s = 0; s < sizeof(set) / sizeof(set[0]); s++) {
		CK_BBOOL want[OPS_MAX_FLAGS];
		CK_ATTRIBUTE t[OPS_MAX_FLAGS];
		size_t n = ops_usage_template(kind, mask, set[s], want, t);
		bool same = n == v->n_flags;

		for (size_t i = 0; same && i < n; i++)
			same = (want[i] == CK_TRUE) == (v->flags[i] == CK_TRUE);
		if (same)
			return set[s];
	}
	return STATE_ACTIVE;
}

/* A key's attributes from the token, as its metadata would hold them; with its
 * Length and Digest only if full (they cost reading the key). */
static int derive(struct store *st, const struct store_obj *o, const struct store_id_facts *f, bool full,
		  struct store_meta *ret)
{
	struct store_meta m = { .derived = true };
	struct token_view v;
	struct ttlv_writer w;
	int64_t created = f->created_ms / 1000, date;
	uint32_t algorithm = f->algorithm, format;
	int32_t length = 0;
	int r;

	if ((r = read_view(st, o, &v)) < 0 || (full && (r = ops_token_key(st, o, &algorithm, &length)) < 0))
		return r;
	if (f->algorithm)
		algorithm = f->algorithm;
	format = ops_default_format(o->kind, v.key_type);
	ttlv_writer_init(&w, TTLV_DEFAULT_MAX_SIZE);
	ttlv_begin(&w, KMIP_TAG_ATTRIBUTES);
	ttlv_put_enum(&w, KMIP_TAG_STATE, flags_state(o->kind, f->mask[o->kind == STORE_PUBLIC], &v));
	ttlv_put_datetime(&w, KMIP_TAG_INITIAL_DATE, created);
	if (v.local == CK_TRUE) {
		ttlv_put_datetime(&w, KMIP_TAG_ORIGINAL_CREATION_DATE, created);
		ttlv_begin(&w, KMIP_TAG_RANDOM_NUMBER_GENERATOR);
		ttlv_put_enum(&w, KMIP_TAG_RNG_ALGORITHM, RNG_UNSPECIFIED);
		ttlv_end(&w);
	}
	if (date_time(&v.start, v.start_len, &date))
		ttlv_put_datetime(&w, KMIP_TAG_ACTIVATION_DATE, date);
	if (algorithm)
		ttlv_put_enum(&w, KMIP_TAG_CRYPTOGRAPHIC_ALGORITHM, algorithm);
	if (length)
		ttlv_put_int(&w, KMIP_TAG_CRYPTOGRAPHIC_LENGTH, length);
	ttlv_put_int(&w, KMIP_TAG_CRYPTOGRAPHIC_USAGE_MASK, (int32_t)f->mask[o->kind == STORE_PUBLIC]);
	if (v.local == CK_TRUE && o->kind != STORE_SECRET) {
		char other[STORE_MAX_UID + 1];

		store_uid(o->kind == STORE_PUBLIC ? STORE_PRIVATE : STORE_PUBLIC, o->id, o->id_len, other);
		ops_put_link(&w, o->kind == STORE_PUBLIC ? LINK_PRIVATE_KEY : LINK_PUBLIC_KEY, other);
	}
	ttlv_put_enum(&w, KMIP_TAG_KEY_FORMAT_TYPE, format);
	if (full)
		ops_put_token_digest(&w, st, o, format);
	if (date_time(&v.end, v.end_len, &date))
		ttlv_put_datetime(&w, KMIP_TAG_DEACTIVATION_DATE, date);
	ttlv_put_datetime(&w, KMIP_TAG_LAST_CHANGE_DATE, created);
	ttlv_end(&w);
	if ((r = ttlv_writer_finish(&w, &m.value, &m.value_len)) == 0 &&
	    (r = ttlv_decode(m.value, m.value_len, &ttlv_default_limits, &m.tree)) == 0)
		r = kmip_attrs_decode(m.tree, ops_meta_version, &m.attrs);
	if (r < 0) {
		store_meta_clear(&m);
		return r;
	}
	*ret = m;
	return 0;
}

int ops_meta_read(struct store *st, const struct store_obj *o, bool full, struct store_meta *ret)
{
	struct store_id_facts f;
	struct store_meta m = { 0 };
	int r = store_meta_read(st, o, &m);

	if (r < 0)
		return r;
	if (m.found || !derivable(o, &f)) {
		*ret = m;
		return 0;
	}
	return derive(st, o, &f, full, ret);
}

/* Sets CKA_START_DATE and CKA_END_DATE to the Activation and Deactivation Dates
 * that fall on midnight UTC, and empties them otherwise (a day would say the key
 * was usable before it was), where they differ; so other PKCS#11 software sees
 * them too. A date the token refuses, or cannot give back (SoftHSM 2.6 cannot, on
 * a private or secret key: it stores the value unencrypted and then fails to
 * decrypt it), stays empty: the key then has metadata, as ops_meta_to_token
 * finds. */
static void put_dates(struct store *st, const struct store_obj *o, const struct store_meta *next)
{
	static const uint32_t tags[2] = { KMIP_TAG_ACTIVATION_DATE, KMIP_TAG_DEACTIVATION_DATE };
	static const CK_ATTRIBUTE_TYPE types[2] = { CKA_START_DATE, CKA_END_DATE };

	for (size_t i = 0; i < 2; i++) {
		int64_t t = ops_meta_date(next, tags[i], INT64_MIN);
		CK_DATE have, want;
		CK_ATTRIBUTE cur = { types[i], &have, sizeof(have) }, set = { types[i], &want, sizeof(want) };
		bool readable = p11_get_attrs(st->tok, o->handle, &cur, 1) == 0;

		if (t == INT64_MIN || t % 86400 != 0 || !ck_date(t, &want))
			set.ulValueLen = 0;
		if (readable && set.ulValueLen == cur.ulValueLen && memcmp(&want, &have, set.ulValueLen) == 0)
			continue;
		cur.ulValueLen = sizeof(have);
		if (p11_set_attrs(st->tok, o->handle, &set, 1) < 0 ||
		    (set.ulValueLen && p11_get_attrs(st->tok, o->handle, &cur, 1) < 0)) {
			set.ulValueLen = 0;
			if (p11_set_attrs(st->tok, o->handle, &set, 1) < 0)
				continue;
		}
	}
}

/* Whether an Attributes structure's children are another's, in any order. */
static bool same_attributes(const struct ttlv_item *a, const struct ttlv_item *b)
{
	const struct ttlv_item *used[64];
	size_t n_used = 0;

	if (ttlv_count_children(a) != ttlv_count_children(b) || ttlv_count_children(b) > 64)
		return false;
	for (const struct ttlv_item *x = a->child; x; x = x->next) {
		const struct ttlv_item *match = NULL;

		for (const struct ttlv_item *y = b->child; y && !match; y = y->next) {
			bool taken = false;

			for (size_t i = 0; i < n_used && !taken; i++)
				taken = used[i] == y;
			if (!taken && ttlv_equal(x, y))
				match = y;
		}
		if (!match)
			return false;
		used[n_used++] = match;
	}
	return true;
}

bool ops_meta_to_token(struct store *st, const struct store_obj *o, const struct store_meta *next)
{
	struct store_id_facts f;
	struct store_meta d = { 0 };
	bool fits;

	if (!derivable(o, &f))
		return false;
	put_dates(st, o, next);
	fits = derive(st, o, &f, true, &d) == 0 && same_attributes(next->tree, d.tree);
	store_meta_clear(&d);
	return fits;
}

/* SPDX-License-Identifier: BSD-3-Clause */
#include "config.h"

#include "store.h"

#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const struct {
	const char *suffix;
	CK_OBJECT_CLASS cls;
} kinds[STORE_N_KINDS] = {
	[STORE_PUBLIC] = { "_pub", CKO_PUBLIC_KEY },
	[STORE_PRIVATE] = { "_priv", CKO_PRIVATE_KEY },
	[STORE_SECRET] = { "_secret", CKO_SECRET_KEY },
	[STORE_CERT] = { "_cert", CKO_CERTIFICATE },
	[STORE_DATA] = { "_data", CKO_DATA },
};

/* A bare CKA_ID names the first of these the token has. */
static const enum store_kind bare_order[] = { STORE_PUBLIC, STORE_PRIVATE, STORE_SECRET, STORE_CERT, STORE_DATA };

/* A metadata object's CKA_APPLICATION: this, then the UID of the object it is of.
 * Not CKA_OBJECT_ID, which PKCS#11 keeps for a DER object identifier and which
 * tokens such as openCryptoki 3.8 refuse (CKR_TEMPLATE_INCONSISTENT). */
#define META_APPLICATION "kmip-relay metadata "
#define OBJECT_APPLICATION "kmip-relay object" /* Opaque Objects; metadata has its own */
/* A generation's label: this, its number, then " live" for a live object's
 * metadata or " destroyed <Destroy Date>" for a record (store_sweep). An older
 * relay wrote the number alone, and reads these labels as it did its own. */
#define META_LABEL "kmip-relay metadata "
#define LABEL_LIVE " live"
#define LABEL_DESTROYED " destroyed "
#define MAX_GENERATIONS 8
#define EPOCH_APPLICATION "kmip-relay epoch"
#define EPOCH_LABEL "kmip-relay epoch "
#define MAX_EPOCHS 4

CK_OBJECT_CLASS store_class(enum store_kind kind)
{
	return kinds[kind].cls;
}

size_t store_kind_template(enum store_kind kind, const uint8_t *id, size_t id_len, CK_OBJECT_CLASS *cls,
			   CK_ATTRIBUTE out[3])
{
	size_t n = 0;

	*cls = kinds[kind].cls;
	out[n++] = (CK_ATTRIBUTE){ CKA_CLASS, cls, sizeof(*cls) };
	if (kind == STORE_DATA)
		out[n++] = (CK_ATTRIBUTE){ CKA_APPLICATION, (void *)OBJECT_APPLICATION, strlen(OBJECT_APPLICATION) };
	if (id)
		out[n++] = (CK_ATTRIBUTE){ store_id_attribute(kind), (void *)id, id_len };
	return n;
}

CK_ATTRIBUTE_TYPE store_id_attribute(enum store_kind kind)
{
	return kind == STORE_DATA ? CKA_OBJECT_ID : CKA_ID;
}

void store_uid(enum store_kind kind, const uint8_t *id, size_t id_len, char out[STORE_MAX_UID + 1])
{
	static const char hex[] = "0123456789ABCDEF";
	size_t n = 0;

	for (size_t i = 0; i < id_len && i < STORE_MAX_ID; i++) {
		out[n++] = hex[id[i] >> 4];
		out[n++] = hex[id[i] & 15];
	}
	snprintf(out + n, STORE_MAX_UID + 1 - n, "%s", kinds[kind].suffix);
}

/* Splits a UID into CKA_ID and kind; *ret_kind is -1 for a bare CKA_ID. */
static bool parse_uid(const char *uid, size_t len, uint8_t *id, size_t *id_len, int *ret_kind)
{
	size_t hex_len = len;

	*ret_kind = -1;
	for (int k = 0; k < STORE_N_KINDS; k++) {
		size_t sl = strlen(kinds[k].suffix);

		if (len > sl && memcmp(uid + len - sl, kinds[k].suffix, sl) == 0) {
			*ret_kind = k;
			hex_len = len - sl;
			break;
		}
	}
	if (hex_len == 0 || hex_len % 2 != 0 || hex_len / 2 > STORE_MAX_ID)
		return false;
	*id_len = STORE_MAX_ID;
	return gnutls_hex_decode(&(gnutls_datum_t){ (unsigned char *)uid, (unsigned)hex_len }, id, id_len) == 0;
}

static const struct store_obj *cached(const struct store *s, enum store_kind kind, const uint8_t *id,
				      size_t id_len)
{
	for (size_t i = 0; i < s->n_cache; i++) {
		const struct store_obj *o = &s->cache[i];

		if (o->kind == kind && o->id_len == id_len && memcmp(o->id, id, id_len) == 0)
			return o;
	}
	return NULL;
}

void store_remember(struct store *s, const struct store_obj *o)
{
	if (cached(s, o->kind, o->id, o->id_len))
		return;
	if (s->n_cache == sizeof(s->cache) / sizeof(s->cache[0]))
		s->n_cache = 0; /* a connection touching this many objects starts over */
	s->cache[s->n_cache++] = *o;
}

void store_forget(struct store *s, const struct store_obj *o)
{
	for (size_t i = 0; i < s->n_cache; i++)
		if (s->cache[i].kind == o->kind && s->cache[i].id_len == o->id_len &&
		    memcmp(s->cache[i].id, o->id, o->id_len) == 0) {
			s->cache[i] = s->cache[--s->n_cache];
			return;
		}
}

int store_find_kind(struct store *s, enum store_kind kind, const uint8_t *id, size_t id_len,
		    struct store_obj *ret)
{
	CK_OBJECT_CLASS cls;
	CK_ATTRIBUTE tmpl[3];
	size_t n_tmpl = store_kind_template(kind, id, id_len, &cls, tmpl);
	const struct store_obj *c = cached(s, kind, id, id_len);
	CK_OBJECT_HANDLE h[2];
	size_t n = 0;
	int r;

	if (c) {
		*ret = *c;
		return 0;
	}
	r = p11_find(s->tok, tmpl, n_tmpl, h, 2, &n);
	if (r < 0)
		return r;
	/* Two objects of one class with one CKA_ID: the UID would be ambiguous. */
	if (n != 1)
		return KR_E_P11_NOT_FOUND;
	*ret = (struct store_obj){ .kind = kind, .backend = s->backend, .handle = h[0], .id_len = id_len,
				   .key_type = CK_UNAVAILABLE_INFORMATION };
	if (kind != STORE_CERT && kind != STORE_DATA) {
		CK_ATTRIBUTE type = { CKA_KEY_TYPE, &ret->key_type, sizeof(ret->key_type) };

		if ((r = p11_get_attrs(s->tok, h[0], &type, 1)) < 0)
			return r;
	}
	memcpy(ret->id, id, id_len);
	store_uid(kind, id, id_len, ret->uid);
	store_remember(s, ret);
	return 0;
}

int store_new_id(struct store *s, uint8_t id[STORE_ID_LEN])
{
	/* The token's generator if it has one, else GnuTLS's. */
	if (p11_random(s->tok, id, STORE_ID_LEN) == 0)
		return 0;
	return gnutls_rnd(GNUTLS_RND_NONCE, id, STORE_ID_LEN) == 0 ? 0 : KR_E_P11_FAILED;
}

/* The layout of a stamped CKA_ID (store.h). */
enum { ID_TIME = 8, ID_MASK = 14, ID_ALGORITHM = 22, ID_CHECK = 28 };
#define ID_DOMAIN "kmip-relay CKA_ID 1"
/* No relay stamped an ID before 2025 or will after 2199: a chance match with a
 * foreign ID must also fall in between. */
#define ID_FIRST_MS INT64_C(1735689600000)
#define ID_LAST_MS INT64_C(7258118400000)

static void put_be(uint8_t *p, uint64_t v, size_t n)
{
	for (size_t i = n; i-- > 0; v >>= 8)
		p[i] = (uint8_t)v;
}

static uint64_t get_be(const uint8_t *p, size_t n)
{
	uint64_t v = 0;

	for (size_t i = 0; i < n; i++)
		v = v << 8 | p[i];
	return v;
}

/* The check value of an ID's first ID_CHECK bytes; false if none can be made. */
static bool id_check(const uint8_t *id, uint8_t out[STORE_ID_LEN - ID_CHECK])
{
	uint8_t in[sizeof(ID_DOMAIN) - 1 + ID_CHECK], md[32];

	memcpy(in, ID_DOMAIN, sizeof(ID_DOMAIN) - 1);
	memcpy(in + sizeof(ID_DOMAIN) - 1, id, ID_CHECK);
	if (gnutls_hash_fast(GNUTLS_DIG_SHA256, in, sizeof(in), md) < 0)
		return false;
	memcpy(out, md, STORE_ID_LEN - ID_CHECK);
	return true;
}

void store_stamp_id(uint8_t id[STORE_ID_LEN], const struct store_id_facts *f)
{
	uint8_t check[STORE_ID_LEN - ID_CHECK];

	put_be(id + ID_TIME, (uint64_t)f->created_ms, ID_MASK - ID_TIME);
	put_be(id + ID_MASK, f->mask[0], 4);
	put_be(id + ID_MASK + 4, f->mask[1], 4);
	put_be(id + ID_ALGORITHM, f->algorithm <= 0xFFFF ? f->algorithm : 0, 2);
	/* Without a check value the ID stays unsealed: the object then has metadata
	 * like one made by other software. */
	if (id_check(id, check))
		memcpy(id + ID_CHECK, check, sizeof(check));
}

bool store_id_facts(const uint8_t *id, size_t len, struct store_id_facts *ret)
{
	uint8_t check[STORE_ID_LEN - ID_CHECK];
	int64_t ms;

	if (len != STORE_ID_LEN || !id_check(id, check) || memcmp(check, id + ID_CHECK, sizeof(check)) != 0)
		return false;
	ms = (int64_t)get_be(id + ID_TIME, ID_MASK - ID_TIME);
	if (ms < ID_FIRST_MS || ms >= ID_LAST_MS)
		return false;
	*ret = (struct store_id_facts){ ms,
					{ (uint32_t)get_be(id + ID_MASK, 4), (uint32_t)get_be(id + ID_MASK + 4, 4) },
					(uint32_t)get_be(id + ID_ALGORITHM, 2) };
	return true;
}

int store_lock(struct store *s, int *ret_fd)
{
	const char *why;

	return p11_lock(s->lock_file, true, ret_fd, &why);
}

void store_unlock(int fd)
{
	p11_unlock(fd);
}

/* The metadata objects of o, each with its generation. */
struct generation {
	CK_OBJECT_HANDLE handle;
	uint64_t gen;
};

/* The CKA_APPLICATION of o's metadata; returns its length. */
static size_t meta_application(const struct store_obj *o, char out[sizeof(META_APPLICATION) + STORE_MAX_UID])
{
	return (size_t)snprintf(out, sizeof(META_APPLICATION) + STORE_MAX_UID, META_APPLICATION "%s", o->uid);
}

static int find_generations(struct store *s, const struct store_obj *o, struct generation *out, size_t *ret_n)
{
	CK_OBJECT_CLASS cls = CKO_DATA;
	char app[sizeof(META_APPLICATION) + STORE_MAX_UID];
	CK_ATTRIBUTE tmpl[] = {
		{ CKA_CLASS, &cls, sizeof(cls) },
		{ CKA_APPLICATION, app, meta_application(o, app) },
	};
	CK_OBJECT_HANDLE h[MAX_GENERATIONS];
	size_t n = 0, k = 0;
	int r = p11_find(s->tok, tmpl, 2, h, MAX_GENERATIONS, &n);

	if (r < 0)
		return r;
	for (size_t i = 0; i < n; i++) {
		char label[64] = { 0 };
		CK_ATTRIBUTE a = { CKA_LABEL, label, sizeof(label) - 1 };
		size_t pl = strlen(META_LABEL);

		/* A generation destroyed meanwhile by a writer is skipped; any other
		 * failure is one: metadata that cannot be read is never taken for none. */
		r = p11_get_attrs(s->tok, h[i], &a, 1);
		if (r == KR_E_P11_NOT_FOUND)
			continue;
		if (r < 0)
			return r;
		if (a.ulValueLen <= pl || a.ulValueLen >= sizeof(label) || memcmp(label, META_LABEL, pl) != 0)
			continue;
		out[k++] = (struct generation){ h[i], strtoull(label + pl, NULL, 10) };
	}
	*ret_n = k;
	return 0;
}

/* The record that a destroyed object of this kind and CKA_ID left, if any. */
static int find_record(struct store *s, enum store_kind kind, const uint8_t *id, size_t id_len,
		       struct store_obj *ret)
{
	struct store_obj o = { .kind = kind, .backend = s->backend, .destroyed = true, .handle = CK_INVALID_HANDLE,
			       .key_type = CK_UNAVAILABLE_INFORMATION, .id_len = id_len };
	struct generation gens[MAX_GENERATIONS];
	size_t n = 0;
	int r;

	memcpy(o.id, id, id_len);
	store_uid(kind, id, id_len, o.uid);
	if ((r = find_generations(s, &o, gens, &n)) < 0)
		return r;
	if (n == 0)
		return KR_E_P11_NOT_FOUND;
	*ret = o;
	return 0;
}

int store_find(struct store *s, const char *uid, size_t len, struct store_obj *ret)
{
	uint8_t id[STORE_MAX_ID];
	size_t id_len;
	int kind, r = KR_E_P11_NOT_FOUND;
	size_t n_kinds = sizeof(bare_order) / sizeof(bare_order[0]);

	if (!parse_uid(uid, len, id, &id_len, &kind))
		return KR_E_P11_NOT_FOUND;
	if (kind >= 0) {
		r = store_find_kind(s, (enum store_kind)kind, id, id_len, ret);
		return r == KR_E_P11_NOT_FOUND ? find_record(s, (enum store_kind)kind, id, id_len, ret) : r;
	}
	for (size_t i = 0; i < n_kinds && r == KR_E_P11_NOT_FOUND; i++)
		r = store_find_kind(s, bare_order[i], id, id_len, ret);
	for (size_t i = 0; i < n_kinds && r == KR_E_P11_NOT_FOUND; i++)
		r = find_record(s, bare_order[i], id, id_len, ret);
	return r;
}

/* The objects the relay's metadata names, each once: the live ones, or else the
 * records of the destroyed ones. */
static int scan_metadata(struct store *s, bool live, struct store_obj **ret, size_t *ret_n)
{
	CK_OBJECT_CLASS cls = CKO_DATA;
	CK_ATTRIBUTE tmpl[] = {
		{ CKA_CLASS, &cls, sizeof(cls) },
	};
	CK_OBJECT_HANDLE *h = NULL;
	struct store_obj *out = NULL;
	size_t n = 0, k = 0, pl = strlen(META_APPLICATION);
	int r = p11_find_all(s->tok, tmpl, 1, &h, &n);

	if (r == 0 && !(out = calloc(n ? n : 1, sizeof(*out))))
		r = KR_E_NOMEM;
	for (size_t i = 0; r == 0 && i < n; i++) {
		char app[sizeof(META_APPLICATION) + STORE_MAX_UID] = { 0 };
		CK_ATTRIBUTE a = { CKA_APPLICATION, app, sizeof(app) - 1 };
		const char *uid = app + pl;
		uint8_t id[STORE_MAX_ID];
		size_t id_len;
		int kind;
		bool seen = false;
		struct store_obj found;

		/* Another data object (its application longer than any of ours is
		 * refused as too long for the buffer), a generation that a writer
		 * destroyed meanwhile, or a UID of no kind. */
		if (p11_get_attrs(s->tok, h[i], &a, 1) < 0 || a.ulValueLen <= pl || a.ulValueLen >= sizeof(app) ||
		    memcmp(app, META_APPLICATION, pl) != 0 ||
		    !parse_uid(uid, a.ulValueLen - pl, id, &id_len, &kind) || kind < 0)
			continue;
		/* An object has one record, however many generations are in the token. */
		for (size_t j = 0; j < k && !seen; j++)
			seen = strcmp(out[j].uid, uid) == 0;
		if (seen)
			continue;
		/* The object itself, or its record when only its metadata is left. */
		r = store_find_kind(s, (enum store_kind)kind, id, id_len, &found);
		if (r == 0 && live)
			out[k++] = found;
		else if (r == KR_E_P11_NOT_FOUND && !live &&
			 (r = find_record(s, (enum store_kind)kind, id, id_len, &out[k])) == 0)
			k++;
		if (r == KR_E_P11_NOT_FOUND) /* gone meanwhile */
			r = 0;
	}
	free(h);
	if (r < 0) {
		free(out);
		return r;
	}
	*ret = out;
	*ret_n = k;
	return 0;
}

int store_records(struct store *s, struct store_obj **ret, size_t *ret_n)
{
	return scan_metadata(s, false, ret, ret_n);
}

static int by_uid(const void *a, const void *b)
{
	return strcmp(((const struct store_obj *)a)->uid, ((const struct store_obj *)b)->uid);
}

/* Appends the keys of a kind whose CKA_ID the relay stamped. */
static int add_stamped(struct store *s, enum store_kind kind, struct store_obj **objs, size_t *n)
{
	CK_OBJECT_CLASS cls;
	CK_ATTRIBUTE tmpl[3];
	size_t n_tmpl = store_kind_template(kind, NULL, 0, &cls, tmpl), n_found = 0;
	CK_OBJECT_HANDLE *h = NULL;
	int r = p11_find_all(s->tok, tmpl, n_tmpl, &h, &n_found);

	for (size_t i = 0; r == 0 && i < n_found; i++) {
		uint8_t id[STORE_MAX_ID];
		CK_ATTRIBUTE a = { CKA_ID, id, sizeof(id) };
		struct store_id_facts f;
		struct store_obj *grown;

		if (p11_get_attrs(s->tok, h[i], &a, 1) < 0 || !store_id_facts(id, a.ulValueLen, &f))
			continue;
		if (!(grown = realloc(*objs, (*n + 1) * sizeof(**objs)))) {
			r = KR_E_NOMEM;
			break;
		}
		*objs = grown;
		grown[*n] = (struct store_obj){ .kind = kind, .backend = s->backend, .handle = h[i],
						.key_type = CK_UNAVAILABLE_INFORMATION, .id_len = a.ulValueLen };
		memcpy(grown[*n].id, id, a.ulValueLen);
		store_uid(kind, id, a.ulValueLen, grown[*n].uid);
		(*n)++;
	}
	free(h);
	return r;
}

int store_managed(struct store *s, struct store_obj **ret, size_t *ret_n)
{
	struct store_obj *objs = NULL;
	size_t n = 0, k = 0;
	int r = scan_metadata(s, true, &objs, &n);

	for (int kind = STORE_PUBLIC; r == 0 && kind <= STORE_SECRET; kind++)
		r = add_stamped(s, (enum store_kind)kind, &objs, &n);
	if (r < 0) {
		free(objs);
		return r;
	}
	/* A key with metadata was listed twice. */
	qsort(objs, n, sizeof(*objs), by_uid);
	for (size_t i = 0; i < n; i++)
		if (k == 0 || strcmp(objs[k - 1].uid, objs[i].uid) != 0)
			objs[k++] = objs[i];
	*ret = objs;
	*ret_n = k;
	return 0;
}

void store_meta_clear(struct store_meta *m)
{
	kmip_attrs_clear(&m->attrs);
	ttlv_free(m->tree);
	ttlv_buf_free(m->value, m->value_len);
	*m = (struct store_meta){ 0 };
}

static const struct kmip_version meta_version = { 2, 1 };

int store_meta_read(struct store *s, const struct store_obj *o, struct store_meta *ret)
{
	struct generation gens[MAX_GENERATIONS];
	struct store_meta m = { 0 };
	size_t n = 0, newest = 0;
	int r;

	for (int attempt = 0; attempt < 3; attempt++) {
		r = find_generations(s, o, gens, &n);
		if (r < 0)
			return r;
		if (n == 0) {
			*ret = m;
			return 0;
		}
		for (size_t i = 1; i < n; i++)
			if (gens[i].gen > gens[newest].gen)
				newest = i;
		r = p11_get_attr_alloc(s->tok, gens[newest].handle, CKA_VALUE, &m.value, &m.value_len);
		if (r != KR_E_P11_NOT_FOUND) /* else a writer replaced it meanwhile: look again */
			break;
		newest = 0;
	}
	if (r < 0)
		return r;
	r = ttlv_decode(m.value, m.value_len, &ttlv_default_limits, &m.tree);
	if (r == 0)
		r = kmip_attrs_decode(m.tree, meta_version, &m.attrs);
	if (r < 0) {
		store_meta_clear(&m);
		return r;
	}
	m.found = true;
	m.generation = gens[newest].handle;
	*ret = m;
	return 0;
}

bool store_meta_current(struct store *s, CK_OBJECT_HANDLE generation)
{
	char label[64];
	CK_ATTRIBUTE a = { CKA_LABEL, label, sizeof(label) };

	return p11_get_attrs(s->tok, generation, &a, 1) == 0;
}

/* Every epoch object of the token (more than one only if two connections made
 * one at once), up to MAX_EPOCHS. */
static int find_epochs(struct store *s, CK_OBJECT_HANDLE h[MAX_EPOCHS], size_t *ret_n)
{
	CK_OBJECT_CLASS cls = CKO_DATA;
	CK_ATTRIBUTE tmpl[] = {
		{ CKA_CLASS, &cls, sizeof(cls) },
		{ CKA_APPLICATION, (void *)EPOCH_APPLICATION, strlen(EPOCH_APPLICATION) },
	};

	return p11_find(s->tok, tmpl, 2, h, MAX_EPOCHS, ret_n);
}

/* A new epoch label: any value that differs from the last will do. */
static int epoch_label(char out[64])
{
	uint8_t r[8];

	if (gnutls_rnd(GNUTLS_RND_NONCE, r, sizeof(r)) < 0)
		return KR_E_P11_FAILED;
	snprintf(out, 64, EPOCH_LABEL "%02x%02x%02x%02x%02x%02x%02x%02x", r[0], r[1], r[2], r[3], r[4], r[5], r[6],
		 r[7]);
	return 0;
}

/* Tells the connections that keep what an object without metadata said that it
 * may have changed. No epoch object: none keeps anything. */
static void epoch_bump(struct store *s)
{
	CK_OBJECT_HANDLE h[MAX_EPOCHS];
	size_t n = 0;

	if (find_epochs(s, h, &n) < 0)
		return;
	for (size_t i = 0; i < n; i++) {
		char label[64];
		CK_ATTRIBUTE a = { CKA_LABEL, label, 0 };

		if (epoch_label(label) < 0)
			return;
		a.ulValueLen = strlen(label);
		if (p11_set_attrs(s->tok, h[i], &a, 1) < 0)
			continue;
	}
}

int store_epoch_read(struct store *s, struct store_epoch *ret)
{
	CK_OBJECT_HANDLE h[MAX_EPOCHS];
	struct store_epoch e = { .handle = CK_INVALID_HANDLE };
	CK_ATTRIBUTE a = { CKA_LABEL, e.label, sizeof(e.label) };
	size_t n = 0;
	int r = find_epochs(s, h, &n);

	if (r == 0 && n == 0) {
		CK_OBJECT_CLASS cls = CKO_DATA;
		CK_BBOOL yes = CK_TRUE;
		char label[64];
		CK_ATTRIBUTE tmpl[] = {
			{ CKA_CLASS, &cls, sizeof(cls) },
			{ CKA_TOKEN, &yes, sizeof(yes) },
			{ CKA_PRIVATE, &yes, sizeof(yes) },
			{ CKA_APPLICATION, (void *)EPOCH_APPLICATION, strlen(EPOCH_APPLICATION) },
			{ CKA_LABEL, label, 0 },
		};

		if ((r = epoch_label(label)) == 0) {
			tmpl[4].ulValueLen = strlen(label);
			r = p11_create(s->tok, tmpl, sizeof(tmpl) / sizeof(tmpl[0]), &h[0]);
		}
	}
	if (r == 0)
		r = p11_get_attrs(s->tok, h[0], &a, 1);
	if (r < 0)
		return r;
	e.handle = h[0];
	e.len = a.ulValueLen;
	*ret = e;
	return 0;
}

bool store_epoch_current(struct store *s, const struct store_epoch *e)
{
	char label[64];
	CK_ATTRIBUTE a = { CKA_LABEL, label, sizeof(label) };

	return e->handle != CK_INVALID_HANDLE && p11_get_attrs(s->tok, e->handle, &a, 1) == 0 &&
	       a.ulValueLen == e->len && memcmp(label, e->label, e->len) == 0;
}

int store_meta_write(struct store *s, const struct store_obj *o, const uint8_t *encoded, size_t len,
		     int64_t destroyed)
{
	struct generation gens[MAX_GENERATIONS];
	CK_OBJECT_CLASS cls = CKO_DATA;
	CK_BBOOL yes = CK_TRUE;
	uint64_t next = 1;
	char label[64], app[sizeof(META_APPLICATION) + STORE_MAX_UID];
	CK_OBJECT_HANDLE h;
	size_t n = 0;
	int r = find_generations(s, o, gens, &n);

	if (r < 0)
		return r;
	for (size_t i = 0; i < n; i++)
		if (gens[i].gen >= next)
			next = gens[i].gen + 1;
	if (destroyed)
		snprintf(label, sizeof(label), META_LABEL "%" PRIu64 LABEL_DESTROYED "%" PRId64, next, destroyed);
	else
		snprintf(label, sizeof(label), META_LABEL "%" PRIu64 LABEL_LIVE, next);
	{
		CK_ATTRIBUTE tmpl[] = {
			{ CKA_CLASS, &cls, sizeof(cls) },
			{ CKA_TOKEN, &yes, sizeof(yes) },
			{ CKA_PRIVATE, &yes, sizeof(yes) },
			{ CKA_APPLICATION, app, meta_application(o, app) },
			{ CKA_LABEL, label, strlen(label) },
			{ CKA_VALUE, (void *)encoded, len },
		};

		r = p11_create(s->tok, tmpl, sizeof(tmpl) / sizeof(tmpl[0]), &h);
	}
	if (r < 0)
		return r;
	s->written = h;
	/* The new generation is in place and readers take it over the old ones, so an
	 * old one that cannot be destroyed now is left for the next writer. */
	for (size_t i = 0; i < n; i++)
		if (p11_destroy(s->tok, gens[i].handle) < 0)
			continue;
	/* What another connection keeps of this object, read without metadata, is
	 * stale from now on. The metadata is written either way: a token that fails
	 * this call fails that connection's next one too. */
	if (n == 0 && !o->destroyed)
		epoch_bump(s);
	return 0;
}

int store_meta_destroy(struct store *s, const struct store_obj *o)
{
	struct generation gens[MAX_GENERATIONS];
	size_t n = 0;
	int r = find_generations(s, o, gens, &n);

	for (size_t i = 0; r == 0 && i < n; i++)
		r = p11_destroy(s->tok, gens[i].handle);
	return r;
}

/* Whether an older relay's generation (its label says nothing) is a record, and
 * its Destroy Date: 1 for a record, 0 for a live object's metadata, or an error. */
static int old_generation(struct store *s, CK_OBJECT_HANDLE h, int64_t *ret_destroyed)
{
	struct store_meta m = { 0 };
	int r = p11_get_attr_alloc(s->tok, h, CKA_VALUE, &m.value, &m.value_len);

	if (r == 0 && (r = ttlv_decode(m.value, m.value_len, &ttlv_default_limits, &m.tree)) == 0 &&
	    (r = kmip_attrs_decode(m.tree, meta_version, &m.attrs)) == 0) {
		for (size_t i = 0; r == 0 && i < m.attrs.n; i++)
			if (m.attrs.v[i].tag == KMIP_TAG_DESTROY_DATE && m.attrs.v[i].value->type == TTLV_DATE_TIME) {
				*ret_destroyed = ttlv_long(m.attrs.v[i].value);
				r = 1;
			}
	}
	store_meta_clear(&m);
	return r;
}

void store_sweep(struct store *s, int64_t now)
{
	CK_OBJECT_CLASS cls = CKO_DATA;
	CK_ATTRIBUTE tmpl[] = {
		{ CKA_CLASS, &cls, sizeof(cls) },
	};
	CK_OBJECT_HANDLE *h = NULL;
	size_t n = 0, pl = strlen(META_LABEL), al = strlen(META_APPLICATION), dl = strlen(LABEL_DESTROYED);

	if (s->swept || s->keep_records <= 0)
		return;
	s->swept = true;
	if (p11_find_all(s->tok, tmpl, 1, &h, &n) < 0)
		return;
	for (size_t i = 0; i < n; i++) {
		char label[64] = { 0 }, app[sizeof(META_APPLICATION) + STORE_MAX_UID] = { 0 };
		CK_ATTRIBUTE a[2] = { { CKA_LABEL, label, sizeof(label) - 1 }, { CKA_APPLICATION, app, sizeof(app) - 1 } };
		int64_t destroyed = 0;
		uint8_t id[STORE_MAX_ID];
		size_t id_len;
		int kind;
		struct store_obj o;
		char *end;

		/* Another data object (one whose label or application is longer than any
		 * of ours is refused as too long for the buffer), or one destroyed
		 * meanwhile. */
		if (p11_get_attrs(s->tok, h[i], a, 2) < 0 || a[0].ulValueLen <= pl || a[0].ulValueLen >= sizeof(label) ||
		    a[1].ulValueLen <= al || a[1].ulValueLen >= sizeof(app) || memcmp(label, META_LABEL, pl) != 0 ||
		    memcmp(app, META_APPLICATION, al) != 0 ||
		    !parse_uid(app + al, a[1].ulValueLen - al, id, &id_len, &kind) || kind < 0)
			continue;
		(void)strtoull(label + pl, &end, 10);
		if (strncmp(end, LABEL_DESTROYED, dl) == 0) {
			destroyed = strtoll(end + dl, NULL, 10);
		} else if (*end == '\0') {
			/* Labelled once, so that the next sweep need not read it. */
			int rec = old_generation(s, h[i], &destroyed);
			CK_ATTRIBUTE relabel = { CKA_LABEL, label, 0 };

			if (rec < 0)
				continue;
			if (rec)
				snprintf(end, sizeof(label) - (size_t)(end - label), LABEL_DESTROYED "%" PRId64, destroyed);
			else
				snprintf(end, sizeof(label) - (size_t)(end - label), LABEL_LIVE);
			relabel.ulValueLen = strlen(label);
			if (p11_set_attrs(s->tok, h[i], &relabel, 1) < 0 || !rec)
				continue;
		} else {
			continue; /* a live object's */
		}
		if (destroyed > now - s->keep_records)
			continue;
		/* A record stands for an object that is gone; metadata whose object is
		 * there (or may be: the token did not say) is not one. */
		if (store_find_kind(s, (enum store_kind)kind, id, id_len, &o) != KR_E_P11_NOT_FOUND)
			continue;
		if (p11_destroy(s->tok, h[i]) < 0)
			continue;
	}
	free(h);
}

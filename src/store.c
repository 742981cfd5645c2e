/* SPDX-License-Identifier: BSD-3-Clause */
#include "config.h"

#include "store.h"

#include <gnutls/crypto.h>
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
#define META_LABEL "kmip-relay metadata "
#define MAX_GENERATIONS 8

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

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
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
	for (size_t i = 0; i < hex_len / 2; i++) {
		int hi = hexval(uid[2 * i]), lo = hexval(uid[2 * i + 1]);

		if (hi < 0 || lo < 0)
			return false;
		id[i] = (uint8_t)(hi << 4 | lo);
	}
	*id_len = hex_len / 2;
	return true;
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

int store_managed(struct store *s, struct store_obj **ret, size_t *ret_n)
{
	return scan_metadata(s, true, ret, ret_n);
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

int store_meta_write(struct store *s, const struct store_obj *o, const uint8_t *encoded, size_t len)
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
	snprintf(label, sizeof(label), META_LABEL "%" PRIu64, next);
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

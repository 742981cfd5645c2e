/* SPDX-License-Identifier: BSD-3-Clause */
#include "config.h"

/* Get, Get Attributes, Get Attribute List, Locate and Check: what the token holds,
 * in the encodings clients ask for. */

#include <gnutls/abstract.h>
#include <gnutls/crypto.h>
#include <gnutls/x509.h>
#include <stdlib.h>
#include <string.h>

#include "ops_objects.h"

/* What the token says about a key, with the metadata's word where it has one. */
struct key_info {
	uint32_t object_type, algorithm;
	int32_t length;
	CK_KEY_TYPE key_type;
	size_t curve; /* index into ops_curves[] for EC and EdDSA keys */
	struct kmip_text label;
	uint8_t *label_buf;
};

/* A destroyed object's record holds what the token held (see op_destroy). */
static void record_key_info(const struct store_meta *m, struct key_info *ki)
{
	const struct kmip_attr *len = ops_meta_attr(m, KMIP_TAG_CRYPTOGRAPHIC_LENGTH);
	const struct kmip_attr *name = ops_meta_attr(m, KMIP_TAG_NAME);
	const struct ttlv_item *nv = name && name->value->type == TTLV_STRUCTURE
					     ? ttlv_find(name->value, KMIP_TAG_NAME_VALUE)
					     : NULL;

	ki->algorithm = ops_meta_enum(m, KMIP_TAG_CRYPTOGRAPHIC_ALGORITHM, 0);
	if (len && len->value->type == TTLV_INTEGER)
		ki->length = ttlv_int(len->value);
	if (nv && nv->type == TTLV_TEXT_STRING)
		ki->label = (struct kmip_text){ (const char *)nv->value, nv->len };
}

static int read_key_info(struct store *st, const struct store_obj *o, const struct store_meta *m, struct key_info *ki)
{
	CK_ATTRIBUTE type = { CKA_KEY_TYPE, &ki->key_type, sizeof(ki->key_type) };
	const struct ops_symmetric *sym;
	uint8_t *buf = NULL;
	size_t len = 0;
	int r;

	/* Secret Data is kept as a generic secret key; the metadata says which it is. */
	*ki = (struct key_info){ .object_type = ops_meta_enum(m, KMIP_TAG_OBJECT_TYPE, ops_object_types[o->kind]),
				 .key_type = CK_UNAVAILABLE_INFORMATION };
	if (o->destroyed) {
		record_key_info(m, ki);
		return 0;
	}
	if (p11_get_attr_alloc(st->tok, o->handle, CKA_LABEL, &ki->label_buf, &len) == 0)
		ki->label = (struct kmip_text){ (const char *)ki->label_buf, len };
	if (o->kind == STORE_CERT || o->kind == STORE_DATA)
		return 0;
	if ((r = p11_get_attrs(st->tok, o->handle, &type, 1)) < 0)
		return r;
	switch (ki->key_type) {
	case CKK_RSA:
	case CKK_DSA:
		ki->algorithm = ki->key_type == CKK_RSA ? ALG_RSA : ALG_DSA;
		if ((r = p11_get_attr_alloc(st->tok, o->handle, ki->key_type == CKK_RSA ? CKA_MODULUS : CKA_PRIME, &buf,
					    &len)) == 0)
			ki->length = ops_bits(buf, len);
		break;
	case CKK_EC:
	case CKK_EC_EDWARDS:
		ki->algorithm = ki->key_type == CKK_EC ? ALG_ECDSA : ALG_ED25519;
		if ((r = p11_get_attr_alloc(st->tok, o->handle, CKA_EC_PARAMS, &buf, &len)) == 0 &&
		    ops_find_curve(buf, len, &ki->curve))
			ki->length = ops_curves[ki->curve].bits;
		break;
	default:
		if ((sym = ops_symmetric_by_key_type(ki->key_type))) {
			CK_ULONG vlen = 0;
			CK_ATTRIBUTE a = { CKA_VALUE_LEN, &vlen, sizeof(vlen) };

			ki->algorithm = sym->algorithm;
			if ((r = p11_get_attrs(st->tok, o->handle, &a, 1)) == 0) {
				ki->length = (int32_t)vlen * 8;
			} else if (p11_last_rv(st->tok) == CKR_ATTRIBUTE_TYPE_INVALID) {
				/* openCryptoki 3.8 gives a key made by C_CreateObject no
				 * CKA_VALUE_LEN: the length Register recorded, if any. */
				const struct kmip_attr *bits = ops_meta_attr(m, KMIP_TAG_CRYPTOGRAPHIC_LENGTH);

				if (bits && bits->value->type == TTLV_INTEGER)
					ki->length = ttlv_int(bits->value);
				r = 0;
			}
		}
		break;
	}
	free(buf);
	/* The algorithm the client named (EC or ECDSA, which HMAC) is in the metadata;
	 * Secret Data has none. */
	ki->algorithm = ops_meta_enum(m, KMIP_TAG_CRYPTOGRAPHIC_ALGORITHM, ki->algorithm);
	if (ki->object_type == OBJ_SECRET_DATA)
		ki->algorithm = ki->length = 0;
	return r;
}

static void key_info_clear(struct key_info *ki)
{
	free(ki->label_buf);
	ki->label_buf = NULL;
}

int ops_token_key(struct store *st, const struct store_obj *o, uint32_t *ret_algorithm, int32_t *ret_length)
{
	const struct store_meta none = { 0 };
	struct key_info ki;
	int r = read_key_info(st, o, &none, &ki);

	key_info_clear(&ki);
	if (r < 0)
		return r;
	*ret_algorithm = ki.algorithm;
	*ret_length = ki.length;
	return 0;
}

/* Whether an object holds key material, which has a Key Format Type. */
static bool has_key_format(const struct store_obj *o)
{
	return o->kind != STORE_CERT && o->kind != STORE_DATA;
}

/* KMIP's Sensitive, Always Sensitive, Extractable and Never Extractable (2.1
 * sections 4.3, 4.23, 4.33, 4.55), in that order: the token's flags of a private
 * or secret key; what the metadata says of a public key, which PKCS#11 gives no
 * such flags, and of a destroyed object. */
enum { PROT_SENSITIVE, PROT_ALWAYS_SENSITIVE, PROT_EXTRACTABLE, PROT_NEVER_EXTRACTABLE, N_PROT };
static const uint32_t prot_tags[N_PROT] = {
	KMIP_TAG_SENSITIVE, KMIP_TAG_ALWAYS_SENSITIVE, KMIP_TAG_EXTRACTABLE, KMIP_TAG_NEVER_EXTRACTABLE,
};

static bool meta_bool(const struct store_meta *m, uint32_t tag, bool dflt)
{
	const struct kmip_attr *a = ops_meta_attr(m, tag);

	return a && a->value->type == TTLV_BOOLEAN ? ttlv_bool(a->value) : dflt;
}

static int read_protection(struct store *st, const struct store_obj *o, const struct store_meta *m, bool ret[N_PROT])
{
	CK_BBOOL f[N_PROT] = { CK_FALSE, CK_FALSE, CK_FALSE, CK_FALSE };
	CK_ATTRIBUTE a[N_PROT] = {
		{ CKA_SENSITIVE, &f[0], sizeof(CK_BBOOL) }, { CKA_ALWAYS_SENSITIVE, &f[1], sizeof(CK_BBOOL) },
		{ CKA_EXTRACTABLE, &f[2], sizeof(CK_BBOOL) }, { CKA_NEVER_EXTRACTABLE, &f[3], sizeof(CK_BBOOL) },
	};
	int r;

	if (o->destroyed || o->kind == STORE_PUBLIC) {
		ret[PROT_SENSITIVE] = meta_bool(m, KMIP_TAG_SENSITIVE, false);
		ret[PROT_ALWAYS_SENSITIVE] = meta_bool(m, KMIP_TAG_ALWAYS_SENSITIVE, ret[PROT_SENSITIVE]);
		ret[PROT_EXTRACTABLE] = meta_bool(m, KMIP_TAG_EXTRACTABLE, true);
		ret[PROT_NEVER_EXTRACTABLE] = meta_bool(m, KMIP_TAG_NEVER_EXTRACTABLE, !ret[PROT_EXTRACTABLE]);
		return 0;
	}
	if ((r = p11_get_attrs(st->tok, o->handle, a, N_PROT)) < 0)
		return r;
	for (size_t i = 0; i < N_PROT; i++)
		ret[i] = f[i] == CK_TRUE;
	return 0;
}

/* Every attribute of an object as one KMIP 2.x Attributes structure: what the token
 * holds, then the metadata. */
static int all_attributes(struct store *st, const struct store_obj *o, const struct store_meta *m, uint8_t **ret,
			  size_t *ret_len)
{
	static const uint32_t computed[] = {
		KMIP_TAG_UNIQUE_IDENTIFIER, KMIP_TAG_OBJECT_TYPE, KMIP_TAG_CRYPTOGRAPHIC_ALGORITHM,
		KMIP_TAG_CRYPTOGRAPHIC_LENGTH, KMIP_TAG_NAME, KMIP_TAG_STATE, KMIP_TAG_KEY_FORMAT_TYPE,
		KMIP_TAG_SENSITIVE, KMIP_TAG_ALWAYS_SENSITIVE, KMIP_TAG_EXTRACTABLE, KMIP_TAG_NEVER_EXTRACTABLE,
	};
	bool prot[N_PROT];
	struct key_info ki;
	struct ttlv_writer w;
	int r = read_key_info(st, o, m, &ki);

	if (r < 0) {
		key_info_clear(&ki);
		return r;
	}
	ttlv_writer_init(&w, TTLV_DEFAULT_MAX_SIZE);
	ttlv_begin(&w, KMIP_TAG_ATTRIBUTES);
	ops_put_uid(&w, KMIP_TAG_UNIQUE_IDENTIFIER, o->uid);
	ttlv_put_enum(&w, KMIP_TAG_OBJECT_TYPE, ki.object_type);
	if (ki.algorithm)
		ttlv_put_enum(&w, KMIP_TAG_CRYPTOGRAPHIC_ALGORITHM, ki.algorithm);
	if (ki.length)
		ttlv_put_int(&w, KMIP_TAG_CRYPTOGRAPHIC_LENGTH, ki.length);
	if (ki.label.len) {
		ttlv_begin(&w, KMIP_TAG_NAME);
		ttlv_put_text(&w, KMIP_TAG_NAME_VALUE, ki.label.ptr, ki.label.len);
		ttlv_put_enum(&w, KMIP_TAG_NAME_TYPE, NAME_UNINTERPRETED);
		ttlv_end(&w);
	}
	ttlv_put_enum(&w, KMIP_TAG_STATE, ops_state(o, m));
	if (has_key_format(o))
		ttlv_put_enum(&w, KMIP_TAG_KEY_FORMAT_TYPE,
			      ops_meta_enum(m, KMIP_TAG_KEY_FORMAT_TYPE, ops_default_format(o->kind, ki.key_type)));
	/* A token that lacks the flags (PKCS#11 before 2.0) leaves them out. */
	if (has_key_format(o) && read_protection(st, o, m, prot) == 0)
		for (size_t i = 0; i < N_PROT; i++)
			ttlv_put_bool(&w, prot_tags[i], prot[i]);
	/* A key pair made elsewhere has no Link in metadata; the shared CKA_ID is its link. */
	if (!o->destroyed && !ops_meta_attr(m, KMIP_TAG_LINK) && (o->kind == STORE_PUBLIC || o->kind == STORE_PRIVATE)) {
		enum store_kind other = o->kind == STORE_PUBLIC ? STORE_PRIVATE : STORE_PUBLIC;
		struct store_obj half;

		if (store_find_kind(st, other, o->id, o->id_len, &half) == 0)
			ops_put_link(&w, other == STORE_PUBLIC ? LINK_PUBLIC_KEY : LINK_PRIVATE_KEY, half.uid);
	}
	for (size_t i = 0; i < m->attrs.n; i++) {
		const struct kmip_attr *a = &m->attrs.v[i];
		bool skip = false;

		for (size_t k = 0; k < sizeof(computed) / sizeof(computed[0]); k++)
			skip |= a->tag == computed[k];
		if (!skip)
			ops_put_attr(&w, a);
	}
	ttlv_end(&w);
	key_info_clear(&ki);
	return ttlv_writer_finish(&w, ret, ret_len);
}

int ops_load_attrs(struct store *st, const struct store_obj *o, const struct store_meta *m, struct store_meta *ret)
{
	struct store_meta all = { .found = true };
	int r;

	if ((r = all_attributes(st, o, m, &all.value, &all.value_len)) == 0 &&
	    (r = ttlv_decode(all.value, all.value_len, &ttlv_default_limits, &all.tree)) == 0)
		r = kmip_attrs_decode(all.tree, ops_meta_version, &all.attrs);
	if (r < 0) {
		store_meta_clear(&all);
		return r;
	}
	*ret = all;
	return 0;
}

/* The object the request names, or a destroyed one's record, with all its
 * attributes. */
static bool object_and_attrs(struct ops_ctx *ctx, struct store_obj *o, struct store_meta *oa, struct ops_result *res)
{
	struct store *st;
	struct store_meta m = { 0 };
	int r;

	if (!ops_target(ctx, &st, o, res))
		return false;
	if ((r = ops_meta_read(st, o, true, &m)) == 0)
		r = ops_load_attrs(st, o, &m, oa);
	store_meta_clear(&m);
	if (r < 0) {
		ops_fail_token(st, res, r);
		return false;
	}
	return true;
}

/* Whether a 1.x Attribute Name names a: "x-owner" for a vendor attribute. */
static bool name_is(const struct kmip_attr *a, const uint8_t *name, size_t len)
{
	if (a->tag)
		return kmip_tag_by_name((const char *)name, len) == a->tag;
	return len == a->vendor.len + 1 + a->name.len && memcmp(name, a->vendor.ptr, a->vendor.len) == 0 &&
	       name[a->vendor.len] == '-' && memcmp(name + a->vendor.len + 1, a->name.ptr, a->name.len) == 0;
}

/* Whether a 2.x Attribute Reference names a: a tag, or a vendor attribute's
 * Vendor Identification and Attribute Name. */
static bool reference_is(const struct kmip_attr *a, const struct ttlv_item *ref)
{
	const struct ttlv_item *v, *n;

	if (ref->type == TTLV_ENUMERATION)
		return a->tag && ttlv_enum(ref) == a->tag;
	if (a->tag || ref->type != TTLV_STRUCTURE || !(v = ttlv_find(ref, KMIP_TAG_VENDOR_IDENTIFICATION)) ||
	    !(n = ttlv_find(ref, KMIP_TAG_ATTRIBUTE_NAME)))
		return false;
	return v->len == a->vendor.len && n->len == a->name.len && memcmp(v->value, a->vendor.ptr, v->len) == 0 &&
	       memcmp(n->value, a->name.ptr, n->len) == 0;
}

/* Whether a request asks for an attribute: by 1.x Attribute Name or 2.x Attribute
 * Reference; asking for none means all. */
static bool wanted(const struct ttlv_item *payload, const struct kmip_attr *a)
{
	bool asked = false;

	for (const struct ttlv_item *c = payload->child; c; c = c->next) {
		if (c->tag == KMIP_TAG_ATTRIBUTE_NAME && c->type == TTLV_TEXT_STRING) {
			asked = true;
			if (name_is(a, c->value, c->len))
				return true;
		} else if (c->tag == KMIP_TAG_ATTRIBUTE_REFERENCE) {
			asked = true;
			if (reference_is(a, c))
				return true;
		}
	}
	return !asked;
}

/* Whether PyKMIP 0.10 can read an attribute in a Get Attributes response: those
 * its AttributeValueFactory makes a value for (not Link, Usage Limits,
 * Cryptographic Domain Parameters, Original Creation Date, Always Sensitive, Key
 * Format Type, Random Number Generator...), and x- custom attributes by their 1.x
 * name. One it cannot read fails the whole response. */
static bool pykmip_reads(const struct kmip_attr *a, struct kmip_version v)
{
	static const uint32_t tags[] = {
		KMIP_TAG_UNIQUE_IDENTIFIER, KMIP_TAG_NAME, KMIP_TAG_OBJECT_TYPE, KMIP_TAG_CRYPTOGRAPHIC_ALGORITHM,
		KMIP_TAG_CRYPTOGRAPHIC_LENGTH, KMIP_TAG_CRYPTOGRAPHIC_PARAMETERS, KMIP_TAG_CERTIFICATE_TYPE,
		KMIP_TAG_CERTIFICATE_LENGTH, KMIP_TAG_DIGEST, KMIP_TAG_OPERATION_POLICY_NAME,
		KMIP_TAG_CRYPTOGRAPHIC_USAGE_MASK, KMIP_TAG_LEASE_TIME, KMIP_TAG_STATE, KMIP_TAG_INITIAL_DATE,
		KMIP_TAG_ACTIVATION_DATE, KMIP_TAG_PROCESS_START_DATE, KMIP_TAG_PROTECT_STOP_DATE,
		KMIP_TAG_DEACTIVATION_DATE, KMIP_TAG_DESTROY_DATE, KMIP_TAG_COMPROMISE_OCCURRENCE_DATE,
		KMIP_TAG_COMPROMISE_DATE, KMIP_TAG_ARCHIVE_DATE, KMIP_TAG_OBJECT_GROUP, KMIP_TAG_FRESH,
		KMIP_TAG_APPLICATION_SPECIFIC_INFORMATION, KMIP_TAG_CONTACT_INFORMATION, KMIP_TAG_LAST_CHANGE_DATE,
		KMIP_TAG_SENSITIVE,
	};

	if (!a->tag)
		return v.major < 2;
	for (size_t i = 0; i < sizeof(tags) / sizeof(tags[0]); i++)
		if (a->tag == tags[i])
			return true;
	return false;
}

/* Whether a request names no attribute: it asks for all. */
static bool asks_all(const struct ttlv_item *payload)
{
	for (const struct ttlv_item *c = payload->child; c; c = c->next)
		if ((c->tag == KMIP_TAG_ATTRIBUTE_NAME && c->type == TTLV_TEXT_STRING) ||
		    c->tag == KMIP_TAG_ATTRIBUTE_REFERENCE)
			return false;
	return true;
}

void op_get_attributes(struct ops_ctx *ctx, const struct ttlv_item *payload, struct ttlv_writer *w,
		       struct ops_result *res)
{
	struct store_meta oa = { 0 };
	struct kmip_attr chosen[64];
	struct kmip_attrs out = { chosen, 0 };
	struct store_obj o;
	/* clients[].attributes_compat "pykmip": "all" is all that PyKMIP can read. */
	bool pykmip = ctx->client && ctx->client->pykmip_attributes && asks_all(payload);

	if (!object_and_attrs(ctx, &o, &oa, res))
		return;
	/* The encoder would leave out what the version lacks; chosen here, it does not
	 * take a place among the 64. */
	for (size_t i = 0; i < oa.attrs.n && out.n < 64; i++)
		if (kmip_attr_in_version(&oa.attrs.v[i], ctx->version) && wanted(payload, &oa.attrs.v[i]) &&
		    (!pykmip || pykmip_reads(&oa.attrs.v[i], ctx->version)))
			chosen[out.n++] = oa.attrs.v[i];
	ttlv_begin(w, KMIP_TAG_RESPONSE_PAYLOAD);
	ops_put_uid(w, KMIP_TAG_UNIQUE_IDENTIFIER, o.uid);
	kmip_attrs_encode(w, ctx->version.major >= 2 ? KMIP_TAG_ATTRIBUTES : 0, &out, ctx->version);
	ttlv_end(w);
	store_meta_clear(&oa);
}

void op_get_attribute_list(struct ops_ctx *ctx, const struct ttlv_item *payload, struct ttlv_writer *w,
			   struct ops_result *res)
{
	struct store_meta oa = { 0 };
	struct store_obj o;

	(void)payload; /* the gate resolved what it names */
	if (!object_and_attrs(ctx, &o, &oa, res))
		return;
	ttlv_begin(w, KMIP_TAG_RESPONSE_PAYLOAD);
	ops_put_uid(w, KMIP_TAG_UNIQUE_IDENTIFIER, o.uid);
	for (size_t i = 0; i < oa.attrs.n; i++) {
		const struct kmip_attr *a = &oa.attrs.v[i];
		const char *name = a->tag ? kmip_tag_name(a->tag) : NULL;
		char custom[256];

		if (!kmip_attr_in_version(a, ctx->version))
			continue;
		if (ctx->version.major >= 2 && a->tag) {
			ttlv_put_enum(w, KMIP_TAG_ATTRIBUTE_REFERENCE, a->tag);
		} else if (ctx->version.major >= 2) {
			ttlv_begin(w, KMIP_TAG_ATTRIBUTE_REFERENCE);
			ttlv_put_text(w, KMIP_TAG_VENDOR_IDENTIFICATION, a->vendor.ptr, a->vendor.len);
			ttlv_put_text(w, KMIP_TAG_ATTRIBUTE_NAME, a->name.ptr, a->name.len);
			ttlv_end(w);
		} else if (name) {
			ttlv_put_text(w, KMIP_TAG_ATTRIBUTE_NAME, name, strlen(name));
		} else if (a->vendor.len + 1 + a->name.len <= sizeof(custom)) { /* "x-owner" */
			memcpy(custom, a->vendor.ptr, a->vendor.len);
			custom[a->vendor.len] = '-';
			memcpy(custom + a->vendor.len + 1, a->name.ptr, a->name.len);
			ttlv_put_text(w, KMIP_TAG_ATTRIBUTE_NAME, custom, a->vendor.len + 1 + a->name.len);
		}
	}
	ttlv_end(w);
	store_meta_clear(&oa);
}

/* Key material of a public key in PKCS#1, X.509 (SubjectPublicKeyInfo) or, for
 * keys other than RSA, Raw holding a SubjectPublicKeyInfo. */
static int public_key_material(struct store *st, const struct store_obj *o, const struct key_info *ki,
			       uint32_t format, struct ttlv_writer *w)
{
	gnutls_datum_t n, e, der = { 0 };
	gnutls_pubkey_t pub = NULL;
	uint8_t *a = NULL, *b = NULL;
	size_t alen = 0, blen = 0;
	int r;

	if (ki->key_type == CKK_RSA && format == FMT_PKCS1) {
		if ((r = p11_get_attr_alloc(st->tok, o->handle, CKA_MODULUS, &a, &alen)) < 0 ||
		    (r = p11_get_attr_alloc(st->tok, o->handle, CKA_PUBLIC_EXPONENT, &b, &blen)) < 0)
			goto out;
		/* RSAPublicKey is SEQUENCE { INTEGER n, INTEGER e }: the same shape GnuTLS
		 * writes for a DSA/ECDSA signature value. */
		n = (gnutls_datum_t){ a, (unsigned)alen };
		e = (gnutls_datum_t){ b, (unsigned)blen };
		r = gnutls_encode_rs_value(&der, &n, &e) < 0 ? KR_E_NOMEM : 0;
	} else if (format == FMT_X509 || (format == FMT_RAW && ki->key_type != CKK_RSA)) {
		/* A SubjectPublicKeyInfo; EC keys as Raw too, which is what Cascade reads. */
		if ((r = ops_gnutls_pubkey(st, o, &pub)) == 0 && gnutls_pubkey_export2(pub, GNUTLS_X509_FMT_DER, &der) < 0)
			r = KR_E_P11_FAILED;
	} else {
		r = KR_E_KMIP_FORMAT;
	}
	if (r == 0)
		ttlv_put_bytes(w, KMIP_TAG_KEY_MATERIAL, der.data, der.size);
out:
	gnutls_free(der.data);
	if (pub)
		gnutls_pubkey_deinit(pub);
	free(a);
	free(b);
	return r;
}

/* A symmetric key's bytes, if the token lets them out. */
static int secret_key_material(struct store *st, const struct store_obj *o, uint32_t format, struct ttlv_writer *w)
{
	uint8_t *value = NULL;
	size_t len = 0;
	int r;

	if (format != FMT_RAW && format != FMT_TRANSPARENT_SYMMETRIC)
		return KR_E_KMIP_FORMAT;
	if ((r = p11_get_attr_alloc(st->tok, o->handle, CKA_VALUE, &value, &len)) < 0)
		return r;
	if (format == FMT_RAW) {
		ttlv_put_bytes(w, KMIP_TAG_KEY_MATERIAL, value, len);
	} else {
		ttlv_begin(w, KMIP_TAG_KEY_MATERIAL);
		ttlv_put_bytes(w, KMIP_TAG_KEY, value, len);
		ttlv_end(w);
	}
	explicit_bzero(value, len);
	free(value);
	return 0;
}

/* A Transparent key's fields, each a token attribute; a field the token holds
 * empty (an RSA key registered without its CRT values) is left out. */
static int transparent_material(struct store *st, const struct store_obj *o, const struct ops_transparent *t,
				struct ttlv_writer *w)
{
	int r = 0;

	ttlv_begin(w, KMIP_TAG_KEY_MATERIAL);
	for (size_t i = 0; r == 0 && i < t->n_fields; i++) {
		uint8_t *v = NULL;
		size_t len = 0;

		if ((r = p11_get_attr_alloc(st->tok, o->handle, t->fields[i].attribute, &v, &len)) == 0 && len)
			ttlv_put_bigint(w, t->fields[i].tag, v, len);
		if (v)
			explicit_bzero(v, len);
		free(v);
	}
	ttlv_end(w);
	return r;
}

/* A private key's components, exported by GnuTLS as PKCS#8 or PKCS#1/ECPrivateKey.
 * An EC key's public point comes from its public half. */
static int private_key_material(struct store *st, const struct store_obj *o, const struct key_info *ki,
				uint32_t format, struct ttlv_writer *w)
{
	gnutls_datum_t d[8]; /* from p11_get_attr_alloc: malloc */
	size_t n = 0;
	gnutls_x509_privkey_t key = NULL;
	gnutls_datum_t der = { 0 };
	uint8_t *buf;
	size_t len;
	int r = 0;

	if (format != FMT_PKCS8 && format != FMT_PKCS1 && format != FMT_EC_PRIVATE_KEY)
		return KR_E_KMIP_FORMAT;
	if (gnutls_x509_privkey_init(&key) < 0)
		return KR_E_NOMEM;
	if (ki->key_type == CKK_RSA && format != FMT_EC_PRIVATE_KEY) {
		for (size_t i = 0; r == 0 && i < 8; i++)
			if ((r = p11_get_attr_alloc(st->tok, o->handle, ops_rsa_private_attributes[i], &buf, &len)) == 0)
				d[n++] = (gnutls_datum_t){ buf, (unsigned)len };
		if (r == 0 && gnutls_x509_privkey_import_rsa_raw2(key, &d[0], &d[1], &d[2], &d[3], &d[4],
								  &d[5], &d[6], &d[7]) < 0)
			r = KR_E_KMIP_FORMAT;
	} else if (ki->key_type == CKK_EC && format != FMT_PKCS1) {
		struct store_obj pub;
		gnutls_datum_t x = { 0 }, y = { 0 }, params, point;
		gnutls_pubkey_t pk = NULL;
		gnutls_ecc_curve_t curve = GNUTLS_ECC_CURVE_INVALID;

		if ((r = p11_get_attr_alloc(st->tok, o->handle, CKA_VALUE, &buf, &len)) == 0)
			d[n++] = (gnutls_datum_t){ buf, (unsigned)len };
		if (r == 0 && (r = store_find_kind(st, STORE_PUBLIC, o->id, o->id_len, &pub)) == 0 &&
		    (r = p11_get_attr_alloc(st->tok, pub.handle, CKA_EC_PARAMS, &buf, &len)) == 0)
			d[n++] = (gnutls_datum_t){ buf, (unsigned)len };
		if (r == 0 && (r = p11_get_attr_alloc(st->tok, pub.handle, CKA_EC_POINT, &buf, &len)) == 0)
			d[n++] = (gnutls_datum_t){ buf, (unsigned)len };
		if (r == 0) {
			params = d[1];
			point = d[2];
			if (gnutls_pubkey_init(&pk) < 0 || gnutls_pubkey_import_ecc_x962(pk, &params, &point) < 0 ||
			    gnutls_pubkey_export_ecc_raw(pk, &curve, &x, &y) < 0 ||
			    gnutls_x509_privkey_import_ecc_raw(key, curve, &x, &y, &d[0]) < 0)
				r = KR_E_KMIP_FORMAT;
		}
		gnutls_free(x.data);
		gnutls_free(y.data);
		if (pk)
			gnutls_pubkey_deinit(pk);
	} else {
		r = KR_E_KMIP_FORMAT;
	}
	if (r == 0 && (format == FMT_PKCS8 ? gnutls_x509_privkey_export2_pkcs8(key, GNUTLS_X509_FMT_DER, NULL,
										 GNUTLS_PKCS_PLAIN, &der)
					   : gnutls_x509_privkey_export2(key, GNUTLS_X509_FMT_DER, &der)) < 0)
		r = KR_E_KMIP_FORMAT;
	if (r == 0)
		ttlv_put_bytes(w, KMIP_TAG_KEY_MATERIAL, der.data, der.size);
	if (der.data)
		gnutls_memset(der.data, 0, der.size);
	gnutls_free(der.data);
	for (size_t i = 0; i < n; i++) { /* from malloc, not gnutls_malloc */
		explicit_bzero(d[i].data, d[i].size);
		free(d[i].data);
	}
	gnutls_x509_privkey_deinit(key);
	return r;
}

/* A key's material in a format, as Get writes it. */
static int key_material(struct store *st, const struct store_obj *o, const struct key_info *ki, uint32_t format,
			struct ttlv_writer *w)
{
	const struct ops_transparent *t = ops_transparent(format);

	if (t)
		return t->kind == o->kind && t->key_type == ki->key_type ? transparent_material(st, o, t, w)
									 : KR_E_KMIP_FORMAT;
	switch (o->kind) {
	case STORE_PUBLIC:
		return public_key_material(st, o, ki, format, w);
	case STORE_SECRET:
		return secret_key_material(st, o, format, w);
	case STORE_PRIVATE:
		return private_key_material(st, o, ki, format, w);
	default:
		return KR_E_KMIP_FORMAT;
	}
}

void ops_put_token_digest(struct ttlv_writer *w, struct store *st, const struct store_obj *o, uint32_t format)
{
	const struct store_meta none = { 0 };
	struct ttlv_writer enc;
	struct ttlv_item *material = NULL;
	struct key_info ki;
	uint8_t *buf = NULL;
	size_t len = 0;

	ttlv_writer_init(&enc, TTLV_DEFAULT_MAX_SIZE);
	if (read_key_info(st, o, &none, &ki) == 0 && key_material(st, o, &ki, format, &enc) == 0 &&
	    ttlv_writer_finish(&enc, &buf, &len) == 0 && ttlv_decode(buf, len, &ttlv_default_limits, &material) == 0)
		ops_put_material_digest(w, material, format);
	ttlv_free(material);
	ttlv_writer_clear(&enc);
	ttlv_buf_free(buf, len);
	key_info_clear(&ki);
}

/* A certificate is returned as it was registered. */
static void get_certificate(struct store *st, const struct store_obj *o, struct ttlv_writer *w, struct ops_result *res)
{
	uint8_t *der = NULL;
	size_t len = 0;
	int r = p11_get_attr_alloc(st->tok, o->handle, CKA_VALUE, &der, &len);

	if (r < 0) {
		ops_fail_token(st, res, r);
		return;
	}
	ttlv_begin(w, KMIP_TAG_RESPONSE_PAYLOAD);
	ttlv_put_enum(w, KMIP_TAG_OBJECT_TYPE, OBJ_CERTIFICATE);
	ops_put_uid(w, KMIP_TAG_UNIQUE_IDENTIFIER, o->uid);
	ttlv_begin(w, KMIP_TAG_CERTIFICATE);
	ttlv_put_enum(w, KMIP_TAG_CERTIFICATE_TYPE, CERT_X509);
	ttlv_put_bytes(w, KMIP_TAG_CERTIFICATE_VALUE, der, len);
	ttlv_end(w);
	ttlv_end(w);
	free(der);
}

/* Secret Data and Opaque Objects come back as they were registered, if the token
 * lets their bytes out. Secret Data's bytes are the same in Raw and Opaque. */
static void get_data(struct store *st, const struct store_obj *o, const struct store_meta *m, uint32_t object_type,
		     uint32_t format, struct ttlv_writer *w, struct ops_result *res)
{
	uint8_t *value = NULL;
	size_t len = 0;
	int r;

	if ((r = p11_get_attr_alloc(st->tok, o->handle, CKA_VALUE, &value, &len)) < 0) {
		ops_fail_token(st, res, r);
		return;
	}
	ttlv_begin(w, KMIP_TAG_RESPONSE_PAYLOAD);
	ttlv_put_enum(w, KMIP_TAG_OBJECT_TYPE, object_type);
	ops_put_uid(w, KMIP_TAG_UNIQUE_IDENTIFIER, o->uid);
	if (object_type == OBJ_OPAQUE) {
		ttlv_begin(w, KMIP_TAG_OPAQUE_OBJECT);
		ttlv_put_enum(w, KMIP_TAG_OPAQUE_DATA_TYPE, ops_meta_enum(m, KMIP_TAG_OPAQUE_DATA_TYPE, 0x80000000));
		ttlv_put_bytes(w, KMIP_TAG_OPAQUE_DATA_VALUE, value, len);
	} else {
		ttlv_begin(w, KMIP_TAG_SECRET_DATA);
		ttlv_put_enum(w, KMIP_TAG_SECRET_DATA_TYPE, ops_meta_enum(m, KMIP_TAG_SECRET_DATA_TYPE, 1 /* Password */));
		ttlv_begin(w, KMIP_TAG_KEY_BLOCK);
		ttlv_put_enum(w, KMIP_TAG_KEY_FORMAT_TYPE, format);
		ttlv_begin(w, KMIP_TAG_KEY_VALUE);
		ttlv_put_bytes(w, KMIP_TAG_KEY_MATERIAL, value, len);
		ttlv_end(w);
		ttlv_end(w);
	}
	ttlv_end(w);
	ttlv_end(w);
	explicit_bzero(value, len);
	free(value);
}

/* Whether an object of this kind ever comes in a format: a request for another is
 * refused before the key is looked at. */
static bool kind_has_format(const struct store_obj *o, uint32_t object_type, uint32_t format)
{
	const struct ops_transparent *t = ops_transparent(format);

	switch (o->kind) {
	case STORE_SECRET:
		if (object_type == OBJ_SECRET_DATA) /* the same bytes either way */
			return format == FMT_RAW || format == FMT_OPAQUE;
		return format == FMT_RAW || format == FMT_TRANSPARENT_SYMMETRIC;
	case STORE_PUBLIC:
		return format == FMT_PKCS1 || format == FMT_X509 || format == FMT_RAW || (t && t->kind == STORE_PUBLIC);
	case STORE_PRIVATE:
		return format == FMT_PKCS8 || format == FMT_PKCS1 || format == FMT_EC_PRIVATE_KEY ||
		       (t && t->kind == STORE_PRIVATE);
	default:
		return true;
	}
}

/* Whether a key's value may leave: a Sensitive key says so whatever format was asked
 * for, and so does one that is not Extractable. */
static bool may_export(struct store *st, const struct store_obj *o, const struct store_meta *m,
		       struct ops_result *res)
{
	bool prot[N_PROT];
	int r;

	if (!has_key_format(o))
		return true;
	if ((r = read_protection(st, o, m, prot)) < 0) {
		ops_fail_token(st, res, r);
		return false;
	}
	if (prot[PROT_SENSITIVE])
		ops_fail(res, KMIP_REASON_SENSITIVE, "the key is sensitive: its value does not leave the token");
	else if (!prot[PROT_EXTRACTABLE])
		ops_fail(res, KMIP_REASON_NOT_EXTRACTABLE, "the key is not extractable");
	return !prot[PROT_SENSITIVE] && prot[PROT_EXTRACTABLE];
}

/* Fresh turns false once the object has been served (KMIP 2.1 section 4.24). Only
 * an object registered with a Fresh attribute has one: giving every object one
 * would make every first Get a metadata write, and a read-only client's Get a
 * change to the token. */
static void put_served(struct ttlv_writer *w, const void *arg)
{
	(void)arg;
	ttlv_put_bool(w, KMIP_TAG_FRESH, false);
}

static int mark_served(struct store *st, const struct store_obj *o)
{
	static const uint32_t fresh[] = { KMIP_TAG_FRESH };
	struct store_meta m = { 0 };
	int lock = -1;
	int r = store_lock(st, &lock);

	if (r == 0 && (r = ops_meta_read(st, o, true, &m)) == 0 && meta_bool(&m, KMIP_TAG_FRESH, false))
		r = ops_meta_rewrite(st, o, &m, fresh, 1, put_served, NULL);
	store_meta_clear(&m);
	store_unlock(lock);
	return r;
}

/* A key in a Key Block. */
static void get_key(struct store *st, const struct store_obj *o, const struct key_info *ki, uint32_t format,
		    struct ttlv_writer *w, struct ops_result *res)
{
	int r;

	ttlv_begin(w, KMIP_TAG_RESPONSE_PAYLOAD);
	ttlv_put_enum(w, KMIP_TAG_OBJECT_TYPE, ki->object_type);
	ops_put_uid(w, KMIP_TAG_UNIQUE_IDENTIFIER, o->uid);
	ttlv_begin(w, ops_object_tags[o->kind]);
	ttlv_begin(w, KMIP_TAG_KEY_BLOCK);
	ttlv_put_enum(w, KMIP_TAG_KEY_FORMAT_TYPE, format);
	ttlv_begin(w, KMIP_TAG_KEY_VALUE);
	r = key_material(st, o, ki, format, w);
	ttlv_end(w);
	ttlv_put_enum(w, KMIP_TAG_CRYPTOGRAPHIC_ALGORITHM, ki->algorithm);
	ttlv_put_int(w, KMIP_TAG_CRYPTOGRAPHIC_LENGTH, ki->length);
	ttlv_end(w);
	ttlv_end(w);
	ttlv_end(w);
	if (r == KR_E_KMIP_FORMAT)
		ops_fail(res, KMIP_REASON_KEY_FORMAT_TYPE_NOT_SUPPORTED, "this key cannot be given in that format");
	else if (r < 0)
		ops_fail_token(st, res, r);
}

/* Get: without a Key Format Type, the object comes in the one it was registered in
 * (or, made by the relay, the one its Key Format Type attribute names). */
void op_get(struct ops_ctx *ctx, const struct ttlv_item *payload, struct ttlv_writer *w, struct ops_result *res)
{
	const struct ttlv_item *fmt = ttlv_find(payload, KMIP_TAG_KEY_FORMAT_TYPE);
	struct store *st;
	struct store_meta m = { 0 };
	struct key_info ki = { 0 };
	struct store_obj o;
	uint32_t format;
	int r;

	if (!ops_target(ctx, &st, &o, res))
		return;
	if (ttlv_find(payload, KMIP_TAG_KEY_WRAPPING_SPECIFICATION)) {
		ops_fail(res, KMIP_REASON_FEATURE_NOT_SUPPORTED, "key wrapping is not supported");
		return;
	}
	if (fmt && fmt->type != TTLV_ENUMERATION) {
		ops_fail(res, KMIP_REASON_INVALID_FIELD, "Key Format Type must be an Enumeration");
		return;
	}
	if ((r = ops_meta_read(st, &o, false, &m)) < 0 || (r = read_key_info(st, &o, &m, &ki)) < 0) {
		ops_fail_token(st, res, r);
		goto out;
	}
	format = fmt ? ttlv_enum(fmt)
		     : ops_meta_enum(&m, KMIP_TAG_KEY_FORMAT_TYPE, ops_default_format(o.kind, ki.key_type));
	if (!kind_has_format(&o, ki.object_type, format)) {
		ops_fail(res, KMIP_REASON_KEY_FORMAT_TYPE_NOT_SUPPORTED, "this object does not come in that format");
		goto out;
	}
	if (!may_export(st, &o, &m, res))
		goto out;
	if (o.kind == STORE_CERT)
		get_certificate(st, &o, w, res);
	else if (o.kind == STORE_DATA || ki.object_type == OBJ_SECRET_DATA)
		get_data(st, &o, &m, ki.object_type, format, w, res);
	else
		get_key(st, &o, &ki, format, w, res);
	/* Served only if it is on record that it was. */
	if (!res->reason && meta_bool(&m, KMIP_TAG_FRESH, false) && (r = mark_served(st, &o)) < 0)
		ops_fail_token(st, res, r);
out:
	key_info_clear(&ki);
	store_meta_clear(&m);
}

/* Locate: the token filters what a template can say (class, label, CKA_ID); the
 * relay filters the rest - first what the client may see, then the attributes -
 * over every candidate, so that no cap hides one client's objects behind
 * another's; Maximum Items and Offset Items page through what is left. Destroyed
 * objects' records are searched only if the Storage Status Mask asks for them
 * (KMIP 2.1 section 6.1.27). */
#define LOCATE_MAX_DATES 4
enum { STORAGE_ONLINE = 1, STORAGE_DESTROYED = 4 };

/* A date attribute given once must match; given twice, it is a range. */
struct locate_date {
	uint32_t tag;
	int64_t from, to;
	bool range;
};

struct locate_query {
	int kind;            /* -1: any key */
	struct kmip_text name;
	struct kmip_text link_uid; /* a Link names the other half of a key pair */
	bool has_algorithm, has_length, has_state;
	uint32_t algorithm, state, object_type;
	int32_t length;
	struct locate_date dates[LOCATE_MAX_DATES];
	size_t n_dates;
};

static bool read_locate_date(const struct kmip_attr *a, struct locate_query *q, struct ops_result *res)
{
	int64_t t = ttlv_long(a->value);

	for (size_t i = 0; i < q->n_dates; i++) {
		if (q->dates[i].tag != a->tag)
			continue;
		if (q->dates[i].range) {
			ops_fail(res, KMIP_REASON_INVALID_FIELD, "a date attribute takes one value, or two for a range");
			return false;
		}
		q->dates[i].range = true;
		if (t < q->dates[i].from)
			q->dates[i].from = t;
		else
			q->dates[i].to = t;
		return true;
	}
	if (q->n_dates == LOCATE_MAX_DATES) {
		ops_fail(res, KMIP_REASON_SERVER_LIMIT_EXCEEDED, "too many date attributes");
		return false;
	}
	q->dates[q->n_dates++] = (struct locate_date){ a->tag, t, t, false };
	return true;
}

static bool read_locate_attr(const struct kmip_attr *a, struct locate_query *q, struct ops_result *res)
{
	const struct ttlv_item *v = a->value;

	switch (a->tag) {
	case KMIP_TAG_OBJECT_TYPE:
		q->kind = -2; /* a type this store does not hold */
		q->object_type = v->type == TTLV_ENUMERATION ? ttlv_enum(v) : 0;
		for (int k = 0; k < STORE_N_KINDS; k++)
			if (ops_object_types[k] == q->object_type)
				q->kind = k;
		if (q->object_type == OBJ_SECRET_DATA)
			q->kind = STORE_SECRET; /* told apart by metadata */
		return true;
	case KMIP_TAG_NAME: {
		const struct ttlv_item *nv = v->type == TTLV_STRUCTURE ? ttlv_find(v, KMIP_TAG_NAME_VALUE) : NULL;

		if (nv && nv->type == TTLV_TEXT_STRING) {
			q->name = (struct kmip_text){ (const char *)nv->value, nv->len };
			return true;
		}
		break;
	}
	case KMIP_TAG_LINK: {
		const struct ttlv_item *type = v->type == TTLV_STRUCTURE ? ttlv_find(v, KMIP_TAG_LINK_TYPE) : NULL;
		const struct ttlv_item *uid = v->type == TTLV_STRUCTURE ? ttlv_find(v, KMIP_TAG_LINKED_OBJECT_IDENTIFIER) : NULL;

		if (!type || !uid || type->type != TTLV_ENUMERATION || uid->type != TTLV_TEXT_STRING)
			break;
		/* The relay links the halves of a pair, which share a CKA_ID: the object
		 * linked to a public key is its private half, and the other way round. */
		if (ttlv_enum(type) == LINK_PUBLIC_KEY)
			q->kind = STORE_PRIVATE;
		else if (ttlv_enum(type) == LINK_PRIVATE_KEY)
			q->kind = STORE_PUBLIC;
		else
			q->kind = -2;
		q->link_uid = (struct kmip_text){ (const char *)uid->value, uid->len };
		return true;
	}
	case KMIP_TAG_CRYPTOGRAPHIC_ALGORITHM:
		q->has_algorithm = v->type == TTLV_ENUMERATION;
		q->algorithm = q->has_algorithm ? ttlv_enum(v) : 0;
		return q->has_algorithm || (ops_fail(res, KMIP_REASON_INVALID_FIELD, "bad algorithm"), false);
	case KMIP_TAG_CRYPTOGRAPHIC_LENGTH:
		q->has_length = v->type == TTLV_INTEGER;
		q->length = q->has_length ? ttlv_int(v) : 0;
		return q->has_length || (ops_fail(res, KMIP_REASON_INVALID_FIELD, "bad length"), false);
	case KMIP_TAG_STATE:
		q->has_state = v->type == TTLV_ENUMERATION;
		q->state = q->has_state ? ttlv_enum(v) : 0;
		return q->has_state || (ops_fail(res, KMIP_REASON_INVALID_FIELD, "bad state"), false);
	default:
		if (a->tag && v->type == TTLV_DATE_TIME)
			return read_locate_date(a, q, res);
		ops_fail(res, KMIP_REASON_FEATURE_NOT_SUPPORTED, "Locate filters by Object Type, Name, Link, "
								  "Cryptographic Algorithm, Cryptographic Length, State "
								  "and dates");
		return false;
	}
	ops_fail(res, KMIP_REASON_INVALID_FIELD, "malformed Name or Link");
	return false;
}

static bool algorithm_matches(uint32_t want, uint32_t have)
{
	/* EC and ECDSA name the same keys. */
	if ((want == ALG_EC || want == ALG_ECDSA) && (have == ALG_EC || have == ALG_ECDSA))
		return true;
	return want == have;
}

static bool dates_match(const struct store_meta *m, const struct locate_query *q)
{
	for (size_t i = 0; i < q->n_dates; i++) {
		const struct kmip_attr *a = ops_meta_attr(m, q->dates[i].tag);
		int64_t t;

		if (!a || a->value->type != TTLV_DATE_TIME)
			return false;
		t = ttlv_long(a->value);
		if (t < q->dates[i].from || t > q->dates[i].to)
			return false;
	}
	return true;
}

/* The token matched a live object's class, label and CKA_ID already; a record's are
 * checked here. */
static bool locate_matches(struct store *st, const struct store_obj *o, const struct locate_query *q,
			   const struct store_obj *linked)
{
	struct store_meta m = { 0 };
	struct key_info ki = { 0 };
	bool ok;

	/* What the token matched needs no metadata read, which costs a search. */
	if (!o->destroyed && !q->object_type && !q->has_algorithm && !q->has_length && !q->has_state && !q->n_dates)
		return true;
	ok = ops_meta_read(st, o, false, &m) == 0 && read_key_info(st, o, &m, &ki) == 0;

	if (ok && o->destroyed && q->name.ptr)
		ok = q->name.len == ki.label.len && (!q->name.len || memcmp(q->name.ptr, ki.label.ptr, q->name.len) == 0);
	if (ok && o->destroyed)
		ok = (q->kind < 0 || q->kind == (int)o->kind) &&
		     (!q->link_uid.ptr || (o->id_len == linked->id_len && memcmp(o->id, linked->id, o->id_len) == 0));
	if (ok && q->object_type)
		ok = q->object_type == ki.object_type;
	if (ok && q->has_algorithm)
		ok = algorithm_matches(q->algorithm, ki.algorithm);
	if (ok && q->has_length)
		ok = q->length == ki.length;
	if (ok && q->has_state)
		ok = q->state == ops_state(o, &m);
	if (ok)
		ok = dates_match(&m, q);
	key_info_clear(&ki);
	store_meta_clear(&m);
	return ok;
}

/* The UIDs that match: Located Items counts them all, the page holds Maximum Items
 * of them after Offset Items. */
struct locate_page {
	size_t skip, limit, total, listed;
	struct ttlv_writer uids;
	/* With more than one backend, the UIDs counted so far: a replica of an
	 * object counts once. An open-addressing set of UIDs, grown as it fills. */
	bool merge;
	char (*seen)[STORE_MAX_UID + 1];
	size_t n_seen, size_seen;
};

static size_t uid_hash(const char *uid)
{
	size_t h = 14695981039346656037u;

	for (; *uid; uid++)
		h = (h ^ (unsigned char)*uid) * 1099511628211u;
	return h;
}

/* Whether uid was counted already; else it is now. On running out of memory
 * it is counted again rather than lost. */
static bool page_seen(struct locate_page *p, const char *uid)
{
	size_t i;

	if (2 * (p->n_seen + 1) > p->size_seen) {
		size_t size = p->size_seen ? 2 * p->size_seen : 256;
		char(*grown)[STORE_MAX_UID + 1] = calloc(size, sizeof(*grown));

		if (!grown)
			return false;
		for (size_t k = 0; k < p->size_seen; k++)
			if (p->seen[k][0]) {
				for (i = uid_hash(p->seen[k]) % size; grown[i][0]; i = (i + 1) % size)
					;
				memcpy(grown[i], p->seen[k], sizeof(grown[i]));
			}
		free(p->seen);
		p->seen = grown;
		p->size_seen = size;
	}
	for (i = uid_hash(uid) % p->size_seen; p->seen[i][0]; i = (i + 1) % p->size_seen)
		if (strcmp(p->seen[i], uid) == 0)
			return true;
	snprintf(p->seen[i], sizeof(p->seen[i]), "%s", uid);
	p->n_seen++;
	return false;
}

static void page_add(struct locate_page *p, const char *uid)
{
	if (p->merge && page_seen(p, uid))
		return;
	p->total++;
	if (p->skip) {
		p->skip--;
		return;
	}
	if (p->listed < p->limit) {
		ops_put_uid(&p->uids, KMIP_TAG_UNIQUE_IDENTIFIER, uid);
		p->listed++;
	}
}

/* The live objects of each kind the query allows. */
static int locate_objects(struct ops_ctx *ctx, struct store *st, const struct locate_query *q,
			  const struct store_obj *linked, struct locate_page *page)
{
	int r = 0;

	for (int k = 0; r == 0 && k < STORE_N_KINDS; k++) {
		CK_OBJECT_HANDLE *handles = NULL;
		size_t n_found = 0;
		CK_OBJECT_CLASS cls;
		CK_ATTRIBUTE tmpl[4];
		size_t n_tmpl;

		if (q->kind == -2 || (q->kind >= 0 && q->kind != k))
			continue;
		n_tmpl = store_kind_template((enum store_kind)k, q->link_uid.ptr ? linked->id : NULL, linked->id_len, &cls,
					     tmpl);
		if (q->name.ptr)
			tmpl[n_tmpl++] = (CK_ATTRIBUTE){ CKA_LABEL, (void *)q->name.ptr, q->name.len };
		if ((r = p11_find_all(st->tok, tmpl, n_tmpl, &handles, &n_found)) < 0)
			break;
		for (size_t i = 0; i < n_found; i++) {
			uint8_t id[STORE_MAX_ID];
			CK_ATTRIBUTE ida = { store_id_attribute((enum store_kind)k), id, sizeof(id) };
			struct store_obj o = { .kind = (enum store_kind)k, .backend = st->backend, .handle = handles[i] };

			if (p11_get_attrs(st->tok, handles[i], &ida, 1) < 0 || ida.ulValueLen == 0 ||
			    ida.ulValueLen > STORE_MAX_ID)
				continue;
			o.id_len = ida.ulValueLen;
			memcpy(o.id, id, o.id_len);
			store_uid(o.kind, o.id, o.id_len, o.uid);
			if (guard_visible(ctx, &o) && locate_matches(st, &o, q, linked))
				page_add(page, o.uid);
		}
		free(handles);
	}
	return r;
}

/* The records destroyed objects left. */
static int locate_records(struct ops_ctx *ctx, struct store *st, const struct locate_query *q,
			  const struct store_obj *linked, struct locate_page *page)
{
	struct store_obj *recs = NULL;
	size_t n = 0;
	int r;

	if (q->kind == -2)
		return 0;
	if ((r = store_records(st, &recs, &n)) < 0)
		return r;
	for (size_t i = 0; i < n; i++)
		if (guard_visible(ctx, &recs[i]) &&
		    locate_matches(st, &recs[i], q, linked))
			page_add(page, recs[i].uid);
	free(recs);
	return 0;
}

void op_locate(struct ops_ctx *ctx, const struct ttlv_item *payload, struct ttlv_writer *w, struct ops_result *res)
{
	const struct ttlv_item *max_items = ttlv_find(payload, KMIP_TAG_MAXIMUM_ITEMS);
	const struct ttlv_item *offset = ttlv_find(payload, KMIP_TAG_OFFSET_ITEMS);
	const struct ttlv_item *storage = ttlv_find(payload, KMIP_TAG_STORAGE_STATUS_MASK);
	struct locate_query q = { .kind = -1 };
	struct locate_page page = { .limit = SIZE_MAX };
	struct kmip_attrs attrs = { 0 };
	struct ttlv_item holder = { .type = TTLV_STRUCTURE };
	struct ttlv_item items[64]; /* the decoded attributes borrow from these until the end */
	uint32_t mask = STORAGE_ONLINE;
	uint8_t *uids = NULL;
	size_t uids_len = 0;
	struct store_obj linked = { .id_len = 0 };
	struct store *st;
	int r = 0;

	if (storage && storage->type != TTLV_INTEGER) {
		ops_fail(res, KMIP_REASON_INVALID_FIELD, "Storage Status Mask must be an Integer");
		return;
	}
	if (storage)
		mask = (uint32_t)ttlv_int(storage);
	/* 1.x puts Attribute items in the payload; 2.x an Attributes structure. */
	if (ctx->version.major >= 2) {
		const struct ttlv_item *c = ttlv_find(payload, KMIP_TAG_ATTRIBUTES);

		holder.child = c ? c->child : NULL;
	} else {
		holder.child = ttlv_find(payload, KMIP_TAG_ATTRIBUTE);
	}
	{
		/* Only the Attribute items count in 1.x; copy them into a container. */
		size_t n = 0;

		for (const struct ttlv_item *c = holder.child; c && n < 64; c = c->next)
			if (ctx->version.major >= 2 || c->tag == KMIP_TAG_ATTRIBUTE) {
				items[n] = *c;
				items[n].next = NULL;
				if (n)
					items[n - 1].next = &items[n];
				n++;
			}
		holder.child = n ? &items[0] : NULL;
		if ((r = kmip_attrs_decode(&holder, ctx->version, &attrs)) < 0) {
			ops_fail_err(res, r);
			return;
		}
	}
	for (size_t i = 0; i < attrs.n; i++)
		if (!read_locate_attr(&attrs.v[i], &q, res)) {
			kmip_attrs_clear(&attrs);
			return;
		}
	if (max_items && max_items->type == TTLV_INTEGER && ttlv_int(max_items) >= 0)
		page.limit = (size_t)ttlv_int(max_items);
	if (offset && offset->type == TTLV_INTEGER && ttlv_int(offset) > 0)
		page.skip = (size_t)ttlv_int(offset);
	if (!(st = ops_store(ctx, res))) {
		kmip_attrs_clear(&attrs);
		return;
	}
	page.merge = ctx->token->n > 1;
	if (q.link_uid.ptr) {
		const struct store_obj *l = guard_link(ctx, q.link_uid.ptr, q.link_uid.len);

		if (l)
			linked = *l;
		else /* linked to nothing there is (for this client): nothing is found */
			q.kind = -2;
	}
	ttlv_writer_init(&page.uids, TTLV_DEFAULT_MAX_SIZE);
	/* The connection's backend, then every other that can be reached. */
	for (size_t i = 0; r == 0 && i < ctx->token->n + 1; i++) {
		struct store *at = st;

		if (i > 0 && ((int)i - 1 == st->backend || token_store_at(ctx->token, (int)i - 1, &at) < 0))
			continue;
		if (mask & STORAGE_ONLINE)
			r = locate_objects(ctx, at, &q, &linked, &page);
		if (r == 0 && (mask & STORAGE_DESTROYED))
			r = locate_records(ctx, at, &q, &linked, &page);
		if (r < 0)
			st = at;
	}
	free(page.seen);
	kmip_attrs_clear(&attrs);
	if (r == 0 && page.listed)
		r = ttlv_writer_finish(&page.uids, &uids, &uids_len);
	ttlv_writer_clear(&page.uids);
	if (r < 0) {
		ops_fail_token(st, res, r);
		return;
	}
	ttlv_begin(w, KMIP_TAG_RESPONSE_PAYLOAD);
	if (ctx->version.major >= 2 || (ctx->version.major == 1 && ctx->version.minor >= 3))
		ttlv_put_int(w, KMIP_TAG_LOCATED_ITEMS, (int32_t)(page.total > INT32_MAX ? INT32_MAX : page.total));
	if (uids)
		ttlv_put_encoded(w, uids, uids_len);
	ttlv_end(w);
	ttlv_buf_free(uids, uids_len);
}

/* Check: whether the object exists and may be put to the usage the request names. */
void op_check(struct ops_ctx *ctx, const struct ttlv_item *payload, struct ttlv_writer *w, struct ops_result *res)
{
	const struct ttlv_item *mask = ttlv_find(payload, KMIP_TAG_CRYPTOGRAPHIC_USAGE_MASK);
	struct store *st;
	struct store_meta m = { 0 };
	struct store_obj o;
	int r;

	if (!ops_target(ctx, &st, &o, res))
		return;
	if (mask && mask->type != TTLV_INTEGER) {
		ops_fail(res, KMIP_REASON_INVALID_FIELD, "Cryptographic Usage Mask must be an Integer");
		return;
	}
	if ((r = ops_meta_read(st, &o, false, &m)) < 0) {
		ops_fail_token(st, res, r);
		return;
	}
	if (mask && ((uint32_t)ttlv_int(mask) & ~ops_token_mask(&m, ops_usage_of(st, &o, &m)))) {
		ops_fail(res, KMIP_REASON_INCOMPATIBLE_CRYPTOGRAPHIC_USAGE_MASK, "the object's usage mask does not allow this");
	} else if (mask && ops_meta_state(&m) != STATE_ACTIVE) {
		ops_fail(res, KMIP_REASON_WRONG_KEY_LIFECYCLE_STATE, "the object is not Active");
	} else {
		ttlv_begin(w, KMIP_TAG_RESPONSE_PAYLOAD);
		ops_put_uid(w, KMIP_TAG_UNIQUE_IDENTIFIER, o.uid);
		ttlv_end(w);
	}
	store_meta_clear(&m);
}

/* SPDX-License-Identifier: BSD-3-Clause */
#include "config.h"

/* Create, Create Key Pair and Register: new objects in the token. */

#include <gnutls/abstract.h>
#include <gnutls/crypto.h>
#include <gnutls/x509.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ops_objects.h"

/* What a request asks of a new key. */
struct key_request {
	uint32_t algorithm;
	int32_t length;
	uint32_t curve;
	uint32_t usage;
	bool has_usage, has_activation;
	int64_t activation;
	struct kmip_text name;
	int sensitive, extractable; /* -1: not given */
	bool generated; /* by the token (Create, Create Key Pair), not registered */
	struct kmip_attr kept[32]; /* attributes the token has no place for; they borrow
				    * from the request */
	size_t n_kept;
};

static void key_request_init(struct key_request *k, bool generated)
{
	*k = (struct key_request){ .sensitive = -1, .extractable = -1, .generated = generated };
}

/* Keeps an attribute the token has no place for, for the new object's metadata. */
static bool keep_attr(struct key_request *k, const struct kmip_attr *a, struct ops_result *res)
{
	if (k->n_kept == sizeof(k->kept) / sizeof(k->kept[0])) {
		ops_fail(res, KMIP_REASON_SERVER_LIMIT_EXCEEDED, "too many attributes");
		return false;
	}
	k->kept[k->n_kept++] = *a;
	return true;
}

/* Reads one attribute of a creation template into k. */
static bool read_key_attr(const struct kmip_attr *a, struct key_request *k, struct ops_result *res)
{
	const struct ttlv_item *v = a->value;

	switch (a->tag) {
	case KMIP_TAG_CRYPTOGRAPHIC_ALGORITHM:
		if (v->type != TTLV_ENUMERATION)
			break;
		k->algorithm = ttlv_enum(v);
		return true;
	case KMIP_TAG_CRYPTOGRAPHIC_LENGTH:
		if (v->type != TTLV_INTEGER)
			break;
		k->length = ttlv_int(v);
		return true;
	case KMIP_TAG_CRYPTOGRAPHIC_USAGE_MASK:
		if (v->type != TTLV_INTEGER)
			break;
		k->usage = (uint32_t)ttlv_int(v);
		k->has_usage = true;
		return true;
	case KMIP_TAG_CRYPTOGRAPHIC_DOMAIN_PARAMETERS: {
		const struct ttlv_item *c = v->type == TTLV_STRUCTURE ? ttlv_find(v, KMIP_TAG_RECOMMENDED_CURVE) : NULL;

		if (v->type != TTLV_STRUCTURE)
			break;
		if (c && c->type == TTLV_ENUMERATION)
			k->curve = ttlv_enum(c);
		return true;
	}
	case KMIP_TAG_NAME: {
		const struct ttlv_item *nv = v->type == TTLV_STRUCTURE ? ttlv_find(v, KMIP_TAG_NAME_VALUE) : NULL;

		if (!nv || nv->type != TTLV_TEXT_STRING)
			break;
		k->name = (struct kmip_text){ (const char *)nv->value, nv->len };
		return true;
	}
	case KMIP_TAG_ACTIVATION_DATE:
		if (v->type != TTLV_DATE_TIME)
			break;
		k->activation = ttlv_long(v);
		k->has_activation = true;
		return true;
	case KMIP_TAG_SENSITIVE:
	case KMIP_TAG_EXTRACTABLE:
		if (v->type != TTLV_BOOLEAN)
			break;
		*(a->tag == KMIP_TAG_SENSITIVE ? &k->sensitive : &k->extractable) = ttlv_bool(v);
		return true;
	case KMIP_TAG_CERTIFICATE_TYPE:
		/* The server sets it from the certificate, which can only be X.509. */
		if (v->type != TTLV_ENUMERATION || ttlv_enum(v) != CERT_X509)
			break;
		return true;
	default:
		/* The relay links the halves of a pair itself; a key it makes was created now,
		 * by the token's generator. */
		if (ops_attr_rule(a->tag) == ATTR_SERVER || a->tag == KMIP_TAG_LINK ||
		    (k->generated && ops_attr_rule(a->tag) == ATTR_ONCE)) {
			ops_fail(res, KMIP_REASON_ATTRIBUTE_READ_ONLY, "the server sets this attribute");
			return false;
		}
		return keep_attr(k, a, res);
	}
	ops_fail(res, KMIP_REASON_INVALID_ATTRIBUTE_VALUE, "attribute value of the wrong type");
	return false;
}

/* Reads the template containers (1.x or 2.x tags) under payload into k. */
static bool read_templates(const struct ops_ctx *ctx, const struct ttlv_item *payload, const uint32_t *tags,
			   size_t n_tags, struct key_request *k, struct ops_result *res)
{
	for (size_t t = 0; t < n_tags; t++) {
		const struct ttlv_item *c = ttlv_find(payload, tags[t]);
		struct kmip_attrs attrs = { 0 };
		bool ok = true;
		int r;

		if (!c)
			continue;
		r = kmip_attrs_decode(c, ctx->version, &attrs);
		if (r < 0) {
			ops_fail_err(res, r);
			return false;
		}
		for (size_t i = 0; ok && i < attrs.n; i++)
			ok = read_key_attr(&attrs.v[i], k, res);
		kmip_attrs_clear(&attrs);
		if (!ok)
			return false;
	}
	return true;
}

/* The first metadata generation of a new object. */
struct new_meta {
	const struct key_request *k;
	uint32_t state, usage;
	const char *link_uid;
	uint32_t link_type;
	struct store *st;
	const struct store_obj *o;
	uint32_t format;                  /* its Key Format Type; 0 for certificates and Opaque Objects */
	const struct ttlv_item *material; /* Register: the Key Material as the request gave it */
	const struct ttlv_item *value;    /* Register: a certificate's or an Opaque Object's bytes */
};

enum { RNG_UNSPECIFIED = 1 };

/* The Digest (KMIP 2.1 section 4.21) of what the relay can see: the material the
 * request gave, else the key as the token lets it out (not a sensitive one). KMIP
 * wants one in the default format too. */
static void put_digests(struct ttlv_writer *w, const struct new_meta *m)
{
	uint32_t dflt = ops_default_format(m->o->kind, m->o->key_type);

	if (m->value) {
		ops_put_digest(w, m->value->value, m->value->len, 0);
		return;
	}
	if (m->material)
		ops_put_material_digest(w, m->material, m->format);
	else
		ops_put_token_digest(w, m->st, m->o, m->format);
	if (m->format != dflt)
		ops_put_token_digest(w, m->st, m->o, dflt);
}

/* The Certificate Attributes (KMIP 2.1 section 4.6): the subject's and the issuer's
 * name parts, in the order of their tags (Certificate Subject CN = 0x420108 to DN
 * Qualifier, then the same for the issuer). */
static const char *const dn_oids[] = {
	GNUTLS_OID_X520_COMMON_NAME, GNUTLS_OID_X520_ORGANIZATION_NAME, GNUTLS_OID_X520_ORGANIZATIONAL_UNIT_NAME,
	GNUTLS_OID_PKCS9_EMAIL, GNUTLS_OID_X520_COUNTRY_NAME, GNUTLS_OID_X520_STATE_OR_PROVINCE_NAME,
	GNUTLS_OID_X520_LOCALITY_NAME, GNUTLS_OID_LDAP_UID, "2.5.4.5" /* serialNumber */, GNUTLS_OID_X520_TITLE,
	GNUTLS_OID_LDAP_DC, GNUTLS_OID_X520_DN_QUALIFIER,
};
#define N_DN_PARTS (sizeof(dn_oids) / sizeof(dn_oids[0]))

static void put_name_parts(struct ttlv_writer *w, gnutls_x509_crt_t crt, bool issuer)
{
	uint32_t first = issuer ? KMIP_TAG_CERTIFICATE_ISSUER_CN : KMIP_TAG_CERTIFICATE_SUBJECT_CN;

	for (size_t i = 0; i < N_DN_PARTS; i++)
		for (unsigned idx = 0;; idx++) {
			char part[1024]; /* X.520 bounds each part far below this */
			size_t len = sizeof(part);
			int r = issuer ? gnutls_x509_crt_get_issuer_dn_by_oid(crt, dn_oids[i], idx, 0, part, &len)
				       : gnutls_x509_crt_get_dn_by_oid(crt, dn_oids[i], idx, 0, part, &len);

			if (r < 0 || len >= sizeof(part))
				break;
			ttlv_put_text(w, first + (uint32_t)i, part, len);
		}
}

static void put_certificate_attrs(struct ttlv_writer *w, const struct ttlv_item *der)
{
	gnutls_x509_crt_t crt = NULL;
	gnutls_datum_t d = { (uint8_t *)der->value, der->len };

	ttlv_put_enum(w, KMIP_TAG_CERTIFICATE_TYPE, CERT_X509);
	ttlv_put_int(w, KMIP_TAG_CERTIFICATE_LENGTH, (int32_t)der->len);
	if (gnutls_x509_crt_init(&crt) < 0)
		return;
	if (gnutls_x509_crt_import(crt, &d, GNUTLS_X509_FMT_DER) == 0) {
		put_name_parts(w, crt, false);
		put_name_parts(w, crt, true);
	}
	gnutls_x509_crt_deinit(crt);
}

/* Stamps a new object's CKA_ID with what it says of the object (store_stamp_id):
 * now, its usage masks and its algorithm. */
static void stamp_id(uint8_t id[STORE_ID_LEN], uint32_t private_mask, uint32_t public_mask, uint32_t algorithm)
{
	struct store_id_facts f = { .mask = { private_mask, public_mask }, .algorithm = algorithm };
	struct timespec ts;

	if (clock_gettime(CLOCK_REALTIME, &ts) < 0)
		ts = (struct timespec){ .tv_sec = ops_now() };
	f.created_ms = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
	store_stamp_id(id, &f);
}

/* A new object's Initial Date: when its CKA_ID was stamped. */
static int64_t created_at(const struct store_obj *o)
{
	struct store_id_facts f;

	return store_id_facts(o->id, o->id_len, &f) ? f.created_ms / 1000 : ops_now();
}

static void put_new_meta(struct ttlv_writer *w, const void *arg)
{
	const struct new_meta *m = arg;
	const struct kmip_attrs kept = { (struct kmip_attr *)m->k->kept, m->k->n_kept };
	int64_t now = created_at(m->o);

	ttlv_put_enum(w, KMIP_TAG_STATE, m->state);
	ttlv_put_datetime(w, KMIP_TAG_INITIAL_DATE, now);
	if (m->k->generated) {
		/* KMIP 2.1 sections 4.38 and 4.46: the token made the key now, with a
		 * generator the relay cannot name. */
		ttlv_put_datetime(w, KMIP_TAG_ORIGINAL_CREATION_DATE, now);
		ttlv_begin(w, KMIP_TAG_RANDOM_NUMBER_GENERATOR);
		ttlv_put_enum(w, KMIP_TAG_RNG_ALGORITHM, RNG_UNSPECIFIED);
		ttlv_end(w);
	}
	if (m->k->has_activation)
		ttlv_put_datetime(w, KMIP_TAG_ACTIVATION_DATE, m->k->activation);
	if (m->k->algorithm) /* certificates have none */
		ttlv_put_enum(w, KMIP_TAG_CRYPTOGRAPHIC_ALGORITHM, m->k->algorithm);
	if (m->k->length)
		ttlv_put_int(w, KMIP_TAG_CRYPTOGRAPHIC_LENGTH, m->k->length);
	ttlv_put_int(w, KMIP_TAG_CRYPTOGRAPHIC_USAGE_MASK, (int32_t)m->usage);
	if (m->link_uid)
		ops_put_link(w, m->link_type, m->link_uid);
	/* PKCS#11 gives a public key no flags for these; the metadata keeps them. */
	if (m->o->kind == STORE_PUBLIC && m->k->sensitive >= 0)
		ttlv_put_bool(w, KMIP_TAG_SENSITIVE, m->k->sensitive);
	if (m->o->kind == STORE_PUBLIC && m->k->extractable >= 0)
		ttlv_put_bool(w, KMIP_TAG_EXTRACTABLE, m->k->extractable);
	if (m->format)
		ttlv_put_enum(w, KMIP_TAG_KEY_FORMAT_TYPE, m->format);
	put_digests(w, m);
	if (m->o->kind == STORE_CERT)
		put_certificate_attrs(w, m->value);
	kmip_attrs_encode(w, 0, &kept, ops_meta_version);
}

static uint32_t initial_state(const struct key_request *k)
{
	return k->has_activation && k->activation <= ops_now() ? STATE_ACTIVE : STATE_PRE_ACTIVE;
}

/* Common attributes of every new key object: at most 13, and a key's own (at most 9,
 * a Transparent RSA Private Key). */
struct key_template {
	CK_ATTRIBUTE a[24];
	size_t n;
	CK_OBJECT_CLASS cls;
	CK_BBOOL yes, no, sensitive, extractable;
	CK_BBOOL flags[OPS_MAX_FLAGS];
};

static void tmpl_add(struct key_template *t, CK_ATTRIBUTE_TYPE type, const void *value, size_t len)
{
	t->a[t->n++] = (CK_ATTRIBUTE){ type, (void *)value, len };
}

static void tmpl_init(struct key_template *t, const struct ops_ctx *ctx, enum store_kind kind,
		      const struct key_request *k, const uint8_t *id, uint32_t usage)
{
	t->n = 0;
	t->yes = CK_TRUE;
	t->no = CK_FALSE;
	tmpl_add(t, CKA_TOKEN, &t->yes, sizeof(CK_BBOOL));
	/* CKA_CLASS and the ID: CKA_ID, or for a data object CKA_OBJECT_ID. */
	t->n += store_kind_template(kind, id, STORE_ID_LEN, &t->cls, t->a + t->n);
	if (k->name.ptr)
		tmpl_add(t, CKA_LABEL, k->name.ptr, k->name.len);
	if (kind == STORE_DATA)
		tmpl_add(t, CKA_PRIVATE, &t->yes, sizeof(CK_BBOOL));
	if (kind == STORE_PRIVATE || kind == STORE_SECRET) {
		/* Sensitive and not extractable unless asked, or allowed by the config. */
		t->sensitive = k->sensitive >= 0 ? (CK_BBOOL)k->sensitive : !ops_extractable_default(ctx);
		t->extractable = k->extractable >= 0 ? (CK_BBOOL)k->extractable : ops_extractable_default(ctx);
		tmpl_add(t, CKA_PRIVATE, &t->yes, sizeof(CK_BBOOL));
		tmpl_add(t, CKA_SENSITIVE, &t->sensitive, sizeof(CK_BBOOL));
		tmpl_add(t, CKA_EXTRACTABLE, &t->extractable, sizeof(CK_BBOOL));
	}
	t->n += ops_usage_template(kind, usage, initial_state(k), t->flags, t->a + t->n);
}

static bool put_first_meta(struct store *st, const struct store_obj *o, const struct new_meta *m,
			   struct ops_result *res)
{
	static const struct store_meta none = { 0 };
	int r = ops_meta_rewrite_at(st, o, &none, NULL, 0, put_new_meta, m, created_at(o));

	if (r < 0)
		ops_fail_token(st, res, r);
	return r == 0;
}

static bool curve_of(struct key_request *k, size_t *ret)
{
	for (size_t i = 0; i < OPS_N_CURVES; i++)
		if (k->curve ? ops_curves[i].curve == k->curve : ops_curves[i].bits == k->length) {
			*ret = i;
			k->curve = ops_curves[i].curve;
			k->length = ops_curves[i].bits;
			return true;
		}
	return false;
}

static const uint32_t pair_common[] = { KMIP_TAG_COMMON_TEMPLATE_ATTRIBUTE, KMIP_TAG_COMMON_ATTRIBUTES };
static const uint32_t pair_private[] = { KMIP_TAG_PRIVATE_KEY_TEMPLATE_ATTRIBUTE, KMIP_TAG_PRIVATE_KEY_ATTRIBUTES };
static const uint32_t pair_public[] = { KMIP_TAG_PUBLIC_KEY_TEMPLATE_ATTRIBUTE, KMIP_TAG_PUBLIC_KEY_ATTRIBUTES };

void op_create_key_pair(struct ops_ctx *ctx, const struct ttlv_item *payload, struct ttlv_writer *w,
			struct ops_result *res)
{
	struct key_request kpriv, kpub;
	struct key_template tpriv, tpub;
	struct store_obj opriv = { .kind = STORE_PRIVATE }, opub = { .kind = STORE_PUBLIC };
	CK_MECHANISM mech = { CKM_RSA_PKCS_KEY_PAIR_GEN, NULL, 0 };
	static const uint8_t f4[] = { 0x01, 0x00, 0x01 };
	CK_ULONG bits;
	uint32_t upriv, upub;
	uint8_t id[STORE_ID_LEN];
	struct store *st;
	size_t curve = 0;
	int r;

	key_request_init(&kpriv, true);
	key_request_init(&kpub, true);
	if (!read_templates(ctx, payload, pair_common, 2, &kpriv, res) ||
	    !read_templates(ctx, payload, pair_common, 2, &kpub, res) ||
	    !read_templates(ctx, payload, pair_private, 2, &kpriv, res) ||
	    !read_templates(ctx, payload, pair_public, 2, &kpub, res))
		return;
	if (!kpriv.algorithm)
		kpriv.algorithm = kpub.algorithm;
	if (!kpriv.length)
		kpriv.length = kpub.length;
	if (!kpriv.curve)
		kpriv.curve = kpub.curve;
	switch (kpriv.algorithm) {
	case ALG_RSA:
		if (kpriv.length < 1024 || kpriv.length > 8192) {
			ops_fail(res, KMIP_REASON_INVALID_ATTRIBUTE_VALUE, "RSA keys are 1024 to 8192 bits");
			return;
		}
		upriv = USE_SIGN | USE_DECRYPT;
		upub = USE_VERIFY | USE_ENCRYPT;
		break;
	case ALG_EC:
	case ALG_ECDSA:
	case ALG_ED25519:
		if (kpriv.algorithm == ALG_ED25519)
			kpriv.curve = CURVE_ED25519;
		if (!curve_of(&kpriv, &curve) || (ops_curves[curve].curve == CURVE_ED25519) != (kpriv.algorithm == ALG_ED25519)) {
			ops_fail(res, KMIP_REASON_INVALID_ATTRIBUTE_VALUE, "supported curves: P-256, P-384, P-521, Ed25519");
			return;
		}
		mech.mechanism = kpriv.algorithm == ALG_ED25519 ? CKM_EC_EDWARDS_KEY_PAIR_GEN : CKM_EC_KEY_PAIR_GEN;
		upriv = USE_SIGN;
		upub = USE_VERIFY;
		break;
	case 0:
		ops_fail(res, KMIP_REASON_MISSING_DATA, "Cryptographic Algorithm is required");
		return;
	default:
		ops_fail(res, KMIP_REASON_INVALID_ATTRIBUTE_VALUE, "key pairs: RSA, EC, ECDSA or Ed25519");
		return;
	}
	kpub.algorithm = kpriv.algorithm;
	kpub.length = kpriv.length;
	if (!guard_new_key(ctx, kpriv.algorithm, kpriv.length, res))
		return;
	if (kpriv.has_usage)
		upriv = kpriv.usage;
	if (kpub.has_usage)
		upub = kpub.usage;
	if (!(st = ops_new_store(ctx, res)))
		return;
	opriv.backend = opub.backend = st->backend;
	if ((r = ops_new_id(ctx, st, id)) < 0) {
		ops_fail_token(st, res, r);
		return;
	}
	stamp_id(id, upriv, upub, kpriv.algorithm);
	tmpl_init(&tpriv, ctx, STORE_PRIVATE, &kpriv, id, upriv);
	tmpl_init(&tpub, ctx, STORE_PUBLIC, &kpub, id, upub);
	bits = (CK_ULONG)kpriv.length;
	if (mech.mechanism == CKM_RSA_PKCS_KEY_PAIR_GEN) {
		tmpl_add(&tpub, CKA_MODULUS_BITS, &bits, sizeof(bits));
		tmpl_add(&tpub, CKA_PUBLIC_EXPONENT, f4, sizeof(f4));
	} else {
		tmpl_add(&tpub, CKA_EC_PARAMS, ops_curves[curve].der, ops_curves[curve].len);
	}
	r = p11_generate_key_pair(st->tok, &mech, tpub.a, tpub.n, tpriv.a, tpriv.n, &opub.handle, &opriv.handle);
	if (r < 0) {
		ops_fail_token(st, res, r);
		return;
	}
	opriv.key_type = opub.key_type = mech.mechanism == CKM_RSA_PKCS_KEY_PAIR_GEN ? CKK_RSA
					 : mech.mechanism == CKM_EC_KEY_PAIR_GEN  ? CKK_EC
										  : CKK_EC_EDWARDS;
	memcpy(opriv.id, id, STORE_ID_LEN);
	memcpy(opub.id, id, STORE_ID_LEN);
	opriv.id_len = opub.id_len = STORE_ID_LEN;
	store_uid(STORE_PRIVATE, id, STORE_ID_LEN, opriv.uid);
	store_uid(STORE_PUBLIC, id, STORE_ID_LEN, opub.uid);
	{
		const struct new_meta mpriv = { &kpriv, initial_state(&kpriv), upriv, opub.uid, LINK_PUBLIC_KEY, st, &opriv,
						ops_default_format(STORE_PRIVATE, opriv.key_type), NULL, NULL };
		const struct new_meta mpub = { &kpub, initial_state(&kpub), upub, opriv.uid, LINK_PRIVATE_KEY, st, &opub,
					       ops_default_format(STORE_PUBLIC, opub.key_type), NULL, NULL };

		if (!put_first_meta(st, &opriv, &mpriv, res) || !put_first_meta(st, &opub, &mpub, res)) {
			/* No half-made pair is left behind. */
			if (store_meta_destroy(st, &opriv) < 0 || p11_destroy(st->tok, opriv.handle) < 0 ||
			    p11_destroy(st->tok, opub.handle) < 0)
				res->message = "the key pair could not be fully removed after a failure";
			return;
		}
	}
	store_remember(st, &opriv);
	store_remember(st, &opub);
	ops_acted_on(ctx, &opriv);
	ttlv_begin(w, KMIP_TAG_RESPONSE_PAYLOAD);
	ops_put_uid(w, KMIP_TAG_PRIVATE_KEY_UNIQUE_IDENTIFIER, opriv.uid);
	ops_put_uid(w, KMIP_TAG_PUBLIC_KEY_UNIQUE_IDENTIFIER, opub.uid);
	ttlv_end(w);
}

static const uint32_t create_tags[] = { KMIP_TAG_TEMPLATE_ATTRIBUTE, KMIP_TAG_ATTRIBUTES };

void op_create(struct ops_ctx *ctx, const struct ttlv_item *payload, struct ttlv_writer *w, struct ops_result *res)
{
	const struct ttlv_item *type = ttlv_find(payload, KMIP_TAG_OBJECT_TYPE);
	const struct ops_symmetric *sym;
	struct key_request k;
	struct key_template t;
	struct store_obj o = { .kind = STORE_SECRET, .id_len = STORE_ID_LEN };
	CK_MECHANISM mech = { 0, NULL, 0 };
	CK_ULONG value_len;
	struct store *st;
	int r;

	key_request_init(&k, true);
	if (!type || type->type != TTLV_ENUMERATION) {
		ops_fail(res, KMIP_REASON_MISSING_DATA, "Object Type is required");
		return;
	}
	if (ttlv_enum(type) != OBJ_SYMMETRIC_KEY) {
		ops_fail(res, KMIP_REASON_INVALID_OBJECT_TYPE, "Create makes symmetric keys");
		return;
	}
	if (!read_templates(ctx, payload, create_tags, 2, &k, res))
		return;
	if (!(sym = ops_symmetric_by_algorithm(k.algorithm))) {
		ops_fail(res, k.algorithm ? KMIP_REASON_INVALID_ATTRIBUTE_VALUE : KMIP_REASON_MISSING_DATA,
			 "Create makes AES, HMAC and ChaCha20 keys");
		return;
	}
	if (!k.length)
		k.length = sym->default_length;
	if (sym->algorithm == ALG_AES && k.length != 128 && k.length != 192 && k.length != 256) {
		ops_fail(res, KMIP_REASON_INVALID_ATTRIBUTE_VALUE, "AES keys are 128, 192 or 256 bits");
		return;
	}
	if (k.length % 8 != 0 || k.length < 8) {
		ops_fail(res, KMIP_REASON_INVALID_ATTRIBUTE_VALUE, "key length must be whole bytes");
		return;
	}
	if (!k.has_usage)
		k.usage = sym->key_type == CKK_GENERIC_SECRET ? USE_MAC_GENERATE | USE_MAC_VERIFY
							      : USE_ENCRYPT | USE_DECRYPT;
	if (!guard_new_key(ctx, k.algorithm, k.length, res) || !(st = ops_new_store(ctx, res)))
		return;
	o.backend = st->backend;
	if ((r = ops_new_id(ctx, st, o.id)) < 0) {
		ops_fail_token(st, res, r);
		return;
	}
	stamp_id(o.id, k.usage, 0, k.algorithm);
	tmpl_init(&t, ctx, STORE_SECRET, &k, o.id, k.usage);
	value_len = (CK_ULONG)k.length / 8;
	tmpl_add(&t, CKA_VALUE_LEN, &value_len, sizeof(value_len));
	tmpl_add(&t, CKA_KEY_TYPE, &sym->key_type, sizeof(sym->key_type));
	mech.mechanism = sym->generate;
	r = p11_generate_key(st->tok, &mech, t.a, t.n, &o.handle);
	if (r < 0) {
		ops_fail_token(st, res, r);
		return;
	}
	store_uid(STORE_SECRET, o.id, o.id_len, o.uid);
	o.key_type = sym->key_type;
	{
		const struct new_meta m = { &k, initial_state(&k), k.usage, NULL, 0, st, &o,
					    ops_default_format(STORE_SECRET, o.key_type), NULL, NULL };

		if (!put_first_meta(st, &o, &m, res)) {
			if (p11_destroy(st->tok, o.handle) < 0)
				res->message = "the key could not be removed after a failure";
			return;
		}
	}
	store_remember(st, &o);
	ops_acted_on(ctx, &o);
	ttlv_begin(w, KMIP_TAG_RESPONSE_PAYLOAD);
	ttlv_put_enum(w, KMIP_TAG_OBJECT_TYPE, OBJ_SYMMETRIC_KEY);
	ops_put_uid(w, KMIP_TAG_UNIQUE_IDENTIFIER, o.uid);
	ttlv_end(w);
}

/* Register: objects made elsewhere become token objects, parsed with GnuTLS. */

/* A key block's Key Material and the Key Format Type that says how to read it. */
struct key_block {
	uint32_t format, algorithm;
	int32_t length;
	const struct ttlv_item *material;
};

static bool read_key_block(const struct ttlv_item *obj, struct key_block *kb, struct ops_result *res)
{
	const struct ttlv_item *block = obj && obj->type == TTLV_STRUCTURE ? ttlv_find(obj, KMIP_TAG_KEY_BLOCK) : NULL;
	const struct ttlv_item *fmt, *value, *alg, *len;

	*kb = (struct key_block){ 0 };
	if (!block || block->type != TTLV_STRUCTURE || !(fmt = ttlv_find(block, KMIP_TAG_KEY_FORMAT_TYPE)) ||
	    fmt->type != TTLV_ENUMERATION || !(value = ttlv_find(block, KMIP_TAG_KEY_VALUE))) {
		ops_fail(res, KMIP_REASON_MISSING_DATA, "Register needs the object with its Key Block");
		return false;
	}
	kb->format = ttlv_enum(fmt);
	/* A Key Value is a structure holding Key Material (or, wrapped, a Byte String). */
	kb->material = value->type == TTLV_STRUCTURE ? ttlv_find(value, KMIP_TAG_KEY_MATERIAL) : NULL;
	if (!kb->material) {
		ops_fail(res, KMIP_REASON_FEATURE_NOT_SUPPORTED, "wrapped keys cannot be registered");
		return false;
	}
	if ((alg = ttlv_find(block, KMIP_TAG_CRYPTOGRAPHIC_ALGORITHM)) && alg->type == TTLV_ENUMERATION)
		kb->algorithm = ttlv_enum(alg);
	if ((len = ttlv_find(block, KMIP_TAG_CRYPTOGRAPHIC_LENGTH)) && len->type == TTLV_INTEGER)
		kb->length = ttlv_int(len);
	return true;
}

static gnutls_datum_t item_datum(const struct ttlv_item *it)
{
	return (gnutls_datum_t){ (uint8_t *)it->value, it->len };
}

/* The Byte String inside a Transparent key's Key Material, or NULL. */
static const struct ttlv_item *material_field(const struct ttlv_item *material, uint32_t tag)
{
	const struct ttlv_item *f = material->type == TTLV_STRUCTURE ? ttlv_find(material, tag) : NULL;

	return f && (f->type == TTLV_BYTE_STRING || f->type == TTLV_BIG_INTEGER) ? f : NULL;
}

/* Holds the values a new token object's template points at, wiped afterwards. */
struct values {
	gnutls_datum_t d[8];
	size_t n;
};

static void values_clear(struct values *v)
{
	for (size_t i = 0; i < v->n; i++) {
		if (v->d[i].data)
			gnutls_memset(v->d[i].data, 0, v->d[i].size);
		gnutls_free(v->d[i].data);
	}
	v->n = 0;
}

static void tmpl_value(struct key_template *t, struct values *v, CK_ATTRIBUTE_TYPE type, gnutls_datum_t d)
{
	v->d[v->n++] = d;
	tmpl_add(t, type, d.data, d.size);
}

/* A big integer: GnuTLS keeps DER's leading zero, which a token would store and
 * count as part of the key (a 2048-bit modulus of 257 bytes). */
static void tmpl_number(struct key_template *t, struct values *v, CK_ATTRIBUTE_TYPE type, gnutls_datum_t d)
{
	size_t skip = 0;

	v->d[v->n++] = d;
	while (d.size - skip > 1 && d.data[skip] == 0)
		skip++;
	tmpl_add(t, type, d.data + skip, d.size - skip);
}

/* An RSA modulus's (or a DSA prime's) size in bits. */
static int32_t rsa_bits(const gnutls_datum_t *n)
{
	return ops_bits(n->data, n->size);
}

static int curve_der(gnutls_ecc_curve_t c, size_t *ret)
{
	for (size_t i = 0; i < OPS_N_CURVES; i++)
		if (ops_curves[i].gnutls == c) {
			*ret = i;
			return 0;
		}
	return KR_E_KMIP_FORMAT;
}

/* A public key from PKCS#1 or X.509 (SubjectPublicKeyInfo, also as Raw for EC). */
static int public_template(const struct key_block *kb, struct key_template *t, struct values *v, struct key_request *k)
{
	gnutls_pubkey_t pub = NULL;
	gnutls_datum_t der = kb->material->type == TTLV_BYTE_STRING ? item_datum(kb->material) : (gnutls_datum_t){ 0 };
	gnutls_datum_t a = { 0 }, b = { 0 };
	static CK_KEY_TYPE rsa = CKK_RSA, ec = CKK_EC, ed = CKK_EC_EDWARDS;
	size_t curve;
	int r = KR_E_KMIP_FORMAT;

	if (kb->format == FMT_PKCS1 && der.data) {
		if (gnutls_decode_rs_value(&der, &a, &b) < 0)
			return KR_E_KMIP_FORMAT;
		tmpl_add(t, CKA_KEY_TYPE, &rsa, sizeof(rsa));
		tmpl_number(t, v, CKA_MODULUS, a);
		tmpl_number(t, v, CKA_PUBLIC_EXPONENT, b);
		k->algorithm = ALG_RSA;
		k->length = rsa_bits(&a);
		return 0;
	}
	if ((kb->format != FMT_X509 && kb->format != FMT_RAW) || !der.data || gnutls_pubkey_init(&pub) < 0)
		return KR_E_KMIP_FORMAT;
	if (gnutls_pubkey_import(pub, &der, GNUTLS_X509_FMT_DER) < 0)
		goto out;
	switch (gnutls_pubkey_get_pk_algorithm(pub, NULL)) {
	case GNUTLS_PK_RSA:
		if (gnutls_pubkey_export_rsa_raw2(pub, &a, &b, 0) < 0)
			goto out;
		tmpl_add(t, CKA_KEY_TYPE, &rsa, sizeof(rsa));
		tmpl_number(t, v, CKA_MODULUS, a);
		tmpl_number(t, v, CKA_PUBLIC_EXPONENT, b);
		k->algorithm = ALG_RSA;
		k->length = rsa_bits(&a);
		r = 0;
		break;
	case GNUTLS_PK_ECDSA:
		if (gnutls_pubkey_export_ecc_x962(pub, &a, &b) < 0)
			goto out;
		tmpl_add(t, CKA_KEY_TYPE, &ec, sizeof(ec));
		tmpl_value(t, v, CKA_EC_PARAMS, a);
		tmpl_value(t, v, CKA_EC_POINT, b);
		k->algorithm = ALG_ECDSA;
		r = ops_find_curve(a.data, a.size, &curve) ? 0 : KR_E_KMIP_FORMAT;
		if (r == 0)
			k->length = ops_curves[curve].bits;
		break;
	case GNUTLS_PK_EDDSA_ED25519: {
		gnutls_ecc_curve_t c;

		gnutls_datum_t point;

		if (gnutls_pubkey_export_ecc_raw2(pub, &c, &a, NULL, 0) < 0 || curve_der(c, &curve) < 0 || a.size != 32 ||
		    !(point.data = gnutls_malloc(34)))
			goto out;
		/* CKA_EC_POINT is a DER OCTET STRING, as the token's own Edwards keys have it. */
		point.data[0] = 0x04;
		point.data[1] = 32;
		memcpy(point.data + 2, a.data, 32);
		point.size = 34;
		gnutls_free(a.data);
		a.data = NULL;
		tmpl_add(t, CKA_KEY_TYPE, &ed, sizeof(ed));
		tmpl_add(t, CKA_EC_PARAMS, ops_curves[curve].der, ops_curves[curve].len);
		tmpl_value(t, v, CKA_EC_POINT, point);
		k->algorithm = ALG_ED25519;
		k->length = ops_curves[curve].bits;
		r = 0;
		break;
	}
	default:
		break;
	}
out:
	gnutls_pubkey_deinit(pub);
	return r;
}

/* A private key from PKCS#8, PKCS#1 or ECPrivateKey DER: GnuTLS parses, the token
 * gets the components. */
static int private_template(const struct key_block *kb, struct key_template *t, struct values *v, struct key_request *k)
{
	gnutls_x509_privkey_t key = NULL;
	gnutls_datum_t der;
	static CK_KEY_TYPE rsa = CKK_RSA, ec = CKK_EC;
	gnutls_datum_t c[8] = { { 0 } };
	gnutls_ecc_curve_t curve_id;
	size_t curve;
	int r = KR_E_KMIP_FORMAT;

	if (kb->material->type != TTLV_BYTE_STRING ||
	    (kb->format != FMT_PKCS8 && kb->format != FMT_PKCS1 && kb->format != FMT_EC_PRIVATE_KEY))
		return KR_E_KMIP_FORMAT;
	der = item_datum(kb->material);
	if (gnutls_x509_privkey_init(&key) < 0)
		return KR_E_NOMEM;
	if (gnutls_x509_privkey_import2(key, &der, GNUTLS_X509_FMT_DER, NULL, GNUTLS_PKCS_PLAIN) < 0)
		goto out;
	switch (gnutls_x509_privkey_get_pk_algorithm(key)) {
	case GNUTLS_PK_RSA: {
		if (gnutls_x509_privkey_export_rsa_raw2(key, &c[0], &c[1], &c[2], &c[3], &c[4], &c[5], &c[6], &c[7]) < 0)
			goto out;
		tmpl_add(t, CKA_KEY_TYPE, &rsa, sizeof(rsa));
		for (size_t i = 0; i < 8; i++)
			tmpl_number(t, v, ops_rsa_private_attributes[i], c[i]);
		k->algorithm = ALG_RSA;
		k->length = rsa_bits(&c[0]);
		r = 0;
		break;
	}
	case GNUTLS_PK_ECDSA:
		if (gnutls_x509_privkey_export_ecc_raw(key, &curve_id, &c[0], &c[1], &c[2]) < 0)
			goto out;
		gnutls_free(c[0].data);
		gnutls_free(c[1].data);
		if (curve_der(curve_id, &curve) < 0) {
			gnutls_memset(c[2].data, 0, c[2].size);
			gnutls_free(c[2].data);
			goto out;
		}
		tmpl_add(t, CKA_KEY_TYPE, &ec, sizeof(ec));
		tmpl_add(t, CKA_EC_PARAMS, ops_curves[curve].der, ops_curves[curve].len);
		tmpl_number(t, v, CKA_VALUE, c[2]);
		k->algorithm = ALG_ECDSA;
		k->length = ops_curves[curve].bits;
		r = 0;
		break;
	default:
		break;
	}
out:
	gnutls_x509_privkey_deinit(key);
	return r;
}

/* A key in a Transparent format that the token holds field by field. A Big
 * Integer's sign-extension zeros go; PKCS#11 wants the magnitude. */
static int transparent_template(const struct key_block *kb, enum store_kind kind, struct key_template *t,
				struct key_request *k)
{
	const struct ops_transparent *tr = ops_transparent(kb->format);

	if (!tr || tr->kind != kind)
		return KR_E_KMIP_FORMAT;
	for (size_t i = 0; i < tr->n_fields; i++) {
		const struct ttlv_item *f = material_field(kb->material, tr->fields[i].tag);
		gnutls_datum_t d;

		if (!f && i < tr->n_required)
			return KR_E_KMIP_FORMAT;
		if (!f)
			continue;
		d = item_datum(f);
		if (f->type == TTLV_BIG_INTEGER && d.size && (d.data[0] & 0x80)) /* negative */
			return KR_E_KMIP_FORMAT;
		while (d.size > 1 && d.data[0] == 0)
			d.data++, d.size--;
		if (i == 0)
			k->length = rsa_bits(&d);
		tmpl_add(t, tr->fields[i].attribute, d.data, d.size);
	}
	tmpl_add(t, CKA_KEY_TYPE, &tr->key_type, sizeof(tr->key_type));
	k->algorithm = tr->algorithm;
	return 0;
}

static int symmetric_template(const struct key_block *kb, const struct ops_symmetric *sym, struct key_template *t,
			      struct key_request *k)
{
	const struct ttlv_item *key = kb->format == FMT_RAW && kb->material->type == TTLV_BYTE_STRING ? kb->material
				      : kb->format == FMT_TRANSPARENT_SYMMETRIC ? material_field(kb->material, KMIP_TAG_KEY)
										  : NULL;

	if (!key)
		return KR_E_KMIP_FORMAT;
	k->algorithm = sym->algorithm;
	tmpl_add(t, CKA_KEY_TYPE, &sym->key_type, sizeof(sym->key_type));
	tmpl_add(t, CKA_VALUE, key->value, key->len);
	k->length = (int32_t)key->len * 8;
	return 0;
}

/* An X.509 certificate: its DER, and the subject PKCS#11 requires beside it. */
static int certificate_template(const struct ttlv_item *cert, struct key_template *t, struct values *v)
{
	const struct ttlv_item *type = cert && cert->type == TTLV_STRUCTURE ? ttlv_find(cert, KMIP_TAG_CERTIFICATE_TYPE) : NULL;
	const struct ttlv_item *value = cert && cert->type == TTLV_STRUCTURE ? ttlv_find(cert, KMIP_TAG_CERTIFICATE_VALUE) : NULL;
	static CK_CERTIFICATE_TYPE x509 = CKC_X_509;
	gnutls_x509_crt_t crt = NULL;
	gnutls_datum_t der, dn = { 0 };
	int r = KR_E_KMIP_FORMAT;

	if (!type || !value || type->type != TTLV_ENUMERATION || ttlv_enum(type) != CERT_X509 ||
	    value->type != TTLV_BYTE_STRING)
		return KR_E_KMIP_FORMAT;
	der = item_datum(value);
	if (gnutls_x509_crt_init(&crt) < 0)
		return KR_E_NOMEM;
	if (gnutls_x509_crt_import(crt, &der, GNUTLS_X509_FMT_DER) == 0 && gnutls_x509_crt_get_raw_dn(crt, &dn) == 0) {
		tmpl_add(t, CKA_CERTIFICATE_TYPE, &x509, sizeof(x509));
		tmpl_add(t, CKA_VALUE, value->value, value->len);
		tmpl_value(t, v, CKA_SUBJECT, dn);
		r = 0;
	}
	gnutls_x509_crt_deinit(crt);
	return r;
}

/* Secret Data is kept as a generic secret key holding its bytes. */
static int secret_data_template(const struct key_block *kb, struct key_template *t)
{
	static CK_KEY_TYPE generic = CKK_GENERIC_SECRET;

	if ((kb->format != FMT_OPAQUE && kb->format != FMT_RAW) || kb->material->type != TTLV_BYTE_STRING ||
	    kb->material->len == 0)
		return KR_E_KMIP_FORMAT;
	tmpl_add(t, CKA_KEY_TYPE, &generic, sizeof(generic));
	tmpl_add(t, CKA_VALUE, kb->material->value, kb->material->len);
	return 0;
}

/* An Opaque Object is a data object holding its bytes. */
static int opaque_template(const struct ttlv_item *opaque, struct key_template *t)
{
	const struct ttlv_item *value = opaque ? ttlv_find(opaque, KMIP_TAG_OPAQUE_DATA_VALUE) : NULL;

	if (!value || value->type != TTLV_BYTE_STRING)
		return KR_E_KMIP_FORMAT;
	tmpl_add(t, CKA_VALUE, value->value, value->len);
	return 0;
}

/* Keeps an item of the request (Object Type, Secret Data Type, Opaque Data Type) in
 * the new object's metadata. */
static bool keep_item(struct key_request *k, const struct ttlv_item *it, struct ops_result *res)
{
	return !it || keep_attr(k, &(struct kmip_attr){ .tag = it->tag, .value = it }, res);
}

static const enum store_kind register_kinds[] = {
	[OBJ_CERTIFICATE] = STORE_CERT, [OBJ_SYMMETRIC_KEY] = STORE_SECRET, [OBJ_PUBLIC_KEY] = STORE_PUBLIC,
	[OBJ_PRIVATE_KEY] = STORE_PRIVATE, [OBJ_SECRET_DATA] = STORE_SECRET, [OBJ_OPAQUE] = STORE_DATA,
};

void op_register(struct ops_ctx *ctx, const struct ttlv_item *payload, struct ttlv_writer *w,
		 struct ops_result *res)
{
	const struct ttlv_item *type = ttlv_find(payload, KMIP_TAG_OBJECT_TYPE), *object;
	const struct ops_symmetric *sym = NULL;
	struct key_request k;
	struct key_template t;
	struct values v = { .n = 0 };
	struct key_block kb = { 0 };
	struct store_obj o = { .id_len = STORE_ID_LEN, .key_type = CK_UNAVAILABLE_INFORMATION };
	bool has_block;
	uint32_t obj_type;
	struct store *st;
	int r;

	key_request_init(&k, false);
	if (!type || type->type != TTLV_ENUMERATION) {
		ops_fail(res, KMIP_REASON_MISSING_DATA, "Object Type is required");
		return;
	}
	obj_type = ttlv_enum(type);
	if (obj_type >= sizeof(register_kinds) / sizeof(register_kinds[0]) || obj_type == 5 /* Split Key */ ||
	    obj_type == 6 /* Template */ || obj_type == 0) {
		ops_fail(res, KMIP_REASON_INVALID_OBJECT_TYPE,
			 "Register takes keys, certificates, Secret Data and Opaque Objects");
		return;
	}
	o.kind = register_kinds[obj_type];
	has_block = o.kind != STORE_CERT && o.kind != STORE_DATA; /* keys and Secret Data */
	object = ttlv_find(payload, obj_type == OBJ_SECRET_DATA ? KMIP_TAG_SECRET_DATA : ops_object_tags[o.kind]);
	if (object && object->type != TTLV_STRUCTURE)
		object = NULL;
	if (!read_templates(ctx, payload, create_tags, 2, &k, res) || (has_block && !read_key_block(object, &kb, res)))
		return;
	if (obj_type == OBJ_SECRET_DATA) {
		/* A password or seed is registered to be given back. */
		k.sensitive = k.sensitive >= 0 ? k.sensitive : 0;
		k.extractable = k.extractable >= 0 ? k.extractable : 1;
		if (!keep_item(&k, type, res) || !keep_item(&k, ttlv_find(object, KMIP_TAG_SECRET_DATA_TYPE), res))
			return;
		k.has_usage = true; /* none: it is not a key */
	} else if (obj_type == OBJ_OPAQUE) {
		if (!keep_item(&k, object ? ttlv_find(object, KMIP_TAG_OPAQUE_DATA_TYPE) : NULL, res))
			return;
		k.has_usage = true;
	} else if (obj_type == OBJ_SYMMETRIC_KEY &&
		   !(sym = ops_symmetric_by_algorithm(kb.algorithm ? kb.algorithm : k.algorithm))) {
		ops_fail(res, KMIP_REASON_INVALID_ATTRIBUTE_VALUE, "symmetric keys are AES, HMAC or ChaCha20 keys");
		return;
	}
	if (!(st = ops_new_store(ctx, res)))
		return;
	o.backend = st->backend;
	if ((r = ops_new_id(ctx, st, o.id)) < 0) {
		ops_fail_token(st, res, r);
		return;
	}
	if (!k.has_usage)
		k.usage = o.kind == STORE_PUBLIC    ? USE_VERIFY | USE_ENCRYPT
			  : o.kind == STORE_PRIVATE ? USE_SIGN | USE_DECRYPT
			  : o.kind == STORE_SECRET  ? USE_ENCRYPT | USE_DECRYPT
						    : USE_VERIFY;
	/* Secret Data is no key: whatever its usage mask says, the token gets no usage
	 * flags for it, so that it never signs, MACs or encrypts. */
	tmpl_init(&t, ctx, o.kind, &k, o.id, obj_type == OBJ_SECRET_DATA ? 0 : k.usage);
	r = obj_type == OBJ_SECRET_DATA   ? secret_data_template(&kb, &t)
	    : ops_transparent(kb.format) ? transparent_template(&kb, o.kind, &t, &k)
	    : o.kind == STORE_PUBLIC      ? public_template(&kb, &t, &v, &k)
	    : o.kind == STORE_PRIVATE     ? private_template(&kb, &t, &v, &k)
	    : o.kind == STORE_SECRET      ? symmetric_template(&kb, sym, &t, &k)
	    : o.kind == STORE_DATA        ? opaque_template(object, &t)
					  : certificate_template(object, &t, &v);
	/* The policy judges the key as parsed, not as the request declares it. */
	if (r == 0 && has_block && obj_type != OBJ_SECRET_DATA && !guard_new_key(ctx, k.algorithm, k.length, res)) {
		values_clear(&v);
		return;
	}
	if (r == 0) {
		stamp_id(o.id, o.kind == STORE_PUBLIC ? 0 : k.usage, o.kind == STORE_PUBLIC ? k.usage : 0, k.algorithm);
		r = p11_create(st->tok, t.a, t.n, &o.handle);
	}
	values_clear(&v);
	if (r == KR_E_KMIP_FORMAT) {
		ops_fail(res, KMIP_REASON_KEY_FORMAT_TYPE_NOT_SUPPORTED, "the key material cannot be read in that format");
		return;
	}
	if (r < 0) {
		ops_fail_token(st, res, r);
		return;
	}
	store_uid(o.kind, o.id, o.id_len, o.uid);
	if (has_block) {
		CK_ATTRIBUTE kt = { CKA_KEY_TYPE, &o.key_type, sizeof(o.key_type) };

		if (p11_get_attrs(st->tok, o.handle, &kt, 1) < 0)
			o.key_type = CK_UNAVAILABLE_INFORMATION;
	}
	{
		const struct ttlv_item *value = !object || has_block	  ? NULL
						: o.kind == STORE_CERT ? ttlv_find(object, KMIP_TAG_CERTIFICATE_VALUE)
								       : ttlv_find(object, KMIP_TAG_OPAQUE_DATA_VALUE);
		const struct new_meta m = { &k, initial_state(&k), k.usage, NULL, 0, st, &o,
					    has_block ? kb.format : 0, has_block ? kb.material : NULL, value };

		if (!put_first_meta(st, &o, &m, res)) {
			if (p11_destroy(st->tok, o.handle) < 0)
				res->message = "the object could not be removed after a failure";
			return;
		}
	}
	if (!has_block || o.key_type != CK_UNAVAILABLE_INFORMATION)
		store_remember(st, &o);
	ops_acted_on(ctx, &o);
	ttlv_begin(w, KMIP_TAG_RESPONSE_PAYLOAD);
	ops_put_uid(w, KMIP_TAG_UNIQUE_IDENTIFIER, o.uid);
	ttlv_end(w);
}

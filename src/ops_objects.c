#include "config.h"

#include <gnutls/abstract.h>
#include <gnutls/crypto.h>
#include <gnutls/x509.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ops_internal.h"
#include "store.h"

/* KMIP enumerations and masks this module speaks. */
enum {
	ALG_AES = 0x03, ALG_RSA = 0x04, ALG_ECDSA = 0x06, ALG_HMAC_SHA1 = 0x07, ALG_HMAC_SHA224 = 0x08,
	ALG_HMAC_SHA256 = 0x09, ALG_HMAC_SHA384 = 0x0A, ALG_HMAC_SHA512 = 0x0B, ALG_EC = 0x1A, ALG_ED25519 = 0x37,
};
enum { CURVE_P256 = 0x07, CURVE_P384 = 0x0A, CURVE_P521 = 0x0D, CURVE_ED25519 = 0x44 };
enum { OBJ_SYMMETRIC_KEY = 2, OBJ_PUBLIC_KEY = 3, OBJ_PRIVATE_KEY = 4, OBJ_SECRET_DATA = 7, OBJ_OPAQUE = 8 };
enum { STATE_PRE_ACTIVE = 1, STATE_ACTIVE = 2, STATE_DEACTIVATED = 3, STATE_COMPROMISED = 4, STATE_DESTROYED = 5 };
enum { FMT_RAW = 1, FMT_OPAQUE = 2, FMT_PKCS1 = 3, FMT_PKCS8 = 4, FMT_X509 = 5, FMT_TRANSPARENT_SYMMETRIC = 7,
       FMT_TRANSPARENT_RSA_PUBLIC = 0x0B };
enum { LINK_PUBLIC_KEY = 0x102, LINK_PRIVATE_KEY = 0x103 };
enum { NAME_UNINTERPRETED = 1 };
enum { REVOKE_KEY_COMPROMISE = 2, REVOKE_CA_COMPROMISE = 3 };
enum {
	USE_SIGN = 0x1, USE_VERIFY = 0x2, USE_ENCRYPT = 0x4, USE_DECRYPT = 0x8, USE_WRAP = 0x10, USE_UNWRAP = 0x20,
	USE_MAC_GENERATE = 0x80, USE_MAC_VERIFY = 0x100,
};

/* DER ECParameters (namedCurve OIDs) for CKA_EC_PARAMS. */
static const struct {
	uint32_t curve;
	int32_t bits;
	const uint8_t *der;
	size_t len;
	gnutls_ecc_curve_t gnutls;
} curves[] = {
	{ CURVE_P256, 256, (const uint8_t *)"\x06\x08\x2a\x86\x48\xce\x3d\x03\x01\x07", 10, GNUTLS_ECC_CURVE_SECP256R1 },
	{ CURVE_P384, 384, (const uint8_t *)"\x06\x05\x2b\x81\x04\x00\x22", 7, GNUTLS_ECC_CURVE_SECP384R1 },
	{ CURVE_P521, 521, (const uint8_t *)"\x06\x05\x2b\x81\x04\x00\x23", 7, GNUTLS_ECC_CURVE_SECP521R1 },
	{ CURVE_ED25519, 255, (const uint8_t *)"\x06\x03\x2b\x65\x70", 5, GNUTLS_ECC_CURVE_ED25519 },
};
#define N_CURVES (sizeof(curves) / sizeof(curves[0]))

/* Which PKCS#11 usage flag each usage-mask bit sets, on which kind of object, and
 * whether it only processes (verify, decrypt), which a Deactivated or Compromised key
 * still may. The token enforces the lifecycle through these flags. */
static const struct {
	uint32_t bit;
	enum store_kind kind;
	CK_ATTRIBUTE_TYPE flag;
	bool process;
} usage_flags[] = {
	{ USE_SIGN, STORE_PRIVATE, CKA_SIGN, false },
	{ USE_DECRYPT, STORE_PRIVATE, CKA_DECRYPT, true },
	{ USE_UNWRAP, STORE_PRIVATE, CKA_UNWRAP, true },
	{ USE_VERIFY, STORE_PUBLIC, CKA_VERIFY, true },
	{ USE_ENCRYPT, STORE_PUBLIC, CKA_ENCRYPT, false },
	{ USE_WRAP, STORE_PUBLIC, CKA_WRAP, false },
	{ USE_ENCRYPT, STORE_SECRET, CKA_ENCRYPT, false },
	{ USE_DECRYPT, STORE_SECRET, CKA_DECRYPT, true },
	{ USE_MAC_GENERATE, STORE_SECRET, CKA_SIGN, false },
	{ USE_MAC_VERIFY, STORE_SECRET, CKA_VERIFY, true },
	{ USE_WRAP, STORE_SECRET, CKA_WRAP, false },
	{ USE_UNWRAP, STORE_SECRET, CKA_UNWRAP, true },
};
#define N_USAGE_FLAGS (sizeof(usage_flags) / sizeof(usage_flags[0]))
#define MAX_FLAGS 6 /* per kind */

static bool flag_allowed(unsigned i, uint32_t mask, uint32_t state)
{
	if (!(mask & usage_flags[i].bit))
		return false;
	return state == STATE_ACTIVE ||
	       (usage_flags[i].process && (state == STATE_DEACTIVATED || state == STATE_COMPROMISED));
}

/* The usage flags of a kind of object in a state, as a template. */
static size_t usage_template(enum store_kind kind, uint32_t mask, uint32_t state, CK_BBOOL *values,
			     CK_ATTRIBUTE *out)
{
	size_t n = 0;

	for (unsigned i = 0; i < N_USAGE_FLAGS && n < MAX_FLAGS; i++) {
		if (usage_flags[i].kind != kind)
			continue;
		values[n] = flag_allowed(i, mask, state) ? CK_TRUE : CK_FALSE;
		out[n] = (CK_ATTRIBUTE){ usage_flags[i].flag, &values[n], sizeof(CK_BBOOL) };
		n++;
	}
	return n;
}

struct store *ops_store(struct ops_ctx *ctx, struct ops_result *res)
{
	struct store *st = NULL;
	int r = token_store(ctx->token, ctx->header, ctx->credential_client, &st);

	if (r < 0) {
		ops_fail_err(res, r);
		if (ctx->token->why)
			res->message = ctx->token->why;
		return NULL;
	}
	return st;
}

static int64_t now(void)
{
	return (int64_t)time(NULL);
}

/* Records the object for the audit record and as the batch's ID Placeholder. */
static void acted_on(struct ops_ctx *ctx, const struct store_obj *o)
{
	memcpy(ctx->uid, o->uid, sizeof(ctx->uid));
	memcpy(ctx->placeholder, o->uid, sizeof(ctx->placeholder));
}

/* The object a request names by Unique Identifier, or, without one, the object the
 * previous batch item acted on (the ID Placeholder). */
bool ops_find_object(struct ops_ctx *ctx, struct store *st, const struct ttlv_item *payload, struct store_obj *ret,
		     struct ops_result *res)
{
	const struct ttlv_item *uid = ttlv_find(payload, KMIP_TAG_UNIQUE_IDENTIFIER);
	int r;

	if (uid && uid->type != TTLV_TEXT_STRING) {
		ops_fail(res, KMIP_REASON_INVALID_FIELD, "Unique Identifier must be a Text String");
		return false;
	}
	if (!uid && !ctx->placeholder[0]) {
		ops_fail(res, KMIP_REASON_MISSING_DATA, "no Unique Identifier");
		return false;
	}
	r = uid ? store_find(st, (const char *)uid->value, uid->len, ret)
		: store_find(st, ctx->placeholder, strlen(ctx->placeholder), ret);
	if (r < 0) {
		ops_fail_err(res, r);
		return false;
	}
	acted_on(ctx, ret);
	return true;
}

/* Metadata helpers: the attributes the token has no place for. */

static const struct kmip_attr *meta_attr(const struct store_meta *m, uint32_t tag)
{
	for (size_t i = 0; i < m->attrs.n; i++)
		if (m->attrs.v[i].tag == tag)
			return &m->attrs.v[i];
	return NULL;
}

static uint32_t meta_enum(const struct store_meta *m, uint32_t tag, uint32_t dflt)
{
	const struct kmip_attr *a = meta_attr(m, tag);

	return a && (a->value->type == TTLV_ENUMERATION || a->value->type == TTLV_INTEGER) ? ttlv_enum(a->value) : dflt;
}

/* Keys that carry no relay metadata (made elsewhere) count as Active. */
static uint32_t meta_state(const struct store_meta *m)
{
	return meta_enum(m, KMIP_TAG_STATE, STATE_ACTIVE);
}

static const struct kmip_version meta_version = { 2, 1 };

/* One attribute as metadata holds it: under its tag, or as a vendor Attribute. */
static void put_attr(struct ttlv_writer *w, const struct kmip_attr *a)
{
	const struct kmip_attrs one = { (struct kmip_attr *)a, 1 };

	kmip_attrs_encode(w, 0, &one, meta_version);
}

/* A new metadata generation: the old attributes minus those in replace[], then what
 * add() writes, and a new Last Change Date. */
typedef void (*meta_add_fn)(struct ttlv_writer *w, const void *arg);

static int meta_rewrite(struct store *st, const struct store_obj *o, const struct store_meta *old,
			const uint32_t *replace, size_t n_replace, meta_add_fn add, const void *arg)
{
	struct ttlv_writer w;
	uint8_t *buf = NULL;
	size_t len = 0;
	int r;

	ttlv_writer_init(&w, TTLV_DEFAULT_MAX_SIZE);
	ttlv_begin(&w, KMIP_TAG_ATTRIBUTES);
	for (size_t i = 0; old && i < old->attrs.n; i++) {
		const struct kmip_attr *a = &old->attrs.v[i];
		bool replaced = a->tag == KMIP_TAG_LAST_CHANGE_DATE;

		for (size_t k = 0; k < n_replace; k++)
			replaced |= a->tag == replace[k];
		if (!replaced)
			put_attr(&w, a);
	}
	add(&w, arg);
	ttlv_put_datetime(&w, KMIP_TAG_LAST_CHANGE_DATE, now());
	ttlv_end(&w);
	r = ttlv_writer_finish(&w, &buf, &len);
	if (r == 0)
		r = store_meta_write(st, o, buf, len);
	ttlv_buf_free(buf, len);
	return r;
}

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
	struct kmip_attr kept[32]; /* attributes the token has no place for; they borrow
				    * from the request */
	size_t n_kept;
};

static void key_request_init(struct key_request *k)
{
	*k = (struct key_request){ .sensitive = -1, .extractable = -1 };
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
	case KMIP_TAG_UNIQUE_IDENTIFIER:
	case KMIP_TAG_OBJECT_TYPE:
	case KMIP_TAG_STATE:
	case KMIP_TAG_INITIAL_DATE:
	case KMIP_TAG_LAST_CHANGE_DATE:
	case KMIP_TAG_LINK:
		ops_fail(res, KMIP_REASON_ATTRIBUTE_READ_ONLY, "the server sets this attribute");
		return false;
	default:
		if (k->n_kept == sizeof(k->kept) / sizeof(k->kept[0])) {
			ops_fail(res, KMIP_REASON_SERVER_LIMIT_EXCEEDED, "too many attributes");
			return false;
		}
		k->kept[k->n_kept++] = *a;
		return true;
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
};

static void put_link(struct ttlv_writer *w, uint32_t type, const char *uid)
{
	ttlv_begin(w, KMIP_TAG_LINK);
	ttlv_put_enum(w, KMIP_TAG_LINK_TYPE, type);
	ttlv_put_text(w, KMIP_TAG_LINKED_OBJECT_IDENTIFIER, uid, strlen(uid));
	ttlv_end(w);
}

static void put_new_meta(struct ttlv_writer *w, const void *arg)
{
	const struct new_meta *m = arg;
	const struct kmip_attrs kept = { (struct kmip_attr *)m->k->kept, m->k->n_kept };

	ttlv_put_enum(w, KMIP_TAG_STATE, m->state);
	ttlv_put_datetime(w, KMIP_TAG_INITIAL_DATE, now());
	if (m->k->has_activation)
		ttlv_put_datetime(w, KMIP_TAG_ACTIVATION_DATE, m->k->activation);
	if (m->k->algorithm) /* certificates have none */
		ttlv_put_enum(w, KMIP_TAG_CRYPTOGRAPHIC_ALGORITHM, m->k->algorithm);
	if (m->k->length)
		ttlv_put_int(w, KMIP_TAG_CRYPTOGRAPHIC_LENGTH, m->k->length);
	ttlv_put_int(w, KMIP_TAG_CRYPTOGRAPHIC_USAGE_MASK, (int32_t)m->usage);
	if (m->link_uid)
		put_link(w, m->link_type, m->link_uid);
	kmip_attrs_encode(w, 0, &kept, meta_version);
}

static uint32_t initial_state(const struct key_request *k)
{
	return k->has_activation && k->activation <= now() ? STATE_ACTIVE : STATE_PRE_ACTIVE;
}

static void put_uid(struct ttlv_writer *w, uint32_t tag, const char *uid)
{
	ttlv_put_text(w, tag, uid, strlen(uid));
}

/* Common attributes of every new key object. */
struct key_template {
	CK_ATTRIBUTE a[24];
	size_t n;
	CK_OBJECT_CLASS cls;
	CK_BBOOL yes, no, sensitive, extractable;
	CK_BBOOL flags[MAX_FLAGS];
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
		t->sensitive = k->sensitive >= 0 ? (CK_BBOOL)k->sensitive : !ctx->cfg->keys.extractable;
		t->extractable = k->extractable >= 0 ? (CK_BBOOL)k->extractable : ctx->cfg->keys.extractable;
		tmpl_add(t, CKA_PRIVATE, &t->yes, sizeof(CK_BBOOL));
		tmpl_add(t, CKA_SENSITIVE, &t->sensitive, sizeof(CK_BBOOL));
		tmpl_add(t, CKA_EXTRACTABLE, &t->extractable, sizeof(CK_BBOOL));
	}
	t->n += usage_template(kind, usage, initial_state(k), t->flags, t->a + t->n);
}

static bool put_first_meta(struct store *st, const struct store_obj *o, const struct new_meta *m,
			   struct ops_result *res)
{
	int r = meta_rewrite(st, o, NULL, NULL, 0, put_new_meta, m);

	if (r < 0)
		ops_fail_err(res, r);
	return r == 0;
}

static bool curve_of(struct key_request *k, size_t *ret)
{
	for (size_t i = 0; i < N_CURVES; i++)
		if (k->curve ? curves[i].curve == k->curve : curves[i].bits == k->length) {
			*ret = i;
			k->curve = curves[i].curve;
			k->length = curves[i].bits;
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

	key_request_init(&kpriv);
	key_request_init(&kpub);
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
		if (!curve_of(&kpriv, &curve) || (curves[curve].curve == CURVE_ED25519) != (kpriv.algorithm == ALG_ED25519)) {
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
	if (kpriv.has_usage)
		upriv = kpriv.usage;
	if (kpub.has_usage)
		upub = kpub.usage;
	if (!(st = ops_store(ctx, res)))
		return;
	if ((r = store_new_id(st, id)) < 0) {
		ops_fail_err(res, r);
		return;
	}
	tmpl_init(&tpriv, ctx, STORE_PRIVATE, &kpriv, id, upriv);
	tmpl_init(&tpub, ctx, STORE_PUBLIC, &kpub, id, upub);
	bits = (CK_ULONG)kpriv.length;
	if (mech.mechanism == CKM_RSA_PKCS_KEY_PAIR_GEN) {
		tmpl_add(&tpub, CKA_MODULUS_BITS, &bits, sizeof(bits));
		tmpl_add(&tpub, CKA_PUBLIC_EXPONENT, f4, sizeof(f4));
	} else {
		tmpl_add(&tpub, CKA_EC_PARAMS, curves[curve].der, curves[curve].len);
	}
	r = p11_generate_key_pair(st->tok, &mech, tpub.a, tpub.n, tpriv.a, tpriv.n, &opub.handle, &opriv.handle);
	if (r < 0) {
		ops_fail_err(res, r);
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
		const struct new_meta mpriv = { &kpriv, initial_state(&kpriv), upriv, opub.uid, LINK_PUBLIC_KEY };
		const struct new_meta mpub = { &kpub, initial_state(&kpub), upub, opriv.uid, LINK_PRIVATE_KEY };

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
	acted_on(ctx, &opriv);
	ttlv_begin(w, KMIP_TAG_RESPONSE_PAYLOAD);
	put_uid(w, KMIP_TAG_PRIVATE_KEY_UNIQUE_IDENTIFIER, opriv.uid);
	put_uid(w, KMIP_TAG_PUBLIC_KEY_UNIQUE_IDENTIFIER, opub.uid);
	ttlv_end(w);
}

static const uint32_t create_tags[] = { KMIP_TAG_TEMPLATE_ATTRIBUTE, KMIP_TAG_ATTRIBUTES };

/* HMAC keys are generic secrets, by default as long as the hash. */
static int32_t hmac_length(uint32_t algorithm)
{
	switch (algorithm) {
	case ALG_HMAC_SHA1: return 160;
	case ALG_HMAC_SHA224: return 224;
	case ALG_HMAC_SHA256: return 256;
	case ALG_HMAC_SHA384: return 384;
	case ALG_HMAC_SHA512: return 512;
	default: return 0;
	}
}

void op_create(struct ops_ctx *ctx, const struct ttlv_item *payload, struct ttlv_writer *w, struct ops_result *res)
{
	const struct ttlv_item *type = ttlv_find(payload, KMIP_TAG_OBJECT_TYPE);
	struct key_request k;
	struct key_template t;
	struct store_obj o = { .kind = STORE_SECRET, .id_len = STORE_ID_LEN };
	CK_MECHANISM mech = { CKM_AES_KEY_GEN, NULL, 0 };
	CK_KEY_TYPE key_type = CKK_AES;
	CK_ULONG value_len;
	struct store *st;
	int r;

	key_request_init(&k);
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
	if (k.algorithm == ALG_AES) {
		if (k.length != 128 && k.length != 192 && k.length != 256) {
			ops_fail(res, KMIP_REASON_INVALID_ATTRIBUTE_VALUE, "AES keys are 128, 192 or 256 bits");
			return;
		}
		if (!k.has_usage)
			k.usage = USE_ENCRYPT | USE_DECRYPT;
	} else if (hmac_length(k.algorithm)) {
		if (!k.length)
			k.length = hmac_length(k.algorithm);
		if (k.length % 8 != 0 || k.length < 8) {
			ops_fail(res, KMIP_REASON_INVALID_ATTRIBUTE_VALUE, "HMAC key length must be whole bytes");
			return;
		}
		mech.mechanism = CKM_GENERIC_SECRET_KEY_GEN;
		key_type = CKK_GENERIC_SECRET;
		if (!k.has_usage)
			k.usage = USE_MAC_GENERATE | USE_MAC_VERIFY;
	} else {
		ops_fail(res, k.algorithm ? KMIP_REASON_INVALID_ATTRIBUTE_VALUE : KMIP_REASON_MISSING_DATA,
			 "Create makes AES and HMAC keys");
		return;
	}
	if (!(st = ops_store(ctx, res)))
		return;
	if ((r = store_new_id(st, o.id)) < 0) {
		ops_fail_err(res, r);
		return;
	}
	tmpl_init(&t, ctx, STORE_SECRET, &k, o.id, k.usage);
	value_len = (CK_ULONG)k.length / 8;
	tmpl_add(&t, CKA_VALUE_LEN, &value_len, sizeof(value_len));
	tmpl_add(&t, CKA_KEY_TYPE, &key_type, sizeof(key_type));
	r = p11_generate_key(st->tok, &mech, t.a, t.n, &o.handle);
	if (r < 0) {
		ops_fail_err(res, r);
		return;
	}
	store_uid(STORE_SECRET, o.id, o.id_len, o.uid);
	o.key_type = key_type;
	{
		const struct new_meta m = { &k, initial_state(&k), k.usage, NULL, 0 };

		if (!put_first_meta(st, &o, &m, res)) {
			if (p11_destroy(st->tok, o.handle) < 0)
				res->message = "the key could not be removed after a failure";
			return;
		}
	}
	store_remember(st, &o);
	acted_on(ctx, &o);
	ttlv_begin(w, KMIP_TAG_RESPONSE_PAYLOAD);
	ttlv_put_enum(w, KMIP_TAG_OBJECT_TYPE, OBJ_SYMMETRIC_KEY);
	put_uid(w, KMIP_TAG_UNIQUE_IDENTIFIER, o.uid);
	ttlv_end(w);
}

/* The usage a key may be put to: its metadata's mask, or for a key made elsewhere,
 * what its token flags allow now. */
static uint32_t usage_of(struct store *st, const struct store_obj *o, const struct store_meta *m)
{
	const struct kmip_attr *a = meta_attr(m, KMIP_TAG_CRYPTOGRAPHIC_USAGE_MASK);
	uint32_t mask = 0;

	if (a && a->value->type == TTLV_INTEGER)
		return (uint32_t)ttlv_int(a->value);
	for (unsigned i = 0; i < N_USAGE_FLAGS; i++) {
		CK_BBOOL v = CK_FALSE;
		CK_ATTRIBUTE attr = { usage_flags[i].flag, &v, sizeof(v) };

		if (usage_flags[i].kind == o->kind && p11_get_attrs(st->tok, o->handle, &attr, 1) == 0 && v)
			mask |= usage_flags[i].bit;
	}
	return mask;
}

/* A state change: the token's usage flags first (so that the token enforces it),
 * then the metadata, with the state and the dates that go with it. */
struct state_change {
	uint32_t state;
	uint32_t usage;
	uint32_t date_tags[2];
	size_t n_dates;
	const struct ttlv_item *revocation_reason;
};

static void put_state_change(struct ttlv_writer *w, const void *arg)
{
	const struct state_change *c = arg;

	ttlv_put_enum(w, KMIP_TAG_STATE, c->state);
	ttlv_put_int(w, KMIP_TAG_CRYPTOGRAPHIC_USAGE_MASK, (int32_t)c->usage);
	for (size_t i = 0; i < c->n_dates; i++)
		ttlv_put_datetime(w, c->date_tags[i], now());
	if (c->revocation_reason)
		ttlv_put_item(w, KMIP_TAG_REVOCATION_REASON, c->revocation_reason);
}

static int change_state(struct store *st, const struct store_obj *o, const struct store_meta *m,
			const struct state_change *c)
{
	uint32_t replaced[5] = { KMIP_TAG_STATE, KMIP_TAG_CRYPTOGRAPHIC_USAGE_MASK, KMIP_TAG_REVOCATION_REASON };
	size_t n_replaced = 3;
	CK_ATTRIBUTE flags[MAX_FLAGS];
	CK_BBOOL values[MAX_FLAGS];
	size_t n = usage_template(o->kind, c->usage, c->state, values, flags);
	int r = n ? p11_set_attrs(st->tok, o->handle, flags, n) : 0;

	for (size_t i = 0; i < c->n_dates; i++)
		replaced[n_replaced++] = c->date_tags[i];
	if (r == 0)
		r = meta_rewrite(st, o, m, replaced, n_replaced, put_state_change, c);
	return r;
}

/* The common start of a lifecycle operation: the lock, the object, its metadata. */
struct locked_object {
	struct store *st;
	struct store_obj o;
	struct store_meta meta;
	int lock;
};

static bool lock_object(struct ops_ctx *ctx, const struct ttlv_item *payload, struct locked_object *lo,
			struct ops_result *res)
{
	int r;

	*lo = (struct locked_object){ .lock = -1 };
	if (!(lo->st = ops_store(ctx, res)) || !ops_find_object(ctx, lo->st, payload, &lo->o, res))
		return false;
	if ((r = store_lock(lo->st, &lo->lock)) < 0 || (r = store_meta_read(lo->st, &lo->o, &lo->meta)) < 0) {
		store_unlock(lo->lock);
		ops_fail_err(res, r);
		return false;
	}
	return true;
}

static void unlock_object(struct locked_object *lo)
{
	store_meta_clear(&lo->meta);
	store_unlock(lo->lock);
}

static void put_uid_payload(struct ttlv_writer *w, const struct store_obj *o)
{
	ttlv_begin(w, KMIP_TAG_RESPONSE_PAYLOAD);
	put_uid(w, KMIP_TAG_UNIQUE_IDENTIFIER, o->uid);
	ttlv_end(w);
}

void op_activate(struct ops_ctx *ctx, const struct ttlv_item *payload, struct ttlv_writer *w,
		 struct ops_result *res)
{
	struct locked_object lo;
	int r;

	if (!lock_object(ctx, payload, &lo, res))
		return;
	if (meta_state(&lo.meta) != STATE_PRE_ACTIVE) {
		ops_fail(res, KMIP_REASON_WRONG_KEY_LIFECYCLE_STATE, "the object is not Pre-Active");
	} else {
		const struct state_change c = { STATE_ACTIVE, usage_of(lo.st, &lo.o, &lo.meta),
						{ KMIP_TAG_ACTIVATION_DATE }, 1, NULL };

		if ((r = change_state(lo.st, &lo.o, &lo.meta, &c)) < 0)
			ops_fail_err(res, r);
		else
			put_uid_payload(w, &lo.o);
	}
	unlock_object(&lo);
}

void op_revoke(struct ops_ctx *ctx, const struct ttlv_item *payload, struct ttlv_writer *w, struct ops_result *res)
{
	const struct ttlv_item *reason = ttlv_find(payload, KMIP_TAG_REVOCATION_REASON);
	const struct ttlv_item *code = reason && reason->type == TTLV_STRUCTURE
					       ? ttlv_find(reason, KMIP_TAG_REVOCATION_REASON_CODE)
					       : NULL;
	struct locked_object lo;
	uint32_t state;
	bool compromised;
	int r;

	if (!code || code->type != TTLV_ENUMERATION) {
		ops_fail(res, KMIP_REASON_MISSING_DATA, "Revocation Reason with its code is required");
		return;
	}
	if (!kmip_enum_name(KMIP_TAG_REVOCATION_REASON_CODE, ttlv_enum(code))) {
		ops_fail(res, KMIP_REASON_INVALID_FIELD, "unknown Revocation Reason Code");
		return;
	}
	compromised = ttlv_enum(code) == REVOKE_KEY_COMPROMISE || ttlv_enum(code) == REVOKE_CA_COMPROMISE;
	if (!lock_object(ctx, payload, &lo, res))
		return;
	state = meta_state(&lo.meta);
	if (state == STATE_DESTROYED || (state == STATE_COMPROMISED && !compromised)) {
		ops_fail(res, KMIP_REASON_WRONG_KEY_LIFECYCLE_STATE, "the object cannot be revoked in its state");
	} else {
		const struct state_change c = {
			compromised ? STATE_COMPROMISED : STATE_DEACTIVATED,
			usage_of(lo.st, &lo.o, &lo.meta),
			{ compromised ? KMIP_TAG_COMPROMISE_DATE : KMIP_TAG_DEACTIVATION_DATE },
			1,
			reason,
		};

		if ((r = change_state(lo.st, &lo.o, &lo.meta, &c)) < 0)
			ops_fail_err(res, r);
		else
			put_uid_payload(w, &lo.o);
	}
	unlock_object(&lo);
}

void op_destroy(struct ops_ctx *ctx, const struct ttlv_item *payload, struct ttlv_writer *w,
		struct ops_result *res)
{
	struct locked_object lo;
	int r;

	if (!lock_object(ctx, payload, &lo, res))
		return;
	/* The spec keeps an Active key from being destroyed; Cascade destroys without
	 * revoking, so the config may let its clients through. */
	if (meta_state(&lo.meta) == STATE_ACTIVE &&
	    !(ctx->credential_client && ctx->cfg->keys.destroy_revokes_for_credential_clients)) {
		ops_fail(res, KMIP_REASON_WRONG_KEY_LIFECYCLE_STATE, "an Active object must be revoked first");
	} else if ((r = p11_destroy(lo.st->tok, lo.o.handle)) < 0 || (r = store_meta_destroy(lo.st, &lo.o)) < 0) {
		ops_fail_err(res, r);
	} else {
		store_forget(lo.st, &lo.o);
		put_uid_payload(w, &lo.o);
	}
	unlock_object(&lo);
}

/* What the token says about a key, with the metadata's word where it has one. */
struct key_info {
	uint32_t object_type, algorithm;
	int32_t length;
	CK_KEY_TYPE key_type;
	size_t curve; /* index into curves[] for EC and EdDSA keys */
	struct kmip_text label;
	uint8_t *label_buf;
};

static const uint32_t object_types[STORE_N_KINDS] = {
	[STORE_PUBLIC] = OBJ_PUBLIC_KEY, [STORE_PRIVATE] = OBJ_PRIVATE_KEY, [STORE_SECRET] = OBJ_SYMMETRIC_KEY,
	[STORE_CERT] = 1, [STORE_DATA] = OBJ_OPAQUE,
};

static bool find_curve(const uint8_t *der, size_t len, size_t *ret)
{
	for (size_t i = 0; i < N_CURVES; i++)
		if (curves[i].len == len && memcmp(curves[i].der, der, len) == 0) {
			*ret = i;
			return true;
		}
	return false;
}

static int read_key_info(struct store *st, const struct store_obj *o, const struct store_meta *m, struct key_info *ki)
{
	CK_ATTRIBUTE type = { CKA_KEY_TYPE, &ki->key_type, sizeof(ki->key_type) };
	uint8_t *buf = NULL;
	size_t len = 0;
	int r;

	*ki = (struct key_info){ .object_type = object_types[o->kind] };
	if (p11_get_attr_alloc(st->tok, o->handle, CKA_LABEL, &ki->label_buf, &len) == 0)
		ki->label = (struct kmip_text){ (const char *)ki->label_buf, len };
	/* Secret Data is kept as a generic secret key; the metadata says which it is. */
	ki->object_type = meta_enum(m, KMIP_TAG_OBJECT_TYPE, ki->object_type);
	if (o->kind == STORE_CERT || o->kind == STORE_DATA)
		return 0;
	if ((r = p11_get_attrs(st->tok, o->handle, &type, 1)) < 0)
		return r;
	switch (ki->key_type) {
	case CKK_RSA:
		ki->algorithm = ALG_RSA;
		if ((r = p11_get_attr_alloc(st->tok, o->handle, CKA_MODULUS, &buf, &len)) == 0)
			ki->length = (int32_t)len * 8;
		break;
	case CKK_EC:
	case CKK_EC_EDWARDS:
		ki->algorithm = ki->key_type == CKK_EC ? ALG_ECDSA : ALG_ED25519;
		if ((r = p11_get_attr_alloc(st->tok, o->handle, CKA_EC_PARAMS, &buf, &len)) == 0 &&
		    find_curve(buf, len, &ki->curve))
			ki->length = curves[ki->curve].bits;
		break;
	case CKK_AES:
	case CKK_GENERIC_SECRET: {
		CK_ULONG vlen = 0;
		CK_ATTRIBUTE a = { CKA_VALUE_LEN, &vlen, sizeof(vlen) };

		ki->algorithm = ki->key_type == CKK_AES ? ALG_AES : ALG_HMAC_SHA256;
		if ((r = p11_get_attrs(st->tok, o->handle, &a, 1)) == 0)
			ki->length = (int32_t)vlen * 8;
		break;
	}
	default:
		break;
	}
	free(buf);
	/* The algorithm the client named (EC or ECDSA, which HMAC) is in the metadata. */
	ki->algorithm = meta_enum(m, KMIP_TAG_CRYPTOGRAPHIC_ALGORITHM, ki->algorithm);
	return r;
}

static void key_info_clear(struct key_info *ki)
{
	free(ki->label_buf);
	ki->label_buf = NULL;
}

/* Every attribute of an object as one KMIP 2.x Attributes structure: what the token
 * holds, then the metadata. */
static int all_attributes(struct store *st, const struct store_obj *o, const struct store_meta *m, uint8_t **ret,
			  size_t *ret_len)
{
	static const uint32_t computed[] = {
		KMIP_TAG_UNIQUE_IDENTIFIER, KMIP_TAG_OBJECT_TYPE, KMIP_TAG_CRYPTOGRAPHIC_ALGORITHM,
		KMIP_TAG_CRYPTOGRAPHIC_LENGTH, KMIP_TAG_NAME, KMIP_TAG_STATE,
	};
	struct key_info ki;
	struct ttlv_writer w;
	int r = read_key_info(st, o, m, &ki);

	if (r < 0) {
		key_info_clear(&ki);
		return r;
	}
	ttlv_writer_init(&w, TTLV_DEFAULT_MAX_SIZE);
	ttlv_begin(&w, KMIP_TAG_ATTRIBUTES);
	put_uid(&w, KMIP_TAG_UNIQUE_IDENTIFIER, o->uid);
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
	ttlv_put_enum(&w, KMIP_TAG_STATE, meta_state(m));
	/* A key pair made elsewhere has no Link in metadata; the shared CKA_ID is its link. */
	if (!meta_attr(m, KMIP_TAG_LINK) && (o->kind == STORE_PUBLIC || o->kind == STORE_PRIVATE)) {
		enum store_kind other = o->kind == STORE_PUBLIC ? STORE_PRIVATE : STORE_PUBLIC;
		struct store_obj half;

		if (store_find_kind(st, other, o->id, o->id_len, &half) == 0)
			put_link(&w, other == STORE_PUBLIC ? LINK_PUBLIC_KEY : LINK_PRIVATE_KEY, half.uid);
	}
	for (size_t i = 0; i < m->attrs.n; i++) {
		const struct kmip_attr *a = &m->attrs.v[i];
		bool skip = false;

		for (size_t k = 0; k < sizeof(computed) / sizeof(computed[0]); k++)
			skip |= a->tag == computed[k];
		if (!skip)
			put_attr(&w, a);
	}
	ttlv_end(&w);
	key_info_clear(&ki);
	return ttlv_writer_finish(&w, ret, ret_len);
}

/* The object's attributes decoded into the model, for filtering and re-encoding. */
struct object_attrs {
	uint8_t *buf;
	size_t len;
	struct ttlv_item *tree;
	struct kmip_attrs attrs;
};

static int load_attrs(struct store *st, const struct store_obj *o, struct object_attrs *oa)
{
	struct store_meta m = { 0 };
	int r;

	*oa = (struct object_attrs){ 0 };
	if ((r = store_meta_read(st, o, &m)) == 0 && (r = all_attributes(st, o, &m, &oa->buf, &oa->len)) == 0 &&
	    (r = ttlv_decode(oa->buf, oa->len, &ttlv_default_limits, &oa->tree)) == 0)
		r = kmip_attrs_decode(oa->tree, meta_version, &oa->attrs);
	store_meta_clear(&m);
	return r;
}

static void object_attrs_clear(struct object_attrs *oa)
{
	kmip_attrs_clear(&oa->attrs);
	ttlv_free(oa->tree);
	ttlv_buf_free(oa->buf, oa->len);
}

/* Whether a request asks for an attribute: by 1.x Attribute Name or 2.x Attribute
 * Reference; asking for none means all. */
/* The object the request names, with all its attributes. */
static bool object_and_attrs(struct ops_ctx *ctx, const struct ttlv_item *payload, struct store_obj *o,
			     struct object_attrs *oa, struct ops_result *res)
{
	struct store *st = ops_store(ctx, res);
	int r;

	if (!st || !ops_find_object(ctx, st, payload, o, res))
		return false;
	if ((r = load_attrs(st, o, oa)) < 0) {
		ops_fail_err(res, r);
		object_attrs_clear(oa);
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

void op_get_attributes(struct ops_ctx *ctx, const struct ttlv_item *payload, struct ttlv_writer *w,
		       struct ops_result *res)
{
	struct object_attrs oa;
	struct kmip_attr chosen[64];
	struct kmip_attrs out = { chosen, 0 };
	struct store_obj o;

	if (!object_and_attrs(ctx, payload, &o, &oa, res))
		return;
	for (size_t i = 0; i < oa.attrs.n && out.n < 64; i++)
		if (wanted(payload, &oa.attrs.v[i]))
			chosen[out.n++] = oa.attrs.v[i];
	ttlv_begin(w, KMIP_TAG_RESPONSE_PAYLOAD);
	put_uid(w, KMIP_TAG_UNIQUE_IDENTIFIER, o.uid);
	kmip_attrs_encode(w, ctx->version.major >= 2 ? KMIP_TAG_ATTRIBUTES : 0, &out, ctx->version);
	ttlv_end(w);
	object_attrs_clear(&oa);
}

void op_get_attribute_list(struct ops_ctx *ctx, const struct ttlv_item *payload, struct ttlv_writer *w,
			   struct ops_result *res)
{
	struct object_attrs oa;
	struct store_obj o;

	if (!object_and_attrs(ctx, payload, &o, &oa, res))
		return;
	ttlv_begin(w, KMIP_TAG_RESPONSE_PAYLOAD);
	put_uid(w, KMIP_TAG_UNIQUE_IDENTIFIER, o.uid);
	for (size_t i = 0; i < oa.attrs.n; i++) {
		const struct kmip_attr *a = &oa.attrs.v[i];
		const char *name = a->tag ? kmip_tag_name(a->tag) : NULL;
		char custom[256];

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
	object_attrs_clear(&oa);
}

/* Key material of a public key in the requested format. */
static int public_key_material(struct store *st, const struct store_obj *o, const struct key_info *ki,
			       uint32_t format, struct ttlv_writer *w)
{
	gnutls_datum_t params = { 0 }, point = { 0 }, der = { 0 };
	gnutls_pubkey_t pub = NULL;
	uint8_t *a = NULL, *b = NULL;
	size_t alen = 0, blen = 0;
	int r;

	if (ki->key_type == CKK_RSA) {
		if ((r = p11_get_attr_alloc(st->tok, o->handle, CKA_MODULUS, &a, &alen)) < 0 ||
		    (r = p11_get_attr_alloc(st->tok, o->handle, CKA_PUBLIC_EXPONENT, &b, &blen)) < 0)
			goto out;
		params = (gnutls_datum_t){ a, (unsigned)alen };
		point = (gnutls_datum_t){ b, (unsigned)blen };
		if (format == FMT_TRANSPARENT_RSA_PUBLIC) {
			ttlv_begin(w, KMIP_TAG_KEY_MATERIAL);
			ttlv_put_bigint(w, KMIP_TAG_MODULUS, a, alen);
			ttlv_put_bigint(w, KMIP_TAG_PUBLIC_EXPONENT, b, blen);
			ttlv_end(w);
			goto out;
		}
		/* RSAPublicKey is SEQUENCE { INTEGER n, INTEGER e }: the same shape GnuTLS
		 * writes for a DSA/ECDSA signature value. */
		if (format == FMT_PKCS1) {
			r = gnutls_encode_rs_value(&der, &params, &point) < 0 ? KR_E_NOMEM : 0;
			goto put;
		}
		if (format != FMT_X509) {
			r = KR_E_KMIP_FORMAT;
			goto out;
		}
		r = gnutls_pubkey_init(&pub) < 0 || gnutls_pubkey_import_rsa_raw(pub, &params, &point) < 0 ? KR_E_P11_FAILED : 0;
	} else if (ki->key_type == CKK_EC || ki->key_type == CKK_EC_EDWARDS) {
		if (format != FMT_RAW && format != FMT_X509) {
			r = KR_E_KMIP_FORMAT;
			goto out;
		}
		if ((r = p11_get_attr_alloc(st->tok, o->handle, CKA_EC_POINT, &b, &blen)) < 0)
			goto out;
		if (ki->key_type == CKK_EC) {
			if ((r = p11_get_attr_alloc(st->tok, o->handle, CKA_EC_PARAMS, &a, &alen)) < 0)
				goto out;
			params = (gnutls_datum_t){ a, (unsigned)alen };
			point = (gnutls_datum_t){ b, (unsigned)blen };
			r = gnutls_pubkey_init(&pub) < 0 || gnutls_pubkey_import_ecc_x962(pub, &params, &point) < 0
				    ? KR_E_P11_FAILED
				    : 0;
		} else {
			/* CKA_EC_POINT of an Edwards key: the 32 bytes, DER OCTET STRING wrapped or not */
			point = blen == 34 && b[0] == 0x04 && b[1] == 32 ? (gnutls_datum_t){ b + 2, 32 }
									 : (gnutls_datum_t){ b, (unsigned)blen };
			r = gnutls_pubkey_init(&pub) < 0 ||
				    gnutls_pubkey_import_ecc_raw(pub, GNUTLS_ECC_CURVE_ED25519, &point, NULL) < 0
				    ? KR_E_P11_FAILED
				    : 0;
		}
	} else {
		r = KR_E_KMIP_FORMAT;
		goto out;
	}
	if (r == 0 && gnutls_pubkey_export2(pub, GNUTLS_X509_FMT_DER, &der) < 0)
		r = KR_E_P11_FAILED;
put:
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

/* A private key's components, exported by GnuTLS as PKCS#8 or PKCS#1/ECPrivateKey;
 * only an extractable key gives them up. An EC key's public point comes from its
 * public half. */
static int private_key_material(struct store *st, const struct store_obj *o, const struct key_info *ki,
				uint32_t format, struct ttlv_writer *w)
{
	static const CK_ATTRIBUTE_TYPE rsa_types[] = {
		CKA_MODULUS, CKA_PUBLIC_EXPONENT, CKA_PRIVATE_EXPONENT, CKA_PRIME_1,
		CKA_PRIME_2, CKA_COEFFICIENT, CKA_EXPONENT_1, CKA_EXPONENT_2,
	};
	gnutls_datum_t d[8]; /* from p11_get_attr_alloc: malloc */
	size_t n = 0;
	gnutls_x509_privkey_t key = NULL;
	gnutls_datum_t der = { 0 };
	uint8_t *buf;
	size_t len;
	int r = 0;

	CK_BBOOL sensitive = CK_TRUE, extractable = CK_FALSE;
	CK_ATTRIBUTE flags[] = { { CKA_SENSITIVE, &sensitive, sizeof(sensitive) },
				 { CKA_EXTRACTABLE, &extractable, sizeof(extractable) } };

	/* A key that may not leave says so, whatever format was asked for. */
	if ((r = p11_get_attrs(st->tok, o->handle, flags, 2)) < 0)
		return r;
	if (sensitive || !extractable)
		return KR_E_P11_SENSITIVE;
	if (format != FMT_PKCS8 && format != FMT_PKCS1 && format != 6 /* ECPrivateKey */)
		return KR_E_KMIP_FORMAT;
	if (gnutls_x509_privkey_init(&key) < 0)
		return KR_E_NOMEM;
	if (ki->key_type == CKK_RSA && format != 6) {
		for (size_t i = 0; r == 0 && i < 8; i++)
			if ((r = p11_get_attr_alloc(st->tok, o->handle, rsa_types[i], &buf, &len)) == 0)
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

/* With no format asked for: PKCS#1 for RSA (which Cascade, Krill and PyKMIP all
 * read), Raw holding a SubjectPublicKeyInfo for EC (all Cascade reads), Raw for
 * symmetric keys. */
static uint32_t default_format(const struct store_obj *o, const struct key_info *ki)
{
	if (o->kind == STORE_PRIVATE)
		return FMT_PKCS8;
	return ki->key_type == CKK_RSA ? FMT_PKCS1 : FMT_RAW;
}

/* A certificate is returned as it was registered. */
static void get_certificate(struct store *st, const struct store_obj *o, struct ttlv_writer *w, struct ops_result *res)
{
	uint8_t *der = NULL;
	size_t len = 0;
	int r = p11_get_attr_alloc(st->tok, o->handle, CKA_VALUE, &der, &len);

	if (r < 0) {
		ops_fail_err(res, r);
		return;
	}
	ttlv_begin(w, KMIP_TAG_RESPONSE_PAYLOAD);
	ttlv_put_enum(w, KMIP_TAG_OBJECT_TYPE, 1 /* Certificate */);
	put_uid(w, KMIP_TAG_UNIQUE_IDENTIFIER, o->uid);
	ttlv_begin(w, KMIP_TAG_CERTIFICATE);
	ttlv_put_enum(w, KMIP_TAG_CERTIFICATE_TYPE, 1 /* X.509 */);
	ttlv_put_bytes(w, KMIP_TAG_CERTIFICATE_VALUE, der, len);
	ttlv_end(w);
	ttlv_end(w);
	free(der);
}

/* Secret Data and Opaque Objects come back as they were registered, if the token
 * lets their bytes out. */
static void get_data(struct store *st, const struct store_obj *o, const struct store_meta *m, uint32_t object_type,
		     struct ttlv_writer *w, struct ops_result *res)
{
	uint8_t *value = NULL;
	size_t len = 0;
	int r = p11_get_attr_alloc(st->tok, o->handle, CKA_VALUE, &value, &len);

	if (r < 0) {
		ops_fail_err(res, r);
		return;
	}
	ttlv_begin(w, KMIP_TAG_RESPONSE_PAYLOAD);
	ttlv_put_enum(w, KMIP_TAG_OBJECT_TYPE, object_type);
	put_uid(w, KMIP_TAG_UNIQUE_IDENTIFIER, o->uid);
	if (object_type == OBJ_OPAQUE) {
		ttlv_begin(w, KMIP_TAG_OPAQUE_OBJECT);
		ttlv_put_enum(w, KMIP_TAG_OPAQUE_DATA_TYPE, meta_enum(m, KMIP_TAG_OPAQUE_DATA_TYPE, 0x80000000));
		ttlv_put_bytes(w, KMIP_TAG_OPAQUE_DATA_VALUE, value, len);
	} else {
		ttlv_begin(w, KMIP_TAG_SECRET_DATA);
		ttlv_put_enum(w, KMIP_TAG_SECRET_DATA_TYPE, meta_enum(m, KMIP_TAG_SECRET_DATA_TYPE, 1 /* Password */));
		ttlv_begin(w, KMIP_TAG_KEY_BLOCK);
		ttlv_put_enum(w, KMIP_TAG_KEY_FORMAT_TYPE, FMT_OPAQUE);
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

static const uint32_t object_tags[STORE_N_KINDS] = {
	[STORE_PUBLIC] = KMIP_TAG_PUBLIC_KEY, [STORE_PRIVATE] = KMIP_TAG_PRIVATE_KEY,
	[STORE_SECRET] = KMIP_TAG_SYMMETRIC_KEY, [STORE_CERT] = KMIP_TAG_CERTIFICATE,
	[STORE_DATA] = KMIP_TAG_OPAQUE_OBJECT,
};

void op_get(struct ops_ctx *ctx, const struct ttlv_item *payload, struct ttlv_writer *w, struct ops_result *res)
{
	const struct ttlv_item *fmt = ttlv_find(payload, KMIP_TAG_KEY_FORMAT_TYPE);
	struct store *st = ops_store(ctx, res);
	struct store_meta m = { 0 };
	struct key_info ki = { 0 };
	struct store_obj o;
	uint32_t format;
	int r;

	if (!st || !ops_find_object(ctx, st, payload, &o, res))
		return;
	if (ttlv_find(payload, KMIP_TAG_KEY_WRAPPING_SPECIFICATION)) {
		ops_fail(res, KMIP_REASON_FEATURE_NOT_SUPPORTED, "key wrapping is not supported");
		return;
	}
	if ((r = store_meta_read(st, &o, &m)) < 0 || (r = read_key_info(st, &o, &m, &ki)) < 0) {
		ops_fail_err(res, r);
		goto out;
	}
	if (o.kind == STORE_CERT) {
		get_certificate(st, &o, w, res);
		goto out;
	}
	if (o.kind == STORE_DATA || ki.object_type == OBJ_SECRET_DATA) {
		get_data(st, &o, &m, ki.object_type, w, res);
		goto out;
	}
	format = fmt && fmt->type == TTLV_ENUMERATION ? ttlv_enum(fmt) : default_format(&o, &ki);
	ttlv_begin(w, KMIP_TAG_RESPONSE_PAYLOAD);
	ttlv_put_enum(w, KMIP_TAG_OBJECT_TYPE, ki.object_type);
	put_uid(w, KMIP_TAG_UNIQUE_IDENTIFIER, o.uid);
	ttlv_begin(w, object_tags[o.kind]);
	ttlv_begin(w, KMIP_TAG_KEY_BLOCK);
	ttlv_put_enum(w, KMIP_TAG_KEY_FORMAT_TYPE, format);
	ttlv_begin(w, KMIP_TAG_KEY_VALUE);
	switch (o.kind) {
	case STORE_PUBLIC:
		r = public_key_material(st, &o, &ki, format, w);
		break;
	case STORE_SECRET:
		r = secret_key_material(st, &o, format, w);
		break;
	case STORE_PRIVATE:
		r = private_key_material(st, &o, &ki, format, w);
		break;
	default:
		r = KR_E_KMIP_FORMAT;
		break;
	}
	ttlv_end(w);
	ttlv_put_enum(w, KMIP_TAG_CRYPTOGRAPHIC_ALGORITHM, ki.algorithm);
	ttlv_put_int(w, KMIP_TAG_CRYPTOGRAPHIC_LENGTH, ki.length);
	ttlv_end(w);
	ttlv_end(w);
	ttlv_end(w);
	if (r == KR_E_KMIP_FORMAT)
		ops_fail(res, KMIP_REASON_KEY_FORMAT_TYPE_NOT_SUPPORTED, "this key cannot be given in that format");
	else if (r < 0)
		ops_fail_err(res, r);
out:
	key_info_clear(&ki);
	store_meta_clear(&m);
}

/* The attribute a Modify Attribute request carries: 1.x Attribute, 2.x New Attribute. */
static bool modified_attr(const struct ops_ctx *ctx, const struct ttlv_item *payload, struct kmip_attrs *ret,
			  struct ops_result *res)
{
	const struct ttlv_item *c = ttlv_find(payload, ctx->version.major >= 2 ? KMIP_TAG_NEW_ATTRIBUTE
									     : KMIP_TAG_ATTRIBUTE);
	struct ttlv_item holder;
	int r;

	if (!c || c->type != TTLV_STRUCTURE) {
		ops_fail(res, KMIP_REASON_MISSING_DATA, "no attribute to modify");
		return false;
	}
	/* 1.x: decode the Attribute structure as the only child of a container. */
	holder = (struct ttlv_item){ .type = TTLV_STRUCTURE, .child = c };
	if (ctx->version.major < 2)
		c = &holder;
	if ((r = kmip_attrs_decode(c, ctx->version, ret)) < 0 || ret->n != 1) {
		if (r == 0)
			kmip_attrs_clear(ret);
		ops_fail_err(res, r < 0 ? r : KR_E_KMIP_MISSING);
		return false;
	}
	return true;
}

static bool read_only(uint32_t tag)
{
	switch (tag) {
	case KMIP_TAG_UNIQUE_IDENTIFIER:
	case KMIP_TAG_OBJECT_TYPE:
	case KMIP_TAG_CRYPTOGRAPHIC_ALGORITHM:
	case KMIP_TAG_CRYPTOGRAPHIC_LENGTH:
	case KMIP_TAG_STATE:
	case KMIP_TAG_INITIAL_DATE:
	case KMIP_TAG_LAST_CHANGE_DATE:
	case KMIP_TAG_ACTIVATION_DATE:
	case KMIP_TAG_DEACTIVATION_DATE:
	case KMIP_TAG_COMPROMISE_DATE:
	case KMIP_TAG_DESTROY_DATE:
	case KMIP_TAG_REVOCATION_REASON:
	case KMIP_TAG_CRYPTOGRAPHIC_USAGE_MASK:
		return true;
	default:
		return false;
	}
}

/* Which attribute a request means: a standard one by tag, a vendor one by name. */
struct attr_ref {
	uint32_t tag;
	struct kmip_text vendor, name;
};

static struct attr_ref ref_of(const struct kmip_attr *a)
{
	return (struct attr_ref){ a->tag, a->vendor, a->name };
}

static bool same_attr(const struct kmip_attr *a, const struct attr_ref *ref)
{
	if (ref->tag)
		return a->tag == ref->tag;
	return !a->tag && a->vendor.len == ref->vendor.len && a->name.len == ref->name.len &&
	       memcmp(a->vendor.ptr, ref->vendor.ptr, a->vendor.len) == 0 &&
	       memcmp(a->name.ptr, ref->name.ptr, a->name.len) == 0;
}

static bool meta_has(const struct store_meta *m, const struct attr_ref *ref)
{
	for (size_t i = 0; i < m->attrs.n; i++)
		if (same_attr(&m->attrs.v[i], ref))
			return true;
	return false;
}

/* A metadata generation with one attribute dropped and/or one added. */
struct rewrite {
	const struct store_meta *meta;
	const struct attr_ref *drop;
	const struct kmip_attr *add;
};

static void put_rewrite(struct ttlv_writer *w, const void *arg)
{
	const struct rewrite *rw = arg;

	for (size_t i = 0; i < rw->meta->attrs.n; i++) {
		const struct kmip_attr *a = &rw->meta->attrs.v[i];

		if ((!rw->drop || !same_attr(a, rw->drop)) && a->tag != KMIP_TAG_LAST_CHANGE_DATE)
			put_attr(w, a);
	}
	if (rw->add)
		put_attr(w, rw->add);
}

void op_modify_attribute(struct ops_ctx *ctx, const struct ttlv_item *payload, struct ttlv_writer *w,
			 struct ops_result *res)
{
	struct kmip_attrs attrs = { 0 };
	struct locked_object lo;
	const struct kmip_attr *a;
	int r = 0;

	if (!modified_attr(ctx, payload, &attrs, res))
		return;
	a = &attrs.v[0];
	if (a->tag && read_only(a->tag)) {
		ops_fail(res, KMIP_REASON_ATTRIBUTE_READ_ONLY, "the server keeps this attribute");
		kmip_attrs_clear(&attrs);
		return;
	}
	if (!lock_object(ctx, payload, &lo, res)) {
		kmip_attrs_clear(&attrs);
		return;
	}
	if (a->tag == KMIP_TAG_NAME) {
		/* A Name is the object's CKA_LABEL, where other PKCS#11 software sees it. */
		const struct ttlv_item *nv = a->value->type == TTLV_STRUCTURE ? ttlv_find(a->value, KMIP_TAG_NAME_VALUE) : NULL;
		CK_ATTRIBUTE label = { CKA_LABEL, NULL, 0 };

		if (!nv || nv->type != TTLV_TEXT_STRING) {
			ops_fail(res, KMIP_REASON_INVALID_ATTRIBUTE_VALUE, "a Name needs a Name Value");
			goto out;
		}
		label.pValue = (void *)nv->value;
		label.ulValueLen = nv->len;
		r = p11_set_attrs(lo.st->tok, lo.o.handle, &label, 1);
	} else {
		const struct attr_ref ref = ref_of(a);
		const struct rewrite rw = { &lo.meta, &ref, a };

		if (!meta_has(&lo.meta, &ref)) {
			ops_fail(res, KMIP_REASON_ATTRIBUTE_NOT_FOUND, "the object has no such attribute to modify");
			goto out;
		}
		r = meta_rewrite(lo.st, &lo.o, NULL, NULL, 0, put_rewrite, &rw);
	}
	if (r < 0) {
		ops_fail_err(res, r);
		goto out;
	}
	ttlv_begin(w, KMIP_TAG_RESPONSE_PAYLOAD);
	put_uid(w, KMIP_TAG_UNIQUE_IDENTIFIER, lo.o.uid);
	if (ctx->version.major < 2)
		kmip_attrs_encode(w, 0, &attrs, ctx->version);
	ttlv_end(w);
out:
	unlock_object(&lo);
	kmip_attrs_clear(&attrs);
}

/* Locate: the token filters what a template can say (class, label, key type); the
 * relay filters the rest, over a bounded number of candidates. */
#define LOCATE_MAX_CANDIDATES 1024

struct locate_query {
	int kind;            /* -1: any key */
	struct kmip_text name;
	struct kmip_text link_uid; /* a Link names the other half of a key pair */
	bool has_algorithm, has_length, has_state;
	uint32_t algorithm, state, object_type;
	int32_t length;
};

static bool read_locate_attr(const struct kmip_attr *a, struct locate_query *q, struct ops_result *res)
{
	const struct ttlv_item *v = a->value;

	switch (a->tag) {
	case KMIP_TAG_OBJECT_TYPE:
		q->kind = -2; /* a type this store does not hold */
		q->object_type = v->type == TTLV_ENUMERATION ? ttlv_enum(v) : 0;
		for (int k = 0; k < STORE_N_KINDS; k++)
			if (object_types[k] == q->object_type)
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
		ops_fail(res, KMIP_REASON_FEATURE_NOT_SUPPORTED, "Locate filters by Object Type, Name, Link, "
								  "Cryptographic Algorithm, Cryptographic Length and State");
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

static bool locate_matches(struct store *st, const struct store_obj *o, const struct locate_query *q)
{
	struct store_meta m = { 0 };
	struct key_info ki = { 0 };
	bool ok = store_meta_read(st, o, &m) == 0 && read_key_info(st, o, &m, &ki) == 0;

	if (ok && q->object_type)
		ok = q->object_type == ki.object_type;
	if (ok && q->has_algorithm)
		ok = algorithm_matches(q->algorithm, ki.algorithm);
	if (ok && q->has_length)
		ok = q->length == ki.length;
	if (ok && q->has_state)
		ok = q->state == meta_state(&m);
	key_info_clear(&ki);
	store_meta_clear(&m);
	return ok;
}

void op_locate(struct ops_ctx *ctx, const struct ttlv_item *payload, struct ttlv_writer *w, struct ops_result *res)
{
	const struct ttlv_item *max_items = ttlv_find(payload, KMIP_TAG_MAXIMUM_ITEMS);
	const struct ttlv_item *offset = ttlv_find(payload, KMIP_TAG_OFFSET_ITEMS);
	struct locate_query q = { .kind = -1 };
	struct kmip_attrs attrs = { 0 };
	struct ttlv_item holder = { .type = TTLV_STRUCTURE };
	struct ttlv_item items[64]; /* the decoded attributes borrow from these until the end */
	CK_OBJECT_HANDLE *handles = NULL;
	struct ttlv_writer found; /* the UIDs of this page */
	uint8_t *uids = NULL;
	size_t n_found = 0, skip = 0, limit = SIZE_MAX, matched = 0, total = 0, uids_len = 0;
	struct store_obj linked = { .id_len = 0 };
	struct store *st;
	int r = 0;

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
		limit = (size_t)ttlv_int(max_items);
	if (offset && offset->type == TTLV_INTEGER && ttlv_int(offset) > 0)
		skip = (size_t)ttlv_int(offset);
	if (!(st = ops_store(ctx, res)) || !(handles = calloc(LOCATE_MAX_CANDIDATES, sizeof(*handles)))) {
		if (st)
			ops_fail_err(res, KR_E_NOMEM);
		kmip_attrs_clear(&attrs);
		return;
	}
	if (q.link_uid.ptr && (r = store_find(st, q.link_uid.ptr, q.link_uid.len, &linked)) < 0) {
		/* Linked to nothing there is: nothing is found. */
		q.kind = -2;
		r = 0;
	}
	ttlv_writer_init(&found, TTLV_DEFAULT_MAX_SIZE);
	for (int k = 0; k < STORE_N_KINDS; k++) {
		CK_OBJECT_CLASS cls;
		CK_ATTRIBUTE tmpl[4];
		size_t n_tmpl;

		if (q.kind == -2 || (q.kind >= 0 && q.kind != k))
			continue;
		n_tmpl = store_kind_template((enum store_kind)k, q.link_uid.ptr ? linked.id : NULL, linked.id_len, &cls,
					     tmpl);
		if (q.name.ptr)
			tmpl[n_tmpl++] = (CK_ATTRIBUTE){ CKA_LABEL, (void *)q.name.ptr, q.name.len };
		if ((r = p11_find(st->tok, tmpl, n_tmpl, handles, LOCATE_MAX_CANDIDATES, &n_found)) < 0)
			break;
		for (size_t i = 0; i < n_found; i++) {
			uint8_t id[STORE_MAX_ID];
			CK_ATTRIBUTE ida = { store_id_attribute((enum store_kind)k), id, sizeof(id) };
			struct store_obj o = { .kind = (enum store_kind)k, .handle = handles[i] };

			if (p11_get_attrs(st->tok, handles[i], &ida, 1) < 0 || ida.ulValueLen == 0 ||
			    ida.ulValueLen > STORE_MAX_ID)
				continue;
			o.id_len = ida.ulValueLen;
			memcpy(o.id, id, o.id_len);
			store_uid(o.kind, o.id, o.id_len, o.uid);
			if (!locate_matches(st, &o, &q))
				continue;
			/* Located Items counts every match, the page holds Maximum Items. */
			total++;
			if (skip) {
				skip--;
				continue;
			}
			if (matched < limit) {
				put_uid(&found, KMIP_TAG_UNIQUE_IDENTIFIER, o.uid);
				matched++;
			}
		}
	}
	free(handles);
	kmip_attrs_clear(&attrs);
	if (r == 0 && matched)
		r = ttlv_writer_finish(&found, &uids, &uids_len);
	ttlv_writer_clear(&found);
	if (r < 0) {
		ops_fail_err(res, r);
		return;
	}
	ttlv_begin(w, KMIP_TAG_RESPONSE_PAYLOAD);
	if (ctx->version.major >= 2 || (ctx->version.major == 1 && ctx->version.minor >= 3))
		ttlv_put_int(w, KMIP_TAG_LOCATED_ITEMS, (int32_t)(total > INT32_MAX ? INT32_MAX : total));
	if (uids)
		ttlv_put_encoded(w, uids, uids_len);
	ttlv_end(w);
	ttlv_buf_free(uids, uids_len);
}

void ops_explain_refusal(struct store *st, const struct store_obj *o, struct ops_result *res)
{
	struct store_meta m = { 0 };
	uint32_t state = STATE_ACTIVE;

	if (store_meta_read(st, o, &m) == 0)
		state = meta_state(&m);
	store_meta_clear(&m);
	if (state != STATE_ACTIVE)
		ops_fail(res, KMIP_REASON_WRONG_KEY_LIFECYCLE_STATE, "the key is not Active");
	else
		ops_fail(res, KMIP_REASON_INCOMPATIBLE_CRYPTOGRAPHIC_USAGE_MASK, "the key's usage mask does not allow this");
}

/* Add Attribute and Delete Attribute change only the metadata: Name, which is the
 * token's CKA_LABEL, is changed with Modify Attribute. */
void op_add_attribute(struct ops_ctx *ctx, const struct ttlv_item *payload, struct ttlv_writer *w,
		      struct ops_result *res)
{
	struct kmip_attrs attrs = { 0 };
	struct locked_object lo;
	const struct kmip_attr *a;
	int r;

	if (!modified_attr(ctx, payload, &attrs, res))
		return;
	a = &attrs.v[0];
	if (a->tag && (read_only(a->tag) || a->tag == KMIP_TAG_NAME)) {
		ops_fail(res, a->tag == KMIP_TAG_NAME ? KMIP_REASON_ATTRIBUTE_SINGLE_VALUED : KMIP_REASON_ATTRIBUTE_READ_ONLY,
			 a->tag == KMIP_TAG_NAME ? "an object has one Name: modify it" : "the server keeps this attribute");
		kmip_attrs_clear(&attrs);
		return;
	}
	if (!lock_object(ctx, payload, &lo, res)) {
		kmip_attrs_clear(&attrs);
		return;
	}
	if (meta_has(&lo.meta, &(struct attr_ref){ a->tag, a->vendor, a->name })) {
		ops_fail(res, KMIP_REASON_ATTRIBUTE_SINGLE_VALUED, "the object has this attribute already");
	} else {
		const struct rewrite rw = { &lo.meta, NULL, a };

		if ((r = meta_rewrite(lo.st, &lo.o, NULL, NULL, 0, put_rewrite, &rw)) < 0) {
			ops_fail_err(res, r);
		} else {
			ttlv_begin(w, KMIP_TAG_RESPONSE_PAYLOAD);
			put_uid(w, KMIP_TAG_UNIQUE_IDENTIFIER, lo.o.uid);
			if (ctx->version.major < 2)
				kmip_attrs_encode(w, 0, &attrs, ctx->version);
			ttlv_end(w);
		}
	}
	unlock_object(&lo);
	kmip_attrs_clear(&attrs);
}

/* The attribute a Delete Attribute request names: a 1.x Attribute Name, a 2.x
 * Attribute Reference (a tag) or Current Attribute. */
static bool deleted_attr(const struct ops_ctx *ctx, const struct ttlv_item *payload, struct attr_ref *ref,
			 struct ops_result *res)
{
	const struct ttlv_item *name = ttlv_find(payload, KMIP_TAG_ATTRIBUTE_NAME);
	const struct ttlv_item *tag = ttlv_find(payload, KMIP_TAG_ATTRIBUTE_REFERENCE);
	const struct ttlv_item *cur = ttlv_find(payload, KMIP_TAG_CURRENT_ATTRIBUTE);

	*ref = (struct attr_ref){ 0 };
	if (ctx->version.major < 2 && name && name->type == TTLV_TEXT_STRING) {
		ref->tag = kmip_tag_by_name((const char *)name->value, name->len);
		if (!ref->tag && name->len > 2 && name->value[1] == '-') {
			ref->vendor = (struct kmip_text){ (const char *)name->value, 1 };
			ref->name = (struct kmip_text){ (const char *)name->value + 2, name->len - 2 };
		}
	} else if (tag && tag->type == TTLV_ENUMERATION) {
		ref->tag = ttlv_enum(tag);
	} else if (cur && cur->type == TTLV_STRUCTURE && cur->child) {
		const struct ttlv_item *a = cur->child;

		if (a->tag == KMIP_TAG_ATTRIBUTE && a->type == TTLV_STRUCTURE && a->child && a->child->next) {
			ref->vendor = (struct kmip_text){ (const char *)a->child->value, a->child->len };
			ref->name = (struct kmip_text){ (const char *)a->child->next->value, a->child->next->len };
		} else {
			ref->tag = a->tag;
		}
	}
	if (!ref->tag && !ref->name.ptr) {
		ops_fail(res, KMIP_REASON_MISSING_DATA, "no attribute to delete");
		return false;
	}
	return true;
}

void op_delete_attribute(struct ops_ctx *ctx, const struct ttlv_item *payload, struct ttlv_writer *w,
			 struct ops_result *res)
{
	struct attr_ref ref;
	struct locked_object lo;
	const struct kmip_attr *found = NULL;
	int r;

	if (!deleted_attr(ctx, payload, &ref, res))
		return;
	if (ref.tag && (read_only(ref.tag) || ref.tag == KMIP_TAG_NAME)) {
		ops_fail(res, KMIP_REASON_ATTRIBUTE_READ_ONLY, "this attribute cannot be deleted");
		return;
	}
	if (!lock_object(ctx, payload, &lo, res))
		return;
	for (size_t i = 0; i < lo.meta.attrs.n && !found; i++)
		if (same_attr(&lo.meta.attrs.v[i], &ref))
			found = &lo.meta.attrs.v[i];
	if (!found) {
		ops_fail(res, KMIP_REASON_ATTRIBUTE_NOT_FOUND, "the object has no such attribute");
	} else {
		const struct rewrite rw = { &lo.meta, &ref, NULL };

		if ((r = meta_rewrite(lo.st, &lo.o, NULL, NULL, 0, put_rewrite, &rw)) < 0) {
			ops_fail_err(res, r);
		} else {
			const struct kmip_attrs one = { (struct kmip_attr *)found, 1 };

			ttlv_begin(w, KMIP_TAG_RESPONSE_PAYLOAD);
			put_uid(w, KMIP_TAG_UNIQUE_IDENTIFIER, lo.o.uid);
			if (ctx->version.major < 2)
				kmip_attrs_encode(w, 0, &one, ctx->version);
			ttlv_end(w);
		}
	}
	unlock_object(&lo);
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

/* An RSA modulus's size in bits, without DER's leading zero byte. */
static int32_t rsa_bits(const gnutls_datum_t *n)
{
	return (int32_t)(n->size - (n->size && !n->data[0])) * 8;
}

static int curve_der(gnutls_ecc_curve_t c, size_t *ret)
{
	for (size_t i = 0; i < N_CURVES; i++)
		if (curves[i].gnutls == c) {
			*ret = i;
			return 0;
		}
	return KR_E_KMIP_FORMAT;
}

/* A public key from PKCS#1, X.509 (SubjectPublicKeyInfo, also as Raw for EC) or
 * Transparent RSA. */
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
		tmpl_value(t, v, CKA_MODULUS, a);
		tmpl_value(t, v, CKA_PUBLIC_EXPONENT, b);
		k->algorithm = ALG_RSA;
		k->length = rsa_bits(&a);
		return 0;
	}
	if (kb->format == FMT_TRANSPARENT_RSA_PUBLIC) {
		const struct ttlv_item *n = material_field(kb->material, KMIP_TAG_MODULUS);
		const struct ttlv_item *e = material_field(kb->material, KMIP_TAG_PUBLIC_EXPONENT);

		gnutls_datum_t nd, ed_;

		if (!n || !e)
			return KR_E_KMIP_FORMAT;
		/* A Big Integer carries sign-extension zeros; PKCS#11 wants the magnitude. */
		nd = item_datum(n);
		ed_ = item_datum(e);
		while (nd.size > 1 && nd.data[0] == 0)
			nd.data++, nd.size--;
		while (ed_.size > 1 && ed_.data[0] == 0)
			ed_.data++, ed_.size--;
		tmpl_add(t, CKA_KEY_TYPE, &rsa, sizeof(rsa));
		tmpl_add(t, CKA_MODULUS, nd.data, nd.size);
		tmpl_add(t, CKA_PUBLIC_EXPONENT, ed_.data, ed_.size);
		k->algorithm = ALG_RSA;
		k->length = rsa_bits(&nd);
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
		tmpl_value(t, v, CKA_MODULUS, a);
		tmpl_value(t, v, CKA_PUBLIC_EXPONENT, b);
		k->algorithm = ALG_RSA;
		r = 0;
		break;
	case GNUTLS_PK_ECDSA:
		if (gnutls_pubkey_export_ecc_x962(pub, &a, &b) < 0)
			goto out;
		tmpl_add(t, CKA_KEY_TYPE, &ec, sizeof(ec));
		tmpl_value(t, v, CKA_EC_PARAMS, a);
		tmpl_value(t, v, CKA_EC_POINT, b);
		k->algorithm = ALG_ECDSA;
		r = find_curve(a.data, a.size, &curve) ? 0 : KR_E_KMIP_FORMAT;
		if (r == 0)
			k->length = curves[curve].bits;
		break;
	case GNUTLS_PK_EDDSA_ED25519: {
		gnutls_ecc_curve_t c;

		if (gnutls_pubkey_export_ecc_raw2(pub, &c, &a, NULL, 0) < 0 || curve_der(c, &curve) < 0)
			goto out;
		tmpl_add(t, CKA_KEY_TYPE, &ed, sizeof(ed));
		tmpl_add(t, CKA_EC_PARAMS, curves[curve].der, curves[curve].len);
		tmpl_value(t, v, CKA_EC_POINT, a);
		k->algorithm = ALG_ED25519;
		k->length = curves[curve].bits;
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
	    (kb->format != FMT_PKCS8 && kb->format != FMT_PKCS1 && kb->format != 6 /* ECPrivateKey */))
		return KR_E_KMIP_FORMAT;
	der = item_datum(kb->material);
	if (gnutls_x509_privkey_init(&key) < 0)
		return KR_E_NOMEM;
	if (gnutls_x509_privkey_import2(key, &der, GNUTLS_X509_FMT_DER, NULL, GNUTLS_PKCS_PLAIN) < 0)
		goto out;
	switch (gnutls_x509_privkey_get_pk_algorithm(key)) {
	case GNUTLS_PK_RSA: {
		static const CK_ATTRIBUTE_TYPE types[] = {
			CKA_MODULUS, CKA_PUBLIC_EXPONENT, CKA_PRIVATE_EXPONENT, CKA_PRIME_1,
			CKA_PRIME_2, CKA_COEFFICIENT, CKA_EXPONENT_1, CKA_EXPONENT_2,
		};

		if (gnutls_x509_privkey_export_rsa_raw2(key, &c[0], &c[1], &c[2], &c[3], &c[4], &c[5], &c[6], &c[7]) < 0)
			goto out;
		tmpl_add(t, CKA_KEY_TYPE, &rsa, sizeof(rsa));
		for (size_t i = 0; i < 8; i++)
			tmpl_value(t, v, types[i], c[i]);
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
		tmpl_add(t, CKA_EC_PARAMS, curves[curve].der, curves[curve].len);
		tmpl_value(t, v, CKA_VALUE, c[2]);
		k->algorithm = ALG_ECDSA;
		k->length = curves[curve].bits;
		r = 0;
		break;
	default:
		break;
	}
out:
	gnutls_x509_privkey_deinit(key);
	return r;
}

static int symmetric_template(const struct key_block *kb, struct key_template *t, struct key_request *k)
{
	static CK_KEY_TYPE aes = CKK_AES, generic = CKK_GENERIC_SECRET;
	const struct ttlv_item *key = kb->format == FMT_RAW && kb->material->type == TTLV_BYTE_STRING ? kb->material
				      : kb->format == FMT_TRANSPARENT_SYMMETRIC ? material_field(kb->material, KMIP_TAG_KEY)
										  : NULL;

	if (!key)
		return KR_E_KMIP_FORMAT;
	k->algorithm = kb->algorithm ? kb->algorithm : k->algorithm;
	if (k->algorithm != ALG_AES && !hmac_length(k->algorithm))
		return KR_E_P11_TEMPLATE;
	tmpl_add(t, CKA_KEY_TYPE, k->algorithm == ALG_AES ? &aes : &generic, sizeof(CK_KEY_TYPE));
	tmpl_add(t, CKA_VALUE, key->value, key->len);
	k->length = (int32_t)key->len * 8;
	return 0;
}

enum { OBJ_CERTIFICATE = 1, CERT_X509 = 1 };

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
	if (!it)
		return true;
	if (k->n_kept == sizeof(k->kept) / sizeof(k->kept[0])) {
		ops_fail(res, KMIP_REASON_SERVER_LIMIT_EXCEEDED, "too many attributes");
		return false;
	}
	k->kept[k->n_kept++] = (struct kmip_attr){ .tag = it->tag, .value = it };
	return true;
}

static const enum store_kind register_kinds[] = {
	[OBJ_CERTIFICATE] = STORE_CERT, [OBJ_SYMMETRIC_KEY] = STORE_SECRET, [OBJ_PUBLIC_KEY] = STORE_PUBLIC,
	[OBJ_PRIVATE_KEY] = STORE_PRIVATE, [OBJ_SECRET_DATA] = STORE_SECRET, [OBJ_OPAQUE] = STORE_DATA,
};

void op_register(struct ops_ctx *ctx, const struct ttlv_item *payload, struct ttlv_writer *w,
		 struct ops_result *res)
{
	const struct ttlv_item *type = ttlv_find(payload, KMIP_TAG_OBJECT_TYPE), *object;
	struct key_request k;
	struct key_template t;
	struct values v = { .n = 0 };
	struct key_block kb = { 0 };
	struct store_obj o = { .id_len = STORE_ID_LEN };
	uint32_t obj_type;
	struct store *st;
	int r;

	key_request_init(&k);
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
	object = ttlv_find(payload, obj_type == OBJ_SECRET_DATA ? KMIP_TAG_SECRET_DATA : object_tags[o.kind]);
	if (object && object->type != TTLV_STRUCTURE)
		object = NULL;
	if (!read_templates(ctx, payload, create_tags, 2, &k, res) ||
	    (o.kind != STORE_CERT && o.kind != STORE_DATA && !read_key_block(object, &kb, res)))
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
	}
	if (!(st = ops_store(ctx, res)))
		return;
	if ((r = store_new_id(st, o.id)) < 0) {
		ops_fail_err(res, r);
		return;
	}
	if (!k.has_usage)
		k.usage = o.kind == STORE_PUBLIC    ? USE_VERIFY | USE_ENCRYPT
			  : o.kind == STORE_PRIVATE ? USE_SIGN | USE_DECRYPT
			  : o.kind == STORE_SECRET  ? USE_ENCRYPT | USE_DECRYPT
						    : USE_VERIFY;
	tmpl_init(&t, ctx, o.kind, &k, o.id, k.usage);
	r = obj_type == OBJ_SECRET_DATA ? secret_data_template(&kb, &t)
	    : o.kind == STORE_PUBLIC    ? public_template(&kb, &t, &v, &k)
	    : o.kind == STORE_PRIVATE   ? private_template(&kb, &t, &v, &k)
	    : o.kind == STORE_SECRET    ? symmetric_template(&kb, &t, &k)
	    : o.kind == STORE_DATA      ? opaque_template(object, &t)
					: certificate_template(object, &t, &v);
	if (r == 0)
		r = p11_create(st->tok, t.a, t.n, &o.handle);
	values_clear(&v);
	if (r == KR_E_KMIP_FORMAT) {
		ops_fail(res, KMIP_REASON_KEY_FORMAT_TYPE_NOT_SUPPORTED, "the key material cannot be read in that format");
		return;
	}
	if (r < 0) {
		ops_fail_err(res, r);
		return;
	}
	store_uid(o.kind, o.id, o.id_len, o.uid);
	{
		const struct new_meta m = { &k, initial_state(&k), k.usage, NULL, 0 };

		if (!put_first_meta(st, &o, &m, res)) {
			if (p11_destroy(st->tok, o.handle) < 0)
				res->message = "the object could not be removed after a failure";
			return;
		}
	}
	{
		CK_ATTRIBUTE kt = { CKA_KEY_TYPE, &o.key_type, sizeof(o.key_type) };

		if (o.kind == STORE_CERT || o.kind == STORE_DATA || p11_get_attrs(st->tok, o.handle, &kt, 1) == 0)
			store_remember(st, &o);
	}
	acted_on(ctx, &o);
	ttlv_begin(w, KMIP_TAG_RESPONSE_PAYLOAD);
	put_uid(w, KMIP_TAG_UNIQUE_IDENTIFIER, o.uid);
	ttlv_end(w);
}

/* Check: whether the object exists and may be put to the usage the request names. */
void op_check(struct ops_ctx *ctx, const struct ttlv_item *payload, struct ttlv_writer *w, struct ops_result *res)
{
	const struct ttlv_item *mask = ttlv_find(payload, KMIP_TAG_CRYPTOGRAPHIC_USAGE_MASK);
	struct store *st = ops_store(ctx, res);
	struct store_meta m = { 0 };
	struct store_obj o;
	int r;

	if (!st || !ops_find_object(ctx, st, payload, &o, res))
		return;
	if (mask && mask->type != TTLV_INTEGER) {
		ops_fail(res, KMIP_REASON_INVALID_FIELD, "Cryptographic Usage Mask must be an Integer");
		return;
	}
	if ((r = store_meta_read(st, &o, &m)) < 0) {
		ops_fail_err(res, r);
		return;
	}
	if (mask && ((uint32_t)ttlv_int(mask) & ~usage_of(st, &o, &m))) {
		ops_fail(res, KMIP_REASON_INCOMPATIBLE_CRYPTOGRAPHIC_USAGE_MASK, "the object's usage mask does not allow this");
	} else if (mask && meta_state(&m) != STATE_ACTIVE) {
		ops_fail(res, KMIP_REASON_WRONG_KEY_LIFECYCLE_STATE, "the object is not Active");
	} else {
		ttlv_begin(w, KMIP_TAG_RESPONSE_PAYLOAD);
		put_uid(w, KMIP_TAG_UNIQUE_IDENTIFIER, o.uid);
		ttlv_end(w);
	}
	store_meta_clear(&m);
}

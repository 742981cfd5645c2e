/* SPDX-License-Identifier: BSD-3-Clause */
#include "config.h"

/* The helpers the managed-object operations share (see ops_objects.h). */

#include <gnutls/abstract.h>
#include <gnutls/crypto.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ops_objects.h"

/* DER ECParameters (namedCurve OIDs) for CKA_EC_PARAMS. */
const struct ops_curve ops_curves[OPS_N_CURVES] = {
	{ CURVE_P256, 256, (const uint8_t *)"\x06\x08\x2a\x86\x48\xce\x3d\x03\x01\x07", 10, GNUTLS_ECC_CURVE_SECP256R1 },
	{ CURVE_P384, 384, (const uint8_t *)"\x06\x05\x2b\x81\x04\x00\x22", 7, GNUTLS_ECC_CURVE_SECP384R1 },
	{ CURVE_P521, 521, (const uint8_t *)"\x06\x05\x2b\x81\x04\x00\x23", 7, GNUTLS_ECC_CURVE_SECP521R1 },
	{ CURVE_ED25519, 255, (const uint8_t *)"\x06\x03\x2b\x65\x70", 5, GNUTLS_ECC_CURVE_ED25519 },
};

/* The first entry of a key type names its keys when metadata does not. ChaCha20 goes
 * to the token as PKCS#11 3.0 has it; a token without it refuses it itself. */
static const struct ops_symmetric symmetric[] = {
	{ ALG_AES, CKK_AES, CKM_AES_KEY_GEN, 0 },
	{ ALG_HMAC_SHA256, CKK_GENERIC_SECRET, CKM_GENERIC_SECRET_KEY_GEN, 256 },
	{ ALG_HMAC_SHA1, CKK_GENERIC_SECRET, CKM_GENERIC_SECRET_KEY_GEN, 160 },
	{ ALG_HMAC_SHA224, CKK_GENERIC_SECRET, CKM_GENERIC_SECRET_KEY_GEN, 224 },
	{ ALG_HMAC_SHA384, CKK_GENERIC_SECRET, CKM_GENERIC_SECRET_KEY_GEN, 384 },
	{ ALG_HMAC_SHA512, CKK_GENERIC_SECRET, CKM_GENERIC_SECRET_KEY_GEN, 512 },
	{ ALG_CHACHA20, CKK_CHACHA20, CKM_CHACHA20_KEY_GEN, 256 },
	{ ALG_CHACHA20_POLY1305, CKK_CHACHA20, CKM_CHACHA20_KEY_GEN, 256 },
};

const struct ops_symmetric *ops_symmetric_by_algorithm(uint32_t algorithm)
{
	for (size_t i = 0; i < sizeof(symmetric) / sizeof(symmetric[0]); i++)
		if (symmetric[i].algorithm == algorithm)
			return &symmetric[i];
	return NULL;
}

const struct ops_symmetric *ops_symmetric_by_key_type(CK_KEY_TYPE key_type)
{
	for (size_t i = 0; i < sizeof(symmetric) / sizeof(symmetric[0]); i++)
		if (symmetric[i].key_type == key_type)
			return &symmetric[i];
	return NULL;
}

/* KMIP 2.1 sections 3.5 to 3.8; the PKCS#11 attributes of RSA and DSA keys. */
static const struct ops_transparent transparent[] = {
	{ FMT_TRANSPARENT_RSA_PUBLIC, STORE_PUBLIC, CKK_RSA, ALG_RSA, 2, 2,
	  { { KMIP_TAG_MODULUS, CKA_MODULUS }, { KMIP_TAG_PUBLIC_EXPONENT, CKA_PUBLIC_EXPONENT } } },
	{ FMT_TRANSPARENT_RSA_PRIVATE, STORE_PRIVATE, CKK_RSA, ALG_RSA, 2, 8,
	  { { KMIP_TAG_MODULUS, CKA_MODULUS }, { KMIP_TAG_PRIVATE_EXPONENT, CKA_PRIVATE_EXPONENT },
	    { KMIP_TAG_PUBLIC_EXPONENT, CKA_PUBLIC_EXPONENT }, { KMIP_TAG_P, CKA_PRIME_1 }, { KMIP_TAG_Q, CKA_PRIME_2 },
	    { KMIP_TAG_PRIME_EXPONENT_P, CKA_EXPONENT_1 }, { KMIP_TAG_PRIME_EXPONENT_Q, CKA_EXPONENT_2 },
	    { KMIP_TAG_CRT_COEFFICIENT, CKA_COEFFICIENT } } },
	{ FMT_TRANSPARENT_DSA_PUBLIC, STORE_PUBLIC, CKK_DSA, ALG_DSA, 4, 4,
	  { { KMIP_TAG_P, CKA_PRIME }, { KMIP_TAG_Q, CKA_SUBPRIME }, { KMIP_TAG_G, CKA_BASE },
	    { KMIP_TAG_Y, CKA_VALUE } } },
	{ FMT_TRANSPARENT_DSA_PRIVATE, STORE_PRIVATE, CKK_DSA, ALG_DSA, 4, 4,
	  { { KMIP_TAG_P, CKA_PRIME }, { KMIP_TAG_Q, CKA_SUBPRIME }, { KMIP_TAG_G, CKA_BASE },
	    { KMIP_TAG_X, CKA_VALUE } } },
};

const struct ops_transparent *ops_transparent(uint32_t format)
{
	for (size_t i = 0; i < sizeof(transparent) / sizeof(transparent[0]); i++)
		if (transparent[i].format == format)
			return &transparent[i];
	return NULL;
}

/* KMIP's defaults (2.1 section 4.26), except for EC keys, which come as Raw holding
 * a SubjectPublicKeyInfo (what Cascade reads) and as PKCS#8: the relay does not
 * write Transparent EC keys. */
uint32_t ops_default_format(enum store_kind kind, CK_KEY_TYPE key_type)
{
	switch (kind) {
	case STORE_PUBLIC:
		return key_type == CKK_RSA ? FMT_PKCS1 : key_type == CKK_DSA ? FMT_TRANSPARENT_DSA_PUBLIC : FMT_RAW;
	case STORE_PRIVATE:
		return key_type == CKK_RSA ? FMT_PKCS1 : key_type == CKK_DSA ? FMT_TRANSPARENT_DSA_PRIVATE : FMT_PKCS8;
	case STORE_CERT:
		return FMT_X509;
	case STORE_DATA:
		return FMT_OPAQUE;
	default:
		return FMT_RAW;
	}
}

/* KMIP 2.1 section 4, each attribute's "Modifiable by client" and "Initially set
 * by"; attributes not listed are the client's. */
static const struct {
	uint32_t tag;
	enum ops_attr_rule rule;
} attr_rules[] = {
	{ KMIP_TAG_UNIQUE_IDENTIFIER, ATTR_SERVER },
	{ KMIP_TAG_OBJECT_TYPE, ATTR_SERVER },
	{ KMIP_TAG_STATE, ATTR_SERVER },
	{ KMIP_TAG_INITIAL_DATE, ATTR_SERVER },
	{ KMIP_TAG_LAST_CHANGE_DATE, ATTR_SERVER },
	{ KMIP_TAG_DESTROY_DATE, ATTR_SERVER },
	{ KMIP_TAG_COMPROMISE_DATE, ATTR_SERVER },
	{ KMIP_TAG_REVOCATION_REASON, ATTR_SERVER },
	{ KMIP_TAG_DIGEST, ATTR_SERVER },
	{ KMIP_TAG_KEY_FORMAT_TYPE, ATTR_SERVER },
	{ KMIP_TAG_CERTIFICATE_TYPE, ATTR_SERVER },
	{ KMIP_TAG_CERTIFICATE_LENGTH, ATTR_SERVER },
	{ KMIP_TAG_ALWAYS_SENSITIVE, ATTR_SERVER },
	{ KMIP_TAG_NEVER_EXTRACTABLE, ATTR_SERVER },
	{ KMIP_TAG_CRYPTOGRAPHIC_ALGORITHM, ATTR_AT_CREATION },
	{ KMIP_TAG_CRYPTOGRAPHIC_LENGTH, ATTR_AT_CREATION },
	{ KMIP_TAG_CRYPTOGRAPHIC_USAGE_MASK, ATTR_AT_CREATION },
	{ KMIP_TAG_CRYPTOGRAPHIC_DOMAIN_PARAMETERS, ATTR_AT_CREATION },
	{ KMIP_TAG_ACTIVATION_DATE, ATTR_PRE_ACTIVE },
	{ KMIP_TAG_DEACTIVATION_DATE, ATTR_USABLE },
	{ KMIP_TAG_PROCESS_START_DATE, ATTR_UNTIL_REACHED },
	{ KMIP_TAG_PROTECT_STOP_DATE, ATTR_UNTIL_REACHED },
	{ KMIP_TAG_USAGE_LIMITS, ATTR_UNTIL_USED },
	{ KMIP_TAG_SENSITIVE, ATTR_FLAG },
	{ KMIP_TAG_EXTRACTABLE, ATTR_FLAG },
	{ KMIP_TAG_FRESH, ATTR_ONCE },
	{ KMIP_TAG_ORIGINAL_CREATION_DATE, ATTR_ONCE },
	{ KMIP_TAG_RANDOM_NUMBER_GENERATOR, ATTR_ONCE },
};

enum ops_attr_rule ops_attr_rule(uint32_t tag)
{
	/* Certificate Subject CN ... Certificate Issuer DN Qualifier: read from the certificate. */
	if (tag >= KMIP_TAG_CERTIFICATE_SUBJECT_CN && tag <= KMIP_TAG_CERTIFICATE_ISSUER_DN_QUALIFIER)
		return ATTR_SERVER;
	for (size_t i = 0; i < sizeof(attr_rules) / sizeof(attr_rules[0]); i++)
		if (attr_rules[i].tag == tag)
			return attr_rules[i].rule;
	return ATTR_CLIENT;
}

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

static bool flag_allowed(unsigned i, uint32_t mask, uint32_t state)
{
	if (!(mask & usage_flags[i].bit))
		return false;
	return state == STATE_ACTIVE ||
	       (usage_flags[i].process && (state == STATE_DEACTIVATED || state == STATE_COMPROMISED));
}

/* The usage flags of a kind of object in a state, as a template. */
size_t ops_usage_template(enum store_kind kind, uint32_t mask, uint32_t state, CK_BBOOL *values,
			     CK_ATTRIBUTE *out)
{
	size_t n = 0;

	for (unsigned i = 0; i < N_USAGE_FLAGS && n < OPS_MAX_FLAGS; i++) {
		if (usage_flags[i].kind != kind)
			continue;
		values[n] = flag_allowed(i, mask, state) ? CK_TRUE : CK_FALSE;
		out[n] = (CK_ATTRIBUTE){ usage_flags[i].flag, &values[n], sizeof(CK_BBOOL) };
		n++;
	}
	return n;
}

/* A store handed out (its backend goes in the audit record), or why there is
 * none. */
static struct store *store_or_fail(struct ops_ctx *ctx, int r, struct store *const *st, struct ops_result *res)
{
	if (r < 0) {
		ops_fail_err(res, r);
		if (ctx->token->why)
			res->message = ctx->token->why;
		return NULL;
	}
	ctx->backend = (*st)->backend;
	return *st;
}

struct store *ops_store(struct ops_ctx *ctx, struct ops_result *res)
{
	struct store *st = NULL;
	int r = token_store(ctx->token, ctx->header, ctx->client, ctx->credential_client, &st);

	return store_or_fail(ctx, r, &st, res);
}

struct store *ops_store_at(struct ops_ctx *ctx, int backend, struct ops_result *res)
{
	struct store *st = NULL;
	int r = token_store_at(ctx->token, backend, &st);

	return store_or_fail(ctx, r, &st, res);
}

struct store *ops_new_store(struct ops_ctx *ctx, struct ops_result *res)
{
	struct store *st = NULL;
	int r = token_new_keys(ctx->token, ctx->header, ctx->client, ctx->credential_client, &st);

	return store_or_fail(ctx, r, &st, res);
}

bool ops_target(struct ops_ctx *ctx, struct store **ret_st, struct store_obj *ret, struct ops_result *res)
{
	struct store *st;

	if (!ctx->has_target) { /* the operation's table entry names no object */
		ops_fail(res, KMIP_REASON_MISSING_DATA, "no Unique Identifier");
		return false;
	}
	if (!(st = ops_store_at(ctx, ctx->target.backend, res)))
		return false;
	*ret_st = st;
	*ret = ctx->target;
	return true;
}

int ops_new_id(struct ops_ctx *ctx, struct store *st, uint8_t id[STORE_ID_LEN])
{
	int r = store_new_id(st, id);

	return r < 0 ? r : guard_tag_id(ctx, id);
}

bool ops_extractable_default(const struct ops_ctx *ctx)
{
	return ctx->client ? ctx->client->extractable : ctx->cfg->keys.extractable;
}

int64_t ops_now(void)
{
	return (int64_t)time(NULL);
}

/* Records the object for the audit record and as the batch's ID Placeholder. */
void ops_acted_on(struct ops_ctx *ctx, const struct store_obj *o)
{
	memcpy(ctx->uid, o->uid, sizeof(ctx->uid));
	memcpy(ctx->placeholder, o->uid, sizeof(ctx->placeholder));
}

void ops_fail_token(struct store *st, struct ops_result *res, int err)
{
	CK_RV rv = p11_last_rv(st->tok);

	ops_fail_err(res, err);
	/* CKR_OK: the relay refused by itself, or the failure was not the token's. */
	if (err <= KR_E_P11_MODULE && err >= KR_E_P11_DEVICE && rv != CKR_OK)
		res->message = p11_rv_name(rv);
}

/* Metadata helpers: the attributes the token has no place for. */

const struct kmip_attr *ops_meta_attr(const struct store_meta *m, uint32_t tag)
{
	for (size_t i = 0; i < m->attrs.n; i++)
		if (m->attrs.v[i].tag == tag)
			return &m->attrs.v[i];
	return NULL;
}

uint32_t ops_meta_enum(const struct store_meta *m, uint32_t tag, uint32_t dflt)
{
	const struct kmip_attr *a = ops_meta_attr(m, tag);

	return a && (a->value->type == TTLV_ENUMERATION || a->value->type == TTLV_INTEGER) ? ttlv_enum(a->value) : dflt;
}

int64_t ops_meta_date(const struct store_meta *m, uint32_t tag, int64_t none)
{
	const struct kmip_attr *a = ops_meta_attr(m, tag);

	return a && a->value->type == TTLV_DATE_TIME ? ttlv_long(a->value) : none;
}

uint32_t ops_meta_state(const struct store_meta *m)
{
	uint32_t state = ops_meta_enum(m, KMIP_TAG_STATE, STATE_ACTIVE);
	int64_t now = ops_now();

	if (state == STATE_PRE_ACTIVE && ops_meta_date(m, KMIP_TAG_ACTIVATION_DATE, INT64_MAX) <= now)
		state = STATE_ACTIVE;
	if (state == STATE_ACTIVE && ops_meta_date(m, KMIP_TAG_DEACTIVATION_DATE, INT64_MAX) <= now)
		state = STATE_DEACTIVATED;
	return state;
}

int ops_catch_up(struct store *st, const struct store_obj *o, struct store_meta *m)
{
	uint32_t due = ops_meta_state(m);
	struct state_change c = { .state = due };
	int r;

	if ((!m->found && !m->derived) || o->destroyed || due == ops_meta_enum(m, KMIP_TAG_STATE, STATE_ACTIVE))
		return 0;
	c.usage = ops_usage_of(st, o, m);
	if ((r = ops_change_state(st, o, m, &c)) < 0)
		return r;
	store_meta_clear(m);
	return ops_meta_read(st, o, true, m);
}

uint32_t ops_state(const struct store_obj *o, const struct store_meta *m)
{
	uint32_t state = ops_meta_state(m);

	/* A record whose metadata says otherwise lost its object some other way. */
	if (o->destroyed && state != STATE_DESTROYED_COMPROMISED)
		return STATE_DESTROYED;
	return state;
}

const struct kmip_version ops_meta_version = { 2, 1 };

/* One attribute as metadata holds it: under its tag, or as a vendor Attribute. */
void ops_put_attr(struct ttlv_writer *w, const struct kmip_attr *a)
{
	const struct kmip_attrs one = { (struct kmip_attr *)a, 1 };

	kmip_attrs_encode(w, 0, &one, ops_meta_version);
}

/* Metadata writes by this process, for ops_meta_changes. */
static unsigned long meta_changes;

unsigned long ops_meta_changes(void)
{
	return meta_changes;
}

void ops_meta_changed(void)
{
	meta_changes++;
}

/* Writes a new generation, or for a key whose attributes the token now holds
 * by itself none, removing the one there was. */
static int meta_store(struct store *st, const struct store_obj *o, const struct store_meta *old, const uint8_t *buf,
		      size_t len)
{
	struct store_meta next = { 0 };
	int r = ttlv_decode(buf, len, &ttlv_default_limits, &next.tree);

	if (r == 0)
		r = kmip_attrs_decode(next.tree, ops_meta_version, &next.attrs);
	if (r == 0 && ops_derivable(o) && ops_meta_to_token(st, o, &next))
		r = old && !old->found ? 0 : store_meta_destroy(st, o);
	else if (r == 0)
		r = store_meta_write(st, o, buf, len,
				     o->destroyed ? ops_meta_date(&next, KMIP_TAG_DESTROY_DATE, ops_now()) : 0);
	kmip_attrs_clear(&next.attrs);
	ttlv_free(next.tree);
	if (r == 0 && (!old || !old->found))
		store_sweep(st, ops_now());
	return r;
}

int ops_meta_rewrite_at(struct store *st, const struct store_obj *o, const struct store_meta *old,
			const uint32_t *replace, size_t n_replace, ops_meta_add_fn add, const void *arg, int64_t when)
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
			ops_put_attr(&w, a);
	}
	add(&w, arg);
	ttlv_put_datetime(&w, KMIP_TAG_LAST_CHANGE_DATE, when);
	ttlv_end(&w);
	r = ttlv_writer_finish(&w, &buf, &len);
	if (r == 0)
		r = meta_store(st, o, old, buf, len);
	ops_meta_changed(); /* even a failed write may have changed something */
	ttlv_buf_free(buf, len);
	return r;
}

int ops_meta_rewrite(struct store *st, const struct store_obj *o, const struct store_meta *old,
		     const uint32_t *replace, size_t n_replace, ops_meta_add_fn add, const void *arg)
{
	return ops_meta_rewrite_at(st, o, old, replace, n_replace, add, arg, ops_now());
}

/* KMIP's Hashing Algorithm SHA-256 */
#define DIGEST_SHA256 0x06

void ops_put_digest(struct ttlv_writer *w, const uint8_t *value, size_t len, uint32_t format)
{
	uint8_t md[32];

	if (gnutls_hash_fast(GNUTLS_DIG_SHA256, value, len, md) < 0) {
		w->err = w->err ? w->err : KR_E_NOMEM;
		return;
	}
	ttlv_begin(w, KMIP_TAG_DIGEST);
	ttlv_put_enum(w, KMIP_TAG_HASHING_ALGORITHM, DIGEST_SHA256);
	ttlv_put_bytes(w, KMIP_TAG_DIGEST_VALUE, md, sizeof(md));
	if (format)
		ttlv_put_enum(w, KMIP_TAG_KEY_FORMAT_TYPE, format);
	ttlv_end(w);
}

void ops_put_material_digest(struct ttlv_writer *w, const struct ttlv_item *material, uint32_t format)
{
	struct ttlv_writer enc;
	uint8_t *buf = NULL;
	size_t len = 0;

	if (material->type == TTLV_BYTE_STRING) {
		ops_put_digest(w, material->value, material->len, format);
		return;
	}
	ttlv_writer_init(&enc, TTLV_DEFAULT_MAX_SIZE);
	ttlv_put_item(&enc, material->tag, material);
	if (ttlv_writer_finish(&enc, &buf, &len) == 0)
		ops_put_digest(w, buf, len, format);
	else
		w->err = w->err ? w->err : KR_E_NOMEM;
	ttlv_buf_free(buf, len);
}

void ops_put_link(struct ttlv_writer *w, uint32_t type, const char *uid)
{
	ttlv_begin(w, KMIP_TAG_LINK);
	ttlv_put_enum(w, KMIP_TAG_LINK_TYPE, type);
	ttlv_put_text(w, KMIP_TAG_LINKED_OBJECT_IDENTIFIER, uid, strlen(uid));
	ttlv_end(w);
}

void ops_put_uid(struct ttlv_writer *w, uint32_t tag, const char *uid)
{
	ttlv_put_text(w, tag, uid, strlen(uid));
}

/* The usage a key may be put to: its metadata's mask, or for a key made elsewhere,
 * what its token flags allow now. */
uint32_t ops_usage_of(struct store *st, const struct store_obj *o, const struct store_meta *m)
{
	const struct kmip_attr *a = ops_meta_attr(m, KMIP_TAG_CRYPTOGRAPHIC_USAGE_MASK);
	uint32_t mask = 0;

	if (a && a->value->type == TTLV_INTEGER)
		return (uint32_t)ttlv_int(a->value);
	for (unsigned i = 0; !o->destroyed && i < N_USAGE_FLAGS; i++) {
		CK_BBOOL v = CK_FALSE;
		CK_ATTRIBUTE attr = { usage_flags[i].flag, &v, sizeof(v) };

		if (usage_flags[i].kind == o->kind && p11_get_attrs(st->tok, o->handle, &attr, 1) == 0 && v)
			mask |= usage_flags[i].bit;
	}
	return mask;
}

uint32_t ops_token_mask(const struct store_meta *m, uint32_t mask)
{
	return ops_meta_enum(m, KMIP_TAG_OBJECT_TYPE, 0) == OBJ_SECRET_DATA ? 0 : mask;
}

const CK_ATTRIBUTE_TYPE ops_rsa_private_attributes[8] = {
	CKA_MODULUS, CKA_PUBLIC_EXPONENT, CKA_PRIVATE_EXPONENT, CKA_PRIME_1,
	CKA_PRIME_2, CKA_COEFFICIENT, CKA_EXPONENT_1, CKA_EXPONENT_2,
};

const uint32_t ops_object_types[STORE_N_KINDS] = {
	[STORE_PUBLIC] = OBJ_PUBLIC_KEY, [STORE_PRIVATE] = OBJ_PRIVATE_KEY, [STORE_SECRET] = OBJ_SYMMETRIC_KEY,
	[STORE_CERT] = 1, [STORE_DATA] = OBJ_OPAQUE,
};

bool ops_find_curve(const uint8_t *der, size_t len, size_t *ret)
{
	for (size_t i = 0; i < OPS_N_CURVES; i++)
		if (ops_curves[i].len == len && memcmp(ops_curves[i].der, der, len) == 0) {
			*ret = i;
			return true;
		}
	return false;
}

int32_t ops_bits(const uint8_t *n, size_t len)
{
	int32_t bits;

	while (len && !*n) {
		n++;
		len--;
	}
	if (!len || len > INT32_MAX / 8)
		return 0;
	bits = (int32_t)len * 8;
	for (uint8_t top = *n; !(top & 0x80); top = (uint8_t)(top << 1))
		bits--;
	return bits;
}

const uint32_t ops_object_tags[STORE_N_KINDS] = {
	[STORE_PUBLIC] = KMIP_TAG_PUBLIC_KEY, [STORE_PRIVATE] = KMIP_TAG_PRIVATE_KEY,
	[STORE_SECRET] = KMIP_TAG_SYMMETRIC_KEY, [STORE_CERT] = KMIP_TAG_CERTIFICATE,
	[STORE_DATA] = KMIP_TAG_OPAQUE_OBJECT,
};

void ops_explain_refusal(struct store *st, const struct store_obj *o, struct ops_result *res)
{
	struct store_meta m = { 0 };
	uint32_t state = STATE_ACTIVE;

	if (ops_meta_read(st, o, false, &m) == 0)
		state = ops_meta_state(&m);
	store_meta_clear(&m);
	if (state != STATE_ACTIVE)
		ops_fail(res, KMIP_REASON_WRONG_KEY_LIFECYCLE_STATE, "the key is not Active");
	else
		ops_fail(res, KMIP_REASON_INCOMPATIBLE_CRYPTOGRAPHIC_USAGE_MASK, "the key's usage mask does not allow this");
}

int ops_gnutls_pubkey(struct store *st, const struct store_obj *o, gnutls_pubkey_t *ret)
{
	CK_ATTRIBUTE_TYPE types[2] = { CKA_MODULUS, CKA_PUBLIC_EXPONENT };
	gnutls_datum_t d[2] = { { 0 } };
	gnutls_pubkey_t pub = NULL;
	uint8_t *v[2] = { NULL, NULL };
	size_t len[2] = { 0, 0 }, n = 2;
	int r;

	if (o->key_type == CKK_EC || o->key_type == CKK_EC_EDWARDS) {
		types[0] = CKA_EC_PARAMS;
		types[1] = CKA_EC_POINT;
	} else if (o->key_type != CKK_RSA) {
		return KR_E_KMIP_FORMAT;
	}
	for (size_t i = 0; i < n; i++) {
		if ((r = p11_get_attr_alloc(st->tok, o->handle, types[i], &v[i], &len[i])) < 0)
			goto out;
		d[i] = (gnutls_datum_t){ v[i], (unsigned)len[i] };
	}
	r = KR_E_P11_FAILED;
	if (gnutls_pubkey_init(&pub) < 0)
		goto out;
	if (o->key_type == CKK_RSA) {
		if (gnutls_pubkey_import_rsa_raw(pub, &d[0], &d[1]) == 0)
			r = 0;
	} else if (o->key_type == CKK_EC) {
		if (gnutls_pubkey_import_ecc_x962(pub, &d[0], &d[1]) == 0)
			r = 0;
	} else {
		/* CKA_EC_POINT of an Edwards key: the 32 bytes, DER OCTET STRING wrapped or not */
		gnutls_datum_t x = d[1].size == 34 && d[1].data[0] == 0x04 && d[1].data[1] == 32
					   ? (gnutls_datum_t){ d[1].data + 2, 32 }
					   : d[1];

		if (gnutls_pubkey_import_ecc_raw(pub, GNUTLS_ECC_CURVE_ED25519, &x, NULL) == 0)
			r = 0;
	}
out:
	free(v[0]);
	free(v[1]);
	if (r < 0) {
		if (pub)
			gnutls_pubkey_deinit(pub);
		return r;
	}
	*ret = pub;
	return 0;
}

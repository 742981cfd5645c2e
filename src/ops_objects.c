#include "config.h"

/* The helpers the managed-object operations share (see ops_objects.h). */

#include <gnutls/abstract.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ops_objects.h"
#include "policy.h"

/* DER ECParameters (namedCurve OIDs) for CKA_EC_PARAMS. */
const struct ops_curve ops_curves[OPS_N_CURVES] = {
	{ CURVE_P256, 256, (const uint8_t *)"\x06\x08\x2a\x86\x48\xce\x3d\x03\x01\x07", 10, GNUTLS_ECC_CURVE_SECP256R1 },
	{ CURVE_P384, 384, (const uint8_t *)"\x06\x05\x2b\x81\x04\x00\x22", 7, GNUTLS_ECC_CURVE_SECP384R1 },
	{ CURVE_P521, 521, (const uint8_t *)"\x06\x05\x2b\x81\x04\x00\x23", 7, GNUTLS_ECC_CURVE_SECP521R1 },
	{ CURVE_ED25519, 255, (const uint8_t *)"\x06\x03\x2b\x65\x70", 5, GNUTLS_ECC_CURVE_ED25519 },
};

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

struct store *ops_store(struct ops_ctx *ctx, struct ops_result *res)
{
	struct store *st = NULL;
	int r = token_store(ctx->token, ctx->header, ctx->client, ctx->credential_client, &st);

	if (r < 0) {
		ops_fail_err(res, r);
		if (ctx->token->why)
			res->message = ctx->token->why;
		return NULL;
	}
	return st;
}

int ops_new_id(struct ops_ctx *ctx, struct store *st, uint8_t id[STORE_ID_LEN])
{
	int r = store_new_id(st, id);

	if (r == 0)
		policy_tag_id(ctx->client, id);
	return r;
}

bool ops_key_allowed(const struct ops_ctx *ctx, uint32_t algorithm, int32_t length, struct ops_result *res)
{
	if (policy_key_allowed(ctx->client, algorithm, length))
		return true;
	ops_fail(res, KMIP_REASON_PERMISSION_DENIED, "policy: this algorithm or length is not allowed for this client");
	return false;
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
	/* Another namespace's object is not found, so that its existence does not leak. */
	if (r == 0 && !policy_visible(ctx->cfg, ctx->client, ret->id, ret->id_len))
		r = KR_E_P11_NOT_FOUND;
	if (r < 0) {
		ops_fail_err(res, r);
		return false;
	}
	ops_acted_on(ctx, ret);
	return true;
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

/* Keys that carry no relay metadata (made elsewhere) count as Active. */
uint32_t ops_meta_state(const struct store_meta *m)
{
	return ops_meta_enum(m, KMIP_TAG_STATE, STATE_ACTIVE);
}

const struct kmip_version ops_meta_version = { 2, 1 };

/* One attribute as metadata holds it: under its tag, or as a vendor Attribute. */
void ops_put_attr(struct ttlv_writer *w, const struct kmip_attr *a)
{
	const struct kmip_attrs one = { (struct kmip_attr *)a, 1 };

	kmip_attrs_encode(w, 0, &one, ops_meta_version);
}

/* A new metadata generation: the old attributes minus those in replace[], then what
 * add() writes, and a new Last Change Date. */

int ops_meta_rewrite(struct store *st, const struct store_obj *o, const struct store_meta *old,
			const uint32_t *replace, size_t n_replace, ops_meta_add_fn add, const void *arg)
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
	ttlv_put_datetime(&w, KMIP_TAG_LAST_CHANGE_DATE, ops_now());
	ttlv_end(&w);
	r = ttlv_writer_finish(&w, &buf, &len);
	if (r == 0)
		r = store_meta_write(st, o, buf, len);
	ttlv_buf_free(buf, len);
	return r;
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
	for (unsigned i = 0; i < N_USAGE_FLAGS; i++) {
		CK_BBOOL v = CK_FALSE;
		CK_ATTRIBUTE attr = { usage_flags[i].flag, &v, sizeof(v) };

		if (usage_flags[i].kind == o->kind && p11_get_attrs(st->tok, o->handle, &attr, 1) == 0 && v)
			mask |= usage_flags[i].bit;
	}
	return mask;
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

const uint32_t ops_object_tags[STORE_N_KINDS] = {
	[STORE_PUBLIC] = KMIP_TAG_PUBLIC_KEY, [STORE_PRIVATE] = KMIP_TAG_PRIVATE_KEY,
	[STORE_SECRET] = KMIP_TAG_SYMMETRIC_KEY, [STORE_CERT] = KMIP_TAG_CERTIFICATE,
	[STORE_DATA] = KMIP_TAG_OPAQUE_OBJECT,
};

void ops_explain_refusal(struct store *st, const struct store_obj *o, struct ops_result *res)
{
	struct store_meta m = { 0 };
	uint32_t state = STATE_ACTIVE;

	if (store_meta_read(st, o, &m) == 0)
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

/* SPDX-License-Identifier: BSD-3-Clause */
#include "config.h"

/* Cryptographic operations with keys in the token: Sign, Signature Verify, MAC and
 * MAC Verify, under the rules of the key's attributes (Cryptographic Parameters,
 * Process Start and Protect Stop Date, Usage Limits), which Encrypt and Decrypt
 * (ops_cipher.c) share; and Hash and RNG Retrieve. */

#include <gnutls/abstract.h>
#include <gnutls/crypto.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "ops_crypto.h"

enum { VALID = 1, INVALID = 2 };

#define MAX_SIGNATURE 1024 /* RSA-8192 */

/* KMIP's Hashing Algorithms and GnuTLS's digests; p11_hash gives their mechanisms. */
static const struct {
	uint32_t kmip;
	gnutls_digest_algorithm_t dig;
} kmip_hashes[] = {
	{ HASH_SHA1, GNUTLS_DIG_SHA1 },     { HASH_SHA224, GNUTLS_DIG_SHA224 }, { HASH_SHA256, GNUTLS_DIG_SHA256 },
	{ HASH_SHA384, GNUTLS_DIG_SHA384 }, { HASH_SHA512, GNUTLS_DIG_SHA512 },
};

const struct p11_hash *crypto_hash(uint32_t kmip)
{
	for (size_t i = 0; i < sizeof(kmip_hashes) / sizeof(kmip_hashes[0]); i++)
		if (kmip_hashes[i].kmip == kmip)
			return p11_hash(kmip_hashes[i].dig);
	return NULL;
}

/* The fields of a Cryptographic Parameters structure that the relay uses. A field of
 * the wrong type is an error in a request (strict); in a key's attribute, which was
 * accepted when the key was made, it is left out. */
static bool parse_params(const struct ttlv_item *cp, struct crypto_params *p, bool strict)
{
	*p = NO_PARAMS;
	for (const struct ttlv_item *c = cp->child; c; c = c->next) {
		uint32_t *e = NULL;
		int32_t *n = NULL;

		switch (c->tag) {
		case KMIP_TAG_PADDING_METHOD: e = &p->padding; break;
		case KMIP_TAG_HASHING_ALGORITHM: e = &p->hash; break;
		case KMIP_TAG_BLOCK_CIPHER_MODE: e = &p->mode; break;
		case KMIP_TAG_CRYPTOGRAPHIC_ALGORITHM: e = &p->algorithm; break;
		case KMIP_TAG_MASK_GENERATOR_HASHING_ALGORITHM: e = &p->mgf_hash; break;
		case KMIP_TAG_TAG_LENGTH: n = &p->tag_length; break;
		case KMIP_TAG_SALT_LENGTH: n = &p->salt_length; break;
		case KMIP_TAG_P_SOURCE:
			if (c->type == TTLV_BYTE_STRING) {
				p->p_source = c->len ? c->value : (const uint8_t *)"";
				p->p_source_len = c->len;
				continue;
			}
			break;
		default: continue;
		}
		if (e && c->type == TTLV_ENUMERATION)
			*e = ttlv_enum(c);
		else if (n && c->type == TTLV_INTEGER && ttlv_int(c) >= 0)
			*n = ttlv_int(c);
		else if (strict)
			return false;
	}
	return true;
}

bool crypto_read_params(const struct ttlv_item *payload, struct crypto_params *p, struct ops_result *res)
{
	const struct ttlv_item *cp = ttlv_find(payload, KMIP_TAG_CRYPTOGRAPHIC_PARAMETERS);

	*p = NO_PARAMS;
	if (cp && (cp->type != TTLV_STRUCTURE || !parse_params(cp, p, true))) {
		ops_fail(res, KMIP_REASON_INVALID_FIELD, "malformed Cryptographic Parameters");
		return false;
	}
	return true;
}

/* The request's fields win; the key's Cryptographic Parameters fill in the rest. */
static void params_default(struct crypto_params *p, const struct crypto_params *key)
{
	if (!p->padding)
		p->padding = key->padding;
	if (!p->hash)
		p->hash = key->hash;
	if (!p->mode)
		p->mode = key->mode;
	if (!p->algorithm)
		p->algorithm = key->algorithm;
	if (!p->mgf_hash)
		p->mgf_hash = key->mgf_hash;
	if (p->tag_length < 0)
		p->tag_length = key->tag_length;
	if (p->salt_length < 0)
		p->salt_length = key->salt_length;
	if (!p->p_source) {
		p->p_source = key->p_source;
		p->p_source_len = key->p_source_len;
	}
}

#define N_POLICIES 8
static struct key_policy policies[N_POLICIES];
static size_t next_policy;
static unsigned long requests; /* begun by this process */

void ops_request_begin(void)
{
	requests++;
}

static void policy_clear(struct key_policy *kp)
{
	free(kp->p_source_copy);
	if (kp->check_key)
		gnutls_pubkey_deinit(kp->check_key);
	*kp = (struct key_policy){ 0 };
}

/* Reads the key's metadata, putting on record first a state that its dates have
 * brought. */
static int policy_load(struct store *st, const struct store_obj *o, struct key_policy *kp)
{
	struct store_meta m = { 0 };
	const struct kmip_attr *a;
	int lock = -1, r = ops_meta_read(st, o, false, &m);

	policy_clear(kp);
	if (r == 0 && ops_meta_state(&m) != ops_meta_enum(&m, KMIP_TAG_STATE, STATE_ACTIVE)) {
		store_meta_clear(&m);
		if ((r = store_lock(st, &lock)) == 0 && (r = ops_meta_read(st, o, true, &m)) == 0)
			r = ops_catch_up(st, o, &m);
		store_unlock(lock);
	}
	if (r < 0) {
		store_meta_clear(&m);
		return r;
	}
	kp->params = NO_PARAMS;
	if ((a = ops_meta_attr(&m, KMIP_TAG_CRYPTOGRAPHIC_PARAMETERS)) && a->value->type == TTLV_STRUCTURE)
		(void)parse_params(a->value, &kp->params, false);
	if (kp->params.p_source_len) { /* it points into m */
		if (!(kp->p_source_copy = malloc(kp->params.p_source_len))) {
			store_meta_clear(&m);
			return KR_E_NOMEM;
		}
		memcpy(kp->p_source_copy, kp->params.p_source, kp->params.p_source_len);
		kp->params.p_source = kp->p_source_copy;
	}
	kp->algorithm = ops_meta_enum(&m, KMIP_TAG_CRYPTOGRAPHIC_ALGORITHM, 0);
	kp->process_start = ops_meta_date(&m, KMIP_TAG_PROCESS_START_DATE, INT64_MIN);
	kp->protect_stop = ops_meta_date(&m, KMIP_TAG_PROTECT_STOP_DATE, INT64_MAX);
	kp->limited = ops_meta_attr(&m, KMIP_TAG_USAGE_LIMITS) != NULL;
	kp->state = ops_meta_state(&m);
	kp->activation = ops_meta_date(&m, KMIP_TAG_ACTIVATION_DATE, INT64_MAX);
	kp->deactivation = ops_meta_date(&m, KMIP_TAG_DEACTIVATION_DATE, INT64_MAX);
	kp->generation = m.found ? m.generation : CK_INVALID_HANDLE;
	store_meta_clear(&m);
	memcpy(kp->uid, o->uid, sizeof(kp->uid));
	kp->handle = o->handle;
	kp->backend = o->backend;
	kp->changes = ops_meta_changes();
	return 0;
}

static int key_policy(struct store *st, const struct store_obj *o, struct key_policy **ret)
{
	struct key_policy *kp = NULL;
	struct store_epoch epoch = { .handle = CK_INVALID_HANDLE };
	int r;

	for (size_t i = 0; i < N_POLICIES && !kp; i++)
		if (policies[i].handle == o->handle && policies[i].backend == o->backend && strcmp(policies[i].uid, o->uid) == 0)
			kp = &policies[i];
	/* Kept while no process changed the metadata and no date changed the state:
	 * its generation is there, or for a key without one, the epoch is the same.
	 * Checked once a request: a batch's items share the first one's check. */
	if (kp && kp->changes == ops_meta_changes() && !(kp->state == STATE_PRE_ACTIVE && kp->activation <= ops_now()) &&
	    !(kp->state == STATE_ACTIVE && kp->deactivation <= ops_now()) &&
	    ((requests && kp->checked == requests) ||
	     (kp->generation != CK_INVALID_HANDLE ? store_meta_current(st, kp->generation)
						  : store_epoch_current(st, &kp->epoch)))) {
		kp->checked = requests;
		*ret = kp;
		return 0;
	}
	/* A key without metadata used again: from now on the epoch says whether it
	 * still has none. Read before the key, so that no change falls in between; a
	 * connection that uses a key once never reads it. */
	if (kp && kp->generation == CK_INVALID_HANDLE && (r = store_epoch_read(st, &epoch)) < 0)
		return r;
	if (!kp) {
		kp = &policies[next_policy];
		next_policy = (next_policy + 1) % N_POLICIES;
	}
	if ((r = policy_load(st, o, kp)) < 0)
		return r;
	kp->epoch = epoch;
	kp->checked = requests;
	*ret = kp;
	return 0;
}

/* The key's policy, if its dates allow this use now, with p (if any) completed from
 * its Cryptographic Parameters; else NULL with res set. */
struct key_policy *crypto_key_for(struct store *st, const struct store_obj *o, enum use use, struct crypto_params *p,
				  struct ops_result *res)
{
	struct key_policy *kp;
	int r = key_policy(st, o, &kp);

	if (r < 0) {
		ops_fail_err(res, r);
		return NULL;
	}
	if (use == PROTECT && kp->state != STATE_ACTIVE) {
		ops_fail(res, KMIP_REASON_WRONG_KEY_LIFECYCLE_STATE, "the key is not Active");
		return NULL;
	}
	if (use == PROTECT && ops_now() >= kp->protect_stop) {
		ops_fail(res, KMIP_REASON_WRONG_KEY_LIFECYCLE_STATE, "the key's Protect Stop Date has passed");
		return NULL;
	}
	if (use == PROCESS && ops_now() < kp->process_start) {
		ops_fail(res, KMIP_REASON_WRONG_KEY_LIFECYCLE_STATE, "the key's Process Start Date has not come");
		return NULL;
	}
	if (p)
		params_default(p, &kp->params);
	return kp;
}

/* Usage Limits: Total, Count (what is left; Total until the first use) and Unit. */
enum { UNIT_BYTE = 1 }; /* else each operation counts one */

struct usage_limits {
	int64_t total, count; /* total -1: absent */
	uint32_t unit;        /* 0: absent */
};

static bool read_usage_limits(const struct ttlv_item *v, struct usage_limits *u)
{
	const struct ttlv_item *total = ttlv_find(v, KMIP_TAG_USAGE_LIMITS_TOTAL);
	const struct ttlv_item *count = ttlv_find(v, KMIP_TAG_USAGE_LIMITS_COUNT);
	const struct ttlv_item *unit = ttlv_find(v, KMIP_TAG_USAGE_LIMITS_UNIT);

	*u = (struct usage_limits){ -1, -1, 0 };
	if (v->type != TTLV_STRUCTURE)
		return false;
	if (total && total->type == TTLV_LONG_INTEGER)
		u->total = u->count = ttlv_long(total);
	/* A Count sent with the Total when the key was made counts only if lower. */
	if (count && count->type == TTLV_LONG_INTEGER && (u->count < 0 || ttlv_long(count) < u->count))
		u->count = ttlv_long(count);
	if (unit && unit->type == TTLV_ENUMERATION)
		u->unit = ttlv_enum(unit);
	return u->count >= 0;
}

bool crypto_usage_drawn(const struct store_meta *m)
{
	const struct kmip_attr *a = ops_meta_attr(m, KMIP_TAG_USAGE_LIMITS);
	struct usage_limits u;

	/* Unreadable limits are treated as drawn on: they are not the client's to reset. */
	return a && (!read_usage_limits(a->value, &u) || u.total < 0 || u.count < u.total);
}

static void put_usage_limits(struct ttlv_writer *w, const void *arg)
{
	const struct usage_limits *u = arg;

	ttlv_begin(w, KMIP_TAG_USAGE_LIMITS);
	if (u->total >= 0)
		ttlv_put_long(w, KMIP_TAG_USAGE_LIMITS_TOTAL, u->total);
	ttlv_put_long(w, KMIP_TAG_USAGE_LIMITS_COUNT, u->count);
	if (u->unit)
		ttlv_put_enum(w, KMIP_TAG_USAGE_LIMITS_UNIT, u->unit);
	ttlv_end(w);
}

/* Takes an allocation from the key's Usage Limits before it is used to protect:
 * bytes, or objects (one per operation, none for a later part of a stream).
 * Refused with Permission Denied, as the Encrypt and Sign sections of the spec say.
 * The count is read afresh under the metadata writers' lock, since other
 * connections may use the key too. */
bool crypto_take_usage(struct store *st, const struct store_obj *o, struct key_policy *kp, size_t bytes,
		       size_t objects, struct ops_result *res)
{
	static const uint32_t replaced[] = { KMIP_TAG_USAGE_LIMITS };
	struct store_meta m = { 0 };
	const struct kmip_attr *a;
	struct usage_limits u;
	uint64_t amount;
	bool granted = false;
	int lock = -1, r;

	if ((r = store_lock(st, &lock)) < 0 || (r = ops_meta_read(st, o, false, &m)) < 0)
		goto out;
	if (!(a = ops_meta_attr(&m, KMIP_TAG_USAGE_LIMITS))) { /* deleted meanwhile */
		granted = true;
		goto out;
	}
	if (!read_usage_limits(a->value, &u)) {
		ops_fail(res, KMIP_REASON_PERMISSION_DENIED, "the key's Usage Limits cannot be read");
		goto out;
	}
	amount = u.unit == UNIT_BYTE ? bytes : objects;
	if (u.count == 0 || amount > (uint64_t)u.count) {
		ops_fail(res, KMIP_REASON_PERMISSION_DENIED, "the key's Usage Limits are used up");
		goto out;
	}
	granted = true;
	if (amount == 0)
		goto out;
	u.count -= (int64_t)amount;
	r = ops_meta_rewrite(st, o, &m, replaced, 1, put_usage_limits, &u);
	if (r == 0) { /* only the count changed, which the policy does not hold */
		kp->changes = ops_meta_changes();
		kp->generation = st->written;
	}
out:
	store_meta_clear(&m);
	store_unlock(lock);
	if (r < 0)
		ops_fail_err(res, r);
	return granted && r == 0;
}

bool crypto_indicator(const struct ttlv_item *payload, uint32_t tag)
{
	const struct ttlv_item *it = ttlv_find(payload, tag);

	return it && it->type == TTLV_BOOLEAN && ttlv_bool(it);
}

/* Sign, Signature Verify and MAC take no stream (Init and Final Indicator together
 * are one part). */
static bool single_part(const struct ttlv_item *payload, struct ops_result *res)
{
	if (ttlv_find(payload, KMIP_TAG_CORRELATION_VALUE) ||
	    crypto_indicator(payload, KMIP_TAG_INIT_INDICATOR) != crypto_indicator(payload, KMIP_TAG_FINAL_INDICATOR)) {
		ops_fail(res, KMIP_REASON_FEATURE_NOT_SUPPORTED, "multi-part operations are for Encrypt and Decrypt");
		return false;
	}
	return true;
}

struct sig_input {
	CK_MECHANISM mech;
	CK_RSA_PKCS_PSS_PARAMS pss;
	uint8_t digest[64], buf[128];
	gnutls_datum_t in;
};

/* The mechanism and input for signing (or verifying) data with a key of this type.
 * Unhashed data goes to the token's combined mechanism (CKM_SHA256_RSA_PKCS,
 * CKM_ECDSA_SHA256, ...) if it has one; otherwise the relay hashes it and the
 * token signs the digest (RSA PKCS#1 v1.5: its DigestInfo). */
static int signature_input(struct p11_token *tok, CK_KEY_TYPE type, const struct crypto_params *p,
			   const uint8_t *data, size_t len, bool digested, struct sig_input *s)
{
	const struct p11_hash *h = crypto_hash(p->hash ? p->hash : HASH_SHA256);
	uint32_t padding = p->padding ? p->padding : PAD_PKCS1_V15;
	CK_MECHANISM_TYPE combined;

	s->in = (gnutls_datum_t){ (uint8_t *)data, (unsigned)len };
	s->mech = (CK_MECHANISM){ 0, NULL, 0 };
	if (type == CKK_EC_EDWARDS) {
		if (digested)
			return KR_E_P11_MECHANISM; /* EdDSA signs the message, not a digest */
		s->mech.mechanism = CKM_EDDSA;
		return 0;
	}
	if (!h || (type != CKK_RSA && type != CKK_EC) ||
	    (type == CKK_RSA && padding != PAD_PKCS1_V15 && padding != PAD_PSS))
		return KR_E_P11_MECHANISM;
	if (type == CKK_RSA && padding == PAD_PSS) {
		/* MGF1 with the message's hash, as GnuTLS's self-check assumes too. */
		if (p->mgf_hash && crypto_hash(p->mgf_hash) != h)
			return KR_E_P11_MECHANISM;
		s->pss = (CK_RSA_PKCS_PSS_PARAMS){ h->digest, h->mgf,
						   p->salt_length >= 0 ? (CK_ULONG)p->salt_length
								       : gnutls_hash_get_len(h->dig) };
		s->mech = (CK_MECHANISM){ CKM_RSA_PKCS_PSS, &s->pss, sizeof(s->pss) };
	}
	combined = type == CKK_EC ? h->ecdsa : padding == PAD_PSS ? h->rsa_pss : h->rsa_pkcs;
	if (!digested && p11_has_mechanism(tok, combined)) {
		s->mech.mechanism = combined;
		return 0;
	}
	if (!digested) {
		if (gnutls_hash_fast(h->dig, data, len, s->digest) < 0)
			return KR_E_P11_FAILED;
		s->in = (gnutls_datum_t){ s->digest, gnutls_hash_get_len(h->dig) };
	}
	if (type == CKK_EC) {
		s->mech.mechanism = CKM_ECDSA;
	} else if (padding == PAD_PKCS1_V15) {
		gnutls_datum_t di = { 0 };

		if (gnutls_encode_ber_digest_info(h->dig, &s->in, &di) < 0 || di.size > sizeof(s->buf)) {
			gnutls_free(di.data);
			return KR_E_P11_DATA;
		}
		memcpy(s->buf, di.data, di.size);
		s->in = (gnutls_datum_t){ s->buf, di.size };
		gnutls_free(di.data);
		s->mech.mechanism = CKM_RSA_PKCS;
	}
	return 0;
}

/* The failure of a cryptographic call, as precisely as can be said; the message is
 * the token's own CKR_ code. */
void crypto_fail(struct store *st, const struct store_obj *o, int r, struct ops_result *res)
{
	if (r == KR_E_P11_NOT_PERMITTED && o) {
		ops_explain_refusal(st, o, res);
		return;
	}
	if (r == KR_E_P11_MECHANISM || r == KR_E_P11_TEMPLATE)
		ops_fail(res, KMIP_REASON_UNSUPPORTED_CRYPTOGRAPHIC_PARAMETERS, NULL);
	else if (r == KR_E_P11_DATA || r == KR_E_P11_SIGNATURE || r == KR_E_P11_FAILED)
		ops_fail(res, KMIP_REASON_CRYPTOGRAPHIC_FAILURE, NULL);
	else
		ops_fail_err(res, r);
	/* A refusal by the token: say which; CKR_OK means the relay refused itself. */
	if (r <= KR_E_P11_MODULE && r >= KR_E_P11_DEVICE && p11_last_rv(st->tok) != CKR_OK)
		res->message = p11_rv_name(p11_last_rv(st->tok));
	else if (!res->message)
		res->message = "these Cryptographic Parameters are not supported for this key";
}

/* The request's Data, or Digested Data where allowed. */
static const struct ttlv_item *input_data(const struct ttlv_item *payload, bool digest_allowed, bool *ret_digested)
{
	const struct ttlv_item *data = ttlv_find(payload, KMIP_TAG_DATA);
	const struct ttlv_item *digested = digest_allowed ? ttlv_find(payload, KMIP_TAG_DIGESTED_DATA) : NULL;
	const struct ttlv_item *in = data ? data : digested;

	*ret_digested = in && in == digested;
	return in && in->type == TTLV_BYTE_STRING ? in : NULL;
}

/* The object the request names, of the kind an operation needs. */
static bool crypto_object(struct ops_ctx *ctx, enum store_kind kind, struct store **ret_st, struct store_obj *o,
			  struct ops_result *res)
{
	if (!ops_target(ctx, ret_st, o, res))
		return false;
	if (o->kind != kind) {
		ops_fail(res, KMIP_REASON_INVALID_OBJECT_TYPE, "this operation needs another kind of object");
		return false;
	}
	return true;
}

/* The GnuTLS signature algorithm of a signature the token made. */
static gnutls_sign_algorithm_t gnutls_algorithm(CK_KEY_TYPE type, const struct crypto_params *p)
{
	const struct p11_hash *h = crypto_hash(p->hash ? p->hash : HASH_SHA256);

	if (type == CKK_EC_EDWARDS)
		return GNUTLS_SIGN_EDDSA_ED25519;
	if (!h)
		return GNUTLS_SIGN_UNKNOWN;
	if (type == CKK_EC)
		return gnutls_pk_to_sign(GNUTLS_PK_ECDSA, h->dig);
	if (p->padding != PAD_PSS)
		return gnutls_pk_to_sign(GNUTLS_PK_RSA, h->dig);
	switch (h->dig) {
	case GNUTLS_DIG_SHA256: return GNUTLS_SIGN_RSA_PSS_RSAE_SHA256;
	case GNUTLS_DIG_SHA384: return GNUTLS_SIGN_RSA_PSS_RSAE_SHA384;
	case GNUTLS_DIG_SHA512: return GNUTLS_SIGN_RSA_PSS_RSAE_SHA512;
	default: return GNUTLS_SIGN_UNKNOWN;
	}
}

/* A PSS salt length that is not the hash's (GnuTLS's default): the key must carry
 * it, as RSA-PSS parameters. -1 for none. */
static int32_t own_salt(CK_KEY_TYPE type, const struct crypto_params *p, gnutls_digest_algorithm_t *ret_dig)
{
	const struct p11_hash *h = crypto_hash(p->hash ? p->hash : HASH_SHA256);

	if (type != CKK_RSA || p->padding != PAD_PSS || p->salt_length < 0 || !h ||
	    (size_t)p->salt_length == gnutls_hash_get_len(h->dig))
		return -1;
	*ret_dig = h->dig;
	return p->salt_length;
}

/* The verify_signatures self-check: GnuTLS verifies the signature with the public
 * key, independently of the token, which catches a faulty HSM or the wrong key
 * behind a load balancer. The public key is the pair's public half; an RSA private
 * key made without one carries its own modulus and exponent. Returns 0, or
 * KR_E_P11_SIGNATURE, or KR_E_P11_NOT_FOUND when there is nothing to check with,
 * or KR_E_P11_MECHANISM for a scheme GnuTLS cannot check (PSS with SHA-1 or
 * SHA-224). */
static int self_check(struct store *st, const struct store_obj *priv, struct key_policy *kp,
		      const struct crypto_params *p, const struct ttlv_item *in, bool digested, const gnutls_datum_t *sig)
{
	gnutls_sign_algorithm_t algo = gnutls_algorithm(priv->key_type, p);
	gnutls_datum_t data = { (uint8_t *)in->value, in->len };
	gnutls_digest_algorithm_t dig = GNUTLS_DIG_UNKNOWN;
	int32_t salt = own_salt(priv->key_type, p, &dig);

	if (algo == GNUTLS_SIGN_UNKNOWN)
		return KR_E_P11_MECHANISM;
	/* Kept with the key's policy: building it costs token round trips, and a signer
	 * uses one key for many Signs. */
	if (!kp->check_key || kp->check_salt != salt || kp->check_dig != dig) {
		struct store_obj pub;
		gnutls_x509_spki_t spki;
		bool ok;

		if (kp->check_key)
			gnutls_pubkey_deinit(kp->check_key);
		kp->check_key = NULL;
		if (store_find_kind(st, STORE_PUBLIC, priv->id, priv->id_len, &pub) < 0) {
			if (priv->key_type != CKK_RSA)
				return KR_E_P11_NOT_FOUND;
			pub = *priv;
		}
		ok = ops_gnutls_pubkey(st, &pub, &kp->check_key) == 0;
		if (ok && salt >= 0 && (ok = gnutls_x509_spki_init(&spki) == 0)) {
			gnutls_x509_spki_set_rsa_pss_params(spki, dig, (unsigned)salt);
			ok = gnutls_pubkey_set_spki(kp->check_key, spki, 0) == 0;
			gnutls_x509_spki_deinit(spki);
		}
		if (!ok) {
			if (kp->check_key)
				gnutls_pubkey_deinit(kp->check_key);
			kp->check_key = NULL;
			return KR_E_P11_NOT_FOUND;
		}
		kp->check_salt = salt;
		kp->check_dig = dig;
	}
	if (salt >= 0)
		algo = gnutls_pk_to_sign(GNUTLS_PK_RSA_PSS, dig);
	return (digested ? gnutls_pubkey_verify_hash2(kp->check_key, algo, 0, &data, sig)
			 : gnutls_pubkey_verify_data2(kp->check_key, algo, 0, &data, sig)) >= 0
		       ? 0
		       : KR_E_P11_SIGNATURE;
}

void op_sign(struct ops_ctx *ctx, const struct ttlv_item *payload, struct ttlv_writer *w, struct ops_result *res)
{
	struct crypto_params p;
	struct key_policy *kp;
	struct sig_input si;
	struct store *st;
	struct store_obj o;
	uint8_t sig[MAX_SIGNATURE];
	size_t sig_len = sizeof(sig);
	gnutls_datum_t der = { 0 };
	bool digested;
	const struct ttlv_item *in = input_data(payload, true, &digested);
	int r;

	if (!in) {
		ops_fail(res, KMIP_REASON_MISSING_DATA, "Sign needs Data or Digested Data");
		return;
	}
	if (!crypto_read_params(payload, &p, res) || !single_part(payload, res) ||
	    !crypto_object(ctx, STORE_PRIVATE, &st, &o, res) || !(kp = crypto_key_for(st, &o, PROTECT, &p, res)))
		return;
	r = signature_input(st->tok, o.key_type, &p, in->value, in->len, digested, &si);
	ctx->mechanism = si.mech.mechanism;
	if (r == 0 && kp->limited && !crypto_take_usage(st, &o, kp, in->len, 1, res))
		return;
	if (r == 0)
		r = p11_sign(st->tok, &si.mech, o.handle, si.in.data, si.in.size, sig, &sig_len);
	if (r == 0 && o.key_type == CKK_EC)
		r = p11_ecdsa_der(sig, sig_len, &der);
	if (r < 0) {
		crypto_fail(st, &o, r, res);
		return;
	}
	if (!der.data)
		der = (gnutls_datum_t){ sig, (unsigned)sig_len };
	if (ctx->cfg->keys.verify_signatures && (r = self_check(st, &o, kp, &p, in, digested, &der)) < 0) {
		ops_fail(res, KMIP_REASON_CRYPTOGRAPHIC_FAILURE,
			 r == KR_E_P11_SIGNATURE ? "verify_signatures: the signature does not verify with the public key"
			 : r == KR_E_P11_MECHANISM
				 ? "verify_signatures: GnuTLS cannot check this signature scheme"
				 : "verify_signatures: the token holds no public key to check with");
		/* A faulty HSM or a wrong key in a pool: worth more than the audit record. */
		log_msg(LOG_WARNING, "%s (key %s); the signature was not returned", res->message, o.uid);
		if (der.data != sig)
			gnutls_free(der.data);
		return;
	}
	ttlv_begin(w, KMIP_TAG_RESPONSE_PAYLOAD);
	ops_put_uid(w, KMIP_TAG_UNIQUE_IDENTIFIER, o.uid);
	ttlv_put_bytes(w, KMIP_TAG_SIGNATURE_DATA, der.data, der.size);
	ttlv_end(w);
	if (der.data != sig)
		gnutls_free(der.data);
}

/* Whether sig is the DER encoding of (r, s): GnuTLS's decoder also takes BER's
 * needless leading zeros, which would make signatures malleable. */
static bool is_der(const gnutls_datum_t *sig, const gnutls_datum_t *r, const gnutls_datum_t *s)
{
	gnutls_datum_t again = { 0 };
	bool same = gnutls_encode_rs_value(&again, r, s) == 0 && again.size == sig->size &&
		    memcmp(again.data, sig->data, sig->size) == 0;

	gnutls_free(again.data);
	return same;
}

/* An ECDSA signature as PKCS#11 wants it: r || s, each as long as the curve's
 * field. */
static int raw_ecdsa(struct store *st, const struct store_obj *pub, const uint8_t *der, size_t len, uint8_t *out,
		     size_t *ret_len)
{
	gnutls_datum_t in = { (uint8_t *)der, (unsigned)len }, rs[2] = { { 0 } }, rd, sd;
	uint8_t *params = NULL;
	size_t params_len = 0, curve, n;
	int r = p11_get_attr_alloc(st->tok, pub->handle, CKA_EC_PARAMS, &params, &params_len);

	if (r < 0)
		return r;
	r = KR_E_P11_SIGNATURE; /* not a signature of this key */
	if (ops_find_curve(params, params_len, &curve) && gnutls_decode_rs_value(&in, &rs[0], &rs[1]) == 0 &&
	    is_der(&in, &rs[0], &rs[1])) {
		rd = rs[0];
		sd = rs[1];
		n = ((size_t)ops_curves[curve].bits + 7) / 8;
		/* DER integers may carry a leading zero, or be shorter than the field. */
		while (rd.size > n && rd.data[0] == 0)
			rd.data++, rd.size--;
		while (sd.size > n && sd.data[0] == 0)
			sd.data++, sd.size--;
		if (rd.size <= n && sd.size <= n && 2 * n <= MAX_SIGNATURE) {
			memset(out, 0, 2 * n);
			memcpy(out + n - rd.size, rd.data, rd.size);
			memcpy(out + 2 * n - sd.size, sd.data, sd.size);
			*ret_len = 2 * n;
			r = 0;
		}
	}
	gnutls_free(rs[0].data);
	gnutls_free(rs[1].data);
	free(params);
	return r;
}

/* A PSS signature verifies with the salt length that its signer chose. Without one
 * named, the hash's length (pss->sLen) is tried first, then this: the longest the
 * key allows, which OpenSSL signs with by default, as did the reference server of
 * the OASIS test cases. */
static int longest_salt(struct store *st, const struct store_obj *pub, CK_RSA_PKCS_PSS_PARAMS *pss)
{
	uint8_t *n = NULL;
	size_t len = 0, i = 0, bits, em_len;
	int r = p11_get_attr_alloc(st->tok, pub->handle, CKA_MODULUS, &n, &len);

	if (r < 0)
		return r;
	while (i < len && n[i] == 0)
		i++;
	bits = i < len ? (len - i - 1) * 8 : 0;
	for (unsigned top = i < len ? n[i] : 0; top; top >>= 1)
		bits++;
	free(n);
	em_len = bits ? (bits + 6) / 8 : 0; /* the encoded message has modBits - 1 bits */
	if (em_len < 2 * pss->sLen + 3)
		return KR_E_P11_SIGNATURE; /* no longer salt fits */
	pss->sLen = em_len - pss->sLen - 2;
	return 0;
}

/* Whether an RSA signature's value is not below the key's modulus: no signature
 * at all, though openCryptoki answers it with CKR_FUNCTION_FAILED rather than
 * CKR_SIGNATURE_INVALID. */
static bool above_modulus(struct store *st, const struct store_obj *pub, const uint8_t *sig, size_t len)
{
	uint8_t *n = NULL;
	size_t n_len = 0, i = 0, j = 0;
	bool above;

	if (p11_get_attr_alloc(st->tok, pub->handle, CKA_MODULUS, &n, &n_len) < 0)
		return false;
	while (i < n_len && n[i] == 0)
		i++;
	while (j < len && sig[j] == 0)
		j++;
	above = len - j != n_len - i ? len - j > n_len - i : memcmp(sig + j, n + i, len - j) >= 0;
	free(n);
	return above;
}

static void put_validity(struct ttlv_writer *w, const struct store_obj *o, bool valid)
{
	ttlv_begin(w, KMIP_TAG_RESPONSE_PAYLOAD);
	ops_put_uid(w, KMIP_TAG_UNIQUE_IDENTIFIER, o->uid);
	ttlv_put_enum(w, KMIP_TAG_VALIDITY_INDICATOR, valid ? VALID : INVALID);
	ttlv_end(w);
}

void op_signature_verify(struct ops_ctx *ctx, const struct ttlv_item *payload, struct ttlv_writer *w,
			 struct ops_result *res)
{
	const struct ttlv_item *sig = ttlv_find(payload, KMIP_TAG_SIGNATURE_DATA);
	struct crypto_params p;
	struct sig_input si;
	struct store *st;
	struct store_obj o;
	uint8_t raw[MAX_SIGNATURE];
	size_t raw_len = 0;
	bool digested;
	const struct ttlv_item *in = input_data(payload, true, &digested);
	int r;

	if (!in || !sig || sig->type != TTLV_BYTE_STRING) {
		ops_fail(res, KMIP_REASON_MISSING_DATA, "Signature Verify needs Data and Signature Data");
		return;
	}
	if (!crypto_read_params(payload, &p, res) || !single_part(payload, res) ||
	    !crypto_object(ctx, STORE_PUBLIC, &st, &o, res) || !crypto_key_for(st, &o, PROCESS, &p, res))
		return;
	r = signature_input(st->tok, o.key_type, &p, in->value, in->len, digested, &si);
	ctx->mechanism = si.mech.mechanism;
	if (r == 0 && o.key_type == CKK_EC)
		r = raw_ecdsa(st, &o, sig->value, sig->len, raw, &raw_len);
	else if (r == 0 && sig->len <= sizeof(raw))
		memcpy(raw, sig->value, raw_len = sig->len);
	else if (r == 0)
		r = KR_E_P11_SIGNATURE;
	if (r == 0)
		r = p11_verify(st->tok, &si.mech, o.handle, si.in.data, si.in.size, raw, raw_len);
	if (r == KR_E_P11_SIGNATURE && si.mech.pParameter == &si.pss && p.salt_length < 0 &&
	    longest_salt(st, &o, &si.pss) == 0)
		r = p11_verify(st->tok, &si.mech, o.handle, si.in.data, si.in.size, raw, raw_len);
	if (r < 0 && r != KR_E_P11_SIGNATURE && o.key_type == CKK_RSA && above_modulus(st, &o, raw, raw_len))
		r = KR_E_P11_SIGNATURE;
	if (r == 0 || r == KR_E_P11_SIGNATURE)
		put_validity(w, &o, r == 0);
	else
		crypto_fail(st, &o, r, res);
}

/* HMAC with the hash that the Cryptographic Algorithm of the request, or of the
 * key's Cryptographic Parameters, or else of the key names; *ret_len is its MAC's
 * length. */
static int mac_mechanism(const struct key_policy *kp, const struct crypto_params *p, CK_MECHANISM *mech,
			 size_t *ret_len)
{
	static const struct {
		uint32_t algorithm, hash;
	} hmacs[] = {
		{ ALG_HMAC_SHA1, HASH_SHA1 }, { ALG_HMAC_SHA224, HASH_SHA224 }, { ALG_HMAC_SHA256, HASH_SHA256 },
		{ ALG_HMAC_SHA384, HASH_SHA384 }, { ALG_HMAC_SHA512, HASH_SHA512 },
	};
	uint32_t algorithm = p->algorithm ? p->algorithm : kp->algorithm ? kp->algorithm : ALG_HMAC_SHA256, hash = 0;
	const struct p11_hash *h;

	for (size_t i = 0; i < sizeof(hmacs) / sizeof(hmacs[0]); i++)
		if (hmacs[i].algorithm == algorithm)
			hash = hmacs[i].hash;
	if (!(h = crypto_hash(hash)))
		return KR_E_P11_MECHANISM;
	*mech = (CK_MECHANISM){ h->hmac, NULL, 0 };
	*ret_len = gnutls_hash_get_len(h->dig);
	return 0;
}

static void mac(struct ops_ctx *ctx, const struct ttlv_item *payload, struct ttlv_writer *w, struct ops_result *res,
		bool verify)
{
	const struct ttlv_item *tag = ttlv_find(payload, KMIP_TAG_MAC_DATA);
	struct crypto_params p;
	struct key_policy *kp;
	CK_MECHANISM mech;
	struct store *st;
	struct store_obj o;
	uint8_t out[64];
	size_t out_len = sizeof(out), mac_len = 0;
	bool digested;
	const struct ttlv_item *in = input_data(payload, false, &digested);
	int r;

	if (!in || (verify && (!tag || tag->type != TTLV_BYTE_STRING))) {
		ops_fail(res, KMIP_REASON_MISSING_DATA, verify ? "MAC Verify needs Data and MAC Data" : "MAC needs Data");
		return;
	}
	if (!crypto_read_params(payload, &p, res) || !single_part(payload, res) ||
	    !crypto_object(ctx, STORE_SECRET, &st, &o, res) ||
	    !(kp = crypto_key_for(st, &o, verify ? PROCESS : PROTECT, &p, res)))
		return;
	r = mac_mechanism(kp, &p, &mech, &mac_len);
	ctx->mechanism = r == 0 ? mech.mechanism : 0;
	if (r == 0 && !verify && kp->limited && !crypto_take_usage(st, &o, kp, in->len, 1, res))
		return;
	/* A MAC of another length is invalid, whatever the token says: openCryptoki
	 * 3.8's software token compares the hash's length of bytes, reading past a
	 * shorter MAC, and accepts one cut short. */
	if (r == 0 && verify && tag->len != mac_len)
		r = KR_E_P11_SIGNATURE;
	else if (r == 0 && verify)
		r = p11_verify(st->tok, &mech, o.handle, in->value, in->len, tag->value, tag->len);
	else if (r == 0)
		r = p11_sign(st->tok, &mech, o.handle, in->value, in->len, out, &out_len);
	if (verify && (r == 0 || r == KR_E_P11_SIGNATURE)) {
		put_validity(w, &o, r == 0);
		return;
	}
	if (r < 0) {
		crypto_fail(st, &o, r, res);
		return;
	}
	ttlv_begin(w, KMIP_TAG_RESPONSE_PAYLOAD);
	ops_put_uid(w, KMIP_TAG_UNIQUE_IDENTIFIER, o.uid);
	ttlv_put_bytes(w, KMIP_TAG_MAC_DATA, out, out_len);
	ttlv_end(w);
}

void op_mac(struct ops_ctx *ctx, const struct ttlv_item *payload, struct ttlv_writer *w, struct ops_result *res)
{
	mac(ctx, payload, w, res, false);
}

void op_mac_verify(struct ops_ctx *ctx, const struct ttlv_item *payload, struct ttlv_writer *w,
		   struct ops_result *res)
{
	mac(ctx, payload, w, res, true);
}

/* Hash: the token's digest of the Data, with the Hashing Algorithm that the
 * Cryptographic Parameters name. */
void op_hash(struct ops_ctx *ctx, const struct ttlv_item *payload, struct ttlv_writer *w, struct ops_result *res)
{
	const struct ttlv_item *data = ttlv_find(payload, KMIP_TAG_DATA);
	const struct p11_hash *h;
	struct crypto_params p;
	struct store *st;
	CK_MECHANISM mech = { 0, NULL, 0 };
	uint8_t out[64];
	size_t out_len = sizeof(out);
	int r;

	if (!data || data->type != TTLV_BYTE_STRING) {
		ops_fail(res, KMIP_REASON_MISSING_DATA, "Hash needs Data");
		return;
	}
	if (!crypto_read_params(payload, &p, res))
		return;
	if (!p.hash || !(h = crypto_hash(p.hash))) {
		ops_fail(res, p.hash ? KMIP_REASON_UNSUPPORTED_CRYPTOGRAPHIC_PARAMETERS : KMIP_REASON_MISSING_DATA,
			 "Hash needs a Hashing Algorithm of SHA-1, SHA-224, SHA-256, SHA-384 or SHA-512");
		return;
	}
	if (!(st = ops_store(ctx, res)))
		return;
	mech.mechanism = ctx->mechanism = h->digest;
	r = p11_digest(st->tok, &mech, data->value, data->len, out, &out_len);
	if (r < 0) {
		crypto_fail(st, NULL, r, res);
		return;
	}
	ttlv_begin(w, KMIP_TAG_RESPONSE_PAYLOAD);
	ttlv_put_bytes(w, KMIP_TAG_DATA, out, out_len);
	ttlv_end(w);
}

#define MAX_RANDOM (64 * 1024)

void op_rng_retrieve(struct ops_ctx *ctx, const struct ttlv_item *payload, struct ttlv_writer *w,
		     struct ops_result *res)
{
	const struct ttlv_item *len = ttlv_find(payload, KMIP_TAG_DATA_LENGTH);
	struct store *st;
	uint8_t *buf;
	size_t n;
	int r;

	if (!len || len->type != TTLV_INTEGER || ttlv_int(len) <= 0) {
		ops_fail(res, len ? KMIP_REASON_INVALID_FIELD : KMIP_REASON_MISSING_DATA, "a positive Data Length is required");
		return;
	}
	if (ttlv_int(len) > MAX_RANDOM) {
		ops_fail(res, KMIP_REASON_NUMERIC_RANGE, "at most 65536 random bytes per request");
		return;
	}
	n = (size_t)ttlv_int(len);
	if (!(st = ops_store(ctx, res)))
		return;
	if (!(buf = malloc(n))) {
		ops_fail_err(res, KR_E_NOMEM);
		return;
	}
	r = p11_random(st->tok, buf, n);
	/* A token without a generator: GnuTLS's, only if the config allows it. */
	if (r == KR_E_P11_MECHANISM && ctx->cfg->keys.software_random)
		r = gnutls_rnd(GNUTLS_RND_RANDOM, buf, n) == 0 ? 0 : KR_E_P11_FAILED;
	if (r < 0) {
		ops_fail_err(res, r);
		if (p11_last_rv(st->tok) != CKR_OK) /* the token's own refusal */
			res->message = p11_rv_name(p11_last_rv(st->tok));
	} else {
		ttlv_begin(w, KMIP_TAG_RESPONSE_PAYLOAD);
		ttlv_put_bytes(w, KMIP_TAG_DATA, buf, n);
		ttlv_end(w);
	}
	explicit_bzero(buf, n);
	free(buf);
}

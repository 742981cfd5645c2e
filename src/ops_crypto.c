#include "config.h"

/* Cryptographic operations with keys in the token: Sign, Signature Verify, MAC,
 * MAC Verify, Encrypt, Decrypt and RNG Retrieve. */

#include <gnutls/abstract.h>
#include <gnutls/crypto.h>
#include <stdlib.h>
#include <string.h>

#include "ops_objects.h"

enum { PAD_NONE = 0x01, PAD_OAEP = 0x02, PAD_PKCS5 = 0x03, PAD_PKCS1_V15 = 0x08, PAD_PSS = 0x0A };
enum { HASH_SHA1 = 4, HASH_SHA224 = 5, HASH_SHA256 = 6, HASH_SHA384 = 7, HASH_SHA512 = 8 };
enum { MODE_CBC = 1, MODE_ECB = 2, MODE_GCM = 9 };
enum { VALID = 1, INVALID = 2 };

#define MAX_SIGNATURE 1024 /* RSA-8192 */
#define AES_BLOCK 16

/* KMIP hashes and their PKCS#11 and GnuTLS counterparts. */
static const struct hash {
	uint32_t kmip;
	gnutls_digest_algorithm_t gnutls;
	CK_MECHANISM_TYPE digest, rsa_pkcs, rsa_pss, hmac, ecdsa;
	CK_RSA_PKCS_MGF_TYPE mgf;
} hashes[] = {
	{ HASH_SHA1, GNUTLS_DIG_SHA1, CKM_SHA_1, CKM_SHA1_RSA_PKCS, CKM_SHA1_RSA_PKCS_PSS, CKM_SHA_1_HMAC,
	  CKM_ECDSA_SHA1, CKG_MGF1_SHA1 },
	{ HASH_SHA224, GNUTLS_DIG_SHA224, CKM_SHA224, CKM_SHA224_RSA_PKCS, CKM_SHA224_RSA_PKCS_PSS, CKM_SHA224_HMAC,
	  CKM_ECDSA_SHA224, CKG_MGF1_SHA224 },
	{ HASH_SHA256, GNUTLS_DIG_SHA256, CKM_SHA256, CKM_SHA256_RSA_PKCS, CKM_SHA256_RSA_PKCS_PSS, CKM_SHA256_HMAC,
	  CKM_ECDSA_SHA256, CKG_MGF1_SHA256 },
	{ HASH_SHA384, GNUTLS_DIG_SHA384, CKM_SHA384, CKM_SHA384_RSA_PKCS, CKM_SHA384_RSA_PKCS_PSS, CKM_SHA384_HMAC,
	  CKM_ECDSA_SHA384, CKG_MGF1_SHA384 },
	{ HASH_SHA512, GNUTLS_DIG_SHA512, CKM_SHA512, CKM_SHA512_RSA_PKCS, CKM_SHA512_RSA_PKCS_PSS, CKM_SHA512_HMAC,
	  CKM_ECDSA_SHA512, CKG_MGF1_SHA512 },
};

static const struct hash *find_hash(uint32_t kmip)
{
	for (size_t i = 0; i < sizeof(hashes) / sizeof(hashes[0]); i++)
		if (hashes[i].kmip == kmip)
			return &hashes[i];
	return NULL;
}

/* Cryptographic Parameters: what the request names; the rest follows the key. */
struct crypto_params {
	uint32_t padding, hash, mode, algorithm, mgf_hash;
	int32_t tag_length;
	bool random_iv;
};

static bool read_params(const struct ttlv_item *payload, struct crypto_params *p, struct ops_result *res)
{
	const struct ttlv_item *cp = ttlv_find(payload, KMIP_TAG_CRYPTOGRAPHIC_PARAMETERS);

	*p = (struct crypto_params){ 0 };
	if (!cp)
		return true;
	if (cp->type != TTLV_STRUCTURE) {
		ops_fail(res, KMIP_REASON_INVALID_FIELD, "Cryptographic Parameters must be a structure");
		return false;
	}
	for (const struct ttlv_item *c = cp->child; c; c = c->next) {
		if (c->type == TTLV_ENUMERATION) {
			uint32_t v = ttlv_enum(c);

			switch (c->tag) {
			case KMIP_TAG_PADDING_METHOD: p->padding = v; break;
			case KMIP_TAG_HASHING_ALGORITHM: p->hash = v; break;
			case KMIP_TAG_BLOCK_CIPHER_MODE: p->mode = v; break;
			case KMIP_TAG_CRYPTOGRAPHIC_ALGORITHM: p->algorithm = v; break;
			case KMIP_TAG_MASK_GENERATOR_HASHING_ALGORITHM: p->mgf_hash = v; break;
			default: break;
			}
		} else if (c->tag == KMIP_TAG_TAG_LENGTH && c->type == TTLV_INTEGER) {
			p->tag_length = ttlv_int(c);
		} else if (c->tag == KMIP_TAG_RANDOM_IV && c->type == TTLV_BOOLEAN) {
			p->random_iv = ttlv_bool(c);
		}
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
	const struct hash *h = find_hash(p->hash ? p->hash : HASH_SHA256);
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
		s->pss = (CK_RSA_PKCS_PSS_PARAMS){ h->digest, h->mgf, gnutls_hash_get_len(h->gnutls) };
		s->mech = (CK_MECHANISM){ CKM_RSA_PKCS_PSS, &s->pss, sizeof(s->pss) };
	}
	combined = type == CKK_EC ? h->ecdsa : padding == PAD_PSS ? h->rsa_pss : h->rsa_pkcs;
	if (!digested && p11_has_mechanism(tok, combined)) {
		s->mech.mechanism = combined;
		return 0;
	}
	if (!digested) {
		if (gnutls_hash_fast(h->gnutls, data, len, s->digest) < 0)
			return KR_E_P11_FAILED;
		s->in = (gnutls_datum_t){ s->digest, gnutls_hash_get_len(h->gnutls) };
	}
	if (type == CKK_EC) {
		s->mech.mechanism = CKM_ECDSA;
	} else if (padding == PAD_PKCS1_V15) {
		gnutls_datum_t di = { 0 };

		if (gnutls_encode_ber_digest_info(h->gnutls, &s->in, &di) < 0 || di.size > sizeof(s->buf)) {
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
static void crypto_fail(struct store *st, const struct store_obj *o, int r, struct ops_result *res)
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
static bool crypto_object(struct ops_ctx *ctx, const struct ttlv_item *payload, enum store_kind kind,
			  struct store **ret_st, struct store_obj *o, struct ops_result *res)
{
	if (!(*ret_st = ops_store(ctx, res)) || !ops_find_object(ctx, *ret_st, payload, o, res))
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
	const struct hash *h = find_hash(p->hash ? p->hash : HASH_SHA256);

	if (type == CKK_EC_EDWARDS)
		return GNUTLS_SIGN_EDDSA_ED25519;
	if (!h)
		return GNUTLS_SIGN_UNKNOWN;
	if (type == CKK_EC)
		return gnutls_pk_to_sign(GNUTLS_PK_ECDSA, h->gnutls);
	if (p->padding != PAD_PSS)
		return gnutls_pk_to_sign(GNUTLS_PK_RSA, h->gnutls);
	switch (h->gnutls) {
	case GNUTLS_DIG_SHA256: return GNUTLS_SIGN_RSA_PSS_RSAE_SHA256;
	case GNUTLS_DIG_SHA384: return GNUTLS_SIGN_RSA_PSS_RSAE_SHA384;
	case GNUTLS_DIG_SHA512: return GNUTLS_SIGN_RSA_PSS_RSAE_SHA512;
	default: return GNUTLS_SIGN_UNKNOWN;
	}
}

/* The verify_signatures self-check: GnuTLS verifies the signature with the public
 * key, independently of the token, which catches a faulty HSM or the wrong key
 * behind a load balancer. The public key is the pair's public half; an RSA private
 * key made without one carries its own modulus and exponent. Returns 0, or
 * KR_E_P11_SIGNATURE, or KR_E_P11_NOT_FOUND when there is nothing to check with. */
static int self_check(struct store *st, const struct store_obj *priv, const struct crypto_params *p,
		      const struct ttlv_item *in, bool digested, const gnutls_datum_t *sig)
{
	/* The last key checked with: a signer uses one key for many Signs, and building
	 * it costs token round trips. The process serves one connection, so one token. */
	static struct {
		char uid[STORE_MAX_UID + 1];
		CK_OBJECT_HANDLE handle;
		gnutls_pubkey_t key;
	} last;
	gnutls_sign_algorithm_t algo = gnutls_algorithm(priv->key_type, p);
	gnutls_datum_t data = { (uint8_t *)in->value, in->len };

	if (algo == GNUTLS_SIGN_UNKNOWN)
		return KR_E_P11_NOT_FOUND;
	if (!last.key || last.handle != priv->handle || strcmp(last.uid, priv->uid) != 0) {
		struct store_obj pub;

		if (last.key)
			gnutls_pubkey_deinit(last.key);
		last.key = NULL;
		if (store_find_kind(st, STORE_PUBLIC, priv->id, priv->id_len, &pub) < 0) {
			if (priv->key_type != CKK_RSA)
				return KR_E_P11_NOT_FOUND;
			pub = *priv;
		}
		if (ops_gnutls_pubkey(st, &pub, &last.key) < 0) {
			last.key = NULL;
			return KR_E_P11_NOT_FOUND;
		}
		memcpy(last.uid, priv->uid, sizeof(last.uid));
		last.handle = priv->handle;
	}
	return (digested ? gnutls_pubkey_verify_hash2(last.key, algo, 0, &data, sig)
			 : gnutls_pubkey_verify_data2(last.key, algo, 0, &data, sig)) >= 0
		       ? 0
		       : KR_E_P11_SIGNATURE;
}

void op_sign(struct ops_ctx *ctx, const struct ttlv_item *payload, struct ttlv_writer *w, struct ops_result *res)
{
	struct crypto_params p;
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
	if (!read_params(payload, &p, res) || !crypto_object(ctx, payload, STORE_PRIVATE, &st, &o, res))
		return;
	r = signature_input(st->tok, o.key_type, &p, in->value, in->len, digested, &si);
	ctx->mechanism = si.mech.mechanism;
	if (r == 0)
		r = p11_sign(st->tok, &si.mech, o.handle, si.in.data, si.in.size, sig, &sig_len);
	if (r == 0 && o.key_type == CKK_EC) { /* PKCS#11 gives r || s; clients want DER SEQUENCE { r, s } */
		gnutls_datum_t rd = { sig, (unsigned)sig_len / 2 }, sd = { sig + sig_len / 2, (unsigned)sig_len / 2 };

		r = gnutls_encode_rs_value(&der, &rd, &sd) < 0 ? KR_E_NOMEM : 0;
	}
	if (r < 0) {
		crypto_fail(st, &o, r, res);
		return;
	}
	if (!der.data)
		der = (gnutls_datum_t){ sig, (unsigned)sig_len };
	if (ctx->cfg->keys.verify_signatures && (r = self_check(st, &o, &p, in, digested, &der)) < 0) {
		ops_fail(res, KMIP_REASON_CRYPTOGRAPHIC_FAILURE,
			 r == KR_E_P11_SIGNATURE ? "verify_signatures: the signature does not verify with the public key"
						 : "verify_signatures: the token holds no public key to check with");
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
	if (!read_params(payload, &p, res) || !crypto_object(ctx, payload, STORE_PUBLIC, &st, &o, res))
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
	if (r == 0 || r == KR_E_P11_SIGNATURE)
		put_validity(w, &o, r == 0);
	else
		crypto_fail(st, &o, r, res);
}

/* HMAC with the hash the request or the key's algorithm names. */
static int mac_mechanism(struct store *st, const struct store_obj *o, const struct crypto_params *p, CK_MECHANISM *mech)
{
	static const struct {
		uint32_t algorithm, hash;
	} hmacs[] = {
		{ ALG_HMAC_SHA1, HASH_SHA1 }, { ALG_HMAC_SHA224, HASH_SHA224 }, { ALG_HMAC_SHA256, HASH_SHA256 },
		{ ALG_HMAC_SHA384, HASH_SHA384 }, { ALG_HMAC_SHA512, HASH_SHA512 },
	};
	struct store_meta m = { 0 };
	uint32_t algorithm = p->algorithm, hash = 0;
	const struct hash *h;

	if (!algorithm && store_meta_read(st, o, &m) == 0)
		algorithm = ops_meta_enum(&m, KMIP_TAG_CRYPTOGRAPHIC_ALGORITHM, ALG_HMAC_SHA256);
	store_meta_clear(&m);
	for (size_t i = 0; i < sizeof(hmacs) / sizeof(hmacs[0]); i++)
		if (hmacs[i].algorithm == (algorithm ? algorithm : ALG_HMAC_SHA256))
			hash = hmacs[i].hash;
	if (!(h = find_hash(hash)))
		return KR_E_P11_MECHANISM;
	*mech = (CK_MECHANISM){ h->hmac, NULL, 0 };
	return 0;
}

static void mac(struct ops_ctx *ctx, const struct ttlv_item *payload, struct ttlv_writer *w, struct ops_result *res,
		bool verify)
{
	const struct ttlv_item *tag = ttlv_find(payload, KMIP_TAG_MAC_DATA);
	struct crypto_params p;
	CK_MECHANISM mech;
	struct store *st;
	struct store_obj o;
	uint8_t out[64];
	size_t out_len = sizeof(out);
	bool digested;
	const struct ttlv_item *in = input_data(payload, false, &digested);
	int r;

	if (!in || (verify && (!tag || tag->type != TTLV_BYTE_STRING))) {
		ops_fail(res, KMIP_REASON_MISSING_DATA, verify ? "MAC Verify needs Data and MAC Data" : "MAC needs Data");
		return;
	}
	if (!read_params(payload, &p, res) || !crypto_object(ctx, payload, STORE_SECRET, &st, &o, res))
		return;
	r = mac_mechanism(st, &o, &p, &mech);
	ctx->mechanism = r == 0 ? mech.mechanism : 0;
	if (r == 0 && verify)
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
	const struct hash *h;
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
	if (!read_params(payload, &p, res))
		return;
	if (!p.hash || !(h = find_hash(p.hash))) {
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
	} else {
		ttlv_begin(w, KMIP_TAG_RESPONSE_PAYLOAD);
		ttlv_put_bytes(w, KMIP_TAG_DATA, buf, n);
		ttlv_end(w);
	}
	explicit_bzero(buf, n);
	free(buf);
}

/* Encrypt and Decrypt: AES in CBC (PKCS#5 padding or none), ECB and GCM; RSA with
 * OAEP or PKCS#1 v1.5. An IV the client does not give is made by the token and
 * returned. */
#define GCM_IV_LEN 12
#define MAX_TAG 16

struct cipher {
	CK_MECHANISM mech;
	CK_GCM_PARAMS gcm;
	CK_RSA_PKCS_OAEP_PARAMS oaep;
	uint8_t iv[AES_BLOCK];
	size_t iv_len, tag_len;
	bool iv_made;
};

static int aes_cipher(struct store *st, const struct crypto_params *p, const struct ttlv_item *payload, bool encrypt,
		      struct cipher *c, struct ops_result *res)
{
	const struct ttlv_item *iv = ttlv_find(payload, KMIP_TAG_IV_COUNTER_NONCE);
	const struct ttlv_item *aad = ttlv_find(payload, KMIP_TAG_AUTHENTICATED_ENCRYPTION_ADDITIONAL_DATA);
	uint32_t mode = p->mode ? p->mode : MODE_CBC;
	uint32_t padding = p->padding ? p->padding : mode == MODE_CBC ? PAD_PKCS5 : PAD_NONE;
	int r;

	if ((mode != MODE_CBC && mode != MODE_ECB && mode != MODE_GCM) ||
	    (padding != PAD_NONE && (padding != PAD_PKCS5 || mode != MODE_CBC)))
		return KR_E_P11_MECHANISM;
	if (mode == MODE_ECB) {
		c->mech = (CK_MECHANISM){ CKM_AES_ECB, NULL, 0 };
		return 0;
	}
	c->iv_len = mode == MODE_GCM ? GCM_IV_LEN : AES_BLOCK;
	if (iv) {
		if (iv->type != TTLV_BYTE_STRING || iv->len == 0 || iv->len > sizeof(c->iv) ||
		    (mode == MODE_CBC && iv->len != AES_BLOCK)) {
			ops_fail(res, KMIP_REASON_INVALID_FIELD, "IV/Counter/Nonce has the wrong length");
			return KR_E_KMIP_FIELD_TYPE;
		}
		memcpy(c->iv, iv->value, iv->len);
		c->iv_len = iv->len;
	} else if (!encrypt) {
		ops_fail(res, KMIP_REASON_MISSING_INITIALIZATION_VECTOR, "decryption needs the IV/Counter/Nonce");
		return KR_E_KMIP_MISSING;
	} else if ((r = p11_random(st->tok, c->iv, c->iv_len)) < 0) {
		return r;
	} else {
		c->iv_made = true;
	}
	if (mode == MODE_CBC) {
		c->mech = (CK_MECHANISM){ padding == PAD_PKCS5 ? CKM_AES_CBC_PAD : CKM_AES_CBC, c->iv, c->iv_len };
		return 0;
	}
	c->tag_len = p->tag_length ? (size_t)p->tag_length : MAX_TAG;
	if (p->tag_length < 0 || c->tag_len > MAX_TAG || c->tag_len < 4) {
		ops_fail(res, KMIP_REASON_INVALID_FIELD, "Tag Length must be 4 to 16 bytes");
		return KR_E_KMIP_FIELD_TYPE;
	}
	c->gcm = (CK_GCM_PARAMS){ c->iv, c->iv_len, c->iv_len * 8, NULL, 0, c->tag_len * 8 };
	if (aad && aad->type == TTLV_BYTE_STRING) {
		c->gcm.pAAD = (CK_BYTE *)aad->value;
		c->gcm.ulAADLen = aad->len;
	}
	c->mech = (CK_MECHANISM){ CKM_AES_GCM, &c->gcm, sizeof(c->gcm) };
	return 0;
}

static int rsa_cipher(const struct crypto_params *p, struct cipher *c)
{
	uint32_t padding = p->padding ? p->padding : PAD_OAEP;
	const struct hash *h = find_hash(p->hash ? p->hash : HASH_SHA1);
	const struct hash *mgf = find_hash(p->mgf_hash ? p->mgf_hash : p->hash ? p->hash : HASH_SHA1);

	if (padding == PAD_PKCS1_V15) {
		c->mech = (CK_MECHANISM){ CKM_RSA_PKCS, NULL, 0 };
		return 0;
	}
	if (padding != PAD_OAEP || !h || !mgf)
		return KR_E_P11_MECHANISM;
	/* The hash is passed on as asked: a token that lacks it says so. */
	c->oaep = (CK_RSA_PKCS_OAEP_PARAMS){ h->digest, mgf->mgf, CKZ_DATA_SPECIFIED, NULL, 0 };
	c->mech = (CK_MECHANISM){ CKM_RSA_PKCS_OAEP, &c->oaep, sizeof(c->oaep) };
	return 0;
}

static void cipher_op(struct ops_ctx *ctx, const struct ttlv_item *payload, struct ttlv_writer *w,
		      struct ops_result *res, bool encrypt)
{
	const struct ttlv_item *tag = ttlv_find(payload, KMIP_TAG_AUTHENTICATED_ENCRYPTION_TAG);
	struct crypto_params p;
	struct cipher c = { 0 };
	struct store *st;
	struct store_obj o;
	uint8_t *in = NULL, *out = NULL;
	size_t in_len, out_len = 0;
	bool digested;
	const struct ttlv_item *data = input_data(payload, false, &digested);
	int r;

	if (!data) {
		ops_fail(res, KMIP_REASON_MISSING_DATA, encrypt ? "Encrypt needs Data" : "Decrypt needs Data");
		return;
	}
	if (!read_params(payload, &p, res) || !(st = ops_store(ctx, res)) || !ops_find_object(ctx, st, payload, &o, res))
		return;
	if (o.key_type == CKK_AES && o.kind == STORE_SECRET) {
		r = aes_cipher(st, &p, payload, encrypt, &c, res);
	} else if (o.key_type == CKK_RSA && o.kind == (encrypt ? STORE_PUBLIC : STORE_PRIVATE)) {
		r = rsa_cipher(&p, &c);
	} else {
		ops_fail(res, KMIP_REASON_INVALID_OBJECT_TYPE,
			 encrypt ? "Encrypt needs an AES key or an RSA public key" : "Decrypt needs an AES key or an RSA private key");
		return;
	}
	if (r == KR_E_KMIP_FIELD_TYPE || r == KR_E_KMIP_MISSING)
		return; /* res is set */
	in_len = data->len;
	/* PKCS#11 takes a GCM tag at the end of the ciphertext. */
	if (r == 0 && !encrypt && c.mech.mechanism == CKM_AES_GCM) {
		if (!tag || tag->type != TTLV_BYTE_STRING || tag->len != c.tag_len) {
			ops_fail(res, KMIP_REASON_MISSING_DATA, "GCM decryption needs the Authenticated Encryption Tag");
			return;
		}
		if (!(in = malloc(data->len + tag->len + 1))) {
			ops_fail_err(res, KR_E_NOMEM);
			return;
		}
		memcpy(in, data->value, data->len);
		memcpy(in + data->len, tag->value, tag->len);
		in_len = data->len + tag->len;
	}
	ctx->mechanism = c.mech.mechanism;
	if (r == 0)
		r = encrypt ? p11_encrypt(st->tok, &c.mech, o.handle, data->value, in_len, &out, &out_len)
			    : p11_decrypt(st->tok, &c.mech, o.handle, in ? in : data->value, in_len, &out, &out_len);
	free(in);
	if (r < 0) {
		crypto_fail(st, &o, r, res);
		return;
	}
	if (encrypt && c.mech.mechanism == CKM_AES_GCM && out_len < c.tag_len) {
		ops_fail(res, KMIP_REASON_CRYPTOGRAPHIC_FAILURE, "the token returned no tag");
	} else {
		size_t ct_len = encrypt && c.mech.mechanism == CKM_AES_GCM ? out_len - c.tag_len : out_len;

		ttlv_begin(w, KMIP_TAG_RESPONSE_PAYLOAD);
		ops_put_uid(w, KMIP_TAG_UNIQUE_IDENTIFIER, o.uid);
		ttlv_put_bytes(w, KMIP_TAG_DATA, out, ct_len);
		if (c.iv_made)
			ttlv_put_bytes(w, KMIP_TAG_IV_COUNTER_NONCE, c.iv, c.iv_len);
		if (ct_len < out_len)
			ttlv_put_bytes(w, KMIP_TAG_AUTHENTICATED_ENCRYPTION_TAG, out + ct_len, out_len - ct_len);
		ttlv_end(w);
	}
	explicit_bzero(out, out_len);
	free(out);
}

void op_encrypt(struct ops_ctx *ctx, const struct ttlv_item *payload, struct ttlv_writer *w, struct ops_result *res)
{
	cipher_op(ctx, payload, w, res, true);
}

void op_decrypt(struct ops_ctx *ctx, const struct ttlv_item *payload, struct ttlv_writer *w, struct ops_result *res)
{
	cipher_op(ctx, payload, w, res, false);
}

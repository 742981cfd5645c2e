#include "config.h"

#include <gnutls/crypto.h>
#include <string.h>

#include "ops_internal.h"

enum { PAD_PKCS1_V15 = 0x08, PAD_PSS = 0x0A };
enum { HASH_SHA1 = 4, HASH_SHA224 = 5, HASH_SHA256 = 6, HASH_SHA384 = 7, HASH_SHA512 = 8 };

#define MAX_SIGNATURE 1024 /* RSA-8192 */

/* KMIP hashes and their PKCS#11 and GnuTLS counterparts. */
static const struct hash {
	uint32_t kmip;
	gnutls_digest_algorithm_t gnutls;
	CK_MECHANISM_TYPE digest, rsa_pkcs, rsa_pss;
	CK_RSA_PKCS_MGF_TYPE mgf;
} hashes[] = {
	{ HASH_SHA1, GNUTLS_DIG_SHA1, CKM_SHA_1, CKM_SHA1_RSA_PKCS, CKM_SHA1_RSA_PKCS_PSS, CKG_MGF1_SHA1 },
	{ HASH_SHA224, GNUTLS_DIG_SHA224, CKM_SHA224, CKM_SHA224_RSA_PKCS, CKM_SHA224_RSA_PKCS_PSS, CKG_MGF1_SHA224 },
	{ HASH_SHA256, GNUTLS_DIG_SHA256, CKM_SHA256, CKM_SHA256_RSA_PKCS, CKM_SHA256_RSA_PKCS_PSS, CKG_MGF1_SHA256 },
	{ HASH_SHA384, GNUTLS_DIG_SHA384, CKM_SHA384, CKM_SHA384_RSA_PKCS, CKM_SHA384_RSA_PKCS_PSS, CKG_MGF1_SHA384 },
	{ HASH_SHA512, GNUTLS_DIG_SHA512, CKM_SHA512, CKM_SHA512_RSA_PKCS, CKM_SHA512_RSA_PKCS_PSS, CKG_MGF1_SHA512 },
};

static const struct hash *find_hash(uint32_t kmip)
{
	for (size_t i = 0; i < sizeof(hashes) / sizeof(hashes[0]); i++)
		if (hashes[i].kmip == kmip)
			return &hashes[i];
	return NULL;
}

/* Cryptographic Parameters: what the request names wins; the rest follows the key. */
struct sign_params {
	uint32_t padding, hash;
};

static bool read_params(const struct ttlv_item *payload, struct sign_params *p, struct ops_result *res)
{
	const struct ttlv_item *cp = ttlv_find(payload, KMIP_TAG_CRYPTOGRAPHIC_PARAMETERS);

	*p = (struct sign_params){ PAD_PKCS1_V15, HASH_SHA256 };
	if (!cp)
		return true;
	if (cp->type != TTLV_STRUCTURE) {
		ops_fail(res, KMIP_REASON_INVALID_FIELD, "Cryptographic Parameters must be a structure");
		return false;
	}
	for (const struct ttlv_item *c = cp->child; c; c = c->next) {
		if (c->type != TTLV_ENUMERATION)
			continue;
		if (c->tag == KMIP_TAG_PADDING_METHOD)
			p->padding = ttlv_enum(c);
		else if (c->tag == KMIP_TAG_HASHING_ALGORITHM)
			p->hash = ttlv_enum(c);
	}
	return true;
}

/* Signs with the token. RSA hashes on the token (CKM_SHA256_RSA_PKCS and the like);
 * ECDSA hashes here, as SoftHSM has no CKM_ECDSA_SHA256, and returns DER
 * SEQUENCE { r, s } made by GnuTLS; Ed25519 signs the message itself. */
static int sign(struct store *st, const struct store_obj *o, const struct sign_params *p, const uint8_t *data,
		size_t len, bool digested, uint8_t *sig, size_t *sig_len, gnutls_datum_t *der)
{
	const struct hash *h = find_hash(p->hash);
	CK_RSA_PKCS_PSS_PARAMS pss;
	CK_MECHANISM mech = { 0, NULL, 0 };
	uint8_t digest[64], info[128];
	gnutls_datum_t in = { (uint8_t *)data, (unsigned)len };
	int r;

	switch (o->key_type) {
	case CKK_RSA:
		if (!h || (p->padding != PAD_PKCS1_V15 && p->padding != PAD_PSS))
			return KR_E_P11_MECHANISM;
		if (p->padding == PAD_PSS) {
			pss = (CK_RSA_PKCS_PSS_PARAMS){ h->digest, h->mgf, gnutls_hash_get_len(h->gnutls) };
			mech = (CK_MECHANISM){ digested ? CKM_RSA_PKCS_PSS : h->rsa_pss, &pss, sizeof(pss) };
		} else if (!digested) {
			mech.mechanism = h->rsa_pkcs;
		} else {
			gnutls_datum_t di = { 0 };

			/* A digest signs as its DigestInfo under raw PKCS#1 v1.5. */
			if (gnutls_encode_ber_digest_info(h->gnutls, &in, &di) < 0 || di.size > sizeof(info)) {
				gnutls_free(di.data);
				return KR_E_P11_DATA;
			}
			memcpy(info, di.data, di.size);
			in = (gnutls_datum_t){ info, di.size };
			gnutls_free(di.data);
			mech.mechanism = CKM_RSA_PKCS;
		}
		return p11_sign(st->tok, &mech, o->handle, in.data, in.size, sig, sig_len);
	case CKK_EC:
		if (!h)
			return KR_E_P11_MECHANISM;
		if (!digested) {
			if (gnutls_hash_fast(h->gnutls, data, len, digest) < 0)
				return KR_E_P11_FAILED;
			in = (gnutls_datum_t){ digest, gnutls_hash_get_len(h->gnutls) };
		}
		mech.mechanism = CKM_ECDSA;
		r = p11_sign(st->tok, &mech, o->handle, in.data, in.size, sig, sig_len);
		if (r == 0) {
			gnutls_datum_t rd = { sig, (unsigned)*sig_len / 2 }, sd = { sig + *sig_len / 2, (unsigned)*sig_len / 2 };

			r = gnutls_encode_rs_value(der, &rd, &sd) < 0 ? KR_E_NOMEM : 0;
		}
		return r;
	case CKK_EC_EDWARDS:
		if (digested)
			return KR_E_P11_MECHANISM; /* EdDSA signs the message, not a digest */
		mech.mechanism = CKM_EDDSA;
		return p11_sign(st->tok, &mech, o->handle, data, len, sig, sig_len);
	default:
		return KR_E_P11_MECHANISM;
	}
}

void op_sign(struct ops_ctx *ctx, const struct ttlv_item *payload, struct ttlv_writer *w, struct ops_result *res)
{
	const struct ttlv_item *data = ttlv_find(payload, KMIP_TAG_DATA);
	const struct ttlv_item *digested = ttlv_find(payload, KMIP_TAG_DIGESTED_DATA);
	const struct ttlv_item *in = data ? data : digested;
	struct sign_params p;
	struct store *st;
	struct store_obj o;
	uint8_t sig[MAX_SIGNATURE];
	size_t sig_len = sizeof(sig);
	gnutls_datum_t der = { 0 };
	int r;

	if (!in || in->type != TTLV_BYTE_STRING) {
		ops_fail(res, KMIP_REASON_MISSING_DATA, "Sign needs Data or Digested Data");
		return;
	}
	if (!read_params(payload, &p, res) || !(st = ops_store(ctx, res)) || !ops_find_object(ctx, st, payload, &o, res))
		return;
	if (o.kind != STORE_PRIVATE) {
		ops_fail(res, KMIP_REASON_INVALID_OBJECT_TYPE, "signing needs a private key");
		return;
	}
	r = sign(st, &o, &p, in->value, in->len, in == digested, sig, &sig_len, &der);
	if (r == KR_E_P11_NOT_PERMITTED)
		ops_explain_refusal(st, &o, res);
	else if (r == KR_E_P11_MECHANISM)
		ops_fail(res, KMIP_REASON_UNSUPPORTED_CRYPTOGRAPHIC_PARAMETERS,
			 "this key cannot sign with these Cryptographic Parameters");
	else if (r < 0)
		ops_fail_err(res, r);
	if (r == 0) {
		ttlv_begin(w, KMIP_TAG_RESPONSE_PAYLOAD);
		ttlv_put_text(w, KMIP_TAG_UNIQUE_IDENTIFIER, o.uid, strlen(o.uid));
		if (der.data)
			ttlv_put_bytes(w, KMIP_TAG_SIGNATURE_DATA, der.data, der.size);
		else
			ttlv_put_bytes(w, KMIP_TAG_SIGNATURE_DATA, sig, sig_len);
		ttlv_end(w);
	}
	gnutls_free(der.data);
}

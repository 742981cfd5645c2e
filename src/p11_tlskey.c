/* SPDX-License-Identifier: BSD-3-Clause */
#include "config.h"

#include "p11_tlskey.h"

#include <gnutls/crypto.h>
#include <p11-kit/uri.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

struct tls_key {
	struct p11_token *t;
	CK_OBJECT_HANDLE handle;
	CK_KEY_TYPE type;
	unsigned bits;
};

/* Big enough for an RSA-8192 signature. */
#define MAX_SIGNATURE 1024

static int find_private_key(struct p11_token *t, const char *key_uri, CK_OBJECT_HANDLE *ret, const char **ret_why)
{
	CK_OBJECT_CLASS cls = CKO_PRIVATE_KEY;
	CK_ATTRIBUTE tmpl[3] = { { CKA_CLASS, &cls, sizeof(cls) } };
	CK_OBJECT_HANDLE handles[2];
	P11KitUri *uri = p11_kit_uri_new();
	size_t n_tmpl = 1, found = 0;
	CK_ATTRIBUTE *a;
	int r = KR_E_P11_NOT_FOUND;

	if (!uri)
		return KR_E_NOMEM;
	if (p11_kit_uri_parse(key_uri, P11_KIT_URI_FOR_OBJECT, uri) != P11_KIT_URI_OK) {
		*ret_why = "tls.key: not a valid PKCS#11 URI";
		r = KR_E_CONFIG;
		goto out;
	}
	if ((a = p11_kit_uri_get_attribute(uri, CKA_ID)))
		tmpl[n_tmpl++] = *a;
	if ((a = p11_kit_uri_get_attribute(uri, CKA_LABEL)))
		tmpl[n_tmpl++] = *a;
	if (n_tmpl == 1) {
		*ret_why = "tls.key: the URI must name the key by id= or object=";
		r = KR_E_CONFIG;
		goto out;
	}
	if ((r = p11_find(t, tmpl, n_tmpl, handles, 2, &found)) < 0) {
		*ret_why = "tls.key: cannot search the token";
		goto out;
	}
	if (found != 1) {
		*ret_why = found ? "tls.key: the URI matches more than one private key"
				 : "tls.key: no private key in the token matches the URI";
		r = KR_E_P11_NOT_FOUND;
		goto out;
	}
	*ret = handles[0];
out:
	p11_kit_uri_free(uri);
	return r;
}

static int key_info(gnutls_privkey_t pkey, unsigned flags, void *userdata)
{
	const struct tls_key *k = userdata;
	gnutls_pk_algorithm_t pk = k->type == CKK_RSA ? GNUTLS_PK_RSA : GNUTLS_PK_ECDSA;

	(void)pkey;
	if (flags & GNUTLS_PRIVKEY_INFO_PK_ALGO)
		return pk;
	if (flags & GNUTLS_PRIVKEY_INFO_PK_ALGO_BITS)
		return (int)k->bits;
	if (flags & GNUTLS_PRIVKEY_INFO_HAVE_SIGN_ALGO) {
		gnutls_sign_algorithm_t algo = GNUTLS_FLAGS_TO_SIGN_ALGO(flags);
		gnutls_pk_algorithm_t spk = gnutls_sign_get_pk_algorithm(algo);

		return spk == pk || (pk == GNUTLS_PK_RSA && spk == GNUTLS_PK_RSA_PSS);
	}
	return GNUTLS_E_UNKNOWN_ALGORITHM;
}

static bool is_pss(gnutls_sign_algorithm_t algo)
{
	switch (algo) {
	case GNUTLS_SIGN_RSA_PSS_SHA256:
	case GNUTLS_SIGN_RSA_PSS_SHA384:
	case GNUTLS_SIGN_RSA_PSS_SHA512:
	case GNUTLS_SIGN_RSA_PSS_RSAE_SHA256:
	case GNUTLS_SIGN_RSA_PSS_RSAE_SHA384:
	case GNUTLS_SIGN_RSA_PSS_RSAE_SHA512:
		return true;
	default:
		return false;
	}
}

/* RSA-PSS parameters for the hash of a signature algorithm. */
static int pss_params(gnutls_sign_algorithm_t algo, CK_RSA_PKCS_PSS_PARAMS *p)
{
	gnutls_digest_algorithm_t dig = gnutls_sign_get_hash_algorithm(algo);
	const struct p11_hash *h = p11_hash(dig);

	if (!h)
		return GNUTLS_E_UNKNOWN_ALGORITHM;
	*p = (CK_RSA_PKCS_PSS_PARAMS){ h->digest, h->mgf, gnutls_hash_get_len(dig) };
	return 0;
}

/* GnuTLS hands over the hash (ECDSA, RSA-PSS) or the DigestInfo (RSA PKCS#1 v1.5). */
static int key_sign_hash(gnutls_privkey_t pkey, gnutls_sign_algorithm_t algo, void *userdata, unsigned flags,
			 const gnutls_datum_t *hash, gnutls_datum_t *signature)
{
	const struct tls_key *k = userdata;
	CK_RSA_PKCS_PSS_PARAMS pss;
	CK_MECHANISM mech = { k->type == CKK_RSA ? CKM_RSA_PKCS : CKM_ECDSA, NULL, 0 };
	uint8_t raw[MAX_SIGNATURE];
	size_t len = sizeof(raw);

	(void)pkey;
	if (k->type == CKK_RSA && ((flags & GNUTLS_PRIVKEY_SIGN_FLAG_RSA_PSS) || is_pss(algo))) {
		if (pss_params(algo, &pss) < 0)
			return GNUTLS_E_UNKNOWN_ALGORITHM;
		mech = (CK_MECHANISM){ CKM_RSA_PKCS_PSS, &pss, sizeof(pss) };
	}
	if (p11_sign(k->t, &mech, k->handle, hash->data, hash->size, raw, &len) < 0)
		return GNUTLS_E_PK_SIGN_FAILED;
	if (k->type == CKK_EC)
		return p11_ecdsa_der(raw, len, signature) < 0 ? GNUTLS_E_MEMORY_ERROR : 0;
	signature->data = gnutls_malloc(len);
	if (!signature->data)
		return GNUTLS_E_MEMORY_ERROR;
	memcpy(signature->data, raw, len);
	signature->size = (unsigned)len;
	return 0;
}

static void key_deinit(gnutls_privkey_t pkey, void *userdata)
{
	(void)pkey;
	free(userdata);
}

int p11_tls_privkey(struct p11_token *t, const char *key_uri, gnutls_privkey_t *ret, CK_OBJECT_HANDLE *ret_handle,
		    const char **ret_why)
{
	struct tls_key *k = calloc(1, sizeof(*k));
	CK_ATTRIBUTE type = { CKA_KEY_TYPE, NULL, sizeof(CK_KEY_TYPE) };
	CK_ATTRIBUTE modulus = { CKA_MODULUS, NULL, 0 };
	gnutls_privkey_t pkey = NULL;
	int r;

	if (!k)
		return KR_E_NOMEM;
	k->t = t;
	type.pValue = &k->type;
	if ((r = find_private_key(t, key_uri, &k->handle, ret_why)) < 0)
		goto fail;
	if ((r = p11_get_attrs(t, k->handle, &type, 1)) < 0) {
		*ret_why = "tls.key: cannot read the key type";
		goto fail;
	}
	if (k->type != CKK_RSA && k->type != CKK_EC) {
		*ret_why = "tls.key: only RSA and EC keys can serve TLS";
		r = KR_E_CONFIG;
		goto fail;
	}
	/* GnuTLS needs an RSA key's size; the modulus length gives it. */
	if (k->type == CKK_RSA && p11_get_attrs(t, k->handle, &modulus, 1) == 0)
		k->bits = (unsigned)modulus.ulValueLen * 8;
	if (gnutls_privkey_init(&pkey) < 0 ||
	    gnutls_privkey_import_ext4(pkey, k, NULL, key_sign_hash, NULL, key_deinit, key_info,
				       GNUTLS_PRIVKEY_IMPORT_AUTO_RELEASE) < 0) {
		*ret_why = "tls.key: GnuTLS refused the token key";
		r = KR_E_P11_FAILED;
		if (pkey)
			gnutls_privkey_deinit(pkey);
		goto fail;
	}
	*ret = pkey;
	*ret_handle = k->handle;
	return 0;
fail:
	free(k);
	return r;
}

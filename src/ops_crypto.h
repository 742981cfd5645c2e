/* SPDX-License-Identifier: BSD-3-Clause */
/* What the cryptographic operations share (ops_crypto.c, ops_cipher.c): the KMIP
 * values they speak, Cryptographic Parameters, and the rules of a key's
 * metadata - its parameters as defaults, the dates that bound its use, its Usage
 * Limits. Not part of the ops interface. */
#ifndef KR_OPS_CRYPTO_H
#define KR_OPS_CRYPTO_H

#include <gnutls/abstract.h>

#include "ops_objects.h"

enum { PAD_NONE = 0x01, PAD_OAEP = 0x02, PAD_PKCS5 = 0x03, PAD_PKCS1_V15 = 0x08, PAD_PSS = 0x0A };
enum { HASH_SHA1 = 4, HASH_SHA224 = 5, HASH_SHA256 = 6, HASH_SHA384 = 7, HASH_SHA512 = 8 };
enum { MODE_CBC = 1, MODE_ECB = 2, MODE_GCM = 9 };
#define AES_BLOCK 16

/* Cryptographic Parameters, of a request or of a key: 0 (-1 for the lengths, NULL
 * for the OAEP label) where a field is absent. */
struct crypto_params {
	uint32_t padding, hash, mode, algorithm, mgf_hash;
	int32_t tag_length, salt_length;
	const uint8_t *p_source;
	size_t p_source_len;
};

#define NO_PARAMS ((struct crypto_params){ .tag_length = -1, .salt_length = -1 })

/* What the cryptographic operations need of a key's metadata: its Cryptographic
 * Parameters, its Cryptographic Algorithm (which HMAC a MAC key does), its state
 * and the dates that bound its use, and whether it has Usage Limits. Read once per
 * key and connection, so that a Sign with a key already used costs one token call
 * (store_meta_current, or store_epoch_current for a key without metadata) beyond
 * the signature; read again when any process has written the metadata since, or
 * a date has changed the state. */
struct key_policy {
	char uid[STORE_MAX_UID + 1];
	CK_OBJECT_HANDLE handle;
	int backend;
	unsigned long changes;
	struct crypto_params params; /* p_source: "" or p_source_copy */
	uint8_t *p_source_copy;
	uint32_t algorithm;
	int64_t process_start, protect_stop; /* INT64_MIN, INT64_MAX: none */
	bool limited;
	/* The state, and the dates that will change it (INT64_MAX: none). */
	uint32_t state;
	int64_t activation, deactivation;
	/* The metadata generation it was read from (CK_INVALID_HANDLE: none), checked
	 * at the first use in each request: another process's change replaces it.
	 * Without one, the token's epoch as it was before the key was read (not read:
	 * the key's first use on this connection), checked likewise: the key's first
	 * metadata changes it. checked: the request (ops_request_begin) it was last
	 * checked or read in. */
	CK_OBJECT_HANDLE generation;
	struct store_epoch epoch;
	unsigned long checked;
	/* verify_signatures: the public key it checks with, made on first need (with
	 * the PSS salt and hash it was set up for; -1: none). */
	gnutls_pubkey_t check_key;
	int32_t check_salt;
	gnutls_digest_algorithm_t check_dig;
};

/* Applying protection (Encrypt, Sign, MAC) or processing protected data (Decrypt,
 * Signature Verify, MAC Verify): the Protect Stop Date ends the one, the Process
 * Start Date begins the other (KMIP 2.1 4.40, 4.41). */
enum use { PROTECT, PROCESS };

/* The mechanisms of a KMIP Hashing Algorithm, or NULL. */
const struct p11_hash *crypto_hash(uint32_t kmip);
/* The request's Cryptographic Parameters; false with res set if malformed. */
bool crypto_read_params(const struct ttlv_item *payload, struct crypto_params *p, struct ops_result *res);
/* The key's policy, if its dates allow this use now, with p (if any) completed from
 * its Cryptographic Parameters; else NULL with res set. */
struct key_policy *crypto_key_for(struct store *st, const struct store_obj *o, enum use use, struct crypto_params *p,
				  struct ops_result *res);
/* Takes an allocation from a key's Usage Limits before it protects: bytes or
 * objects, by the limit's unit; false with res set when they are spent. */
bool crypto_take_usage(struct store *st, const struct store_obj *o, struct key_policy *kp, size_t bytes,
		       size_t objects, struct ops_result *res);
/* Whether a use has drawn on the Usage Limits in the metadata (the count is below
 * the total): from then on they neither change nor go. */
bool crypto_usage_drawn(const struct store_meta *m);
/* Whether the payload has the Boolean tag, true. */
bool crypto_indicator(const struct ttlv_item *payload, uint32_t tag);
/* The failure of a cryptographic call, as precisely as can be said; the message is
 * the token's own CKR_ code. o may be NULL for a call without a key. */
void crypto_fail(struct store *st, const struct store_obj *o, int r, struct ops_result *res);

#endif

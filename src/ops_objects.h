/* SPDX-License-Identifier: BSD-3-Clause */
/* What the managed-object operations share: KMIP values they speak, the usage
 * flags that carry the lifecycle into the token, and the metadata helpers. */
#ifndef KR_OPS_OBJECTS_H
#define KR_OPS_OBJECTS_H

#include <gnutls/abstract.h>
#include <gnutls/gnutls.h>
#include <stdint.h>

#include "ops_internal.h"
#include "store.h"

/* KMIP values these operations speak. */
enum {
	ALG_AES = 0x03, ALG_RSA = 0x04, ALG_DSA = 0x05, ALG_ECDSA = 0x06, ALG_HMAC_SHA1 = 0x07, ALG_HMAC_SHA224 = 0x08,
	ALG_HMAC_SHA256 = 0x09, ALG_HMAC_SHA384 = 0x0A, ALG_HMAC_SHA512 = 0x0B, ALG_EC = 0x1A, ALG_CHACHA20 = 0x1C,
	ALG_CHACHA20_POLY1305 = 0x1E, ALG_ED25519 = 0x37,
};
enum { CURVE_P256 = 0x07, CURVE_P384 = 0x0A, CURVE_P521 = 0x0D, CURVE_ED25519 = 0x44 };
enum { OBJ_SYMMETRIC_KEY = 2, OBJ_PUBLIC_KEY = 3, OBJ_PRIVATE_KEY = 4, OBJ_SECRET_DATA = 7, OBJ_OPAQUE = 8 };
enum {
	STATE_PRE_ACTIVE = 1, STATE_ACTIVE = 2, STATE_DEACTIVATED = 3, STATE_COMPROMISED = 4, STATE_DESTROYED = 5,
	STATE_DESTROYED_COMPROMISED = 6,
};
enum {
	FMT_RAW = 1, FMT_OPAQUE = 2, FMT_PKCS1 = 3, FMT_PKCS8 = 4, FMT_X509 = 5, FMT_EC_PRIVATE_KEY = 6,
	FMT_TRANSPARENT_SYMMETRIC = 7, FMT_TRANSPARENT_DSA_PRIVATE = 8, FMT_TRANSPARENT_DSA_PUBLIC = 9,
	FMT_TRANSPARENT_RSA_PRIVATE = 0x0A, FMT_TRANSPARENT_RSA_PUBLIC = 0x0B,
};
enum { LINK_PUBLIC_KEY = 0x102, LINK_PRIVATE_KEY = 0x103 };
enum { NAME_UNINTERPRETED = 1 };
enum { REVOKE_KEY_COMPROMISE = 2, REVOKE_CA_COMPROMISE = 3, REVOKE_CESSATION_OF_OPERATION = 6 };
enum {
	USE_SIGN = 0x1, USE_VERIFY = 0x2, USE_ENCRYPT = 0x4, USE_DECRYPT = 0x8, USE_WRAP = 0x10, USE_UNWRAP = 0x20,
	USE_MAC_GENERATE = 0x80, USE_MAC_VERIFY = 0x100,
};
enum { OBJ_CERTIFICATE = 1, CERT_X509 = 1 };

/* PKCS#11 3.0 names that p11-kit 0.24's pkcs11.h (2.40) lacks. */
#ifndef CKK_CHACHA20
#define CKK_CHACHA20 0x33UL
#endif
#ifndef CKM_CHACHA20_KEY_GEN
#define CKM_CHACHA20_KEY_GEN 0x1225UL
#endif

/* A symmetric algorithm: the token's key type for it, the mechanism that makes such
 * keys, and the length a key has when the request names none (0: it must). */
struct ops_symmetric {
	uint32_t algorithm;
	CK_KEY_TYPE key_type;
	CK_MECHANISM_TYPE generate;
	int32_t default_length;
};
const struct ops_symmetric *ops_symmetric_by_algorithm(uint32_t algorithm);
/* The first algorithm of a key type: what a key says it is without metadata. */
const struct ops_symmetric *ops_symmetric_by_key_type(CK_KEY_TYPE key_type);

/* A Transparent key format that the token holds field by field: each Key Material
 * field and the token attribute that holds it, the first n_required of them needed
 * to register a key. The first field gives the key's length. */
#define OPS_MAX_FIELDS 8
struct ops_transparent {
	uint32_t format;
	enum store_kind kind;
	CK_KEY_TYPE key_type;
	uint32_t algorithm;
	size_t n_required, n_fields;
	struct {
		uint32_t tag;
		CK_ATTRIBUTE_TYPE attribute;
	} fields[OPS_MAX_FIELDS];
};
const struct ops_transparent *ops_transparent(uint32_t format);

/* The Key Format Type of an object with none recorded: what Get gives it in when
 * none is asked for. */
uint32_t ops_default_format(enum store_kind kind, CK_KEY_TYPE key_type);

/* How a client may give an attribute, from KMIP 2.1 section 4's "Modifiable by
 * client" and "Deletable by client": any time; only at creation; only when the
 * object is registered or by adding it once (Original Creation Date, Random Number
 * Generator); never (the server sets it); or by a rule of the object's state:
 * ATTR_PRE_ACTIVE changes only while Pre-Active (Activation Date), ATTR_USABLE
 * while Pre-Active or Active (Deactivation Date), ATTR_UNTIL_REACHED moreover only
 * until the date has come (Process Start Date, Protect Stop Date); none of these
 * three is ever deleted. ATTR_UNTIL_USED changes or goes only until a use took an
 * allocation (Usage Limits); ATTR_FLAG is a key's token flag, which changes but
 * is never deleted (Sensitive, Extractable). */
enum ops_attr_rule {
	ATTR_CLIENT, ATTR_AT_CREATION, ATTR_ONCE, ATTR_SERVER, ATTR_PRE_ACTIVE, ATTR_USABLE, ATTR_UNTIL_REACHED,
	ATTR_UNTIL_USED, ATTR_FLAG,
};
enum ops_attr_rule ops_attr_rule(uint32_t tag);

/* The curves, with their DER ECParameters for CKA_EC_PARAMS. */
struct ops_curve {
	uint32_t curve;
	int32_t bits;
	const uint8_t *der;
	size_t len;
	gnutls_ecc_curve_t gnutls;
};
#define OPS_N_CURVES 4
extern const struct ops_curve ops_curves[OPS_N_CURVES];
/* The curve whose ECParameters are der. */
bool ops_find_curve(const uint8_t *der, size_t len, size_t *ret);
/* The exact size in bits of a big-endian unsigned number: the Cryptographic Length
 * of an RSA modulus or a DSA prime (a 2047-bit modulus is no 2048-bit key). */
int32_t ops_bits(const uint8_t *n, size_t len);

/* An RSA private key's components as PKCS#11 holds them, in the order GnuTLS
 * exports and imports them (m, e, d, p, q, u, e1, e2). */
extern const CK_ATTRIBUTE_TYPE ops_rsa_private_attributes[8];

/* The KMIP Object Type and object tag of each kind of store object. */
extern const uint32_t ops_object_types[STORE_N_KINDS];
extern const uint32_t ops_object_tags[STORE_N_KINDS];

/* The usage flags (CKA_SIGN, CKA_DECRYPT...) of a kind of object with a usage mask
 * in a state, as a template of at most OPS_MAX_FLAGS attributes. */
#define OPS_MAX_FLAGS 6
size_t ops_usage_template(enum store_kind kind, uint32_t mask, uint32_t state, CK_BBOOL *values, CK_ATTRIBUTE *out);
/* The usage an object may be put to: its metadata's mask, or for an object made
 * elsewhere, what its token flags allow now. */
uint32_t ops_usage_of(struct store *st, const struct store_obj *o, const struct store_meta *m);

/* The part of a usage mask the token may grant: none for Secret Data, which is no
 * key whatever its mask says (it never signs, MACs or encrypts). */
uint32_t ops_token_mask(const struct store_meta *m, uint32_t mask);

/* An object's state: its metadata's, or Destroyed (Destroyed Compromised) once
 * only the metadata is left. */
uint32_t ops_state(const struct store_obj *o, const struct store_meta *m);

/* The Digest attribute: SHA-256 of value, with the Key Format Type it was computed
 * in (0 for certificates and Opaque Objects, which have none). */
void ops_put_digest(struct ttlv_writer *w, const uint8_t *value, size_t len, uint32_t format);
/* The Digest of a Key Material item: of its bytes if it is a Byte String, else of
 * its TTLV encoding (KMIP 2.1 section 4.21). */
void ops_put_material_digest(struct ttlv_writer *w, const struct ttlv_item *material, uint32_t format);
/* Every attribute of an object (or record), decoded: what the token holds, then the
 * metadata m (ops_get.c), in a store_meta of their own (free with store_meta_clear). */
int ops_load_attrs(struct store *st, const struct store_obj *o, const struct store_meta *m,
		   struct store_meta *ret) KR_WUR;

/* The Digest of a token object's key material in a format, if the token lets the
 * relay read the key in it; nothing otherwise (ops_get.c). */
void ops_put_token_digest(struct ttlv_writer *w, struct store *st, const struct store_obj *o, uint32_t format);

/* A public key object of the token as a GnuTLS key (RSA, EC, Ed25519). */
int ops_gnutls_pubkey(struct store *st, const struct store_obj *o, gnutls_pubkey_t *ret) KR_WUR;

/* A CKA_ID for a new object, marked with the client's namespace; stamp it with
 * the object's facts (store_stamp_id) once they are known, before it goes to the
 * token. */
int ops_new_id(struct ops_ctx *ctx, struct store *st, uint8_t id[STORE_ID_LEN]) KR_WUR;
/* Whether new keys may leave the token unless asked otherwise: the client's entry,
 * else keys.extractable. */
bool ops_extractable_default(const struct ops_ctx *ctx);

int64_t ops_now(void);
/* Records the object for the audit record and as the batch's ID Placeholder. */
void ops_acted_on(struct ops_ctx *ctx, const struct store_obj *o);
void ops_put_uid(struct ttlv_writer *w, uint32_t tag, const char *uid);
void ops_put_link(struct ttlv_writer *w, uint32_t type, const char *uid);

/* A token failure as the Result Reason that says it best, with the token's CKR_
 * code as the Result Message where the token refused. */
void ops_fail_token(struct store *st, struct ops_result *res, int err);

/* Metadata: the attributes the token has no place for, as KMIP 2.x Attributes. */
extern const struct kmip_version ops_meta_version;
/* An object's metadata (store_meta_read); for a key the relay made that has no
 * metadata object, what its token attributes say (ops_derive.c), with its Length
 * and Digest only if full: what is rewritten or answered in full needs them, a
 * use of the key does not. */
int ops_meta_read(struct store *st, const struct store_obj *o, bool full, struct store_meta *ret) KR_WUR;
/* Whether the token can hold a key's attributes by itself: a live key whose
 * CKA_ID the relay stamped. */
bool ops_derivable(const struct store_obj *o);
/* Puts into a key what the token can hold of its new attributes next (its
 * Activation and Deactivation Dates' days); whether that is all of them, so
 * that the key needs no metadata object. */
bool ops_meta_to_token(struct store *st, const struct store_obj *o, const struct store_meta *next);
/* What the token says of a key's algorithm and length, without metadata
 * (ops_get.c). */
int ops_token_key(struct store *st, const struct store_obj *o, uint32_t *ret_algorithm, int32_t *ret_length) KR_WUR;
const struct kmip_attr *ops_meta_attr(const struct store_meta *m, uint32_t tag);
uint32_t ops_meta_enum(const struct store_meta *m, uint32_t tag, uint32_t dflt);
/* A Date-Time attribute of the metadata, or none. */
int64_t ops_meta_date(const struct store_meta *m, uint32_t tag, int64_t none);
/* An object's state now: the state on record, moved on by an Activation Date or a
 * Deactivation Date that has come (KMIP 2.1 sections 4.1, 4.18), whatever
 * connection set it. Keys made elsewhere, which carry no relay metadata, count as
 * Active. */
uint32_t ops_meta_state(const struct store_meta *m);
/* Puts on record (the token's usage flags, then the metadata) the state that an
 * object's dates have brought, if they brought one; the caller holds store_lock.
 * Afterwards m is the object's metadata (read again if it changed). */
int ops_catch_up(struct store *st, const struct store_obj *o, struct store_meta *m) KR_WUR;
/* A state change with its dates (ops_lifecycle.c): the token's usage flags, then
 * the metadata. */
struct state_change {
	uint32_t state;
	uint32_t usage;
	uint32_t date_tags[2];
	size_t n_dates;
	const struct ttlv_item *revocation_reason;
	int64_t when; /* the dates' value */
};
int ops_change_state(struct store *st, const struct store_obj *o, const struct store_meta *m,
		     const struct state_change *c) KR_WUR;
void ops_put_attr(struct ttlv_writer *w, const struct kmip_attr *a);
/* A new metadata generation: the old attributes minus those in replace[], then what
 * add() writes, and a new Last Change Date. A key whose attributes the token can
 * then hold by itself gets none, and loses the one it had. old (NULL: none to
 * copy) says whether there was a metadata object; a write that may add one to the
 * token sweeps expired records out of it (store_sweep). */
typedef void (*ops_meta_add_fn)(struct ttlv_writer *w, const void *arg);
int ops_meta_rewrite(struct store *st, const struct store_obj *o, const struct store_meta *old,
		     const uint32_t *replace, size_t n_replace, ops_meta_add_fn add, const void *arg) KR_WUR;
/* The same, with the Last Change Date when (a new object's: its Initial Date). */
int ops_meta_rewrite_at(struct store *st, const struct store_obj *o, const struct store_meta *old,
			const uint32_t *replace, size_t n_replace, ops_meta_add_fn add, const void *arg,
			int64_t when) KR_WUR;
/* How many metadata writes this process has made: what caches metadata compares it
 * to see whether the connection changed anything since. */
unsigned long ops_meta_changes(void);
/* Counts a metadata write made other than through ops_meta_rewrite. */
void ops_meta_changed(void);

#endif

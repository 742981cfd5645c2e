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
enum { OBJ_CERTIFICATE = 1, CERT_X509 = 1 };

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

/* A public key object of the token as a GnuTLS key (RSA, EC, Ed25519). */
int ops_gnutls_pubkey(struct store *st, const struct store_obj *o, gnutls_pubkey_t *ret) KR_WUR;

/* A CKA_ID for a new object, marked with the client's namespace. */
int ops_new_id(struct ops_ctx *ctx, struct store *st, uint8_t id[STORE_ID_LEN]) KR_WUR;
/* Whether the client may make or register a key of this algorithm and length;
 * if not, res says Permission Denied. */
bool ops_key_allowed(const struct ops_ctx *ctx, uint32_t algorithm, int32_t length, struct ops_result *res);
/* Whether new keys may leave the token unless asked otherwise: the client's entry,
 * else keys.extractable. */
bool ops_extractable_default(const struct ops_ctx *ctx);

int64_t ops_now(void);
/* Records the object for the audit record and as the batch's ID Placeholder. */
void ops_acted_on(struct ops_ctx *ctx, const struct store_obj *o);
void ops_put_uid(struct ttlv_writer *w, uint32_t tag, const char *uid);
void ops_put_link(struct ttlv_writer *w, uint32_t type, const char *uid);

/* Metadata: the attributes the token has no place for, as KMIP 2.x Attributes. */
extern const struct kmip_version ops_meta_version;
const struct kmip_attr *ops_meta_attr(const struct store_meta *m, uint32_t tag);
uint32_t ops_meta_enum(const struct store_meta *m, uint32_t tag, uint32_t dflt);
/* Keys that carry no relay metadata (made elsewhere) count as Active. */
uint32_t ops_meta_state(const struct store_meta *m);
void ops_put_attr(struct ttlv_writer *w, const struct kmip_attr *a);
/* A new metadata generation: the old attributes minus those in replace[], then what
 * add() writes, and a new Last Change Date. */
typedef void (*ops_meta_add_fn)(struct ttlv_writer *w, const void *arg);
int ops_meta_rewrite(struct store *st, const struct store_obj *o, const struct store_meta *old,
		     const uint32_t *replace, size_t n_replace, ops_meta_add_fn add, const void *arg) KR_WUR;

#endif

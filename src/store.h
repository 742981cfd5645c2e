/* SPDX-License-Identifier: BSD-3-Clause */
/* Managed objects in the token. A Unique Identifier is derived from token data - the
 * uppercase hex of CKA_ID and a suffix for the object class - so it is the same in
 * every process and on every host. The CKA_ID of an object the relay makes also
 * carries what never changes about it: when it was made, its usage masks and its
 * algorithm (store_stamp_id). The KMIP attributes that neither it nor the key's own
 * PKCS#11 attributes can hold (a date with a time of day, links, custom
 * attributes...) live in the token too, as a KMIP 2.x Attributes structure in a
 * data object beside the key, made only for a key that needs one (ops_derive.c).
 * When a key is destroyed its attributes stay as a record (KMIP keeps a destroyed
 * object's attributes): a UID whose object is gone but whose metadata is there
 * names that record, until keys.destroyed_record_days have passed. */
#ifndef KR_STORE_H
#define KR_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kmip_attr.h"
#include "p11.h"

enum store_kind {
	STORE_PUBLIC,  /* "_pub", CKO_PUBLIC_KEY */
	STORE_PRIVATE, /* "_priv", CKO_PRIVATE_KEY */
	STORE_SECRET,  /* "_secret", CKO_SECRET_KEY */
	STORE_CERT,    /* "_cert", CKO_CERTIFICATE */
	STORE_DATA,    /* "_data", CKO_DATA: an Opaque Object */
	STORE_N_KINDS,
};

#define STORE_ID_LEN 32 /* CKA_ID of the objects the relay makes (store_stamp_id) */
#define STORE_MAX_ID 64
#define STORE_MAX_UID (2 * STORE_MAX_ID + 8)

struct store_obj {
	enum store_kind kind;
	int backend;            /* the store it was found in (its backend in the pool) */
	bool destroyed;         /* only the metadata is left; handle is CK_INVALID_HANDLE */
	CK_OBJECT_HANDLE handle;
	CK_KEY_TYPE key_type; /* read with the handle, once per connection */
	uint8_t id[STORE_MAX_ID];
	size_t id_len;
	char uid[STORE_MAX_UID + 1];
};

struct store {
	struct p11_token *tok; /* borrowed */
	int backend;           /* its place in the connection's pool (token.h) */
	const char *lock_file; /* serialises metadata writers between processes */
	struct store_obj cache[32]; /* objects found on this connection */
	size_t n_cache;
	CK_OBJECT_HANDLE written; /* the metadata generation written last */
	int64_t keep_records;     /* seconds a destroyed object's record is kept; 0: for ever */
	bool swept;               /* store_sweep ran on this connection */
};

CK_OBJECT_CLASS store_class(enum store_kind kind);
/* The attributes that find objects of a kind with a given ID: CKA_CLASS and CKA_ID,
 * or for data objects (which PKCS#11 gives no CKA_ID) CKA_CLASS, CKA_APPLICATION and
 * CKA_OBJECT_ID. With id NULL, only what finds every object of the kind. *cls is
 * storage for the class value. Returns the number of attributes (at most 3). */
size_t store_kind_template(enum store_kind kind, const uint8_t *id, size_t id_len, CK_OBJECT_CLASS *cls,
			   CK_ATTRIBUTE out[3]);
/* The attribute that holds an object's ID: CKA_ID, or CKA_OBJECT_ID for data. */
CK_ATTRIBUTE_TYPE store_id_attribute(enum store_kind kind);
/* Formats the UID of an object of this kind with this CKA_ID. */
void store_uid(enum store_kind kind, const uint8_t *id, size_t id_len, char out[STORE_MAX_UID + 1]);

/* Finds the object a UID names: "<HEX>_pub" and the like, or a bare hex CKA_ID
 * (the public half if there is one, else the private half, else a secret key or a
 * certificate). A handle is looked up at most once per connection. Without a token
 * object, the record of a destroyed one (ret->destroyed); a bare CKA_ID prefers the
 * objects there are to records. A malformed UID is simply not found. */
int store_find(struct store *s, const char *uid, size_t len, struct store_obj *ret) KR_WUR;
/* The records of destroyed objects (metadata without its object), all of them, in
 * the token's order, in a new array (free it). */
int store_records(struct store *s, struct store_obj **ret, size_t *ret_n) KR_WUR;
/* The live objects the relay manages, likewise: those that have its metadata and
 * the keys whose CKA_ID it stamped. */
int store_managed(struct store *s, struct store_obj **ret, size_t *ret_n) KR_WUR;
/* Remembers an object the connection made, and forgets a destroyed one. */
void store_remember(struct store *s, const struct store_obj *o);
void store_forget(struct store *s, const struct store_obj *o);
/* The other half of a key pair (same CKA_ID), if the token has it. */
int store_find_kind(struct store *s, enum store_kind kind, const uint8_t *id, size_t id_len,
		    struct store_obj *ret) KR_WUR;

/* A fresh random CKA_ID, to be marked with the namespace (its first POLICY_TAG_LEN
 * bytes) and then stamped. */
int store_new_id(struct store *s, uint8_t id[STORE_ID_LEN]) KR_WUR;

/* What the CKA_ID of an object the relay made says of it, none of which KMIP lets
 * change: its creation (Initial Date), the Cryptographic Usage Mask of the private
 * or secret key and of the public key (the halves of a pair share the ID), and its
 * Cryptographic Algorithm (0: the one its key type names). */
struct store_id_facts {
	int64_t created_ms; /* since the Unix epoch */
	uint32_t mask[2];   /* [0] private or secret key, [1] public key */
	uint32_t algorithm;
};
/* Writes facts into a new ID (bytes 8 to 23), keeping its random bytes and the
 * namespace tag, and seals it with a check value (bytes 28 to 31):
 *   [0..8)   namespace tag, or random
 *   [8..14)  creation time, milliseconds since the Unix epoch, big-endian
 *   [14..18) usage mask of the private or secret key, big-endian
 *   [18..22) usage mask of the public key, big-endian
 *   [22..24) Cryptographic Algorithm, big-endian (0 if it needs more bits)
 *   [24..28) random
 *   [28..32) the first 4 bytes of SHA-256("kmip-relay CKA_ID 1" || bytes 0..28) */
void store_stamp_id(uint8_t id[STORE_ID_LEN], const struct store_id_facts *f);
/* Whether id is one that store_stamp_id sealed (a key made by other software has
 * one by chance at most once in 2^32), and its facts. */
bool store_id_facts(const uint8_t *id, size_t len, struct store_id_facts *ret);

/* The newest generation of an object's metadata. Without a metadata object
 * meta->found is false, and meta->attrs empty - unless ops_meta_read derived them
 * from the token (meta->derived). */
struct store_meta {
	bool found;
	bool derived;
	CK_OBJECT_HANDLE generation; /* the data object it was read from */
	struct kmip_attrs attrs;   /* borrows from tree */
	struct ttlv_item *tree;
	uint8_t *value;            /* the TTLV the tree borrows from */
	size_t value_len;
};
int store_meta_read(struct store *s, const struct store_obj *o, struct store_meta *ret) KR_WUR;
void store_meta_clear(struct store_meta *m);
/* Whether metadata read from generation is still the newest: a writer, in any
 * process, destroys the generation it replaces. One token call, far cheaper than
 * reading the metadata again (which searches the token). */
bool store_meta_current(struct store *s, CK_OBJECT_HANDLE generation);

/* Replaces the metadata with encoded (a KMIP 2.x Attributes structure): creates the
 * next generation, then destroys the older ones. Callers that read, modify and write
 * hold store_lock around it, so that concurrent updates are serialised and none is
 * lost; readers take the newest generation. destroyed is the Destroy Date of a
 * record (0 for a live object's metadata), which its label carries for
 * store_sweep. The first metadata of a live object changes the token's epoch. */
int store_meta_write(struct store *s, const struct store_obj *o, const uint8_t *encoded, size_t len,
		     int64_t destroyed) KR_WUR;
/* Destroys every generation: undoes a creation that failed halfway. */
int store_meta_destroy(struct store *s, const struct store_obj *o) KR_WUR;
int store_lock(struct store *s, int *ret_fd) KR_WUR;
void store_unlock(int fd);

/* Removes the records whose Destroy Date is s->keep_records or more before now,
 * once per connection: writers that may add an object call it. A record's label
 * says when it was destroyed; a record written by an older relay (a bare label) is
 * read once and labelled. A record whose object is there after all is kept. */
void store_sweep(struct store *s, int64_t now);

/* The token's epoch: a data object (CKA_APPLICATION "kmip-relay epoch") whose
 * label changes whenever an object that had no metadata gets some. What a
 * connection keeps of an object without metadata is current while the epoch is
 * (one token call), as what it keeps of metadata is while its generation is there
 * (store_meta_current). Read once by a connection that needs it, made by the first
 * that does. */
struct store_epoch {
	CK_OBJECT_HANDLE handle; /* CK_INVALID_HANDLE: not read */
	char label[64];
	size_t len;
};
int store_epoch_read(struct store *s, struct store_epoch *ret) KR_WUR;
bool store_epoch_current(struct store *s, const struct store_epoch *e);

#endif

/* SPDX-License-Identifier: BSD-3-Clause */
/* Managed objects in the token. A Unique Identifier is derived from token data - the
 * uppercase hex of CKA_ID and a suffix for the object class - so it is the same in
 * every process and on every host. The KMIP attributes that PKCS#11 has no place for
 * (state, dates, links, custom attributes...) live in the token too, as a KMIP 2.x
 * Attributes structure in a data object beside the key. When a key is destroyed its
 * metadata stays (KMIP keeps a destroyed object's attributes): a UID whose object is
 * gone but whose metadata is there names that record. */
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

#define STORE_ID_LEN 20 /* CKA_ID of the keys the relay makes, as the Cascade bridge did */
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
/* The live objects that have the relay's metadata, likewise. */
int store_managed(struct store *s, struct store_obj **ret, size_t *ret_n) KR_WUR;
/* Remembers an object the connection made, and forgets a destroyed one. */
void store_remember(struct store *s, const struct store_obj *o);
void store_forget(struct store *s, const struct store_obj *o);
/* The other half of a key pair (same CKA_ID), if the token has it. */
int store_find_kind(struct store *s, enum store_kind kind, const uint8_t *id, size_t id_len,
		    struct store_obj *ret) KR_WUR;

/* A fresh random CKA_ID. */
int store_new_id(struct store *s, uint8_t id[STORE_ID_LEN]) KR_WUR;

/* The newest generation of an object's metadata. Without metadata (a key made by
 * other software) meta->attrs is empty and meta->found false. */
struct store_meta {
	bool found;
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
 * lost; readers take the newest generation. */
int store_meta_write(struct store *s, const struct store_obj *o, const uint8_t *encoded, size_t len) KR_WUR;
/* Destroys every generation: undoes a creation that failed halfway. */
int store_meta_destroy(struct store *s, const struct store_obj *o) KR_WUR;
int store_lock(struct store *s, int *ret_fd) KR_WUR;
void store_unlock(int fd);

#endif

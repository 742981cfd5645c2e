/* SPDX-License-Identifier: BSD-3-Clause */
/* Shared by the operation modules; not part of the ops interface. */
#ifndef KR_OPS_INTERNAL_H
#define KR_OPS_INTERNAL_H

#include "guard.h"
#include "ops.h"
#include "store.h"

typedef void (*ops_handler)(struct ops_ctx *ctx, const struct ttlv_item *payload, struct ttlv_writer *w,
			    struct ops_result *res);

void ops_fail(struct ops_result *res, enum kmip_reason reason, const char *message);
/* A project error as the Result Reason that says it best. */
void ops_fail_err(struct ops_result *res, int err);

/* The store of the connection's backend, opening its token if needed; NULL with
 * res set. */
struct store *ops_store(struct ops_ctx *ctx, struct ops_result *res);
/* The store of the backend at place i of the pool (token.h). */
struct store *ops_store_at(struct ops_ctx *ctx, int backend, struct ops_result *res);
/* The store new objects go to (pkcs11.pool.new_keys). */
struct store *ops_new_store(struct ops_ctx *ctx, struct ops_result *res);
/* The object the gate resolved for this item (ctx->target), and the store it is
 * in; false with res set if the item names none. */
bool ops_target(struct ops_ctx *ctx, struct store **ret_st, struct store_obj *ret, struct ops_result *res);
/* Before an item that may change an object runs under Undo, what it may change
 * (NULL: out of memory); after it succeeded, what it made (ops_undo.c). */
struct ops_undo *ops_undo_prepare(struct ops_ctx *ctx, const struct kmip_batch_item *item);
void ops_undo_done(struct ops_ctx *ctx, const struct kmip_batch_item *item, struct ops_undo *u);
/* Whether the operation changes the token. */
bool ops_changes(uint32_t operation);
/* Why the token refused to use a key: its lifecycle state, else its usage mask. */
void ops_explain_refusal(struct store *st, const struct store_obj *o, struct ops_result *res);

/* Cryptographic operations (ops_crypto.c, ops_cipher.c). */
void op_encrypt(struct ops_ctx *ctx, const struct ttlv_item *payload, struct ttlv_writer *w, struct ops_result *res);
void op_decrypt(struct ops_ctx *ctx, const struct ttlv_item *payload, struct ttlv_writer *w, struct ops_result *res);
void op_sign(struct ops_ctx *ctx, const struct ttlv_item *payload, struct ttlv_writer *w, struct ops_result *res);
void op_signature_verify(struct ops_ctx *ctx, const struct ttlv_item *payload, struct ttlv_writer *w,
			 struct ops_result *res);
void op_mac(struct ops_ctx *ctx, const struct ttlv_item *payload, struct ttlv_writer *w, struct ops_result *res);
void op_mac_verify(struct ops_ctx *ctx, const struct ttlv_item *payload, struct ttlv_writer *w,
		   struct ops_result *res);
void op_hash(struct ops_ctx *ctx, const struct ttlv_item *payload, struct ttlv_writer *w, struct ops_result *res);
void op_rng_retrieve(struct ops_ctx *ctx, const struct ttlv_item *payload, struct ttlv_writer *w,
		     struct ops_result *res);

/* Managed objects (ops_objects.c). */
void op_create(struct ops_ctx *ctx, const struct ttlv_item *payload, struct ttlv_writer *w, struct ops_result *res);
void op_create_key_pair(struct ops_ctx *ctx, const struct ttlv_item *payload, struct ttlv_writer *w,
			struct ops_result *res);
void op_register(struct ops_ctx *ctx, const struct ttlv_item *payload, struct ttlv_writer *w,
		 struct ops_result *res);
void op_get(struct ops_ctx *ctx, const struct ttlv_item *payload, struct ttlv_writer *w, struct ops_result *res);
void op_get_attributes(struct ops_ctx *ctx, const struct ttlv_item *payload, struct ttlv_writer *w,
		       struct ops_result *res);
void op_get_attribute_list(struct ops_ctx *ctx, const struct ttlv_item *payload, struct ttlv_writer *w,
			   struct ops_result *res);
void op_add_attribute(struct ops_ctx *ctx, const struct ttlv_item *payload, struct ttlv_writer *w,
		      struct ops_result *res);
void op_delete_attribute(struct ops_ctx *ctx, const struct ttlv_item *payload, struct ttlv_writer *w,
			 struct ops_result *res);
void op_modify_attribute(struct ops_ctx *ctx, const struct ttlv_item *payload, struct ttlv_writer *w,
			 struct ops_result *res);
void op_activate(struct ops_ctx *ctx, const struct ttlv_item *payload, struct ttlv_writer *w,
		 struct ops_result *res);
void op_revoke(struct ops_ctx *ctx, const struct ttlv_item *payload, struct ttlv_writer *w, struct ops_result *res);
void op_destroy(struct ops_ctx *ctx, const struct ttlv_item *payload, struct ttlv_writer *w,
		struct ops_result *res);
void op_check(struct ops_ctx *ctx, const struct ttlv_item *payload, struct ttlv_writer *w, struct ops_result *res);
void op_locate(struct ops_ctx *ctx, const struct ttlv_item *payload, struct ttlv_writer *w, struct ops_result *res);

#endif

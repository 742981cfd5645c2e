/* SPDX-License-Identifier: BSD-3-Clause */
#include "config.h"

/* Batch Error Continuation Option Undo: a batch whose item fails has the changes of
 * its earlier items put back. A token cannot undo by itself, so before an item
 * changes an object the relay keeps what it will change - the metadata (none: a
 * key that holds its attributes itself, ops_derive.c), the usage flags, the
 * Sensitive and Extractable flags, the label (the Name) and a key's
 * CKA_START_DATE and CKA_END_DATE - and puts them back; an object an item made is
 * destroyed again. Destroy cannot be undone (the key is gone), so a batch with it
 * is refused. Usage Limits are never put back: what a use drew on stays drawn, in
 * this batch or any other. */

#include <stdlib.h>
#include <string.h>

#include "ops_objects.h"

enum undo_kind { UNDO_NOTHING, UNDO_RESTORE, UNDO_REMOVE };

struct ops_undo {
	enum undo_kind kind;
	struct store_obj obj;
	struct store_meta meta; /* the metadata before (meta.found: there was some) */
	CK_BBOOL values[OPS_MAX_FLAGS + 2];
	CK_ATTRIBUTE flags[OPS_MAX_FLAGS + 2]; /* the usage flags, then Sensitive and Extractable */
	size_t n_flags;
	uint8_t *label; /* NULL: none could be read */
	size_t label_len;
	CK_DATE dates[2];
	CK_ATTRIBUTE date_attrs[2]; /* CKA_START_DATE, CKA_END_DATE; none read: 0 */
	size_t n_dates;
};

static bool creates(uint32_t operation)
{
	return operation == KMIP_OP_CREATE || operation == KMIP_OP_CREATE_KEY_PAIR || operation == KMIP_OP_REGISTER;
}

bool ops_undoable(uint32_t operation)
{
	return operation != KMIP_OP_DESTROY;
}

struct ops_undo *ops_undo_prepare(struct ops_ctx *ctx, const struct kmip_batch_item *item)
{
	struct ops_undo *u = calloc(1, sizeof(*u));
	struct ops_result res = { 0 };
	struct store *st;

	if (!u)
		return NULL;
	if (!ops_changes(item->operation) || creates(item->operation))
		return u; /* a creation is known only once it is done */
	/* An object that cannot be found fails the item itself: nothing to keep. */
	if (!ops_target(ctx, &st, &u->obj, &res) || ops_meta_read(st, &u->obj, true, &u->meta) < 0)
		return u;
	/* The kind's flags, then their values now. */
	u->n_flags = ops_usage_template(u->obj.kind, 0, 0, u->values, u->flags);
	if (u->obj.kind == STORE_PRIVATE || u->obj.kind == STORE_SECRET) {
		size_t n = u->n_flags;

		u->flags[n] = (CK_ATTRIBUTE){ CKA_SENSITIVE, &u->values[n], sizeof(CK_BBOOL) };
		u->flags[n + 1] = (CK_ATTRIBUTE){ CKA_EXTRACTABLE, &u->values[n + 1], sizeof(CK_BBOOL) };
		u->n_flags = n + 2;
	}
	if (u->n_flags && p11_get_attrs(st->tok, u->obj.handle, u->flags, u->n_flags) < 0)
		u->n_flags = 0;
	if (p11_get_attr_alloc(st->tok, u->obj.handle, CKA_LABEL, &u->label, &u->label_len) < 0)
		u->label = NULL;
	/* A key without metadata has its whole-day dates there. */
	if (u->obj.kind == STORE_PUBLIC || u->obj.kind == STORE_PRIVATE || u->obj.kind == STORE_SECRET) {
		u->date_attrs[0] = (CK_ATTRIBUTE){ CKA_START_DATE, &u->dates[0], sizeof(CK_DATE) };
		u->date_attrs[1] = (CK_ATTRIBUTE){ CKA_END_DATE, &u->dates[1], sizeof(CK_DATE) };
		u->n_dates = p11_get_attrs(st->tok, u->obj.handle, u->date_attrs, 2) == 0 ? 2 : 0;
	}
	u->kind = UNDO_RESTORE;
	return u;
}

void ops_undo_done(struct ops_ctx *ctx, const struct kmip_batch_item *item, struct ops_undo *u)
{
	struct ops_result res = { 0 };
	struct store *st;

	/* The made object is in the store the operation was handed (new_keys's). */
	if (!creates(item->operation) || !(st = ops_store_at(ctx, ctx->backend, &res)) ||
	    store_find(st, ctx->uid, strlen(ctx->uid), &u->obj) < 0)
		return;
	u->kind = UNDO_REMOVE;
}

/* Destroys every object with the made object's ID, and their metadata. */
static int remove_made(struct store *st, const struct store_obj *made)
{
	int r = 0;

	for (int k = 0; k < STORE_N_KINDS; k++) {
		struct store_obj o;
		int e;

		if (store_find_kind(st, (enum store_kind)k, made->id, made->id_len, &o) < 0 || o.destroyed)
			continue;
		if ((e = store_meta_destroy(st, &o)) < 0 || (e = p11_destroy(st->tok, o.handle)) < 0)
			r = r ? r : e;
		store_forget(st, &o);
	}
	return r;
}

/* The Usage Limits as they are now, into the metadata put back. */
static void put_current_limits(struct ttlv_writer *w, const void *arg)
{
	const struct kmip_attr *limits = arg;

	if (limits)
		ops_put_attr(w, limits);
}

/* Puts back the flags that differ from what was kept: a Sensitive key made so by
 * the item cannot be made otherwise again, and the token says so. */
static int restore_flags(struct store *st, struct ops_undo *u)
{
	CK_BBOOL now[OPS_MAX_FLAGS + 2];
	CK_ATTRIBUTE cur[OPS_MAX_FLAGS + 2];
	int r;

	for (size_t i = 0; i < u->n_flags; i++)
		cur[i] = (CK_ATTRIBUTE){ u->flags[i].type, &now[i], sizeof(CK_BBOOL) };
	if ((r = p11_get_attrs(st->tok, u->obj.handle, cur, u->n_flags)) < 0)
		return r;
	for (size_t i = 0; i < u->n_flags && r == 0; i++)
		if (now[i] != u->values[i])
			r = p11_set_attrs(st->tok, u->obj.handle, &u->flags[i], 1);
	return r;
}

int ops_undo_apply(struct ops_ctx *ctx, struct ops_undo *u)
{
	static const uint32_t limits[] = { KMIP_TAG_USAGE_LIMITS };
	struct ops_result res = { 0 };
	struct store_meta now = { 0 };
	struct store *st;
	int lock = -1, r = 0;

	if (u->kind == UNDO_NOTHING)
		return 0;
	if (!(st = ops_store_at(ctx, u->obj.backend, &res)))
		return KR_E_P11_TOKEN;
	if (u->kind == UNDO_REMOVE)
		return remove_made(st, &u->obj);
	if ((r = store_lock(st, &lock)) < 0)
		return r;
	if ((r = store_meta_read(st, &u->obj, &now)) == 0 && (u->meta.found || now.found)) {
		const struct kmip_attr *drawn = ops_meta_attr(&now, KMIP_TAG_USAGE_LIMITS);

		r = !u->meta.found && !drawn ? store_meta_destroy(st, &u->obj)
					     : ops_meta_rewrite(st, &u->obj, &u->meta, limits, 1, put_current_limits, drawn);
	}
	store_meta_clear(&now);
	store_unlock(lock);
	if (r == 0 && u->n_flags)
		r = restore_flags(st, u);
	if (r == 0 && u->label) {
		CK_ATTRIBUTE label = { CKA_LABEL, u->label, u->label_len };

		r = p11_set_attrs(st->tok, u->obj.handle, &label, 1);
	}
	if (r == 0 && u->n_dates)
		r = p11_set_attrs(st->tok, u->obj.handle, u->date_attrs, u->n_dates);
	ops_meta_changed();
	return r;
}

void ops_undo_free(struct ops_undo *u)
{
	if (!u)
		return;
	store_meta_clear(&u->meta);
	free(u->label);
	free(u);
}

#include "config.h"

/* Batch Error Continuation Option Undo: a batch whose item fails has the changes of
 * its earlier items put back. A token cannot undo by itself, so before an item
 * changes an object the relay keeps what it will change - the metadata, the usage
 * flags and the label (the Name) - and puts them back; an object an item made is destroyed again.
 * Destroy cannot be undone (the key is gone), so a batch with it is refused. */

#include <stdlib.h>
#include <string.h>

#include "ops_objects.h"

enum undo_kind { UNDO_NOTHING, UNDO_RESTORE, UNDO_REMOVE };

struct ops_undo {
	enum undo_kind kind;
	struct store_obj obj;
	uint8_t *meta; /* the metadata before, if there was any */
	size_t meta_len;
	bool had_meta;
	CK_BBOOL values[OPS_MAX_FLAGS];
	CK_ATTRIBUTE flags[OPS_MAX_FLAGS];
	size_t n_flags;
	uint8_t *label; /* NULL: none could be read */
	size_t label_len;
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
	struct store_meta m = { 0 };
	struct store *st;

	if (!u)
		return NULL;
	if (!ops_changes(item->operation) || creates(item->operation))
		return u; /* a creation is known only once it is done */
	/* An object that cannot be found fails the item itself: nothing to keep. */
	if (!ops_target(ctx, &st, &u->obj, &res) || store_meta_read(st, &u->obj, &m) < 0)
		return u;
	u->had_meta = m.found;
	if (m.found && !(u->meta = malloc(m.value_len ? m.value_len : 1))) {
		store_meta_clear(&m);
		free(u);
		return NULL;
	}
	if (m.found) {
		memcpy(u->meta, m.value, m.value_len);
		u->meta_len = m.value_len;
	}
	store_meta_clear(&m);
	/* The kind's flags, then their values now. */
	u->n_flags = ops_usage_template(u->obj.kind, 0, 0, u->values, u->flags);
	if (u->n_flags && p11_get_attrs(st->tok, u->obj.handle, u->flags, u->n_flags) < 0)
		u->n_flags = 0;
	if (p11_get_attr_alloc(st->tok, u->obj.handle, CKA_LABEL, &u->label, &u->label_len) < 0)
		u->label = NULL;
	u->kind = UNDO_RESTORE;
	return u;
}

void ops_undo_done(struct ops_ctx *ctx, const struct kmip_batch_item *item, struct ops_undo *u)
{
	struct ops_result res = { 0 };
	struct store *st;

	if (!creates(item->operation) || !(st = ops_store(ctx, &res)) ||
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

int ops_undo_apply(struct ops_ctx *ctx, struct ops_undo *u)
{
	struct ops_result res = { 0 };
	struct store *st;
	int lock = -1, r = 0;

	if (u->kind == UNDO_NOTHING)
		return 0;
	if (!(st = ops_store(ctx, &res)))
		return KR_E_P11_TOKEN;
	if (u->kind == UNDO_REMOVE)
		return remove_made(st, &u->obj);
	if ((r = store_lock(st, &lock)) < 0)
		return r;
	r = u->had_meta ? store_meta_write(st, &u->obj, u->meta, u->meta_len) : store_meta_destroy(st, &u->obj);
	store_unlock(lock);
	if (r == 0 && u->n_flags)
		r = p11_set_attrs(st->tok, u->obj.handle, u->flags, u->n_flags);
	if (r == 0 && u->label) {
		CK_ATTRIBUTE label = { CKA_LABEL, u->label, u->label_len };

		r = p11_set_attrs(st->tok, u->obj.handle, &label, 1);
	}
	ops_meta_changed();
	return r;
}

void ops_undo_free(struct ops_undo *u)
{
	if (!u)
		return;
	free(u->meta);
	free(u->label);
	free(u);
}

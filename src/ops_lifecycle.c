/* SPDX-License-Identifier: BSD-3-Clause */
#include "config.h"

/* Activate, Revoke, Destroy, and Add, Modify and Delete Attribute: changes to an
 * object's state and attributes, under the lock that serialises metadata writers. */

#include <stdlib.h>
#include <string.h>

#include "ops_crypto.h"

/* A state change: the token's usage flags first (so that the token enforces it),
 * then the metadata, with the state and the dates that go with it. A record has no
 * flags left to change. */
static void put_state_change(struct ttlv_writer *w, const void *arg)
{
	const struct state_change *c = arg;

	ttlv_put_enum(w, KMIP_TAG_STATE, c->state);
	ttlv_put_int(w, KMIP_TAG_CRYPTOGRAPHIC_USAGE_MASK, (int32_t)c->usage);
	for (size_t i = 0; i < c->n_dates; i++)
		ttlv_put_datetime(w, c->date_tags[i], c->when);
	if (c->revocation_reason)
		ttlv_put_item(w, KMIP_TAG_REVOCATION_REASON, c->revocation_reason);
}

int ops_change_state(struct store *st, const struct store_obj *o, const struct store_meta *m,
		     const struct state_change *c)
{
	uint32_t replaced[5] = { KMIP_TAG_STATE, KMIP_TAG_CRYPTOGRAPHIC_USAGE_MASK, KMIP_TAG_REVOCATION_REASON };
	size_t n_replaced = 3;
	CK_ATTRIBUTE flags[OPS_MAX_FLAGS];
	CK_BBOOL values[OPS_MAX_FLAGS];
	size_t n = o->destroyed ? 0 : ops_usage_template(o->kind, ops_token_mask(m, c->usage), c->state, values, flags);
	int r = n ? p11_set_attrs(st->tok, o->handle, flags, n) : 0;

	for (size_t i = 0; i < c->n_dates; i++)
		replaced[n_replaced++] = c->date_tags[i];
	if (r == 0)
		r = ops_meta_rewrite(st, o, m, replaced, n_replaced, put_state_change, c);
	return r;
}

/* The common start of a lifecycle operation: the object the gate resolved (for
 * Revoke, possibly the record a destroyed object left), the lock, its metadata. */
struct locked_object {
	struct store *st;
	struct store_obj o;
	struct store_meta meta;
	int lock;
};

static bool lock_object(struct ops_ctx *ctx, struct locked_object *lo, struct ops_result *res)
{
	int r;

	*lo = (struct locked_object){ .lock = -1 };
	if (!ops_target(ctx, &lo->st, &lo->o, res))
		return false;
	if ((r = store_lock(lo->st, &lo->lock)) < 0 || (r = ops_meta_read(lo->st, &lo->o, true, &lo->meta)) < 0 ||
	    (r = ops_catch_up(lo->st, &lo->o, &lo->meta)) < 0) {
		store_unlock(lo->lock);
		ops_fail_token(lo->st, res, r);
		return false;
	}
	return true;
}

static void unlock_object(struct locked_object *lo)
{
	store_meta_clear(&lo->meta);
	store_unlock(lo->lock);
}

static void put_uid_payload(struct ttlv_writer *w, const struct store_obj *o)
{
	ttlv_begin(w, KMIP_TAG_RESPONSE_PAYLOAD);
	ops_put_uid(w, KMIP_TAG_UNIQUE_IDENTIFIER, o->uid);
	ttlv_end(w);
}

void op_activate(struct ops_ctx *ctx, const struct ttlv_item *payload, struct ttlv_writer *w,
		 struct ops_result *res)
{
	struct locked_object lo;
	int r;

	(void)payload; /* the gate resolved what it names */
	if (!lock_object(ctx, &lo, res))
		return;
	if (ops_meta_state(&lo.meta) != STATE_PRE_ACTIVE) {
		ops_fail(res, KMIP_REASON_WRONG_KEY_LIFECYCLE_STATE, "the object is not Pre-Active");
	} else {
		const struct state_change c = { STATE_ACTIVE, ops_usage_of(lo.st, &lo.o, &lo.meta),
						{ KMIP_TAG_ACTIVATION_DATE }, 1, NULL, ops_now() };

		if ((r = ops_change_state(lo.st, &lo.o, &lo.meta, &c)) < 0)
			ops_fail_token(lo.st, res, r);
		else
			put_uid_payload(w, &lo.o);
	}
	unlock_object(&lo);
}

void op_revoke(struct ops_ctx *ctx, const struct ttlv_item *payload, struct ttlv_writer *w, struct ops_result *res)
{
	const struct ttlv_item *reason = ttlv_find(payload, KMIP_TAG_REVOCATION_REASON);
	const struct ttlv_item *code = reason && reason->type == TTLV_STRUCTURE
					       ? ttlv_find(reason, KMIP_TAG_REVOCATION_REASON_CODE)
					       : NULL;
	struct locked_object lo;
	uint32_t state;
	bool compromised;
	int r;

	if (!code || code->type != TTLV_ENUMERATION) {
		ops_fail(res, KMIP_REASON_MISSING_DATA, "Revocation Reason with its code is required");
		return;
	}
	if (!kmip_enum_name(KMIP_TAG_REVOCATION_REASON_CODE, ttlv_enum(code))) {
		ops_fail(res, KMIP_REASON_INVALID_FIELD, "unknown Revocation Reason Code");
		return;
	}
	compromised = ttlv_enum(code) == REVOKE_KEY_COMPROMISE || ttlv_enum(code) == REVOKE_CA_COMPROMISE;
	if (!lock_object(ctx, &lo, res))
		return;
	/* A destroyed object may still be marked compromised (KMIP 2.1 section 4.57,
	 * transition 10); nothing else is left to revoke. */
	state = ops_state(&lo.o, &lo.meta);
	if (state == STATE_DESTROYED_COMPROMISED || (state == STATE_DESTROYED && !compromised) ||
	    (state == STATE_COMPROMISED && !compromised)) {
		ops_fail(res, KMIP_REASON_WRONG_KEY_LIFECYCLE_STATE, "the object cannot be revoked in its state");
	} else {
		const struct state_change c = {
			state == STATE_DESTROYED ? STATE_DESTROYED_COMPROMISED
			: compromised		 ? STATE_COMPROMISED
						 : STATE_DEACTIVATED,
			ops_usage_of(lo.st, &lo.o, &lo.meta),
			{ compromised ? KMIP_TAG_COMPROMISE_DATE : KMIP_TAG_DEACTIVATION_DATE },
			1,
			reason,
			ops_now(),
		};

		if ((r = ops_change_state(lo.st, &lo.o, &lo.meta, &c)) < 0)
			ops_fail_token(lo.st, res, r);
		else
			put_uid_payload(w, &lo.o);
	}
	unlock_object(&lo);
}

/* The record a destroyed object leaves: every attribute it had (its Name and what
 * else the token held included), in the state Destroy leads to, with the Destroy
 * Date. */
struct record {
	const struct store_meta *had;
	uint32_t state;
};

static void put_record(struct ttlv_writer *w, const void *arg)
{
	const struct record *rec = arg;

	for (size_t i = 0; i < rec->had->attrs.n; i++) {
		const struct kmip_attr *a = &rec->had->attrs.v[i];

		if (a->tag != KMIP_TAG_UNIQUE_IDENTIFIER && a->tag != KMIP_TAG_STATE &&
		    a->tag != KMIP_TAG_LAST_CHANGE_DATE)
			ops_put_attr(w, a);
	}
	ttlv_put_enum(w, KMIP_TAG_STATE, rec->state);
	ttlv_put_datetime(w, KMIP_TAG_DESTROY_DATE, ops_now());
}

/* Revokes an Active key for Destroy, with the reason Cessation of Operation (KMIP
 * 2.1 section 11.4); lo->meta is then the revoked key's. */
static int revoke_for_destroy(struct locked_object *lo)
{
	static const uint8_t cessation[4] = { 0, 0, 0, REVOKE_CESSATION_OF_OPERATION };
	const struct ttlv_item code = { KMIP_TAG_REVOCATION_REASON_CODE, TTLV_ENUMERATION, 4, cessation, NULL, NULL };
	const struct ttlv_item reason = { KMIP_TAG_REVOCATION_REASON, TTLV_STRUCTURE, 0, NULL, &code, NULL };
	const struct state_change c = { STATE_DEACTIVATED, ops_usage_of(lo->st, &lo->o, &lo->meta),
					{ KMIP_TAG_DEACTIVATION_DATE }, 1, &reason, ops_now() };
	int r = ops_change_state(lo->st, &lo->o, &lo->meta, &c);

	if (r == 0) {
		store_meta_clear(&lo->meta);
		r = ops_meta_read(lo->st, &lo->o, true, &lo->meta);
	}
	return r;
}

/* Destroy removes the token object and keeps its attributes as a record (KMIP 2.1
 * section 6.1.15: "the meta-data ... SHALL be retained"). The object goes first: a
 * failure in between leaves a record that still counts as destroyed. */
void op_destroy(struct ops_ctx *ctx, const struct ttlv_item *payload, struct ttlv_writer *w,
		struct ops_result *res)
{
	struct store_meta had = { 0 };
	struct locked_object lo;
	uint32_t state;
	int r;

	(void)payload; /* the gate resolved what it names */
	if (!lock_object(ctx, &lo, res))
		return;
	state = ops_meta_state(&lo.meta);
	/* The spec keeps an Active key from being destroyed; Cascade destroys without
	 * revoking, so the config may let its clients through, revoking the key
	 * first as Krill would (Cessation of Operation). */
	if (state == STATE_ACTIVE &&
	    !(ctx->client ? ctx->client->destroy_revokes
			  : ctx->credential_client && ctx->cfg->keys.destroy_revokes_for_credential_clients)) {
		ops_fail(res, KMIP_REASON_WRONG_KEY_LIFECYCLE_STATE, "an Active object must be revoked first");
	} else if ((state == STATE_ACTIVE && (r = revoke_for_destroy(&lo)) < 0) ||
		   (r = ops_load_attrs(lo.st, &lo.o, &lo.meta, &had)) < 0 ||
		   (r = p11_destroy(lo.st->tok, lo.o.handle)) < 0) {
		ops_fail_token(lo.st, res, r);
	} else {
		const struct record rec = { &had, state == STATE_COMPROMISED ? STATE_DESTROYED_COMPROMISED
									   : STATE_DESTROYED };

		store_forget(lo.st, &lo.o);
		lo.o.destroyed = true; /* what is written now is its record */
		lo.o.handle = CK_INVALID_HANDLE;
		if ((r = ops_meta_rewrite(lo.st, &lo.o, NULL, NULL, 0, put_record, &rec)) < 0) {
			ops_fail_token(lo.st, res, r);
			res->message = "the object was destroyed, but its record was not written";
		} else {
			put_uid_payload(w, &lo.o);
		}
	}
	store_meta_clear(&had);
	unlock_object(&lo);
}

/* The attribute a Modify Attribute request carries: 1.x Attribute, 2.x New Attribute. */
static bool modified_attr(const struct ops_ctx *ctx, const struct ttlv_item *payload, struct kmip_attrs *ret,
			  struct ops_result *res)
{
	const struct ttlv_item *c = ttlv_find(payload, ctx->version.major >= 2 ? KMIP_TAG_NEW_ATTRIBUTE
									     : KMIP_TAG_ATTRIBUTE);
	struct ttlv_item holder;
	int r;

	if (!c || c->type != TTLV_STRUCTURE) {
		ops_fail(res, KMIP_REASON_MISSING_DATA, "no attribute to modify");
		return false;
	}
	/* 1.x: decode the Attribute structure as the only child of a container. */
	holder = (struct ttlv_item){ .type = TTLV_STRUCTURE, .child = c };
	if (ctx->version.major < 2)
		c = &holder;
	if ((r = kmip_attrs_decode(c, ctx->version, ret)) < 0 || ret->n != 1) {
		if (r == 0)
			kmip_attrs_clear(ret);
		ops_fail_err(res, r < 0 ? r : KR_E_KMIP_MISSING);
		return false;
	}
	return true;
}

/* Which attribute a request means: a standard one by tag, a vendor one by name. */
struct attr_ref {
	uint32_t tag;
	struct kmip_text vendor, name;
};

static struct attr_ref ref_of(const struct kmip_attr *a)
{
	return (struct attr_ref){ a->tag, a->vendor, a->name };
}

static bool same_attr(const struct kmip_attr *a, const struct attr_ref *ref)
{
	if (ref->tag)
		return a->tag == ref->tag;
	return !a->tag && a->vendor.len == ref->vendor.len && a->name.len == ref->name.len &&
	       memcmp(a->vendor.ptr, ref->vendor.ptr, a->vendor.len) == 0 &&
	       memcmp(a->name.ptr, ref->name.ptr, a->name.len) == 0;
}

static bool meta_has(const struct store_meta *m, const struct attr_ref *ref)
{
	for (size_t i = 0; i < m->attrs.n; i++)
		if (same_attr(&m->attrs.v[i], ref))
			return true;
	return false;
}

enum change { CHANGE_ADD, CHANGE_MODIFY, CHANGE_DELETE };

/* Whether the client may make this change to an attribute of the object now, by
 * the attribute's rule (ops_attr_rule); if not, res says why. */
static bool may_change(uint32_t tag, enum change how, const struct locked_object *lo, struct ops_result *res)
{
	enum ops_attr_rule rule = tag ? ops_attr_rule(tag) : ATTR_CLIENT;
	uint32_t state = ops_meta_state(&lo->meta);

	switch (rule) {
	case ATTR_CLIENT:
		return true;
	case ATTR_ONCE:
		if (how == CHANGE_ADD)
			return true;
		break;
	case ATTR_FLAG:
		if (how != CHANGE_DELETE)
			return true;
		break;
	case ATTR_PRE_ACTIVE:
	case ATTR_USABLE:
	case ATTR_UNTIL_REACHED:
		if (how == CHANGE_DELETE)
			break;
		if (state != STATE_PRE_ACTIVE && (rule == ATTR_PRE_ACTIVE || state != STATE_ACTIVE)) {
			ops_fail(res, KMIP_REASON_WRONG_KEY_LIFECYCLE_STATE,
				 rule == ATTR_PRE_ACTIVE ? "this attribute changes only while the object is Pre-Active"
							 : "this attribute changes only while the object is Pre-Active or Active");
			return false;
		}
		if (rule == ATTR_UNTIL_REACHED && ops_meta_date(&lo->meta, tag, INT64_MAX) <= ops_now()) {
			ops_fail(res, KMIP_REASON_WRONG_KEY_LIFECYCLE_STATE, "this date has come: it no longer changes");
			return false;
		}
		return true;
	case ATTR_UNTIL_USED:
		if (!crypto_usage_drawn(&lo->meta))
			return true;
		ops_fail(res, KMIP_REASON_PERMISSION_DENIED, "the key's Usage Limits have been drawn on: they no longer change");
		return false;
	case ATTR_AT_CREATION:
	case ATTR_SERVER:
		break;
	}
	ops_fail(res, KMIP_REASON_ATTRIBUTE_READ_ONLY,
		 how == CHANGE_DELETE ? "this attribute cannot be deleted" : "the server keeps this attribute");
	return false;
}

/* The one attribute that Add or Modify Attribute names, and its object, locked, if
 * the client may make the change. On false, res says why. */
static bool begin_change(struct ops_ctx *ctx, const struct ttlv_item *payload, enum change how,
			 struct kmip_attrs *attrs, struct locked_object *lo, struct ops_result *res)
{
	if (!modified_attr(ctx, payload, attrs, res))
		return false;
	if (!lock_object(ctx, lo, res)) {
		kmip_attrs_clear(attrs);
		return false;
	}
	if (!may_change(attrs->v[0].tag, how, lo, res)) {
		unlock_object(lo);
		kmip_attrs_clear(attrs);
		return false;
	}
	return true;
}

/* A metadata generation with one attribute dropped and/or one added. */
struct rewrite {
	const struct store_meta *meta;
	const struct attr_ref *drop;
	const struct kmip_attr *add;
};

static void put_rewrite(struct ttlv_writer *w, const void *arg)
{
	const struct rewrite *rw = arg;

	for (size_t i = 0; i < rw->meta->attrs.n; i++) {
		const struct kmip_attr *a = &rw->meta->attrs.v[i];

		if ((!rw->drop || !same_attr(a, rw->drop)) && a->tag != KMIP_TAG_LAST_CHANGE_DATE)
			ops_put_attr(w, a);
	}
	if (rw->add)
		ops_put_attr(w, rw->add);
}

/* An attribute's new value in the metadata (replacing the old one, if drop). A
 * date that moves the state (a Deactivation Date that has come) moves it now. */
static bool rewrite_attr(struct locked_object *lo, const struct kmip_attr *a, bool drop, struct ops_result *res)
{
	const struct attr_ref ref = ref_of(a);
	const struct rewrite rw = { &lo->meta, drop ? &ref : NULL, a };
	int r = ops_meta_rewrite(lo->st, &lo->o, NULL, NULL, 0, put_rewrite, &rw);

	if (r == 0 && a->tag == KMIP_TAG_DEACTIVATION_DATE) {
		store_meta_clear(&lo->meta);
		if ((r = ops_meta_read(lo->st, &lo->o, true, &lo->meta)) == 0)
			r = ops_catch_up(lo->st, &lo->o, &lo->meta);
	}
	if (r < 0)
		ops_fail_token(lo->st, res, r);
	return r == 0;
}

static void put_nothing(struct ttlv_writer *w, const void *arg)
{
	(void)w;
	(void)arg;
}

/* Sensitive and Extractable of a private or secret key are the token's flags;
 * the token allows only the safe way (Sensitive on, Extractable off) and refuses
 * the other. A public key's are its metadata's. */
static bool set_flag(struct locked_object *lo, const struct kmip_attr *a, enum change how, struct ops_result *res)
{
	CK_BBOOL v = CK_FALSE;
	CK_ATTRIBUTE flag = { a->tag == KMIP_TAG_SENSITIVE ? CKA_SENSITIVE : CKA_EXTRACTABLE, &v, sizeof(v) };
	int r;

	if (a->value->type != TTLV_BOOLEAN) {
		ops_fail(res, KMIP_REASON_INVALID_ATTRIBUTE_VALUE, "Sensitive and Extractable are Booleans");
		return false;
	}
	if (lo->o.kind != STORE_PRIVATE && lo->o.kind != STORE_SECRET) {
		if (how == CHANGE_ADD && ops_meta_attr(&lo->meta, a->tag)) {
			ops_fail(res, KMIP_REASON_ATTRIBUTE_SINGLE_VALUED, "the object has this attribute already");
			return false;
		}
		return rewrite_attr(lo, a, true, res);
	}
	if (how == CHANGE_ADD) {
		ops_fail(res, KMIP_REASON_ATTRIBUTE_SINGLE_VALUED, "the key has this attribute already: modify it");
		return false;
	}
	v = ttlv_bool(a->value) ? CK_TRUE : CK_FALSE;
	if ((r = p11_set_attrs(lo->st->tok, lo->o.handle, &flag, 1)) < 0) {
		ops_fail_token(lo->st, res, r);
		return false;
	}
	/* A key without metadata whose Digest came from reading the key keeps it in a
	 * metadata object once the token stops letting the key out, with the rest of
	 * what it had (its Last Change Date too): a flag is no change of attributes. */
	if (lo->meta.derived &&
	    (r = ops_meta_rewrite_at(lo->st, &lo->o, &lo->meta, NULL, 0, put_nothing, NULL,
				     ops_meta_date(&lo->meta, KMIP_TAG_LAST_CHANGE_DATE, ops_now()))) < 0) {
		ops_fail_token(lo->st, res, r);
		return false;
	}
	return true;
}

/* The Activation Date may change while the object is Pre-Active (KMIP 2.1 section
 * 4.1; may_change); a date that has come activates it, as Activate would. */
static bool set_activation_date(struct locked_object *lo, const struct kmip_attr *a, struct ops_result *res)
{
	struct state_change c;
	int r;

	if (a->value->type != TTLV_DATE_TIME) {
		ops_fail(res, KMIP_REASON_INVALID_ATTRIBUTE_VALUE, "Activation Date is a Date-Time");
		return false;
	}
	c = (struct state_change){ ttlv_long(a->value) <= ops_now() ? STATE_ACTIVE : STATE_PRE_ACTIVE,
				   ops_usage_of(lo->st, &lo->o, &lo->meta),
				   { KMIP_TAG_ACTIVATION_DATE },
				   1,
				   NULL,
				   ttlv_long(a->value) };
	if ((r = ops_change_state(lo->st, &lo->o, &lo->meta, &c)) < 0) {
		ops_fail_token(lo->st, res, r);
		return false;
	}
	return true;
}

/* A Name is the object's CKA_LABEL, where other PKCS#11 software sees it. */
static const struct ttlv_item *name_value(const struct kmip_attr *a, struct ops_result *res)
{
	const struct ttlv_item *nv = a->value->type == TTLV_STRUCTURE ? ttlv_find(a->value, KMIP_TAG_NAME_VALUE) : NULL;

	if (!nv || nv->type != TTLV_TEXT_STRING) {
		ops_fail(res, KMIP_REASON_INVALID_ATTRIBUTE_VALUE, "a Name needs a Name Value");
		return NULL;
	}
	return nv;
}

static bool set_name(struct locked_object *lo, const struct ttlv_item *nv, struct ops_result *res)
{
	CK_ATTRIBUTE label = { CKA_LABEL, (void *)nv->value, nv->len };
	int r = p11_set_attrs(lo->st->tok, lo->o.handle, &label, 1);

	if (r < 0)
		ops_fail_token(lo->st, res, r);
	return r == 0;
}

/* The token keeps one label, so an object has at most one Name: one can be added
 * only to an object that has none. Names are not checked across objects: PKCS#11
 * labels need not be unique, and the halves of a pair made elsewhere share one. */
static bool add_name(struct locked_object *lo, const struct kmip_attr *a, struct ops_result *res)
{
	const struct ttlv_item *nv = name_value(a, res);
	uint8_t *label = NULL;
	size_t len = 0;
	bool ok = false;
	int r;

	if (!nv)
		return false;
	if ((r = p11_get_attr_alloc(lo->st->tok, lo->o.handle, CKA_LABEL, &label, &len)) < 0)
		ops_fail_token(lo->st, res, r);
	else if (len == nv->len && memcmp(label, nv->value, len) == 0)
		ops_fail(res, KMIP_REASON_NON_UNIQUE_NAME_ATTRIBUTE, "the object has this Name already");
	else if (len)
		ops_fail(res, KMIP_REASON_ATTRIBUTE_SINGLE_VALUED, "an object has one Name: modify it");
	else
		ok = set_name(lo, nv, res);
	free(label);
	return ok;
}

static void put_changed(struct ttlv_writer *w, const struct ops_ctx *ctx, const struct store_obj *o,
			const struct kmip_attrs *attrs)
{
	ttlv_begin(w, KMIP_TAG_RESPONSE_PAYLOAD);
	ops_put_uid(w, KMIP_TAG_UNIQUE_IDENTIFIER, o->uid);
	if (ctx->version.major < 2)
		kmip_attrs_encode(w, 0, attrs, ctx->version);
	ttlv_end(w);
}

void op_modify_attribute(struct ops_ctx *ctx, const struct ttlv_item *payload, struct ttlv_writer *w,
			 struct ops_result *res)
{
	struct kmip_attrs attrs = { 0 };
	struct locked_object lo;
	const struct kmip_attr *a;
	const struct ttlv_item *nv;
	bool ok = false;

	if (!begin_change(ctx, payload, CHANGE_MODIFY, &attrs, &lo, res))
		return;
	a = &attrs.v[0];
	if (a->tag == KMIP_TAG_NAME)
		ok = (nv = name_value(a, res)) && set_name(&lo, nv, res);
	else if (a->tag == KMIP_TAG_SENSITIVE || a->tag == KMIP_TAG_EXTRACTABLE)
		ok = set_flag(&lo, a, CHANGE_MODIFY, res);
	/* A Pre-Active object without an Activation Date gets its first with Add Attribute. */
	else if (!meta_has(&lo.meta, &(struct attr_ref){ a->tag, a->vendor, a->name }))
		ops_fail(res, KMIP_REASON_ATTRIBUTE_NOT_FOUND, "the object has no such attribute to modify");
	else if (a->tag == KMIP_TAG_ACTIVATION_DATE)
		ok = set_activation_date(&lo, a, res);
	else
		ok = rewrite_attr(&lo, a, true, res);
	if (ok)
		put_changed(w, ctx, &lo.o, &attrs);
	unlock_object(&lo);
	kmip_attrs_clear(&attrs);
}

/* Add Attribute: a Name where the object has none, an Activation Date to a
 * Pre-Active object, an Original Creation Date or a Random Number Generator it
 * lacks, and attributes of the client's. */
void op_add_attribute(struct ops_ctx *ctx, const struct ttlv_item *payload, struct ttlv_writer *w,
		      struct ops_result *res)
{
	struct kmip_attrs attrs = { 0 };
	struct locked_object lo;
	const struct kmip_attr *a;
	bool ok = false;

	if (!begin_change(ctx, payload, CHANGE_ADD, &attrs, &lo, res))
		return;
	a = &attrs.v[0];
	if (a->tag == KMIP_TAG_NAME)
		ok = add_name(&lo, a, res);
	else if (a->tag == KMIP_TAG_SENSITIVE || a->tag == KMIP_TAG_EXTRACTABLE)
		ok = set_flag(&lo, a, CHANGE_ADD, res);
	else if (meta_has(&lo.meta, &(struct attr_ref){ a->tag, a->vendor, a->name }))
		ops_fail(res, KMIP_REASON_ATTRIBUTE_SINGLE_VALUED, "the object has this attribute already");
	else if (a->tag == KMIP_TAG_ACTIVATION_DATE)
		ok = set_activation_date(&lo, a, res);
	else
		ok = rewrite_attr(&lo, a, false, res);
	if (ok)
		put_changed(w, ctx, &lo.o, &attrs);
	unlock_object(&lo);
	kmip_attrs_clear(&attrs);
}

/* The attribute a Delete Attribute request names: a 1.x Attribute Name, a 2.x
 * Attribute Reference (a tag) or Current Attribute. */
static bool deleted_attr(const struct ops_ctx *ctx, const struct ttlv_item *payload, struct attr_ref *ref,
			 struct ops_result *res)
{
	const struct ttlv_item *name = ttlv_find(payload, KMIP_TAG_ATTRIBUTE_NAME);
	const struct ttlv_item *tag = ttlv_find(payload, KMIP_TAG_ATTRIBUTE_REFERENCE);
	const struct ttlv_item *cur = ttlv_find(payload, KMIP_TAG_CURRENT_ATTRIBUTE);

	*ref = (struct attr_ref){ 0 };
	if (ctx->version.major < 2 && name && name->type == TTLV_TEXT_STRING) {
		ref->tag = kmip_tag_by_name((const char *)name->value, name->len);
		if (!ref->tag && name->len > 2 && name->value[1] == '-') {
			ref->vendor = (struct kmip_text){ (const char *)name->value, 1 };
			ref->name = (struct kmip_text){ (const char *)name->value + 2, name->len - 2 };
		}
	} else if (tag && tag->type == TTLV_ENUMERATION) {
		ref->tag = ttlv_enum(tag);
	} else if (cur && cur->type == TTLV_STRUCTURE && cur->child) {
		const struct ttlv_item *a = cur->child;

		if (a->tag == KMIP_TAG_ATTRIBUTE && a->type == TTLV_STRUCTURE && a->child && a->child->next) {
			ref->vendor = (struct kmip_text){ (const char *)a->child->value, a->child->len };
			ref->name = (struct kmip_text){ (const char *)a->child->next->value, a->child->next->len };
		} else {
			ref->tag = a->tag;
		}
	}
	if (!ref->tag && !ref->name.ptr) {
		ops_fail(res, KMIP_REASON_MISSING_DATA, "no attribute to delete");
		return false;
	}
	return true;
}

void op_delete_attribute(struct ops_ctx *ctx, const struct ttlv_item *payload, struct ttlv_writer *w,
			 struct ops_result *res)
{
	struct attr_ref ref;
	struct locked_object lo;
	const struct kmip_attr *found = NULL;
	int r;

	if (!deleted_attr(ctx, payload, &ref, res))
		return;
	/* The token holds the Name: an object keeps its label. */
	if (ref.tag == KMIP_TAG_NAME) {
		ops_fail(res, KMIP_REASON_ATTRIBUTE_READ_ONLY, "this attribute cannot be deleted");
		return;
	}
	if (!lock_object(ctx, &lo, res))
		return;
	if (!may_change(ref.tag, CHANGE_DELETE, &lo, res)) {
		unlock_object(&lo);
		return;
	}
	for (size_t i = 0; i < lo.meta.attrs.n && !found; i++)
		if (same_attr(&lo.meta.attrs.v[i], &ref))
			found = &lo.meta.attrs.v[i];
	if (!found) {
		ops_fail(res, KMIP_REASON_ATTRIBUTE_NOT_FOUND, "the object has no such attribute");
	} else {
		const struct rewrite rw = { &lo.meta, &ref, NULL };

		if ((r = ops_meta_rewrite(lo.st, &lo.o, NULL, NULL, 0, put_rewrite, &rw)) < 0) {
			ops_fail_token(lo.st, res, r);
		} else {
			const struct kmip_attrs one = { (struct kmip_attr *)found, 1 };

			ttlv_begin(w, KMIP_TAG_RESPONSE_PAYLOAD);
			ops_put_uid(w, KMIP_TAG_UNIQUE_IDENTIFIER, lo.o.uid);
			if (ctx->version.major < 2)
				kmip_attrs_encode(w, 0, &one, ctx->version);
			ttlv_end(w);
		}
	}
	unlock_object(&lo);
}

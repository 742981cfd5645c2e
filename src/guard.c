/* SPDX-License-Identifier: BSD-3-Clause */
#include "config.h"

#include "guard.h"

#include <gnutls/crypto.h>
#include <string.h>

#include "ops_objects.h"
#include "policy.h"

void guard_init(struct guard *g, const struct cfg *c, const struct tls_identity *tls, struct conn_token *ct)
{
	*g = (struct guard){ .cfg = c, .tls = tls, .token = ct };
}

void guard_clear(struct guard *g)
{
	gnutls_memset(g->password_hash, 0, sizeof(g->password_hash));
}

static void hash_password(const struct kmip_text *password, uint8_t out[32])
{
	if (gnutls_hash_fast(GNUTLS_DIG_SHA256, password->ptr ? password->ptr : "", password->len, out) < 0)
		memset(out, 0, 32);
}

/* Whether a request carries the credential that settled the connection. */
static bool same_credential(const struct guard *g, const struct kmip_header *h)
{
	uint8_t hash[32];
	bool same;

	if (!h->username.ptr || h->username.len != g->username_len ||
	    memcmp(h->username.ptr, g->username, g->username_len) != 0)
		return false;
	hash_password(&h->password, hash);
	same = gnutls_memcmp(hash, g->password_hash, sizeof(hash)) == 0;
	gnutls_memset(hash, 0, sizeof(hash));
	return same;
}

/* Whether the token judges the credential: the Password is a PIN. */
static bool pin_credential(const struct cfg *c, const struct cfg_client *cl)
{
	return cl ? cl->password_is_pin || cl->username_is_token : c->pkcs11.login_with_credentials;
}

int guard_identify(struct guard *g, const struct kmip_header *h)
{
	const struct cfg *c = g->cfg;
	const struct cfg_client *cl = NULL;
	bool by_credential;
	struct store *st;
	int r;

	if (g->settled) {
		if (!g->by_credential || same_credential(g, h))
			return 0;
		g->why = "the credential differs from the one that authenticated this connection";
		return KR_E_AUTH;
	}
	if (!g->tls->has_certificate && !h->username.ptr) {
		g->why = "no certificate and no Username and Password";
		return KR_E_AUTH;
	}
	if (c->n_clients && !(cl = policy_identify(c, g->tls, h, &g->why)))
		return KR_E_AUTH;
	/* Without a clients section a certificate is the identity; with one, the entry
	 * says whether a certificate or a credential identified the client. */
	by_credential = cl ? cl->username || cl->username_is_token : !g->tls->has_certificate;
	if (by_credential && h->username.len > sizeof(g->username)) {
		g->why = "the Username is too long";
		return KR_E_AUTH;
	}
	/* password_sha256 was checked by policy_identify; a PIN only the token can
	 * check, by logging in with it. Nothing else accepts a credential. */
	if (by_credential && !(cl && cl->has_password_sha256)) {
		if (!pin_credential(c, cl)) {
			g->why = "nothing verifies this credential";
			return KR_E_AUTH;
		}
		if ((r = token_store(g->token, h, cl, !g->tls->has_certificate, &st)) < 0) {
			g->why = g->token->why ? g->token->why : kr_strerror(r);
			return KR_E_AUTH;
		}
	}
	g->settled = true;
	g->client = cl;
	g->by_credential = by_credential;
	if (by_credential) {
		memcpy(g->username, h->username.ptr, h->username.len);
		g->username_len = h->username.len;
		hash_password(&h->password, g->password_hash);
	}
	return 0;
}

bool guard_visible(const struct ops_ctx *ctx, const struct store_obj *o)
{
	const struct conn_token *ct = ctx->token;

	/* The relay's own TLS key, and whatever shares its CKA_ID (its certificate,
	 * its public half, a replica on another backend), is no client's. */
	if (ct->reserved && ((!o->destroyed && ct->b[o->backend].tok == ct->tls_tok && o->handle == ct->reserved_handle) ||
			     (ct->reserved_id_len && o->id_len == ct->reserved_id_len &&
			      memcmp(o->id, ct->reserved_id, o->id_len) == 0)))
		return false;
	return policy_visible(ctx->cfg, ctx->client, o->id, o->id_len);
}

/* The object a UID names in one store, if the client may see it;
 * KR_E_P11_NOT_FOUND if not, so that another namespace's object is
 * indistinguishable from none. */
static int find_visible(const struct ops_ctx *ctx, struct store *st, const char *uid, size_t len,
			struct store_obj *ret)
{
	struct store_obj o;
	int r = store_find(st, uid, len, &o);

	if (r == 0 && !guard_visible(ctx, &o))
		r = KR_E_P11_NOT_FOUND;
	if (r == 0)
		*ret = o;
	return r;
}

/* The object a UID names in the pool: on the connection's backend first, then on
 * the others in list order (a key made on an older HSM, or moved with a vendor's
 * tools, is where it lives). A backend that cannot be reached is passed over; the
 * connection's own failing is the answer. On failure *ret_st is the store that
 * failed, or the connection's. */
static int find_in_pool(struct ops_ctx *ctx, const char *uid, size_t len, struct store **ret_st,
			struct store_obj *ret, struct ops_result *res)
{
	struct store *st, *other;
	int r;

	if (!(st = ops_store(ctx, res)))
		return KR_E_P11_TOKEN; /* res is set */
	*ret_st = st;
	r = find_visible(ctx, st, uid, len, ret);
	for (size_t i = 0; r == KR_E_P11_NOT_FOUND && i < ctx->token->n; i++)
		if ((int)i != st->backend && token_store_at(ctx->token, (int)i, &other) == 0)
			r = find_visible(ctx, other, uid, len, ret);
	return r;
}

/* Step 3: the object the item names by Unique Identifier, or without one the
 * object the previous batch item acted on (the ID Placeholder). */
static bool resolve_target(struct ops_ctx *ctx, enum guard_objects objects, const struct ttlv_item *payload,
			   struct ops_result *res)
{
	const struct ttlv_item *uid = ttlv_find(payload, KMIP_TAG_UNIQUE_IDENTIFIER);
	struct store *st;
	int r;

	if (objects == GUARD_NONE ||
	    (!uid && objects == GUARD_OBJECT_OR_STREAM && ttlv_find(payload, KMIP_TAG_CORRELATION_VALUE)))
		return true;
	if (uid && uid->type != TTLV_TEXT_STRING) {
		ops_fail(res, KMIP_REASON_INVALID_FIELD, "Unique Identifier must be a Text String");
		return false;
	}
	if (!uid && !ctx->placeholder[0]) {
		ops_fail(res, KMIP_REASON_MISSING_DATA, "no Unique Identifier");
		return false;
	}
	r = uid ? find_in_pool(ctx, (const char *)uid->value, uid->len, &st, &ctx->target, res)
		: find_in_pool(ctx, ctx->placeholder, strlen(ctx->placeholder), &st, &ctx->target, res);
	if (r == KR_E_P11_TOKEN && res->reason)
		return false;
	if (r == KR_E_P11_NOT_FOUND) {
		/* KMIP 2.x names this Object Not Found; 1.x gets Item Not Found. */
		ops_fail(res, KMIP_REASON_OBJECT_NOT_FOUND, "no object has this Unique Identifier");
		return false;
	}
	if (r < 0) {
		ops_fail_token(st, res, r);
		return false;
	}
	ops_acted_on(ctx, &ctx->target);
	if (ctx->target.destroyed && objects != GUARD_OBJECT_OR_RECORD) {
		ops_fail(res, KMIP_REASON_OBJECT_DESTROYED, "the object was destroyed");
		return false;
	}
	ctx->has_target = true;
	return true;
}

/* Step 3 for Link attributes, wherever the payload holds them (1.x Attribute
 * Values and 2.x Link items alike carry a Linked Object Identifier). In Locate a
 * Link is a filter: a target the client cannot see matches nothing. Elsewhere it
 * is a value, which must name an object the client can see. */
static bool resolve_links(struct ops_ctx *ctx, const struct ttlv_item *it, bool filter, struct ops_result *res)
{
	for (const struct ttlv_item *c = it->child; c; c = c->next) {
		struct ops_link *l;
		struct store *st;
		int r;

		if (c->type == TTLV_STRUCTURE && !resolve_links(ctx, c, filter, res))
			return false;
		if (c->tag != KMIP_TAG_LINKED_OBJECT_IDENTIFIER || c->type != TTLV_TEXT_STRING)
			continue;
		if (ctx->n_links == OPS_MAX_LINKS) {
			ops_fail(res, KMIP_REASON_SERVER_LIMIT_EXCEEDED, "too many Link attributes");
			return false;
		}
		l = &ctx->links[ctx->n_links++];
		*l = (struct ops_link){ (const char *)c->value, c->len, false, { 0 } };
		r = find_in_pool(ctx, l->uid, l->len, &st, &l->obj, res);
		if (r == KR_E_P11_TOKEN && res->reason)
			return false;
		if (r < 0 && r != KR_E_P11_NOT_FOUND) {
			ops_fail_token(st, res, r);
			return false;
		}
		l->found = r == 0;
		if (!l->found && !filter) {
			ops_fail(res, KMIP_REASON_OBJECT_NOT_FOUND, "the Link names no object");
			return false;
		}
	}
	return true;
}

bool guard_item(struct ops_ctx *ctx, uint32_t operation, bool changes, enum guard_objects objects,
		const struct ttlv_item *payload, struct ops_result *res)
{
	ctx->has_target = false;
	ctx->n_links = 0;
	if (!policy_operation_allowed(ctx->client, operation)) {
		ops_fail(res, KMIP_REASON_PERMISSION_DENIED, "policy: this operation is not allowed for this client");
		return false;
	}
	if (!resolve_target(ctx, objects, payload, res) ||
	    !resolve_links(ctx, payload, operation == KMIP_OP_LOCATE, res))
		return false;
	if (changes && !policy_may_change(ctx->client)) {
		ops_fail(res, KMIP_REASON_PERMISSION_DENIED, "policy: this client is read-only");
		return false;
	}
	return true;
}

bool guard_new_key(const struct ops_ctx *ctx, uint32_t algorithm, int32_t length, struct ops_result *res)
{
	if (policy_key_allowed(ctx->client, algorithm, length))
		return true;
	ops_fail(res, KMIP_REASON_PERMISSION_DENIED, "policy: this algorithm or length is not allowed for this client");
	return false;
}

int guard_tag_id(const struct ops_ctx *ctx, uint8_t *id)
{
	return policy_tag_id(ctx->cfg, ctx->client, id);
}

const struct store_obj *guard_link(const struct ops_ctx *ctx, const char *uid, size_t len)
{
	for (size_t i = 0; i < ctx->n_links; i++)
		if (ctx->links[i].len == len && memcmp(ctx->links[i].uid, uid, len) == 0)
			return ctx->links[i].found ? &ctx->links[i].obj : NULL;
	return NULL;
}

/* SPDX-License-Identifier: BSD-3-Clause */
/* The gate: the one place that decides what a client may do. Every batch item
 * passes through it before its handler runs (ops_run calls guard_item), and it
 * decides in this order:
 *   1. identity, settled by the connection's first authenticated request
 *      (guard_identify): later requests must come from the same client with the
 *      same credential;
 *   2. whether the operation is allowed to this client;
 *   3. the objects the item names - its Unique Identifier or the ID Placeholder,
 *      and the targets of Link attributes - resolved to token objects that the
 *      client may see: another namespace's objects, and the relay's own TLS key
 *      with everything that shares its CKA_ID, do not exist for it;
 *   4. the read-only rule;
 *   5. a new key's algorithm, length and curve, judged on what the key is once
 *      parsed (guard_new_key, which Create, Create Key Pair and Register call
 *      before they write anything to the token).
 * Handlers get the objects resolved (ops_ctx.target, guard_link) and never look
 * objects up for authorization themselves. The rules themselves are policy.c's,
 * pure functions of the config; this module applies them to a connection. */
#ifndef KR_GUARD_H
#define KR_GUARD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cfg.h"
#include "kmip.h"
#include "ops.h"
#include "tls.h"
#include "token.h"

/* What an operation's request names, for step 3. */
enum guard_objects {
	GUARD_NONE,              /* no object (Query, Create, Locate...) */
	GUARD_OBJECT,            /* a live object: its UID, else the ID Placeholder */
	GUARD_OBJECT_OR_RECORD,  /* also the record a destroyed object left */
	GUARD_OBJECT_OR_STREAM,  /* as GUARD_OBJECT, unless a Correlation Value names a
				  * stream without a UID: the stream holds its key */
};

/* One connection's identity, settled by its first authenticated request. */
struct guard {
	const struct cfg *cfg;
	const struct tls_identity *tls;
	struct conn_token *token;
	bool settled;
	const struct cfg_client *client; /* its "clients" entry; NULL without that section */
	bool by_credential;              /* a Username and Password identified it */
	char username[128];
	size_t username_len;
	uint8_t password_hash[32];
	const char *why; /* why the last request was not identified, for the log */
};

void guard_init(struct guard *g, const struct cfg *c, const struct tls_identity *tls, struct conn_token *ct);
/* Wipes what the guard keeps of the credential. */
void guard_clear(struct guard *g);

/* Step 1, for each request: 0 if it comes from the connection's client, or
 * KR_E_AUTH with g->why saying why not (never the password). A credential is
 * accepted only when something verifies it: its password_sha256, or the token's
 * C_Login for a Password that is the PIN. */
int guard_identify(struct guard *g, const struct kmip_header *h) KR_WUR;

/* Steps 2 to 4 for one batch item; on false, res says why. */
bool guard_item(struct ops_ctx *ctx, uint32_t operation, bool changes, enum guard_objects objects,
		const struct ttlv_item *payload, struct ops_result *res);

/* Step 5: whether the client may make or register a key of this algorithm and
 * length (for EC keys, the curve's size); if not, res says Permission Denied. */
bool guard_new_key(const struct ops_ctx *ctx, uint32_t algorithm, int32_t length, struct ops_result *res);

/* Whether the client may see an object (Locate's candidates). */
bool guard_visible(const struct ops_ctx *ctx, const struct store_obj *o);
/* Marks a new CKA_ID (at least POLICY_TAG_LEN bytes) with the client's namespace. */
int guard_tag_id(const struct ops_ctx *ctx, uint8_t *id) KR_WUR;

/* The object a Link attribute of the item names, as step 3 resolved it; NULL if
 * it names nothing this client can see. */
const struct store_obj *guard_link(const struct ops_ctx *ctx, const char *uid, size_t len);

#endif

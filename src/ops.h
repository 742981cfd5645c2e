/* SPDX-License-Identifier: BSD-3-Clause */
/* KMIP operations: one handler per operation, found in a table. A handler reads its
 * request payload and writes its Response Payload; it knows nothing of TLS or of
 * bytes on the wire. */
#ifndef KR_OPS_H
#define KR_OPS_H

#include "cfg.h"
#include "token.h"
#include "kmip.h"
#include "ttlv.h"

/* A Link attribute's target, as the gate resolved it. */
struct ops_link {
	const char *uid; /* borrowed from the request */
	size_t len;
	bool found;      /* an object the client may see */
	struct store_obj obj;
};
#define OPS_MAX_LINKS 4

struct ops_undo;
struct guard;

struct ops_ctx {
	const struct cfg *cfg;
	struct kmip_version version;      /* the version the response is written in */
	const struct kmip_header *header; /* the request's */
	struct conn_token *token;         /* opened by the first operation that needs it */
	bool credential_client;           /* no certificate: a Username/Password client */
	const struct cfg_client *client;  /* its "clients" entry; NULL without that section */
	struct ops_undo **undo;           /* Batch Error Continuation Option Undo: where ops_run
					   * keeps what the item changes; NULL without */
	CK_MECHANISM_TYPE mechanism;      /* the one a cryptographic operation used, for audit */
	int backend;                      /* the pool's backend it used (token.h), for audit; -1: none */
	char uid[STORE_MAX_UID + 1];      /* the object this batch item acted on, for audit */
	char placeholder[STORE_MAX_UID + 1]; /* the ID Placeholder: the last object of the batch */
	/* What the gate resolved for this item: the object it names, and the targets of
	 * its Link attributes (guard.h). */
	bool has_target;
	struct store_obj target;
	struct ops_link links[OPS_MAX_LINKS];
	size_t n_links;
};

/* What an operation did, for the response and the audit record. */
struct ops_result {
	enum kmip_reason reason; /* 0 on success */
	const char *message;     /* static text, or NULL */
};

/* A request message begins: the keys its items use are checked against the token
 * at their first use in it, and held for its other items (ops_crypto.c). */
void ops_request_begin(void);

/* Runs one batch item: through the gate (guard.h), then its handler. On success
 * the Response Payload is in w (which may be left empty for operations without
 * one); on failure res says why. */
void ops_run(struct ops_ctx *ctx, const struct kmip_batch_item *item, struct ttlv_writer *w,
	     struct ops_result *res);

/* Batch Error Continuation Option Undo (ops_undo.c). ops_undoable says whether an
 * operation can be undone at all (Destroy cannot). With ctx->undo set, ops_run
 * keeps what an item may change before it runs, and notes what it made; if a later
 * item fails, ops_undo_apply puts it back. */
bool ops_undoable(uint32_t operation);
int ops_undo_apply(struct ops_ctx *ctx, struct ops_undo *u) KR_WUR;
void ops_undo_free(struct ops_undo *u);

/* Ends what the connection left open: its Encrypt and Decrypt streams (their token
 * sessions closed), which no later connection may continue. */
void ops_end_connection(struct conn_token *ct);

/* Name of an operation for logs ("Query"), or "Unknown". */
const char *ops_name(uint32_t operation);

#endif

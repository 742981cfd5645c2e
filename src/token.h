/* SPDX-License-Identifier: BSD-3-Clause */
/* The connection's token: opened when the first operation needs it (a connection
 * that only discovers versions never loads the module), or before the handshake
 * when the TLS key lives in it. A client uses the token and PIN its "clients" entry
 * names, by default the configured ones; with username_is_token (or, without a
 * clients section, pkcs11.login_with_credentials) its KMIP Username picks the
 * token (label, then slot ID, then slot index) and its Password is the PIN. */
#ifndef KR_TOKEN_H
#define KR_TOKEN_H

#include <stdbool.h>
#include <stdint.h>

#include "cfg.h"
#include "kmip.h"
#include "store.h"

struct conn_token {
	const struct cfg *cfg;
	struct p11_token *tok;
	struct store store;
	int error;              /* a failed login, repeated to every later request */
	const char *why;
	bool for_client;        /* opened for the connection's client (not only for the TLS key) */
	/* The relay's own TLS key in this token (tls.key a pkcs11: URI): its handle and
	 * CKA_ID, which no client may reach (guard.c). */
	bool reserved;
	CK_OBJECT_HANDLE reserved_handle;
	uint8_t reserved_id[STORE_MAX_ID];
	size_t reserved_id_len;
};

void token_init(struct conn_token *ct, const struct cfg *c);
void token_close(struct conn_token *ct);
/* Opens the configured token and logs in with the configured PIN. */
int token_open_configured(struct conn_token *ct) KR_WUR;
/* Keeps the relay's own TLS key (handle h in the open token) from every client. */
void token_reserve(struct conn_token *ct, CK_OBJECT_HANDLE h);
/* The store, opening the token first if needed: the one cl's entry names, with
 * its PIN source (NULL: no clients section). h is the request's header, and
 * credential_client says the client has no certificate. The gate (guard.c) makes
 * sure that every request of the connection comes from the same client. */
int token_store(struct conn_token *ct, const struct kmip_header *h, const struct cfg_client *cl,
		bool credential_client, struct store **ret) KR_WUR;

#endif

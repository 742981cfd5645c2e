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
	/* The credential the token was opened with: every later request must carry
	 * the same one (the password only as a hash). */
	bool by_credential;
	const struct cfg_client *client; /* the clients entry it was opened for */
	bool client_bound;
	char username[128];
	size_t username_len;
	uint8_t password_hash[32];
};

/* The Result Message of every refused KMIP credential, whatever the reason (an
 * unknown Username, a wrong password or PIN, a token that may not be tried). */
#define TOKEN_CREDENTIAL_REFUSED "the Username and Password are not accepted"

void token_init(struct conn_token *ct, const struct cfg *c);
void token_close(struct conn_token *ct);
/* Opens the configured token and logs in with the configured PIN. */
int token_open_configured(struct conn_token *ct) KR_WUR;
/* The store, opening the token first if needed: the one cl's entry names, with
 * its PIN source (NULL: no clients section). h is the request's header, and
 * credential_client says the client has no certificate. A later request of the
 * connection must come from the same client with the same credential. */
int token_store(struct conn_token *ct, const struct kmip_header *h, const struct cfg_client *cl,
		bool credential_client, struct store **ret) KR_WUR;

#endif

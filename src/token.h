/* SPDX-License-Identifier: BSD-3-Clause */
/* The connection's tokens: its pool of backends (pkcs11.backends, or the single
 * configured token as a pool of one), each opened when first needed - a connection
 * that only discovers versions loads no module - and the one holding the relay's
 * TLS key opened before the handshake. A client uses the pool, or the one backend
 * its "clients" entry names; or a token of its own: by a pkcs11: URI and PIN
 * source in its entry, or with username_is_token (without a clients section,
 * pkcs11.login_with_credentials) the token its KMIP Username names (label, then
 * slot ID, then slot index) with its Password as the PIN.
 *
 * The connection's backend is chosen by the pool's health (health.h): in failover
 * mode the first usable one, in balance mode one at random by weight; it keeps it
 * until it fails. A device-class failure (p11_device_class) - in a call, or in
 * loading, initialising or logging in for a reason other than a wrong PIN - marks
 * that backend down for every process, drops its session, and moves the
 * connection on. */
#ifndef KR_TOKEN_H
#define KR_TOKEN_H

#include <stdbool.h>
#include <stdint.h>

#include "cfg.h"
#include "health.h"
#include "kmip.h"
#include "store.h"

/* One backend of the connection's pool. */
struct conn_backend {
	int index;               /* in pkcs11.backends; -1: the client's own token */
	struct p11_token *tok;
	struct store store;
	int error;               /* a failed login: repeated to every later request */
	bool failed;             /* failed on this connection: not used again */
};

struct conn_token {
	const struct cfg *cfg;
	struct health *health;
	struct conn_backend b[CFG_MAX_BACKENDS];
	size_t n;                /* the pool's size; 0 until a client's request set it */
	int current;             /* the connection's backend (its place in b); -1: none yet */
	struct p11_token *tls_tok; /* backend 0's token, opened before the handshake for the TLS key */
	const char *why;         /* why the last open failed, for the log */
	CK_RV open_rv;           /* the token's code for it, if it gave one */
	bool checking;           /* --check-config: no lock file is made */
	uint64_t load_us;        /* loading modules (dlopen), for the summary */
	uint64_t login_us;       /* the lock taken to C_Login done, likewise */
	int moved_from;          /* the place a device failure moved the connection off; -1: none */
	const char *moved_rv;    /* that failure's CKR name */
	char message[192];       /* a device failure's "CKR_... on backend NAME" */
	/* The relay's own TLS key (tls.key a pkcs11: URI): its handle in tls_tok and
	 * its CKA_ID, which no client may reach on any backend (guard.c). */
	bool reserved;
	CK_OBJECT_HANDLE reserved_handle;
	uint8_t reserved_id[STORE_MAX_ID];
	size_t reserved_id_len;
};

void token_init(struct conn_token *ct, const struct cfg *c);
void token_close(struct conn_token *ct);
/* Opens backend 0 with its configured PIN, before the handshake: for the TLS key. */
int token_open_configured(struct conn_token *ct) KR_WUR;
/* For --check-config: configured backend i opened and logged into with its PIN,
 * outside the pool's health. */
int token_check_open(struct conn_token *ct, int i, struct p11_token **ret) KR_WUR;
/* For --check-config and --probe: the token that uri selects in module, opened
 * without a login, initialised under pkcs11.lock_file as a relay would (a lock
 * file that does not exist is not made). */
int token_check_peek(struct conn_token *ct, const char *module, const char *uri, struct p11_token **ret) KR_WUR;
/* Keeps the relay's own TLS key (handle h in tls_tok) from every client. */
void token_reserve(struct conn_token *ct, CK_OBJECT_HANDLE h);

/* The store of the connection's backend, choosing and opening it if needed, for
 * the client of cl's entry (NULL: no clients section); h is the request's header,
 * credential_client says the client has no certificate. The gate (guard.c) makes
 * sure that every request of the connection comes from the same client. */
int token_store(struct conn_token *ct, const struct kmip_header *h, const struct cfg_client *cl,
		bool credential_client, struct store **ret) KR_WUR;
/* The store of the backend at place i of the pool, opening it if needed; fails
 * for a backend that failed on this connection or is down. The pool must be set
 * (a token_store before). */
int token_store_at(struct conn_token *ct, int i, struct store **ret) KR_WUR;
/* The store new objects go to: pkcs11.pool.new_keys's backend (never another: a
 * down one is an error naming it), else the connection's. */
int token_new_keys(struct conn_token *ct, const struct kmip_header *h, const struct cfg_client *cl,
		   bool credential_client, struct store **ret) KR_WUR;
/* A backend whose token reported a device-class failure since the last call:
 * marks it down (health), drops its session and moves the connection off it;
 * returns its place, or -1 if none failed. ct->message names the code and the
 * backend. */
int token_take_failure(struct conn_token *ct);
/* Calls that may have changed a token (p11_writes), summed over the pool. */
unsigned long token_writes(const struct conn_token *ct);
/* Forgets the object handles the pool's stores cached; false if there were none. */
bool token_forget_handles(struct conn_token *ct);
/* The name of the backend at place i: its pkcs11.backends name, or "client" for a
 * client's own token. */
const char *token_backend_name(const struct conn_token *ct, int i);

#endif

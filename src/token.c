/* SPDX-License-Identifier: BSD-3-Clause */
#include "config.h"

#include "token.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "pin_guard.h"

void token_init(struct conn_token *ct, const struct cfg *c)
{
	*ct = (struct conn_token){ .cfg = c };
}

void token_close(struct conn_token *ct)
{
	p11_close(ct->tok);
	ct->tok = NULL;
}

/* The pkcs11: URIs of the tokens a client's Username may pick: its entry's tokens,
 * else pkcs11.token as their pattern. */
static const char *const *allowed_tokens(const struct cfg *c, const struct cfg_client *cl, size_t *ret_n)
{
	if (cl && cl->tokens) {
		*ret_n = cl->n_tokens;
		return (const char *const *)cl->tokens;
	}
	*ret_n = c->pkcs11.token ? 1 : 0;
	return (const char *const *)&c->pkcs11.token;
}

/* Module loading and login, serialised between processes by the lock file. A
 * module call that hangs while this process holds the lock would stall every
 * other connection's login: its deadline (pkcs11.call_timeout) ends this process,
 * and the kernel releases the lock. With a username, it picks the token among
 * those cl's tokens (else pkcs11.token) match; else token_uri does. The PIN guard
 * decides under the same lock whether C_Login may be tried at all. */
static int open_and_login(struct conn_token *ct, const char *token_uri, const struct cfg_client *cl,
			  const char *username, size_t username_len, bool client_pin, const char *pin, size_t pin_len)
{
	const struct cfg *c = ct->cfg;
	size_t n_allow;
	const char *const *allow = allowed_tokens(c, cl, &n_allow);
	struct pin_guard *guard = NULL;
	CK_TOKEN_INFO ti;
	int lock = -1, r;

	r = p11_lock(c->pkcs11.lock_file, &lock, &ct->why);
	if (r == 0)
		r = p11_open(c->pkcs11.module, token_uri, username, username_len, allow, n_allow, &ct->tok, &ct->why);
	if (r == 0 && (r = p11_token_info(ct->tok, &ti)) < 0)
		ct->why = "cannot read the token's information";
	if (r == 0)
		r = pin_guard_before(c, &ti, client_pin, pin, pin_len, time(NULL), &guard, &ct->why);
	if (r == 0) {
		r = p11_login(ct->tok, pin, pin_len, &ct->why);
		pin_guard_after(guard, r == 0 ? CKR_OK : p11_last_rv(ct->tok), pin, pin_len, time(NULL));
	}
	p11_unlock(lock);
	if (r < 0) {
		token_close(ct);
		return r;
	}
	ct->store = (struct store){ .tok = ct->tok, .lock_file = c->pkcs11.lock_file };
	return 0;
}

/* Opens token_uri with the PIN from a file or systemd credential. */
static int open_with_pin_source(struct conn_token *ct, const char *token_uri, const char *pin_file,
				const char *pin_credential)
{
	char *pin = NULL;
	size_t pin_len = 0;
	int r;

	r = p11_read_pin(pin_file, pin_credential, &pin, &pin_len, &ct->why);
	if (r == 0)
		r = open_and_login(ct, token_uri, NULL, NULL, 0, false, pin, pin_len);
	p11_pin_free(pin, pin_len);
	return r;
}

int token_open_configured(struct conn_token *ct)
{
	const struct cfg *c = ct->cfg;

	return open_with_pin_source(ct, c->pkcs11.token, c->pkcs11.pin_file, c->pkcs11.pin_credential);
}

/* Opens the token the way the client's entry says (with none: the configured
 * token, or with pkcs11.login_with_credentials the one a credential names). */
static int open_for(struct conn_token *ct, const struct kmip_header *h, const struct cfg_client *cl, bool by_credential)
{
	const struct cfg *c = ct->cfg;
	const char *uri = cl && cl->token ? cl->token : c->pkcs11.token;

	if (by_credential && (!cl || cl->username_is_token))
		return open_and_login(ct, NULL, cl, h->username.ptr, h->username.len, true, h->password.ptr,
				      h->password.len);
	if (by_credential) /* password_is_pin */
		return open_and_login(ct, uri, NULL, NULL, 0, true, h->password.ptr, h->password.len);
	if (cl && (cl->pin_file || cl->pin_credential))
		return open_with_pin_source(ct, uri, cl->pin_file, cl->pin_credential);
	return open_with_pin_source(ct, uri, c->pkcs11.pin_file, c->pkcs11.pin_credential);
}

void token_reserve(struct conn_token *ct, CK_OBJECT_HANDLE h)
{
	CK_ATTRIBUTE id = { CKA_ID, ct->reserved_id, sizeof(ct->reserved_id) };

	ct->reserved = true;
	ct->reserved_handle = h;
	/* Without a readable CKA_ID only the key itself is kept back: an object with no
	 * CKA_ID has no UID anyway. */
	if (p11_get_attrs(ct->tok, h, &id, 1) == 0 && id.ulValueLen <= sizeof(ct->reserved_id))
		ct->reserved_id_len = id.ulValueLen;
}

int token_store(struct conn_token *ct, const struct kmip_header *h, const struct cfg_client *cl,
		bool credential_client, struct store **ret)
{
	bool by_credential = h->username.ptr && (cl ? cl->username_is_token || cl->password_is_pin
					      : ct->cfg->pkcs11.login_with_credentials && credential_client);
	int r;

	if (ct->error)
		return ct->error;
	/* Opened before the handshake for the TLS key, with the configured token and
	 * PIN: only a client that uses those may take it as it is. */
	if (ct->tok && !ct->for_client) {
		if (by_credential || (cl && (cl->token || cl->pin_file || cl->pin_credential))) {
			ct->why = "this client's token or PIN is not the one that holds the TLS key";
			return KR_E_P11_PIN;
		}
		ct->for_client = true;
	}
	if (!ct->tok) {
		if (!ct->cfg->pkcs11.module) {
			ct->why = "no PKCS#11 module configured (pkcs11.module)";
			return KR_E_P11_MODULE;
		}
		r = open_for(ct, h, cl, by_credential);
		if (r < 0) {
			log_msg(LOG_NOTICE, "token: %s", ct->why);
			/* A wrong PIN stays wrong; a token that could not be opened may work
			 * on the next request. */
			ct->error = r == KR_E_P11_PIN ? r : 0;
			return r;
		}
		ct->for_client = true;
	}
	*ret = &ct->store;
	return 0;
}

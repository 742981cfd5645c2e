#include "config.h"

#include "token.h"

#include <stdlib.h>
#include <string.h>

#include <gnutls/crypto.h>

#include "log.h"

void token_init(struct conn_token *ct, const struct cfg *c)
{
	*ct = (struct conn_token){ .cfg = c };
}

void token_close(struct conn_token *ct)
{
	p11_close(ct->tok);
	ct->tok = NULL;
}

/* Module loading and login, serialised between processes by the lock file. A
 * module call that hangs while this process holds the lock would stall every
 * other connection's login: its deadline (pkcs11.call_timeout) ends this process,
 * and the kernel releases the lock. With a username, it picks the token; else
 * token_uri does. */
static int open_and_login(struct conn_token *ct, const char *token_uri, const char *username, size_t username_len,
			  const char *pin, size_t pin_len)
{
	const struct cfg *c = ct->cfg;
	int lock = -1, r;

	r = p11_lock(c->pkcs11.lock_file, &lock, &ct->why);
	if (r == 0)
		r = p11_open(c->pkcs11.module, token_uri, username, username_len, &ct->tok, &ct->why);
	if (r == 0)
		r = p11_login(ct->tok, pin, pin_len, &ct->why);
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
		r = open_and_login(ct, token_uri, NULL, 0, pin, pin_len);
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
		return open_and_login(ct, NULL, h->username.ptr, h->username.len, h->password.ptr, h->password.len);
	if (by_credential) /* password_is_pin */
		return open_and_login(ct, uri, NULL, 0, h->password.ptr, h->password.len);
	if (cl && (cl->pin_file || cl->pin_credential))
		return open_with_pin_source(ct, uri, cl->pin_file, cl->pin_credential);
	return open_with_pin_source(ct, uri, c->pkcs11.pin_file, c->pkcs11.pin_credential);
}

static void hash_password(const struct kmip_text *password, uint8_t out[32])
{
	if (gnutls_hash_fast(GNUTLS_DIG_SHA256, password->ptr ? password->ptr : "", password->len, out) < 0)
		memset(out, 0, 32);
}

/* Whether a request's credential is the one the token was opened with. */
static bool same_credential(const struct conn_token *ct, const struct kmip_header *h)
{
	uint8_t hash[32];
	bool same;

	if (!h->username.ptr || h->username.len != ct->username_len ||
	    memcmp(h->username.ptr, ct->username, ct->username_len) != 0)
		return false;
	hash_password(&h->password, hash);
	same = gnutls_memcmp(hash, ct->password_hash, sizeof(hash)) == 0;
	gnutls_memset(hash, 0, sizeof(hash));
	return same;
}

int token_store(struct conn_token *ct, const struct kmip_header *h, const struct cfg_client *cl,
		bool credential_client, struct store **ret)
{
	bool by_credential = h->username.ptr && (cl ? cl->username_is_token || cl->password_is_pin
					      : ct->cfg->pkcs11.login_with_credentials && credential_client);
	int r;

	if (ct->error)
		return ct->error;
	/* Opened before the handshake for the TLS key: the clients that use the
	 * configured token and PIN take it as it is. */
	if (ct->tok && !ct->client_bound && !by_credential &&
	    (!cl || (!cl->token && !cl->pin_file && !cl->pin_credential))) {
		ct->client = cl;
		ct->client_bound = true;
	}
	if (ct->tok && (!ct->client_bound || cl != ct->client || (ct->by_credential && !same_credential(ct, h)))) {
		ct->why = "the credential differs from the one this connection logged in with";
		return KR_E_P11_PIN;
	}
	if (!ct->tok) {
		if (!ct->cfg->pkcs11.module) {
			ct->why = "no PKCS#11 module configured (pkcs11.module)";
			return KR_E_P11_MODULE;
		}
		if (by_credential && h->username.len > sizeof(ct->username)) {
			ct->why = "the username is too long";
			return KR_E_P11_TOKEN;
		}
		r = open_for(ct, h, cl, by_credential);
		if (r < 0) {
			log_msg(LOG_NOTICE, "token: %s", ct->why);
			/* A wrong PIN stays wrong; a token that could not be opened may work
			 * on the next request. */
			ct->error = r == KR_E_P11_PIN ? r : 0;
			return r;
		}
		ct->client = cl;
		ct->client_bound = true;
		if (by_credential) {
			ct->by_credential = true;
			memcpy(ct->username, h->username.ptr, h->username.len);
			ct->username_len = h->username.len;
			hash_password(&h->password, ct->password_hash);
		}
	}
	*ret = &ct->store;
	return 0;
}

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
 * module that hangs while this process holds the lock would stall every other
 * connection's login, so the lock is held for timeouts.handshake seconds at most:
 * then SIGALRM ends this process, and the kernel releases the lock. */
static int open_and_login(struct conn_token *ct, const char *username, size_t username_len, const char *pin,
			  size_t pin_len)
{
	const struct cfg *c = ct->cfg;
	int lock = -1, r;

	r = p11_lock(c->pkcs11.lock_file, c->timeouts.handshake, &lock, &ct->why);
	if (r == 0)
		r = p11_open(c->pkcs11.module, username ? NULL : c->pkcs11.token, username, username_len, &ct->tok,
			     &ct->why);
	if (r == 0)
		r = p11_login(ct->tok, pin, pin_len, &ct->why);
	p11_unlock(lock);
	if (r < 0) {
		token_close(ct);
		return r;
	}
	ct->store = (struct store){ .tok = ct->tok, .lock_file = c->pkcs11.lock_file,
				    .lock_seconds = c->timeouts.handshake };
	return 0;
}

int token_open_configured(struct conn_token *ct)
{
	char *pin = NULL;
	size_t pin_len = 0;
	int r;

	r = p11_read_pin(ct->cfg->pkcs11.pin_file, ct->cfg->pkcs11.pin_credential, &pin, &pin_len, &ct->why);
	if (r == 0)
		r = open_and_login(ct, NULL, 0, pin, pin_len);
	p11_pin_free(pin, pin_len);
	return r;
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

int token_store(struct conn_token *ct, const struct kmip_header *h, bool credential_client, struct store **ret)
{
	bool by_credential = ct->cfg->pkcs11.login_with_credentials && credential_client && h->username.ptr;
	int r;

	if (ct->error)
		return ct->error;
	if (ct->tok && ct->by_credential && !same_credential(ct, h)) {
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
		r = by_credential ? open_and_login(ct, h->username.ptr, h->username.len, h->password.ptr, h->password.len)
				  : token_open_configured(ct);
		if (r < 0) {
			log_msg(LOG_NOTICE, "token: %s", ct->why);
			/* A wrong PIN stays wrong; a token that could not be opened may work
			 * on the next request. */
			ct->error = r == KR_E_P11_PIN ? r : 0;
			return r;
		}
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

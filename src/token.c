/* SPDX-License-Identifier: BSD-3-Clause */
#include "config.h"

#include "token.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clock.h"
#include "log.h"
#include "pin_guard.h"

void token_init(struct conn_token *ct, const struct cfg *c)
{
	*ct = (struct conn_token){ .cfg = c, .current = -1, .moved_from = -1 };
}

void token_close(struct conn_token *ct)
{
	for (size_t i = 0; i < ct->n; i++)
		if (ct->b[i].tok != ct->tls_tok)
			p11_close(ct->b[i].tok);
	p11_close(ct->tls_tok);
	health_close(ct->health);
	ct->n = 0;
	ct->tls_tok = NULL;
	ct->health = NULL;
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

/* Module initialisation and login, serialised between processes by the lock file. A
 * module call that hangs while this process holds the lock would stall every
 * other connection's login: its deadline (pkcs11.call_timeout) ends this process,
 * and the kernel releases the lock. With a username, it picks the token among
 * those cl's tokens (else pkcs11.token) match; else token_uri does. The PIN guard
 * decides under the same lock whether C_Login may be tried at all. */
static int open_and_login(struct conn_token *ct, const char *module, const char *token_uri,
			  const struct cfg_client *cl, const char *username, size_t username_len, bool client_pin,
			  const char *pin, size_t pin_len, const struct p11_call_owner *owner, struct p11_token **ret)
{
	const struct cfg *c = ct->cfg;
	size_t n_allow;
	const char *const *allow = allowed_tokens(c, cl, &n_allow);
	struct pin_guard *guard = NULL;
	struct p11_token *tok = NULL;
	CK_TOKEN_INFO ti;
	uint64_t t0 = now_us(), t1;
	int lock = -1, r;

	/* The lock covers C_Initialize to C_Login, not loading the module. */
	r = p11_load(module, owner, &ct->why);
	t1 = now_us();
	ct->load_us += t1 - t0;
	if (r == 0)
		r = p11_lock(c->pkcs11.lock_file, !ct->checking, &lock, &ct->why);
	if (r == 0)
		r = p11_open(module, token_uri, username, username_len, allow, n_allow, owner, &tok, &ct->why);
	if (r == 0 && (r = p11_token_info(tok, &ti)) < 0)
		ct->why = "cannot read the token's information";
	if (r == 0)
		r = pin_guard_before(c, &ti, client_pin, pin, pin_len, time(NULL), &guard, &ct->why);
	if (r == 0) {
		r = p11_login(tok, pin, pin_len, &ct->why);
		pin_guard_after(guard, r == 0 ? CKR_OK : p11_last_rv(tok), pin, pin_len, time(NULL));
	}
	p11_unlock(lock);
	ct->login_us += now_us() - t1;
	if (r < 0) {
		ct->open_rv = tok ? p11_last_rv(tok) : CKR_OK;
		p11_close(tok);
		return r;
	}
	*ret = tok;
	return 0;
}

/* Opens a token with the PIN from a file or systemd credential. */
static int open_with_pin_source(struct conn_token *ct, const char *module, const char *token_uri,
				const char *pin_file, const char *pin_credential, const struct p11_call_owner *owner,
				struct p11_token **ret)
{
	char *pin = NULL;
	size_t pin_len = 0;
	int r;

	r = p11_read_pin(pin_file, pin_credential, &pin, &pin_len, &ct->why);
	if (r == 0)
		r = open_and_login(ct, module, token_uri, NULL, NULL, 0, false, pin, pin_len, owner, ret);
	p11_pin_free(pin, pin_len);
	return r;
}

/* Opens configured backend i, answering to the pool's health. */
static int open_backend(struct conn_token *ct, int i, struct p11_token **ret)
{
	const struct cfg_backend *b = &ct->cfg->pkcs11.backends[i];

	return open_with_pin_source(ct, b->module, b->token, b->pin_file, b->pin_credential,
				    ct->health ? health_owner(ct->health, i) : NULL, ret);
}

int token_check_open(struct conn_token *ct, int i, struct p11_token **ret)
{
	ct->checking = true;
	return open_backend(ct, i, ret);
}

int token_check_peek(struct conn_token *ct, const char *module, const char *uri, struct p11_token **ret)
{
	int lock = -1, r;

	ct->checking = true;
	/* The lock covers C_Initialize, not loading the module. */
	r = p11_load(module, NULL, &ct->why);
	if (r == 0)
		r = p11_lock(ct->cfg->pkcs11.lock_file, false, &lock, &ct->why);
	if (r == 0)
		r = p11_open(module, uri, NULL, 0, NULL, 0, NULL, ret, &ct->why);
	p11_unlock(lock);
	return r;
}

static int health(struct conn_token *ct)
{
	if (!ct->health && health_open(ct->cfg, &ct->health) < 0) {
		static char why[4200];

		snprintf(why, sizeof(why), "pkcs11.lock_file: cannot open the health file %s" CFG_HEALTH_SUFFIX ": %s",
			 ct->cfg->pkcs11.lock_file, strerror(errno));
		ct->why = why;
		return KR_E_SYSTEM;
	}
	return 0;
}

int token_open_configured(struct conn_token *ct)
{
	int r;

	if (!ct->cfg->pkcs11.n_backends) {
		ct->why = "no PKCS#11 module configured (pkcs11.module)";
		return KR_E_P11_MODULE;
	}
	if ((r = health(ct)) < 0)
		return r;
	return open_backend(ct, 0, &ct->tls_tok);
}

/* A client's own token, opened the way its entry says (with none: with
 * pkcs11.login_with_credentials, the one its credential names), on backend 0's
 * module. */
static int open_own(struct conn_token *ct, const struct kmip_header *h, const struct cfg_client *cl,
		    bool by_credential, struct p11_token **ret)
{
	const struct cfg_backend *b = &ct->cfg->pkcs11.backends[0];
	const char *uri = cl && cl->token ? cl->token : b->token;

	if (by_credential && (!cl || cl->username_is_token))
		return open_and_login(ct, b->module, NULL, cl, h->username.ptr, h->username.len, true, h->password.ptr,
				      h->password.len, NULL, ret);
	if (by_credential) /* password_is_pin */
		return open_and_login(ct, b->module, uri, NULL, NULL, 0, true, h->password.ptr, h->password.len, NULL,
				      ret);
	if (cl && (cl->pin_file || cl->pin_credential))
		return open_with_pin_source(ct, b->module, uri, cl->pin_file, cl->pin_credential, NULL, ret);
	return open_with_pin_source(ct, b->module, uri, b->pin_file, b->pin_credential, NULL, ret);
}

void token_reserve(struct conn_token *ct, CK_OBJECT_HANDLE h)
{
	CK_ATTRIBUTE id = { CKA_ID, ct->reserved_id, sizeof(ct->reserved_id) };

	ct->reserved = true;
	ct->reserved_handle = h;
	/* Without a readable CKA_ID only the key itself is kept back: an object with no
	 * CKA_ID has no UID anyway. */
	if (p11_get_attrs(ct->tls_tok, h, &id, 1) == 0 && id.ulValueLen <= sizeof(ct->reserved_id))
		ct->reserved_id_len = id.ulValueLen;
}

const char *token_backend_name(const struct conn_token *ct, int i)
{
	if (i < 0 || (size_t)i >= ct->n)
		return "-";
	return ct->b[i].index < 0 ? "client" : ct->cfg->pkcs11.backends[ct->b[i].index].name;
}

/* The client's pool: the backend its entry names, a token of its own, or the
 * configured pool (where a place is a backend's index). */
static int set_pool(struct conn_token *ct, const struct cfg_client *cl, bool by_credential)
{
	const struct cfg *c = ct->cfg;
	bool own = by_credential || (cl && cl->backend < 0 && (cl->token || cl->pin_file || cl->pin_credential));

	if (!c->pkcs11.n_backends) {
		ct->why = "no PKCS#11 module configured (pkcs11.module)";
		return KR_E_P11_MODULE;
	}
	/* The TLS key's token was opened with backend 0's PIN: a client whose Password
	 * is the PIN must not be let in on that login. */
	if (ct->tls_tok && by_credential) {
		ct->why = "this client's token or PIN is not the one that holds the TLS key";
		return KR_E_P11_PIN;
	}
	if (own) {
		ct->b[0] = (struct conn_backend){ .index = -1 };
		ct->n = 1;
	} else if (cl && cl->backend >= 0) {
		ct->b[0] = (struct conn_backend){ .index = cl->backend };
		ct->n = 1;
	} else {
		for (size_t i = 0; i < c->pkcs11.n_backends; i++)
			ct->b[i] = (struct conn_backend){ .index = (int)i };
		ct->n = c->pkcs11.n_backends;
	}
	return health(ct);
}

/* The health file's name for a failed open: the token's code where it gave one. */
static const char *open_failure(const struct conn_token *ct, int r)
{
	if (ct->open_rv != CKR_OK)
		return p11_rv_name(ct->open_rv);
	if (r == KR_E_P11_TOKEN) /* no token matches the URI, or no session */
		return "CKR_TOKEN_NOT_PRESENT";
	return r == KR_E_P11_MODULE ? "module unusable" : "open failed";
}

/* Opens place i, if it is not open; a backend that cannot be opened for a reason
 * other than a wrong PIN is down. */
static int open_place(struct conn_token *ct, int i, const struct kmip_header *h, const struct cfg_client *cl,
		      bool by_credential)
{
	struct conn_backend *b = &ct->b[i];
	int r = 0;

	if (b->tok)
		return 0;
	if (b->error)
		return b->error;
	ct->open_rv = CKR_OK;
	if (b->index == 0 && ct->tls_tok)
		b->tok = ct->tls_tok;
	else if (b->index >= 0)
		r = open_backend(ct, b->index, &b->tok);
	else
		r = open_own(ct, h, cl, by_credential, &b->tok);
	if (!b->tok) {
		if (ct->n > 1)
			log_msg(LOG_NOTICE, "token: backend %s: %s", token_backend_name(ct, i), ct->why);
		else
			log_msg(LOG_NOTICE, "token: %s", ct->why);
		/* A wrong PIN stays wrong; anything else is the device's. */
		if (r == KR_E_P11_PIN || b->index < 0) {
			b->error = r == KR_E_P11_PIN ? r : 0;
			return r;
		}
		b->failed = true;
		health_failed(ct->health, b->index, open_failure(ct, r));
		return r;
	}
	if (b->index >= 0)
		health_ok(ct->health, b->index);
	b->store = (struct store){ .tok = b->tok, .backend = i, .lock_file = ct->cfg->pkcs11.lock_file,
				   .keep_records = (int64_t)ct->cfg->keys.destroyed_record_days * 86400 };
	return 0;
}

/* Chooses the connection's backend: the pool's health decides, among those that
 * have not failed on this connection if any is left, else among all (one that
 * failed is logged into again: a device that came back serves). A pool of one
 * logs in again at once. */
static int choose(struct conn_token *ct, const struct kmip_header *h, const struct cfg_client *cl, bool by_credential)
{
	bool tried[CFG_MAX_BACKENDS] = { false };
	int r;

	if (ct->current >= 0)
		return 0;
	if (ct->n == 1)
		return (r = open_place(ct, 0, h, cl, by_credential)) < 0 ? r : (ct->current = 0);
	for (int pass = 0; pass < 2; pass++)
		for (;;) {
			bool skip[CFG_MAX_BACKENDS];
			int i;

			for (size_t k = 0; k < ct->n; k++)
				skip[k] = tried[k] || ct->b[k].error || (pass == 0 && ct->b[k].failed);
			if ((i = health_choose(ct->health, skip)) < 0)
				break;
			tried[i] = true;
			if ((r = open_place(ct, i, h, cl, by_credential)) == 0) {
				ct->current = i;
				if (ct->moved_from >= 0)
					log_msg(LOG_WARNING, "pool: failover from backend %s (%s) to backend %s",
						token_backend_name(ct, ct->moved_from), ct->moved_rv,
						token_backend_name(ct, i));
				ct->moved_from = -1;
				return 0;
			}
			if (r == KR_E_P11_PIN)
				return r;
		}
	ct->why = "no backend of the pool is usable";
	return KR_E_P11_DEVICE;
}

static bool pin_is_password(const struct conn_token *ct, const struct kmip_header *h, const struct cfg_client *cl,
			    bool credential_client)
{
	return h->username.ptr && (cl ? cl->username_is_token || cl->password_is_pin
				      : ct->cfg->pkcs11.login_with_credentials && credential_client);
}

int token_store(struct conn_token *ct, const struct kmip_header *h, const struct cfg_client *cl,
		bool credential_client, struct store **ret)
{
	bool by_credential = pin_is_password(ct, h, cl, credential_client);
	int r;

	if (!ct->n && (r = set_pool(ct, cl, by_credential)) < 0) {
		log_msg(LOG_NOTICE, "token: %s", ct->why);
		return r;
	}
	if ((r = choose(ct, h, cl, by_credential)) < 0)
		return r;
	*ret = &ct->b[ct->current].store;
	return 0;
}

int token_store_at(struct conn_token *ct, int i, struct store **ret)
{
	static const struct kmip_header none;
	int r;

	if (i < 0 || (size_t)i >= ct->n)
		return KR_E_P11_NOT_FOUND;
	/* Only the configured backends are opened here, and only those the pool's
	 * health lets be tried: a client's own token is its connection's backend,
	 * opened by token_store. */
	if (!ct->b[i].tok && ct->b[i].index < 0)
		return KR_E_P11_TOKEN;
	if (!ct->b[i].tok && ct->n > 1 && !health_usable(ct->health, ct->b[i].index)) {
		ct->why = "the backend is down";
		return KR_E_P11_DEVICE;
	}
	if ((r = open_place(ct, i, &none, NULL, false)) < 0)
		return r;
	*ret = &ct->b[i].store;
	return 0;
}

int token_new_keys(struct conn_token *ct, const struct kmip_header *h, const struct cfg_client *cl,
		   bool credential_client, struct store **ret)
{
	int want = ct->cfg->pkcs11.pool.new_keys, r;
	struct store *st;

	if ((r = token_store(ct, h, cl, credential_client, &st)) < 0)
		return r;
	/* A pool of the configured backends places new objects where the config says. */
	if (want < 0 || ct->n != ct->cfg->pkcs11.n_backends || ct->b[0].index != 0) {
		*ret = st;
		return 0;
	}
	if ((r = token_store_at(ct, want, ret)) < 0) {
		snprintf(ct->message, sizeof(ct->message),
			 "pkcs11.pool.new_keys: backend %s is down; new objects go nowhere else",
			 ct->cfg->pkcs11.backends[want].name);
		ct->why = ct->message;
	}
	return r;
}

unsigned long token_writes(const struct conn_token *ct)
{
	unsigned long n = 0;

	for (size_t i = 0; i < ct->n; i++)
		if (ct->b[i].tok)
			n += p11_writes(ct->b[i].tok);
	return n;
}

bool token_forget_handles(struct conn_token *ct)
{
	bool any = false;

	for (size_t i = 0; i < ct->n; i++) {
		any |= ct->b[i].store.n_cache > 0;
		ct->b[i].store.n_cache = 0;
	}
	return any;
}

int token_take_failure(struct conn_token *ct)
{
	for (size_t i = 0; i < ct->n; i++) {
		struct conn_backend *b = &ct->b[i];
		CK_RV rv = b->tok ? p11_device_failure(b->tok) : CKR_OK;
		const char *name = p11_rv_name(rv);

		if (rv == CKR_OK)
			continue;
		snprintf(ct->message, sizeof(ct->message), "%s on backend %s", name, token_backend_name(ct, (int)i));
		log_msg(LOG_WARNING, "pool: backend %s failed (%s); the connection moves off it",
			token_backend_name(ct, (int)i), name);
		if (b->index >= 0)
			health_failed(ct->health, b->index, name);
		if (b->tok != ct->tls_tok)
			p11_close(b->tok);
		b->tok = NULL;
		b->failed = true;
		if (ct->current == (int)i) {
			ct->current = -1;
			ct->moved_from = (int)i;
			ct->moved_rv = name;
		}
		return (int)i;
	}
	return -1;
}

/* SPDX-License-Identifier: BSD-3-Clause */
#include "config.h"

#include "probe.h"

#include <errno.h>
#include <gnutls/abstract.h>
#include <gnutls/crypto.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cfg.h"
#include "health.h"
#include "isolate.h"
#include "log.h"
#include "metrics.h"
#include "p11.h"
#include "token.h"

enum step { S_LOAD, S_LOGIN, S_KEYGEN, S_SIGN, S_VERIFY, S_CLOSE, N_STEPS };

static const char *const step_names[N_STEPS] = { "load", "login", "keygen", "sign", "verify", "close" };

/* What the parent learns of one backend. */
struct result {
	bool up;
	int failed_step;      /* -1: none */
	char cause[512];      /* why it failed */
	char health[40];      /* the health file's name for a device-class failure; "" for none */
	double ms[N_STEPS];   /* each finished step's latency; < 0: not reached */
};

static double now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* The child's side. Lines: "step: N", "done: N MS", "fail: HEALTH\tCAUSE". */

static void done(FILE *out, enum step s, double *t0)
{
	double t = now_ms();

	fprintf(out, "done: %d %.3f\n", (int)s, t - *t0);
	*t0 = t;
	if (s + 1 < N_STEPS)
		fprintf(out, "step: %d\n", (int)s + 1);
}

/* A failure: health names it for the health file when it is the device's. */
static void fail(FILE *out, const char *health, const char *cause)
{
	fprintf(out, "fail: %s\t%s\n", health, cause);
}

/* A token call's failure: a device-class code is the device's. */
static void fail_rv(FILE *out, struct p11_token *tok, const char *what)
{
	CK_RV rv = p11_last_rv(tok);
	char cause[256];

	snprintf(cause, sizeof(cause), "%s: %s", what, p11_rv_name(rv));
	fail(out, p11_device_class(rv) ? p11_rv_name(rv) : "", cause);
}

/* The public key's EC point (DER OCTET STRING, or raw as some tokens give it) as
 * a GnuTLS key. */
static int public_key(struct p11_token *tok, CK_OBJECT_HANDLE h, gnutls_pubkey_t *ret)
{
	uint8_t *pt = NULL;
	size_t len = 0, off;
	gnutls_pubkey_t pub = NULL;
	int r = p11_get_attr_alloc(tok, h, CKA_EC_POINT, &pt, &len);

	if (r < 0)
		return r;
	off = len == 67 && pt[0] == 0x04 && pt[1] == 0x41 ? 2 : 0;
	if (len != off + 65 || pt[off] != 0x04) {
		free(pt);
		return KR_E_P11_FAILED;
	}
	if (gnutls_pubkey_init(&pub) < 0 ||
	    gnutls_pubkey_import_ecc_raw(pub, GNUTLS_ECC_CURVE_SECP256R1, &(gnutls_datum_t){ pt + off + 1, 32 },
					 &(gnutls_datum_t){ pt + off + 33, 32 }) < 0)
		r = KR_E_P11_FAILED;
	free(pt);
	if (r < 0) {
		if (pub)
			gnutls_pubkey_deinit(pub);
		return r;
	}
	*ret = pub;
	return 0;
}

/* The key pair, the signature and its check, on a logged-in token. */
static bool sign_and_verify(FILE *out, struct p11_token *tok, double *t0)
{
	static const uint8_t p256[] = { 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07 };
	CK_BBOOL no = CK_FALSE, yes = CK_TRUE;
	CK_ATTRIBUTE pub_tmpl[] = {
		{ CKA_TOKEN, &no, sizeof(no) },
		{ CKA_VERIFY, &yes, sizeof(yes) },
		{ CKA_EC_PARAMS, (void *)p256, sizeof(p256) },
	};
	CK_ATTRIBUTE priv_tmpl[] = {
		{ CKA_TOKEN, &no, sizeof(no) },
		{ CKA_PRIVATE, &yes, sizeof(yes) },
		{ CKA_SENSITIVE, &yes, sizeof(yes) },
		{ CKA_SIGN, &yes, sizeof(yes) },
	};
	CK_MECHANISM gen = { CKM_EC_KEY_PAIR_GEN, NULL, 0 }, ecdsa = { CKM_ECDSA, NULL, 0 };
	CK_OBJECT_HANDLE pub_h, priv_h;
	uint8_t data[64], hash[32], sig[132];
	size_t sig_len = sizeof(sig);
	gnutls_datum_t der = { 0 };
	gnutls_pubkey_t pub = NULL;
	bool ok = false;
	int r;

	if (p11_generate_key_pair(tok, &gen, pub_tmpl, 3, priv_tmpl, 4, &pub_h, &priv_h) < 0) {
		fail_rv(out, tok, "C_GenerateKeyPair (P-256, CKA_TOKEN false)");
		return false;
	}
	done(out, S_KEYGEN, t0);
	if (gnutls_rnd(GNUTLS_RND_NONCE, data, sizeof(data)) < 0 ||
	    gnutls_hash_fast(GNUTLS_DIG_SHA256, data, sizeof(data), hash) < 0) {
		fail(out, "", "GnuTLS cannot make the data to sign");
		goto out;
	}
	if (p11_sign(tok, &ecdsa, priv_h, hash, sizeof(hash), sig, &sig_len) < 0) {
		fail_rv(out, tok, "C_Sign (CKM_ECDSA)");
		goto out;
	}
	done(out, S_SIGN, t0);
	if (sig_len != 64 || p11_ecdsa_der(sig, sig_len, &der) < 0) {
		fail(out, "", "the token's ECDSA signature is not 64 bytes");
		goto out;
	}
	if (public_key(tok, pub_h, &pub) < 0) {
		fail(out, "", "the token's public key (CKA_EC_POINT) cannot be read");
		goto out;
	}
	r = gnutls_pubkey_verify_hash2(pub, GNUTLS_SIGN_ECDSA_SHA256, 0, &(gnutls_datum_t){ hash, sizeof(hash) }, &der);
	if (r < 0) {
		char cause[256];

		snprintf(cause, sizeof(cause), "the token's signature does not verify with GnuTLS: %s", gnutls_strerror(r));
		fail(out, "", cause);
		goto out;
	}
	done(out, S_VERIFY, t0);
	ok = true;
out:
	gnutls_free(der.data);
	if (pub)
		gnutls_pubkey_deinit(pub);
	/* Session objects go with the session anyway. */
	(void)!p11_destroy(tok, priv_h);
	(void)!p11_destroy(tok, pub_h);
	return ok;
}

/* The health file's name for a failed open, as token.c's own. */
static const char *open_failure(const struct conn_token *ct, int r)
{
	if (ct->open_rv != CKR_OK)
		return p11_rv_name(ct->open_rv);
	if (r == KR_E_P11_TOKEN)
		return "CKR_TOKEN_NOT_PRESENT";
	return r == KR_E_P11_MODULE ? "module unusable" : "open failed";
}

static void probe_backend(const struct cfg *c, int i, FILE *out)
{
	const struct cfg_backend *b = &c->pkcs11.backends[i];
	struct p11_token *tok = NULL, *in = NULL;
	struct conn_token ct;
	double t0 = now_ms();
	int r;

	fprintf(out, "step: %d\n", S_LOAD);
	token_init(&ct, c);
	if ((r = token_check_peek(&ct, b->module, b->token, &tok)) < 0) {
		fail(out, r == KR_E_P11_TOKEN ? "CKR_TOKEN_NOT_PRESENT" : r == KR_E_P11_MODULE ? "module unusable" : "",
		     ct.why);
		return;
	}
	done(out, S_LOAD, &t0);
	if ((r = token_check_open(&ct, i, &in)) < 0) {
		/* A wrong PIN stays wrong: the relay does not count it against the device. */
		fail(out, r == KR_E_P11_PIN ? "" : open_failure(&ct, r), ct.why ? ct.why : kr_strerror(r));
		p11_close(tok);
		return;
	}
	done(out, S_LOGIN, &t0);
	if (sign_and_verify(out, in, &t0)) {
		p11_close(in);
		p11_close(tok);
		done(out, S_CLOSE, &t0);
		fprintf(out, "up\n");
		return;
	}
	p11_close(in);
	p11_close(tok);
}

/* One backend's probe, in a child process (isolate.h). */
struct probe_run {
	const struct cfg *c;
	int i;
	int step;
	struct result *res;
};

static void probe_work(void *arg, FILE *out)
{
	const struct probe_run *x = arg;

	probe_backend(x->c, x->i, out);
}

static void probe_line(void *arg, char *line)
{
	struct probe_run *x = arg;
	struct result *res = x->res;
	char *tab;
	double ms;
	int s;

	if (sscanf(line, "step: %d", &s) == 1 && s >= 0 && s < N_STEPS) {
		x->step = s;
	} else if (sscanf(line, "done: %d %lf", &s, &ms) == 2 && s >= 0 && s < N_STEPS) {
		res->ms[s] = ms;
	} else if (strcmp(line, "up") == 0) {
		res->up = true;
	} else if (strncmp(line, "fail: ", 6) == 0 && (tab = strchr(line + 6, '\t'))) {
		*tab = '\0';
		res->failed_step = x->step;
		snprintf(res->health, sizeof(res->health), "%s", line + 6);
		snprintf(res->cause, sizeof(res->cause), "%s", tab + 1);
	}
}

/* Backend i probed in a child; a crash or a call past pkcs11.call_timeout is the
 * device's. */
static void probe_one(const struct cfg *c, int i, struct result *res)
{
	struct probe_run x = { c, i, S_LOAD, res };
	struct isolate_end end;

	*res = (struct result){ .failed_step = -1 };
	for (int s = 0; s < N_STEPS; s++)
		res->ms[s] = -1;
	if (isolate_run(c->pkcs11.call_timeout, probe_work, probe_line, &x, &end) < 0) {
		res->failed_step = S_LOAD;
		snprintf(res->cause, sizeof(res->cause), "cannot start the probe's process: %s", strerror(errno));
		return;
	}
	if (res->up || res->failed_step >= 0)
		return;
	res->failed_step = x.step;
	if (end.died && strcmp(end.cause, "timeout") == 0) {
		snprintf(res->health, sizeof(res->health), "timeout");
		snprintf(res->cause, sizeof(res->cause), "a call did not return within %u s (pkcs11.call_timeout)",
			 c->pkcs11.call_timeout);
	} else if (end.died) {
		snprintf(res->health, sizeof(res->health), "%s", end.cause);
		snprintf(res->cause, sizeof(res->cause), "the module crashed (%s)", end.cause);
	} else {
		snprintf(res->health, sizeof(res->health), "module unusable");
		snprintf(res->cause, sizeof(res->cause), "the module ended the process (status %d)", end.status);
	}
}

static void print_line(const struct cfg_backend *b, const struct result *res)
{
	bool first = true;

	if (res->up)
		printf("%s: up", b->name);
	else
		printf("%s: down at %s: %s", b->name, step_names[res->failed_step], res->cause);
	for (int s = 0; s < N_STEPS; s++)
		if (res->ms[s] >= 0) {
			printf("%s%s %.1f ms", first ? " (" : ", ", step_names[s], res->ms[s]);
			first = false;
		}
	printf("%s\n", first ? "" : ")");
}

static json_t *result_json(const struct cfg_backend *b, const struct result *res)
{
	json_t *o = json_object(), *ms = json_object();

	for (int s = 0; s < N_STEPS; s++)
		if (res->ms[s] >= 0)
			json_object_set_new(ms, step_names[s], json_real(res->ms[s]));
	json_object_set_new(o, "backend", json_string(b->name));
	json_object_set_new(o, "up", json_boolean(res->up));
	json_object_set_new(o, "failed_step", res->up ? json_null() : json_string(step_names[res->failed_step]));
	json_object_set_new(o, "error", res->up ? json_null() : json_string(res->cause));
	json_object_set_new(o, "latency_ms", ms);
	return o;
}

int probe_run(const char *config, bool json)
{
	static const char *const status_names[] = { "healthy", "degraded", "down" };
	struct result res[CFG_MAX_BACKENDS];
	struct health *h = NULL;
	struct cfg *c = NULL;
	char *errors = NULL;
	const char *why = NULL;
	size_t up = 0, n;
	bool recorded = false;
	json_t *list = NULL;
	int status;

	if (cfg_load(config, &c, &errors) < 0) {
		fputs(errors ? errors : "out of memory\n", stderr);
		free(errors);
		return PROBE_DOWN;
	}
	if (!(n = c->pkcs11.n_backends)) {
		fputs("pkcs11.module: none configured: nothing to probe\n", stderr);
		cfg_free(c);
		return PROBE_DOWN;
	}
	metrics_start(c);
	if (health_open_beside_lock(c, &h, &recorded) < 0) {
		fprintf(stderr, "pkcs11.lock_file: cannot open the health file beside %s: %s\n", c->pkcs11.lock_file,
			strerror(errno));
		h = NULL;
	}
	list = json ? json_array() : NULL;
	for (size_t i = 0; i < n; i++) {
		probe_one(c, (int)i, &res[i]);
		up += res[i].up;
		if (h && res[i].up)
			health_ok(h, (int)i);
		else if (h && res[i].health[0])
			health_failed(h, (int)i, res[i].health);
		if (json)
			json_array_append_new(list, result_json(&c->pkcs11.backends[i], &res[i]));
		else
			print_line(&c->pkcs11.backends[i], &res[i]);
	}
	status = up == n ? PROBE_HEALTHY : up ? PROBE_DEGRADED : PROBE_DOWN;
	if (json) {
		json_t *o = json_pack("{s:s, s:I, s:I, s:b, s:o}", "status", status_names[status], "up", (json_int_t)up,
				      "down", (json_int_t)(n - up), "health_recorded", h && recorded, "backends", list);
		char *text = o ? json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(6)) : NULL;

		if (text)
			puts(text);
		free(text);
		json_decref(o);
	} else if (c->pkcs11.lock_file && !recorded) {
		fprintf(stderr, "note: not recorded in the health file: %s does not exist yet (no relay has run)\n",
			c->pkcs11.lock_file);
	}
	if (h && metrics_write(c, METRICS_END_NONE, h, &why) < 0)
		fprintf(stderr, "%s\n", why);
	health_close(h);
	cfg_free(c);
	return status;
}

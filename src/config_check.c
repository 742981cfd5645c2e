/* SPDX-License-Identifier: BSD-3-Clause */
#include "config.h"

#include "config_check.h"

#include <errno.h>
#include <grp.h>
#include <gnutls/abstract.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include <libgen.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cfg.h"
#include "isolate.h"
#include "log.h"
#include "p11.h"
#include "p11_tlskey.h"
#include "replicas.h"
#include "token.h"

/* A certificate that expires sooner than this is a warning. */
#define EXPIRY_WARNING_DAYS 30

struct report {
	unsigned errors, warnings;
};

/* One line: a problem to stderr ("error: ", "warning: "), what was found to
 * stdout. */
__attribute__((format(printf, 3, 4)))
static void say(struct report *rep, char level, const char *fmt, ...)
{
	FILE *out = level == 'I' ? stdout : stderr;
	va_list ap;

	if (level == 'E')
		rep->errors++;
	else if (level == 'W')
		rep->warnings++;
	fputs(level == 'E' ? "error: " : level == 'W' ? "warning: " : "", out);
	va_start(ap, fmt);
	vfprintf(out, fmt, ap);
	va_end(ap);
	fputc('\n', out);
}

/* TLS: what the handshake will load, loaded now. */

static const char *utc(time_t t, char out[32])
{
	struct tm tm;

	if (!gmtime_r(&t, &tm) || !strftime(out, 32, "%Y-%m-%d %H:%M:%S UTC", &tm))
		snprintf(out, 32, "%lld", (long long)t);
	return out;
}

/* The validity of each certificate in a PEM file: expired or not yet valid is an
 * error, expiring within EXPIRY_WARNING_DAYS a warning. */
static void check_dates(struct report *rep, const char *key, const char *file)
{
	gnutls_x509_crt_t *crts = NULL;
	gnutls_datum_t data = { 0 };
	unsigned n = 0;
	time_t now = time(NULL);
	char when[32];
	int r;

	if ((r = gnutls_load_file(file, &data)) < 0 ||
	    (r = gnutls_x509_crt_list_import2(&crts, &n, &data, GNUTLS_X509_FMT_PEM, 0)) < 0) {
		say(rep, 'E', "%s: %s: cannot read the certificates: %s", key, file, gnutls_strerror(r));
		n = 0;
	}
	for (unsigned i = 0; i < n; i++) {
		time_t from = gnutls_x509_crt_get_activation_time(crts[i]);
		time_t until = gnutls_x509_crt_get_expiration_time(crts[i]);
		gnutls_datum_t dn = { 0 };
		char subject[512];

		if (gnutls_x509_crt_get_dn3(crts[i], &dn, 0) >= 0)
			log_escape(dn.data, dn.size, subject, sizeof(subject));
		else
			snprintf(subject, sizeof(subject), "certificate %u", i + 1);
		gnutls_free(dn.data);
		if (from != (time_t)-1 && from > now)
			say(rep, 'E', "%s: %s: \"%s\" is not yet valid: from %s", key, file, subject, utc(from, when));
		else if (until != (time_t)-1 && until < now)
			say(rep, 'E', "%s: %s: \"%s\" has expired: on %s", key, file, subject, utc(until, when));
		else if (until != (time_t)-1 && until - now < EXPIRY_WARNING_DAYS * 86400)
			say(rep, 'W', "%s: %s: \"%s\" expires on %s, in %lld days", key, file, subject, utc(until, when),
			    (long long)(until - now) / 86400);
		gnutls_x509_crt_deinit(crts[i]);
	}
	gnutls_free(crts);
	gnutls_free(data.data);
}

static void check_tls(struct report *rep, const struct cfg *c)
{
	gnutls_certificate_credentials_t cred = NULL;
	gnutls_priority_t prio = NULL;
	const char *at = NULL;
	int r;

	if ((r = gnutls_priority_init(&prio, c->tls.priority, &at)) < 0)
		say(rep, 'E', "tls.priority: \"%s\": %s (at \"%s\")", c->tls.priority, gnutls_strerror(r), at ? at : "");
	else
		gnutls_priority_deinit(prio);
	check_dates(rep, "tls.certificate", c->tls.certificate);
	if (c->tls.client_ca)
		check_dates(rep, "tls.client_ca", c->tls.client_ca);
	/* A key in the token is matched to the certificate when logged in. */
	if (strncmp(c->tls.key, "pkcs11:", 7) == 0 || gnutls_certificate_allocate_credentials(&cred) < 0)
		return;
	r = gnutls_certificate_set_x509_key_file2(cred, c->tls.certificate, c->tls.key, GNUTLS_X509_FMT_PEM, NULL, 0);
	if (r == GNUTLS_E_CERTIFICATE_KEY_MISMATCH)
		say(rep, 'E', "tls.key: %s: does not match tls.certificate %s: %s", c->tls.key, c->tls.certificate,
		    gnutls_strerror(r));
	else if (r < 0)
		say(rep, 'E', "tls.certificate, tls.key: %s, %s: cannot be loaded: %s", c->tls.certificate, c->tls.key,
		    gnutls_strerror(r));
	gnutls_certificate_free_credentials(cred);
}

/* Files: what the relay reads and writes, as this user can. */

/* A secret file that others may read: sshd's rule for its keys. forbidden are the
 * mode bits it must not have. */
static void check_secret(struct report *rep, const char *key, const char *file, mode_t forbidden, const char *fix)
{
	struct stat st;

	if (stat(file, &st) < 0 || !S_ISREG(st.st_mode) || !(st.st_mode & forbidden))
		return;
	say(rep, 'E', "%s: %s: %s by others (mode %04o): %s", key, file,
	    st.st_mode & forbidden & 0007 ? "readable or writable" : "writable", (unsigned)(st.st_mode & 07777), fix);
}

/* The directory a file goes in, which must exist and let this user make files. */
static void check_directory(struct report *rep, const char *key, const char *file)
{
	char *copy = strdup(file);
	const char *dir = copy ? dirname(copy) : NULL;
	struct stat st;

	if (!dir)
		return;
	if (stat(dir, &st) < 0)
		say(rep, 'E', "%s: %s: its directory %s: %s", key, file, dir, strerror(errno));
	else if (!S_ISDIR(st.st_mode))
		say(rep, 'E', "%s: %s: %s is not a directory", key, file, dir);
	else if (access(dir, W_OK | X_OK) < 0)
		say(rep, 'E', "%s: %s: its directory %s is not writable: %s", key, file, dir, strerror(errno));
	free(copy);
}

/* A file the relay opens to write, if it exists already. */
static void check_writable(struct report *rep, const char *key, const char *file, int how)
{
	if (access(file, F_OK) == 0 && access(file, how) < 0)
		say(rep, 'E', "%s: %s: cannot be opened: %s", key, file, strerror(errno));
}

static void check_beside(struct report *rep, const char *key, const char *file, const char *suffix, int how)
{
	size_t size = strlen(file) + strlen(suffix) + 1;
	char *path = malloc(size);

	if (!path)
		return;
	snprintf(path, size, "%s%s", file, suffix);
	check_writable(rep, key, path, how);
	free(path);
}

static const char *const pin_fix = "chmod o-rwx it (sshd refuses a private key that others can read)";

static void check_files(struct report *rep, const struct cfg *c)
{
	char key[96];

	if (c->pkcs11.pin_file)
		check_secret(rep, "pkcs11.pin_file", c->pkcs11.pin_file, 0007, pin_fix);
	for (size_t i = 0; !c->pkcs11.module && i < c->pkcs11.n_backends; i++)
		if (c->pkcs11.backends[i].pin_file) {
			snprintf(key, sizeof(key), "pkcs11.backends[%zu].pin_file", i);
			check_secret(rep, key, c->pkcs11.backends[i].pin_file, 0007, pin_fix);
		}
	for (size_t i = 0; i < c->n_clients; i++)
		if (c->clients[i].pin_file) {
			snprintf(key, sizeof(key), "clients[%zu].pin_file", i);
			check_secret(rep, key, c->clients[i].pin_file, 0007, pin_fix);
		}
	if (c->tls.ticket_key)
		check_secret(rep, "tls.ticket_key", c->tls.ticket_key, 0027,
			     "it decrypts every resumed session; chmod 0600 it (0640 for the service's group)");
	if (c->pkcs11.lock_file) {
		check_directory(rep, "pkcs11.lock_file", c->pkcs11.lock_file);
		check_writable(rep, "pkcs11.lock_file", c->pkcs11.lock_file, R_OK | W_OK);
		check_beside(rep, "pkcs11.lock_file", c->pkcs11.lock_file, CFG_PIN_STATE_SUFFIX, R_OK | W_OK);
		check_beside(rep, "pkcs11.lock_file", c->pkcs11.lock_file, CFG_HEALTH_SUFFIX, R_OK | W_OK);
	}
	if (c->log.file) {
		if (access(c->log.file, F_OK) == 0)
			check_writable(rep, "log.file", c->log.file, W_OK);
		else
			check_directory(rep, "log.file", c->log.file);
	}
	if (c->metrics.file) {
		check_directory(rep, "metrics.file", c->metrics.file);
		check_writable(rep, "metrics.file", c->metrics.file, R_OK);
		check_beside(rep, "metrics.file", c->metrics.file, ".lock", R_OK);
	}
}

/* Tokens, each in a process of its own. */

/* What one child checks: a backend of the pool, or a token a client's entry names
 * (by a pkcs11: URI, or by one of its tokens patterns). */
struct target {
	int backend;          /* or -1 */
	int client, pattern;  /* with backend -1: clients[client].token, or .tokens[pattern] */
	char where[192];      /* what the lines name: "" for the single token, "pkcs11.backends[1] (b): " */
	const char *module;
	const char *uri;
};

/* The label, serial number or other blank-padded field of a token, as text. */
static void field(const CK_UTF8CHAR *f, size_t len, char *out, size_t size)
{
	while (len > 0 && f[len - 1] == ' ')
		len--;
	log_escape(f, len, out, size); /* the token chose it */
}

/* The module's and token's description, and whether the user PIN's flags forbid
 * a login. */
static bool describe(FILE *out, const struct target *t, struct p11_token *tok)
{
	CK_INFO info;
	CK_TOKEN_INFO ti;
	char maker[100], lib[100], label[100], serial[100], model[100];

	if (p11_module_info(tok, &info) == 0) {
		field(info.manufacturerID, sizeof(info.manufacturerID), maker, sizeof(maker));
		field(info.libraryDescription, sizeof(info.libraryDescription), lib, sizeof(lib));
		fprintf(out, "%smodule %s: \"%s\" by \"%s\", version %u.%u (Cryptoki %u.%u)\n", t->where, t->module, lib,
			maker, info.libraryVersion.major, info.libraryVersion.minor, info.cryptokiVersion.major,
			info.cryptokiVersion.minor);
	}
	if (p11_token_info(tok, &ti) < 0) {
		fprintf(out, "error: %spkcs11.token: %s: cannot read the token's information: %s\n", t->where, t->uri,
			p11_rv_name(p11_last_rv(tok)));
		return true;
	}
	field(ti.label, sizeof(ti.label), label, sizeof(label));
	field(ti.serialNumber, sizeof(ti.serialNumber), serial, sizeof(serial));
	field(ti.model, sizeof(ti.model), model, sizeof(model));
	fprintf(out, "%stoken %s: \"%s\" (model \"%s\", serial %s) in slot %lu\n", t->where, t->uri, label, model, serial,
		(unsigned long)p11_slot(tok));
	if (ti.flags & CKF_USER_PIN_LOCKED)
		fprintf(out, "error: %spkcs11.token: token \"%s\": the user PIN is locked (CKF_USER_PIN_LOCKED): its "
			     "security officer must unlock it\n", t->where, label);
	else if (ti.flags & CKF_USER_PIN_FINAL_TRY)
		fprintf(out, "error: %spkcs11.token: token \"%s\": one more wrong PIN locks the user PIN "
			     "(CKF_USER_PIN_FINAL_TRY): log in with the right PIN outside the relay to reset the count\n",
			t->where, label);
	else if (ti.flags & CKF_USER_PIN_COUNT_LOW)
		fprintf(out, "warning: %spkcs11.token: token \"%s\": a wrong user PIN was given since the last "
			     "successful login (CKF_USER_PIN_COUNT_LOW)\n", t->where, label);
	if (!(ti.flags & CKF_USER_PIN_INITIALIZED))
		fprintf(out, "error: %spkcs11.token: token \"%s\": has no user PIN (CKF_USER_PIN_INITIALIZED is not "
			     "set)\n", t->where, label);
	return (ti.flags & (CKF_USER_PIN_LOCKED | CKF_USER_PIN_FINAL_TRY)) || !(ti.flags & CKF_USER_PIN_INITIALIZED);
}

/* The TLS key in the token matches tls.certificate: GnuTLS signs with it and
 * verifies with the certificate, as it does at every handshake's set-up. */
static void check_token_key(FILE *out, const struct cfg *c, struct p11_token *tok)
{
	gnutls_certificate_credentials_t cred = NULL;
	gnutls_pcert_st pcerts[16];
	unsigned n = sizeof(pcerts) / sizeof(pcerts[0]);
	gnutls_privkey_t key = NULL;
	CK_OBJECT_HANDLE h;
	const char *why = NULL;
	int r;

	if (p11_tls_privkey(tok, c->tls.key, &key, &h, &why) < 0) {
		fprintf(out, "error: %s: %s\n", why, c->tls.key);
		return;
	}
	fprintf(out, "tls.key: %s: found in the token\n", c->tls.key);
	if ((r = gnutls_certificate_allocate_credentials(&cred)) < 0 ||
	    (r = gnutls_pcert_list_import_x509_file(pcerts, &n, c->tls.certificate, GNUTLS_X509_FMT_PEM, NULL, NULL,
						      0)) < 0) {
		fprintf(out, "error: tls.certificate: %s: cannot be loaded: %s\n", c->tls.certificate, gnutls_strerror(r));
	} else if ((r = gnutls_certificate_set_key(cred, NULL, 0, pcerts, (int)n, key)) < 0) {
		fprintf(out, "error: tls.key: %s: does not match tls.certificate %s: %s\n", c->tls.key, c->tls.certificate,
			gnutls_strerror(r));
		for (unsigned i = 0; i < n; i++)
			gnutls_pcert_deinit(&pcerts[i]);
	} else {
		key = NULL; /* the credentials own it */
	}
	if (key)
		gnutls_privkey_deinit(key);
	if (cred)
		gnutls_certificate_free_credentials(cred);
}

/* The PIN source of backend i, for a failed login's line. */
static void pin_source(const struct cfg *c, int i, char *out, size_t size)
{
	const struct cfg_backend *b = &c->pkcs11.backends[i];
	const char *kind = b->pin_file ? "pin_file" : "pin_credential";

	if (c->pkcs11.module)
		snprintf(out, size, "pkcs11.%s: %s: ", kind, b->pin_file ? b->pin_file : b->pin_credential);
	else
		snprintf(out, size, "pkcs11.backends[%d].%s: %s: ", i, kind, b->pin_file ? b->pin_file : b->pin_credential);
}

/* Backend i: found, described, and with login logged into once, its TLS key found
 * (backend 0) and its relay-managed objects listed (a pool). */
static void check_backend(const struct cfg *c, const struct check_options *o, const struct target *t, FILE *out)
{
	struct p11_token *tok = NULL, *in = NULL;
	struct conn_token ct;
	char pin[4200];
	bool blocked;
	int r;

	fprintf(out, "step: loading the module\n");
	token_init(&ct, c);
	if (token_check_peek(&ct, t->module, t->uri, &tok) < 0) {
		fprintf(out, "error: %s%s\n", t->where, ct.why);
		return;
	}
	fprintf(out, "step: reading the token's information\n");
	blocked = describe(out, t, tok);
	if (o->login && !blocked) {
		fprintf(out, "step: logging in\n");
		token_init(&ct, c);
		if ((r = token_check_open(&ct, t->backend, &in)) < 0) {
			pin[0] = '\0';
			if (r == KR_E_P11_PIN && ct.why && strncmp(ct.why, "pkcs11.", 7) != 0)
				pin_source(c, t->backend, pin, sizeof(pin));
			fprintf(out, "error: %s%s%s\n", t->where, pin, ct.why ? ct.why : kr_strerror(r));
		} else {
			fprintf(out, "%slogged in\n", t->where);
		}
	}
	if (in && t->backend == 0 && strncmp(c->tls.key, "pkcs11:", 7) == 0) {
		fprintf(out, "step: finding the TLS key\n");
		check_token_key(out, c, in);
	}
	if (in && c->pkcs11.n_backends > 1) {
		fprintf(out, "step: listing the relay-managed objects\n");
		if (replicas_list(in, t->backend, out) == 0)
			fprintf(out, "listed\n");
		else
			fprintf(out, "warning: %snot compared with the others: cannot list its objects: %s\n", t->where,
				p11_rv_name(p11_last_rv(in)));
	}
	fprintf(out, "step: closing\n");
	p11_close(in);
	p11_close(tok);
}

/* A token a client's entry names: found and described (its PIN, the client's, is
 * tried when the client connects). A pattern that matches no token yet is a
 * warning: the token may come later. */
static void check_client_token(const struct cfg *c, const struct check_options *o, const struct target *t,
			       FILE *out)
{
	struct p11_token *tok = NULL;
	struct conn_token ct;
	int r;

	(void)o;
	fprintf(out, "step: loading the module\n");
	token_init(&ct, c);
	r = token_check_peek(&ct, t->module, t->uri, &tok);
	if (r == KR_E_P11_TOKEN && t->pattern >= 0)
		fprintf(out, "warning: %sno token matches %s yet\n", t->where, t->uri);
	else if (r < 0)
		fprintf(out, "error: %s%s\n", t->where, ct.why);
	else
		describe(out, t, tok);
	fprintf(out, "step: closing\n");
	p11_close(tok);
}

/* One child's run: what it checks, and its lines as they come back. */
struct child_run {
	struct report *rep;
	const struct cfg *c;
	const struct check_options *o;
	const struct target *t;
	void (*fn)(const struct cfg *c, const struct check_options *o, const struct target *t, FILE *out);
	struct replica_list *list; /* the UIDs it lists, or NULL */
	char step[128];            /* what it was doing */
};

static void child_work(void *arg, FILE *out)
{
	const struct child_run *x = arg;

	x->fn(x->c, x->o, x->t, out);
}

static void child_line(void *arg, char *line)
{
	struct child_run *x = arg;
	struct replica_list *l = x->list;

	if (strncmp(line, "step: ", 6) == 0) {
		snprintf(x->step, sizeof(x->step), "%s", line + 6);
	} else if (strncmp(line, "uid: ", 5) == 0 && l) {
		char **more = realloc(l->uids, (l->n + 1) * sizeof(*more));

		if (more)
			l->uids = more;
		if (more && (more[l->n] = strdup(line + 5)))
			l->n++;
	} else if (strcmp(line, "listed") == 0 && l) {
		l->listed = true;
	} else if (strncmp(line, "error: ", 7) == 0) {
		say(x->rep, 'E', "%s", line + 7);
	} else if (strncmp(line, "warning: ", 9) == 0) {
		say(x->rep, 'W', "%s", line + 9);
	} else {
		say(x->rep, 'I', "%s", line);
	}
}

/* Runs fn for t in a child process (isolate.h) and reports its lines; a child
 * that dies is reported with the step it was in. The UIDs it lists go to list. */
static void run_child(struct report *rep, const struct cfg *c, const struct check_options *o, const struct target *t,
		      void (*fn)(const struct cfg *, const struct check_options *, const struct target *, FILE *),
		      struct replica_list *list)
{
	struct child_run x = { rep, c, o, t, fn, list, "starting" };
	struct isolate_end end;

	if (isolate_run(c->pkcs11.call_timeout, child_work, child_line, &x, &end) < 0)
		say(rep, 'E', "%scannot start the check's process: %s", t->where, strerror(errno));
	else if (end.died && strcmp(end.cause, "timeout") == 0)
		say(rep, 'E', "%spkcs11.module: %s: a call did not return within %u s (pkcs11.call_timeout) while %s",
		    t->where, t->module, c->pkcs11.call_timeout, x.step);
	else if (end.died)
		say(rep, 'E', "%spkcs11.module: %s: the module crashed (%s) while %s", t->where, t->module, end.cause,
		    x.step);
	else if (end.status != 0)
		say(rep, 'E', "%spkcs11.module: %s: the module ended the process (status %d) while %s", t->where,
		    t->module, end.status, x.step);
}

static void check_tokens(struct report *rep, const struct cfg *c, const struct check_options *o)
{
	struct replica_list lists[CFG_MAX_BACKENDS] = { 0 };
	size_t n = c->pkcs11.n_backends;

	for (size_t i = 0; i < n; i++) {
		const struct cfg_backend *b = &c->pkcs11.backends[i];
		struct target t = { (int)i, -1, -1, "", b->module, b->token ? b->token : "pkcs11:" };

		if (!c->pkcs11.module)
			snprintf(t.where, sizeof(t.where), "pkcs11.backends[%zu] (%s): ", i, b->name);
		run_child(rep, c, o, &t, check_backend, &lists[i]);
	}
	for (size_t i = 0; n && i < c->n_clients; i++) {
		const struct cfg_client *cl = &c->clients[i];
		struct target t = { -1, (int)i, -1, "", c->pkcs11.backends[0].module, NULL };

		if (cl->backend < 0 && cl->token) {
			t.uri = cl->token;
			snprintf(t.where, sizeof(t.where), "clients[%zu].token: ", i);
			run_child(rep, c, o, &t, check_client_token, NULL);
		}
		for (size_t k = 0; k < cl->n_tokens; k++) {
			t.uri = cl->tokens[k];
			t.pattern = (int)k;
			snprintf(t.where, sizeof(t.where), "clients[%zu].tokens[%zu]: ", i, k);
			run_child(rep, c, o, &t, check_client_token, NULL);
		}
	}
	if (o->login && n > 1) {
		fflush(stdout);
		rep->warnings += (unsigned)replicas_compare(c, lists, stderr);
	}
	for (size_t i = 0; i < n; i++)
		replica_list_clear(&lists[i]);
}

/* --as: this process becomes the user, with its groups, for good. */
static int become(const char *user)
{
	struct passwd *pw = getpwnam(user);

	if (!pw) {
		fprintf(stderr, "--as: no user %s\n", user);
		return CHECK_INVALID;
	}
	if (geteuid() != 0) {
		fprintf(stderr, "--as: only root can run the check as %s\n", user);
		return CHECK_INVALID;
	}
	if (initgroups(pw->pw_name, pw->pw_gid) < 0 || setgid(pw->pw_gid) < 0 || setuid(pw->pw_uid) < 0 ||
	    getuid() != pw->pw_uid || geteuid() != pw->pw_uid) {
		fprintf(stderr, "--as: cannot become %s: %s\n", user, strerror(errno));
		return CHECK_INVALID;
	}
	return CHECK_OK;
}

int config_check(const char *config, const struct check_options *o)
{
	struct report rep = { 0 };
	struct cfg *c = NULL;
	char *errors = NULL;
	int r;

	if (o->as_user && (r = become(o->as_user)) != CHECK_OK)
		return r;
	if (cfg_load(config, &c, &errors) < 0) {
		fputs(errors ? errors : "out of memory\n", stderr);
		free(errors);
		return CHECK_INVALID;
	}
	check_tls(&rep, c);
	check_files(&rep, c);
	check_tokens(&rep, c, o);
	cfg_free(c);
	if (rep.errors)
		return CHECK_FAILED;
	if (rep.warnings && o->strict)
		return CHECK_WARNINGS;
	puts("OK");
	return CHECK_OK;
}

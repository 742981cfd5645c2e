#include "config.h"

#include "cfg.h"

#include <errno.h>
#include <jansson.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ttlv.h"

/* The file's schema: every key, its type and where it goes. */
enum key_type {
	KT_STRING,
	KT_PATH,      /* a string naming a file that must be readable */
	KT_KEY,       /* a readable file, or a pkcs11: URI */
	KT_TICKET,    /* a readable file of exactly TICKET_KEY_SIZE bytes */
	KT_BOOL,
	KT_SECONDS,   /* 1 .. 1 week */
	KT_SIZE,      /* 4096 .. 64 MiB */
	KT_SECTION,
};

struct key {
	const char *name;
	enum key_type type;
	size_t offset;
	const struct key *section; /* KT_SECTION: its keys, NULL-terminated by name */
};

#define K(name, type, member) { name, type, offsetof(struct cfg, member), NULL }

static const struct key tls_keys[] = {
	K("certificate", KT_PATH, tls.certificate),
	K("key", KT_KEY, tls.key),
	K("client_ca", KT_PATH, tls.client_ca),
	K("priority", KT_STRING, tls.priority),
	K("ticket_key", KT_TICKET, tls.ticket_key),
	K("require_client_certificate", KT_BOOL, tls.require_client_certificate),
	{ 0 },
};

static const struct key timeout_keys[] = {
	K("handshake", KT_SECONDS, timeouts.handshake),
	K("idle", KT_SECONDS, timeouts.idle),
	K("lifetime", KT_SECONDS, timeouts.lifetime),
	{ 0 },
};

static const struct key limit_keys[] = {
	K("max_message_size", KT_SIZE, limits.max_message_size),
	{ 0 },
};

static const struct key log_keys[] = {
	K("file", KT_STRING, log.file),
	K("trace", KT_BOOL, log.trace),
	{ 0 },
};

static const struct key key_keys[] = {
	K("extractable", KT_BOOL, keys.extractable),
	K("destroy_revokes_for_credential_clients", KT_BOOL, keys.destroy_revokes_for_credential_clients),
	K("software_random", KT_BOOL, keys.software_random),
	K("verify_signatures", KT_BOOL, keys.verify_signatures),
	{ 0 },
};

static const struct key pkcs11_keys[] = {
	K("module", KT_PATH, pkcs11.module),
	K("token", KT_STRING, pkcs11.token),
	K("pin_file", KT_PATH, pkcs11.pin_file),
	K("pin_credential", KT_STRING, pkcs11.pin_credential),
	K("lock_file", KT_STRING, pkcs11.lock_file),
	K("login_with_credentials", KT_BOOL, pkcs11.login_with_credentials),
	{ 0 },
};

static const struct key top_keys[] = {
	{ "tls", KT_SECTION, 0, tls_keys },
	{ "timeouts", KT_SECTION, 0, timeout_keys },
	{ "limits", KT_SECTION, 0, limit_keys },
	{ "log", KT_SECTION, 0, log_keys },
	{ "pkcs11", KT_SECTION, 0, pkcs11_keys },
	{ "keys", KT_SECTION, 0, key_keys },
	{ 0 },
};
#undef K

#define MAX_SECONDS (7 * 24 * 3600)
#define MIN_MESSAGE_SIZE 4096
#define MAX_MESSAGE_SIZE (64 * 1024 * 1024)

/* Error lines, gathered so that one run reports every problem. */
struct errors {
	char *text;
	size_t len;
};

__attribute__((format(printf, 3, 4)))
static void add_error(struct errors *e, const char *path, const char *fmt, ...)
{
	char line[1024];
	int n = snprintf(line, sizeof(line), "%s: ", path);
	va_list ap;
	char *p;

	va_start(ap, fmt);
	if (n >= 0 && (size_t)n < sizeof(line))
		vsnprintf(line + n, sizeof(line) - (size_t)n, fmt, ap);
	va_end(ap);
	n = (int)strlen(line);
	p = realloc(e->text, e->len + (size_t)n + 2);
	if (!p)
		return;
	memcpy(p + e->len, line, (size_t)n);
	p[e->len + (size_t)n] = '\n';
	p[e->len + (size_t)n + 1] = '\0';
	e->text = p;
	e->len += (size_t)n + 1;
}

/* A readable file; with want_size, also of exactly that size. */
static void check_file(struct errors *e, const char *path, const char *file, long want_size)
{
	FILE *f = fopen(file, "r");
	long size;

	if (!f) {
		add_error(e, path, "cannot read %s: %s", file, strerror(errno));
		return;
	}
	if (want_size && (fseek(f, 0, SEEK_END) != 0 || (size = ftell(f)) != want_size))
		add_error(e, path, "must hold exactly %ld bytes", want_size);
	fclose(f);
}

static void load_key(struct cfg *c, const struct key *k, json_t *v, const char *path, struct errors *e)
{
	void *dst = (char *)c + k->offset;

	switch (k->type) {
	case KT_STRING:
	case KT_PATH:
	case KT_KEY:
	case KT_TICKET:
		if (!json_is_string(v)) {
			add_error(e, path, "must be a string");
			return;
		}
		if (k->type == KT_PATH || (k->type == KT_KEY && strncmp(json_string_value(v), "pkcs11:", 7) != 0))
			check_file(e, path, json_string_value(v), 0);
		else if (k->type == KT_TICKET)
			check_file(e, path, json_string_value(v), CFG_TICKET_KEY_SIZE);
		free(*(char **)dst);
		*(char **)dst = strdup(json_string_value(v));
		if (!*(char **)dst)
			add_error(e, path, "out of memory");
		break;
	case KT_BOOL:
		if (!json_is_boolean(v)) {
			add_error(e, path, "must be true or false");
			return;
		}
		*(bool *)dst = json_is_true(v);
		break;
	case KT_SECONDS:
	case KT_SIZE: {
		json_int_t min = k->type == KT_SECONDS ? 1 : MIN_MESSAGE_SIZE;
		json_int_t max = k->type == KT_SECONDS ? MAX_SECONDS : MAX_MESSAGE_SIZE;

		if (!json_is_integer(v)) {
			add_error(e, path, "must be an integer");
			return;
		}
		if (json_integer_value(v) < min || json_integer_value(v) > max) {
			add_error(e, path, "must be between %lld and %lld", (long long)min, (long long)max);
			return;
		}
		*(unsigned *)dst = (unsigned)json_integer_value(v);
		break;
	}
	case KT_SECTION:
		break;
	}
}

static void load_object(struct cfg *c, const struct key *keys, json_t *obj, const char *prefix, struct errors *e)
{
	const char *name;
	json_t *v;

	json_object_foreach(obj, name, v) {
		const struct key *k = keys;
		char path[256];

		snprintf(path, sizeof(path), "%s%s%s", prefix, *prefix ? "." : "", name);
		while (k->name && strcmp(k->name, name) != 0)
			k++;
		if (!k->name) {
			add_error(e, path, "unknown key");
			continue;
		}
		if (k->type == KT_SECTION) {
			if (!json_is_object(v))
				add_error(e, path, "must be an object");
			else
				load_object(c, k->section, v, path, e);
			continue;
		}
		load_key(c, k, v, path, e);
	}
}

static void set_defaults(struct cfg *c)
{
	c->tls.require_client_certificate = true;
	c->timeouts.handshake = 10;
	c->timeouts.idle = 300;
	c->timeouts.lifetime = 3600;
	c->limits.max_message_size = TTLV_DEFAULT_MAX_SIZE;
}

/* Rules that involve more than one key. */
static void check_combination(const struct cfg *c, struct errors *e)
{
	if (!c->tls.certificate)
		add_error(e, "tls.certificate", "required");
	if (!c->tls.key)
		add_error(e, "tls.key", "required");
	if (!c->tls.client_ca && c->tls.require_client_certificate)
		add_error(e, "tls.client_ca", "required unless tls.require_client_certificate is false");
	if (c->tls.key && strncmp(c->tls.key, "pkcs11:", 7) == 0 && !c->pkcs11.module)
		add_error(e, "tls.key", "a pkcs11: URI needs pkcs11.module");
	if (c->pkcs11.pin_file && c->pkcs11.pin_credential)
		add_error(e, "pkcs11.pin_credential", "conflicts with pkcs11.pin_file");
}

int cfg_load(const char *path, struct cfg **ret, char **ret_errors)
{
	struct errors e = { 0 };
	json_error_t jerr;
	struct cfg *c;
	json_t *root;

	c = calloc(1, sizeof(*c));
	if (!c)
		return KR_E_NOMEM;
	set_defaults(c);
	root = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
	if (!root) {
		if (jerr.line < 0)
			add_error(&e, path, "%s", jerr.text);
		else
			add_error(&e, path, "line %d column %d: %s", jerr.line, jerr.column, jerr.text);
	} else if (!json_is_object(root)) {
		add_error(&e, path, "must hold a JSON object");
	} else {
		load_object(c, top_keys, root, "", &e);
		check_combination(c, &e);
	}
	json_decref(root);
	if (e.len) {
		cfg_free(c);
		*ret_errors = e.text;
		return KR_E_CONFIG;
	}
	free(e.text);
	if (!c->tls.priority && !(c->tls.priority = strdup(CFG_DEFAULT_PRIORITY))) {
		cfg_free(c);
		return KR_E_NOMEM;
	}
	*ret = c;
	return 0;
}

void cfg_free(struct cfg *c)
{
	if (!c)
		return;
	free(c->tls.certificate);
	free(c->tls.key);
	free(c->tls.client_ca);
	free(c->tls.priority);
	free(c->tls.ticket_key);
	free(c->log.file);
	free(c->pkcs11.module);
	free(c->pkcs11.token);
	free(c->pkcs11.pin_file);
	free(c->pkcs11.pin_credential);
	free(c->pkcs11.lock_file);
	free(c);
}

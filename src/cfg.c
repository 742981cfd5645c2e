/* SPDX-License-Identifier: BSD-3-Clause */
#include "config.h"

#include "cfg.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <jansson.h>
#include <p11-kit/uri.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "kmip_names.h"
#include "ttlv.h"

/* The file's schema: every key, its type and where it goes. Each key is also
 * documented in man/kmip-relay.json.5.in and README (test_docs.py checks). */
enum key_type {
	KT_STRING,
	KT_PATH,      /* a string naming a file that must be readable */
	KT_KEY,       /* a readable file, or a pkcs11: URI */
	KT_TICKET,    /* a readable file of exactly TICKET_KEY_SIZE bytes */
	KT_CREDENTIAL, /* a systemd credential's name; it must hold something */
	KT_BOOL,
	KT_SECONDS,   /* 1 .. 1 week */
	KT_SIZE,      /* 4096 .. 64 MiB */
	KT_COUNT,     /* 1 .. 1000 */
	KT_DAYS,      /* 1 .. 100 years */
	KT_SECTION,
	KT_LATER,     /* read after the rest: "clients" and "namespaces" */
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
	K("client_crl", KT_PATH, tls.client_crl),
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

static const struct key metrics_keys[] = {
	K("file", KT_STRING, metrics.file),
	{ 0 },
};

static const struct key key_keys[] = {
	K("extractable", KT_BOOL, keys.extractable),
	K("destroy_revokes_for_credential_clients", KT_BOOL, keys.destroy_revokes_for_credential_clients),
	K("software_random", KT_BOOL, keys.software_random),
	K("verify_signatures", KT_BOOL, keys.verify_signatures),
	K("destroyed_record_days", KT_DAYS, keys.destroyed_record_days),
	{ 0 },
};

static const struct key pool_keys[] = {
	K("mode", KT_STRING, pkcs11.pool.mode_name),
	K("new_keys", KT_STRING, pkcs11.pool.new_keys_name),
	K("retry_after", KT_SECONDS, pkcs11.pool.retry_after),
	{ 0 },
};

static const struct key pkcs11_keys[] = {
	K("module", KT_PATH, pkcs11.module),
	K("token", KT_STRING, pkcs11.token),
	K("pin_file", KT_PATH, pkcs11.pin_file),
	K("pin_credential", KT_CREDENTIAL, pkcs11.pin_credential),
	K("lock_file", KT_STRING, pkcs11.lock_file),
	K("call_timeout", KT_SECONDS, pkcs11.call_timeout),
	K("login_with_credentials", KT_BOOL, pkcs11.login_with_credentials),
	K("pin_failures", KT_COUNT, pkcs11.pin_failures),
	K("pin_failure_window", KT_SECONDS, pkcs11.pin_failure_window),
	{ "backends", KT_LATER, 0, NULL },
	{ "pool", KT_SECTION, 0, pool_keys },
	{ 0 },
};

static const struct key testing_keys[] = {
	K("interop", KT_BOOL, testing.interop),
	{ 0 },
};

static const struct key proxy_protocol_keys[] = {
	{ "trusted", KT_LATER, 0, NULL },
	{ 0 },
};

static const struct key top_keys[] = {
	{ "tls", KT_SECTION, 0, tls_keys },
	{ "timeouts", KT_SECTION, 0, timeout_keys },
	{ "limits", KT_SECTION, 0, limit_keys },
	{ "log", KT_SECTION, 0, log_keys },
	{ "metrics", KT_SECTION, 0, metrics_keys },
	{ "pkcs11", KT_SECTION, 0, pkcs11_keys },
	{ "keys", KT_SECTION, 0, key_keys },
	{ "testing", KT_SECTION, 0, testing_keys },
	{ "proxy_protocol", KT_SECTION, 0, proxy_protocol_keys },
	{ "clients", KT_LATER, 0, NULL },
	{ "namespaces", KT_LATER, 0, NULL },
	{ 0 },
};
#undef K

/* The keys of one pkcs11.backends entry. */
#define B(name, type, member) { name, type, offsetof(struct cfg_backend, member), NULL }
static const struct key backend_keys[] = {
	B("name", KT_STRING, name),
	B("module", KT_PATH, module),
	B("token", KT_STRING, token),
	B("pin_file", KT_PATH, pin_file),
	B("pin_credential", KT_CREDENTIAL, pin_credential),
	B("weight", KT_COUNT, weight),
	{ 0 },
};
#undef B

/* The keys of one "clients" entry that load_key reads; the rest are read by
 * load_client. */
#define C(name, type, member) { name, type, offsetof(struct cfg_client, member), NULL }
static const struct key client_keys[] = {
	C("name", KT_STRING, name),
	C("certificate_spki_sha256", KT_STRING, spki_sha256),
	C("certificate_name", KT_STRING, certificate_name),
	C("username", KT_STRING, username),
	C("username_is_token", KT_BOOL, username_is_token),
	C("password_is_pin", KT_BOOL, password_is_pin),
	C("token", KT_STRING, token),
	C("pin_file", KT_PATH, pin_file),
	C("pin_credential", KT_CREDENTIAL, pin_credential),
	C("read_only", KT_BOOL, read_only),
	C("namespace", KT_STRING, namespace),
	C("untagged_keys", KT_BOOL, untagged_keys),
	C("extractable", KT_BOOL, extractable),
	C("destroy_revokes", KT_BOOL, destroy_revokes),
	C("attributes_compat", KT_STRING, attributes_compat),
	{ "password_sha256", KT_LATER, 0, NULL },
	{ "operations", KT_LATER, 0, NULL },
	{ "algorithms", KT_LATER, 0, NULL },
	{ "tokens", KT_LATER, 0, NULL },
	{ 0 },
};
#undef C

#define MAX_SECONDS (7 * 24 * 3600)
#define MIN_MESSAGE_SIZE 4096
#define MAX_MESSAGE_SIZE (64 * 1024 * 1024)
#define MAX_COUNT 1000
#define MAX_DAYS 36525

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

#ifndef UNIT_PIN_FILE
#define UNIT_PIN_FILE "/etc/kmip-relay/pin"
#endif

/* Whether a file holds anything but line ends (what p11_read_pin strips). The
 * bytes may be the PIN, so they are wiped. */
static bool holds_something(FILE *f)
{
	unsigned char buf[64];
	bool found = false;
	size_t n;

	setvbuf(f, NULL, _IONBF, 0); /* no stdio buffer holding a copy */
	while (!found && (n = fread(buf, 1, sizeof(buf), f)) > 0)
		for (size_t i = 0; i < n; i++)
			found = found || (buf[i] != '\n' && buf[i] != '\r');
	explicit_bzero(buf, sizeof(buf));
	return found;
}

/* A credential that the relay will read from $CREDENTIALS_DIRECTORY: checked when
 * that is set (under systemd it always is). kmip-relay@.service turns a missing
 * PIN file into an empty credential (SetCredential=pin:\n), so that configs with
 * no configured PIN start without it; one that needs it fails here, saying where
 * the PIN goes. */
static void check_credential(struct errors *e, const char *path, const char *name)
{
	const char *dir = getenv("CREDENTIALS_DIRECTORY");
	char file[4096];
	FILE *f;

	if (!*name || strchr(name, '/') || strcmp(name, ".") == 0 || strcmp(name, "..") == 0) {
		add_error(e, path, "must be a credential name (LoadCredential=NAME:FILE), not a path");
		return;
	}
	if (!dir)
		return;
	if (snprintf(file, sizeof(file), "%s/%s", dir, name) >= (int)sizeof(file)) {
		add_error(e, path, "$CREDENTIALS_DIRECTORY is too long");
		return;
	}
	f = fopen(file, "re");
	if (f && holds_something(f)) {
		fclose(f);
		return;
	}
	if (f)
		fclose(f);
	if (strcmp(name, "pin") == 0)
		add_error(e, path,
			  "the credential \"pin\" is missing or empty: put the user PIN in " UNIT_PIN_FILE
			  " (owned by root, mode 0600), which kmip-relay@.service loads as that credential "
			  "(LoadCredential=pin:" UNIT_PIN_FILE ")");
	else
		add_error(e, path,
			  "the credential \"%s\" is missing or empty: load it from the file holding the PIN in a "
			  "drop-in (systemctl edit kmip-relay@.service: LoadCredential=%s:FILE)",
			  name, name);
}

/* Reads one value into base (a struct cfg or struct cfg_client) at k's offset. */
static void load_key(void *base, const struct key *k, json_t *v, const char *path, struct errors *e)
{
	void *dst = (char *)base + k->offset;

	switch (k->type) {
	case KT_STRING:
	case KT_PATH:
	case KT_KEY:
	case KT_TICKET:
	case KT_CREDENTIAL:
		if (!json_is_string(v)) {
			add_error(e, path, "must be a string");
			return;
		}
		if (k->type == KT_PATH || (k->type == KT_KEY && strncmp(json_string_value(v), "pkcs11:", 7) != 0))
			check_file(e, path, json_string_value(v), 0);
		else if (k->type == KT_TICKET)
			check_file(e, path, json_string_value(v), CFG_TICKET_KEY_SIZE);
		else if (k->type == KT_CREDENTIAL)
			check_credential(e, path, json_string_value(v));
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
	case KT_SIZE:
	case KT_COUNT:
	case KT_DAYS: {
		json_int_t min = k->type == KT_SIZE ? MIN_MESSAGE_SIZE : 1;
		json_int_t max = k->type == KT_SECONDS ? MAX_SECONDS
				 : k->type == KT_SIZE	 ? MAX_MESSAGE_SIZE
				 : k->type == KT_DAYS	 ? MAX_DAYS
							 : MAX_COUNT;

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
	case KT_LATER:
		break;
	}
}

static void load_object(void *base, const struct key *keys, json_t *obj, const char *prefix, struct errors *e)
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
				load_object(base, k->section, v, path, e);
			continue;
		}
		load_key(base, k, v, path, e);
	}
}

/* Even-length hex into out (at most max bytes); false if it is not. */
static bool parse_hex(const char *hex, uint8_t *out, size_t max, size_t *ret_len)
{
	size_t n = strlen(hex);

	if (n == 0 || n % 2 || n / 2 > max)
		return false;
	for (size_t i = 0; i < n; i += 2) {
		unsigned v;

		if (!isxdigit((unsigned char)hex[i]) || !isxdigit((unsigned char)hex[i + 1]) ||
		    sscanf(hex + i, "%2x", &v) != 1)
			return false;
		out[i / 2] = (uint8_t)v;
	}
	*ret_len = n / 2;
	return true;
}

static void load_operations(struct cfg_client *cl, json_t *v, const char *path, struct errors *e)
{
	size_t i;
	json_t *op;

	if (!json_is_array(v) || !(cl->operations = calloc(json_array_size(v) + 1, sizeof(*cl->operations)))) {
		add_error(e, path, "must be a list of KMIP operation names");
		return;
	}
	json_array_foreach(v, i, op) {
		uint32_t code = json_is_string(op) ? kmip_enum_by_name(KMIP_TAG_OPERATION, json_string_value(op)) : 0;

		if (!code)
			add_error(e, path, "item %zu: not a KMIP operation name (\"Sign\", \"Create Key Pair\", ...)", i);
		cl->operations[cl->n_operations++] = code;
	}
}

static void load_algorithms(struct cfg_client *cl, json_t *v, const char *path, struct errors *e)
{
	const char *name;
	json_t *lengths;

	if (!json_is_object(v) || !(cl->algorithms = calloc(json_object_size(v) + 1, sizeof(*cl->algorithms)))) {
		add_error(e, path, "must be an object of algorithm names and lists of lengths");
		return;
	}
	json_object_foreach(v, name, lengths) {
		struct cfg_algorithm *a = &cl->algorithms[cl->n_algorithms++];
		size_t i;
		json_t *len;

		if (!(a->algorithm = kmip_enum_by_name(KMIP_TAG_CRYPTOGRAPHIC_ALGORITHM, name)))
			add_error(e, path, "%s: not a KMIP Cryptographic Algorithm (\"RSA\", \"EC\", \"AES\", ...)", name);
		if (!json_is_array(lengths) || !(a->lengths = calloc(json_array_size(lengths) + 1, sizeof(int32_t)))) {
			add_error(e, path, "%s: must be a list of lengths in bits ([] for any)", name);
			continue;
		}
		json_array_foreach(lengths, i, len) {
			if (!json_is_integer(len) || json_integer_value(len) < 1 || json_integer_value(len) > 16384)
				add_error(e, path, "%s: item %zu: must be a length in bits", name, i);
			else
				a->lengths[a->n_lengths++] = (int32_t)json_integer_value(len);
		}
		if (a->n_lengths == 0) { /* any length */
			free(a->lengths);
			a->lengths = NULL;
		}
	}
}

/* What is wrong with uri as a pattern of the tokens a Username may pick, or NULL.
 * A URI that names no token or slot attribute matches every token in the module,
 * and one with an attribute p11-kit does not know matches none. */
static const char *token_pattern_problem(const char *uri)
{
	P11KitUri *u = p11_kit_uri_new();
	const char *problem = NULL;
	CK_TOKEN_INFO *ti;
	CK_SLOT_INFO *si;

	if (!u)
		return "out of memory";
	if (strncmp(uri, "pkcs11:", 7) != 0 ||
	    p11_kit_uri_parse(uri, P11_KIT_URI_FOR_TOKEN | P11_KIT_URI_FOR_SLOT, u) != P11_KIT_URI_OK) {
		problem = "not a valid pkcs11: URI";
	} else if (p11_kit_uri_any_unrecognized(u)) {
		problem = "has an attribute that does not describe a token or slot";
	} else {
		ti = p11_kit_uri_get_token_info(u);
		si = p11_kit_uri_get_slot_info(u);
		if (!ti->label[0] && !ti->manufacturerID[0] && !ti->model[0] && !ti->serialNumber[0] &&
		    !si->slotDescription[0] && !si->manufacturerID[0] && p11_kit_uri_get_slot_id(u) == (CK_SLOT_ID)-1)
			problem = "matches every token: name one (token=, serial=, model=, manufacturer=, slot-id=...)";
	}
	p11_kit_uri_free(u);
	return problem;
}

static void load_tokens(struct cfg_client *cl, json_t *v, const char *path, struct errors *e)
{
	const char *problem;
	size_t i;
	json_t *uri;

	if (!json_is_array(v) || json_array_size(v) == 0 ||
	    !(cl->tokens = calloc(json_array_size(v), sizeof(*cl->tokens)))) {
		add_error(e, path, "must be a non-empty list of pkcs11: URIs");
		return;
	}
	json_array_foreach(v, i, uri) {
		if (!json_is_string(uri)) {
			add_error(e, path, "item %zu: must be a pkcs11: URI", i);
			continue;
		}
		if ((problem = token_pattern_problem(json_string_value(uri))))
			add_error(e, path, "item %zu: %s", i, problem);
		if (!(cl->tokens[cl->n_tokens++] = strdup(json_string_value(uri))))
			add_error(e, path, "out of memory");
	}
}

/* The index of the backend with this name, or -1. */
static int backend_named(const struct cfg *c, const char *name)
{
	for (size_t i = 0; i < c->pkcs11.n_backends; i++)
		if (c->pkcs11.backends[i].name && strcmp(c->pkcs11.backends[i].name, name) == 0)
			return (int)i;
	return -1;
}

/* One "clients" entry, and the rules that involve its keys. */
static void load_client(struct cfg *c, struct cfg_client *cl, json_t *obj, const char *path, struct errors *e)
{
	json_t *v;
	char sub[300];
	size_t len;
	int identities;

	/* Defaults from the global config, which is read by now. */
	cl->extractable = c->keys.extractable;
	load_object(cl, client_keys, obj, path, e);
	if (!json_object_get(obj, "destroy_revokes"))
		cl->destroy_revokes = (cl->username || cl->username_is_token) &&
				      c->keys.destroy_revokes_for_credential_clients;
	if ((v = json_object_get(obj, "password_sha256"))) {
		uint8_t buf[32];

		snprintf(sub, sizeof(sub), "%s.password_sha256", path);
		if (!json_is_string(v) || !parse_hex(json_string_value(v), buf, sizeof(buf), &len) || len != 32)
			add_error(e, sub, "must be 64 hex digits");
		else
			memcpy(cl->password_sha256, buf, 32);
		cl->has_password_sha256 = true;
	}
	if ((v = json_object_get(obj, "operations"))) {
		snprintf(sub, sizeof(sub), "%s.operations", path);
		load_operations(cl, v, sub, e);
	}
	if ((v = json_object_get(obj, "algorithms"))) {
		snprintf(sub, sizeof(sub), "%s.algorithms", path);
		load_algorithms(cl, v, sub, e);
	}
	if ((v = json_object_get(obj, "tokens"))) {
		snprintf(sub, sizeof(sub), "%s.tokens", path);
		load_tokens(cl, v, sub, e);
	}
	if (!cl->name || !cl->name[0])
		add_error(e, path, "name: required");
	if (!cl->namespace && cl->name && !(cl->namespace = strdup(cl->name)))
		add_error(e, path, "out of memory");
	if (cl->namespace && !cl->namespace[0])
		add_error(e, path, "namespace: must not be empty");
	if ((cl->name && strlen(cl->name) > CFG_MAX_NAME) || (cl->namespace && strlen(cl->namespace) > CFG_MAX_NAME))
		add_error(e, path, "name and namespace: at most %d bytes", CFG_MAX_NAME);
	identities = !!cl->spki_sha256 + !!cl->certificate_name + !!cl->username + cl->username_is_token;
	if (identities != 1)
		add_error(e, path,
			  "needs exactly one of certificate_spki_sha256, certificate_name, username, username_is_token");
	if (cl->spki_sha256) {
		uint8_t buf[32];

		if (!parse_hex(cl->spki_sha256, buf, sizeof(buf), &len) || len != 32)
			add_error(e, path, "certificate_spki_sha256: must be 64 hex digits");
		for (char *p = cl->spki_sha256; *p; p++)
			*p = (char)tolower((unsigned char)*p);
	}
	if (cl->certificate_name && !c->tls.client_ca)
		add_error(e, path, "certificate_name: needs tls.client_ca, the CA that vouches for the name");
	if (cl->username && cl->has_password_sha256 == cl->password_is_pin)
		add_error(e, path, "username: needs exactly one of password_sha256 and password_is_pin");
	if (!cl->username && (cl->has_password_sha256 || cl->password_is_pin))
		add_error(e, path, "password_sha256 and password_is_pin go with username");
	if ((cl->password_is_pin || cl->username_is_token) && (cl->pin_file || cl->pin_credential))
		add_error(e, path, "pin_file and pin_credential conflict with a Password that is the PIN");
	if (cl->pin_file && cl->pin_credential)
		add_error(e, path, "pin_credential: conflicts with pin_file");
	if (cl->username_is_token && cl->token)
		add_error(e, path, "token: the Username names the token (username_is_token)");
	cl->backend = cl->token ? backend_named(c, cl->token) : -1;
	if (cl->token && cl->backend < 0 && strncmp(cl->token, "pkcs11:", 7) != 0)
		add_error(e, path, "token: must name one of pkcs11.backends, or be a pkcs11: URI");
	if (cl->backend >= 0 && (cl->pin_file || cl->pin_credential || cl->password_is_pin))
		add_error(e, path, "token: the backend has its own PIN; pin_file, pin_credential and password_is_pin "
				   "go with a pkcs11: URI");
	if (cl->attributes_compat && !(cl->pykmip_attributes = strcmp(cl->attributes_compat, "pykmip") == 0))
		add_error(e, path, "attributes_compat: must be \"pykmip\" (the only client with a list of its own)");
	if (cl->tokens && !cl->username_is_token)
		add_error(e, path, "tokens: goes with username_is_token (else token names the token)");
	if (cl->username_is_token && !cl->tokens && !c->pkcs11.token)
		add_error(e, path,
			  "username_is_token: needs tokens (the pkcs11: URIs its Username may pick among) or "
			  "pkcs11.token as their pattern; without either, a Username could pick any token in the module");
	/* The default PIN: pkcs11.pin_file or pin_credential, or the first backend's. */
	if (!cl->password_is_pin && !cl->username_is_token && !cl->pin_file && !cl->pin_credential &&
	    !c->pkcs11.pin_file && !c->pkcs11.pin_credential &&
	    !(c->pkcs11.n_backends && (c->pkcs11.backends[0].pin_file || c->pkcs11.backends[0].pin_credential)))
		add_error(e, path, "no PIN: set pin_file or pin_credential here or in pkcs11");
}

static bool same_string(const char *a, const char *b)
{
	return a && b && strcmp(a, b) == 0;
}

static void load_clients(struct cfg *c, json_t *v, struct errors *e)
{
	size_t i;
	json_t *obj;

	if (!json_is_array(v) || json_array_size(v) == 0 ||
	    !(c->clients = calloc(json_array_size(v), sizeof(*c->clients)))) {
		add_error(e, "clients", "must be a non-empty list of objects");
		return;
	}
	json_array_foreach(v, i, obj) {
		struct cfg_client *cl = &c->clients[c->n_clients++];
		char path[64];

		snprintf(path, sizeof(path), "clients[%zu]", i);
		if (!json_is_object(obj)) {
			add_error(e, path, "must be an object");
			continue;
		}
		load_client(c, cl, obj, path, e);
		for (size_t j = 0; j < i; j++) {
			const struct cfg_client *o = &c->clients[j];

			if (same_string(cl->name, o->name))
				add_error(e, path, "name: \"%s\" is also clients[%zu]'s", cl->name, j);
			if (same_string(cl->spki_sha256, o->spki_sha256) ||
			    (cl->certificate_name && o->certificate_name &&
			     strcasecmp(cl->certificate_name, o->certificate_name) == 0) ||
			    same_string(cl->username, o->username) || (cl->username_is_token && o->username_is_token))
				add_error(e, path, "identifies the same client as clients[%zu]", j);
		}
	}
}

/* pkcs11.backends, or the single token the pkcs11 section names: a pool of one,
 * "default". */
static void load_backends(struct cfg *c, json_t *v, struct errors *e)
{
	size_t i;
	json_t *obj;

	if (!v) {
		struct cfg_backend *b;

		if (!c->pkcs11.module)
			return;
		if (!(c->pkcs11.backends = b = calloc(1, sizeof(*b))) || !(b->name = strdup("default")) ||
		    !(b->module = strdup(c->pkcs11.module)) || (c->pkcs11.token && !(b->token = strdup(c->pkcs11.token))) ||
		    (c->pkcs11.pin_file && !(b->pin_file = strdup(c->pkcs11.pin_file))) ||
		    (c->pkcs11.pin_credential && !(b->pin_credential = strdup(c->pkcs11.pin_credential)))) {
			add_error(e, "pkcs11", "out of memory");
			return;
		}
		b->weight = 1;
		c->pkcs11.n_backends = 1;
		return;
	}
	if (c->pkcs11.module || c->pkcs11.token || c->pkcs11.pin_file || c->pkcs11.pin_credential)
		add_error(e, "pkcs11.backends",
			  "conflicts with pkcs11.module, token, pin_file and pin_credential (they are a pool of one)");
	if (!json_is_array(v) || json_array_size(v) == 0 || json_array_size(v) > CFG_MAX_BACKENDS ||
	    !(c->pkcs11.backends = calloc(json_array_size(v), sizeof(*c->pkcs11.backends)))) {
		add_error(e, "pkcs11.backends", "must be a list of 1 to %d objects", CFG_MAX_BACKENDS);
		return;
	}
	json_array_foreach(v, i, obj) {
		struct cfg_backend *b = &c->pkcs11.backends[c->pkcs11.n_backends++];
		char path[64];

		snprintf(path, sizeof(path), "pkcs11.backends[%zu]", i);
		b->weight = 1;
		if (!json_is_object(obj)) {
			add_error(e, path, "must be an object");
			continue;
		}
		load_object(b, backend_keys, obj, path, e);
		if (!b->name || !b->name[0] || strlen(b->name) > CFG_MAX_NAME ||
		    strspn(b->name, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-") != strlen(b->name))
			add_error(e, path, "name: required: letters, digits, '.', '_' and '-', at most %d", CFG_MAX_NAME);
		if (!b->module)
			add_error(e, path, "module: required");
		if (!b->pin_file == !b->pin_credential)
			add_error(e, path, "needs exactly one of pin_file and pin_credential");
		for (size_t j = 0; j < i && b->name; j++)
			if (c->pkcs11.backends[j].name && strcmp(c->pkcs11.backends[j].name, b->name) == 0)
				add_error(e, path, "name: \"%s\" is also pkcs11.backends[%zu]'s", b->name, j);
	}
}

/* pkcs11.pool's names, once the backends are known. */
static void resolve_pool(struct cfg *c, struct errors *e)
{
	const char *mode = c->pkcs11.pool.mode_name;
	const char *new_keys = c->pkcs11.pool.new_keys_name;

	if (mode && strcmp(mode, "balance") == 0)
		c->pkcs11.pool.mode = CFG_POOL_BALANCE;
	else if (mode && strcmp(mode, "failover") != 0)
		add_error(e, "pkcs11.pool.mode", "must be \"failover\" or \"balance\"");
	if (new_keys && (c->pkcs11.pool.new_keys = backend_named(c, new_keys)) < 0)
		add_error(e, "pkcs11.pool.new_keys", "must name one of pkcs11.backends");
}

static void load_namespaces(struct cfg *c, json_t *v, struct errors *e)
{
	const char *name;
	json_t *ids;

	if (!json_is_object(v) || !(c->namespaces = calloc(json_object_size(v) + 1, sizeof(*c->namespaces)))) {
		add_error(e, "namespaces", "must be an object of namespace names and lists of hex CKA_IDs");
		return;
	}
	json_object_foreach(v, name, ids) {
		struct cfg_namespace *ns = &c->namespaces[c->n_namespaces++];
		char path[300];
		size_t i;
		json_t *id;

		snprintf(path, sizeof(path), "namespaces.%s", name);
		if (!(ns->name = strdup(name)) || !json_is_array(ids) ||
		    !(ns->ids = calloc(json_array_size(ids) + 1, sizeof(*ns->ids)))) {
			add_error(e, path, "must be a list of hex CKA_IDs");
			continue;
		}
		json_array_foreach(ids, i, id) {
			struct cfg_id *d = &ns->ids[ns->n_ids];
			uint8_t buf[64];

			if (!json_is_string(id) || !parse_hex(json_string_value(id), buf, sizeof(buf), &d->len)) {
				add_error(e, path, "item %zu: must be a CKA_ID in hex (1 to 64 bytes)", i);
				continue;
			}
			if (!(d->id = malloc(d->len))) {
				add_error(e, path, "out of memory");
				return;
			}
			memcpy(d->id, buf, d->len);
			ns->n_ids++;
		}
	}
}

/* "ADDRESS" or "ADDRESS/PREFIX", IPv4 or IPv6, into *ret; else what is wrong. */
static const char *parse_net(const char *text, struct cfg_net *ret)
{
	const char *slash = strchr(text, '/');
	size_t len = slash ? (size_t)(slash - text) : strlen(text);
	struct cfg_net net = { 0 };
	char addr[INET6_ADDRSTRLEN];
	struct in6_addr a6;
	unsigned max;

	if (len == 0 || len >= sizeof(addr))
		return "not an IPv4 or IPv6 address";
	memcpy(addr, text, len);
	addr[len] = '\0';
	if (inet_pton(AF_INET, addr, net.addr) == 1) {
		net.family = AF_INET;
		max = 32;
	} else if (inet_pton(AF_INET6, addr, &a6) == 1) {
		/* A peer's IPv4-mapped address is matched as the IPv4 address it is. */
		if (IN6_IS_ADDR_V4MAPPED(&a6))
			return "an IPv4-mapped IPv6 address: write the IPv4 address";
		net.family = AF_INET6;
		memcpy(net.addr, a6.s6_addr, 16);
		max = 128;
	} else {
		return "not an IPv4 or IPv6 address";
	}
	net.prefix = max;
	if (slash) {
		const char *p = slash + 1;

		if (!*p || (p[0] == '0' && p[1]))
			return "the prefix length must be a number of bits in plain decimal";
		for (net.prefix = 0; *p; p++) {
			if (!isdigit((unsigned char)*p) || net.prefix > max)
				return "the prefix length must be a number of bits in plain decimal";
			net.prefix = net.prefix * 10 + (unsigned)(*p - '0');
		}
		if (net.prefix > max)
			return net.family == AF_INET ? "the prefix length must be 0 to 32" : "the prefix length must be 0 to 128";
	}
	/* A bit past the prefix is a typo for another network (10.0.0.1/8). */
	for (unsigned bit = net.prefix; bit < max; bit++)
		if (net.addr[bit / 8] & (0x80 >> (bit % 8)))
			return "has address bits set past its prefix length";
	*ret = net;
	return NULL;
}

static void load_trusted(struct cfg *c, json_t *v, struct errors *e)
{
	const char *path = "proxy_protocol.trusted", *problem;
	size_t i;
	json_t *item;

	if (!json_is_array(v) || json_array_size(v) == 0 ||
	    !(c->proxy_protocol.trusted = calloc(json_array_size(v), sizeof(*c->proxy_protocol.trusted)))) {
		add_error(e, path, "must be a non-empty list of addresses and CIDR prefixes (\"10.0.0.0/8\", \"::1\")");
		return;
	}
	json_array_foreach(v, i, item) {
		if (!json_is_string(item)) {
			add_error(e, path, "item %zu: must be an address or CIDR prefix", i);
			continue;
		}
		if ((problem = parse_net(json_string_value(item), &c->proxy_protocol.trusted[c->proxy_protocol.n_trusted])))
			add_error(e, path, "item %zu: \"%s\": %s", i, json_string_value(item), problem);
		else
			c->proxy_protocol.n_trusted++;
	}
}

static void set_defaults(struct cfg *c)
{
	c->tls.require_client_certificate = true;
	c->timeouts.handshake = 10;
	c->timeouts.idle = 300;
	c->timeouts.lifetime = 3600;
	c->pkcs11.call_timeout = 30;
	c->limits.max_message_size = TTLV_DEFAULT_MAX_SIZE;
	c->pkcs11.pin_failures = 3;
	c->pkcs11.pin_failure_window = 600;
	c->pkcs11.pool.new_keys = -1;
	c->pkcs11.pool.retry_after = 30;
	c->keys.destroyed_record_days = 30;
}

/* Whether a client's Password is tried as the PIN: the clients that need the
 * failure budget. */
static bool client_pins(const struct cfg *c)
{
	bool any = c->pkcs11.login_with_credentials;

	for (size_t i = 0; i < c->n_clients; i++)
		any = any || c->clients[i].password_is_pin || c->clients[i].username_is_token;
	return any;
}

/* pkcs11.token as the pattern of the tokens a Username may pick. */
static void check_token_pattern(const struct cfg *c, struct errors *e)
{
	bool pattern = c->pkcs11.login_with_credentials;
	const char *problem;

	for (size_t i = 0; i < c->n_clients; i++)
		pattern = pattern || (c->clients[i].username_is_token && !c->clients[i].tokens);
	if (!pattern)
		return;
	if (!c->pkcs11.token) {
		if (c->pkcs11.login_with_credentials)
			add_error(e, "pkcs11.login_with_credentials",
				  "needs pkcs11.token, the pattern of the tokens a Username may pick; without it, a "
				  "Username could pick any token in the module");
		return;
	}
	if ((problem = token_pattern_problem(c->pkcs11.token)))
		add_error(e, "pkcs11.token", "%s (a Username picks among the tokens it matches)", problem);
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
	/* A client without a certificate is known by its Username and Password only,
	 * so something must check them. */
	if (!c->tls.require_client_certificate && !c->n_clients && !c->pkcs11.login_with_credentials)
		add_error(e, "tls.require_client_certificate",
			  "false lets clients in without a certificate, but nothing would check their Username and "
			  "Password: add a \"clients\" entry with username and password_sha256 (or password_is_pin, "
			  "the token checking the Password as its PIN), or set pkcs11.login_with_credentials");
	if (c->tls.client_crl && !c->tls.client_ca)
		add_error(e, "tls.client_crl", "needs tls.client_ca, whose CRL it is");
	if (c->tls.key && strncmp(c->tls.key, "pkcs11:", 7) == 0 && !c->pkcs11.n_backends)
		add_error(e, "tls.key", "a pkcs11: URI needs pkcs11.module (or pkcs11.backends: the first holds it)");
	if (c->pkcs11.n_backends > 1 && !c->pkcs11.lock_file)
		add_error(e, "pkcs11.backends",
			  "a pool of more than one needs pkcs11.lock_file: the backends' health, which every relay "
			  "process shares, is kept beside it, in <lock_file>" CFG_HEALTH_SUFFIX);
	if (c->pkcs11.pin_file && c->pkcs11.pin_credential)
		add_error(e, "pkcs11.pin_credential", "conflicts with pkcs11.pin_file");
	if (client_pins(c) && !c->pkcs11.lock_file)
		add_error(e, "pkcs11.lock_file",
			  "required when a client's Password is the PIN (password_is_pin, username_is_token, "
			  "login_with_credentials): the budget of failed client PINs is kept beside it, in "
			  "<lock_file>" CFG_PIN_STATE_SUFFIX);
	check_token_pattern(c, e);
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
		json_t *pkcs11 = json_object_get(root, "pkcs11");

		load_object(c, top_keys, root, "", &e);
		load_backends(c, json_is_object(pkcs11) ? json_object_get(pkcs11, "backends") : NULL, &e);
		resolve_pool(c, &e);
		if (json_object_get(root, "clients"))
			load_clients(c, json_object_get(root, "clients"), &e);
		if (json_object_get(root, "namespaces"))
			load_namespaces(c, json_object_get(root, "namespaces"), &e);
		if (json_is_object(json_object_get(root, "proxy_protocol"))) {
			json_t *trusted = json_object_get(json_object_get(root, "proxy_protocol"), "trusted");

			if (trusted)
				load_trusted(c, trusted, &e);
			else
				add_error(&e, "proxy_protocol.trusted", "required in proxy_protocol");
		}
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
	free(c->tls.client_crl);
	free(c->tls.priority);
	free(c->tls.ticket_key);
	free(c->log.file);
	free(c->metrics.file);
	free(c->pkcs11.module);
	free(c->pkcs11.token);
	free(c->pkcs11.pin_file);
	free(c->pkcs11.pin_credential);
	free(c->pkcs11.lock_file);
	free(c->pkcs11.pool.mode_name);
	free(c->pkcs11.pool.new_keys_name);
	for (size_t i = 0; i < c->pkcs11.n_backends; i++) {
		struct cfg_backend *b = &c->pkcs11.backends[i];

		free(b->name);
		free(b->module);
		free(b->token);
		free(b->pin_file);
		free(b->pin_credential);
	}
	free(c->pkcs11.backends);
	for (size_t i = 0; i < c->n_clients; i++) {
		struct cfg_client *cl = &c->clients[i];

		free(cl->name);
		free(cl->spki_sha256);
		free(cl->certificate_name);
		free(cl->username);
		free(cl->token);
		for (size_t j = 0; j < cl->n_tokens; j++)
			free(cl->tokens[j]);
		free(cl->tokens);
		free(cl->pin_file);
		free(cl->pin_credential);
		free(cl->namespace);
		free(cl->attributes_compat);
		free(cl->operations);
		for (size_t j = 0; j < cl->n_algorithms; j++)
			free(cl->algorithms[j].lengths);
		free(cl->algorithms);
	}
	free(c->clients);
	for (size_t i = 0; i < c->n_namespaces; i++) {
		for (size_t j = 0; j < c->namespaces[i].n_ids; j++)
			free(c->namespaces[i].ids[j].id);
		free(c->namespaces[i].ids);
		free(c->namespaces[i].name);
	}
	free(c->namespaces);
	free(c->proxy_protocol.trusted);
	free(c);
}

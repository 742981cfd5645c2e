/* SPDX-License-Identifier: BSD-3-Clause */
/* The JSON configuration file: read once at start, validated completely, then
 * immutable. Every error names the key it concerns ("tls.client_ca: ..."). */
#ifndef KR_CFG_H
#define KR_CFG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "errors.h"

/* One client of the "clients" section: how it is recognised and what it may do. */
struct cfg_client {
	char *name;
	/* Identity: exactly one of the certificate's SPKI SHA-256 (hex), a name (CN or
	 * DNS SAN, in any case) of a certificate from tls.client_ca, a KMIP Username, or
	 * username_is_token (the Username names the token, the Password is its PIN). */
	char *spki_sha256;
	char *certificate_name;
	char *username;
	bool username_is_token;
	bool has_password_sha256;
	uint8_t password_sha256[32];
	bool password_is_pin; /* the Password is the token's PIN */
	char *token;          /* NULL: pkcs11.token; a backend's name, or a pkcs11: URI */
	int backend;          /* the backend token names, or -1 */
	char **tokens;        /* username_is_token: the pkcs11: URIs it may pick among; NULL: pkcs11.token */
	size_t n_tokens;
	char *pin_file, *pin_credential; /* both NULL: pkcs11's */
	uint32_t *operations; /* NULL: all */
	size_t n_operations;
	struct cfg_algorithm {
		uint32_t algorithm;
		int32_t *lengths; /* NULL: any */
		size_t n_lengths;
	} *algorithms; /* NULL: any */
	size_t n_algorithms;
	bool read_only;
	char *namespace;     /* the tag of the keys it makes and sees */
	bool untagged_keys;  /* also sees keys without a namespace tag */
	bool extractable, destroy_revokes;
	char *attributes_compat; /* "pykmip": leave out of "all attributes" what PyKMIP cannot parse */
	bool pykmip_attributes;
};

/* An address or CIDR prefix: family AF_INET (the first 4 bytes of addr) or
 * AF_INET6, no bit set past the prefix. */
struct cfg_net {
	int family;
	uint8_t addr[16];
	unsigned prefix; /* bits */
};

/* One token of the pool: a module, a token URI and its PIN source. */
struct cfg_backend {
	char *name;
	char *module;
	char *token;                     /* pkcs11: URI; NULL: the module's first token */
	char *pin_file, *pin_credential; /* exactly one */
	unsigned weight;                 /* its share of connections in balance mode */
};

enum cfg_pool_mode { CFG_POOL_FAILOVER, CFG_POOL_BALANCE };

/* Keys made outside the relay, placed in a namespace by their CKA_ID. */
struct cfg_namespace {
	char *name;
	struct cfg_id {
		uint8_t *id;
		size_t len;
	} *ids;
	size_t n_ids;
};

struct cfg {
	struct {
		char *certificate;  /* PEM file */
		char *key;          /* PEM file, or a pkcs11: URI of a key in the token */
		char *client_ca;    /* PEM bundle that client certificates must chain to */
		char *client_crl;   /* PEM or DER CRLs of client_ca */
		char *priority;     /* GnuTLS priority string */
		char *ticket_key;   /* file with the session ticket key shared by all processes */
		bool require_client_certificate;
	} tls;
	struct {
		unsigned handshake, idle, lifetime; /* seconds */
	} timeouts;
	struct {
		unsigned max_message_size; /* bytes, header included */
	} limits;
	struct {
		char *file;   /* also append every record here */
		bool trace;   /* log each request and response as a redacted TTLV tree */
	} log;
	struct {
		char *file;   /* Prometheus text exposition, merged at each connection's end */
	} metrics;
	struct {
		bool extractable; /* new private and secret keys may leave the token */
		bool destroy_revokes_for_credential_clients; /* Destroy revokes an active key first */
		bool software_random; /* RNG Retrieve may use GnuTLS when the token has no RNG */
		bool verify_signatures; /* check every signature with the public half first */
		unsigned destroyed_record_days; /* a destroyed object's record is kept this long */
	} keys;
	struct {
		bool interop; /* offer the test-only Interop and Log operations */
	} testing;
	struct {
		/* balancers whose connections begin with a PROXY protocol header */
		struct cfg_net *trusted;
		size_t n_trusted;
	} proxy_protocol;
	struct {
		/* A single token: a pool of one backend, "default". */
		char *module;         /* PKCS#11 module path */
		char *token;          /* pkcs11: URI selecting the token */
		char *pin_file;       /* the user PIN, from this file... */
		char *pin_credential; /* ...or from this systemd credential */
		/* The pool: pkcs11.backends, or the one above. */
		struct cfg_backend *backends;
		size_t n_backends;
		struct {
			char *mode_name;      /* as written; mode is what it means */
			enum cfg_pool_mode mode;
			char *new_keys_name;  /* as written; new_keys is its place */
			int new_keys;         /* the backend new objects go to; -1: the connection's */
			unsigned retry_after; /* seconds a failed backend is skipped */
		} pool;
		char *lock_file;      /* flock()ed around C_Initialize..C_Login */
		unsigned call_timeout; /* seconds a module call may take before the process ends */
		bool login_with_credentials; /* Username picks the token, Password is the PIN */
		/* Client-supplied PINs that fail, per token and across processes: after
		 * pin_failures within pin_failure_window seconds, none is tried until
		 * the oldest is that old (state in CFG_PIN_STATE_SUFFIX beside lock_file). */
		unsigned pin_failures, pin_failure_window;
	} pkcs11;
	/* With clients, only these are served; without, every client that
	 * authenticates sees every key. */
	struct cfg_client *clients;
	size_t n_clients;
	struct cfg_namespace *namespaces;
	size_t n_namespaces;
};

/* The longest clients[].name and namespace, in bytes. */
#define CFG_MAX_NAME 128
/* The most backends a pool may have. */
#define CFG_MAX_BACKENDS 16

/* The PIN state file (failed client PINs, rejected configured PINs) is
 * pkcs11.lock_file with this appended. */
#define CFG_PIN_STATE_SUFFIX ".state"
/* The backends' health (pools): pkcs11.lock_file with this appended. */
#define CFG_HEALTH_SUFFIX ".health"

/* What gnutls_session_ticket_key_generate makes. */
#define CFG_TICKET_KEY_SIZE 64

#define CFG_DEFAULT_PRIORITY "SECURE128:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2:-RSA:-VERS-DTLS-ALL:%SERVER_PRECEDENCE"

/* Loads and validates path. On failure *ret_errors holds one line per problem
 * (free it); on success *ret holds the config (free with cfg_free). */
int cfg_load(const char *path, struct cfg **ret, char **ret_errors) KR_WUR;
void cfg_free(struct cfg *c);

#endif

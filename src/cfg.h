/* The JSON configuration file: read once at start, validated completely, then
 * immutable. Every error names the key it concerns ("tls.client_ca: ..."). */
#ifndef KR_CFG_H
#define KR_CFG_H

#include <stdbool.h>
#include <stddef.h>

#include "errors.h"

struct cfg {
	struct {
		char *certificate;  /* PEM file */
		char *key;          /* PEM file, or a pkcs11: URI of a key in the token */
		char *client_ca;    /* PEM bundle that client certificates must chain to */
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
		bool extractable; /* new private and secret keys may leave the token */
		bool destroy_revokes_for_credential_clients; /* Destroy revokes an active key first */
		bool software_random; /* RNG Retrieve may use GnuTLS when the token has no RNG */
		bool verify_signatures; /* check every signature with the public half first */
	} keys;
	struct {
		char *module;         /* PKCS#11 module path */
		char *token;          /* pkcs11: URI selecting the token */
		char *pin_file;       /* the user PIN, from this file... */
		char *pin_credential; /* ...or from this systemd credential */
		char *lock_file;      /* flock()ed around C_Initialize..C_Login */
		bool login_with_credentials; /* Username picks the token, Password is the PIN */
	} pkcs11;
};

/* What gnutls_session_ticket_key_generate makes. */
#define CFG_TICKET_KEY_SIZE 64

#define CFG_DEFAULT_PRIORITY "SECURE128:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2:-RSA:-VERS-DTLS-ALL:%SERVER_PRECEDENCE"

/* Loads and validates path. On failure *ret_errors holds one line per problem
 * (free it); on success *ret holds the config (free with cfg_free). */
int cfg_load(const char *path, struct cfg **ret, char **ret_errors) KR_WUR;
void cfg_free(struct cfg *c);

#endif

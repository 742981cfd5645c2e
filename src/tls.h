/* SPDX-License-Identifier: BSD-3-Clause */
/* The TLS side of one connection: GnuTLS credentials and priorities, mutual TLS,
 * the peer's identity, timeouts, and complete reads and writes. Knows nothing of
 * KMIP or PKCS#11; a key that lives in a token comes in as a gnutls_privkey_t. */
#ifndef KR_TLS_H
#define KR_TLS_H

#include <gnutls/abstract.h>
#include <gnutls/gnutls.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cfg.h"
#include "errors.h"

struct tls_conn;

struct tls_identity {
	bool has_certificate;
	char spki_sha256[65]; /* hex SHA-256 of the certificate's SubjectPublicKeyInfo */
	char *dn;             /* subject DN (RFC 4514), owned */
	bool ca_verified;     /* it chains to tls.client_ca (else it is pinned) */
	char **names;         /* its DNS SANs, or its subject CN if it has none, owned */
	size_t n_names;
};

/* Sets up credentials once per process. privkey is NULL for a PEM key file, or the
 * token-backed key; ownership passes on success. *ret_why names the config key. */
int tls_conn_new(const struct cfg *c, gnutls_privkey_t privkey, int fd, struct tls_conn **ret,
		 const char **ret_why) KR_WUR;
void tls_conn_free(struct tls_conn *t);

/* Handshake bounded by timeout_ms, with the client's certificate checked; on
 * failure *ret_why says why (for a refused certificate: the reason and its
 * subject). */
int tls_handshake(struct tls_conn *t, unsigned timeout_ms, const char **ret_why) KR_WUR;
const struct tls_identity *tls_identity(const struct tls_conn *t);
/* "TLS1.3" and "AES-256-GCM"-style names for the log. */
const char *tls_version_name(const struct tls_conn *t);
const char *tls_cipher_name(const struct tls_conn *t);
bool tls_resumed(const struct tls_conn *t);

/* Reads exactly len bytes by deadline_us (CLOCK_MONOTONIC, in microseconds), however
 * slowly they come. KR_E_TLS_CLOSED if the peer closed before the first byte,
 * KR_E_TLS_TRUNCATED after it, KR_E_TLS_TIMEOUT or KR_E_TLS_IO. */
int tls_read_full(struct tls_conn *t, void *buf, size_t len, uint64_t deadline_us) KR_WUR;
/* Writes len bytes; a peer that does not read them by deadline_us gets
 * KR_E_TLS_TIMEOUT. */
int tls_write_full(struct tls_conn *t, const void *buf, size_t len, uint64_t deadline_us) KR_WUR;
/* Best-effort close_notify. */
void tls_bye(struct tls_conn *t);

#endif

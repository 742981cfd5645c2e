/* SPDX-License-Identifier: BSD-3-Clause */
#include "config.h"

#include "tls.h"

#include <errno.h>
#include <gnutls/crypto.h>
#include <gnutls/x509.h>
#include <gnutls/x509-ext.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>

#include "clock.h"
#include "log.h"

/* At most this many DNS names of a certificate count. */
#define MAX_NAMES 32


struct tls_conn {
	gnutls_certificate_credentials_t cred;
	gnutls_priority_t prio;
	gnutls_session_t s;
	gnutls_datum_t ticket_key;
	struct tls_identity id;
	const struct cfg *cfg;
	int fd;
	bool verify_clients, has_ca;
	/* The verdict on the client's certificate, made once per handshake. */
	bool checked, ca_verified;
	char refusal[640]; /* why it was refused, for the log */
};

void tls_conn_free(struct tls_conn *t)
{
	if (!t)
		return;
	if (t->s)
		gnutls_deinit(t->s);
	if (t->prio)
		gnutls_priority_deinit(t->prio);
	if (t->cred)
		gnutls_certificate_free_credentials(t->cred);
	if (t->ticket_key.data) {
		gnutls_memset(t->ticket_key.data, 0, t->ticket_key.size);
		gnutls_free(t->ticket_key.data);
	}
	free(t->id.dn);
	for (size_t i = 0; i < t->id.n_names; i++)
		free(t->id.names[i]);
	free(t->id.names);
	free(t);
}

/* The server's certificate chain with a token-backed private key. */
static int set_token_key(struct tls_conn *t, const char *cert_file, gnutls_privkey_t privkey)
{
	gnutls_pcert_st pcerts[16];
	unsigned n = sizeof(pcerts) / sizeof(pcerts[0]);
	int r;

	r = gnutls_pcert_list_import_x509_file(pcerts, &n, cert_file, GNUTLS_X509_FMT_PEM, NULL, NULL, 0);
	if (r < 0)
		return r;
	r = gnutls_certificate_set_key(t->cred, NULL, 0, pcerts, (int)n, privkey);
	if (r < 0)
		for (unsigned i = 0; i < n; i++)
			gnutls_pcert_deinit(&pcerts[i]);
	return r;
}

static int load_ticket_key(struct tls_conn *t, const char *file)
{
	int r = gnutls_load_file(file, &t->ticket_key);

	if (r < 0)
		return r;
	return t->ticket_key.size == CFG_TICKET_KEY_SIZE ? 0 : GNUTLS_E_INVALID_REQUEST;
}

/* tls.client_crl, PEM or DER, into the credentials' trust list. Every CRL in it
 * must be signed by a CA of tls.client_ca and be current: a stale list is an
 * error, not a silent pass for what it no longer covers. */
static int load_crl(struct tls_conn *t, const char *file)
{
	const unsigned flags = GNUTLS_TL_USE_IN_TLS | GNUTLS_TL_VERIFY_CRL | GNUTLS_TL_FAIL_ON_INVALID_CRL;
	gnutls_x509_trust_list_t list;
	int r;

	gnutls_certificate_get_trust_list(t->cred, &list);
	r = gnutls_x509_trust_list_add_trust_file(list, NULL, file, GNUTLS_X509_FMT_PEM, flags, 0);
	if (r <= 0)
		r = gnutls_x509_trust_list_add_trust_file(list, NULL, file, GNUTLS_X509_FMT_DER, flags, 0);
	return r > 0 ? 0 : r < 0 ? r : GNUTLS_E_NO_CERTIFICATE_FOUND;
}

/* Why load_crl refused the file, for the log. */
static const char *crl_problem(const char *file)
{
	const char *why = "tls.client_crl: not signed by tls.client_ca (whose certificate must allow CRL signing)";
	gnutls_datum_t data = { 0 };
	gnutls_x509_crl_t *crls = NULL;
	unsigned n = 0;
	time_t now = time(NULL);
	int r;

	if (gnutls_load_file(file, &data) < 0)
		return "tls.client_crl: cannot be read";
	r = gnutls_x509_crl_list_import2(&crls, &n, &data, GNUTLS_X509_FMT_PEM, 0);
	if (r < 0 || n == 0) {
		gnutls_free(crls);
		crls = NULL;
		n = 0;
		r = gnutls_x509_crl_list_import2(&crls, &n, &data, GNUTLS_X509_FMT_DER, 0);
	}
	if (r < 0 || n == 0)
		why = "tls.client_crl: not a PEM or DER CRL";
	for (unsigned i = 0; i < n; i++) {
		time_t next = gnutls_x509_crl_get_next_update(crls[i]);

		if (next != (time_t)-1 && next < now)
			why = "tls.client_crl: out of date (past its next update)";
		else if (gnutls_x509_crl_get_this_update(crls[i]) > now)
			why = "tls.client_crl: not yet valid (issued in the future)";
		gnutls_x509_crl_deinit(crls[i]);
	}
	gnutls_free(crls);
	gnutls_free(data.data);
	return why;
}

static int hex_sha256(const gnutls_datum_t *d, char out[65])
{
	uint8_t digest[32];
	int r = gnutls_hash_fast(GNUTLS_DIG_SHA256, d->data, d->size, digest);

	if (r < 0)
		return r;
	for (size_t i = 0; i < sizeof(digest); i++)
		snprintf(out + 2 * i, 3, "%02x", digest[i]);
	return 0;
}

/* The hex SHA-256 of a DER certificate's SubjectPublicKeyInfo. */
static int spki_sha256(gnutls_x509_crt_t crt, char out[65])
{
	gnutls_pubkey_t pub = NULL;
	gnutls_datum_t spki = { 0 };
	int r;

	if ((r = gnutls_pubkey_init(&pub)) >= 0 && (r = gnutls_pubkey_import_x509(pub, crt, 0)) >= 0 &&
	    (r = gnutls_pubkey_export2(pub, GNUTLS_X509_FMT_DER, &spki)) >= 0)
		r = hex_sha256(&spki, out);
	gnutls_free(spki.data);
	if (pub)
		gnutls_pubkey_deinit(pub);
	return r;
}

/* Whether a clients entry pins this certificate's key: such a certificate is let
 * in whoever issued it. */
static bool pinned(const struct tls_conn *t, gnutls_x509_crt_t crt)
{
	char hex[65];
	bool found = false;

	if (spki_sha256(crt, hex) >= 0)
		for (size_t i = 0; i < t->cfg->n_clients && !found; i++)
			found = t->cfg->clients[i].spki_sha256 && strcmp(t->cfg->clients[i].spki_sha256, hex) == 0;
	return found;
}

/* Whether the certificate may authenticate a TLS client: it has no Extended Key
 * Usage (then it serves any purpose, RFC 5280), or one that lists clientAuth or
 * anyExtendedKeyUsage. What GnuTLS checks of a chain, for a pinned certificate. */
static bool for_clients(gnutls_x509_crt_t crt)
{
	for (unsigned i = 0;; i++) {
		char oid[128];
		size_t size = sizeof(oid);
		int r = gnutls_x509_crt_get_key_purpose_oid(crt, i, oid, &size, NULL);

		if (r == GNUTLS_E_REQUESTED_DATA_NOT_AVAILABLE)
			return i == 0;
		if (r == GNUTLS_E_SHORT_MEMORY_BUFFER)
			continue; /* no OID of interest is that long */
		if (r < 0)
			return false;
		if (strcmp(oid, GNUTLS_KP_TLS_WWW_CLIENT) == 0 || strcmp(oid, GNUTLS_KP_ANY) == 0)
			return true;
	}
}

/* The log's word for what GnuTLS found wrong with a chain: its trust first, then
 * the certificate's own faults. */
static const char *refusal_reason(unsigned status)
{
	static const struct {
		unsigned bits;
		const char *why;
	} reasons[] = {
		{ GNUTLS_CERT_SIGNER_NOT_FOUND | GNUTLS_CERT_SIGNER_NOT_CA | GNUTLS_CERT_SIGNATURE_FAILURE |
			  GNUTLS_CERT_INSECURE_ALGORITHM | GNUTLS_CERT_SIGNER_CONSTRAINTS_FAILURE,
		  "untrusted" },
		{ GNUTLS_CERT_REVOKED, "revoked" },
		{ GNUTLS_CERT_EXPIRED, "expired" },
		{ GNUTLS_CERT_NOT_ACTIVATED, "not yet valid" },
		{ GNUTLS_CERT_PURPOSE_MISMATCH, "wrong purpose" },
	};

	for (size_t i = 0; i < sizeof(reasons) / sizeof(reasons[0]); i++)
		if (status & reasons[i].bits)
			return reasons[i].why;
	return "untrusted";
}

/* Keeps why the certificate was refused and whose it was, for the log. */
static void set_refusal(struct tls_conn *t, gnutls_x509_crt_t crt, unsigned status)
{
	gnutls_datum_t dn = { 0 };
	char subject[512];

	if (crt && gnutls_x509_crt_get_dn3(crt, &dn, 0) >= 0) {
		log_escape(dn.data, dn.size, subject, sizeof(subject)); /* the client chose it */
		snprintf(t->refusal, sizeof(t->refusal), "client certificate refused: %s (subject \"%s\")",
			 refusal_reason(status), subject);
	} else {
		snprintf(t->refusal, sizeof(t->refusal), "client certificate refused: %s", refusal_reason(status));
	}
	gnutls_free(dn.data);
}

/* A client's certificate must chain to tls.client_ca, or be pinned by a clients
 * entry, and be meant for TLS clients; a revoked one is refused even if pinned.
 * One that sends none gets in only when none is required. Runs in the handshake,
 * or after it when a session was resumed: every connection is checked against
 * tls.client_crl as it is now. */
static int check_client(struct tls_conn *t)
{
	gnutls_typed_vdata_st purpose = { GNUTLS_DT_KEY_PURPOSE_OID, (unsigned char *)GNUTLS_KP_TLS_WWW_CLIENT, 0 };
	unsigned n = 0, status = GNUTLS_CERT_INVALID | GNUTLS_CERT_SIGNER_NOT_FOUND;
	const gnutls_datum_t *certs = gnutls_certificate_get_peers(t->s, &n);
	gnutls_x509_crt_t crt = NULL;
	int r = GNUTLS_E_CERTIFICATE_VERIFICATION_ERROR;

	t->checked = true;
	if (!certs || n == 0)
		return t->cfg->tls.require_client_certificate ? GNUTLS_E_NO_CERTIFICATE_FOUND : 0;
	if (t->has_ca && gnutls_certificate_verify_peers(t->s, &purpose, 1, &status) < 0)
		status = GNUTLS_CERT_INVALID;
	if (status == 0) {
		t->ca_verified = true;
		return 0;
	}
	if (gnutls_x509_crt_init(&crt) < 0)
		crt = NULL;
	else if (gnutls_x509_crt_import(crt, &certs[0], GNUTLS_X509_FMT_DER) < 0) {
		gnutls_x509_crt_deinit(crt);
		crt = NULL;
	} else if (!(status & GNUTLS_CERT_REVOKED) && pinned(t, crt)) {
		if (for_clients(crt))
			r = 0;
		else
			status = GNUTLS_CERT_INVALID | GNUTLS_CERT_PURPOSE_MISMATCH;
	}
	if (r < 0)
		set_refusal(t, crt, status);
	if (crt)
		gnutls_x509_crt_deinit(crt);
	return r;
}

static int verify_client(gnutls_session_t s)
{
	return check_client(gnutls_session_get_ptr(s));
}

int tls_conn_new(const struct cfg *c, gnutls_privkey_t privkey, int fd, struct tls_conn **ret,
		 const char **ret_why)
{
	struct timeval tv = { .tv_sec = c->timeouts.idle };
	struct tls_conn *t = calloc(1, sizeof(*t));
	const char *why = NULL;
	int r;

	if (!t)
		return KR_E_NOMEM;
	t->cfg = c;
	t->fd = fd;
	if ((r = gnutls_certificate_allocate_credentials(&t->cred)) < 0) {
		why = "TLS credentials";
		goto out;
	}
	if (privkey)
		r = set_token_key(t, c->tls.certificate, privkey);
	else
		r = gnutls_certificate_set_x509_key_file2(t->cred, c->tls.certificate, c->tls.key,
							  GNUTLS_X509_FMT_PEM, NULL, 0);
	if (r < 0) {
		why = "tls.certificate/tls.key: cannot load the certificate and key";
		goto out;
	}
	privkey = NULL; /* the credentials own it now */
	if (c->tls.client_ca) {
		r = gnutls_certificate_set_x509_trust_file(t->cred, c->tls.client_ca, GNUTLS_X509_FMT_PEM);
		if (r <= 0) {
			why = "tls.client_ca: no usable CA certificate";
			r = r < 0 ? r : GNUTLS_E_NO_CERTIFICATE_FOUND;
			goto out;
		}
		t->has_ca = true;
	}
	if (c->tls.client_crl && (r = load_crl(t, c->tls.client_crl)) < 0) {
		why = crl_problem(c->tls.client_crl);
		goto out;
	}
	for (size_t i = 0; i < c->n_clients; i++)
		t->verify_clients |= c->clients[i].spki_sha256 != NULL;
	t->verify_clients |= t->has_ca;
	if ((r = gnutls_priority_init(&t->prio, c->tls.priority, NULL)) < 0) {
		why = "tls.priority: not a valid GnuTLS priority string";
		goto out;
	}
	if (c->tls.ticket_key && (r = load_ticket_key(t, c->tls.ticket_key)) < 0) {
		why = "tls.ticket_key: must hold exactly 64 bytes";
		goto out;
	}
	if ((r = gnutls_init(&t->s, GNUTLS_SERVER | GNUTLS_NO_SIGNAL)) < 0 ||
	    (r = gnutls_priority_set(t->s, t->prio)) < 0 ||
	    (r = gnutls_credentials_set(t->s, GNUTLS_CRD_CERTIFICATE, t->cred)) < 0) {
		why = "TLS session";
		goto out;
	}
	if (t->verify_clients) {
		gnutls_certificate_server_set_request(t->s, c->tls.require_client_certificate ? GNUTLS_CERT_REQUIRE
											: GNUTLS_CERT_REQUEST);
		gnutls_session_set_ptr(t->s, t);
		gnutls_session_set_verify_function(t->s, verify_client);
	}
	if (t->ticket_key.data && (r = gnutls_session_ticket_enable_server(t->s, &t->ticket_key)) < 0) {
		why = "tls.ticket_key: rejected by GnuTLS";
		goto out;
	}
	gnutls_transport_set_int(t->s, fd);
	/* A client that stops reading must not hold the process forever. */
	if (setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) < 0 && errno != ENOTSOCK) {
		static char text[128];

		snprintf(text, sizeof(text), "cannot set the send timeout: %s", strerror(errno));
		why = text;
		r = GNUTLS_E_INTERNAL_ERROR;
		goto out;
	}
out:
	if (r < 0) {
		static char text[512];

		if (privkey)
			gnutls_privkey_deinit(privkey);
		tls_conn_free(t);
		/* The CRL's problem is said in full by crl_problem. */
		if (r != GNUTLS_E_INTERNAL_ERROR && strncmp(why, "tls.client_crl: ", 16) != 0) {
			snprintf(text, sizeof(text), "%s: %s", why, gnutls_strerror(r));
			why = text;
		}
		*ret_why = why;
		return KR_E_CONFIG;
	}
	*ret = t;
	return 0;
}

/* A name that may go into names: not one with an embedded NUL, which would
 * read as a name it is not ("victim.example\0.attacker.example"). */
static int add_name(struct tls_identity *id, const void *name, size_t len)
{
	if (len == 0 || memchr(name, '\0', len))
		return 0;
	if (!(id->names[id->n_names] = strndup(name, len)))
		return GNUTLS_E_MEMORY_ERROR;
	id->n_names++;
	return 0;
}

/* The names certificate_name may match: the certificate's DNS subjectAltNames,
 * or its subject CN if it has none (RFC 6125, section 6.4.4). */
static int read_names(struct tls_identity *id, gnutls_x509_crt_t crt)
{
	gnutls_subject_alt_names_t sans = NULL;
	gnutls_datum_t der = { 0 };
	bool has_dns = false;
	unsigned critical;
	char cn[256];
	size_t size = sizeof(cn);
	int r;

	if (!(id->names = calloc(MAX_NAMES, sizeof(*id->names))))
		return GNUTLS_E_MEMORY_ERROR;
	r = gnutls_x509_crt_get_extension_by_oid2(crt, GNUTLS_X509EXT_OID_SAN, 0, &der, &critical);
	if (r >= 0 && (r = gnutls_subject_alt_names_init(&sans)) >= 0 &&
	    (r = gnutls_x509_ext_import_subject_alt_names(&der, sans, 0)) >= 0) {
		gnutls_datum_t san;
		unsigned type;

		for (unsigned i = 0; r >= 0 && gnutls_subject_alt_names_get(sans, i, &type, &san, NULL) >= 0; i++)
			if (type == GNUTLS_SAN_DNSNAME) {
				has_dns = true;
				if (id->n_names < MAX_NAMES)
					r = add_name(id, san.data, san.size);
			}
	} else if (r == GNUTLS_E_REQUESTED_DATA_NOT_AVAILABLE) {
		r = 0;
	}
	if (r >= 0 && !has_dns &&
	    gnutls_x509_crt_get_dn_by_oid(crt, GNUTLS_OID_X520_COMMON_NAME, 0, 0, cn, &size) >= 0)
		r = add_name(id, cn, size);
	if (sans)
		gnutls_subject_alt_names_deinit(sans);
	gnutls_free(der.data);
	return r;
}

static int read_identity(struct tls_conn *t)
{
	unsigned n = 0;
	const gnutls_datum_t *certs = gnutls_certificate_get_peers(t->s, &n);
	gnutls_x509_crt_t crt = NULL;
	gnutls_datum_t dn = { 0 };
	int r;

	if (!certs || n == 0)
		return 0;
	if ((r = gnutls_x509_crt_init(&crt)) < 0 ||
	    (r = gnutls_x509_crt_import(crt, &certs[0], GNUTLS_X509_FMT_DER)) < 0 ||
	    (r = gnutls_x509_crt_get_dn3(crt, &dn, 0)) < 0 || (r = spki_sha256(crt, t->id.spki_sha256)) < 0 ||
	    (r = read_names(&t->id, crt)) < 0)
		goto out;
	t->id.dn = strndup((const char *)dn.data, dn.size);
	if (!t->id.dn) {
		r = GNUTLS_E_MEMORY_ERROR;
		goto out;
	}
	t->id.has_certificate = true;
	t->id.ca_verified = t->ca_verified;
out:
	gnutls_free(dn.data);
	if (crt)
		gnutls_x509_crt_deinit(crt);
	return r;
}

int tls_handshake(struct tls_conn *t, unsigned timeout_ms, const char **ret_why)
{
	int r;

	gnutls_handshake_set_timeout(t->s, timeout_ms);
	do
		r = gnutls_handshake(t->s);
	while (r < 0 && !gnutls_error_is_fatal(r));
	/* A resumed session skips the certificate exchange, not the check. */
	if (r >= 0 && t->verify_clients && !t->checked)
		r = check_client(t);
	if (r >= 0)
		r = read_identity(t);
	/* The client's alert, if it sent one (GnuTLS may report what it then lacked,
	 * such as the client's certificate); the session is new, so any alert
	 * other than close_notify (0) came in this handshake. */
	if (r < 0 && !t->refusal[0] &&
	    (r == GNUTLS_E_FATAL_ALERT_RECEIVED || r == GNUTLS_E_WARNING_ALERT_RECEIVED ||
	     gnutls_alert_get(t->s) != GNUTLS_A_CLOSE_NOTIFY)) {
		const char *alert = gnutls_alert_get_name(gnutls_alert_get(t->s));

		snprintf(t->refusal, sizeof(t->refusal), "the client sent the alert \"%s\" (%s)", alert ? alert : "unknown",
			 gnutls_strerror(r));
	}
	if (r < 0) {
		*ret_why = t->refusal[0] ? t->refusal : gnutls_strerror(r);
		return KR_E_TLS_HANDSHAKE;
	}
	return 0;
}

const struct tls_identity *tls_identity(const struct tls_conn *t)
{
	return &t->id;
}

const char *tls_version_name(const struct tls_conn *t)
{
	const char *v = gnutls_protocol_get_name(gnutls_protocol_get_version(t->s));

	return v ? v : "unknown";
}

const char *tls_cipher_name(const struct tls_conn *t)
{
	const char *c = gnutls_cipher_get_name(gnutls_cipher_get(t->s));

	return c ? c : "unknown";
}

bool tls_resumed(const struct tls_conn *t)
{
	return gnutls_session_is_resumed(t->s) != 0;
}

/* Milliseconds until the deadline, rounded up; 0 once it has passed. */
static unsigned ms_until(uint64_t deadline_us)
{
	uint64_t now = now_us();

	return now >= deadline_us ? 0 : (unsigned)((deadline_us - now + 999) / 1000);
}

int tls_read_full(struct tls_conn *t, void *buf, size_t len, uint64_t deadline_us)
{
	size_t got = 0;

	while (got < len) {
		unsigned left = ms_until(deadline_us);
		ssize_t r;

		if (left == 0) /* (a record timeout of 0 would wait forever) */
			return KR_E_TLS_TIMEOUT;
		gnutls_record_set_timeout(t->s, left);
		r = gnutls_record_recv(t->s, (uint8_t *)buf + got, len - got);
		if (r > 0) {
			got += (size_t)r;
			continue;
		}
		if (r == GNUTLS_E_AGAIN || r == GNUTLS_E_INTERRUPTED)
			continue;
		if (r == GNUTLS_E_TIMEDOUT)
			return KR_E_TLS_TIMEOUT;
		if (r == 0 || r == GNUTLS_E_PREMATURE_TERMINATION)
			return got == 0 ? KR_E_TLS_CLOSED : KR_E_TLS_TRUNCATED;
		return KR_E_TLS_IO;
	}
	return 0;
}

int tls_write_full(struct tls_conn *t, const void *buf, size_t len, uint64_t deadline_us)
{
	size_t done = 0;

	while (done < len) {
		unsigned left = ms_until(deadline_us);
		struct timeval tv = { .tv_sec = left / 1000, .tv_usec = (left % 1000) * 1000 };
		ssize_t r;

		if (left == 0)
			return KR_E_TLS_TIMEOUT;
		/* Each record's send waits no longer than the time left. */
		if (setsockopt(t->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) < 0 && errno != ENOTSOCK)
			return KR_E_TLS_IO;
		r = gnutls_record_send(t->s, (const uint8_t *)buf + done, len - done);
		if (r > 0)
			done += (size_t)r;
		else if (r == GNUTLS_E_AGAIN) /* the socket's send timeout expired */
			return KR_E_TLS_TIMEOUT;
		else if (r != GNUTLS_E_INTERRUPTED)
			return KR_E_TLS_IO;
	}
	return 0;
}

void tls_bye(struct tls_conn *t)
{
	gnutls_record_set_timeout(t->s, 1000);
	(void)gnutls_bye(t->s, GNUTLS_SHUT_WR);
}

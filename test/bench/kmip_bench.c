/* SPDX-License-Identifier: BSD-3-Clause */
#include "config.h"

/* kmip_bench: Sign throughput of a running relay, measured against the token's own
 * limit - a C_Sign loop in this process on the same token and key type, through the
 * same hashing path. It makes its own RSA-2048 and P-256 key pairs over KMIP, signs
 * with them one request at a time, in batches, on a new connection each time and on
 * parallel connections, then revokes and destroys them. Given a second relay on
 * the same token with keys.verify_signatures on (--verify-port), it also measures
 * one connection there right after the same run here, for the cost of the
 * self-check; given HAProxy in front of more relays on the same token
 * (--haproxy-port), the same through it, for the balancer's cost; given a relay
 * serving a pool of backends on the same token (--pool-port), the same against
 * it, for the pool's cost; given a relay on the same token with metrics.file set
 * (--metrics-port, --metrics-file), new connections alternately there and here,
 * and the merge into a copy of that relay's file, for the metrics file's cost per
 * connection. Given the minimal handler of test/bench/minimal_handler, one-shot
 * (--handler-port) and persistent (--loop-port), and a relay and handler on a
 * token of 300 keys (--big-port, --big-handler-port, --big-key), it measures the
 * relay against them and against the in-process loop in alternated rounds: the
 * limits of issue 13. It measures; it does not judge: the exit status is 0
 * unless the set-up fails. It also makes the 300 keys (--make-keys) and counts a
 * token's objects (--count-objects) for scripts/bench. */

#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <gnutls/pkcs11.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "cfg.h"
#include "kmip.h"
#include "metrics.h"
#include "p11.h"
#include "store.h"
#include "ttlv.h"

#define DATA_LEN 512
#define BATCH 16
#define MAX_THREADS 4
#define IO_TIMEOUT_S 30          /* any single exchange, connect or handshake */
#define WARMUP_REQUESTS 20       /* per connection, before the clock starts */
#define WARMUP_MAX_US 500000     /* ...or this long, whichever ends first */
#define MAX_ROUNDS 50            /* of the alternated limits */
#define LOOP_REQUEST 48          /* minimal_handler --loop: CKA_ID, 16 bytes */
_Static_assert(LOOP_REQUEST == STORE_ID_LEN + 16, "the loop's request holds a CKA_ID of the relay's");

/* KMIP values the benchmark sends. */
enum { ALG_RSA = 0x04, ALG_ECDSA = 0x06, CURVE_P256 = 0x07, PAD_PKCS1_V15 = 0x08, HASH_SHA256 = 0x06 };
enum { USE_SIGN = 0x1, USE_VERIFY = 0x2, REVOKE_CESSATION_OF_OPERATION = 6, VALID = 1 };

static const struct kmip_version version = { 1, 2 };

struct options {
	const char *host, *port, *verify_port, *haproxy_port, *pool_port, *ca, *cert, *key, *module, *token, *pin_file,
		*lock_file;
	const char *metrics_port, *metrics_file;
	const char *handler_port, *loop_port, *big_port, *big_handler_port, *big_key;
	double seconds, round_seconds;
	unsigned rounds, make_keys;
	bool count_objects;
};

struct bench {
	struct options opt;
	/* the relay, the one with verify_signatures, HAProxy, the relay of a pool */
	struct addrinfo *addr, *verify_addr, *haproxy_addr, *pool_addr;
	struct addrinfo *metrics_addr; /* the relay with metrics.file */
	/* minimal_handler, one-shot and --loop; the relay and the handler on the
	 * 300-key token */
	struct addrinfo *handler_addr, *loop_addr, *big_addr, *big_handler_addr;
	gnutls_certificate_credentials_t cred;
	bool host_is_ip;
};

/* One TLS connection to the relay, with a response buffer that every exchange
 * reuses. */
struct conn {
	int fd;
	gnutls_session_t s;
	bool up; /* the handshake is done */
	uint8_t *resp;
	size_t resp_len, resp_cap;
};

enum mode {
	M_INPROCESS, M_ONE, M_BATCH, M_NEW_CONN, M_PAR2, M_PAR4, M_ONE_CHECKED, M_BATCH_CHECKED,
	M_ONE_HAPROXY, M_NEW_CONN_HAPROXY, M_PAR4_HAPROXY, M_ONE_POOL, M_NEW_CONN_POOL, M_PAR4_POOL, N_MODES
};

static const char *const mode_names[N_MODES] = {
	[M_INPROCESS] = "in-process C_Sign loop (the limit)",
	[M_ONE] = "1 connection, 1 request at a time",
	[M_BATCH] = "1 connection, batches of 16",
	[M_NEW_CONN] = "new connection per Sign",
	[M_PAR2] = "2 connections in parallel",
	[M_PAR4] = "4 connections in parallel",
	[M_ONE_CHECKED] = "verify_signatures, 1 at a time",
	[M_BATCH_CHECKED] = "verify_signatures, batches of 16",
	[M_ONE_HAPROXY] = "HAProxy, 1 request at a time",
	[M_NEW_CONN_HAPROXY] = "HAProxy, new connection per Sign",
	[M_PAR4_HAPROXY] = "HAProxy, 4 connections in parallel",
	[M_ONE_POOL] = "pool of 2, 1 request at a time",
	[M_NEW_CONN_POOL] = "pool of 2, new connection per Sign",
	[M_PAR4_POOL] = "pool of 2, 4 connections in parallel",
};

struct result {
	unsigned long ops;
	double seconds;
	char why[200]; /* why the measurement failed, or empty */
};

static void set_why(struct result *r, const char *why)
{
	snprintf(r->why, sizeof(r->why), "%s", why);
}

struct key {
	const char *title;
	CK_KEY_TYPE type;
	double target_one, target_batch; /* of the in-process rate, from the issue */
	char priv[STORE_MAX_UID + 1], pub[STORE_MAX_UID + 1];
	uint8_t *sign, *sign_batch; /* encoded Sign requests, sent again and again */
	size_t sign_len, sign_batch_len;
	uint8_t loop_req[LOOP_REQUEST]; /* minimal_handler --loop's */
	CK_OBJECT_HANDLE handle;        /* of the private key, in this process */
	struct result res[N_MODES];
	/* New connections without and with metrics.file: one client, then 4 at once;
	 * and the merge alone, its µs (0: not measured) over how many series. */
	struct result metrics_off[2], metrics_on[2];
	double merge_us;
	size_t merge_samples;
	char merge_why[200];
};

static uint8_t data[DATA_LEN];

static uint64_t now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* TLS connections. */

static void conn_close(struct conn *c)
{
	if (c->up)
		(void)gnutls_bye(c->s, GNUTLS_SHUT_WR);
	if (c->s)
		gnutls_deinit(c->s);
	if (c->fd >= 0)
		close(c->fd);
	free(c->resp);
	*c = (struct conn){ .fd = -1 };
}

static int tcp_connect(const struct bench *b, int *ret_fd, const char **ret_why)
{
	struct timeval tv = { .tv_sec = IO_TIMEOUT_S };
	int one = 1, fd = -1;

	for (const struct addrinfo *a = b->addr; a; a = a->ai_next) {
		fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
		if (fd < 0)
			continue;
		/* Requests are small and the client waits for each answer: no Nagle. The
		 * timeouts bound every read and write. */
		if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) == 0 &&
		    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) == 0 &&
		    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) == 0 &&
		    connect(fd, a->ai_addr, a->ai_addrlen) == 0) {
			*ret_fd = fd;
			return 0;
		}
		close(fd);
		fd = -1;
	}
	*ret_why = "cannot connect to the relay";
	return KR_E_IO;
}

/* A TLS connection: a full handshake, or with session data a resumed one. */
static int conn_open(const struct bench *b, const gnutls_datum_t *session, struct conn *ret, const char **ret_why)
{
	struct conn c = { .fd = -1 };
	int r;

	if ((r = tcp_connect(b, &c.fd, ret_why)) < 0)
		goto out;
	r = KR_E_TLS_HANDSHAKE;
	if (gnutls_init(&c.s, GNUTLS_CLIENT | GNUTLS_NO_SIGNAL) < 0 || gnutls_set_default_priority(c.s) < 0 ||
	    gnutls_credentials_set(c.s, GNUTLS_CRD_CERTIFICATE, b->cred) < 0 ||
	    (!b->host_is_ip &&
	     gnutls_server_name_set(c.s, GNUTLS_NAME_DNS, b->opt.host, strlen(b->opt.host)) < 0) ||
	    (session && gnutls_session_set_data(c.s, session->data, session->size) < 0)) {
		*ret_why = "cannot set up a TLS session";
		goto out;
	}
	gnutls_session_set_verify_cert(c.s, b->opt.host, 0);
	gnutls_transport_set_int(c.s, c.fd);
	gnutls_handshake_set_timeout(c.s, IO_TIMEOUT_S * 1000u);
	do
		r = gnutls_handshake(c.s);
	while (r < 0 && !gnutls_error_is_fatal(r));
	if (r < 0) {
		*ret_why = gnutls_strerror(r);
		r = KR_E_TLS_HANDSHAKE;
		goto out;
	}
	c.up = true;
	*ret = c;
	c = (struct conn){ .fd = -1 };
	r = 0;
out:
	conn_close(&c);
	return r;
}

/* GNUTLS_E_AGAIN comes after a post-handshake message (a TLS 1.3 session ticket),
 * and when SO_RCVTIMEO or SO_SNDTIMEO expires: only then is it past the deadline. */
static bool retry(ssize_t r, uint64_t deadline)
{
	return r == GNUTLS_E_INTERRUPTED || (r == GNUTLS_E_AGAIN && now_us() < deadline);
}

static int tls_error(ssize_t r, const char **ret_why)
{
	if (r == GNUTLS_E_AGAIN) {
		*ret_why = "the relay did not answer in time";
		return KR_E_TLS_TIMEOUT;
	}
	if (r == 0 || r == GNUTLS_E_PREMATURE_TERMINATION) {
		*ret_why = "the relay closed the connection";
		return KR_E_TLS_CLOSED;
	}
	*ret_why = gnutls_strerror((int)r);
	return KR_E_TLS_IO;
}

static int read_full(struct conn *c, uint8_t *buf, size_t len, uint64_t deadline, const char **ret_why)
{
	size_t got = 0;

	while (got < len) {
		ssize_t r = gnutls_record_recv(c->s, buf + got, len - got);

		if (r > 0)
			got += (size_t)r;
		else if (!retry(r, deadline))
			return tls_error(r, ret_why);
	}
	return 0;
}

/* Sends one request and reads its response into c->resp: the 8-byte header, then
 * the body whose length it gives. */
static int exchange(struct conn *c, const uint8_t *req, size_t len, const char **ret_why)
{
	uint8_t hdr[TTLV_HEADER_LEN];
	size_t done = 0, total;
	uint64_t deadline = now_us() + IO_TIMEOUT_S * 1000000u;
	int r;

	while (done < len) {
		ssize_t n = gnutls_record_send(c->s, req + done, len - done);

		if (n > 0)
			done += (size_t)n;
		else if (!retry(n, deadline))
			return tls_error(n, ret_why);
	}
	if ((r = read_full(c, hdr, sizeof(hdr), deadline, ret_why)) < 0)
		return r;
	if ((r = ttlv_frame_length(hdr, &ttlv_default_limits, &total)) < 0) {
		*ret_why = "the response's framing is invalid";
		return r;
	}
	if (total > c->resp_cap) {
		uint8_t *p = realloc(c->resp, total);

		if (!p) {
			*ret_why = kr_strerror(KR_E_NOMEM);
			return KR_E_NOMEM;
		}
		c->resp = p;
		c->resp_cap = total;
	}
	memcpy(c->resp, hdr, sizeof(hdr));
	c->resp_len = total;
	return read_full(c, c->resp + TTLV_HEADER_LEN, total - TTLV_HEADER_LEN, deadline, ret_why);
}

/* The last response, decoded, with n_items batch items that all succeeded. */
static int response_ok(const struct conn *c, size_t n_items, struct kmip_message **ret, const char **ret_why)
{
	static __thread char why[256]; /* a failure's reason and message */
	struct kmip_message *m = NULL;
	int r = kmip_decode_message(c->resp, c->resp_len, &ttlv_default_limits, &m);

	if (r < 0) {
		*ret_why = kr_strerror(r);
		return r;
	}
	r = KR_E_KMIP_UNEXPECTED;
	if (!m->response) {
		*ret_why = "the relay sent a request";
		goto out;
	}
	/* A failed item ends the batch (Batch Error Continuation Option Stop). */
	for (size_t i = 0; i < m->n_items; i++) {
		const struct kmip_batch_item *it = &m->items[i];
		const char *reason = kmip_enum_name(KMIP_TAG_RESULT_REASON, it->result_reason);

		if (it->error) {
			*ret_why = kr_strerror(it->error);
			goto out;
		}
		if (it->result_status != KMIP_STATUS_SUCCESS) {
			snprintf(why, sizeof(why), "the relay answered %s: %.*s", reason ? reason : "a failure",
				 (int)(it->result_message.len > 160 ? 160 : it->result_message.len),
				 it->result_message.ptr ? it->result_message.ptr : "");
			*ret_why = why;
			goto out;
		}
	}
	if (m->n_items != n_items) {
		*ret_why = "the response does not answer every batch item";
		goto out;
	}
	r = 0;
out:
	if (r == 0 && ret)
		*ret = m;
	else
		kmip_message_free(m);
	return r;
}

static int call(struct conn *c, const uint8_t *req, size_t len, size_t n_items, struct kmip_message **ret,
		const char **ret_why)
{
	int r = exchange(c, req, len, ret_why);

	return r < 0 ? r : response_ok(c, n_items, ret, ret_why);
}

/* Requests. */

/* A request of n batch items, each with the same operation and Request Payload (an
 * encoded item); several items get Unique Batch Item IDs 1..n. */
static int request(uint32_t operation, const uint8_t *payload, size_t payload_len, size_t n, uint8_t **ret,
		   size_t *ret_len)
{
	struct kmip_batch_item items[BATCH];
	uint8_t ids[BATCH][4];
	struct kmip_message m = {
		.header = { .present = KMIP_FIELD(KMIP_H_PROTOCOL_VERSION) | KMIP_FIELD(KMIP_H_BATCH_COUNT),
			    .version = version,
			    .batch_count = (int32_t)n },
		.items = items,
		.n_items = n,
	};

	for (size_t i = 0; i < n; i++) {
		items[i] = (struct kmip_batch_item){
			.present = KMIP_FIELD(KMIP_I_OPERATION) | KMIP_FIELD(KMIP_I_PAYLOAD),
			.operation = operation,
			.payload.encoded = { payload, payload_len },
		};
		if (n > 1) {
			ids[i][0] = 0, ids[i][1] = 0, ids[i][2] = (uint8_t)((i + 1) >> 8), ids[i][3] = (uint8_t)(i + 1);
			items[i].present |= KMIP_FIELD(KMIP_I_UNIQUE_BATCH_ITEM_ID);
			items[i].unique_batch_item_id = (struct kmip_bytes){ ids[i], sizeof(ids[i]) };
		}
	}
	return kmip_encode_message(&m, TTLV_DEFAULT_MAX_SIZE, ret, ret_len);
}

/* Builds a Request Payload with fill(), then the request around it. */
typedef void (*payload_fn)(struct ttlv_writer *w, const void *arg);

static int build(uint32_t operation, payload_fn fill, const void *arg, size_t n, uint8_t **ret, size_t *ret_len)
{
	struct ttlv_writer w;
	uint8_t *payload = NULL;
	size_t payload_len = 0;
	int r;

	ttlv_writer_init(&w, TTLV_DEFAULT_MAX_SIZE);
	ttlv_begin(&w, KMIP_TAG_REQUEST_PAYLOAD);
	fill(&w, arg);
	ttlv_end(&w);
	r = ttlv_writer_finish(&w, &payload, &payload_len);
	if (r == 0)
		r = request(operation, payload, payload_len, n, ret, ret_len);
	ttlv_buf_free(payload, payload_len);
	return r;
}

static void fill_nothing(struct ttlv_writer *w, const void *arg)
{
	(void)w;
	(void)arg;
}

static void put_uid(struct ttlv_writer *w, const char *uid)
{
	ttlv_put_text(w, KMIP_TAG_UNIQUE_IDENTIFIER, uid, strlen(uid));
}

static void fill_uid(struct ttlv_writer *w, const void *arg)
{
	put_uid(w, arg);
}

static void fill_revoke(struct ttlv_writer *w, const void *arg)
{
	put_uid(w, arg);
	ttlv_begin(w, KMIP_TAG_REVOCATION_REASON);
	ttlv_put_enum(w, KMIP_TAG_REVOCATION_REASON_CODE, REVOKE_CESSATION_OF_OPERATION);
	ttlv_end(w);
}

/* A KMIP 1.x Attribute: Attribute Name, then the value the caller writes, then
 * attr_end. */
static void attr_begin(struct ttlv_writer *w, const char *name)
{
	ttlv_begin(w, KMIP_TAG_ATTRIBUTE);
	ttlv_put_text(w, KMIP_TAG_ATTRIBUTE_NAME, name, strlen(name));
}

static void attr_end(struct ttlv_writer *w)
{
	ttlv_end(w);
}

static void usage_mask(struct ttlv_writer *w, uint32_t tag, int32_t mask)
{
	ttlv_begin(w, tag);
	attr_begin(w, "Cryptographic Usage Mask");
	ttlv_put_int(w, KMIP_TAG_ATTRIBUTE_VALUE, mask);
	attr_end(w);
	ttlv_end(w);
}

/* Create Key Pair in KMIP 1.2 Template-Attributes: RSA-2048 or EC P-256, the
 * private half for signing, the public half for verifying. */
static void fill_key_pair(struct ttlv_writer *w, const void *arg)
{
	const struct key *k = arg;
	bool rsa = k->type == CKK_RSA;

	ttlv_begin(w, KMIP_TAG_COMMON_TEMPLATE_ATTRIBUTE);
	attr_begin(w, "Cryptographic Algorithm");
	ttlv_put_enum(w, KMIP_TAG_ATTRIBUTE_VALUE, rsa ? ALG_RSA : ALG_ECDSA);
	attr_end(w);
	attr_begin(w, "Cryptographic Length");
	ttlv_put_int(w, KMIP_TAG_ATTRIBUTE_VALUE, rsa ? 2048 : 256);
	attr_end(w);
	if (!rsa) {
		attr_begin(w, "Cryptographic Domain Parameters");
		ttlv_begin(w, KMIP_TAG_ATTRIBUTE_VALUE);
		ttlv_put_enum(w, KMIP_TAG_RECOMMENDED_CURVE, CURVE_P256);
		ttlv_end(w);
		attr_end(w);
	}
	ttlv_end(w);
	usage_mask(w, KMIP_TAG_PRIVATE_KEY_TEMPLATE_ATTRIBUTE, USE_SIGN);
	usage_mask(w, KMIP_TAG_PUBLIC_KEY_TEMPLATE_ATTRIBUTE, USE_VERIFY);
}

static void put_sign_params(struct ttlv_writer *w, const struct key *k, const char *uid)
{
	put_uid(w, uid);
	ttlv_begin(w, KMIP_TAG_CRYPTOGRAPHIC_PARAMETERS);
	if (k->type == CKK_RSA)
		ttlv_put_enum(w, KMIP_TAG_PADDING_METHOD, PAD_PKCS1_V15);
	ttlv_put_enum(w, KMIP_TAG_HASHING_ALGORITHM, HASH_SHA256);
	ttlv_put_enum(w, KMIP_TAG_CRYPTOGRAPHIC_ALGORITHM, k->type == CKK_RSA ? ALG_RSA : ALG_ECDSA);
	ttlv_end(w);
	ttlv_put_bytes(w, KMIP_TAG_DATA, data, sizeof(data));
}

static void fill_sign(struct ttlv_writer *w, const void *arg)
{
	const struct key *k = arg;

	put_sign_params(w, k, k->priv);
}

struct verify_arg {
	const struct key *k;
	const struct kmip_bytes *sig;
};

static void fill_verify(struct ttlv_writer *w, const void *arg)
{
	const struct verify_arg *v = arg;

	put_sign_params(w, v->k, v->k->pub);
	ttlv_put_bytes(w, KMIP_TAG_SIGNATURE_DATA, v->sig->ptr, v->sig->len);
}

/* One operation on an open connection; *ret (if given) is the decoded response. */
static int one(struct conn *c, uint32_t operation, payload_fn fill, const void *arg, struct kmip_message **ret,
	       const char **ret_why)
{
	uint8_t *req = NULL;
	size_t len = 0;
	int r = build(operation, fill, arg, 1, &req, &len);

	if (r < 0)
		*ret_why = kr_strerror(r);
	else
		r = call(c, req, len, 1, ret, ret_why);
	ttlv_buf_free(req, len);
	return r;
}

/* A field of the first batch item's Response Payload, or NULL. */
static const struct ttlv_item *payload_field(const struct kmip_message *m, uint32_t tag, enum ttlv_type type)
{
	const struct ttlv_item *p = m->items[0].payload.first, *f = p ? ttlv_find(p, tag) : NULL;

	return f && f->type == type ? f : NULL;
}

static bool copy_uid(const struct kmip_message *m, uint32_t tag, char out[STORE_MAX_UID + 1])
{
	const struct ttlv_item *f = payload_field(m, tag, TTLV_TEXT_STRING);

	if (!f || f->len == 0 || f->len > STORE_MAX_UID)
		return false;
	memcpy(out, f->value, f->len);
	out[f->len] = '\0';
	return true;
}

/* Makes the key pair and activates it. */
static int create_key(struct conn *c, struct key *k, const char **ret_why)
{
	struct kmip_message *m = NULL;
	int r = one(c, KMIP_OP_CREATE_KEY_PAIR, fill_key_pair, k, &m, ret_why);

	if (r < 0)
		return r;
	if (!copy_uid(m, KMIP_TAG_PRIVATE_KEY_UNIQUE_IDENTIFIER, k->priv) ||
	    !copy_uid(m, KMIP_TAG_PUBLIC_KEY_UNIQUE_IDENTIFIER, k->pub)) {
		*ret_why = "Create Key Pair returned no Unique Identifiers";
		r = KR_E_KMIP_MISSING;
	}
	kmip_message_free(m);
	if (r == 0)
		r = one(c, KMIP_OP_ACTIVATE, fill_uid, k->priv, NULL, ret_why);
	return r < 0 ? r : one(c, KMIP_OP_ACTIVATE, fill_uid, k->pub, NULL, ret_why);
}

/* Signs once and has the relay verify the signature with the public half, so that
 * what is measured is a real signature. */
static int check_key(struct conn *c, struct key *k, const char **ret_why)
{
	struct kmip_message *signed_m = NULL, *verified = NULL;
	const struct ttlv_item *sig, *valid;
	int r = call(c, k->sign, k->sign_len, 1, &signed_m, ret_why);

	if (r < 0)
		return r;
	r = KR_E_KMIP_MISSING;
	if (!(sig = payload_field(signed_m, KMIP_TAG_SIGNATURE_DATA, TTLV_BYTE_STRING))) {
		*ret_why = "Sign returned no Signature Data";
		goto out;
	}
	r = one(c, KMIP_OP_SIGNATURE_VERIFY, fill_verify,
		&(struct verify_arg){ k, &(struct kmip_bytes){ sig->value, sig->len } }, &verified, ret_why);
	if (r < 0)
		goto out;
	valid = payload_field(verified, KMIP_TAG_VALIDITY_INDICATOR, TTLV_ENUMERATION);
	if (!valid || ttlv_enum(valid) != VALID) {
		*ret_why = "the relay's signature does not verify";
		r = KR_E_P11_SIGNATURE;
	}
out:
	kmip_message_free(verified);
	kmip_message_free(signed_m);
	return r;
}

/* Revokes and destroys both halves (c NULL: there is no connection to do it on);
 * reports what it could not do. */
static void destroy_key(struct conn *c, const struct key *k, const char *why)
{
	if (!k->priv[0])
		return;
	if (!c || one(c, KMIP_OP_REVOKE, fill_revoke, k->priv, NULL, &why) < 0 ||
	    one(c, KMIP_OP_REVOKE, fill_revoke, k->pub, NULL, &why) < 0 ||
	    one(c, KMIP_OP_DESTROY, fill_uid, k->priv, NULL, &why) < 0 ||
	    one(c, KMIP_OP_DESTROY, fill_uid, k->pub, NULL, &why) < 0)
		fprintf(stderr, "kmip_bench: key pair %s/%s stays in the token: %s\n", k->priv, k->pub, why);
}

/* Measurements through the relay. */

/* Parallel runs start together: each says it is ready, then waits for go. */
struct start {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	unsigned ready;
	bool go;
};

struct run {
	const struct bench *b;
	const uint8_t *req;
	size_t len, n_items;
	bool raw;    /* the answer is minimal_handler --loop's, not a KMIP response */
	bool resume; /* new connections resume the TLS session of the one before */
	/* In this process: the token and the key (M_INPROCESS, the limits). */
	struct p11_token *tok;
	CK_OBJECT_HANDLE key;
	CK_KEY_TYPE type;
	double seconds;
	struct start *start;
	struct result res;
};

/* One request of the run on an open connection, and its answer checked: a KMIP
 * response whose items all succeeded, or (raw) a lone Signature Data item. */
static int run_request(struct conn *c, const struct run *run, const char **ret_why)
{
	static const uint8_t signature_data[] = { (KMIP_TAG_SIGNATURE_DATA >> 16) & 0xFF,
						  (KMIP_TAG_SIGNATURE_DATA >> 8) & 0xFF, KMIP_TAG_SIGNATURE_DATA & 0xFF,
						  TTLV_BYTE_STRING };
	int r;

	if (!run->raw)
		return call(c, run->req, run->len, run->n_items, NULL, ret_why);
	if ((r = exchange(c, run->req, run->len, ret_why)) < 0)
		return r;
	if (c->resp_len <= TTLV_HEADER_LEN || memcmp(c->resp, signature_data, sizeof(signature_data)) != 0) {
		*ret_why = "the loop's answer is not a Signature Data item";
		return KR_E_KMIP_UNEXPECTED;
	}
	return 0;
}

static void wait_for_start(struct start *s)
{
	pthread_mutex_lock(&s->mu);
	s->ready++;
	pthread_cond_broadcast(&s->cv);
	while (!s->go)
		pthread_cond_wait(&s->cv, &s->mu);
	pthread_mutex_unlock(&s->mu);
}

static void give_start(struct start *s, unsigned n)
{
	pthread_mutex_lock(&s->mu);
	while (s->ready < n)
		pthread_cond_wait(&s->cv, &s->mu);
	s->go = true;
	pthread_cond_broadcast(&s->cv);
	pthread_mutex_unlock(&s->mu);
}

/* Sends the same request on one connection, one at a time, for the run's time
 * (after a warm-up that opens the token and finds the key). */
static void *persistent(void *arg)
{
	struct run *run = arg;
	struct conn c = { .fd = -1 };
	const char *why = NULL;
	uint64_t t0, deadline;
	int r = conn_open(run->b, NULL, &c, &why);

	t0 = now_us();
	for (unsigned i = 0; r == 0 && i < WARMUP_REQUESTS && now_us() - t0 < WARMUP_MAX_US; i++)
		r = run_request(&c, run, &why);
	if (run->start)
		wait_for_start(run->start);
	t0 = now_us();
	deadline = t0 + (uint64_t)(run->seconds * 1e6);
	while (r == 0 && now_us() < deadline) {
		r = run_request(&c, run, &why);
		if (r == 0)
			run->res.ops += run->n_items;
	}
	run->res.seconds = (double)(now_us() - t0) / 1e6;
	if (r < 0)
		set_why(&run->res, why);
	conn_close(&c);
	return NULL;
}

/* One Sign on a connection of its own. With session, the connection resumes it,
 * and session becomes the one this connection's ticket resumes (a TLS 1.3 ticket
 * arrives after the handshake: it has come once the answer has). */
static int fresh_connection(const struct run *run, gnutls_datum_t *session, const char **ret_why)
{
	struct conn c = { .fd = -1 };
	gnutls_datum_t next = { 0 };
	int r = conn_open(run->b, session && session->data ? session : NULL, &c, ret_why);

	if (r == 0 && session && session->data && !gnutls_session_is_resumed(c.s)) {
		*ret_why = "the relay did not resume the TLS session (is tls.ticket_key set?)";
		r = KR_E_TLS_HANDSHAKE;
	}
	if (r == 0)
		r = run_request(&c, run, ret_why);
	if (r == 0 && session && gnutls_session_get_data2(c.s, &next) == 0) {
		gnutls_free(session->data);
		*session = next;
	}
	conn_close(&c);
	return r;
}

/* A new connection for every Sign: TCP, the TLS handshake (full, or with
 * run->resume a resumption of the connection before), and on the relay's side a
 * new process that loads the module and logs in. */
static void new_connections(struct run *run)
{
	gnutls_datum_t session = { 0 };
	uint64_t t0, deadline;
	const char *why = NULL;
	int r = 0;

	/* The first session to resume, untimed. */
	if (run->resume)
		r = fresh_connection(run, &session, &why);
	t0 = now_us();
	deadline = t0 + (uint64_t)(run->seconds * 1e6);
	while (r == 0 && now_us() < deadline) {
		r = fresh_connection(run, run->resume ? &session : NULL, &why);
		if (r == 0)
			run->res.ops++;
	}
	run->res.seconds = (double)(now_us() - t0) / 1e6;
	if (r < 0)
		set_why(&run->res, why);
	gnutls_free(session.data);
}

/* new_connections, as a thread of parallel(). */
static void *fresh(void *arg)
{
	struct run *run = arg;

	wait_for_start(run->start);
	new_connections(run);
	return NULL;
}

/* n connections, each with one request outstanding, started together. The rate is
 * the sum of the connections' rates. Each is persistent, or with each_new a new
 * connection for every request. */
static void parallel_of(const struct run *base, unsigned n, bool each_new, struct result *ret)
{
	struct start start = { .mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER };
	struct run runs[MAX_THREADS];
	pthread_t threads[MAX_THREADS];
	unsigned started = 0;
	double rate = 0;

	*ret = (struct result){ 0 };
	for (unsigned i = 0; i < n; i++) {
		runs[i] = *base;
		runs[i].start = &start;
		runs[i].res = (struct result){ 0 };
		if (pthread_create(&threads[i], NULL, each_new ? fresh : persistent, &runs[i]) != 0) {
			set_why(ret, "cannot start the threads");
			break;
		}
		started++;
	}
	give_start(&start, started);
	for (unsigned i = 0; i < started; i++) {
		pthread_join(threads[i], NULL);
		if (runs[i].res.why[0] && !ret->why[0])
			set_why(ret, runs[i].res.why);
		ret->ops += runs[i].res.ops;
		if (runs[i].res.seconds > 0)
			rate += (double)runs[i].res.ops / runs[i].res.seconds;
	}
	/* As one run of the same ops at the summed rate. */
	ret->seconds = rate > 0 ? (double)ret->ops / rate : 0;
}

static void parallel(const struct run *base, unsigned n, struct result *ret)
{
	parallel_of(base, n, false, ret);
}

/* metrics.file's cost: a new connection per Sign, one client and then four at
 * once (which keeps every CPU busy, so that the merge after the client has gone
 * counts too), in rounds alternately against the relay without and with it, so
 * that both see the same machine. */
#define METRICS_ROUNDS 4

static void add_result(struct result *sum, const struct result *r)
{
	sum->ops += r->ops;
	sum->seconds += r->seconds;
	if (r->why[0] && !sum->why[0])
		set_why(sum, r->why);
}

/* The merge alone, as a relay does it at the end of a connection with one Sign,
 * timed in this process on a copy of the relay's file (without the pool's health
 * file: a relay reads one record more). */
#define MERGES 200

static uint64_t cpu_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static void time_merge(const struct options *o, struct key *k)
{
	char dir[] = "/tmp/kmip_bench-XXXXXX", path[64], lock[80], line[512];
	struct cfg c = { .metrics.file = path };
	const char *why = NULL;
	FILE *in = NULL, *out = NULL;
	uint64_t t0;
	int r = 0;

	if (!mkdtemp(dir)) {
		snprintf(k->merge_why, sizeof(k->merge_why), "mkdtemp: %s", strerror(errno));
		return;
	}
	snprintf(path, sizeof(path), "%s/kmip-relay.prom", dir);
	snprintf(lock, sizeof(lock), "%s.lock", path);
	if (!(in = fopen(o->metrics_file, "r")) || !(out = fopen(path, "w")))
		snprintf(k->merge_why, sizeof(k->merge_why), "%s: %s", o->metrics_file, strerror(errno));
	while (in && out && fgets(line, sizeof(line), in)) {
		fputs(line, out);
		k->merge_samples += line[0] != '#';
	}
	if (in)
		fclose(in);
	if (out && fclose(out) != 0 && !k->merge_why[0])
		snprintf(k->merge_why, sizeof(k->merge_why), "%s: %s", path, strerror(errno));
	if (!k->merge_why[0]) {
		metrics_start(&c);
		metrics_request("Sign", "Success", 100);
		metrics_handshake(5000);
		/* CPU time, user and system: what a connection's process spends on it,
		 * however busy the machine is. */
		t0 = cpu_us();
		for (int i = 0; r == 0 && i < MERGES; i++)
			r = metrics_write(&c, METRICS_END_CLOSED, NULL, &why);
		if (r < 0)
			snprintf(k->merge_why, sizeof(k->merge_why), "%s", why);
		else
			k->merge_us = (double)(cpu_us() - t0) / MERGES;
	}
	unlink(path);
	unlink(lock);
	rmdir(dir);
}

static void measure_metrics(const struct bench *b, struct key *k)
{
	struct bench with = *b;
	struct run off = { .b = b, .req = k->sign, .len = k->sign_len, .n_items = 1,
			   .seconds = b->opt.seconds / METRICS_ROUNDS };
	struct run on = off;

	with.addr = b->metrics_addr;
	on.b = &with;
	for (int par = 0; par < 2; par++)
		for (int round = 0; round < METRICS_ROUNDS; round++)
			for (int m = 0; m < 2; m++) {
				struct run run = m ? on : off;
				struct result *sum = m ? &k->metrics_on[par] : &k->metrics_off[par];

				if (par) {
					parallel_of(&run, 4, true, &run.res);
				} else {
					run.res = (struct result){ 0 };
					new_connections(&run);
				}
				add_result(sum, &run.res);
			}
	time_merge(&b->opt, k);
}

/* The same run at another address: the relay with keys.verify_signatures on,
 * HAProxy, a relay serving a pool, the minimal handler, the relay on the 300-key
 * token. */
static struct result run_at(const struct bench *b, struct addrinfo *addr, const struct run *base,
			    void (*how)(struct run *))
{
	struct bench other = *b;
	struct run run = *base;

	other.addr = addr;
	run.b = &other;
	run.res = (struct result){ 0 };
	how(&run);
	return run.res;
}

static void run_persistent(struct run *run)
{
	persistent(run);
}

static void run_parallel4(struct run *run)
{
	parallel(run, 4, &run->res);
}

static void measure_relay(const struct bench *b, struct key *k)
{
	struct run one_req = { .b = b, .req = k->sign, .len = k->sign_len, .n_items = 1, .seconds = b->opt.seconds };
	struct run batch = one_req, fresh = one_req;

	batch.req = k->sign_batch;
	batch.len = k->sign_batch_len;
	batch.n_items = BATCH;
	/* Each run with the self-check right after the one without, so that both see
	 * the same machine. */
	persistent(&one_req);
	k->res[M_ONE] = one_req.res;
	if (b->verify_addr)
		k->res[M_ONE_CHECKED] = run_at(b, b->verify_addr, &one_req, run_persistent);
	if (b->haproxy_addr)
		k->res[M_ONE_HAPROXY] = run_at(b, b->haproxy_addr, &one_req, run_persistent);
	if (b->pool_addr)
		k->res[M_ONE_POOL] = run_at(b, b->pool_addr, &one_req, run_persistent);
	persistent(&batch);
	k->res[M_BATCH] = batch.res;
	if (b->verify_addr)
		k->res[M_BATCH_CHECKED] = run_at(b, b->verify_addr, &batch, run_persistent);
	new_connections(&fresh);
	k->res[M_NEW_CONN] = fresh.res;
	if (b->haproxy_addr)
		k->res[M_NEW_CONN_HAPROXY] = run_at(b, b->haproxy_addr, &fresh, new_connections);
	if (b->pool_addr)
		k->res[M_NEW_CONN_POOL] = run_at(b, b->pool_addr, &fresh, new_connections);
	parallel(&one_req, 2, &k->res[M_PAR2]);
	parallel(&one_req, 4, &k->res[M_PAR4]);
	if (b->haproxy_addr)
		k->res[M_PAR4_HAPROXY] = run_at(b, b->haproxy_addr, &one_req, run_parallel4);
	if (b->pool_addr)
		k->res[M_PAR4_POOL] = run_at(b, b->pool_addr, &one_req, run_parallel4);
}

/* The limit: C_Sign in this process on the same token and key, through the relay's
 * hashing path - CKM_SHA256_RSA_PKCS on the data for RSA; for ECDSA, SHA-256 here
 * with GnuTLS and CKM_ECDSA on the digest. */

/* "pkcs11:token=" and the label, percent-encoded where RFC 7512 wants it. */
static int token_uri(const char *label, char *out, size_t size)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t n = (size_t)snprintf(out, size, "pkcs11:token=");

	for (const unsigned char *p = (const unsigned char *)label; *p; p++) {
		bool plain = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
			     strchr("-._~", *p);

		if (size - n < 4)
			return KR_E_CONFIG;
		if (plain) {
			out[n++] = (char)*p;
		} else {
			out[n++] = '%';
			out[n++] = hex[*p >> 4];
			out[n++] = hex[*p & 15];
		}
	}
	out[n] = '\0';
	return 0;
}

/* Module, token and login as the relay does them, under the relay's lock file if
 * one is given (SoftHSM rewrites its token file on every login). */
static int open_token(const struct options *o, struct p11_token **ret, const char **ret_why)
{
	struct p11_token *t = NULL;
	char uri[512], *pin = NULL;
	size_t pin_len = 0;
	int lock = -1, r;

	if ((r = token_uri(o->token, uri, sizeof(uri))) < 0) {
		*ret_why = "--token: the label is too long";
		return r;
	}
	r = p11_read_pin(o->pin_file, NULL, &pin, &pin_len, ret_why);
	if (r == 0)
		r = p11_lock(o->lock_file, true, &lock, ret_why);
	if (r == 0)
		r = p11_open(o->module, uri, NULL, 0, NULL, 0, NULL, &t, ret_why);
	if (r == 0)
		r = p11_login(t, pin, pin_len, ret_why);
	p11_unlock(lock);
	p11_pin_free(pin, pin_len);
	if (r < 0) {
		p11_close(t);
		return r;
	}
	*ret = t;
	return 0;
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* The CKA_ID of the private key a UID of the relay's names: its hex part. */
static int private_key_id(const char *uid, uint8_t id[STORE_MAX_ID], size_t *ret_len, const char **ret_why)
{
	size_t hex_len = strcspn(uid, "_");

	if (hex_len == 0 || hex_len % 2 || hex_len / 2 > STORE_MAX_ID || strcmp(uid + hex_len, "_priv") != 0) {
		*ret_why = "the relay's Unique Identifier is not <hex CKA_ID>_priv";
		return KR_E_P11_NOT_FOUND;
	}
	for (size_t i = 0; i < hex_len / 2; i++) {
		int hi = hexval(uid[2 * i]), lo = hexval(uid[2 * i + 1]);

		if (hi < 0 || lo < 0) {
			*ret_why = "the relay's Unique Identifier is not <hex CKA_ID>_priv";
			return KR_E_P11_NOT_FOUND;
		}
		id[i] = (uint8_t)(hi << 4 | lo);
	}
	*ret_len = hex_len / 2;
	return 0;
}

/* The private key the UID names, found by its CKA_ID. */
static int find_private_key(struct p11_token *t, const char *uid, CK_OBJECT_HANDLE *ret, const char **ret_why)
{
	uint8_t id[STORE_MAX_ID];
	size_t id_len = 0, n = 0;
	CK_OBJECT_CLASS cls;
	CK_ATTRIBUTE tmpl[3];
	CK_OBJECT_HANDLE h[2];
	int r = private_key_id(uid, id, &id_len, ret_why);

	if (r < 0)
		return r;
	r = p11_find(t, tmpl, store_kind_template(STORE_PRIVATE, id, id_len, &cls, tmpl), h, 2, &n);
	if (r == 0 && n != 1)
		r = KR_E_P11_NOT_FOUND;
	if (r < 0) {
		*ret_why = "the key is not in the token";
		return r;
	}
	*ret = h[0];
	return 0;
}

static int sign_in_process(struct p11_token *t, CK_KEY_TYPE type, CK_OBJECT_HANDLE key, const char **ret_why)
{
	CK_MECHANISM mech = { type == CKK_RSA ? CKM_SHA256_RSA_PKCS : CKM_ECDSA, NULL, 0 };
	uint8_t digest[32], sig[512];
	size_t sig_len = sizeof(sig);
	int r;

	if (type == CKK_RSA)
		r = p11_sign(t, &mech, key, data, sizeof(data), sig, &sig_len);
	else if (gnutls_hash_fast(GNUTLS_DIG_SHA256, data, sizeof(data), digest) < 0)
		r = KR_E_P11_FAILED;
	else
		r = p11_sign(t, &mech, key, digest, sizeof(digest), sig, &sig_len);
	if (r < 0)
		*ret_why = p11_rv_name(p11_last_rv(t));
	return r;
}

/* C_Sign with the run's key in this process for the run's time, after a warm-up. */
static void in_process(struct run *run)
{
	const char *why = NULL;
	uint64_t t0 = now_us(), deadline;
	int r = 0;

	for (unsigned j = 0; r == 0 && j < WARMUP_REQUESTS && now_us() - t0 < WARMUP_MAX_US; j++)
		r = sign_in_process(run->tok, run->type, run->key, &why);
	t0 = now_us();
	deadline = t0 + (uint64_t)(run->seconds * 1e6);
	while (r == 0 && now_us() < deadline) {
		r = sign_in_process(run->tok, run->type, run->key, &why);
		if (r == 0)
			run->res.ops++;
	}
	run->res.seconds = (double)(now_us() - t0) / 1e6;
	if (r < 0)
		set_why(&run->res, why);
}

/* The token in this process, and the handles of the keys' private halves. */
static int open_keys(const struct options *o, struct key *keys, size_t n_keys, struct p11_token **ret,
		     const char **ret_why)
{
	struct p11_token *t = NULL;
	int r = open_token(o, &t, ret_why);

	for (size_t i = 0; r == 0 && i < n_keys; i++)
		r = find_private_key(t, keys[i].priv, &keys[i].handle, ret_why);
	if (r < 0) {
		p11_close(t);
		return r;
	}
	*ret = t;
	return 0;
}

static void measure_in_process(struct p11_token *t, const struct options *o, struct key *keys, size_t n_keys)
{
	for (size_t i = 0; i < n_keys; i++) {
		struct run run = { .tok = t, .key = keys[i].handle, .type = keys[i].type, .seconds = o->seconds };

		in_process(&run);
		keys[i].res[M_INPROCESS] = run.res;
	}
}

/* The limits of issue 13: the relay against minimal_handler, one-shot and
 * persistent, and against C_Sign in this process. Each group's measurements
 * (legs) run one after the other, round after round (A B A B ...), so that both
 * sides of a ratio see the same machine. The report gives each side's median
 * rate and the median of the rounds' ratios: load from outside that hits one leg
 * of one round moves that round's ratio, not the median. */
enum leg {
	L_NEW_RELAY, L_NEW_HANDLER, L_RESUMED, L_BIG_RELAY, L_BIG_HANDLER,
	L_RSA_INPROC, L_RSA_LOOP, L_RSA_RELAY, L_EC_INPROC, L_EC_LOOP, L_EC_RELAY, L_EC_BATCH, N_LEGS
};

static const struct {
	enum leg first, last;
} groups[] = {
	{ L_NEW_RELAY, L_RESUMED }, { L_BIG_RELAY, L_BIG_HANDLER }, { L_RSA_INPROC, L_RSA_RELAY },
	{ L_EC_INPROC, L_EC_BATCH },
};

static const struct {
	const char *what;
	enum leg a, b;
	double target; /* of a / b, from the issue; 0: none */
} limits[] = {
	{ "new connection, small token: relay / handler", L_NEW_RELAY, L_NEW_HANDLER, 0.90 },
	{ "new connection, 300-key token: relay / handler", L_BIG_RELAY, L_BIG_HANDLER, 0.90 },
	{ "new connection, relay: resumed / full handshake", L_RESUMED, L_NEW_RELAY, 0 },
	{ "RSA-2048, 1 at a time: relay / minimal loop", L_RSA_RELAY, L_RSA_LOOP, 0.95 },
	{ "RSA-2048, 1 at a time: relay / in-process", L_RSA_RELAY, L_RSA_INPROC, 0 },
	{ "RSA-2048: minimal loop / in-process", L_RSA_LOOP, L_RSA_INPROC, 0 },
	{ "P-256, 1 at a time: relay / minimal loop", L_EC_RELAY, L_EC_LOOP, 0.95 },
	{ "P-256, 1 at a time: relay / in-process", L_EC_RELAY, L_EC_INPROC, 0 },
	{ "P-256: minimal loop / in-process", L_EC_LOOP, L_EC_INPROC, 0 },
	{ "P-256, batches of 16: relay / in-process", L_EC_BATCH, L_EC_INPROC, 0.85 },
};

struct legs {
	struct addrinfo *addr[N_LEGS]; /* NULL: not measured (no such endpoint) */
	void (*how[N_LEGS])(struct run *);
	struct run run[N_LEGS];
	struct result res[N_LEGS][MAX_ROUNDS];
};

static void set_leg(struct legs *l, enum leg i, struct addrinfo *addr, void (*how)(struct run *),
		    const struct run *run)
{
	l->addr[i] = addr;
	l->how[i] = how;
	l->run[i] = *run;
}

/* rsa and ec: the keys made for this run; big: the RSA key on the 300-key token,
 * if there is one. */
static void measure_limits(const struct bench *b, struct p11_token *tok, const struct key *rsa,
			   const struct key *ec, const struct key *big, struct legs *l)
{
	const double s = b->opt.round_seconds;
	const struct run rsa_sign = { .b = b, .req = rsa->sign, .len = rsa->sign_len, .n_items = 1, .seconds = s };
	const struct run ec_sign = { .b = b, .req = ec->sign, .len = ec->sign_len, .n_items = 1, .seconds = s };

	set_leg(l, L_NEW_RELAY, b->addr, new_connections, &rsa_sign);
	set_leg(l, L_NEW_HANDLER, b->handler_addr, new_connections, &rsa_sign);
	set_leg(l, L_RESUMED, b->addr, new_connections, &(struct run){ .b = b, .req = rsa->sign, .len = rsa->sign_len,
								    .n_items = 1, .resume = true, .seconds = s });
	if (big->sign) {
		const struct run big_sign = { .b = b, .req = big->sign, .len = big->sign_len, .n_items = 1, .seconds = s };

		set_leg(l, L_BIG_RELAY, b->big_addr, new_connections, &big_sign);
		set_leg(l, L_BIG_HANDLER, b->big_handler_addr, new_connections, &big_sign);
	}
	/* In this process the leg's address is only a mark that it is measured. */
	set_leg(l, L_RSA_INPROC, b->addr, in_process,
		&(struct run){ .tok = tok, .key = rsa->handle, .type = rsa->type, .seconds = s });
	set_leg(l, L_RSA_LOOP, b->loop_addr, run_persistent,
		&(struct run){ .b = b, .req = rsa->loop_req, .len = LOOP_REQUEST, .n_items = 1, .raw = true, .seconds = s });
	set_leg(l, L_RSA_RELAY, b->addr, run_persistent, &rsa_sign);
	set_leg(l, L_EC_INPROC, b->addr, in_process,
		&(struct run){ .tok = tok, .key = ec->handle, .type = ec->type, .seconds = s });
	set_leg(l, L_EC_LOOP, b->loop_addr, run_persistent,
		&(struct run){ .b = b, .req = ec->loop_req, .len = LOOP_REQUEST, .n_items = 1, .raw = true, .seconds = s });
	set_leg(l, L_EC_RELAY, b->addr, run_persistent, &ec_sign);
	set_leg(l, L_EC_BATCH, b->addr, run_persistent,
		&(struct run){ .b = b, .req = ec->sign_batch, .len = ec->sign_batch_len, .n_items = BATCH, .seconds = s });

	for (size_t g = 0; g < sizeof(groups) / sizeof(groups[0]); g++)
		for (unsigned round = 0; round < b->opt.rounds; round++)
			for (enum leg i = groups[g].first; i <= groups[g].last; i++)
				if (l->addr[i])
					l->res[i][round] = run_at(b, l->addr[i], &l->run[i], l->how[i]);
}

/* The report. */

static double rate(const struct result *r)
{
	return r->seconds > 0 ? (double)r->ops / r->seconds : 0;
}

/* The self-check's cost: the rate with it as a share of the rate without, and the
 * time it adds to each Sign. */
static void print_cost(const char *what, const struct result *off, const struct result *on)
{
	double r_off = rate(off), r_on = rate(on);

	if (r_off > 0 && r_on > 0)
		printf("%s %.2f (%+.1f \u00b5s per Sign)", what, r_on / r_off, 1e6 / r_on - 1e6 / r_off);
	else
		printf("%s not measured", what);
}

/* The rate at the other endpoint as a share of the rate direct. */
static void print_ratio(const char *what, const struct result *direct, const struct result *other)
{
	double r_direct = rate(direct), r_other = rate(other);

	if (r_direct > 0 && r_other > 0)
		printf("%s %.2f", what, r_other / r_direct);
	else
		printf("%s not measured", what);
}

/* The three runs at another endpoint (from first: one at a time, new connection,
 * 4 in parallel) against the same runs direct. */
static void print_ratios(const char *title, const struct key *k, int first)
{
	printf("  %s:", title);
	print_ratio(" 1 request at a time", &k->res[M_ONE], &k->res[first]);
	print_ratio(", new connection per Sign", &k->res[M_NEW_CONN], &k->res[first + 1]);
	print_ratio(", 4 in parallel", &k->res[M_PAR4], &k->res[first + 2]);
	putchar('\n');
}

/* Whether mode m was measured with these options. */
static bool measured(const struct options *o, int m)
{
	if (m == M_ONE_CHECKED || m == M_BATCH_CHECKED)
		return o->verify_port;
	if (m >= M_ONE_HAPROXY && m <= M_PAR4_HAPROXY)
		return o->haproxy_port;
	if (m >= M_ONE_POOL && m <= M_PAR4_POOL)
		return o->pool_port;
	return true;
}

static void print_key(const struct options *o, const struct key *k)
{
	double limit = rate(&k->res[M_INPROCESS]);

	printf("\n%s, %d-byte data, %g s per measurement\n", k->title, DATA_LEN, o->seconds);
	printf("  %-36s %9s %10s %14s  %s\n", "measurement", "ops/s", "\u00b5s/op" /* 2 bytes, 1 column */, "vs in-process", "target (issue)");
	for (int m = 0; m < N_MODES; m++) {
		const struct result *r = &k->res[m];
		double target = m == M_ONE ? k->target_one : m == M_BATCH ? k->target_batch : 0;
		double ops = rate(r), ratio = limit > 0 ? ops / limit : 0;

		if (!measured(o, m))
			continue;
		if (r->why[0] && r->ops == 0) {
			printf("  %-36s failed: %s\n", mode_names[m], r->why);
			continue;
		}
		printf("  %-36s %9.1f %9.1f %14.2f", mode_names[m], ops, ops > 0 ? 1e6 / ops : 0, ratio);
		if (target > 0)
			printf("  >= %.2f %s", target, ratio >= target ? "met" : "NOT MET");
		if (r->why[0])
			printf("  (stopped after %lu: %s)", r->ops, r->why);
		putchar('\n');
	}
	if (o->verify_port) {
		printf("  verify_signatures on/off:");
		print_cost(" 1 request at a time", &k->res[M_ONE], &k->res[M_ONE_CHECKED]);
		print_cost(", batches of 16", &k->res[M_BATCH], &k->res[M_BATCH_CHECKED]);
		putchar('\n');
	}
	if (o->haproxy_port)
		print_ratios("HAProxy, 2 hosts / 1 host direct", k, M_ONE_HAPROXY);
	if (o->pool_port)
		print_ratios("pool of 2 in balance / 1 backend", k, M_ONE_POOL);
}

/* The cost per connection of merging the metrics file: the merge alone beside a
 * connection's time, and the connections' rates with and without it. */
static void print_metrics(const struct key *k)
{
	static const char *const how[2] = { "1 client", "4 clients at once" };
	double conn_us = rate(&k->metrics_off[0]) > 0 ? 1e6 / rate(&k->metrics_off[0]) : 0;

	printf("\nmetrics.file, a new connection per Sign (%s):\n", k->title);
	if (k->merge_us > 0 && conn_us > 0)
		printf("  the merge alone (%zu samples, %d merges): %.0f \u00b5s of CPU; a connection without "
		       "metrics.file: %.0f \u00b5s\n  per-connection cost with/without metrics.file: ratio %.4f (%+.2f%%)\n",
		       k->merge_samples, MERGES, k->merge_us, conn_us, (conn_us + k->merge_us) / conn_us,
		       k->merge_us / conn_us * 100);
	else
		printf("  the merge alone: not measured: %s\n", k->merge_why[0] ? k->merge_why : "no connection");
	for (int par = 0; par < 2; par++) {
		double off = rate(&k->metrics_off[par]), on = rate(&k->metrics_on[par]);

		if (off > 0 && on > 0)
			printf("  end to end, %-18s %7.1f / %7.1f connections/s with/without: ratio %.3f\n", how[par],
			       on, off, off / on);
		else
			printf("  end to end, %-18s not measured: %s\n", how[par],
			       k->metrics_on[par].why[0] ? k->metrics_on[par].why : k->metrics_off[par].why);
	}
}

static void print_report(const struct options *o, size_t objects, const struct result *floor, const struct key *keys,
			 size_t n_keys)
{
	printf("kmip_bench: relay %s:%s, token \"%s\" (%zu objects during the run), module %s\n", o->host, o->port,
	       o->token, objects, o->module);
	if (floor->why[0])
		printf("the round trip without the token (Discover Versions): failed: %s\n", floor->why);
	else
		printf("the round trip without the token (Discover Versions, 1 connection): %.1f \u00b5s\n",
		       1e6 / rate(floor));
	for (size_t i = 0; i < n_keys; i++)
		print_key(o, &keys[i]);
	printf("\n\u00b5s/op is wall time per Sign (for parallel connections, at their summed rate).\n"
	       "The in-process loop runs single-threaded on the same token, key type and hashing path.\n");
	if (o->verify_port)
		printf("The verify_signatures rows: the relay on port %s, with keys.verify_signatures on, each run\n"
		       "right after the same run without it.\n",
		       o->verify_port);
	if (o->haproxy_port)
		printf("The HAProxy rows: HAProxy on port %s in front of two more relays on the same token (PROXY\n"
		       "protocol v2), each run right after the same run direct to one relay. On %ld CPUs the relays,\n"
		       "HAProxy and this client share the same cores: the ratios show what the balancer costs, not\n"
		       "what more hosts would add.\n",
		       o->haproxy_port, sysconf(_SC_NPROCESSORS_ONLN));
	if (o->pool_port)
		printf("The pool rows: a relay on port %s whose pkcs11.backends are two backends in balance mode,\n"
		       "both on this token (as two replicas), each run right after the same run against the relay\n"
		       "of one: the ratios show what the pool costs (health file, choice), not what a second HSM\n"
		       "would add.\n",
		       o->pool_port);
	if (o->metrics_port) {
		print_metrics(&keys[n_keys - 1]);
		printf("The relay with metrics.file is on port %s; %d rounds alternate between the two. End to end,\n"
		       "the merge (after the client has gone) is within the noise of a shared machine; the ratio above\n"
		       "adds the merge's own time to a connection's.\n",
		       o->metrics_port, METRICS_ROUNDS);
	}
}

static int compare_doubles(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

/* The median of v[0..n), n > 0; sorts v. */
static double median(double *v, size_t n)
{
	qsort(v, n, sizeof(*v), compare_doubles);
	return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static void print_limits(const struct options *o, const struct legs *l)
{
	printf("\nLimits (issue 13): %u rounds, %g s per measurement, the measurements of a group\n"
	       "alternated in each round; medians over the rounds, and the lowest and highest round's ratio\n",
	       o->rounds, o->round_seconds);
	printf("  %-48s %9s %9s %6s %11s  %s\n", "A / B", "A ops/s", "B ops/s", "A/B", "rounds", "target (issue)");
	for (size_t i = 0; i < sizeof(limits) / sizeof(limits[0]); i++) {
		double a[MAX_ROUNDS], b[MAX_ROUNDS], ratio[MAX_ROUNDS], med;
		const char *why = NULL;
		size_t n = 0;

		if (!l->addr[limits[i].a] || !l->addr[limits[i].b]) {
			printf("  %-48s not measured (no endpoint given)\n", limits[i].what);
			continue;
		}
		for (unsigned k = 0; k < o->rounds; k++) {
			const struct result *ra = &l->res[limits[i].a][k], *rb = &l->res[limits[i].b][k];

			if (ra->why[0] || rb->why[0]) {
				why = ra->why[0] ? ra->why : rb->why;
				continue;
			}
			if (rate(ra) > 0 && rate(rb) > 0) {
				a[n] = rate(ra);
				b[n] = rate(rb);
				ratio[n] = a[n] / b[n];
				n++;
			}
		}
		if (n == 0) {
			printf("  %-48s failed: %s\n", limits[i].what, why ? why : "no operation completed");
			continue;
		}
		med = median(ratio, n); /* sorted: ratio[0] is the lowest */
		printf("  %-48s %9.1f %9.1f %6.2f %5.2f-%-5.2f", limits[i].what, median(a, n), median(b, n), med,
		       ratio[0], ratio[n - 1]);
		if (limits[i].target > 0)
			printf("  >= %.2f %s", limits[i].target, med >= limits[i].target ? "met" : "NOT MET");
		if (why)
			printf("  (%zu of %u rounds; a failure: %s)", n, o->rounds, why);
		putchar('\n');
	}
	printf("handler: test/bench/minimal_handler per connection on the same token (port %s); loop: it with\n"
	       "--loop (port %s); the 300-key token: relay port %s, handler port %s. Every new connection signs\n"
	       "with RSA-2048.\n",
	       o->handler_port ? o->handler_port : "-", o->loop_port ? o->loop_port : "-",
	       o->big_port ? o->big_port : "-", o->big_handler_port ? o->big_handler_port : "-");
}

/* How many objects the token holds: what C_Initialize and every find cost grow
 * with. */
static int token_objects(struct p11_token *t, size_t *ret, const char **ret_why)
{
	CK_OBJECT_HANDLE *h = NULL;
	int r = p11_find_all(t, NULL, 0, &h, ret);

	if (r < 0)
		*ret_why = "cannot list the token's objects";
	free(h);
	return r;
}

/* --count-objects */
static int count_objects(const struct options *o, const char **ret_why)
{
	struct p11_token *t = NULL;
	size_t n = 0;
	int r = open_token(o, &t, ret_why);

	if (r == 0 && (r = token_objects(t, &n, ret_why)) == 0)
		printf("%zu\n", n);
	p11_close(t);
	return r;
}

/* --make-keys N: N key pairs through the relay, the first RSA-2048, the others
 * P-256, all activated and kept; prints the RSA private key's UID. */
static int make_keys(const struct bench *b, const char **ret_why)
{
	struct conn c = { .fd = -1 };
	char rsa[STORE_MAX_UID + 1] = "";
	int r = conn_open(b, NULL, &c, ret_why);

	for (unsigned i = 0; r == 0 && i < b->opt.make_keys; i++) {
		struct key k = { .type = i == 0 ? CKK_RSA : CKK_EC };

		r = create_key(&c, &k, ret_why);
		if (r == 0 && i == 0)
			memcpy(rsa, k.priv, sizeof(rsa));
	}
	conn_close(&c);
	if (r == 0)
		printf("%s\n", rsa);
	return r;
}

/* Set-up. */

static void usage(FILE *out)
{
	fputs("Usage: kmip_bench --host HOST --port N --ca CA.pem --cert CLIENT.pem --key CLIENT.key\n"
	      "                  --module MODULE.so --token LABEL --pin-file FILE\n"
	      "                  [--lock-file FILE] [--seconds S] [--verify-port N]\n"
	      "                  [--haproxy-port N] [--pool-port N] [--handler-port N]\n"
	      "                  [--loop-port N] [--big-port N --big-handler-port N --big-key UID]\n"
	      "                  [--rounds R] [--round-seconds S]\n"
	      "Measures Sign through a running kmip-relay (RSA-2048 and P-256 keys it makes,\n"
	      "uses and destroys) against a C_Sign loop in this process on the same token.\n"
	      "  --token LABEL, --pin-file FILE  the token and PIN the relay is configured with\n"
	      "  --lock-file FILE  the relay's pkcs11.lock_file, held while this process logs in\n"
	      "  --seconds S       per measurement (default 3)\n"
	      "  --verify-port N   a second relay on HOST, on the same token, with\n"
	      "                    keys.verify_signatures on: one connection is measured there\n"
	      "                    too, one request at a time and in batches, beside this one's\n"
	      "  --haproxy-port N  HAProxy on HOST in front of more relays on the same token: one\n"
	      "                    connection, a new connection per Sign and 4 in parallel are\n"
	      "                    measured through it too, beside the same runs here\n"
	      "  --pool-port N     a relay on HOST serving a pool of backends on the same token:\n"
	      "                    the same three runs against it, beside the same runs here\n"
	      "  --metrics-port N, --metrics-file FILE\n"
	      "                    a relay on HOST, on the same token, with metrics.file FILE: new\n"
	      "                    connections (P-256 Sign) alternately there and here, then the\n"
	      "                    merge alone on a copy of FILE\n"
	      "The limits, in alternated rounds (any of the endpoints; scripts/bench gives all):\n"
	      "  --handler-port N  test/bench/minimal_handler on HOST, on the same token\n"
	      "  --loop-port N     minimal_handler --loop on HOST, on the same token\n"
	      "  --big-port N, --big-handler-port N, --big-key UID\n"
	      "                    a relay and minimal_handler on HOST on a token of 300 keys\n"
	      "                    made through the relay, and the RSA-2048 key there to sign with\n"
	      "  --rounds R        rounds of the limits (default 5, 0: none)\n"
	      "  --round-seconds S per measurement in a round (default 1)\n"
	      "Other uses:\n"
	      "  kmip_bench --make-keys N --host HOST --port N --ca CA --cert CERT --key KEY\n"
	      "                    makes N key pairs through the relay (the first RSA-2048, the\n"
	      "                    others P-256), keeps them, prints the RSA private key's UID\n"
	      "  kmip_bench --count-objects --module M --token LABEL --pin-file FILE [--lock-file F]\n"
	      "                    prints how many objects the token holds\n",
	      out);
}

static int parse_options(int argc, char **argv, struct options *ret)
{
	static const struct option options[] = {
		{ "host", required_argument, NULL, 'H' },     { "port", required_argument, NULL, 'p' },
		{ "ca", required_argument, NULL, 'a' },       { "cert", required_argument, NULL, 'c' },
		{ "key", required_argument, NULL, 'k' },      { "module", required_argument, NULL, 'm' },
		{ "token", required_argument, NULL, 't' },    { "pin-file", required_argument, NULL, 'P' },
		{ "lock-file", required_argument, NULL, 'l' }, { "seconds", required_argument, NULL, 's' },
		{ "verify-port", required_argument, NULL, 'v' }, { "haproxy-port", required_argument, NULL, 'x' },
		{ "pool-port", required_argument, NULL, 'o' },
		{ "metrics-port", required_argument, NULL, 'M' }, { "metrics-file", required_argument, NULL, 'F' },
		{ "handler-port", required_argument, NULL, 'D' }, { "loop-port", required_argument, NULL, 'L' },
		{ "big-port", required_argument, NULL, 'B' }, { "big-handler-port", required_argument, NULL, 'G' },
		{ "big-key", required_argument, NULL, 'K' }, { "rounds", required_argument, NULL, 'R' },
		{ "round-seconds", required_argument, NULL, 'S' }, { "make-keys", required_argument, NULL, 'N' },
		{ "count-objects", no_argument, NULL, 'C' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct options o = { .seconds = 3, .rounds = 5, .round_seconds = 1 };
	unsigned long n;
	double seconds;
	char *end;
	bool ok;
	int opt;

	while ((opt = getopt_long(argc, argv, "h", options, NULL)) != -1) {
		switch (opt) {
		case 'H': o.host = optarg; break;
		case 'p': o.port = optarg; break;
		case 'a': o.ca = optarg; break;
		case 'c': o.cert = optarg; break;
		case 'k': o.key = optarg; break;
		case 'm': o.module = optarg; break;
		case 't': o.token = optarg; break;
		case 'P': o.pin_file = optarg; break;
		case 'l': o.lock_file = optarg; break;
		case 'v': o.verify_port = optarg; break;
		case 'x': o.haproxy_port = optarg; break;
		case 'o': o.pool_port = optarg; break;
		case 'M': o.metrics_port = optarg; break;
		case 'F': o.metrics_file = optarg; break;
		case 'D': o.handler_port = optarg; break;
		case 'L': o.loop_port = optarg; break;
		case 'B': o.big_port = optarg; break;
		case 'G': o.big_handler_port = optarg; break;
		case 'K': o.big_key = optarg; break;
		case 'C': o.count_objects = true; break;
		case 's':
		case 'S':
			errno = 0;
			seconds = strtod(optarg, &end);
			if (errno || end == optarg || *end || !(seconds > 0 && seconds <= 600)) {
				fprintf(stderr, "kmip_bench: --%s: a number from 0 to 600\n",
					opt == 's' ? "seconds" : "round-seconds");
				return -1;
			}
			*(opt == 's' ? &o.seconds : &o.round_seconds) = seconds;
			break;
		case 'R':
		case 'N':
			errno = 0;
			n = strtoul(optarg, &end, 10);
			if (errno || end == optarg || *end || optarg[0] == '-' ||
			    n > (opt == 'R' ? MAX_ROUNDS : 100000)) {
				fprintf(stderr, "kmip_bench: --%s: a number from 0 to %d\n",
					opt == 'R' ? "rounds" : "make-keys", opt == 'R' ? MAX_ROUNDS : 100000);
				return -1;
			}
			*(opt == 'R' ? &o.rounds : &o.make_keys) = (unsigned)n;
			break;
		case 'h': usage(stdout); exit(EXIT_SUCCESS);
		default: usage(stderr); return -1;
		}
	}
	/* What each use needs. */
	ok = o.count_objects || (o.host && o.port && o.ca && o.cert && o.key);
	ok = ok && (o.make_keys || (o.module && o.token && o.pin_file));
	if (optind < argc || !ok || (o.big_key && strlen(o.big_key) > STORE_MAX_UID) ||
	    !o.metrics_port != !o.metrics_file) {
		usage(stderr);
		return -1;
	}
	*ret = o;
	return 0;
}

static int setup_tls(struct bench *b, const char **ret_why)
{
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM };
	unsigned char ip[sizeof(struct in6_addr)];

	b->host_is_ip = inet_pton(AF_INET, b->opt.host, ip) == 1 || inet_pton(AF_INET6, b->opt.host, ip) == 1;
	if (getaddrinfo(b->opt.host, b->opt.port, &hints, &b->addr) != 0) {
		*ret_why = "--host/--port: cannot resolve";
		return KR_E_CONFIG;
	}
	if (b->opt.verify_port && getaddrinfo(b->opt.host, b->opt.verify_port, &hints, &b->verify_addr) != 0) {
		*ret_why = "--host/--verify-port: cannot resolve";
		return KR_E_CONFIG;
	}
	if (b->opt.haproxy_port && getaddrinfo(b->opt.host, b->opt.haproxy_port, &hints, &b->haproxy_addr) != 0) {
		*ret_why = "--host/--haproxy-port: cannot resolve";
		return KR_E_CONFIG;
	}
	if (b->opt.pool_port && getaddrinfo(b->opt.host, b->opt.pool_port, &hints, &b->pool_addr) != 0) {
		*ret_why = "--host/--pool-port: cannot resolve";
		return KR_E_CONFIG;
	}
	if (b->opt.metrics_port && getaddrinfo(b->opt.host, b->opt.metrics_port, &hints, &b->metrics_addr) != 0) {
		*ret_why = "--host/--metrics-port: cannot resolve";
		return KR_E_CONFIG;
	}
	if ((b->opt.handler_port && getaddrinfo(b->opt.host, b->opt.handler_port, &hints, &b->handler_addr) != 0) ||
	    (b->opt.loop_port && getaddrinfo(b->opt.host, b->opt.loop_port, &hints, &b->loop_addr) != 0) ||
	    (b->opt.big_port && getaddrinfo(b->opt.host, b->opt.big_port, &hints, &b->big_addr) != 0) ||
	    (b->opt.big_handler_port &&
	     getaddrinfo(b->opt.host, b->opt.big_handler_port, &hints, &b->big_handler_addr) != 0)) {
		*ret_why = "--host and a port of the limits: cannot resolve";
		return KR_E_CONFIG;
	}
	if (gnutls_certificate_allocate_credentials(&b->cred) < 0) {
		*ret_why = "TLS credentials";
		return KR_E_NOMEM;
	}
	if (gnutls_certificate_set_x509_trust_file(b->cred, b->opt.ca, GNUTLS_X509_FMT_PEM) <= 0) {
		*ret_why = "--ca: no usable CA certificate";
		return KR_E_CONFIG;
	}
	if (gnutls_certificate_set_x509_key_file2(b->cred, b->opt.cert, b->opt.key, GNUTLS_X509_FMT_PEM, NULL, 0) <
	    0) {
		*ret_why = "--cert/--key: cannot load the client certificate and key";
		return KR_E_CONFIG;
	}
	return 0;
}

/* Discover Versions on one connection: TLS, the relay's message handling and the
 * client's, without the token - the least a request costs. */
static void measure_round_trip(const struct bench *b, struct result *ret)
{
	struct run run = { .b = b, .n_items = 1, .seconds = b->opt.seconds };
	uint8_t *req = NULL;
	size_t len = 0;
	int r = build(KMIP_OP_DISCOVER_VERSIONS, fill_nothing, NULL, 1, &req, &len);

	if (r < 0) {
		*ret = (struct result){ 0 };
		set_why(ret, kr_strerror(r));
		return;
	}
	run.req = req;
	run.len = len;
	persistent(&run);
	*ret = run.res;
	ttlv_buf_free(req, len);
}

/* The Sign requests, one and a batch, and the loop's: the key's CKA_ID (32 bytes
 * in the keys the relay makes), then the data's first bytes. */
static int prepare_requests(struct key *k)
{
	uint8_t id[STORE_MAX_ID];
	size_t id_len = 0;
	const char *why;
	int r = build(KMIP_OP_SIGN, fill_sign, k, 1, &k->sign, &k->sign_len);

	if (r == 0)
		r = build(KMIP_OP_SIGN, fill_sign, k, BATCH, &k->sign_batch, &k->sign_batch_len);
	if (r == 0 && private_key_id(k->priv, id, &id_len, &why) == 0 && id_len == STORE_ID_LEN) {
		memcpy(k->loop_req, id, id_len);
		memcpy(k->loop_req + id_len, data, LOOP_REQUEST - id_len);
	}
	return r;
}

int main(int argc, char **argv)
{
	struct bench b = { 0 };
	struct key keys[] = {
		{ .title = "RSA-2048, PKCS#1 v1.5 with SHA-256", .type = CKK_RSA, .target_one = 0.90, .target_batch = 0.90 },
		{ .title = "ECDSA P-256 with SHA-256", .type = CKK_EC, .target_one = 0.60, .target_batch = 0.85 },
	};
	const size_t n_keys = sizeof(keys) / sizeof(keys[0]);
	struct key big = { .title = "RSA-2048 on the 300-key token", .type = CKK_RSA };
	struct conn c = { .fd = -1 };
	struct result floor = { 0 };
	struct p11_token *tok = NULL;
	struct legs *legs = NULL;
	size_t objects = 0;
	const char *why = "out of memory", *step = "set-up";
	int r;

	/* Before anything else, as in the relay: GnuTLS must not load p11-kit's
	 * registered modules, which would put a second copy of SoftHSM in here. */
	if (gnutls_pkcs11_init(GNUTLS_PKCS11_FLAG_MANUAL, NULL) < 0)
		return EXIT_FAILURE;
	if (parse_options(argc, argv, &b.opt) < 0)
		return EXIT_FAILURE;
	if (gnutls_rnd(GNUTLS_RND_NONCE, data, sizeof(data)) < 0)
		return EXIT_FAILURE;
	if (b.opt.count_objects) {
		step = "counting the token's objects";
		r = count_objects(&b.opt, &why);
		goto out;
	}
	r = setup_tls(&b, &why);
	if (r == 0 && b.opt.make_keys) {
		step = "making the key pairs";
		r = make_keys(&b, &why);
		goto out;
	}
	if (r == 0 && b.opt.big_key) {
		snprintf(big.priv, sizeof(big.priv), "%s", b.opt.big_key);
		if ((r = prepare_requests(&big)) < 0)
			why = kr_strerror(r);
	}
	if (r == 0 && b.opt.rounds && (b.handler_addr || b.loop_addr || b.big_addr) && !(legs = calloc(1, sizeof(*legs))))
		r = KR_E_NOMEM;
	if (r == 0) {
		step = "connecting to the relay";
		r = conn_open(&b, NULL, &c, &why);
	}
	for (size_t i = 0; r == 0 && i < n_keys; i++) {
		step = "creating the key pairs";
		r = create_key(&c, &keys[i], &why);
		if (r == 0 && (r = prepare_requests(&keys[i])) < 0)
			why = kr_strerror(r);
		if (r == 0) {
			step = "signing once";
			r = check_key(&c, &keys[i], &why);
		}
	}
	/* Nothing else uses the token while this process logs in. */
	conn_close(&c);
	if (r == 0) {
		step = "opening the token in this process";
		r = open_keys(&b.opt, keys, n_keys, &tok, &why);
		if (r == 0)
			r = token_objects(tok, &objects, &why);
	}
	if (r == 0) {
		measure_in_process(tok, &b.opt, keys, n_keys);
		measure_round_trip(&b, &floor);
		for (size_t i = 0; i < n_keys; i++)
			measure_relay(&b, &keys[i]);
		if (b.metrics_addr)
			measure_metrics(&b, &keys[n_keys - 1]);
		if (legs)
			measure_limits(&b, tok, &keys[0], &keys[1], &big, legs);
	}
	p11_close(tok);
	/* The keys go before anything is printed: a reader that goes away must not
	 * leave them in the token. */
	if (keys[0].priv[0] || keys[1].priv[0]) {
		const char *close_why = NULL;
		bool connected = conn_open(&b, NULL, &c, &close_why) == 0;

		for (size_t i = 0; i < n_keys; i++)
			destroy_key(connected ? &c : NULL, &keys[i], close_why);
		conn_close(&c);
	}
	if (r == 0) {
		print_report(&b.opt, objects, &floor, keys, n_keys);
		if (legs)
			print_limits(&b.opt, legs);
	}
out:
	if (r < 0)
		fprintf(stderr, "kmip_bench: %s: %s\n", step, why);
	for (size_t i = 0; i < n_keys; i++) {
		ttlv_buf_free(keys[i].sign, keys[i].sign_len);
		ttlv_buf_free(keys[i].sign_batch, keys[i].sign_batch_len);
	}
	ttlv_buf_free(big.sign, big.sign_len);
	ttlv_buf_free(big.sign_batch, big.sign_batch_len);
	free(legs);
	if (b.cred)
		gnutls_certificate_free_credentials(b.cred);
	if (b.addr)
		freeaddrinfo(b.addr);
	if (b.verify_addr)
		freeaddrinfo(b.verify_addr);
	if (b.haproxy_addr)
		freeaddrinfo(b.haproxy_addr);
	if (b.pool_addr)
		freeaddrinfo(b.pool_addr);
	if (b.metrics_addr)
		freeaddrinfo(b.metrics_addr);
	if (b.handler_addr)
		freeaddrinfo(b.handler_addr);
	if (b.loop_addr)
		freeaddrinfo(b.loop_addr);
	if (b.big_addr)
		freeaddrinfo(b.big_addr);
	if (b.big_handler_addr)
		freeaddrinfo(b.big_handler_addr);
	return r < 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}

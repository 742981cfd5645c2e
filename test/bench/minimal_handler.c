/* SPDX-License-Identifier: BSD-3-Clause */
#include "config.h"

/* minimal_handler: the least a connection to kmip-relay must cost, for
 * scripts/bench to measure the relay against. Run per connection by
 * systemd-socket-activate --accept --inetd, as quickstart runs the relay, it does
 * the relay's TLS and PKCS#11 work for one Sign and nothing else: mutual TLS 1.3
 * with the relay's certificates, priority string and ticket key; dlopen of the
 * module; C_Initialize to C_Login under the relay's lock file; a find of the key
 * by CKA_ID; one C_Sign (RSA: CKM_SHA256_RSA_PKCS; EC: SHA-256 with GnuTLS, then
 * CKM_ECDSA, the signature DER-encoded as the relay sends it).
 *
 * It reads from a KMIP request only the Protocol Version, the first Unique
 * Identifier ("<hex CKA_ID>_priv", as the relay names private keys) and the first
 * Data, and answers one successful Sign in a fixed layout. It skips what makes the
 * relay a KMIP server: batches (only one Sign is answered), Cryptographic
 * Parameters (RSA is PKCS#1 v1.5, all is SHA-256), access control (any
 * certificate from --ca may sign), the key's state, usage and metadata, the token's
 * mechanism list, the config file, audit and the journal. A failure gets no KMIP
 * error: the connection is closed and the reason logged.
 *
 * With --loop it is the persistent loop instead: on one connection, request after
 * request of 48 bytes (the key's 32-byte CKA_ID, then 16 bytes), each answered
 * with one C_Sign of 512 bytes (the 16 bytes 32 times over: as much as
 * kmip_bench's Sign data, so the hashing costs the same) as a TTLV Signature Data
 * item. That is the limit for one-request-at-a-time signing.
 *
 * Each connection appends one line to --log: its phase times in ms, as the
 * relay's connection summary has them (phases_ms=), and the request count. */

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <p11-kit/pkcs11.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "cfg.h"
#include "kmip.h"

#define IO_TIMEOUT_S 30     /* any read or write, and the handshake */
#define MAX_REQUEST 65536   /* a Sign request of kmip_bench is about 700 bytes */
#define MAX_KEY_ID 64       /* a Unique Identifier's CKA_ID (older relays made 20 bytes) */
#define LOOP_KEY_ID 32      /* --loop: the CKA_ID of the keys this relay makes */
#define LOOP_REQUEST 48     /* --loop: CKA_ID, then the bytes to sign */
#define LOOP_DATA_LEN 512   /* what --loop signs: as much as kmip_bench's data */
#define MAX_SIG 512         /* RSA-4096 */

struct options {
	const char *cert, *key, *ca, *ticket_key, *priority, *module, *token, *pin_file, *lock_file, *log;
	bool loop;
};

/* The milliseconds of each phase, as the relay's connection summary has them
 * (phases_ms): the TLS handshake, dlopen, the lock (waiting for it included) to
 * C_Login done, and the first request from when it has been read until its
 * answer is sent (loading and login included). */
struct phases {
	double hs, load, login, first;
	unsigned requests;
};

struct token {
	void *dl;
	CK_FUNCTION_LIST *f;
	CK_SESSION_HANDLE session;
	bool initialized, has_session;
	/* The key of the last request. */
	uint8_t key_id[MAX_KEY_ID];
	size_t key_id_len;
	CK_OBJECT_HANDLE key;
	CK_KEY_TYPE key_type;
	bool has_key;
};

/* What the handler reads from a KMIP request. */
struct sign_request {
	int32_t major, minor;
	const uint8_t *uid, *data;
	size_t uid_len, data_len;
};

static double now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* TLS. */

static int verify_client(gnutls_session_t s)
{
	gnutls_typed_vdata_st purpose = { GNUTLS_DT_KEY_PURPOSE_OID, (unsigned char *)GNUTLS_KP_TLS_WWW_CLIENT, 0 };
	unsigned status = 0;

	if (gnutls_certificate_verify_peers(s, &purpose, 1, &status) < 0 || status != 0)
		return GNUTLS_E_CERTIFICATE_VERIFICATION_ERROR;
	return 0;
}

/* The session on fd, with credentials and ticket key that live as long as it. */
static int tls_setup(const struct options *o, int fd, gnutls_certificate_credentials_t *ret_cred,
		     gnutls_datum_t *ret_ticket_key, gnutls_session_t *ret, const char **ret_why)
{
	gnutls_certificate_credentials_t cred = NULL;
	gnutls_datum_t ticket_key = { 0 };
	gnutls_session_t s = NULL;
	int r;

	if ((r = gnutls_certificate_allocate_credentials(&cred)) < 0 ||
	    (r = gnutls_certificate_set_x509_key_file2(cred, o->cert, o->key, GNUTLS_X509_FMT_PEM, NULL, 0)) < 0) {
		*ret_why = "--cert/--key: cannot load the certificate and key";
		goto out;
	}
	if ((r = gnutls_certificate_set_x509_trust_file(cred, o->ca, GNUTLS_X509_FMT_PEM)) <= 0) {
		*ret_why = "--ca: no usable CA certificate";
		r = GNUTLS_E_NO_CERTIFICATE_FOUND;
		goto out;
	}
	if (o->ticket_key && ((r = gnutls_load_file(o->ticket_key, &ticket_key)) < 0 ||
			      ticket_key.size != CFG_TICKET_KEY_SIZE)) {
		*ret_why = "--ticket-key: must hold exactly 64 bytes";
		r = GNUTLS_E_INVALID_REQUEST;
		goto out;
	}
	if ((r = gnutls_init(&s, GNUTLS_SERVER | GNUTLS_NO_SIGNAL)) < 0 ||
	    (r = gnutls_priority_set_direct(s, o->priority, NULL)) < 0 ||
	    (r = gnutls_credentials_set(s, GNUTLS_CRD_CERTIFICATE, cred)) < 0 ||
	    (ticket_key.data && (r = gnutls_session_ticket_enable_server(s, &ticket_key)) < 0)) {
		*ret_why = "cannot set up the TLS session";
		goto out;
	}
	gnutls_certificate_server_set_request(s, GNUTLS_CERT_REQUIRE);
	gnutls_session_set_verify_function(s, verify_client);
	gnutls_transport_set_int(s, fd);
	gnutls_handshake_set_timeout(s, IO_TIMEOUT_S * 1000u);
	*ret_cred = cred;
	*ret_ticket_key = ticket_key;
	*ret = s;
	return 0;
out:
	if (s)
		gnutls_deinit(s);
	gnutls_free(ticket_key.data);
	if (cred)
		gnutls_certificate_free_credentials(cred);
	return KR_E_CONFIG;
}

/* Reads len bytes; *ret_eof is set if the peer closed before the first one. */
static int tls_read(gnutls_session_t s, uint8_t *buf, size_t len, bool *ret_eof)
{
	size_t got = 0;

	while (got < len) {
		ssize_t r = gnutls_record_recv(s, buf + got, len - got);

		if (r > 0)
			got += (size_t)r;
		else if (r == 0 || r == GNUTLS_E_PREMATURE_TERMINATION) {
			if (ret_eof && got == 0)
				*ret_eof = true;
			return got == 0 ? KR_E_TLS_CLOSED : KR_E_TLS_TRUNCATED;
		} else if (r == GNUTLS_E_AGAIN) /* SO_RCVTIMEO expired */
			return KR_E_TLS_TIMEOUT;
		else if (r != GNUTLS_E_INTERRUPTED)
			return KR_E_TLS_IO;
	}
	return 0;
}

static int tls_write(gnutls_session_t s, const uint8_t *buf, size_t len)
{
	size_t done = 0;

	while (done < len) {
		ssize_t r = gnutls_record_send(s, buf + done, len - done);

		if (r > 0)
			done += (size_t)r;
		else if (r != GNUTLS_E_INTERRUPTED)
			return KR_E_TLS_IO;
	}
	return 0;
}

/* PKCS#11. */

static int read_pin(const char *file, char *pin, size_t size, size_t *ret_len)
{
	int fd = open(file, O_RDONLY | O_CLOEXEC);
	ssize_t n;

	if (fd < 0)
		return KR_E_P11_PIN;
	n = read(fd, pin, size);
	close(fd);
	if (n <= 0 || (size_t)n == size)
		return KR_E_P11_PIN;
	while (n > 0 && (pin[n - 1] == '\n' || pin[n - 1] == '\r'))
		n--;
	*ret_len = (size_t)n;
	return 0;
}

static int load_module(struct token *t, const char *module, const char **ret_why)
{
	CK_C_GetFunctionList get_list;

	if (!(t->dl = dlopen(module, RTLD_NOW | RTLD_LOCAL))) {
		*ret_why = "--module: cannot load the module";
		return KR_E_P11_MODULE;
	}
	get_list = (CK_C_GetFunctionList)dlsym(t->dl, "C_GetFunctionList");
	if (!get_list || get_list(&t->f) != CKR_OK || !t->f) {
		*ret_why = "--module: no PKCS#11 function list";
		return KR_E_P11_MODULE;
	}
	return 0;
}

/* The slot whose token has this label. */
static int find_slot(struct token *t, const char *label, CK_SLOT_ID *ret)
{
	CK_SLOT_ID slots[64];
	CK_ULONG n = sizeof(slots) / sizeof(slots[0]);
	char want[32];
	size_t len = strlen(label);

	if (len > sizeof(want) || t->f->C_GetSlotList(CK_TRUE, slots, &n) != CKR_OK)
		return KR_E_P11_TOKEN;
	memset(want, ' ', sizeof(want));
	memcpy(want, label, len);
	for (CK_ULONG i = 0; i < n; i++) {
		CK_TOKEN_INFO ti;

		if (t->f->C_GetTokenInfo(slots[i], &ti) == CKR_OK && memcmp(ti.label, want, sizeof(want)) == 0) {
			*ret = slots[i];
			return 0;
		}
	}
	return KR_E_P11_TOKEN;
}

/* C_Initialize to C_Login, under the lock: SoftHSM rewrites its token file on
 * every login, and another process reading it meanwhile finds no token. */
static int open_token(struct token *t, const struct options *o, const char *pin, size_t pin_len,
		      const char **ret_why)
{
	CK_C_INITIALIZE_ARGS args = { .flags = CKF_OS_LOCKING_OK };
	CK_SLOT_ID slot;
	int lock = -1, r = KR_E_SYSTEM;

	if (o->lock_file) {
		lock = open(o->lock_file, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
		while (lock >= 0 && flock(lock, LOCK_EX) < 0 && errno == EINTR)
			;
		if (lock < 0) {
			*ret_why = "--lock-file: cannot open the lock file";
			goto out;
		}
	}
	r = KR_E_P11_MODULE;
	if (t->f->C_Initialize(&args) != CKR_OK) {
		*ret_why = "C_Initialize failed";
		goto out;
	}
	t->initialized = true;
	if ((r = find_slot(t, o->token, &slot)) < 0) {
		*ret_why = "--token: no token with that label";
		goto out;
	}
	r = KR_E_P11_TOKEN;
	if (t->f->C_OpenSession(slot, CKF_SERIAL_SESSION, NULL, NULL, &t->session) != CKR_OK) {
		*ret_why = "C_OpenSession failed";
		goto out;
	}
	t->has_session = true;
	if (t->f->C_Login(t->session, CKU_USER, (CK_UTF8CHAR *)pin, pin_len) != CKR_OK) {
		*ret_why = "C_Login failed";
		r = KR_E_P11_PIN;
		goto out;
	}
	r = 0;
out:
	if (lock >= 0)
		close(lock); /* releases it */
	return r;
}

static void close_token(struct token *t)
{
	if (t->has_session)
		t->f->C_CloseSession(t->session);
	if (t->initialized)
		t->f->C_Finalize(NULL);
	if (t->dl)
		dlclose(t->dl);
}

/* The private key with this CKA_ID and its type, kept for the next request. */
static int find_key(struct token *t, const uint8_t *id, size_t id_len, const char **ret_why)
{
	CK_OBJECT_CLASS cls = CKO_PRIVATE_KEY;
	CK_ATTRIBUTE tmpl[] = { { CKA_CLASS, &cls, sizeof(cls) }, { CKA_ID, (void *)id, id_len } };
	CK_ATTRIBUTE type = { CKA_KEY_TYPE, &t->key_type, sizeof(t->key_type) };
	CK_ULONG n = 0;
	CK_RV rv;

	if (t->has_key && id_len == t->key_id_len && memcmp(t->key_id, id, id_len) == 0)
		return 0;
	t->has_key = false;
	rv = t->f->C_FindObjectsInit(t->session, tmpl, 2);
	if (rv == CKR_OK) {
		rv = t->f->C_FindObjects(t->session, &t->key, 1, &n);
		t->f->C_FindObjectsFinal(t->session);
	}
	if (rv != CKR_OK || n != 1 || t->f->C_GetAttributeValue(t->session, t->key, &type, 1) != CKR_OK) {
		*ret_why = "the key is not in the token";
		return KR_E_P11_NOT_FOUND;
	}
	memcpy(t->key_id, id, id_len);
	t->key_id_len = id_len;
	t->has_key = true;
	return 0;
}

/* One C_Sign with the key, as the relay signs on SoftHSM; an ECDSA signature
 * DER-encoded. */
static int sign(struct token *t, const uint8_t *data, size_t len, uint8_t *out, size_t *inout_len,
		const char **ret_why)
{
	CK_MECHANISM mech = { t->key_type == CKK_RSA ? CKM_SHA256_RSA_PKCS : CKM_ECDSA, NULL, 0 };
	uint8_t digest[32], raw[MAX_SIG];
	CK_ULONG raw_len = sizeof(raw);
	gnutls_datum_t r, s, der = { 0 };
	int ret = KR_E_P11_DATA;

	if (t->key_type != CKK_RSA && t->key_type != CKK_EC) {
		*ret_why = "the key is neither RSA nor EC";
		return KR_E_P11_MECHANISM;
	}
	if (t->key_type == CKK_EC) {
		if (gnutls_hash_fast(GNUTLS_DIG_SHA256, data, len, digest) < 0) {
			*ret_why = "SHA-256 failed";
			return KR_E_P11_FAILED;
		}
		data = digest;
		len = sizeof(digest);
	}
	if (t->f->C_SignInit(t->session, &mech, t->key) != CKR_OK ||
	    t->f->C_Sign(t->session, (CK_BYTE *)data, len, raw, &raw_len) != CKR_OK) {
		*ret_why = "C_Sign failed";
		return KR_E_P11_FAILED;
	}
	if (t->key_type == CKK_RSA) {
		if (raw_len > *inout_len)
			goto out;
		memcpy(out, raw, raw_len);
		*inout_len = raw_len;
		return 0;
	}
	r = (gnutls_datum_t){ raw, (unsigned)raw_len / 2 };
	s = (gnutls_datum_t){ raw + raw_len / 2, (unsigned)raw_len / 2 };
	if (gnutls_encode_rs_value(&der, &r, &s) < 0 || der.size > *inout_len)
		goto out;
	memcpy(out, der.data, der.size);
	*inout_len = der.size;
	ret = 0;
out:
	if (ret < 0)
		*ret_why = "the signature does not fit";
	gnutls_free(der.data);
	return ret;
}

/* KMIP: just enough of TTLV to read a Sign request and write its answer. */

static uint32_t be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static size_t padded(size_t len)
{
	return (len + 7) & ~(size_t)7;
}

/* Walks the items in buf[0..len), into structures, keeping the first of each
 * field the handler reads. */
static int walk(const uint8_t *buf, size_t len, unsigned depth, struct sign_request *req)
{
	size_t off = 0;
	int r;

	if (depth > TTLV_MAX_DEPTH)
		return KR_E_TTLV_DEPTH;
	while (off < len) {
		uint32_t tag, n;
		uint8_t type;
		const uint8_t *v;

		if (len - off < TTLV_HEADER_LEN)
			return KR_E_TTLV_TRUNCATED;
		tag = be32(buf + off) >> 8;
		type = buf[off + 3];
		n = be32(buf + off + 4);
		v = buf + off + TTLV_HEADER_LEN;
		off += TTLV_HEADER_LEN;
		if (n > len - off || padded(n) > len - off)
			return KR_E_TTLV_OVERRUN;
		if (type == TTLV_STRUCTURE && (r = walk(v, n, depth + 1, req)) < 0)
			return r;
		if (n == 4 && type == TTLV_INTEGER && tag == KMIP_TAG_PROTOCOL_VERSION_MAJOR)
			req->major = (int32_t)be32(v);
		else if (n == 4 && type == TTLV_INTEGER && tag == KMIP_TAG_PROTOCOL_VERSION_MINOR)
			req->minor = (int32_t)be32(v);
		else if (type == TTLV_TEXT_STRING && tag == KMIP_TAG_UNIQUE_IDENTIFIER && !req->uid) {
			req->uid = v;
			req->uid_len = n;
		} else if (type == TTLV_BYTE_STRING && tag == KMIP_TAG_DATA && !req->data) {
			req->data = v;
			req->data_len = n;
		}
		off += padded(n);
	}
	return 0;
}

/* "<hex CKA_ID>_priv" to the CKA_ID and its length. */
static int uid_key_id(const uint8_t *uid, size_t len, uint8_t id[MAX_KEY_ID], size_t *ret_id_len)
{
	static const char suffix[] = "_priv";
	const size_t hex = len - strlen(suffix);

	if (len <= strlen(suffix) || hex % 2 || hex > 2 * MAX_KEY_ID || memcmp(uid + hex, suffix, strlen(suffix)) != 0)
		return KR_E_P11_NOT_FOUND;
	*ret_id_len = MAX_KEY_ID;
	return gnutls_hex_decode(&(gnutls_datum_t){ (unsigned char *)uid, (unsigned)hex }, id, ret_id_len) == 0
		       ? 0
		       : KR_E_P11_NOT_FOUND;
}

/* A writer into a fixed buffer; structures get their length when they end. */
struct writer {
	uint8_t *buf;
	size_t len, size;
	size_t open[4];
	unsigned depth;
	bool failed;
};

static void put_header(struct writer *w, uint32_t tag, uint8_t type, size_t len)
{
	uint8_t *p = w->buf + w->len;

	if (w->failed || w->size - w->len < TTLV_HEADER_LEN + padded(len)) {
		w->failed = true;
		return;
	}
	p[0] = (uint8_t)(tag >> 16), p[1] = (uint8_t)(tag >> 8), p[2] = (uint8_t)tag, p[3] = type;
	p[4] = (uint8_t)(len >> 24), p[5] = (uint8_t)(len >> 16), p[6] = (uint8_t)(len >> 8), p[7] = (uint8_t)len;
	w->len += TTLV_HEADER_LEN;
}

static void put(struct writer *w, uint32_t tag, uint8_t type, const void *value, size_t len)
{
	put_header(w, tag, type, len);
	if (w->failed)
		return;
	memcpy(w->buf + w->len, value, len);
	memset(w->buf + w->len + len, 0, padded(len) - len);
	w->len += padded(len);
}

static void put_u32(struct writer *w, uint32_t tag, uint8_t type, uint32_t v)
{
	uint8_t b[4] = { (uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v };

	put(w, tag, type, b, sizeof(b));
}

static void put_time(struct writer *w, uint32_t tag, int64_t v)
{
	uint8_t b[8];

	for (int i = 0; i < 8; i++)
		b[i] = (uint8_t)((uint64_t)v >> (56 - 8 * i));
	put(w, tag, TTLV_DATE_TIME, b, sizeof(b));
}

static void begin(struct writer *w, uint32_t tag)
{
	put_header(w, tag, TTLV_STRUCTURE, 0);
	if (w->failed || w->depth == sizeof(w->open) / sizeof(w->open[0])) {
		w->failed = true;
		return;
	}
	w->open[w->depth++] = w->len;
}

static void end(struct writer *w)
{
	size_t start, n;
	uint8_t *p;

	if (w->failed)
		return;
	start = w->open[--w->depth];
	n = w->len - start;
	p = w->buf + start - 4;
	p[0] = (uint8_t)(n >> 24), p[1] = (uint8_t)(n >> 16), p[2] = (uint8_t)(n >> 8), p[3] = (uint8_t)n;
}

/* Response Message: a header in the request's version, one successful Sign. */
static int sign_response(const struct sign_request *req, const uint8_t *sig, size_t sig_len, uint8_t *out,
			 size_t size, size_t *ret_len)
{
	struct writer w = { .buf = out, .size = size };

	begin(&w, KMIP_TAG_RESPONSE_MESSAGE);
	begin(&w, KMIP_TAG_RESPONSE_HEADER);
	begin(&w, KMIP_TAG_PROTOCOL_VERSION);
	put_u32(&w, KMIP_TAG_PROTOCOL_VERSION_MAJOR, TTLV_INTEGER, (uint32_t)req->major);
	put_u32(&w, KMIP_TAG_PROTOCOL_VERSION_MINOR, TTLV_INTEGER, (uint32_t)req->minor);
	end(&w);
	put_time(&w, KMIP_TAG_TIME_STAMP, (int64_t)time(NULL));
	put_u32(&w, KMIP_TAG_BATCH_COUNT, TTLV_INTEGER, 1);
	end(&w);
	begin(&w, KMIP_TAG_BATCH_ITEM);
	put_u32(&w, KMIP_TAG_OPERATION, TTLV_ENUMERATION, KMIP_OP_SIGN);
	put_u32(&w, KMIP_TAG_RESULT_STATUS, TTLV_ENUMERATION, KMIP_STATUS_SUCCESS);
	begin(&w, KMIP_TAG_RESPONSE_PAYLOAD);
	put(&w, KMIP_TAG_UNIQUE_IDENTIFIER, TTLV_TEXT_STRING, req->uid, req->uid_len);
	put(&w, KMIP_TAG_SIGNATURE_DATA, TTLV_BYTE_STRING, sig, sig_len);
	end(&w);
	end(&w);
	end(&w);
	if (w.failed)
		return KR_E_KMIP_TOO_BIG;
	*ret_len = w.len;
	return 0;
}

/* The connection. */

/* Reads the PIN, loads the module and logs in, for the first request; the
 * phases as the relay times them. */
static int first_open(struct token *t, const struct options *o, struct phases *ph, const char **ret_why)
{
	char pin[256];
	size_t pin_len = 0;
	double t0;
	int r = read_pin(o->pin_file, pin, sizeof(pin), &pin_len);

	if (r < 0) {
		*ret_why = "--pin-file: cannot read the PIN";
		goto out;
	}
	t0 = now_ms();
	r = load_module(t, o->module, ret_why);
	ph->load = now_ms() - t0;
	if (r < 0)
		goto out;
	t0 = now_ms();
	r = open_token(t, o, pin, pin_len, ret_why);
	ph->login = now_ms() - t0;
out:
	explicit_bzero(pin, sizeof(pin));
	return r;
}

/* One KMIP Sign request, answered. */
static int serve_kmip(gnutls_session_t s, struct token *t, const struct options *o, struct phases *ph,
		      const char **ret_why)
{
	uint8_t hdr[TTLV_HEADER_LEN], *buf = NULL, sig[MAX_SIG], out[1024], id[MAX_KEY_ID];
	size_t len = 0, sig_len = sizeof(sig), out_len = 0, id_len = 0;
	struct sign_request req = { 0 };
	double t0;
	int r;

	if ((r = tls_read(s, hdr, sizeof(hdr), NULL)) < 0) {
		*ret_why = "no request";
		goto out;
	}
	len = be32(hdr + 4);
	r = KR_E_KMIP_NOT_MESSAGE;
	if ((be32(hdr) >> 8) != KMIP_TAG_REQUEST_MESSAGE || hdr[3] != TTLV_STRUCTURE || len > MAX_REQUEST ||
	    !(buf = malloc(len)) || (r = tls_read(s, buf, len, NULL)) < 0) {
		*ret_why = "not a KMIP request";
		goto out;
	}
	t0 = now_ms();
	if ((r = walk(buf, len, 1, &req)) < 0 || (r = req.uid && req.data ? 0 : KR_E_KMIP_MISSING) < 0 ||
	    (r = uid_key_id(req.uid, req.uid_len, id, &id_len)) < 0) {
		*ret_why = "not a Sign request with Data on a private key of the relay's";
		goto out;
	}
	if ((r = first_open(t, o, ph, ret_why)) < 0)
		goto out;
	if ((r = find_key(t, id, id_len, ret_why)) < 0 ||
	    (r = sign(t, req.data, req.data_len, sig, &sig_len, ret_why)) < 0)
		goto out;
	if ((r = sign_response(&req, sig, sig_len, out, sizeof(out), &out_len)) < 0) {
		*ret_why = "the response does not fit";
		goto out;
	}
	if ((r = tls_write(s, out, out_len)) < 0) {
		*ret_why = "cannot send the response";
		goto out;
	}
	ph->first = now_ms() - t0;
	ph->requests = 1;
out:
	free(buf);
	return r;
}

/* --loop: 48-byte requests until the client closes. */
static int serve_loop(gnutls_session_t s, struct token *t, const struct options *o, struct phases *ph,
		      const char **ret_why)
{
	uint8_t req[LOOP_REQUEST], data[LOOP_DATA_LEN], sig[MAX_SIG], out[TTLV_HEADER_LEN + MAX_SIG];
	const size_t chunk = LOOP_REQUEST - LOOP_KEY_ID;
	int r;

	for (;;) {
		size_t sig_len = sizeof(sig);
		struct writer w = { .buf = out, .size = sizeof(out) };
		bool eof = false;
		double t0;

		if ((r = tls_read(s, req, sizeof(req), &eof)) < 0) {
			if (eof)
				return 0;
			*ret_why = "the request is cut short";
			return r;
		}
		t0 = now_ms();
		if (!t->dl && (r = first_open(t, o, ph, ret_why)) < 0)
			return r;
		for (size_t i = 0; i < sizeof(data); i += chunk)
			memcpy(data + i, req + LOOP_KEY_ID, sizeof(data) - i < chunk ? sizeof(data) - i : chunk);
		if ((r = find_key(t, req, LOOP_KEY_ID, ret_why)) < 0 ||
		    (r = sign(t, data, sizeof(data), sig, &sig_len, ret_why)) < 0)
			return r;
		put(&w, KMIP_TAG_SIGNATURE_DATA, TTLV_BYTE_STRING, sig, sig_len);
		if (w.failed || (r = tls_write(s, out, w.len)) < 0) {
			*ret_why = "cannot send the answer";
			return w.failed ? KR_E_KMIP_TOO_BIG : r;
		}
		if (ph->requests++ == 0)
			ph->first = now_ms() - t0;
	}
}

static void log_line(const char *file, const struct phases *ph, double total, const char *why)
{
	char line[512];
	int fd, n;

	if (!file)
		return;
	n = snprintf(line, sizeof(line),
		     "minimal_handler: connection phases_ms=handshake:%.2f,load:%.2f,login:%.2f,first:%.2f requests=%u "
		     "duration_ms=%.1f end=\"%s\"\n",
		     ph->hs, ph->load, ph->login, ph->first, ph->requests, total, why ? why : "closed");
	/* One write of a whole line: concurrent connections' lines do not mix. */
	fd = open(file, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0)
		return;
	if (n > 0 && write(fd, line, (size_t)n) < 0)
		n = 0;
	close(fd);
}

static void usage(FILE *out)
{
	fputs("Usage: minimal_handler --cert SERVER.pem --key SERVER.key --ca CA.pem\n"
	      "                       --module MODULE.so --token LABEL --pin-file FILE\n"
	      "                       [--lock-file FILE] [--ticket-key FILE] [--priority STRING]\n"
	      "                       [--log FILE] [--loop]\n"
	      "Serves one connection on fd 0 (systemd-socket-activate --accept --inetd): one\n"
	      "KMIP Sign with a private key the relay made, or with --loop 48-byte requests\n"
	      "(CKA_ID, 16 bytes) each answered with a TTLV Signature Data. scripts/bench runs\n"
	      "it to measure kmip-relay against.\n",
	      out);
}

static int parse_options(int argc, char **argv, struct options *ret)
{
	static const struct option options[] = {
		{ "cert", required_argument, NULL, 'c' },       { "key", required_argument, NULL, 'k' },
		{ "ca", required_argument, NULL, 'a' },         { "ticket-key", required_argument, NULL, 'T' },
		{ "priority", required_argument, NULL, 'p' },   { "module", required_argument, NULL, 'm' },
		{ "token", required_argument, NULL, 't' },      { "pin-file", required_argument, NULL, 'P' },
		{ "lock-file", required_argument, NULL, 'l' },  { "log", required_argument, NULL, 'L' },
		{ "loop", no_argument, NULL, 'o' },             { "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct options o = { .priority = CFG_DEFAULT_PRIORITY };
	int opt;

	while ((opt = getopt_long(argc, argv, "h", options, NULL)) != -1) {
		switch (opt) {
		case 'c': o.cert = optarg; break;
		case 'k': o.key = optarg; break;
		case 'a': o.ca = optarg; break;
		case 'T': o.ticket_key = optarg; break;
		case 'p': o.priority = optarg; break;
		case 'm': o.module = optarg; break;
		case 't': o.token = optarg; break;
		case 'P': o.pin_file = optarg; break;
		case 'l': o.lock_file = optarg; break;
		case 'L': o.log = optarg; break;
		case 'o': o.loop = true; break;
		case 'h': usage(stdout); exit(EXIT_SUCCESS);
		default: usage(stderr); return -1;
		}
	}
	if (optind < argc || !o.cert || !o.key || !o.ca || !o.module || !o.token || !o.pin_file) {
		usage(stderr);
		return -1;
	}
	*ret = o;
	return 0;
}

int main(int argc, char **argv)
{
	const int fd = STDIN_FILENO, one = 1;
	struct timeval tv = { .tv_sec = IO_TIMEOUT_S };
	gnutls_certificate_credentials_t cred = NULL;
	gnutls_datum_t ticket_key = { 0 };
	gnutls_session_t s = NULL;
	struct token t = { 0 };
	struct phases ph = { 0 };
	struct options o;
	const char *why = NULL;
	double t0 = now_ms(), t1;
	int r;

	if (parse_options(argc, argv, &o) < 0)
		return EXIT_FAILURE;
	/* Small answers to a client that waits for each: no Nagle. The timeouts bound
	 * every read and write. */
	if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) < 0 ||
	    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) < 0 ||
	    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) < 0) {
		why = "fd 0 is not a TCP socket";
		r = KR_E_SYSTEM;
		goto out;
	}
	if ((r = tls_setup(&o, fd, &cred, &ticket_key, &s, &why)) < 0)
		goto out;
	t1 = now_ms();
	do
		r = gnutls_handshake(s);
	while (r < 0 && !gnutls_error_is_fatal(r));
	ph.hs = now_ms() - t1;
	if (r < 0) {
		why = gnutls_strerror(r);
		r = KR_E_TLS_HANDSHAKE;
		goto out;
	}
	r = o.loop ? serve_loop(s, &t, &o, &ph, &why) : serve_kmip(s, &t, &o, &ph, &why);
	gnutls_record_set_timeout(s, 1000);
	(void)gnutls_bye(s, GNUTLS_SHUT_WR);
out:
	close_token(&t);
	if (s)
		gnutls_deinit(s);
	if (ticket_key.data) {
		gnutls_memset(ticket_key.data, 0, ticket_key.size);
		gnutls_free(ticket_key.data);
	}
	if (cred)
		gnutls_certificate_free_credentials(cred);
	log_line(o.log, &ph, now_ms() - t0, why);
	return r < 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}

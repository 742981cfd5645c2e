/* SPDX-License-Identifier: BSD-3-Clause */
#include "config.h"

#include "session.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clock.h"
#include "guard.h"
#include "kmip.h"
#include "log.h"
#include "metrics.h"
#include "ops.h"

#define AUTH_FAILURE_DELAY_S 1

struct session {
	const struct cfg *cfg;
	bool trace;
	const char *peer;                /* the client's "address:port", as the relay formatted it */
	struct tls_conn *tls;            /* NULL: session_answer, no connection */
	const struct tls_identity *id;   /* the TLS peer's */
	struct conn_token *token;
	struct guard guard; /* who the client is, and the gate its requests pass */
	struct ttlv_limits limits;
	char client[160]; /* the identity of the current request's client, for audit */
	char client_json[6 * 160 + 3], namespace_json[6 * CFG_MAX_NAME + 3]; /* the same and the namespace, as JSON */
	const struct cfg_client *entry; /* the current request's "clients" entry, once identified */
	const char *auth_failure;       /* why the current request's client was refused */
	/* The audit records of the request in hand; they are written after its response
	 * is sent, so that logging adds nothing to the client's wait. */
	struct audit_entry *audits;
	size_t n_audits, max_audits;
};

struct audit_entry {
	uint32_t operation;
	enum kmip_reason reason;
	uint64_t latency_us;
	CK_MECHANISM_TYPE mechanism; /* 0: none */
	const char *backend;         /* the pool's backend it used, or "" */
	char uid[STORE_MAX_UID + 1];
};

/* s as a JSON string (quoted and escaped by jansson) into out; "" if it cannot be. */
static void json_quote(const char *s, char *out, size_t size)
{
	json_t *j = json_string(s);
	size_t n = j ? json_dumpb(j, out, size - 1, JSON_ENCODE_ANY) : 0;

	json_decref(j);
	if (n == 0 || n > size - 1)
		n = (size_t)snprintf(out, size, "\"\"");
	out[n] = '\0';
}

/* Only letters, digits and '_': a UID the relay formatted, which needs no escaping. */
static bool plain(const char *s)
{
	for (; *s; s++)
		if (!isalnum((unsigned char)*s) && *s != '_')
			return false;
	return true;
}

/* One audit record: JSON in the log, structured fields in the journal. The record's
 * shape is fixed and its names (operation, result, mechanism) and the peer's
 * address are the relay's own, so it is formatted directly; jansson quotes the
 * values a client or the config chose (s->client_json, s->namespace_json, a UID
 * it did not format). Building it with json_pack and json_dumps cost about 6 µs
 * a Sign, some 7% of a P-256 Sign (perf, over batches of Signs). */
static void audit_write(const struct session *s, const struct audit_entry *e)
{
	const char *result = e->reason ? kmip_enum_name(KMIP_TAG_RESULT_REASON, e->reason) : "Success";
	const char *ns = s->entry ? s->entry->namespace : "";
	const char *mechanism = e->mechanism ? p11_mechanism_name(e->mechanism) : "";
	char latency[24], uid[6 * sizeof(e->uid) + 3], stack[1024], *text = stack;
	int n;

	if (!result)
		result = "Unknown";
	metrics_request(ops_name(e->operation), result, e->latency_us);
	if (plain(e->uid))
		snprintf(uid, sizeof(uid), "\"%s\"", e->uid);
	else
		json_quote(e->uid, uid, sizeof(uid));
	/* A record that does not fit the stack buffer is formatted again in one that
	 * does: none is ever dropped for its length. */
	for (size_t size = sizeof(stack);;) {
		/* Backend names are plain (cfg.c): no quoting needed. */
		n = snprintf(text, size,
			     "{\"client\":%s,\"peer\":\"%s\",\"operation\":\"%s\",\"result\":\"%s\","
			     "\"latency_us\":%" PRIu64 "%s%s%s%s%s%s%s%s%s%s}",
			     s->client_json, s->peer, ops_name(e->operation), result, e->latency_us,
			     ns[0] ? ",\"namespace\":" : "", ns[0] ? s->namespace_json : "", e->uid[0] ? ",\"uid\":" : "",
			     e->uid[0] ? uid : "", mechanism[0] ? ",\"mechanism\":\"" : "", mechanism,
			     mechanism[0] ? "\"" : "", e->backend[0] ? ",\"backend\":\"" : "", e->backend,
			     e->backend[0] ? "\"" : "");
		if (n < 0)
			return;
		if ((size_t)n < size)
			break;
		size = (size_t)n + 1;
		if (!(text = malloc(size))) {
			text = stack; /* the record cut short rather than lost */
			break;
		}
	}
	snprintf(latency, sizeof(latency), "%" PRIu64, e->latency_us);
	{
		const struct log_field fields[] = {
			{ "KMIP_CLIENT", s->client },
			{ "KMIP_PEER", s->peer },
			{ "KMIP_NAMESPACE", ns },
			{ "KMIP_OPERATION", ops_name(e->operation) },
			{ "KMIP_UID", e->uid },
			{ "KMIP_MECHANISM", mechanism },
			{ "KMIP_BACKEND", e->backend },
			{ "KMIP_RESULT", result },
			{ "KMIP_LATENCY_US", latency },
		};

		log_record(e->reason ? LOG_NOTICE : LOG_INFO, text, fields, sizeof(fields) / sizeof(fields[0]));
	}
	if (text != stack)
		free(text);
}

/* Queues the audit record of one batch item. */
static void audit(struct session *s, uint32_t operation, const char *uid, enum kmip_reason reason,
		  CK_MECHANISM_TYPE mechanism, int backend, uint64_t latency_us)
{
	struct audit_entry *e, now = { operation, reason, latency_us, mechanism,
				       backend >= 0 ? token_backend_name(s->token, backend) : "", "" };

	snprintf(now.uid, sizeof(now.uid), "%s", uid ? uid : "");
	if (s->n_audits == s->max_audits) {
		size_t max = s->max_audits ? 2 * s->max_audits : 16;
		struct audit_entry *v = realloc(s->audits, max * sizeof(*v));

		if (!v) { /* no room to queue it: write it now rather than lose it */
			audit_write(s, &now);
			return;
		}
		s->audits = v;
		s->max_audits = max;
	}
	e = &s->audits[s->n_audits++];
	*e = now;
}

/* Writes the queued audit records, in one write per log file. */
static void audit_flush(struct session *s)
{
	log_hold();
	for (size_t i = 0; i < s->n_audits; i++)
		audit_write(s, &s->audits[i]);
	log_release();
	s->n_audits = 0;
}

/* A response message that answers the whole request with one failed item. */
static int whole_message_error(struct kmip_version v, enum kmip_reason r, const char *message, uint8_t **ret,
			       size_t *ret_len)
{
	return kmip_encode_message_error(v, time(NULL), r, message, ret, ret_len);
}

/* The client of the current request, for its audit records: its "clients" entry
 * once the gate identified it (else NULL), else what it presented. */
static void set_client(struct session *s, const struct kmip_header *h, const struct cfg_client *entry)
{
	const struct tls_identity *id = s->id;

	s->entry = entry;
	if (s->entry)
		snprintf(s->client, sizeof(s->client), "%s", s->entry->name);
	else if (id->has_certificate)
		snprintf(s->client, sizeof(s->client), "sha256:%s", id->spki_sha256);
	else if (h && h->username.ptr) {
		char name[65];

		snprintf(s->client, sizeof(s->client), "user:%s",
			 log_escape(h->username.ptr, h->username.len, name, sizeof(name)));
	}
	else
		snprintf(s->client, sizeof(s->client), "anonymous");
	json_quote(s->client, s->client_json, sizeof(s->client_json));
	json_quote(s->entry ? s->entry->namespace : "", s->namespace_json, sizeof(s->namespace_json));
}

/* A failed authentication is logged and answered after a pause, and then the
 * connection closes: each guess costs a second and a connection, and the socket
 * unit's MaxConnectionsPerSource bounds how many guess at once. Returns whether
 * the request in hand failed so. */
static bool delay_failed_authentication(struct session *s)
{
	bool failed = false;

	for (size_t i = 0; i < s->n_audits && !failed; i++)
		if (s->audits[i].reason == KMIP_REASON_AUTHENTICATION_NOT_SUCCESSFUL) {
			struct timespec pause = { .tv_sec = AUTH_FAILURE_DELAY_S };

			if (!s->auth_failure)
				s->auth_failure = s->token->why ? s->token->why : "no credential";
			log_msg(LOG_NOTICE, "authentication failed: %s: %s (answered after %d s) peer=%s", s->client,
				s->auth_failure, AUTH_FAILURE_DELAY_S, s->peer);
			while (nanosleep(&pause, &pause) < 0 && errno == EINTR)
				;
			failed = true;
		}
	s->auth_failure = NULL;
	return failed;
}

/* Puts back what items 0..n-1 changed, last first, when item n failed under the
 * Undo option. An undone item carries no payload: what it gave (a signature, a
 * key) is not given. */
static void undo_items(struct ops_ctx *ctx, struct ops_undo **undos, struct kmip_batch_item *out, size_t n)
{
	static const char failed[] = "the operation succeeded, but could not be undone";

	while (n--) {
		if (ops_undo_apply(ctx, undos[n]) == 0) {
			out[n].result_status = KMIP_STATUS_OPERATION_UNDONE;
			out[n].present &= ~KMIP_FIELD(KMIP_I_PAYLOAD);
			continue;
		}
		log_msg(LOG_ERR, "batch undo: item %zu could not be undone", n);
		out[n].result_status = KMIP_STATUS_OPERATION_FAILED;
		out[n].result_reason = kmip_reason_for(KMIP_REASON_GENERAL_FAILURE, ctx->version);
		out[n].result_message = (struct kmip_text){ failed, sizeof(failed) - 1 };
		out[n].present |= KMIP_FIELD(KMIP_I_RESULT_REASON) | KMIP_FIELD(KMIP_I_RESULT_MESSAGE);
	}
}

/* Runs the batch items; each gets a response item with its payload or failure. */
static void run_items(struct session *s, const struct kmip_message *req, struct kmip_version v,
		     struct kmip_batch_item *out, size_t *ret_n, uint8_t **payloads, size_t *payload_lens)
{
	struct ops_ctx ctx = { .cfg = s->cfg, .version = v, .header = &req->header, .token = s->token,
			       .credential_client = !s->id->has_certificate, .client = s->guard.client };
	bool undo = (req->header.present & KMIP_FIELD(KMIP_H_BATCH_ERROR_OPTION)) &&
		    req->header.batch_error_option == KMIP_BATCH_UNDO;
	bool stop_on_error = undo || !(req->header.present & KMIP_FIELD(KMIP_H_BATCH_ERROR_OPTION)) ||
			     req->header.batch_error_option == KMIP_BATCH_STOP;
	struct ops_undo **undos = undo ? calloc(req->n_items, sizeof(*undos)) : NULL;
	size_t n = 0;

	ops_request_begin();
	for (size_t i = 0; i < req->n_items; i++, n++) {
		const struct kmip_batch_item *in = &req->items[i];
		struct kmip_batch_item *o = &out[i];
		struct ops_result res = { 0 };
		struct ttlv_writer w;
		uint64_t t0 = now_us();
		int r;

		*o = (struct kmip_batch_item){ .present = KMIP_FIELD(KMIP_I_RESULT_STATUS) };
		if (in->present & KMIP_FIELD(KMIP_I_OPERATION)) {
			o->present |= KMIP_FIELD(KMIP_I_OPERATION);
			o->operation = in->operation;
		}
		if (in->present & KMIP_FIELD(KMIP_I_UNIQUE_BATCH_ITEM_ID)) {
			o->present |= KMIP_FIELD(KMIP_I_UNIQUE_BATCH_ITEM_ID);
			o->unique_batch_item_id = in->unique_batch_item_id;
		}
		ttlv_writer_init(&w, s->limits.max_size);
		ctx.uid[0] = '\0';
		ctx.mechanism = 0;
		ctx.backend = -1;
		ctx.undo = undos ? &undos[i] : NULL;
		if (in->error)
			res = (struct ops_result){ kmip_reason_for_error(in->error), kr_strerror(in->error) };
		else if (undo && !undos)
			res = (struct ops_result){ kmip_reason_for_error(KR_E_NOMEM), kr_strerror(KR_E_NOMEM) };
		else
			ops_run(&ctx, in, &w, &res);
		if (!res.reason && w.len) {
			r = ttlv_writer_finish(&w, &payloads[i], &payload_lens[i]);
			if (r < 0)
				res = (struct ops_result){ kmip_reason_for_error(r == KR_E_TTLV_TOO_BIG ? KR_E_KMIP_TOO_BIG : r),
							   kr_strerror(r) };
		}
		ttlv_writer_clear(&w);
		if (res.reason) {
			o->result_status = KMIP_STATUS_OPERATION_FAILED;
			o->result_reason = kmip_reason_for(res.reason, v);
			o->present |= KMIP_FIELD(KMIP_I_RESULT_REASON);
			if (res.message) {
				o->result_message = (struct kmip_text){ res.message, strlen(res.message) };
				o->present |= KMIP_FIELD(KMIP_I_RESULT_MESSAGE);
			}
		} else if (payloads[i]) {
			o->payload.encoded = (struct kmip_bytes){ payloads[i], payload_lens[i] };
			o->present |= KMIP_FIELD(KMIP_I_PAYLOAD);
		}
		audit(s, in->operation, ctx.uid, res.reason, ctx.mechanism, ctx.backend, now_us() - t0);
		if (res.reason && stop_on_error) {
			if (undo)
				undo_items(&ctx, undos, out, i);
			n++;
			break;
		}
	}
	for (size_t i = 0; undos && i < req->n_items; i++)
		ops_undo_free(undos[i]);
	free(undos);
	*ret_n = n;
}

static size_t response_limit(const struct session *s, const struct kmip_header *h)
{
	if ((h->present & KMIP_FIELD(KMIP_H_MAX_RESPONSE_SIZE)) && h->max_response_size > 0 &&
	    (size_t)h->max_response_size < s->limits.max_size)
		return (size_t)h->max_response_size;
	return s->limits.max_size;
}

/* The version to answer a malformed request in: its own if the Protocol Version that
 * opens its header can be read, however malformed the items after it; else 1.0. */
static struct kmip_version malformed_version(const uint8_t *buf, size_t len)
{
	struct kmip_version v = { 1, 0 };

	if (kmip_peek_version(buf, len, &v))
		kmip_negotiate_version(v, &v);
	return v;
}

/* Refuses a whole request that was read: an audit record for each of its batch
 * items, and one error response. */
static int refuse(struct session *s, const struct kmip_message *req, struct kmip_version v,
		  enum kmip_reason reason, const char *message, uint8_t **ret, size_t *ret_len)
{
	for (size_t i = 0; i < req->n_items; i++)
		audit(s, req->items[i].operation, NULL, reason, 0, -1, 0);
	return whole_message_error(v, reason, message, ret, ret_len);
}

static bool undoable(const struct kmip_message *req)
{
	for (size_t i = 0; i < req->n_items; i++)
		if (!ops_undoable(req->items[i].operation))
			return false;
	return true;
}

/* Turns one request into its response. */
static int handle(struct session *s, const uint8_t *buf, size_t len, uint8_t **ret, size_t *ret_len)
{
	struct kmip_message *req = NULL;
	struct kmip_version v;
	struct kmip_batch_item *items = NULL;
	uint8_t **payloads = NULL;
	size_t *payload_lens = NULL, n = 0, limit;
	int r;

	r = kmip_decode_message(buf, len, &s->limits, &req);
	if (r < 0) {
		log_msg(LOG_NOTICE, "malformed request: %s", kr_strerror(r));
		set_client(s, NULL, NULL);
		return whole_message_error(malformed_version(buf, len), kmip_reason_for_error(r), kr_strerror(r),
					   ret, ret_len);
	}
	if (s->trace)
		log_trace("request", req->tree);
	set_client(s, &req->header, NULL);
	if (req->response) {
		r = refuse(s, req, req->header.version, KMIP_REASON_INVALID_MESSAGE, "a server takes requests", ret,
			   ret_len);
		goto out;
	}
	if (!kmip_negotiate_version(req->header.version, &v)) {
		r = refuse(s, req, v, KMIP_REASON_UNSUPPORTED_PROTOCOL_VERSION, "unsupported protocol version", ret,
			   ret_len);
		goto out;
	}
	if (guard_identify(&s->guard, &req->header) < 0) {
		s->auth_failure = s->guard.why;
		r = refuse(s, req, v, KMIP_REASON_AUTHENTICATION_NOT_SUCCESSFUL, kr_strerror(KR_E_AUTH), ret, ret_len);
		goto out;
	}
	set_client(s, &req->header, s->guard.client);
	if ((req->header.present & KMIP_FIELD(KMIP_H_BATCH_ERROR_OPTION)) &&
	    req->header.batch_error_option == KMIP_BATCH_UNDO && !undoable(req)) {
		r = refuse(s, req, v, KMIP_REASON_FEATURE_NOT_SUPPORTED,
			   "Batch Error Continuation Option Undo: a destroyed key cannot be brought back", ret, ret_len);
		goto out;
	}
	items = calloc(req->n_items, sizeof(*items));
	payloads = calloc(req->n_items, sizeof(*payloads));
	payload_lens = calloc(req->n_items, sizeof(*payload_lens));
	if (!items || !payloads || !payload_lens) {
		r = KR_E_NOMEM;
		goto out;
	}
	run_items(s, req, v, items, &n, payloads, payload_lens);
	{
		struct kmip_message resp = {
			.response = true,
			.header = { .present = KMIP_FIELD(KMIP_H_PROTOCOL_VERSION) | KMIP_FIELD(KMIP_H_TIME_STAMP) |
					       KMIP_FIELD(KMIP_H_BATCH_COUNT),
				    .version = v,
				    .time_stamp = time(NULL),
				    .batch_count = (int32_t)n },
			.items = items,
			.n_items = n,
		};

		limit = response_limit(s, &req->header);
		r = kmip_encode_message(&resp, limit, ret, ret_len);
		if (r == KR_E_KMIP_TOO_BIG) {
			char msg[128];

			snprintf(msg, sizeof(msg), "Response exceeds the Maximum Response Size of %zu bytes", limit);
			r = whole_message_error(v, KMIP_REASON_RESPONSE_TOO_LARGE, msg, ret, ret_len);
		}
	}
out:
	for (size_t i = 0; payloads && i < req->n_items; i++)
		ttlv_buf_free(payloads[i], payload_lens[i]);
	free(payloads);
	free(payload_lens);
	free(items);
	kmip_message_free(req);
	return r;
}

static void trace_response(const struct session *s, const uint8_t *buf, size_t len)
{
	struct ttlv_item *tree = NULL;

	if (s->trace && ttlv_decode(buf, len, &s->limits, &tree) == 0) {
		log_trace("response", tree);
		ttlv_free(tree);
	}
}

/* The deadline of one read or write: timeouts.idle from now, and never past the
 * connection's end of life. */
static uint64_t io_deadline(const struct cfg *c, uint64_t end_of_life)
{
	uint64_t idle = now_us() + (uint64_t)c->timeouts.idle * 1000000u;

	return idle < end_of_life ? idle : end_of_life;
}

/* Why a read or write that ran out of time with this deadline ended the
 * connection; else what ended it. */
static const char *io_end(int r, uint64_t deadline, uint64_t end_of_life)
{
	if (r != KR_E_TLS_TIMEOUT)
		return kr_strerror(r);
	return deadline == end_of_life ? "connection lifetime reached" : "idle timeout";
}

/* Serves requests until the connection ends; st->end says why. */
static void serve(struct session *s, struct session_stats *st)
{
	const struct cfg *c = s->cfg;
	struct tls_conn *t = s->tls;
	uint64_t end_of_life = now_us() + (uint64_t)c->timeouts.lifetime * 1000000u;

	for (;;) {
		uint8_t hdr[TTLV_HEADER_LEN], *req = NULL, *resp = NULL;
		size_t total, resp_len = 0;
		uint64_t deadline = io_deadline(c, end_of_life), first_t0;
		bool auth_failed;
		int r;

		r = tls_read_full(t, hdr, sizeof(hdr), deadline);
		if (r < 0) {
			st->end = io_end(r, deadline, end_of_life);
			return;
		}
		/* The size limit is checked before any of the body is read. */
		r = ttlv_frame_length(hdr, &s->limits, &total);
		if (r < 0) {
			/* The framing is lost: answer, then close. */
			set_client(s, NULL, NULL);
			st->end = r == KR_E_TTLV_TOO_BIG ? "request over the size limit" : "request framing invalid";
			if (whole_message_error((struct kmip_version){ 1, 0 }, KMIP_REASON_INVALID_MESSAGE, kr_strerror(r),
						&resp, &resp_len) == 0) {
				if (tls_write_full(t, resp, resp_len, io_deadline(c, end_of_life)) < 0)
					st->end = "request over the size limit; the error response could not be sent";
				ttlv_buf_free(resp, resp_len);
			}
			return;
		}
		req = malloc(total);
		if (!req) {
			st->end = kr_strerror(KR_E_NOMEM);
			return;
		}
		memcpy(req, hdr, sizeof(hdr));
		deadline = io_deadline(c, end_of_life);
		r = tls_read_full(t, req + TTLV_HEADER_LEN, total - TTLV_HEADER_LEN, deadline);
		if (r < 0) {
			ttlv_buf_free(req, total);
			st->end = io_end(r == KR_E_TLS_CLOSED ? KR_E_TLS_TRUNCATED : r, deadline, end_of_life);
			return;
		}
		st->requests++;
		first_t0 = st->requests == 1 ? now_us() : 0;
		r = handle(s, req, total, &resp, &resp_len);
		ttlv_buf_free(req, total); /* it may hold a password */
		if (r < 0) {
			st->end = kr_strerror(r);
			return;
		}
		trace_response(s, resp, resp_len);
		auth_failed = delay_failed_authentication(s);
		deadline = io_deadline(c, end_of_life);
		r = tls_write_full(t, resp, resp_len, deadline);
		if (first_t0)
			st->first_us = now_us() - first_t0;
		ttlv_buf_free(resp, resp_len);
		audit_flush(s);
		if (r < 0) {
			st->end = io_end(r, deadline, end_of_life);
			return;
		}
		if (auth_failed) {
			st->end = "authentication failed";
			return;
		}
	}
}

static void session_init(struct session *s, const struct cfg *c, bool trace, const char *peer, struct tls_conn *t,
			 const struct tls_identity *id, struct conn_token *ct)
{
	*s = (struct session){
		.cfg = c,
		.trace = trace,
		.peer = peer,
		.tls = t,
		.id = id,
		.token = ct,
		.limits = { .max_depth = TTLV_MAX_DEPTH, .max_size = c->limits.max_message_size,
			    .max_items = TTLV_DEFAULT_MAX_ITEMS },
	};
	guard_init(&s->guard, c, id, ct);
	set_client(s, NULL, NULL);
}

static void session_end(struct session *s)
{
	audit_flush(s); /* a request that ended the connection */
	ops_end_connection(s->token);
	guard_clear(&s->guard);
	free(s->audits);
}

void session_run(const struct cfg *c, bool trace, const char *peer, struct tls_conn *t, struct conn_token *ct,
		 struct session_stats *st)
{
	struct session s;

	session_init(&s, c, trace, peer, t, tls_identity(t), ct);
	serve(&s, st);
	session_end(&s);
}

int session_answer(const struct cfg *c, const struct tls_identity *id, struct conn_token *ct, const uint8_t *const *reqs,
		   const size_t *lens, size_t n, int (*reply)(void *arg, const uint8_t *resp, size_t len), void *arg)
{
	struct session s;
	int r = 0;

	session_init(&s, c, false, "-", NULL, id, ct); /* no connection, no peer */
	for (size_t i = 0; i < n && r == 0; i++) {
		uint8_t *resp = NULL;
		size_t resp_len = 0;

		if ((r = handle(&s, reqs[i], lens[i], &resp, &resp_len)) == 0) {
			r = reply(arg, resp, resp_len);
			ttlv_buf_free(resp, resp_len);
		}
		audit_flush(&s);
	}
	session_end(&s);
	return r;
}

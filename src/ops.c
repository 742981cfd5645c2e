/* SPDX-License-Identifier: BSD-3-Clause */
#include "config.h"

#include "ops_internal.h"

#include <string.h>

#include "guard.h"
#include "log.h"
#include "ops_crypto.h"

static void op_discover_versions(struct ops_ctx *ctx, const struct ttlv_item *payload, struct ttlv_writer *w,
				 struct ops_result *res);
static void op_query(struct ops_ctx *ctx, const struct ttlv_item *payload, struct ttlv_writer *w,
		     struct ops_result *res);
static void op_interop(struct ops_ctx *ctx, const struct ttlv_item *payload, struct ttlv_writer *w,
		       struct ops_result *res);
static void op_log(struct ops_ctx *ctx, const struct ttlv_item *payload, struct ttlv_writer *w,
		   struct ops_result *res);

/* In code order: Query lists them so. "changes": it changes the token, which a
 * read-only client may not; "objects": what its request names, which the gate
 * resolves before the handler runs; "repeat": after a device-class failure the
 * pool may run it once more on another backend (single-part operations that
 * change nothing: README's retry table). */
static const struct {
	uint32_t operation;
	ops_handler run;
	bool changes;
	enum guard_objects objects;
	bool repeat;
} ops_table[] = {
	{ KMIP_OP_CREATE, op_create, true, GUARD_NONE, false },
	{ KMIP_OP_CREATE_KEY_PAIR, op_create_key_pair, true, GUARD_NONE, false },
	{ KMIP_OP_REGISTER, op_register, true, GUARD_NONE, false },
	{ KMIP_OP_LOCATE, op_locate, false, GUARD_NONE, true },
	{ KMIP_OP_CHECK, op_check, false, GUARD_OBJECT, true },
	{ KMIP_OP_GET, op_get, false, GUARD_OBJECT, true },
	{ KMIP_OP_GET_ATTRIBUTES, op_get_attributes, false, GUARD_OBJECT_OR_RECORD, true },
	{ KMIP_OP_GET_ATTRIBUTE_LIST, op_get_attribute_list, false, GUARD_OBJECT_OR_RECORD, true },
	{ KMIP_OP_ADD_ATTRIBUTE, op_add_attribute, true, GUARD_OBJECT, false },
	{ KMIP_OP_MODIFY_ATTRIBUTE, op_modify_attribute, true, GUARD_OBJECT, false },
	{ KMIP_OP_DELETE_ATTRIBUTE, op_delete_attribute, true, GUARD_OBJECT, false },
	{ KMIP_OP_ACTIVATE, op_activate, true, GUARD_OBJECT, false },
	{ KMIP_OP_REVOKE, op_revoke, true, GUARD_OBJECT_OR_RECORD, false },
	{ KMIP_OP_DESTROY, op_destroy, true, GUARD_OBJECT, false },
	{ KMIP_OP_QUERY, op_query, false, GUARD_NONE, true },
	{ KMIP_OP_DISCOVER_VERSIONS, op_discover_versions, false, GUARD_NONE, true },
	{ KMIP_OP_ENCRYPT, op_encrypt, false, GUARD_OBJECT_OR_STREAM, true },
	{ KMIP_OP_DECRYPT, op_decrypt, false, GUARD_OBJECT_OR_STREAM, true },
	{ KMIP_OP_SIGN, op_sign, false, GUARD_OBJECT, true },
	{ KMIP_OP_SIGNATURE_VERIFY, op_signature_verify, false, GUARD_OBJECT, true },
	{ KMIP_OP_MAC, op_mac, false, GUARD_OBJECT, true },
	{ KMIP_OP_MAC_VERIFY, op_mac_verify, false, GUARD_OBJECT, true },
	{ KMIP_OP_RNG_RETRIEVE, op_rng_retrieve, false, GUARD_NONE, true },
	{ KMIP_OP_HASH, op_hash, false, GUARD_NONE, true },
	/* For conformance test runs only, with testing.interop. */
	{ KMIP_OP_LOG, op_log, false, GUARD_NONE, false },
	{ KMIP_OP_INTEROP, op_interop, false, GUARD_NONE, false },
};

#define N_OPS (sizeof(ops_table) / sizeof(ops_table[0]))

bool ops_changes(uint32_t operation)
{
	for (size_t i = 0; i < N_OPS; i++)
		if (ops_table[i].operation == operation)
			return ops_table[i].changes;
	return false;
}

static bool is_testing_op(uint32_t operation)
{
	return operation == KMIP_OP_INTEROP || operation == KMIP_OP_LOG;
}

const char *ops_name(uint32_t operation)
{
	const char *name = kmip_enum_name(KMIP_TAG_OPERATION, operation);

	return name ? name : "Unknown";
}

void ops_fail(struct ops_result *res, enum kmip_reason reason, const char *message)
{
	res->reason = reason;
	res->message = message;
}

void ops_fail_err(struct ops_result *res, int err)
{
	static const struct {
		int err;
		enum kmip_reason reason;
	} table[] = {
		{ KR_E_P11_NOT_FOUND, KMIP_REASON_ITEM_NOT_FOUND },
		{ KR_E_P11_PIN, KMIP_REASON_AUTHENTICATION_NOT_SUCCESSFUL },
		{ KR_E_P11_TOKEN, KMIP_REASON_AUTHENTICATION_NOT_SUCCESSFUL },
		{ KR_E_P11_NOT_PERMITTED, KMIP_REASON_PERMISSION_DENIED },
		{ KR_E_P11_SENSITIVE, KMIP_REASON_PERMISSION_DENIED },
		{ KR_E_P11_MECHANISM, KMIP_REASON_UNSUPPORTED_CRYPTOGRAPHIC_PARAMETERS },
		{ KR_E_P11_TEMPLATE, KMIP_REASON_INVALID_ATTRIBUTE_VALUE },
		{ KR_E_P11_DATA, KMIP_REASON_CRYPTOGRAPHIC_FAILURE },
		{ KR_E_P11_SIGNATURE, KMIP_REASON_CRYPTOGRAPHIC_FAILURE },
	};

	for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++)
		if (table[i].err == err) {
			ops_fail(res, table[i].reason, kr_strerror(err));
			return;
		}
	if (err <= -200 && err > -300) /* the KMIP layer's own decoding errors */
		ops_fail(res, kmip_reason_for_error(err), kr_strerror(err));
	else
		ops_fail(res, KMIP_REASON_GENERAL_FAILURE, kr_strerror(err));
}

static void put_version(struct ttlv_writer *w, struct kmip_version v)
{
	ttlv_begin(w, KMIP_TAG_PROTOCOL_VERSION);
	ttlv_put_int(w, KMIP_TAG_PROTOCOL_VERSION_MAJOR, v.major);
	ttlv_put_int(w, KMIP_TAG_PROTOCOL_VERSION_MINOR, v.minor);
	ttlv_end(w);
}

static bool supported(struct kmip_version v)
{
	for (size_t i = 0; i < kmip_n_supported_versions; i++)
		if (kmip_version_cmp(kmip_supported_versions[i], v) == 0)
			return true;
	return false;
}

/* The client's versions that are also ours, in the client's order; all of ours,
 * newest first, if the client named none. */
static void op_discover_versions(struct ops_ctx *ctx, const struct ttlv_item *payload,
				 struct ttlv_writer *w, struct ops_result *res)
{
	bool any = false;

	(void)ctx;
	for (const struct ttlv_item *c = payload->child; c; c = c->next) {
		const struct ttlv_item *major, *minor;

		if (c->tag != KMIP_TAG_PROTOCOL_VERSION || c->type != TTLV_STRUCTURE) {
			ops_fail(res, KMIP_REASON_INVALID_FIELD, "Discover Versions takes only Protocol Version items");
			return;
		}
		major = c->child;
		minor = major ? major->next : NULL;
		if (!major || !minor || minor->next || major->tag != KMIP_TAG_PROTOCOL_VERSION_MAJOR ||
		    minor->tag != KMIP_TAG_PROTOCOL_VERSION_MINOR || major->type != TTLV_INTEGER ||
		    minor->type != TTLV_INTEGER) {
			ops_fail(res, KMIP_REASON_INVALID_MESSAGE, "malformed Protocol Version");
			return;
		}
		any = true;
	}
	ttlv_begin(w, KMIP_TAG_RESPONSE_PAYLOAD);
	for (const struct ttlv_item *c = payload->child; c; c = c->next) {
		struct kmip_version v = { ttlv_int(c->child), ttlv_int(c->child->next) };

		if (supported(v))
			put_version(w, v);
	}
	for (size_t i = 0; !any && i < kmip_n_supported_versions; i++)
		put_version(w, kmip_supported_versions[i]);
	ttlv_end(w);
}

enum query_function {
	QUERY_OPERATIONS = 1,
	QUERY_OBJECTS = 2,
	QUERY_SERVER_INFORMATION = 3,
};

/* The relay's name and version only: which module and token serve it are the
 * operator's to know, not every client's. */
static void put_vendor_identification(struct ttlv_writer *w)
{
	ttlv_put_text(w, KMIP_TAG_VENDOR_IDENTIFICATION, PACKAGE_STRING, strlen(PACKAGE_STRING));
}

/* The object types this relay manages. */
static const uint32_t query_objects[] = { 1 /* Certificate */, 2 /* Symmetric Key */, 3 /* Public Key */,
					  4 /* Private Key */, 7 /* Secret Data */, 8 /* Opaque Object */ };

static void op_query(struct ops_ctx *ctx, const struct ttlv_item *payload, struct ttlv_writer *w,
		     struct ops_result *res)
{
	bool want[4] = { false };

	for (const struct ttlv_item *c = payload->child; c; c = c->next) {
		if (c->tag != KMIP_TAG_QUERY_FUNCTION || c->type != TTLV_ENUMERATION) {
			ops_fail(res, KMIP_REASON_INVALID_FIELD, "Query takes only Query Function items");
			return;
		}
		/* Functions this server has nothing to report for are answered empty. */
		if (ttlv_enum(c) < sizeof(want) / sizeof(want[0]))
			want[ttlv_enum(c)] = true;
	}
	ttlv_begin(w, KMIP_TAG_RESPONSE_PAYLOAD);
	if (want[QUERY_OPERATIONS])
		for (size_t i = 0; i < N_OPS; i++)
			if (kmip_operation_defined(ops_table[i].operation, ctx->version) &&
			    (!is_testing_op(ops_table[i].operation) || ctx->cfg->testing.interop))
				ttlv_put_enum(w, KMIP_TAG_OPERATION, ops_table[i].operation);
	if (want[QUERY_OBJECTS])
		for (size_t i = 0; i < sizeof(query_objects) / sizeof(query_objects[0]); i++)
			ttlv_put_enum(w, KMIP_TAG_OBJECT_TYPE, query_objects[i]);
	if (want[QUERY_SERVER_INFORMATION])
		put_vendor_identification(w);
	ttlv_end(w);
}

/* Interop: the conformance test cases mark their start and end with it; nothing
 * to do but answer. */
static void op_interop(struct ops_ctx *ctx, const struct ttlv_item *payload, struct ttlv_writer *w,
		       struct ops_result *res)
{
	const struct ttlv_item *fn = ttlv_find(payload, KMIP_TAG_INTEROP_FUNCTION);
	const struct ttlv_item *id = ttlv_find(payload, KMIP_TAG_INTEROP_IDENTIFIER);
	const char *name;
	char text[129];

	(void)ctx;
	if (!fn || fn->type != TTLV_ENUMERATION || !id || id->type != TTLV_TEXT_STRING) {
		ops_fail(res, KMIP_REASON_MISSING_DATA, "Interop needs an Interop Function and an Interop Identifier");
		return;
	}
	name = kmip_enum_name(KMIP_TAG_INTEROP_FUNCTION, ttlv_enum(fn));
	log_msg(LOG_INFO, "interop %s %s", name ? name : "(unknown)", log_escape(id->value, id->len, text, sizeof(text)));
	ttlv_begin(w, KMIP_TAG_RESPONSE_PAYLOAD);
	ttlv_end(w);
}

/* Log: the client's message goes to the relay's log. */
static void op_log(struct ops_ctx *ctx, const struct ttlv_item *payload, struct ttlv_writer *w,
		   struct ops_result *res)
{
	const struct ttlv_item *msg = ttlv_find(payload, KMIP_TAG_LOG_MESSAGE);
	char text[1025];

	(void)ctx;
	if (!msg || msg->type != TTLV_TEXT_STRING) {
		ops_fail(res, KMIP_REASON_MISSING_DATA, "Log needs a Log Message");
		return;
	}
	log_msg(LOG_NOTICE, "client log: %s", log_escape(msg->value, msg->len, text, sizeof(text)));
	ttlv_begin(w, KMIP_TAG_RESPONSE_PAYLOAD);
	ttlv_end(w);
}

/* A part of an Encrypt or Decrypt stream, which is never run again elsewhere:
 * the stream lives on its backend. */
static bool stream_part(const struct ttlv_item *payload)
{
	return ttlv_find(payload, KMIP_TAG_CORRELATION_VALUE) || crypto_indicator(payload, KMIP_TAG_INIT_INDICATOR);
}

/* The handler's first run, and at most one more, the gate resolving the objects
 * afresh:
 * - when a backend failed with a device-class error, for an operation the pool may
 *   repeat, on another backend that holds the object; otherwise the Result
 *   Message names the code and the backend, and the client decides;
 * - when a handle cached on this connection turned out stale (another process
 *   changed the object and SoftHSM reloaded it), if the first run wrote nothing to
 *   the token, so that nothing it did (a usage charge) happens twice. */
static void run_handler(struct ops_ctx *ctx, size_t i, const struct kmip_batch_item *item, struct ttlv_writer *w,
			struct ops_result *res)
{
	const struct ttlv_item *payload = item->payload.first;

	for (int attempt = 0; attempt < 2; attempt++) {
		unsigned long writes = token_writes(ctx->token);
		bool ran;

		*res = (struct ops_result){ 0 };
		ttlv_writer_clear(w);
		ran = guard_item(ctx, item->operation, ops_table[i].changes, ops_table[i].objects, payload, res);
		if (ran && ctx->undo && !*ctx->undo && !(*ctx->undo = ops_undo_prepare(ctx, item))) {
			ops_fail_err(res, KR_E_NOMEM);
			return;
		}
		if (ran)
			ops_table[i].run(ctx, payload, w, res);
		if (token_take_failure(ctx->token) >= 0) {
			if (res->reason && attempt == 0 && ops_table[i].repeat && !stream_part(payload))
				continue;
			if (res->reason)
				res->message = ctx->token->message;
			break;
		}
		if (!ran || (res->reason != KMIP_REASON_ITEM_NOT_FOUND && res->reason != KMIP_REASON_OBJECT_NOT_FOUND))
			break;
		if (token_writes(ctx->token) != writes || !token_forget_handles(ctx->token))
			break;
	}
	if (ctx->undo && !res->reason)
		ops_undo_done(ctx, item, *ctx->undo);
}

void ops_run(struct ops_ctx *ctx, const struct kmip_batch_item *item, struct ttlv_writer *w,
	     struct ops_result *res)
{
	*res = (struct ops_result){ 0 };
	if (is_testing_op(item->operation) && !ctx->cfg->testing.interop) {
		ops_fail(res, KMIP_REASON_OPERATION_NOT_SUPPORTED, "operation not supported");
		return;
	}
	/* The OASIS 1.4 test cases use the 2.0 Interop and Log operations too. */
	if (!kmip_operation_defined(item->operation, ctx->version) && !is_testing_op(item->operation)) {
		ops_fail(res, KMIP_REASON_OPERATION_NOT_SUPPORTED, "operation not defined in this protocol version");
		return;
	}
	for (size_t i = 0; i < N_OPS; i++)
		if (ops_table[i].operation == item->operation) {
			run_handler(ctx, i, item, w, res);
			return;
		}
	ops_fail(res, KMIP_REASON_OPERATION_NOT_SUPPORTED, "operation not supported");
}

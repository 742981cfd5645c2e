#include "config.h"

#include "ops.h"

#include <string.h>

typedef void (*ops_handler)(const struct ops_ctx *ctx, const struct ttlv_item *payload, struct ttlv_writer *w,
			    struct ops_result *res);

static void op_discover_versions(const struct ops_ctx *ctx, const struct ttlv_item *payload,
				 struct ttlv_writer *w, struct ops_result *res);
static void op_query(const struct ops_ctx *ctx, const struct ttlv_item *payload, struct ttlv_writer *w,
		     struct ops_result *res);

static const struct {
	uint32_t operation;
	ops_handler run;
} ops_table[] = {
	{ KMIP_OP_QUERY, op_query },
	{ KMIP_OP_DISCOVER_VERSIONS, op_discover_versions },
};

#define N_OPS (sizeof(ops_table) / sizeof(ops_table[0]))

const char *ops_name(uint32_t operation)
{
	const char *name = kmip_enum_name(KMIP_TAG_OPERATION, operation);

	return name ? name : "Unknown";
}

static void fail(struct ops_result *res, enum kmip_reason reason, const char *message)
{
	res->reason = reason;
	res->message = message;
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
static void op_discover_versions(const struct ops_ctx *ctx, const struct ttlv_item *payload,
				 struct ttlv_writer *w, struct ops_result *res)
{
	bool any = false;

	(void)ctx;
	for (const struct ttlv_item *c = payload->child; c; c = c->next) {
		const struct ttlv_item *major, *minor;

		if (c->tag != KMIP_TAG_PROTOCOL_VERSION || c->type != TTLV_STRUCTURE) {
			fail(res, KMIP_REASON_INVALID_FIELD, "Discover Versions takes only Protocol Version items");
			return;
		}
		major = c->child;
		minor = major ? major->next : NULL;
		if (!major || !minor || minor->next || major->tag != KMIP_TAG_PROTOCOL_VERSION_MAJOR ||
		    minor->tag != KMIP_TAG_PROTOCOL_VERSION_MINOR || major->type != TTLV_INTEGER ||
		    minor->type != TTLV_INTEGER) {
			fail(res, KMIP_REASON_INVALID_MESSAGE, "malformed Protocol Version");
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

static void op_query(const struct ops_ctx *ctx, const struct ttlv_item *payload, struct ttlv_writer *w,
		     struct ops_result *res)
{
	bool want[4] = { false };
	static const char vendor[] = PACKAGE_NAME " " PACKAGE_VERSION;

	for (const struct ttlv_item *c = payload->child; c; c = c->next) {
		if (c->tag != KMIP_TAG_QUERY_FUNCTION || c->type != TTLV_ENUMERATION) {
			fail(res, KMIP_REASON_INVALID_FIELD, "Query takes only Query Function items");
			return;
		}
		/* Functions this server has nothing to report for are answered empty. */
		if (ttlv_enum(c) < sizeof(want) / sizeof(want[0]))
			want[ttlv_enum(c)] = true;
	}
	ttlv_begin(w, KMIP_TAG_RESPONSE_PAYLOAD);
	if (want[QUERY_OPERATIONS])
		for (size_t i = 0; i < N_OPS; i++)
			if (kmip_operation_defined(ops_table[i].operation, ctx->version))
				ttlv_put_enum(w, KMIP_TAG_OPERATION, ops_table[i].operation);
	/* Objects: none until the PKCS#11 backend manages any. */
	if (want[QUERY_SERVER_INFORMATION])
		ttlv_put_text(w, KMIP_TAG_VENDOR_IDENTIFICATION, vendor, strlen(vendor));
	ttlv_end(w);
}

void ops_run(const struct ops_ctx *ctx, const struct kmip_batch_item *item, struct ttlv_writer *w,
	     struct ops_result *res)
{
	*res = (struct ops_result){ 0 };
	if (!kmip_operation_defined(item->operation, ctx->version)) {
		fail(res, KMIP_REASON_OPERATION_NOT_SUPPORTED, "operation not defined in this protocol version");
		return;
	}
	for (size_t i = 0; i < N_OPS; i++)
		if (ops_table[i].operation == item->operation) {
			ops_table[i].run(ctx, item->payload.first, w, res);
			return;
		}
	fail(res, KMIP_REASON_OPERATION_NOT_SUPPORTED, "operation not supported");
}

/* SPDX-License-Identifier: BSD-3-Clause */
#include "config.h"

#include "kmip.h"

#include <stdlib.h>
#include <string.h>

/* Versions */

const struct kmip_version kmip_supported_versions[] = {
	{ 2, 1 }, { 2, 0 }, { 1, 4 }, { 1, 3 }, { 1, 2 }, { 1, 1 }, { 1, 0 },
};
const size_t kmip_n_supported_versions =
	sizeof(kmip_supported_versions) / sizeof(kmip_supported_versions[0]);

int kmip_version_cmp(struct kmip_version a, struct kmip_version b)
{
	if (a.major != b.major)
		return a.major < b.major ? -1 : 1;
	if (a.minor != b.minor)
		return a.minor < b.minor ? -1 : 1;
	return 0;
}

bool kmip_negotiate_version(struct kmip_version v, struct kmip_version *ret)
{
	const struct kmip_version newest = kmip_supported_versions[0];
	const struct kmip_version oldest = kmip_supported_versions[kmip_n_supported_versions - 1];

	/* Newest minor of each major comes first in the table. */
	for (size_t i = 0; i < kmip_n_supported_versions; i++) {
		struct kmip_version s = kmip_supported_versions[i];

		if (s.major == v.major && v.minor >= s.minor) {
			*ret = s;
			return true;
		}
	}
	*ret = kmip_version_cmp(v, newest) > 0 ? newest : oldest;
	return false;
}

/* Version as one byte, major in the high nibble, for the tables below. */
static unsigned vbyte(struct kmip_version v)
{
	if (v.major < 0 || v.minor < 0)
		return 0;
	return (unsigned)(v.major > 15 ? 15 : v.major) << 4 | (unsigned)(v.minor > 15 ? 15 : v.minor);
}

bool kmip_operation_defined(uint32_t op, struct kmip_version v)
{
	static const struct {
		uint32_t last;
		uint8_t since;
	} ranges[] = {
		{ 0x1C, 0x10 }, /* Create .. Put */
		{ 0x1E, 0x11 }, /* Re-key Key Pair, Discover Versions */
		{ 0x29, 0x12 }, /* Encrypt .. Join Split Key */
		{ 0x2B, 0x14 }, /* Import, Export */
		{ 0x35, 0x20 }, /* Log .. Re-Provision */
		{ 0x3B, 0x21 }, /* Set Defaults .. Ping */
	};

	if (op == 0)
		return false;
	for (size_t i = 0; i < sizeof(ranges) / sizeof(ranges[0]); i++)
		if (op <= ranges[i].last)
			return vbyte(v) >= ranges[i].since;
	return false;
}

/* Result Reasons: the versions that define each, and the reason to use instead in a
 * version that doesn't. 1.x clients such as Cascade's parse only the reasons of
 * their version; 2.x reserves some 1.x reasons. */
struct reason_rule {
	uint16_t reason;
	uint8_t since, until;
	uint16_t instead;
};

#define R(r) KMIP_REASON_##r
static const struct reason_rule reason_rules[] = {
	{ R(ILLEGAL_OPERATION), 0x10, 0x1F, R(ILLEGAL_OBJECT_TYPE) },
	{ R(INDEX_OUT_OF_BOUNDS), 0x10, 0x1F, R(ATTRIBUTE_INSTANCE_NOT_FOUND) },
	{ R(ENCODING_OPTION_ERROR), 0x11, 0xFF, R(FEATURE_NOT_SUPPORTED) },
	{ R(KEY_VALUE_NOT_PRESENT), 0x12, 0xFF, R(ITEM_NOT_FOUND) },
	{ R(ATTESTATION_REQUIRED), 0x12, 0xFF, R(PERMISSION_DENIED) },
	{ R(ATTESTATION_FAILED), 0x12, 0xFF, R(AUTHENTICATION_NOT_SUCCESSFUL) },
	{ R(SENSITIVE), 0x14, 0xFF, R(PERMISSION_DENIED) },
	{ R(NOT_EXTRACTABLE), 0x14, 0xFF, R(PERMISSION_DENIED) },
	{ R(OBJECT_ALREADY_EXISTS), 0x14, 0xFF, R(INVALID_FIELD) },
	{ R(INVALID_TICKET), 0x20, 0xFF, R(AUTHENTICATION_NOT_SUCCESSFUL) },
	{ R(USAGE_LIMIT_EXCEEDED), 0x20, 0xFF, R(PERMISSION_DENIED) },
	{ R(NUMERIC_RANGE), 0x20, 0xFF, R(INVALID_FIELD) },
	{ R(INVALID_DATA_TYPE), 0x20, 0xFF, R(INVALID_FIELD) },
	{ R(READ_ONLY_ATTRIBUTE), 0x20, 0xFF, R(PERMISSION_DENIED) },
	{ R(MULTI_VALUED_ATTRIBUTE), 0x20, 0xFF, R(INVALID_FIELD) },
	{ R(UNSUPPORTED_ATTRIBUTE), 0x20, 0xFF, R(INVALID_FIELD) },
	{ R(ATTRIBUTE_INSTANCE_NOT_FOUND), 0x20, 0xFF, R(ITEM_NOT_FOUND) },
	{ R(ATTRIBUTE_NOT_FOUND), 0x20, 0xFF, R(ITEM_NOT_FOUND) },
	{ R(ATTRIBUTE_READ_ONLY), 0x20, 0xFF, R(PERMISSION_DENIED) },
	{ R(ATTRIBUTE_SINGLE_VALUED), 0x20, 0xFF, R(INDEX_OUT_OF_BOUNDS) },
	{ R(BAD_CRYPTOGRAPHIC_PARAMETERS), 0x20, 0xFF, R(INVALID_FIELD) },
	{ R(BAD_PASSWORD), 0x20, 0xFF, R(AUTHENTICATION_NOT_SUCCESSFUL) },
	{ R(CODEC_ERROR), 0x20, 0xFF, R(INVALID_MESSAGE) },
	{ R(ILLEGAL_OBJECT_TYPE), 0x20, 0xFF, R(ILLEGAL_OPERATION) },
	{ R(INCOMPATIBLE_CRYPTOGRAPHIC_USAGE_MASK), 0x20, 0xFF, R(PERMISSION_DENIED) },
	{ R(INTERNAL_SERVER_ERROR), 0x20, 0xFF, R(GENERAL_FAILURE) },
	{ R(INVALID_ASYNCHRONOUS_CORRELATION_VALUE), 0x20, 0xFF, R(INVALID_FIELD) },
	{ R(INVALID_ATTRIBUTE), 0x20, 0xFF, R(INVALID_FIELD) },
	{ R(INVALID_ATTRIBUTE_VALUE), 0x20, 0xFF, R(INVALID_FIELD) },
	{ R(INVALID_CORRELATION_VALUE), 0x20, 0xFF, R(ITEM_NOT_FOUND) }, /* as 1.x Encrypt and Decrypt have it */
	{ R(INVALID_CSR), 0x20, 0xFF, R(INVALID_FIELD) },
	{ R(INVALID_OBJECT_TYPE), 0x20, 0xFF, R(ILLEGAL_OPERATION) },
	{ R(KEY_WRAP_TYPE_NOT_SUPPORTED), 0x20, 0xFF, R(FEATURE_NOT_SUPPORTED) },
	{ R(MISSING_INITIALIZATION_VECTOR), 0x20, 0xFF, R(MISSING_DATA) },
	{ R(NON_UNIQUE_NAME_ATTRIBUTE), 0x20, 0xFF, R(INVALID_FIELD) },
	{ R(OBJECT_DESTROYED), 0x20, 0xFF, R(ITEM_NOT_FOUND) },
	{ R(OBJECT_NOT_FOUND), 0x20, 0xFF, R(ITEM_NOT_FOUND) },
	{ R(NOT_AUTHORISED), 0x20, 0xFF, R(PERMISSION_DENIED) },
	{ R(SERVER_LIMIT_EXCEEDED), 0x20, 0xFF, R(GENERAL_FAILURE) },
	{ R(UNKNOWN_ENUMERATION), 0x20, 0xFF, R(INVALID_FIELD) },
	{ R(UNKNOWN_MESSAGE_EXTENSION), 0x20, 0xFF, R(FEATURE_NOT_SUPPORTED) },
	{ R(UNKNOWN_TAG), 0x20, 0xFF, R(INVALID_FIELD) },
	{ R(UNSUPPORTED_CRYPTOGRAPHIC_PARAMETERS), 0x20, 0xFF, R(INVALID_FIELD) },
	{ R(UNSUPPORTED_PROTOCOL_VERSION), 0x20, 0xFF, R(INVALID_MESSAGE) },
	{ R(WRAPPING_OBJECT_ARCHIVED), 0x20, 0xFF, R(OBJECT_ARCHIVED) },
	{ R(WRAPPING_OBJECT_DESTROYED), 0x20, 0xFF, R(ITEM_NOT_FOUND) },
	{ R(WRAPPING_OBJECT_NOT_FOUND), 0x20, 0xFF, R(ITEM_NOT_FOUND) },
	{ R(WRONG_KEY_LIFECYCLE_STATE), 0x20, 0xFF, R(PERMISSION_DENIED) }, /* 1.x's word for it */
	{ R(PROTECTION_STORAGE_UNAVAILABLE), 0x20, 0xFF, R(FEATURE_NOT_SUPPORTED) },
	{ R(PKCS11_CODEC_ERROR), 0x20, 0xFF, R(INVALID_MESSAGE) },
	{ R(PKCS11_INVALID_FUNCTION), 0x20, 0xFF, R(OPERATION_NOT_SUPPORTED) },
	{ R(PKCS11_INVALID_INTERFACE), 0x20, 0xFF, R(OPERATION_NOT_SUPPORTED) },
	{ R(PRIVATE_PROTECTION_STORAGE_UNAVAILABLE), 0x21, 0xFF, R(PROTECTION_STORAGE_UNAVAILABLE) },
	{ R(PUBLIC_PROTECTION_STORAGE_UNAVAILABLE), 0x21, 0xFF, R(PROTECTION_STORAGE_UNAVAILABLE) },
	{ R(UNKNOWN_OBJECT_GROUP), 0x21, 0xFF, R(ITEM_NOT_FOUND) },
	{ R(CONSTRAINT_VIOLATION), 0x21, 0xFF, R(INVALID_FIELD) },
	{ R(DUPLICATE_PROCESS_REQUEST), 0x21, 0xFF, R(INVALID_FIELD) },
};
#undef R

uint32_t kmip_reason_for(enum kmip_reason r, struct kmip_version v)
{
	unsigned vb = vbyte(v);
	uint32_t reason = r;

	/* Each step moves to an older or a newer family's reason; a few are enough. */
	for (int step = 0; step < 4; step++) {
		const struct reason_rule *rule = NULL;

		for (size_t i = 0; i < sizeof(reason_rules) / sizeof(reason_rules[0]); i++)
			if (reason_rules[i].reason == reason)
				rule = &reason_rules[i];
		if (!rule) /* the 1.0 reasons every version has */
			return reason;
		if (vb >= rule->since && vb <= rule->until)
			return reason;
		reason = rule->instead;
	}
	return KMIP_REASON_GENERAL_FAILURE;
}

enum kmip_reason kmip_reason_for_error(int err)
{
	switch (err) {
	case KR_E_KMIP_UNKNOWN_FIELD:
		return KMIP_REASON_INVALID_FIELD;
	case KR_E_KMIP_UNKNOWN_ATTRIBUTE:
		return KMIP_REASON_UNSUPPORTED_ATTRIBUTE;
	case KR_E_KMIP_TOO_BIG:
		return KMIP_REASON_RESPONSE_TOO_LARGE;
	case KR_E_NOMEM:
		return KMIP_REASON_GENERAL_FAILURE;
	default: /* TTLV errors, and fields missing, repeated or mistyped */
		return KMIP_REASON_INVALID_MESSAGE;
	}
}

/* Structures as field lists ("schemas"). Decoding matches a structure's children to
 * the fields in order; encoding writes the present fields in the same order. */
enum field_kind { K_STRUCT, K_INT, K_ENUM, K_BOOL, K_DATETIME, K_TEXT, K_BYTES, K_RAW };

#define F_REQUIRED 1u
#define F_MULTI 2u /* may repeat; kept as one run of siblings */

struct schema;

struct field {
	uint8_t bit;
	uint32_t tag;
	enum ttlv_type type;
	enum field_kind kind;
	unsigned flags;
	size_t offset;
	const struct schema *sub; /* K_STRUCT */
};

struct schema {
	const struct field *fields;
	size_t n;
};

#define SCHEMA(f) { f, sizeof(f) / sizeof(f[0]) }

static const struct field version_fields[] = {
	{ 0, KMIP_TAG_PROTOCOL_VERSION_MAJOR, TTLV_INTEGER, K_INT, F_REQUIRED, offsetof(struct kmip_version, major), NULL },
	{ 1, KMIP_TAG_PROTOCOL_VERSION_MINOR, TTLV_INTEGER, K_INT, F_REQUIRED, offsetof(struct kmip_version, minor), NULL },
};
static const struct schema version_schema = SCHEMA(version_fields);

#define H(bit, tag, type, kind, flags, member) \
	{ KMIP_H_##bit, KMIP_TAG_##tag, TTLV_##type, kind, flags, offsetof(struct kmip_header, member), NULL }
#define H_VERSION \
	{ KMIP_H_PROTOCOL_VERSION, KMIP_TAG_PROTOCOL_VERSION, TTLV_STRUCTURE, K_STRUCT, F_REQUIRED, \
	  offsetof(struct kmip_header, version), &version_schema }

static const struct field request_header_fields[] = {
	H_VERSION,
	H(MAX_RESPONSE_SIZE, MAXIMUM_RESPONSE_SIZE, INTEGER, K_INT, 0, max_response_size),
	H(CLIENT_CORRELATION, CLIENT_CORRELATION_VALUE, TEXT_STRING, K_TEXT, 0, client_correlation),
	H(SERVER_CORRELATION, SERVER_CORRELATION_VALUE, TEXT_STRING, K_TEXT, 0, server_correlation),
	H(ASYNC_INDICATOR, ASYNCHRONOUS_INDICATOR, BOOLEAN, K_BOOL, 0, async_indicator),
	H(ATTESTATION_CAPABLE, ATTESTATION_CAPABLE_INDICATOR, BOOLEAN, K_BOOL, 0, attestation_capable),
	H(ATTESTATION_TYPES, ATTESTATION_TYPE, ENUMERATION, K_RAW, F_MULTI, attestation_types),
	H(AUTHENTICATION, AUTHENTICATION, STRUCTURE, K_RAW, 0, authentication),
	H(BATCH_ERROR_OPTION, BATCH_ERROR_CONTINUATION_OPTION, ENUMERATION, K_ENUM, 0, batch_error_option),
	H(BATCH_ORDER_OPTION, BATCH_ORDER_OPTION, BOOLEAN, K_BOOL, 0, batch_order_option),
	H(TIME_STAMP, TIME_STAMP, DATE_TIME, K_DATETIME, 0, time_stamp),
	H(BATCH_COUNT, BATCH_COUNT, INTEGER, K_INT, F_REQUIRED, batch_count),
};

static const struct field response_header_fields[] = {
	H_VERSION,
	H(TIME_STAMP, TIME_STAMP, DATE_TIME, K_DATETIME, F_REQUIRED, time_stamp),
	H(NONCE, NONCE, STRUCTURE, K_RAW, 0, nonce),
	H(SERVER_HASHED_PASSWORD, SERVER_HASHED_PASSWORD, BYTE_STRING, K_RAW, 0, server_hashed_password),
	H(ATTESTATION_TYPES, ATTESTATION_TYPE, ENUMERATION, K_RAW, F_MULTI, attestation_types),
	H(CLIENT_CORRELATION, CLIENT_CORRELATION_VALUE, TEXT_STRING, K_TEXT, 0, client_correlation),
	H(SERVER_CORRELATION, SERVER_CORRELATION_VALUE, TEXT_STRING, K_TEXT, 0, server_correlation),
	H(BATCH_COUNT, BATCH_COUNT, INTEGER, K_INT, F_REQUIRED, batch_count),
};
#undef H
#undef H_VERSION

#define I(bit, tag, type, kind, flags, member) \
	{ KMIP_I_##bit, KMIP_TAG_##tag, TTLV_##type, kind, flags, offsetof(struct kmip_batch_item, member), NULL }

static const struct field request_item_fields[] = {
	I(OPERATION, OPERATION, ENUMERATION, K_ENUM, F_REQUIRED, operation),
	I(EPHEMERAL, EPHEMERAL, BOOLEAN, K_BOOL, 0, ephemeral),
	I(UNIQUE_BATCH_ITEM_ID, UNIQUE_BATCH_ITEM_ID, BYTE_STRING, K_BYTES, 0, unique_batch_item_id),
	I(PAYLOAD, REQUEST_PAYLOAD, STRUCTURE, K_RAW, F_REQUIRED, payload),
	I(MESSAGE_EXTENSIONS, MESSAGE_EXTENSION, STRUCTURE, K_RAW, F_MULTI, message_extensions),
};

static const struct field response_item_fields[] = {
	I(OPERATION, OPERATION, ENUMERATION, K_ENUM, 0, operation),
	I(UNIQUE_BATCH_ITEM_ID, UNIQUE_BATCH_ITEM_ID, BYTE_STRING, K_BYTES, 0, unique_batch_item_id),
	I(RESULT_STATUS, RESULT_STATUS, ENUMERATION, K_ENUM, F_REQUIRED, result_status),
	I(RESULT_REASON, RESULT_REASON, ENUMERATION, K_ENUM, 0, result_reason),
	I(RESULT_MESSAGE, RESULT_MESSAGE, TEXT_STRING, K_TEXT, 0, result_message),
	I(ASYNC_CORRELATION, ASYNCHRONOUS_CORRELATION_VALUE, BYTE_STRING, K_BYTES, 0, async_correlation),
	I(PAYLOAD, RESPONSE_PAYLOAD, STRUCTURE, K_RAW, 0, payload),
	I(MESSAGE_EXTENSIONS, MESSAGE_EXTENSION, STRUCTURE, K_RAW, F_MULTI, message_extensions),
};
#undef I

static const struct schema request_header_schema = SCHEMA(request_header_fields);
static const struct schema response_header_schema = SCHEMA(response_header_fields);
static const struct schema request_item_schema = SCHEMA(request_item_fields);
static const struct schema response_item_schema = SCHEMA(response_item_fields);

/* A Username and Password credential. */
struct credential {
	uint32_t type;
	struct kmip_raw value;
	struct kmip_text username, password;
};

static const struct field credential_fields[] = {
	{ 0, KMIP_TAG_CREDENTIAL_TYPE, TTLV_ENUMERATION, K_ENUM, F_REQUIRED, offsetof(struct credential, type), NULL },
	{ 1, KMIP_TAG_CREDENTIAL_VALUE, TTLV_STRUCTURE, K_RAW, F_REQUIRED, offsetof(struct credential, value), NULL },
};
static const struct field password_fields[] = {
	{ 0, KMIP_TAG_USERNAME, TTLV_TEXT_STRING, K_TEXT, F_REQUIRED, offsetof(struct credential, username), NULL },
	{ 1, KMIP_TAG_PASSWORD, TTLV_TEXT_STRING, K_TEXT, 0, offsetof(struct credential, password), NULL },
};
static const struct schema credential_schema = SCHEMA(credential_fields);
static const struct schema password_schema = SCHEMA(password_fields);

#define CREDENTIAL_USERNAME_AND_PASSWORD 1

static size_t find_field(const struct schema *s, size_t from, uint32_t tag)
{
	for (size_t i = from; i < s->n; i++)
		if (s->fields[i].tag == tag)
			return i;
	return s->n;
}

/* Decodes parent's children into base. Unknown fields are an error, or skipped when
 * the message is of a newer minor version than this code knows. */
static int decode_fields(const struct ttlv_item *parent, const struct schema *s, void *base,
			 bool skip_unknown, uint32_t *ret_present)
{
	uint32_t present = 0;
	size_t next = 0;

	for (const struct ttlv_item *c = parent->child; c; c = c->next) {
		size_t j = find_field(s, next, c->tag);
		const struct field *f;
		char *dst;
		int r;

		if (j == s->n) {
			if (find_field(s, 0, c->tag) < s->n)
				return KR_E_KMIP_UNEXPECTED;
			if (skip_unknown)
				continue;
			return KR_E_KMIP_UNKNOWN_FIELD;
		}
		f = &s->fields[j];
		if (c->type != f->type)
			return KR_E_KMIP_FIELD_TYPE;
		dst = (char *)base + f->offset;
		switch (f->kind) {
		case K_STRUCT:
			r = decode_fields(c, f->sub, dst, skip_unknown, &(uint32_t){ 0 });
			if (r < 0)
				return r;
			break;
		case K_INT:
			*(int32_t *)dst = ttlv_int(c);
			break;
		case K_ENUM:
			*(uint32_t *)dst = ttlv_enum(c);
			break;
		case K_BOOL:
			*(bool *)dst = ttlv_bool(c);
			break;
		case K_DATETIME:
			*(int64_t *)dst = ttlv_long(c);
			break;
		case K_TEXT:
			*(struct kmip_text *)dst = (struct kmip_text){ (const char *)c->value, c->len };
			break;
		case K_BYTES:
			*(struct kmip_bytes *)dst = (struct kmip_bytes){ c->value, c->len };
			break;
		case K_RAW: {
			struct kmip_raw *raw = (struct kmip_raw *)dst;

			*raw = (struct kmip_raw){ .first = c, .count = 1 };
			while ((f->flags & F_MULTI) && c->next && c->next->tag == c->tag &&
			       c->next->type == c->type) {
				c = c->next;
				raw->count++;
			}
			break;
		}
		}
		present |= 1u << f->bit;
		next = j + 1;
	}
	for (size_t i = 0; i < s->n; i++)
		if ((s->fields[i].flags & F_REQUIRED) && !(present & (1u << s->fields[i].bit)))
			return KR_E_KMIP_MISSING;
	*ret_present = present;
	return 0;
}

static void encode_raw(struct ttlv_writer *w, const struct kmip_raw *raw)
{
	if (raw->first)
		ttlv_put_items(w, raw->first, raw->count);
	else
		ttlv_put_encoded(w, raw->encoded.ptr, raw->encoded.len);
}

static void encode_fields(struct ttlv_writer *w, const struct schema *s, const void *base,
			  uint32_t present)
{
	for (size_t i = 0; i < s->n; i++) {
		const struct field *f = &s->fields[i];
		const char *src = (const char *)base + f->offset;

		if (!(present & (1u << f->bit)))
			continue;
		switch (f->kind) {
		case K_STRUCT:
			ttlv_begin(w, f->tag);
			encode_fields(w, f->sub, src, UINT32_MAX);
			ttlv_end(w);
			break;
		case K_INT:
			ttlv_put_int(w, f->tag, *(const int32_t *)src);
			break;
		case K_ENUM:
			ttlv_put_enum(w, f->tag, *(const uint32_t *)src);
			break;
		case K_BOOL:
			ttlv_put_bool(w, f->tag, *(const bool *)src);
			break;
		case K_DATETIME:
			ttlv_put_datetime(w, f->tag, *(const int64_t *)src);
			break;
		case K_TEXT: {
			const struct kmip_text *t = (const struct kmip_text *)src;

			ttlv_put_text(w, f->tag, t->ptr, t->len);
			break;
		}
		case K_BYTES: {
			const struct kmip_bytes *b = (const struct kmip_bytes *)src;

			ttlv_put_bytes(w, f->tag, b->ptr, b->len);
			break;
		}
		case K_RAW:
			encode_raw(w, (const struct kmip_raw *)src);
			break;
		}
	}
}

/* Finds the first Username and Password credential of the Authentication. */
static int decode_authentication(const struct kmip_raw *auth, bool skip_unknown,
				 struct kmip_header *h)
{
	bool found = false;

	for (const struct ttlv_item *c = auth->first->child; c; c = c->next) {
		struct credential cred = { 0 };
		uint32_t present;
		int r;

		if (c->tag != KMIP_TAG_CREDENTIAL || c->type != TTLV_STRUCTURE) {
			if (skip_unknown)
				continue;
			return KR_E_KMIP_UNKNOWN_FIELD;
		}
		found = true;
		r = decode_fields(c, &credential_schema, &cred, skip_unknown, &present);
		if (r < 0)
			return r;
		if (cred.type != CREDENTIAL_USERNAME_AND_PASSWORD || h->username.ptr)
			continue;
		r = decode_fields(cred.value.first, &password_schema, &cred, skip_unknown, &present);
		if (r < 0)
			return r;
		h->username = cred.username;
		h->password = cred.password;
	}
	return found ? 0 : KR_E_KMIP_MISSING;
}

bool kmip_peek_version(const uint8_t *buf, size_t len, struct kmip_version *ret)
{
	/* Message and header item headers, then Protocol Version { Major, Minor }. */
	static const uint8_t layout[] = {
		0x42, 0x00, 0x69, TTLV_STRUCTURE, 0, 0, 0, 0x20,
		0x42, 0x00, 0x6A, TTLV_INTEGER, 0, 0, 0, 4,
	};
	const uint8_t *pv = buf + 2 * TTLV_HEADER_LEN, *minor = pv + 3 * TTLV_HEADER_LEN;
	struct ttlv_item major_it = { .value = pv + 2 * TTLV_HEADER_LEN };
	struct ttlv_item minor_it = { .value = minor + TTLV_HEADER_LEN };

	if (len < 2 * TTLV_HEADER_LEN + 0x28 || memcmp(pv, layout, sizeof(layout)) != 0 ||
	    memcmp(minor, "\x42\x00\x6B\x02\x00\x00\x00\x04", TTLV_HEADER_LEN) != 0)
		return false;
	*ret = (struct kmip_version){ ttlv_int(&major_it), ttlv_int(&minor_it) };
	return true;
}

void kmip_message_free(struct kmip_message *m)
{
	if (!m)
		return;
	free(m->items);
	ttlv_free(m->tree);
	free(m);
}

/* Decodes header and items of the message buf, whose tree m->tree holds. */
static int decode_body(struct kmip_message *m, const uint8_t *buf, size_t len)
{
	const struct ttlv_item *root = m->tree, *hdr = root->child;
	const struct schema *item_schema;
	struct kmip_version v, negotiated;
	bool skip_unknown;
	size_t n = 0, i = 0;
	int r;

	if (root->type != TTLV_STRUCTURE ||
	    (root->tag != KMIP_TAG_REQUEST_MESSAGE && root->tag != KMIP_TAG_RESPONSE_MESSAGE))
		return KR_E_KMIP_NOT_MESSAGE;
	m->response = root->tag == KMIP_TAG_RESPONSE_MESSAGE;
	if (!hdr || hdr->type != TTLV_STRUCTURE ||
	    hdr->tag != (m->response ? KMIP_TAG_RESPONSE_HEADER : KMIP_TAG_REQUEST_HEADER))
		return KR_E_KMIP_MISSING;
	/* Fields this code does not know are skipped only in a newer minor version. */
	skip_unknown = kmip_peek_version(buf, len, &v) && kmip_negotiate_version(v, &negotiated) &&
		       kmip_version_cmp(v, negotiated) > 0;
	r = decode_fields(hdr, m->response ? &response_header_schema : &request_header_schema,
			  &m->header, skip_unknown, &m->header.present);
	if (r < 0)
		return r;
	if (m->header.present & KMIP_FIELD(KMIP_H_AUTHENTICATION)) {
		r = decode_authentication(&m->header.authentication, skip_unknown, &m->header);
		if (r < 0)
			return r;
	}
	for (const struct ttlv_item *c = hdr->next; c; c = c->next) {
		if (c->tag != KMIP_TAG_BATCH_ITEM || c->type != TTLV_STRUCTURE)
			return KR_E_KMIP_UNEXPECTED;
		n++;
	}
	if (n == 0)
		return KR_E_KMIP_MISSING;
	if (m->header.batch_count < 0 || (size_t)m->header.batch_count != n)
		return KR_E_KMIP_BATCH_COUNT;
	m->items = calloc(n, sizeof(*m->items));
	if (!m->items)
		return KR_E_NOMEM;
	m->n_items = n;
	item_schema = m->response ? &response_item_schema : &request_item_schema;
	for (const struct ttlv_item *c = hdr->next; c; c = c->next, i++) {
		struct kmip_batch_item *it = &m->items[i];

		it->error = decode_fields(c, item_schema, it, skip_unknown, &it->present);
		/* Several request items must be told apart by their IDs. */
		if (!it->error && !m->response && n > 1 &&
		    !(it->present & KMIP_FIELD(KMIP_I_UNIQUE_BATCH_ITEM_ID)))
			it->error = KR_E_KMIP_MISSING;
	}
	return 0;
}

int kmip_decode_message(const uint8_t *buf, size_t len, const struct ttlv_limits *lim,
			struct kmip_message **ret)
{
	struct kmip_message *m;
	int r;

	m = calloc(1, sizeof(*m));
	if (!m)
		return KR_E_NOMEM;
	r = ttlv_decode(buf, len, lim, &m->tree);
	if (r == 0)
		r = decode_body(m, buf, len);
	if (r < 0) {
		kmip_message_free(m);
		return r;
	}
	*ret = m;
	return 0;
}

int kmip_encode_message(const struct kmip_message *m, size_t max, uint8_t **ret_buf,
			size_t *ret_len)
{
	const struct schema *hs = m->response ? &response_header_schema : &request_header_schema;
	const struct schema *is = m->response ? &response_item_schema : &request_item_schema;
	struct ttlv_writer w;
	int r;

	ttlv_writer_init(&w, max);
	ttlv_begin(&w, m->response ? KMIP_TAG_RESPONSE_MESSAGE : KMIP_TAG_REQUEST_MESSAGE);
	ttlv_begin(&w, m->response ? KMIP_TAG_RESPONSE_HEADER : KMIP_TAG_REQUEST_HEADER);
	encode_fields(&w, hs, &m->header, m->header.present);
	ttlv_end(&w);
	for (size_t i = 0; i < m->n_items; i++) {
		ttlv_begin(&w, KMIP_TAG_BATCH_ITEM);
		encode_fields(&w, is, &m->items[i], m->items[i].present);
		ttlv_end(&w);
	}
	ttlv_end(&w);
	r = ttlv_writer_finish(&w, ret_buf, ret_len);
	return r == KR_E_TTLV_TOO_BIG ? KR_E_KMIP_TOO_BIG : r;
}

int kmip_encode_message_error(struct kmip_version v, int64_t now, enum kmip_reason r,
			      const char *message, uint8_t **ret_buf, size_t *ret_len)
{
	struct kmip_batch_item item = {
		.present = KMIP_FIELD(KMIP_I_RESULT_STATUS) | KMIP_FIELD(KMIP_I_RESULT_REASON),
		.result_status = KMIP_STATUS_OPERATION_FAILED,
		.result_reason = kmip_reason_for(r, v),
	};
	struct kmip_message m = {
		.response = true,
		.header = {
			.present = KMIP_FIELD(KMIP_H_PROTOCOL_VERSION) | KMIP_FIELD(KMIP_H_TIME_STAMP) |
				   KMIP_FIELD(KMIP_H_BATCH_COUNT),
			.version = v,
			.time_stamp = now,
			.batch_count = 1,
		},
		.items = &item,
		.n_items = 1,
	};

	if (message) {
		item.present |= KMIP_FIELD(KMIP_I_RESULT_MESSAGE);
		item.result_message = (struct kmip_text){ message, strlen(message) };
	}
	return kmip_encode_message(&m, TTLV_DEFAULT_MAX_SIZE, ret_buf, ret_len);
}

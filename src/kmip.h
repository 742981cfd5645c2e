/* SPDX-License-Identifier: BSD-3-Clause */
/* KMIP message layer: protocol versions, result reasons, and the model of request and
 * response messages with their decoding from and encoding to TTLV.
 *
 * The model keeps header and batch item fields as typed values. Payloads and other
 * structures it does not interpret stay as TTLV items (borrowed from the decoded
 * tree) or as pre-encoded TTLV bytes, so that a decoded message encodes back to the
 * same bytes. */
#ifndef KR_KMIP_H
#define KR_KMIP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "errors.h"
#include "kmip_names.h"
#include "ttlv.h"

struct kmip_version {
	int32_t major, minor;
};

int kmip_version_cmp(struct kmip_version a, struct kmip_version b);
/* The version to answer a message of version v in. True with v itself if it is
 * supported, or with the newest supported minor of v's major if v's minor is newer
 * (the spec says to process such a message, ignoring unknown fields). False for an
 * unsupported major version, with the version to send that error in. */
bool kmip_negotiate_version(struct kmip_version v, struct kmip_version *ret);
/* Supported versions, newest first, for Discover Versions. */
extern const struct kmip_version kmip_supported_versions[];
extern const size_t kmip_n_supported_versions;

enum kmip_operation {
	KMIP_OP_CREATE = 0x01,
	KMIP_OP_CREATE_KEY_PAIR = 0x02,
	KMIP_OP_REGISTER = 0x03,
	KMIP_OP_LOCATE = 0x08,
	KMIP_OP_CHECK = 0x09,
	KMIP_OP_GET = 0x0A,
	KMIP_OP_GET_ATTRIBUTES = 0x0B,
	KMIP_OP_GET_ATTRIBUTE_LIST = 0x0C,
	KMIP_OP_ADD_ATTRIBUTE = 0x0D,
	KMIP_OP_MODIFY_ATTRIBUTE = 0x0E,
	KMIP_OP_DELETE_ATTRIBUTE = 0x0F,
	KMIP_OP_ACTIVATE = 0x12,
	KMIP_OP_REVOKE = 0x13,
	KMIP_OP_DESTROY = 0x14,
	KMIP_OP_QUERY = 0x18,
	KMIP_OP_DISCOVER_VERSIONS = 0x1E,
	KMIP_OP_ENCRYPT = 0x1F,
	KMIP_OP_DECRYPT = 0x20,
	KMIP_OP_SIGN = 0x21,
	KMIP_OP_SIGNATURE_VERIFY = 0x22,
	KMIP_OP_MAC = 0x23,
	KMIP_OP_MAC_VERIFY = 0x24,
	KMIP_OP_RNG_RETRIEVE = 0x25,
	KMIP_OP_HASH = 0x27,
	KMIP_OP_LOG = 0x2C,
	KMIP_OP_INTEROP = 0x34,
};

/* Whether an operation code exists in a protocol version. */
bool kmip_operation_defined(uint32_t op, struct kmip_version v);

enum kmip_result_status {
	KMIP_STATUS_SUCCESS = 0,
	KMIP_STATUS_OPERATION_FAILED = 1,
	KMIP_STATUS_OPERATION_PENDING = 2,
	KMIP_STATUS_OPERATION_UNDONE = 3,
};

/* Result Reasons, by their specification values. The relay's code names the most
 * precise reason; kmip_reason_for() turns it into one that the response's version
 * defines. */
enum kmip_reason {
	KMIP_REASON_ITEM_NOT_FOUND = 0x01,
	KMIP_REASON_RESPONSE_TOO_LARGE = 0x02,
	KMIP_REASON_AUTHENTICATION_NOT_SUCCESSFUL = 0x03,
	KMIP_REASON_INVALID_MESSAGE = 0x04,
	KMIP_REASON_OPERATION_NOT_SUPPORTED = 0x05,
	KMIP_REASON_MISSING_DATA = 0x06,
	KMIP_REASON_INVALID_FIELD = 0x07,
	KMIP_REASON_FEATURE_NOT_SUPPORTED = 0x08,
	KMIP_REASON_OPERATION_CANCELED_BY_REQUESTER = 0x09,
	KMIP_REASON_CRYPTOGRAPHIC_FAILURE = 0x0A,
	KMIP_REASON_ILLEGAL_OPERATION = 0x0B,
	KMIP_REASON_PERMISSION_DENIED = 0x0C,
	KMIP_REASON_OBJECT_ARCHIVED = 0x0D,
	KMIP_REASON_INDEX_OUT_OF_BOUNDS = 0x0E,
	KMIP_REASON_APPLICATION_NAMESPACE_NOT_SUPPORTED = 0x0F,
	KMIP_REASON_KEY_FORMAT_TYPE_NOT_SUPPORTED = 0x10,
	KMIP_REASON_KEY_COMPRESSION_TYPE_NOT_SUPPORTED = 0x11,
	KMIP_REASON_ENCODING_OPTION_ERROR = 0x12,
	KMIP_REASON_KEY_VALUE_NOT_PRESENT = 0x13,
	KMIP_REASON_ATTESTATION_REQUIRED = 0x14,
	KMIP_REASON_ATTESTATION_FAILED = 0x15,
	KMIP_REASON_SENSITIVE = 0x16,
	KMIP_REASON_NOT_EXTRACTABLE = 0x17,
	KMIP_REASON_OBJECT_ALREADY_EXISTS = 0x18,
	KMIP_REASON_INVALID_TICKET = 0x19,
	KMIP_REASON_USAGE_LIMIT_EXCEEDED = 0x1A,
	KMIP_REASON_NUMERIC_RANGE = 0x1B,
	KMIP_REASON_INVALID_DATA_TYPE = 0x1C,
	KMIP_REASON_READ_ONLY_ATTRIBUTE = 0x1D,
	KMIP_REASON_MULTI_VALUED_ATTRIBUTE = 0x1E,
	KMIP_REASON_UNSUPPORTED_ATTRIBUTE = 0x1F,
	KMIP_REASON_ATTRIBUTE_INSTANCE_NOT_FOUND = 0x20,
	KMIP_REASON_ATTRIBUTE_NOT_FOUND = 0x21,
	KMIP_REASON_ATTRIBUTE_READ_ONLY = 0x22,
	KMIP_REASON_ATTRIBUTE_SINGLE_VALUED = 0x23,
	KMIP_REASON_BAD_CRYPTOGRAPHIC_PARAMETERS = 0x24,
	KMIP_REASON_BAD_PASSWORD = 0x25,
	KMIP_REASON_CODEC_ERROR = 0x26,
	KMIP_REASON_ILLEGAL_OBJECT_TYPE = 0x28,
	KMIP_REASON_INCOMPATIBLE_CRYPTOGRAPHIC_USAGE_MASK = 0x29,
	KMIP_REASON_INTERNAL_SERVER_ERROR = 0x2A,
	KMIP_REASON_INVALID_ASYNCHRONOUS_CORRELATION_VALUE = 0x2B,
	KMIP_REASON_INVALID_ATTRIBUTE = 0x2C,
	KMIP_REASON_INVALID_ATTRIBUTE_VALUE = 0x2D,
	KMIP_REASON_INVALID_CORRELATION_VALUE = 0x2E,
	KMIP_REASON_INVALID_CSR = 0x2F,
	KMIP_REASON_INVALID_OBJECT_TYPE = 0x30,
	KMIP_REASON_KEY_WRAP_TYPE_NOT_SUPPORTED = 0x32,
	KMIP_REASON_MISSING_INITIALIZATION_VECTOR = 0x34,
	KMIP_REASON_NON_UNIQUE_NAME_ATTRIBUTE = 0x35,
	KMIP_REASON_OBJECT_DESTROYED = 0x36,
	KMIP_REASON_OBJECT_NOT_FOUND = 0x37,
	KMIP_REASON_NOT_AUTHORISED = 0x39,
	KMIP_REASON_SERVER_LIMIT_EXCEEDED = 0x3A,
	KMIP_REASON_UNKNOWN_ENUMERATION = 0x3B,
	KMIP_REASON_UNKNOWN_MESSAGE_EXTENSION = 0x3C,
	KMIP_REASON_UNKNOWN_TAG = 0x3D,
	KMIP_REASON_UNSUPPORTED_CRYPTOGRAPHIC_PARAMETERS = 0x3E,
	KMIP_REASON_UNSUPPORTED_PROTOCOL_VERSION = 0x3F,
	KMIP_REASON_WRAPPING_OBJECT_ARCHIVED = 0x40,
	KMIP_REASON_WRAPPING_OBJECT_DESTROYED = 0x41,
	KMIP_REASON_WRAPPING_OBJECT_NOT_FOUND = 0x42,
	KMIP_REASON_WRONG_KEY_LIFECYCLE_STATE = 0x43,
	KMIP_REASON_PROTECTION_STORAGE_UNAVAILABLE = 0x44,
	KMIP_REASON_PKCS11_CODEC_ERROR = 0x45,
	KMIP_REASON_PKCS11_INVALID_FUNCTION = 0x46,
	KMIP_REASON_PKCS11_INVALID_INTERFACE = 0x47,
	KMIP_REASON_PRIVATE_PROTECTION_STORAGE_UNAVAILABLE = 0x48,
	KMIP_REASON_PUBLIC_PROTECTION_STORAGE_UNAVAILABLE = 0x49,
	KMIP_REASON_UNKNOWN_OBJECT_GROUP = 0x4A,
	KMIP_REASON_CONSTRAINT_VIOLATION = 0x4B,
	KMIP_REASON_DUPLICATE_PROCESS_REQUEST = 0x4C,
	KMIP_REASON_GENERAL_FAILURE = 0x100,
};

/* The reason to send in a response of version v: r itself where v defines it,
 * otherwise the nearest reason that v defines. */
uint32_t kmip_reason_for(enum kmip_reason r, struct kmip_version v);
/* The reason for a failure to decode a message or batch item. */
enum kmip_reason kmip_reason_for_error(int err);

struct kmip_text { /* borrowed, not NUL-terminated */
	const char *ptr;
	size_t len;
};

struct kmip_bytes { /* borrowed */
	const uint8_t *ptr;
	size_t len;
};

/* A run of sibling items from a decoded tree, or pre-encoded TTLV bytes. */
struct kmip_raw {
	const struct ttlv_item *first;
	size_t count;
	struct kmip_bytes encoded;
};

/* Request and response headers share one model; each has its own field list. */
enum kmip_header_field {
	KMIP_H_PROTOCOL_VERSION,
	KMIP_H_MAX_RESPONSE_SIZE,
	KMIP_H_NONCE,
	KMIP_H_SERVER_HASHED_PASSWORD,
	KMIP_H_CLIENT_CORRELATION,
	KMIP_H_SERVER_CORRELATION,
	KMIP_H_ASYNC_INDICATOR,
	KMIP_H_ATTESTATION_CAPABLE,
	KMIP_H_ATTESTATION_TYPES,
	KMIP_H_AUTHENTICATION,
	KMIP_H_BATCH_ERROR_OPTION,
	KMIP_H_BATCH_ORDER_OPTION,
	KMIP_H_TIME_STAMP,
	KMIP_H_BATCH_COUNT,
};

struct kmip_header {
	uint32_t present; /* bit (1 << enum kmip_header_field) per field present */
	struct kmip_version version;
	int32_t max_response_size;
	int64_t time_stamp;
	struct kmip_raw nonce, server_hashed_password, attestation_types, authentication;
	struct kmip_text client_correlation, server_correlation;
	bool async_indicator, attestation_capable, batch_order_option;
	uint32_t batch_error_option;
	int32_t batch_count;
	/* Username and Password of a Username and Password credential, if any. */
	struct kmip_text username, password;
};

enum kmip_batch_error_option {
	KMIP_BATCH_CONTINUE = 1,
	KMIP_BATCH_STOP = 2,
	KMIP_BATCH_UNDO = 3,
};

enum kmip_item_field {
	KMIP_I_OPERATION,
	KMIP_I_EPHEMERAL,
	KMIP_I_UNIQUE_BATCH_ITEM_ID,
	KMIP_I_RESULT_STATUS,
	KMIP_I_RESULT_REASON,
	KMIP_I_RESULT_MESSAGE,
	KMIP_I_ASYNC_CORRELATION,
	KMIP_I_PAYLOAD,
	KMIP_I_MESSAGE_EXTENSIONS,
};

struct kmip_batch_item {
	uint32_t present; /* bit (1 << enum kmip_item_field) per field present */
	uint32_t operation;
	bool ephemeral;
	struct kmip_bytes unique_batch_item_id;
	uint32_t result_status, result_reason;
	struct kmip_text result_message;
	struct kmip_bytes async_correlation;
	struct kmip_raw payload, message_extensions;
	int error; /* a request item that failed to decode: the other items still run */
};

struct kmip_message {
	bool response;
	struct kmip_header header;
	struct kmip_batch_item *items;
	size_t n_items;
	struct ttlv_item *tree; /* owned; the model borrows from it */
};

#define KMIP_FIELD(bit) (1u << (bit))

/* Decodes a Request Message or Response Message. The model borrows from buf.
 * A batch item that fails to decode has its error set; a failure of the message or
 * its header fails the call. */
int kmip_decode_message(const uint8_t *buf, size_t len, const struct ttlv_limits *lim,
			struct kmip_message **ret) KR_WUR;
void kmip_message_free(struct kmip_message *m);

/* Encodes a message from the model into at most max bytes (KR_E_KMIP_TOO_BIG past
 * that). */
int kmip_encode_message(const struct kmip_message *m, size_t max, uint8_t **ret_buf,
			size_t *ret_len) KR_WUR;

/* The Protocol Version that opens a message's header, read from the bytes alone, so
 * that a message malformed further on can be answered in its own version. */
bool kmip_peek_version(const uint8_t *buf, size_t len, struct kmip_version *ret);

/* The answer to a message that cannot be processed at all: a header and a single
 * batch item with no Operation, failed with reason r. */
int kmip_encode_message_error(struct kmip_version v, int64_t now, enum kmip_reason r,
			      const char *message, uint8_t **ret_buf, size_t *ret_len) KR_WUR;

#endif

/* SPDX-License-Identifier: BSD-3-Clause */
#include "config.h"

#include "errors.h"

const char *kr_strerror(int err)
{
	switch ((enum kr_error)err) {
	case KR_OK: return "success";
	case KR_E_NOMEM: return "out of memory";
	case KR_E_IO: return "output error";
	case KR_E_SYSTEM: return "system call failed";
	case KR_E_CONFIG: return "invalid configuration";
	case KR_E_TLS_HANDSHAKE: return "TLS handshake failed";
	case KR_E_TLS_CLOSED: return "client closed the connection";
	case KR_E_TLS_TRUNCATED: return "client closed the connection inside a message";
	case KR_E_TLS_TIMEOUT: return "timed out";
	case KR_E_TLS_IO: return "TLS error";
	case KR_E_P11_MODULE: return "PKCS#11 module cannot be loaded";
	case KR_E_P11_TOKEN: return "PKCS#11 token not found";
	case KR_E_P11_PIN: return "PKCS#11 login failed";
	case KR_E_P11_NOT_FOUND: return "PKCS#11 object not found";
	case KR_E_P11_FAILED: return "PKCS#11 call failed";
	case KR_E_P11_NOT_PERMITTED: return "the key's attributes do not permit this";
	case KR_E_P11_SENSITIVE: return "the key is sensitive or not extractable";
	case KR_E_P11_MECHANISM: return "the token does not support this mechanism";
	case KR_E_P11_TEMPLATE: return "the token refused the key's attributes";
	case KR_E_P11_DATA: return "the token refused the data";
	case KR_E_P11_SIGNATURE: return "the signature does not verify";
	case KR_E_P11_DEVICE: return "the token is not available";
	case KR_E_AUTH: return "authentication failed";
	case KR_E_PROXY_MISSING: return "PROXY header missing";
	case KR_E_PROXY_UNTRUSTED: return "PROXY header from an address not in proxy_protocol.trusted";
	case KR_E_PROXY_CLOSED: return "connection closed before the PROXY header";
	case KR_E_PROXY_TRUNCATED: return "PROXY header truncated";
	case KR_E_PROXY_TIMEOUT: return "PROXY header not complete within timeouts.handshake";
	case KR_E_PROXY_V1_TOO_LONG: return "PROXY header: v1 line longer than 107 bytes";
	case KR_E_PROXY_V1_SYNTAX: return "PROXY header: malformed v1 line";
	case KR_E_PROXY_ADDRESS: return "PROXY header: invalid address";
	case KR_E_PROXY_PORT: return "PROXY header: invalid port";
	case KR_E_PROXY_V2_COMMAND: return "PROXY header: unknown v2 version or command";
	case KR_E_PROXY_FAMILY: return "PROXY header: not TCP over IPv4 or IPv6";
	case KR_E_PROXY_V2_LENGTH: return "PROXY header: v2 length shorter than its addresses";
	case KR_E_TTLV_TRUNCATED: return "TTLV: input truncated";
	case KR_E_TTLV_OVERRUN: return "TTLV: item length overruns its enclosing structure";
	case KR_E_TTLV_TRAILING: return "TTLV: trailing bytes after the message";
	case KR_E_TTLV_TYPE: return "TTLV: unknown item type";
	case KR_E_TTLV_LENGTH: return "TTLV: length not valid for the item type";
	case KR_E_TTLV_PADDING: return "TTLV: non-zero padding";
	case KR_E_TTLV_BOOLEAN: return "TTLV: Boolean is neither 0 nor 1";
	case KR_E_TTLV_UTF8: return "TTLV: Text String is not valid UTF-8";
	case KR_E_TTLV_BIGINT: return "TTLV: Big Integer length is not a non-zero multiple of 8";
	case KR_E_TTLV_DEPTH: return "TTLV: nesting too deep";
	case KR_E_TTLV_TOO_BIG: return "TTLV: message exceeds the size limit";
	case KR_E_TTLV_TOO_MANY: return "TTLV: too many items";
	case KR_E_TTLV_WRITER: return "TTLV: unbalanced structure in writer";
	case KR_E_KMIP_MISSING: return "KMIP: required field missing";
	case KR_E_KMIP_UNEXPECTED: return "KMIP: field out of order or repeated";
	case KR_E_KMIP_UNKNOWN_FIELD: return "KMIP: field not defined in this structure";
	case KR_E_KMIP_UNKNOWN_ATTRIBUTE: return "KMIP: unknown attribute name";
	case KR_E_KMIP_FORMAT: return "KMIP: key format not supported for this object";
	case KR_E_KMIP_NOT_MESSAGE: return "KMIP: not a Request Message or Response Message";
	case KR_E_KMIP_FIELD_TYPE: return "KMIP: field has the wrong item type";
	case KR_E_KMIP_TOO_BIG: return "KMIP: response exceeds the maximum response size";
	case KR_E_KMIP_BATCH_COUNT: return "KMIP: Batch Count does not match the batch items";
	}
	return "unknown error";
}

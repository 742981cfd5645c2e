/* SPDX-License-Identifier: BSD-3-Clause */
/* Project-wide error codes: 0 is success, every failure is a distinct negative code. */
#ifndef KR_ERRORS_H
#define KR_ERRORS_H

enum kr_error {
	KR_OK = 0,
	KR_E_NOMEM = -1,
	KR_E_IO = -2,
	KR_E_SYSTEM = -3,             /* a system call failed; errno tells more */

	/* TTLV decoding: one code per way an item can be malformed. */
	KR_E_TTLV_TRUNCATED = -100,   /* input ends inside an item header or value */
	KR_E_TTLV_OVERRUN = -101,     /* item length runs past its enclosing structure */
	KR_E_TTLV_TRAILING = -102,    /* bytes after the top-level item */
	KR_E_TTLV_TYPE = -104,        /* unknown item type */
	KR_E_TTLV_LENGTH = -105,      /* length not allowed for the item's type */
	KR_E_TTLV_PADDING = -106,     /* non-zero padding byte */
	KR_E_TTLV_BOOLEAN = -107,     /* Boolean other than 0 or 1 */
	KR_E_TTLV_UTF8 = -108,        /* Text String not valid UTF-8 */
	KR_E_TTLV_BIGINT = -109,      /* Big Integer length not a non-zero multiple of 8 */
	KR_E_TTLV_DEPTH = -110,       /* nesting deeper than the limit */
	KR_E_TTLV_TOO_BIG = -111,     /* message longer than the size limit */
	KR_E_TTLV_TOO_MANY = -112,    /* more items than the limit */
	KR_E_TTLV_WRITER = -113,      /* writer misuse: unbalanced begin/end */

	/* KMIP message layer. */
	KR_E_KMIP_MISSING = -200,     /* a required field is absent */
	KR_E_KMIP_UNEXPECTED = -201,  /* a known field out of order or repeated */
	KR_E_KMIP_FIELD_TYPE = -202,  /* a known field with the wrong item type */
	KR_E_KMIP_TOO_BIG = -203,     /* the response exceeds the allowed size */
	KR_E_KMIP_BATCH_COUNT = -204, /* Batch Count differs from the batch items present */
	KR_E_KMIP_UNKNOWN_FIELD = -205, /* a field that the structure does not define */
	KR_E_KMIP_NOT_MESSAGE = -206, /* the top-level item is not a Request or Response Message */
	KR_E_KMIP_UNKNOWN_ATTRIBUTE = -207, /* an attribute name or tag with no known counterpart */
	KR_E_KMIP_FORMAT = -208,      /* the object cannot be given in the requested format */

	KR_E_CONFIG = -300,           /* the configuration is invalid */

	KR_E_TLS_HANDSHAKE = -400,    /* the TLS handshake failed */
	KR_E_TLS_CLOSED = -401,       /* the peer closed the connection between messages */
	KR_E_TLS_TRUNCATED = -402,    /* the peer closed the connection inside a message */
	KR_E_TLS_TIMEOUT = -403,      /* no data within the timeout */
	KR_E_TLS_IO = -404,           /* a TLS or socket error */

	KR_E_P11_MODULE = -500,       /* the PKCS#11 module cannot be loaded or initialised */
	KR_E_P11_TOKEN = -501,        /* no token matches, or it cannot be opened */
	KR_E_P11_PIN = -502,          /* the PIN is wrong, locked or unreadable */
	KR_E_P11_NOT_FOUND = -503,    /* no object matches */
	KR_E_P11_FAILED = -504,       /* a PKCS#11 call failed */
	KR_E_P11_NOT_PERMITTED = -505, /* the object's attributes forbid the function */
	KR_E_P11_SENSITIVE = -506,    /* the value is sensitive or the key unextractable */
	KR_E_P11_MECHANISM = -507,    /* the token does not support the mechanism or function */
	KR_E_P11_TEMPLATE = -508,     /* the token refused the attributes or arguments */
	KR_E_P11_DATA = -509,         /* the token refused the data */
	KR_E_P11_SIGNATURE = -510,    /* the signature does not verify */
	KR_E_P11_DEVICE = -511,       /* the token or its session is gone */

	KR_E_AUTH = -600,             /* the client is not who it may be, or not the connection's */

	/* The PROXY protocol header a balancer sends before TLS. */
	KR_E_PROXY_MISSING = -700,    /* the connection does not begin with one */
	KR_E_PROXY_UNTRUSTED = -701,  /* one from an address not in proxy_protocol.trusted */
	KR_E_PROXY_CLOSED = -702,     /* the connection ended before its first byte */
	KR_E_PROXY_TRUNCATED = -703,  /* the connection ended inside it; or more bytes are needed */
	KR_E_PROXY_TIMEOUT = -704,    /* not complete within timeouts.handshake */
	KR_E_PROXY_V1_TOO_LONG = -705, /* a v1 line without CRLF in its 107 bytes */
	KR_E_PROXY_V1_SYNTAX = -706,  /* a v1 line that is not PROXY TCP4|TCP6|UNKNOWN ... CRLF */
	KR_E_PROXY_ADDRESS = -707,    /* an address that is not one of its family */
	KR_E_PROXY_PORT = -708,       /* a v1 port that is not 0..65535 in plain decimal */
	KR_E_PROXY_V2_COMMAND = -709, /* a v2 version other than 2, or a command other than LOCAL, PROXY */
	KR_E_PROXY_FAMILY = -710,     /* a PROXY command for other than TCP over IPv4 or IPv6 */
	KR_E_PROXY_V2_LENGTH = -711,  /* a v2 length too short for its addresses */
};

/* Static text for a code; never NULL. */
const char *kr_strerror(int err);

#if defined(__GNUC__)
#define KR_WUR __attribute__((warn_unused_result))
#else
#define KR_WUR
#endif

#endif

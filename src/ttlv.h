/* SPDX-License-Identifier: BSD-3-Clause */
/* TTLV (Tag, Type, Length, Value) reader and writer over memory buffers.
 *
 * The reader validates a whole message in one pass with a cursor bounded by each
 * structure's declared length, then builds a read-only tree whose values point into
 * the caller's buffer. The writer reserves each structure's length, writes the
 * children and fills the length in. Neither does I/O or knows KMIP semantics. */
#ifndef KR_TTLV_H
#define KR_TTLV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "errors.h"

enum ttlv_type {
	TTLV_STRUCTURE = 0x01,
	TTLV_INTEGER = 0x02,
	TTLV_LONG_INTEGER = 0x03,
	TTLV_BIG_INTEGER = 0x04,
	TTLV_ENUMERATION = 0x05,
	TTLV_BOOLEAN = 0x06,
	TTLV_TEXT_STRING = 0x07,
	TTLV_BYTE_STRING = 0x08,
	TTLV_DATE_TIME = 0x09,
	TTLV_INTERVAL = 0x0A,
	TTLV_DATE_TIME_EXTENDED = 0x0B, /* KMIP 2.0 */
};

#define TTLV_HEADER_LEN 8
#define TTLV_MAX_DEPTH 32 /* hard ceiling; limits may only lower it */
#define TTLV_DEFAULT_MAX_SIZE (1024 * 1024)
#define TTLV_DEFAULT_MAX_ITEMS 16384

struct ttlv_limits {
	size_t max_depth; /* nested structures, the outermost counting 1 */
	size_t max_size;  /* whole message, header included */
	size_t max_items; /* items in the message, the outermost included */
};

extern const struct ttlv_limits ttlv_default_limits;

struct ttlv_item {
	uint32_t tag;
	enum ttlv_type type;
	uint32_t len;                 /* value length on the wire, padding excluded */
	const uint8_t *value;         /* borrowed: points into the decoded buffer */
	const struct ttlv_item *child; /* first child of a structure */
	const struct ttlv_item *next;  /* next sibling */
};

/* Type name for traces ("Structure", "Integer", ...); "Unknown" otherwise. */
const char *ttlv_type_name(enum ttlv_type type);

/* Reads the 8-byte header of a top-level item and returns the whole item's size, so
 * that a caller can refuse an oversized message before reading its body. */
int ttlv_frame_length(const uint8_t hdr[TTLV_HEADER_LEN], const struct ttlv_limits *lim,
		      size_t *ret_total) KR_WUR;

/* Decodes exactly one top-level item filling buf[0..len). The tree borrows from buf,
 * which must outlive it. Free the tree with ttlv_free(*ret_root). */
int ttlv_decode(const uint8_t *buf, size_t len, const struct ttlv_limits *lim,
		struct ttlv_item **ret_root) KR_WUR;
void ttlv_free(struct ttlv_item *root);

/* Values of validated items; the caller has checked the type. */
int32_t ttlv_int(const struct ttlv_item *it);
int64_t ttlv_long(const struct ttlv_item *it); /* Long Integer, Date-Time, Date-Time Extended */
uint32_t ttlv_enum(const struct ttlv_item *it); /* Enumeration, Interval */
bool ttlv_bool(const struct ttlv_item *it);

/* Whether two items are the same: tag, type and value, a structure's children
 * in order. */
bool ttlv_equal(const struct ttlv_item *a, const struct ttlv_item *b);

/* First child of a structure with this tag, or NULL. */
const struct ttlv_item *ttlv_find(const struct ttlv_item *parent, uint32_t tag);
size_t ttlv_count_children(const struct ttlv_item *parent);

/* Well-formed UTF-8 in shortest form, no surrogates, nothing past U+10FFFF. U+0000
 * is valid (a vector from a real server holds one): users needing a C string check
 * for it. */
bool ttlv_utf8_valid(const uint8_t *s, size_t len);
/* The length of the well-formed UTF-8 character at s (at most len bytes), with its
 * code point in *ret_cp; 0 if there is none. */
size_t ttlv_utf8_char(const uint8_t *s, size_t len, uint32_t *ret_cp);

/* The writer keeps a sticky error: after the first failure every call is a no-op,
 * and ttlv_writer_finish reports it. Its memory is wiped when freed, because
 * responses carry key material. */
struct ttlv_writer {
	uint8_t *buf;
	size_t len, cap, max;
	size_t open[TTLV_MAX_DEPTH]; /* offsets of the structures not yet ended */
	unsigned depth;
	int err;
};

void ttlv_writer_init(struct ttlv_writer *w, size_t max);
void ttlv_begin(struct ttlv_writer *w, uint32_t tag);
void ttlv_end(struct ttlv_writer *w);
void ttlv_put_int(struct ttlv_writer *w, uint32_t tag, int32_t v);
void ttlv_put_long(struct ttlv_writer *w, uint32_t tag, int64_t v);
void ttlv_put_enum(struct ttlv_writer *w, uint32_t tag, uint32_t v);
void ttlv_put_bool(struct ttlv_writer *w, uint32_t tag, bool v);
void ttlv_put_text(struct ttlv_writer *w, uint32_t tag, const char *s, size_t len);
void ttlv_put_bytes(struct ttlv_writer *w, uint32_t tag, const void *p, size_t len);
void ttlv_put_datetime(struct ttlv_writer *w, uint32_t tag, int64_t t);
void ttlv_put_interval(struct ttlv_writer *w, uint32_t tag, uint32_t v);
/* An unsigned big-endian magnitude as a Big Integer: sign-extended (a leading zero
 * byte where the top bit is set) to a multiple of 8 bytes. */
void ttlv_put_bigint(struct ttlv_writer *w, uint32_t tag, const uint8_t *magnitude, size_t len);
/* A decoded item and its children, written under a new tag (or its own). */
void ttlv_put_item(struct ttlv_writer *w, uint32_t tag, const struct ttlv_item *it);
void ttlv_put_items(struct ttlv_writer *w, const struct ttlv_item *first, size_t count);
/* Bytes that are already TTLV-encoded, appended as they are. */
void ttlv_put_encoded(struct ttlv_writer *w, const void *p, size_t len);
/* Hands over the encoded bytes (free with ttlv_buf_free) or reports the first error;
 * either way the writer is left empty. */
int ttlv_writer_finish(struct ttlv_writer *w, uint8_t **ret_buf, size_t *ret_len) KR_WUR;
void ttlv_writer_clear(struct ttlv_writer *w);
/* Wipes and frees a buffer that held a message. */
void ttlv_buf_free(uint8_t *buf, size_t len);

#endif

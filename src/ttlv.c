/* SPDX-License-Identifier: BSD-3-Clause */
#include "config.h"

#include "ttlv.h"

#include <stdlib.h>
#include <string.h>

const struct ttlv_limits ttlv_default_limits = {
	.max_depth = TTLV_MAX_DEPTH,
	.max_size = TTLV_DEFAULT_MAX_SIZE,
	.max_items = TTLV_DEFAULT_MAX_ITEMS,
};

static uint32_t get_be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static uint64_t get_be64(const uint8_t *p)
{
	return (uint64_t)get_be32(p) << 32 | get_be32(p + 4);
}

static void put_be32(uint8_t *p, uint32_t v)
{
	p[0] = v >> 24;
	p[1] = v >> 16;
	p[2] = v >> 8;
	p[3] = v;
}

/* In 64 bits: with a 32-bit size_t, a length near UINT32_MAX would wrap to 0. */
static uint64_t padded(uint64_t len)
{
	return (len + 7) & ~(uint64_t)7;
}

const char *ttlv_type_name(enum ttlv_type type)
{
	switch (type) {
	case TTLV_STRUCTURE: return "Structure";
	case TTLV_INTEGER: return "Integer";
	case TTLV_LONG_INTEGER: return "Long Integer";
	case TTLV_BIG_INTEGER: return "Big Integer";
	case TTLV_ENUMERATION: return "Enumeration";
	case TTLV_BOOLEAN: return "Boolean";
	case TTLV_TEXT_STRING: return "Text String";
	case TTLV_BYTE_STRING: return "Byte String";
	case TTLV_DATE_TIME: return "Date-Time";
	case TTLV_INTERVAL: return "Interval";
	case TTLV_DATE_TIME_EXTENDED: return "Date-Time Extended";
	}
	return "Unknown";
}

/* The value length a type requires, 0 for variable-length types, -1 if unknown. */
static int fixed_length(uint8_t type)
{
	switch (type) {
	case TTLV_INTEGER:
	case TTLV_ENUMERATION:
	case TTLV_INTERVAL:
		return 4;
	case TTLV_LONG_INTEGER:
	case TTLV_BOOLEAN:
	case TTLV_DATE_TIME:
	case TTLV_DATE_TIME_EXTENDED:
		return 8;
	case TTLV_STRUCTURE:
	case TTLV_BIG_INTEGER:
	case TTLV_TEXT_STRING:
	case TTLV_BYTE_STRING:
		return 0;
	}
	return -1;
}

/* Checks type and the type's length rule of one item header. Any tag is well-formed
 * TTLV; which tags belong where is the KMIP layer's business. */
static int check_header(const uint8_t *p, uint32_t *ret_tag, uint8_t *ret_type, uint32_t *ret_len)
{
	uint32_t tag = get_be32(p) >> 8;
	uint8_t type = p[3];
	uint32_t len = get_be32(p + 4);
	int fixed;

	fixed = fixed_length(type);
	if (fixed < 0)
		return KR_E_TTLV_TYPE;
	if (fixed > 0 && len != (uint32_t)fixed)
		return KR_E_TTLV_LENGTH;
	if (type == TTLV_BIG_INTEGER && (len == 0 || len % 8 != 0))
		return KR_E_TTLV_BIGINT;
	*ret_tag = tag;
	*ret_type = type;
	*ret_len = len;
	return 0;
}

int ttlv_frame_length(const uint8_t hdr[TTLV_HEADER_LEN], const struct ttlv_limits *lim,
		      size_t *ret_total)
{
	uint32_t tag, len;
	uint8_t type;
	uint64_t total;
	int r;

	r = check_header(hdr, &tag, &type, &len);
	if (r < 0)
		return r;
	total = TTLV_HEADER_LEN + padded(len);
	if (total > lim->max_size)
		return KR_E_TTLV_TOO_BIG;
	*ret_total = (size_t)total;
	return 0;
}

size_t ttlv_utf8_char(const uint8_t *s, size_t len, uint32_t *ret_cp)
{
	uint8_t c = len ? s[0] : 0;
	uint32_t cp, min;
	size_t n;

	if (len == 0)
		return 0;
	if (c < 0x80) {
		*ret_cp = c;
		return 1;
	}
	if ((c & 0xE0) == 0xC0)
		n = 1, cp = c & 0x1F, min = 0x80;
	else if ((c & 0xF0) == 0xE0)
		n = 2, cp = c & 0x0F, min = 0x800;
	else if ((c & 0xF8) == 0xF0)
		n = 3, cp = c & 0x07, min = 0x10000;
	else
		return 0;
	if (n > len - 1)
		return 0;
	for (size_t k = 1; k <= n; k++) {
		if ((s[k] & 0xC0) != 0x80)
			return 0;
		cp = cp << 6 | (s[k] & 0x3F);
	}
	if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
		return 0;
	*ret_cp = cp;
	return n + 1;
}

bool ttlv_utf8_valid(const uint8_t *s, size_t len)
{
	uint32_t cp;

	for (size_t i = 0, n; i < len; i += n)
		if (!(n = ttlv_utf8_char(s + i, len - i, &cp)))
			return false;
	return true;
}

static int check_value(uint8_t type, const uint8_t *v, uint32_t len)
{
	size_t pad_end = padded(len);

	for (size_t i = len; i < pad_end; i++)
		if (v[i] != 0)
			return KR_E_TTLV_PADDING;
	if (type == TTLV_BOOLEAN && get_be64(v) > 1)
		return KR_E_TTLV_BOOLEAN;
	if (type == TTLV_TEXT_STRING && !ttlv_utf8_valid(v, len))
		return KR_E_TTLV_UTF8;
	return 0;
}

/* One decoding pass. With items == NULL it only validates and counts; the second
 * pass fills the items that the first counted. */
struct decoder {
	const struct ttlv_limits *lim;
	struct ttlv_item *items;
	size_t n;
};

static int decode_seq(struct decoder *d, const uint8_t *p, size_t len, size_t depth,
		      const struct ttlv_item **ret_first)
{
	struct ttlv_item *prev = NULL;
	size_t off = 0;

	*ret_first = NULL;
	while (off < len) {
		struct ttlv_item *it = NULL;
		const uint8_t *v;
		uint32_t tag, vlen;
		uint8_t type;
		int r;

		if (len - off < TTLV_HEADER_LEN)
			return KR_E_TTLV_OVERRUN;
		r = check_header(p + off, &tag, &type, &vlen);
		if (r < 0)
			return r;
		if (padded(vlen) > len - off - TTLV_HEADER_LEN)
			return KR_E_TTLV_OVERRUN;
		if (d->n >= d->lim->max_items)
			return KR_E_TTLV_TOO_MANY;
		v = p + off + TTLV_HEADER_LEN;
		if (d->items) {
			it = &d->items[d->n];
			*it = (struct ttlv_item){ .tag = tag, .type = type, .len = vlen, .value = v };
			if (prev)
				prev->next = it;
			else
				*ret_first = it;
			prev = it;
		}
		d->n++;
		if (type == TTLV_STRUCTURE) {
			const struct ttlv_item *child;

			if (depth + 1 > d->lim->max_depth || depth + 1 > TTLV_MAX_DEPTH)
				return KR_E_TTLV_DEPTH;
			r = decode_seq(d, v, vlen, depth + 1, &child);
			if (r < 0)
				return r;
			if (it)
				it->child = child;
		} else {
			r = check_value(type, v, vlen);
			if (r < 0)
				return r;
		}
		off += TTLV_HEADER_LEN + padded(vlen);
	}
	return 0;
}

int ttlv_decode(const uint8_t *buf, size_t len, const struct ttlv_limits *lim,
		struct ttlv_item **ret_root)
{
	struct decoder d = { .lim = lim };
	const struct ttlv_item *first;
	size_t total;
	int r;

	if (len < TTLV_HEADER_LEN)
		return KR_E_TTLV_TRUNCATED;
	r = ttlv_frame_length(buf, lim, &total);
	if (r < 0)
		return r;
	if (total > len)
		return KR_E_TTLV_TRUNCATED;
	if (total < len)
		return KR_E_TTLV_TRAILING;
	r = decode_seq(&d, buf, len, 0, &first);
	if (r < 0)
		return r;
	d.items = calloc(d.n, sizeof(*d.items));
	if (!d.items)
		return KR_E_NOMEM;
	d.n = 0;
	r = decode_seq(&d, buf, len, 0, &first);
	if (r < 0) { /* cannot happen: the first pass accepted the same bytes */
		free(d.items);
		return r;
	}
	*ret_root = d.items;
	return 0;
}

void ttlv_free(struct ttlv_item *root)
{
	free(root);
}

int32_t ttlv_int(const struct ttlv_item *it)
{
	return (int32_t)get_be32(it->value);
}

int64_t ttlv_long(const struct ttlv_item *it)
{
	return (int64_t)get_be64(it->value);
}

uint32_t ttlv_enum(const struct ttlv_item *it)
{
	return get_be32(it->value);
}

bool ttlv_bool(const struct ttlv_item *it)
{
	return get_be64(it->value) != 0;
}

bool ttlv_equal(const struct ttlv_item *a, const struct ttlv_item *b)
{
	if (a->tag != b->tag || a->type != b->type)
		return false;
	if (a->type != TTLV_STRUCTURE)
		return a->len == b->len && (a->len == 0 || memcmp(a->value, b->value, a->len) == 0);
	for (a = a->child, b = b->child; a && b; a = a->next, b = b->next)
		if (!ttlv_equal(a, b))
			return false;
	return !a && !b;
}

const struct ttlv_item *ttlv_find(const struct ttlv_item *parent, uint32_t tag)
{
	for (const struct ttlv_item *c = parent->child; c; c = c->next)
		if (c->tag == tag)
			return c;
	return NULL;
}

size_t ttlv_count_children(const struct ttlv_item *parent)
{
	size_t n = 0;

	for (const struct ttlv_item *c = parent->child; c; c = c->next)
		n++;
	return n;
}

/* Writer */

void ttlv_writer_init(struct ttlv_writer *w, size_t max)
{
	*w = (struct ttlv_writer){ .max = max };
}

void ttlv_buf_free(uint8_t *buf, size_t len)
{
	if (!buf)
		return;
	explicit_bzero(buf, len);
	free(buf);
}

void ttlv_writer_clear(struct ttlv_writer *w)
{
	ttlv_buf_free(w->buf, w->cap);
	ttlv_writer_init(w, w->max);
}

/* Room for n more bytes. Grows by copying, so that no unwiped copy is left behind
 * as realloc could. */
static uint8_t *reserve(struct ttlv_writer *w, size_t n)
{
	uint8_t *p;
	size_t cap;

	if (w->err)
		return NULL;
	if (n > w->max || w->len > w->max - n) {
		w->err = KR_E_TTLV_TOO_BIG;
		return NULL;
	}
	if (n > w->cap - w->len) {
		cap = w->cap ? w->cap : 256;
		while (n > cap - w->len)
			cap = cap > w->max / 2 ? w->max : cap * 2;
		p = malloc(cap);
		if (!p) {
			w->err = KR_E_NOMEM;
			return NULL;
		}
		if (w->len)
			memcpy(p, w->buf, w->len);
		ttlv_buf_free(w->buf, w->cap);
		w->buf = p;
		w->cap = cap;
	}
	p = w->buf + w->len;
	w->len += n;
	return p;
}

static void put_header(uint8_t *p, uint32_t tag, enum ttlv_type type, uint32_t len)
{
	put_be32(p, tag << 8 | type);
	put_be32(p + 4, len);
}

static void put_raw(struct ttlv_writer *w, uint32_t tag, enum ttlv_type type, const void *v,
		    size_t len)
{
	uint8_t *p;

	if (len > UINT32_MAX - 7) {
		if (!w->err)
			w->err = KR_E_TTLV_TOO_BIG;
		return;
	}
	p = reserve(w, TTLV_HEADER_LEN + padded(len));
	if (!p)
		return;
	put_header(p, tag, type, (uint32_t)len);
	if (len)
		memcpy(p + TTLV_HEADER_LEN, v, len);
	memset(p + TTLV_HEADER_LEN + len, 0, padded(len) - len);
}

void ttlv_begin(struct ttlv_writer *w, uint32_t tag)
{
	uint8_t *p;

	if (w->depth >= TTLV_MAX_DEPTH) {
		if (!w->err)
			w->err = KR_E_TTLV_WRITER;
		return;
	}
	p = reserve(w, TTLV_HEADER_LEN);
	if (!p)
		return;
	put_header(p, tag, TTLV_STRUCTURE, 0);
	w->open[w->depth++] = w->len;
}

void ttlv_end(struct ttlv_writer *w)
{
	size_t start;

	if (w->err)
		return;
	if (w->depth == 0) {
		w->err = KR_E_TTLV_WRITER;
		return;
	}
	start = w->open[--w->depth];
	if (w->len - start > UINT32_MAX) {
		w->err = KR_E_TTLV_TOO_BIG;
		return;
	}
	put_be32(w->buf + start - 4, (uint32_t)(w->len - start));
}

static void put_u32(struct ttlv_writer *w, uint32_t tag, enum ttlv_type type, uint32_t v)
{
	uint8_t b[4];

	put_be32(b, v);
	put_raw(w, tag, type, b, sizeof(b));
}

static void put_u64(struct ttlv_writer *w, uint32_t tag, enum ttlv_type type, uint64_t v)
{
	uint8_t b[8];

	put_be32(b, (uint32_t)(v >> 32));
	put_be32(b + 4, (uint32_t)v);
	put_raw(w, tag, type, b, sizeof(b));
}

void ttlv_put_int(struct ttlv_writer *w, uint32_t tag, int32_t v)
{
	put_u32(w, tag, TTLV_INTEGER, (uint32_t)v);
}

void ttlv_put_long(struct ttlv_writer *w, uint32_t tag, int64_t v)
{
	put_u64(w, tag, TTLV_LONG_INTEGER, (uint64_t)v);
}

void ttlv_put_enum(struct ttlv_writer *w, uint32_t tag, uint32_t v)
{
	put_u32(w, tag, TTLV_ENUMERATION, v);
}

void ttlv_put_bool(struct ttlv_writer *w, uint32_t tag, bool v)
{
	put_u64(w, tag, TTLV_BOOLEAN, v ? 1 : 0);
}

void ttlv_put_text(struct ttlv_writer *w, uint32_t tag, const char *s, size_t len)
{
	put_raw(w, tag, TTLV_TEXT_STRING, s, len);
}

void ttlv_put_bytes(struct ttlv_writer *w, uint32_t tag, const void *p, size_t len)
{
	put_raw(w, tag, TTLV_BYTE_STRING, p, len);
}

void ttlv_put_datetime(struct ttlv_writer *w, uint32_t tag, int64_t t)
{
	put_u64(w, tag, TTLV_DATE_TIME, (uint64_t)t);
}

void ttlv_put_interval(struct ttlv_writer *w, uint32_t tag, uint32_t v)
{
	put_u32(w, tag, TTLV_INTERVAL, v);
}

void ttlv_put_bigint(struct ttlv_writer *w, uint32_t tag, const uint8_t *magnitude, size_t len)
{
	size_t total, pad;
	uint8_t *p;

	while (len > 0 && magnitude[0] == 0) {
		magnitude++;
		len--;
	}
	/* Room for a zero byte that keeps the number positive. */
	total = len == 0 || (magnitude[0] & 0x80) ? len + 1 : len;
	total = padded(total);
	if (total > UINT32_MAX) {
		if (!w->err)
			w->err = KR_E_TTLV_TOO_BIG;
		return;
	}
	p = reserve(w, TTLV_HEADER_LEN + (size_t)total);
	if (!p)
		return;
	put_header(p, tag, TTLV_BIG_INTEGER, (uint32_t)total);
	pad = (size_t)total - len;
	memset(p + TTLV_HEADER_LEN, 0, pad);
	if (len)
		memcpy(p + TTLV_HEADER_LEN + pad, magnitude, len);
}

void ttlv_put_item(struct ttlv_writer *w, uint32_t tag, const struct ttlv_item *it)
{
	if (it->type != TTLV_STRUCTURE) {
		put_raw(w, tag, it->type, it->value, it->len);
		return;
	}
	ttlv_begin(w, tag);
	for (const struct ttlv_item *c = it->child; c; c = c->next)
		ttlv_put_item(w, c->tag, c);
	ttlv_end(w);
}

void ttlv_put_items(struct ttlv_writer *w, const struct ttlv_item *first, size_t count)
{
	for (; first && count > 0; first = first->next, count--)
		ttlv_put_item(w, first->tag, first);
}

void ttlv_put_encoded(struct ttlv_writer *w, const void *p, size_t len)
{
	uint8_t *dst = reserve(w, len);

	if (dst && len)
		memcpy(dst, p, len);
}

int ttlv_writer_finish(struct ttlv_writer *w, uint8_t **ret_buf, size_t *ret_len)
{
	int r = w->err;

	if (!r && w->depth != 0)
		r = KR_E_TTLV_WRITER;
	if (!r && !w->buf)
		r = KR_E_TTLV_WRITER;
	if (r < 0) {
		ttlv_writer_clear(w);
		return r;
	}
	*ret_buf = w->buf;
	*ret_len = w->len;
	w->buf = NULL;
	ttlv_writer_clear(w);
	return 0;
}

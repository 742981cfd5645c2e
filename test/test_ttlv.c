/* SPDX-License-Identifier: BSD-3-Clause */
#include "config.h"

#include <check.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "errors.h"
#include "kmip_names.h"
#include "testutil.h"
#include "ttlv.h"
#include "ttlv_print.h"

/* The vectors, listed once in main: the round trip runs one iteration per vector. */
static char **vectors;
static size_t n_vectors;

/* Where a failed decode must leave *ret_root. */
static struct ttlv_item sentinel_item;
#define SENTINEL (&sentinel_item)

/* The KMIP spec's Structure example (KMIP 1.0, 9.1.2): an Enumeration 254 and an
 * Integer 255 under tag 0x420020. */
#define SPEC_STRUCTURE \
	"42002001000000204200040500000004000000FE000000004200050200000004000000FF00000000"

#define CASCADE_VECTOR "cascade_query_captured.hex"
/* Items in the Cascade query, counted by hand from its hex. */
#define CASCADE_ITEMS 18

/* A copy in a buffer of exactly len bytes, so that ASan catches any read past it. */
static uint8_t *exact_copy(const uint8_t *p, size_t len)
{
	uint8_t *q = malloc(len ? len : 1);

	ck_assert_ptr_nonnull(q);
	if (len)
		memcpy(q, p, len);
	return q;
}

static uint8_t *exact_hex(const char *hex, size_t *ret_len)
{
	size_t len;
	uint8_t *tmp = tu_hex(hex, &len);
	uint8_t *buf = exact_copy(tmp, len);

	free(tmp);
	*ret_len = len;
	return buf;
}

static uint8_t *read_vector(const char *name, size_t *ret_len)
{
	char *path = tu_path(tu_vectors_dir(), name);
	size_t len;
	uint8_t *tmp = tu_read_hex(path, &len);
	uint8_t *buf = exact_copy(tmp, len);

	free(tmp);
	free(path);
	*ret_len = len;
	return buf;
}

/* Decodes buf; a failure must leave the output alone, a success must set it. */
static int decode_buf(const uint8_t *buf, size_t len, const struct ttlv_limits *lim)
{
	struct ttlv_item *root = SENTINEL;
	int r = ttlv_decode(buf, len, lim, &root);

	if (r < 0) {
		ck_assert_ptr_eq(root, SENTINEL);
	} else {
		ck_assert_int_eq(r, 0);
		ck_assert_ptr_ne(root, SENTINEL);
		ck_assert_ptr_nonnull(root);
		ttlv_free(root);
	}
	return r;
}

static int decode_hex_lim(const char *hex, const struct ttlv_limits *lim)
{
	size_t len;
	uint8_t *buf = exact_hex(hex, &len);
	int r = decode_buf(buf, len, lim);

	free(buf);
	return r;
}

static int decode_hex(const char *hex)
{
	return decode_hex_lim(hex, &ttlv_default_limits);
}

/* A decoded message that the test inspects; the tree borrows buf. */
struct decoded {
	uint8_t *buf;
	size_t len;
	struct ttlv_item *root;
};

static void decode_ok(const char *hex, struct decoded *d)
{
	d->buf = exact_hex(hex, &d->len);
	d->root = NULL;
	ck_assert_int_eq(ttlv_decode(d->buf, d->len, &ttlv_default_limits, &d->root), 0);
	ck_assert_ptr_nonnull(d->root);
}

static void decoded_free(struct decoded *d)
{
	ttlv_free(d->root);
	free(d->buf);
}

/* Finishes the writer and checks its output against hex, byte for byte. */
static void finish_eq(struct ttlv_writer *w, const char *hex)
{
	size_t want_len, got_len = 0;
	uint8_t *want = tu_hex(hex, &want_len);
	uint8_t *got = NULL;

	ck_assert_int_eq(ttlv_writer_finish(w, &got, &got_len), 0);
	ck_assert_ptr_nonnull(got);
	ck_assert_uint_eq(got_len, want_len);
	ck_assert_mem_eq(got, want, want_len);
	ttlv_buf_free(got, got_len);
	free(want);
}

/* Finishing must fail with err and leave the outputs alone. */
static void finish_fails(struct ttlv_writer *w, int err)
{
	uint8_t *buf = (uint8_t *)SENTINEL;
	size_t len = 12345;

	ck_assert_int_eq(ttlv_writer_finish(w, &buf, &len), err);
	ck_assert_ptr_eq(buf, (uint8_t *)SENTINEL);
	ck_assert_uint_eq(len, 12345);
}

/* Re-encodes a decoded tree and checks that it gives back exactly buf[0..len). */
static void check_reencodes(const struct ttlv_item *root, const uint8_t *buf, size_t len,
			    const char *name)
{
	struct ttlv_writer w;
	uint8_t *out = NULL;
	size_t out_len = 0;
	int r;

	ttlv_writer_init(&w, len);
	ttlv_put_item(&w, root->tag, root);
	r = ttlv_writer_finish(&w, &out, &out_len);
	ck_assert_msg(r == 0, "%s: re-encoding failed: %s", name, kr_strerror(r));
	ck_assert_msg(out_len == len, "%s: re-encoded %zu bytes, expected %zu", name, out_len, len);
	ck_assert_msg(memcmp(out, buf, len) == 0, "%s: re-encoded bytes differ", name);
	ttlv_buf_free(out, out_len);
}

static size_t count_items(const struct ttlv_item *it)
{
	size_t n = 1;

	for (const struct ttlv_item *c = it->child; c; c = c->next)
		n += count_items(c);
	return n;
}

/* n structures, each the only child of the one before, the innermost empty. */
static uint8_t *nested(size_t n, size_t *ret_len)
{
	uint8_t *buf = malloc(n * TTLV_HEADER_LEN);

	ck_assert_ptr_nonnull(buf);
	for (size_t i = 0; i < n; i++) {
		uint8_t *p = buf + i * TTLV_HEADER_LEN;
		uint32_t len = (uint32_t)((n - 1 - i) * TTLV_HEADER_LEN);

		p[0] = 0x42, p[1] = 0x00, p[2] = 0x20, p[3] = TTLV_STRUCTURE;
		p[4] = (uint8_t)(len >> 24), p[5] = (uint8_t)(len >> 16);
		p[6] = (uint8_t)(len >> 8), p[7] = (uint8_t)len;
	}
	*ret_len = n * TTLV_HEADER_LEN;
	return buf;
}

static int decode_nested(size_t n, const struct ttlv_limits *lim)
{
	size_t len;
	uint8_t *buf = nested(n, &len);
	int r = decode_buf(buf, len, lim);

	free(buf);
	return r;
}

/* 1. Round trip */

START_TEST(test_roundtrip_vector)
{
	const char *name = vectors[_i];
	size_t len, total = 0;
	uint8_t *buf = read_vector(name, &len);
	int r;

	ck_assert_uint_ge(len, TTLV_HEADER_LEN);
	r = ttlv_frame_length(buf, &ttlv_default_limits, &total);
	ck_assert_msg(r == 0, "%s: frame length: %s", name, kr_strerror(r));
	ck_assert_msg(total == len, "%s: frame length %zu, file %zu", name, total, len);
	{
		struct ttlv_item *root = NULL;

		r = ttlv_decode(buf, len, &ttlv_default_limits, &root);
		ck_assert_msg(r == 0, "%s: decode: %s", name, kr_strerror(r));
		check_reencodes(root, buf, len, name);
		ttlv_free(root);
	}
	free(buf);
}
END_TEST

START_TEST(test_decode_spec_structure)
{
	struct decoded d;
	const struct ttlv_item *e, *i;
	size_t total = 0;

	decode_ok(SPEC_STRUCTURE, &d);
	ck_assert_int_eq(ttlv_frame_length(d.buf, &ttlv_default_limits, &total), 0);
	ck_assert_uint_eq(total, 40);
	ck_assert_uint_eq(d.root->tag, 0x420020);
	ck_assert_int_eq(d.root->type, TTLV_STRUCTURE);
	ck_assert_uint_eq(d.root->len, 0x20);
	ck_assert_ptr_null(d.root->next);
	ck_assert_uint_eq(ttlv_count_children(d.root), 2);
	e = ttlv_find(d.root, 0x420004);
	i = ttlv_find(d.root, 0x420005);
	ck_assert_ptr_eq(e, d.root->child);
	ck_assert_ptr_eq(i, e->next);
	ck_assert_ptr_null(i->next);
	ck_assert_ptr_null(ttlv_find(d.root, 0x420006));
	ck_assert_int_eq(e->type, TTLV_ENUMERATION);
	ck_assert_uint_eq(e->len, 4);
	ck_assert_uint_eq(ttlv_enum(e), 0xFE);
	ck_assert_int_eq(i->type, TTLV_INTEGER);
	ck_assert_int_eq(ttlv_int(i), 255);
	ck_assert_ptr_eq(i->value, d.buf + 32);
	decoded_free(&d);
}
END_TEST

/* A structure 0x420020 of an Enumeration 0x420004 and a Text String 0x420005 (text,
 * or none), then, if extra, an Integer 0x420006; decoded. */
static void equal_case(uint32_t e, const char *text, bool extra, struct decoded *d)
{
	struct ttlv_writer w;

	ttlv_writer_init(&w, TTLV_DEFAULT_MAX_SIZE);
	ttlv_begin(&w, 0x420020);
	ttlv_put_enum(&w, 0x420004, e);
	if (text)
		ttlv_put_text(&w, 0x420005, text, strlen(text));
	if (extra)
		ttlv_put_int(&w, 0x420006, 1);
	ttlv_end(&w);
	ck_assert_int_eq(ttlv_writer_finish(&w, &d->buf, &d->len), 0);
	d->root = NULL;
	ck_assert_int_eq(ttlv_decode(d->buf, d->len, &ttlv_default_limits, &d->root), 0);
}

START_TEST(test_equal)
{
	static const struct {
		uint32_t e;
		const char *text;
		bool extra, equal;
	} cases[] = {
		{ 1, "abc", false, true },  { 2, "abc", false, false }, { 1, "abd", false, false },
		{ 1, "ab", false, false },  { 1, "", false, false },    { 1, NULL, false, false },
		{ 1, "abc", true, false },
	};
	struct decoded base;

	equal_case(1, "abc", false, &base);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct decoded d;

		equal_case(cases[i].e, cases[i].text, cases[i].extra, &d);
		ck_assert_msg(ttlv_equal(base.root, d.root) == cases[i].equal, "case %zu", i);
		ck_assert_msg(ttlv_equal(d.root, base.root) == cases[i].equal, "case %zu, swapped", i);
		ck_assert(ttlv_equal(d.root, d.root));
		decoded_free(&d);
	}
	/* Items of another tag and type differ. */
	ck_assert(!ttlv_equal(base.root->child, base.root->child->next));
	decoded_free(&base);
}
END_TEST

/* 2. Malformed inputs */

START_TEST(test_truncated)
{
	struct ttlv_limits unlimited = ttlv_default_limits;
	size_t len;
	uint8_t *buf = read_vector(CASCADE_VECTOR, &len);
	uint8_t *cut = exact_copy(buf, len - 1);

	/* The Cascade query without its last byte. */
	ck_assert_int_eq(decode_buf(cut, len - 1, &ttlv_default_limits), KR_E_TTLV_TRUNCATED);
	/* Seven bytes: not even a whole header. */
	ck_assert_int_eq(decode_hex("42007801000000"), KR_E_TTLV_TRUNCATED);
	/* Nothing at all. */
	ck_assert_int_eq(decode_hex(""), KR_E_TTLV_TRUNCATED);
	/* A header that promises 8 bytes of Integer and padding, followed by 4. */
	ck_assert_int_eq(decode_hex("42000D020000000400000001"), KR_E_TTLV_TRUNCATED);
	/* 2^31 bytes promised, and a limit that lets it through to the length check. */
	unlimited.max_size = SIZE_MAX;
	ck_assert_int_eq(decode_hex_lim("4200780180000000", &unlimited), KR_E_TTLV_TRUNCATED);
	free(cut);
	free(buf);
}
END_TEST

START_TEST(test_overrun)
{
	/* The inner structure declares 8 bytes but its Byte String child needs 16; the
	 * bytes exist in the outer structure, so only the inner bound catches it. */
	ck_assert_int_eq(decode_hex("4200780100000018"
				    "4200770100000008"
				    "42001E0800000008"
				    "0102030405060708"),
			 KR_E_TTLV_OVERRUN);
	/* A structure of 4 bytes cannot hold a child's 8-byte header. */
	ck_assert_int_eq(decode_hex("42007801000000040000000000000000"), KR_E_TTLV_OVERRUN);
	/* A structure of 12 bytes ends inside its Integer child's padding. */
	ck_assert_int_eq(decode_hex("420078010000000C42000D02000000040000000100000000"),
			 KR_E_TTLV_OVERRUN);
}
END_TEST

START_TEST(test_trailing)
{
	size_t len;
	uint8_t *buf = read_vector(CASCADE_VECTOR, &len);
	uint8_t *more = malloc(len + 1);

	/* The Cascade query and one zero byte after it. */
	ck_assert_ptr_nonnull(more);
	memcpy(more, buf, len);
	more[len] = 0;
	ck_assert_int_eq(decode_buf(more, len + 1, &ttlv_default_limits), KR_E_TTLV_TRAILING);
	/* Two top-level Integers: the first is the message, the second trails. */
	ck_assert_int_eq(decode_hex("42000D02000000040000000100000000"
				    "42000D02000000040000000100000000"),
			 KR_E_TTLV_TRAILING);
	free(more);
	free(buf);
}
END_TEST

START_TEST(test_type)
{
	struct decoded d;
	size_t total = 12345;
	uint8_t hdr[TTLV_HEADER_LEN] = { 0x42, 0x00, 0x0D, 0x0C, 0x00, 0x00, 0x00, 0x04 };

	/* Type 0x0C, one past Date-Time Extended. */
	ck_assert_int_eq(decode_hex("42000D0C000000040000000100000000"), KR_E_TTLV_TYPE);
	/* Type 0x00. */
	ck_assert_int_eq(decode_hex("42000D00000000040000000100000000"), KR_E_TTLV_TYPE);
	/* Type 0xFF inside a structure. */
	ck_assert_int_eq(decode_hex("420078010000001042000DFF000000040000000100000000"),
			 KR_E_TTLV_TYPE);
	/* The frame check sees the type too, and leaves the output alone. */
	ck_assert_int_eq(ttlv_frame_length(hdr, &ttlv_default_limits, &total), KR_E_TTLV_TYPE);
	ck_assert_uint_eq(total, 12345);
	/* Type 0x0B (Date-Time Extended, KMIP 2.0) is known. */
	decode_ok("4200480B000000080000000000000001", &d);
	ck_assert_int_eq(d.root->type, TTLV_DATE_TIME_EXTENDED);
	ck_assert_int_eq(ttlv_long(d.root), 1);
	decoded_free(&d);
}
END_TEST

/* Decodes a lone Integer 7 and checks that it keeps its tag and re-encodes. */
static void check_tag(const char *hex, uint32_t tag)
{
	struct decoded d;

	decode_ok(hex, &d);
	ck_assert_uint_eq(d.root->tag, tag);
	ck_assert_int_eq(ttlv_int(d.root), 7);
	check_reencodes(d.root, d.buf, d.len, hex);
	decoded_free(&d);
}

/* The reader takes any 24-bit tag: src/ttlv.c leaves which tags belong where to the
 * KMIP layer, and KR_E_TTLV_TAG no longer exists. */
START_TEST(test_tag)
{
	struct decoded d;

	/* 0x540001, an extension tag. */
	check_tag("54000102000000040000000700000000", 0x540001);
	/* 0x54FFFF and 0x420000, the ends of the two ranges. */
	check_tag("54FFFF02000000040000000700000000", 0x54FFFF);
	check_tag("42000002000000040000000700000000", 0x420000);
	/* 0x41FFFF and 0x430000, either side of the KMIP range. */
	check_tag("41FFFF02000000040000000700000000", 0x41FFFF);
	check_tag("43000002000000040000000700000000", 0x430000);
	/* 0x000000 and 0xFFFFFF. */
	check_tag("00000002000000040000000700000000", 0x000000);
	check_tag("FFFFFF02000000040000000700000000", 0xFFFFFF);
	/* 0x530000 as a child. */
	decode_ok("420078010000001053000002000000040000000700000000", &d);
	ck_assert_uint_eq(d.root->child->tag, 0x530000);
	decoded_free(&d);
}
END_TEST

START_TEST(test_length)
{
	/* Integer with length 8. */
	ck_assert_int_eq(decode_hex("42000D02000000080000000000000001"), KR_E_TTLV_LENGTH);
	/* Boolean with length 4. */
	ck_assert_int_eq(decode_hex("42012006000000040000000100000000"), KR_E_TTLV_LENGTH);
	/* Date-Time with length 4. */
	ck_assert_int_eq(decode_hex("42004809000000044F9A54E200000000"), KR_E_TTLV_LENGTH);
	/* Interval with length 8. */
	ck_assert_int_eq(decode_hex("4200490A00000008000D2F0000000000"), KR_E_TTLV_LENGTH);
	/* Enumeration with length 8. */
	ck_assert_int_eq(decode_hex("42005C05000000080000001800000000"), KR_E_TTLV_LENGTH);
	/* Long Integer with length 4. */
	ck_assert_int_eq(decode_hex("42009603000000040000000100000000"), KR_E_TTLV_LENGTH);
	/* Date-Time Extended with length 4. */
	ck_assert_int_eq(decode_hex("4200480B000000040000000100000000"), KR_E_TTLV_LENGTH);
	/* Integer with length 0, inside a structure. */
	ck_assert_int_eq(decode_hex("420078010000000842000D0200000000"), KR_E_TTLV_LENGTH);
}
END_TEST

START_TEST(test_padding)
{
	/* Integer 1, first padding byte 0x01. */
	ck_assert_int_eq(decode_hex("42000D02000000040000000101000000"), KR_E_TTLV_PADDING);
	/* Text String "xxx", last padding byte 0x01. */
	ck_assert_int_eq(decode_hex("42009907000000037878780000000001"), KR_E_TTLV_PADDING);
	/* Byte String 01 02 03, a middle padding byte 0x80. */
	ck_assert_int_eq(decode_hex("42001E08000000030102030000800000"), KR_E_TTLV_PADDING);
	/* Enumeration 0x18, last padding byte 0xFF, inside a structure. */
	ck_assert_int_eq(decode_hex("420078010000001042005C050000000400000018000000FF"),
			 KR_E_TTLV_PADDING);
	/* The same items with zero padding are accepted. */
	ck_assert_int_eq(decode_hex("42000D02000000040000000100000000"), 0);
	ck_assert_int_eq(decode_hex("42009907000000037878780000000000"), 0);
	ck_assert_int_eq(decode_hex("42001E08000000030102030000000000"), 0);
}
END_TEST

START_TEST(test_boolean)
{
	struct decoded d;

	/* Value 2. */
	ck_assert_int_eq(decode_hex("42012006000000080000000000000002"), KR_E_TTLV_BOOLEAN);
	/* Value 0x0100000000000000: a 1 in the wrong byte. */
	ck_assert_int_eq(decode_hex("42012006000000080100000000000000"), KR_E_TTLV_BOOLEAN);
	/* Value 0xFFFFFFFFFFFFFFFF. */
	ck_assert_int_eq(decode_hex("4201200600000008FFFFFFFFFFFFFFFF"), KR_E_TTLV_BOOLEAN);
	decode_ok("42012006000000080000000000000000", &d);
	ck_assert_int_eq(d.root->type, TTLV_BOOLEAN);
	ck_assert(!ttlv_bool(d.root));
	decoded_free(&d);
	decode_ok("42012006000000080000000000000001", &d);
	ck_assert(ttlv_bool(d.root));
	decoded_free(&d);
}
END_TEST

START_TEST(test_utf8_invalid)
{
	/* A lone continuation byte 0x80. */
	ck_assert_int_eq(decode_hex("42009907000000018000000000000000"), KR_E_TTLV_UTF8);
	/* Overlong "/": C0 AF. */
	ck_assert_int_eq(decode_hex("4200990700000002C0AF000000000000"), KR_E_TTLV_UTF8);
	/* Overlong 3-byte NUL: E0 80 80. */
	ck_assert_int_eq(decode_hex("4200990700000003E080800000000000"), KR_E_TTLV_UTF8);
	/* Surrogate U+D800: ED A0 80. */
	ck_assert_int_eq(decode_hex("4200990700000003EDA0800000000000"), KR_E_TTLV_UTF8);
	/* U+110000, past the last code point: F4 90 80 80. */
	ck_assert_int_eq(decode_hex("4200990700000004F490808000000000"), KR_E_TTLV_UTF8);
	/* A 3-byte sequence cut after 2 bytes at the end: E2 82. */
	ck_assert_int_eq(decode_hex("4200990700000002E282000000000000"), KR_E_TTLV_UTF8);
	/* A 3-byte sequence cut by an ASCII byte: E2 82 41. */
	ck_assert_int_eq(decode_hex("4200990700000003E282410000000000"), KR_E_TTLV_UTF8);
	/* Bytes that never occur in UTF-8: FF and F8. */
	ck_assert_int_eq(decode_hex("4200990700000001FF00000000000000"), KR_E_TTLV_UTF8);
	ck_assert_int_eq(decode_hex("4200990700000001F800000000000000"), KR_E_TTLV_UTF8);
	/* The direct check agrees; U+0000 itself is valid UTF-8. */
	ck_assert(ttlv_utf8_valid((const uint8_t *)"a\0b", 3));
	ck_assert(!ttlv_utf8_valid((const uint8_t *)"\xC3", 1));
	ck_assert(ttlv_utf8_valid((const uint8_t *)"", 0));
}
END_TEST

/* Decodes a Text String item and checks that it holds exactly the bytes s. */
static void check_text(const char *hex, const char *s)
{
	struct decoded d;

	decode_ok(hex, &d);
	ck_assert_int_eq(d.root->type, TTLV_TEXT_STRING);
	ck_assert_uint_eq(d.root->len, strlen(s));
	ck_assert_mem_eq(d.root->value, s, strlen(s));
	decoded_free(&d);
}

START_TEST(test_utf8_valid)
{
	/* 2 bytes: U+00E9. */
	check_text("4200990700000002C3A9000000000000", "\xC3\xA9");
	/* 3 bytes: U+20AC. */
	check_text("4200990700000003E282AC0000000000", "\xE2\x82\xAC");
	/* 4 bytes: U+1F600. */
	check_text("4200990700000004F09F988000000000", "\xF0\x9F\x98\x80");
	/* The last code point, U+10FFFF, and the first after the surrogates, U+E000. */
	check_text("4200990700000004F48FBFBF00000000", "\xF4\x8F\xBF\xBF");
	check_text("4200990700000003EE80800000000000", "\xEE\x80\x80");
	/* All three mixed with ASCII, 10 bytes, crossing into the padding word. */
	check_text("420099070000000A"
		   "61C3A9E282ACF09F9880000000000000",
		   "a\xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80");
	/* The empty string. */
	check_text("4200990700000000", "");
}
END_TEST

START_TEST(test_bigint)
{
	struct decoded d;

	/* Length 0. */
	ck_assert_int_eq(decode_hex("4200520400000000"), KR_E_TTLV_BIGINT);
	/* Length 12, padded to 16. */
	ck_assert_int_eq(decode_hex("420052040000000C0102030405060708090A0B0C00000000"),
			 KR_E_TTLV_BIGINT);
	/* Length 4. */
	ck_assert_int_eq(decode_hex("42005204000000040102030400000000"), KR_E_TTLV_BIGINT);
	/* Length 8. */
	decode_ok("42005204000000080102030405060708", &d);
	ck_assert_int_eq(d.root->type, TTLV_BIG_INTEGER);
	ck_assert_uint_eq(d.root->len, 8);
	ck_assert_mem_eq(d.root->value, "\x01\x02\x03\x04\x05\x06\x07\x08", 8);
	decoded_free(&d);
	/* Length 16: the spec's 1234567890000000000000000000. */
	decode_ok("42002004000000100000000003FD35EB6BC2DF4618080000", &d);
	ck_assert_uint_eq(d.root->len, 16);
	ck_assert_mem_eq(d.root->value,
			 "\x00\x00\x00\x00\x03\xFD\x35\xEB\x6B\xC2\xDF\x46\x18\x08\x00\x00", 16);
	decoded_free(&d);
}
END_TEST

START_TEST(test_depth)
{
	struct ttlv_limits lim = ttlv_default_limits;
	size_t len;
	uint8_t *buf = nested(TTLV_MAX_DEPTH, &len);
	struct ttlv_item *root = NULL;
	const struct ttlv_item *it;
	size_t depth = 1;

	/* 32 nested structures: the default limit, accepted whole. */
	ck_assert_int_eq(ttlv_decode(buf, len, &ttlv_default_limits, &root), 0);
	for (it = root; it->child; it = it->child)
		depth++;
	ck_assert_uint_eq(depth, TTLV_MAX_DEPTH);
	ck_assert_uint_eq(it->len, 0);
	check_reencodes(root, buf, len, "32 nested");
	ttlv_free(root);
	free(buf);

	/* 33 is one too many. */
	ck_assert_int_eq(decode_nested(TTLV_MAX_DEPTH + 1, &ttlv_default_limits), KR_E_TTLV_DEPTH);
	/* A limit above the hard ceiling does not raise it. */
	lim.max_depth = 100;
	ck_assert_int_eq(decode_nested(TTLV_MAX_DEPTH + 1, &lim), KR_E_TTLV_DEPTH);
	/* max_depth 3 takes 3 and refuses 4. */
	lim.max_depth = 3;
	ck_assert_int_eq(decode_nested(3, &lim), 0);
	ck_assert_int_eq(decode_nested(4, &lim), KR_E_TTLV_DEPTH);
	/* A scalar inside the third structure does not count as a level. */
	ck_assert_int_eq(decode_hex_lim("4200200100000020"
					"4200200100000018"
					"4200200100000010"
					"42000D02000000040000000100000000",
					&lim),
			 0);
}
END_TEST

START_TEST(test_length_2_31)
{
	uint8_t hdr[TTLV_HEADER_LEN] = { 0x42, 0x00, 0x78, 0x01, 0x80, 0x00, 0x00, 0x00 };
	struct ttlv_limits unlimited = ttlv_default_limits;
	size_t total = 12345;

	/* A top-level structure of 2^31 bytes, refused from its header alone. */
	ck_assert_int_eq(ttlv_frame_length(hdr, &ttlv_default_limits, &total), KR_E_TTLV_TOO_BIG);
	ck_assert_uint_eq(total, 12345);
	ck_assert_int_eq(decode_hex("4200780180000000"), KR_E_TTLV_TOO_BIG);
	/* ... also when some of its body follows. */
	ck_assert_int_eq(decode_hex("420078018000000042000D02000000040000000100000000"),
			 KR_E_TTLV_TOO_BIG);
	/* The same length in a nested structure overruns its parent. */
	ck_assert_int_eq(decode_hex("42007801000000084200770180000000"), KR_E_TTLV_OVERRUN);
	/* ... and in a nested Byte String. */
	ck_assert_int_eq(decode_hex("420078010000001042001E08800000000102030405060708"),
			 KR_E_TTLV_OVERRUN);
	/* Without a size limit the frame length is computed without wrapping. */
	unlimited.max_size = SIZE_MAX;
	ck_assert_int_eq(ttlv_frame_length(hdr, &unlimited, &total), 0);
	ck_assert_uint_eq(total, 0x80000008u);
	/* 2^32 - 1 pads to 2^32: a 64-bit size_t holds the total, a 32-bit one cannot. */
	hdr[3] = TTLV_BYTE_STRING;
	hdr[4] = hdr[5] = hdr[6] = hdr[7] = 0xFF;
	if (SIZE_MAX > UINT32_MAX) {
		ck_assert_int_eq(ttlv_frame_length(hdr, &unlimited, &total), 0);
		ck_assert_uint_eq(total, (uint64_t)TTLV_HEADER_LEN + 0x100000000u);
	} else {
		ck_assert_int_eq(ttlv_frame_length(hdr, &unlimited, &total), KR_E_TTLV_TOO_BIG);
	}
	/* The same length nested, where padding it in 32 bits would give 0 and let a
	 * Byte String of 4 GiB through on 32-bit hosts. */
	ck_assert_int_eq(decode_hex_lim("420078010000000842001E08FFFFFFFF", &unlimited),
			 KR_E_TTLV_OVERRUN);
	ck_assert_int_eq(decode_hex("420078010000000842001E08FFFFFFF9"), KR_E_TTLV_OVERRUN);
}
END_TEST

START_TEST(test_size_limit)
{
	struct ttlv_limits lim = ttlv_default_limits;
	size_t len, total = 12345;
	uint8_t *buf = read_vector(CASCADE_VECTOR, &len);

	/* One byte under the message's length. */
	lim.max_size = len - 1;
	ck_assert_int_eq(ttlv_frame_length(buf, &lim, &total), KR_E_TTLV_TOO_BIG);
	ck_assert_uint_eq(total, 12345);
	ck_assert_int_eq(decode_buf(buf, len, &lim), KR_E_TTLV_TOO_BIG);
	/* Exactly its length. */
	lim.max_size = len;
	ck_assert_int_eq(ttlv_frame_length(buf, &lim, &total), 0);
	ck_assert_uint_eq(total, len);
	ck_assert_int_eq(decode_buf(buf, len, &lim), 0);
	free(buf);
}
END_TEST

START_TEST(test_item_limit)
{
	struct ttlv_limits lim = ttlv_default_limits;
	struct ttlv_item *root = NULL;
	size_t len;
	uint8_t *buf = read_vector(CASCADE_VECTOR, &len);

	ck_assert_int_eq(ttlv_decode(buf, len, &ttlv_default_limits, &root), 0);
	ck_assert_uint_eq(count_items(root), CASCADE_ITEMS);
	ttlv_free(root);
	lim.max_items = CASCADE_ITEMS - 1;
	ck_assert_int_eq(decode_buf(buf, len, &lim), KR_E_TTLV_TOO_MANY);
	lim.max_items = CASCADE_ITEMS;
	ck_assert_int_eq(decode_buf(buf, len, &lim), 0);
	/* A lone scalar is one item. */
	lim.max_items = 0;
	ck_assert_int_eq(decode_hex_lim("42000D02000000040000000100000000", &lim), KR_E_TTLV_TOO_MANY);
	lim.max_items = 1;
	ck_assert_int_eq(decode_hex_lim("42000D02000000040000000100000000", &lim), 0);
	free(buf);
}
END_TEST

START_TEST(test_output_untouched)
{
	struct ttlv_item *root = SENTINEL;
	size_t len;
	uint8_t *buf = exact_hex("42012006000000080000000000000002", &len);

	/* Checked in every failing decode above; here once without the helper. */
	ck_assert_int_eq(ttlv_decode(buf, len, &ttlv_default_limits, &root), KR_E_TTLV_BOOLEAN);
	ck_assert_ptr_eq(root, SENTINEL);
	ck_assert_int_eq(ttlv_decode(buf, 3, &ttlv_default_limits, &root), KR_E_TTLV_TRUNCATED);
	ck_assert_ptr_eq(root, SENTINEL);
	free(buf);
}
END_TEST

/* 3. Sweeps over every vector */

/* Every proper prefix fails: the top-level header, when whole, promises more. */
static void sweep_truncate(const char *name)
{
	size_t len;
	uint8_t *buf = read_vector(name, &len);

	for (size_t cut = 0; cut < len; cut++) {
		uint8_t *p = exact_copy(buf, cut);
		int r = decode_buf(p, cut, &ttlv_default_limits);

		ck_assert_msg(r == KR_E_TTLV_TRUNCATED, "%s cut to %zu: %d (%s)", name, cut, r,
			      kr_strerror(r));
		free(p);
	}
	free(buf);
}

/* Every single-bit change either fails with a TTLV code, output untouched, or
 * decodes to a tree that re-encodes to the changed bytes. Returns how many decoded. */
static size_t sweep_bitflip(const char *name)
{
	size_t len, accepted = 0;
	uint8_t *buf = read_vector(name, &len);
	uint8_t *p = exact_copy(buf, len);

	for (size_t i = 0; i < len; i++) {
		for (unsigned bit = 0; bit < 8; bit++) {
			struct ttlv_item *root = SENTINEL;
			int r;

			p[i] ^= (uint8_t)(1u << bit);
			r = ttlv_decode(p, len, &ttlv_default_limits, &root);
			if (r == 0) {
				check_reencodes(root, p, len, name);
				ttlv_free(root);
				accepted++;
			} else {
				ck_assert_msg(r <= KR_E_TTLV_TRUNCATED && r >= KR_E_TTLV_TOO_MANY,
					      "%s byte %zu bit %u: %d", name, i, bit, r);
				ck_assert_ptr_eq(root, SENTINEL);
			}
			p[i] ^= (uint8_t)(1u << bit);
		}
	}
	ck_assert_mem_eq(p, buf, len);
	free(p);
	free(buf);
	return accepted;
}

/* One test per sweep rather than one per vector: each forked test costs a
 * LeakSanitizer pass at exit, which dominated the run time. */
START_TEST(test_sweep_truncate)
{
	for (size_t i = 0; i < n_vectors; i++)
		sweep_truncate(vectors[i]);
}
END_TEST

START_TEST(test_sweep_bitflip)
{
	/* Each vector has values whose bits may change freely (integers, byte strings),
	 * so each must also exercise the re-encoding branch. */
	for (size_t i = 0; i < n_vectors; i++)
		ck_assert_msg(sweep_bitflip(vectors[i]) > 0, "%s: no change decoded", vectors[i]);
}
END_TEST

/* 4. Typed values: writer bytes as the spec encodes them, and decoding them back */

/* Checks what the writer holds against hex, then decodes hex for the caller; the
 * writer is left empty for the next item. */
static void written(struct ttlv_writer *w, const char *hex, struct decoded *d)
{
	finish_eq(w, hex);
	decode_ok(hex, d);
}

START_TEST(test_int)
{
	struct ttlv_writer w;
	struct decoded d;

	ttlv_writer_init(&w, 1024);
	/* The spec's Integer 8. */
	ttlv_put_int(&w, 0x420020, 8);
	written(&w, "42002002000000040000000800000000", &d);
	ck_assert_int_eq(d.root->type, TTLV_INTEGER);
	ck_assert_int_eq(ttlv_int(d.root), 8);
	decoded_free(&d);
	ttlv_put_int(&w, 0x420020, -1);
	written(&w, "4200200200000004FFFFFFFF00000000", &d);
	ck_assert_int_eq(ttlv_int(d.root), -1);
	decoded_free(&d);
	ttlv_put_int(&w, 0x420020, -2);
	written(&w, "4200200200000004FFFFFFFE00000000", &d);
	ck_assert_int_eq(ttlv_int(d.root), -2);
	decoded_free(&d);
	ttlv_put_int(&w, 0x420020, INT32_MIN);
	written(&w, "42002002000000048000000000000000", &d);
	ck_assert_int_eq(ttlv_int(d.root), INT32_MIN);
	decoded_free(&d);
	ttlv_put_int(&w, 0x420020, INT32_MAX);
	written(&w, "42002002000000047FFFFFFF00000000", &d);
	ck_assert_int_eq(ttlv_int(d.root), INT32_MAX);
	decoded_free(&d);
}
END_TEST

START_TEST(test_long)
{
	struct ttlv_writer w;
	struct decoded d;

	ttlv_writer_init(&w, 1024);
	/* The spec's Long Integer 123456789000000000. */
	ttlv_put_long(&w, 0x420020, 123456789000000000);
	written(&w, "420020030000000801B69B4BA5749200", &d);
	ck_assert_int_eq(d.root->type, TTLV_LONG_INTEGER);
	ck_assert_int_eq(ttlv_long(d.root), 123456789000000000);
	decoded_free(&d);
	ttlv_put_long(&w, 0x420020, -2);
	written(&w, "4200200300000008FFFFFFFFFFFFFFFE", &d);
	ck_assert_int_eq(ttlv_long(d.root), -2);
	decoded_free(&d);
	ttlv_put_long(&w, 0x420020, INT64_MIN);
	written(&w, "42002003000000088000000000000000", &d);
	ck_assert_int_eq(ttlv_long(d.root), INT64_MIN);
	decoded_free(&d);
}
END_TEST

START_TEST(test_enum)
{
	struct ttlv_writer w;
	struct decoded d;

	ttlv_writer_init(&w, 1024);
	/* The spec's Enumeration 255. */
	ttlv_put_enum(&w, 0x420020, 255);
	written(&w, "4200200500000004000000FF00000000", &d);
	ck_assert_int_eq(d.root->type, TTLV_ENUMERATION);
	ck_assert_uint_eq(ttlv_enum(d.root), 255);
	decoded_free(&d);
	ttlv_put_enum(&w, 0x420020, 0xFFFFFFFF);
	written(&w, "4200200500000004FFFFFFFF00000000", &d);
	ck_assert_uint_eq(ttlv_enum(d.root), 0xFFFFFFFF);
	decoded_free(&d);
}
END_TEST

START_TEST(test_interval)
{
	struct ttlv_writer w;
	struct decoded d;

	ttlv_writer_init(&w, 1024);
	/* The spec's Interval of 10 days. */
	ttlv_put_interval(&w, 0x420020, 864000);
	written(&w, "4200200A00000004000D2F0000000000", &d);
	ck_assert_int_eq(d.root->type, TTLV_INTERVAL);
	ck_assert_uint_eq(ttlv_enum(d.root), 864000);
	decoded_free(&d);
	ttlv_put_interval(&w, 0x420020, 0xFFFFFFFF);
	written(&w, "4200200A00000004FFFFFFFF00000000", &d);
	ck_assert_uint_eq(ttlv_enum(d.root), 0xFFFFFFFF);
	decoded_free(&d);
}
END_TEST

START_TEST(test_datetime)
{
	struct ttlv_writer w;
	struct decoded d;

	ttlv_writer_init(&w, 1024);
	/* The spec's Date-Time: Friday, March 14, 2008, 11:56:40 GMT. */
	ttlv_put_datetime(&w, 0x420020, 1205495800);
	written(&w, "42002009000000080000000047DA67F8", &d);
	ck_assert_int_eq(d.root->type, TTLV_DATE_TIME);
	ck_assert_int_eq(ttlv_long(d.root), 1205495800);
	decoded_free(&d);
	/* One second before the epoch. */
	ttlv_put_datetime(&w, 0x420020, -1);
	written(&w, "4200200900000008FFFFFFFFFFFFFFFF", &d);
	ck_assert_int_eq(ttlv_long(d.root), -1);
	decoded_free(&d);
}
END_TEST

START_TEST(test_bool_text_bytes)
{
	struct ttlv_writer w;
	struct decoded d;
	uint8_t *three = exact_copy((const uint8_t *)"\x01\x02\x03", 3);

	ttlv_writer_init(&w, 1024);
	/* The spec's Boolean True. */
	ttlv_put_bool(&w, 0x420020, true);
	written(&w, "42002006000000080000000000000001", &d);
	ck_assert(ttlv_bool(d.root));
	decoded_free(&d);
	ttlv_put_bool(&w, 0x420020, false);
	written(&w, "42002006000000080000000000000000", &d);
	ck_assert(!ttlv_bool(d.root));
	decoded_free(&d);
	/* The spec's Text String "Hello World"; the source bytes after it must not leak
	 * into the padding. */
	ttlv_put_text(&w, 0x420020, "Hello World!!!!!", 11);
	written(&w, "420020070000000B48656C6C6F20576F726C640000000000", &d);
	ck_assert_uint_eq(d.root->len, 11);
	ck_assert_mem_eq(d.root->value, "Hello World", 11);
	decoded_free(&d);
	/* The spec's Byte String 01 02 03, again with bytes after it in the source. */
	ttlv_put_bytes(&w, 0x420020, "\x01\x02\x03\xFF\xFF\xFF\xFF\xFF", 3);
	written(&w, "42002008000000030102030000000000", &d);
	ck_assert_uint_eq(d.root->len, 3);
	decoded_free(&d);
	/* From a buffer of exactly 3 bytes, so that ASan catches a read of the padding. */
	ttlv_put_bytes(&w, 0x420020, three, 3);
	written(&w, "42002008000000030102030000000000", &d);
	decoded_free(&d);
	free(three);
	/* Empty Text and Byte Strings: a header and nothing else. */
	ttlv_put_text(&w, 0x420020, "", 0);
	written(&w, "4200200700000000", &d);
	decoded_free(&d);
	ttlv_put_bytes(&w, 0x420020, NULL, 0);
	written(&w, "4200200800000000", &d);
	decoded_free(&d);
	/* An exact multiple of 8 has no padding. */
	ttlv_put_text(&w, 0x420020, "abcdefgh", 8);
	written(&w, "42002007000000086162636465666768", &d);
	decoded_free(&d);
}
END_TEST

/* 5. Writer */

START_TEST(test_writer_spec_structure)
{
	struct ttlv_writer w;

	ttlv_writer_init(&w, 1024);
	ttlv_begin(&w, 0x420020);
	ttlv_put_enum(&w, 0x420004, 254);
	ttlv_put_int(&w, 0x420005, 255);
	ttlv_end(&w);
	finish_eq(&w, SPEC_STRUCTURE);
}
END_TEST

START_TEST(test_writer_nested)
{
	struct ttlv_writer w;

	ttlv_writer_init(&w, 1024);
	ttlv_begin(&w, 0x420078);
	ttlv_begin(&w, 0x420077);
	ttlv_put_int(&w, 0x42000D, 1);
	ttlv_end(&w);
	ttlv_begin(&w, 0x42000F);
	ttlv_end(&w);
	ttlv_put_bool(&w, 0x420120, true);
	ttlv_end(&w);
	/* 24-byte header, 8-byte empty Batch Item, 16-byte Boolean: 48 = 0x30. */
	finish_eq(&w, "4200780100000030"
		      "4200770100000010"
		      "42000D02000000040000000100000000"
		      "42000F0100000000"
		      "42012006000000080000000000000001");
	/* The writer is reusable after finishing. */
	ttlv_begin(&w, 0x420078);
	ttlv_end(&w);
	finish_eq(&w, "4200780100000000");
}
END_TEST

START_TEST(test_writer_put_item)
{
	struct ttlv_writer w;
	struct decoded d;

	decode_ok(SPEC_STRUCTURE, &d);
	/* The whole tree under a new tag. */
	ttlv_writer_init(&w, 1024);
	ttlv_put_item(&w, 0x540001, d.root);
	finish_eq(&w, "54000101000000204200040500000004000000FE000000004200050200000004000000FF00000000");
	/* The first child only, then both children, inside a new structure. */
	ttlv_begin(&w, 0x420078);
	ttlv_put_items(&w, d.root->child, 1);
	ttlv_end(&w);
	finish_eq(&w, "42007801000000104200040500000004000000FE00000000");
	ttlv_put_items(&w, d.root->child, 5);
	finish_eq(&w, "4200040500000004000000FE000000004200050200000004000000FF00000000");
	/* Pre-encoded bytes are appended as they are. */
	ttlv_begin(&w, 0x420020);
	ttlv_put_encoded(&w, d.buf + 8, 32);
	ttlv_end(&w);
	finish_eq(&w, SPEC_STRUCTURE);
	decoded_free(&d);
}
END_TEST

START_TEST(test_writer_unbalanced)
{
	struct ttlv_writer w;

	/* An end without a begin. */
	ttlv_writer_init(&w, 1024);
	ttlv_end(&w);
	ck_assert_int_eq(w.err, KR_E_TTLV_WRITER);
	finish_fails(&w, KR_E_TTLV_WRITER);
	/* One end too many after a whole structure; the error sticks. */
	ttlv_begin(&w, 0x420078);
	ttlv_end(&w);
	ttlv_end(&w);
	ttlv_begin(&w, 0x420078);
	ttlv_end(&w);
	finish_fails(&w, KR_E_TTLV_WRITER);
	/* A begin without an end. */
	ttlv_begin(&w, 0x420078);
	ttlv_put_int(&w, 0x42000D, 1);
	finish_fails(&w, KR_E_TTLV_WRITER);
	/* Two begins and one end. */
	ttlv_begin(&w, 0x420078);
	ttlv_begin(&w, 0x420077);
	ttlv_end(&w);
	finish_fails(&w, KR_E_TTLV_WRITER);
	/* Nothing written at all, in a fresh writer. */
	ttlv_writer_init(&w, 1024);
	finish_fails(&w, KR_E_TTLV_WRITER);
	/* One level deeper than the reader would accept. */
	for (int i = 0; i <= TTLV_MAX_DEPTH; i++)
		ttlv_begin(&w, 0x420020);
	ck_assert_int_eq(w.err, KR_E_TTLV_WRITER);
	for (int i = 0; i <= TTLV_MAX_DEPTH; i++)
		ttlv_end(&w);
	finish_fails(&w, KR_E_TTLV_WRITER);
}
END_TEST

START_TEST(test_writer_max)
{
	struct ttlv_writer w;

	/* 15 bytes cannot hold a 16-byte Integer; nothing later is written. */
	ttlv_writer_init(&w, 15);
	ttlv_put_int(&w, 0x42000D, 1);
	ck_assert_int_eq(w.err, KR_E_TTLV_TOO_BIG);
	ck_assert_uint_eq(w.len, 0);
	ttlv_begin(&w, 0x420078);
	ttlv_end(&w);
	ck_assert_int_eq(w.err, KR_E_TTLV_TOO_BIG);
	ck_assert_uint_eq(w.len, 0);
	finish_fails(&w, KR_E_TTLV_TOO_BIG);
	ck_assert_uint_eq(w.max, 15);

	/* 24 bytes: the first Integer fits, the second does not, and an 8-byte
	 * structure header that would fit afterwards is refused by the sticky error. */
	ttlv_writer_init(&w, 24);
	ttlv_put_int(&w, 0x42000D, 1);
	ck_assert_int_eq(w.err, 0);
	ck_assert_uint_eq(w.len, 16);
	ttlv_put_int(&w, 0x42000D, 2);
	ck_assert_int_eq(w.err, KR_E_TTLV_TOO_BIG);
	ttlv_begin(&w, 0x420078);
	ttlv_end(&w);
	ttlv_put_text(&w, 0x420099, "", 0);
	ttlv_put_encoded(&w, "\x42\x00\x78\x01\x00\x00\x00\x00", 8);
	ck_assert_int_eq(w.err, KR_E_TTLV_TOO_BIG);
	ck_assert_uint_eq(w.len, 16);
	ck_assert_uint_eq(w.depth, 0);
	finish_fails(&w, KR_E_TTLV_TOO_BIG);

	/* Exactly the output's size is enough. */
	ttlv_writer_init(&w, 16);
	ttlv_put_int(&w, 0x42000D, 1);
	finish_eq(&w, "42000D02000000040000000100000000");

	/* A structure whose children outgrow the maximum. */
	ttlv_writer_init(&w, 40);
	ttlv_begin(&w, 0x420020);
	ttlv_put_enum(&w, 0x420004, 254);
	ttlv_put_int(&w, 0x420005, 255);
	ttlv_put_int(&w, 0x420005, 256);
	ttlv_end(&w);
	finish_fails(&w, KR_E_TTLV_TOO_BIG);

	/* Growing past the first allocation keeps what was written. */
	ttlv_writer_init(&w, 4096);
	ttlv_begin(&w, 0x420020);
	for (int i = 0; i < 40; i++)
		ttlv_put_int(&w, 0x420005, i);
	ttlv_end(&w);
	{
		uint8_t *out = NULL;
		size_t out_len = 0;

		ck_assert_int_eq(ttlv_writer_finish(&w, &out, &out_len), 0);
		ck_assert_uint_eq(out_len, 8 + 40 * 16);
		ck_assert_mem_eq(out, "\x42\x00\x20\x01\x00\x00\x02\x80", 8);
		for (int i = 0; i < 40; i++) {
			const uint8_t *p = out + 8 + (size_t)i * 16;

			ck_assert_mem_eq(p, "\x42\x00\x05\x02\x00\x00\x00\x04\x00\x00\x00", 11);
			ck_assert_uint_eq(p[11], (unsigned)i);
			ck_assert_mem_eq(p + 12, "\0\0\0\0", 4);
		}
		ttlv_buf_free(out, out_len);
	}
}
END_TEST

/* 6. Pretty-printer */

/* Prints root with ops into a new string. */
static char *print_to_string(const struct ttlv_item *root, const struct ttlv_print_ops *ops)
{
	char *text = NULL;
	size_t size = 0;
	FILE *f = open_memstream(&text, &size);

	ck_assert_ptr_nonnull(f);
	ck_assert_int_eq(ttlv_print(f, root, ops), 0);
	ck_assert_int_eq(fclose(f), 0);
	ck_assert_ptr_nonnull(text);
	return text;
}

START_TEST(test_print_cascade)
{
	static const char expected[] =
		"Request Message (Structure)\n"
		"  Request Header (Structure)\n"
		"    Protocol Version (Structure)\n"
		"      Protocol Version Major (Integer) 1\n"
		"      Protocol Version Minor (Integer) 2\n"
		"    Authentication (Structure)\n"
		"      Credential (Structure)\n"
		"        Credential Type (Enumeration) Username and Password\n"
		"        Credential Value (Structure)\n"
		"          Username (Text String) \"xxx\"\n"
		"          Password (Text String) <redacted>\n"
		"    Batch Count (Integer) 1\n"
		"  Batch Item (Structure)\n"
		"    Operation (Enumeration) Query\n"
		"    Request Payload (Structure)\n"
		"      Query Function (Enumeration) Query Operations\n"
		"      Query Function (Enumeration) Query Objects\n"
		"      Query Function (Enumeration) Query Server Information\n";
	struct ttlv_item *root = NULL;
	size_t len;
	uint8_t *buf = read_vector(CASCADE_VECTOR, &len);
	char *text;

	ck_assert_int_eq(ttlv_decode(buf, len, &ttlv_default_limits, &root), 0);
	text = print_to_string(root, &kmip_print_ops);
	ck_assert_str_eq(text, expected);
	ck_assert_ptr_null(strstr(text, "123456"));
	free(text);
	ttlv_free(root);
	free(buf);
}
END_TEST

START_TEST(test_print_hex_names)
{
	/* Every scalar type under a structure; no names, no redaction. */
	static const char hex[] = "42002001000000A0"
				  "42000D0200000004FFFFFFFB00000000"
				  "420096030000000801B69B4BA5749200"
				  "42005204000000080000000000000102"
				  "42005C05000000040000001800000000"
				  "42012006000000080000000000000001"
				  "42009907000000086122625C63011F7F"
				  "42001E08000000030102030000000000"
				  "42004809000000080000000047DA67F8"
				  "4200490A00000004000D2F0000000000"
				  "4200480B00000008FFFFFFFFFFFFFFFF";
	static const char expected[] = "0x420020 (Structure)\n"
				       "  0x42000D (Integer) -5\n"
				       "  0x420096 (Long Integer) 123456789000000000\n"
				       "  0x420052 (Big Integer) 0000000000000102\n"
				       "  0x42005C (Enumeration) 0x00000018\n"
				       "  0x420120 (Boolean) true\n"
				       "  0x420099 (Text String) \"a\\\"b\\\\c\\x01\\x1F\\x7F\"\n"
				       "  0x42001E (Byte String) 010203\n"
				       "  0x420048 (Date-Time) 1205495800\n"
				       "  0x420049 (Interval) 864000\n"
				       "  0x420048 (Date-Time Extended) -1\n";
	const struct ttlv_print_ops no_names = { .tag_name = NULL, .enum_name = NULL, .redact = NULL };
	struct decoded d;
	char *text;

	decode_ok(hex, &d);
	text = print_to_string(d.root, &no_names);
	ck_assert_str_eq(text, expected);
	free(text);
	decoded_free(&d);
}
END_TEST

START_TEST(test_print_kmip_fallbacks)
{
	/* An extension tag and an Operation the tables do not name fall back to hex;
	 * Key Material is masked with everything inside it, Data is masked. */
	static const char hex[] = "4200780100000048"
				  "54000102000000040000000100000000"
				  "42005C0500000004000000FF00000000"
				  "4200430100000010"
				  "42001E08000000030102030000000000"
				  "4200C20800000002ABCD000000000000";
	static const char expected[] = "Request Message (Structure)\n"
				       "  0x540001 (Integer) 1\n"
				       "  Operation (Enumeration) 0x000000FF\n"
				       "  Key Material (Structure) <redacted>\n"
				       "  Data (Byte String) <redacted>\n";
	struct decoded d;
	char *text;

	decode_ok(hex, &d);
	text = print_to_string(d.root, &kmip_print_ops);
	ck_assert_str_eq(text, expected);
	ck_assert_ptr_null(strstr(text, "010203"));
	ck_assert_ptr_null(strstr(text, "ABCD"));
	free(text);
	decoded_free(&d);
}
END_TEST

static Suite *ttlv_suite(void)
{
	Suite *s = suite_create("ttlv");
	TCase *tc;

	tc = tcase_create("roundtrip");
	tcase_add_loop_test(tc, test_roundtrip_vector, 0, (int)n_vectors);
	tcase_add_test(tc, test_decode_spec_structure);
	tcase_add_test(tc, test_equal);
	suite_add_tcase(s, tc);

	tc = tcase_create("malformed");
	tcase_add_test(tc, test_truncated);
	tcase_add_test(tc, test_overrun);
	tcase_add_test(tc, test_trailing);
	tcase_add_test(tc, test_type);
	tcase_add_test(tc, test_tag);
	tcase_add_test(tc, test_length);
	tcase_add_test(tc, test_padding);
	tcase_add_test(tc, test_boolean);
	tcase_add_test(tc, test_utf8_invalid);
	tcase_add_test(tc, test_utf8_valid);
	tcase_add_test(tc, test_bigint);
	tcase_add_test(tc, test_depth);
	tcase_add_test(tc, test_length_2_31);
	tcase_add_test(tc, test_size_limit);
	tcase_add_test(tc, test_item_limit);
	tcase_add_test(tc, test_output_untouched);
	suite_add_tcase(s, tc);

	tc = tcase_create("sweep");
	/* Generous for unoptimised sanitizer builds on slow runners. */
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_sweep_truncate);
	tcase_add_test(tc, test_sweep_bitflip);
	suite_add_tcase(s, tc);

	tc = tcase_create("values");
	tcase_add_test(tc, test_int);
	tcase_add_test(tc, test_long);
	tcase_add_test(tc, test_enum);
	tcase_add_test(tc, test_interval);
	tcase_add_test(tc, test_datetime);
	tcase_add_test(tc, test_bool_text_bytes);
	suite_add_tcase(s, tc);

	tc = tcase_create("writer");
	tcase_add_test(tc, test_writer_spec_structure);
	tcase_add_test(tc, test_writer_nested);
	tcase_add_test(tc, test_writer_put_item);
	tcase_add_test(tc, test_writer_unbalanced);
	tcase_add_test(tc, test_writer_max);
	suite_add_tcase(s, tc);

	tc = tcase_create("print");
	tcase_add_test(tc, test_print_cascade);
	tcase_add_test(tc, test_print_hex_names);
	tcase_add_test(tc, test_print_kmip_fallbacks);
	suite_add_tcase(s, tc);

	return s;
}

int main(void)
{
	SRunner *sr;
	int failed;

	vectors = tu_list_vectors(tu_vectors_dir(), &n_vectors);
	sr = srunner_create(ttlv_suite());
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	tu_free_list(vectors);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

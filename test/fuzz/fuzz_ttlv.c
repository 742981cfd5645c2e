/* SPDX-License-Identifier: BSD-3-Clause */
#include "config.h"

/* TTLV codec: whatever the reader accepts, the writer gives back byte for byte, and
 * tight limits refuse exactly the inputs that exceed them. */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kmip_names.h"
#include "ttlv.h"
#include "ttlv_print.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const struct ttlv_limits tight_limits = {
	.max_depth = 4,
	.max_items = 64,
	.max_size = 512,
};

struct shape {
	size_t depth; /* nested structures, the outermost counting 1 */
	size_t items;
};

/* Measures the tree and checks what the reader promises about each value. */
static void walk(const struct ttlv_item *it, size_t level, struct shape *s)
{
	for (; it; it = it->next) {
		s->items++;
		switch (it->type) {
		case TTLV_STRUCTURE:
			if (level + 1 > s->depth)
				s->depth = level + 1;
			if (ttlv_count_children(it) == 0 && it->len != 0)
				abort();
			walk(it->child, level + 1, s);
			break;
		case TTLV_TEXT_STRING:
			if (!ttlv_utf8_valid(it->value, it->len))
				abort();
			break;
		case TTLV_BOOLEAN:
			if (it->len != 8 || (ttlv_long(it) != 0 && ttlv_long(it) != 1))
				abort();
			break;
		case TTLV_BIG_INTEGER:
			if (it->len == 0 || it->len % 8 != 0)
				abort();
			break;
		default:
			if (it->child)
				abort();
			break;
		}
	}
}

static FILE *null_out(void)
{
	static FILE *out;

	if (!out)
		out = fopen("/dev/null", "w");
	if (!out)
		abort();
	return out;
}

static void check_round_trip(const uint8_t *data, size_t size, const struct ttlv_item *root)
{
	struct ttlv_writer w;
	uint8_t *buf = NULL;
	size_t len = 0;

	ttlv_writer_init(&w, size);
	ttlv_put_item(&w, root->tag, root);
	if (ttlv_writer_finish(&w, &buf, &len) < 0)
		abort();
	if (len != size || memcmp(buf, data, size) != 0)
		abort();
	ttlv_buf_free(buf, len);
}

/* Truncated and trailing input is what the frame length says it is, and nothing else
 * is reported as either. */
static void check_framing(const uint8_t *data, size_t size, int err)
{
	size_t total = 0;
	int fr = size < TTLV_HEADER_LEN ? KR_E_TTLV_TRUNCATED
					: ttlv_frame_length(data, &ttlv_default_limits, &total);

	if ((err == KR_E_TTLV_TRUNCATED) != (fr == KR_E_TTLV_TRUNCATED || (fr == 0 && total > size)))
		abort();
	if ((err == KR_E_TTLV_TRAILING) != (fr == 0 && total < size))
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct ttlv_item *root = NULL, *tight = NULL;
	struct shape s = { 0 };
	size_t total = 0;
	bool fits;
	int r, rt;

	r = ttlv_decode(data, size, &ttlv_default_limits, &root);
	rt = ttlv_decode(data, size, &tight_limits, &tight);
	if (r < 0) {
		/* Lower limits cannot make a rejected input acceptable. */
		if (rt == 0)
			abort();
		check_framing(data, size, r);
		return 0;
	}

	check_round_trip(data, size, root);
	if (ttlv_frame_length(data, &ttlv_default_limits, &total) < 0 || total != size)
		abort();
	if (ttlv_print(null_out(), root, &kmip_print_ops) < 0)
		abort();

	walk(root, 0, &s);
	fits = size <= tight_limits.max_size && s.depth <= tight_limits.max_depth &&
	       s.items <= tight_limits.max_items;
	if (fits != (rt == 0))
		abort();
	if (rt == 0)
		check_round_trip(data, size, tight);
	else if (rt != KR_E_TTLV_DEPTH && rt != KR_E_TTLV_TOO_BIG && rt != KR_E_TTLV_TOO_MANY)
		abort();

	ttlv_free(tight);
	ttlv_free(root);
	return 0;
}

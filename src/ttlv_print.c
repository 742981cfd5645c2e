/* SPDX-License-Identifier: BSD-3-Clause */
#include "config.h"

#include "ttlv_print.h"

#include <inttypes.h>

static void print_hex(FILE *out, const uint8_t *p, size_t len)
{
	for (size_t i = 0; i < len; i++)
		fprintf(out, "%02X", p[i]);
}

static void print_value(FILE *out, const struct ttlv_item *it, const struct ttlv_print_ops *ops)
{
	const char *name;

	switch (it->type) {
	case TTLV_INTEGER:
		fprintf(out, "%" PRId32, ttlv_int(it));
		break;
	case TTLV_LONG_INTEGER:
	case TTLV_DATE_TIME:
	case TTLV_DATE_TIME_EXTENDED:
		fprintf(out, "%" PRId64, ttlv_long(it));
		break;
	case TTLV_ENUMERATION:
		name = ops->enum_name ? ops->enum_name(it->tag, ttlv_enum(it)) : NULL;
		if (name)
			fputs(name, out);
		else
			fprintf(out, "0x%08" PRIX32, ttlv_enum(it));
		break;
	case TTLV_INTERVAL:
		fprintf(out, "%" PRIu32, ttlv_enum(it));
		break;
	case TTLV_BOOLEAN:
		fputs(ttlv_bool(it) ? "true" : "false", out);
		break;
	case TTLV_TEXT_STRING:
		/* Validated UTF-8 without NUL; quotes and control bytes are escaped. */
		fputc('"', out);
		for (uint32_t i = 0; i < it->len; i++) {
			uint8_t c = it->value[i];

			if (c == '"' || c == '\\')
				fprintf(out, "\\%c", c);
			else if (c < 0x20 || c == 0x7F)
				fprintf(out, "\\x%02X", c);
			else
				fputc(c, out);
		}
		fputc('"', out);
		break;
	case TTLV_BYTE_STRING:
	case TTLV_BIG_INTEGER:
		print_hex(out, it->value, it->len);
		break;
	case TTLV_STRUCTURE:
		break;
	}
}

static void print_item(FILE *out, const struct ttlv_item *it, unsigned depth,
		       const struct ttlv_print_ops *ops)
{
	const char *name = ops->tag_name ? ops->tag_name(it->tag) : NULL;

	fprintf(out, "%*s", (int)(depth * 2), "");
	if (name)
		fputs(name, out);
	else
		fprintf(out, "0x%06" PRIX32, it->tag);
	fprintf(out, " (%s)", ttlv_type_name(it->type));
	if (ops->redact && ops->redact(it)) {
		fputs(" <redacted>\n", out);
		return;
	}
	if (it->type != TTLV_STRUCTURE) {
		fputc(' ', out);
		print_value(out, it, ops);
	}
	fputc('\n', out);
	for (const struct ttlv_item *c = it->child; c; c = c->next)
		print_item(out, c, depth + 1, ops);
}

int ttlv_print(FILE *out, const struct ttlv_item *root, const struct ttlv_print_ops *ops)
{
	print_item(out, root, 0, ops);
	return ferror(out) ? KR_E_IO : 0;
}
